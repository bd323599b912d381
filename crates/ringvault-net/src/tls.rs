//! Identity-bound TLS: every node presents a self-signed certificate carrying its ed25519 node
//! key, and each side derives the peer's id from that key (id = BLAKE3 of the public key).
//!
//! A dialer that knows whom it is calling puts the expected id into the server name; the
//! verifier refuses a server whose key hashes to anything else. The TLS handshake signature
//! (checked by rustls against the certificate's key) proves the peer holds the key.
//!
//! In secure mode the certificate also carries the node's ring certificate in an extension,
//! and both verifiers hand it to [`Admission`] (see `admission.rs`).

use std::sync::Arc;

use ringvault_types::{Id, Identity, PublicKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::admission::{Admission, Refusal};
use crate::NetError;
use ringvault_types::{CertError, NodeCertificate};
use tracing::warn;

/// The X.509 extension that carries a ring certificate: an arc under a private enterprise
/// number, meaningful only between ringvault nodes (1.3.6.1.4.1.59999.1).
const RING_CERT_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 1];
/// The same OID in DER (the contents of its OBJECT IDENTIFIER).
const RING_CERT_OID_DER: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xd4, 0x5f, 0x01];

/// Server name used when the peer's id is not known yet (dialing a bootstrap address).
const ANY_ID: &str = "any.ringvault";

/// PKCS#8 v1 prefix of an ed25519 private key (RFC 8410); the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER of an ed25519 SubjectPublicKeyInfo up to the 32 key bytes (RFC 8410).
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The server name a dialer uses: the expected id split into two 32-digit DNS labels, or a
/// wildcard name when any id is acceptable. The verifier refuses a server whose key does not
/// hash to the id named here.
pub fn server_name_for(expected: Option<Id>) -> String {
    match expected {
        Some(id) => {
            let hex = id.to_string();
            format!("{}.{}.ringvault", &hex[..32], &hex[32..])
        }
        None => ANY_ID.to_string(),
    }
}

fn expected_id(name: &ServerName<'_>) -> Result<Option<Id>, rustls::Error> {
    let ServerName::DnsName(dns) = name else {
        return Err(rustls::Error::General(
            "server name is not a ringvault id".into(),
        ));
    };
    let s = dns.as_ref();
    if s == ANY_ID {
        return Ok(None);
    }
    let hex: String = s
        .strip_suffix(".ringvault")
        .map(|h| h.replace('.', ""))
        .unwrap_or_default();
    hex.parse()
        .map(Some)
        .map_err(|_| rustls::Error::General(format!("server name {s} is not a ringvault id")))
}

/// Reads one DER TLV at the start of `der`: (tag, contents, rest).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// An X.509 certificate's tbsCertificate from its `skip`-th field after the optional version
/// on (Certificate → tbsCertificate → [0] version → serial, signature, issuer, ...).
fn tbs_after(cert: &[u8], skip: usize) -> Option<&[u8]> {
    let (0x30, cert, _) = tlv(cert)? else {
        return None;
    };
    let (0x30, mut tbs, _) = tlv(cert)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2;
    }
    for _ in 0..skip {
        tbs = tlv(tbs)?.2;
    }
    Some(tbs)
}

/// The ed25519 public key of an X.509 certificate, found by walking the DER structure
/// (Certificate → tbsCertificate → subjectPublicKeyInfo), so no other field can pose as it.
pub(crate) fn cert_public_key(cert: &[u8]) -> Option<PublicKey> {
    // serial, signature, issuer, validity, subject; then the subjectPublicKeyInfo.
    let tbs = tbs_after(cert, 5)?;
    let (0x30, _, rest) = tlv(tbs)? else {
        return None;
    };
    let spki = &tbs[..tbs.len() - rest.len()];
    if spki.len() != SPKI_ED25519_PREFIX.len() + 32 || !spki.starts_with(&SPKI_ED25519_PREFIX) {
        return None;
    }
    let key: [u8; 32] = spki[SPKI_ED25519_PREFIX.len()..].try_into().ok()?;
    Some(PublicKey(key))
}

/// The ring certificate carried in an X.509 certificate's extensions, if any, found by walking
/// tbsCertificate past the subject key to its [3] extensions.
pub(crate) fn cert_ring_extension(cert: &[u8]) -> Option<&[u8]> {
    // serial, signature, issuer, validity, subject, subjectPublicKeyInfo; then the optional
    // unique ids and the extensions.
    let mut tbs = tbs_after(cert, 6)?;
    while let Some((tag, contents, rest)) = tlv(tbs) {
        tbs = rest;
        if tag != 0xa3 {
            continue;
        }
        let (0x30, mut exts, _) = tlv(contents)? else {
            return None;
        };
        while let Some((0x30, ext, rest)) = tlv(exts) {
            exts = rest;
            let (0x06, oid, mut fields) = tlv(ext)? else {
                return None;
            };
            if oid != RING_CERT_OID_DER {
                continue;
            }
            if fields.first() == Some(&0x01) {
                fields = tlv(fields)?.2; // the critical flag
            }
            let (0x04, value, _) = tlv(fields)? else {
                return None;
            };
            return Some(value);
        }
        return None;
    }
    None
}

/// The certificate the peer presented on an established connection.
pub(crate) fn peer_certificate(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().cloned()
}

/// The id of the peer on an established connection, from the certificate it presented.
pub(crate) fn peer_id(conn: &quinn::Connection) -> Option<Id> {
    cert_public_key(peer_certificate(conn)?.as_ref()).map(|k| k.id())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks peer certificates: ed25519 key required; for servers, the key must hash to the id
/// the dialer expected; in secure mode, the ring certificate must pass [`Admission`].
#[derive(Debug)]
struct IdVerifier {
    provider: Arc<CryptoProvider>,
    admission: Arc<Admission>,
}

impl IdVerifier {
    /// The peer's id, once its key and (in secure mode) its ring certificate pass.
    fn admit(&self, cert: &CertificateDer<'_>, now: UnixTime) -> Result<Id, rustls::Error> {
        let key = cert_public_key(cert.as_ref()).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        let ring = cert_ring_extension(cert.as_ref());
        match self.admission.check(ring, key, now.as_secs()) {
            Ok(_) => Ok(key.id()),
            Err(refusal) => {
                warn!(peer = %key.id().short(), "refused a peer: {refusal}");
                Err(rustls::Error::InvalidCertificate(alert_for(&refusal)))
            }
        }
    }

    fn sig13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn sig12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

impl ServerCertVerifier for IdVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = self.admit(end_entity, now)?;
        match expected_id(server_name)? {
            Some(want) if want != id => Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sig12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sig13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for IdVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.admit(end_entity, now)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sig12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.sig13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The TLS alert the refused peer hears: as specific as TLS allows, so its log says why.
fn alert_for(refusal: &Refusal) -> CertificateError {
    match refusal {
        Refusal::NoCertificate | Refusal::Unvouched => {
            CertificateError::ApplicationVerificationFailure
        }
        Refusal::Certificate(e) => match e {
            CertError::Expired { .. } => CertificateError::Expired,
            CertError::NotYetValid { .. } => CertificateError::NotValidYet,
            CertError::Revoked(_) => CertificateError::Revoked,
            CertError::BadSignature => CertificateError::UnknownIssuer,
            _ => CertificateError::BadEncoding,
        },
    }
}

/// A self-signed certificate for `identity` (carrying `ring_cert` in secure mode), with its
/// private key in PKCS#8.
fn certificate(
    identity: &Identity,
    ring_cert: Option<&NodeCertificate>,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), NetError> {
    let mut pkcs8 = PKCS8_ED25519_PREFIX.to_vec();
    pkcs8.extend_from_slice(&identity.secret_bytes());
    let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8);
    let tls = |e: rcgen::Error| NetError::Tls(e.to_string());
    let key =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519).map_err(tls)?;
    let mut params =
        rcgen::CertificateParams::new(vec![server_name_for(Some(identity.id()))]).map_err(tls)?;
    if let Some(ring) = ring_cert {
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                RING_CERT_OID,
                ring.encode(),
            ));
    }
    let cert = params.self_signed(&key).map_err(tls)?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
}

/// The QUIC client configuration a ringvault node dials with, presenting `identity` (and in
/// secure mode the given certificate, whatever it says): for tools and tests that speak the
/// transport directly (dial with [`server_name_for`]).
pub fn client_config(
    identity: &Identity,
    security: &crate::Security,
) -> Result<quinn::ClientConfig, NetError> {
    let transport = Arc::new(crate::transport::transport_config());
    let ring_cert = match security {
        crate::Security::Open => None,
        crate::Security::Secure(s) => Some(&s.cert),
    };
    let admission = Arc::new(Admission::new(security));
    quic_configs(identity, ring_cert, admission, transport).map(|(_, c)| c)
}

/// Server and client QUIC configurations presenting `identity`'s certificate (with
/// `ring_cert` in secure mode) and admitting peers through `admission`.
pub(crate) fn quic_configs(
    identity: &Identity,
    ring_cert: Option<&NodeCertificate>,
    admission: Arc<Admission>,
    transport: Arc<quinn::TransportConfig>,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), NetError> {
    let (cert, key) = certificate(identity, ring_cert)?;
    let provider = provider();
    let alpn = admission.alpn().to_vec();
    let verifier = Arc::new(IdVerifier {
        provider: provider.clone(),
        admission,
    });
    let tls = |e: rustls::Error| NetError::Tls(e.to_string());

    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(vec![cert.clone()], key.clone_key())
        .map_err(tls)?;
    server.alpn_protocols = vec![alpn.clone()];

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert], key)
        .map_err(tls)?;
    client.alpn_protocols = vec![alpn];

    let quic = |e: quinn::crypto::rustls::NoInitialCipherSuite| NetError::Tls(e.to_string());
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(quic)?,
    ));
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(quic)?,
    ));
    client.transport_config(transport);
    Ok((server, client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_node_key_and_names_its_id() {
        let ident = Identity::from_secret_bytes([3; 32]);
        let (cert, _) = certificate(&ident, None).unwrap();
        assert_eq!(cert_public_key(cert.as_ref()), Some(ident.public_key()));
        assert_eq!(cert_ring_extension(cert.as_ref()), None);
        let name = server_name_for(Some(ident.id()));
        let sn = ServerName::try_from(name).unwrap();
        assert_eq!(expected_id(&sn).unwrap(), Some(ident.id()));
    }

    #[test]
    fn truncated_or_garbage_certificates_have_no_key() {
        let ident = Identity::from_secret_bytes([4; 32]);
        let ring = ring_cert(&ident);
        let (cert, _) = certificate(&ident, Some(&ring)).unwrap();
        let der = cert.as_ref();
        for cut in 0..der.len() {
            assert_eq!(cert_public_key(&der[..cut]), None);
            assert_eq!(cert_ring_extension(&der[..cut]), None);
        }
        assert_eq!(cert_public_key(&[0xff; 64]), None);
    }

    fn ring_cert(node: &Identity) -> NodeCertificate {
        let ca = Identity::from_secret_bytes([9; 32]);
        NodeCertificate::issue(
            &ca,
            ringvault_types::CertBody {
                version: ringvault_types::CERT_VERSION,
                serial: 5,
                node_id: node.id(),
                public_key: node.public_key(),
                addrs: vec!["127.0.0.1:7000".parse().unwrap()],
                not_before: 0,
                not_after: u64::MAX,
            },
        )
    }

    #[test]
    fn the_ring_certificate_travels_in_the_tls_certificate() {
        let ident = Identity::from_secret_bytes([3; 32]);
        let ring = ring_cert(&ident);
        let (cert, _) = certificate(&ident, Some(&ring)).unwrap();
        assert_eq!(cert_public_key(cert.as_ref()), Some(ident.public_key()));
        let carried = cert_ring_extension(cert.as_ref()).expect("extension present");
        assert_eq!(NodeCertificate::decode(carried), Ok(ring));
    }
}
