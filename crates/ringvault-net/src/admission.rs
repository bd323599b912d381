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
//!
//! A node also learns of nodes it has never connected to, from the contacts its peers' messages
//! name. In secure mode those messages carry the named nodes' ring certificates
//! (`ringvault_node::Vouched`); each is checked as a handshake's would be and remembered, and
//! the overlay takes a named contact into its tables only when a remembered certificate for its
//! id still passes ([`ContactCheck`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use ringvault_overlay::{OverlayMessage, MAX_CONTACTS_PER_MESSAGE};
use ringvault_types::{
    CertError, Contact, DecodeError, EncodeError, Id, NodeCertificate, PublicKey, RevocationList,
};

/// At most this many certificates of other nodes are remembered (about 200 bytes each); beyond
/// it the one with the lowest id is forgotten (its node, if still in a table, stays there).
pub const MAX_KNOWN_CERTIFICATES: usize = 65_536;

/// The ALPN string of open mode; carries the protocol version so incompatible nodes refuse
/// each other.
pub const ALPN: &[u8] = b"ringvault/2";
/// The ALPN string of secure mode.
pub const ALPN_SECURE: &[u8] = b"ringvault/2+secure";
/// The ALPN string of server mode (certificates as in secure mode, another protocol on top,
/// versioned on its own: the overlay's version 2 did not change it).
pub const ALPN_SERVER: &[u8] = b"ringvault/1+server";

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
    /// A message named it, and no certificate for it came with the message or is remembered.
    Unvouched,
}

impl Refusal {
    /// A short, stable name for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::Certificate(e) => e.reason(),
            Refusal::Unvouched => "unvouched_contact",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoCertificate => write!(f, "no ring certificate"),
            Refusal::Certificate(e) => write!(f, "ring certificate {e}"),
            Refusal::Unvouched => write!(f, "named without a ring certificate"),
        }
    }
}

/// The admission state shared by the TLS verifiers and the driver.
#[derive(Debug)]
pub(crate) struct Admission {
    /// `None` in open mode.
    ca: Option<PublicKey>,
    /// The mode's ALPN string.
    alpn: &'static [u8],
    revocations: RwLock<RevocationList>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Certificates that passed, by node id: from handshakes and from messages.
    known: Mutex<BTreeMap<Id, NodeCertificate>>,
}

impl Admission {
    pub(crate) fn new(security: &Security) -> Self {
        match security {
            Security::Open => Admission::with(None, RevocationList::empty(), ALPN),
            Security::Secure(s) => Admission::with(Some(s.ca), s.revocations.clone(), ALPN_SECURE),
        }
    }

    fn with(ca: Option<PublicKey>, revocations: RevocationList, alpn: &'static [u8]) -> Self {
        Admission {
            alpn,
            ca,
            revocations: RwLock::new(revocations),
            refused: Mutex::new(BTreeMap::new()),
            known: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether the node runs in secure mode.
    pub(crate) fn is_secure(&self) -> bool {
        self.ca.is_some()
    }

    /// Server mode's admission: certificates from `ca`, as in secure mode.
    pub(crate) fn servers(ca: PublicKey, revocations: RevocationList) -> Self {
        Admission::with(Some(ca), revocations, ALPN_SERVER)
    }

    /// The ALPN string this node speaks.
    pub(crate) fn alpn(&self) -> &'static [u8] {
        self.alpn
    }

    /// The mode's name, for messages to operators.
    pub(crate) fn mode_name(&self) -> &'static str {
        match self.alpn {
            ALPN_SERVER => "server",
            ALPN_SECURE => "secure",
            _ => "open",
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
        match &r {
            Ok(cert) => self.remember(cert.clone()),
            Err(e) => self.count(e.reason()),
        }
        r.map(Some)
    }

    /// Checks `cert`, carried in a message, at Unix time `now`, and remembers it if it passes.
    /// A certificate already remembered is not checked again. Counts refusals.
    pub(crate) fn vouch(&self, cert: NodeCertificate, now: u64) -> Result<(), Refusal> {
        let Some(ca) = &self.ca else {
            return Ok(());
        };
        let known = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cert.node_id())
            .is_some_and(|k| *k == cert);
        if known {
            return Ok(());
        }
        let revoked = self.revocations.read().unwrap_or_else(|e| e.into_inner());
        let checked = cert.verify(ca, now, &revoked).map(|_| ());
        drop(revoked);
        match checked {
            Ok(()) => {
                self.remember(cert);
                Ok(())
            }
            Err(e) => {
                let refusal = Refusal::Certificate(e);
                self.count(refusal.reason());
                Err(refusal)
            }
        }
    }

    /// Whether a remembered certificate vouches for `contact` at Unix time `now` (open mode:
    /// always). Counts refusals.
    pub(crate) fn vouched(&self, contact: &Contact, now: u64) -> Result<(), Refusal> {
        let Some(ca) = &self.ca else {
            return Ok(());
        };
        let cert = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&contact.id)
            .cloned();
        let r = match cert {
            None => Err(Refusal::Unvouched),
            Some(c) => {
                let revoked = self.revocations.read().unwrap_or_else(|e| e.into_inner());
                c.verify(ca, now, &revoked)
                    .map(|_| ())
                    .map_err(Refusal::Certificate)
            }
        };
        if let Err(e) = &r {
            self.count(e.reason());
        }
        r
    }

    /// `msg` for the wire: in secure mode with the remembered certificates of the nodes it
    /// names (without them if they would make it too large).
    pub(crate) fn wrap(&self, msg: &OverlayMessage) -> Result<Vec<u8>, EncodeError> {
        if !self.is_secure() {
            return ringvault_node::encode(msg);
        }
        let certs = self.certificates_for(&msg.named_contacts());
        ringvault_node::encode_vouched(msg, &certs)
            .or_else(|_| ringvault_node::encode_vouched(msg, &[]))
    }

    /// A message off the wire at Unix time `now`: in secure mode every certificate it carries
    /// is checked and, if it passes, remembered (one that fails is counted, and the message is
    /// still handled: the contacts it would have vouched for are not admitted).
    pub(crate) fn unwrap(&self, bytes: &[u8], now: u64) -> Result<OverlayMessage, DecodeError> {
        if !self.is_secure() {
            return ringvault_node::decode(bytes);
        }
        let v = ringvault_node::decode_vouched(bytes)?;
        // Only certificates of nodes the message names are checked: others would cost a
        // signature check each for nothing.
        let named = v.msg.named_contacts();
        for cert in v.certs.into_iter().take(MAX_CONTACTS_PER_MESSAGE) {
            if named.binary_search(&cert.node_id()).is_ok() {
                let _ = self.vouch(cert, now);
            }
        }
        Ok(v.msg)
    }

    /// The remembered certificates of `ids` (those there are).
    pub(crate) fn certificates_for(&self, ids: &[Id]) -> Vec<NodeCertificate> {
        if self.ca.is_none() {
            return Vec::new();
        }
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        ids.iter().filter_map(|id| known.get(id).cloned()).collect()
    }

    fn remember(&self, cert: NodeCertificate) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= MAX_KNOWN_CERTIFICATES && !known.contains_key(&cert.node_id()) {
            known.pop_first();
        }
        known.insert(cert.node_id(), cert);
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

/// The overlay's check of every contact a message names (plugged into the core as its
/// `ringvault_overlay::Admission`): in secure mode only contacts a remembered certificate
/// vouches for, at the wall clock's time.
pub(crate) struct ContactCheck(pub(crate) Arc<Admission>);

impl ringvault_overlay::Admission for ContactCheck {
    fn admit(&self, peer: &Contact) -> bool {
        self.0.vouched(peer, crate::driver::unix_now()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_alpn_strings_of_the_overlay_carry_its_protocol_version() {
        let v = format!("ringvault/{}", ringvault_types::PROTOCOL_VERSION);
        assert_eq!(ALPN, v.as_bytes());
        assert_eq!(ALPN_SECURE, format!("{v}+secure").as_bytes());
    }

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

    /// `ca`'s certificate for `node`, valid from 10 to `not_after`.
    fn issue(ca: &Identity, node: &Identity, serial: u64, not_after: u64) -> NodeCertificate {
        NodeCertificate::issue(
            ca,
            CertBody {
                version: CERT_VERSION,
                serial,
                node_id: node.id(),
                public_key: node.public_key(),
                addrs: vec!["127.0.0.1:1".parse().unwrap()],
                not_before: 10,
                not_after,
            },
        )
    }

    #[test]
    fn a_named_contact_is_admitted_only_on_a_remembered_certificate_that_still_passes() {
        let ca = Identity::from_secret_bytes([1; 32]);
        let me = Identity::from_secret_bytes([2; 32]);
        let issue =
            |node: &Identity, serial: u64, not_after: u64| issue(&ca, node, serial, not_after);
        let secure = Admission::new(&Security::Secure(Box::new(SecureRing {
            ca: ca.public_key(),
            cert: issue(&me, 1, 100),
            revocations: RevocationList::empty(),
        })));
        let contact = |node: &Identity| Contact::new(node.id(), "127.0.0.1:2".parse().unwrap());
        let (a, b, c) = (
            Identity::from_secret_bytes([3; 32]),
            Identity::from_secret_bytes([4; 32]),
            Identity::from_secret_bytes([5; 32]),
        );
        // Named without a certificate: refused and counted.
        assert_eq!(secure.vouched(&contact(&a), 15), Err(Refusal::Unvouched));
        assert_eq!(secure.refused().get("unvouched_contact"), Some(&1));
        // Carried with a valid certificate: remembered and admitted, and handed on.
        assert_eq!(secure.vouch(issue(&a, 2, 100), 15), Ok(()));
        assert_eq!(secure.vouched(&contact(&a), 15), Ok(()));
        assert_eq!(secure.certificates_for(&[a.id(), b.id()]).len(), 1);
        // Another CA's, or an expired one, is not remembered.
        let other = Identity::from_secret_bytes([9; 32]);
        let forged = NodeCertificate::issue(&other, issue(&b, 3, 100).body);
        assert!(secure.vouch(forged, 15).is_err());
        assert!(secure.vouch(issue(&b, 3, 12), 15).is_err());
        assert_eq!(secure.vouched(&contact(&b), 15), Err(Refusal::Unvouched));
        // A remembered certificate that expires, or is revoked later, no longer admits.
        assert_eq!(secure.vouch(issue(&c, 4, 20), 15), Ok(()));
        assert!(matches!(
            secure.vouched(&contact(&c), 25),
            Err(Refusal::Certificate(CertError::Expired { .. }))
        ));
        let list = RevocationList::issue(&ca, 1, vec![2], 0, 1_000);
        assert!(secure.set_revocations(list));
        assert!(matches!(
            secure.vouched(&contact(&a), 15),
            Err(Refusal::Certificate(CertError::Revoked(2)))
        ));

        // Open mode admits everyone and carries nothing.
        let open = Admission::new(&Security::Open);
        assert_eq!(open.vouched(&contact(&b), 15), Ok(()));
        assert!(open.certificates_for(&[a.id()]).is_empty());
    }

    #[test]
    fn certificates_travel_with_the_contacts_a_message_names() {
        let ca = Identity::from_secret_bytes([1; 32]);
        let issue = |node: &Identity, serial: u64| issue(&ca, node, serial, 100);
        let ring = |me: &Identity, serial| {
            Admission::new(&Security::Secure(Box::new(SecureRing {
                ca: ca.public_key(),
                cert: issue(me, serial),
                revocations: RevocationList::empty(),
            })))
        };
        let (a, b, z) = (
            Identity::from_secret_bytes([2; 32]),
            Identity::from_secret_bytes([3; 32]),
            Identity::from_secret_bytes([4; 32]),
        );
        let (sender, receiver) = (ring(&a, 1), ring(&b, 2));
        sender.vouch(issue(&z, 3), 15).unwrap();
        let named = Contact::new(z.id(), "127.0.0.1:9".parse().unwrap());
        let msg = OverlayMessage::LeafSetReply {
            leaves: vec![named],
            version: 1,
        };
        // Negative control: the same message without its certificate vouches for nothing.
        let bare = ringvault_node::encode_vouched(&msg, &[]).unwrap();
        assert_eq!(receiver.unwrap(&bare, 15).unwrap(), msg);
        assert_eq!(receiver.vouched(&named, 15), Err(Refusal::Unvouched));
        // Wrapped by a node that knows z's certificate, it carries it.
        let bytes = sender.wrap(&msg).unwrap();
        assert_eq!(receiver.unwrap(&bytes, 15).unwrap(), msg);
        assert_eq!(receiver.vouched(&named, 15), Ok(()));
        // A secure node refuses open framing, and the other way round.
        let open = Admission::new(&Security::Open);
        assert!(receiver.unwrap(&open.wrap(&msg).unwrap(), 15).is_err());
        assert!(open.unwrap(&bytes, 15).is_err());
    }
}
