//! Keeping k replicas of every record: when the leaf set changes, and every
//! [`SYNC_INTERVAL`] besides, a replica offers each of the other members of a record's replica
//! set the states it holds (version and tie hash); a member that holds less asks for the record,
//! and one that holds more sends its own back. The highest version wins everywhere, as for
//! writes, and two records of one version settle on the tie's winner.

use std::collections::BTreeMap;

use ringvault_overlay::Kbr;
use ringvault_types::{Contact, Duration, Id, Time};

use crate::message::{CheckAnswer, RecordsMessage};
use crate::records::{encode, Records};

/// How often replicas compare versions when nothing changed.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(60);
/// How soon after a leaf set change they do.
pub const SYNC_DELAY: Duration = Duration::from_secs(1);
/// At most this many versions per offer message.
pub const MAX_OFFER: usize = 1024;

/// One offered state: the record's key, version and tie hash.
pub(crate) type Offered = (Id, u64, Id);

impl Records {
    /// Sends every other member of each held record's replica set the versions this node
    /// holds for it.
    pub(crate) fn sync(&mut self, kbr: &mut dyn Kbr) {
        let me = kbr.local_contact().id;
        let k = self.config().k as usize;
        let mut offers: BTreeMap<Id, (Contact, Vec<Offered>)> = BTreeMap::new();
        for (key, version, tie) in self.versions() {
            for member in kbr.replica_set(&key, k) {
                if member.id != me {
                    offers
                        .entry(member.id)
                        .or_insert_with(|| (member, Vec::new()))
                        .1
                        .push((key, version, tie));
                }
            }
        }
        for (member, entries) in offers.into_values() {
            for chunk in entries.chunks(MAX_OFFER) {
                let m = RecordsMessage::Offer {
                    entries: chunk.to_vec(),
                };
                self.send_maintenance(kbr, member, &m);
            }
        }
    }

    /// A member's versions: ask for what it holds newer, send back what this node holds newer.
    /// An offer confirms a suspect record of the key (the member holds the key too).
    pub(crate) fn on_offer(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        from: Contact,
        entries: Vec<Offered>,
    ) {
        let (mut want, mut have) = (Vec::new(), Vec::new());
        for (key, version, tie) in entries.into_iter().take(MAX_OFFER) {
            let from_member = self.is_member_id(kbr, &key, from.id);
            // A suspect record is not served: the key is wanted, and the member's copy, once
            // its signature checks, confirms it (`on_store`).
            let Some(mine) = self.held(&key) else {
                want.push(key);
                continue;
            };
            let held = (mine.body.version, mine.tie_hash());
            if held == (version, tie) {
                if from_member {
                    self.seen_holding(kbr, now, &key, from.id);
                } else {
                    have.push(key);
                }
                continue;
            }
            if wins(held, (version, tie)) {
                let m = RecordsMessage::Store {
                    req: None,
                    record: mine.clone(),
                };
                self.send_maintenance(kbr, from, &m);
            } else {
                want.push(key);
            }
        }
        if !want.is_empty() {
            self.send_maintenance(kbr, from, &RecordsMessage::Want { keys: want });
        }
        if !have.is_empty() {
            self.send_maintenance(kbr, from, &RecordsMessage::Have { keys: have });
        }
    }

    /// Members hold what this node offered them: a copy this node keeps though it is outside
    /// the key's replica set goes once a majority of the members said so.
    pub(crate) fn on_have(&mut self, kbr: &mut dyn Kbr, from: Contact, keys: Vec<Id>) {
        let majority = self.majority();
        for key in keys.into_iter().take(MAX_OFFER) {
            if self.is_member(kbr, &key) || !self.is_member_id(kbr, &key, from.id) {
                continue;
            }
            if self.handed_to(&key, from.id) >= majority {
                self.forget(&key);
            }
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
                self.send_maintenance(kbr, from, &m);
            }
        }
    }

    /// Sends a maintenance message, counting its bytes.
    fn send_maintenance(&mut self, kbr: &mut dyn Kbr, to: Contact, m: &RecordsMessage) {
        let m = encode(m);
        self.stats.maintenance_bytes += m.body.len() as u64;
        kbr.send_direct(to, m);
    }

    /// When the next sync is due after a leaf set change at `now`.
    pub(crate) fn sync_soon(&mut self, now: Time) {
        let soon = now + SYNC_DELAY;
        if self.next_sync.is_none_or(|t| t > soon) {
            self.next_sync = Some(soon);
        }
    }
}

/// Whether state `a` (version, tie hash) wins over `b`: a higher version, or the same
/// version and the lower tie hash, as `Record::precedence` decides.
fn wins(a: (u64, Id), b: (u64, Id)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

impl Records {
    /// Asks the members of each suspect record's replica set what they hold of it.
    pub(crate) fn send_checks(&mut self, kbr: &mut dyn Kbr) {
        let me = kbr.local_contact().id;
        let k = self.config().k as usize;
        let mut asks: BTreeMap<Id, (Contact, Vec<Id>)> = BTreeMap::new();
        for key in self.suspects() {
            for member in kbr.replica_set(&key, k) {
                if member.id != me {
                    asks.entry(member.id)
                        .or_insert_with(|| (member, Vec::new()))
                        .1
                        .push(key);
                }
            }
        }
        for (member, keys) in asks.into_values() {
            for chunk in keys.chunks(MAX_OFFER) {
                let m = RecordsMessage::Check {
                    keys: chunk.to_vec(),
                };
                self.send_maintenance(kbr, member, &m);
            }
        }
    }

    /// A re-checking node asks what this node holds of `keys`.
    pub(crate) fn on_check(&mut self, kbr: &mut dyn Kbr, from: Contact, keys: Vec<Id>) {
        let unsure = self.rechecking();
        let entries: Vec<(Id, CheckAnswer)> = keys
            .into_iter()
            .take(MAX_OFFER)
            .map(|key| {
                let answer = match (self.held(&key), self.suspect_state(&key)) {
                    _ if unsure => CheckAnswer::Unsure,
                    (Some(r), _) => CheckAnswer::Holds(r.clone()),
                    (None, Some(_)) => CheckAnswer::Unsure,
                    (None, None) => CheckAnswer::Nothing,
                };
                (key, answer)
            })
            .collect();
        self.send_maintenance(kbr, from, &RecordsMessage::Checked { entries });
    }

    /// What a member holds of suspect records: a record of the key (its signature checked)
    /// confirms the suspect, and replaces it if newer; "nothing" from a majority of the
    /// members drops it (deleted while this node was away, the tombstone gone).
    pub(crate) fn on_checked(
        &mut self,
        kbr: &mut dyn Kbr,
        from: Contact,
        entries: Vec<(Id, CheckAnswer)>,
    ) {
        let majority = self.majority();
        for (key, answer) in entries.into_iter().take(MAX_OFFER) {
            if self.suspect_state(&key).is_none() || !self.is_member_id(kbr, &key, from.id) {
                continue;
            }
            match answer {
                CheckAnswer::Holds(r) if r.key() == key && r.verify().is_ok() => {
                    self.confirm(&key);
                    let _ = self.keep(r);
                }
                CheckAnswer::Nothing if self.absent_at(&key, from.id) >= majority => {
                    self.forget(&key);
                }
                _ => {}
            }
        }
    }
}
