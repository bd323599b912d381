//! Gets while a quarter of the ring dies at once: 32 `ringvault node` processes hold 200
//! objects (k = 3); 8 of them are SIGKILLed together (no goodbye: their peers learn only by
//! silence) while a reader keeps fetching objects through the live nodes. Every get of an object
//! that still has a live holder returns its bytes, and none waits out the fixed hop timeout
//! (5 s here) on a dead hop: a hop to a measured peer times out after a few of its round trips and
//! goes on around it at once (the per-get figures are printed).

mod common;
mod daemons;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::tmp;
use daemons::{content, json, request, spawn_daemon, wait_joined, Daemon, Rng};

const NODES: usize = 32;
const KILLED: usize = 8;
const OBJECTS: usize = 200;
/// The fixed per-hop timeout (the config below), long on purpose: a get that waited it out on
/// a dead hop cannot be mistaken for one slowed down by a busy machine.
const HOP_TIMEOUT: Duration = Duration::from_millis(5000);
/// Fast failure detection, and caching off: a get through a node that cached the object
/// earlier would be answered there, and this test is about routes that meet dead nodes.
const CONFIG: &str = "[overlay]\nleaf_set_size = 8\nkeepalive_ms = 1000\nfailure_timeout_ms = 6000\nhop_timeout_ms = 5000\njoin_timeout_ms = 5000\n[storage]\ncache = \"off\"\n";
/// Reads go on this long after the kills: long enough for keep-alives to find the dead leaves
/// (6 s) and for routes to run into dead table entries before anyone repairs them.
const READ_AFTER_KILL: Duration = Duration::from_secs(10);

const HOP_TIMEOUTS: &str = "ringvault_hop_timeouts_total";

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Object {
    id: String,
    bytes: Vec<u8>,
    holders: Vec<String>,
}

/// The sum of counter `name` over the nodes behind `urls`, from their metrics.
fn metric_sum(urls: &[String], name: &str) -> u64 {
    let prefix = format!("{name} ");
    urls.iter()
        .map(|u| {
            let (_, b) = request(u, "GET", "/metrics", b"");
            let text = String::from_utf8_lossy(&b).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[test]
fn gets_survive_a_quarter_of_the_ring_killed_at_once_without_waiting_out_dead_hops() {
    let t0 = Instant::now();
    let dir = tmp("churn-gets");
    let _cleanup = Cleanup(dir.clone());
    let config = dir.join("fast.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut nodes: Vec<Daemon> = Vec::new();
    for i in 0..NODES {
        // Each node joins through the last few that joined (their join has finished).
        let boot: Vec<String> = nodes.iter().rev().take(3).map(|d| d.quic.clone()).collect();
        let d = spawn_daemon(&dir.join(format!("n{i}")), &config, &boot, "64MiB");
        wait_joined(&d);
        nodes.push(d);
    }
    let mut objects = Vec::new();
    for n in 0..OBJECTS {
        let bytes = content(n as u64, 1024);
        let via = &nodes[n % NODES].http;
        let (st, b) = request(via, "PUT", &format!("/v1/objects?name=churn-{n}"), &bytes);
        assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
        let v = json(&b);
        let holders = v["receipts"]
            .as_array()
            .expect("receipts")
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        objects.push(Object {
            id: v["id"].as_str().unwrap().to_string(),
            bytes,
            holders,
        });
    }
    // Let every node measure its peers (the round trips the hop timeouts come from).
    let warm = Instant::now();
    let mut rng = Rng(0xc4u64);
    while warm.elapsed() < Duration::from_secs(3) {
        let o = &objects[rng.below(OBJECTS)];
        let via = &nodes[rng.below(NODES)].http;
        let (st, _) = request(via, "GET", &format!("/v1/objects/{}", o.id), b"");
        assert_eq!(st, 200, "before the kills");
    }
    eprintln!(
        "churn gets: ring and objects up in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // Every fourth node dies; the reader uses the others.
    let victims: Vec<usize> = (0..NODES).filter(|i| i % 4 == 1).take(KILLED).collect();
    let dead: Vec<String> = victims.iter().map(|&i| nodes[i].id.clone()).collect();
    let live_urls: Vec<String> = (0..NODES)
        .filter(|i| !victims.contains(i))
        .map(|i| nodes[i].http.clone())
        .collect();
    let stop = AtomicBool::new(false);
    let samples: Mutex<Vec<(Duration, usize, u16, bool)>> = Mutex::new(Vec::new());
    let killed_at = Mutex::new(None::<Instant>);
    let mut timeouts_before = 0;
    // Only objects that keep a live holder are read: a get of one that lost every holder has
    // nothing to find and waits for the request's own time-out, which is not what this test is
    // about. Two readers, so that one slow get does not starve the measurement.
    let has_live_holder = |n: usize| objects[n].holders.iter().any(|h| !dead.contains(h));
    let readable: Vec<usize> = (0..OBJECTS).filter(|&n| has_live_holder(n)).collect();
    std::thread::scope(|s| {
        for reader in 0..2u64 {
            let (stop, samples, killed_at) = (&stop, &samples, &killed_at);
            let (readable, live_urls, objects) = (&readable, &live_urls, &objects);
            s.spawn(move || {
                let mut rng = Rng(0x9e7 + reader);
                while !stop.load(Ordering::Relaxed) {
                    let n = readable[rng.below(readable.len())];
                    let via = &live_urls[rng.below(live_urls.len())];
                    let started = Instant::now();
                    let (st, b) =
                        request(via, "GET", &format!("/v1/objects/{}", objects[n].id), b"");
                    let took = started.elapsed();
                    if killed_at.lock().unwrap().is_some() {
                        samples
                            .lock()
                            .unwrap()
                            .push((took, n, st, b == objects[n].bytes));
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(300));
        timeouts_before = metric_sum(&live_urls, HOP_TIMEOUTS);
        *killed_at.lock().unwrap() = Some(Instant::now());
        for &i in &victims {
            let mut p = nodes[i].proc.take().unwrap();
            assert!(
                p.signal_and_wait("KILL", Duration::from_secs(10)).is_some(),
                "node {i} did not die"
            );
        }
        std::thread::sleep(READ_AFTER_KILL);
        stop.store(true, Ordering::Relaxed);
    });

    let samples = samples.into_inner().unwrap();
    let wrong: Vec<String> = samples
        .iter()
        .filter(|(_, n, st, same)| has_live_holder(*n) && !(*st == 200 && *same))
        .map(|(t, n, st, _)| format!("object {n}: {st} after {t:?}"))
        .collect();
    // Objects that lost every holder are left out of the latencies: their gets may wait on
    // hand-offs to dead holders, which is not what this test is about.
    let mut took: Vec<Duration> = samples
        .iter()
        .filter(|s| has_live_holder(s.1))
        .map(|s| s.0)
        .collect();
    took.sort();
    assert!(
        took.len() >= 100,
        "only {} gets after the kills",
        took.len()
    );
    let (p50, p99, max) = (
        percentile(&took, 50.0),
        percentile(&took, 99.0),
        *took.last().unwrap(),
    );
    let orphans = (0..OBJECTS).filter(|&n| !has_live_holder(n)).count();
    let mut slowest: Vec<&(Duration, usize, u16, bool)> = samples.iter().collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (t, n, st, _) in slowest.iter().take(3) {
        eprintln!("churn gets: slow: object {n} answered {st} after {t:?}");
    }
    eprintln!(
        "churn gets: {} gets in the {:?} after {KILLED} of {NODES} nodes were killed: p50 {p50:?}, p99 {p99:?}, max {max:?}; {} wrong; {orphans} objects lost every holder",
        took.len(),
        READ_AFTER_KILL,
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "gets of objects with a live holder failed: {wrong:?}"
    );
    // The kills must have been felt: dead hops were timed out and routed around.
    let timeouts = metric_sum(&live_urls, HOP_TIMEOUTS) - timeouts_before;
    eprintln!("churn gets: {timeouts} hop timeouts on the live nodes after the kills");
    assert!(
        timeouts > 0,
        "no hop timed out after the kills: the test reached no dead hop"
    );
    assert!(
        max < HOP_TIMEOUT / 2,
        "a get took {max:?}: it waited out the fixed hop timeout on a dead hop"
    );
}
