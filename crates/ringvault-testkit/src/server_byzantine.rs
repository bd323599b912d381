//! Byzantine behaviour of a server-mode replica, for tests that run real servers: what the
//! server sends is rewritten on its way out (`ringvault_net::ServerHooks::outbound`), so the
//! server itself runs the correct protocol and only its answers lie.
//!
//! While switched on, every reply to a read lies: to half the readers (by the parity of their
//! id's first byte) with a forgery (a record's value changed and its version raised by 100,
//! which breaks the owner's signature; an object's bytes changed, which breaks its hash), to
//! the others with the oldest version this replica ever answered for the key (stale but
//! valid). Everything else goes out unchanged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ringvault_bft::{Item, ServerMessage, StoreMessage};
use ringvault_types::{Id, RecordValue};

/// A replica that lies in its replies while [`LyingReplica::on`] is set.
pub struct LyingReplica {
    /// Whether it lies now.
    pub on: Arc<AtomicBool>,
    /// Replies it rewrote.
    pub lies: Arc<AtomicU64>,
    first: BTreeMap<Id, Item>,
}

impl Default for LyingReplica {
    fn default() -> Self {
        Self::new()
    }
}

impl LyingReplica {
    /// Honest until switched on.
    pub fn new() -> Self {
        LyingReplica {
            on: Arc::new(AtomicBool::new(false)),
            lies: Arc::new(AtomicU64::new(0)),
            first: BTreeMap::new(),
        }
    }

    /// What goes out instead of `msg` to `to`.
    pub fn outbound(&mut self, to: Id, msg: ServerMessage) -> Vec<(Id, ServerMessage)> {
        let ServerMessage::Store(StoreMessage::Reply {
            op,
            key,
            item: Some(item),
        }) = msg
        else {
            return vec![(to, msg)];
        };
        let oldest = self
            .first
            .entry(key)
            .or_insert_with(|| item.clone())
            .clone();
        if !self.on.load(Ordering::Relaxed) {
            let msg = StoreMessage::Reply {
                op,
                key,
                item: Some(item),
            };
            return vec![(to, ServerMessage::Store(msg))];
        }
        self.lies.fetch_add(1, Ordering::Relaxed);
        let lie = if to.as_bytes()[0].is_multiple_of(2) {
            forge(item)
        } else {
            oldest
        };
        let msg = StoreMessage::Reply {
            op,
            key,
            item: Some(lie),
        };
        vec![(to, ServerMessage::Store(msg))]
    }
}

/// `item` altered so that it no longer verifies.
pub fn forge(item: Item) -> Item {
    match item {
        Item::Record(mut r) => {
            r.body.value = RecordValue::Inline(b"forged by a Byzantine replica".to_vec());
            r.body.version += 100;
            Item::Record(r)
        }
        Item::Object(mut bytes) => {
            bytes.push(0xff);
            Item::Object(bytes)
        }
    }
}
