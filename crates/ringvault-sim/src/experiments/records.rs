//! `records`: signed mutable records (`ringvault_records`, k = 3) on a ring under churn, with a
//! tenth of the nodes serving stale versions, read with and without read repair.
//!
//! The ring is built from global knowledge, then keep-alives and table repair are turned on and
//! every node's session lasts an exponentially distributed time (median 30 minutes); a node that
//! fails (silently, its records with it) is replaced by a newcomer joining through its nearest
//! live node. A tenth of the nodes, newcomers included, lose every write sent to them
//! (`Records::lose_writes`): they keep serving the version they had until maintenance (every
//! minute, and after each leaf set change) or a read brings them the newer one.
//!
//! A set of records is written once, then, for the measured ten minutes, random records are
//! overwritten (each at one above its last version, through a random live node; done at a
//! majority, 2 of k = 3, acknowledgements) and read through random live nodes. A read counts as returning the latest
//! completed version when the version it returns is at least the highest whose write had
//! completed when the read started. Four runs on the same seed (same network, same stale nodes
//! at the start): majority reads (the default; they overlap every completed write) with and
//! without read repair, and reads that end at the first answer holding the record, with and
//! without it. The last is the negative control: there stale replicas must show. Bytes are the records service's own
//! (`Records::stats`): answers to reads, read repair, and maintenance.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use ringvault_node::Node;
use ringvault_records::{Records, RecordsConfig, RecordsEvent, RecordsStats, RequestId};
use ringvault_types::{Duration, Identity, Record, RecordValue, Time};
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
/// Records written.
const RECORDS: usize = 1_000;
/// Replicas per record.
const K: u8 = 3;
/// Acknowledgements a write waits for: a majority, so that it completes with a stale replica
/// in the set (at k, any write to a set holding one would fail, and the reads measured would
/// only see records no stale node holds). Reads take a majority too: the two overlap.
const W: u8 = 2;
/// The fraction of nodes that lose writes (serve stale versions).
const STALE: f64 = 0.10;
/// Median session, minutes.
const MEDIAN_SESSION_MIN: f64 = 30.0;
/// Simulated time between the first writes and the measurement.
const WARMUP: Duration = Duration::from_secs(60);
/// Simulated time measured.
const MEASURE: Duration = Duration::from_secs(600);
/// One overwrite every this often.
const WRITE_EVERY: Duration = Duration::from_millis(100);
/// One read every this often (when `--routes` does not say how many).
const READ_EVERY: Duration = Duration::from_millis(50);
/// How often finished requests are collected.
const POLL: Duration = Duration::from_millis(10);
/// Bytes of a record's value.
const VALUE: usize = 100;

#[derive(Clone, Debug, Serialize)]
struct Point {
    read_repair: bool,
    /// Answers that end a read (one of them holding the record).
    read_quorum: u8,
    n: usize,
    records: usize,
    /// Nodes that lose writes at the start.
    stale_nodes: usize,
    writes: usize,
    writes_completed: f64,
    reads: usize,
    /// Reads of a record none of whose writes had completed yet: left out of the shares below
    /// (they would count as "latest" whatever they returned).
    reads_unwritten: usize,
    /// Of the other reads: those that returned at least the latest version completed before
    /// they started.
    reads_latest: f64,
    /// Reads that returned an older version.
    reads_stale: f64,
    /// Reads that failed (timeout, or their node died).
    reads_failed: f64,
    read_ms_p50: u64,
    read_ms_p99: u64,
    /// Replicas sent a newer version by reads, per read.
    repairs_per_read: f64,
    /// Read repair bytes, per read.
    repair_bytes_per_read: f64,
    /// Answer bytes per read (every replica asked answers).
    answer_bytes_per_read: f64,
    /// Maintenance bytes (offers, wants, records moved), per live node per second.
    maintenance_bytes_per_node_sec: f64,
    /// At the end: of each record's k closest live nodes, the share holding its latest
    /// completed version.
    replicas_up_to_date_at_end: f64,
    failures: usize,
}

/// One record's owner and name.
fn record_of(owners: &[Identity], r: usize, version: u64) -> Record {
    let value = RecordValue::Inline(vec![(r % 251) as u8; VALUE]);
    Record::sign(
        &owners[r % owners.len()],
        &format!("r{r}"),
        version,
        0,
        value,
    )
    .expect("a valid record")
}

fn records_of<R>(sim: &mut Sim, i: u32, f: impl FnOnce(&mut Records) -> R) -> R {
    sim.with_node(i, |node: &mut Node, now| {
        node.with_service::<Records, _>(now, |r, _| f(r))
            .expect("every node runs records")
    })
}

/// Every node's stats, summed (the dead's too: what they sent before they died).
fn total_stats(sim: &mut Sim) -> RecordsStats {
    let mut t = RecordsStats::default();
    for i in 0..sim.nodes.len() as u32 {
        let s = records_of(sim, i, |r| r.stats());
        t.repairs += s.repairs;
        t.repair_bytes += s.repair_bytes;
        t.answer_bytes += s.answer_bytes;
        t.maintenance_bytes += s.maintenance_bytes;
    }
    t
}

/// What a request in flight is for.
enum Flight {
    Write { r: usize, version: u64 },
    Read { want: u64, started: Time },
}

/// What the finished requests came to.
#[derive(Default)]
struct Tally {
    writes_ok: usize,
    /// Reads that returned at least the latest completed version, an older one, or failed.
    latest: usize,
    stale: usize,
    failed: usize,
    /// Reads of a record none of whose writes had completed when they started: they say
    /// nothing about staleness and are left out of the shares.
    unwritten: usize,
    read_ms: Vec<u64>,
}

/// Takes the finished requests of every node with requests in flight.
fn collect(
    sim: &mut Sim,
    flying: &mut BTreeMap<(u32, RequestId), Flight>,
    completed: &mut [u64],
    tally: &mut Tally,
    measuring: bool,
) {
    let busy: BTreeSet<u32> = flying.keys().map(|k| k.0).collect();
    for i in busy {
        let events: Vec<RecordsEvent> =
            records_of(sim, i, |r| std::iter::from_fn(|| r.poll_event()).collect());
        for e in events {
            let req = match &e {
                RecordsEvent::Written(q, _) | RecordsEvent::Read(q, _) => *q,
            };
            match (flying.remove(&(i, req)), e) {
                (Some(Flight::Write { r, version }), RecordsEvent::Written(_, Ok(_))) => {
                    completed[r] = completed[r].max(version);
                    tally.writes_ok += usize::from(measuring);
                }
                (Some(Flight::Read { want, started }), RecordsEvent::Read(_, res)) => {
                    tally
                        .read_ms
                        .push(sim.now.saturating_since(started).as_micros() / 1_000);
                    match res {
                        _ if want == 0 => tally.unwritten += 1,
                        Ok(res) if res.record.as_ref().map_or(0, |r| r.body.version) >= want => {
                            tally.latest += 1
                        }
                        Ok(_) => tally.stale += 1,
                        Err(_) => tally.failed += 1,
                    }
                }
                _ => {}
            }
        }
    }
}

/// Adds a node (the `i`th ever) running records; it loses writes with probability STALE
/// (answered with its index).
fn add_node(sim: &mut Sim, seed: u64, i: u32, config: &RecordsConfig) -> (u32, bool) {
    let identity = node_identity(seed, i);
    let stale = sim.rng.gen_bool(STALE);
    let records_identity = Identity::from_secret_bytes(identity.secret_bytes());
    let config = config.clone();
    let i = sim.add_node_with_id(identity.id(), move |node| {
        let mut r = Records::new(records_identity, config);
        if stale {
            r.lose_writes();
        }
        node.add_service(Box::new(r));
    });
    (i, stale)
}

fn measure(ctx: &mut Ctx, read_repair: bool, read_quorum: u8) -> Point {
    let n = ctx.params.nodes.unwrap_or(N);
    let seed = ctx.params.seed;
    let cfg = ctx.params.overlay(4, 16, 32);
    let rss0 = rss_bytes();
    let config = RecordsConfig {
        k: K,
        read_repair,
        read_quorum: Some(read_quorum),
        ..RecordsConfig::default()
    };
    let mut stale_nodes = 0;
    let mut sim = build_global_with(ctx, cfg, n, |sim, i| {
        stale_nodes += usize::from(add_node(sim, seed, i, &config).1);
    });
    // Maintenance on, for the nodes there and for every newcomer.
    sim.cfg.overlay.keepalives = true;
    sim.cfg.overlay.table_repair = true;
    let now = sim.now;
    for i in sim.alive() {
        sim.with_node(i, |node, _| {
            node.overlay_mut().set_maintenance(now, true, true)
        });
    }
    let owners: Vec<Identity> = (0..10u8)
        .map(|o| Identity::from_secret_bytes([o + 1; 32]))
        .collect();
    let label = format!(
        "R = {read_quorum}, read repair {}",
        if read_repair { "on" } else { "off" }
    );
    let mut flying: BTreeMap<(u32, RequestId), Flight> = BTreeMap::new();
    let mut version = vec![0u64; RECORDS];
    let mut completed = vec![0u64; RECORDS];
    let mut writes = 0usize;
    let mut reads = 0usize;
    let mut tally = Tally::default();
    let mut measuring = false;

    let write = |sim: &mut Sim,
                 flying: &mut BTreeMap<(u32, RequestId), Flight>,
                 version: &mut [u64],
                 r: usize| {
        version[r] += 1;
        let record = record_of(&owners, r, version[r]);
        let from = sim.random_alive();
        let req = sim.with_node(from, |node, now| {
            node.with_service::<Records, _>(now, |s, kbr| s.put(kbr, now, record, Some(W)))
        });
        if let Some(Ok(req)) = req {
            flying.insert(
                (from, req),
                Flight::Write {
                    r,
                    version: version[r],
                },
            );
        }
    };

    // The first version of every record, before anything is measured.
    for r in 0..RECORDS {
        write(&mut sim, &mut flying, &mut version, r);
    }
    let median = Duration::from_micros((MEDIAN_SESSION_MIN * 60e6) as u64);
    let mut deaths: BTreeSet<(Time, u32)> = BTreeSet::new();
    for i in sim.alive() {
        let t = sim.now + session(&mut sim, median);
        deaths.insert((t, i));
    }
    let start = sim.now + WARMUP;
    let end = start + MEASURE;
    let read_every = match ctx.params.routes {
        Some(reads) => Duration::from_micros(MEASURE.as_micros() / reads.max(1) as u64),
        None => READ_EVERY,
    };
    let (mut next_write, mut next_read, mut next_poll) = (start, start, sim.now + POLL);
    let (mut base, mut ended): (Option<RecordsStats>, Option<RecordsStats>) = (None, None);
    let (mut node_secs, mut failures) = (0f64, 0usize);
    let mut added = n as u32;
    let bar = ctx.params.bar(
        (end.saturating_since(sim.now)).as_micros() / 1_000_000,
        &format!("records, {label}"),
    );
    let t0 = sim.now;
    // Until the last requests are answered (every request ends by its own deadline).
    let drain_end = end + Duration::from_secs(15);
    loop {
        let next_death = deaths.first().map_or(Time::NEVER, |d| d.0);
        let t = next_death
            .min(next_write)
            .min(next_read)
            .min(next_poll)
            .min(drain_end);
        let before = sim.now;
        sim.run_until(t, |_| false);
        if sim.now > start && before < end {
            let live = sim.nodes.iter().filter(|x| x.alive).count();
            node_secs += live as f64 * (sim.now.min(end) - before.max(start)).as_secs_f64();
        }
        if !measuring && sim.now >= start {
            measuring = true;
            base = Some(total_stats(&mut sim));
        }
        if ended.is_none() && sim.now >= end {
            ended = Some(total_stats(&mut sim));
        }
        bar.set_position(sim.now.saturating_since(t0).as_micros() / 1_000_000);
        if t >= drain_end {
            break;
        }
        if t == next_death {
            let (_, v) = deaths.pop_first().expect("a death");
            sim.kill(v);
            failures += usize::from(measuring);
            flying.retain(|(node, _), f| {
                if *node == v && matches!(f, Flight::Read { .. }) {
                    tally.failed += 1;
                }
                *node != v
            });
            let (i, _) = add_node(&mut sim, seed, added, &config);
            added += 1;
            sim.start_join_nearest(i);
            let now = sim.now;
            sim.with_node(i, |node, _| {
                node.overlay_mut().set_maintenance(now, true, true)
            });
            let life = session(&mut sim, median);
            deaths.insert((sim.now + life, i));
        } else if t == next_write {
            next_write = if t + WRITE_EVERY < end {
                t + WRITE_EVERY
            } else {
                Time::NEVER
            };
            let r = sim.rng.gen_range(0..RECORDS);
            write(&mut sim, &mut flying, &mut version, r);
            writes += 1;
        } else if t == next_read {
            next_read = if t + read_every < end {
                t + read_every
            } else {
                Time::NEVER
            };
            // What completed up to now counts: finished writes are taken first.
            collect(&mut sim, &mut flying, &mut completed, &mut tally, measuring);
            let r = sim.rng.gen_range(0..RECORDS);
            let key = record_of(&owners, r, 1).key();
            let from = sim.random_alive();
            let req = sim.with_node(from, |node, now| {
                node.with_service::<Records, _>(now, |s, kbr| s.get(kbr, now, key))
            });
            if let Some(req) = req {
                let f = Flight::Read {
                    want: completed[r],
                    started: sim.now,
                };
                flying.insert((from, req), f);
                reads += 1;
            }
        } else {
            next_poll = t + POLL;
            collect(&mut sim, &mut flying, &mut completed, &mut tally, measuring);
        }
    }
    bar.finish_and_clear();
    // Reads still in flight at the very end failed.
    tally.failed += flying
        .values()
        .filter(|f| matches!(f, Flight::Read { .. }))
        .count();
    let base = base.unwrap_or_default();
    // Reads' bytes over every read (their repairs may come after the window); maintenance's
    // over the window only, as the node-seconds are.
    let total = total_stats(&mut sim);
    let at_end = ended.unwrap_or(total);
    let up_to_date = up_to_date(&mut sim, &owners, &completed);
    ctx.account(&sim, rss0);
    let per_read = |x: u64| r6(x as f64 / reads.max(1) as f64);
    let judged = reads - tally.unwritten;
    let share = |x: usize| r6(x as f64 / judged.max(1) as f64);
    let mut read_ms = std::mem::take(&mut tally.read_ms);
    Point {
        read_repair,
        read_quorum,
        n,
        records: RECORDS,
        stale_nodes,
        writes,
        writes_completed: r6(tally.writes_ok as f64 / writes.max(1) as f64),
        reads,
        reads_unwritten: tally.unwritten,
        reads_latest: share(tally.latest),
        reads_stale: share(tally.stale),
        reads_failed: share(tally.failed),
        read_ms_p50: percentile(&mut read_ms, 50.0),
        read_ms_p99: percentile(&mut read_ms, 99.0),
        repairs_per_read: per_read(total.repairs - base.repairs),
        repair_bytes_per_read: per_read(total.repair_bytes - base.repair_bytes),
        answer_bytes_per_read: per_read(total.answer_bytes - base.answer_bytes),
        maintenance_bytes_per_node_sec: r6((at_end.maintenance_bytes - base.maintenance_bytes)
            as f64
            / node_secs.max(1e-9)),
        replicas_up_to_date_at_end: up_to_date,
        failures,
    }
}

/// Of each record's k closest live nodes, the share that holds its latest completed version
/// (records with no completed write left out).
fn up_to_date(sim: &mut Sim, owners: &[Identity], completed: &[u64]) -> f64 {
    let ring = Ring::of(sim);
    let index: BTreeMap<_, u32> = sim.alive().into_iter().map(|i| (sim.id(i), i)).collect();
    let (mut held, mut all) = (0usize, 0usize);
    for (r, &want) in completed.iter().enumerate().filter(|(_, &w)| w > 0) {
        let key = record_of(owners, r, 1).key();
        for id in ring.closest(&key, K as usize) {
            let Some(&i) = index.get(&id) else {
                continue;
            };
            all += 1;
            let v = records_of(sim, i, |s| s.held(&key).map_or(0, |h| h.body.version));
            held += usize::from(v >= want);
        }
    }
    r6(held as f64 / all.max(1) as f64)
}

/// The runs: majority reads with and without read repair (the design), then reads that take
/// the first answer holding the record, where stale replicas show (without read repair, the
/// negative control: the checker must see stale reads) and what read repair saves.
const RUNS: [(bool, u8); 4] = [(true, 2), (false, 2), (true, 1), (false, 1)];

pub(crate) fn records(ctx: &mut Ctx) -> Report {
    let points: Vec<Point> = RUNS.iter().map(|&(rr, q)| measure(ctx, rr, q)).collect();
    let mut t = Table::new(
        "records",
        &[
            "read_quorum",
            "read_repair",
            "reads",
            "reads_unwritten",
            "reads_latest",
            "reads_stale",
            "reads_failed",
            "read_ms_p50",
            "read_ms_p99",
            "repairs_per_read",
            "repair_bytes_per_read",
            "answer_bytes_per_read",
            "maint_bytes_per_node_s",
            "replicas_up_to_date_at_end",
        ],
    );
    for p in &points {
        t.row(vec![
            json!(p.read_quorum),
            json!(p.read_repair),
            json!(p.reads),
            json!(p.reads_unwritten),
            json!(p.reads_latest),
            json!(p.reads_stale),
            json!(p.reads_failed),
            json!(p.read_ms_p50),
            json!(p.read_ms_p99),
            json!(p.repairs_per_read),
            json!(p.repair_bytes_per_read),
            json!(p.answer_bytes_per_read),
            json!(p.maintenance_bytes_per_node_sec),
            json!(p.replicas_up_to_date_at_end),
        ]);
    }
    let line = |q: u8, rr: bool| Series {
        label: format!("R = {q}, read repair {}", if rr { "on" } else { "off" }),
        points: points
            .iter()
            .filter(|p| p.read_quorum == q && p.read_repair == rr)
            .map(|p| (0.0, p.reads_latest))
            .chain(
                points
                    .iter()
                    .filter(|p| p.read_quorum == q && p.read_repair == rr)
                    .map(|p| (1.0, p.replicas_up_to_date_at_end)),
            )
            .collect(),
    };
    let p = &ctx.params;
    Report {
        experiment: "records".into(),
        seed: p.seed,
        parameters: json!({ "common": p, "n": p.nodes.unwrap_or(N), "records": RECORDS, "k": K, "write_quorum": W,
            "stale_fraction": STALE, "median_session_min": MEDIAN_SESSION_MIN,
            "warmup_secs": WARMUP.as_secs_f64(), "measured_secs": MEASURE.as_secs_f64(),
            "writes_per_sec": 1.0 / WRITE_EVERY.as_secs_f64(), "value_bytes": VALUE }),
        figures: json!({ "points": points }),
        tables: vec![t],
        plots: vec![Plot {
            name: "latest".into(),
            title: "Reads at the latest version (x = 0), replicas up to date at the end (x = 1)"
                .into(),
            x_label: "measure".into(),
            y_label: "share".into(),
            kind: PlotKind::Line,
            log_x: false,
            series: RUNS.iter().map(|&(rr, q)| line(q, rr)).collect(),
        }],
    }
}
