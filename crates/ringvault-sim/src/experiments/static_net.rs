//! Static networks: hops, hop distribution, stretch, rare case and join cost, all measured on
//! the same builds (memoised per invocation by N, b, L, M).

use rand::Rng;
use ringvault_overlay::NextHop;
use serde::Serialize;
use serde_json::json;

use super::{build_static, log_base, mean, percentile, r6, Ctx};
use crate::check::{reached_true_root, Ring};
use crate::perf::rss_bytes;
use crate::report::{Plot, PlotKind, Report, Series, Table};

/// The paper's routes per N.
const ROUTES: usize = 200_000;
/// Route probes outstanding at once.
const WINDOW: usize = 2_000;
/// Hop counts tallied separately; longer routes land in the last bucket.
const HOP_BUCKETS: usize = 8;

/// What one static network of N nodes measured.
#[derive(Clone, Debug, Serialize)]
pub struct StaticPoint {
    /// Nodes.
    pub n: usize,
    /// b, L, M.
    pub b: u8,
    /// Leaf set size.
    pub l: usize,
    /// Neighbourhood size.
    pub m: usize,
    /// Routes measured.
    pub routes: usize,
    /// Routes whose report came back.
    pub answered: usize,
    /// Routes that ended at the true root.
    pub correct: usize,
    /// Mean overlay hops.
    pub mean_hops: f64,
    /// Fraction of routes with 0, 1, ... 7+ hops.
    pub hop_fractions: Vec<f64>,
    /// Mean relative distance: sum of hop delays over the direct delay.
    pub stretch: f64,
    /// Fraction of routes that took at least one rare-case hop.
    pub rare_fraction: f64,
    /// Fraction of forwarding decisions that were rare-case hops.
    pub rare_hop_fraction: f64,
    /// Fraction of rare-case hops whose slot a live node could have filled.
    pub rare_fillable_fraction: f64,
    /// Messages sent per join: mean.
    pub join_messages_mean: f64,
    /// Messages sent per join: 99th percentile.
    pub join_messages_p99: u64,
    /// Probes per join: mean.
    pub join_probes_mean: f64,
    /// Leaf sets not exact after the build.
    pub wrong_leaf_sets: usize,
}

/// Builds (or reuses) the static network of `n` nodes with b, L, M and measures it.
pub(crate) fn point(ctx: &mut Ctx, n: usize, b: u8, l: usize, m: usize) -> StaticPoint {
    let key = (n, b, l, m);
    if let Some(p) = ctx.points.get(&key) {
        return p.clone();
    }
    let params = ctx.params.clone();
    let rss0 = rss_bytes();
    let cfg = ringvault_overlay::Config {
        b,
        leaf_set_size: l,
        neighbourhood_size: m,
        ..Default::default()
    };
    let (mut sim, mut cost) = build_static(&params, cfg, n, &format!("joining N={n} L={l}"));
    let wrong_leaf_sets = crate::wrong_leaf_sets(&sim).len();
    let ring = Ring::of(&sim);
    let routes_n = params.routes.unwrap_or(ROUTES);
    let r = measure_routes(
        &mut sim,
        &ring,
        routes_n,
        &params,
        &format!("routing N={n} L={l}"),
    );
    let p = StaticPoint {
        n,
        b,
        l,
        m,
        routes: routes_n,
        answered: r.answered,
        correct: r.correct,
        mean_hops: r.mean_hops,
        hop_fractions: r.hop_fractions,
        stretch: r.stretch,
        rare_fraction: r.rare_fraction,
        rare_hop_fraction: r.rare_hop_fraction,
        rare_fillable_fraction: r.rare_fillable_fraction,
        join_messages_mean: r6(mean(&cost.join_messages)),
        join_messages_p99: percentile(&mut cost.join_messages, 99.0),
        join_probes_mean: r6(mean(&cost.join_probes)),
        wrong_leaf_sets,
    };
    ctx.account(&sim, rss0);
    eprintln!(
        "measured N={n} b={b} L={l} M={m}: mean hops {}, {} of {} routes correct, {} events so far",
        p.mean_hops, p.correct, p.routes, ctx.perf.events
    );
    drop(sim);
    ctx.points.insert(key, p.clone());
    p
}

/// What a batch of routes between random live nodes measured.
pub(crate) struct RouteFigures {
    pub(crate) answered: usize,
    pub(crate) correct: usize,
    pub(crate) mean_hops: f64,
    pub(crate) hop_fractions: Vec<f64>,
    pub(crate) stretch: f64,
    pub(crate) rare_fraction: f64,
    pub(crate) rare_hop_fraction: f64,
    /// Of the rare-case hops, the fraction whose table slot some live node could have filled
    /// (the rest had no node for the slot at all).
    pub(crate) rare_fillable_fraction: f64,
}

/// Routes `routes_n` traced probes from random live nodes to random live nodes' ids and
/// measures hops, correctness, stretch and the rare case (judged again at each node of each
/// path, on the tables as they are when the route ends).
pub(crate) fn measure_routes(
    sim: &mut crate::Sim,
    ring: &Ring,
    routes_n: usize,
    params: &super::Params,
    label: &str,
) -> RouteFigures {
    let alive = sim.alive();
    let routes: Vec<(u32, ringvault_types::Id)> = (0..routes_n)
        .map(|_| {
            let s = alive[sim.rng.gen_range(0..alive.len())];
            let mut d = alive[sim.rng.gen_range(0..alive.len())];
            while d == s && alive.len() > 1 {
                d = alive[sim.rng.gen_range(0..alive.len())];
            }
            (s, sim.id(d))
        })
        .collect();
    let bar = params.bar(routes_n as u64, label);
    let reports = sim.route_many(&routes, WINDOW, |k| bar.inc(k as u64));
    bar.finish_and_clear();
    let mut hist = [0usize; HOP_BUCKETS];
    let (mut hops, mut answered, mut correct) = (0usize, 0usize, 0usize);
    let (mut stretch_sum, mut stretch_n) = (0f64, 0usize);
    let (mut rare_routes, mut rare_hops, mut decisions) = (0usize, 0usize, 0usize);
    let mut rare_fillable = 0usize;
    let b = sim.cfg.overlay.b;
    for (r, &(src, key)) in reports.iter().zip(&routes) {
        let Some(r) = r else { continue };
        answered += 1;
        correct += reached_true_root(ring, r) as usize;
        hops += r.hops();
        hist[r.hops().min(HOP_BUCKETS - 1)] += 1;
        let idx: Vec<u32> = r.path.iter().filter_map(|c| sim.index_of(c)).collect();
        if let Some(x) = sim.path_stretch(src, ring.root_node(&key), &idx) {
            stretch_sum += x;
            stretch_n += 1;
        }
        let mut rare_here = false;
        for &at in &idx[..idx.len().saturating_sub(1)] {
            decisions += 1;
            let nh = sim.nodes[at as usize].node.overlay().next_hop(&key, None);
            if matches!(nh, NextHop::Rare(_)) {
                rare_hops += 1;
                rare_here = true;
                let at_id = sim.id(at);
                let row = at_id.shared_prefix_len(&key, b);
                rare_fillable +=
                    !ring.in_slot(&at_id, row, key.digit(row, b), b).is_empty() as usize;
            }
        }
        rare_routes += rare_here as usize;
    }
    let a = answered.max(1) as f64;
    RouteFigures {
        answered,
        correct,
        mean_hops: r6(hops as f64 / a),
        hop_fractions: hist.iter().map(|&h| r6(h as f64 / a)).collect(),
        stretch: r6(stretch_sum / stretch_n.max(1) as f64),
        rare_fraction: r6(rare_routes as f64 / a),
        rare_hop_fraction: r6(rare_hops as f64 / decisions.max(1) as f64),
        rare_fillable_fraction: r6(rare_fillable as f64 / rare_hops.max(1) as f64),
    }
}

const HOPS_NS: [usize; 7] = [1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000];

fn sizes(ctx: &Ctx, default: &[usize]) -> Vec<usize> {
    ctx.params
        .nodes
        .map_or_else(|| default.to_vec(), |n| vec![n])
}

fn base(ctx: &Ctx) -> (u8, usize, usize) {
    let c = ctx.params.overlay(4, 16, 32);
    (c.b, c.leaf_set_size, c.neighbourhood_size)
}

fn report(ctx: &Ctx, name: &str, figures: serde_json::Value) -> Report {
    Report {
        experiment: name.into(),
        seed: ctx.params.seed,
        parameters: serde_json::to_value(&ctx.params).expect("parameters serialise"),
        figures,
        tables: Vec::new(),
        plots: Vec::new(),
    }
}

fn line_plot(name: &str, title: &str, x: &str, y: &str, series: Vec<Series>) -> Plot {
    Plot {
        name: name.into(),
        title: title.into(),
        x_label: x.into(),
        y_label: y.into(),
        kind: PlotKind::Line,
        log_x: true,
        series,
    }
}

/// `hops`: mean hops per N against log_2^b N.
pub(crate) fn hops(ctx: &mut Ctx) -> Report {
    let (b, l, m) = base(ctx);
    let ns = sizes(ctx, &HOPS_NS);
    let points: Vec<StaticPoint> = ns.iter().map(|&n| point(ctx, n, b, l, m)).collect();
    let mut t = Table::new(
        "hops",
        &[
            "N",
            "mean_hops",
            "log_2^b_N",
            "routes",
            "correct",
            "wrong_leaf_sets",
        ],
    );
    for p in &points {
        t.row(vec![
            json!(p.n),
            json!(p.mean_hops),
            json!(r6(log_base(p.n, b))),
            json!(p.answered),
            json!(p.correct),
            json!(p.wrong_leaf_sets),
        ]);
    }
    let mut r = report(ctx, "hops", json!({ "points": points }));
    r.plots.push(line_plot(
        "hops",
        "Mean overlay hops against network size",
        "N (nodes)",
        "hops",
        vec![
            Series {
                label: "mean hops".into(),
                points: points.iter().map(|p| (p.n as f64, p.mean_hops)).collect(),
            },
            Series {
                label: format!("log{} N", 1u32 << b),
                points: points
                    .iter()
                    .map(|p| (p.n as f64, log_base(p.n, b)))
                    .collect(),
            },
        ],
    ));
    r.tables.push(t);
    r
}

/// `hop-distribution`: fraction of routes with 0..7 hops at N = 100k.
pub(crate) fn hop_distribution(ctx: &mut Ctx) -> Report {
    let (b, l, m) = base(ctx);
    let n = sizes(ctx, &[100_000])[0];
    let p = point(ctx, n, b, l, m);
    let mut t = Table::new("distribution", &["hops", "fraction"]);
    for (h, f) in p.hop_fractions.iter().enumerate() {
        let label = if h + 1 == HOP_BUCKETS {
            format!("{h}+")
        } else {
            h.to_string()
        };
        t.row(vec![json!(label), json!(f)]);
    }
    let mut r = report(
        ctx,
        "hop-distribution",
        json!({ "n": n, "mean_hops": p.mean_hops, "log_2^b_N": r6(log_base(n, b)),
                "fractions": p.hop_fractions, "routes": p.answered, "correct": p.correct }),
    );
    r.plots.push(Plot {
        name: "distribution".into(),
        title: format!("Hops per route, N = {n}"),
        x_label: "hops".into(),
        y_label: "fraction of routes".into(),
        kind: PlotKind::Bar,
        log_x: false,
        series: vec![Series {
            label: format!("N = {n}"),
            points: p
                .hop_fractions
                .iter()
                .enumerate()
                .map(|(h, &f)| (h as f64, f))
                .collect(),
        }],
    });
    r.tables.push(t);
    r
}

/// `stretch`: mean relative distance per N.
pub(crate) fn stretch(ctx: &mut Ctx) -> Report {
    let (b, l, m) = base(ctx);
    let ns = sizes(ctx, &HOPS_NS);
    let points: Vec<StaticPoint> = ns.iter().map(|&n| point(ctx, n, b, l, m)).collect();
    let mut t = Table::new("stretch", &["N", "relative_distance", "mean_hops"]);
    for p in &points {
        t.row(vec![json!(p.n), json!(p.stretch), json!(p.mean_hops)]);
    }
    let figures = json!({ "points": points.iter().map(|p| json!({"n": p.n, "stretch": p.stretch})).collect::<Vec<_>>() });
    let mut r = report(ctx, "stretch", figures);
    r.plots.push(line_plot(
        "stretch",
        "Relative distance (route delay / direct delay)",
        "N (nodes)",
        "relative distance",
        vec![Series {
            label: "mean relative distance".into(),
            points: points.iter().map(|p| (p.n as f64, p.stretch)).collect(),
        }],
    ));
    r.tables.push(t);
    r
}

/// `rare-case`: fraction of routes that used the rare case, N in {10k, 100k}, L in {16, 32}.
pub(crate) fn rare_case(ctx: &mut Ctx) -> Report {
    let (b, _, m) = base(ctx);
    let ns = sizes(ctx, &[10_000, 100_000]);
    let ls = ctx.params.leaf_set.map_or(vec![16, 32], |l| vec![l]);
    let mut t = Table::new(
        "rare-case",
        &[
            "N",
            "L",
            "routes_with_rare_hop",
            "rare_hops_per_decision",
            "rare_hops_with_fillable_slot",
            "mean_hops",
        ],
    );
    let mut series = Vec::new();
    let mut pts = Vec::new();
    for &l in &ls {
        let mut s = Series {
            label: format!("L = {l}"),
            points: Vec::new(),
        };
        for &n in &ns {
            let p = point(ctx, n, b, l, m);
            t.row(vec![
                json!(n),
                json!(l),
                json!(p.rare_fraction),
                json!(p.rare_hop_fraction),
                json!(p.rare_fillable_fraction),
                json!(p.mean_hops),
            ]);
            s.points.push((n as f64, p.rare_fraction));
            pts.push(json!({"n": n, "l": l, "rare_fraction": p.rare_fraction, "rare_hop_fraction": p.rare_hop_fraction, "rare_fillable_fraction": p.rare_fillable_fraction}));
        }
        series.push(s);
    }
    let mut r = report(ctx, "rare-case", json!({ "points": pts }));
    r.plots.push(line_plot(
        "rare-case",
        "Routes that used the rare case",
        "N (nodes)",
        "fraction of routes",
        series,
    ));
    r.tables.push(t);
    r
}

/// `join-cost`: messages per join against 3 * 2^b * log_2^b N.
pub(crate) fn join_cost(ctx: &mut Ctx) -> Report {
    let (b, l, m) = base(ctx);
    let ns = sizes(ctx, &[1_000, 10_000, 100_000]);
    let mut t = Table::new(
        "join-cost",
        &[
            "N",
            "messages_mean",
            "messages_p99",
            "3*2^b*log_2^b_N",
            "probes_mean",
        ],
    );
    let mut pts = Vec::new();
    let (mut s_mean, mut s_p99, mut s_bound) = (Vec::new(), Vec::new(), Vec::new());
    for &n in &ns {
        let p = point(ctx, n, b, l, m);
        let bound = r6(3.0 * (1u64 << b) as f64 * log_base(n, b));
        t.row(vec![
            json!(n),
            json!(p.join_messages_mean),
            json!(p.join_messages_p99),
            json!(bound),
            json!(p.join_probes_mean),
        ]);
        s_mean.push((n as f64, p.join_messages_mean));
        s_p99.push((n as f64, p.join_messages_p99 as f64));
        s_bound.push((n as f64, bound));
        pts.push(json!({"n": n, "messages_mean": p.join_messages_mean, "messages_p99": p.join_messages_p99, "bound": bound, "probes_mean": p.join_probes_mean}));
    }
    let mut r = report(ctx, "join-cost", json!({ "points": pts }));
    r.plots.push(line_plot(
        "join-cost",
        "Messages per join",
        "N (nodes)",
        "messages",
        vec![
            Series {
                label: "mean".into(),
                points: s_mean,
            },
            Series {
                label: "p99".into(),
                points: s_p99,
            },
            Series {
                label: "3 * 2^b * log N".into(),
                points: s_bound,
            },
        ],
    ));
    r.tables.push(t);
    r
}
