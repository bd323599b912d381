//! The PAST service: the storage protocol of protocols.md §2 as a state machine on the KBR API.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ringvault_overlay::{AppId, AppMessage, Forward, Kbr, RouteInfo, Service};
use ringvault_types::{Contact, Duration, Id, Identity, Time};

use crate::message::{PastMessage, Refusal};
use crate::{
    accepts, FileCertificate, GreedyDualSize, Holding, Kind, ReclaimCertificate, ReclaimReceipt,
    Store, StoreReceipt, StoredObject, T_DIV, T_PRI,
};

/// The application id of PAST messages.
pub const PAST_APP: AppId = 2;
/// How long a client operation waits before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// File diversion: an insert refused for lack of space is retried under a new salt this many
/// times.
pub const MAX_RESALTS: u32 = 3;
/// At most this many client operations are outstanding; more fail at once with `Busy`.
pub const MAX_PENDING: usize = 4096;
/// Maintenance runs this long after a leaf set change (changes in a burst share one pass).
pub const MAINTENANCE_DELAY: Duration = Duration::from_secs(1);
/// Anti-entropy runs at least this often.
pub const ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(60);
/// At most this many ids go in one offer or want message.
pub const MAX_IDS_PER_MESSAGE: usize = 512;
/// A diverted replica is offered to at most this many leaf set nodes in turn.
pub const MAX_DIVERSION_CANDIDATES: usize = 4;
/// Reclaimed ids remembered (so anti-entropy does not bring them back); oldest forgotten first.
pub const MAX_TOMBSTONES: usize = 65_536;

/// Identifies a client operation of this node; results echo it.
pub type RequestId = u64;

/// Why a client operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PastError {
    /// Not every replica answered in time.
    #[error("timed out with {receipts} of {wanted} receipts; the ring may be partitioned")]
    Timeout {
        /// Receipts received.
        receipts: usize,
        /// Receipts needed.
        wanted: usize,
    },
    /// The ring had no room even after re-salting.
    #[error("the ring has no room for this object (tried {0} salts)")]
    NoSpace(u32),
    /// An object with this name and owner already exists.
    #[error("an object with this id already exists; pick another name")]
    Duplicate,
    /// No node holds the object.
    #[error("no such object")]
    NotFound,
    /// The reclaim was not signed by the object's owner.
    #[error("only the object's owner can reclaim it")]
    NotOwner,
    /// The request itself was invalid (bad certificate or content).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Too many operations in flight.
    #[error("too many requests in flight; retry later")]
    Busy,
    /// The local store failed.
    #[error("local storage failed: {0}")]
    Storage(String),
}

/// A finished insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inserted {
    /// The object's certificate (its id may differ from the first attempt's after re-salting).
    pub cert: FileCertificate,
    /// One verified receipt per replica.
    pub receipts: Vec<StoreReceipt>,
}

/// A finished lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The certificate (verified).
    pub cert: FileCertificate,
    /// The content (verified against the certificate).
    pub content: Vec<u8>,
}

/// Results of client operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PastEvent {
    /// An insert finished.
    Inserted(RequestId, Result<Inserted, PastError>),
    /// A lookup finished.
    Found(RequestId, Result<Found, PastError>),
    /// A reclaim finished, with the receipts of the nodes that released the object.
    Reclaimed(RequestId, Result<Vec<ReclaimReceipt>, PastError>),
}

// Pending operations are few (at most MAX_PENDING); boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Pending {
    Insert {
        owner: [u8; 32],
        cert: FileCertificate,
        content: Vec<u8>,
        receipts: BTreeMap<Id, StoreReceipt>,
        resalts: u32,
        deadline: Time,
    },
    Lookup {
        id: Id,
        deadline: Time,
    },
    Reclaim {
        id: Id,
        k: usize,
        receipts: BTreeMap<Id, ReclaimReceipt>,
        refusal: Option<Refusal>,
        deadline: Time,
    },
}

impl Pending {
    fn deadline(&self) -> Time {
        match self {
            Pending::Insert { deadline, .. }
            | Pending::Lookup { deadline, .. }
            | Pending::Reclaim { deadline, .. } => *deadline,
        }
    }
}

/// One node's PAST service.
pub struct Past {
    identity: Identity,
    store: Box<dyn Store>,
    cache: GreedyDualSize,
    /// Replication factor of each replica held (from its certificate).
    held: BTreeMap<Id, u8>,
    pending: BTreeMap<RequestId, Pending>,
    next_req: RequestId,
    events: VecDeque<PastEvent>,
    tombstones: BTreeMap<Id, u64>,
    tombstone_seq: u64,
    /// Free space neighbours reported in maintenance messages (diversion picks the roomiest).
    neighbour_free: BTreeMap<Id, u64>,
    next_maintenance: Time,
    started: bool,
}

impl std::fmt::Debug for Past {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Past")
            .field("node", &self.identity.id())
            .field("held", &self.held.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Past {
    /// The PAST service of the node with `identity` (it signs receipts), keeping objects in
    /// `store`. Objects already in the store are taken up again.
    pub fn new(identity: Identity, store: Box<dyn Store>) -> Result<Self, PastError> {
        let mut past = Past {
            identity,
            store,
            cache: GreedyDualSize::new(),
            held: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_req: 0,
            events: VecDeque::new(),
            tombstones: BTreeMap::new(),
            tombstone_seq: 0,
            neighbour_free: BTreeMap::new(),
            next_maintenance: Time::ZERO,
            started: false,
        };
        let list = past
            .store
            .list()
            .map_err(|e| PastError::Storage(e.to_string()))?;
        for (id, kind, size) in list {
            match kind {
                Kind::Cached => past.cache.touch(id, size),
                Kind::Primary | Kind::Diverted => {
                    if let Ok(Some(o)) = past.store.get(&id) {
                        past.held.insert(id, o.cert.body.replicas);
                    }
                }
            }
        }
        Ok(past)
    }

    /// The store, read-only.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The next finished client operation.
    pub fn poll_event(&mut self) -> Option<PastEvent> {
        self.events.pop_front()
    }

    fn new_request(&mut self, pending: Pending) -> Option<RequestId> {
        if self.pending.len() >= MAX_PENDING {
            return None;
        }
        self.next_req += 1;
        self.pending.insert(self.next_req, pending);
        Some(self.next_req)
    }

    /// Inserts `content` as object `name` of `owner` with `replicas` copies. `date` is the
    /// insertion time in Unix seconds (from the caller's clock). The result comes as
    /// [`PastEvent::Inserted`].
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        owner: &Identity,
        name: &str,
        content: Vec<u8>,
        replicas: u8,
        date: u64,
    ) -> RequestId {
        let cert = FileCertificate::issue(owner, name, 0, &content, replicas, date);
        if let Err(e) = cert.verify_content(&content) {
            return self.fail_now(PastEvent::Inserted(
                0,
                Err(PastError::Invalid(e.to_string())),
            ));
        }
        let pending = Pending::Insert {
            owner: owner.secret_bytes(),
            cert: cert.clone(),
            content: content.clone(),
            receipts: BTreeMap::new(),
            resalts: 0,
            deadline: now + REQUEST_TIMEOUT,
        };
        let Some(req) = self.new_request(pending) else {
            return self.fail_now(PastEvent::Inserted(0, Err(PastError::Busy)));
        };
        self.send_insert(kbr, req, cert, content);
        req
    }

    fn send_insert(
        &mut self,
        kbr: &mut dyn Kbr,
        req: RequestId,
        cert: FileCertificate,
        content: Vec<u8>,
    ) {
        let id = cert.id();
        let client = kbr.local_contact();
        kbr.route(
            id,
            encode(&PastMessage::Insert {
                req,
                client,
                cert,
                content,
            }),
            None,
        );
    }

    /// Looks up object `id`; the result comes as [`PastEvent::Found`].
    pub fn lookup(&mut self, kbr: &mut dyn Kbr, now: Time, id: Id) -> RequestId {
        let Some(req) = self.new_request(Pending::Lookup {
            id,
            deadline: now + REQUEST_TIMEOUT,
        }) else {
            return self.fail_now(PastEvent::Found(0, Err(PastError::Busy)));
        };
        let client = kbr.local_contact();
        let msg = PastMessage::Lookup {
            req,
            client,
            id,
            handoff: false,
        };
        kbr.route(id, encode(&msg), None);
        req
    }

    /// Reclaims object `id` with the owner's signed certificate; the result comes as
    /// [`PastEvent::Reclaimed`].
    pub fn reclaim(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        cert: ReclaimCertificate,
        k: u8,
    ) -> RequestId {
        let id = cert.object;
        let Some(req) = self.new_request(Pending::Reclaim {
            id,
            k: k as usize,
            receipts: BTreeMap::new(),
            refusal: None,
            deadline: now + REQUEST_TIMEOUT,
        }) else {
            return self.fail_now(PastEvent::Reclaimed(0, Err(PastError::Busy)));
        };
        let client = kbr.local_contact();
        kbr.route(
            id,
            encode(&PastMessage::Reclaim { req, client, cert }),
            None,
        );
        req
    }

    fn fail_now(&mut self, e: PastEvent) -> RequestId {
        self.events.push_back(e);
        0
    }

    // ---- storing ----

    /// Makes room for `size` bytes of replica by evicting cached copies.
    fn evict_cache_for(&mut self, size: u64) {
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
    fn store_replica(
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
    fn cache_copy(&mut self, cert: &FileCertificate, content: &[u8]) {
        let id = cert.id();
        if matches!(self.store.meta(&id), Ok(Some(_))) || self.tombstones.contains_key(&id) {
            return;
        }
        let size = content.len() as u64;
        let u = self.store.usage();
        if size > u.free() / 2 {
            return;
        }
        // Only space no replica uses: evict older cache entries if that makes room.
        while self.store.usage().used + self.store.usage().cached + size > u.capacity {
            let Some((old, _)) = self.cache.evict() else {
                return;
            };
            let _ = self.store.remove(&old);
        }
        let obj = StoredObject {
            cert: cert.clone(),
            content: content.to_vec(),
            kind: Kind::Cached,
        };
        if self.store.put(obj).is_ok() {
            self.cache.touch(id, size);
        }
    }

    /// A replica-set member stores its replica (diverting it if it lacks space) and answers the
    /// client.
    fn replicate_here(
        &mut self,
        kbr: &mut dyn Kbr,
        req: Option<(u64, Contact)>,
        cert: FileCertificate,
        content: Vec<u8>,
    ) {
        let id = cert.id();
        if self.tombstones.contains_key(&id) {
            return;
        }
        if let Err(_e) = cert.verify_content(&content) {
            if let Some((r, client)) = req {
                send(
                    kbr,
                    client,
                    &PastMessage::Refused {
                        req: r,
                        id,
                        reason: Refusal::Invalid,
                    },
                );
            }
            return;
        }
        if let Ok(Some(o)) = self.store.get(&id) {
            if o.cert != cert {
                if let Some((r, client)) = req {
                    send(
                        kbr,
                        client,
                        &PastMessage::Refused {
                            req: r,
                            id,
                            reason: Refusal::Duplicate,
                        },
                    );
                }
                return;
            }
        }
        if self.store_replica(&cert, &content, Kind::Primary, T_PRI) {
            if let Some((r, client)) = req {
                let receipt = StoreReceipt::issue(&self.identity, id, Holding::Primary);
                send(kbr, client, &PastMessage::Receipt { req: r, receipt });
            }
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
    fn pass_divert(
        &mut self,
        kbr: &mut dyn Kbr,
        req: Option<(u64, Contact)>,
        primary: Contact,
        cert: FileCertificate,
        content: Vec<u8>,
        mut candidates: Vec<Contact>,
    ) {
        if candidates.is_empty() {
            if let Some((r, client)) = req {
                let id = cert.id();
                send(
                    kbr,
                    client,
                    &PastMessage::Refused {
                        req: r,
                        id,
                        reason: Refusal::NoSpace,
                    },
                );
            }
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

    fn root_insert(
        &mut self,
        kbr: &mut dyn Kbr,
        req: u64,
        client: Contact,
        cert: FileCertificate,
        content: Vec<u8>,
    ) {
        let id = cert.id();
        if cert.verify_content(&content).is_err() {
            send(
                kbr,
                client,
                &PastMessage::Refused {
                    req,
                    id,
                    reason: Refusal::Invalid,
                },
            );
            return;
        }
        if self.tombstones.contains_key(&id) {
            send(
                kbr,
                client,
                &PastMessage::Refused {
                    req,
                    id,
                    reason: Refusal::Duplicate,
                },
            );
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

    fn on_divert(
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
        if !already && self.store_replica(&cert, &content, Kind::Diverted, T_DIV) {
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

    fn serve_lookup(&mut self, kbr: &mut dyn Kbr, req: u64, client: Contact, id: Id) -> bool {
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

    fn root_lookup(&mut self, kbr: &mut dyn Kbr, req: u64, client: Contact, id: Id) {
        if self.serve_lookup(kbr, req, client, id) {
            return;
        }
        if let Ok(Some(holder)) = self.store.pointer(&id) {
            send(
                kbr,
                holder,
                &PastMessage::Lookup {
                    req,
                    client,
                    id,
                    handoff: true,
                },
            );
            return;
        }
        // The root may have just joined and not fetched it yet: ask the other replicas.
        let me = kbr.local_contact().id;
        let others: Vec<Contact> = kbr
            .replica_set(&id, 2)
            .into_iter()
            .filter(|c| c.id != me)
            .collect();
        match others.first() {
            Some(next) if next.id != client.id => {
                send(
                    kbr,
                    *next,
                    &PastMessage::Lookup {
                        req,
                        client,
                        id,
                        handoff: true,
                    },
                );
            }
            _ => send(
                kbr,
                client,
                &PastMessage::Refused {
                    req,
                    id,
                    reason: Refusal::NotFound,
                },
            ),
        }
    }

    fn reclaim_here(
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

    fn tombstone(&mut self, id: Id) {
        if self.tombstones.len() >= MAX_TOMBSTONES {
            if let Some((&old, _)) = self.tombstones.iter().min_by_key(|(_, s)| **s) {
                self.tombstones.remove(&old);
            }
        }
        self.tombstone_seq += 1;
        self.tombstones.insert(id, self.tombstone_seq);
    }

    // ---- maintenance ----

    /// Offers every replica held to the nodes that should hold it now; demotes replicas this
    /// node should no longer hold to cache.
    fn maintain(&mut self, kbr: &mut dyn Kbr) {
        let me = kbr.local_contact().id;
        let mut offers: BTreeMap<Contact, Vec<Id>> = BTreeMap::new();
        let held: Vec<(Id, u8)> = self.held.iter().map(|(i, k)| (*i, *k)).collect();
        for (id, k) in held {
            let set = kbr.replica_set(&id, k as usize);
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

    fn on_offer(&mut self, kbr: &mut dyn Kbr, from: Contact, ids: Vec<Id>) {
        let me = kbr.local_contact().id;
        let mut want = Vec::new();
        for id in ids.into_iter().take(MAX_IDS_PER_MESSAGE) {
            if self.tombstones.contains_key(&id) {
                continue;
            }
            let have = self.store.meta(&id).ok().flatten().map(|(kind, _)| kind);
            if matches!(have, Some(Kind::Primary | Kind::Diverted)) {
                continue;
            }
            // A cached copy becomes a replica at once if we are in its replica set.
            if let Ok(Some(o)) = self.store.get(&id) {
                let k = o.cert.body.replicas as usize;
                if kbr.replica_set(&id, k).iter().any(|c| c.id == me)
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

    fn on_want(&mut self, kbr: &mut dyn Kbr, from: Contact, ids: Vec<Id>) {
        for id in ids.into_iter().take(MAX_IDS_PER_MESSAGE) {
            if let Ok(Some(o)) = self.store.get(&id) {
                if o.kind != Kind::Cached && o.cert.verify_content(&o.content).is_ok() {
                    let msg = PastMessage::Replicate {
                        req: None,
                        cert: o.cert,
                        content: o.content,
                    };
                    send(kbr, from, &msg);
                }
            }
        }
    }

    // ---- client side ----

    fn on_receipt(&mut self, kbr: &mut dyn Kbr, req: u64, receipt: StoreReceipt) {
        let Some(Pending::Insert { cert, receipts, .. }) = self.pending.get_mut(&req) else {
            return;
        };
        if receipt.verify(&cert.id()).is_err() {
            return;
        }
        receipts.insert(receipt.body.node, receipt);
        if receipts.len() >= cert.body.replicas as usize {
            if let Some(Pending::Insert { cert, receipts, .. }) = self.pending.remove(&req) {
                let receipts = receipts.into_values().collect();
                self.events
                    .push_back(PastEvent::Inserted(req, Ok(Inserted { cert, receipts })));
            }
        }
        let _ = kbr;
    }

    fn on_refused(&mut self, kbr: &mut dyn Kbr, now: Time, req: u64, id: Id, reason: Refusal) {
        match self.pending.get_mut(&req) {
            Some(Pending::Insert { cert, .. }) if cert.id() == id => {}
            Some(Pending::Lookup { id: want, .. }) if *want == id => {
                self.pending.remove(&req);
                self.events
                    .push_back(PastEvent::Found(req, Err(PastError::NotFound)));
                return;
            }
            Some(Pending::Reclaim {
                id: want, refusal, ..
            }) if *want == id => {
                *refusal = Some(reason);
                return;
            }
            _ => return,
        }
        let Some(Pending::Insert {
            owner,
            cert,
            content,
            resalts,
            ..
        }) = self.pending.remove(&req)
        else {
            return;
        };
        let result = match reason {
            Refusal::NoSpace if resalts < MAX_RESALTS => {
                // File diversion: a new salt puts the object in another part of the ring.
                let owner_id = Identity::from_secret_bytes(owner);
                let b = &cert.body;
                let fresh = FileCertificate::issue(
                    &owner_id,
                    &b.name,
                    b.salt + 1,
                    &content,
                    b.replicas,
                    b.date,
                );
                self.pending.insert(
                    req,
                    Pending::Insert {
                        owner,
                        cert: fresh.clone(),
                        content: content.clone(),
                        receipts: BTreeMap::new(),
                        resalts: resalts + 1,
                        deadline: now + REQUEST_TIMEOUT,
                    },
                );
                self.send_insert(kbr, req, fresh, content);
                return;
            }
            Refusal::NoSpace => PastError::NoSpace(resalts + 1),
            Refusal::Duplicate => PastError::Duplicate,
            Refusal::Invalid => PastError::Invalid("a replica rejected the certificate".into()),
            Refusal::NotFound => PastError::NotFound,
            Refusal::NotOwner => PastError::NotOwner,
        };
        self.events.push_back(PastEvent::Inserted(req, Err(result)));
    }

    fn on_found(&mut self, req: u64, cert: FileCertificate, content: Vec<u8>) {
        let Some(Pending::Lookup { id, .. }) = self.pending.get(&req) else {
            return;
        };
        // Only a verified copy of the object asked for is accepted; anything else is ignored
        // and the lookup waits for a good answer or its deadline.
        if cert.id() != *id || cert.verify_content(&content).is_err() {
            return;
        }
        self.pending.remove(&req);
        self.cache_copy(&cert, &content);
        self.events
            .push_back(PastEvent::Found(req, Ok(Found { cert, content })));
    }

    fn on_reclaimed(&mut self, req: u64, receipt: ReclaimReceipt) {
        let Some(Pending::Reclaim {
            id, k, receipts, ..
        }) = self.pending.get_mut(&req)
        else {
            return;
        };
        if receipt.verify(id).is_err() {
            return;
        }
        receipts.insert(receipt.node, receipt);
        if receipts.len() >= *k {
            if let Some(Pending::Reclaim { receipts, .. }) = self.pending.remove(&req) {
                self.events.push_back(PastEvent::Reclaimed(
                    req,
                    Ok(receipts.into_values().collect()),
                ));
            }
        }
    }

    fn expire(&mut self, now: Time) {
        let due: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline() <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            let ev = match self.pending.remove(&req) {
                Some(Pending::Insert { cert, receipts, .. }) => PastEvent::Inserted(
                    req,
                    Err(PastError::Timeout {
                        receipts: receipts.len(),
                        wanted: cert.body.replicas as usize,
                    }),
                ),
                Some(Pending::Lookup { .. }) => PastEvent::Found(req, Err(PastError::NotFound)),
                Some(Pending::Reclaim {
                    receipts,
                    refusal,
                    k,
                    ..
                }) => {
                    let r = if !receipts.is_empty() {
                        Ok(receipts.into_values().collect())
                    } else {
                        match refusal {
                            Some(Refusal::NotOwner) => Err(PastError::NotOwner),
                            Some(Refusal::NotFound) => Err(PastError::NotFound),
                            _ => Err(PastError::Timeout {
                                receipts: 0,
                                wanted: k,
                            }),
                        }
                    };
                    PastEvent::Reclaimed(req, r)
                }
                None => continue,
            };
            self.events.push_back(ev);
        }
    }
}

fn encode(m: &PastMessage) -> AppMessage {
    AppMessage {
        app: PAST_APP,
        body: postcard::to_allocvec(m).expect("PAST messages always encode"),
    }
}

fn send(kbr: &mut dyn Kbr, to: Contact, m: &PastMessage) {
    kbr.send_direct(to, encode(m));
}

impl Service for Past {
    fn app_id(&self) -> AppId {
        PAST_APP
    }

    fn deliver(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        _key: Id,
        msg: AppMessage,
        info: RouteInfo,
    ) {
        let Ok(m) = postcard::from_bytes::<PastMessage>(&msg.body) else {
            return; // a malformed message from a peer is dropped
        };
        match m {
            PastMessage::Insert {
                req,
                client,
                cert,
                content,
            } => self.root_insert(kbr, req, client, cert, content),
            PastMessage::Replicate { req, cert, content } => {
                if req.is_none() {
                    // Maintenance transfer: only take it if we belong to its replica set.
                    let me = kbr.local_contact().id;
                    let k = cert.body.replicas as usize;
                    if !kbr.replica_set(&cert.id(), k).iter().any(|c| c.id == me) {
                        return;
                    }
                }
                self.replicate_here(kbr, req, cert, content)
            }
            PastMessage::Divert {
                req,
                primary,
                cert,
                content,
                candidates,
            } => self.on_divert(kbr, req, primary, cert, content, candidates),
            PastMessage::Diverted { id, k, holder } => {
                if self.store.put_pointer(&id, holder).is_ok() {
                    // The second pointer goes to the (k+1)-th closest node.
                    let k = k as usize;
                    if let Some(next) = kbr.replica_set(&id, k + 1).get(k).copied() {
                        send(kbr, next, &PastMessage::Pointer { id, holder });
                    }
                }
            }
            PastMessage::Pointer { id, holder } => {
                let _ = self.store.put_pointer(&id, holder);
            }
            PastMessage::Receipt { req, receipt } => self.on_receipt(kbr, req, receipt),
            PastMessage::Refused { req, id, reason } => self.on_refused(kbr, now, req, id, reason),
            PastMessage::Lookup {
                req,
                client,
                id,
                handoff,
            } => {
                if handoff {
                    if !self.serve_lookup(kbr, req, client, id) {
                        send(
                            kbr,
                            client,
                            &PastMessage::Refused {
                                req,
                                id,
                                reason: Refusal::NotFound,
                            },
                        );
                    }
                } else {
                    self.root_lookup(kbr, req, client, id);
                }
            }
            PastMessage::Found { req, cert, content } => self.on_found(req, cert, content),
            PastMessage::Reclaim { req, client, cert } => {
                let id = cert.object;
                match self.reclaim_here(kbr, req, client, &cert) {
                    Some(reason) => send(kbr, client, &PastMessage::Refused { req, id, reason }),
                    None => {
                        let me = kbr.local_contact().id;
                        for c in kbr.replica_set(&id, MAX_REPLICAS_USIZE) {
                            if c.id != me {
                                send(
                                    kbr,
                                    c,
                                    &PastMessage::ReclaimReplica {
                                        req,
                                        client,
                                        cert: cert.clone(),
                                    },
                                );
                            }
                        }
                        if let Ok(Some(holder)) = self.store.pointer(&id) {
                            send(
                                kbr,
                                holder,
                                &PastMessage::ReclaimReplica { req, client, cert },
                            );
                        }
                    }
                }
            }
            PastMessage::ReclaimReplica { req, client, cert } => {
                let _ = self.reclaim_here(kbr, req, client, &cert);
            }
            PastMessage::Reclaimed { req, receipt } => self.on_reclaimed(req, receipt),
            PastMessage::Offer { ids, free } => {
                self.note_free(info.origin.id, free);
                self.on_offer(kbr, info.origin, ids)
            }
            PastMessage::Want { ids, free } => {
                self.note_free(info.origin.id, free);
                self.on_want(kbr, info.origin, ids)
            }
        }
    }

    fn forward(
        &mut self,
        kbr: &mut dyn Kbr,
        _now: Time,
        _key: Id,
        msg: &mut AppMessage,
        _next: &mut Contact,
    ) -> Forward {
        let Ok(m) = postcard::from_bytes::<PastMessage>(&msg.body) else {
            return Forward::Continue;
        };
        match m {
            // The first node on the path holding a copy answers.
            PastMessage::Lookup {
                req, client, id, ..
            } if client.id != kbr.local_contact().id => {
                if self.serve_lookup(kbr, req, client, id) {
                    Forward::Stop
                } else {
                    Forward::Continue
                }
            }
            // Inserts leave a cached copy along the way.
            PastMessage::Insert { cert, content, .. } => {
                if cert.verify_content(&content).is_ok() {
                    self.cache_copy(&cert, &content);
                }
                Forward::Continue
            }
            _ => Forward::Continue,
        }
    }

    fn update(&mut self, _kbr: &mut dyn Kbr, now: Time, _node: Contact, _joined: bool) {
        let soon = now + MAINTENANCE_DELAY;
        if self.next_maintenance > soon || !self.started {
            self.next_maintenance = soon;
            self.started = true;
        }
    }

    fn next_deadline(&self) -> Option<Time> {
        let maintenance = self.started.then_some(self.next_maintenance);
        let pending = self.pending.values().map(Pending::deadline).min();
        [maintenance, pending].into_iter().flatten().min()
    }

    fn handle_timeout(&mut self, kbr: &mut dyn Kbr, now: Time) {
        self.expire(now);
        if self.started && now >= self.next_maintenance {
            self.next_maintenance = now + ANTI_ENTROPY_INTERVAL;
            self.maintain(kbr);
        }
    }
}

const MAX_REPLICAS_USIZE: usize = crate::MAX_REPLICAS as usize;

impl Past {
    fn note_free(&mut self, node: Id, free: u64) {
        if self.neighbour_free.len() < 1024 || self.neighbour_free.contains_key(&node) {
            self.neighbour_free.insert(node, free);
        }
    }
}
