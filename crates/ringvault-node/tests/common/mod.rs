//! A small in-memory network for the node's tests: many `Node`s, a time-ordered message queue,
//! a clock that only moves when the queue does, and Euclidean-plane latencies. Every message
//! goes through the real wire codec. The full simulator (`ringvault-sim`) grows out of this.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringvault_node::{Action, Command, CommandOutput, Node, NodeEvent, RouteReport};
use ringvault_overlay::{Config, OverlayEvent};
use ringvault_types::{Contact, Duration, Id, Time};

/// One-way delay per unit of plane distance (the plane is 1000 x 1000).
const DELAY_PER_UNIT_US: f64 = 20.0;

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Deliver {
        to: usize,
        from: Contact,
        bytes: Vec<u8>,
    },
    Probe {
        at: usize,
        peer: Contact,
        rtt: Option<Duration>,
    },
    Timer {
        node: usize,
    },
}

pub struct Slot {
    pub node: Node,
    pub pos: (f64, f64),
    pub alive: bool,
    timer_at: Option<Time>,
    pub joined: bool,
}

pub struct Net {
    pub now: Time,
    seq: u64,
    queue: BinaryHeap<Reverse<(Time, u64, Ev)>>,
    pub slots: Vec<Slot>,
    by_id: BTreeMap<Id, usize>,
    pub rng: ChaCha8Rng,
    pub results: BTreeMap<(usize, u64), Result<CommandOutput, ringvault_node::CommandError>>,
    pub messages: u64,
    /// Live peers declared failed (false positives of failure detection).
    pub false_failures: u64,
    pub cfg: Config,
}

impl Net {
    pub fn new(seed: u64, cfg: Config) -> Self {
        Net {
            now: Time::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            by_id: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            results: BTreeMap::new(),
            messages: 0,
            false_failures: 0,
            cfg,
        }
    }

    /// Creates a node at a random point with a random id; it is not yet in the ring.
    pub fn add_node(&mut self) -> usize {
        self.add_node_with(|_| {})
    }

    /// Like `add_node`, letting `setup` register services on the new node.
    pub fn add_node_with(&mut self, setup: impl FnOnce(&mut Node)) -> usize {
        let i = self.slots.len();
        let id = Id::from_bytes(self.rng.gen());
        let addr = SocketAddr::from((
            Ipv4Addr::new(127, (i >> 16) as u8 + 1, (i >> 8) as u8, i as u8),
            7000,
        ));
        let pos = (
            self.rng.gen_range(0.0..1000.0),
            self.rng.gen_range(0.0..1000.0),
        );
        let mut node = Node::new(Contact::new(id, addr), self.cfg.clone(), self.rng.gen()).unwrap();
        setup(&mut node);
        self.slots.push(Slot {
            node,
            pos,
            alive: true,
            timer_at: None,
            joined: false,
        });
        self.by_id.insert(id, i);
        i
    }

    pub fn id(&self, i: usize) -> Id {
        self.slots[i].node.contact().id
    }

    pub fn contact(&self, i: usize) -> Contact {
        self.slots[i].node.contact()
    }

    fn delay(&self, a: usize, b: usize) -> Duration {
        let (p, q) = (self.slots[a].pos, self.slots[b].pos);
        let d = ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt();
        Duration::from_micros((d * DELAY_PER_UNIT_US) as u64 + 1)
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    /// Carries out everything node `i` asked for.
    fn pump(&mut self, i: usize) {
        while let Some(a) = self.slots[i].node.poll_action() {
            match a {
                Action::Send { to, msg } => {
                    self.messages += 1;
                    let bytes = ringvault_node::encode(&msg).expect("encodable");
                    if let Some(&j) = self.by_id.get(&to.id) {
                        let at = self.now + self.delay(i, j);
                        let from = self.contact(i);
                        self.push(at, Ev::Deliver { to: j, from, bytes });
                    }
                }
                Action::Probe { peer } => {
                    let (at, rtt) = match self.by_id.get(&peer.id) {
                        Some(&j) if self.slots[j].alive => {
                            let rtt = self.delay(i, j).mul(2);
                            (self.now + rtt, Some(rtt))
                        }
                        _ => (self.now + Duration::from_secs(1), None),
                    };
                    self.push(at, Ev::Probe { at: i, peer, rtt });
                }
                Action::Event(NodeEvent::CommandDone { id, result }) => {
                    self.results.insert((i, id.0), result);
                }
                Action::Event(NodeEvent::Overlay(OverlayEvent::Joined)) => {
                    self.slots[i].joined = true;
                }
                Action::Event(NodeEvent::Overlay(OverlayEvent::PeerFailed(c))) => {
                    if self.by_id.get(&c.id).is_some_and(|&j| self.slots[j].alive) {
                        self.false_failures += 1;
                        if std::env::var("HARNESS_DEBUG").is_ok() {
                            eprintln!(
                                "{:?}: {} declared live {} failed",
                                self.now,
                                self.id(i).short(),
                                c.id.short()
                            );
                        }
                    }
                }
                Action::Event(_) => {}
            }
        }
        if let Some(d) = self.slots[i].node.next_deadline() {
            let t = d.max(self.now);
            if self.slots[i]
                .timer_at
                .is_none_or(|cur| t < cur || cur < self.now)
            {
                self.slots[i].timer_at = Some(t);
                self.push(t, Ev::Timer { node: i });
            }
        }
    }

    /// Handles the next event; false when the queue is empty.
    pub fn step(&mut self) -> bool {
        let Some(Reverse((t, _, ev))) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(t);
        let now = self.now;
        let i = match ev {
            Ev::Deliver { to, from, bytes } => {
                if !self.slots[to].alive {
                    return true;
                }
                self.slots[to]
                    .node
                    .handle_bytes(now, from, &bytes)
                    .expect("valid wire message");
                to
            }
            Ev::Probe { at, peer, rtt } => {
                if !self.slots[at].alive {
                    return true;
                }
                self.slots[at].node.handle_probe_result(now, peer, rtt);
                at
            }
            Ev::Timer { node } => {
                if !self.slots[node].alive || self.slots[node].timer_at != Some(t) {
                    return true;
                }
                self.slots[node].timer_at = None;
                self.slots[node].node.handle_timeout(now);
                node
            }
        };
        self.pump(i);
        true
    }

    /// Runs events until `done` holds or simulated time passes `limit`; returns whether `done`
    /// held.
    pub fn run_until(&mut self, limit: Time, mut done: impl FnMut(&Net) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            match self.queue.peek() {
                Some(Reverse((t, _, _))) if *t <= limit => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(limit);
                    return done(self);
                }
            }
        }
    }

    /// Like `run_until`, for an expensive condition: checks it every `every` of simulated time.
    pub fn run_until_polling(
        &mut self,
        limit: Time,
        every: Duration,
        mut done: impl FnMut(&Net) -> bool,
    ) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if self.now >= limit {
                return false;
            }
            let next = (self.now + every).min(limit);
            self.run_until(next, |_| false);
        }
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        self.run_until(limit, |_| false);
    }

    /// Runs `f` against node `i` at the current time, then carries out what it asked for.
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Time) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.slots[i].node, now);
        self.pump(i);
        r
    }

    pub fn command(&mut self, i: usize, cmd: Command) -> u64 {
        let now = self.now;
        let id = self.slots[i].node.handle_command(now, cmd);
        self.pump(i);
        id.0
    }

    /// Node `i` joins through the alive, joined node nearest to it; waits (bounded) until done.
    pub fn join_nearest(&mut self, i: usize) -> bool {
        let bootstrap = (0..self.slots.len())
            .filter(|&j| j != i && self.slots[j].alive && self.slots[j].joined)
            .min_by(|&a, &b| self.delay(i, a).cmp(&self.delay(i, b)));
        match bootstrap {
            None => {
                self.command(i, Command::StartRing);
            }
            Some(b) => {
                let c = self.contact(b);
                self.command(i, Command::Join { bootstrap: c });
            }
        }
        let limit = self.now + Duration::from_secs(120);
        self.run_until(limit, |n| n.slots[i].joined)
    }

    /// Builds a ring of `n` nodes joined one at a time through their nearest joined node.
    pub fn grow(&mut self, n: usize) {
        for _ in 0..n {
            let i = self.add_node();
            assert!(self.join_nearest(i), "node {i} failed to join");
        }
    }

    pub fn kill(&mut self, i: usize) {
        self.slots[i].alive = false;
    }

    pub fn alive_ids(&self) -> Vec<Id> {
        let mut v: Vec<Id> = (0..self.slots.len())
            .filter(|&i| self.slots[i].alive && self.slots[i].joined)
            .map(|i| self.id(i))
            .collect();
        v.sort();
        v
    }

    /// The live node numerically closest to `key`.
    pub fn true_root(&self, key: &Id) -> Id {
        self.alive_ids()
            .into_iter()
            .min_by(|a, b| key.cmp_closeness(a, b))
            .expect("a live node")
    }

    /// Nodes whose leaf set differs from the true L/2 + L/2 neighbours, with a description.
    pub fn wrong_leaf_sets(&self) -> Vec<String> {
        let ids = self.alive_ids();
        let n = ids.len();
        let half = self.cfg.leaf_set_size / 2;
        let mut wrong = Vec::new();
        for (pos, id) in ids.iter().enumerate() {
            let i = self.by_id[id];
            let ls = self.slots[i].node.overlay().leaf_set();
            let k = half.min(n - 1);
            let want_cw: Vec<Id> = (1..=k).map(|d| ids[(pos + d) % n]).collect();
            let want_ccw: Vec<Id> = (1..=k).map(|d| ids[(pos + n - d) % n]).collect();
            let got_cw: Vec<Id> = ls
                .side(ringvault_overlay::Side::Cw)
                .iter()
                .map(|p| p.id())
                .collect();
            let got_ccw: Vec<Id> = ls
                .side(ringvault_overlay::Side::Ccw)
                .iter()
                .map(|p| p.id())
                .collect();
            if got_cw != want_cw || got_ccw != want_ccw {
                wrong.push(format!(
                    "node {} has cw {:?} ccw {:?}, wants cw {:?} ccw {:?}",
                    id.short(),
                    got_cw.iter().map(|i| i.short()).collect::<Vec<_>>(),
                    got_ccw.iter().map(|i| i.short()).collect::<Vec<_>>(),
                    want_cw.iter().map(|i| i.short()).collect::<Vec<_>>(),
                    want_ccw.iter().map(|i| i.short()).collect::<Vec<_>>(),
                ));
            }
        }
        wrong
    }

    /// Routes a traced probe from node `src` to `key`, waiting (bounded) for the report.
    pub fn route(&mut self, src: usize, key: Id) -> Option<RouteReport> {
        let id = self.command(src, Command::RouteProbe { key });
        let limit = self.now + Duration::from_secs(30);
        self.run_until(limit, |n| n.results.contains_key(&(src, id)));
        match self.results.remove(&(src, id)) {
            Some(Ok(CommandOutput::Route(r))) => Some(r),
            _ => None,
        }
    }

    pub fn random_alive(&mut self) -> usize {
        loop {
            let i = self.rng.gen_range(0..self.slots.len());
            if self.slots[i].alive && self.slots[i].joined {
                return i;
            }
        }
    }

    pub fn index_of(&self, id: &Id) -> usize {
        self.by_id[id]
    }
}
