//! Replica maintenance: keep every object on the k closest live nodes (offer/want digests
//! after leaf set changes and periodically), demoting replicas this node no longer owns.

use std::collections::{BTreeMap, BTreeSet};

use ringvault_overlay::Kbr;
use ringvault_types::{Contact, Id};

use crate::message::PastMessage;
use crate::past::{send, Past, MAX_IDS_PER_MESSAGE};
use crate::{FileCertificate, Kind};

/// Bytes of objects one want is answered with; the rest is offered again (see
/// [`Past::on_want`]).
pub(crate) const MAX_WANT_BYTES: u64 = 8 << 20;
/// Objects one want is answered with (many small ones would otherwise fill a send queue).
pub(crate) const MAX_WANT_OBJECTS: usize = 32;

impl Past {
    /// Offers every replica held to the nodes that should hold it now; demotes replicas this
    /// node should no longer hold to cache.
    pub(crate) fn maintain(&mut self, kbr: &mut dyn Kbr) {
        self.promote_cached(kbr);
        let me = kbr.local_contact().id;
        // Nodes that left the leaf set no longer count as holders.
        let members: BTreeSet<Id> = kbr
            .neighbor_set(usize::MAX)
            .iter()
            .map(|c| c.id)
            .filter(|m| !self.suspects(m))
            .collect();
        let held = &self.held;
        self.known.retain(|id, holders| {
            holders.retain(|m| members.contains(m));
            held.contains_key(id) && !holders.is_empty()
        });
        let mut offers: BTreeMap<Contact, Vec<Id>> = BTreeMap::new();
        let held: Vec<(Id, u8)> = self.held.iter().map(|(i, k)| (*i, *k)).collect();
        for (id, k) in held {
            let set = self.live_replica_set(kbr, &id, k as usize);
            let kind = self.store.meta(&id).ok().flatten().map(|(kind, _)| kind);
            if kind.is_none() {
                // The copy is gone (found damaged and discarded): fetch it again from the
                // replica set's offers.
                self.held.remove(&id);
                continue;
            }
            if kind == Some(Kind::Primary) && !set.iter().any(|c| c.id == me) {
                // No longer among the k closest: keep it as cache.
                if self.store.set_kind(&id, Kind::Cached).is_ok() {
                    self.held.remove(&id);
                    let size = self.store.meta(&id).ok().flatten().map_or(0, |m| m.1);
                    self.cache.touch(id, size);
                }
            }
            for c in set.into_iter().filter(|c| c.id != me) {
                offers.entry(c).or_default().push(id);
            }
        }
        let free = self.store.usage().free();
        for (to, ids) in offers {
            for chunk in ids.chunks(MAX_IDS_PER_MESSAGE) {
                send(
                    kbr,
                    to,
                    &PastMessage::Offer {
                        ids: chunk.to_vec(),
                        free,
                    },
                );
            }
        }
    }

    /// Offers the replicas client inserts stored here since the last call to the rest of their
    /// replica sets, one message per member: they answer by wanting what they lack, and their
    /// own announcements tell this node they hold the rest.
    pub(crate) fn announce_fresh(&mut self, kbr: &mut dyn Kbr) {
        let me = kbr.local_contact().id;
        let mut offers: BTreeMap<Contact, Vec<Id>> = BTreeMap::new();
        for id in std::mem::take(&mut self.fresh) {
            let Some(&k) = self.held.get(&id) else {
                continue;
            };
            for c in self.live_replica_set(kbr, &id, k as usize) {
                if c.id != me {
                    offers.entry(c).or_default().push(id);
                }
            }
        }
        let free = self.store.usage().free();
        for (to, ids) in offers {
            for chunk in ids.chunks(MAX_IDS_PER_MESSAGE) {
                let msg = PastMessage::Offer {
                    ids: chunk.to_vec(),
                    free,
                };
                send(kbr, to, &msg);
            }
        }
    }

    /// A maintenance transfer arrived before this node counts itself among the object's k
    /// closest: the sender's failure detection ran ahead of ours. Dropping it would leave the
    /// object short of k until the next anti-entropy round, so it is kept as an evictable cached
    /// copy, in space no replica needs, and [`Past::maintain`] promotes it once this node's own
    /// leaf set agrees.
    pub(crate) fn keep_early_transfer(&mut self, cert: &FileCertificate, content: &[u8]) {
        let id = cert.id();
        if self.tombstones.contains_key(&id)
            || matches!(self.store.meta(&id), Ok(Some(_)))
            || cert.verify().is_err()
            || cert.verify_content(content).is_err()
        {
            return;
        }
        self.put_cached(cert, content);
    }

    /// Turns cached copies of objects this node is now among the k closest for into replicas.
    fn promote_cached(&mut self, kbr: &mut dyn Kbr) {
        let me = kbr.local_contact().id;
        // The widest range this node could hold replicas for; most cached copies lie outside.
        // A leaf set of fewer than MAX_REPLICAS nodes per side cannot give that range: the
        // range of half a leaf set is used then (replicas of objects with more copies are
        // promoted when an offer names them). Skipping every copy there left a former replica
        // that had become an object's last copy cached for good.
        let half = kbr.neighbor_set(usize::MAX).len() / 2;
        let range = kbr
            .range(&me, crate::MAX_REPLICAS as usize - 1)
            .or_else(|| kbr.range(&me, half.saturating_sub(1)));
        let Some((lo, hi)) = range else {
            return;
        };
        let cached: BTreeSet<Id> = self
            .store
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, kind, _)| *kind == Kind::Cached)
            .map(|(id, _, _)| id)
            .collect();
        self.cached_replicas.retain(|id, _| cached.contains(id));
        for id in cached {
            if !(lo == hi || id.in_cw_arc(&lo, &hi)) {
                continue;
            }
            // A copy's replica count is read from disk once, not every round: reading every
            // cached copy in range each round stalled 16-daemon event loops until peers
            // declared them failed.
            let k = match self.cached_replicas.get(&id) {
                Some(&k) => k,
                None => {
                    let Ok(Some(o)) = self.store.get(&id) else {
                        continue;
                    };
                    self.cached_replicas.insert(id, o.cert.body.replicas);
                    o.cert.body.replicas
                }
            };
            if self
                .live_replica_set(kbr, &id, k as usize)
                .iter()
                .any(|c| c.id == me)
                && self.store.set_kind(&id, Kind::Primary).is_ok()
            {
                self.cache.remove(&id);
                self.cached_replicas.remove(&id);
                self.held.insert(id, k);
            }
        }
    }

    pub(crate) fn on_offer(&mut self, kbr: &mut dyn Kbr, from: Contact, ids: Vec<Id>) {
        let me = kbr.local_contact().id;
        let mut want = Vec::new();
        for id in ids.into_iter().take(MAX_IDS_PER_MESSAGE) {
            // `from` holds it (a suspect's word is not taken).
            if self.held.contains_key(&id) && !self.suspects(&from.id) {
                let holders = self.known.entry(id).or_default();
                if holders.len() < 2 * crate::MAX_REPLICAS as usize {
                    holders.insert(from.id);
                }
            }
            if self.tombstones.contains_key(&id) {
                continue;
            }
            let have = self.store.meta(&id).ok().flatten().map(|(kind, _)| kind);
            if matches!(have, Some(Kind::Primary | Kind::Diverted))
                || self.diverted_to_live(kbr, &id)
            {
                continue;
            }
            // A cached copy becomes a replica at once if we are in its replica set.
            if let Ok(Some(o)) = self.store.get(&id) {
                let k = o.cert.body.replicas as usize;
                if self
                    .live_replica_set(kbr, &id, k)
                    .iter()
                    .any(|c| c.id == me)
                    && self.store.set_kind(&id, Kind::Primary).is_ok()
                {
                    self.cache.remove(&id);
                    self.held.insert(id, o.cert.body.replicas);
                    continue;
                }
            }
            want.push(id);
        }
        if !want.is_empty() {
            let free = self.store.usage().free();
            send(kbr, from, &PastMessage::Want { ids: want, free });
        }
    }

    /// Whether this node diverted its replica of `id` to a node its leaf set still holds: that
    /// copy is this node's replica, and fetching the object would only divert it once more
    /// (every round, leaving the earlier copy behind). A pointer to a node gone from the leaf
    /// set no longer counts, so maintenance restores the replica.
    pub(crate) fn diverted_to_live(&self, kbr: &mut dyn Kbr, id: &Id) -> bool {
        let Ok(Some(holder)) = self.store.pointer(id) else {
            return false;
        };
        kbr.neighbor_set(usize::MAX)
            .iter()
            .any(|c| c.id == holder.id)
    }

    /// Sends the objects `from` wants, at most [`MAX_WANT_BYTES`] / [`MAX_WANT_OBJECTS`] of
    /// them, and offers the rest again: `from` asks for what it still lacks once it has stored
    /// these. Repair of hundreds of MiB thus goes in steps paced by the receiver, instead of one
    /// event that reads, hashes and queues all of it (seconds in which neither node answers its
    /// leaf set's keep-alives, so their peers declare them failed and more repair follows).
    pub(crate) fn on_want(&mut self, kbr: &mut dyn Kbr, from: Contact, ids: Vec<Id>) {
        let (mut bytes, mut sent) = (0u64, 0usize);
        let mut ids = ids.into_iter().take(MAX_IDS_PER_MESSAGE);
        for id in ids.by_ref() {
            if let Ok(Some(o)) = self.store.get(&id) {
                if o.kind != Kind::Cached && o.cert.matches_content(&o.content) {
                    bytes += o.content.len() as u64;
                    sent += 1;
                    let msg = PastMessage::Replicate {
                        req: None,
                        cert: o.cert,
                        content: o.content,
                        spare: false,
                        approval: None,
                    };
                    send(kbr, from, &msg);
                }
            }
            if bytes >= MAX_WANT_BYTES || sent >= MAX_WANT_OBJECTS {
                break;
            }
        }
        let rest: Vec<Id> = ids.collect();
        if !rest.is_empty() {
            let free = self.store.usage().free();
            send(kbr, from, &PastMessage::Offer { ids: rest, free });
        }
    }
}
