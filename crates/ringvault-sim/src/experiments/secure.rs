//! `secure-routing`: plain routing and `sec_route` with a fraction f of colluding Byzantine
//! nodes (security.md §8).
//!
//! The network is built from global knowledge (every node's leaf set exact, its constrained
//! table holding the node closest to each slot's point, its proximity table a random member of
//! each slot, as proximity is independent of ids), because what is measured is routing under
//! attack, not the join; the secure join is measured separately. Then a fraction f of the
//! nodes turn Byzantine and collude (`ringvault_testkit::byzantine`): they acknowledge every
//! hop and hijack it, answering secure probes with a forged neighbourhood (the colluders
//! closest to the key, or the true neighbourhood with its correct members removed, whichever
//! defeats more routes) and dropping everything else.

use rand::seq::SliceRandom;
use rand::Rng;
use ringvault_node::Node;
use ringvault_overlay::{AppMessage, Config, Kbr, Peer, Redundancy, RouteInfo, Service};
use ringvault_testkit::byzantine::{Attack, Colluders};
use ringvault_types::{Duration, Id, Time};
use serde::Serialize;
use serde_json::json;

use super::{mean, r6, Ctx};
use crate::check::Ring;
use crate::perf::rss_bytes;
use crate::report::{Plot, PlotKind, Report, Series, Table};
use crate::{Sim, SimConfig};

/// The application id of the experiment's delivery recorder.
const SINK_APP: u16 = 0xfe01;
/// Default network size.
const N: usize = 100_000;
/// Default secure routes per fraction.
const ROUTES: usize = 20_000;
/// Plain routes per fraction.
const PLAIN_ROUTES: usize = 20_000;
/// The replica set size routed to.
const R: u8 = 5;
/// Fractions of Byzantine nodes.
const FRACTIONS: [f64; 5] = [0.0, 0.1, 0.2, 0.25, 0.3];
/// How long one secure route may take in simulated time.
const ROUTE_LIMIT: Duration = Duration::from_secs(60);

/// Records which keys were delivered to this node.
#[derive(Default)]
struct Sink {
    got: std::collections::BTreeSet<Id>,
}

impl Service for Sink {
    fn app_id(&self) -> u16 {
        SINK_APP
    }
    fn deliver(&mut self, _: &mut dyn Kbr, _: Time, key: Id, _: AppMessage, _: RouteInfo) {
        self.got.insert(key);
    }
}

/// The first bits of `x` up to and including digit `l` set to `d`, as the range [lo, hi) of
/// ids with that prefix (`hi` = `None`: up to the top of the id space).
pub(crate) fn prefix_range(x: &Id, l: usize, d: u8, b: u8) -> (Id, Option<Id>) {
    let bits = (l + 1) * b as usize;
    let mut lo = *x.with_digit(l, b, d).as_bytes();
    for bit in bits..256 {
        lo[bit / 8] &= !(0x80 >> (bit % 8));
    }
    let mut hi = lo;
    for bit in (0..bits).rev() {
        let mask = 0x80 >> (bit % 8);
        if hi[bit / 8] & mask == 0 {
            hi[bit / 8] |= mask;
            return (Id::from_bytes(lo), Some(Id::from_bytes(hi)));
        }
        hi[bit / 8] &= !mask;
    }
    (Id::from_bytes(lo), None)
}

/// Builds `n` nodes with secure routing on and correct state from global knowledge, `setup`
/// registering each node's services.
pub(crate) fn build_global(
    ctx: &Ctx,
    cfg: Config,
    n: usize,
    mut setup: impl FnMut(u32, &mut Node),
) -> Sim {
    let cfg = Config {
        secure: true,
        ..cfg
    };
    build_global_with(ctx, cfg, n, |sim, i| {
        sim.add_node_with(|node: &mut Node| setup(i, node));
    })
}

/// Builds `n` nodes with correct state from global knowledge (keep-alives and table repair
/// off: an experiment turns on what it needs), `add(sim, i)` adding node `i`.
pub(crate) fn build_global_with(
    ctx: &Ctx,
    cfg: Config,
    n: usize,
    mut add: impl FnMut(&mut Sim, u32),
) -> Sim {
    let cfg = Config {
        keepalives: false,
        table_repair: false,
        ..cfg
    };
    let mut sim = Sim::new(SimConfig {
        topology: ctx.params.topology,
        ..SimConfig::new(ctx.params.seed, cfg.clone())
    });
    let bar = ctx.params.bar(n as u64, &format!("building N={n}"));
    for i in 0..n as u32 {
        add(&mut sim, i);
    }
    let mut sorted: Vec<(Id, u32)> = (0..n as u32).map(|i| (sim.id(i), i)).collect();
    sorted.sort();
    let b = cfg.b;
    let half = cfg.leaf_set_size / 2;
    let digits = Id::num_digits(b);
    for (k, &(me, i)) in sorted.iter().enumerate() {
        let mut picks: Vec<u32> = Vec::new();
        // The outer leaf set: twice the leaf set, as the periodic leaf set exchange with the
        // farthest leaves fills it.
        for j in 1..=(2 * half).min(n - 1) {
            picks.push(sorted[(k + j) % n].1);
            picks.push(sorted[(k + n - j) % n].1);
        }
        for l in 0..digits {
            let mut more = false;
            for d in 0..(1u8 << b) {
                let (lo, hi) = prefix_range(&me, l, d, b);
                let a = sorted.partition_point(|(id, _)| *id < lo);
                let z = hi.map_or(n, |hi| sorted.partition_point(|(id, _)| *id < hi));
                if d == me.digit(l, b) {
                    more = z - a > 1;
                    continue;
                }
                if a == z {
                    continue;
                }
                picks.push(sorted[sim.rng.gen_range(a..z)].1);
                let point = me.with_digit(l, b, d);
                let at = sorted
                    .partition_point(|(id, _)| *id < point)
                    .clamp(a, z - 1);
                picks.push(sorted[at].1);
                if at > a {
                    picks.push(sorted[at - 1].1);
                }
            }
            if !more {
                break;
            }
        }
        picks.sort_unstable();
        picks.dedup();
        let peers: Vec<Peer> = picks
            .into_iter()
            .filter(|&j| j != i)
            .map(|j| Peer {
                contact: sim.contact(j),
                rtt: Some(sim.delay(i, j).mul(2)),
            })
            .collect();
        sim.with_node(i, |node, now| {
            node.overlay_mut().start_with_state(now, peers);
        });
        sim.nodes[i as usize].joined = true;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let limit = sim.now + Duration::from_secs(60);
    sim.drain(limit);
    sim
}

/// One fraction's figures.
#[derive(Clone, Debug, Serialize)]
struct Point {
    f: f64,
    byzantine: usize,
    plain_routes: usize,
    /// Plain route probes that reached the true root.
    plain_reached_root: f64,
    /// The analytic baseline (1 - f)^(h - 1), h the mean hops without attack.
    analytic: f64,
    secure_routes: usize,
    /// `sec_route` calls that delivered to every correct node among the R closest.
    secure_delivered_all: f64,
    /// Routes whose first answer failed the test (or never came).
    redundant: f64,
    /// Routes whose first answer held every correct member, yet failed the test.
    false_positive: f64,
    /// Routes whose first answer lacked a correct member, yet passed the test.
    false_negative: f64,
    /// Routes whose first answer lacked a correct member.
    bad_first_answers: usize,
    /// Failed routes whose forged first answer passed the test (and no correct receiver could
    /// complete the set).
    failed_accepted_forgery: usize,
    /// Failed routes whose redundant routing did not find every correct member.
    failed_after_redundant: usize,
    /// Messages per plain route that returns to its origin (hops, hop acknowledgements, the
    /// root's reply): what a secure route is compared with.
    messages_per_plain_route: f64,
    /// Messages per secure route until the set is chosen (hops, answers, redundancy; secure
    /// probes are not acknowledged hop by hop).
    messages_per_secure_route: f64,
    /// The same for secure routes whose first answer passed.
    messages_per_secure_route_first_passed: f64,
    /// Secure deliveries per route (to the chosen set, and on from receivers to members left
    /// out).
    deliveries_per_route: f64,
    /// Deliveries that receivers handed on to members the chosen set left out, per route.
    closure_per_route: f64,
}

fn messages_of_kind(sim: &Sim, kind: &str) -> u64 {
    sim.counters
        .by_kind
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map_or(0, |(_, n, _)| *n)
}

fn sum_closure(sim: &Sim) -> u64 {
    sim.nodes
        .iter()
        .map(|n| n.node.overlay().stats().secure_closure)
        .sum()
}

/// Turns a random fraction `f` of `sim`'s nodes Byzantine, colluding with `attack`; returns
/// them and the correct nodes.
pub(crate) fn turn_byzantine(sim: &mut Sim, f: f64, attack: Attack) -> (Vec<u32>, Vec<u32>) {
    let n = sim.nodes.len();
    let mut all: Vec<u32> = (0..n as u32).collect();
    all.shuffle(&mut sim.rng);
    let byz: Vec<u32> = all[..(f * n as f64).round() as usize].to_vec();
    // Forged answers name as many ids as a correct one (the outer leaf set and its owner).
    let l1 = 2 * sim.cfg.overlay.leaf_set_size + 1;
    let colluders = Colluders::new(byz.iter().map(|&i| sim.contact(i)).collect(), attack, l1);
    sim.set_byzantine(&byz, (!byz.is_empty()).then_some(colluders));
    let correct = all[byz.len()..].to_vec();
    (byz, correct)
}

/// Measures one fraction `f` on `sim` (its Byzantine set chosen here).
fn measure(ctx: &Ctx, sim: &mut Sim, f: f64, attack: Attack, mean_hops: f64) -> Point {
    let (byz, correct) = turn_byzantine(sim, f, attack);
    let ring = Ring::of(sim);

    // Plain routing: route probes from correct nodes; reached = the true root answered.
    let plain_n = ctx.params.routes.unwrap_or(PLAIN_ROUTES);
    let routes: Vec<(u32, Id)> = (0..plain_n)
        .map(|_| {
            let s = correct[sim.rng.gen_range(0..correct.len())];
            (s, Id::from_bytes(sim.rng.gen()))
        })
        .collect();
    let bar = ctx
        .params
        .bar(plain_n as u64, &format!("plain routes f={f}"));
    let m0 = sim.counters.messages;
    let reports = sim.route_many(&routes, 2_000, |k| bar.inc(k as u64));
    let plain_messages = (sim.counters.messages - m0) as f64 / plain_n.max(1) as f64;
    bar.finish_and_clear();
    let reached = reports
        .iter()
        .zip(&routes)
        .filter(|(r, (_, key))| r.as_ref().is_some_and(|r| r.root.id == ring.root(key)))
        .count();

    // Secure routes, one at a time so each one's messages can be counted.
    let sec_n = ctx.params.routes.unwrap_or(ROUTES);
    let bar = ctx
        .params
        .bar(sec_n as u64, &format!("secure routes f={f}"));
    let (mut ok, mut redundant, mut fp, mut fn_, mut bad_first, mut honest_first) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    let (mut failed_redundant, mut failed_accepted) = (0usize, 0usize);
    let mut msgs: Vec<u64> = Vec::new();
    let mut msgs_plain: Vec<u64> = Vec::new();
    let mut deliveries: Vec<u64> = Vec::new();
    let closure0 = sum_closure(sim);
    for _ in 0..sec_n {
        let src = correct[sim.rng.gen_range(0..correct.len())];
        let key = Id::from_bytes(sim.rng.gen());
        let (m0, d0) = (
            sim.counters.messages,
            messages_of_kind(sim, "secure_deliver"),
        );
        let before = sim.secure_reports.len();
        let msg = AppMessage {
            app: SINK_APP,
            body: Vec::new(),
        };
        let id = sim.with_node(src, |node, now| {
            node.with_service::<Sink, _>(now, |_, kbr| {
                kbr.sec_route(key, msg, R, Redundancy::OnFailure)
            })
        });
        let limit = sim.now + ROUTE_LIMIT;
        sim.drain(limit);
        let report = sim.secure_reports[before..]
            .iter()
            .find(|(i, r)| *i == src && Some(r.id) == id)
            .map(|(_, r)| r.clone());
        let delivered = messages_of_kind(sim, "secure_deliver") - d0;
        let total = sim.counters.messages - m0;
        deliveries.push(delivered);
        msgs.push(total - delivered);
        let truth: Vec<Id> = ring.closest(&key, R as usize);
        let correct_truth: Vec<u32> = truth
            .iter()
            .filter_map(|id| ring.node_of(id))
            .filter(|&j| !sim.is_byzantine(j))
            .collect();
        let all_got = correct_truth.iter().all(|&j| {
            sim.with_node(j, |node, now| {
                node.with_service::<Sink, _>(now, |s, _| s.got.remove(&key))
                    .unwrap_or(false)
            })
        });
        ok += all_got as usize;
        if let Some(r) = report {
            let first_ok = correct_truth.iter().all(|&j| r.first.contains(&sim.id(j)));
            if first_ok {
                honest_first += 1;
            } else {
                bad_first += 1;
            }
            if !all_got {
                if r.redundant {
                    failed_redundant += 1;
                } else {
                    failed_accepted += 1;
                }
            }
            if r.redundant {
                redundant += 1;
                fp += first_ok as usize;
            } else {
                msgs_plain.push(total - delivered);
                fn_ += (!first_ok) as usize;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let closure = sum_closure(sim) - closure0;
    sim.set_byzantine(&[], None);
    let s = sec_n.max(1) as f64;
    Point {
        f,
        byzantine: byz.len(),
        plain_routes: plain_n,
        plain_reached_root: r6(reached as f64 / plain_n.max(1) as f64),
        analytic: r6((1.0 - f).powf(mean_hops - 1.0)),
        secure_routes: sec_n,
        secure_delivered_all: r6(ok as f64 / s),
        redundant: r6(redundant as f64 / s),
        false_positive: r6(fp as f64 / honest_first.max(1) as f64),
        false_negative: r6(fn_ as f64 / bad_first.max(1) as f64),
        bad_first_answers: bad_first,
        failed_accepted_forgery: failed_accepted,
        failed_after_redundant: failed_redundant,
        messages_per_plain_route: r6(plain_messages),
        messages_per_secure_route: r6(mean(&msgs)),
        messages_per_secure_route_first_passed: r6(mean(&msgs_plain)),
        deliveries_per_route: r6(mean(&deliveries)),
        closure_per_route: r6(closure as f64 / s),
    }
}

/// `secure-routing`: plain and secure routing under f colluding Byzantine nodes.
pub(crate) fn secure_routing(ctx: &mut Ctx) -> Report {
    let n = ctx.params.nodes.unwrap_or(N);
    let cfg = ctx.params.overlay(4, 16, 32);
    let rss0 = rss_bytes();
    let mut sim = build_global(ctx, cfg, n, |_, node| {
        node.add_service(Box::<Sink>::default())
    });
    // Table sizes, for the memory figure.
    let (mut prox, mut cons) = (0usize, 0usize);
    for node in &sim.nodes {
        let o = node.node.overlay();
        prox += o.routing_table().entries().count();
        cons += o.constrained_table().map_or(0, |t| t.entries().count());
    }
    let peer_bytes = std::mem::size_of::<Peer>() as f64;
    let hops = {
        let alive = sim.alive();
        let routes: Vec<(u32, Id)> = (0..2_000)
            .map(|_| {
                (
                    alive[sim.rng.gen_range(0..alive.len())],
                    Id::from_bytes(sim.rng.gen()),
                )
            })
            .collect();
        let r = sim.route_many(&routes, 2_000, |_| {});
        let h: Vec<u64> = r.iter().flatten().map(|r| r.hops() as u64).collect();
        mean(&h)
    };
    // Every fraction against both forgeries; the headline and the plot take the worse one.
    let mut points: Vec<(Point, &str)> = Vec::new();
    let mut worst: Vec<(Point, &str)> = Vec::new();
    for &f in &FRACTIONS {
        let attacks: &[(Attack, &str)] = if f > 0.0 {
            &[
                (Attack::FakeRoot, "fake-root"),
                (Attack::Suppress, "suppress"),
            ]
        } else {
            &[(Attack::FakeRoot, "none")]
        };
        let mut here: Vec<(Point, &str)> = Vec::new();
        for &(attack, name) in attacks {
            let p = measure(ctx, &mut sim, f, attack, hops);
            eprintln!(
                "secure-routing N={n} f={f} attack {name}: plain {:.4} (analytic {:.4}), secure {:.4}, redundant {:.4}, fp {:.4}, fn {:.4}, {:.1} msgs (plain route {:.1}), closure {:.3}/route",
                p.plain_reached_root,
                p.analytic,
                p.secure_delivered_all,
                p.redundant,
                p.false_positive,
                p.false_negative,
                p.messages_per_secure_route,
                p.messages_per_plain_route,
                p.closure_per_route,
            );
            here.push((p, name));
        }
        let w = here
            .iter()
            .min_by(|a, b| {
                a.0.secure_delivered_all
                    .total_cmp(&b.0.secure_delivered_all)
            })
            .cloned()
            .expect("at least one attack");
        worst.push(w);
        points.extend(here);
    }
    let mut t = Table::new(
        "fractions",
        &[
            "f",
            "attack",
            "plain_reached_root",
            "analytic",
            "secure_delivered_all",
            "redundant",
            "false_positive",
            "false_negative",
            "messages_secure",
            "messages_plain",
            "deliveries",
            "closure",
        ],
    );
    for (p, attack) in &points {
        t.row(vec![
            json!(p.f),
            json!(attack),
            json!(p.plain_reached_root),
            json!(p.analytic),
            json!(p.secure_delivered_all),
            json!(p.redundant),
            json!(p.false_positive),
            json!(p.false_negative),
            json!(p.messages_per_secure_route),
            json!(p.messages_per_plain_route),
            json!(p.deliveries_per_route),
            json!(p.closure_per_route),
        ]);
    }
    let series = |label: &str, y: fn(&Point) -> f64| Series {
        label: label.into(),
        points: worst.iter().map(|(p, _)| (p.f, y(p))).collect(),
    };
    let plot = Plot {
        name: "delivery".into(),
        title: format!("Routing under attack, N = {n}, b = 4, L = 16, r = {R}"),
        x_label: "fraction of colluding Byzantine nodes f".into(),
        y_label: "probability".into(),
        kind: PlotKind::Line,
        log_x: false,
        series: vec![
            series("sec_route: every correct replica root", |p| {
                p.secure_delivered_all
            }),
            series("plain routing: true root", |p| p.plain_reached_root),
            series("analytic (1 - f)^(h - 1)", |p| p.analytic),
        ],
    };
    ctx.account(&sim, rss0);
    let no_attack = &points[0].0;
    Report {
        experiment: "secure-routing".into(),
        seed: ctx.params.seed,
        parameters: serde_json::to_value(&ctx.params).expect("parameters serialise"),
        figures: json!({
            "nodes": n,
            "r": R,
            "gamma": sim.cfg.overlay.gamma,
            "mean_hops_no_attack": r6(hops),
            "secure_overhead_no_attack": r6(
                no_attack.messages_per_secure_route
                    / no_attack.messages_per_plain_route.max(1e-9)
                    - 1.0
            ),
            "failure_test_fires_no_attack": no_attack.redundant,
            "proximity_table_entries_per_node": r6(prox as f64 / n as f64),
            "constrained_table_entries_per_node": r6(cons as f64 / n as f64),
            "proximity_table_bytes_per_node": r6(prox as f64 * peer_bytes / n as f64),
            "constrained_table_bytes_per_node": r6(cons as f64 * peer_bytes / n as f64),
            "constrained_table_built_from": "global knowledge (exact by construction); the secure join is not measured here",
            "worst_per_fraction": worst.iter().map(|(p, a)| json!({"attack": a, "figures": p})).collect::<Vec<_>>(),
            "points": points.iter().map(|(p, a)| json!({"attack": a, "figures": p})).collect::<Vec<_>>(),
        }),
        tables: vec![t],
        plots: vec![plot],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_hold_exactly_the_ids_with_that_prefix() {
        let x = Id::from_bytes([0xab; 32]);
        let (lo, hi) = prefix_range(&x, 1, 0x3, 4);
        assert_eq!(lo.as_bytes()[0], 0xa3);
        assert!(lo.as_bytes()[1..].iter().all(|&b| b == 0));
        let hi = hi.unwrap();
        assert_eq!(hi.as_bytes()[0], 0xa4);
        let (_, top) = prefix_range(&Id::from_bytes([0xff; 32]), 0, 0xf, 4);
        assert_eq!(top, None);
    }
}
