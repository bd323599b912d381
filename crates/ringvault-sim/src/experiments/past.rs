//! `past-storage` and `past-caching`: PAST (`ringvault-past`, unchanged) on every simulated
//! node, objects inserted from random nodes until the ring is full.
//!
//! Scale: the design's sizes (2,250 nodes of 27 MB on average, about 60 GB) do not fit in
//! memory, so every capacity and every object size is divided by one common factor
//! ([`Workload::scale`], 100 in the experiments). Acceptance depends only on size / free space,
//! and the number of objects a ring holds only on capacity / size, so neither changes; only
//! objects below the factor in bytes are rounded (to at least 1 byte).
//!
//! The same [`fill`] serves the CI scenario (`tests/past.rs`), on a smaller ring.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::Rng;
use ringvault_node::Node;
use ringvault_overlay::Config;
use ringvault_past::{
    CachePolicy, Holding, Inserted, Kind, MemoryStore, Past, PastConfig, PastError, PastEvent,
    RequestId,
};
use ringvault_types::{Duration, Id, Identity, Time};
use serde::Serialize;
use serde_json::json;

use super::{r6, Ctx, Params};
use crate::perf::rss_bytes;
use crate::report::{Plot, PlotKind, Report, Series, Table};
use crate::{Sim, SimConfig, TopologyKind};

/// Node capacities and object sizes, in full-scale bytes, and the factor both are divided by.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    /// Mean of the capacity's normal distribution.
    pub capacity_mean: f64,
    /// Its standard deviation.
    pub capacity_sd: f64,
    /// Capacities outside `capacity_min..=capacity_max` are drawn again.
    pub capacity_min: f64,
    /// See `capacity_min`.
    pub capacity_max: f64,
    /// Median object size (a lognormal: its mean is `median * exp(sigma^2 / 2)`).
    pub size_median: f64,
    /// The lognormal's sigma.
    pub size_sigma: f64,
    /// Sizes above this are cut to it.
    pub size_max: f64,
    /// Capacities and sizes are divided by this.
    pub scale: u64,
}

impl Workload {
    /// experiments.md: capacities normal(27 MB, 10.8 MB) truncated to 2..51 MB; sizes
    /// heavy-tailed like a web proxy trace, median 1.3 KB and mean about 10.5 KB (lognormal,
    /// sigma 2.045), at most 138 MB; everything divided by 100.
    pub fn paper() -> Self {
        Workload {
            capacity_mean: 27e6,
            capacity_sd: 10.8e6,
            capacity_min: 2e6,
            capacity_max: 51e6,
            size_median: 1.3e3,
            size_sigma: 2.045,
            size_max: 138e6,
            scale: 100,
        }
    }

    /// A node's capacity in (scaled) bytes.
    pub fn capacity(&self, rng: &mut impl Rng) -> u64 {
        loop {
            let c = self.capacity_mean + self.capacity_sd * normal(rng);
            if (self.capacity_min..=self.capacity_max).contains(&c) {
                return ((c / self.scale as f64).round() as u64).max(1);
            }
        }
    }

    /// An object's size in (scaled) bytes.
    pub fn size(&self, rng: &mut impl Rng) -> u64 {
        let s = (self.size_median.ln() + self.size_sigma * normal(rng)).exp();
        ((s.min(self.size_max) / self.scale as f64).round() as u64).max(1)
    }
}

/// A standard normal deviate (Box-Muller).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// One filling run.
#[derive(Clone, Debug, Serialize)]
pub struct Setup {
    /// Nodes in the ring.
    pub nodes: usize,
    /// Replicas per object.
    pub k: u8,
    /// Leaf set size L.
    pub leaf_set: usize,
    /// Capacities and sizes.
    pub workload: Workload,
    /// PAST's policy on every node (reported per run, see [`Outcome::config`]).
    #[serde(skip)]
    pub past: PastConfig,
    /// Inserts in flight at once (each from a random node).
    pub window: usize,
    /// Hard limit on insert attempts.
    pub max_attempts: usize,
    /// Utilisation is sampled (every store read) after this many inserts finished; the
    /// failure rate of each such interval is one point of the curves.
    pub interval: usize,
    /// "Full": the run stops after an interval in which at least this fraction of inserts
    /// failed.
    pub stop_failure_rate: f64,
    /// The run also stops after the interval in which utilisation reached this (above 1:
    /// never).
    pub stop_utilisation: f64,
    /// Lookups issued per successful insert (0: none), for objects chosen by popularity.
    pub lookups_per_insert: usize,
    /// Zipf exponent of object popularity (rank r is looked up in proportion to 1 / r^alpha;
    /// ranks are a random permutation of the objects, independent of insertion order).
    pub zipf_alpha: f64,
}

impl Setup {
    /// experiments.md's `past-storage`: N = 2,250, k = 5, L = 32, the paper's workload,
    /// caching off (it does not change acceptance: cache counts as free space).
    pub fn paper(nodes: usize, past: PastConfig) -> Self {
        let workload = Workload::paper();
        Setup {
            nodes,
            k: 5,
            leaf_set: 32,
            max_attempts: 2 * expected_objects(nodes, 5, &workload),
            workload,
            past,
            window: 128,
            interval: (nodes * 2).max(500),
            stop_failure_rate: 0.3,
            stop_utilisation: 2.0,
            lookups_per_insert: 0,
            zipf_alpha: 0.8,
        }
    }
}

/// Roughly how many objects fill a ring: total capacity / (k x mean size).
pub fn expected_objects(nodes: usize, k: u8, w: &Workload) -> usize {
    let mean_size = w.size_median * (w.size_sigma * w.size_sigma / 2.0).exp();
    (nodes as f64 * w.capacity_mean / (k as f64 * mean_size)) as usize
}

/// One point of the curves: the interval of inserts that finished since the previous point.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Point {
    /// Inserts finished so far.
    pub finished: usize,
    /// Bytes held as replicas (primary and diverted) over total capacity, at the end of the
    /// interval.
    pub utilisation: f64,
    /// Failed inserts over finished inserts, in this interval.
    pub failure_rate: f64,
    /// Failed over finished, since the start.
    pub cumulative_failure_rate: f64,
    /// Lookups answered in this interval.
    pub lookups: usize,
    /// Of those, served from a cached copy.
    pub hit_rate: f64,
    /// Mean overlay hops of those lookups.
    pub mean_hops: f64,
}

/// What a filling run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    /// Label of the configuration.
    pub label: String,
    /// PAST's policy in this run.
    pub config: serde_json::Value,
    /// Nodes in the ring.
    pub nodes: usize,
    /// Insert attempts (each may have tried up to 4 salts).
    pub attempts: usize,
    /// Inserts that got k receipts.
    pub succeeded: usize,
    /// Inserts refused for lack of space.
    pub failed: usize,
    /// Inserts that ended otherwise (timeouts, busy): should be 0.
    pub other_errors: usize,
    /// Successful inserts that needed file diversion (a new salt).
    pub file_diverted: usize,
    /// Receipts for diverted replicas, over all successful inserts.
    pub replicas_diverted: usize,
    /// Replica bytes over capacity at the end.
    pub utilisation: f64,
    /// k x the size of every successful insert, over capacity: the part of `utilisation` that
    /// belongs to objects whose insert succeeded (the rest is replicas stored by attempts that
    /// failed or were re-salted, which PAST as built does not take back).
    pub useful_utilisation: f64,
    /// Total capacity, scaled bytes.
    pub capacity: u64,
    /// Mean, median and largest size of the objects tried, in full-scale bytes.
    pub size_mean: f64,
    /// See `size_mean`.
    pub size_median: f64,
    /// See `size_mean`.
    pub size_max: f64,
    /// Mean full-scale size of the objects whose insert failed.
    pub failed_size_mean: f64,
    /// Lookups issued and answered (found).
    pub lookups: usize,
    /// Lookups that found nothing or timed out.
    pub lookups_failed: usize,
    /// Found lookups served from a cached copy.
    pub hits: usize,
    /// Mean hops of found lookups.
    pub mean_hops: f64,
    /// Leaf sets that were not exact after the build (should be 0).
    pub wrong_leaf_sets: usize,
    /// Simulated seconds the insert phase took.
    pub simulated_secs: f64,
    /// The curves.
    pub points: Vec<Point>,
}

/// Objects' popularity: a Fenwick tree over ranks of the weights of inserted objects, so a
/// lookup picks among inserted objects in proportion to 1 / rank^alpha.
struct Popularity {
    tree: Vec<f64>,
    rank: Vec<u32>,
    alpha: f64,
    total: f64,
    object_at: BTreeMap<u32, usize>,
}

impl Popularity {
    fn new(n: usize, alpha: f64, rng: &mut impl Rng) -> Self {
        let mut rank: Vec<u32> = (0..n as u32).collect();
        rank.shuffle(rng);
        Popularity {
            tree: vec![0.0; n + 1],
            rank,
            alpha,
            total: 0.0,
            object_at: BTreeMap::new(),
        }
    }

    /// Object `obj` (its index in the workload) can now be looked up.
    fn add(&mut self, obj: usize, handle: usize) {
        let r = self.rank[obj] as usize;
        let w = 1.0 / ((r + 1) as f64).powf(self.alpha);
        self.total += w;
        let mut i = r + 1;
        while i < self.tree.len() {
            self.tree[i] += w;
            i += i & i.wrapping_neg();
        }
        self.object_at.insert(r as u32, handle);
    }

    /// A handle of an inserted object, by popularity.
    fn pick(&self, rng: &mut impl Rng) -> Option<usize> {
        if self.total <= 0.0 {
            return None;
        }
        let mut u = rng.gen_range(0.0..self.total);
        let (mut pos, mut step) = (0usize, self.tree.len().next_power_of_two());
        while step > 0 {
            let next = pos + step;
            if next < self.tree.len() && self.tree[next] <= u {
                u -= self.tree[next];
                pos = next;
            }
            step >>= 1;
        }
        // pos is the count of ranks whose prefix sum is <= u: the chosen rank is pos (0-based),
        // or the nearest inserted rank below when rounding lands on an empty one.
        self.object_at
            .range(..=pos as u32)
            .next_back()
            .or_else(|| self.object_at.iter().next())
            .map(|(_, h)| *h)
    }
}

/// Node `i`'s PAST identity (it signs receipts) in run `seed`.
pub(crate) fn node_identity(seed: u64, i: u32) -> Identity {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&crate::node_seed(seed, i).to_le_bytes());
    b[8..12].copy_from_slice(&i.to_le_bytes());
    b[12] = 0x5a;
    Identity::from_secret_bytes(b)
}

fn past_of<R>(sim: &mut Sim, i: u32, f: impl FnOnce(&mut Past, Time) -> R) -> R {
    sim.with_node(i, |node: &mut Node, now| {
        node.with_service::<Past, _>(now, |p, _| f(p, now))
            .expect("every node runs PAST")
    })
}

/// Bytes held as replicas, and total capacity, over every node.
fn usage(sim: &mut Sim) -> (u64, u64) {
    let mut used = 0;
    let mut cap = 0;
    for i in 0..sim.nodes.len() as u32 {
        let u = past_of(sim, i, |p, _| p.store().usage());
        used += u.used;
        cap += u.capacity;
    }
    (used, cap)
}

/// Builds a ring of `setup.nodes` nodes, each running PAST over a [`MemoryStore`], joined one
/// at a time through their nearest joined node (keep-alives off: the ring is static).
/// `progress` is told of every node joined.
pub fn build(seed: u64, topology: TopologyKind, setup: &Setup, progress: &dyn Fn(u64)) -> Sim {
    let overlay = Config {
        leaf_set_size: setup.leaf_set,
        keepalives: false,
        ..Config::default()
    };
    let mut sim = Sim::new(SimConfig {
        topology,
        ..SimConfig::new(seed, overlay)
    });
    for _ in 0..setup.nodes {
        let cap = setup.workload.capacity(&mut sim.rng);
        let i = sim.nodes.len() as u32;
        let identity = node_identity(seed, i);
        let config = setup.past.clone();
        sim.add_node_with(|node| {
            let store = Box::new(MemoryStore::new(cap));
            let past = Past::with_config(identity, store, config).expect("an empty store");
            node.add_service(Box::new(past));
        });
        assert!(sim.join_nearest(i), "node {i} failed to join (seed {seed})");
        // Let the join's second stage and announcements finish before the next one.
        sim.run_for(Duration::from_secs(2));
        progress(1);
    }
    sim
}

struct Flight {
    obj: usize,
    size: u64,
}

/// Inserts objects from random nodes, `setup.window` at a time, until an interval fails at
/// `setup.stop_failure_rate` or `setup.max_attempts` were tried; with `lookups_per_insert`,
/// looks objects up by popularity as they are inserted. `progress` is told of every insert
/// finished.
pub fn fill(sim: &mut Sim, setup: &Setup, label: &str, progress: &dyn Fn(u64)) -> Outcome {
    let seed = sim.cfg.seed;
    let owner = node_identity(seed ^ 0x006f_776e_6572, u32::MAX);
    let n = sim.nodes.len() as u32;
    let (_, capacity) = usage(sim);
    let mut out = Outcome {
        label: label.into(),
        config: json!({
            "t_pri": setup.past.t_pri,
            "t_div": setup.past.t_div,
            "diversion": setup.past.diversion,
            "cache": format!("{:?}", setup.past.cache),
            "lookup_heuristic": setup.past.lookup_heuristic,
        }),
        capacity,
        nodes: n as usize,
        wrong_leaf_sets: crate::wrong_leaf_sets(sim).len(),
        ..Outcome::default()
    };
    let start = sim.now;
    let mut popularity = (setup.lookups_per_insert > 0)
        .then(|| Popularity::new(setup.max_attempts, setup.zipf_alpha, &mut sim.rng));
    // Successful objects: id and size (indexed by the handles `popularity` returns).
    let mut stored: Vec<(Id, u64)> = Vec::new();
    let mut inserts: BTreeMap<(u32, RequestId), Flight> = BTreeMap::new();
    let mut lookups: BTreeMap<(u32, RequestId), Id> = BTreeMap::new();
    let mut sizes: Vec<u64> = Vec::new();
    let (mut useful, mut failed_bytes) = (0u64, 0u64);
    let mut cur = Point::default();
    let (mut cur_failed, mut cur_hops) = (0usize, 0usize);
    let mut hops_total = 0usize;
    let mut stop = false;
    let scale = setup.workload.scale as f64;
    // Inserts PAST refused at once (nothing was sent): finished with the next slice.
    let mut refused_now: Vec<(Flight, Result<Inserted, PastError>)> = Vec::new();
    loop {
        while !stop && inserts.len() < setup.window && out.attempts < setup.max_attempts {
            let from = sim.rng.gen_range(0..n);
            let size = setup.workload.size(&mut sim.rng);
            let obj = out.attempts;
            out.attempts += 1;
            sizes.push(size);
            let content = vec![(obj % 251) as u8; size as usize];
            let name = format!("object-{obj}");
            let k = setup.k;
            let req = sim.with_node(from, |node, now| {
                node.with_service::<Past, _>(now, |p, kbr| {
                    p.insert(kbr, now, &owner, &name, content, k, 0)
                })
                .expect("every node runs PAST")
            });
            match req {
                Ok(req) => {
                    inserts.insert((from, req), Flight { obj, size });
                }
                Err(e) => refused_now.push((Flight { obj, size }, Err(e))),
            }
        }
        if inserts.is_empty() && lookups.is_empty() && refused_now.is_empty() {
            break;
        }
        let slice = sim.now + Duration::from_millis(10);
        sim.run_until(slice, |_| false);
        let busy: std::collections::BTreeSet<u32> =
            inserts.keys().chain(lookups.keys()).map(|k| k.0).collect();
        let mut finished = std::mem::take(&mut refused_now);
        let mut found = Vec::new();
        for i in busy {
            let events = past_of(sim, i, |p, _| {
                std::iter::from_fn(|| p.poll_event()).collect::<Vec<_>>()
            });
            for e in events {
                match e {
                    PastEvent::Inserted(req, r) => {
                        if let Some(f) = inserts.remove(&(i, req)) {
                            finished.push((f, r));
                        }
                    }
                    PastEvent::Found(req, r) => {
                        if let Some(id) = lookups.remove(&(i, req)) {
                            found.push((id, r));
                        }
                    }
                    PastEvent::Reclaimed(..) | PastEvent::Described(..) => {}
                }
            }
        }
        for (id, r) in found {
            match r {
                Ok(f) => {
                    out.lookups += 1;
                    cur.lookups += 1;
                    hops_total += f.hops as usize;
                    cur_hops += f.hops as usize;
                    // A hit: the server held no replica of it (a primary or diverted copy is
                    // never evicted in a static ring, so a copy gone by now was a cached one).
                    let server = sim.index_of(&f.server);
                    let kind = server.and_then(|s| {
                        past_of(sim, s, |p, _| {
                            p.store().meta(&id).ok().flatten().map(|m| m.0)
                        })
                    });
                    if !matches!(kind, Some(Kind::Primary | Kind::Diverted)) {
                        out.hits += 1;
                        cur.hit_rate += 1.0;
                    }
                }
                Err(_) => out.lookups_failed += 1,
            }
        }
        for (f, r) in finished {
            cur.finished += 1;
            match r {
                Ok(ins) => {
                    out.succeeded += 1;
                    useful += setup.k as u64 * f.size;
                    if ins.cert.body.salt > 0 {
                        out.file_diverted += 1;
                    }
                    out.replicas_diverted += ins
                        .receipts
                        .iter()
                        .filter(|r| r.body.holding == Holding::Diverted)
                        .count();
                    if let Some(pop) = popularity.as_mut() {
                        pop.add(f.obj, stored.len());
                        stored.push((ins.cert.id(), f.size));
                        for _ in 0..setup.lookups_per_insert {
                            let Some(h) = pop.pick(&mut sim.rng) else {
                                continue;
                            };
                            let id = stored[h].0;
                            let from = sim.rng.gen_range(0..n);
                            let req = sim.with_node(from, |node, now| {
                                node.with_service::<Past, _>(now, |p, kbr| p.lookup(kbr, now, id))
                                    .expect("every node runs PAST")
                            });
                            match req {
                                Ok(req) => {
                                    lookups.insert((from, req), id);
                                }
                                Err(_) => out.lookups_failed += 1,
                            }
                        }
                    }
                }
                Err(PastError::NoSpace(_)) => {
                    out.failed += 1;
                    cur_failed += 1;
                    failed_bytes += f.size;
                }
                Err(_) => {
                    out.other_errors += 1;
                    cur_failed += 1;
                }
            }
            progress(1);
            let done = out.succeeded + out.failed + out.other_errors;
            if done.is_multiple_of(setup.interval) {
                let (used, _) = usage(sim);
                cur.utilisation = r6(used as f64 / capacity as f64);
                cur.failure_rate = r6(cur_failed as f64 / cur.finished.max(1) as f64);
                cur.cumulative_failure_rate =
                    r6((out.failed + out.other_errors) as f64 / done as f64);
                cur.hit_rate = r6(cur.hit_rate / cur.lookups.max(1) as f64);
                cur.mean_hops = r6(cur_hops as f64 / cur.lookups.max(1) as f64);
                if cur.failure_rate >= setup.stop_failure_rate
                    || cur.utilisation >= setup.stop_utilisation
                {
                    stop = true;
                }
                let finished_so_far = done;
                out.points.push(Point {
                    finished: finished_so_far,
                    ..std::mem::take(&mut cur)
                });
                cur_failed = 0;
                cur_hops = 0;
            }
        }
    }
    let (used, _) = usage(sim);
    out.utilisation = r6(used as f64 / capacity as f64);
    out.useful_utilisation = r6(useful as f64 / capacity as f64);
    out.mean_hops = r6(hops_total as f64 / out.lookups.max(1) as f64);
    out.simulated_secs = r6(sim.now.saturating_since(start).as_secs_f64());
    let attempted: u64 = sizes.iter().sum();
    out.size_mean = r6(attempted as f64 * scale / sizes.len().max(1) as f64);
    sizes.sort_unstable();
    out.size_median = sizes
        .get(sizes.len() / 2)
        .map_or(0.0, |&s| s as f64 * scale);
    out.size_max = sizes.last().map_or(0.0, |&s| s as f64 * scale);
    out.failed_size_mean = r6(failed_bytes as f64 * scale / out.failed.max(1) as f64);
    out
}

/// One configuration of a sweep.
struct Variant {
    label: String,
    past: PastConfig,
}

/// The t_pri / t_div sweep runs on rings of at most this many nodes (the same per-node
/// workload). A full-size run inserts over a million objects at about 17 signatures or
/// verifications each, 20 to 30 minutes of one core; the sweep's three runs at this size
/// take about as long as one of them.
pub const SWEEP_NODES: usize = 1_000;

/// The headline pair (the paper's thresholds with and without diversion), then the sweep.
fn storage_variants() -> Vec<Variant> {
    let on = |t_pri: f64, t_div: f64| Variant {
        label: format!("t_pri={t_pri} t_div={t_div}"),
        past: PastConfig {
            t_pri,
            t_div,
            diversion: true,
            cache: CachePolicy::Off,
            ..PastConfig::default()
        },
    };
    vec![
        on(0.1, 0.05),
        Variant {
            label: "no diversion (t_pri=0.1)".into(),
            past: PastConfig {
                diversion: false,
                cache: CachePolicy::Off,
                ..PastConfig::default()
            },
        },
        on(0.05, 0.05),
        on(0.2, 0.05),
        on(0.1, 0.1),
    ]
}

fn caching_variants() -> Vec<Variant> {
    [
        ("no caching", CachePolicy::Off),
        ("LRU", CachePolicy::Lru),
        ("GreedyDual-Size", CachePolicy::GreedyDualSize),
    ]
    .into_iter()
    .map(|(label, cache)| Variant {
        label: label.into(),
        past: PastConfig {
            cache,
            ..PastConfig::default()
        },
    })
    .collect()
}

/// The ring sizes: N (`--nodes`, else the design's 2,250) and the sweep's (`--sweep-nodes`,
/// else [`SWEEP_NODES`], at most N; 0 for none).
fn ring_sizes(p: &Params) -> (usize, usize) {
    let big = p.nodes.unwrap_or(2_250);
    (big, p.sweep_nodes.unwrap_or(SWEEP_NODES).min(big))
}

/// Runs each variant on a fresh ring; the first `full` at N nodes, the rest at
/// `min(N, --sweep-nodes or SWEEP_NODES)` (none with 0).
fn run_variants(
    ctx: &mut Ctx,
    variants: Vec<Variant>,
    full: usize,
    lookups: usize,
) -> (Vec<Outcome>, Setup) {
    let p: Params = ctx.params.clone();
    let (big, sweep) = ring_sizes(&p);
    let mut last = None;
    let mut outcomes = Vec::new();
    for (at, v) in variants.into_iter().enumerate() {
        let n = if at < full { big } else { sweep };
        if n == 0 {
            continue;
        }
        let label = format!("{}, N={n}", v.label);
        let mut setup = Setup::paper(n, v.past.clone());
        setup.leaf_set = p.leaf_set.unwrap_or(setup.leaf_set);
        setup.lookups_per_insert = lookups;
        let rss0 = rss_bytes();
        let bar = p.bar(n as u64, &format!("joining ({label})"));
        let mut sim = build(p.seed, p.topology, &setup, &|n| bar.inc(n));
        bar.finish_and_clear();
        let bar = p.bar(
            expected_objects(n, setup.k, &setup.workload) as u64,
            &format!("inserting ({label})"),
        );
        let o = fill(&mut sim, &setup, &label, &|n| bar.inc(n));
        bar.finish_and_clear();
        ctx.account(&sim, rss0);
        outcomes.push(o);
        last = Some(setup);
    }
    (outcomes, last.expect("at least one variant"))
}

fn curve(outcomes: &[Outcome], y: impl Fn(&Point) -> f64) -> Vec<Series> {
    outcomes
        .iter()
        .map(|o| Series {
            label: o.label.clone(),
            points: o.points.iter().map(|p| (p.utilisation, y(p))).collect(),
        })
        .collect()
}

fn plot(name: &str, title: &str, y: &str, series: Vec<Series>) -> Plot {
    Plot {
        name: name.into(),
        title: title.into(),
        x_label: "utilisation (replica bytes / capacity)".into(),
        y_label: y.into(),
        kind: PlotKind::Line,
        log_x: false,
        series,
    }
}

fn points_table(name: &str, outcomes: &[Outcome], lookups: bool) -> Table {
    let mut cols = vec![
        "config",
        "finished",
        "utilisation",
        "failure_rate",
        "cumulative_failure_rate",
    ];
    if lookups {
        cols.extend(["lookups", "hit_rate", "mean_hops"]);
    }
    let mut t = Table::new(name, &cols);
    for o in outcomes {
        for p in &o.points {
            let mut row = vec![
                json!(o.label),
                json!(p.finished),
                json!(p.utilisation),
                json!(p.failure_rate),
                json!(p.cumulative_failure_rate),
            ];
            if lookups {
                row.extend([json!(p.lookups), json!(p.hit_rate), json!(p.mean_hops)]);
            }
            t.row(row);
        }
    }
    t
}

fn parameters(p: &Params, setup: &Setup) -> serde_json::Value {
    json!({
        "common": p,
        "nodes": ring_sizes(p).0,
        "sweep_nodes": ring_sizes(p).1,
        "k": setup.k,
        "leaf_set": setup.leaf_set,
        "workload": setup.workload,
        "window": setup.window,
        "interval": setup.interval,
        "stop_failure_rate": setup.stop_failure_rate,
        "stop_utilisation": setup.stop_utilisation,
        "max_attempts": setup.max_attempts,
        "lookups_per_insert": setup.lookups_per_insert,
        "zipf_alpha": setup.zipf_alpha,
    })
}

pub(crate) fn past_storage(ctx: &mut Ctx) -> Report {
    let (outcomes, setup) = run_variants(ctx, storage_variants(), 2, 0);
    let mut t = Table::new(
        "summary",
        &[
            "config",
            "nodes",
            "attempts",
            "succeeded",
            "failed",
            "failure_rate",
            "file_diverted",
            "replicas_diverted",
            "utilisation",
            "useful_utilisation",
            "failed_size_mean",
        ],
    );
    for o in &outcomes {
        let done = (o.succeeded + o.failed + o.other_errors).max(1) as f64;
        t.row(vec![
            json!(o.label),
            json!(o.nodes),
            json!(o.attempts),
            json!(o.succeeded),
            json!(o.failed + o.other_errors),
            json!(r6((o.failed + o.other_errors) as f64 / done)),
            json!(o.file_diverted),
            json!(o.replicas_diverted),
            json!(o.utilisation),
            json!(o.useful_utilisation),
            json!(o.failed_size_mean),
        ]);
    }
    let p = &ctx.params;
    Report {
        experiment: "past-storage".into(),
        seed: p.seed,
        parameters: parameters(p, &setup),
        figures: json!({ "runs": outcomes }),
        tables: vec![t, points_table("curve", &outcomes, false)],
        plots: vec![
            plot(
                "failure-rate",
                "Insert failures as the ring fills",
                "failed inserts / inserts (per interval)",
                curve(&outcomes, |p| p.failure_rate),
            ),
            plot(
                "cumulative-failure",
                "Cumulative insert failures",
                "failed inserts / inserts (since the start)",
                curve(&outcomes, |p| p.cumulative_failure_rate),
            ),
        ],
    }
}

pub(crate) fn past_caching(ctx: &mut Ctx) -> Report {
    let (outcomes, setup) = run_variants(ctx, caching_variants(), usize::MAX, 1);
    let mut t = Table::new(
        "summary",
        &[
            "cache",
            "attempts",
            "succeeded",
            "utilisation",
            "lookups",
            "lookups_failed",
            "hit_rate",
            "mean_hops",
        ],
    );
    for o in &outcomes {
        t.row(vec![
            json!(o.label),
            json!(o.attempts),
            json!(o.succeeded),
            json!(o.utilisation),
            json!(o.lookups),
            json!(o.lookups_failed),
            json!(r6(o.hits as f64 / o.lookups.max(1) as f64)),
            json!(o.mean_hops),
        ]);
    }
    let p = &ctx.params;
    Report {
        experiment: "past-caching".into(),
        seed: p.seed,
        parameters: parameters(p, &setup),
        figures: json!({ "runs": outcomes }),
        tables: vec![t, points_table("curve", &outcomes, true)],
        plots: vec![
            plot(
                "hit-rate",
                "Lookups served from a cache",
                "hit rate (per interval)",
                curve(&outcomes, |p| p.hit_rate),
            ),
            plot(
                "hops",
                "Lookup hops as the ring fills",
                "mean overlay hops (per interval)",
                curve(&outcomes, |p| p.mean_hops),
            ),
        ],
    }
}
