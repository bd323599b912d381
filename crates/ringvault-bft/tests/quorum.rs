//! Byzantine quorum storage on a seeded simulated network of 7 servers (groups of 4, f_r = 1),
//! scenarios S1-S7 and S11 of `server-mode.md`: one replica that forges, serves stale versions,
//! says not-found, stays silent, equivocates or crashes; two crashed in one group (operations
//! fail, never with a wrong value); an epoch change under load; and the negative control, two
//! colluders in one group, which the history checker must catch.
//! The history checker is in `common/mod.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::{cert, dup, identity, Flight, History, Next, Workload, OBJECTS, OBJECT_BASE, RECORDS};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ringvault_bft::{
    Ack, Change, Config, Delta, Item, JoinRequest, LeaveRequest, Member, OpId, Params,
    QuorumClient, QuorumError, QuorumEvent, Replica, ReplicaAction, StoreMessage,
};
use ringvault_types::{Duration, Id, Identity, RecordValue, Signature, Time};

const UNIX_MS: u64 = 1_800_000_000_000;
const SERVERS: usize = 7;

fn member(ca: &Identity, who: &Identity, serial: u64) -> Member {
    Member {
        cert: cert(ca, who, serial),
        admitted: 0,
    }
}

/// How a faulty server behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// S1: replies with records whose value it changed (the signature no longer holds).
    Forge,
    /// S2: replies with the first version it ever stored.
    Stale,
    /// S3: replies "not found" and acks nothing.
    NotFound,
    /// S3/S5: sends nothing at all.
    Silent,
    /// S4: the newest version to some readers, the first one to others.
    Equivocate,
    /// S5/S6: crashed: takes nothing, sends nothing.
    Crashed,
    /// S7: acks writes without storing them, replies "not found".
    Collude,
}

struct Sim {
    ids: Vec<Identity>,
    config: Arc<Config>,
    replicas: BTreeMap<Id, Replica>,
    clients: BTreeMap<Id, QuorumClient>,
    faults: BTreeMap<Id, Fault>,
    /// Links (from, to) that take 50 ms more: asynchrony, which must not break safety.
    slow: BTreeSet<(Id, Id)>,
    /// The first item each faulty server was given, per key (what a stale one serves).
    first: BTreeMap<(Id, Id), Item>,
    wire: Flight<StoreMessage>,
    now: Time,
    rng: ChaCha8Rng,
    workload: Workload,
    /// Operations in flight: (client, op) -> (key, write?, version, start).
    flight: BTreeMap<(Id, OpId), (usize, bool, u64, Time)>,
    history: History,
    /// The last version issued per record (versions rise across workloads).
    versions: [u64; RECORDS],
}

impl Sim {
    fn new(seed: u64) -> Self {
        let ca = identity(1_000);
        let ids: Vec<Identity> = (0..SERVERS as u64 + 1).map(identity).collect();
        let members = ids[..SERVERS]
            .iter()
            .enumerate()
            .map(|(i, who)| member(&ca, who, i as u64))
            .collect();
        let config = Arc::new(Config::genesis(members, Params::DEFAULT, u64::MAX / 2));
        let mut sim = Sim {
            ids,
            config: config.clone(),
            replicas: BTreeMap::new(),
            clients: BTreeMap::new(),
            faults: BTreeMap::new(),
            slow: BTreeSet::new(),
            first: BTreeMap::new(),
            wire: Flight::default(),
            now: Time::ZERO,
            rng: ChaCha8Rng::seed_from_u64(seed),
            workload: Workload::default(),
            flight: BTreeMap::new(),
            history: History::default(),
            versions: [0; RECORDS],
        };
        for who in &sim.ids[..SERVERS] {
            sim.replicas.insert(
                who.id(),
                Replica::new(
                    dup(who),
                    config.clone(),
                    UNIX_MS,
                    Vec::new(),
                    &[],
                    Time::ZERO,
                ),
            );
            sim.clients
                .insert(who.id(), QuorumClient::new(who.id(), config.clone()));
        }
        sim
    }

    fn server(&self, i: usize) -> Id {
        self.ids[i].id()
    }

    fn post(&mut self, from: Id, to: Id, msg: StoreMessage) {
        let mut delay = Duration::from_micros(self.rng.gen_range(500..5_000));
        if self.slow.contains(&(from, to)) {
            delay = delay + Duration::from_millis(50);
        }
        self.wire.post(self.now + delay, from, to, msg);
    }

    /// What a faulty server sends instead of `msg` (None: nothing).
    fn corrupt(&mut self, from: Id, to: Id, msg: StoreMessage) -> Option<StoreMessage> {
        let Some(fault) = self.faults.get(&from).copied() else {
            return Some(msg);
        };
        match (fault, msg) {
            (Fault::Silent | Fault::Crashed, _) => None,
            (
                Fault::Forge,
                StoreMessage::Reply {
                    op,
                    key,
                    item: Some(Item::Record(mut r)),
                },
            ) => {
                r.body.value = RecordValue::Inline(b"forged".to_vec());
                r.body.version += 1_000;
                Some(StoreMessage::Reply {
                    op,
                    key,
                    item: Some(Item::Record(r)),
                })
            }
            (
                Fault::Forge,
                StoreMessage::Reply {
                    op,
                    key,
                    item: Some(Item::Object(mut b)),
                },
            ) => {
                b.push(0);
                Some(StoreMessage::Reply {
                    op,
                    key,
                    item: Some(Item::Object(b)),
                })
            }
            (
                Fault::Stale,
                StoreMessage::Reply {
                    op,
                    key,
                    item: Some(_),
                },
            ) => {
                let item = self.first.get(&(from, key)).cloned();
                Some(StoreMessage::Reply { op, key, item })
            }
            (
                Fault::Equivocate,
                StoreMessage::Reply {
                    op,
                    key,
                    item: Some(i),
                },
            ) => {
                let item = if to.as_bytes()[0].is_multiple_of(2) {
                    self.first.get(&(from, key)).cloned()
                } else {
                    Some(i)
                };
                Some(StoreMessage::Reply { op, key, item })
            }
            (Fault::NotFound | Fault::Collude, StoreMessage::Reply { op, key, .. }) => {
                Some(StoreMessage::Reply {
                    op,
                    key,
                    item: None,
                })
            }
            (Fault::NotFound, StoreMessage::Ack(_)) => None,
            (_, msg) => Some(msg),
        }
    }

    fn deliver(&mut self, from: Id, to: Id, msg: StoreMessage) {
        if let Some(Fault::Crashed) = self.faults.get(&to) {
            return;
        }
        if let StoreMessage::Write { op, item, .. } = &msg {
            if self.faults.contains_key(&to) {
                self.first
                    .entry((to, item.key()))
                    .or_insert_with(|| item.clone());
            }
            if self.faults.get(&to) == Some(&Fault::Collude) {
                // Acks without storing.
                let i = self.ids.iter().position(|x| x.id() == to).unwrap();
                let mut ack = Ack {
                    op: *op,
                    epoch: self.config.epoch,
                    key: item.key(),
                    hash: item.hash(),
                    replica: to,
                    signature: Signature([0; 64]),
                };
                ack.signature = self.ids[i].sign(&ack.bytes());
                self.post(to, from, StoreMessage::Ack(ack));
                return;
            }
        }
        match msg {
            StoreMessage::Ack(_) | StoreMessage::Reply { .. } | StoreMessage::Refuse { .. } => {
                if let Some(c) = self.clients.get_mut(&to) {
                    c.handle_message(self.now, from, msg);
                }
            }
            msg => {
                if let Some(r) = self.replicas.get_mut(&to) {
                    r.handle_message(self.now, from, msg);
                }
            }
        }
        self.flush(to);
    }

    fn flush(&mut self, id: Id) {
        let mut sends = Vec::new();
        if let Some(r) = self.replicas.get_mut(&id) {
            while let Some(a) = r.poll_action() {
                match a {
                    ReplicaAction::Send { to, msg } => sends.push((to, msg)),
                    // The store completes at once here (durability is the driver's).
                    ReplicaAction::Store { token, .. } => r.handle_stored(self.now, token),
                    ReplicaAction::PersistUnsynced(_) => {}
                }
            }
        }
        let mut events = Vec::new();
        if let Some(c) = self.clients.get_mut(&id) {
            while let Some(s) = c.poll_send() {
                sends.push(s);
            }
            while let Some(e) = c.poll_event() {
                events.push(e);
            }
        }
        for (to, msg) in sends {
            if let Some(msg) = self.corrupt(id, to, msg) {
                self.post(id, to, msg);
            }
        }
        for e in events {
            self.finished(id, e);
        }
    }

    fn finished(&mut self, client: Id, event: QuorumEvent) {
        let op = match &event {
            QuorumEvent::Put { op, .. } | QuorumEvent::Got { op, .. } => *op,
        };
        if let Some(started) = self.flight.remove(&(client, op)) {
            self.history
                .finish(&self.workload, started, self.now, event);
        }
    }

    fn issue(&mut self, client: Id, key: usize, write: bool, version: u64) {
        enum Ask {
            Put(Item),
            Object(Id),
            Record(Id),
        }
        let ask = if key >= OBJECT_BASE {
            let object = self.workload.object(key - OBJECT_BASE);
            if write {
                Ask::Put(object)
            } else {
                Ask::Object(object.key())
            }
        } else if write {
            Ask::Put(self.workload.record(key, version))
        } else {
            Ask::Record(self.workload.record_key(key))
        };
        let now = self.now;
        let c = self.clients.get_mut(&client).unwrap();
        let op = match ask {
            Ask::Put(item) => c.put(now, item).unwrap(),
            Ask::Object(k) => c.get_object(now, k),
            Ask::Record(k) => c.get_record(now, k),
        };
        self.flight.insert((client, op), (key, write, version, now));
        self.flush(client);
    }

    /// Runs until `until`, processing messages and timers.
    fn run(&mut self, until: Time) {
        loop {
            let timers: Vec<(Id, Time)> = self
                .replicas
                .iter()
                .filter_map(|(id, r)| r.next_deadline().map(|t| (*id, t)))
                .chain(
                    self.clients
                        .iter()
                        .filter_map(|(id, c)| c.next_deadline().map(|t| (*id, t))),
                )
                .collect();
            match self.wire.next(&mut self.now, until, timers.into_iter()) {
                None => break,
                Some(Next::Deliver { from, to, msg }) => self.deliver(from, to, msg),
                Some(Next::Timer(id)) => {
                    if let Some(r) = self.replicas.get_mut(&id) {
                        r.handle_timeout(self.now);
                    }
                    if let Some(c) = self.clients.get_mut(&id) {
                        c.handle_timeout(self.now);
                    }
                    self.flush(id);
                }
            }
        }
        self.now = self.now.max(until);
    }

    /// A workload: `ops` operations, one every 2 ms, from correct servers, on 12 records and
    /// 10 objects; versions rise per key in the order writes are issued.
    fn workload(&mut self, ops: usize) {
        self.workload_from(ops, None);
    }

    /// As [`Sim::workload`], with every write issued from `writer` when given.
    fn workload_from(&mut self, ops: usize, writer: Option<Id>) {
        self.steps(ops, writer);
        let t = self.now + Duration::from_secs(30);
        self.run(t);
    }

    /// `ops` operations, one every 2 ms, without waiting for the last ones to finish.
    fn steps(&mut self, ops: usize, writer: Option<Id>) {
        let correct: Vec<Id> = self
            .ids
            .iter()
            .take(SERVERS)
            .map(|i| i.id())
            .filter(|id| !self.faults.contains_key(id))
            .collect();
        for _ in 0..ops {
            let client = correct[self.rng.gen_range(0..correct.len())];
            if self.rng.gen_bool(0.15) {
                let o = self.rng.gen_range(0..OBJECTS);
                let write = !self.history.object_written(o) && self.rng.gen_bool(0.5);
                self.issue(client, OBJECT_BASE + o, write, 0);
            } else {
                let key = self.rng.gen_range(0..RECORDS);
                let write = self.rng.gen_bool(0.4);
                if write {
                    self.versions[key] += 1;
                }
                let client = match writer {
                    Some(w) if write => w,
                    _ => client,
                };
                self.issue(client, key, write, self.versions[key]);
            }
            let t = self.now + Duration::from_millis(2);
            self.run(t);
        }
    }

    /// A replica group: two of its members, the other two, and a server outside it.
    fn group_and_outsider(&self) -> ([Id; 4], Id) {
        let g: Vec<Id> = self
            .config
            .replica_group(&Id::ZERO)
            .iter()
            .map(|m| m.id())
            .collect();
        let outsider = self
            .config
            .members
            .iter()
            .map(|m| m.id())
            .find(|id| !g.contains(id))
            .unwrap();
        ([g[0], g[1], g[2], g[3]], outsider)
    }

    /// Writes from `writer` reach `replica` 50 ms late.
    fn slow_link(&mut self, writer: Id, replica: Id) {
        self.slow.insert((writer, replica));
    }
}

fn run_with(fault: Option<Fault>, seed: u64) -> Sim {
    let mut sim = Sim::new(seed);
    if let Some(f) = fault {
        let victim = sim.server(3);
        sim.faults.insert(victim, f);
    }
    sim.workload(600);
    sim
}

#[test]
fn one_faulty_replica_per_group_loses_nothing_and_returns_nothing_wrong() {
    for fault in [
        Fault::Forge,
        Fault::Stale,
        Fault::NotFound,
        Fault::Silent,
        Fault::Equivocate,
        Fault::Crashed,
    ] {
        let sim = run_with(Some(fault), 7);
        let v = sim.history.violations(&sim.workload);
        assert!(v.is_empty(), "{fault:?}: {v:?}");
        assert!(
            sim.history.failures.is_empty(),
            "{fault:?}: operations failed: {:?}",
            &sim.history.failures[..sim.history.failures.len().min(3)]
        );
        let reads = sim.history.found();
        assert!(reads > 100, "{fault:?}: only {reads} reads found something");
        assert!(
            sim.history.object_reads() > 10,
            "{fault:?}: too few object reads"
        );
    }
}

#[test]
fn two_crashed_in_one_group_fail_clearly_and_never_return_a_wrong_value() {
    let mut sim = Sim::new(11);
    let ([a, b, ..], _) = sim.group_and_outsider();
    sim.faults.insert(a, Fault::Crashed);
    sim.faults.insert(b, Fault::Crashed);
    sim.workload(400);
    assert!(
        sim.history
            .failures
            .iter()
            .any(|e| matches!(e, QuorumError::Unavailable { .. })),
        "no operation failed with two of a group down"
    );

    let v = sim.history.violations(&sim.workload);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn reads_stay_atomic_while_writes_reach_most_of_a_group_late() {
    // Writes from one server reach three of a group's four members 50 ms late, so reads often
    // see a write on one replica only: the read that returns it must first write it back, or a
    // later read could return less (the checker catches that when write-back is skipped).
    let mut sim = Sim::new(19);
    let ([a, b, c, _], outsider) = sim.group_and_outsider();
    for r in [a, b, c] {
        sim.slow_link(outsider, r);
    }
    sim.workload_from(600, Some(outsider));
    let v = sim.history.violations(&sim.workload);
    assert!(v.is_empty(), "{v:?}");
    let written_back: u64 = sim.clients.values().map(|c| c.stats().written_back).sum();
    assert!(
        written_back > 0,
        "no read had to write back: the scenario is too easy"
    );
}

/// S7 and its control: a group whose third member hears one writer late (asynchrony), with
/// one colluder (f) and with two (f + 1) that ack writes without storing them and answer
/// "not found". Only the second breaks reads, and the checker must say so.
fn colluders(how_many: usize) -> Vec<String> {
    let mut sim = Sim::new(13);
    let ([a, b, c, _], outsider) = sim.group_and_outsider();
    for id in [a, b].into_iter().take(how_many) {
        sim.faults.insert(id, Fault::Collude);
    }
    sim.slow_link(outsider, c);
    sim.workload_from(600, Some(outsider));
    sim.history.violations(&sim.workload)
}

#[test]
fn negative_control_two_colluders_in_one_group_are_caught_by_the_checker() {
    let one = colluders(1);
    assert!(one.is_empty(), "one colluder (f) broke reads: {one:?}");
    let two = colluders(2);
    assert!(
        !two.is_empty(),
        "f + 1 colluders in a group must break reads, and the checker must see it"
    );
}

#[test]
fn an_epoch_change_under_load_moves_key_ranges_without_losing_a_write() {
    let mut sim = Sim::new(17);
    sim.steps(300, None);
    // Server 7 joins and server 2 leaves; every server adopts the new configuration.
    let ca = identity(1_000);
    let newcomer = dup(&sim.ids[SERVERS]);
    let leaver = dup(&sim.ids[2]);
    let join = JoinRequest::new(&newcomer, member(&ca, &newcomer, SERVERS as u64).cert);
    let delta = Delta {
        epoch: 1,
        prev: sim.config.hash(),
        changes: vec![
            Change::Join(join),
            Change::Leave(LeaveRequest::new(&leaver, 0)),
        ],
        valid_until: u64::MAX / 2,
    };
    let next = Arc::new(sim.config.apply(&delta));
    let old = std::mem::replace(&mut sim.config, next.clone());
    // The newcomer starts from the old configuration, in which it owned nothing.
    sim.replicas.insert(
        newcomer.id(),
        Replica::new(dup(&newcomer), old, UNIX_MS, Vec::new(), &[], sim.now),
    );
    sim.clients.insert(
        newcomer.id(),
        QuorumClient::new(newcomer.id(), next.clone()),
    );
    // Servers adopt it one after the other while operations go on (the leaver last), so old
    // owners still in the old epoch meet new owners already in the new one.
    let mut ids: Vec<Id> = sim.replicas.keys().copied().collect();
    ids.retain(|id| *id != leaver.id());
    ids.push(leaver.id());
    for id in ids {
        sim.replicas
            .get_mut(&id)
            .unwrap()
            .handle_config(sim.now, next.clone());
        sim.clients
            .get_mut(&id)
            .unwrap()
            .handle_config(next.clone());
        sim.flush(id);
        sim.steps(5, None);
    }
    // The leaver stops serving and taking requests; what it was asking for is abandoned.
    sim.faults.insert(leaver.id(), Fault::Crashed);
    sim.flight.retain(|(client, _), _| *client != leaver.id());
    sim.workload(300);
    let v = sim.history.violations(&sim.workload);
    assert!(v.is_empty(), "{v:?}");
    let syncing: Vec<bool> = sim.replicas.values().map(|r| r.syncing()).collect();
    assert!(
        syncing.iter().all(|s| !s),
        "a replica never finished taking over"
    );
    let taken: u64 = sim.replicas.values().map(|r| r.stats().taken_over).sum();
    assert!(taken > 0, "nothing was handed over");
    let not_ready_ms: u64 = sim
        .replicas
        .values()
        .map(|r| r.stats().not_ready_micros / 1_000)
        .max()
        .unwrap_or(0);
    assert!(
        not_ready_ms < 5_000,
        "a range was not ready for {not_ready_ms} ms"
    );
    // Every record written before the change reads back at its latest version.
    assert!(
        sim.history.failures.is_empty(),
        "{:?}",
        &sim.history.failures[..sim.history.failures.len().min(3)]
    );
}
