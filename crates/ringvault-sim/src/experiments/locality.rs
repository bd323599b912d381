//! Locality: routing table quality per join variant, and which replica a lookup reaches first.

use rand::Rng;
use ringvault_overlay::JoinVariant;
use ringvault_types::Id;
use serde_json::json;

use super::{build_static, r6, variant_name, Ctx};
use crate::check::Ring;
use crate::perf::rss_bytes;
use crate::report::{Plot, PlotKind, Report, Series, Table};
use crate::Sim;

/// Rows reported by `table-quality`.
const ROWS: usize = 4;

/// The smallest and largest id sharing the first `digits` digits of `id` and then `col`.
fn slot_range(id: &Id, row: usize, col: u8, b: u8) -> (Id, Id) {
    let with = id.with_digit(row, b, col);
    let keep = ((row + 1) * b as usize).min(256);
    let mut lo = *with.as_bytes();
    let mut hi = lo;
    for bit in keep..256 {
        let mask = 1u8 << (7 - bit % 8);
        lo[bit / 8] &= !mask;
        hi[bit / 8] |= mask;
    }
    (Id::from_bytes(lo), Id::from_bytes(hi))
}

/// Per row: mean entries that are not the proximity-closest live candidate for their slot, and
/// mean empty slots some live node could fill.
fn quality(sim: &Sim, ring: &Ring, b: u8) -> (Vec<f64>, Vec<f64>) {
    let ids = ring.ids();
    let cols = 1u8 << b;
    let (mut worse, mut empty) = (vec![0u64; ROWS], vec![0u64; ROWS]);
    for &me_id in ids {
        let me = ring.node_of(&me_id).expect("in the ring");
        let table = sim.nodes[me as usize].node.overlay().routing_table();
        for row in 0..ROWS {
            for col in 0..cols {
                if col == me_id.digit(row, b) {
                    continue;
                }
                let (lo, hi) = slot_range(&me_id, row, col, b);
                let (a, z) = (
                    ids.partition_point(|i| *i < lo),
                    ids.partition_point(|i| *i <= hi),
                );
                if a == z {
                    continue;
                }
                match table.get(row, col as usize) {
                    None => empty[row] += 1,
                    Some(p) => {
                        let Some(occ) = sim.index_of(&p.contact) else {
                            continue;
                        };
                        let d = sim.distance(me, occ);
                        let better = ids[a..z].iter().any(|c| {
                            let j = ring.node_of(c).expect("in the ring");
                            sim.distance(me, j) < d
                        });
                        worse[row] += better as u64;
                    }
                }
            }
        }
    }
    let n = ids.len().max(1) as f64;
    (
        worse.iter().map(|&w| r6(w as f64 / n)).collect(),
        empty.iter().map(|&e| r6(e as f64 / n)).collect(),
    )
}

pub(crate) fn table_quality(ctx: &mut Ctx) -> Report {
    let p = ctx.params.clone();
    let n = p.nodes.unwrap_or(5_000);
    let mut t = Table::new(
        "rows",
        &[
            "variant",
            "row",
            "entries_not_closest",
            "fillable_empty_slots",
        ],
    );
    let (mut s_worse, mut s_empty, mut figs) = (Vec::new(), Vec::new(), Vec::new());
    for v in [
        JoinVariant::PathRows,
        JoinVariant::WholeState,
        JoinVariant::Full,
    ] {
        let cfg = ringvault_overlay::Config {
            join_variant: v,
            ..p.overlay(4, 16, 32)
        };
        let b = cfg.b;
        let rss0 = rss_bytes();
        let (sim, _) = build_static(&p, cfg, n, &format!("joining ({})", variant_name(v)));
        let ring = Ring::of(&sim);
        let (worse, empty) = quality(&sim, &ring, b);
        ctx.account(&sim, rss0);
        for r in 0..ROWS {
            t.row(vec![
                json!(variant_name(v)),
                json!(r),
                json!(worse[r]),
                json!(empty[r]),
            ]);
        }
        let pts = |v: &[f64]| v.iter().enumerate().map(|(r, &x)| (r as f64, x)).collect();
        s_worse.push(Series {
            label: variant_name(v).into(),
            points: pts(&worse),
        });
        s_empty.push(Series {
            label: variant_name(v).into(),
            points: pts(&empty),
        });
        figs.push(json!({"variant": variant_name(v), "entries_not_closest": worse, "fillable_empty_slots": empty}));
    }
    let plot = |name: &str, title: &str, y: &str, series| Plot {
        name: name.into(),
        title: title.into(),
        x_label: "routing table row".into(),
        y_label: y.into(),
        kind: PlotKind::Bar,
        log_x: false,
        series,
    };
    Report {
        experiment: "table-quality".into(),
        seed: p.seed,
        parameters: json!({ "common": p, "n": n }),
        figures: json!({ "variants": figs }),
        tables: vec![t],
        plots: vec![
            plot(
                "not-closest",
                &format!("Entries that are not the closest node, N = {n}"),
                "entries per node",
                s_worse,
            ),
            plot(
                "empty",
                &format!("Empty slots a live node could fill, N = {n}"),
                "slots per node",
                s_empty,
            ),
        ],
    }
}

pub(crate) fn replica_locality(ctx: &mut Ctx) -> Report {
    let p = ctx.params.clone();
    let n = p.nodes.unwrap_or(10_000);
    let lookups = p.routes.unwrap_or(100_000);
    let k = 5;
    let cfg = p.overlay(3, 8, 16);
    let rss0 = rss_bytes();
    let (mut sim, _) = build_static(&p, cfg.clone(), n, "joining");
    let ring = Ring::of(&sim);
    let alive = sim.alive();
    let list: Vec<(u32, Id)> = (0..lookups)
        .map(|_| {
            let s = alive[sim.rng.gen_range(0..alive.len())];
            (s, Id::from_bytes(sim.rng.gen()))
        })
        .collect();
    let bar = p.bar(lookups as u64, "lookups");
    let reports = sim.route_many(&list, 2_000, |x| bar.inc(x as u64));
    bar.finish_and_clear();
    let mut rank_hist = vec![0usize; k];
    let mut answered = 0usize;
    for (r, &(src, key)) in reports.iter().zip(&list) {
        let Some(r) = r else { continue };
        let replicas = ring.closest(&key, k);
        let Some(first) = r.path.iter().find(|c| replicas.contains(&c.id)) else {
            continue;
        };
        answered += 1;
        let mut by_prox: Vec<(f64, Id)> = replicas
            .iter()
            .map(|id| {
                let j = ring.node_of(id).expect("in the ring");
                (if j == src { 0.0 } else { sim.distance(src, j) }, *id)
            })
            .collect();
        by_prox.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let rank = by_prox
            .iter()
            .position(|(_, id)| *id == first.id)
            .unwrap_or(k - 1);
        rank_hist[rank] += 1;
    }
    ctx.account(&sim, rss0);
    let a = answered.max(1) as f64;
    let nearest = r6(rank_hist[0] as f64 / a);
    let nearest_two = r6((rank_hist[0] + rank_hist[1]) as f64 / a);
    let mut t = Table::new(
        "first-replica",
        &["heuristic", "nearest_of_k", "one_of_nearest_two"],
    );
    t.row(vec![json!("none"), json!(nearest), json!(nearest_two)]);
    Report {
        experiment: "replica-locality".into(),
        seed: p.seed,
        parameters: json!({ "common": p, "n": n, "b": cfg.b, "l": cfg.leaf_set_size,
            "m": cfg.neighbourhood_size, "k": k, "lookups": lookups }),
        figures: json!({
            "without_heuristic": { "nearest_of_k": nearest, "one_of_nearest_two": nearest_two,
                "rank_fractions": rank_hist.iter().map(|&h| r6(h as f64 / a)).collect::<Vec<_>>(),
                "lookups_reaching_a_replica": answered },
            "with_density_heuristic": "not measured: the density heuristic belongs to PAST's lookup, which does not exist yet"
        }),
        tables: vec![t],
        plots: vec![Plot {
            name: "rank".into(),
            title: format!("Proximity rank of the first replica reached (k = {k})"),
            x_label: "rank among the k replicas (0 = nearest)".into(),
            y_label: "fraction of lookups".into(),
            kind: PlotKind::Bar,
            log_x: false,
            series: vec![Series {
                label: "no heuristic".into(),
                points: rank_hist
                    .iter()
                    .enumerate()
                    .map(|(i, &h)| (i as f64, h as f64 / a))
                    .collect(),
            }],
        }],
    }
}
