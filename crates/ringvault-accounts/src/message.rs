//! The accounts service's messages, carried as the body of KBR application messages.

use serde::{Deserialize, Serialize};

use ringvault_types::{Contact, Id, PublicKey};

use crate::{Accepted, Ballot, Committed, Entry, Vote, Warrant};

/// What a client asks of a user's account managers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ask {
    /// Charge an insert: the object's ids (one per salt), its binding, bytes and k, and a
    /// nonce; the managers set the expiry.
    Debit {
        /// The object's id under each salt, first salt first.
        ids: Vec<Id>,
        /// `crate::binding` of content hash, size and k.
        binding: Id,
        /// size × k.
        bytes: u64,
        /// k.
        replicas: u8,
        /// The certificates' insertion date.
        date: u64,
        /// Chosen by the client.
        nonce: u64,
    },
    /// Give back the debit of a reclaimed object.
    Credit,
    /// The balance (answered by the proposer from its log, not agreed on).
    Balance,
}

/// Why the managers refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The debit would pass the grant.
    OverQuota {
        /// Bytes occupied now.
        balance: u64,
        /// Bytes granted.
        limit: u64,
        /// Bytes asked for.
        asked: u64,
    },
    /// The grant is missing, forged, expired or another user's.
    Grant(String),
    /// The credit gives back nothing, or its proof does not hold.
    NoCredit(String),
    /// The object is charged already under a debit with other content.
    Duplicate,
    /// The managers could not agree in time (too many down, or competing proposers).
    Unavailable,
}

/// One accounts message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum AccountsMessage {
    /// Client to the account key's root (routed, or sent securely to its managers).
    Request {
        req: u64,
        client: Contact,
        user: PublicKey,
        ask: Ask,
        warrant: Option<Warrant>,
    },
    /// The proposer's answer to the client: the committed entry that approves or credits, or
    /// for a balance the head of the log (none for an empty ledger).
    Answer {
        req: u64,
        result: Result<Option<Committed>, Refusal>,
    },
    /// Phase 1: promise `ballot`; `have` is how many entries the proposer's log holds.
    Prepare {
        user: PublicKey,
        ballot: Ballot,
        have: u64,
    },
    /// Phase 1's answer: the entries the proposer lacks and what was accepted, or the higher
    /// ballot promised.
    Promise {
        user: PublicKey,
        ballot: Ballot,
        result: Result<Promised, Ballot>,
    },
    /// Phase 2: accept `entry` under `ballot`, after taking `catchup` into the log.
    Accept {
        user: PublicKey,
        ballot: Ballot,
        entry: Entry,
        warrant: Warrant,
        catchup: Vec<Committed>,
    },
    /// Phase 2's answer: a vote, or why not.
    Accepted {
        user: PublicKey,
        ballot: Ballot,
        seq: u64,
        result: Result<Vote, AcceptRefusal>,
    },
    /// A committed entry, for every manager's log.
    Commit { committed: Committed },
    /// A page of a user's log, from a manager to a node that has just become one of the
    /// user's managers (a leaf set change), so the log outlives the managers it started on.
    Log {
        user: PublicKey,
        entries: Vec<Committed>,
    },
}

/// A manager's promise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Promised {
    /// Entries in its log.
    pub(crate) len: u64,
    /// Those after the proposer's `have` (at most a page).
    pub(crate) entries: Vec<Committed>,
    /// What it accepted for the next sequence number.
    pub(crate) accepted: Option<Accepted>,
}

/// Why a manager did not accept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum AcceptRefusal {
    /// A higher ballot was promised.
    Promised(Ballot),
    /// The entry does not follow its log, does not add up, or lacks its warrant.
    Invalid(String),
    /// Its log lacks entries before it (`len` held).
    Behind(u64),
}
