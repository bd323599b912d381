//! Identity-bound TLS: every node presents a self-signed certificate carrying its ed25519 node
//! key, and each side derives the peer's id from that key (id = BLAKE3 of the public key).
//!
//! A dialer that knows whom it is calling puts the expected id into the server name; the
//! verifier refuses a server whose key hashes to anything else. The TLS handshake signature
//! (checked by rustls against the certificate's key) proves the peer holds the key.

use std::sync::Arc;

use ringvault_types::{Id, Identity, PublicKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::NetError;

/// The QUIC ALPN string; carries the protocol version so incompatible nodes refuse each other.
pub const ALPN: &[u8] = b"ringvault/1";

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

/// The ed25519 public key of an X.509 certificate, found by walking the DER structure
/// (Certificate → tbsCertificate → subjectPublicKeyInfo), so no other field can pose as it.
pub(crate) fn cert_public_key(cert: &[u8]) -> Option<PublicKey> {
    let (0x30, cert, _) = tlv(cert)? else {
        return None;
    };
    let (0x30, mut tbs, _) = tlv(cert)? else {
        return None;
    };
    // Optional [0] version, then serial, signature, issuer, validity, subject, SPKI.
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2;
    }
    for _ in 0..5 {
        tbs = tlv(tbs)?.2;
    }
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

/// The node id a certificate stands for, or an error saying why it stands for none.
fn cert_id(cert: &CertificateDer<'_>) -> Result<Id, rustls::Error> {
    cert_public_key(cert.as_ref())
        .map(|k| k.id())
        .ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))
}

/// The id of the peer on an established connection, from the certificate it presented.
pub(crate) fn peer_id(conn: &quinn::Connection) -> Option<Id> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    cert_public_key(certs.first()?.as_ref()).map(|k| k.id())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks peer certificates: ed25519 key required; for servers, the key must hash to the id
/// the dialer expected.
#[derive(Debug)]
struct IdVerifier {
    provider: Arc<CryptoProvider>,
}

impl IdVerifier {
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
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = cert_id(end_entity)?;
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
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        cert_id(end_entity).map(|_| ClientCertVerified::assertion())
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

/// A self-signed certificate for `identity`, with its private key in PKCS#8.
fn certificate(
    identity: &Identity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), NetError> {
    let mut pkcs8 = PKCS8_ED25519_PREFIX.to_vec();
    pkcs8.extend_from_slice(&identity.secret_bytes());
    let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8);
    let tls = |e: rcgen::Error| NetError::Tls(e.to_string());
    let key =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519).map_err(tls)?;
    let cert = rcgen::CertificateParams::new(vec![server_name_for(Some(identity.id()))])
        .map_err(tls)?
        .self_signed(&key)
        .map_err(tls)?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
}

/// The QUIC client configuration a ringvault node dials with, presenting `identity`: for tools
/// and tests that speak the transport directly (dial with [`server_name_for`]).
pub fn client_config(identity: &Identity) -> Result<quinn::ClientConfig, NetError> {
    let transport = Arc::new(crate::transport::transport_config());
    quic_configs(identity, transport).map(|(_, c)| c)
}

/// Server and client QUIC configurations presenting `identity`'s certificate.
pub(crate) fn quic_configs(
    identity: &Identity,
    transport: Arc<quinn::TransportConfig>,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), NetError> {
    let (cert, key) = certificate(identity)?;
    let provider = provider();
    let verifier = Arc::new(IdVerifier {
        provider: provider.clone(),
    });
    let tls = |e: rustls::Error| NetError::Tls(e.to_string());

    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(vec![cert.clone()], key.clone_key())
        .map_err(tls)?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert], key)
        .map_err(tls)?;
    client.alpn_protocols = vec![ALPN.to_vec()];

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
        let (cert, _) = certificate(&ident).unwrap();
        assert_eq!(cert_public_key(cert.as_ref()), Some(ident.public_key()));
        let name = server_name_for(Some(ident.id()));
        let sn = ServerName::try_from(name).unwrap();
        assert_eq!(expected_id(&sn).unwrap(), Some(ident.id()));
    }

    #[test]
    fn truncated_or_garbage_certificates_have_no_key() {
        let ident = Identity::from_secret_bytes([4; 32]);
        let (cert, _) = certificate(&ident).unwrap();
        let der = cert.as_ref();
        for cut in 0..der.len() {
            assert_eq!(cert_public_key(&der[..cut]), None);
        }
        assert_eq!(cert_public_key(&[0xff; 64]), None);
    }
}
