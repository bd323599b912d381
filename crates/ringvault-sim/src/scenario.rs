//! Fixed-seed scenarios: a small network built by real joins, routes checked against the true
//! root, a fraction of the nodes failing silently, repair with maintenance on, and routes again.
//! The report is checked against the scenario's bounds (in CI, by the scenario tests), so the
//! simulation's figures are a regression gate.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::Rng;
use ringvault_overlay::{Config, TABLE_MAINTENANCE_INTERVAL};
use ringvault_types::{Duration, Id};
use serde::{Deserialize, Serialize};

use crate::check::{reached_true_root, table_quality, Ring};
use crate::{wrong_leaf_sets, Sim, SimConfig, TopologyKind};

/// A scenario file (JSON).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name, for messages.
    pub name: String,
    /// Run seed.
    pub seed: u64,
    /// Nodes joined one at a time through their nearest joined node.
    pub nodes: usize,
    /// Routes from random nodes, before and after the failures: half to random keys, half to
    /// random nodes' ids.
    pub routes: usize,
    /// Latency model.
    #[serde(default = "euclidean")]
    pub topology: TopologyKind,
    /// Pass every message through the wire codec.
    #[serde(default)]
    pub wire: bool,
    /// Fraction of the nodes that fail silently at once.
    pub fail_fraction: f64,
    /// Simulated seconds repair may take before the leaf sets must be exact again.
    pub repair_limit_secs: u64,
    /// Minutes of routing table maintenance alone (no failures yet) before table quality is
    /// judged; 0: not judged.
    #[serde(default)]
    pub maintenance_minutes: u64,
    /// Churn after the failures (`None`: none).
    #[serde(default)]
    pub churn: Option<ScenarioChurn>,
    /// What the report must satisfy.
    pub bounds: Bounds,
    /// Why the scenario and its bounds are what they are.
    #[serde(default)]
    pub note: String,
}

fn euclidean() -> TopologyKind {
    TopologyKind::Euclidean
}

/// A churn phase after the failures, as the `churn` experiment runs it (smaller).
#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioChurn {
    /// Median session, seconds (exponentially distributed).
    pub median_session_secs: u64,
    /// Churn before lookups are measured, seconds.
    pub warmup_secs: u64,
    /// Seconds measured.
    pub measure_secs: u64,
    /// One lookup every this many milliseconds.
    pub lookup_every_ms: u64,
}

/// Bounds a scenario's report must satisfy.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// Mean hops must stay below this multiple of log16 N (1.0: below log16 N).
    pub max_mean_hops_over_log16_n: f64,
    /// Routes between node pairs that took at least one rare-case hop, as a fraction of them,
    /// before the failures (protocols.md: under 2% with L = 16 in large rings; small rings have sparse
    /// rows and more).
    pub max_rare_route_fraction: f64,
    /// Mean stretch (sum of hop delays over the direct delay) of the node-pair routes before
    /// the failures must stay below this.
    #[serde(default)]
    pub max_stretch: Option<f64>,
    /// After the maintenance minutes, entries that are not the closest node for their slot,
    /// per node, in the worst row, must stay below this.
    #[serde(default)]
    pub max_not_closest_after_maintenance: Option<f64>,
    /// Lazy routing table repair: slot requests per failed node during repair.
    #[serde(default)]
    pub max_slot_requests_per_failed_node: Option<f64>,
    /// Lookups during churn that reached the live root, as a fraction: at least this.
    #[serde(default)]
    pub min_churn_success: Option<f64>,
}

/// What a scenario measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub name: String,
    /// Run seed.
    pub seed: u64,
    /// Nodes joined.
    pub nodes: usize,
    /// log16 N.
    pub log16_n: f64,
    /// Leaf sets not exact after the joins.
    pub wrong_leaf_sets_after_joins: usize,
    /// Routes before the failures.
    pub routes_before: usize,
    /// Of those, routes that reached the true root.
    pub correct_before: usize,
    /// Mean hops of the node-pair routes before the failures.
    pub mean_hops_before: f64,
    /// Node-pair routes with a rare-case hop, over all node-pair routes, before the failures.
    pub rare_route_fraction: f64,
    /// Mean stretch of the node-pair routes before the failures.
    pub stretch_before: f64,
    /// Entries not the closest for their slot per node, worst row, right after the joins.
    pub not_closest_after_joins: f64,
    /// The same after the maintenance minutes (`None`: not judged).
    pub not_closest_after_maintenance: Option<f64>,
    /// Slot requests of lazy table repair per failed node.
    pub slot_requests_per_failed_node: f64,
    /// Nodes failed.
    pub failed: usize,
    /// Simulated seconds until every leaf set was exact again (`None`: not within the limit).
    pub repaired_after_secs: Option<f64>,
    /// Leaf sets not exact when repair stopped.
    pub wrong_leaf_sets_after_repair: usize,
    /// Routes after repair.
    pub routes_after: usize,
    /// Of those, routes that reached the true live root through live nodes only.
    pub correct_after: usize,
    /// Mean hops after repair.
    pub mean_hops_after: f64,
    /// Messages sent up to the end of the routes after repair (before any churn).
    pub messages: u64,
    /// Live nodes falsely declared failed.
    pub false_failures: u64,
    /// Lookups during churn and the fraction that reached the live root (`None`: no churn).
    pub churn: Option<(usize, f64)>,
}

impl Scenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading scenario {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("scenario {}: {e}", path.display()))
    }

    /// Runs the scenario.
    pub fn run(&self) -> ScenarioReport {
        let cfg = Config {
            keepalives: false,
            ..Config::default()
        };
        let mut sim = Sim::new(SimConfig {
            topology: self.topology,
            wire: self.wire,
            ..SimConfig::new(self.seed, cfg)
        });
        for _ in 0..self.nodes {
            let i = sim.add_node();
            assert!(sim.join_nearest(i), "{}: node {i} did not join", self.name);
            sim.drain(sim.now + Duration::from_secs(600));
        }
        let wrong_after_joins = wrong_leaf_sets(&sim).len();
        let before = self.routes(&mut sim);
        let b = sim.cfg.overlay.b;
        let worst = |q: crate::check::Quality| q.worse.iter().copied().fold(0.0, f64::max);
        let not_closest_after_joins = worst(table_quality(&sim, &Ring::of(&sim), b));
        let not_closest_after_maintenance = (self.maintenance_minutes > 0).then(|| {
            sim.set_table_maintenance(Some(TABLE_MAINTENANCE_INTERVAL));
            sim.run_for(Duration::from_secs(60 * self.maintenance_minutes));
            worst(table_quality(&sim, &Ring::of(&sim), b))
        });

        let now = sim.now;
        for i in sim.alive() {
            sim.with_node(i, |n, _| n.overlay_mut().set_maintenance(now, true, true));
        }
        let mut victims = sim.alive();
        victims.shuffle(&mut sim.rng);
        let failed = (self.nodes as f64 * self.fail_fraction).round() as usize;
        for &v in &victims[..failed] {
            sim.kill(v);
        }
        let slot_requests = |s: &Sim| s.counters.sent(&["slot_request"]).0;
        let slot_requests_before = slot_requests(&sim);
        let t0 = sim.now;
        let limit = t0 + Duration::from_secs(self.repair_limit_secs);
        let repaired = sim.run_until_polling(limit, Duration::from_millis(500), |s| {
            wrong_leaf_sets(s).is_empty()
        });
        let repaired_after = repaired.then(|| (sim.now - t0).as_secs_f64());
        let wrong_after_repair = wrong_leaf_sets(&sim).len();
        let slot_requests_in_repair = slot_requests(&sim) - slot_requests_before;
        let after = self.routes(&mut sim);
        let (messages, false_failures) = (sim.counters.messages, sim.counters.false_failures);
        let churn = self.churn.map(|c| {
            let plan = crate::experiments::churn::ChurnPlan {
                median: Duration::from_secs(c.median_session_secs),
                warmup: Duration::from_secs(c.warmup_secs),
                measure: Duration::from_secs(c.measure_secs),
                lookup_every: Duration::from_millis(c.lookup_every_ms),
            };
            let hidden = indicatif::ProgressBar::hidden();
            let row = crate::experiments::churn::churn_phase(&mut sim, &plan, &hidden);
            (row.lookups, row.success)
        });
        ScenarioReport {
            name: self.name.clone(),
            seed: self.seed,
            nodes: self.nodes,
            log16_n: (self.nodes as f64).ln() / 16f64.ln(),
            wrong_leaf_sets_after_joins: wrong_after_joins,
            routes_before: before.routes,
            correct_before: before.correct,
            mean_hops_before: before.mean_hops,
            rare_route_fraction: before.rare_fraction,
            stretch_before: before.stretch,
            not_closest_after_joins,
            not_closest_after_maintenance,
            slot_requests_per_failed_node: slot_requests_in_repair as f64 / failed.max(1) as f64,
            failed,
            repaired_after_secs: repaired_after,
            wrong_leaf_sets_after_repair: wrong_after_repair,
            routes_after: after.routes,
            correct_after: after.correct,
            mean_hops_after: after.mean_hops,
            messages,
            false_failures,
            churn,
        }
    }

    /// Routes from random live nodes: every other route to a random key, the rest to a random
    /// live node's id (routes "between node pairs", as experiments.md measures hops).
    fn routes(&self, sim: &mut Sim) -> Routes {
        let ring = Ring::of(sim);
        let alive = sim.alive();
        let list: Vec<(u32, Id)> = (0..self.routes)
            .map(|k| {
                let src = alive[sim.rng.gen_range(0..alive.len())];
                let key = if k % 2 == 0 {
                    Id::from_bytes(sim.rng.gen())
                } else {
                    let dst = alive[sim.rng.gen_range(0..alive.len())];
                    sim.id(dst)
                };
                (src, key)
            })
            .collect();
        let reports = sim.route_many(&list, 500, |_| {});
        let (mut correct, mut pairs, mut hops, mut rare) = (0, 0, 0, 0);
        let (mut stretch_sum, mut stretch_n) = (0.0, 0usize);
        for (k, r) in reports.iter().enumerate() {
            let Some(r) = r else { continue };
            let live_path = r
                .path
                .iter()
                .all(|c| sim.index_of(c).is_some_and(|i| sim.nodes[i as usize].alive));
            correct += (reached_true_root(&ring, r) && live_path) as usize;
            if k % 2 == 1 {
                pairs += 1;
                hops += r.hops();
                let idx: Vec<u32> = r.path.iter().filter_map(|c| sim.index_of(c)).collect();
                let direct = sim.distance(list[k].0, ring.root_node(&r.key));
                if direct > 0.0 {
                    let travelled: f64 = idx.windows(2).map(|w| sim.distance(w[0], w[1])).sum();
                    stretch_sum += travelled / direct;
                    stretch_n += 1;
                }
                let used_rare = r.path[..r.path.len() - 1].iter().any(|c| {
                    sim.index_of(c).is_some_and(|i| {
                        let nh = sim.nodes[i as usize].node.overlay().next_hop(&r.key, None);
                        matches!(nh, ringvault_overlay::NextHop::Rare(_))
                    })
                });
                rare += used_rare as usize;
            }
        }
        Routes {
            routes: self.routes,
            correct,
            mean_hops: hops as f64 / pairs.max(1) as f64,
            rare_fraction: rare as f64 / pairs.max(1) as f64,
            stretch: stretch_sum / stretch_n.max(1) as f64,
        }
    }
}

/// What one batch of scenario routes measured.
struct Routes {
    routes: usize,
    /// Routes that reached the true root through live nodes.
    correct: usize,
    /// Mean hops of the node-pair routes.
    mean_hops: f64,
    /// Node-pair routes with a rare-case hop, as a fraction of them.
    rare_fraction: f64,
    /// Mean stretch of the node-pair routes.
    stretch: f64,
}

impl ScenarioReport {
    /// Every way the report breaks the scenario's bounds or the invariants (empty: all held).
    pub fn violations(&self, bounds: &Bounds) -> Vec<String> {
        let mut v = Vec::new();
        let max_hops = bounds.max_mean_hops_over_log16_n * self.log16_n;
        if self.mean_hops_before >= max_hops {
            v.push(format!(
                "mean hops {:.3} not below {max_hops:.3} before the failures",
                self.mean_hops_before
            ));
        }
        if self.mean_hops_after >= max_hops {
            v.push(format!(
                "mean hops {:.3} not below {max_hops:.3} after repair",
                self.mean_hops_after
            ));
        }
        if self.rare_route_fraction > bounds.max_rare_route_fraction {
            v.push(format!(
                "rare case on {:.4} of routes, above {}",
                self.rare_route_fraction, bounds.max_rare_route_fraction
            ));
        }
        if let Some(max) = bounds.max_stretch {
            if self.stretch_before >= max {
                v.push(format!(
                    "stretch {:.3} not below {max} before the failures",
                    self.stretch_before
                ));
            }
        }
        if let (Some(max), Some(got)) = (
            bounds.max_not_closest_after_maintenance,
            self.not_closest_after_maintenance,
        ) {
            if got >= max {
                v.push(format!(
                    "{got:.3} entries per node not the closest (worst row) after maintenance, not below {max}"
                ));
            }
        }
        if let Some(max) = bounds.max_slot_requests_per_failed_node {
            if self.slot_requests_per_failed_node > max {
                v.push(format!(
                    "{:.1} slot requests per failed node, above {max}",
                    self.slot_requests_per_failed_node
                ));
            }
        }
        if let (Some(min), Some((lookups, got))) = (bounds.min_churn_success, self.churn) {
            if got < min {
                v.push(format!(
                    "{got:.4} of {lookups} lookups during churn reached the live root, below {min}"
                ));
            }
        }
        if self.wrong_leaf_sets_after_joins > 0 {
            v.push(format!(
                "{} leaf sets wrong after the joins",
                self.wrong_leaf_sets_after_joins
            ));
        }
        if self.correct_before < self.routes_before {
            v.push(format!(
                "{} of {} routes missed the true root before the failures",
                self.routes_before - self.correct_before,
                self.routes_before
            ));
        }
        if self.repaired_after_secs.is_none() {
            v.push(format!(
                "{} leaf sets still wrong when the repair time ran out",
                self.wrong_leaf_sets_after_repair
            ));
        }
        if self.correct_after < self.routes_after {
            v.push(format!(
                "{} of {} routes missed the true live root after repair",
                self.routes_after - self.correct_after,
                self.routes_after
            ));
        }
        v
    }
}
