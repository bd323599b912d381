//! `churn`: 1,000 nodes whose sessions last an exponentially distributed time; each node that
//! fails (silently) is replaced by a newcomer joining through its nearest live node; steady
//! lookups throughout. Maintenance is on and every message goes through the wire codec, so
//! bytes are counted exactly.

use std::collections::BTreeSet;

use rand::Rng;
use ringvault_node::{Command, CommandOutput};
use ringvault_types::{Duration, Id, Time};
use serde_json::json;

use super::{build_static, r6, Ctx};
use crate::check::Ring;
use crate::perf::rss_bytes;
use crate::report::{Plot, PlotKind, Report, Series, Table};
use crate::Sim;

/// Median session times, minutes (experiments.md).
const MEDIANS_MIN: [f64; 4] = [1.4, 5.0, 30.0, 60.0];
/// Simulated time before measuring starts.
const WARMUP: Duration = Duration::from_secs(60);
/// Simulated time measured.
const MEASURE: Duration = Duration::from_secs(600);
/// One lookup from a random live node to a random key every this often.
const LOOKUP_EVERY: Duration = Duration::from_millis(100);
/// Message kinds counted as maintenance.
const MAINTENANCE: [&str; 8] = [
    "ping",
    "pong",
    "leafset_request",
    "leafset_reply",
    "slot_request",
    "slot_reply",
    "neighbourhood_request",
    "neighbourhood_reply",
];

#[derive(serde::Serialize, Clone)]
struct Row {
    median_session_min: f64,
    lookups: usize,
    success: f64,
    mean_hops: f64,
    maintenance_msgs_per_node_sec: f64,
    maintenance_bytes_per_node_sec: f64,
    all_msgs_per_node_sec: f64,
    failures: usize,
    joins_started: usize,
}

fn maintenance(sim: &Sim) -> (u64, u64) {
    sim.counters
        .by_kind
        .iter()
        .filter(|(k, _, _)| MAINTENANCE.contains(k))
        .fold((0, 0), |(m, b), (_, n, x)| (m + n, b + x))
}

/// Exponential session with the given median.
pub(crate) fn session(sim: &mut Sim, median: Duration) -> Duration {
    let u: f64 = sim.rng.gen_range(f64::EPSILON..1.0);
    let mean = median.as_secs_f64() / std::f64::consts::LN_2;
    Duration::from_micros((-u.ln() * mean * 1e6) as u64)
}

fn run_one(ctx: &mut Ctx, n: usize, median_min: f64) -> Row {
    let p = ctx.params.clone();
    let cfg = p.overlay(4, 16, 32);
    let rss0 = rss_bytes();
    let (mut sim, _) = build_static(&p, cfg, n, &format!("joining (median {median_min} min)"));
    sim.cfg.wire = true;
    // Maintenance on, for the nodes there and for every newcomer (which takes the simulator's
    // overlay configuration: the build's, with keep-alives off, until this).
    sim.cfg.overlay.keepalives = true;
    sim.cfg.overlay.table_repair = true;
    let now = sim.now;
    for i in sim.alive() {
        sim.with_node(i, |node, _| {
            node.overlay_mut().set_maintenance(now, true, true)
        });
    }
    let median = Duration::from_micros((median_min * 60e6) as u64);
    let mut deaths: BTreeSet<(Time, u32)> = BTreeSet::new();
    for i in sim.alive() {
        let t = sim.now + session(&mut sim, median);
        deaths.insert((t, i));
    }
    let start = sim.now + WARMUP;
    let end = start + MEASURE;
    let mut next_lookup = start;
    let mut pending: Vec<(u32, u64)> = Vec::new();
    let (mut lookups, mut ok, mut hops) = (0usize, 0usize, 0usize);
    let (mut failures, mut joins) = (0usize, 0usize);
    let mut base: Option<(u64, u64, u64)> = None;
    let mut node_secs = 0f64;
    let mut next_check = start + Duration::from_secs(1);
    let bar = p.bar(
        MEASURE.as_micros() / 1_000_000,
        &format!("churn, median {median_min} min"),
    );
    loop {
        let next_death = deaths.first().map_or(Time::NEVER, |d| d.0);
        let t = next_death.min(next_lookup).min(next_check).min(end);
        let before = sim.now;
        sim.run_until(t, |_| false);
        if sim.now >= start {
            let live = sim.nodes.iter().filter(|x| x.alive).count();
            node_secs += live as f64 * (sim.now - before.max(start)).as_secs_f64();
            if base.is_none() {
                let (m, b) = maintenance(&sim);
                base = Some((m, b, sim.counters.messages));
            }
        }
        bar.set_position((sim.now - start).as_micros() / 1_000_000);
        if t >= end {
            break;
        }
        if t == next_death {
            let (_, v) = deaths.pop_first().expect("a death");
            sim.kill(v);
            failures += (sim.now >= start) as usize;
            let i = sim.add_node();
            sim.start_join_nearest(i);
            joins += 1;
            let life = session(&mut sim, median);
            deaths.insert((sim.now + life, i));
        } else if t == next_lookup {
            next_lookup = next_lookup + LOOKUP_EVERY;
            if end.saturating_since(t) < crate::ROUTE_LIMIT {
                // Too late to be answered within the window: not issued.
                continue;
            }
            let src = sim.random_alive();
            let key = Id::from_bytes(sim.rng.gen());
            let id = sim.command(src, Command::RouteProbe { key });
            pending.push((src, id));
            lookups += 1;
        } else {
            next_check = next_check + Duration::from_secs(1);
            let ring = Ring::of(&sim);
            pending.retain(|&(src, id)| match sim.take_result(src, id) {
                None => true,
                Some(Ok(CommandOutput::Route(r))) => {
                    if ring.root(&r.key) == r.root.id {
                        ok += 1;
                        hops += r.hops();
                    }
                    false
                }
                Some(_) => false,
            });
        }
    }
    bar.finish_and_clear();
    // Lookups still unanswered at the end (all issued had ROUTE_LIMIT to answer) failed.
    let (m0, b0, all0) = base.unwrap_or_default();
    let (m1, b1) = maintenance(&sim);
    let ns = node_secs.max(1e-9);
    ctx.account(&sim, rss0);
    Row {
        median_session_min: median_min,
        lookups,
        success: r6(ok as f64 / lookups.max(1) as f64),
        mean_hops: r6(hops as f64 / ok.max(1) as f64),
        maintenance_msgs_per_node_sec: r6((m1 - m0) as f64 / ns),
        maintenance_bytes_per_node_sec: r6((b1 - b0) as f64 / ns),
        all_msgs_per_node_sec: r6((sim.counters.messages - all0) as f64 / ns),
        failures,
        joins_started: joins,
    }
}

pub(crate) fn churn(ctx: &mut Ctx) -> Report {
    let n = ctx.params.nodes.unwrap_or(1_000);
    let rows: Vec<Row> = MEDIANS_MIN.iter().map(|&m| run_one(ctx, n, m)).collect();
    let mut t = Table::new(
        "churn",
        &[
            "median_session_min",
            "lookups",
            "success",
            "mean_hops",
            "maint_msgs_per_node_s",
            "maint_bytes_per_node_s",
            "all_msgs_per_node_s",
            "failures",
        ],
    );
    for r in &rows {
        t.row(vec![
            json!(r.median_session_min),
            json!(r.lookups),
            json!(r.success),
            json!(r.mean_hops),
            json!(r.maintenance_msgs_per_node_sec),
            json!(r.maintenance_bytes_per_node_sec),
            json!(r.all_msgs_per_node_sec),
            json!(r.failures),
        ]);
    }
    let series = |label: &str, f: &dyn Fn(&Row) -> f64| Series {
        label: label.into(),
        points: rows.iter().map(|r| (r.median_session_min, f(r))).collect(),
    };
    let plot = |name: &str, title: &str, y: &str, s: Vec<Series>| Plot {
        name: name.into(),
        title: title.into(),
        x_label: "median session time (minutes)".into(),
        y_label: y.into(),
        kind: PlotKind::Line,
        log_x: true,
        series: s,
    };
    let p = &ctx.params;
    Report {
        experiment: "churn".into(),
        seed: p.seed,
        parameters: json!({ "common": p, "n": n, "medians_min": MEDIANS_MIN,
            "warmup_secs": WARMUP.as_secs_f64(), "measured_secs": MEASURE.as_secs_f64(),
            "lookups_per_sec": 1.0 / LOOKUP_EVERY.as_secs_f64(),
            "maintenance_kinds": MAINTENANCE }),
        figures: json!({ "rows": rows }),
        tables: vec![t],
        plots: vec![
            plot(
                "success",
                "Lookup success under churn",
                "fraction reaching the live root",
                vec![series("success", &|r| r.success)],
            ),
            plot(
                "maintenance",
                "Maintenance traffic per node",
                "messages per node per second",
                vec![series("maintenance messages", &|r| {
                    r.maintenance_msgs_per_node_sec
                })],
            ),
        ],
    }
}
