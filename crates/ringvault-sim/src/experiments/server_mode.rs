//! `server-mode`: a fleet of servers under server mode's membership service
//! (`ringvault_bft::Server`, the same state machine the daemon runs) on the run's latency
//! model (`--topology transit-stub` for the design's figures), with server-like churn:
//! sessions with a 30-day median, plus 500 joins and 500 leaves spread over the run. A session
//! ends with a leave (servers are taken out of service, not crashed: evictions are not
//! exercised here), and a server that left keeps running (it is not a member, and no lookup
//! starts from it).
//!
//! Every server starts from one genesis (committee of 4, f = 1, epochs of 60 s, leases of 3
//! epochs; up to 100 membership changes per epoch, so that the run's changes fit in a few
//! epochs). A message takes the one-way delay of the topology between its two servers. The
//! servers share each configuration (`ringvault_bft::SharedConfigs`: derived and checked once,
//! one copy for the whole fleet; a configuration of 100,000 servers is tens of megabytes).
//!
//! Measured: for each epoch, the time from the first member adopting the new configuration
//! (a committee member, as it decides) until 99.9% of its members have (adoptions by servers
//! outside it, leavers and late joiners catching up, are not counted); the membership
//! traffic in bytes per second per server (every message encoded as it would go on the wire);
//! the lookup delay of one hop (from a random server to the first member of a random key's
//! replica group, on the topology) next to classic mode's route delay on the same model (the
//! mean relative distance of a classic ring of up to 2,000 nodes, as `stretch` measures it,
//! times the mean direct delay between servers); and the time replicas spend NotReady per epoch change (their stores
//! are empty, so this is the hand-over's round trips, not its data).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringvault_bft::{
    BftMessage, Config, Genesis, Member, MembershipConfig, MembershipEvent, Params as BftParams,
    Server, ServerAction, ServerEvent, ServerMessage, ServerStart, SharedConfigs,
};
use ringvault_types::{
    CertBody, Duration, Id, Identity, NodeCertificate, RevocationList, Time, CERT_VERSION,
};
use serde_json::json;

use super::static_net::point;
use super::{percentile, r6, Ctx};
use crate::perf::rss_bytes;
use crate::report::{Plot, PlotKind, Report, Series, Table};
use crate::{Place, Topology};

/// Default fleet size.
const N: usize = 10_000;
/// Joins and leaves injected over the run (half each), on top of the sessions' departures.
const CHANGES: usize = 1_000;
/// Median session.
const MEDIAN_SESSION: Duration = Duration::from_secs(30 * 86_400);
/// Epoch length (the design's default outside a local ring).
const EPOCH_MS: u64 = 60_000;
/// Membership changes one epoch may apply.
const MAX_CHANGES: u16 = 100;
/// Epochs simulated.
const EPOCHS: u64 = 14;
/// The injected joins and leaves happen between these epochs.
const CHURN_FROM: u64 = 2;
const CHURN_TO: u64 = 10;
/// Classic ring measured for the comparison (at most N).
const CLASSIC_N: usize = 2_000;
/// Lookups sampled for the one-hop delay.
const LOOKUPS: usize = 100_000;
/// Unix milliseconds at simulated time zero.
const UNIX_MS: u64 = 1_800_000_000_000;

enum Event {
    Deliver {
        to: usize,
        from: Id,
        msg: Box<ServerMessage>,
    },
    Timer(usize),
    Join(usize),
    Leave(usize),
}

struct Entry {
    at: Time,
    seq: u64,
    event: Event,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Fleet {
    topo: Topology,
    places: Vec<Place>,
    ids: Vec<Id>,
    certs: Vec<NodeCertificate>,
    index: BTreeMap<Id, usize>,
    servers: Vec<Option<Server>>,
    /// The deadline each server's timer is queued for.
    armed: Vec<Option<Time>>,
    queue: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    now: Time,
    settings: MembershipConfig,
    genesis: Arc<Config>,
    /// Bytes and messages sent, by message kind.
    bytes: BTreeMap<&'static str, u64>,
    messages: u64,
    /// The encoded size of each configuration's `Decided` message, by epoch.
    decided_size: BTreeMap<(u64, u32), u64>,
    /// Adoption times per epoch, and the epoch's member count.
    adopted: BTreeMap<u64, (usize, Vec<Time>)>,
    events: u64,
    identities: Vec<Option<Identity>>,
}

fn kind(msg: &ServerMessage) -> &'static str {
    match msg {
        ServerMessage::Membership(m) => match m {
            BftMessage::Propose(_) => "propose",
            BftMessage::Vote(_) => "vote",
            BftMessage::Request(_) => "request",
            BftMessage::Confirm(_) => "confirm",
            BftMessage::Suspect { .. } => "suspect",
            BftMessage::Decided { .. } => "decided",
            BftMessage::Pull { .. } => "pull",
        },
        ServerMessage::Store(_) => "store",
    }
}

impl Fleet {
    fn push(&mut self, at: Time, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Entry {
            at,
            seq: self.seq,
            event,
        }));
    }

    fn start(&mut self, i: usize) {
        let Some(identity) = self.identities[i].take() else {
            return;
        };
        let server = Server::new(
            ServerStart {
                identity,
                settings: self.settings.clone(),
                config: self.genesis.clone(),
                cert: None,
                sign_once: None,
                wiped: false,
                items: Vec::new(),
                unsynced: Vec::new(),
            },
            self.now,
        );
        self.servers[i] = Some(server);
        self.flush(i);
    }

    fn size(&mut self, msg: &ServerMessage) -> u64 {
        if let ServerMessage::Membership(BftMessage::Decided { delta, cert }) = msg {
            let key = (delta.epoch, cert.round);
            if let Some(s) = self.decided_size.get(&key) {
                return *s;
            }
            let s = msg.encode().len() as u64;
            self.decided_size.insert(key, s);
            return s;
        }
        msg.encode().len() as u64
    }

    /// Performs what server `i` asked, then arms its timer.
    fn flush(&mut self, i: usize) {
        let mut actions = Vec::new();
        if let Some(s) = self.servers[i].as_mut() {
            while let Some(a) = s.poll_action() {
                actions.push(a);
            }
        }
        let me = self.ids[i];
        let mut stored = Vec::new();
        for a in actions {
            match a {
                ServerAction::Send { to, msg } => {
                    let Some(&j) = self.index.get(&to) else {
                        continue;
                    };
                    let size = self.size(&msg);
                    *self.bytes.entry(kind(&msg)).or_default() += size;
                    self.messages += 1;
                    let at = self.now + self.topo.delay(self.places[i], self.places[j]);
                    self.push(
                        at,
                        Event::Deliver {
                            to: j,
                            from: me,
                            msg: Box::new(msg),
                        },
                    );
                }
                // Stores are instant here (the hand-over's round trips are what is measured):
                // completed once the rest of this batch is done.
                ServerAction::Store { token, .. } => stored.push(token),
                ServerAction::Event(ServerEvent::Membership(MembershipEvent::Adopted {
                    epoch,
                    members,
                })) => {
                    // Only the configuration's members count: leavers are sent it at once, and
                    // joiners and servers that left adopt old ones late while catching up.
                    let member = self.servers[i].as_ref().is_some_and(|s| {
                        let c = s.membership().current();
                        c.epoch == epoch && c.member(&me).is_some()
                    });
                    if member {
                        let e = self.adopted.entry(epoch).or_insert((members, Vec::new()));
                        e.1.push(self.now);
                    }
                }
                // Nobody crashes here: a probe always finds its suspect.
                ServerAction::Probe(_)
                | ServerAction::PersistSignOnce(_)
                | ServerAction::PersistConfig(..)
                | ServerAction::PersistUnsynced(_)
                | ServerAction::Event(_) => {}
            }
        }
        if !stored.is_empty() {
            if let Some(s) = self.servers[i].as_mut() {
                for token in stored {
                    s.handle_stored(self.now, token);
                }
            }
            return self.flush(i);
        }
        let next = self.servers[i].as_ref().and_then(|s| s.next_deadline());
        if let Some(at) = next {
            let at = at.max(self.now);
            if self.armed[i].is_none_or(|armed| at < armed || armed < self.now) {
                self.armed[i] = Some(at);
                self.push(at, Event::Timer(i));
            }
        }
    }

    fn run(&mut self, until: Time) {
        while let Some(Reverse(top)) = self.queue.peek() {
            if top.at > until {
                break;
            }
            let Some(Reverse(Entry { at, event, .. })) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.events += 1;
            match event {
                Event::Deliver { to, from, msg } => {
                    if let Some(s) = self.servers[to].as_mut() {
                        s.handle_message(at, from, *msg);
                        self.flush(to);
                    }
                }
                Event::Timer(i) => {
                    if self.armed[i] != Some(at) {
                        continue; // superseded by an earlier one
                    }
                    self.armed[i] = None;
                    if let Some(s) = self.servers[i].as_mut() {
                        s.handle_timeout(at);
                        self.flush(i);
                    }
                }
                Event::Join(i) => {
                    self.start(i);
                    let cert = self.certs[i].clone();
                    if let Some(s) = self.servers[i].as_mut() {
                        s.join(at, cert);
                        self.flush(i);
                    }
                }
                Event::Leave(i) => {
                    if let Some(s) = self.servers[i].as_mut() {
                        if s.leave(at).is_ok() {
                            self.flush(i);
                        }
                    }
                }
            }
        }
        self.now = until;
    }
}

fn certificate(ca: &Identity, who: &Identity, serial: u64) -> NodeCertificate {
    let ip = std::net::Ipv4Addr::from(0x0a00_0000 + serial as u32 + 1);
    NodeCertificate::issue(
        ca,
        CertBody {
            version: CERT_VERSION,
            serial,
            node_id: who.id(),
            public_key: who.public_key(),
            addrs: vec![std::net::SocketAddr::from((ip, 7000))],
            not_before: 0,
            not_after: u64::MAX / 2,
        },
    )
}

fn identity(seed: u64, i: usize) -> Identity {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    s[16] = 0x5e;
    Identity::from_secret_bytes(s)
}

pub(crate) fn server_mode(ctx: &mut Ctx) -> Report {
    let p = ctx.params.clone();
    let n = p.nodes.unwrap_or(N);
    let joins = CHANGES / 2;
    let total = n + joins;
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed ^ 0x5e4e_0de5);
    let rss0 = rss_bytes();
    let wall = std::time::Instant::now();
    let topo = Topology::new(p.topology, &mut rng);
    let places: Vec<Place> = (0..total).map(|_| topo.place(&mut rng)).collect();
    let bar = p.bar(total as u64, "server identities");
    let ca = identity(p.seed, usize::MAX);
    let mut identities = Vec::with_capacity(total);
    let mut certs = Vec::with_capacity(total);
    for i in 0..total {
        let who = identity(p.seed, i);
        certs.push(certificate(&ca, &who, i as u64));
        identities.push(Some(who));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let ids: Vec<Id> = certs.iter().map(|c| c.node_id()).collect();
    let index: BTreeMap<Id, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let params = BftParams {
        epoch_ms: EPOCH_MS,
        max_changes: MAX_CHANGES,
        ..BftParams::DEFAULT
    };
    let members: Vec<Member> = certs[..n]
        .iter()
        .map(|c| Member {
            cert: c.clone(),
            admitted: 0,
        })
        .collect();
    let genesis = Genesis::sign(
        &ca,
        Config::genesis(members, params, UNIX_MS + 30 * 86_400_000),
    );
    let genesis = Arc::new(genesis.config);
    let settings = MembershipConfig {
        ca: ca.public_key(),
        revoked: RevocationList::empty(),
        unix_ms_at_zero: UNIX_MS,
        shared: Some(SharedConfigs::new()),
    };
    let mut fleet = Fleet {
        topo,
        places,
        ids,
        certs,
        index,
        servers: (0..total).map(|_| None).collect(),
        armed: vec![None; total],
        queue: BinaryHeap::new(),
        seq: 0,
        now: Time::ZERO,
        settings,
        genesis,
        bytes: BTreeMap::new(),
        messages: 0,
        decided_size: BTreeMap::new(),
        adopted: BTreeMap::new(),
        events: 0,
        identities,
    };
    let bar = p.bar(n as u64, "starting servers");
    for i in 0..n {
        fleet.start(i);
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Churn: the injected joins and leaves, and each server's session.
    let epoch = Duration::from_millis(EPOCH_MS);
    let from = Time::ZERO + epoch.mul(CHURN_FROM);
    let span = epoch.mul(CHURN_TO - CHURN_FROM).as_micros();
    let end = Time::ZERO + epoch.mul(EPOCHS);
    for j in 0..joins {
        let at = from + Duration::from_micros(rng.gen_range(0..span));
        fleet.push(at, Event::Join(n + j));
    }
    let mut leaving = std::collections::BTreeSet::new();
    while leaving.len() < CHANGES - joins {
        leaving.insert(rng.gen_range(0..n));
    }
    for &i in &leaving {
        let at = from + Duration::from_micros(rng.gen_range(0..span));
        fleet.push(at, Event::Leave(i));
    }
    let mut session_leaves = 0;
    for i in 0..n {
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        let mean = MEDIAN_SESSION.as_secs_f64() / std::f64::consts::LN_2;
        let session = Duration::from_micros((-u.ln() * mean * 1e6) as u64);
        if Time::ZERO + session < end && !leaving.contains(&i) {
            session_leaves += 1;
            fleet.push(Time::ZERO + session, Event::Leave(i));
        }
    }

    let bar = p.bar(EPOCHS, "epochs simulated");
    for e in 1..=EPOCHS {
        fleet.run(Time::ZERO + epoch.mul(e));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let sim_wall = wall.elapsed().as_secs_f64();

    // Spread of each configuration.
    let mut spread_table = Table::new(
        "spread",
        &["epoch", "members", "adopted", "ms_to_99_9", "ms_to_all"],
    );
    let mut spreads_ms = Vec::new();
    let mut spread_points = Vec::new();
    for (epoch, (members, times)) in &fleet.adopted {
        let mut times = times.clone();
        times.sort();
        let first = times[0];
        let need = (*members * 999).div_ceil(1000);
        let to_999 = times
            .get(need.saturating_sub(1))
            .map(|t| t.saturating_since(first).as_millis_f64());
        let to_all = (times.len() >= *members)
            .then(|| times[members - 1].saturating_since(first).as_millis_f64());
        if let Some(ms) = to_999 {
            spreads_ms.push((ms * 1000.0) as u64);
            spread_points.push((*epoch as f64, ms));
        }
        spread_table.row(vec![
            json!(epoch),
            json!(members),
            json!(times.len()),
            json!(to_999.map(r6)),
            json!(to_all.map(r6)),
        ]);
    }

    // Final membership, and one-hop lookups from the members of the newest configuration.
    let running: Vec<usize> = (0..total).filter(|&i| fleet.servers[i].is_some()).collect();
    let newest = running
        .iter()
        .filter_map(|&i| fleet.servers[i].as_ref())
        .map(|s| s.membership().current().clone())
        .max_by_key(|c| c.epoch)
        .expect("servers ran");
    let final_members = newest.members.len();
    let live: Vec<usize> = running
        .iter()
        .copied()
        .filter(|&i| newest.member(&fleet.ids[i]).is_some())
        .collect();
    let behind = live
        .iter()
        .filter_map(|&i| fleet.servers[i].as_ref())
        .filter(|s| {
            newest.member(&s.replica().id()).is_some()
                && s.membership().current().epoch + 1 < newest.epoch
        })
        .count();
    let mut one_hop_us = Vec::with_capacity(LOOKUPS);
    let mut direct_sum = 0.0;
    for _ in 0..LOOKUPS {
        let client = live[rng.gen_range(0..live.len())];
        let key = Id::hash(&rng.gen::<u64>().to_le_bytes());
        let group = newest.replica_group(&key);
        let Some(&first) = group.first().and_then(|m| fleet.index.get(&m.id())) else {
            continue;
        };
        let d = fleet.topo.delay(fleet.places[client], fleet.places[first]);
        one_hop_us.push(d.as_micros());
        let other = live[rng.gen_range(0..live.len())];
        direct_sum += fleet
            .topo
            .delay(fleet.places[client], fleet.places[other])
            .as_micros() as f64;
    }
    let direct_mean_us = direct_sum / LOOKUPS as f64;
    let one_hop_mean_us = one_hop_us.iter().sum::<u64>() as f64 / one_hop_us.len().max(1) as f64;
    let (p50, p90, p99) = (
        percentile(&mut one_hop_us, 50.0),
        percentile(&mut one_hop_us, 90.0),
        percentile(&mut one_hop_us, 99.0),
    );

    // NotReady time and membership traffic.
    let (mut not_ready_us, mut not_ready_max_us, mut syncs, mut taken_over) =
        (0u64, 0u64, 0u64, 0u64);
    for s in fleet.servers.iter().flatten() {
        let st = s.replica().stats();
        not_ready_us += st.not_ready_micros;
        not_ready_max_us = not_ready_max_us.max(st.not_ready_max_micros);
        syncs += st.syncs;
        taken_over += st.taken_over;
    }
    let changes_applied: usize = newest.epoch as usize;
    let rss = rss_bytes();
    let duration_s = end.saturating_since(Time::ZERO).as_secs_f64();
    let total_bytes: u64 = fleet.bytes.values().sum();
    let bytes_per_server_s = total_bytes as f64 / n as f64 / duration_s;
    let mut traffic = Table::new("traffic", &["kind", "bytes", "bytes_per_server_s"]);
    for (k, b) in &fleet.bytes {
        traffic.row(vec![
            json!(k),
            json!(b),
            json!(r6(*b as f64 / n as f64 / duration_s)),
        ]);
    }
    let messages = fleet.messages;
    ctx.perf.events += fleet.events;
    ctx.perf.max_nodes = ctx.perf.max_nodes.max(total);
    ctx.perf.peak_rss = ctx.perf.peak_rss.max(rss);
    drop(fleet);

    // Classic mode on the same topology model.
    let classic_n = n.min(CLASSIC_N);
    let classic = point(ctx, classic_n, 4, 16, 32);
    let classic_mean_us = classic.stretch * direct_mean_us;

    let spread_p50 = percentile(&mut spreads_ms.clone(), 50.0) as f64 / 1000.0;
    let spread_max = spreads_ms.iter().copied().max().unwrap_or(0) as f64 / 1000.0;
    Report {
        experiment: "server-mode".into(),
        seed: p.seed,
        parameters: json!({
            "servers": n,
            "topology": p.topology,
            "epoch_ms": EPOCH_MS,
            "epochs": EPOCHS,
            "committee": 4,
            "f": 1,
            "lease_epochs": BftParams::DEFAULT.lease_epochs,
            "max_changes_per_epoch": MAX_CHANGES,
            "median_session_days": MEDIAN_SESSION.as_secs_f64() / 86_400.0,
            "injected_joins": joins,
            "injected_leaves": CHANGES - joins,
            "session_leaves": session_leaves,
            "classic_nodes": classic_n,
            "lookups": LOOKUPS,
        }),
        figures: json!({
            "config_spread_ms_to_99_9_p50": r6(spread_p50),
            "config_spread_ms_to_99_9_max": r6(spread_max),
            "membership_bytes_per_server_s": r6(bytes_per_server_s),
            "messages": messages,
            "final_epoch": newest.epoch,
            "final_members": final_members,
            "members_more_than_one_epoch_behind": behind,
            "one_hop_ms_mean": r6(one_hop_mean_us / 1e3),
            "one_hop_ms_p50": r6(p50 as f64 / 1e3),
            "one_hop_ms_p90": r6(p90 as f64 / 1e3),
            "one_hop_ms_p99": r6(p99 as f64 / 1e3),
            "classic_route_ms_mean": r6(classic_mean_us / 1e3),
            "classic_mean_hops": r6(classic.mean_hops),
            "classic_relative_distance": r6(classic.stretch),
            "hand_overs": syncs,
            "not_ready_ms_per_hand_over_mean": r6(not_ready_us as f64 / 1e3 / syncs.max(1) as f64),
            "not_ready_ms_per_hand_over_max": r6(not_ready_max_us as f64 / 1e3),
            "not_ready_server_s_per_epoch_change": r6(not_ready_us as f64 / 1e6 / changes_applied.max(1) as f64),
            "items_taken_over": taken_over,
            "sim_wall_s": r6(sim_wall),
            "rss_mib": rss.map(|r| r / (1 << 20)),
            "rss_mib_at_start": rss0.map(|r| r / (1 << 20)),
        }),
        tables: vec![spread_table, traffic],
        plots: vec![Plot {
            name: "spread".into(),
            title: "Time for each configuration to reach 99.9% of its members".into(),
            x_label: "epoch".into(),
            y_label: "ms after the first adoption".into(),
            kind: PlotKind::Bar,
            log_x: false,
            series: vec![Series {
                label: format!("{n} servers"),
                points: spread_points,
            }],
        }],
    }
}
