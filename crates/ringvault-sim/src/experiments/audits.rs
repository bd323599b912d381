//! `audits`: storage audits (`ringvault_past::AuditConfig`) on a ring under churn, with a
//! share of the nodes that sign receipts and keep offering their replicas in maintenance but
//! throw the data away (`forge::Dropper`), and a run where those nodes also accuse correct
//! neighbours at random instead of auditing.
//!
//! The ring is built from global knowledge with keep-alives and table repair on (every 10 s,
//! failures declared after 30 s: longer than the daemon's defaults, so a day of churn stays
//! affordable), then 2 objects per node (2 KiB, k = 3) are inserted through random nodes, and
//! every node's session lasts an exponentially distributed time (median 30 minutes); a node
//! that fails is replaced by a newcomer, a dropper with the same probability. Every minute
//! the experiment looks from outside: a dropper is passed over once some correct node suspects
//! it, and caught once a majority of its true leaf set (the 8 live nodes on each side) does; a
//! correct node is framed once a majority of its leaf set does (only correct nodes' suspicions
//! count: a faulty node's change only its own view); an accusation is false when a correct node
//! reported a correct one. At
//! the end it counts the objects that still have k correct replicas (live correct nodes holding
//! a good copy), and how close the other holders of each object lie to a holder: a node that
//! dropped a range and fetches it from the nearest other holder needs that round trip, which
//! the deadline (the auditor's RTT to it plus the slack) must not allow.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use ringvault_node::Node;
use ringvault_past::forge::Dropper;
use ringvault_past::{
    AuditConfig, Kind, MemoryStore, Past, PastConfig, PastEvent, RequestId, Store,
};
use ringvault_types::{Duration, Id, Identity, Time};
use serde::Serialize;
use serde_json::json;

use super::churn::session;
use super::past::node_identity;
use super::secure::build_global_with;
use super::{percentile, r6, Ctx};
use crate::check::Ring;
use crate::perf::rss_bytes;
use crate::report::{Plot, PlotKind, Report, Series, Table};
use crate::Sim;

/// Default network size.
const N: usize = 10_000;
/// Default simulated hours.
const HOURS: f64 = 24.0;
/// Replicas per object.
const K: u8 = 3;
/// Objects inserted per node of the ring.
const OBJECTS_PER_NODE: usize = 2;
/// Bytes per object.
const OBJECT_BYTES: usize = 2048;
/// Median session, minutes.
const MEDIAN_SESSION_MIN: f64 = 30.0;
/// How often the experiment looks.
const CHECK: Duration = Duration::from_secs(60);
/// Inserts in flight at once while the objects go in.
const WINDOW: usize = 256;
/// Keep-alive interval and failure time-out of this experiment.
const KEEPALIVE: Duration = Duration::from_secs(10);
const FAILURE_TIMEOUT: Duration = Duration::from_secs(30);

/// One run: the share of droppers, whether audits run, whether droppers audit falsely, and
/// the message loss.
#[derive(Clone, Copy, Debug, Serialize)]
struct Run {
    droppers: f64,
    audits: bool,
    false_audits: bool,
    loss: f64,
}

const RUNS: [Run; 10] = [
    Run {
        droppers: 0.0,
        audits: true,
        false_audits: false,
        loss: 0.0,
    },
    Run {
        droppers: 0.0,
        audits: false,
        false_audits: false,
        loss: 0.0,
    },
    Run {
        droppers: 0.05,
        audits: true,
        false_audits: false,
        loss: 0.0,
    },
    Run {
        droppers: 0.10,
        audits: true,
        false_audits: false,
        loss: 0.0,
    },
    Run {
        droppers: 0.25,
        audits: true,
        false_audits: false,
        loss: 0.0,
    },
    Run {
        droppers: 0.25,
        audits: true,
        false_audits: true,
        loss: 0.0,
    },
    Run {
        droppers: 0.10,
        audits: true,
        false_audits: false,
        loss: 0.01,
    },
    Run {
        droppers: 0.05,
        audits: false,
        false_audits: false,
        loss: 0.0,
    },
    Run {
        droppers: 0.10,
        audits: false,
        false_audits: false,
        loss: 0.0,
    },
    Run {
        droppers: 0.25,
        audits: false,
        false_audits: false,
        loss: 0.0,
    },
];

#[derive(Clone, Debug, Serialize)]
struct Point {
    #[serde(flatten)]
    run: Run,
    n: usize,
    hours: f64,
    objects: usize,
    objects_stored: usize,
    /// Droppers that lived in the ring (the initial ones and newcomers).
    droppers: usize,
    /// Of them, those that held at least one replica some correct node could audit them on
    /// at some check (only those can be caught).
    droppers_auditable: usize,
    droppers_caught: usize,
    /// Minutes from joining to being caught, for the caught ones.
    catch_min_p50: f64,
    catch_min_p99: f64,
    /// Droppers some correct node suspected (its own failed audit: it stops counting the
    /// dropper as a holder), and minutes from joining to that.
    droppers_excluded: usize,
    exclude_min_p50: f64,
    exclude_min_p99: f64,
    /// Correct nodes a majority of their leaf set suspected at some check.
    correct_framed: usize,
    /// Distinct (correct accuser, correct target) reports seen at the checks.
    false_accusations: usize,
    /// Of all reports by correct nodes, the share naming a correct node.
    false_accusation_share: f64,
    /// Objects with k correct replicas at the end.
    objects_k_correct: f64,
    /// Audit bytes sent, per live node per second.
    audit_bytes_per_node_sec: f64,
    /// Holders whose nearest other holder of the same object lies within the slack (a round
    /// trip): a dropper there could fetch an audited range in time. And within four times the
    /// slack (the second try).
    fetch_within_slack: f64,
    fetch_within_retry: f64,
    /// Round trip from a holder to the nearest other holder, ms: 1st, 10th and 50th
    /// percentiles.
    nearest_other_holder_rtt_ms_p1: f64,
    nearest_other_holder_rtt_ms_p10: f64,
    nearest_other_holder_rtt_ms_p50: f64,
    failures: usize,
}

/// Audits as the daemons run them, with a slack of 10 ms: the simulated nodes answer at once
/// (no disk, no load), and the model's round trips between holders are tens of milliseconds,
/// so the slack must be well under them for the deadline to mean anything.
fn audit_config() -> AuditConfig {
    AuditConfig {
        slack: Duration::from_millis(10),
        ..AuditConfig::default()
    }
}

fn past_of<R>(sim: &mut Sim, i: u32, f: impl FnOnce(&mut Past) -> R) -> R {
    sim.with_node(i, |node: &mut Node, now| {
        node.with_service::<Past, _>(now, |p, _| f(p))
            .expect("every node runs PAST")
    })
}

/// Adds a node (the `i`th ever); a dropper with the run's probability (answered).
fn add_node(sim: &mut Sim, seed: u64, i: u32, run: Run) -> (u32, bool) {
    let identity = node_identity(seed, i);
    let dropper = sim.rng.gen_bool(run.droppers);
    let key = Identity::from_secret_bytes(identity.secret_bytes());
    let i = sim.add_node_with_id(identity.id(), move |node| {
        let config = PastConfig {
            audit: run.audits.then(audit_config),
            ..PastConfig::default()
        };
        let memory: Box<dyn Store> = Box::new(MemoryStore::new(64 << 20));
        let store: Box<dyn Store> = if dropper {
            Box::new(Dropper(memory))
        } else {
            memory
        };
        let mut past = Past::with_config(key, store, config).expect("a valid config");
        if dropper && run.false_audits {
            past.audit_falsely();
        }
        node.add_service(Box::new(past));
    });
    (i, dropper)
}

/// Inserts the objects through random live nodes; answers their ids (those stored).
fn insert_objects(sim: &mut Sim, count: usize) -> Vec<Id> {
    let owner = Identity::from_secret_bytes([77; 32]);
    let mut flying: BTreeMap<(u32, RequestId), usize> = BTreeMap::new();
    let mut stored = Vec::new();
    let mut next = 0;
    while next < count || !flying.is_empty() {
        while next < count && flying.len() < WINDOW {
            let from = sim.random_alive();
            let name = format!("audited-{next}");
            let content = vec![(next % 251) as u8; OBJECT_BYTES];
            let owner = &owner;
            let req = sim.with_node(from, |node, now| {
                node.with_service::<Past, _>(now, |p, kbr| {
                    p.insert(kbr, now, owner, &name, content, K, 0)
                })
            });
            if let Some(Ok(req)) = req {
                flying.insert((from, req), next);
            }
            next += 1;
        }
        let slice = sim.now + Duration::from_millis(20);
        sim.run_until(slice, |_| false);
        let busy: BTreeSet<u32> = flying.keys().map(|k| k.0).collect();
        for i in busy {
            let events: Vec<PastEvent> =
                past_of(sim, i, |p| std::iter::from_fn(|| p.poll_event()).collect());
            for e in events {
                if let PastEvent::Inserted(req, r) = e {
                    if flying.remove(&(i, req)).is_some() {
                        if let Ok(ins) = r {
                            stored.push(ins.cert.id());
                        }
                    }
                }
            }
        }
    }
    stored
}

/// What the experiment tracks across checks.
#[derive(Default)]
struct Watch {
    /// Live droppers: when they joined.
    joined: BTreeMap<u32, Time>,
    droppers: usize,
    auditable: BTreeSet<u32>,
    caught: BTreeMap<u32, Duration>,
    excluded: BTreeMap<u32, Duration>,
    framed: BTreeSet<u32>,
    false_reports: BTreeSet<(u32, Id)>,
    reports: BTreeSet<(u32, Id)>,
}

/// Looks at the ring from outside (see the module's documentation).
fn check(sim: &mut Sim, watch: &mut Watch, objects: &[Id]) {
    let ring = Ring::of(sim);
    let ids = ring.ids().to_vec();
    let n = ids.len();
    let index: BTreeMap<Id, u32> = sim.alive().into_iter().map(|i| (sim.id(i), i)).collect();
    let pos: BTreeMap<Id, usize> = ids.iter().enumerate().map(|(p, id)| (*id, p)).collect();
    let droppers: BTreeSet<Id> = watch.joined.keys().map(|&i| sim.id(i)).collect();
    // Every live node's suspects and reports.
    let mut suspected_by: BTreeMap<Id, BTreeSet<Id>> = BTreeMap::new();
    for (&id, &i) in &index {
        let (suspects, accused) = past_of(sim, i, |p| {
            let s = p.audit_report().map(|r| r.1).unwrap_or_default();
            (s, p.audit_accused())
        });
        // Only correct nodes' suspicions count: a faulty node's change nothing but its own
        // view.
        if !droppers.contains(&id) {
            for s in suspects {
                suspected_by.entry(s).or_default().insert(id);
            }
        }
        if !droppers.contains(&id) {
            for t in accused {
                watch.reports.insert((i, t));
                if !droppers.contains(&t) && index.contains_key(&t) {
                    watch.false_reports.insert((i, t));
                }
            }
        }
    }
    let leaf_of = |p: usize| -> Vec<Id> {
        (1..=8.min(n / 2))
            .flat_map(|d| [ids[(p + d) % n], ids[(p + n - d) % n]])
            .collect()
    };
    let now = sim.now;
    for (&id, &i) in &index {
        let Some(&p) = pos.get(&id) else {
            continue;
        };
        let leaf = leaf_of(p);
        let by = suspected_by.get(&id);
        let votes = leaf
            .iter()
            .filter(|l| by.is_some_and(|b| b.contains(l)))
            .count();
        let majority = votes > leaf.len() / 2;
        if droppers.contains(&id) {
            let joined = watch.joined.get(&i).copied().unwrap_or(Time::ZERO);
            if by.is_some_and(|b| !b.is_empty()) && !watch.excluded.contains_key(&i) {
                watch.excluded.insert(i, now.saturating_since(joined));
            }
            if majority && !watch.caught.contains_key(&i) {
                watch.caught.insert(i, now.saturating_since(joined));
            }
        } else if majority {
            watch.framed.insert(i);
        }
    }
    // Droppers that hold a replica a correct node also holds: they can be audited.
    for &oid in objects {
        for h in ring.closest(&oid, K as usize) {
            let Some(&i) = index.get(&h) else {
                continue;
            };
            if droppers.contains(&h) && !watch.auditable.contains(&i) {
                let held = past_of(sim, i, |p| matches!(p.store().meta(&oid), Ok(Some(_))));
                if held {
                    watch.auditable.insert(i);
                }
            }
        }
    }
}

/// Objects with k live correct holders of a good copy; and, over (object, correct holder)
/// pairs, the round trip to the nearest other live holder.
fn at_end(sim: &mut Sim, watch: &Watch, objects: &[Id]) -> (f64, Vec<Duration>) {
    let alive = sim.alive();
    let correct: Vec<u32> = alive
        .iter()
        .copied()
        .filter(|i| !watch.joined.contains_key(i))
        .collect();
    let mut holders: BTreeMap<Id, Vec<u32>> = BTreeMap::new();
    for &i in &correct {
        let good: Vec<Id> = past_of(sim, i, |p| {
            objects
                .iter()
                .filter(|id| {
                    p.store().get(id).ok().flatten().is_some_and(|o| {
                        o.kind != Kind::Cached && o.cert.matches_content(&o.content)
                    })
                })
                .copied()
                .collect()
        });
        for id in good {
            holders.entry(id).or_default().push(i);
        }
    }
    let whole = objects
        .iter()
        .filter(|id| holders.get(id).is_some_and(|h| h.len() >= K as usize))
        .count();
    let mut nearest = Vec::new();
    for hs in holders.values() {
        for &a in hs {
            let rtt = hs
                .iter()
                .filter(|&&b| b != a)
                .map(|&b| sim.delay(a, b) + sim.delay(b, a))
                .min();
            if let Some(r) = rtt {
                nearest.push(r);
            }
        }
    }
    (r6(whole as f64 / objects.len().max(1) as f64), nearest)
}

fn measure(ctx: &mut Ctx, run: Run) -> Point {
    let n = ctx.params.nodes.unwrap_or(N);
    let hours = ctx.params.hours.unwrap_or(HOURS);
    let seed = ctx.params.seed;
    let mut cfg = ctx.params.overlay(4, 16, 32);
    cfg.keepalive_interval = KEEPALIVE;
    cfg.failure_timeout = FAILURE_TIMEOUT;
    let rss0 = rss_bytes();
    let mut watch = Watch::default();
    let mut sim = build_global_with(ctx, cfg, n, |sim, i| {
        let (i, dropper) = add_node(sim, seed, i, run);
        if dropper {
            watch.joined.insert(i, Time::ZERO);
            watch.droppers += 1;
        }
    });
    sim.cfg.overlay.keepalives = true;
    sim.cfg.overlay.table_repair = true;
    let now = sim.now;
    for i in sim.alive() {
        sim.with_node(i, |node, _| {
            node.overlay_mut().set_maintenance(now, true, true)
        });
    }
    let objects = insert_objects(&mut sim, n * OBJECTS_PER_NODE);
    sim.cfg.loss = run.loss;
    let median = Duration::from_micros((MEDIAN_SESSION_MIN * 60e6) as u64);
    let mut deaths: BTreeSet<(Time, u32)> = BTreeSet::new();
    for i in sim.alive() {
        let t = sim.now + session(&mut sim, median);
        deaths.insert((t, i));
    }
    let start = sim.now;
    let end = start + Duration::from_micros((hours * 3600e6) as u64);
    let label = format!(
        "audits {}, {:.0}% droppers{}",
        if run.audits { "on" } else { "off" },
        run.droppers * 100.0,
        if run.false_audits {
            " auditing falsely"
        } else {
            ""
        }
    );
    let bar = ctx
        .params
        .bar(end.saturating_since(start).as_micros() / 1_000_000, &label);
    let mut next_check = start + CHECK;
    let (mut node_secs, mut failures) = (0f64, 0usize);
    let mut added = n as u32;
    loop {
        let next_death = deaths.first().map_or(Time::NEVER, |d| d.0);
        let t = next_death.min(next_check).min(end);
        let before = sim.now;
        sim.run_until(t, |_| false);
        let live = sim.nodes.iter().filter(|x| x.alive).count();
        node_secs += live as f64 * (sim.now - before).as_secs_f64();
        bar.set_position(sim.now.saturating_since(start).as_micros() / 1_000_000);
        if t >= end {
            break;
        }
        if t == next_death {
            let (_, v) = deaths.pop_first().expect("a death");
            sim.kill(v);
            watch.joined.remove(&v);
            failures += 1;
            let (i, dropper) = add_node(&mut sim, seed, added, run);
            added += 1;
            if dropper {
                watch.joined.insert(i, sim.now);
                watch.droppers += 1;
            }
            sim.start_join_nearest(i);
            let now = sim.now;
            sim.with_node(i, |node, _| {
                node.overlay_mut().set_maintenance(now, true, true)
            });
            let life = session(&mut sim, median);
            deaths.insert((sim.now + life, i));
        } else {
            next_check = t + CHECK;
            check(&mut sim, &mut watch, &objects);
        }
    }
    bar.finish_and_clear();
    check(&mut sim, &mut watch, &objects);
    let (whole, mut nearest) = at_end(&mut sim, &watch, &objects);
    let audit_bytes: u64 = (0..sim.nodes.len() as u32)
        .map(|i| past_of(&mut sim, i, |p| p.audit_report().map_or(0, |r| r.0.bytes)))
        .sum();
    ctx.account(&sim, rss0);
    let slack = audit_config().slack;
    nearest.sort();
    let within = |d: Duration| {
        r6(nearest.iter().filter(|r| **r <= d).count() as f64 / nearest.len().max(1) as f64)
    };
    let mut minutes: Vec<u64> = watch
        .caught
        .values()
        .map(|d| d.as_micros() / 1_000)
        .collect();
    let p50 = percentile(&mut minutes, 50.0) as f64 / 60_000.0;
    let p99 = percentile(&mut minutes, 99.0) as f64 / 60_000.0;
    let mut ex: Vec<u64> = watch
        .excluded
        .values()
        .map(|d| d.as_micros() / 1_000)
        .collect();
    let ex50 = percentile(&mut ex, 50.0) as f64 / 60_000.0;
    let ex99 = percentile(&mut ex, 99.0) as f64 / 60_000.0;
    let mut rtts: Vec<u64> = nearest.iter().map(|d| d.as_micros()).collect();
    Point {
        run,
        n,
        hours,
        objects: n * OBJECTS_PER_NODE,
        objects_stored: objects.len(),
        droppers: watch.droppers,
        droppers_auditable: watch.auditable.len(),
        droppers_caught: watch.caught.len(),
        catch_min_p50: r6(p50),
        catch_min_p99: r6(p99),
        droppers_excluded: watch.excluded.len(),
        exclude_min_p50: r6(ex50),
        exclude_min_p99: r6(ex99),
        correct_framed: watch.framed.len(),
        false_accusations: watch.false_reports.len(),
        false_accusation_share: r6(
            watch.false_reports.len() as f64 / watch.reports.len().max(1) as f64
        ),
        objects_k_correct: whole,
        audit_bytes_per_node_sec: r6(audit_bytes as f64 / node_secs.max(1e-9)),
        fetch_within_slack: within(slack),
        fetch_within_retry: within(slack.mul(4)),
        nearest_other_holder_rtt_ms_p1: percentile(&mut rtts, 1.0) as f64 / 1000.0,
        nearest_other_holder_rtt_ms_p10: percentile(&mut rtts, 10.0) as f64 / 1000.0,
        nearest_other_holder_rtt_ms_p50: percentile(&mut rtts, 50.0) as f64 / 1000.0,
        failures,
    }
}

pub(crate) fn audits(ctx: &mut Ctx) -> Report {
    let points: Vec<Point> = RUNS.iter().map(|&run| measure(ctx, run)).collect();
    let mut t = Table::new(
        "audits",
        &[
            "droppers",
            "audits",
            "false_audits",
            "loss",
            "droppers_total",
            "auditable",
            "caught",
            "catch_min_p50",
            "catch_min_p99",
            "excluded",
            "exclude_min_p50",
            "correct_framed",
            "false_accusations",
            "false_accusation_share",
            "objects_k_correct",
            "audit_bytes_per_node_s",
            "fetch_within_slack",
            "fetch_within_retry",
        ],
    );
    for p in &points {
        t.row(vec![
            json!(p.run.droppers),
            json!(p.run.audits),
            json!(p.run.false_audits),
            json!(p.run.loss),
            json!(p.droppers),
            json!(p.droppers_auditable),
            json!(p.droppers_caught),
            json!(p.catch_min_p50),
            json!(p.catch_min_p99),
            json!(p.droppers_excluded),
            json!(p.exclude_min_p50),
            json!(p.correct_framed),
            json!(p.false_accusations),
            json!(p.false_accusation_share),
            json!(p.objects_k_correct),
            json!(p.audit_bytes_per_node_sec),
            json!(p.fetch_within_slack),
            json!(p.fetch_within_retry),
        ]);
    }
    let series = |audits: bool| Series {
        label: format!("audits {}", if audits { "on" } else { "off" }),
        points: points
            .iter()
            .filter(|p| p.run.audits == audits && !p.run.false_audits && p.run.loss == 0.0)
            .map(|p| (p.run.droppers, p.objects_k_correct))
            .collect(),
    };
    let p = &ctx.params;
    Report {
        experiment: "audits".into(),
        seed: p.seed,
        parameters: json!({ "common": p, "n": p.nodes.unwrap_or(N), "hours": p.hours.unwrap_or(HOURS),
            "k": K, "objects_per_node": OBJECTS_PER_NODE, "object_bytes": OBJECT_BYTES,
            "median_session_min": MEDIAN_SESSION_MIN, "check_secs": CHECK.as_secs_f64(),
            "keepalive_secs": KEEPALIVE.as_secs_f64(), "failure_timeout_secs": FAILURE_TIMEOUT.as_secs_f64(),
            "audit_interval_secs": audit_config().interval.as_secs_f64(),
            "audit_slack_ms": audit_config().slack.as_millis_f64(),
            "accusation_window_secs": audit_config().window.as_secs_f64() }),
        figures: json!({ "points": points }),
        tables: vec![t],
        plots: vec![Plot {
            name: "k_correct".into(),
            title: "Objects with k correct replicas at the end".into(),
            x_label: "share of droppers".into(),
            y_label: "share of objects".into(),
            kind: PlotKind::Line,
            log_x: false,
            series: vec![series(true), series(false)],
        }],
    }
}
