//! The holder side of PAST: storing, diverting, caching, serving and reclaiming replicas.

use std::collections::{BTreeSet, VecDeque};

use ringvault_accounts::Committed;
use ringvault_overlay::Kbr;
use ringvault_types::{Contact, Duration, Id, Time};

use crate::message::{PastMessage, Refusal, Want};
use crate::past::{refuse, send, Past, MAX_DIVERSION_CANDIDATES, MAX_TOMBSTONES};
use crate::{
    accepts, AbandonCertificate, FileCertificate, Holding, Kind, Manifest, ReclaimCertificate,
    ReclaimReceipt, StoreError, StoreReceipt, StoredObject,
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

    /// Stores a replica if the acceptance rule allows.
    pub(crate) fn store_replica(
        &mut self,
        cert: &FileCertificate,
        content: &[u8],
        kind: Kind,
        t: f64,
    ) -> Placed {
        let id = cert.id();
        if let Ok(Some(o)) = self.store.get(&id) {
            if !o.cert.same_object(cert) {
                return Placed::Refused;
            }
            if o.kind != Kind::Cached {
                // The same object signed again later (a retry): the copy now belongs to the
                // newer certificate, so giving up the earlier attempt cannot release it.
                if cert.body.date > o.cert.body.date {
                    let newer = StoredObject {
                        cert: cert.clone(),
                        ..o
                    };
                    if self.store.put(newer).is_err() {
                        return Placed::Refused;
                    }
                }
                return Placed::Already;
            }
        }
        let size = content.len() as u64;
        if !accepts(size, self.store.usage().free(), t) {
            return Placed::Refused;
        }
        self.cache.remove(&id);
        self.evict_cache_for(size);
        let obj = StoredObject {
            cert: cert.clone(),
            content: content.to_vec(),
            kind,
        };
        // A refused write (the disk full, an I/O error) is a refusal like a full node's: the
        // caller diverts. A busy store asks the client to slow down instead. Nothing already
        // held is touched.
        match self.store.put(obj) {
            Ok(()) => {}
            Err(StoreError::Busy { .. }) => return Placed::Busy,
            Err(_) => return Placed::Refused,
        }
        self.held.insert(id, cert.body.replicas);
        Placed::Fresh
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
    /// client. The caller has verified the certificate and content.
    /// With `spare` (a node beyond the k closest, standing in for a silent member), a copy
    /// that cannot be stored is dropped without a refusal or a diversion.
    pub(crate) fn replicate_here(
        &mut self,
        kbr: &mut dyn Kbr,
        req: Option<(u64, Contact)>,
        cert: FileCertificate,
        content: Vec<u8>,
        spare: bool,
        approval: Option<Committed>,
    ) {
        let id = cert.id();
        let refuse = |kbr: &mut dyn Kbr, reason| {
            if !spare {
                refuse(kbr, req, id, reason);
            }
        };
        let blocked = match req {
            Some(_) => !self.tombstone_admits(&cert),
            None => self.tombstones.contains_key(&id) || self.diverted_to_live(kbr, &id),
        };
        if blocked {
            return;
        }
        if let Ok(Some(o)) = self.store.get(&id) {
            if !o.cert.same_object(&cert) {
                refuse(kbr, Refusal::Duplicate);
                return;
            }
        }
        let placed = self.store_replica(&cert, &content, Kind::Primary, self.config.t_pri);
        if placed == Placed::Busy {
            // Not diverted: the ring has room, this node is only behind with its writes.
            refuse(kbr, Refusal::Busy);
            return;
        }
        if placed != Placed::Refused {
            // Stored for the owner's new insert: the reclaim it comes after is over.
            self.tombstones.remove(&id);
            if placed == Placed::Fresh && req.is_some() && self.fresh.len() < MAX_FRESH {
                self.fresh.push(id);
            }
            if let Some((r, client)) = req {
                let receipt = StoreReceipt::issue(&self.identity, id, Holding::Primary);
                let already = placed == Placed::Already;
                let msg = PastMessage::Receipt {
                    req: r,
                    receipt,
                    already,
                };
                self.send_when_written(kbr, id, client, msg, req);
            }
            return;
        }
        if spare {
            return;
        }
        if !self.config.diversion {
            refuse(kbr, Refusal::NoSpace);
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
        self.pass_divert(kbr, req, primary, (cert, content, approval), candidates);
    }

    /// Sends a diversion request to the first remaining candidate, or tells the client there
    /// is no room when none is left.
    pub(crate) fn pass_divert(
        &mut self,
        kbr: &mut dyn Kbr,
        req: Option<(u64, Contact)>,
        primary: Contact,
        (cert, content, approval): (FileCertificate, Vec<u8>, Option<Committed>),
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
            approval,
        };
        send(kbr, next, &msg);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn root_insert(
        &mut self,
        kbr: &mut dyn Kbr,
        req: u64,
        client: Contact,
        cert: FileCertificate,
        content: Vec<u8>,
        widen: u8,
        approval: Option<Committed>,
    ) {
        let id = cert.id();
        if cert.verify_content(&content).is_err() {
            refuse(kbr, Some((req, client)), id, Refusal::Invalid);
            return;
        }
        if !self.tombstone_admits(&cert) {
            refuse(kbr, Some((req, client)), id, Refusal::Duplicate);
            return;
        }
        let me = kbr.local_contact();
        let k = cert.body.replicas as usize;
        let members = k + usize::from(widen.min(MAX_WIDEN));
        for (rank, member) in self
            .live_replica_set(kbr, &id, members)
            .into_iter()
            .enumerate()
        {
            let spare = rank >= k;
            if member.id == me.id {
                let (c, bytes, a) = (cert.clone(), content.clone(), approval.clone());
                self.replicate_here(kbr, Some((req, client)), c, bytes, spare, a);
            } else {
                let msg = PastMessage::Replicate {
                    req: Some((req, client)),
                    cert: cert.clone(),
                    content: content.clone(),
                    spare,
                    approval: approval.clone(),
                };
                send(kbr, member, &msg);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_divert(
        &mut self,
        kbr: &mut dyn Kbr,
        req: Option<(u64, Contact)>,
        primary: Contact,
        cert: FileCertificate,
        content: Vec<u8>,
        candidates: Vec<Contact>,
        approval: Option<Committed>,
    ) {
        let id = cert.id();
        if cert.verify_content(&content).is_err() {
            return;
        }
        // A node already holding this object (for another primary) cannot count twice.
        let already = matches!(self.store.meta(&id), Ok(Some((k, _))) if k != Kind::Cached);
        if !already
            && self.store_replica(&cert, &content, Kind::Diverted, self.config.t_div)
                == Placed::Fresh
        {
            let holder = kbr.local_contact();
            let k = cert.body.replicas;
            let diverted = PastMessage::Diverted { id, k, holder };
            self.send_when_written(kbr, id, primary, diverted, None);
            if let Some((r, client)) = req {
                let receipt = StoreReceipt::issue(&self.identity, id, Holding::Diverted);
                let msg = PastMessage::Receipt {
                    req: r,
                    receipt,
                    already: false,
                };
                self.send_when_written(kbr, id, client, msg, req);
            }
        } else {
            let candidates = candidates
                .into_iter()
                .take(MAX_DIVERSION_CANDIDATES)
                .collect();
            self.pass_divert(kbr, req, primary, (cert, content, approval), candidates);
        }
    }

    // ---- serving ----

    /// Sends the client this node's copy (or its description), if it has a good one. A node
    /// answering its own lookup uses a copy only if its certificate verifies in full: its
    /// answer is checked like any other, and one refused there would leave the lookup waiting
    /// for its deadline, never routed. (A cached copy serves it as it serves any lookup that
    /// passes: PAST's cached copies may outlive a reclaim, at this node as on any path.)
    pub(crate) fn serve_lookup(&mut self, kbr: &mut dyn Kbr, ask: &Asked) -> bool {
        let Asked {
            req,
            client,
            id,
            hops,
            want,
        } = *ask;
        let for_itself = client.id == kbr.local_contact().id;
        match self.store.get(&id) {
            Ok(Some(o)) if for_itself && o.cert.verify_content(&o.content).is_err() => false,
            Ok(Some(o)) if o.cert.matches_content(&o.content) => {
                if o.kind == Kind::Cached {
                    self.cache.touch(id, o.content.len() as u64);
                }
                let (cert, content) = (o.cert, o.content);
                let answer = match want {
                    Want::Content => PastMessage::Found {
                        req,
                        hops,
                        cert,
                        content,
                    },
                    Want::Description => PastMessage::Described {
                        req,
                        hops,
                        cert,
                        manifest: Manifest::from_bytes(&content).is_ok().then_some(content),
                    },
                };
                send(kbr, client, &answer);
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
    pub(crate) fn root_lookup(&mut self, kbr: &mut dyn Kbr, now: Time, ask: Asked) {
        if self.serve_lookup(kbr, &ask) {
            return;
        }
        let me = kbr.local_contact().id;
        let mut chain: Vec<Contact> = self
            .store
            .pointer(&ask.id)
            .ok()
            .flatten()
            .into_iter()
            .collect();
        for c in kbr.replica_set(&ask.id, LOOKUP_HANDOFFS + 1) {
            if c.id != me && c.id != ask.client.id && chain.iter().all(|x| x.id != c.id) {
                chain.push(c);
            }
        }
        chain.truncate(LOOKUP_HANDOFFS);
        // Last, a node near the id this root declared failed lately: the failure may be
        // false (a busy holder, whose copy only it may have), and the nodes after this one,
        // which did not declare it failed, watch it when they hand the lookup to it. One
        // more than the hand-offs is still within the cut of a list received.
        let failed = kbr.lately_failed(&ask.id, LOOKUP_HANDOFFS + 1, now);
        if let Some(f) = failed.into_iter().find(|f| f.id != ask.client.id) {
            chain.push(f);
        }
        self.pass_lookup(kbr, now, ask, chain);
    }

    /// A lookup a root handed on: answer it, or pass it to the first of `then`. The list only
    /// shrinks, and one longer than any root makes is cut, so a handoff always ends.
    pub(crate) fn handoff_lookup(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        ask: Asked,
        mut then: Vec<Contact>,
    ) {
        if self.serve_lookup(kbr, &ask) {
            return;
        }
        then.truncate(LOOKUP_HANDOFFS);
        self.pass_lookup(kbr, now, ask, then);
    }

    /// Hands a lookup to the first of `chain` (telling it the rest), or refuses it when no one
    /// is left to ask. Sent straight to it, unacknowledged: so that a hand-off to a holder that
    /// died a moment ago is not lost (the client would wait for its deadline), the overlay is
    /// asked to watch the holder and the hand-off is kept for [`HANDOFF_WATCH`]; if the holder
    /// does not answer the watch, or is declared failed, meanwhile
    /// ([`Past::handoff_target_failed`]), the lookup goes on to the rest (a slow but live
    /// holder then answers too: the client keeps the first answer). One already known to have
    /// failed is skipped.
    fn pass_lookup(&mut self, kbr: &mut dyn Kbr, now: Time, ask: Asked, mut chain: Vec<Contact>) {
        let next = loop {
            if chain.is_empty() {
                let unsettled = !kbr
                    .lately_failed(&ask.id, LOOKUP_HANDOFFS + 1, now)
                    .is_empty();
                let reason = if unsettled {
                    Refusal::Unsettled
                } else {
                    Refusal::NotFound
                };
                refuse(kbr, Some((ask.req, ask.client)), ask.id, reason);
                return;
            }
            let next = chain.remove(0);
            if kbr.watch(next) {
                break next;
            }
        };
        let msg = ask
            .want
            .ask(ask.req, ask.client, ask.id, Some(chain.clone()), ask.hops);
        send(kbr, next, &msg);
        while self
            .passed_on
            .front()
            .is_some_and(|p| p.until <= now || self.passed_on.len() >= MAX_PASSED_ON)
        {
            self.passed_on.pop_front();
        }
        self.passed_on.push_back(PassedOn {
            to: next.id,
            ask,
            rest: chain,
            until: now + HANDOFF_WATCH,
        });
    }

    /// `node` is unresponsive (a watch went unanswered, or it was declared failed): the lookups
    /// handed to it lately go on to the rest of their chains.
    pub(crate) fn handoff_target_failed(&mut self, kbr: &mut dyn Kbr, now: Time, node: &Id) {
        let (gone, keep): (VecDeque<PassedOn>, VecDeque<PassedOn>) =
            std::mem::take(&mut self.passed_on)
                .into_iter()
                .filter(|p| p.until > now)
                .partition(|p| p.to == *node);
        self.passed_on = keep;
        for p in gone {
            self.handoffs_redone += 1;
            self.pass_lookup(kbr, now, p.ask, p.rest);
        }
    }

    /// Releases this node's copy of a reclaimed object. A reclaim signed before the stored
    /// certificate's date is for an earlier insert of the name and releases nothing: the owner
    /// put the object again since, and an old reclaim replayed must not take it.
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
        if cert.date < stored.cert.body.date {
            return Some(Refusal::NotFound);
        }
        let inserted = stored.cert.body.date;
        let freed = match self.release(id, inserted.max(cert.date)) {
            Ok(f) => f,
            Err(refusal) => return Some(refusal),
        };
        let receipt = ReclaimReceipt::issue(&self.identity, id, freed, inserted);
        send(kbr, client, &PastMessage::Reclaimed { req, receipt });
        None
    }

    /// Releases this node's copy of an insert attempt its owner gave up, if the copy is still
    /// that attempt's (a retry signed later has taken it over otherwise).
    pub(crate) fn abandon_here(&mut self, cert: &AbandonCertificate) {
        let Ok(Some(stored)) = self.store.get(&cert.object) else {
            return;
        };
        if stored.kind != Kind::Cached && cert.verify(&stored.cert).is_ok() {
            let _ = self.release(cert.object, cert.attempt);
        }
    }

    /// Drops this node's copy of `id` and remembers it as reclaimed on `date`; answers the
    /// bytes freed, or `NotFound` when the store could not remove it (then nothing changed).
    fn release(&mut self, id: Id, date: u64) -> Result<u64, Refusal> {
        let freed = self.store.remove(&id).map_err(|_| Refusal::NotFound)?;
        self.held.remove(&id);
        self.cache.remove(&id);
        self.known.remove(&id);
        let _ = self.store.remove_pointer(&id);
        self.tombstone(id, date);
        Ok(freed)
    }

    /// Remembers that `id` was reclaimed by a certificate of `date`, so maintenance does not
    /// bring it back.
    pub(crate) fn tombstone(&mut self, id: Id, date: u64) {
        if self.tombstones.len() >= MAX_TOMBSTONES {
            if let Some((&old, _)) = self.tombstones.iter().min_by_key(|(_, t)| t.seq) {
                self.tombstones.remove(&old);
            }
        }
        self.tombstone_seq += 1;
        let seq = self.tombstone_seq;
        self.tombstones.insert(id, Tombstone { seq, date });
    }

    /// Whether a client's insert under `cert` may store an id reclaimed here: only when the
    /// owner signed it after the reclaim (the name is used again, or a given-up attempt is
    /// retried), never an older certificate replayed nor a message of the given-up attempt
    /// still in flight (its date is the reclaim's). Only a check: the tombstone goes once such
    /// an insert is stored here (`replicate_here`).
    pub(crate) fn tombstone_admits(&self, cert: &FileCertificate) -> bool {
        self.tombstones
            .get(&cert.id())
            .is_none_or(|t| cert.body.date > t.date)
    }
}

/// What storing a replica came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placed {
    /// Stored now.
    Fresh,
    /// This node already held the same object.
    Already,
    /// Not stored: no room (by the acceptance rule or the disk), or another object holds the id.
    Refused,
    /// Not stored: the store has too much waiting to be written.
    Busy,
}

/// A reclaimed id, remembered so maintenance does not bring it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tombstone {
    /// Order of reclaiming here: the oldest is forgotten first.
    pub(crate) seq: u64,
    /// The reclaim's date: inserts the owner signed after it are admitted.
    pub(crate) date: u64,
}

/// Replicas of client inserts waiting to be announced to their replica sets; more are left to
/// anti-entropy.
pub(crate) const MAX_FRESH: usize = 65_536;

/// A re-sent insert asks at most this many nodes beyond the k closest.
pub(crate) const MAX_WIDEN: u8 = 2;

/// Nodes a root without a copy asks in turn: enough for the default k and a diverted
/// replica's holder. A lookup that asks them all and finds nothing is a true miss that took a
/// few more round trips.
pub(crate) const LOOKUP_HANDOFFS: usize = 4;

/// How long a node keeps a lookup it handed on, in case the node it went to turns out
/// unresponsive: well beyond the overlay's hop timeout (1.5 s by default), within which a
/// watched node that does not answer its ping is reported.
pub(crate) const HANDOFF_WATCH: Duration = Duration::from_secs(10);

/// Lookups handed on and kept, at most; beyond it the oldest is forgotten.
pub(crate) const MAX_PASSED_ON: usize = 1024;

/// A lookup on its way to a holder: the client's request, the object, what is wanted, and the
/// hops it took to reach the node that has it now.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Asked {
    pub(crate) req: u64,
    pub(crate) client: Contact,
    pub(crate) id: Id,
    pub(crate) hops: u8,
    pub(crate) want: Want,
}

/// A lookup this node handed to `to` (see [`Past::pass_lookup`]), with who is left to ask.
#[derive(Debug)]
pub(crate) struct PassedOn {
    to: Id,
    ask: Asked,
    rest: Vec<Contact>,
    until: Time,
}
