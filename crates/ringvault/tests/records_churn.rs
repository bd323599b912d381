//! Signed records on sixteen `ringvault node` processes on loopback, as the records issue asks:
//!
//! - 1,000 records, each written and then overwritten (through its owner's node, or signed by a
//!   user and written through two different nodes), read back through other nodes at their
//!   highest version;
//! - a forged record (its value changed after signing, or another owner's key) is refused with
//!   400 and changes nothing; two different records of one version are reported as a conflict;
//!   a `record watch` sees every new version;
//! - two of the three replicas of a set of records are SIGKILLed: every record still reads at
//!   its latest version, and the ring is back to k holders of each;
//! - one of them comes back on its data directory holding the version it acknowledged (its
//!   records persisted; checked with the node alone, before anything can reach it), now stale;
//!   back in the ring it is brought up to date.

mod common;
mod daemons;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::tmp;
use daemons::{http, json, request, spawn_daemon_with, wait_for, wait_joined, Daemon};
use ringvault_types::{Identity, Record, RecordValue};

const NODES: usize = 16;
const RECORDS: usize = 1000;
const K: usize = 3;
const CONFIG: &str = "[overlay]\nleaf_set_size = 16\nkeepalive_ms = 1000\nfailure_timeout_ms = 6000\nhop_timeout_ms = 1500\njoin_timeout_ms = 5000\n";

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One record of the test: whose, its name, and where it was written.
struct Written {
    owner: String,
    name: String,
    key: String,
    /// The node ids that acknowledged the overwrite.
    acks: Vec<String>,
}

fn value(i: usize, version: u64) -> Vec<u8> {
    format!("record {i} version {version}").into_bytes()
}

/// PUT through `url` with these headers; answers the JSON.
fn put(url: &str, name: &str, headers: &[(&str, &str)], body: &[u8]) -> serde_json::Value {
    let (s, _, b) = http(url, "PUT", &format!("/v1/records/{name}"), headers, body);
    assert_eq!(s, 200, "put {name}: {}", String::from_utf8_lossy(&b));
    json(&b)
}

/// A read's status, version header, body and headers.
type Read = (u16, Option<u64>, Vec<u8>, Vec<(String, String)>);

/// Reads a record through `url`.
fn get(url: &str, owner: &str, name: &str) -> Read {
    let (s, h, b) = http(url, "GET", &format!("/v1/records/{owner}/{name}"), &[], b"");
    let version = h
        .iter()
        .find(|(k, _)| k == "x-record-version")
        .and_then(|(_, v)| v.parse().ok());
    (s, version, b, h)
}

/// The version `url`'s node holds of `owner/name` as a replica.
fn local(url: &str, owner: &str, name: &str) -> Option<u64> {
    let (s, b) = request(
        url,
        "GET",
        &format!("/v1/records/{owner}/{name}?local=true"),
        b"",
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    json(&b)["version"].as_u64()
}

fn signed(user: &Identity, name: &str, version: u64, v: Vec<u8>) -> String {
    hex(
        &Record::sign(user, name, version, 0, RecordValue::Inline(v))
            .unwrap()
            .encode(),
    )
}

#[test]
fn records_on_sixteen_daemons_survive_overwrites_forgeries_and_two_of_three_replicas_killed() {
    let dir = tmp("records-churn");
    let _cleanup = Cleanup(dir.clone());
    let config = dir.join("fast.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let start = |i: usize, up: &[Daemon]| -> Daemon {
        let boot: Vec<String> = up
            .iter()
            .filter(|d| d.proc.is_some())
            .take(3)
            .map(|d| d.quic.clone())
            .collect();
        let log = dir.join(format!("n{i}.log"));
        spawn_daemon_with(
            &dir.join(format!("n{i}")),
            &config,
            &boot,
            "1GiB",
            &[],
            Some(&log),
        )
    };
    let mut nodes: Vec<Daemon> = vec![start(0, &[])];
    wait_joined(&nodes[0]);
    for i in 1..NODES {
        let d = start(i, &nodes[..1]);
        nodes.push(d);
    }
    for d in &nodes {
        wait_joined(d);
    }
    wait_for(
        Duration::from_secs(60),
        "every node to see the whole ring",
        || {
            nodes.iter().all(|d| {
                let st = json(&request(&d.http, "GET", "/v1/status", b"").1);
                daemons::leaf_members(&st, "id").len() == NODES - 1
            })
        },
    );
    let urls: Vec<String> = nodes.iter().map(|d| d.http.clone()).collect();
    let by_id: BTreeMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.clone(), i))
        .collect();
    let user = Identity::from_secret_bytes([7; 32]);
    let user_hex = hex(&user.public_key().0);

    // ---- 1,000 records written, overwritten, read back elsewhere ----
    let t = Instant::now();
    let written: Mutex<Vec<(usize, Written)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..8 {
            let (urls, written, user) = (&urls, &written, &user);
            s.spawn(move || {
                for i in (w..RECORDS).step_by(8) {
                    let name = format!("rec-{i}");
                    let (a, b) = (i % NODES, (i * 7 + 3) % NODES);
                    let v = if i % 4 == 0 {
                        // A user's record, written through one node and overwritten through
                        // another.
                        put(
                            &urls[a],
                            &name,
                            &[("x-record-signed", &signed(user, &name, 1, value(i, 1)))],
                            b"",
                        );
                        put(
                            &urls[b],
                            &name,
                            &[("x-record-signed", &signed(user, &name, 2, value(i, 2)))],
                            b"",
                        )
                    } else {
                        put(&urls[a], &name, &[("x-record-version", "1")], &value(i, 1));
                        put(&urls[a], &name, &[], &value(i, 2))
                    };
                    assert_eq!(v["version"], 2, "{v}");
                    let acks: Vec<String> = v["acks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().to_string())
                        .collect();
                    assert_eq!(acks.len(), K, "{v}");
                    written.lock().unwrap().push((
                        i,
                        Written {
                            owner: v["owner"].as_str().unwrap().to_string(),
                            name,
                            key: v["key"].as_str().unwrap().to_string(),
                            acks,
                        },
                    ));
                }
            });
        }
    });
    let mut written = written.into_inner().unwrap();
    written.sort_by_key(|(i, _)| *i);
    let wrote = t.elapsed();
    let t = Instant::now();
    let read_all = |urls: &[String], offset: usize| {
        std::thread::scope(|s| {
            for w in 0..8 {
                let written = &written;
                s.spawn(move || {
                    for (i, r) in written.iter().skip(w).step_by(8) {
                        let via = &urls[(i + offset) % urls.len()];
                        let (st, version, body, _) = get(via, &r.owner, &r.name);
                        assert_eq!(
                            st,
                            200,
                            "{} through {via}: {}",
                            r.name,
                            String::from_utf8_lossy(&body)
                        );
                        assert_eq!((version, body), (Some(2), value(*i, 2)), "{}", r.name);
                    }
                });
            }
        });
    };
    read_all(&urls, 5);
    eprintln!(
        "records churn: {RECORDS} records written twice in {wrote:?} (8 writers), read back through other nodes in {:?}",
        t.elapsed()
    );
    assert!(written.iter().any(|(_, r)| r.owner == user_hex));

    // ---- forgeries are refused and change nothing ----
    let victim = &written[0].1; // a user's record (i = 0)
    assert_eq!(victim.owner, user_hex);
    let mut altered = Record::sign(
        &user,
        &victim.name,
        3,
        0,
        RecordValue::Inline(b"ok".to_vec()),
    )
    .unwrap();
    altered.body.value = RecordValue::Inline(b"forged".to_vec());
    let mallory = Identity::from_secret_bytes([66; 32]);
    let mut stolen = Record::sign(
        &mallory,
        &victim.name,
        9,
        0,
        RecordValue::Inline(b"mine".to_vec()),
    )
    .unwrap();
    stolen.body.owner = user.public_key();
    for forged in [&altered, &stolen] {
        let (s, _, b) = http(
            &urls[2],
            "PUT",
            &format!("/v1/records/{}", victim.name),
            &[("x-record-signed", &hex(&forged.encode()))],
            b"",
        );
        assert_eq!(
            (s, json(&b)["code"].as_str()),
            (400, Some("invalid")),
            "{}",
            String::from_utf8_lossy(&b)
        );
    }
    let (s, version, body, _) = get(&urls[9], &victim.owner, &victim.name);
    assert_eq!((s, version, body), (200, Some(2), value(0, 2)), "unchanged");

    // ---- a conflict: two different records of one version ----
    put(
        &urls[3],
        "conflicted",
        &[(
            "x-record-signed",
            &signed(&user, "conflicted", 1, b"left".to_vec()),
        )],
        b"",
    );
    let (s, _, b) = http(
        &urls[11],
        "PUT",
        "/v1/records/conflicted",
        &[(
            "x-record-signed",
            &signed(&user, "conflicted", 1, b"right".to_vec()),
        )],
        b"",
    );
    assert!(
        s == 200 || (s == 409 && json(&b)["code"] == "conflict"),
        "{s} {}",
        String::from_utf8_lossy(&b)
    );
    let (s, _, _, h) = get(&urls[6], &user_hex, "conflicted");
    assert_eq!(s, 200);
    assert!(
        h.contains(&("x-record-conflict".to_string(), "true".to_string())),
        "{h:?}"
    );

    // ---- a watcher sees every new version ----
    let watched = &written[1].1; // node 1's own record
    let watcher = common::Proc::start(&[
        "record",
        "watch",
        &format!("{}/{}", watched.owner, watched.name),
        "--node",
        &urls[12],
    ]);
    watcher.read_until("version 2", Duration::from_secs(30));
    let topic = format!("record:{}", watched.key);
    wait_for(
        Duration::from_secs(30),
        "the watcher to join the tree",
        || {
            let (_, b) = request(&urls[12], "GET", "/v1/topics", b"");
            json(&b)["topics"].as_array().is_some_and(|ts| {
                ts.iter().any(|t| {
                    t["name"] == topic.as_str() && (t["root"] == true || !t["parent"].is_null())
                })
            })
        },
    );
    for v in 3..=5u64 {
        put(
            &urls[1],
            &watched.name,
            &[],
            format!("watched {v}").as_bytes(),
        );
    }
    let seen = watcher.read_until("version 5", Duration::from_secs(30));
    assert_eq!(
        seen,
        vec![
            "version 3: watched 3",
            "version 4: watched 4",
            "version 5: watched 5"
        ]
    );
    drop(watcher);

    // ---- two of three replicas killed ----
    // Two nodes that acknowledged one record together, neither of them node 0 (the reads'
    // way in stays up); every record they both held has one replica left.
    let (a, b) = written
        .iter()
        .find_map(|(_, r)| {
            let ids: Vec<usize> = r
                .acks
                .iter()
                .map(|id| by_id[id])
                .filter(|&n| n != 0)
                .collect();
            (ids.len() >= 2).then(|| (ids[0], ids[1]))
        })
        .unwrap();
    let both: Vec<usize> = written
        .iter()
        .filter(|(_, r)| [a, b].iter().all(|n| r.acks.contains(&nodes[*n].id)))
        .map(|(i, _)| *i)
        .collect();
    assert!(!both.is_empty());
    for n in [a, b] {
        if let Some(mut p) = nodes[n].proc.take() {
            p.signal_and_wait("KILL", Duration::from_secs(10));
        }
    }
    let live: Vec<String> = (0..NODES)
        .filter(|n| ![a, b].contains(n))
        .map(|n| urls[n].clone())
        .collect();
    let t = Instant::now();
    for &i in &both {
        let r = &written[i].1;
        let want = if r.name == watched.name { 5 } else { 2 };
        let (s, version, body, _) = get(&live[i % live.len()], &r.owner, &r.name);
        assert_eq!(
            (s, version),
            (200, Some(want)),
            "{}: {}",
            r.name,
            String::from_utf8_lossy(&body)
        );
    }
    eprintln!(
        "records churn: nodes {a} and {b} killed; the {} records they both held (one replica left) read at their latest version in {:?}",
        both.len(),
        t.elapsed()
    );
    // The ring is back to k: every record either of them held has k live holders again.
    let touched: Vec<usize> = written
        .iter()
        .filter(|(_, r)| [a, b].iter().any(|n| r.acks.contains(&nodes[*n].id)))
        .map(|(i, _)| *i)
        .collect();
    let t = Instant::now();
    wait_for(
        Duration::from_secs(90),
        "k live holders of every record again",
        || {
            touched.iter().all(|&i| {
                let r = &written[i].1;
                live.iter()
                    .filter(|u| local(u, &r.owner, &r.name).is_some())
                    .count()
                    >= K
            })
        },
    );
    eprintln!(
        "records churn: {} records held by the killed nodes back to {K} live holders in {:?}",
        touched.len(),
        t.elapsed()
    );

    // ---- a replica back with a stale version is brought up to date ----
    // A record node `a` held, overwritten while it is away (a user's: any node takes it).
    let stale = touched
        .iter()
        .map(|&i| &written[i].1)
        .find(|r| r.owner == user_hex && r.acks.contains(&nodes[a].id))
        .expect("node a held a user's record");
    put(
        &live[3],
        &stale.name,
        &[(
            "x-record-signed",
            &signed(&user, &stale.name, 3, b"newest".to_vec()),
        )],
        b"",
    );
    // Its records persisted: started alone first (no bootstrap: nobody can send it anything),
    // it holds the version it acknowledged before it was killed.
    let alone = spawn_daemon_with(&dir.join(format!("n{a}")), &config, &[], "1GiB", &[], None);
    let on_return = local(&alone.http, &stale.owner, &stale.name);
    assert_eq!(
        on_return,
        Some(2),
        "node {a} kept its records across the kill"
    );
    if let Some(mut p) = alone.proc {
        p.signal_and_wait("TERM", Duration::from_secs(30));
    }
    // Back in the ring, that version is stale: a read (or maintenance, whichever comes first)
    // brings it up to date.
    let back = start(a, &nodes);
    wait_joined(&back);
    nodes[a] = back;
    let (s, version, _, h) = get(&live[5], &stale.owner, &stale.name);
    assert_eq!((s, version), (200, Some(3)));
    let repaired = h
        .iter()
        .find(|(k, _)| k == "x-record-repaired")
        .map(|(_, v)| v.clone());
    wait_for(
        Duration::from_secs(30),
        "the returning replica to hold the newest version",
        || local(&nodes[a].http, &stale.owner, &stale.name) == Some(3),
    );
    eprintln!(
        "records churn: node {a} back on its data dir held version 2 of {} (newest 3); the first read after it rejoined repaired {} replicas; it holds 3 now",
        stale.name,
        repaired.unwrap_or_default()
    );
    // Every record still reads at its latest version.
    let reads: Vec<String> = live.clone();
    std::thread::scope(|sc| {
        for w in 0..8 {
            let (written, reads, watched, stale) = (&written, &reads, &watched.name, &stale.name);
            sc.spawn(move || {
                for (i, r) in written.iter().skip(w).step_by(8) {
                    let want = if &r.name == watched {
                        5
                    } else if &r.name == stale {
                        3
                    } else {
                        2
                    };
                    let (st, version, _, _) = get(&reads[(i + 9) % reads.len()], &r.owner, &r.name);
                    assert_eq!((st, version), (200, Some(want)), "{}", r.name);
                }
            });
        }
    });
    // /metrics: the live nodes hold at least k copies of every record between them (once the
    // copies the returning node displaced have been handed back).
    let held = || -> u64 {
        nodes
            .iter()
            .filter(|d| d.proc.is_some())
            .map(|d| {
                let (_, b) = request(&d.http, "GET", "/metrics", b"");
                let text = String::from_utf8_lossy(&b).into_owned();
                text.lines()
                    .find_map(|l| l.strip_prefix("ringvault_records_held "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("no ringvault_records_held in\n{text}"))
            })
            .sum()
    };
    wait_for(Duration::from_secs(30), "k copies of every record", || {
        held() >= (K * RECORDS) as u64
    });
    drop(nodes);
}
