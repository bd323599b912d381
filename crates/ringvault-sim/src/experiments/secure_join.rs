//! `secure-join`: what a joining node's tables hold right after it joined a secure ring in which
//! a fraction f of the nodes collude (`ringvault_testkit::byzantine`: a colluder that a join
//! reaches answers as its root, handing over a leaf set and table rows of colluders, and answers
//! every request for state with colluders), with the secure join's check (probes for the
//! joiner's own id along independent paths, every answer merged) and without it (the negative
//! control, `Config::secure_join` off).
//!
//! Each point is a fresh network built from global knowledge as for `secure-routing`; then
//! joiners join one at a time, each through a random correct node.

use rand::Rng;
use ringvault_node::Command;
use ringvault_overlay::Config;
use ringvault_testkit::byzantine::Attack;
use ringvault_types::{Duration, Id};
use serde::Serialize;
use serde_json::json;

use super::secure::{build_global, prefix_range, turn_byzantine};
use super::{r6, Ctx};
use crate::check::Ring;
use crate::perf::rss_bytes;
use crate::report::{Report, Table};
use crate::Sim;

/// Default network size.
const N: usize = 10_000;
/// Default joiners per point.
const JOINERS: usize = 500;
/// Fractions of Byzantine nodes.
const FRACTIONS: [f64; 2] = [0.0, 0.25];
/// How long one join may take in simulated time.
const JOIN_LIMIT: Duration = Duration::from_secs(120);
/// Constrained-table rows judged (deeper slots are mostly empty at these sizes).
const ROWS: usize = 3;

/// One point's figures.
#[derive(Clone, Debug, Serialize)]
struct Point {
    f: f64,
    secure_join: bool,
    joiners: usize,
    /// Joins that completed.
    joined: f64,
    /// Of the correct nodes in a joiner's true leaf set, the share its leaf set holds (mean).
    leaf_set_correct_members: f64,
    /// Joiners whose leaf set holds every correct member of the true one.
    leaf_set_complete: f64,
    /// Share of a joiner's leaf set that is Byzantine (mean), and the same for the true one.
    leaf_set_byzantine: f64,
    true_leaf_set_byzantine: f64,
    /// Constrained slots of the first rows holding the true closest node to their point.
    constrained_exact: f64,
    /// Leaf set members the check added per join.
    corrections_per_join: f64,
    /// Messages per join (the whole ring, until quiet).
    messages_per_join: f64,
}

fn measure(ctx: &mut Ctx, f: f64, secure_join: bool) -> Point {
    let n = ctx.params.nodes.unwrap_or(N);
    let cfg = Config {
        secure_join,
        ..ctx.params.overlay(4, 16, 32)
    };
    let rss0 = rss_bytes();
    let mut sim = build_global(ctx, cfg, n, |_, _| {});
    let (_, correct) = turn_byzantine(&mut sim, f, Attack::FakeRoot);
    let joiners = ctx.params.routes.unwrap_or(JOINERS);
    let half = sim.cfg.overlay.leaf_set_size / 2;
    let b = sim.cfg.overlay.b;
    let bar = ctx.params.bar(
        joiners as u64,
        &format!(
            "joins f={f} check {}",
            if secure_join { "on" } else { "off" }
        ),
    );
    let (mut done, mut complete) = (0usize, 0usize);
    let (mut members, mut byz_share, mut true_byz, mut exact) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (m0, c0) = (sim.counters.messages, corrections(&sim));
    for _ in 0..joiners {
        let i = sim.add_node();
        let boot = correct[sim.rng.gen_range(0..correct.len())];
        let bootstrap = sim.contact(boot);
        sim.command(i, Command::Join { bootstrap });
        let limit = sim.now + JOIN_LIMIT;
        sim.drain(limit);
        bar.inc(1);
        if !sim.nodes[i as usize].joined {
            continue;
        }
        done += 1;
        let ring = Ring::of(&sim);
        let me = sim.id(i);
        let ids = ring.ids();
        let at = ids.partition_point(|x| *x < me);
        let len = ids.len();
        // The true leaf set: the L/2 nodes on each side (the joiner sits at `at`).
        let truth: Vec<Id> = (1..=half.min(len - 1))
            .flat_map(|k| [ids[(at + k) % len], ids[(at + len - k) % len]])
            .collect();
        let is_byz = |sim: &Sim, id: &Id| ring.node_of(id).is_some_and(|j| sim.is_byzantine(j));
        let overlay = sim.nodes[i as usize].node.overlay();
        let held: Vec<Id> = overlay.leaf_set().iter().map(|p| p.id()).collect();
        let correct_truth: Vec<&Id> = truth.iter().filter(|id| !is_byz(&sim, id)).collect();
        let present = correct_truth.iter().filter(|id| held.contains(id)).count();
        members.push(present as f64 / correct_truth.len().max(1) as f64);
        complete += usize::from(present == correct_truth.len());
        byz_share.push(
            held.iter().filter(|id| is_byz(&sim, id)).count() as f64 / held.len().max(1) as f64,
        );
        true_byz.push(
            truth.iter().filter(|id| is_byz(&sim, id)).count() as f64 / truth.len().max(1) as f64,
        );
        if let Some(t) = overlay.constrained_table() {
            let (mut right, mut slots) = (0usize, 0usize);
            for row in 0..ROWS.min(t.num_rows()) {
                for col in 0..(1u8 << b) {
                    if col == me.digit(row, b) {
                        continue;
                    }
                    let (lo, hi) = prefix_range(&me, row, col, b);
                    let a = ids.partition_point(|x| *x < lo);
                    let z = hi.map_or(len, |hi| ids.partition_point(|x| *x < hi));
                    if a == z {
                        continue;
                    }
                    let point = t.slot_point(row, col as usize);
                    let best = ids[a..z]
                        .iter()
                        .min_by(|x, y| point.cmp_closeness(x, y))
                        .copied();
                    slots += 1;
                    right += usize::from(t.get(row, col as usize).map(|p| p.id()) == best);
                }
            }
            exact.push(right as f64 / slots.max(1) as f64);
        }
    }
    bar.finish_and_clear();
    let messages = sim.counters.messages - m0;
    let corrected = corrections(&sim) - c0;
    ctx.account(&sim, rss0);
    let d = done.max(1) as f64;
    Point {
        f,
        secure_join,
        joiners,
        joined: r6(done as f64 / joiners.max(1) as f64),
        leaf_set_correct_members: r6(mean_f(&members)),
        leaf_set_complete: r6(complete as f64 / d),
        leaf_set_byzantine: r6(mean_f(&byz_share)),
        true_leaf_set_byzantine: r6(mean_f(&true_byz)),
        constrained_exact: r6(mean_f(&exact)),
        corrections_per_join: r6(corrected as f64 / d),
        messages_per_join: r6(messages as f64 / joiners.max(1) as f64),
    }
}

fn corrections(sim: &Sim) -> u64 {
    sim.nodes
        .iter()
        .map(|n| n.node.overlay().stats().join_check_corrections)
        .sum()
}

fn mean_f(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// `secure-join`: joiners' tables in a ring with f colluding nodes, with and without the check.
pub(crate) fn secure_join(ctx: &mut Ctx) -> Report {
    let n = ctx.params.nodes.unwrap_or(N);
    let mut points = Vec::new();
    for &f in &FRACTIONS {
        for check in [true, false] {
            let p = measure(ctx, f, check);
            eprintln!(
                "secure-join N={n} f={f} check={check}: joined {:.4}, correct leaf members {:.4}, complete leaf sets {:.4}, byzantine share {:.4} (truth {:.4}), constrained exact {:.4}, {:.2} corrections/join, {:.1} msgs/join",
                p.joined,
                p.leaf_set_correct_members,
                p.leaf_set_complete,
                p.leaf_set_byzantine,
                p.true_leaf_set_byzantine,
                p.constrained_exact,
                p.corrections_per_join,
                p.messages_per_join,
            );
            points.push(p);
        }
    }
    let mut t = Table::new(
        "joins",
        &[
            "f",
            "secure_join",
            "joined",
            "leaf_set_correct_members",
            "leaf_set_complete",
            "leaf_set_byzantine",
            "true_leaf_set_byzantine",
            "constrained_exact",
            "corrections_per_join",
            "messages_per_join",
        ],
    );
    for p in &points {
        t.row(vec![
            json!(p.f),
            json!(p.secure_join),
            json!(p.joined),
            json!(p.leaf_set_correct_members),
            json!(p.leaf_set_complete),
            json!(p.leaf_set_byzantine),
            json!(p.true_leaf_set_byzantine),
            json!(p.constrained_exact),
            json!(p.corrections_per_join),
            json!(p.messages_per_join),
        ]);
    }
    Report {
        experiment: "secure-join".into(),
        seed: ctx.params.seed,
        parameters: serde_json::to_value(&ctx.params).expect("parameters serialise"),
        figures: json!({
            "nodes": n,
            "constrained_rows_judged": ROWS,
            "points": points,
        }),
        tables: vec![t],
        plots: Vec::new(),
    }
}
