//! PAST's messages, carried as the body of KBR application messages.

use serde::{Deserialize, Serialize};

use ringvault_types::{Contact, Id};

use ringvault_accounts::Committed;

use crate::audit::{Challenge, Proof};

use crate::{
    AbandonCertificate, FileCertificate, ReclaimCertificate, ReclaimReceipt, StoreReceipt,
};

/// Why a node refused part of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// No space for the replica, and diversion failed too.
    NoSpace,
    /// Another object with this id (another certificate) is stored.
    Duplicate,
    /// The certificate or content did not verify.
    Invalid,
    /// The object is not stored here.
    NotFound,
    /// The reclaim certificate is not the owner's.
    NotOwner,
    /// The node's store has too much waiting to be written; try again shortly.
    Busy,
    /// The ring enforces quotas and the insert's approval is missing, expired, for another
    /// insert, or not signed by a majority of the owner's account managers.
    Unapproved,
    /// Not held by the nodes asked, but a node among the closest to the id failed lately:
    /// the replica set is changing, or the failure was false (a busy holder, back once heard
    /// from). Not final: asked again a moment later, the answer may differ.
    Unsettled,
}

/// One PAST message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PastMessage {
    /// Routed to the object id: store it on the k closest nodes, and on `widen` more (a
    /// client that has waited too long for a receipt sends the insert again, wider each time,
    /// so a dead or frozen member is made up for by the next closest node at once).
    Insert {
        req: u64,
        client: Contact,
        cert: FileCertificate,
        content: Vec<u8>,
        widen: u8,
        /// The owner's debit for it, in a ring that enforces quotas.
        approval: Option<Committed>,
    },
    /// Sent by the root (or a holder, in maintenance) to a replica-set member. `spare` marks a
    /// node beyond the k closest, asked by a re-sent insert to stand in for a member that does
    /// not answer: it stores if it can and otherwise stays silent (a refusal from it must not
    /// end an attempt the k closest may still complete).
    Replicate {
        req: Option<(u64, Contact)>,
        cert: FileCertificate,
        content: Vec<u8>,
        spare: bool,
        /// The insert's approval (none for maintenance).
        approval: Option<Committed>,
    },
    /// A primary without space asks a leaf set node to hold the replica for it; a node that
    /// cannot passes it to the next of `candidates`.
    Divert {
        req: Option<(u64, Contact)>,
        primary: Contact,
        cert: FileCertificate,
        content: Vec<u8>,
        candidates: Vec<Contact>,
        /// The insert's approval (none for maintenance).
        approval: Option<Committed>,
    },
    /// The diverted holder tells the primary it holds the replica.
    Diverted { id: Id, k: u8, holder: Contact },
    /// The primary's second pointer, kept by the (k+1)-th closest node.
    Pointer { id: Id, holder: Contact },
    /// A store receipt for the client; `already` when the node held the object (the same
    /// content, owner and name) before this request.
    Receipt {
        req: u64,
        receipt: StoreReceipt,
        already: bool,
    },
    /// A refusal for the client.
    Refused { req: u64, id: Id, reason: Refusal },
    /// Routed to the object id: the first node holding a copy answers. With `handoff`, sent
    /// straight to one more node (a pointer's target, or another replica) by a root that has
    /// no copy: that node answers, or passes it on to the first of the nodes `handoff` lists
    /// (with the rest), or refuses when the list is empty. `hops` is how many overlay hops the
    /// lookup had taken when its sender (or the last node that passed it on) had it; the
    /// receiver is one more, and rewrites it before passing it on. The client starts it at 0.
    Lookup {
        req: u64,
        client: Contact,
        id: Id,
        handoff: Option<Vec<Contact>>,
        hops: u8,
    },
    /// A copy, for the client, from the node that served it (the sender, as the transport
    /// verified it: the message does not name it), which reached it after `hops` hops.
    Found {
        req: u64,
        hops: u8,
        cert: FileCertificate,
        content: Vec<u8>,
    },
    /// Routed to the object id: release it.
    Reclaim {
        req: u64,
        client: Contact,
        cert: ReclaimCertificate,
    },
    /// From the root to the other replica holders.
    ReclaimReplica {
        req: u64,
        client: Contact,
        cert: ReclaimCertificate,
    },
    /// From a client that gave up an insert attempt, to the nodes that stored a fresh copy of
    /// it: release that copy (only if it is still the attempt's).
    Abandon { cert: AbandonCertificate },
    /// A reclaim receipt for the client.
    Reclaimed { req: u64, receipt: ReclaimReceipt },
    /// Maintenance: objects the sender holds that the receiver should hold too.
    Offer { ids: Vec<Id>, free: u64 },
    /// Maintenance: the offered objects the receiver lacks.
    Want { ids: Vec<Id>, free: u64 },
    /// Routed like [`PastMessage::Lookup`], for the object's certificate only (and its content
    /// when it is a manifest, which is small): what `stat` and `DELETE` need, without moving
    /// the content or leaving a cached copy. Appended after the older messages, so a node of an
    /// earlier build drops it instead of misreading it.
    Describe {
        req: u64,
        client: Contact,
        id: Id,
        handoff: Option<Vec<Contact>>,
        hops: u8,
    },
    /// The answer to [`PastMessage::Describe`], from the node that holds a copy.
    Described {
        req: u64,
        hops: u8,
        cert: FileCertificate,
        /// The content, when it is a manifest.
        manifest: Option<Vec<u8>>,
    },
    /// An audit: prove holding an object (`audit.rs`).
    AuditChallenge { challenge: Challenge },
    /// The audited node's signed answer.
    AuditProof { proof: Proof },
    /// The sender's audits of `target` on `cert`'s object (`content`, so any receiver can
    /// audit the target itself) went unanswered twice, or (with `evidence`, the target's
    /// signed wrong answer) were answered wrongly.
    Accuse {
        target: Id,
        cert: FileCertificate,
        content: Vec<u8>,
        evidence: Option<Proof>,
    },
}

impl PastMessage {
    /// What a lookup or its hand-off asks for (`Content` for every other message).
    pub(crate) fn want(&self) -> Want {
        match self {
            PastMessage::Describe { .. } => Want::Description,
            _ => Want::Content,
        }
    }
}

/// What a lookup asks the holder for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// The object: [`PastMessage::Lookup`], answered by [`PastMessage::Found`].
    Content,
    /// Its certificate (and manifest): [`PastMessage::Describe`], answered by
    /// [`PastMessage::Described`].
    Description,
}

impl Want {
    /// The message that asks for it, routed or handed on.
    pub(crate) fn ask(
        self,
        req: u64,
        client: Contact,
        id: Id,
        handoff: Option<Vec<Contact>>,
        hops: u8,
    ) -> PastMessage {
        match self {
            Want::Content => PastMessage::Lookup {
                req,
                client,
                id,
                handoff,
                hops,
            },
            Want::Description => PastMessage::Describe {
                req,
                client,
                id,
                handoff,
                hops,
            },
        }
    }
}
