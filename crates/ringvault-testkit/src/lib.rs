//! Test support for services on ringvault's KBR API.
//!
//! Owns: [`TestRing`], a small ring of real [`Node`]s whose tables are built correct from global
//! knowledge, joined by a zero-latency message queue (every message through the wire codec) and
//! a clock advanced in fixed steps. It exists so a service (PAST, Scribe) can be tested end to
//! end in a few hundred lines of test; joins, latency models and scale belong to the simulator
//! (`ringvault-sim`). Also the Byzantine behaviours ([`byzantine`]) the simulator and tests
//! give to colluding nodes. Never a dependency of a node's own code.
#![deny(missing_docs)]

pub mod byzantine;
pub mod server_byzantine;

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};

use ringvault_node::{Action, Node};
use ringvault_overlay::{Config, Kbr, OverlayMessage, Peer, Service};
use ringvault_types::{Contact, Duration, Id, Identity, Time};

/// How far [`TestRing::advance`] moves the clock between timer checks.
pub const STEP: Duration = Duration::from_millis(250);
/// A message storm guard: [`TestRing::settle`] panics after this many deliveries in one call.
pub const MAX_DELIVERIES: usize = 5_000_000;

/// The proximity of members `a` and `b`: fixed, symmetric, 1 to 50 ms, so probes confirm what
/// the tables were built with and tables stay stable.
pub fn rtt(a: usize, b: usize) -> Duration {
    let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
    let h = Id::hash(&[lo.to_le_bytes(), hi.to_le_bytes()].concat());
    Duration::from_millis(1 + h.as_bytes()[0] as u64 % 50)
}

/// One member of a [`TestRing`].
pub struct Member {
    /// The node.
    pub node: Node,
    /// Its identity (its id is the hash of this key).
    pub identity: Identity,
    /// False once killed: it receives and sends nothing more.
    pub alive: bool,
}

/// A ring of real nodes with correct tables and instant delivery.
pub struct TestRing {
    /// Simulated time.
    pub now: Time,
    /// The members, by index.
    pub members: Vec<Member>,
    index: BTreeMap<Id, usize>,
    queue: VecDeque<(usize, Contact, Vec<u8>)>,
}

impl TestRing {
    /// `n` nodes with `cfg`; `setup(i, identity, node)` registers services on node `i`.
    pub fn new(n: usize, cfg: Config, mut setup: impl FnMut(usize, &Identity, &mut Node)) -> Self {
        let idents: Vec<Identity> = (0..n)
            .map(|i| Identity::from_secret_bytes(*Id::hash(&(i as u64).to_le_bytes()).as_bytes()))
            .collect();
        let contacts: Vec<Contact> = idents
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let addr = SocketAddr::from((Ipv4Addr::new(127, 1, (i >> 8) as u8, i as u8), 9000));
                Contact::new(k.id(), addr)
            })
            .collect();
        let mut members = Vec::new();
        for (i, identity) in idents.into_iter().enumerate() {
            let mut node = Node::new(contacts[i], cfg.clone(), i as u64).expect("valid config");
            setup(i, &identity, &mut node);
            let peers = contacts
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, c)| Peer {
                    contact: *c,
                    rtt: Some(rtt(i, j)),
                });
            node.overlay_mut().start_with_state(Time::ZERO, peers);
            members.push(Member {
                node,
                identity,
                alive: true,
            });
        }
        let index = contacts
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();
        let mut ring = TestRing {
            now: Time::ZERO,
            members,
            index,
            queue: VecDeque::new(),
        };
        // Let the services see their leaf sets (update upcalls) before the test starts.
        for i in 0..n {
            ring.members[i].node.handle_timeout(Time::ZERO);
            ring.pump(i);
        }
        ring.settle();
        ring
    }

    /// Carries out what node `i` asked for: sends are queued, probes answered at once.
    fn pump(&mut self, i: usize) {
        while let Some(a) = self.members[i].node.poll_action() {
            match a {
                Action::Send { to, msg } => {
                    let bytes = ringvault_node::encode(&msg).expect("encodable message");
                    if let Some(&j) = self.index.get(&to.id) {
                        let from = self.members[i].node.contact();
                        self.queue.push_back((j, from, bytes));
                    }
                }
                Action::Probe { peer } => {
                    let rtt = match self.index.get(&peer.id) {
                        Some(&j) if self.members[j].alive => Some(rtt(i, j)),
                        _ => None,
                    };
                    let now = self.now;
                    self.members[i].node.handle_probe_result(now, peer, rtt);
                }
                Action::Event(_) => {}
            }
        }
    }

    /// Delivers queued messages until none is left.
    pub fn settle(&mut self) {
        let mut n = 0;
        while let Some((j, from, bytes)) = self.queue.pop_front() {
            n += 1;
            assert!(n < MAX_DELIVERIES, "message storm");
            if !self.members[j].alive {
                continue;
            }
            let now = self.now;
            let msg: OverlayMessage = ringvault_node::decode(&bytes).expect("valid message");
            self.members[j].node.handle_message(now, from, msg);
            self.pump(j);
        }
    }

    /// Moves the clock forward by `d` in [`STEP`]s, firing due timers and settling each step.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + STEP).min(end);
            let now = self.now;
            for i in 0..self.members.len() {
                if self.members[i].alive
                    && self.members[i]
                        .node
                        .next_deadline()
                        .is_some_and(|t| t <= now)
                {
                    self.members[i].node.handle_timeout(now);
                    self.pump(i);
                }
            }
            self.settle();
        }
    }

    /// Calls service `S` on node `i` (with its KBR, the time and the node's identity), then
    /// delivers everything that follows.
    pub fn call<S: Service, R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut S, &mut dyn Kbr, Time, &Identity) -> R,
    ) -> R {
        let r = self.start(i, f);
        self.settle();
        r
    }

    /// Calls service `S` on node `i` like [`TestRing::call`], but only queues what follows:
    /// requests started on several nodes this way are in flight together until
    /// [`TestRing::settle`].
    pub fn start<S: Service, R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut S, &mut dyn Kbr, Time, &Identity) -> R,
    ) -> R {
        let now = self.now;
        let m = &mut self.members[i];
        let identity = &m.identity;
        let r = m
            .node
            .with_service::<S, R>(now, |s, kbr| f(s, kbr, now, identity))
            .expect("service registered on this node");
        self.pump(i);
        r
    }

    /// Node `i`'s id.
    pub fn id(&self, i: usize) -> Id {
        self.members[i].node.contact().id
    }

    /// The `k` live nodes closest to `key`, closest first.
    pub fn closest_live(&self, key: &Id, k: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].alive)
            .collect();
        v.sort_by(|a, b| key.cmp_closeness(&self.id(*a), &self.id(*b)));
        v.truncate(k);
        v
    }

    /// Stops node `i` silently: nothing more reaches it or leaves it.
    pub fn kill(&mut self, i: usize) {
        self.members[i].alive = false;
    }
}
