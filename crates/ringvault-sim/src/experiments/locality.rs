//! Locality: routing table quality per join variant, and which replica a lookup reaches first.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use ringvault_overlay::JoinVariant;
use ringvault_past::{CachePolicy, MemoryStore, Past, PastConfig, PastEvent};
use ringvault_types::{Contact, Duration, Id, Identity};
use serde_json::json;

use super::static_net::measure_routes;
use super::{build_static, r6, variant_name, Ctx};
use crate::check::{table_quality as quality, Quality, Ring, ROWS};
use crate::perf::rss_bytes;
use crate::report::{Plot, PlotKind, Report, Series, Table};
use crate::Sim;

/// Minutes of routing table maintenance after which `table-quality` measures the full join's
/// tables again.
const MAINTENANCE_CHECKPOINTS: [u64; 4] = [1, 2, 5, 10];
/// Routes measured at each checkpoint for stretch and the rare case.
const CHECKPOINT_ROUTES: usize = 20_000;
/// Routing table maintenance `replica-locality` lets run before its second round of lookups.
const MAINTENANCE_BEFORE_LOOKUPS: Duration = Duration::from_secs(600);

/// Turns routing table maintenance on in every node of a freshly built static network, then
/// measures table quality, stretch and the rare case at each checkpoint, with what the
/// maintenance cost per node and second. Adds a row per checkpoint to `t`.
fn maintenance_phase(
    sim: &mut Sim,
    ring: &Ring,
    p: &super::Params,
    b: u8,
    t: &mut Table,
) -> Vec<serde_json::Value> {
    let every = ringvault_overlay::TABLE_MAINTENANCE_INTERVAL;
    // Every message through the wire codec from here, so that the bytes are exact.
    sim.cfg.wire = true;
    let routes = p.routes.unwrap_or(CHECKPOINT_ROUTES);
    let start = sim.now;
    let mut out = Vec::new();
    let mut checkpoint = |sim: &mut Sim, minutes: u64, out: &mut Vec<serde_json::Value>| {
        let q = quality(sim, ring, b);
        let r = measure_routes(
            sim,
            ring,
            routes,
            p,
            &format!("routing after {minutes} min"),
        );
        let n = sim.alive().len().max(1) as f64;
        let secs = sim.now.saturating_since(start).as_secs_f64().max(1e-9);
        let (msgs, bytes) = sim.counters.sent(&["row_request", "row_reply"]);
        let probes: u64 = sim
            .nodes
            .iter()
            .map(|x| x.node.overlay().stats().probes)
            .sum();
        let per = |x: u64| r6(x as f64 / n / secs);
        let row = json!({
            "minutes": minutes,
            "entries_not_closest": q.worse,
            "fillable_empty_slots": q.empty,
            "stretch": r.stretch,
            "mean_hops": r.mean_hops,
            "rare_fraction": r.rare_fraction,
            "messages_per_node_s": per(msgs),
            "bytes_per_node_s": per(bytes),
            "probes": probes,
        });
        t.row(vec![
            json!(minutes),
            json!(q.worse[0]),
            json!(q.worse[1]),
            json!(q.worse[2]),
            json!(r6(q.empty.iter().sum())),
            json!(r.stretch),
            json!(r.rare_fraction),
            json!(if minutes == 0 { 0.0 } else { per(msgs) }),
            json!(if minutes == 0 { 0.0 } else { per(bytes) }),
        ]);
        out.push(row);
    };
    checkpoint(sim, 0, &mut out);
    let probes_before: u64 = sim
        .nodes
        .iter()
        .map(|x| x.node.overlay().stats().probes)
        .sum();
    sim.set_table_maintenance(Some(every));
    let (m0, b0) = sim.counters.sent(&["row_request", "row_reply"]);
    for minutes in MAINTENANCE_CHECKPOINTS {
        sim.run_until(start + Duration::from_secs(60 * minutes), |_| false);
        checkpoint(sim, minutes, &mut out);
    }
    let (m1, b1) = sim.counters.sent(&["row_request", "row_reply"]);
    let probes_after: u64 = sim
        .nodes
        .iter()
        .map(|x| x.node.overlay().stats().probes)
        .sum();
    out.push(json!({
        "interval_s": every.as_secs_f64(),
        "maintenance_messages": m1 - m0,
        "maintenance_bytes": b1 - b0,
        "maintenance_probes": probes_after - probes_before,
    }));
    out
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
    let mut t_time = Table::new(
        "maintenance",
        &[
            "minutes",
            "row0_not_closest",
            "row1_not_closest",
            "row2_not_closest",
            "fillable_empty_slots",
            "stretch",
            "rare_fraction",
            "maintenance_messages_per_node_s",
            "maintenance_bytes_per_node_s",
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
        let (mut sim, _) = build_static(&p, cfg, n, &format!("joining ({})", variant_name(v)));
        let ring = Ring::of(&sim);
        let Quality {
            worse,
            empty,
            worse_by_join_decile,
        } = quality(&sim, &ring, b);
        for r in 0..ROWS {
            t.row(vec![
                json!(variant_name(v)),
                json!(r),
                json!(worse[r]),
                json!(empty[r]),
            ]);
        }
        if v == JoinVariant::Full {
            let over_time = maintenance_phase(&mut sim, &ring, &p, b, &mut t_time);
            figs.push(json!({"variant": "full", "worse_by_join_decile": worse_by_join_decile, "maintenance": over_time}));
        }
        ctx.account(&sim, rss0);
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
        tables: vec![t, t_time],
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

/// Lookups a batch issues before the simulator runs them to completion.
const LOOKUP_WINDOW: usize = 2_000;

/// Where each lookup was answered: the proximity rank (0 = nearest to the client) of the
/// replica holder that served it, `k` for a node outside the k closest, `None` for a lookup
/// that failed.
fn lookup_ranks(
    sim: &mut Sim,
    ring: &Ring,
    list: &[(u32, Id)],
    k: usize,
    hops: &mut Vec<u64>,
    mut progress: impl FnMut(usize),
) -> Vec<Option<usize>> {
    let mut out = Vec::with_capacity(list.len());
    for chunk in list.chunks(LOOKUP_WINDOW) {
        let reqs: Vec<Option<u64>> = chunk
            .iter()
            .map(|&(src, id)| {
                sim.with_node(src, |n, now| {
                    n.with_service::<Past, _>(now, |p, kbr| p.lookup(kbr, now, id).ok())
                        .flatten()
                })
            })
            .collect();
        let limit = sim.now + Duration::from_secs(120);
        sim.drain(limit);
        let mut found: BTreeMap<(u32, u64), Contact> = BTreeMap::new();
        for &src in chunk.iter().map(|(s, _)| s).collect::<BTreeSet<_>>() {
            while let Some(Some(e)) = sim.with_node(src, |n, now| {
                n.with_service::<Past, _>(now, |p, _| p.poll_event())
            }) {
                if let PastEvent::Found(req, Ok(f)) = e {
                    hops.push(f.hops as u64);
                    found.insert((src, req), f.server);
                }
            }
        }
        for (&(src, id), req) in chunk.iter().zip(reqs) {
            let Some(server) = req.and_then(|r| found.get(&(src, r))) else {
                out.push(None);
                continue;
            };
            let replicas = ring.closest(&id, k);
            let mut by_prox: Vec<(f64, Id)> = replicas
                .iter()
                .map(|rid| {
                    let j = ring.node_of(rid).expect("in the ring");
                    (if j == src { 0.0 } else { sim.distance(src, j) }, *rid)
                })
                .collect();
            by_prox.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            out.push(Some(
                by_prox
                    .iter()
                    .position(|(_, rid)| *rid == server.id)
                    .unwrap_or(k),
            ));
        }
        progress(chunk.len());
    }
    out
}

pub(crate) fn replica_locality(ctx: &mut Ctx) -> Report {
    let p = ctx.params.clone();
    let n = p.nodes.unwrap_or(10_000);
    let lookups = p.routes.unwrap_or(100_000);
    let objects = n.min(10_000);
    let k = 5u8;
    let ku = k as usize;
    let cfg = p.overlay(3, 8, 16);
    let rss0 = rss_bytes();
    let (mut sim, _) = build_static(&p, cfg.clone(), n, "joining");
    let ring = Ring::of(&sim);
    // PAST on every node, caching off (a cached copy would answer for the replicas) and with
    // room for everything, so no replica is diverted: the k holders are the k closest nodes.
    let past_config = |heuristic: Option<u8>| PastConfig {
        cache: CachePolicy::Off,
        lookup_heuristic: heuristic,
        ..PastConfig::default()
    };
    for i in 0..sim.nodes.len() as u32 {
        let key = Identity::from_secret_bytes(sim.rng.gen());
        let past = Past::with_config(key, Box::new(MemoryStore::new(1 << 30)), past_config(None))
            .expect("an empty store");
        sim.with_node(i, |node, _| node.add_service(Box::new(past)));
    }
    let alive = sim.alive();
    let owner = Identity::from_secret_bytes(sim.rng.gen());
    let bar = p.bar(objects as u64, "inserting");
    let mut ids = Vec::with_capacity(objects);
    for chunk in (0..objects).collect::<Vec<_>>().chunks(LOOKUP_WINDOW) {
        let reqs: Vec<(u32, Option<u64>)> = chunk
            .iter()
            .map(|&o| {
                let src = alive[sim.rng.gen_range(0..alive.len())];
                let name = format!("object-{o}");
                let content = name.clone().into_bytes();
                let owner = &owner;
                let req = sim.with_node(src, |n, now| {
                    n.with_service::<Past, _>(now, |p, kbr| {
                        p.insert(kbr, now, owner, &name, content, k, 0).ok()
                    })
                    .flatten()
                });
                (src, req)
            })
            .collect();
        let limit = sim.now + Duration::from_secs(120);
        sim.drain(limit);
        for src in reqs.iter().map(|(s, _)| *s).collect::<BTreeSet<_>>() {
            while let Some(Some(e)) = sim.with_node(src, |n, now| {
                n.with_service::<Past, _>(now, |p, _| p.poll_event())
            }) {
                if let PastEvent::Inserted(_, Ok(ins)) = e {
                    ids.push(ins.cert.id());
                }
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    ids.sort();
    let list: Vec<(u32, Id)> = (0..lookups)
        .map(|_| {
            let s = alive[sim.rng.gen_range(0..alive.len())];
            (s, ids[sim.rng.gen_range(0..ids.len())])
        })
        .collect();
    let mut series = Vec::new();
    let mut figs = serde_json::Map::new();
    let mut t = Table::new(
        "first-replica",
        &[
            "tables",
            "heuristic",
            "nearest_of_k",
            "one_of_nearest_two",
            "outside_k",
            "failed",
            "mean_hops",
        ],
    );
    // Right after the joins, then after routing table maintenance has run (better tables
    // should give plain Pastry better locality too).
    for (tables, prefix) in [
        ("after joins", ""),
        ("after maintenance", "after_maintenance_"),
    ] {
        if !prefix.is_empty() {
            sim.set_table_maintenance(Some(ringvault_overlay::TABLE_MAINTENANCE_INTERVAL));
            let until = sim.now + MAINTENANCE_BEFORE_LOOKUPS;
            sim.run_until(until, |_| false);
            // Off again, so that both heuristics are measured on the same tables (the lookups
            // take simulated time of their own).
            sim.set_table_maintenance(None);
            let quiet = sim.now + Duration::from_secs(60);
            sim.drain(quiet);
        }
        for (label, key, heuristic) in [
            ("none", "without_heuristic", None),
            ("density", "with_density_heuristic", Some(k)),
        ] {
            for i in 0..sim.nodes.len() as u32 {
                sim.with_node(i, |node, now| {
                    node.with_service::<Past, _>(now, |p, _| p.set_config(past_config(heuristic)))
                });
            }
            let bar = p.bar(lookups as u64, &format!("lookups ({tables}, {label})"));
            let mut hops = Vec::new();
            let ranks = lookup_ranks(&mut sim, &ring, &list, ku, &mut hops, |x| bar.inc(x as u64));
            bar.finish_and_clear();
            let mut hist = vec![0usize; ku + 1];
            let mut failed = 0usize;
            for r in &ranks {
                match r {
                    Some(r) => hist[*r] += 1,
                    None => failed += 1,
                }
            }
            let answered = (lookups - failed).max(1) as f64;
            let nearest = r6(hist[0] as f64 / answered);
            let nearest_two = r6((hist[0] + hist[1]) as f64 / answered);
            let outside = r6(hist[ku] as f64 / answered);
            let mean_hops = r6(super::mean(&hops));
            t.row(vec![
                json!(tables),
                json!(label),
                json!(nearest),
                json!(nearest_two),
                json!(outside),
                json!(failed),
                json!(mean_hops),
            ]);
            figs.insert(
                format!("{prefix}{key}"),
                json!({ "nearest_of_k": nearest, "one_of_nearest_two": nearest_two,
                    "served_outside_k_closest": outside, "failed_lookups": failed,
                    "mean_hops": mean_hops,
                    "rank_fractions": hist[..ku].iter().map(|&h| r6(h as f64 / answered)).collect::<Vec<_>>() }),
            );
            series.push(Series {
                label: format!("{label} heuristic, {tables}"),
                points: hist[..ku]
                    .iter()
                    .enumerate()
                    .map(|(i, &h)| (i as f64, h as f64 / answered))
                    .collect(),
            });
        }
    }
    figs.insert("objects".into(), json!(ids.len()));
    ctx.account(&sim, rss0);
    Report {
        experiment: "replica-locality".into(),
        seed: p.seed,
        parameters: json!({ "common": p, "n": n, "b": cfg.b, "l": cfg.leaf_set_size,
            "m": cfg.neighbourhood_size, "k": k, "lookups": lookups, "objects": objects }),
        figures: serde_json::Value::Object(figs),
        tables: vec![t],
        plots: vec![Plot {
            name: "rank".into(),
            title: format!("Proximity rank of the replica that answered (k = {k})"),
            x_label: "rank among the k replicas (0 = nearest)".into(),
            y_label: "fraction of lookups".into(),
            kind: PlotKind::Bar,
            log_x: false,
            series,
        }],
    }
}
