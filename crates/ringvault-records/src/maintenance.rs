//! Keeping k replicas of every record: when the leaf set changes, and every
//! [`SYNC_INTERVAL`] besides, a replica offers each of the other members of a record's replica
//! set the versions it holds; a member that holds less asks for the record, and one that holds
//! more sends its own back. The highest version wins everywhere, as for writes.

use std::collections::BTreeMap;

use ringvault_overlay::Kbr;
use ringvault_types::{Contact, Duration, Id, Time};

use crate::message::RecordsMessage;
use crate::records::{encode, Records};

/// How often replicas compare versions when nothing changed.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(60);
/// How soon after a leaf set change they do.
pub const SYNC_DELAY: Duration = Duration::from_secs(1);
/// At most this many versions per offer message.
pub const MAX_OFFER: usize = 1024;

impl Records {
    /// Sends every other member of each held record's replica set the versions this node
    /// holds for it.
    pub(crate) fn sync(&mut self, kbr: &mut dyn Kbr) {
        let me = kbr.local_contact().id;
        let k = self.config().k as usize;
        let mut offers: BTreeMap<Id, (Contact, Vec<(Id, u64)>)> = BTreeMap::new();
        for (key, version) in self.versions() {
            for member in kbr.replica_set(&key, k) {
                if member.id != me {
                    offers
                        .entry(member.id)
                        .or_insert_with(|| (member, Vec::new()))
                        .1
                        .push((key, version));
                }
            }
        }
        for (member, entries) in offers.into_values() {
            for chunk in entries.chunks(MAX_OFFER) {
                let m = RecordsMessage::Offer {
                    entries: chunk.to_vec(),
                };
                kbr.send_direct(member, encode(&m));
            }
        }
    }

    /// A member's versions: ask for what it holds newer, send back what this node holds newer.
    pub(crate) fn on_offer(&mut self, kbr: &mut dyn Kbr, from: Contact, entries: Vec<(Id, u64)>) {
        let mut want = Vec::new();
        for (key, version) in entries.into_iter().take(MAX_OFFER) {
            match self.held(&key) {
                Some(mine) if mine.body.version > version => {
                    let m = RecordsMessage::Store {
                        req: None,
                        record: mine.clone(),
                    };
                    kbr.send_direct(from, encode(&m));
                }
                Some(mine) if mine.body.version == version => {}
                _ => want.push(key),
            }
        }
        if !want.is_empty() {
            kbr.send_direct(from, encode(&RecordsMessage::Want { keys: want }));
        }
    }

    /// A member asks for records it lacks.
    pub(crate) fn on_want(&mut self, kbr: &mut dyn Kbr, from: Contact, keys: Vec<Id>) {
        for key in keys.into_iter().take(MAX_OFFER) {
            if let Some(r) = self.held(&key) {
                let m = RecordsMessage::Store {
                    req: None,
                    record: r.clone(),
                };
                kbr.send_direct(from, encode(&m));
            }
        }
    }

    /// When the next sync is due after a leaf set change at `now`.
    pub(crate) fn sync_soon(&mut self, now: Time) {
        let soon = now + SYNC_DELAY;
        if self.next_sync.is_none_or(|t| t > soon) {
            self.next_sync = Some(soon);
        }
    }
}
