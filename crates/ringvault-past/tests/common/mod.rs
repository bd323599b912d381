//! PAST across a small ring of real overlays: a zero-latency message loop with a clock advanced
//! in steps, just enough to exercise the storage protocol end to end.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};

use ringvault_overlay::{
    AppMessage, Config, Forward, Kbr, Output, Overlay, OverlayMessage, Peer, RouteInfo, Service,
    Upcalls,
};
use ringvault_past::{MemoryStore, Past, PastEvent};
use ringvault_types::{Contact, Duration, Id, Identity, Time};

/// The one service of these nodes.
pub struct Host(pub Past);

impl Upcalls for Host {
    fn deliver(&mut self, kbr: &mut dyn Kbr, now: Time, key: Id, msg: AppMessage, info: RouteInfo) {
        self.0.deliver(kbr, now, key, msg, info)
    }
    fn forward(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        key: Id,
        msg: &mut AppMessage,
        next: &mut Contact,
    ) -> Forward {
        self.0.forward(kbr, now, key, msg, next)
    }
    fn update(&mut self, kbr: &mut dyn Kbr, now: Time, node: Contact, joined: bool) {
        self.0.update(kbr, now, node, joined)
    }
}

pub struct Member {
    pub overlay: Overlay,
    pub host: Host,
    pub identity: Identity,
    pub alive: bool,
}

pub struct Ring {
    pub now: Time,
    pub nodes: Vec<Member>,
    index: BTreeMap<Id, usize>,
    queue: VecDeque<(usize, Contact, OverlayMessage)>,
    pub events: Vec<(usize, PastEvent)>,
}

impl Ring {
    /// `n` nodes with correct tables and keep-alives on; node i stores up to `capacity(i)` bytes.
    pub fn new(n: usize, capacity: impl Fn(usize) -> u64) -> Ring {
        let idents: Vec<Identity> = (0..n)
            .map(|i| Identity::from_secret_bytes(*Id::hash(&(i as u64).to_le_bytes()).as_bytes()))
            .collect();
        let contacts: Vec<Contact> = idents
            .iter()
            .enumerate()
            .map(|(i, id)| {
                Contact::new(
                    id.id(),
                    SocketAddr::from((Ipv4Addr::new(127, 0, (i >> 8) as u8, i as u8), 9000)),
                )
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, ident) in idents.into_iter().enumerate() {
            let mut overlay = Overlay::new(contacts[i], Config::default(), i as u64).unwrap();
            let peers = contacts
                .iter()
                .filter(|c| c.id != contacts[i].id)
                .map(|c| Peer {
                    contact: *c,
                    rtt: Some(Duration::from_millis(
                        1 + (c.id.as_bytes()[0] as u64 ^ i as u64) % 50,
                    )),
                });
            overlay.start_with_state(Time::ZERO, peers);
            let store = MemoryStore::new(capacity(i));
            let me = Identity::from_secret_bytes(ident.secret_bytes());
            let past = Past::new(me, Box::new(store)).unwrap();
            nodes.push(Member {
                overlay,
                host: Host(past),
                identity: ident,
                alive: true,
            });
        }
        let index = contacts
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();
        let mut ring = Ring {
            now: Time::ZERO,
            nodes,
            index,
            queue: VecDeque::new(),
            events: Vec::new(),
        };
        for i in 0..n {
            ring.pump(i);
        }
        ring.settle();
        ring
    }

    fn pump(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].overlay.poll_output() {
            match out {
                Output::Send { to, msg } => {
                    // Through the wire encoding, as a real network would.
                    let bytes = postcard::to_allocvec(&msg).unwrap();
                    let msg: OverlayMessage = postcard::from_bytes(&bytes).unwrap();
                    let from = self.nodes[i].overlay.contact();
                    if let Some(&j) = self.index.get(&to.id) {
                        self.queue.push_back((j, from, msg));
                    }
                }
                Output::Probe { peer } => {
                    let alive = self
                        .index
                        .get(&peer.id)
                        .is_some_and(|&j| self.nodes[j].alive);
                    let rtt = alive.then_some(Duration::from_millis(5));
                    let now = self.now;
                    let m = &mut self.nodes[i];
                    m.overlay.handle_probe_result(now, peer, rtt, &mut m.host);
                }
                Output::Event(_) => {}
            }
        }
        while let Some(e) = self.nodes[i].host.0.poll_event() {
            self.events.push((i, e));
        }
    }

    /// Delivers every queued message (zero latency), to quiescence.
    pub fn settle(&mut self) {
        let mut steps = 0;
        while let Some((j, from, msg)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 5_000_000, "message storm");
            if !self.nodes[j].alive {
                continue;
            }
            let now = self.now;
            let m = &mut self.nodes[j];
            m.overlay.handle_message(now, from, msg, &mut m.host);
            self.pump(j);
        }
    }

    /// Advances the clock by `d` in 250 ms steps, firing due timers of overlays and services.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + Duration::from_millis(250)).min(end);
            let now = self.now;
            for i in 0..self.nodes.len() {
                if !self.nodes[i].alive {
                    continue;
                }
                let m = &mut self.nodes[i];
                if m.overlay.next_deadline().is_some_and(|t| t <= now) {
                    m.overlay.handle_timeout(now, &mut m.host);
                }
                if m.host.0.next_deadline().is_some_and(|t| t <= now) {
                    m.host.0.handle_timeout(&mut m.overlay, now);
                    m.overlay.flush(now, &mut m.host);
                }
                self.pump(i);
            }
            self.settle();
        }
    }

    /// Runs a client call on node `i` with its KBR, then delivers everything that follows.
    pub fn call<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Past, &mut Overlay, Time, &Identity) -> R,
    ) -> R {
        let now = self.now;
        let m = &mut self.nodes[i];
        let r = f(&mut m.host.0, &mut m.overlay, now, &m.identity);
        m.overlay.flush(now, &mut m.host);
        self.pump(i);
        self.settle();
        r
    }

    /// The result event of request `req` on node `i`, if it finished.
    pub fn take(&mut self, i: usize, req: u64) -> Option<PastEvent> {
        let pos = self.events.iter().position(|(n, e)| {
            *n == i
                && match e {
                    PastEvent::Inserted(r, _)
                    | PastEvent::Found(r, _)
                    | PastEvent::Reclaimed(r, _) => *r == req,
                }
        })?;
        Some(self.events.remove(pos).1)
    }

    pub fn id(&self, i: usize) -> Id {
        self.nodes[i].overlay.contact().id
    }

    /// The `k` live nodes closest to `key`.
    pub fn closest_live(&self, key: &Id, k: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .collect();
        v.sort_by(|a, b| key.cmp_closeness(&self.id(*a), &self.id(*b)));
        v.truncate(k);
        v
    }

    pub fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
    }
}
