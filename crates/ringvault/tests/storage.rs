//! Storage end to end on loopback: 16 `ringvault node` processes with fast overlay timings;
//! objects put through one node come back byte for byte from another, survive k-1 holders being
//! killed (SIGKILL) and a holder restarting from its data dir, and bad requests get their error
//! and change nothing.

mod common;
mod daemons;

use std::time::{Duration, Instant};

use common::{run, tmp};
use daemons::{json, request, start_daemon, wait_for, Daemon};
use serde_json::Value;

const NODES: usize = 16;
const OBJECTS: usize = 100;
const CHUNK: usize = 4 << 20;

/// Deterministic content of `len` bytes.
fn content(seed: usize, len: usize) -> Vec<u8> {
    let mut x = (seed as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn leaf_ids(st: &Value) -> Vec<String> {
    ["leaf_set_smaller", "leaf_set_larger"]
        .iter()
        .flat_map(|k| st[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["id"].as_str().map(String::from))
        .collect()
}

fn get_ok(http: &str, id: &str, want: &[u8]) {
    let (status, body) = request(http, "GET", &format!("/v1/objects/{id}"), b"");
    assert_eq!(
        status,
        200,
        "GET {id} from {http}: {}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    assert!(body == want, "GET {id} from {http}: different bytes");
}

#[test]
fn sixteen_daemons_store_verify_survive_kills_and_restarts_and_refuse_bad_requests() {
    let t0 = Instant::now();
    let dir = tmp("storage");
    let config = dir.join("fast.toml");
    std::fs::write(
        &config,
        "[overlay]\nleaf_set_size = 8\nkeepalive_ms = 250\nfailure_timeout_ms = 1000\nhop_timeout_ms = 500\njoin_timeout_ms = 3000\n",
    )
    .unwrap();
    let mut nodes: Vec<Daemon> = Vec::new();
    for i in 0..NODES {
        let boot: Vec<String> = nodes.iter().rev().take(3).map(|d| d.quic.clone()).collect();
        nodes.push(start_daemon(
            &dir.join(format!("n{i}")),
            &config,
            &boot,
            "256MiB",
        ));
    }
    // Settled: every leaf set full.
    wait_for(Duration::from_secs(60), "full leaf sets", || {
        nodes.iter().all(|d| {
            let (_, b) = request(&d.http, "GET", "/v1/status", b"");
            leaf_ids(&json(&b)).len() >= 8
        })
    });

    // Put from node i % 16, read back from another node.
    let mut objects: Vec<(String, Vec<u8>, Vec<String>)> = Vec::new();
    for i in 0..OBJECTS {
        let len = match i {
            0 => 0,
            1 => 1,
            2 => 1 << 20,
            _ => (i * 104_729) % (1 << 20),
        };
        let bytes = content(i, len);
        let from = &nodes[i % NODES];
        let (status, body) = request(
            &from.http,
            "PUT",
            &format!("/v1/objects?name=obj-{i}&replicas=3"),
            &bytes,
        );
        let v = json(&body);
        assert_eq!(status, 201, "put obj-{i}: {v}");
        assert_eq!(v["size"], len);
        let receipts: Vec<String> = v["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        assert_eq!(receipts.len(), 3, "k receipts: {v}");
        objects.push((v["id"].as_str().unwrap().to_string(), bytes, receipts));
    }
    // Larger than a chunk: stored as chunks plus a manifest, streamed back verified.
    for (i, len) in [
        (OBJECTS, CHUNK + 1),
        (OBJECTS + 1, 2 * CHUNK + 12_345),
        (OBJECTS + 2, CHUNK),
    ] {
        let bytes = content(i, len);
        let (status, body) = request(
            &nodes[i % NODES].http,
            "PUT",
            &format!("/v1/objects?name=large-{i}"),
            &bytes,
        );
        let v = json(&body);
        assert_eq!(status, 201, "put large-{i}: {v}");
        assert_eq!(v["size"], len);
        assert_eq!(
            v["chunks"],
            len.div_ceil(CHUNK) * usize::from(len > CHUNK),
            "{v}"
        );
        let receipts = v["receipts"].as_array().unwrap().iter();
        let receipts = receipts.map(|r| r.as_str().unwrap().to_string()).collect();
        objects.push((v["id"].as_str().unwrap().to_string(), bytes, receipts));
    }
    for (i, (id, bytes, _)) in objects.iter().enumerate() {
        get_ok(&nodes[(i + 7) % NODES].http, id, bytes);
    }
    let (big_id, big, _) = &objects[OBJECTS + 1];
    let (s, b) = request(
        &nodes[2].http,
        "GET",
        &format!("/v1/objects/{big_id}/replicas"),
        b"",
    );
    let v = json(&b);
    assert_eq!(
        (s, v["size"].as_u64(), v["chunks"].as_u64()),
        (200, Some(big.len() as u64), Some(3)),
        "{v}"
    );
    let puts_done = t0.elapsed();

    // Bad requests: each its error, and nothing changes.
    let (id0, bytes0, _) = &objects[3];
    let owner = &nodes[3 % NODES];
    let other = &nodes[(3 + 5) % NODES];
    let (s, b) = request(&other.http, "GET", "/v1/objects/not-an-id", b"");
    assert_eq!((s, json(&b)["code"].as_str()), (400, Some("bad_id")));
    let unknown = "ab".repeat(32);
    let (s, b) = request(&other.http, "GET", &format!("/v1/objects/{unknown}"), b"");
    assert_eq!((s, json(&b)["code"].as_str()), (404, Some("not_found")));
    let (s, b) = request(&owner.http, "PUT", "/v1/objects?name=obj-3", b"other bytes");
    assert_eq!((s, json(&b)["code"].as_str()), (409, Some("duplicate")));
    let (s, b) = request(&other.http, "DELETE", &format!("/v1/objects/{id0}"), b"");
    assert_eq!((s, json(&b)["code"].as_str()), (403, Some("not_owner")));
    let (s, b) = request(&owner.http, "PUT", "/v1/objects", b"x");
    assert_eq!((s, json(&b)["code"].as_str()), (400, Some("bad_request")));
    get_ok(&other.http, id0, bytes0);
    let (s, b) = request(
        &other.http,
        "GET",
        &format!("/v1/objects/{id0}/replicas"),
        b"",
    );
    let v = json(&b);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["replicas"], 3);
    assert_eq!(v["size"], bytes0.len());

    // The CLI: put prints the id, get -o writes the same bytes, stat shows k, errors are one line.
    let file = dir.join("cli-in.bin");
    let back = dir.join("cli-out.bin");
    std::fs::write(&file, content(999, CHUNK + 70_000)).unwrap();
    let (st, out, err) = run(&[
        "put",
        file.to_str().unwrap(),
        "--name",
        "cli object",
        "--node",
        &owner.http,
    ]);
    assert!(st.success(), "{err}");
    let cli_id = out.trim().to_string();
    assert_eq!(cli_id.len(), 64, "{out}");
    let (st, _, err) = run(&[
        "get",
        &cli_id,
        "-o",
        back.to_str().unwrap(),
        "--node",
        &other.http,
    ]);
    assert!(st.success(), "{err}");
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&file).unwrap());
    let (st, out, err) = run(&["stat", &cli_id, "--node", &other.http]);
    assert!(st.success() && out.contains("replicas  3"), "{out}{err}");
    let (st, out, err) = run(&["reclaim", &cli_id, "--node", &other.http]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("403") && err.contains("not_owner"), "{err}");
    let (st, _, err) = run(&["get", "nope", "--node", &other.http]);
    assert_eq!(st.code(), Some(1));
    assert!(err.contains("64 hex digits"), "{err}");
    let (st, out, err) = run(&["reclaim", &cli_id, "--node", &owner.http]);
    assert!(st.success() && out.starts_with("reclaimed"), "{out}{err}");

    // The owner reclaims one object: every replica releases it.
    let (id_r, _, _) = &objects[4];
    let (s, b) = request(
        &nodes[4].http,
        "DELETE",
        &format!("/v1/objects/{id_r}"),
        b"",
    );
    let v = json(&b);
    assert_eq!(s, 200, "{v}");
    assert!(!v["released_by"].as_array().unwrap().is_empty(), "{v}");

    // Kill k-1 = 2 holders of object 10 abruptly; every object stays readable.
    let victims: Vec<usize> = objects[10].2[..2]
        .iter()
        .map(|id| nodes.iter().position(|d| &d.id == id).unwrap())
        .collect();
    for &v in &victims {
        drop(nodes[v].proc.take()); // SIGKILL
    }
    let dead: Vec<String> = victims.iter().map(|&v| nodes[v].id.clone()).collect();
    let live: Vec<usize> = (0..NODES).filter(|i| !victims.contains(i)).collect();
    wait_for(Duration::from_secs(30), "the ring to drop the dead", || {
        live.iter().all(|&i| {
            let (_, b) = request(&nodes[i].http, "GET", "/v1/status", b"");
            let ids = leaf_ids(&json(&b));
            dead.iter().all(|d| !ids.contains(d))
        })
    });
    for (i, (id, bytes, _)) in objects.iter().enumerate() {
        if i == 4 {
            continue;
        }
        get_ok(&nodes[live[i % live.len()]].http, id, bytes);
    }

    // Object 10 lost two of its three holders: checked from outside (each live node says what
    // it holds), it is back to three replicas within a bounded time.
    let (id10, _, _) = &objects[10];
    wait_for(
        Duration::from_secs(30),
        "object 10 back to 3 replicas",
        || {
            let held = live
                .iter()
                .filter(|&&i| {
                    let path = format!("/v1/objects/{id10}/replicas");
                    let (s, b) = request(&nodes[i].http, "GET", &path, b"");
                    s == 200
                        && matches!(
                            json(&b)["this_node"]["holds"].as_str(),
                            Some("primary" | "diverted")
                        )
                })
                .count();
            held >= 3
        },
    );

    // Restart one killed holder from its data dir: it still holds and serves its objects.
    let v = victims[0];
    let boot = vec![nodes[live[0]].quic.clone()];
    let restarted = start_daemon(&dir.join(format!("n{v}")), &config, &boot, "256MiB");
    assert_eq!(restarted.id, nodes[v].id, "same data dir, same id");
    let (_, b) = request(&restarted.http, "GET", "/v1/status", b"");
    assert!(
        json(&b)["storage"]["used"].as_u64().unwrap() > 0,
        "the restarted node's store is empty"
    );
    let mine: Vec<_> = objects
        .iter()
        .enumerate()
        .filter(|(i, (_, _, r))| *i != 4 && r.contains(&restarted.id))
        .collect();
    assert!(!mine.is_empty());
    for (_, (id, bytes, _)) in mine {
        get_ok(&restarted.http, id, bytes);
    }
    nodes[v] = restarted;
    eprintln!(
        "storage test: puts+gets {:.1} s, total {:.1} s",
        puts_done.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
