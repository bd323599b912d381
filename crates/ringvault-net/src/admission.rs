//! Who may connect: the ring's mode and, in secure mode, the ring certificate every peer must
//! present in its TLS handshake.
//!
//! In secure mode a node's self-signed TLS certificate carries its ring certificate (signed by
//! the ring's CA) in an extension. Both sides of every connection check the other's during the
//! handshake: signed by our CA, valid now, not revoked, and issued for the very key the TLS
//! handshake proves. A failed check fails the handshake, so the refused side hears why as a TLS
//! alert (unknown CA, expired, revoked, bad certificate) and nothing it sends reaches the node.
//! The mode is in the ALPN string, so an open node and a secure node refuse each other at the
//! handshake instead of half-talking.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};

use ringvault_types::{CertError, NodeCertificate, PublicKey, RevocationList};

/// The ALPN string of open mode; carries the protocol version so incompatible nodes refuse
/// each other.
pub const ALPN: &[u8] = b"ringvault/1";
/// The ALPN string of secure mode.
pub const ALPN_SECURE: &[u8] = b"ringvault/1+secure";

/// How a node admits peers.
#[derive(Clone, Debug, Default)]
pub enum Security {
    /// Any node with an ed25519 key may join (ids are still the hash of the key).
    #[default]
    Open,
    /// Only nodes with a certificate from the ring's CA.
    Secure(Box<SecureRing>),
}

/// What a secure-mode node needs: the CA it trusts, its own certificate and the newest
/// revocation list it holds.
#[derive(Clone, Debug)]
pub struct SecureRing {
    /// The ring CA's public key.
    pub ca: PublicKey,
    /// This node's certificate (its key must be the node's key).
    pub cert: NodeCertificate,
    /// The newest revocation list known at start (the empty list when none).
    pub revocations: RevocationList,
}

/// Why a peer was refused, as counted and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It presented no ring certificate (an open-mode node, or a secure one without its cert).
    NoCertificate,
    /// Its ring certificate failed a check.
    Certificate(CertError),
}

impl Refusal {
    /// A short, stable name for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::Certificate(e) => e.reason(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoCertificate => write!(f, "no ring certificate"),
            Refusal::Certificate(e) => write!(f, "ring certificate {e}"),
        }
    }
}

/// The admission state shared by the TLS verifiers and the driver.
#[derive(Debug)]
pub(crate) struct Admission {
    /// `None` in open mode.
    ca: Option<PublicKey>,
    revocations: RwLock<RevocationList>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl Admission {
    pub(crate) fn new(security: &Security) -> Self {
        let (ca, revocations) = match security {
            Security::Open => (None, RevocationList::empty()),
            Security::Secure(s) => (Some(s.ca), s.revocations.clone()),
        };
        Admission {
            ca,
            revocations: RwLock::new(revocations),
            refused: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether the node runs in secure mode.
    pub(crate) fn is_secure(&self) -> bool {
        self.ca.is_some()
    }

    /// The ALPN string this node speaks.
    pub(crate) fn alpn(&self) -> &'static [u8] {
        if self.is_secure() {
            ALPN_SECURE
        } else {
            ALPN
        }
    }

    /// Checks a peer's ring certificate (`None` when it presented none) against the key its
    /// TLS handshake uses, at Unix time `now`. Open mode admits everyone. Counts refusals.
    pub(crate) fn check(
        &self,
        ring_cert: Option<&[u8]>,
        tls_key: PublicKey,
        now: u64,
    ) -> Result<Option<NodeCertificate>, Refusal> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let r = self.check_secure(ca, ring_cert, tls_key, now);
        if let Err(e) = &r {
            self.count(e.reason());
        }
        r.map(Some)
    }

    /// Counts a refusal for `reason`.
    pub(crate) fn count(&self, reason: &'static str) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    fn check_secure(
        &self,
        ca: &PublicKey,
        ring_cert: Option<&[u8]>,
        tls_key: PublicKey,
        now: u64,
    ) -> Result<NodeCertificate, Refusal> {
        let bytes = ring_cert.ok_or(Refusal::NoCertificate)?;
        let cert = NodeCertificate::decode(bytes).map_err(Refusal::Certificate)?;
        let revoked = self.revocations.read().unwrap_or_else(|e| e.into_inner());
        cert.verify(ca, now, &revoked)
            .map_err(Refusal::Certificate)?;
        if cert.body.public_key != tls_key {
            return Err(Refusal::Certificate(CertError::KeyMismatch));
        }
        Ok(cert)
    }

    /// Adopts `list` if it is newer than the one held. The node's core has verified it.
    pub(crate) fn set_revocations(&self, list: RevocationList) -> bool {
        let mut held = self.revocations.write().unwrap_or_else(|e| e.into_inner());
        if list.version() > held.version() {
            *held = list;
            true
        } else {
            false
        }
    }

    /// Whether `serial` is revoked by the held list.
    pub(crate) fn revokes(&self, serial: u64) -> bool {
        self.revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .revokes(serial)
    }

    /// Refusals so far, per reason.
    pub(crate) fn refused(&self) -> BTreeMap<&'static str, u64> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringvault_types::{CertBody, Identity, CERT_VERSION};

    #[test]
    fn open_mode_admits_anyone_and_secure_mode_counts_each_reason() {
        let ca = Identity::from_secret_bytes([1; 32]);
        let node = Identity::from_secret_bytes([2; 32]);
        let cert = NodeCertificate::issue(
            &ca,
            CertBody {
                version: CERT_VERSION,
                serial: 3,
                node_id: node.id(),
                public_key: node.public_key(),
                addrs: vec!["127.0.0.1:1".parse().unwrap()],
                not_before: 10,
                not_after: 20,
            },
        );
        let open = Admission::new(&Security::Open);
        assert_eq!(open.check(None, node.public_key(), 15), Ok(None));
        assert_eq!(open.alpn(), ALPN);

        let secure = Admission::new(&Security::Secure(Box::new(SecureRing {
            ca: ca.public_key(),
            cert: cert.clone(),
            revocations: RevocationList::empty(),
        })));
        assert_eq!(secure.alpn(), ALPN_SECURE);
        let bytes = cert.encode();
        assert_eq!(
            secure.check(Some(&bytes), node.public_key(), 15),
            Ok(Some(cert.clone()))
        );
        assert_eq!(
            secure.check(None, node.public_key(), 15),
            Err(Refusal::NoCertificate)
        );
        assert!(secure
            .check(Some(&bytes[..10]), node.public_key(), 15)
            .is_err());
        let stranger = Identity::from_secret_bytes([4; 32]).public_key();
        assert_eq!(
            secure.check(Some(&bytes), stranger, 15),
            Err(Refusal::Certificate(CertError::KeyMismatch))
        );
        assert!(secure.check(Some(&bytes), node.public_key(), 20).is_err());
        assert!(!secure.set_revocations(RevocationList::empty()));
        let list = RevocationList::issue(&ca, 1, vec![3], 0, 100);
        assert!(secure.set_revocations(list));
        assert!(secure.revokes(3));
        assert_eq!(
            secure.check(Some(&bytes), node.public_key(), 15),
            Err(Refusal::Certificate(CertError::Revoked(3)))
        );
        let refused = secure.refused();
        for reason in [
            "no_certificate",
            "malformed",
            "key_mismatch",
            "expired",
            "revoked",
        ] {
            assert_eq!(refused.get(reason), Some(&1), "{reason}: {refused:?}");
        }
        assert!(open.refused().is_empty());
    }
}
