//! `byzantine-storage`: PAST in secure mode (`PastConfig::secure`: inserts and retried lookups
//! through `sec_route`, receipts only from the verified replica set) with a fraction f of the
//! nodes Byzantine and colluding (`ringvault_testkit::byzantine`): they hijack every route they
//! are handed, answer secure probes with colluders only, sign receipts for replicas and throw
//! the data away, and answer lookups with forged copies.
//!
//! Each point runs on a fresh network built from global knowledge as for `secure-routing` (the
//! same seed, so the same nodes and the same Byzantine set for a given f): objects are
//! inserted from random correct nodes, then each is looked up from another random correct
//! node. Messages are counted over the whole ring while a phase runs.
//! PAST's secure mode is then switched off (the overlay unchanged) and f = 0 and the worst
//! fraction run again: the first shows what secure mode costs without an attack; the second is
//! the negative control (lookups then trust the ordinary route, and the checker must see them
//! fail).

use std::collections::BTreeMap;

use rand::Rng;
use ringvault_node::Node;
use ringvault_past::{Kind, MemoryStore, Past, PastConfig, PastEvent, RequestId};
use ringvault_testkit::byzantine::Attack;
use ringvault_types::{Duration, Id, Identity, Time};
use serde::Serialize;
use serde_json::json;

use super::past::node_identity;
use super::secure::{build_global, turn_byzantine};
use super::{mean, percentile, r6, Ctx};
use crate::check::Ring;
use crate::perf::rss_bytes;
use crate::report::{Plot, PlotKind, Report, Series, Table};
use crate::Sim;

/// Default network size.
const N: usize = 10_000;
/// Default objects per fraction.
const OBJECTS: usize = 10_000;
/// Replicas per object. With f = 0.25 the chance that all k closest nodes of a key are
/// Byzantine is f^k: 1 in 1,024 at k = 5, 1 in 16,384 at k = 7. No protocol reads an object
/// none of whose replicas is correct, so k sets the floor under the lookup figures.
const K: u8 = 7;
/// Fractions of Byzantine nodes.
const FRACTIONS: [f64; 3] = [0.0, 0.1, 0.25];
/// Requests in flight at once.
const WINDOW: usize = 32;
/// Object size in bytes.
const SIZE: usize = 1024;
/// How long one phase may take in simulated time.
const PHASE_LIMIT: Duration = Duration::from_secs(3_600);

/// One fraction's figures.
#[derive(Clone, Debug, Serialize)]
struct Point {
    f: f64,
    /// PAST's secure mode (off only in the negative control).
    secure: bool,
    byzantine: usize,
    objects: usize,
    /// Inserts that completed with k receipts from the verified replica set.
    inserts_ok: f64,
    /// Objects whose k closest nodes are all correct.
    all_replicas_correct: f64,
    /// Objects whose k closest nodes are all Byzantine (none of them can be read).
    no_correct_replica: f64,
    /// Inserted objects that some correct node among their k closest holds.
    held_by_correct: f64,
    lookups: usize,
    /// Lookups that returned the object's bytes.
    lookups_right_bytes: f64,
    /// Lookups that returned the object's bytes, among objects with a correct node among
    /// their k closest.
    lookups_right_bytes_readable: f64,
    /// Lookups that failed (not found, or no verified copy before the deadline).
    lookups_failed: f64,
    /// Lookups that returned other bytes than the object's (content is verified: must be 0).
    lookups_wrong_bytes: usize,
    /// Lookups that went through `sec_route` after the ordinary route brought no verified copy.
    secure_lookups: f64,
    /// Messages per insert (routing, secure routing, replicas, receipts, announcements).
    messages_per_insert: f64,
    /// Messages per lookup.
    messages_per_lookup: f64,
    insert_ms_mean: f64,
    insert_ms_p99: u64,
    lookup_ms_mean: f64,
    lookup_ms_p99: u64,
}

/// Runs `count` requests, at most [`WINDOW`] at once, started by `start(sim, i)` (the node and
/// its request, or `None` when it was refused at once); returns each one's event and how long
/// it took.
fn drive(
    sim: &mut Sim,
    count: usize,
    mut start: impl FnMut(&mut Sim, usize) -> Option<(u32, RequestId)>,
) -> Vec<Option<(PastEvent, Duration)>> {
    let mut out: Vec<Option<(PastEvent, Duration)>> = (0..count).map(|_| None).collect();
    let mut flying: BTreeMap<(u32, RequestId), (usize, Time)> = BTreeMap::new();
    let mut next = 0;
    let limit = sim.now + PHASE_LIMIT;
    while (next < count || !flying.is_empty()) && sim.now < limit {
        while next < count && flying.len() < WINDOW {
            if let Some(key) = start(sim, next) {
                flying.insert(key, (next, sim.now));
            }
            next += 1;
        }
        let slice = sim.now + Duration::from_millis(10);
        sim.run_until(slice, |_| false);
        let busy: std::collections::BTreeSet<u32> = flying.keys().map(|k| k.0).collect();
        for i in busy {
            let events: Vec<PastEvent> =
                past_of(sim, i, |p| std::iter::from_fn(|| p.poll_event()).collect());
            for e in events {
                if let Some((at, started)) = flying.remove(&(i, e.request())) {
                    out[at] = Some((e, sim.now.saturating_since(started)));
                }
            }
        }
    }
    out
}

fn past_of<R>(sim: &mut Sim, i: u32, f: impl FnOnce(&mut Past) -> R) -> R {
    sim.with_node(i, |node: &mut Node, now| {
        node.with_service::<Past, _>(now, |p, _| f(p))
            .expect("every node runs PAST")
    })
}

fn secure_lookups(sim: &mut Sim) -> u64 {
    (0..sim.nodes.len() as u32)
        .map(|i| past_of(sim, i, |p| p.secure_lookups()))
        .sum()
}

fn ms(d: &Duration) -> u64 {
    d.as_micros() / 1_000
}

/// Inserts and looks up objects on a fresh ring with a fraction `f` of the nodes Byzantine and
/// PAST's secure mode on or off.
fn measure(ctx: &mut Ctx, f: f64, secure: bool) -> Point {
    let n = ctx.params.nodes.unwrap_or(N);
    let cfg = ctx.params.overlay(4, 16, 32);
    let rss0 = rss_bytes();
    let seed = ctx.params.seed;
    let past = PastConfig {
        secure,
        secure_lookup_width: K,
        ..PastConfig::default()
    };
    let mut sim = build_global(ctx, cfg, n, |i, node| {
        let store = Box::new(MemoryStore::new(1 << 30));
        let p =
            Past::with_config(node_identity(seed, i), store, past.clone()).expect("an empty store");
        node.add_service(Box::new(p));
    });
    let point = measure_on(ctx, &mut sim, f, secure);
    ctx.account(&sim, rss0);
    point
}

fn measure_on(ctx: &Ctx, sim: &mut Sim, f: f64, secure: bool) -> Point {
    let label = format!("f={f}{}", if secure { "" } else { " (PAST secure off)" });
    let (byz, correct) = turn_byzantine(sim, f, Attack::FakeRoot);
    let ring = Ring::of(sim);
    let owner = Identity::from_secret_bytes([0x42; 32]);
    let objects = ctx.params.routes.unwrap_or(OBJECTS);
    let tag = sim.rng.gen::<u64>();
    let content_of = |o: usize| -> Vec<u8> {
        let seed = Id::hash(format!("{tag}-{o}").as_bytes());
        seed.as_bytes().iter().copied().cycle().take(SIZE).collect()
    };

    // Inserts, from random correct nodes.
    let bar = ctx.params.bar(objects as u64, &format!("inserts {label}"));
    let origins: Vec<u32> = (0..objects)
        .map(|_| correct[sim.rng.gen_range(0..correct.len())])
        .collect();
    let m0 = sim.counters.messages;
    let inserted = drive(sim, objects, |sim, o| {
        bar.inc(1);
        let (from, content) = (origins[o], content_of(o));
        let name = format!("{tag}-{o}");
        sim.with_node(from, |node, now| {
            node.with_service::<Past, _>(now, |p, kbr| {
                p.insert(kbr, now, &owner, &name, content, K, 0)
            })
        })
        .and_then(Result::ok)
        .map(|req| (from, req))
    });
    // Let the holders' announcements to each other finish.
    sim.run_for(Duration::from_secs(10));
    let insert_messages = sim.counters.messages - m0;
    bar.finish_and_clear();
    let mut ids: Vec<Option<Id>> = vec![None; objects];
    let mut insert_ms = Vec::new();
    for (o, r) in inserted.iter().enumerate() {
        if let Some((PastEvent::Inserted(_, Ok(done)), took)) = r {
            ids[o] = Some(done.cert.id());
            insert_ms.push(ms(took));
        }
    }
    let ok: Vec<usize> = (0..objects).filter(|&o| ids[o].is_some()).collect();

    // Where the objects are.
    let (mut all_correct, mut none_correct, mut held) = (0usize, 0usize, 0usize);
    let mut readable = vec![false; objects];
    for &o in &ok {
        let id = ids[o].expect("inserted");
        let members: Vec<u32> = ring
            .closest(&id, K as usize)
            .iter()
            .filter_map(|m| ring.node_of(m))
            .collect();
        let honest: Vec<u32> = members
            .iter()
            .copied()
            .filter(|&j| !sim.is_byzantine(j))
            .collect();
        all_correct += usize::from(honest.len() == members.len());
        none_correct += usize::from(honest.is_empty());
        readable[o] = !honest.is_empty();
        let kept = honest.iter().any(|&j| {
            past_of(sim, j, |p| {
                matches!(
                    p.store().meta(&id),
                    Ok(Some((Kind::Primary | Kind::Diverted, ..)))
                )
            })
        });
        held += usize::from(kept);
    }

    // Lookups, each from another random correct node.
    let bar = ctx.params.bar(ok.len() as u64, &format!("lookups {label}"));
    let lookers: Vec<u32> = ok
        .iter()
        .map(|&o| loop {
            let j = correct[sim.rng.gen_range(0..correct.len())];
            if j != origins[o] || correct.len() == 1 {
                break j;
            }
        })
        .collect();
    let (m0, s0) = (sim.counters.messages, secure_lookups(sim));
    let found = drive(sim, ok.len(), |sim, x| {
        bar.inc(1);
        let (from, id) = (lookers[x], ids[ok[x]].expect("inserted"));
        sim.with_node(from, |node, now| {
            node.with_service::<Past, _>(now, |p, kbr| p.lookup(kbr, now, id))
        })
        .and_then(Result::ok)
        .map(|req| (from, req))
    });
    bar.finish_and_clear();
    let lookup_messages = sim.counters.messages - m0;
    let went_secure = secure_lookups(sim) - s0;
    let (mut right, mut right_readable, mut wrong, mut failed) = (0usize, 0usize, 0usize, 0usize);
    let mut lookup_ms = Vec::new();
    for (x, r) in found.iter().enumerate() {
        let o = ok[x];
        match r {
            Some((PastEvent::Found(_, Ok(got)), took)) => {
                lookup_ms.push(ms(took));
                if got.content == content_of(o) {
                    right += 1;
                    right_readable += usize::from(readable[o]);
                } else {
                    wrong += 1;
                }
            }
            _ => failed += 1,
        }
    }
    sim.set_byzantine(&[], None);
    let n_ok = ok.len().max(1) as f64;
    let n_readable = readable.iter().filter(|&&r| r).count().max(1) as f64;
    Point {
        f,
        secure,
        byzantine: byz.len(),
        objects,
        inserts_ok: r6(ok.len() as f64 / objects.max(1) as f64),
        all_replicas_correct: r6(all_correct as f64 / n_ok),
        no_correct_replica: r6(none_correct as f64 / n_ok),
        held_by_correct: r6(held as f64 / n_ok),
        lookups: ok.len(),
        lookups_right_bytes: r6(right as f64 / n_ok),
        lookups_right_bytes_readable: r6(right_readable as f64 / n_readable),
        lookups_failed: r6(failed as f64 / n_ok),
        lookups_wrong_bytes: wrong,
        secure_lookups: r6(went_secure as f64 / n_ok),
        messages_per_insert: r6(insert_messages as f64 / objects.max(1) as f64),
        messages_per_lookup: r6(lookup_messages as f64 / n_ok),
        insert_ms_mean: r6(mean(&insert_ms)),
        insert_ms_p99: percentile(&mut insert_ms, 99.0),
        lookup_ms_mean: r6(mean(&lookup_ms)),
        lookup_ms_p99: percentile(&mut lookup_ms, 99.0),
    }
}

/// `byzantine-storage`: PAST inserts and lookups under f colluding Byzantine nodes.
pub(crate) fn byzantine_storage(ctx: &mut Ctx) -> Report {
    let n = ctx.params.nodes.unwrap_or(N);
    let mut points: Vec<Point> = Vec::new();
    for &f in &FRACTIONS {
        points.push(measure(ctx, f, true));
    }
    // The price of secure mode, and the negative control.
    let worst = *FRACTIONS.last().expect("fractions");
    for f in [0.0, worst] {
        points.push(measure(ctx, f, false));
    }
    for p in &points {
        eprintln!(
            "byzantine-storage N={n} f={} secure={}: inserts {:.4}, held by a correct replica {:.4}, lookups right {:.4} (readable {:.4}), failed {:.4}, secure lookups {:.4}, {:.1} msgs/insert, {:.1} msgs/lookup",
            p.f,
            p.secure,
            p.inserts_ok,
            p.held_by_correct,
            p.lookups_right_bytes,
            p.lookups_right_bytes_readable,
            p.lookups_failed,
            p.secure_lookups,
            p.messages_per_insert,
            p.messages_per_lookup,
        );
    }
    let base = points[0].clone();
    let mut t = Table::new(
        "fractions",
        &[
            "f",
            "past_secure",
            "inserts_ok",
            "all_replicas_correct",
            "held_by_correct",
            "lookups_right_bytes",
            "lookups_right_bytes_readable",
            "lookups_failed",
            "secure_lookups",
            "messages_per_insert",
            "messages_per_lookup",
            "insert_cost_vs_f0",
            "lookup_cost_vs_f0",
            "lookup_ms_mean",
            "lookup_ms_p99",
        ],
    );
    for p in &points {
        t.row(vec![
            json!(p.f),
            json!(p.secure),
            json!(p.inserts_ok),
            json!(p.all_replicas_correct),
            json!(p.held_by_correct),
            json!(p.lookups_right_bytes),
            json!(p.lookups_right_bytes_readable),
            json!(p.lookups_failed),
            json!(p.secure_lookups),
            json!(p.messages_per_insert),
            json!(p.messages_per_lookup),
            json!(r6(
                p.messages_per_insert / base.messages_per_insert.max(1e-9)
            )),
            json!(r6(
                p.messages_per_lookup / base.messages_per_lookup.max(1e-9)
            )),
            json!(p.lookup_ms_mean),
            json!(p.lookup_ms_p99),
        ]);
    }
    let series = |label: &str, secure: bool, y: fn(&Point) -> f64| Series {
        label: label.into(),
        points: points
            .iter()
            .filter(|p| p.secure == secure)
            .map(|p| (p.f, y(p)))
            .collect(),
    };
    let plot = Plot {
        name: "lookups".into(),
        title: format!("PAST under attack, N = {n}, b = 4, L = 16, k = {K}"),
        x_label: "fraction of colluding Byzantine nodes f".into(),
        y_label: "share".into(),
        kind: PlotKind::Line,
        log_x: false,
        series: vec![
            series("lookups that return the right bytes", true, |p| {
                p.lookups_right_bytes
            }),
            series("objects with all k replicas correct", true, |p| {
                p.all_replicas_correct
            }),
            series("lookups, PAST secure mode off", false, |p| {
                p.lookups_right_bytes
            }),
        ],
    };
    let at = |f: f64| points.iter().find(|p| p.secure && p.f == f).cloned();
    Report {
        experiment: "byzantine-storage".into(),
        seed: ctx.params.seed,
        parameters: serde_json::to_value(&ctx.params).expect("parameters serialise"),
        figures: json!({
            "nodes": n,
            "k": K,
            "object_bytes": SIZE,
            "attack": "fake-root routing, receipts for dropped replicas, forged copies",
            "lookups_right_bytes_at_worst": at(worst).map(|p| p.lookups_right_bytes),
            "negative_control_lookups_right_bytes": points.last().map(|p| p.lookups_right_bytes),
            "secure_insert_cost_no_attack": r6(base.messages_per_insert / points[FRACTIONS.len()].messages_per_insert.max(1e-9)),
            "secure_lookup_cost_no_attack": r6(base.messages_per_lookup / points[FRACTIONS.len()].messages_per_lookup.max(1e-9)),
            "points": points,
        }),
        tables: vec![t],
        plots: vec![plot],
    }
}
