//! The holder side of PAST: storing, diverting, caching, serving and reclaiming replicas.

use std::collections::BTreeSet;

use ringvault_overlay::Kbr;
use ringvault_types::{Contact, Id};

use crate::message::{PastMessage, Refusal};
use crate::past::{refuse, send, Past, MAX_DIVERSION_CANDIDATES, MAX_TOMBSTONES};
use crate::{
    accepts, FileCertificate, Holding, Kind, ReclaimCertificate, ReclaimReceipt, StoreReceipt,
    StoredObject,
};

impl Past {
    /// Makes room for `size` bytes of replica by evicting cached copies.
    pub(crate) fn evict_cache_for(&mut self, size: u64) {
        loop {
            let u = self.store.usage();
            if u.used + u.cached + size <= u.capacity {
                return;
            }
            let Some((id, _)) = self.cache.evict() else {
                return;
            };
            let _ = self.store.remove(&id);
        }
    }

    /// Stores a replica if the acceptance rule allows; returns whether it was stored.
    pub(crate) fn store_replica(
        &mut self,
        cert: &FileCertificate,
        content: &[u8],
        kind: Kind,
        t: f64,
    ) -> bool {
        let id = cert.id();
        if let Ok(Some(o)) = self.store.get(&id) {
            if o.cert != *cert {
                return false;
            }
            if o.kind != Kind::Cached {
                return true;
            }
        }
        let size = content.len() as u64;
        if !accepts(size, self.store.usage().free(), t) {
            return false;
        }
        self.cache.remove(&id);
        self.evict_cache_for(size);
        let obj = StoredObject {
            cert: cert.clone(),
            content: content.to_vec(),
            kind,
        };
        if self.store.put(obj).is_err() {
            return false;
        }
        self.held.insert(id, cert.body.replicas);
        true
    }

    /// Caches a copy in unused space, if there is any.
    pub(crate) fn cache_copy(&mut self, cert: &FileCertificate, content: &[u8]) {
        if !self.cache.admits() {
            return;
        }
        let id = cert.id();
        if matches!(self.store.meta(&id), Ok(Some(_))) || self.tombstones.contains_key(&id) {
            return;
        }
        if content.len() as u64 > self.store.usage().free() / 2 {
            return;
        }
        self.put_cached(cert, content);
    }

    /// Stores a cached copy in space no replica uses, evicting older cache entries if that
    /// makes room; gives up when it does not.
    pub(crate) fn put_cached(&mut self, cert: &FileCertificate, content: &[u8]) {
        let size = content.len() as u64;
        self.evict_cache_for(size);
        let u = self.store.usage();
        if u.used + u.cached + size > u.capacity {
            return;
        }
        let obj = StoredObject {
            cert: cert.clone(),
            content: content.to_vec(),
            kind: Kind::Cached,
        };
        if self.store.put(obj).is_ok() {
            self.cache.touch(cert.id(), size);
        }
    }

    /// A replica-set member stores its replica (diverting it if it lacks space) and answers the
    /// client.
    pub(crate) fn replicate_here(
        &mut self,
        kbr: &mut dyn Kbr,
        req: Option<(u64, Contact)>,
        cert: FileCertificate,
        content: Vec<u8>,
    ) {
        let id = cert.id();
        if self.tombstones.contains_key(&id) || (req.is_none() && self.diverted_to_live(kbr, &id)) {
            return;
        }
        if let Err(_e) = cert.verify_content(&content) {
            refuse(kbr, req, id, Refusal::Invalid);
            return;
        }
        if let Ok(Some(o)) = self.store.get(&id) {
            if o.cert != cert {
                refuse(kbr, req, id, Refusal::Duplicate);
                return;
            }
        }
        if self.store_replica(&cert, &content, Kind::Primary, self.config.t_pri) {
            if let Some((r, client)) = req {
                let receipt = StoreReceipt::issue(&self.identity, id, Holding::Primary);
                send(kbr, client, &PastMessage::Receipt { req: r, receipt });
            }
            return;
        }
        if !self.config.diversion {
            refuse(kbr, req, id, Refusal::NoSpace);
            return;
        }
        // Replica diversion: leaf set nodes outside the k + 1 closest, roomiest first by what
        // they last reported, are asked in turn to hold it for us.
        let k = cert.body.replicas as usize;
        let near: BTreeSet<Id> = kbr.replica_set(&id, k + 1).iter().map(|c| c.id).collect();
        let mut candidates: Vec<Contact> = kbr
            .neighbor_set(usize::MAX)
            .into_iter()
            .filter(|c| !near.contains(&c.id))
            .collect();
        candidates.sort_by_key(|c| std::cmp::Reverse(self.neighbour_free.get(&c.id).copied()));
        candidates.truncate(MAX_DIVERSION_CANDIDATES);
        let primary = kbr.local_contact();
        self.pass_divert(kbr, req, primary, cert, content, candidates);
    }

    /// Sends a diversion request to the first remaining candidate, or tells the client there
    /// is no room when none is left.
    pub(crate) fn pass_divert(
        &mut self,
        kbr: &mut dyn Kbr,
        req: Option<(u64, Contact)>,
        primary: Contact,
        cert: FileCertificate,
        content: Vec<u8>,
        mut candidates: Vec<Contact>,
    ) {
        if candidates.is_empty() {
            refuse(kbr, req, cert.id(), Refusal::NoSpace);
            return;
        }
        let next = candidates.remove(0);
        let msg = PastMessage::Divert {
            req,
            primary,
            cert,
            content,
            candidates,
        };
        send(kbr, next, &msg);
    }

    pub(crate) fn root_insert(
        &mut self,
        kbr: &mut dyn Kbr,
        req: u64,
        client: Contact,
        cert: FileCertificate,
        content: Vec<u8>,
    ) {
        let id = cert.id();
        if cert.verify_content(&content).is_err() {
            refuse(kbr, Some((req, client)), id, Refusal::Invalid);
            return;
        }
        if self.tombstones.contains_key(&id) {
            refuse(kbr, Some((req, client)), id, Refusal::Duplicate);
            return;
        }
        let me = kbr.local_contact();
        for member in kbr.replica_set(&id, cert.body.replicas as usize) {
            if member.id == me.id {
                self.replicate_here(kbr, Some((req, client)), cert.clone(), content.clone());
            } else {
                let msg = PastMessage::Replicate {
                    req: Some((req, client)),
                    cert: cert.clone(),
                    content: content.clone(),
                };
                send(kbr, member, &msg);
            }
        }
    }

    pub(crate) fn on_divert(
        &mut self,
        kbr: &mut dyn Kbr,
        req: Option<(u64, Contact)>,
        primary: Contact,
        cert: FileCertificate,
        content: Vec<u8>,
        candidates: Vec<Contact>,
    ) {
        let id = cert.id();
        if cert.verify_content(&content).is_err() {
            return;
        }
        // A node already holding this object (for another primary) cannot count twice.
        let already = matches!(self.store.meta(&id), Ok(Some((k, _))) if k != Kind::Cached);
        if !already && self.store_replica(&cert, &content, Kind::Diverted, self.config.t_div) {
            let holder = kbr.local_contact();
            let k = cert.body.replicas;
            send(kbr, primary, &PastMessage::Diverted { id, k, holder });
            if let Some((r, client)) = req {
                let receipt = StoreReceipt::issue(&self.identity, id, Holding::Diverted);
                send(kbr, client, &PastMessage::Receipt { req: r, receipt });
            }
        } else {
            let candidates = candidates
                .into_iter()
                .take(MAX_DIVERSION_CANDIDATES)
                .collect();
            self.pass_divert(kbr, req, primary, cert, content, candidates);
        }
    }

    // ---- serving ----

    /// Sends the client this node's copy, if it has a good one; `hops` is how many hops the
    /// lookup took to get here.
    pub(crate) fn serve_lookup(
        &mut self,
        kbr: &mut dyn Kbr,
        req: u64,
        client: Contact,
        id: Id,
        hops: u8,
    ) -> bool {
        match self.store.get(&id) {
            Ok(Some(o)) if o.cert.verify_content(&o.content).is_ok() => {
                if o.kind == Kind::Cached {
                    self.cache.touch(id, o.content.len() as u64);
                }
                send(
                    kbr,
                    client,
                    &PastMessage::Found {
                        req,
                        hops,
                        cert: o.cert,
                        content: o.content,
                    },
                );
                true
            }
            Ok(Some(_)) => {
                // A corrupt copy is never served: drop it; maintenance fetches a good one.
                let _ = self.store.remove(&id);
                self.held.remove(&id);
                self.cache.remove(&id);
                false
            }
            _ => false,
        }
    }

    /// The root answers a lookup, or hands it on: to a diverted replica's holder (its pointer)
    /// first, then to the other nodes closest to the id in turn (the root may have just joined
    /// and not fetched the object yet, or dropped a bad copy), at most [`LOOKUP_HANDOFFS`] of
    /// them. Each counts itself one hop further than the last; the last refuses.
    pub(crate) fn root_lookup(
        &mut self,
        kbr: &mut dyn Kbr,
        req: u64,
        client: Contact,
        id: Id,
        hops: u8,
    ) {
        if self.serve_lookup(kbr, req, client, id, hops) {
            return;
        }
        let me = kbr.local_contact().id;
        let mut chain: Vec<Contact> = self.store.pointer(&id).ok().flatten().into_iter().collect();
        for c in kbr.replica_set(&id, LOOKUP_HANDOFFS + 1) {
            if c.id != me && c.id != client.id && chain.iter().all(|x| x.id != c.id) {
                chain.push(c);
            }
        }
        chain.truncate(LOOKUP_HANDOFFS);
        pass_lookup(kbr, req, client, id, hops, chain);
    }

    /// A lookup a root handed on: answer it, or pass it to the first of `then`. The list only
    /// shrinks, and one longer than any root makes is cut, so a handoff always ends.
    pub(crate) fn handoff_lookup(
        &mut self,
        kbr: &mut dyn Kbr,
        req: u64,
        client: Contact,
        id: Id,
        hops: u8,
        mut then: Vec<Contact>,
    ) {
        if self.serve_lookup(kbr, req, client, id, hops) {
            return;
        }
        then.truncate(LOOKUP_HANDOFFS);
        pass_lookup(kbr, req, client, id, hops, then);
    }

    pub(crate) fn reclaim_here(
        &mut self,
        kbr: &mut dyn Kbr,
        req: u64,
        client: Contact,
        cert: &ReclaimCertificate,
    ) -> Option<Refusal> {
        let id = cert.object;
        let stored = match self.store.get(&id) {
            Ok(Some(o)) => o,
            _ => return Some(Refusal::NotFound),
        };
        if cert.verify(&stored.cert).is_err() {
            return Some(Refusal::NotOwner);
        }
        let freed = self.store.remove(&id).unwrap_or(0);
        self.held.remove(&id);
        self.cache.remove(&id);
        let _ = self.store.remove_pointer(&id);
        self.tombstone(id);
        let receipt = ReclaimReceipt::issue(&self.identity, id, freed);
        send(kbr, client, &PastMessage::Reclaimed { req, receipt });
        None
    }

    pub(crate) fn tombstone(&mut self, id: Id) {
        if self.tombstones.len() >= MAX_TOMBSTONES {
            if let Some((&old, _)) = self.tombstones.iter().min_by_key(|(_, s)| **s) {
                self.tombstones.remove(&old);
            }
        }
        self.tombstone_seq += 1;
        self.tombstones.insert(id, self.tombstone_seq);
    }
}

/// Nodes a root without a copy asks in turn: enough for the default k and a diverted
/// replica's holder. A lookup that asks them all and finds nothing is a true miss that took a
/// few more round trips.
pub(crate) const LOOKUP_HANDOFFS: usize = 4;

/// Hands a lookup to the first of `chain` (telling it the rest), or refuses it when no one is
/// left to ask.
fn pass_lookup(
    kbr: &mut dyn Kbr,
    req: u64,
    client: Contact,
    id: Id,
    hops: u8,
    mut chain: Vec<Contact>,
) {
    if chain.is_empty() {
        refuse(kbr, Some((req, client)), id, Refusal::NotFound);
        return;
    }
    let next = chain.remove(0);
    send(
        kbr,
        next,
        &PastMessage::Lookup {
            req,
            client,
            id,
            handoff: Some(chain),
            hops,
        },
    );
}
