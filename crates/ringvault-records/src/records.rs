//! The records service: replicas, writers and readers.

use std::collections::{BTreeMap, VecDeque};

use ringvault_overlay::{AppId, AppMessage, Kbr, RouteInfo, Service};
use ringvault_types::{Contact, Duration, Id, Identity, Precedence, Record, Time};

use crate::message::{RecordAck, RecordRefusal, RecordsMessage};

/// The application id of records messages.
pub const RECORDS_APP: AppId = 5;

/// Record bytes a node holds at most when not told otherwise.
pub const DEFAULT_CAPACITY: u64 = 256 << 20;

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
    /// Bytes of records this node holds at most (encoded); beyond it a new or larger record
    /// is refused, so nobody can fill a node's memory with records.
    pub capacity: u64,
}

impl Default for RecordsConfig {
    fn default() -> Self {
        RecordsConfig {
            k: 3,
            write_timeout: Duration::from_secs(10),
            // Long enough for a route to find its way past dead replicas (hop timeouts).
            read_timeout: Duration::from_secs(10),
            read_repair: true,
            capacity: DEFAULT_CAPACITY,
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
        acks: BTreeMap<Id, RecordAck>,
        quorum: usize,
        deadline: Time,
    },
    Read {
        key: Id,
        /// Each answering replica, what it holds (answers that do not verify count as holding
        /// nothing) and whether it saw a conflict at that version.
        answers: BTreeMap<Id, (Contact, Option<Record>, bool)>,
        deadline: Time,
    },
}

impl Pending {
    fn deadline(&self) -> Time {
        match self {
            Pending::Write { deadline, .. } | Pending::Read { deadline, .. } => *deadline,
        }
    }
}

/// A record held as a replica.
#[derive(Clone, Debug)]
struct Held {
    record: Record,
    /// Another record of this version was seen (and lost the tie, or this one did and was
    /// replaced): reported to readers until a higher version comes.
    conflict: bool,
}

/// One node's records service: the replicas it holds and the requests it made.
pub struct Records {
    config: RecordsConfig,
    identity: Identity,
    held: BTreeMap<Id, Held>,
    /// Encoded bytes of the records held.
    used: u64,
    pending: BTreeMap<RequestId, Pending>,
    /// Reads answered at a majority whose other replicas may still answer, until the read's
    /// deadline: a late answer that lags is repaired too. The key and the newest state.
    late: BTreeMap<RequestId, (Id, Record, Time)>,
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
    /// The service of the node with `identity` (it signs acknowledgements).
    pub fn new(identity: Identity, config: RecordsConfig) -> Self {
        Records {
            config,
            identity,
            held: BTreeMap::new(),
            used: 0,
            pending: BTreeMap::new(),
            late: BTreeMap::new(),
            next_sync: None,
            next_req: 0,
            events: VecDeque::new(),
        }
    }

    /// The state of the record under `key` this node holds as a replica.
    pub fn held(&self, key: &Id) -> Option<&Record> {
        self.held.get(key).map(|h| &h.record)
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

    /// Every record held, by key, with its version and tie hash.
    pub(crate) fn versions(&self) -> Vec<(Id, u64, Id)> {
        self.held
            .iter()
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
            acks: BTreeMap::new(),
            quorum: quorum as usize,
            deadline: now + self.config.write_timeout,
        });
        let client = kbr.local_contact();
        let key = record.key();
        kbr.route(
            key,
            encode(&RecordsMessage::Put {
                req,
                client,
                record,
            }),
            None,
        );
        Ok(req)
    }

    /// Reads the record under `key` from its replicas. The result comes as
    /// [`RecordsEvent::Read`].
    pub fn get(&mut self, kbr: &mut dyn Kbr, now: Time, key: Id) -> RequestId {
        let req = self.new_request(Pending::Read {
            key,
            answers: BTreeMap::new(),
            deadline: now + self.config.read_timeout,
        });
        let client = kbr.local_contact();
        kbr.route(
            key,
            encode(&RecordsMessage::Get {
                req,
                client,
                key,
                fan_out: true,
            }),
            None,
        );
        req
    }

    fn new_request(&mut self, p: Pending) -> RequestId {
        self.next_req += 1;
        self.pending.insert(self.next_req, p);
        self.next_req
    }

    /// Keeps `record` if it verifies and supersedes what is held. Returns what is held after.
    fn keep(&mut self, record: Record) -> Result<&Record, RecordRefusal> {
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
        let new = size(&record);
        let used = self.used - old + new;
        if new > old && used > self.config.capacity {
            return Err(RecordRefusal::Full);
        }
        self.used = used;
        self.held.insert(key, Held { record, conflict });
        Ok(&self.held[&key].record)
    }

    /// How many replicas' answers end a read.
    fn majority(&self) -> usize {
        self.config.k as usize / 2 + 1
    }

    /// Whether this node is among the k closest to `key` (by its leaf set).
    fn is_member(&self, kbr: &dyn Kbr, key: &Id) -> bool {
        let me = kbr.local_contact().id;
        kbr.replica_set(key, self.config.k as usize)
            .iter()
            .any(|c| c.id == me)
    }

    /// Keeps `record` for a writer: the refusal to send it when it is not kept as it is (it
    /// does not verify, there is no room, a higher version is held, or another record of its
    /// version won the tie).
    fn keep_for_writer(&mut self, record: &Record) -> Result<(), RecordRefusal> {
        let held = self.keep(record.clone())?;
        if held.body.version > record.body.version {
            return Err(RecordRefusal::Stale(held.body.version));
        }
        if held != record {
            return Err(RecordRefusal::Conflict);
        }
        Ok(())
    }

    fn on_put(&mut self, kbr: &mut dyn Kbr, req: u64, client: Contact, record: Record) {
        let key = record.key();
        // Only a member of the record's replica set holds it, however the Put came.
        if !self.is_member(kbr, &key) {
            return;
        }
        if let Err(reason) = self.keep_for_writer(&record) {
            return refuse(kbr, client, req, key, reason);
        }
        self.ack(kbr, req, client, &key);
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

    /// Tells the writer what this replica holds for `key`.
    fn ack(&self, kbr: &mut dyn Kbr, req: u64, client: Contact, key: &Id) {
        if let Some(held) = self.held.get(key) {
            let ack = RecordAck::issue(&self.identity, &held.record);
            kbr.send_direct(client, encode(&RecordsMessage::Ack { req, ack }));
        }
    }

    fn on_store(&mut self, kbr: &mut dyn Kbr, req: Option<(u64, Contact)>, record: Record) {
        let key = record.key();
        // A record is taken only by a member of its replica set: nobody can make a node hold
        // what is not its to hold.
        if !self.is_member(kbr, &key) {
            return;
        }
        match req {
            // Maintenance and read repair: keep it if it is newer.
            None => {
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
            Some(h) => (Some(h.record.clone()), h.conflict),
            None => (None, false),
        };
        let answer = RecordsMessage::Answer {
            req,
            key,
            record,
            conflict,
        };
        kbr.send_direct(client, encode(&answer));
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
            record,
            acks,
            quorum,
            ..
        }) = self.pending.get_mut(&req)
        else {
            return;
        };
        if !ack.confirms(record) {
            return;
        }
        acks.insert(ack.node(), ack);
        if acks.len() >= *quorum {
            if let Some(Pending::Write { record, acks, .. }) = self.pending.remove(&req) {
                let done = Written {
                    record,
                    acks: acks.into_values().collect(),
                };
                self.events.push_back(RecordsEvent::Written(req, Ok(done)));
            }
        }
    }

    fn on_refused(&mut self, req: u64, key: Id, reason: RecordRefusal) {
        let Some(Pending::Write { record, .. }) = self.pending.get(&req) else {
            return;
        };
        if record.key() != key {
            return;
        }
        let e = match reason {
            RecordRefusal::Invalid => RecordsError::Invalid("a replica refused it".into()),
            RecordRefusal::Stale(held) => RecordsError::Stale {
                version: record.body.version,
                held,
            },
            RecordRefusal::Conflict => RecordsError::Conflict(record.body.version),
            RecordRefusal::Full => RecordsError::NoSpace,
        };
        self.pending.remove(&req);
        self.events.push_back(RecordsEvent::Written(req, Err(e)));
    }

    fn on_answer(
        &mut self,
        kbr: &mut dyn Kbr,
        from: Contact,
        req: u64,
        key: Id,
        (record, conflict): (Option<Record>, bool),
    ) {
        if let Some((asked, best, _)) = self.late.get(&req) {
            if *asked == key {
                repair(kbr, from, best, record.as_ref());
            }
            return;
        }
        let majority = self.majority();
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
        if answers.len() >= majority {
            self.finish_read(kbr, req);
        }
    }

    /// Ends read `req` with the answers it has: the highest state, a conflict if two answers
    /// share a version, and the newest state sent to the replicas that answered with less.
    fn finish_read(&mut self, kbr: &mut dyn Kbr, req: RequestId) {
        let Some(Pending::Read {
            key,
            answers,
            deadline,
        }) = self.pending.remove(&req)
        else {
            return;
        };
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
                repaired += usize::from(repair(kbr, *node, b, r.as_ref()));
            }
            if answers.len() < self.config.k as usize {
                self.late.insert(req, (key, b.clone(), deadline));
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

    fn expire(&mut self, kbr: &mut dyn Kbr, now: Time) {
        self.late.retain(|_, (_, _, deadline)| *deadline > now);
        let due: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline() <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            match self.pending.get(&req) {
                Some(Pending::Read { answers, .. }) if !answers.is_empty() => {
                    self.finish_read(kbr, req)
                }
                Some(Pending::Read { .. }) => {
                    self.pending.remove(&req);
                    let wanted = self.majority();
                    let e = RecordsError::Timeout { got: 0, wanted };
                    self.events.push_back(RecordsEvent::Read(req, Err(e)));
                }
                Some(Pending::Write { acks, quorum, .. }) => {
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

/// Read repair: sends `best` to replica `to` if what it answered (`held`) is older. Returns
/// whether it did.
fn repair(kbr: &mut dyn Kbr, to: Contact, best: &Record, held: Option<&Record>) -> bool {
    let lags = held.is_none_or(|r| best.precedence(r).replaces());
    if lags {
        let m = RecordsMessage::Store {
            req: None,
            record: best.clone(),
        };
        kbr.send_direct(to, encode(&m));
    }
    lags
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
        _now: Time,
        _key: Id,
        msg: AppMessage,
        info: RouteInfo,
    ) {
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
            } => self.on_put(kbr, req, client, record),
            RecordsMessage::Store { req, record } => self.on_store(kbr, req, record),
            // An ack counts only from the node that signed it.
            RecordsMessage::Ack { req, ack } if ack.node() == info.origin.id => {
                self.on_ack(req, ack)
            }
            RecordsMessage::Ack { .. } => {}
            RecordsMessage::Refused { req, key, reason } => self.on_refused(req, key, reason),
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
            RecordsMessage::Offer { entries } => self.on_offer(kbr, info.origin, entries),
            RecordsMessage::Want { keys } => self.on_want(kbr, info.origin, keys),
        }
    }

    fn update(&mut self, _kbr: &mut dyn Kbr, now: Time, _node: Contact, _joined: bool) {
        self.sync_soon(now);
    }

    fn next_deadline(&self) -> Option<Time> {
        let late = self.late.values().map(|(_, _, t)| *t);
        self.pending
            .values()
            .map(Pending::deadline)
            .chain(late)
            .chain(self.next_sync)
            .min()
    }

    fn handle_timeout(&mut self, kbr: &mut dyn Kbr, now: Time) {
        self.expire(kbr, now);
        if self.next_sync.is_some_and(|t| t <= now) {
            self.next_sync = Some(now + crate::maintenance::SYNC_INTERVAL);
            self.sync(kbr);
        }
    }
}
