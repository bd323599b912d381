//! Ring certificates: what a ring's certificate authority (CA) signs so that nodes can tell a
//! member of the ring from a stranger, offline and without trusting whoever handed them a contact.
//!
//! - A [`CertRequest`] is made by a node: its public key and addresses, signed with its own key
//!   (proof that it holds the key). The CA never sees a node's secret.
//! - A [`NodeCertificate`] binds a node id to its public key and addresses for a time window,
//!   under a serial the CA can revoke.
//! - A [`RevocationList`] names the revoked serials; the highest version a node has seen wins.
//!
//! Every signature covers a domain tag and the postcard encoding of the signed fields, so a
//! signature of one kind can never pass as another. Times are Unix seconds: certificates compare
//! against wall-clock time, which the caller reads (this crate never reads a clock).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{Id, Identity, PublicKey, Signature};

/// The format version of certificates, requests and revocation lists.
pub const CERT_VERSION: u8 = 1;
/// At most this many addresses in a certificate (an IPv4 and an IPv6 address, with room).
pub const MAX_CERT_ADDRS: usize = 4;
/// At most this many serials in one revocation list; a CA with more live revocations than this
/// must shorten certificate lifetimes instead.
pub const MAX_REVOKED: usize = 65_536;

const REQUEST_DOMAIN: &[u8] = b"ringvault cert request v1\0";
const CERT_DOMAIN: &[u8] = b"ringvault node certificate v1\0";
const REVOCATION_DOMAIN: &[u8] = b"ringvault revocation list v1\0";

/// Why a certificate, request or revocation list is refused. Each is counted separately by the
/// node, so the variants are the reasons an operator sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The bytes are not a certificate (or request, or list) of a known format.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Another format version.
    #[error("format version {0} (this node reads {CERT_VERSION})")]
    Version(u8),
    /// More addresses than a certificate may carry, or none.
    #[error("{0} addresses (a certificate carries 1 to {MAX_CERT_ADDRS})")]
    Addrs(usize),
    /// The node id is not the hash of the public key: someone chose the id.
    #[error("node id is not the hash of the node's public key")]
    IdMismatch,
    /// The signature does not verify under the expected key (for a certificate: it was signed
    /// by another CA, or altered after signing).
    #[error("signature does not verify (another CA's, or altered)")]
    BadSignature,
    /// Not valid yet.
    #[error("not valid before {not_before} (now {now})")]
    NotYetValid {
        /// Start of validity, Unix seconds.
        not_before: u64,
        /// The time checked against.
        now: u64,
    },
    /// Expired.
    #[error("expired at {not_after} (now {now})")]
    Expired {
        /// End of validity, Unix seconds.
        not_after: u64,
        /// The time checked against.
        now: u64,
    },
    /// The CA revoked it.
    #[error("serial {0} is revoked")]
    Revoked(u64),
    /// The key presented on the connection is not the key in the certificate.
    #[error("the connection's key is not the certificate's key")]
    KeyMismatch,
    /// A revocation list with too many serials.
    #[error("{0} revoked serials (at most {MAX_REVOKED})")]
    TooManyRevoked(usize),
}

impl CertError {
    /// A short, stable name for the reason, for metric labels and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            CertError::Malformed(_) => "malformed",
            CertError::Version(_) => "version",
            CertError::Addrs(_) => "addrs",
            CertError::IdMismatch => "id_mismatch",
            CertError::BadSignature => "bad_signature",
            CertError::NotYetValid { .. } => "not_yet_valid",
            CertError::Expired { .. } => "expired",
            CertError::Revoked(_) => "revoked",
            CertError::KeyMismatch => "key_mismatch",
            CertError::TooManyRevoked(_) => "too_many_revoked",
        }
    }
}

pub(crate) fn signed_bytes<T: Serialize>(domain: &[u8], body: &T) -> Vec<u8> {
    let mut out = domain.to_vec();
    // Encoding plain structs of integers, keys and addresses cannot fail.
    out.extend(postcard::to_allocvec(body).unwrap_or_default());
    out
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CertError> {
    let (v, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| CertError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(v)
}

fn check_addrs(addrs: &[SocketAddr]) -> Result<(), CertError> {
    if addrs.is_empty() || addrs.len() > MAX_CERT_ADDRS {
        return Err(CertError::Addrs(addrs.len()));
    }
    Ok(())
}

/// The fields a node asks the CA to certify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestBody {
    /// Format version ([`CERT_VERSION`]).
    pub version: u8,
    /// The node's public key (its id is the hash of it).
    pub public_key: PublicKey,
    /// The addresses peers dial.
    pub addrs: Vec<SocketAddr>,
}

/// A certificate signing request: the node's key and addresses, signed with that key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRequest {
    /// What is asked for.
    pub body: RequestBody,
    /// The node's signature over the body: proof of possession of the key.
    pub signature: Signature,
}

impl CertRequest {
    /// `identity`'s request for a certificate naming `addrs`.
    pub fn new(identity: &Identity, addrs: Vec<SocketAddr>) -> Result<Self, CertError> {
        check_addrs(&addrs)?;
        let body = RequestBody {
            version: CERT_VERSION,
            public_key: identity.public_key(),
            addrs,
        };
        let signature = identity.sign(&signed_bytes(REQUEST_DOMAIN, &body));
        Ok(CertRequest { body, signature })
    }

    /// Checks the format and the proof of possession.
    pub fn verify(&self) -> Result<&RequestBody, CertError> {
        if self.body.version != CERT_VERSION {
            return Err(CertError::Version(self.body.version));
        }
        check_addrs(&self.body.addrs)?;
        self.body
            .public_key
            .verify(&signed_bytes(REQUEST_DOMAIN, &self.body), &self.signature)
            .map_err(|_| CertError::BadSignature)?;
        Ok(&self.body)
    }

    /// The request's bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// A request from its bytes (not yet verified). Total: any input gives a request or an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, CertError> {
        decode(bytes)
    }
}

/// The fields a CA certifies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertBody {
    /// Format version ([`CERT_VERSION`]).
    pub version: u8,
    /// The CA's serial number, unique per CA; what a revocation names.
    pub serial: u64,
    /// The node id: BLAKE3 of `public_key`.
    pub node_id: Id,
    /// The node's public key (the one its TLS handshake proves).
    pub public_key: PublicKey,
    /// The addresses peers dial.
    pub addrs: Vec<SocketAddr>,
    /// Valid from (Unix seconds, inclusive).
    pub not_before: u64,
    /// Valid until (Unix seconds, exclusive).
    pub not_after: u64,
}

/// A node certificate: a body signed by the ring's CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCertificate {
    /// What is certified.
    pub body: CertBody,
    /// The CA's signature over the body.
    pub signature: Signature,
}

impl NodeCertificate {
    /// Signs `body` with the CA key `ca`.
    pub fn issue(ca: &Identity, body: CertBody) -> Self {
        let signature = ca.sign(&signed_bytes(CERT_DOMAIN, &body));
        NodeCertificate { body, signature }
    }

    /// The certified node id.
    pub fn node_id(&self) -> Id {
        self.body.node_id
    }

    /// Checks everything a certificate must satisfy to admit its node at Unix time `now`:
    /// format, id = hash of key, the CA's signature, the validity window, and that `revoked`
    /// does not name its serial. Checked in that order, so the reason is the first that fails.
    pub fn verify(
        &self,
        ca: &PublicKey,
        now: u64,
        revoked: &RevocationList,
    ) -> Result<&CertBody, CertError> {
        let b = &self.body;
        if b.version != CERT_VERSION {
            return Err(CertError::Version(b.version));
        }
        check_addrs(&b.addrs)?;
        if b.public_key.id() != b.node_id {
            return Err(CertError::IdMismatch);
        }
        ca.verify(&signed_bytes(CERT_DOMAIN, b), &self.signature)
            .map_err(|_| CertError::BadSignature)?;
        if now < b.not_before {
            return Err(CertError::NotYetValid {
                not_before: b.not_before,
                now,
            });
        }
        if now >= b.not_after {
            return Err(CertError::Expired {
                not_after: b.not_after,
                now,
            });
        }
        if revoked.revokes(b.serial) {
            return Err(CertError::Revoked(b.serial));
        }
        Ok(b)
    }

    /// The certificate's bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// A certificate from its bytes (not yet verified). Total: any input gives a certificate or
    /// an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, CertError> {
        decode(bytes)
    }
}

/// The fields of a revocation list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationBody {
    /// Grows with every list the CA issues; the highest verified version wins.
    pub version: u64,
    /// Revoked serials, ascending, no repeats.
    pub serials: Vec<u64>,
    /// When the CA issued it (Unix seconds).
    pub issued_at: u64,
    /// When the CA promises a newer list at the latest (Unix seconds); a node holding a list
    /// past this says so loudly, because it may be missing revocations.
    pub next_update: u64,
}

/// A CA-signed list of revoked certificate serials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    /// What is revoked.
    pub body: RevocationBody,
    /// The CA's signature over the body (all zeros for the empty list a node starts with).
    pub signature: Signature,
}

impl RevocationList {
    /// The list a node holds before it has seen any: version 0, nothing revoked, never stale.
    pub fn empty() -> Self {
        RevocationList {
            body: RevocationBody {
                next_update: u64::MAX,
                ..RevocationBody::default()
            },
            signature: Signature([0; 64]),
        }
    }

    /// The CA `ca` revokes `serials` in list `version`.
    pub fn issue(
        ca: &Identity,
        version: u64,
        mut serials: Vec<u64>,
        issued_at: u64,
        next_update: u64,
    ) -> Self {
        serials.sort_unstable();
        serials.dedup();
        let body = RevocationBody {
            version,
            serials,
            issued_at,
            next_update,
        };
        let signature = ca.sign(&signed_bytes(REVOCATION_DOMAIN, &body));
        RevocationList { body, signature }
    }

    /// Checks the CA's signature and the list's shape (sorted, bounded).
    pub fn verify(&self, ca: &PublicKey) -> Result<(), CertError> {
        let s = &self.body.serials;
        if s.len() > MAX_REVOKED {
            return Err(CertError::TooManyRevoked(s.len()));
        }
        if s.windows(2).any(|w| w[0] >= w[1]) {
            return Err(CertError::Malformed("serials not ascending".into()));
        }
        ca.verify(
            &signed_bytes(REVOCATION_DOMAIN, &self.body),
            &self.signature,
        )
        .map_err(|_| CertError::BadSignature)
    }

    /// Whether `serial` is revoked.
    pub fn revokes(&self, serial: u64) -> bool {
        self.body.serials.binary_search(&serial).is_ok()
    }

    /// The version: the highest verified version a node sees wins.
    pub fn version(&self) -> u64 {
        self.body.version
    }

    /// Whether the CA promised a newer list before `now`.
    pub fn is_stale(&self, now: u64) -> bool {
        now >= self.body.next_update
    }

    /// The list's bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// A list from its bytes (not yet verified). Total: any input gives a list or an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, CertError> {
        decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ca() -> Identity {
        Identity::from_secret_bytes([1; 32])
    }

    fn node() -> Identity {
        Identity::from_secret_bytes([2; 32])
    }

    fn addr() -> SocketAddr {
        "10.0.0.1:7000".parse().unwrap()
    }

    fn body(serial: u64) -> CertBody {
        CertBody {
            version: CERT_VERSION,
            serial,
            node_id: node().id(),
            public_key: node().public_key(),
            addrs: vec![addr()],
            not_before: 1_000,
            not_after: 2_000,
        }
    }

    #[test]
    fn a_certificate_verifies_inside_its_window_and_nowhere_else() {
        let cert = NodeCertificate::issue(&ca(), body(7));
        let none = RevocationList::empty();
        let ca_key = ca().public_key();
        assert_eq!(cert.verify(&ca_key, 1_000, &none), Ok(&cert.body));
        assert_eq!(cert.verify(&ca_key, 1_999, &none), Ok(&cert.body));
        assert_eq!(
            cert.verify(&ca_key, 999, &none),
            Err(CertError::NotYetValid {
                not_before: 1_000,
                now: 999
            })
        );
        assert_eq!(
            cert.verify(&ca_key, 2_000, &none),
            Err(CertError::Expired {
                not_after: 2_000,
                now: 2_000
            })
        );
    }

    #[test]
    fn every_field_is_covered_by_the_signature() {
        let cert = NodeCertificate::issue(&ca(), body(7));
        let ca_key = ca().public_key();
        let none = RevocationList::empty();
        let other = Identity::from_secret_bytes([3; 32]);
        type Alteration = Box<dyn Fn(&mut CertBody)>;
        let alter: Vec<(&str, Alteration)> = vec![
            ("serial", Box::new(|b| b.serial += 1)),
            ("addrs", Box::new(|b| b.addrs[0].set_port(7001))),
            ("not_before", Box::new(|b| b.not_before -= 1)),
            ("not_after", Box::new(|b| b.not_after += 1)),
            (
                "key and id",
                Box::new(move |b| {
                    b.public_key = other.public_key();
                    b.node_id = other.id();
                }),
            ),
        ];
        for (what, f) in alter {
            let mut forged = cert.clone();
            f(&mut forged.body);
            assert_eq!(
                forged.verify(&ca_key, 1_500, &none),
                Err(CertError::BadSignature),
                "{what}"
            );
        }
        let mut chosen = cert.clone();
        chosen.body.node_id = Id::hash(b"a place I want");
        assert_eq!(
            chosen.verify(&ca_key, 1_500, &none),
            Err(CertError::IdMismatch)
        );
        let mut v2 = cert.clone();
        v2.body.version = 2;
        assert_eq!(v2.verify(&ca_key, 1_500, &none), Err(CertError::Version(2)));
    }

    #[test]
    fn another_cas_certificate_is_refused() {
        let rogue = Identity::from_secret_bytes([9; 32]);
        let cert = NodeCertificate::issue(&rogue, body(7));
        assert_eq!(
            cert.verify(&ca().public_key(), 1_500, &RevocationList::empty()),
            Err(CertError::BadSignature)
        );
    }

    #[test]
    fn a_revoked_serial_is_refused_and_only_the_cas_list_counts() {
        let cert = NodeCertificate::issue(&ca(), body(7));
        let ca_key = ca().public_key();
        let list = RevocationList::issue(&ca(), 3, vec![9, 7, 7, 2], 1_000, 5_000);
        assert_eq!(list.body.serials, vec![2, 7, 9]);
        assert_eq!(list.verify(&ca_key), Ok(()));
        assert_eq!(
            cert.verify(&ca_key, 1_500, &list),
            Err(CertError::Revoked(7))
        );
        let mut forged = list.clone();
        forged.body.serials.retain(|&s| s != 7);
        assert_eq!(forged.verify(&ca_key), Err(CertError::BadSignature));
        let rogue = RevocationList::issue(&Identity::from_secret_bytes([9; 32]), 4, vec![], 0, 9);
        assert_eq!(rogue.verify(&ca_key), Err(CertError::BadSignature));
        assert_eq!(
            RevocationList::empty().verify(&ca_key),
            Err(CertError::BadSignature)
        );
        assert!(!list.is_stale(4_999));
        assert!(list.is_stale(5_000));
        assert!(!RevocationList::empty().is_stale(u64::MAX - 1));
    }

    #[test]
    fn a_request_proves_possession_of_its_key() {
        let req = CertRequest::new(&node(), vec![addr()]).unwrap();
        assert_eq!(req.verify().map(|b| b.public_key), Ok(node().public_key()));
        let mut stolen = req.clone();
        stolen.body.public_key = ca().public_key();
        assert_eq!(stolen.verify(), Err(CertError::BadSignature));
        assert_eq!(
            CertRequest::new(&node(), vec![]).unwrap_err(),
            CertError::Addrs(0)
        );
        assert_eq!(
            CertRequest::new(&node(), vec![addr(); MAX_CERT_ADDRS + 1]).unwrap_err(),
            CertError::Addrs(MAX_CERT_ADDRS + 1)
        );
    }

    proptest! {
        #[test]
        fn certificates_round_trip(serial: u64, nb: u64, na: u64, port: u16) {
            let mut b = body(serial);
            b.not_before = nb;
            b.not_after = na;
            b.addrs[0].set_port(port);
            let cert = NodeCertificate::issue(&ca(), b);
            prop_assert_eq!(NodeCertificate::decode(&cert.encode()), Ok(cert));
        }

        #[test]
        fn decoders_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = NodeCertificate::decode(&bytes);
            let _ = RevocationList::decode(&bytes);
            let _ = CertRequest::decode(&bytes);
        }

        #[test]
        fn truncated_certificates_are_refused(cut in 0usize..200) {
            let bytes = NodeCertificate::issue(&ca(), body(7)).encode();
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(NodeCertificate::decode(&bytes[..cut]).is_err());
        }
    }
}
