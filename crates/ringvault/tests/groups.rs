//! Groups (Scribe) end to end on loopback: 8 `ringvault node` processes with fast overlay
//! timings; `ringvault subscribe` (the SSE stream) on three nodes receives every message
//! published from the others, anycast reaches a subscriber, closing a stream unsubscribes the
//! node, a node of the tree killed with SIGKILL is repaired around (a later message reaches
//! every live subscriber), and bad topic names and messages get 400 with a JSON error.

mod common;
mod daemons;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{run, tmp, Proc};
use daemons::{json, request, start_daemon, wait_for, Daemon};
use serde_json::Value;

const NODES: usize = 8;

/// The node's view of its topics.
fn topics(http: &str) -> Vec<Value> {
    let (s, b) = request(http, "GET", "/v1/topics", b"");
    assert_eq!(s, 200);
    json(&b)["topics"].as_array().cloned().unwrap_or_default()
}

/// Whether the node is a member of a topic and attached to its tree (a parent, or the root).
fn attached_member(http: &str) -> bool {
    topics(http)
        .iter()
        .any(|t| t["member"] == true && (t["root"] == true || !t["parent"].is_null()))
}

fn assert_error(http: &str, method: &str, path: &str, body: &[u8], code: &str) {
    let (s, b) = request(http, method, path, body);
    let v = json(&b);
    assert_eq!(s, 400, "{method} {path}: {v}");
    assert_eq!(v["code"], code, "{method} {path}: {v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

#[test]
fn eight_daemons_deliver_published_messages_to_every_subscriber_and_survive_a_killed_forwarder() {
    let t0 = Instant::now();
    let dir = tmp("groups");
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
            "64MiB",
        ));
    }

    // Bad input: 400 with a JSON error, before anything else.
    let long = "x".repeat(257);
    let n0 = &nodes[0].http;
    assert_error(
        n0,
        "POST",
        &format!("/v1/topics/{long}/messages"),
        b"hi",
        "bad_topic",
    );
    assert_error(
        n0,
        "GET",
        &format!("/v1/topics/{long}/events"),
        b"",
        "bad_topic",
    );
    assert_error(
        n0,
        "POST",
        &format!("/v1/topics/{long}/anycast"),
        b"hi",
        "bad_topic",
    );
    assert_error(n0, "POST", "/v1/topics//messages", b"hi", "bad_topic");
    assert_error(n0, "GET", "/v1/topics//events", b"", "bad_topic");
    assert_error(n0, "POST", "/v1/topics/news/messages", b"", "bad_message");
    let big = vec![b'a'; 64 * 1024 + 1];
    assert_error(n0, "POST", "/v1/topics/news/messages", &big, "bad_message");
    assert_error(n0, "POST", "/v1/topics/news/anycast", b"", "bad_message");
    let (st, _, err) = run(&["publish", "", "hi", "--node", n0]);
    assert!(!st.success() && err.contains("topic name"), "{err}");

    // Subscribers on three nodes, through the CLI (which reads the SSE stream).
    let subs_at = [1, 4, 6];
    let mut subs: Vec<Proc> = subs_at
        .iter()
        .map(|&i| Proc::start(&["subscribe", "news", "--node", &nodes[i].http, "--json"]))
        .collect();
    for &i in &subs_at {
        wait_for(
            Duration::from_secs(30),
            "the subscriber in the tree",
            || attached_member(&nodes[i].http),
        );
    }

    // Publish from the other nodes (CLI and raw HTTP).
    let mut sent = BTreeSet::new();
    for i in (0..NODES).filter(|i| !subs_at.contains(i)) {
        let msg = format!("hello from node {i}");
        let (st, out, err) = run(&["publish", "news", &msg, "--node", &nodes[i].http, "--json"]);
        assert!(st.success(), "publish from {i}: {err}");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["seq"], 1, "{v}");
        sent.insert((nodes[i].id.clone(), msg));
    }
    let (s, b) = request(
        &nodes[0].http,
        "POST",
        "/v1/topics/news/messages",
        b"second",
    );
    assert_eq!(s, 202, "{}", String::from_utf8_lossy(&b));
    assert_eq!(json(&b)["seq"], 2);
    sent.insert((nodes[0].id.clone(), "second".to_string()));

    for (k, p) in subs.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = BTreeSet::new();
        while got.len() < sent.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = p.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "subscriber on node {}: got {got:?}, want {sent:?}",
                    subs_at[k]
                )
            });
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["encoding"], "utf8", "{v}");
            assert_eq!(v["gap"], false, "{v}");
            got.insert((
                v["publisher"].as_str().unwrap().to_string(),
                v["data"].as_str().unwrap().to_string(),
            ));
        }
        assert_eq!(got, sent, "subscriber on node {}", subs_at[k]);
    }

    // Anycast from a non-member reaches one of the subscribers.
    let (st, out, err) = run(&[
        "anycast",
        "news",
        "work",
        "--node",
        &nodes[2].http,
        "--json",
    ]);
    assert!(st.success(), "anycast: {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let by = v["accepted_by"]["id"].as_str().unwrap().to_string();
    assert!(
        subs_at.iter().any(|&i| nodes[i].id == by),
        "accepted by a non-subscriber: {v}"
    );

    // `ringvault topics` on a subscriber shows its part.
    let (st, out, err) = run(&["topics", "--node", &nodes[1].http, "--json"]);
    assert!(st.success(), "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        v["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["member"] == true),
        "{v}"
    );

    // Closing a stream unsubscribes its node.
    let gone = subs.remove(0);
    drop(gone);
    wait_for(Duration::from_secs(30), "node 1 to unsubscribe", || {
        !topics(&nodes[1].http).iter().any(|t| t["member"] == true)
    });

    // The other streams are still open: their nodes are still members.
    for &i in &subs_at[1..] {
        let t = topics(&nodes[i].http);
        assert!(t.iter().any(|t| t["member"] == true), "node {i}: {t:?}");
    }
    // Kill (SIGKILL) a node of the tree that has children: the tree repairs itself and a
    // message published afterwards reaches every live subscriber again.
    let with_children = |d: &Daemon| {
        topics(&d.http)
            .iter()
            .any(|t| t["children"].as_array().is_some_and(|c| !c.is_empty()))
    };
    let v = (0..NODES)
        .filter(|i| !subs_at[1..].contains(i))
        .find(|&i| with_children(&nodes[i]))
        .or_else(|| (0..NODES).find(|&i| with_children(&nodes[i])))
        .expect("a node with children in the tree");
    let victim_id = nodes[v].id.clone();
    let mut live_subs: Vec<(usize, Proc)> = subs_at[1..].iter().copied().zip(subs).collect();
    live_subs.retain(|(i, _)| *i != v);
    assert!(!live_subs.is_empty());
    eprintln!("groups test: killing node {v}");
    let victim = nodes.remove(v);
    drop(victim);
    let idx = |i: usize| if i > v { i - 1 } else { i };
    for (i, _) in &live_subs {
        let http = nodes[idx(*i)].http.clone();
        wait_for(
            Duration::from_secs(45),
            "the subscriber re-attached after the kill",
            || {
                topics(&http).iter().any(|t| {
                    t["member"] == true
                        && (t["root"] == true
                            || t["parent"]["id"].as_str().is_some_and(|p| p != victim_id))
                })
            },
        );
    }
    let publisher = nodes
        .iter()
        .enumerate()
        .find(|(j, _)| !live_subs.iter().any(|(i, _)| idx(*i) == *j))
        .map(|(_, d)| d.http.clone())
        .unwrap();
    let (s, b) = request(
        &publisher,
        "POST",
        "/v1/topics/news/messages",
        b"after the kill",
    );
    assert_eq!(s, 202, "{}", String::from_utf8_lossy(&b));
    for (i, p) in &live_subs {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = p.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("subscriber on node {i} got nothing after node {v} was killed")
            });
            let m: Value = serde_json::from_str(&line).unwrap();
            if m["data"] == "after the kill" {
                break;
            }
        }
    }

    eprintln!("groups test: {:.1} s", t0.elapsed().as_secs_f64());
    drop(live_subs);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
