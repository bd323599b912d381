//! Byzantine quorum storage (`server-mode.md` §6): self-verifying items on the 3f + 1 servers
//! of a key's replica group, writes done at 2f + 1 signed acks, reads that take the first
//! object that verifies or the highest of 2f + 1 record versions (written back until 2f + 1
//! hold it), and key ranges moved to new owners at an epoch change with digests from 2f + 1
//! old owners before the new owner serves them.
//!
//! [`Replica`] is the server side, [`QuorumClient`] the side that runs an operation; a server
//! runs both. Both are sans-IO and take the configuration in force from the membership
//! service.

mod client;
mod item;
mod replica;

use serde::{Deserialize, Serialize};

use ringvault_types::{DecodeError, Id, Signature};

use crate::config::Epoch;

pub use client::{
    ClientStats, OpId, QuorumClient, QuorumError, QuorumEvent, OP_TIMEOUT, RETRY_EVERY,
};
pub use item::{Item, ItemError, MAX_OBJECT};
pub use replica::{
    owned_range, Replica, ReplicaAction, ReplicaStats, MAX_DIGEST, MAX_DIGEST_PAGES,
    MAX_FETCH_TRIES, SYNC_TIMEOUT,
};

/// A replica's signed statement that it holds `hash` (or a newer version) under `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The operation it answers.
    pub op: u64,
    /// The replica's epoch.
    pub epoch: Epoch,
    /// The key.
    pub key: Id,
    /// Hash of the item written.
    pub hash: Id,
    /// The replica.
    pub replica: Id,
    /// Its signature over [`Ack::bytes`].
    pub signature: Signature,
}

impl Ack {
    /// What the replica signs.
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes = b"ringvault-bft/ack/v1".to_vec();
        bytes.extend(postcard::to_allocvec(&(self.epoch, self.key, self.hash)).unwrap_or_default());
        bytes
    }
}

/// Why a replica does not take a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The request's epoch is not the replica's (which it names).
    #[error("wrong epoch: the replica is in epoch {0}")]
    WrongEpoch(Epoch),
    /// The replica is not in the key's group.
    #[error("not in the key's replica group")]
    NotOwner,
    /// The replica is still taking over the key's range.
    #[error("not ready: taking over the key range")]
    NotReady,
    /// The replica's configuration lease has run out.
    #[error("lease expired")]
    Expired,
    /// The item does not verify.
    #[error("invalid item")]
    Invalid,
}

/// A quorum storage message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreMessage {
    /// Store `item` (client to replica).
    Write {
        /// The client's operation.
        op: u64,
        /// The client's epoch.
        epoch: Epoch,
        /// The item.
        item: Item,
    },
    /// Stored (replica to client).
    Ack(Ack),
    /// Send what you hold under `key` (client to replica).
    Read {
        /// The client's operation.
        op: u64,
        /// The client's epoch.
        epoch: Epoch,
        /// The key.
        key: Id,
    },
    /// What the replica holds under `key` (replica to client).
    Reply {
        /// The operation.
        op: u64,
        /// The key.
        key: Id,
        /// The item, if held.
        item: Option<Item>,
    },
    /// The replica refuses the operation.
    Refuse {
        /// The operation.
        op: u64,
        /// Why.
        reason: Refusal,
    },
    /// A new owner asks an old one what it holds in the range (from, to], after key `after`
    /// when given (new owner to old). Answered only once the old owner is in `epoch` too, so it
    /// no longer takes writes of the epoch before.
    Digest {
        /// The new owner's operation.
        op: u64,
        /// The new owner's epoch.
        epoch: Epoch,
        /// The epoch whose owners are asked: the one before for a hand-over, the current one
        /// for a check after a restart. An owner that had not finished taking over part of the
        /// range by then does not answer for it.
        source: Epoch,
        /// Exclusive start of the range.
        from: Id,
        /// Inclusive end.
        to: Id,
        /// Resume after this key (the previous reply had more).
        after: Option<Id>,
    },
    /// Keys and item hashes held in the range (old owner to new).
    DigestReply {
        /// The operation.
        op: u64,
        /// (key, hash) pairs in key order, at most [`MAX_DIGEST`].
        entries: Vec<(Id, Id)>,
        /// Whether more follow (ask again after the last key).
        more: bool,
    },
    /// Send the item under `key` if you hold it (new owner to old, no ownership check).
    Fetch {
        /// The operation.
        op: u64,
        /// The key.
        key: Id,
    },
    /// The item fetched.
    Fetched {
        /// The operation.
        op: u64,
        /// The key.
        key: Id,
        /// The item, if held.
        item: Option<Item>,
    },
}

impl StoreMessage {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        crate::message::encode(self)
    }

    /// Decodes a message; total on any input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        crate::message::decode(bytes)
    }
}

/// Whether `key` lies in the clockwise range (from, to]; the whole ring when from == to.
pub fn in_range(key: &Id, from: &Id, to: &Id) -> bool {
    if from == to {
        return true;
    }
    if from < to {
        key > from && key <= to
    } else {
        key > from || key <= to
    }
}
