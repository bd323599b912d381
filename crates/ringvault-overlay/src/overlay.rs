//! The overlay state machine: its state, its inputs and its outputs.
//!
//! Inputs are `handle_*` methods taking the current time; outputs are drained with
//! [`Overlay::poll_output`]; the one timer is [`Overlay::next_deadline`] +
//! [`Overlay::handle_timeout`]. Nothing here reads a clock, touches a socket or uses a global RNG.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringvault_types::{Contact, Duration, Id, Time};

use crate::config::MAX_RECENTLY_FAILED;
use crate::{
    AppMessage, Config, ConfigError, Envelope, LeafSet, NeighbourhoodSet, OverlayMessage, Peer,
    RoutedBody, RoutingTable, SlotOutcome, SlotRule, Upcalls,
};

/// Something the overlay wants its driver to do or know.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send `msg` to `to`.
    Send {
        /// The receiver.
        to: Contact,
        /// The message.
        msg: OverlayMessage,
    },
    /// Measure proximity to `peer` and report it with [`Overlay::handle_probe_result`]
    /// (the simulator from its topology, the network driver from RTT). Every probe must be
    /// answered, with `None` when the peer cannot be reached.
    Probe {
        /// The peer to measure.
        peer: Contact,
    },
    /// Something happened that the node or its operator may care about.
    Event(OverlayEvent),
}

/// Notable changes in the overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OverlayEvent {
    /// The node finished joining (or started a new ring) and now routes.
    Joined,
    /// The join did not complete after every attempt.
    JoinFailed {
        /// Attempts made.
        attempts: u32,
    },
    /// A peer was declared failed and removed from the tables.
    PeerFailed {
        /// The peer.
        peer: Contact,
        /// What showed it failed.
        cause: FailureCause,
    },
    /// A secure route ended (see [`crate::Kbr::sec_route`]).
    SecureRouted(crate::SecureRouteReport),
}

/// What made this node declare a peer failed: an operator reading a log of failures in a calm
/// ring needs to know which detector fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The transport could not reach it (a dial failed, a connection broke).
    Unreachable,
    /// A proximity probe got no answer.
    ProbeUnanswered,
    /// It said it was leaving.
    Left,
    /// A leaf silent for the failure timeout.
    LeafSilent,
    /// A suspect (a hop to it timed out) silent for the hop timeout.
    SuspectSilent,
    /// It answered pings but left hops unacknowledged too many times in a row.
    HopsUnacknowledged,
    /// More peers were suspected at once than this node tracks.
    TooManySuspects,
}

impl FailureCause {
    /// Its name in logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::ProbeUnanswered => "probe_unanswered",
            Self::Left => "left",
            Self::LeafSilent => "leaf_silent",
            Self::SuspectSilent => "suspect_silent",
            Self::HopsUnacknowledged => "hops_unacknowledged",
            Self::TooManySuspects => "too_many_suspects",
        }
    }
}

impl std::fmt::Display for FailureCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Decides whether a peer may enter this node's tables. The default admits everyone whose id
/// the transport vouched for; secure mode plugs in a check of CA-signed node certificates.
pub trait Admission {
    /// True when `peer` may be added to the tables.
    fn admit(&self, peer: &Contact) -> bool;
}

/// Admits every peer.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(&self, _: &Contact) -> bool {
        true
    }
}

/// Counters an operator or experiment reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Routed messages delivered here as root.
    pub delivered: u64,
    /// Routed messages forwarded by this node.
    pub forwarded: u64,
    /// Forwarding decisions that used the rare case.
    pub rare_case: u64,
    /// Hops that were not acknowledged in time.
    pub hop_timeouts: u64,
    /// Messages re-routed after a hop failure.
    pub reroutes: u64,
    /// Routed messages dropped (too many hops, nowhere to go, not ready, re-routes used up, or
    /// parked too long).
    pub dropped: u64,
    /// Of those, messages dropped because their re-routes were used up.
    pub reroutes_exhausted: u64,
    /// Peers declared failed.
    pub peers_failed: u64,
    /// Leaf set membership changes.
    pub leaf_changes: u64,
    /// Messages handed to the driver to send.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Messages sent for repair (leaf set, slot and neighbourhood requests).
    pub repair_messages: u64,
    /// Join attempts started.
    pub join_attempts: u64,
    /// Joins refused because their source address started too many through this node.
    pub joins_refused: u64,
    /// Secure routes started here.
    pub secure_routes: u64,
    /// Secure routes whose first answer failed the failure test or never came.
    pub secure_test_failed: u64,
    /// Secure routes that used redundant routing.
    pub secure_redundant: u64,
    /// Secure routes that found no node to deliver to.
    pub secure_failed: u64,
    /// Secure deliveries this node handed on to replica set members the sender left out.
    pub secure_closure: u64,
    /// Keep-alive ticks that ran more than a keep-alive interval late (this node stalled);
    /// silence over such a stall is not held against peers.
    pub self_stalls: u64,
    /// Joins checked against independent paths (secure mode).
    pub join_checks: u64,
    /// Leaf set members those checks added that the join path had not named.
    pub join_check_corrections: u64,
    /// Rows asked of other nodes by routing table maintenance.
    pub table_maintenance_requests: u64,
    /// Peers suspected after a missed hop acknowledgement.
    pub suspicions: u64,
    /// Suspects heard from again before they were declared failed.
    pub suspicions_cleared: u64,
    /// Times a message was held because its only way on was a suspect.
    pub parked: u64,
    /// Proximity probes asked for.
    pub probes: u64,
    /// Routing table candidates not probed because the triangle inequality showed they could
    /// not beat the entry in their slot (routing table maintenance).
    pub probes_pruned: u64,
    /// Candidates not probed because [`crate::config::MAX_PENDING_PROBES`] were outstanding.
    pub probes_skipped: u64,
}

/// What the node is waiting for.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Not started: call `start_ring` or `join`.
    Idle,
    /// Waiting for the join path's replies.
    AwaitingJoinReplies {
        bootstrap: Contact,
        attempt: u32,
        deadline: Time,
        hops_seen: BTreeSet<u8>,
        root_hop: Option<u8>,
        versions: BTreeMap<Id, u64>,
    },
    /// Second stage: waiting for the state of the nodes in the new tables.
    CollectingState {
        deadline: Time,
        awaiting: BTreeSet<Id>,
        versions: BTreeMap<Id, u64>,
    },
    /// Secure mode: the join's state is in; probes for this node's own id went out along
    /// independent paths, and their answers are merged before the node announces itself.
    CheckingJoin {
        /// The probes' id.
        id: u64,
        copies: usize,
        answers: usize,
        deadline: Time,
        versions: BTreeMap<Id, u64>,
        /// The leaf set the join path handed over.
        before: Vec<Id>,
        /// The nodes that answered: each counts once, so one liar cannot end the check early
        /// with a burst of empty answers.
        answered: BTreeSet<Id>,
    },
    /// Joined: routing.
    Ready,
    /// Left the ring.
    Left,
}

/// A forwarded message waiting for its hop acknowledgement.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) to: Contact,
    pub(crate) envelope: Envelope,
    /// When the message is re-routed around `to`, which becomes a suspect.
    pub(crate) deadline: Time,
    pub(crate) reroutes: u8,
}

/// An upcall the services are owed, made once the current input is handled.
#[derive(Debug)]
pub(crate) enum PendingUpcall {
    /// A leaf set member joined (`true`) or left.
    Leaf(Contact, bool),
    /// A peer was declared failed, or did not answer a watch.
    Unresponsive(Contact),
}

/// A message a service asked to route from this node, waiting for the current input to finish.
#[derive(Debug)]
pub(crate) struct LocalRoute {
    pub(crate) key: Id,
    pub(crate) msg: AppMessage,
    pub(crate) hint: Option<Contact>,
    pub(crate) trace: bool,
}

/// One node's Pastry overlay.
pub struct Overlay {
    pub(crate) cfg: Config,
    pub(crate) me: Contact,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) phase: Phase,
    pub(crate) leaf: LeafSet,
    pub(crate) table: RoutingTable,
    /// The constrained routing table (secure mode only).
    pub(crate) ctable: Option<RoutingTable>,
    /// The 2L nodes around this one, the leaf set included (secure mode only): what a secure
    /// probe is answered with, so the origin's failure test has twice the ids to judge. Filled
    /// from every contact offered; the periodic leaf set exchange with the farthest leaves
    /// brings the nodes beyond the leaf set.
    pub(crate) outer: Option<LeafSet>,
    pub(crate) neighbours: NeighbourhoodSet,
    pub(crate) admission: Box<dyn Admission + Send>,
    /// Last time each leaf set member was heard from.
    pub(crate) last_heard: BTreeMap<Id, Time>,
    /// Recently failed ids, when and at what address; stale state from peers does not bring
    /// them back.
    pub(crate) recently_failed: BTreeMap<Id, (Time, Contact)>,
    /// Peers we asked the driver to measure.
    pub(crate) probing: BTreeSet<Id>,
    /// Forwarded messages awaiting hop acks.
    pub(crate) in_flight: crate::hops::InFlightHops,
    /// Peers a hop to which timed out, with the time they are declared failed unless heard
    /// from first.
    pub(crate) suspects: BTreeMap<Id, crate::hops::Suspicion>,
    /// Peers a service asked to watch ([`crate::Kbr::watch`]): when they are reported
    /// unresponsive unless the pong to the ping's nonce comes first.
    pub(crate) watched: BTreeMap<Id, crate::hops::Watch>,
    /// Watches services asked for during the current input.
    pub(crate) local_watches: VecDeque<Contact>,
    /// Hops each peer left unacknowledged a failure timeout past their deadlines since it last
    /// acknowledged one.
    pub(crate) missed_acks: BTreeMap<Id, u8>,
    /// Messages waiting for a suspicion to end (see [`Overlay::park`]).
    pub(crate) parked: crate::hops::Parked,
    /// Lazy slot repairs under way, by (row, column).
    pub(crate) slot_repairs: BTreeMap<(u8, u8), crate::table_upkeep::SlotRepair>,
    /// Row requests of the current maintenance round not yet answered: asked peer, row.
    pub(crate) row_requests: BTreeMap<Id, u8>,
    /// Last leaf set request sent to each peer (repair cascades ask each peer at most once per
    /// keep-alive interval).
    pub(crate) leaf_requests: BTreeMap<Id, Time>,
    pub(crate) next_seq: u64,
    /// Bumped on every leaf set change; lets concurrent joiners notice stale state.
    pub(crate) version: u64,
    pub(crate) next_keepalive: Time,
    pub(crate) next_neighbourhood: Time,
    pub(crate) next_table_maintenance: Time,
    /// No neighbourhood refill after a failure is asked for before this time.
    pub(crate) next_neighbourhood_refill: Time,
    pub(crate) outputs: VecDeque<Output>,
    pub(crate) local_routes: VecDeque<LocalRoute>,
    pub(crate) local_deliveries: VecDeque<(Contact, AppMessage)>,
    /// Routed messages to process (received, or re-routed after a hop failure), with the number
    /// of re-routes so far.
    pub(crate) routed_queue: VecDeque<(Envelope, u8)>,
    /// Upcalls the services are owed.
    pub(crate) pending_updates: VecDeque<PendingUpcall>,
    /// Joins started through this node, per source address.
    pub(crate) join_limit: crate::limits::RateLimit,
    /// Secure routes started here, waiting for answers.
    pub(crate) secure_routes: BTreeMap<u64, crate::secure::SecureRoute>,
    /// Secure routes asked for through the KBR API, started at the next flush.
    pub(crate) local_secure: VecDeque<(u64, Id, AppMessage, u8, crate::Redundancy)>,
    pub(crate) next_secure_id: u64,
    /// Answers to this node's own secure probes that it produced itself.
    pub(crate) root_sets: VecDeque<(Contact, OverlayMessage)>,
    /// Secure deliveries to handle (received, or this node's own).
    pub(crate) secure_deliveries: VecDeque<(Contact, OverlayMessage)>,
    /// Secure routes that ended, for the upcall to the service that started them.
    pub(crate) secure_reports: VecDeque<crate::SecureRouteReport>,
    pub(crate) stats: Stats,
}

/// Local work (upcalls, locally originated routes) done per input before the rest waits for the
/// next input: a guard against services that route in a loop.
const MAX_LOCAL_STEPS: usize = 10_000;

/// Output queue capacity kept once drained; a larger queue's memory is released.
const OUTPUT_CAPACITY_KEPT: usize = 16;

impl Overlay {
    /// A node with contact `me` and parameters `cfg`; `seed` seeds its private RNG.
    pub fn new(me: Contact, cfg: Config, seed: u64) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let join_limit = crate::limits::RateLimit::new(cfg.join_rate_per_minute);
        Ok(Overlay {
            leaf: LeafSet::new(me.id, cfg.leaf_set_size),
            table: RoutingTable::new(me.id, cfg.b, SlotRule::Proximity),
            ctable: cfg
                .secure
                .then(|| RoutingTable::new(me.id, cfg.b, SlotRule::ClosestToPoint)),
            outer: cfg
                .secure
                .then(|| LeafSet::new(me.id, 2 * cfg.leaf_set_size)),
            neighbours: NeighbourhoodSet::new(cfg.neighbourhood_size),
            cfg,
            me,
            rng: ChaCha8Rng::seed_from_u64(seed),
            phase: Phase::Idle,
            admission: Box::new(AdmitAll),
            last_heard: BTreeMap::new(),
            recently_failed: BTreeMap::new(),
            probing: BTreeSet::new(),
            in_flight: Default::default(),
            suspects: BTreeMap::new(),
            watched: BTreeMap::new(),
            local_watches: VecDeque::new(),
            missed_acks: BTreeMap::new(),
            parked: Default::default(),
            slot_repairs: BTreeMap::new(),
            row_requests: BTreeMap::new(),
            leaf_requests: BTreeMap::new(),
            next_seq: 1,
            version: 0,
            next_keepalive: Time::NEVER,
            next_neighbourhood: Time::NEVER,
            next_table_maintenance: Time::NEVER,
            next_neighbourhood_refill: Time::ZERO,
            outputs: VecDeque::new(),
            local_routes: VecDeque::new(),
            local_deliveries: VecDeque::new(),
            routed_queue: VecDeque::new(),
            pending_updates: VecDeque::new(),
            join_limit,
            secure_routes: BTreeMap::new(),
            local_secure: VecDeque::new(),
            next_secure_id: 1,
            root_sets: VecDeque::new(),
            secure_deliveries: VecDeque::new(),
            secure_reports: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    /// Replaces the admission policy (secure mode).
    pub fn set_admission(&mut self, admission: Box<dyn Admission + Send>) {
        self.admission = admission;
    }

    /// This node's contact.
    pub fn contact(&self) -> Contact {
        self.me
    }

    /// The parameters.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// True once the node has joined and routes messages.
    pub fn is_ready(&self) -> bool {
        matches!(self.phase, Phase::Ready)
    }

    /// The leaf set.
    pub fn leaf_set(&self) -> &LeafSet {
        &self.leaf
    }

    /// The routing table.
    pub fn routing_table(&self) -> &RoutingTable {
        &self.table
    }

    /// The neighbourhood set.
    pub fn neighbourhood(&self) -> &NeighbourhoodSet {
        &self.neighbours
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The state version (bumped on every leaf set change).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every distinct node in the leaf set, routing table and neighbourhood set.
    pub fn known_peers(&self) -> Vec<Contact> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let all = self
            .leaf
            .iter()
            .copied()
            .chain(self.table.entries().copied())
            .chain(self.neighbours.peers().iter().copied());
        for p in all {
            if seen.insert(p.id()) {
                out.push(p.contact);
            }
        }
        out
    }

    /// Turns keep-alives (with neighbourhood maintenance) and lazy routing table repair on or
    /// off at run time, as [`Config::keepalives`] and [`Config::table_repair`] do at creation.
    /// For simulator phases (build a ring without maintenance traffic, then turn it on).
    pub fn set_maintenance(&mut self, now: Time, keepalives: bool, table_repair: bool) {
        self.cfg.keepalives = keepalives;
        self.cfg.table_repair = table_repair;
        let (ka, nb) = if keepalives && self.is_ready() {
            (
                now + self.cfg.keepalive_interval,
                now + self.cfg.neighbourhood_interval,
            )
        } else {
            (Time::NEVER, Time::NEVER)
        };
        self.next_keepalive = ka;
        self.next_neighbourhood = nb;
        if keepalives {
            self.schedule_table_maintenance(now);
        } else {
            self.next_table_maintenance = Time::NEVER;
        }
        if keepalives {
            // Everyone in the leaf set counts as heard from now: silence is measured from here.
            for p in self.leaf.iter() {
                self.last_heard.insert(p.id(), now);
            }
        }
    }

    /// Turns routing table maintenance on (every `interval`) or off at run time, whether or not
    /// keep-alives run. For simulator phases that measure what it does alone. The first
    /// round comes at a random point of the first interval, so that nodes switched on together
    /// do not ask in step.
    pub fn set_table_maintenance(&mut self, now: Time, interval: Option<Duration>) {
        self.cfg.table_maintenance_interval = interval.filter(|d| *d > Duration::ZERO);
        self.schedule_table_maintenance(now);
    }

    pub(crate) fn schedule_table_maintenance(&mut self, now: Time) {
        self.next_table_maintenance = match self.cfg.table_maintenance_interval {
            Some(every) if self.is_ready() => {
                now + Duration::from_micros(self.rng.gen_range(0..every.as_micros().max(1)))
            }
            _ => Time::NEVER,
        };
    }

    /// Starts a new ring with this node as its only member. Call once, instead of `join`.
    pub fn start_ring(&mut self, now: Time) {
        self.become_ready(now);
    }

    /// The next output, if any. Call after every input until it returns `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.outputs.pop_front();
        if out.is_none() && self.outputs.capacity() > OUTPUT_CAPACITY_KEPT {
            // A join's bursts would otherwise pin hundreds of slots per node for good.
            self.outputs = VecDeque::new();
        }
        out
    }

    /// When [`Overlay::handle_timeout`] should next be called.
    pub fn next_deadline(&self) -> Option<Time> {
        let mut d = Time::NEVER;
        match &self.phase {
            Phase::AwaitingJoinReplies { deadline, .. }
            | Phase::CollectingState { deadline, .. }
            | Phase::CheckingJoin { deadline, .. } => d = d.min(*deadline),
            Phase::Ready => {
                d = d
                    .min(self.next_keepalive)
                    .min(self.next_neighbourhood)
                    .min(self.next_table_maintenance);
            }
            Phase::Idle | Phase::Left => {}
        }
        if let Some(h) = self.hops_deadline() {
            d = d.min(h);
        }
        if let Some(s) = self.secure_deadline() {
            d = d.min(s);
        }
        (d != Time::NEVER).then_some(d)
    }

    /// Call when the time from [`Overlay::next_deadline`] has come. Early or repeated calls are
    /// harmless.
    pub fn handle_timeout(&mut self, now: Time, up: &mut dyn Upcalls) {
        self.join_timeout(now);
        self.hop_timeouts(now);
        self.secure_timeouts(now);
        if self.is_ready() && now >= self.next_keepalive {
            self.keepalive_tick(now);
        }
        if self.is_ready() && now >= self.next_neighbourhood {
            self.neighbourhood_tick(now);
        }
        if self.is_ready() && now >= self.next_table_maintenance {
            self.table_maintenance_tick(now);
        }
        self.flush(now, up);
    }

    /// A message from `from` (whose id the transport has verified).
    pub fn handle_message(
        &mut self,
        now: Time,
        from: Contact,
        msg: OverlayMessage,
        up: &mut dyn Upcalls,
    ) {
        self.stats.messages_received += 1;
        if from.id == self.me.id {
            return;
        }
        if !matches!(msg, OverlayMessage::Leaving) {
            self.heard_from(&from.id);
        }
        if let Some(t) = self.last_heard.get_mut(&from.id) {
            *t = now;
        }
        self.dispatch(now, from, msg);
        self.flush(now, up);
    }

    /// The transport could not reach `peer` (a dial failed, or an open connection broke). The
    /// peer is treated as failed at once rather than after keep-alive silence; if it was wrong,
    /// the peer's next message to us clears the mark.
    pub fn handle_unreachable(&mut self, now: Time, peer: Id, up: &mut dyn Upcalls) {
        self.declare_failed(now, peer, FailureCause::Unreachable);
        self.flush(now, up);
    }

    /// The answer to an [`Output::Probe`]: the measured proximity, or `None` when the peer could
    /// not be reached.
    pub fn handle_probe_result(
        &mut self,
        now: Time,
        peer: Contact,
        rtt: Option<Duration>,
        up: &mut dyn Upcalls,
    ) {
        self.probing.remove(&peer.id);
        match rtt {
            None => self.declare_failed(now, peer.id, FailureCause::ProbeUnanswered),
            Some(rtt) => {
                self.table.set_rtt(&peer.id, rtt);
                self.offer(
                    now,
                    Peer {
                        contact: peer,
                        rtt: Some(rtt),
                    },
                );
            }
        }
        self.flush(now, up);
    }

    /// Routes an application message from this node toward `key`. With `trace`, the delivered
    /// message lists every node it passed.
    pub fn route(
        &mut self,
        now: Time,
        key: Id,
        msg: AppMessage,
        hint: Option<Contact>,
        trace: bool,
        up: &mut dyn Upcalls,
    ) {
        self.local_routes.push_back(LocalRoute {
            key,
            msg,
            hint,
            trace,
        });
        self.flush(now, up);
    }

    /// Sends an application message straight to `to`.
    pub fn send_direct(&mut self, now: Time, to: Contact, msg: AppMessage, up: &mut dyn Upcalls) {
        crate::Kbr::send_direct(self, to, msg);
        self.flush(now, up);
    }

    /// Leaves the ring on purpose: tells every known node, then stops.
    pub fn leave(&mut self, _now: Time) {
        for c in self.known_peers() {
            self.send(c, OverlayMessage::Leaving);
        }
        self.phase = Phase::Left;
        self.in_flight.clear();
        self.suspects.clear();
        self.watched.clear();
        self.local_watches.clear();
        self.missed_acks.clear();
        self.parked.clear();
        self.slot_repairs.clear();
        self.row_requests.clear();
    }

    pub(crate) fn send(&mut self, to: Contact, msg: OverlayMessage) {
        self.stats.messages_sent += 1;
        self.outputs.push_back(Output::Send { to, msg });
    }

    pub(crate) fn event(&mut self, e: OverlayEvent) {
        self.outputs.push_back(Output::Event(e));
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Runs the work services queued through the [`crate::Kbr`] calls (routes, direct sends)
    /// and the upcalls they are owed. Every `handle_*` method does this on its own; call it after
    /// invoking a service outside of an overlay input (a service's own timer).
    pub fn flush(&mut self, now: Time, up: &mut dyn Upcalls) {
        for _ in 0..MAX_LOCAL_STEPS {
            if let Some(upcall) = self.pending_updates.pop_front() {
                match upcall {
                    PendingUpcall::Leaf(c, joined) => up.update(self, now, c, joined),
                    PendingUpcall::Unresponsive(c) => up.unresponsive(self, now, c),
                }
            } else if let Some((env, reroutes)) = self.routed_queue.pop_front() {
                self.process_envelope_with(now, env, reroutes, up);
            } else if let Some(r) = self.local_routes.pop_front() {
                self.route_local(now, r, up);
            } else if let Some(c) = self.local_watches.pop_front() {
                self.start_watch(now, c);
            } else if let Some((id, key, msg, r, redundancy)) = self.local_secure.pop_front() {
                self.start_secure_route(now, id, key, msg, r, redundancy);
            } else if let Some((_, m)) = self.root_sets.pop_front() {
                if let OverlayMessage::RootSet { id, key, members } = m {
                    self.on_root_set(now, id, key, members);
                }
            } else if let Some((from, m)) = self.secure_deliveries.pop_front() {
                if let OverlayMessage::SecureDeliver {
                    key,
                    r,
                    recipients,
                    msg,
                } = m
                {
                    if self.on_secure_deliver(key, r, recipients, &msg) {
                        let info = crate::RouteInfo {
                            origin: from,
                            via: crate::Via::Secure,
                            hops: 0,
                            trace: None,
                        };
                        up.deliver(self, now, key, msg, info);
                    }
                }
            } else if let Some(report) = self.secure_reports.pop_front() {
                up.secure_routed(self, now, &report);
            } else if let Some((from, msg)) = self.local_deliveries.pop_front() {
                let info = crate::RouteInfo {
                    origin: from,
                    via: crate::Via::Direct,
                    hops: 0,
                    trace: None,
                };
                let key = self.me.id;
                up.deliver(self, now, key, msg, info);
            } else {
                return;
            }
        }
    }

    /// Takes `peer` into whichever tables want it, probing it when the routing table needs its
    /// round trip to decide. Returns true when the leaf set changed.
    pub(crate) fn offer(&mut self, now: Time, peer: Peer) -> bool {
        self.offer_with(now, peer, true)
    }

    /// Offers `candidate`, which `via` named with its own round trip to it (`reported`), to
    /// every table, probing it (as a neighbourhood candidate: always; otherwise when its
    /// routing table slot needs the round trip) unless the triangle inequality shows it could
    /// neither win its slot nor enter the neighbourhood set.
    pub(crate) fn offer_reported(
        &mut self,
        now: Time,
        via: &Id,
        candidate: Contact,
        reported: Option<Duration>,
        neighbour: bool,
    ) {
        if candidate.id == self.me.id || !self.admission.admit(&candidate) {
            return;
        }
        let hopeless = self.rtt_lower_bound(via, reported).is_some_and(|bound| {
            !self.could_win_slot(&candidate.id, bound) && !self.neighbours.could_admit(bound)
        });
        let peer = Peer {
            contact: candidate,
            rtt: self.known_rtt(&candidate.id),
        };
        let new_leaf = self.offer_with(now, peer, !hopeless);
        if hopeless && !new_leaf {
            self.stats.probes_pruned += 1;
        } else if (hopeless || neighbour) && peer.rtt.is_none() {
            // A new leaf is probed even when it could not win a slot: the probe is what checks
            // that it is alive and measures it (at most L a join).
            self.probe(candidate);
        }
    }

    /// What the triangle inequality says of a node `via` is `reported` away from: this node is
    /// at least |rtt(this, via) - reported| from it. `None` when either is unknown.
    pub(crate) fn rtt_lower_bound(&self, via: &Id, reported: Option<Duration>) -> Option<Duration> {
        Some(self.known_rtt(via)?.abs_diff(reported?))
    }

    /// Whether a candidate for `id`'s routing table slot, at least `bound` away, could take
    /// it: the slot is empty or holds `id` already, or its occupant was never measured or is
    /// farther than `bound`.
    pub(crate) fn could_win_slot(&self, id: &Id, bound: Duration) -> bool {
        let occupant = self
            .table
            .slot_of(id)
            .and_then(|(r, col)| self.table.get(r, col))
            .filter(|p| p.id() != *id);
        match occupant.and_then(|p| p.rtt) {
            Some(o) => bound < o,
            None => true,
        }
    }

    /// [`Overlay::offer`], probing for the routing table only when `probe`.
    fn offer_with(&mut self, now: Time, peer: Peer, probe: bool) -> bool {
        let id = peer.id();
        if id == self.me.id
            || self.recently_failed.contains_key(&id)
            || !self.admission.admit(&peer.contact)
        {
            return false;
        }
        let (added, pushed_out) = self.leaf.insert(peer);
        if added {
            self.last_heard.insert(id, now);
            self.leaf_changed(peer.contact, true);
        }
        for c in pushed_out {
            self.last_heard.remove(&c.id);
            self.leaf_changed(c, false);
        }
        match self.table.insert(peer) {
            SlotOutcome::NeedsProximity | SlotOutcome::Filled if peer.rtt.is_none() && probe => {
                self.probe(peer.contact)
            }
            _ => {}
        }
        if let Some(ct) = &mut self.ctable {
            ct.insert(Peer {
                contact: peer.contact,
                rtt: None,
            });
        }
        if let Some(o) = &mut self.outer {
            o.insert(peer);
        }
        if peer.rtt.is_some() {
            self.neighbours.insert(peer);
        }
        added
    }

    /// The contacts of `named` (at most [`crate::join::MAX_CONTACTS_PER_MESSAGE`]) that this
    /// node's admission takes, itself included: what a message may hand it to send to.
    pub(crate) fn admitted(&self, named: Vec<Contact>) -> Vec<Contact> {
        named
            .into_iter()
            .take(crate::join::MAX_CONTACTS_PER_MESSAGE)
            .filter(|c| c.id == self.me.id || self.admission.admit(c))
            .collect()
    }

    /// Offers a peer we heard from directly: direct evidence it is alive clears a failure mark.
    pub(crate) fn offer_sender(&mut self, now: Time, peer: Contact) {
        self.recently_failed.remove(&peer.id);
        let rtt = self.known_rtt(&peer.id);
        self.offer(now, Peer { contact: peer, rtt });
    }

    pub(crate) fn probe(&mut self, peer: Contact) {
        if self.probing.contains(&peer.id) {
            return;
        }
        if self.probing.len() >= crate::config::MAX_PENDING_PROBES {
            self.stats.probes_skipped += 1;
            return;
        }
        self.probing.insert(peer.id);
        self.stats.probes += 1;
        self.outputs.push_back(Output::Probe { peer });
    }

    fn leaf_changed(&mut self, c: Contact, joined: bool) {
        self.version += 1;
        self.stats.leaf_changes += 1;
        if self.is_ready() {
            self.pending_updates
                .push_back(PendingUpcall::Leaf(c, joined));
        }
    }

    /// The contact this node's tables hold for `id`, if any of them does.
    pub(crate) fn contact_in_tables(&self, id: &Id) -> Option<Contact> {
        let id = *id;
        self.leaf
            .get(&id)
            .map(|p| p.contact)
            .or_else(|| {
                self.table
                    .entries()
                    .find(|p| p.id() == id)
                    .map(|p| p.contact)
            })
            .or_else(|| {
                self.neighbours
                    .peers()
                    .iter()
                    .find(|p| p.id() == id)
                    .map(|p| p.contact)
            })
            // Secure mode's outer leaf set and constrained table hold nodes the tables above
            // may not: a dead one there must go too, or answers keep naming it.
            .or_else(|| {
                self.outer
                    .as_ref()
                    .and_then(|o| o.get(&id))
                    .map(|p| p.contact)
            })
            .or_else(|| {
                self.ctable
                    .as_ref()
                    .and_then(|t| t.entries().find(|p| p.id() == id))
                    .map(|p| p.contact)
            })
    }

    /// Removes a peer found dead from every table and starts repair.
    pub(crate) fn declare_failed(&mut self, now: Time, id: Id, cause: FailureCause) {
        self.end_suspicion(&id);
        if id == self.me.id {
            return;
        }
        self.missed_acks.remove(&id);
        let watch = self.watched.remove(&id);
        if self.slot_repairs.values().any(|r| r.waits_on(&id)) {
            self.slot_repair_timeouts(now, Some(&id));
        }
        let contact = self.contact_in_tables(&id);
        self.probing.remove(&id);
        self.reroute_hops_to(&id);
        let Some(contact) = contact else {
            // Not in the tables, but a service is waiting on it.
            if let Some(w) = watch {
                self.pending_updates
                    .push_back(PendingUpcall::Unresponsive(w.contact));
            }
            return;
        };
        if self.recently_failed.len() >= MAX_RECENTLY_FAILED {
            if let Some((&oldest, _)) = self.recently_failed.iter().min_by_key(|(_, f)| f.0) {
                self.recently_failed.remove(&oldest);
            }
        }
        self.recently_failed.insert(id, (now, contact));
        let side = self.leaf.side_of(&id);
        let in_leaf = self.leaf.remove(&id);
        let slot = self.table.remove(&id);
        let in_neighbours = self.neighbours.remove(&id);
        if let Some(o) = &mut self.outer {
            o.remove(&id);
        }
        if self.ctable.as_mut().and_then(|t| t.remove(&id)).is_some() {
            // Refill the slot from what this node still knows: the rule picks the closest.
            for c in self.known_peers() {
                if let Some(t) = &mut self.ctable {
                    t.insert(Peer::unmeasured(c));
                }
            }
        }
        self.last_heard.remove(&id);
        self.stats.peers_failed += 1;
        if self.is_ready() {
            self.pending_updates
                .push_back(PendingUpcall::Unresponsive(contact));
        }
        self.event(OverlayEvent::PeerFailed {
            peer: contact,
            cause,
        });
        if in_leaf {
            self.leaf_changed(contact, false);
            self.repair_leaf_set(now, Some(side));
        }
        if let Some((row, col)) = slot {
            if self.cfg.table_repair {
                self.repair_slot(now, row, col);
            }
        }
        // Refill the neighbourhood set at most once per keep-alive interval: when many fail at
        // once, one answer refills it as well as one per failure would.
        if in_neighbours && now >= self.next_neighbourhood_refill {
            if let Some(p) = self.neighbours.peers().first().copied() {
                self.next_neighbourhood_refill = now + self.cfg.keepalive_interval;
                self.stats.repair_messages += 1;
                self.send(p.contact, OverlayMessage::NeighbourhoodRequest);
            }
        }
    }

    /// Whether `body` is a join (whose key is the joiner's own id, so the joiner must not be
    /// chosen as a hop).
    pub(crate) fn joiner_of(body: &RoutedBody) -> Option<Id> {
        match body {
            RoutedBody::Join { joiner } => Some(joiner.id),
            RoutedBody::App(_) | RoutedBody::SecureProbe { .. } => None,
        }
    }
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("me", &self.me)
            .field("phase", &self.phase)
            .field("leaves", &self.leaf.len())
            .finish_non_exhaustive()
    }
}
