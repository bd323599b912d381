//! The records service: replicas, writers and readers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ringvault_overlay::{
    AppId, AppMessage, Kbr, Redundancy, RouteInfo, SecureRouteReport, Service, Via,
};
use ringvault_past::{Witnesses, WriteGate};
use ringvault_types::{Contact, Duration, Id, Identity, Precedence, Record, Time};

use crate::message::{RecordAck, RecordRefusal, RecordsMessage};
use crate::store::RecordStore;

/// The application id of records messages.
pub const RECORDS_APP: AppId = 5;

/// Record bytes a node holds at most when not told otherwise.
pub const DEFAULT_CAPACITY: u64 = 256 << 20;

/// How long a node may be away and keep its records trusted, when not told otherwise.
pub const DEFAULT_MAX_ABSENCE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a node back from a long absence asks the members about its records before it
/// serves those nobody could answer for: three rounds of maintenance.
pub const RECHECK_PERIOD: Duration = Duration::from_secs(3 * 60);

/// Identifies a client request on the node that made it.
pub type RequestId = u64;

/// The service's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordsConfig {
    /// Replicas per record.
    pub k: u8,
    /// How long a write waits for its acknowledgements.
    pub write_timeout: Duration,
    /// How long a read waits for a majority of the replicas.
    pub read_timeout: Duration,
    /// Whether a read sends the newest state to the replicas that answered with less.
    pub read_repair: bool,
    /// How many replicas' answers end a read, one of them holding the record (`None`: a
    /// majority of k, which overlaps every write acknowledged by a majority). Fewer answers
    /// sooner and risks an older version.
    pub read_quorum: Option<u8>,
    /// Bytes of records this node holds at most (encoded); beyond it a new or larger record
    /// is refused, so nobody can fill a node's memory with records.
    pub capacity: u64,
    /// How long a node may stay away from the ring and come back with its records trusted.
    /// A tombstone is kept at least this long after every replica holds it, so a node back
    /// within it learns of the delete; a node back after longer re-checks each record with the
    /// other replicas before it serves it (an old version must not come back to life).
    pub max_absence: Duration,
    /// Secure mode: writes and reads reach the replica set through secure routing (each
    /// member gets the request from the route, none passes it on), and acknowledgements,
    /// refusals and answers count only from the k closest certified nodes the requester knows
    /// (those the route reached, and those that replied).
    pub secure: bool,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        RecordsConfig {
            k: 3,
            write_timeout: Duration::from_secs(10),
            // Long enough for a route to find its way past dead replicas (hop timeouts).
            read_timeout: Duration::from_secs(10),
            read_repair: true,
            read_quorum: None,
            capacity: DEFAULT_CAPACITY,
            max_absence: DEFAULT_MAX_ABSENCE,
            secure: false,
        }
    }
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    /// The record does not verify.
    #[error("the record does not verify: {0}")]
    Invalid(String),
    /// A replica holds a higher version: read it and write above it.
    #[error("version {version} is not above the version {held} a replica holds")]
    Stale {
        /// The version written.
        version: u64,
        /// The version held.
        held: u64,
    },
    /// Not enough acknowledgements or answers before the deadline.
    #[error("timed out with {got} of {wanted} replicas")]
    Timeout {
        /// Acknowledgements (writes) or answers (reads) received.
        got: usize,
        /// How many were needed.
        wanted: usize,
    },
    /// Another record of the same version won the tie: read, and write a higher version.
    #[error("another record of version {0} is held (a conflict); read it and write above it")]
    Conflict(u64),
    /// A replica has no room for it.
    #[error("a replica has no room for the record")]
    NoSpace,
    /// A quorum larger than k, or zero.
    #[error("a quorum of {0} is out of range 1..=k")]
    Quorum(u8),
}

/// A finished write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The record written.
    pub record: Record,
    /// The replicas' signed acknowledgements.
    pub acks: Vec<RecordAck>,
}

/// A finished read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// The highest state any replica answered with (`None`: no replica holds the record; a
    /// tombstone when it was deleted).
    pub record: Option<Record>,
    /// Whether replicas answered with different records of the same version.
    pub conflict: bool,
    /// Replicas that answered.
    pub answers: usize,
    /// Replicas sent the newest state because they answered with less (before the result;
    /// replicas that answer later with less are repaired too, until the read's deadline).
    pub repaired: usize,
}

/// Results of client requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordsEvent {
    /// A write finished.
    Written(RequestId, Result<Written, RecordsError>),
    /// A read finished.
    Read(RequestId, Result<ReadResult, RecordsError>),
}

#[derive(Debug)]
enum Pending {
    Write {
        record: Record,
        /// Each replying replica's acknowledgement or refusal.
        replies: BTreeMap<Id, WriteReply>,
        witnesses: Witnesses,
        quorum: usize,
        deadline: Time,
    },
    Read {
        key: Id,
        /// Each answering replica, what it holds (answers that do not verify count as holding
        /// nothing) and whether it saw a conflict at that version.
        answers: BTreeMap<Id, (Contact, Option<Record>, bool)>,
        witnesses: Witnesses,
        /// When the read is routed once more if it has not ended: right after a failure the
        /// first route may end at a node whose replica set still names the dead, so that only
        /// nodes without the record answer.
        again: Option<Time>,
        deadline: Time,
    },
}

impl Pending {
    /// When something is next due: the deadline, or a read's second route.
    fn wake(&self) -> Time {
        match self {
            Pending::Write { deadline, .. } => *deadline,
            Pending::Read {
                again, deadline, ..
            } => again.map_or(*deadline, |a| a.min(*deadline)),
        }
    }

    fn deadline(&self) -> Time {
        match self {
            Pending::Write { deadline, .. } | Pending::Read { deadline, .. } => *deadline,
        }
    }
}

/// What the service has sent, by purpose, since it started (for operators and experiments).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordsStats {
    /// Replicas sent a newer state by a read (read repair), and the bytes it took.
    pub repairs: u64,
    /// Bytes of read repair.
    pub repair_bytes: u64,
    /// Bytes of answers to reads.
    pub answer_bytes: u64,
    /// Bytes of maintenance (offers, wants and the records they move).
    pub maintenance_bytes: u64,
}

impl RecordsStats {
    fn repaired(&mut self, bytes: u64) {
        if bytes > 0 {
            self.repairs += 1;
            self.repair_bytes += bytes;
        }
    }
}

/// A replica's reply to a write.
#[derive(Debug)]
enum WriteReply {
    Ack(RecordAck),
    Refused(RecordRefusal),
}

/// A read answered before every replica did: what it knows until its deadline.
#[derive(Debug)]
struct Late {
    key: Id,
    /// The newest state any replica answered with.
    best: Record,
    /// Each replica that answered, and the state it holds now (after any repair).
    answered: BTreeMap<Id, (Contact, Option<Record>)>,
    deadline: Time,
}

/// Whether a held record may be served and offered to the other replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// Written, repaired or confirmed while this node was in the ring.
    Trusted,
    /// Loaded after this node was away longer than `max_absence` (or for an unknown time):
    /// its record may have been deleted meanwhile and the tombstone dropped, so it is neither
    /// served nor offered until a member holds the key too; "nothing" from a majority of the
    /// members drops it.
    Suspect,
}

/// A record held as a replica.
#[derive(Clone, Debug)]
struct Held {
    record: Record,
    /// Another record of this version was seen (and lost the tie, or this one did and was
    /// replaced): reported to readers until a higher version comes.
    conflict: bool,
    standing: Standing,
    /// Tombstones: the other replicas seen holding this very state (by their offers), and
    /// since when every one of them has; the tombstone goes `max_absence` after that.
    seen: BTreeSet<Id>,
    settled: Option<Time>,
    /// Held outside the key's replica set (the set moved): the members that said they hold
    /// this state or a newer one.
    handed: BTreeSet<Id>,
}

impl Held {
    fn new(record: Record, conflict: bool, standing: Standing) -> Self {
        Held {
            record,
            conflict,
            standing,
            seen: BTreeSet::new(),
            settled: None,
            handed: BTreeSet::new(),
        }
    }
}

/// An acknowledgement (or other message) held until the store has finished the write it
/// vouches for; should the write fail, the writer's request (if any) is refused instead.
struct AfterWrite {
    to: Contact,
    msg: RecordsMessage,
    req: Option<(u64, Contact)>,
}

/// One node's records service: the replicas it holds and the requests it made.
pub struct Records {
    config: RecordsConfig,
    identity: Identity,
    held: BTreeMap<Id, Held>,
    /// Encoded bytes of the records held.
    used: u64,
    pending: BTreeMap<RequestId, Pending>,
    /// Where the records are kept between restarts (`None`: in memory only).
    store: Option<Box<dyn RecordStore>>,
    after_write: WriteGate<AfterWrite>,
    /// When the re-check of suspect records ends (set once the node is in the ring, while any
    /// is held).
    recheck_at: Option<Time>,
    /// During the re-check: the members that said they hold nothing of a suspect key.
    absent: BTreeMap<Id, BTreeSet<Id>>,
    /// Suspect records were loaded; the re-check starts once the node is in the ring.
    recheck_pending: bool,
    pub(crate) stats: RecordsStats,
    /// Experiments: this node loses every write sent to it (see [`Records::lose_writes`]).
    #[cfg(feature = "forge")]
    loses_writes: bool,
    /// The requests sent through secure routing, by the route's id.
    secure_routes: BTreeMap<u64, RequestId>,
    /// Reads answered at a majority whose other replicas may still answer, until the read's
    /// deadline: a late answer that lags is repaired too, and one newer than what the read
    /// returned is sent to those that answered with less.
    late: BTreeMap<RequestId, Late>,
    /// When replicas next compare versions (`None` until the leaf set first changes).
    pub(crate) next_sync: Option<Time>,
    next_req: RequestId,
    events: VecDeque<RecordsEvent>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("node", &self.identity.id())
            .field("held", &self.held.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Records {
    /// The service of the node with `identity` (it signs acknowledgements), holding its
    /// records in memory only.
    pub fn new(identity: Identity, config: RecordsConfig) -> Self {
        Records {
            config,
            identity,
            held: BTreeMap::new(),
            used: 0,
            pending: BTreeMap::new(),
            secure_routes: BTreeMap::new(),
            store: None,
            after_write: WriteGate::default(),
            recheck_at: None,
            absent: BTreeMap::new(),
            recheck_pending: false,
            stats: RecordsStats::default(),
            #[cfg(feature = "forge")]
            loses_writes: false,
            late: BTreeMap::new(),
            next_sync: None,
            next_req: 0,
            events: VecDeque::new(),
        }
    }

    /// The service of a node whose records are kept in `store`, starting from what it holds.
    /// `away` is how long the records were away from the ring (the node was down), if known:
    /// beyond `config.max_absence`, or unknown, each is re-checked with the other replicas
    /// before it is served. Records that do not verify (damaged on disk) are dropped.
    pub fn with_store(
        identity: Identity,
        config: RecordsConfig,
        mut store: Box<dyn RecordStore>,
        away: Option<Duration>,
    ) -> Self {
        let standing = match away {
            Some(d) if d <= config.max_absence => Standing::Trusted,
            _ => Standing::Suspect,
        };
        let loaded = store.load();
        let mut r = Records::new(identity, config);
        for (key, bytes) in loaded {
            match Record::decode(&bytes) {
                Ok(record) if record.key() == key && record.verify().is_ok() => {
                    r.used += size(&record);
                    r.held.insert(key, Held::new(record, false, standing));
                }
                _ => {
                    let _ = store.remove(&key);
                }
            }
        }
        r.recheck_pending = r.suspect() > 0;
        r.store = Some(store);
        r
    }

    /// The state of the record under `key` this node holds as a replica and serves.
    pub fn held(&self, key: &Id) -> Option<&Record> {
        self.held
            .get(key)
            .filter(|h| h.standing == Standing::Trusted)
            .map(|h| &h.record)
    }

    /// How many records this node holds (suspect ones included).
    pub fn count(&self) -> usize {
        self.held.len()
    }

    /// What the service has sent, by purpose.
    pub fn stats(&self) -> RecordsStats {
        self.stats
    }

    /// Experiments only (feature `forge`; a node never calls it): from now on this node keeps
    /// and acknowledges no write that reaches it (as the root it still passes a write on to
    /// the other replicas), so it serves an old version until maintenance or a read repairs it:
    /// a replica that lags.
    #[cfg(feature = "forge")]
    pub fn lose_writes(&mut self) {
        self.loses_writes = true;
    }

    #[cfg(feature = "forge")]
    fn lost(&self) -> bool {
        self.loses_writes
    }

    #[cfg(not(feature = "forge"))]
    fn lost(&self) -> bool {
        false
    }

    /// Records held that wait for the other replicas to confirm them (after a long absence).
    pub fn suspect(&self) -> usize {
        self.held
            .values()
            .filter(|h| h.standing == Standing::Suspect)
            .count()
    }

    /// Makes this replica hold `record` whatever it held (tests: a replica that lags).
    #[cfg(test)]
    pub(crate) fn force_hold(&mut self, record: Record) {
        self.held.remove(&record.key());
        self.used = self.held.values().map(|h| size(&h.record)).sum();
        let _ = self.keep(record);
    }

    /// Encoded bytes of the records held.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The policy in force.
    pub fn config(&self) -> &RecordsConfig {
        &self.config
    }

    /// Every record held and trusted, by key, with its version and tie hash.
    pub(crate) fn versions(&self) -> Vec<(Id, u64, Id)> {
        self.held
            .iter()
            .filter(|(_, h)| h.standing == Standing::Trusted)
            .map(|(k, h)| (*k, h.record.body.version, h.record.tie_hash()))
            .collect()
    }

    /// The next finished request, if any.
    pub fn poll_event(&mut self) -> Option<RecordsEvent> {
        self.events.pop_front()
    }

    /// Writes `record` (signed by its owner) to its k replicas; done at `quorum` signed
    /// acknowledgements (`None`: all k). The result comes as [`RecordsEvent::Written`].
    pub fn put(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        record: Record,
        quorum: Option<u8>,
    ) -> Result<RequestId, RecordsError> {
        record
            .verify()
            .map_err(|e| RecordsError::Invalid(e.to_string()))?;
        let k = self.config.k;
        let quorum = quorum.unwrap_or(k);
        if quorum == 0 || quorum > k {
            return Err(RecordsError::Quorum(quorum));
        }
        let req = self.new_request(Pending::Write {
            record: record.clone(),
            replies: BTreeMap::new(),
            witnesses: Witnesses::new(self.config.secure),
            quorum: quorum as usize,
            deadline: now + self.config.write_timeout,
        });
        let client = kbr.local_contact();
        let key = record.key();
        let m = encode(&RecordsMessage::Put {
            req,
            client,
            record,
        });
        self.send_to_replica_set(kbr, key, m, req, Redundancy::OnFailure);
        Ok(req)
    }

    /// Sends `m` (for request `req`) to `key`'s replica set: routed to the root, which passes
    /// it on, or in secure mode through secure routing to every member.
    fn send_to_replica_set(
        &mut self,
        kbr: &mut dyn Kbr,
        key: Id,
        m: AppMessage,
        req: RequestId,
        redundancy: Redundancy,
    ) {
        if self.config.secure {
            let route = kbr.sec_route(key, m, self.config.k, redundancy);
            self.secure_routes.insert(route, req);
        } else {
            kbr.route(key, m, None);
        }
    }

    /// Reads the record under `key` from its replicas. The result comes as
    /// [`RecordsEvent::Read`].
    pub fn get(&mut self, kbr: &mut dyn Kbr, now: Time, key: Id) -> RequestId {
        let timeout = self.config.read_timeout;
        let req = self.new_request(Pending::Read {
            key,
            answers: BTreeMap::new(),
            witnesses: Witnesses::new(self.config.secure),
            again: Some(now + Duration::from_micros(timeout.as_micros() / 4)),
            deadline: now + timeout,
        });
        self.send_get(kbr, req, key, Redundancy::OnFailure);
        req
    }

    /// Sends read `req` of `key` to the replica set: routed to the root, which answers and
    /// asks the others to, or in secure mode to every member, each answering.
    fn send_get(&mut self, kbr: &mut dyn Kbr, req: RequestId, key: Id, redundancy: Redundancy) {
        let m = encode(&RecordsMessage::Get {
            req,
            client: kbr.local_contact(),
            key,
            fan_out: !self.config.secure,
        });
        self.send_to_replica_set(kbr, key, m, req, redundancy);
    }

    fn new_request(&mut self, p: Pending) -> RequestId {
        self.next_req += 1;
        self.pending.insert(self.next_req, p);
        self.next_req
    }

    /// Keeps `record` if it verifies and supersedes what is held (and stores it). Returns
    /// what is held after.
    pub(crate) fn keep(&mut self, record: Record) -> Result<&Record, RecordRefusal> {
        if record.verify().is_err() {
            return Err(RecordRefusal::Invalid);
        }
        let key = record.key();
        let precedence = self.held.get(&key).map(|h| record.precedence(&h.record));
        // Not newer: the held record stays, remembering a conflict if this was one.
        if let Some(p) = precedence.filter(|p| !p.replaces()) {
            if let Some(h) = self.held.get_mut(&key) {
                h.conflict |= p.is_conflict();
            }
            return Ok(&self.held[&key].record);
        }
        let conflict = precedence.is_some_and(Precedence::is_conflict);
        let old = self.held.get(&key).map_or(0, |h| size(&h.record));
        let encoded = record.encode();
        let new = encoded.len() as u64;
        let used = self.used - old + new;
        if new > old && used > self.config.capacity {
            return Err(RecordRefusal::Full);
        }
        if let Some(store) = self.store.as_mut() {
            // A full or failing disk: refused like a full node, and nothing changes.
            store.put(&key, encoded).map_err(|_| RecordRefusal::Full)?;
        }
        self.used = used;
        let held = Held::new(record, conflict, Standing::Trusted);
        Ok(&self.held.entry(key).insert_entry(held).into_mut().record)
    }

    /// The keys of the suspect records.
    pub(crate) fn suspects(&self) -> Vec<Id> {
        self.held
            .iter()
            .filter(|(_, h)| h.standing == Standing::Suspect)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Member `member` said it holds nothing of suspect `key`: how many members have.
    pub(crate) fn absent_at(&mut self, key: &Id, member: Id) -> usize {
        let said = self.absent.entry(*key).or_default();
        said.insert(member);
        said.len()
    }

    /// Ends a re-check period. A suspect no member said anything definite about (every member
    /// re-checking too, as after the whole ring was down that long, or none reachable) is
    /// served again: nobody can say otherwise. One that some member said it lacks, short of a
    /// majority, stays suspect for another period, and is asked about again.
    fn end_recheck(&mut self, kbr: &mut dyn Kbr, now: Time) {
        let mut again = false;
        for key in self.suspects() {
            if self.absent.get(&key).is_some_and(|s| !s.is_empty()) {
                again = true;
            } else {
                self.confirm(&key);
            }
        }
        self.absent.clear();
        if again {
            self.recheck_at = Some(now + RECHECK_PERIOD);
            self.send_checks(kbr);
        }
    }

    /// Drops the tombstones every replica has held for `max_absence`.
    fn drop_settled_tombstones(&mut self, now: Time) {
        let keep_for = self.config.max_absence;
        let due: Vec<Id> = self
            .held
            .iter()
            .filter(|(_, h)| h.settled.is_some_and(|t| t + keep_for <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.forget(&key);
        }
    }

    /// Another replica, `from`, offered exactly the state held of `key`: for a tombstone,
    /// once every other member of the replica set has, its retention starts.
    pub(crate) fn seen_holding(&mut self, kbr: &dyn Kbr, now: Time, key: &Id, from: Id) {
        let k = self.config.k as usize;
        let Some(h) = self.held.get_mut(key) else {
            return;
        };
        // Only an unsettled tombstone cares (and only it asks for the replica set).
        if !h.record.is_deleted() || h.settled.is_some() {
            return;
        }
        h.seen.insert(from);
        let me = kbr.local_contact().id;
        let settled = kbr
            .replica_set(key, k)
            .iter()
            .all(|c| c.id == me || h.seen.contains(&c.id));
        if settled {
            h.settled = Some(now);
        }
    }

    /// Another replica holds `key` too: a suspect record of it is trusted again.
    pub(crate) fn confirm(&mut self, key: &Id) {
        if let Some(h) = self.held.get_mut(key) {
            h.standing = Standing::Trusted;
        }
    }

    /// Stops holding the record under `key` (and removes it from the store).
    pub(crate) fn forget(&mut self, key: &Id) {
        if let Some(h) = self.held.remove(key) {
            self.used -= size(&h.record);
            if let Some(store) = self.store.as_mut() {
                // A removal that fails is reported and redone (`release_written`).
                let _ = store.remove(key);
            }
        }
    }

    /// A majority of the k replicas.
    pub(crate) fn majority(&self) -> usize {
        self.config.k as usize / 2 + 1
    }

    /// How many replicas' answers end a read (one of them holding the record).
    fn read_quorum(&self) -> usize {
        let k = (self.config.k as usize).max(1);
        self.config
            .read_quorum
            .map_or(self.majority(), |q| (q as usize).clamp(1, k))
    }

    /// Whether this node is among the k closest to `key` (by its leaf set).
    pub(crate) fn is_member(&self, kbr: &dyn Kbr, key: &Id) -> bool {
        self.is_member_id(kbr, key, kbr.local_contact().id)
    }

    /// Whether node `id` is among the k closest to `key`, as this node sees them.
    pub(crate) fn is_member_id(&self, kbr: &dyn Kbr, key: &Id, id: Id) -> bool {
        kbr.replica_set(key, self.config.k as usize)
            .iter()
            .any(|c| c.id == id)
    }

    /// Whether suspect records are being re-checked.
    pub(crate) fn rechecking(&self) -> bool {
        self.recheck_at.is_some()
    }

    /// The state (version, tie hash) of the suspect record under `key`, if it is one.
    pub(crate) fn suspect_state(&self, key: &Id) -> Option<(u64, Id)> {
        self.held
            .get(key)
            .filter(|h| h.standing == Standing::Suspect)
            .map(|h| (h.record.body.version, h.record.tie_hash()))
    }

    /// Member `member` said it holds the state of `key` held here (outside the replica set),
    /// or a newer one: how many members have said so.
    pub(crate) fn handed_to(&mut self, key: &Id, member: Id) -> usize {
        match self.held.get_mut(key) {
            Some(h) => {
                h.handed.insert(member);
                h.handed.len()
            }
            None => 0,
        }
    }

    /// Keeps `record` for a writer: the refusal to send it when it is not kept as it is (it
    /// does not verify, there is no room, a higher version is held, or another record of its
    /// version won the tie).
    fn keep_for_writer(&mut self, record: &Record) -> Result<(), RecordRefusal> {
        if record.verify().is_err() {
            return Err(RecordRefusal::Invalid);
        }
        // A suspect record says nothing about what the writer may write: it is replaced.
        let key = record.key();
        if self
            .held
            .get(&key)
            .is_some_and(|h| h.standing == Standing::Suspect)
        {
            if let Some(h) = self.held.remove(&key) {
                self.used -= size(&h.record);
            }
        }
        let held = self.keep(record.clone())?;
        if held.body.version > record.body.version {
            return Err(RecordRefusal::Stale(held.body.version));
        }
        if held != record {
            return Err(RecordRefusal::Conflict);
        }
        Ok(())
    }

    /// A write reached this node: routed (it passes it on to the other replicas, `forward`)
    /// or through secure routing (every member got it from the route).
    fn on_put(
        &mut self,
        kbr: &mut dyn Kbr,
        req: u64,
        client: Contact,
        record: Record,
        forward: bool,
    ) {
        let key = record.key();
        // Only a member of the record's replica set holds it, however the Put came.
        if !self.is_member(kbr, &key) {
            return;
        }
        // A root that loses writes (experiments) still passes them on.
        if !self.lost() {
            match self.keep_for_writer(&record) {
                Ok(()) => self.ack(kbr, req, client, &key),
                // A conflict goes on to the other replicas all the same: each remembers it, so
                // a read reports it whichever replicas answer.
                Err(RecordRefusal::Conflict) => {
                    refuse(kbr, client, req, key, RecordRefusal::Conflict)
                }
                Err(reason) => return refuse(kbr, client, req, key, reason),
            }
        }
        if !forward {
            return;
        }
        let me = kbr.local_contact().id;
        for member in kbr.replica_set(&key, self.config.k as usize) {
            if member.id != me {
                let m = RecordsMessage::Store {
                    req: Some((req, client)),
                    record: record.clone(),
                };
                kbr.send_direct(member, encode(&m));
            }
        }
    }

    /// Tells the writer what this replica holds for `key`, once the store has it.
    fn ack(&mut self, kbr: &mut dyn Kbr, req: u64, client: Contact, key: &Id) {
        let Some(held) = self.held.get(key) else {
            return;
        };
        let ack = RecordAck::issue(&self.identity, &held.record);
        let item = AfterWrite {
            to: client,
            msg: RecordsMessage::Ack { req, ack },
            req: Some((req, client)),
        };
        let progress = self
            .store
            .as_ref()
            .map(|s| s.progress())
            .unwrap_or_default();
        if let Some(a) = self.after_write.pass(progress, *key, item) {
            kbr.send_direct(a.to, encode(&a.msg));
        }
    }

    /// Sends the acknowledgements whose writes the store has finished; for a write that
    /// failed, the writer is refused and the record forgotten (maintenance brings it back).
    fn release_written(&mut self, kbr: &mut dyn Kbr) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        // Progress first: every failure reported next is at or below its `done`.
        let done = store.progress().done;
        let failed = WriteGate::<AfterWrite>::failures(store.take_failed());
        for key in failed.keys() {
            match self.held.remove(key) {
                Some(h) => self.used -= size(&h.record),
                // A removal that failed: removed again, or the record would come back at the
                // next start.
                None => {
                    let _ = store.remove(key);
                }
            }
        }
        for (a, failed) in self.after_write.release(done, &failed) {
            match (failed, a.req) {
                (false, _) => kbr.send_direct(a.to, encode(&a.msg)),
                (true, Some((req, client))) => {
                    let key = match &a.msg {
                        RecordsMessage::Ack { ack, .. } => ack.key,
                        _ => continue,
                    };
                    refuse(kbr, client, req, key, RecordRefusal::Full);
                }
                (true, None) => {}
            }
        }
    }

    fn on_store(
        &mut self,
        kbr: &mut dyn Kbr,
        from: Contact,
        req: Option<(u64, Contact)>,
        record: Record,
    ) {
        if req.is_some() && self.lost() {
            return;
        }
        let key = record.key();
        // A new record is taken only by a member of its replica set: nobody can make a node
        // hold what is not its to hold. A node the set moved away from still takes newer
        // states of what it holds (a delete above all), or it would offer the old one back
        // to the members once they dropped the tombstone.
        if !self.is_member(kbr, &key) {
            if req.is_none() && self.held.contains_key(&key) {
                let _ = self.keep(record);
            }
            return;
        }
        match req {
            // Maintenance and read repair: keep it if it is newer. A member's copy of the same
            // state or a newer one confirms a suspect record.
            None => {
                if record.verify().is_err() {
                    return;
                }
                let confirms = self.held.get(&key).is_some_and(|h| {
                    h.standing == Standing::Suspect
                        && (record == h.record || record.precedence(&h.record).replaces())
                });
                if confirms && self.is_member_id(kbr, &key, from.id) {
                    self.confirm(&key);
                }
                let _ = self.keep(record);
            }
            Some((req, client)) => match self.keep_for_writer(&record) {
                Ok(()) => self.ack(kbr, req, client, &key),
                Err(reason) => refuse(kbr, client, req, key, reason),
            },
        }
    }

    fn on_get(&mut self, kbr: &mut dyn Kbr, req: u64, client: Contact, key: Id, fan_out: bool) {
        let (record, conflict) = match self.held.get(&key) {
            Some(h) if h.standing == Standing::Trusted => (Some(h.record.clone()), h.conflict),
            _ => (None, false),
        };
        let answer = encode(&RecordsMessage::Answer {
            req,
            key,
            record,
            conflict,
        });
        self.stats.answer_bytes += answer.body.len() as u64;
        kbr.send_direct(client, answer);
        if !fan_out {
            return;
        }
        // Every other replica answers the reader straight (the reader too, if it is one).
        let me = kbr.local_contact().id;
        for member in kbr.replica_set(&key, self.config.k as usize) {
            if member.id != me {
                let m = RecordsMessage::Get {
                    req,
                    client,
                    key,
                    fan_out: false,
                };
                kbr.send_direct(member, encode(&m));
            }
        }
    }

    fn on_ack(&mut self, req: u64, ack: RecordAck) {
        let Some(Pending::Write {
            record, replies, ..
        }) = self.pending.get_mut(&req)
        else {
            return;
        };
        if !ack.confirms(record) {
            return;
        }
        replies.insert(ack.node(), WriteReply::Ack(ack));
        self.check_write(req);
    }

    fn on_refused(&mut self, from: Id, req: u64, key: Id, reason: RecordRefusal) {
        let Some(Pending::Write {
            record, replies, ..
        }) = self.pending.get_mut(&req)
        else {
            return;
        };
        if record.key() != key {
            return;
        }
        replies.insert(from, WriteReply::Refused(reason));
        self.check_write(req);
    }

    /// Ends write `req` if the replies that count say so: a refusal fails it, `quorum`
    /// acknowledgements complete it.
    fn check_write(&mut self, req: RequestId) {
        let Some(Pending::Write {
            record,
            replies,
            witnesses,
            quorum,
            ..
        }) = self.pending.get(&req)
        else {
            return;
        };
        let (refusal, acks) = counted_replies(self.config.k, record, replies, witnesses);
        let result = if let Some(reason) = refusal {
            Err(match reason {
                RecordRefusal::Invalid => RecordsError::Invalid("a replica refused it".into()),
                RecordRefusal::Stale(held) => RecordsError::Stale {
                    version: record.body.version,
                    held,
                },
                RecordRefusal::Conflict => RecordsError::Conflict(record.body.version),
                RecordRefusal::Full => RecordsError::NoSpace,
            })
        } else {
            if acks.len() < *quorum {
                return;
            }
            Ok(Written {
                record: record.clone(),
                acks,
            })
        };
        self.pending.remove(&req);
        self.events.push_back(RecordsEvent::Written(req, result));
    }

    fn on_answer(
        &mut self,
        kbr: &mut dyn Kbr,
        from: Contact,
        req: u64,
        key: Id,
        (record, conflict): (Option<Record>, bool),
    ) {
        if self.late.contains_key(&req) {
            self.late_answer(kbr, from, req, key, record);
            return;
        }
        let Some(Pending::Read {
            key: asked,
            answers,
            ..
        }) = self.pending.get_mut(&req)
        else {
            return;
        };
        if *asked != key {
            return;
        }
        let record = record.filter(|r| r.key() == key && r.verify().is_ok());
        answers.insert(from.id, (from, record, conflict));
        self.check_read(kbr, req);
    }

    /// Ends read `req` if the answers that count are enough: the read quorum with one of them
    /// holding the record, or k. "Not held" from a majority ends a read only when k nodes said
    /// so: during churn the nodes that answer first may be new to the replica set and not have
    /// the record yet.
    fn check_read(&mut self, kbr: &mut dyn Kbr, req: RequestId) {
        let (quorum, k) = (self.read_quorum(), self.config.k as usize);
        let Some(Pending::Read {
            key,
            answers,
            witnesses,
            ..
        }) = self.pending.get(&req)
        else {
            return;
        };
        let counted = witnesses.counted(key, k, answers);
        let found = counted
            .iter()
            .any(|n| answers.get(n).is_some_and(|(_, r, _)| r.is_some()));
        if (found && counted.len() >= quorum) || counted.len() >= k {
            self.finish_read(kbr, req);
        }
    }

    /// Ends read `req` with the answers it has: the highest state, a conflict if two answers
    /// share a version, and the newest state sent to the replicas that answered with less.
    fn finish_read(&mut self, kbr: &mut dyn Kbr, req: RequestId) {
        let Some(Pending::Read {
            key,
            mut answers,
            witnesses,
            deadline,
            ..
        }) = self.pending.remove(&req)
        else {
            return;
        };
        let counted = witnesses.counted(&key, self.config.k as usize, &answers);
        answers.retain(|n, _| counted.contains(n));
        // "Nobody holds it" takes a quorum saying so: fewer (at the deadline) is a time-out,
        // as the few that answered may be new to the replica set.
        let found = answers.values().any(|(_, r, _)| r.is_some());
        let wanted = self.read_quorum();
        if !found && answers.len() < wanted {
            let got = answers.len();
            self.events.push_back(RecordsEvent::Read(
                req,
                Err(RecordsError::Timeout { got, wanted }),
            ));
            return;
        }
        let mut best: Option<&Record> = None;
        for (_, r, _) in answers.values() {
            if let Some(r) = r {
                if best.is_none_or(|b| r.precedence(b).replaces()) {
                    best = Some(r);
                }
            }
        }
        // A conflict at the winning version: answers that disagree there, or a replica that
        // saw one (older conflicts are history, not news).
        let conflict = best.is_some_and(|b| {
            answers.values().any(|(_, r, saw)| {
                r.as_ref().is_some_and(|r| {
                    r.body.version == b.body.version && (*saw || r.precedence(b).is_conflict())
                })
            })
        });
        let best = best.cloned();
        let mut repaired = 0;
        if let (Some(b), true) = (&best, self.config.read_repair) {
            for (node, r, _) in answers.values() {
                let bytes = repair(kbr, *node, b, r.as_ref());
                self.stats.repaired(bytes);
                repaired += usize::from(bytes > 0);
            }
            if answers.len() < self.config.k as usize {
                let answered = answers
                    .values()
                    .map(|(c, r, _)| {
                        let newest = if repair_needed(b, r.as_ref()) {
                            Some(b.clone())
                        } else {
                            r.clone()
                        };
                        (c.id, (*c, newest))
                    })
                    .collect();
                let late = Late {
                    key,
                    best: b.clone(),
                    answered,
                    deadline,
                };
                self.late.insert(req, late);
            }
        }
        let result = ReadResult {
            record: best,
            conflict,
            answers: answers.len(),
            repaired,
        };
        self.events.push_back(RecordsEvent::Read(req, Ok(result)));
    }

    /// An answer to a read that already returned: the replica is repaired if it lags, and if
    /// it holds something newer, that goes to every replica that answered with less.
    fn late_answer(
        &mut self,
        kbr: &mut dyn Kbr,
        from: Contact,
        req: RequestId,
        key: Id,
        record: Option<Record>,
    ) {
        let Some(late) = self.late.get_mut(&req) else {
            return;
        };
        let record = record.filter(|r| r.key() == key && r.verify().is_ok());
        if late.key != key || late.answered.contains_key(&from.id) {
            return;
        }
        let mut sent = Vec::new();
        if let Some(newer) = record
            .as_ref()
            .filter(|r| r.precedence(&late.best).replaces())
        {
            late.best = newer.clone();
            for (to, held) in late.answered.values_mut() {
                let bytes = repair(kbr, *to, newer, held.as_ref());
                if bytes > 0 {
                    sent.push(bytes);
                    *held = Some(newer.clone());
                }
            }
        } else {
            sent.push(repair(kbr, from, &late.best, record.as_ref()));
        }
        let newest = Some(late.best.clone());
        late.answered.insert(from.id, (from, newest));
        for bytes in sent {
            self.stats.repaired(bytes);
        }
    }

    fn expire(&mut self, kbr: &mut dyn Kbr, now: Time) {
        self.late.retain(|_, l| l.deadline > now);
        let mut again = Vec::new();
        for (req, p) in &mut self.pending {
            if let Pending::Read {
                key,
                again: a @ Some(_),
                ..
            } = p
            {
                if a.is_some_and(|t| t <= now) {
                    *a = None;
                    again.push((*req, *key));
                }
            }
        }
        for (req, key) in again {
            // In secure mode the second try sends copies along independent paths at once.
            self.send_get(kbr, req, key, Redundancy::Always);
        }
        let due: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline() <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            match self.pending.get(&req) {
                // With the answers that count, or a time-out when none does.
                Some(Pending::Read { .. }) => self.finish_read(kbr, req),
                Some(Pending::Write {
                    record,
                    replies,
                    witnesses,
                    quorum,
                    ..
                }) => {
                    let (_, acks) = counted_replies(self.config.k, record, replies, witnesses);
                    let e = RecordsError::Timeout {
                        got: acks.len(),
                        wanted: *quorum,
                    };
                    self.pending.remove(&req);
                    self.events.push_back(RecordsEvent::Written(req, Err(e)));
                }
                None => {}
            }
        }
    }
}

/// The replies to a write of `record` that count (see [`Witnesses`]): the first refusal among
/// them, and the acknowledgements.
fn counted_replies(
    k: u8,
    record: &Record,
    replies: &BTreeMap<Id, WriteReply>,
    witnesses: &Witnesses,
) -> (Option<RecordRefusal>, Vec<RecordAck>) {
    let counted = witnesses.counted(&record.key(), k as usize, replies);
    let mut refusal = None;
    let mut acks = Vec::new();
    for n in &counted {
        match replies.get(n) {
            Some(WriteReply::Refused(r)) => {
                refusal.get_or_insert(*r);
            }
            Some(WriteReply::Ack(a)) => acks.push(a.clone()),
            None => {}
        }
    }
    (refusal, acks)
}

/// Whether a replica that holds `held` lags behind `best`.
fn repair_needed(best: &Record, held: Option<&Record>) -> bool {
    held.is_none_or(|r| best.precedence(r).replaces())
}

/// Read repair: sends `best` to replica `to` if what it answered (`held`) is older. Returns
/// the bytes sent (0: it did not lag).
fn repair(kbr: &mut dyn Kbr, to: Contact, best: &Record, held: Option<&Record>) -> u64 {
    if !repair_needed(best, held) {
        return 0;
    }
    let m = encode(&RecordsMessage::Store {
        req: None,
        record: best.clone(),
    });
    let bytes = m.body.len() as u64;
    kbr.send_direct(to, m);
    bytes
}

/// What a record costs to hold: its encoded size.
fn size(r: &Record) -> u64 {
    r.encode().len() as u64
}

pub(crate) fn encode(m: &RecordsMessage) -> AppMessage {
    AppMessage {
        app: RECORDS_APP,
        // Encoding plain structs of keys, integers and byte strings cannot fail.
        body: postcard::to_allocvec(m).unwrap_or_default(),
    }
}

fn refuse(kbr: &mut dyn Kbr, client: Contact, req: u64, key: Id, reason: RecordRefusal) {
    kbr.send_direct(
        client,
        encode(&RecordsMessage::Refused { req, key, reason }),
    );
}

impl Service for Records {
    fn app_id(&self) -> AppId {
        RECORDS_APP
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
        let Ok(m) = postcard::from_bytes::<RecordsMessage>(&msg.body) else {
            return; // a malformed message from a peer is dropped
        };
        // Only a Put and a fanning-out Get travel routed; everything else names its sender
        // through `info.origin`, which only an authenticated sender vouches for.
        let routable = matches!(
            m,
            RecordsMessage::Put { .. } | RecordsMessage::Get { fan_out: true, .. }
        );
        if !routable && !info.via.authenticated() {
            return;
        }
        match m {
            RecordsMessage::Put {
                req,
                client,
                record,
            } => {
                let forward = info.via != Via::Secure;
                self.on_put(kbr, req, client, record, forward)
            }
            RecordsMessage::Store { req, record } => self.on_store(kbr, info.origin, req, record),
            // An ack counts only from the node that signed it.
            RecordsMessage::Ack { req, ack } if ack.node() == info.origin.id => {
                self.on_ack(req, ack)
            }
            RecordsMessage::Ack { .. } => {}
            RecordsMessage::Refused { req, key, reason } => {
                self.on_refused(info.origin.id, req, key, reason)
            }
            RecordsMessage::Get {
                req,
                client,
                key,
                fan_out,
            } => self.on_get(kbr, req, client, key, fan_out),
            RecordsMessage::Answer {
                req,
                key,
                record,
                conflict,
            } => self.on_answer(kbr, info.origin, req, key, (record, conflict)),
            RecordsMessage::Offer { entries } => self.on_offer(kbr, now, info.origin, entries),
            RecordsMessage::Want { keys } => self.on_want(kbr, info.origin, keys),
            RecordsMessage::Have { keys } => self.on_have(kbr, info.origin, keys),
            RecordsMessage::Check { keys } => self.on_check(kbr, info.origin, keys),
            RecordsMessage::Checked { entries } => self.on_checked(kbr, info.origin, entries),
        }
    }

    fn secure_routed(&mut self, kbr: &mut dyn Kbr, _now: Time, report: &SecureRouteReport) {
        if report.app != RECORDS_APP {
            return;
        }
        let Some(req) = self.secure_routes.remove(&report.id) else {
            return;
        };
        let members = report
            .sent_to
            .iter()
            .take(self.config.k as usize)
            .map(|c| c.id);
        match self.pending.get_mut(&req) {
            Some(Pending::Write { witnesses, .. }) => {
                witnesses.report(members);
                self.check_write(req);
            }
            Some(Pending::Read { witnesses, .. }) => {
                witnesses.report(members);
                self.check_read(kbr, req);
            }
            None => {}
        }
    }

    fn update(&mut self, kbr: &mut dyn Kbr, now: Time, _node: Contact, _joined: bool) {
        self.sync_soon(now);
        // In the ring now: the other replicas get their rounds to confirm suspect records.
        if std::mem::take(&mut self.recheck_pending) {
            self.recheck_at = Some(now + RECHECK_PERIOD);
            self.send_checks(kbr);
        }
    }

    fn next_deadline(&self) -> Option<Time> {
        let late = self.late.values().map(|l| l.deadline);
        let done = self.store.as_ref().map(|s| s.progress().done);
        self.pending
            .values()
            .map(Pending::wake)
            .chain(late)
            .chain(self.next_sync)
            .chain(self.recheck_at)
            .chain(done.and_then(|d| self.after_write.deadline(d)))
            .min()
    }

    fn handle_timeout(&mut self, kbr: &mut dyn Kbr, now: Time) {
        self.release_written(kbr);
        self.expire(kbr, now);
        if self.recheck_at.is_some_and(|t| t <= now) {
            self.recheck_at = None;
            self.end_recheck(kbr, now);
        }
        if self.next_sync.is_some_and(|t| t <= now) {
            self.next_sync = Some(now + crate::maintenance::SYNC_INTERVAL);
            self.drop_settled_tombstones(now);
            self.sync(kbr);
        }
    }
}
