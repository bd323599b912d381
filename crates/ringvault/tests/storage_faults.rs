//! Storage under faults, on loopback: six `ringvault node` processes, one of them on a 30 MiB
//! tmpfs while offering 1 GiB (the tmpfs needs root; without it that phase says so and is
//! skipped).
//!
//! - Requests that cannot succeed are refused at once: more replicas than the ring has nodes
//!   (400 within 100 ms), a name with a control character or a parameter given twice (400), a
//!   body announced over the limit (413 before any byte is read, and no `100 Continue`).
//! - The small disk fills: every PUT still succeeds (the ring places replicas elsewhere), the
//!   full node keeps every replica it confirmed before (checked object by object), reports the
//!   disk's free space, logs the cause once, and takes writes again once the tmpfs grows.
//! - A node whose objects.redb was truncated while it was down refuses to start with a clean
//!   error; with `--recover-store` it rejoins under its id and gets its replicas back.
//! - A replica holder is SIGKILLed during 16 concurrent writers: no PUT takes longer than 5 s,
//!   every PUT that failed succeeds when retried unchanged (201 or 200, with the same id), and
//!   once restarted the killed node holds every replica it acknowledged and every acknowledged
//!   object reads back identical.

mod common;
mod daemons;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::tmp;
use daemons::{content, json, request, spawn_daemon_with, wait_for, wait_joined, Daemon};
use serde_json::Value;

const NODES: usize = 6;
const K: usize = 3;
const OBJECT: usize = 256 << 10;
const CONFIG: &str = "[overlay]\nleaf_set_size = 16\nkeepalive_ms = 1000\nfailure_timeout_ms = 6000\nhop_timeout_ms = 1500\njoin_timeout_ms = 5000\n";

/// A tmpfs mounted on `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, mib: u64) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Removes the test's directory at the end (after the daemons and the tmpfs are gone).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// PUTs `bytes` as `name` through `url`: (status, JSON body, how long it took). A connection
/// that breaks is status 0.
fn put(url: &str, name: &str, bytes: &[u8]) -> (u16, Value, Duration) {
    let t = Instant::now();
    let path = format!("/v1/objects?name={name}&replicas={K}");
    let r = std::panic::catch_unwind(|| request(url, "PUT", &path, bytes));
    let took = t.elapsed();
    match r {
        Ok((status, body)) => (
            status,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
            took,
        ),
        Err(_) => (0, Value::Null, took),
    }
}

/// How `url`'s node holds `id` on its own disk (verified): "primary", "diverted", "cached".
fn holds(url: &str, id: &str) -> Option<String> {
    let (status, b) = request(
        url,
        "GET",
        &format!("/v1/objects/{id}/replicas?local=true"),
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    json(&b)["this_node"]["holds"].as_str().map(String::from)
}

fn status(url: &str) -> Value {
    json(&request(url, "GET", "/v1/status", b"").1)
}

fn leaf_count(url: &str) -> usize {
    daemons::leaf_members(&status(url), "id").len()
}

/// Puts `n` objects named `prefix-i` through the nodes `via`, 4 at a time; every one must
/// succeed. Answers (name, id).
fn put_many(prefix: &str, n: usize, via: &[String]) -> Vec<(String, String)> {
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..4 {
            let out = &out;
            s.spawn(move || {
                for i in (w..n).step_by(4) {
                    let name = format!("{prefix}-{i}");
                    let bytes = content(name.len() as u64 * 7919 + i as u64, OBJECT);
                    let (st, v, _) = put(&via[i % via.len()], &name, &bytes);
                    assert_eq!(st, 201, "put {name}: {v}");
                    out.lock()
                        .unwrap()
                        .push((name, v["id"].as_str().unwrap().to_string()));
                }
            });
        }
    });
    out.into_inner().unwrap()
}

fn count_lines(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

fn start(dir: &Path, config: &Path, up: &[Daemon], extra: &[&str], log: &Path) -> Daemon {
    let boot: Vec<String> = up
        .iter()
        .filter(|d| d.proc.is_some())
        .rev()
        .take(3)
        .map(|d| d.quic.clone())
        .collect();
    let d = spawn_daemon_with(dir, config, &boot, "1GiB", extra, Some(log));
    wait_joined(&d);
    d
}

fn refusals(url: &str) {
    // More replicas than the ring has nodes: refused at once, naming the ring's size.
    let t = Instant::now();
    let (st, b) = request(
        url,
        "PUT",
        "/v1/objects?name=too-many&replicas=7",
        b"0123456789",
    );
    let took = t.elapsed();
    let v = json(&b);
    assert_eq!(
        (st, v["code"].as_str()),
        (400, Some("too_few_nodes")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("has 6 nodes"), "{v}");
    assert!(took < Duration::from_millis(100), "took {took:?}");
    // Names with control characters, of an object or a topic.
    for path in ["/v1/objects?name=a%00b", "/v1/topics/a%0Ab/messages"] {
        let method = if path.contains("topics") {
            "POST"
        } else {
            "PUT"
        };
        let (st, b) = request(url, method, path, b"x");
        assert_eq!(
            (st, json(&b)["code"].as_str()),
            (400, Some("bad_name")),
            "{path}"
        );
    }
    // A parameter given twice.
    let (st, b) = request(url, "PUT", "/v1/objects?name=x&replicas=3&replicas=5", b"x");
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));
    // A body announced over the 64 GiB limit: 413 before anything is read, no 100 Continue.
    let hostport = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "PUT /v1/objects?name=huge HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 100000000000\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 64];
    let n = s.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[test]
fn storage_survives_a_full_disk_a_truncated_store_and_a_killed_holder() {
    let dir = tmp("storage-faults");
    let _cleanup = Cleanup(dir.clone());
    let config = dir.join("fast.toml");
    std::fs::write(&config, CONFIG).unwrap();
    // Declared before the daemons, so it is unmounted after they are stopped.
    let small = Tmpfs::mount(&dir.join("n0"), 30);
    if small.is_none() {
        eprintln!(
            "storage faults: cannot mount a tmpfs (needs root): the full-disk phase is skipped"
        );
    }
    let logs: Vec<PathBuf> = (0..NODES).map(|i| dir.join(format!("n{i}.log"))).collect();
    let mut nodes: Vec<Daemon> = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let d = start(&dir.join(format!("n{i}")), &config, &nodes, &[], log);
        nodes.push(d);
    }
    wait_for(
        Duration::from_secs(60),
        "every node to see the whole ring",
        || nodes.iter().all(|d| leaf_count(&d.http) == NODES - 1),
    );
    let urls: Vec<String> = nodes.iter().map(|d| d.http.clone()).collect();
    refusals(&urls[1]);

    // ---- the small disk fills up ----
    let others: Vec<String> = urls[1..].to_vec();
    let first = put_many("a", 40, &others);
    let confirmed: Vec<&String> = first
        .iter()
        .filter(|(_, id)| matches!(holds(&urls[0], id).as_deref(), Some("primary" | "diverted")))
        .map(|(_, id)| id)
        .collect();
    assert!(
        confirmed.len() >= 5,
        "node 0 holds only {} objects",
        confirmed.len()
    );
    if let Some(fs) = &small {
        let t = Instant::now();
        let more = put_many("b", 200, &others);
        eprintln!(
            "storage faults: 200 puts while node 0's disk filled in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let st = &status(&urls[0])["storage"];
        let disk_free = st["disk_free"]
            .as_u64()
            .expect("a tmpfs reports its free space");
        assert!(
            disk_free < 8 << 20,
            "node 0 reports {disk_free} bytes free on a full 30 MiB disk: {st}"
        );
        assert_eq!(st["free"].as_u64(), Some(disk_free), "{st}");
        for id in &confirmed {
            let h = holds(&urls[0], id);
            assert!(
                matches!(h.as_deref(), Some("primary" | "diverted")),
                "node 0 dropped confirmed {id}: {h:?}"
            );
        }
        assert_eq!(
            count_lines(&logs[0], "is full"),
            1,
            "the full disk is logged once"
        );
        // Everything is still readable, through a node that is not full.
        for (name, id) in first.iter().chain(&more).step_by(7) {
            let (st, b) = request(&urls[3], "GET", &format!("/v1/objects/{id}"), b"");
            assert_eq!(st, 200, "get {name}");
            let i: usize = name[2..].parse().unwrap();
            assert_eq!(
                b,
                content(name.len() as u64 * 7919 + i as u64, OBJECT),
                "{name}"
            );
        }
        // The disk grows: node 0 takes writes again, without a restart.
        fs.resize(200);
        wait_for(Duration::from_secs(10), "node 0 to see the room", || {
            status(&urls[0])["storage"]["disk_free"]
                .as_u64()
                .unwrap_or(0)
                > 100 << 20
        });
        let later = put_many("c", 40, &others);
        let taken = later
            .iter()
            .filter(|(_, id)| holds(&urls[0], id).as_deref() == Some("primary"))
            .count();
        assert!(
            taken >= 5,
            "node 0 took only {taken} of 40 new objects after the disk grew"
        );
        assert_eq!(count_lines(&logs[0], "has room again"), 1);
    }

    // ---- a truncated store ----
    let victim = 1;
    let held_before: Vec<&String> = first
        .iter()
        .filter(|(_, id)| holds(&urls[victim], id).as_deref() == Some("primary"))
        .map(|(_, id)| id)
        .collect();
    assert!(!held_before.is_empty());
    let id_before = nodes[victim].id.clone();
    let mut p = nodes[victim].proc.take().unwrap();
    assert!(p.signal_and_wait("TERM", Duration::from_secs(20)).is_some());
    let db = dir.join(format!("n{victim}")).join("objects.redb");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_ringvault"))
        .args(["node", "--data-dir"])
        .arg(dir.join(format!("n{victim}")))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--bootstrap",
            &nodes[2].quic,
        ])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains("damaged") && err.contains("--recover-store"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let recovered = start(
        &dir.join(format!("n{victim}")),
        &config,
        &nodes,
        &["--recover-store"],
        &logs[victim],
    );
    assert_eq!(recovered.id, id_before, "the node keeps its id");
    assert!(dir
        .join(format!("n{victim}"))
        .join("objects.redb.damaged-1")
        .exists());
    let url = recovered.http.clone();
    nodes[victim] = recovered;
    wait_for(
        Duration::from_secs(90),
        "the recovered node to hold its replicas again",
        || {
            held_before
                .iter()
                .all(|id| holds(&url, id).as_deref() == Some("primary"))
        },
    );

    // ---- a replica holder SIGKILLed during 16 concurrent writers, then restarted ----
    let dead = 2;
    let writers: Vec<String> = [1, 3, 4, 5]
        .iter()
        .map(|&i| nodes[i].http.clone())
        .collect();
    let results = Mutex::new(Vec::new());
    let stop_at = Instant::now() + Duration::from_secs(14);
    std::thread::scope(|s| {
        for w in 0..16 {
            let (results, writers) = (&results, &writers);
            s.spawn(move || {
                let mut i = 0;
                while Instant::now() < stop_at {
                    let name = format!("w{w}-{i}");
                    let bytes = content(1000 + w as u64 * 100_000 + i as u64, 64 << 10);
                    let (st, v, took) = put(&writers[(w + i) % writers.len()], &name, &bytes);
                    results.lock().unwrap().push((name, bytes, st, v, took, w));
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_secs(4));
        drop(nodes[dead].proc.take());
    });
    let results = results.into_inner().unwrap();
    let mut took: Vec<Duration> = results.iter().map(|r| r.4).collect();
    took.sort();
    let failed: Vec<_> = results.iter().filter(|r| r.2 != 201).collect();
    eprintln!(
        "storage faults: {} puts during the kill, p50 {:?}, p99 {:?}, max {:?}, {} failed",
        results.len(),
        took[took.len() / 2],
        took[took.len() * 99 / 100],
        took[took.len() - 1],
        failed.len()
    );
    assert!(
        took[took.len() - 1] <= Duration::from_secs(5),
        "a PUT took {:?}",
        took[took.len() - 1]
    );
    for (name, _, st, v, took, _) in failed.iter().take(5) {
        eprintln!("storage faults: {name} failed after {took:?}: {st} {v}");
    }
    for (name, bytes, st, v, _, w) in failed {
        let (st2, v2, _) = put(&writers[w % writers.len()], name, bytes);
        assert!(
            st2 == 201 || st2 == 200,
            "{name} failed ({st}: {v}) and its retry too ({st2}: {v2})"
        );
        if let Some(e) = v["error"].as_str() {
            let id = v2["id"].as_str().unwrap();
            assert!(!e.contains("object ") || e.contains(id), "{e} vs {id}");
        }
    }

    // The killed node comes back on its data directory: every replica it acknowledged (its id
    // among a PUT's receipts) is on its disk, and every acknowledged object reads back whole.
    let dead_id = nodes[dead].id.clone();
    let restarted = start(
        &dir.join(format!("n{dead}")),
        &config,
        &nodes,
        &[],
        &logs[dead],
    );
    let vouched: Vec<&str> = results
        .iter()
        .filter(|r| r.2 == 201)
        .filter(|r| {
            r.3["receipts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n.as_str() == Some(&dead_id)))
        })
        .filter_map(|r| r.3["id"].as_str())
        .collect();
    assert!(
        !vouched.is_empty(),
        "node {dead} acknowledged no replica before it was killed"
    );
    for id in &vouched {
        assert!(
            matches!(
                holds(&restarted.http, id).as_deref(),
                Some("primary" | "diverted")
            ),
            "node {dead} acknowledged {id} and lost it to SIGKILL"
        );
    }
    let mut read = 0;
    for (name, bytes, st, v, _, _) in &results {
        if *st != 201 {
            continue;
        }
        let id = v["id"].as_str().unwrap();
        let (st, body) = request(&restarted.http, "GET", &format!("/v1/objects/{id}"), b"");
        assert_eq!(st, 200, "{name} ({id}) after the restart");
        assert!(body == *bytes, "{name} ({id}) read back different bytes");
        read += 1;
    }
    eprintln!(
        "storage faults: node {dead} killed and restarted kept all {} replicas it acknowledged; {read} acknowledged objects read back identical",
        vouched.len()
    );
    nodes[dead] = restarted;
}
