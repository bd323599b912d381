//! The experiments of the design's `experiments.md`, each producing a [`Report`].
//!
//! Static experiments (`hops`, `hop-distribution`, `stretch`, `rare-case`, `join-cost`,
//! `table-quality`, `replica-locality`) build their networks with keep-alives off
//! (`Config::keepalives = false`): the Pastry papers' static measurements have no maintenance
//! traffic, and without periodic timers the event queue drains after every join, so each node
//! joins strictly after the previous one finished. `failure` and `churn` turn maintenance on.

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressStyle};
use ringvault_overlay::{Config, JoinVariant};
use serde::Serialize;

use crate::perf::{rss_bytes, PerfReport};
pub(crate) use crate::report::r6;
use crate::report::Report;
use crate::{Sim, SimConfig, TopologyKind};

mod audits;
mod byzantine_storage;
pub(crate) mod churn;
mod failure;
mod locality;
pub mod past;
mod records;
mod scribe;
mod secure;
mod secure_join;
mod server_mode;
mod static_net;

pub use static_net::StaticPoint;

/// Every experiment name, in the order of `experiments.md`.
pub const EXPERIMENTS: [&str; 18] = [
    "hops",
    "hop-distribution",
    "stretch",
    "table-quality",
    "replica-locality",
    "failure",
    "rare-case",
    "join-cost",
    "churn",
    "past-storage",
    "past-caching",
    "scribe",
    "secure-routing",
    "byzantine-storage",
    "secure-join",
    "records",
    "audits",
    "server-mode",
];

/// Parameters common to all experiments; `None` means the experiment's own default from
/// `experiments.md`.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    /// The run seed.
    pub seed: u64,
    /// Network size (replaces the experiment's list of sizes).
    pub nodes: Option<usize>,
    /// Latency model.
    pub topology: TopologyKind,
    /// Bits per digit.
    pub b: Option<u8>,
    /// Leaf set size L.
    pub leaf_set: Option<usize>,
    /// Neighbourhood set size M.
    pub neighbourhood: Option<usize>,
    /// Routes or lookups per measurement.
    pub routes: Option<usize>,
    /// Simulated hours of the experiments that run for a time (`audits`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours: Option<f64>,
    /// The secure routing failure test's threshold (`secure-routing`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// Secure routes accept every first answer (`secure-routing` without its defence).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_failure_test: bool,
    /// Ring size of `past-storage`'s t_pri / t_div sweep (0: no sweep); default
    /// `SWEEP_NODES`, or N if smaller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_nodes: Option<usize>,
    /// Show a progress bar (not part of the reports: output must not depend on the terminal).
    #[serde(skip)]
    pub progress: bool,
}

impl Params {
    /// Defaults: seed 1, Euclidean, the paper's parameters, no progress bar.
    pub fn new(seed: u64) -> Self {
        Params {
            seed,
            nodes: None,
            topology: TopologyKind::Euclidean,
            b: None,
            leaf_set: None,
            neighbourhood: None,
            routes: None,
            hours: None,
            gamma: None,
            no_failure_test: false,
            sweep_nodes: None,
            progress: false,
        }
    }

    /// The overlay configuration, from the experiment's defaults and the overrides.
    pub fn overlay(&self, b: u8, l: usize, m: usize) -> Config {
        let d = Config::default();
        Config {
            b: self.b.unwrap_or(b),
            leaf_set_size: self.leaf_set.unwrap_or(l),
            neighbourhood_size: self.neighbourhood.unwrap_or(m),
            gamma: self.gamma.unwrap_or(d.gamma),
            failure_test: !self.no_failure_test,
            ..d
        }
    }

    pub(crate) fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(len);
        pb.set_style(
            ProgressStyle::with_template("{msg:>28} [{bar:40}] {pos}/{len} ({eta})")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        pb
    }
}

/// Runs the named experiments, sharing network builds between them; returns each report in
/// order and the simulator's own performance.
pub fn run(names: &[String], params: &Params) -> Result<(Vec<Report>, PerfReport), String> {
    for n in names {
        if !EXPERIMENTS.contains(&n.as_str()) {
            return Err(format!(
                "unknown experiment {n:?}; choose from {}",
                EXPERIMENTS.join(", ")
            ));
        }
    }
    let wall = std::time::Instant::now();
    let mut ctx = Ctx {
        params: params.clone(),
        points: BTreeMap::new(),
        perf: PerfReport::default(),
        rss_start: rss_bytes(),
    };
    let mut reports = Vec::new();
    for n in names {
        let r = match n.as_str() {
            "hops" => static_net::hops(&mut ctx),
            "hop-distribution" => static_net::hop_distribution(&mut ctx),
            "stretch" => static_net::stretch(&mut ctx),
            "rare-case" => static_net::rare_case(&mut ctx),
            "join-cost" => static_net::join_cost(&mut ctx),
            "table-quality" => locality::table_quality(&mut ctx),
            "replica-locality" => locality::replica_locality(&mut ctx),
            "failure" => failure::failure(&mut ctx),
            "churn" => churn::churn(&mut ctx),
            "past-storage" => past::past_storage(&mut ctx),
            "past-caching" => past::past_caching(&mut ctx),
            "scribe" => scribe::scribe_experiment(&mut ctx),
            "secure-routing" => secure::secure_routing(&mut ctx),
            "byzantine-storage" => byzantine_storage::byzantine_storage(&mut ctx),
            "secure-join" => secure_join::secure_join(&mut ctx),
            "records" => records::records(&mut ctx),
            "audits" => audits::audits(&mut ctx),
            "server-mode" => server_mode::server_mode(&mut ctx),
            _ => unreachable!("checked above"),
        };
        reports.push(r);
    }
    let mut perf = ctx.perf;
    perf.wall_secs = wall.elapsed().as_secs_f64();
    perf.events_per_sec = perf.events as f64 / perf.wall_secs.max(1e-9);
    perf.peak_rss = rss_bytes().max(perf.peak_rss);
    Ok((reports, perf))
}

/// State shared by the experiments of one invocation.
pub(crate) struct Ctx {
    pub(crate) params: Params,
    /// Static measurements already made, by (N, b, L, M).
    pub(crate) points: BTreeMap<(usize, u8, usize, usize), StaticPoint>,
    pub(crate) perf: PerfReport,
    /// Process RSS before any network was built.
    pub(crate) rss_start: Option<u64>,
}

impl Ctx {
    /// Records a finished network in the performance report. Memory per node is the process's
    /// RSS growth since it started, over the largest network's size: an upper bound (it also
    /// counts the event queue, the reports and memory kept from earlier networks).
    pub(crate) fn account(&mut self, sim: &Sim, _rss_before: Option<u64>) {
        self.perf.events += sim.counters.events;
        let n = sim.nodes.len();
        let rss = rss_bytes();
        if n >= self.perf.max_nodes {
            self.perf.max_nodes = n;
            if let (Some(a), Some(b)) = (self.rss_start, rss) {
                self.perf.bytes_per_node = Some(b.saturating_sub(a) as f64 / n.max(1) as f64);
            }
        }
        self.perf.peak_rss = self.perf.peak_rss.max(rss);
    }
}

/// What building a network cost.
#[derive(Clone, Debug, Default)]
pub(crate) struct BuildCost {
    /// Messages sent while each node joined (all nodes, until the network was quiet again).
    pub(crate) join_messages: Vec<u64>,
    /// Probes made while each node joined.
    pub(crate) join_probes: Vec<u64>,
}

/// Builds a network of `n` nodes joined one at a time through their nearest joined node, with
/// maintenance off, waiting after each join until the network is quiet.
pub(crate) fn build_static(
    params: &Params,
    cfg: Config,
    n: usize,
    label: &str,
) -> (Sim, BuildCost) {
    let cfg = Config {
        keepalives: false,
        ..cfg
    };
    let mut sim = Sim::new(SimConfig {
        topology: params.topology,
        ..SimConfig::new(params.seed, cfg)
    });
    let mut cost = BuildCost::default();
    let bar = params.bar(n as u64, label);
    for _ in 0..n {
        let (m0, p0) = (sim.counters.messages, sim.counters.probes);
        let i = sim.add_node();
        assert!(
            sim.join_and_settle(i),
            "node {i} failed to join, or the network never went quiet after (seed {})",
            params.seed
        );
        cost.join_messages.push(sim.counters.messages - m0);
        cost.join_probes.push(sim.counters.probes - p0);
        bar.inc(1);
    }
    bar.finish_and_clear();
    (sim, cost)
}

/// The join variant's name in reports.
pub(crate) fn variant_name(v: JoinVariant) -> &'static str {
    match v {
        JoinVariant::PathRows => "path-rows",
        JoinVariant::WholeState => "whole-state",
        JoinVariant::Full => "full",
    }
}

/// log base 2^b of n.
pub(crate) fn log_base(n: usize, b: u8) -> f64 {
    (n as f64).ln() / ((1u64 << b) as f64).ln()
}

/// The p-th percentile (0..=100) of `v` (sorted in place), nearest rank.
pub(crate) fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Mean of `v`.
pub(crate) fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().sum::<u64>() as f64 / v.len() as f64
}
