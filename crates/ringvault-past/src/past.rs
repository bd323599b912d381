//! The PAST service: the storage protocol of protocols.md §2 as a state machine on the KBR API.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ringvault_overlay::{
    AppId, AppMessage, Forward, Kbr, Redundancy, RouteInfo, SecureRouteReport, Service,
};
use ringvault_types::{Contact, Duration, Id, Identity, Time};

use crate::message::{PastMessage, Refusal, Want};
use crate::{
    Cache, CachePolicy, FileCertificate, Kind, ReclaimCertificate, ReclaimReceipt, Store,
    StoreReceipt,
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
/// [`Past::under_replicated`] counts at most this often (it walks every replica held).
pub const UNDER_REPLICATED_EVERY: Duration = Duration::from_secs(1);
/// Reclaimed ids remembered (so anti-entropy does not bring them back); oldest forgotten first.
pub const MAX_TOMBSTONES: usize = 65_536;

/// Identifies a client operation of this node; results echo it.
pub type RequestId = u64;

/// Why a client operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PastError {
    /// Not every replica answered in time.
    #[error(
        "object {id}: timed out with {receipts} of {wanted} receipts; the ring may be partitioned"
    )]
    Timeout {
        /// The object (for an insert, the id of the last attempt).
        id: Id,
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
    /// A lookup's deadline passed without a verified copy or a refusal that ended it: the
    /// nodes asked were unreachable, too slow or gave bad answers, which says nothing about
    /// whether the object exists.
    #[error(
        "no node answered the lookup in time; the ring may be partitioned or its holders down"
    )]
    Unanswered,
    /// The reclaim was not signed by the object's owner.
    #[error("only the object's owner can reclaim it")]
    NotOwner,
    /// The request itself was invalid (bad certificate or content).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// More replicas were asked for than the ring has nodes (as this node sees it).
    #[error("{wanted} replicas asked for, but the ring has {nodes} nodes")]
    TooFewNodes {
        /// Replicas asked for.
        wanted: usize,
        /// Nodes this node knows the ring to have (itself included).
        nodes: usize,
    },
    /// Too many operations in flight.
    #[error("too many requests in flight; retry later")]
    Busy,
    /// The local store failed.
    #[error("local storage failed: {0}")]
    Storage(String),
    /// The ring enforces quotas and a replica refused the insert's approval.
    #[error("a replica refused the insert's quota approval (missing, expired or not the owner's managers')")]
    Unapproved,
}

/// How a node's lookups went, as `/v1/status` and `/metrics` report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Tries of open-mode lookups routed again: because no answer came in a few times the
    /// usual lookup latency (once per lookup), or after an unsettled refusal.
    pub resent: u64,
    /// Tries of this node's lookups refused by a root that had lately declared a node near
    /// the object failed ([`crate::Refusal::Unsettled`]), each followed by another try.
    pub unsettled: u64,
    /// Lookups (this node's or others') it handed to a holder that was then found
    /// unresponsive, and handed on to the next.
    pub handoffs_redone: u64,
    /// The smoothed time this node's lookups took to be answered by another node on the first
    /// try (250 ms before any was).
    pub latency: Duration,
}

/// A finished insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inserted {
    /// The object's certificate (its id may differ from the first attempt's after re-salting).
    pub cert: FileCertificate,
    /// One verified receipt per replica.
    pub receipts: Vec<StoreReceipt>,
    /// Every replica held the object (the same content, owner and name) before this insert:
    /// it was complete already, and nothing new was stored. Never set for an insert that had
    /// to be sent again (its own first sending may be what stored it).
    pub already_stored: bool,
}

/// A finished lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The certificate (verified).
    pub cert: FileCertificate,
    /// The content (verified against the certificate).
    pub content: Vec<u8>,
    /// The node that served the copy (a replica holder, a diverted-replica holder or a cache):
    /// the sender of the reply as the transport verified it, never a name the reply claims.
    /// This node itself when it had the copy.
    pub server: Contact,
    /// Overlay hops the lookup took to reach `server` (0 when this node served it; a handoff
    /// from the root to a pointer's target or another replica counts as one more hop). The
    /// count is the one the path reported, not proven.
    pub hops: u8,
}

/// What a certificate-only lookup found: the object's certificate, verified, and its manifest
/// when it is a large file's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// The certificate (verified).
    pub cert: FileCertificate,
    /// The manifest, when the object is one (checked against the certificate).
    pub manifest: Option<crate::Manifest>,
    /// The node that answered (the sender as the transport verified it).
    pub server: Contact,
    /// Overlay hops the request took to reach it.
    pub hops: u8,
}

/// Results of client operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PastEvent {
    /// An insert finished.
    Inserted(RequestId, Result<Inserted, PastError>),
    /// A lookup finished.
    Found(RequestId, Result<Found, PastError>),
    /// A certificate-only lookup ([`Past::describe`]) finished.
    Described(RequestId, Result<Description, PastError>),
    /// A reclaim finished, with the receipts of the nodes that released the object.
    Reclaimed(RequestId, Result<Vec<ReclaimReceipt>, PastError>),
}

impl PastEvent {
    /// The request this event finishes.
    pub fn request(&self) -> RequestId {
        match self {
            PastEvent::Inserted(r, _)
            | PastEvent::Found(r, _)
            | PastEvent::Described(r, _)
            | PastEvent::Reclaimed(r, _) => *r,
        }
    }
}

// Pending operations are few (at most MAX_PENDING); boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Pending {
    Insert {
        signer: crate::client::Signer,
        cert: FileCertificate,
        content: Vec<u8>,
        /// Verified receipts, by the node that sent them.
        receipts: BTreeMap<Id, StoreReceipt>,
        /// Whose receipts count.
        witnesses: crate::secure::Witnesses,
        /// The nodes that stored a fresh copy for this attempt (not those that held the object
        /// already): told to drop it when the attempt is given up.
        holders: Vec<Contact>,
        /// Whether every receipt so far said the node held the object already.
        all_already: bool,
        resalts: u32,
        /// The owner's debit for it (quotas), carried to every replica.
        approval: Option<ringvault_accounts::Committed>,
        /// When the request started (for the insert latency that paces re-sends).
        started: Time,
        /// When the current attempt is sent again, wider, if it has not completed.
        resend: crate::client::Resend,
        deadline: Time,
    },
    Lookup {
        id: Id,
        want: Want,
        stage: crate::secure::LookupStage,
        started: Time,
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
    pub(crate) fn deadline(&self) -> Time {
        match self {
            Pending::Insert { deadline, .. }
            | Pending::Lookup { deadline, .. }
            | Pending::Reclaim { deadline, .. } => *deadline,
        }
    }

    /// When the request next needs attention: its deadline, or an insert's re-send.
    pub(crate) fn wake(&self) -> Time {
        match self {
            Pending::Insert {
                deadline, resend, ..
            } => (*deadline).min(resend.at),
            Pending::Lookup {
                deadline, stage, ..
            } => stage.wake().map_or(*deadline, |t| t.min(*deadline)),
            Pending::Reclaim { deadline, .. } => *deadline,
        }
    }
}

/// PAST's tunable policy. `PastConfig::default()` is the paper's.
#[derive(Clone, Debug, PartialEq)]
pub struct PastConfig {
    /// Refuse a primary replica when size / free > t_pri.
    pub t_pri: f64,
    /// Refuse a diverted replica when size / free > t_div.
    pub t_div: f64,
    /// Replica diversion (to leaf set nodes) and file diversion (re-salting) on refusal. Off,
    /// a full primary refuses the insert outright (for experiments).
    pub diversion: bool,
    /// The density heuristic for lookups: near the key, go to the proximity-nearest of the
    /// nodes estimated to be among the `k` closest (this `k`), so the first replica reached
    /// tends to be a near one. `None` routes lookups by Pastry's rule alone.
    pub lookup_heuristic: Option<u8>,
    /// Which copies passing through are cached in unused space, and which are evicted first.
    pub cache: CachePolicy,
    /// Secure mode (the overlay runs secure routing): inserts go to the replica set through
    /// `sec_route` and count receipts only from the members it verified, lookups that get
    /// no verified copy the ordinary way ask the replica set through `sec_route`, and inserts
    /// leave no cached copies along their path (see `secure.rs`).
    pub secure: bool,
    /// How many of an object's closest nodes a secure lookup asks: at least the largest
    /// replication factor objects are stored with, so every replica is asked.
    pub secure_lookup_width: u8,
    /// Storage quotas: when set, a node stores an insert only with an approval of the
    /// owner's account managers that fits it (`quota.rs`).
    pub quota: Option<crate::Quota>,
    /// Storage audits among leaf set members (`audit.rs`); off in the paper's PAST.
    pub audit: Option<crate::AuditConfig>,
}

impl Default for PastConfig {
    fn default() -> Self {
        PastConfig {
            t_pri: crate::T_PRI,
            t_div: crate::T_DIV,
            diversion: true,
            lookup_heuristic: Some(crate::DEFAULT_REPLICAS),
            cache: CachePolicy::GreedyDualSize,
            secure: false,
            secure_lookup_width: 5,
            quota: None,
            audit: None,
        }
    }
}

/// One node's PAST service.
pub struct Past {
    pub(crate) config: PastConfig,
    pub(crate) identity: Identity,
    pub(crate) store: Box<dyn Store>,
    pub(crate) cache: Cache,
    /// Replication factor of each replica held (from its certificate).
    pub(crate) held: BTreeMap<Id, u8>,
    pub(crate) pending: BTreeMap<RequestId, Pending>,
    pub(crate) next_req: RequestId,
    pub(crate) events: VecDeque<PastEvent>,
    pub(crate) tombstones: BTreeMap<Id, crate::holder::Tombstone>,
    pub(crate) tombstone_seq: u64,
    /// Free space neighbours reported in maintenance messages (diversion picks the roomiest).
    pub(crate) neighbour_free: BTreeMap<Id, u64>,
    pub(crate) next_maintenance: Time,
    pub(crate) started: bool,
    /// Smoothed time inserts of this node took to complete: paces re-sends.
    pub(crate) insert_latency: Duration,
    /// Smoothed time lookups of this node took to be answered: paces their second tries (a
    /// large object on a busy path is slow, not lost).
    pub(crate) lookup_latency: Duration,
    /// For objects held here, the other nodes known to hold them: those that offered them in
    /// maintenance (or after storing a transfer from here) and are still in the leaf set. Only
    /// ids in `held`, at most `2 * MAX_REPLICAS` nodes each.
    pub(crate) known: BTreeMap<Id, BTreeSet<Id>>,
    /// Replicas stored by client inserts since the last announcement, and when the next one is
    /// due: each is offered to the rest of its replica set, batched per member, so holders
    /// learn of each other (and fill a member's gap) without waiting for anti-entropy.
    pub(crate) fresh: Vec<Id>,
    pub(crate) announce_at: Option<Time>,
    /// Messages waiting for the store to finish a write (see `durable.rs`).
    pub(crate) after_write: crate::durable::WriteGate<crate::durable::AfterWrite>,
    /// Secure routes this service started, by the overlay's id for them.
    pub(crate) secure_routes: BTreeMap<u64, crate::secure::SecureRequest>,
    /// Lookups sent through secure routing.
    pub(crate) secure_lookups: u64,
    /// Open-mode lookups routed a second time for want of an answer.
    pub(crate) lookups_resent: u64,
    /// Tries of open-mode lookups refused as unsettled, each followed by another.
    pub(crate) lookups_unsettled: u64,
    /// Lookups handed on lately, oldest first, kept in case their node is found dead.
    pub(crate) passed_on: VecDeque<crate::holder::PassedOn>,
    /// Hand-offs sent again to the next node because the first was declared failed.
    pub(crate) handoffs_redone: u64,
    /// The replica count of cached copies, read once from their certificates: maintenance
    /// checks every round whether this node should hold them as replicas.
    pub(crate) cached_replicas: BTreeMap<Id, u8>,
    /// The last count of [`Past::under_replicated`] and when it was taken.
    under_count: std::cell::Cell<Option<(Time, usize)>>,
    /// Audits of leaf set members, when on.
    pub(crate) audits: Option<crate::audit::Audits>,
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
        Self::with_config(identity, store, PastConfig::default())
    }

    /// Like [`Past::new`], with a policy other than the paper's.
    pub fn with_config(
        identity: Identity,
        store: Box<dyn Store>,
        config: PastConfig,
    ) -> Result<Self, PastError> {
        let cache = Cache::new(config.cache);
        let mut past = Past {
            config,
            identity,
            store,
            cache,
            held: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_req: 0,
            events: VecDeque::new(),
            tombstones: BTreeMap::new(),
            tombstone_seq: 0,
            neighbour_free: BTreeMap::new(),
            next_maintenance: Time::ZERO,
            started: false,
            insert_latency: crate::client::INITIAL_INSERT_LATENCY,
            lookup_latency: crate::client::INITIAL_LOOKUP_LATENCY,
            known: BTreeMap::new(),
            fresh: Vec::new(),
            announce_at: None,
            after_write: crate::durable::WriteGate::default(),
            secure_routes: BTreeMap::new(),
            secure_lookups: 0,
            lookups_resent: 0,
            lookups_unsettled: 0,
            passed_on: VecDeque::new(),
            handoffs_redone: 0,
            cached_replicas: BTreeMap::new(),
            under_count: std::cell::Cell::new(None),
            audits: None,
        };
        past.audits = past
            .config
            .audit
            .map(|c| crate::audit::Audits::new(c, &past.identity));
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

    /// The policy in force.
    pub fn config(&self) -> &PastConfig {
        &self.config
    }

    /// Lookups this node sent through secure routing (secure mode) because the ordinary
    /// route brought no verified copy.
    pub fn secure_lookups(&self) -> u64 {
        self.secure_lookups
    }

    /// How lookups went here: this node's second tries and lookup latency, and the hand-offs it
    /// redid for lookups (its own or others') it had passed on.
    pub fn lookup_stats(&self) -> LookupStats {
        LookupStats {
            resent: self.lookups_resent,
            unsettled: self.lookups_unsettled,
            handoffs_redone: self.handoffs_redone,
            latency: self.lookup_latency,
        }
    }

    /// Changes the policy; it applies to requests and messages handled from now on (objects
    /// already placed stay where they are; cached copies are kept, re-indexed under a new cache
    /// policy).
    pub fn set_config(&mut self, config: PastConfig) {
        if config.cache != self.config.cache {
            let mut cache = Cache::new(config.cache);
            for (id, kind, size) in self.store.list().unwrap_or_default() {
                if kind == Kind::Cached {
                    cache.touch(id, size);
                }
            }
            self.cache = cache;
        }
        self.config = config;
    }

    /// The store, read-only.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Replicas held here whose object is not known to be on all of its k closest nodes: its
    /// replica set (as this node's leaf set sees it) has fewer than k members, or a member that
    /// has not offered the object to this node since it became a member (after a node leaves,
    /// its successor counts until it has fetched the object and said so). Zero on every node
    /// means every replica set is whole: a rolling restart may move on.
    /// The count walks every replica held, so it is taken at most once per
    /// `UNDER_REPLICATED_EVERY`; a call sooner answers the last count.
    pub fn under_replicated(&self, kbr: &dyn Kbr, now: Time) -> usize {
        if let Some((at, n)) = self.under_count.get() {
            if now < at + UNDER_REPLICATED_EVERY {
                return n;
            }
        }
        let me = kbr.local_contact().id;
        let n = self
            .held
            .iter()
            .filter(|(id, k)| {
                let set = self.live_replica_set(kbr, id, **k as usize);
                let known = self.known.get(id);
                set.len() < **k as usize
                    || set.iter().any(|c| {
                        c.id != me && !known.is_some_and(|holders| holders.contains(&c.id))
                    })
            })
            .count();
        self.under_count.set(Some((now, n)));
        n
    }

    /// The next finished client operation.
    pub fn poll_event(&mut self) -> Option<PastEvent> {
        self.events.pop_front()
    }

    /// Records a request; [`PastError::Busy`] when [`MAX_PENDING`] are outstanding.
    pub(crate) fn new_request(&mut self, pending: Pending) -> Result<RequestId, PastError> {
        if self.pending.len() >= MAX_PENDING {
            return Err(PastError::Busy);
        }
        self.next_req += 1;
        self.pending.insert(self.next_req, pending);
        Ok(self.next_req)
    }

    /// Inserts `content` as object `name` of `owner` with `replicas` copies. `date` is the
    /// insertion time in Unix seconds (from the caller's clock). The result comes as
    /// [`PastEvent::Inserted`]; a request that cannot start (a name too long, a replication
    /// factor out of range, more replicas than the ring has nodes, too many requests
    /// outstanding) is refused at once, and nothing is sent.
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
    ) -> Result<RequestId, PastError> {
        let cert = FileCertificate::issue(owner, name, 0, &content, replicas, date);
        // Signed here over this content: only the limits (name length, replicas) can fail.
        cert.verify()
            .map_err(|e| PastError::Invalid(e.to_string()))?;
        let signer = crate::client::Signer::Key(owner.secret_bytes());
        self.start_insert(kbr, now, signer, cert, content, None)
    }

    /// Sends an insert attempt: routed to the object's root, which replicates it (open
    /// mode), or sent by secure routing to the k (and `widen` more) closest nodes themselves,
    /// each storing its replica (secure mode).
    pub(crate) fn send_insert(
        &mut self,
        kbr: &mut dyn Kbr,
        req: RequestId,
        cert: FileCertificate,
        content: Vec<u8>,
        widen: u8,
    ) {
        let id = cert.id();
        let client = kbr.local_contact();
        let approval = match self.pending.get(&req) {
            Some(Pending::Insert { approval, .. }) => approval.clone(),
            _ => None,
        };
        if self.config.secure {
            let r = cert.body.replicas.saturating_add(widen);
            let msg = PastMessage::Replicate {
                req: Some((req, client)),
                cert,
                content,
                spare: false,
                approval,
            };
            // A re-sent insert's last answer may have been a lie that passed the test: this
            // time copies go along independent paths at once.
            let redundancy = if widen == 0 {
                Redundancy::OnFailure
            } else {
                Redundancy::Always
            };
            self.sec_route(kbr, id, &msg, (req, r), redundancy);
            return;
        }
        kbr.route(
            id,
            encode(&PastMessage::Insert {
                req,
                client,
                cert,
                content,
                widen,
                approval,
            }),
            None,
        );
    }

    /// Looks up object `id`; the result comes as [`PastEvent::Found`] (refused at once, as
    /// [`PastError::Busy`], when too many requests are outstanding).
    pub fn lookup(&mut self, kbr: &mut dyn Kbr, now: Time, id: Id) -> Result<RequestId, PastError> {
        self.start_lookup(kbr, now, id, Want::Content)
    }

    /// Looks up object `id`'s certificate (and its manifest, for a large file) without moving
    /// its content or leaving a cached copy; the result comes as [`PastEvent::Described`].
    pub fn describe(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        id: Id,
    ) -> Result<RequestId, PastError> {
        self.start_lookup(kbr, now, id, Want::Description)
    }

    fn start_lookup(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        id: Id,
        want: Want,
    ) -> Result<RequestId, PastError> {
        // When the ordinary route brought nothing in a few times what lookups take here,
        // secure mode tries secure routing, and open mode routes the lookup once more: a
        // lookup, its hand-off or its answer may be lost (a holder that died after taking it,
        // a full send queue) and only the asker can notice. Once only: a 4 MiB chunk on a busy
        // path can take longer than the interval, and asking again and again would multiply
        // the load.
        let retry = Some(now + self.lookup_retry_interval());
        let req = self.new_request(Pending::Lookup {
            id,
            want,
            stage: crate::secure::LookupStage::Plain {
                retry,
                unsettled: 0,
            },
            started: now,
            deadline: now + REQUEST_TIMEOUT,
        })?;
        let me = kbr.local_contact();
        // The first node on the path holding a copy answers, and this one is the first: a
        // holder asked for its own object must not send the lookup away (the root leaves the
        // client out of its hand-offs, so it could be told "not found" by the others).
        let here = crate::holder::Asked {
            req,
            client: me,
            id,
            hops: 0,
            want,
        };
        if !self.serve_lookup(kbr, &here) {
            self.route_lookup(kbr, req, id, want);
        }
        Ok(req)
    }

    /// Routes lookup `req` towards `id`'s root, through the replica the locality heuristic
    /// (when on) takes to be nearest.
    pub(crate) fn route_lookup(&mut self, kbr: &mut dyn Kbr, req: RequestId, id: Id, want: Want) {
        let msg = want.ask(req, kbr.local_contact(), id, None, 0);
        let hint = self
            .config
            .lookup_heuristic
            .and_then(|k| crate::locality::nearest_replica_hop(kbr, &id, k as usize));
        kbr.route(id, encode(&msg), hint);
    }

    /// Reclaims object `id` with the owner's signed certificate; the result comes as
    /// [`PastEvent::Reclaimed`].
    pub fn reclaim(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        cert: ReclaimCertificate,
        k: u8,
    ) -> Result<RequestId, PastError> {
        let id = cert.object;
        let req = self.new_request(Pending::Reclaim {
            id,
            k: k as usize,
            receipts: BTreeMap::new(),
            refusal: None,
            deadline: now + REQUEST_TIMEOUT,
        })?;
        let client = kbr.local_contact();
        if self.config.secure {
            // Straight to the replica set, each member releasing its own copy.
            let msg = PastMessage::ReclaimReplica { req, client, cert };
            self.sec_route(kbr, id, &msg, (req, k), Redundancy::OnFailure);
            return Ok(req);
        }
        kbr.route(
            id,
            encode(&PastMessage::Reclaim { req, client, cert }),
            None,
        );
        Ok(req)
    }
}

impl Want {
    /// The event that reports a lookup of this kind failing with `e`.
    pub(crate) fn failed(self, req: RequestId, e: PastError) -> PastEvent {
        match self {
            Want::Content => PastEvent::Found(req, Err(e)),
            Want::Description => PastEvent::Described(req, Err(e)),
        }
    }
}

pub(crate) fn encode(m: &PastMessage) -> AppMessage {
    AppMessage {
        app: PAST_APP,
        body: postcard::to_allocvec(m).expect("PAST messages always encode"),
    }
}

pub(crate) fn send(kbr: &mut dyn Kbr, to: Contact, m: &PastMessage) {
    kbr.send_direct(to, encode(m));
}

/// Tells the client of request `req` (if there is one) that this node refuses it.
pub(crate) fn refuse(kbr: &mut dyn Kbr, req: Option<(u64, Contact)>, id: Id, reason: Refusal) {
    if let Some((req, client)) = req {
        send(kbr, client, &PastMessage::Refused { req, id, reason });
    }
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
        self.release_written(kbr);
        let Ok(m) = postcard::from_bytes::<PastMessage>(&msg.body) else {
            return; // a malformed message from a peer is dropped
        };
        self.deliver_message(kbr, now, m, info);
        if !self.fresh.is_empty() && self.announce_at.is_none() {
            self.announce_at = Some(now + MAINTENANCE_DELAY);
        }
    }

    fn forward(
        &mut self,
        kbr: &mut dyn Kbr,
        _now: Time,
        _key: Id,
        msg: &mut AppMessage,
        next: &mut Contact,
    ) -> Forward {
        let Ok(m) = postcard::from_bytes::<PastMessage>(&msg.body) else {
            return Forward::Continue;
        };
        let want = m.want();
        match m {
            // The first node on the path holding a copy answers. Every node after the client
            // counts itself one hop further than the last.
            PastMessage::Lookup {
                req,
                client,
                id,
                handoff,
                hops,
            }
            | PastMessage::Describe {
                req,
                client,
                id,
                handoff,
                hops,
            } => {
                if client.id != kbr.local_contact().id {
                    let here = hops.saturating_add(1);
                    let ask = crate::holder::Asked {
                        req,
                        client,
                        id,
                        hops: here,
                        want,
                    };
                    if self.serve_lookup(kbr, &ask) {
                        return Forward::Stop;
                    }
                    msg.body = encode(&want.ask(req, client, id, handoff, here)).body;
                }
                let nearer = self
                    .config
                    .lookup_heuristic
                    .and_then(|k| crate::locality::nearest_replica_hop(kbr, &id, k as usize));
                if let Some(c) = nearer {
                    *next = c;
                }
                Forward::Continue
            }
            // Inserts leave a cached copy along the way (checked only if it would be kept).
            // Secure inserts go by secure routing and are never seen here.
            PastMessage::Insert { cert, content, .. } => {
                if self.cache.admits() && cert.verify_content(&content).is_ok() {
                    self.cache_copy(&cert, &content);
                }
                Forward::Continue
            }
            _ => Forward::Continue,
        }
    }

    fn secure_routed(&mut self, kbr: &mut dyn Kbr, now: Time, report: &SecureRouteReport) {
        self.on_secure_routed(kbr, now, report);
    }

    fn unresponsive(&mut self, kbr: &mut dyn Kbr, now: Time, node: Contact) {
        self.handoff_target_failed(kbr, now, &node.id);
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
        let pending = self.pending.values().map(Pending::wake).min();
        [
            maintenance,
            pending,
            self.announce_at,
            self.written_deadline(),
            self.audits.as_ref().and_then(|a| a.deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timeout(&mut self, kbr: &mut dyn Kbr, now: Time) {
        self.release_written(kbr);
        self.expire(kbr, now);
        self.resend_due(kbr, now);
        self.retry_lookups(kbr, now);
        if self.announce_at.is_some_and(|t| now >= t) {
            self.announce_at = None;
            self.announce_fresh(kbr);
        }
        if self.started && now >= self.next_maintenance {
            self.next_maintenance = now + ANTI_ENTROPY_INTERVAL;
            self.maintain(kbr);
        }
        if self.started {
            self.audit_tick(kbr, now);
        }
    }
}

impl Past {
    /// Handles one decoded PAST message.
    fn deliver_message(&mut self, kbr: &mut dyn Kbr, now: Time, m: PastMessage, info: RouteInfo) {
        let want = m.want();
        // A reply names its sender through `info.origin`, which only an authenticated sender
        // vouches for: one routed in (with any origin written in it) is dropped.
        let reply = matches!(
            m,
            PastMessage::Receipt { .. }
                | PastMessage::Refused { .. }
                | PastMessage::Found { .. }
                | PastMessage::Described { .. }
                | PastMessage::Reclaimed { .. }
                | PastMessage::Offer { .. }
                | PastMessage::Want { .. }
                | PastMessage::AuditChallenge { .. }
                | PastMessage::AuditProof { .. }
                | PastMessage::Accuse { .. }
        );
        if reply && !info.via.authenticated() {
            return;
        }
        match m {
            PastMessage::Insert {
                req,
                client,
                cert,
                content,
                widen,
                approval,
            } => {
                if !self.approved(kbr, now, &cert, approval.as_ref()) {
                    let req = Some((req, client));
                    refuse(kbr, req, cert.id(), Refusal::Unapproved);
                    return;
                }
                self.root_insert(kbr, req, client, cert, content, widen, approval)
            }
            PastMessage::Replicate {
                req,
                cert,
                content,
                spare,
                approval,
            } => {
                let id = cert.id();
                if req.is_some() && !self.approved(kbr, now, &cert, approval.as_ref()) {
                    if !spare {
                        refuse(kbr, req, id, Refusal::Unapproved);
                    }
                    return;
                }
                if req.is_none() {
                    // Maintenance transfer: only take it if we belong to its replica set.
                    let me = kbr.local_contact().id;
                    let k = cert.body.replicas as usize;
                    if !self
                        .live_replica_set(kbr, &id, k)
                        .iter()
                        .any(|c| c.id == me)
                    {
                        self.keep_early_transfer(&cert, &content);
                        return;
                    }
                }
                if cert.verify_content(&content).is_err() {
                    if !spare {
                        refuse(kbr, req, id, Refusal::Invalid);
                    }
                    return;
                }
                self.replicate_here(kbr, req, cert, content, spare, approval);
                if req.is_none() && self.held.contains_key(&id) {
                    // Tell the sender this node holds it now: it stops counting the object
                    // as short of a replica.
                    let free = self.store.usage().free();
                    let offer = PastMessage::Offer {
                        ids: vec![id],
                        free,
                    };
                    self.send_when_written(kbr, id, info.origin, offer, None);
                }
            }
            PastMessage::Divert {
                req,
                primary,
                cert,
                content,
                candidates,
                approval,
            } => {
                if req.is_some() && !self.approved(kbr, now, &cert, approval.as_ref()) {
                    refuse(kbr, req, cert.id(), Refusal::Unapproved);
                    return;
                }
                self.on_divert(kbr, req, primary, cert, content, candidates, approval)
            }
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
            PastMessage::Receipt {
                req,
                receipt,
                already,
            } => self.on_receipt(now, req, receipt, already, info.origin),
            PastMessage::Refused { req, id, reason } => {
                self.on_refused(kbr, now, req, id, reason, info.origin)
            }
            PastMessage::Lookup {
                req,
                client,
                id,
                handoff,
                hops,
            }
            | PastMessage::Describe {
                req,
                client,
                id,
                handoff,
                hops,
            } => {
                // The hops this lookup took to get here (none when the client is its root).
                let here = if client.id == kbr.local_contact().id && handoff.is_none() {
                    0
                } else {
                    hops.saturating_add(1)
                };
                let ask = crate::holder::Asked {
                    req,
                    client,
                    id,
                    hops: here,
                    want,
                };
                match handoff {
                    Some(then) => self.handoff_lookup(kbr, now, ask, then),
                    None => self.root_lookup(kbr, now, ask),
                }
            }
            PastMessage::Described {
                req,
                hops,
                cert,
                manifest,
            } => self.on_described(kbr, now, req, (info.origin, hops), cert, manifest),
            PastMessage::Found {
                req,
                hops,
                cert,
                content,
            } => self.on_found(kbr, now, req, (info.origin, hops), cert, content),
            PastMessage::Reclaim { req, client, cert } => {
                let id = cert.object;
                match self.reclaim_here(kbr, req, client, &cert) {
                    Some(reason) => refuse(kbr, Some((req, client)), id, reason),
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
            PastMessage::Abandon { cert } => self.abandon_here(&cert),
            PastMessage::Reclaimed { req, receipt } => self.on_reclaimed(req, receipt),
            PastMessage::Offer { ids, free } => {
                self.note_free(info.origin.id, free);
                self.on_offer(kbr, info.origin, ids)
            }
            PastMessage::Want { ids, free } => {
                self.note_free(info.origin.id, free);
                self.on_want(kbr, info.origin, ids)
            }
            PastMessage::AuditChallenge { challenge } => {
                self.on_challenge(kbr, now, info.origin, challenge)
            }
            PastMessage::AuditProof { proof } => self.on_proof(kbr, now, info.origin, proof),
            PastMessage::Accuse {
                target,
                cert,
                content,
                evidence,
            } => self.on_accuse(kbr, now, info.origin, (target, cert, content, evidence)),
        }
    }
}

const MAX_REPLICAS_USIZE: usize = crate::MAX_REPLICAS as usize;

impl Past {
    pub(crate) fn note_free(&mut self, node: Id, free: u64) {
        if self.neighbour_free.len() < 1024 || self.neighbour_free.contains_key(&node) {
            self.neighbour_free.insert(node, free);
        }
    }
}
