//! The discrete-event driver: many [`Node`]s, one event queue ordered by (time, sequence), one
//! timer per node, message delivery delayed by the latency model, optional loss and partitions.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringvault_node::{Action, Command, CommandError, CommandOutput, Node, NodeEvent};
use ringvault_overlay::{Config, OverlayEvent, OverlayMessage};
use ringvault_types::{Contact, Duration, Id, Time};

use ringvault_testkit::byzantine::Colluders;

use crate::nearest::NearestIndex;
use crate::topology::{Place, Topology, TopologyKind};

mod script;

pub use script::SETTLE_LIMIT;

/// How long a probe of an unreachable peer takes to report `None`.
pub const PROBE_FAILURE_DELAY: Duration = Duration::from_secs(1);
/// How long [`Sim::join_nearest`] waits for a join to finish.
pub const JOIN_LIMIT: Duration = Duration::from_secs(120);
/// How long [`Sim::route`] waits for a route probe's report.
pub const ROUTE_LIMIT: Duration = Duration::from_secs(30);

/// Parameters of a simulated network.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The run seed: node ids, places, per-node seeds and every random choice derive from it.
    pub seed: u64,
    /// The latency model.
    pub topology: TopologyKind,
    /// Overlay parameters for every node.
    pub overlay: Config,
    /// Pass every message through the wire codec (encode, decode): slower, checks the codec and
    /// counts bytes.
    pub wire: bool,
    /// Probability that a message is lost.
    pub loss: f64,
}

impl SimConfig {
    /// Euclidean plane, default overlay, no codec, no loss.
    pub fn new(seed: u64, overlay: Config) -> Self {
        SimConfig {
            seed,
            topology: TopologyKind::Euclidean,
            overlay,
            wire: false,
            loss: 0.0,
        }
    }
}

/// One simulated node.
pub struct SimNode {
    /// The state machine.
    pub node: Node,
    /// False once failed (silently) or left.
    pub alive: bool,
    /// True once the node reported `Joined`.
    pub joined: bool,
    timer_at: Option<Time>,
}

/// Counters over a whole run.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Events handled (deliveries, probe results, timers that fired).
    pub events: u64,
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent (wire mode only).
    pub bytes: u64,
    /// Messages and bytes (wire mode) sent, by kind (see [`OverlayMessage::kind`]), in order
    /// of first use.
    pub by_kind: Vec<(&'static str, u64, u64)>,
    /// Probes answered.
    pub probes: u64,
    /// Messages lost to the loss model or a partition, or sent to a dead node.
    pub lost: u64,
    /// Live peers declared failed by someone (false positives of failure detection).
    pub false_failures: u64,
}

impl Counters {
    /// Messages and bytes (wire mode) sent so far of the given kinds.
    pub fn sent(&self, kinds: &[&str]) -> (u64, u64) {
        self.by_kind
            .iter()
            .filter(|(k, _, _)| kinds.contains(k))
            .fold((0, 0), |(m, b), (_, km, kb)| (m + km, b + kb))
    }
}

enum Payload {
    Msg(Box<OverlayMessage>),
    Bytes(Vec<u8>),
}

enum Ev {
    Deliver {
        to: u32,
        from: u32,
        msg: Payload,
    },
    Probe {
        at: u32,
        peer: u32,
        rtt: Option<Duration>,
    },
    ProbeFailed {
        at: u32,
        peer: Box<Contact>,
    },
    Timer {
        node: u32,
    },
}

struct Entry {
    at: Time,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    /// Reversed, so the std max-heap pops the earliest (time, seq) first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// The address a simulated node listens on: its index, encoded in 10.0.0.0/8.
pub fn addr_of(i: u32) -> SocketAddr {
    let [_, a, b, c] = i.to_be_bytes();
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, a, b, c), 7000))
}

/// The index a simulated address encodes.
fn index_of_addr(addr: &SocketAddr) -> Option<u32> {
    match addr {
        SocketAddr::V4(a) if a.ip().octets()[0] == 10 => {
            let [_, x, y, z] = a.ip().octets();
            Some(u32::from_be_bytes([0, x, y, z]))
        }
        _ => None,
    }
}

/// A per-node seed derived from the run seed (splitmix64).
pub fn node_seed(run: u64, i: u32) -> u64 {
    let mut z = run ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A simulated network.
pub struct Sim {
    /// Simulated time.
    pub now: Time,
    seq: u64,
    queue: BinaryHeap<Entry>,
    /// The nodes, by index.
    pub nodes: Vec<SimNode>,
    /// Where each node sits.
    pub places: Vec<Place>,
    /// The latency model.
    pub topology: Topology,
    index: NearestIndex,
    /// The run's RNG (ids, places, loss, random picks).
    pub rng: ChaCha8Rng,
    /// The parameters.
    pub cfg: SimConfig,
    /// Partition group of each node; messages between groups are lost.
    partition: Option<Vec<u8>>,
    results: BTreeMap<(u32, u64), Result<CommandOutput, CommandError>>,
    /// Commands finished so far (every node).
    commands_done: u64,
    /// Run-wide counters.
    pub counters: Counters,
    /// Byzantine nodes (by index) and how they collude: what reaches them goes to
    /// [`Colluders::respond`] instead of their node.
    byzantine: Option<(Vec<bool>, Colluders)>,
    /// Secure routes that ended, with the node that started them, in order.
    pub secure_reports: Vec<(u32, ringvault_overlay::SecureRouteReport)>,
}

impl Sim {
    /// An empty network.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let topology = Topology::new(cfg.topology, &mut rng);
        Sim {
            now: Time::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            places: Vec::new(),
            topology,
            index: NearestIndex::default(),
            rng,
            cfg,
            partition: None,
            results: BTreeMap::new(),
            commands_done: 0,
            counters: Counters::default(),
            byzantine: None,
            secure_reports: Vec::new(),
        }
    }

    /// Creates a node with a random id at a random place; it is not yet in the ring.
    pub fn add_node(&mut self) -> u32 {
        self.add_node_with(|_| {})
    }

    /// Like [`Sim::add_node`], letting `setup` register services on the new node.
    pub fn add_node_with(&mut self, setup: impl FnOnce(&mut Node)) -> u32 {
        let id = Id::from_bytes(self.rng.gen());
        self.add_node_with_id(id, setup)
    }

    /// Like [`Sim::add_node_with`], with id `id` (for services whose signatures name the node:
    /// the id of the key they sign with).
    pub fn add_node_with_id(&mut self, id: Id, setup: impl FnOnce(&mut Node)) -> u32 {
        let i = self.nodes.len() as u32;
        let place = self.topology.place(&mut self.rng);
        let contact = Contact::new(id, addr_of(i));
        let mut node = Node::new(
            contact,
            self.cfg.overlay.clone(),
            node_seed(self.cfg.seed, i),
        )
        .expect("a valid overlay configuration");
        setup(&mut node);
        self.nodes.push(SimNode {
            node,
            alive: true,
            joined: false,
            timer_at: None,
        });
        self.places.push(place);
        if let Some(p) = &mut self.partition {
            p.push(0);
        }
        i
    }

    /// Makes `nodes` Byzantine, colluding as `colluders` says (`None`: everyone honest again).
    pub fn set_byzantine(&mut self, nodes: &[u32], colluders: Option<Colluders>) {
        self.byzantine = colluders.map(|c| {
            let mut flags = vec![false; self.nodes.len()];
            for &i in nodes {
                flags[i as usize] = true;
            }
            (flags, c)
        });
    }

    /// Whether node `i` is Byzantine.
    pub fn is_byzantine(&self, i: u32) -> bool {
        self.byzantine
            .as_ref()
            .is_some_and(|(f, _)| f.get(i as usize).copied().unwrap_or(false))
    }

    /// Node `i`'s id.
    pub fn id(&self, i: u32) -> Id {
        self.nodes[i as usize].node.contact().id
    }

    /// Node `i`'s contact.
    pub fn contact(&self, i: u32) -> Contact {
        self.nodes[i as usize].node.contact()
    }

    /// The index of the node with this contact, if it is one of ours.
    pub fn index_of(&self, c: &Contact) -> Option<u32> {
        index_of_addr(&c.addr).filter(|&i| {
            self.nodes
                .get(i as usize)
                .is_some_and(|n| n.node.contact().id == c.id)
        })
    }

    /// One-way delay between two nodes.
    pub fn delay(&self, a: u32, b: u32) -> Duration {
        self.topology
            .delay(self.places[a as usize], self.places[b as usize])
    }

    /// The one-way delays between every pair of this network's nodes (`[a][b]`): to run real
    /// nodes at the simulator's distances.
    pub fn delays(&self) -> Vec<Vec<Duration>> {
        let n = self.nodes.len() as u32;
        (0..n)
            .map(|a| (0..n).map(|b| self.delay(a, b)).collect())
            .collect()
    }

    /// A route's relative distance (stretch): the delay along `path` (node indices, origin
    /// first) over the direct delay from `src` to `dst`; `None` when those coincide.
    pub fn path_stretch(&self, src: u32, dst: u32, path: &[u32]) -> Option<f64> {
        let direct = self.distance(src, dst);
        if direct <= 0.0 {
            return None;
        }
        let travelled: f64 = path.windows(2).map(|w| self.distance(w[0], w[1])).sum();
        Some(travelled / direct)
    }

    /// Proximity (one-way delay, fractional microseconds) between two nodes.
    pub fn distance(&self, a: u32, b: u32) -> f64 {
        self.topology
            .distance(self.places[a as usize], self.places[b as usize])
    }

    /// Events waiting in the queue.
    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    /// When the next event in the queue is due, if any.
    pub fn next_event_at(&self) -> Option<Time> {
        self.queue.peek().map(|e| e.at)
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Entry {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn reachable(&self, a: u32, b: u32) -> bool {
        self.partition
            .as_ref()
            .is_none_or(|p| p[a as usize] == p[b as usize])
    }

    /// Carries out everything node `i` asked for, then (re)arms its timer.
    fn pump(&mut self, i: u32) {
        while let Some(a) = self.nodes[i as usize].node.poll_action() {
            match a {
                Action::Send { to, msg } => self.send(i, to, msg),
                Action::Probe { peer } => {
                    self.counters.probes += 1;
                    match self.index_of(&peer) {
                        Some(j) if self.nodes[j as usize].alive && self.reachable(i, j) => {
                            let rtt = self.delay(i, j).mul(2);
                            let ev = Ev::Probe {
                                at: i,
                                peer: j,
                                rtt: Some(rtt),
                            };
                            self.push(self.now + rtt, ev);
                        }
                        _ => {
                            let ev = Ev::ProbeFailed {
                                at: i,
                                peer: Box::new(peer),
                            };
                            self.push(self.now + PROBE_FAILURE_DELAY, ev);
                        }
                    }
                }
                Action::Event(NodeEvent::CommandDone { id, result }) => {
                    self.commands_done += 1;
                    self.results.insert((i, id.0), result);
                }
                Action::Event(NodeEvent::Overlay(OverlayEvent::Joined)) => {
                    let n = &mut self.nodes[i as usize];
                    n.joined = true;
                    if n.alive {
                        self.index.insert(i, self.places[i as usize]);
                    }
                }
                Action::Event(NodeEvent::Overlay(OverlayEvent::PeerFailed { peer: c, .. })) => {
                    if self
                        .index_of(&c)
                        .is_some_and(|j| self.nodes[j as usize].alive)
                    {
                        self.counters.false_failures += 1;
                    }
                }
                Action::Event(NodeEvent::Overlay(OverlayEvent::SecureRouted(r))) => {
                    self.secure_reports.push((i, r));
                }
                Action::Event(_) => {}
            }
        }
        if let Some(d) = self.nodes[i as usize].node.next_deadline() {
            let t = d.max(self.now);
            let cur = self.nodes[i as usize].timer_at;
            if cur.is_none_or(|cur| t < cur || cur < self.now) {
                self.nodes[i as usize].timer_at = Some(t);
                self.push(t, Ev::Timer { node: i });
            }
        }
    }

    fn send(&mut self, from: u32, to: Contact, msg: OverlayMessage) {
        self.counters.messages += 1;
        let kind = msg.kind();
        let payload = if self.cfg.wire {
            let bytes = ringvault_node::encode(&msg).expect("every overlay message encodes");
            Payload::Bytes(bytes)
        } else {
            Payload::Msg(Box::new(msg))
        };
        let len = match &payload {
            Payload::Bytes(b) => b.len() as u64,
            Payload::Msg(_) => 0,
        };
        self.counters.bytes += len;
        match self
            .counters
            .by_kind
            .iter_mut()
            .find(|(k, _, _)| *k == kind)
        {
            Some((_, n, b)) => {
                *n += 1;
                *b += len;
            }
            None => self.counters.by_kind.push((kind, 1, len)),
        }
        let Some(j) = self.index_of(&to) else {
            self.counters.lost += 1;
            return;
        };
        let lost = !self.reachable(from, j)
            || (self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss.min(1.0)));
        if lost {
            self.counters.lost += 1;
            return;
        }
        let at = self.now + self.delay(from, j);
        self.push(
            at,
            Ev::Deliver {
                to: j,
                from,
                msg: payload,
            },
        );
    }

    /// Handles the next event; false when the queue is empty.
    pub fn step(&mut self) -> bool {
        self.step_traced().is_some()
    }

    /// Like [`Sim::step`], saying which node the event woke: `None` when the queue is empty,
    /// `Some(None)` when the event was dropped (a dead node, a stale timer), `Some(Some(i))`
    /// when node `i` handled it (its actions are already carried out). Lets an experiment read
    /// a service's events at the simulated time they happened.
    pub fn step_traced(&mut self) -> Option<Option<u32>> {
        let Entry { at, ev, .. } = self.queue.pop()?;
        self.now = self.now.max(at);
        let now = self.now;
        let i = match ev {
            Ev::Deliver { to, from, msg } => {
                if !self.nodes[to as usize].alive {
                    self.counters.lost += 1;
                    return Some(None);
                }
                let from = self.contact(from);
                if self.is_byzantine(to) {
                    let msg = match msg {
                        Payload::Msg(m) => *m,
                        Payload::Bytes(b) => {
                            ringvault_node::decode(&b).expect("the codec decodes what it encoded")
                        }
                    };
                    let (_, colluders) = self.byzantine.as_ref().expect("checked");
                    let out = colluders.respond(self.nodes[to as usize].node.overlay(), from, msg);
                    for (dest, m) in out {
                        self.send(to, dest, m);
                    }
                    self.counters.events += 1;
                    return Some(Some(to));
                }
                let node = &mut self.nodes[to as usize].node;
                match msg {
                    Payload::Msg(m) => node.handle_message(now, from, *m),
                    Payload::Bytes(b) => node
                        .handle_bytes(now, from, &b)
                        .expect("the codec decodes what it encoded"),
                }
                to
            }
            Ev::Probe { at, peer, rtt } => {
                if !self.nodes[at as usize].alive {
                    return Some(None);
                }
                let peer = self.contact(peer);
                self.nodes[at as usize]
                    .node
                    .handle_probe_result(now, peer, rtt);
                at
            }
            Ev::ProbeFailed { at, peer } => {
                if !self.nodes[at as usize].alive {
                    return Some(None);
                }
                self.nodes[at as usize]
                    .node
                    .handle_probe_result(now, *peer, None);
                at
            }
            Ev::Timer { node } => {
                let n = &mut self.nodes[node as usize];
                if !n.alive || n.timer_at != Some(at) {
                    return Some(None);
                }
                n.timer_at = None;
                n.node.handle_timeout(now);
                node
            }
        };
        self.counters.events += 1;
        self.pump(i);
        Some(Some(i))
    }

    /// Runs events until `done` holds or the next event is later than `limit` (time then moves
    /// to `limit`); returns whether `done` held.
    pub fn run_until(&mut self, limit: Time, mut done: impl FnMut(&Sim) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            match self.queue.peek() {
                Some(e) if e.at <= limit => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(limit);
                    return done(self);
                }
            }
        }
    }

    /// Like [`Sim::run_until`] for an expensive condition, checked every `every` of simulated
    /// time.
    pub fn run_until_polling(
        &mut self,
        limit: Time,
        every: Duration,
        mut done: impl FnMut(&Sim) -> bool,
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

    /// Runs until no event is left (only ends when no node keeps a periodic timer, that is
    /// with keep-alives off) or `limit` passes.
    pub fn drain(&mut self, limit: Time) -> bool {
        while let Some(e) = self.queue.peek() {
            if e.at > limit {
                return false;
            }
            self.step();
        }
        true
    }

    /// Runs `f` against node `i` at the current time, then carries out what it asked for.
    pub fn with_node<R>(&mut self, i: u32, f: impl FnOnce(&mut Node, Time) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.nodes[i as usize].node, now);
        self.pump(i);
        r
    }

    /// Gives node `i` a command now; returns the command id.
    pub fn command(&mut self, i: u32, cmd: Command) -> u64 {
        let now = self.now;
        let id = self.nodes[i as usize].node.handle_command(now, cmd);
        self.pump(i);
        id.0
    }

    /// The result of node `i`'s command `id`, once finished (taken out).
    pub fn take_result(&mut self, i: u32, id: u64) -> Option<Result<CommandOutput, CommandError>> {
        self.results.remove(&(i, id))
    }

    /// Whether node `i`'s command `id` has finished.
    pub fn has_result(&self, i: u32, id: u64) -> bool {
        self.results.contains_key(&(i, id))
    }
}
