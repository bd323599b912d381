//! What quorum storage holds: self-verifying items, so that 3f + 1 replicas with quorums of
//! 2f + 1 suffice (a Byzantine replica cannot forge one, only withhold it or offer an older one).

use serde::{Deserialize, Serialize};

use ringvault_types::{Id, Record, RecordError, MAX_MESSAGE_SIZE};

/// The largest immutable object one item holds (larger files are chunked above this layer).
pub const MAX_OBJECT: usize = 4 * 1024 * 1024;

/// A stored item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// Immutable bytes, stored under the BLAKE3 hash of their content.
    Object(Vec<u8>),
    /// A signed mutable record (the format of classic mode's records), stored under its key.
    Record(Record),
}

/// Why an item is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// An object larger than [`MAX_OBJECT`].
    #[error("object of {0} bytes is larger than an item may be")]
    TooLarge(usize),
    /// A record that does not verify.
    #[error("record: {0}")]
    Record(#[from] RecordError),
    /// Not the item stored under the key asked for.
    #[error("item is not the one under this key")]
    WrongKey,
}

impl Item {
    /// The key it is stored under.
    pub fn key(&self) -> Id {
        match self {
            Item::Object(bytes) => Id::hash(bytes),
            Item::Record(r) => r.key(),
        }
    }

    /// The hash of the item as a whole (what acks and digests name).
    pub fn hash(&self) -> Id {
        Id::hash(&postcard::to_allocvec(self).unwrap_or_default())
    }

    /// The record's version; objects are version 0.
    pub fn version(&self) -> u64 {
        match self {
            Item::Object(_) => 0,
            Item::Record(r) => r.body.version,
        }
    }

    /// Checks it on its own.
    pub fn verify(&self) -> Result<(), ItemError> {
        match self {
            Item::Object(bytes) if bytes.len() > MAX_OBJECT.min(MAX_MESSAGE_SIZE) => {
                Err(ItemError::TooLarge(bytes.len()))
            }
            Item::Object(_) => Ok(()),
            Item::Record(r) => Ok(r.verify()?),
        }
    }

    /// Checks it as the answer for `key`.
    pub fn verify_for(&self, key: &Id) -> Result<(), ItemError> {
        self.verify()?;
        if self.key() != *key {
            return Err(ItemError::WrongKey);
        }
        Ok(())
    }

    /// Whether this item should replace `held` (same key): records by precedence (higher
    /// version, or the tie rule), objects never (they are immutable).
    pub fn replaces(&self, held: &Item) -> bool {
        match (self, held) {
            (Item::Record(new), Item::Record(old)) => new.precedence(old).replaces(),
            _ => false,
        }
    }
}
