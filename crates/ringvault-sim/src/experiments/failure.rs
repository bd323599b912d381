//! `failure`: 500 of 5,000 nodes fail silently; routes before the failures, after them with
//! repair off, and after them with repair on.

use rand::seq::SliceRandom;
use rand::Rng;
use ringvault_types::{Duration, Id};
use serde_json::json;

use super::{build_static, r6, Ctx};
use crate::check::{reached_true_root, Ring};
use crate::perf::rss_bytes;
use crate::report::{Plot, PlotKind, Report, Series, Table};
use crate::Sim;

const N: usize = 5_000;
const FAILED: usize = 500;
const ROUTES: usize = 100_000;
/// Simulated time given to repair (failure timeout 6 s plus several keep-alive rounds).
const REPAIR_WINDOW: Duration = Duration::from_secs(60);

/// One phase's routing figures.
#[derive(serde::Serialize, Clone)]
struct Phase {
    name: &'static str,
    routes: usize,
    mean_hops: f64,
    failed: usize,
    wrong_root: usize,
    unanswered: usize,
    hop_timeouts: u64,
}

fn sum_stat(sim: &Sim, f: impl Fn(&ringvault_overlay::Stats) -> u64) -> u64 {
    sim.nodes
        .iter()
        .filter(|n| n.alive)
        .map(|n| f(n.node.overlay().stats()))
        .sum()
}

fn set_maintenance(sim: &mut Sim, on: bool) {
    let now = sim.now;
    for i in sim.alive() {
        sim.with_node(i, |node, _| node.overlay_mut().set_maintenance(now, on, on));
    }
}

/// From two random live nodes, route to a random key; `routes` routes in all.
fn measure(sim: &mut Sim, ctx: &Ctx, name: &'static str, routes: usize) -> Phase {
    let alive = sim.alive();
    let mut list: Vec<(u32, Id)> = Vec::with_capacity(routes);
    while list.len() < routes {
        let key = Id::from_bytes(sim.rng.gen());
        for _ in 0..2 {
            list.push((alive[sim.rng.gen_range(0..alive.len())], key));
        }
    }
    list.truncate(routes);
    let t0 = sum_stat(sim, |s| s.hop_timeouts);
    let bar = ctx.params.bar(routes as u64, name);
    let reports = sim.route_many(&list, 1_000, |k| bar.inc(k as u64));
    bar.finish_and_clear();
    let ring = Ring::of(sim);
    let (mut hops, mut ok, mut wrong, mut unanswered) = (0, 0usize, 0usize, 0usize);
    for r in &reports {
        match r {
            None => unanswered += 1,
            Some(r) if reached_true_root(&ring, r) => {
                ok += 1;
                hops += r.hops();
            }
            Some(_) => wrong += 1,
        }
    }
    Phase {
        name,
        routes,
        mean_hops: r6(hops as f64 / ok.max(1) as f64),
        failed: wrong + unanswered,
        wrong_root: wrong,
        unanswered,
        hop_timeouts: sum_stat(sim, |s| s.hop_timeouts) - t0,
    }
}

pub(crate) fn failure(ctx: &mut Ctx) -> Report {
    let p = ctx.params.clone();
    let n = p.nodes.unwrap_or(N);
    let failed = (n * FAILED / N).max(1);
    let routes = p.routes.unwrap_or(ROUTES);
    let cfg = p.overlay(4, 16, 32);
    let rss0 = rss_bytes();
    let (mut sim, _) = build_static(&p, cfg.clone(), n, "joining");
    let before = measure(&mut sim, ctx, "before failures", routes);

    // Baseline: maintenance traffic of a healthy ring over one repair window.
    set_maintenance(&mut sim, true);
    let r0 = sum_stat(&sim, |s| s.repair_messages);
    let m0 = sim.counters.messages;
    sim.run_for(REPAIR_WINDOW);
    let base_repair = sum_stat(&sim, |s| s.repair_messages) - r0;
    let base_messages = sim.counters.messages - m0;
    set_maintenance(&mut sim, false);
    sim.run_for(Duration::from_secs(5));

    let mut victims = sim.alive();
    victims.shuffle(&mut sim.rng);
    victims.truncate(failed);
    for &v in &victims {
        sim.kill(v);
    }
    let no_repair = measure(&mut sim, ctx, "after failures, no repair", routes);

    set_maintenance(&mut sim, true);
    let r1 = sum_stat(&sim, |s| s.repair_messages);
    let m1 = sim.counters.messages;
    sim.run_for(REPAIR_WINDOW);
    let repair = sum_stat(&sim, |s| s.repair_messages) - r1;
    let messages = sim.counters.messages - m1;
    let wrong_leaf_sets = crate::wrong_leaf_sets(&sim).len();
    let with_repair = measure(&mut sim, ctx, "after failures, repair", routes);
    ctx.account(&sim, rss0);

    // The healthy baseline scaled to the nodes still alive: periodic leaf set exchanges and
    // keep-alives are per live node.
    let live = (n - failed) as f64 / n as f64;
    let per_failed = r6((repair as f64 - base_repair as f64 * live) / failed as f64);
    let all_per_failed = r6((messages as f64 - base_messages as f64 * live) / failed as f64);
    let phases = [before, no_repair, with_repair];
    let mut t = Table::new(
        "phases",
        &[
            "phase",
            "routes",
            "mean_hops",
            "failed",
            "wrong_root",
            "unanswered",
            "hop_timeouts",
        ],
    );
    for ph in &phases {
        t.row(vec![
            json!(ph.name),
            json!(ph.routes),
            json!(ph.mean_hops),
            json!(ph.failed),
            json!(ph.wrong_root),
            json!(ph.unanswered),
            json!(ph.hop_timeouts),
        ]);
    }
    let mut c = Table::new("repair-cost", &["figure", "value"]);
    c.row(vec![json!("failed nodes"), json!(failed)]);
    c.row(vec![json!("repair requests in window"), json!(repair)]);
    c.row(vec![
        json!("repair requests, healthy baseline"),
        json!(base_repair),
    ]);
    c.row(vec![
        json!("repair requests per failed node"),
        json!(per_failed),
    ]);
    c.row(vec![
        json!("all messages per failed node (over baseline)"),
        json!(all_per_failed),
    ]);
    c.row(vec![
        json!("wrong leaf sets after repair"),
        json!(wrong_leaf_sets),
    ]);
    Report {
        experiment: "failure".into(),
        seed: p.seed,
        parameters: json!({ "common": p, "n": n, "failed": failed, "routes_per_phase": routes,
            "repair_window_secs": REPAIR_WINDOW.as_secs_f64(),
            "routes": "pairs of routes from two random live nodes to one random key" }),
        figures: json!({ "phases": phases, "repair_requests_per_failed_node": per_failed,
            "messages_per_failed_node_over_baseline": all_per_failed,
            "baseline_repair_requests": base_repair, "repair_requests": repair,
            "wrong_leaf_sets_after_repair": wrong_leaf_sets }),
        tables: vec![t, c],
        plots: vec![Plot {
            name: "hops".into(),
            title: format!("Mean hops: {failed} of {n} nodes fail"),
            x_label: "phase (0 before, 1 no repair, 2 repair)".into(),
            y_label: "mean hops".into(),
            kind: PlotKind::Bar,
            log_x: false,
            series: vec![Series {
                label: "mean hops".into(),
                points: phases
                    .iter()
                    .enumerate()
                    .map(|(i, ph)| (i as f64, ph.mean_hops))
                    .collect(),
            }],
        }],
    }
}
