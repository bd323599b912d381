//! Revocation gossip (secure mode): the newest CA-signed revocation list spreads along leaf
//! sets. A node adopts a list only if the ring's CA signed it and its version is higher than
//! the one it holds, passes an adopted list to its whole leaf set, hands its list to each node
//! that joins its leaf set, and answers a peer that sent an older list with its own, so the
//! highest version wins everywhere. Each version is passed on at most once per node, so the
//! flood ends.

use ringvault_overlay::{AppId, AppMessage, Kbr};
use ringvault_types::{CertError, Contact, PublicKey, RevocationList};

/// The application id of revocation gossip.
pub const REVOCATION_APP: AppId = 1;

/// What the gossip has seen, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevocationStats {
    /// Lists adopted (from the operator or a peer).
    pub adopted: u64,
    /// Lists received that were not newer than the one held.
    pub not_newer: u64,
    /// Lists refused: not signed by the ring's CA, or malformed.
    pub refused: u64,
}

/// A node's revocation state.
#[derive(Debug)]
pub(crate) struct RevocationGossip {
    /// The ring's CA; `None` in open mode, where the gossip does nothing.
    ca: Option<PublicKey>,
    held: RevocationList,
    pub(crate) stats: RevocationStats,
    /// Lists adopted since the node last reported them.
    pub(crate) adopted: Vec<RevocationList>,
}

impl Default for RevocationGossip {
    fn default() -> Self {
        RevocationGossip {
            ca: None,
            held: RevocationList::empty(),
            stats: RevocationStats::default(),
            adopted: Vec::new(),
        }
    }
}

impl RevocationGossip {
    /// Secure mode: trust `ca`, starting from `held` (already verified by the caller, or empty).
    pub(crate) fn secure(ca: PublicKey, held: RevocationList) -> Self {
        RevocationGossip {
            ca: Some(ca),
            held,
            ..Self::default()
        }
    }

    pub(crate) fn held(&self) -> &RevocationList {
        &self.held
    }

    fn message(&self) -> AppMessage {
        AppMessage {
            app: REVOCATION_APP,
            body: self.held.encode(),
        }
    }

    /// Offers `list` (from the operator, or from `from`); adopts and spreads it when the CA
    /// signed it and it is newer. Returns whether it was adopted.
    pub(crate) fn offer(
        &mut self,
        kbr: &mut dyn Kbr,
        list: RevocationList,
        from: Option<Contact>,
    ) -> Result<bool, CertError> {
        let Some(ca) = &self.ca else {
            return Err(CertError::Malformed(
                "this node runs in open mode: it has no CA to check revocations against".into(),
            ));
        };
        if let Err(e) = list.verify(ca) {
            self.stats.refused += 1;
            return Err(e);
        }
        if list.version() <= self.held.version() {
            self.stats.not_newer += 1;
            if let Some(peer) = from.filter(|_| list.version() < self.held.version()) {
                kbr.send_direct(peer, self.message());
            }
            return Ok(false);
        }
        self.held = list;
        self.stats.adopted += 1;
        self.adopted.push(self.held.clone());
        let me = kbr.local_contact().id;
        for peer in kbr.neighbor_set(usize::MAX) {
            if peer.id != me && Some(peer.id) != from.map(|c| c.id) {
                kbr.send_direct(peer, self.message());
            }
        }
        Ok(true)
    }

    /// A list sent by `from`.
    pub(crate) fn deliver(&mut self, kbr: &mut dyn Kbr, msg: AppMessage, from: Contact) {
        if self.ca.is_none() {
            return;
        }
        match RevocationList::decode(&msg.body) {
            Ok(list) => {
                let _ = self.offer(kbr, list, Some(from));
            }
            Err(_) => self.stats.refused += 1,
        }
    }

    /// `node` joined the leaf set: hand it the list (it ignores one it already has).
    pub(crate) fn joined(&mut self, kbr: &mut dyn Kbr, node: Contact) {
        if self.ca.is_some() && self.held.version() > 0 {
            kbr.send_direct(node, self.message());
        }
    }
}
