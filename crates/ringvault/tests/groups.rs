//! Groups (Scribe) end to end on loopback, as issue 7 asks: a 12-node ring of `ringvault node`
//! processes (fast overlay timings). Subscribers on 5 nodes (four reading the HTTP SSE stream
//! directly, one through `ringvault subscribe`) receive every message published from 3 others;
//! anycast reaches a subscriber; `GET /v1/topics` names the topic on every node of its tree
//! (members, forwarders and the root) and `ringvault topics` prints it; a node of the tree that
//! forwards to children is killed with SIGKILL and delivery resumes for every live subscriber;
//! closing a stream unsubscribes its node; bad topic names and messages get 400 with a JSON
//! error. Every wait has a deadline; every process and stream is stopped when the test ends,
//! also when it fails (they are stopped on drop).

mod common;
mod daemons;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{run, tmp, Proc};
use daemons::{json, request, start_daemon, wait_for, Daemon};
use ringvault_scribe::topic_id;
use ringvault_types::{Id, Identity};
use serde_json::Value;

const NODES: usize = 12;
/// The key the daemons name as every topic's creator: `topic_CREATOR_SEED` in
/// `src/node/topics.rs` (checked below against the topic id a node reports).
const CREATOR_SEED: [u8; 32] = *b"ringvault/groups/shared-creator!";
/// Nodes with a subscriber; the last one subscribes through the CLI, the others over raw HTTP.
const SUBSCRIBERS: [usize; 5] = [1, 3, 5, 8, 10];
/// Nodes that publish the checked messages.
const PUBLISHERS: [usize; 3] = [0, 6, 11];
/// Publishes the warm-up messages (not checked for gaps).
const WARM_UP: usize = 2;
/// Sends the anycast.
const ANYCASTER: usize = 4;

/// The node's view of its topics.
fn topics(http: &str) -> Vec<Value> {
    let (s, b) = request(http, "GET", "/v1/topics", b"");
    assert_eq!(s, 200);
    json(&b)["topics"].as_array().cloned().unwrap_or_default()
}

/// The node's entry for `topic`, if it takes part in it.
fn entry(http: &str, topic: &str) -> Option<Value> {
    topics(http).into_iter().find(|t| t["name"] == topic)
}

/// Whether the node is a member of `topic` and attached to its tree (a parent, or the root).
fn attached_member(http: &str, topic: &str) -> bool {
    entry(http, topic)
        .is_some_and(|t| t["member"] == true && (t["root"] == true || !t["parent"].is_null()))
}

/// A topic name (and its id) whose root, the node closest to its id, is none of `avoid`: the
/// root of its tree is then a node that only forwards.
fn topic_rooted_outside(nodes: &[Daemon], avoid: &[usize]) -> (String, Id) {
    let creator = Identity::from_secret_bytes(CREATOR_SEED).public_key();
    let ids: Vec<Id> = nodes.iter().map(|d| d.id.parse().unwrap()).collect();
    (0..)
        .map(|k| format!("news-{k}"))
        .map(|name| {
            let id = topic_id(&name, &creator);
            (name, id)
        })
        .find(|(_, id)| {
            let root = (0..ids.len())
                .min_by(|a, b| id.cmp_closeness(&ids[*a], &ids[*b]))
                .unwrap();
            !avoid.contains(&root)
        })
        .unwrap()
}

fn assert_error(http: &str, method: &str, path: &str, body: &[u8], code: &str) {
    let (s, b) = request(http, method, path, body);
    let v = json(&b);
    assert_eq!(s, 400, "{method} {path}: {v}");
    assert_eq!(v["code"], code, "{method} {path}: {v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
}

/// An open `GET /v1/topics/{name}/events` stream read by a thread: each event as (event name,
/// JSON data). Dropping it closes the connection.
struct Sse {
    stream: TcpStream,
    events: mpsc::Receiver<(String, Value)>,
}

impl Sse {
    fn open(base: &str, topic: &str) -> Sse {
        let hostport = base.trim_start_matches("http://").trim_end_matches('/');
        let mut stream = TcpStream::connect(hostport).expect("connect to the HTTP API");
        write!(
            stream,
            "GET /v1/topics/{topic}/events HTTP/1.1\r\nHost: {hostport}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let reader = stream.try_clone().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || read_sse(reader, tx));
        Sse { stream, events }
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Reads an HTTP/1.1 response carrying Server-Sent Events (chunked or not) and sends each event
/// on `tx`; a response that is not a 200 event stream is sent as one `("error", ...)` event.
fn read_sse(stream: TcpStream, tx: mpsc::Sender<(String, Value)>) {
    let mut r = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let lower = head.to_ascii_lowercase();
    if !head.starts_with("HTTP/1.1 200") || !lower.contains("content-type: text/event-stream") {
        let _ = tx.send(("error".into(), Value::String(head)));
        return;
    }
    let chunked = lower.contains("transfer-encoding: chunked");
    let (mut pending, mut event, mut data) = (Vec::new(), String::new(), String::new());
    loop {
        let bytes = if chunked {
            let mut size = String::new();
            if r.read_line(&mut size).unwrap_or(0) == 0 {
                return;
            }
            let size = size.trim().split(';').next().unwrap_or("");
            let Ok(n) = usize::from_str_radix(size, 16) else {
                return;
            };
            if n == 0 {
                return;
            }
            let mut b = vec![0; n + 2]; // the chunk and its CRLF
            if r.read_exact(&mut b).is_err() {
                return;
            }
            b.truncate(n);
            b
        } else {
            let mut b = vec![0; 4096];
            match r.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => b[..n].to_vec(),
            }
        };
        pending.extend_from_slice(&bytes);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !data.is_empty() {
                    let v = serde_json::from_str(&data).unwrap_or(Value::String(data.clone()));
                    if tx.send((std::mem::take(&mut event), v)).is_err() {
                        return;
                    }
                }
                event.clear();
                data.clear();
            } else if let Some(e) = line.strip_prefix("event:") {
                event = e.trim_start().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
    }
}

/// A subscriber: a raw SSE stream or `ringvault subscribe --json`; `got` keeps every message
/// received so far (the JSON of each `message` event).
struct Sub {
    node: usize,
    stream: Stream,
    got: Vec<Value>,
}

enum Stream {
    Http(Sse),
    Cli(Proc),
}

impl Sub {
    /// Waits up to `within` for the next message event.
    fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = match &self.stream {
                Stream::Http(s) => match s.events.recv_timeout(left).ok()? {
                    (e, v) if e == "message" => v,
                    (e, v) if e == "error" => panic!("subscriber on node {}: {v}", self.node),
                    _ => continue,
                },
                Stream::Cli(p) => {
                    let line = p.lines.recv_timeout(left).ok()?;
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    if v["publisher"].is_null() {
                        continue; // an anycast
                    }
                    v
                }
            };
            self.got.push(v.clone());
            return Some(v);
        }
    }

    /// Takes what has arrived, without waiting.
    fn drain(&mut self) {
        while self.next(Duration::ZERO).is_some() {}
    }

    /// Waits until `want(received so far)` holds, or panics after `within`.
    fn wait(&mut self, within: Duration, what: &str, want: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + within;
        while !want(&self.got) {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.next(left).is_none() {
                let data: Vec<&Value> = self.got.iter().map(|v| &v["data"]).collect();
                panic!(
                    "subscriber on node {}: no {what} within {within:?}; got {data:?}",
                    self.node
                );
            }
        }
    }
}

fn has_data(got: &[Value], prefix: &str) -> bool {
    got.iter()
        .any(|v| v["data"].as_str().is_some_and(|d| d.starts_with(prefix)))
}

fn publish(http: &str, topic: &str, data: &str) -> u64 {
    let path = format!("/v1/topics/{topic}/messages");
    let (s, b) = request(http, "POST", &path, data.as_bytes());
    assert_eq!(s, 202, "{}", String::from_utf8_lossy(&b));
    json(&b)["seq"].as_u64().unwrap()
}

/// Publishes `prefix N` from `from` (every 250 ms, N = 1, 2, ...) until every subscriber has
/// received one of them, within `within`.
fn publish_until_all_receive(
    subs: &mut [Sub],
    from: &[String],
    topic: &str,
    prefix: &str,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    for n in 1.. {
        for http in from {
            publish(http, topic, &format!("{prefix} {n}"));
        }
        let pause = Instant::now() + Duration::from_millis(250);
        for s in subs.iter_mut() {
            s.next(pause.saturating_duration_since(Instant::now()));
            s.drain();
        }
        if subs.iter().all(|s| has_data(&s.got, prefix)) {
            return;
        }
        let missing: Vec<usize> = subs
            .iter()
            .filter(|s| !has_data(&s.got, prefix))
            .map(|s| s.node)
            .collect();
        assert!(
            Instant::now() < deadline,
            "no {prefix:?} message reached the subscribers on nodes {missing:?} within {within:?}"
        );
    }
}

#[test]
fn twelve_daemons_deliver_every_message_from_three_publishers_to_five_sse_subscribers_and_resume_after_a_forwarder_is_killed(
) {
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
    eprintln!(
        "groups test: {NODES} daemons up after {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // Bad input: 400 with a JSON error, before anything else.
    let long = "x".repeat(257);
    let n0 = &nodes[0].http;
    for (method, suffix, body) in [
        ("POST", "messages", &b"hi"[..]),
        ("GET", "events", b""),
        ("POST", "anycast", b"hi"),
    ] {
        let path = format!("/v1/topics/{long}/{suffix}");
        assert_error(n0, method, &path, body, "bad_topic");
        assert_error(
            n0,
            method,
            &format!("/v1/topics//{suffix}"),
            body,
            "bad_topic",
        );
    }
    assert_error(n0, "POST", "/v1/topics/news/messages", b"", "bad_message");
    let big = vec![b'a'; 64 * 1024 + 1];
    assert_error(n0, "POST", "/v1/topics/news/messages", &big, "bad_message");
    assert_error(n0, "POST", "/v1/topics/news/anycast", b"", "bad_message");
    assert_error(n0, "POST", "/v1/topics/news/anycast", &big, "bad_message");
    let (st, _, err) = run(&["publish", "", "hi", "--node", n0]);
    assert!(!st.success() && err.contains("topic name"), "{err}");
    let (st, _, err) = run(&["subscribe", &long, "--node", n0]);
    assert!(!st.success() && err.contains("topic name"), "{err}");

    // A topic whose root is neither a subscriber nor a publisher: the root only forwards.
    let avoid: Vec<usize> = SUBSCRIBERS.iter().chain(&PUBLISHERS).copied().collect();
    let (topic, topic_key) = topic_rooted_outside(&nodes, &avoid);
    let topic = topic.as_str();

    // Subscribers on five nodes: four raw SSE streams, one `ringvault subscribe`.
    let mut subs: Vec<Sub> = Vec::new();
    for (k, &i) in SUBSCRIBERS.iter().enumerate() {
        let stream = if k + 1 < SUBSCRIBERS.len() {
            let sse = Sse::open(&nodes[i].http, topic);
            let (event, hello) = sse
                .events
                .recv_timeout(Duration::from_secs(30))
                .expect("the stream's first event");
            assert_eq!(event, "subscribed", "{hello}");
            assert_eq!(hello["topic"], topic, "{hello}");
            assert_eq!(hello["topic_id"], topic_key.to_string(), "{hello}");
            Stream::Http(sse)
        } else {
            let http = &nodes[i].http;
            Stream::Cli(Proc::start(&["subscribe", topic, "--node", http, "--json"]))
        };
        subs.push(Sub {
            node: i,
            stream,
            got: Vec::new(),
        });
    }
    for &i in &SUBSCRIBERS {
        wait_for(
            Duration::from_secs(30),
            "the subscriber in the tree",
            || attached_member(&nodes[i].http, topic),
        );
    }
    // Until a message has gone all the way, some member's parent may still be joining.
    publish_until_all_receive(
        &mut subs,
        &[nodes[WARM_UP].http.clone()],
        topic,
        "warm-up",
        Duration::from_secs(30),
    );

    // Three publishers, three messages each (the first through the CLI).
    let mut sent: BTreeMap<(String, u64), String> = BTreeMap::new();
    for round in 1..=3u64 {
        for &p in &PUBLISHERS {
            let msg = format!("message {round} from node {p}");
            let seq = if round == 1 {
                let http = &nodes[p].http;
                let (st, out, err) = run(&["publish", topic, &msg, "--node", http, "--json"]);
                assert!(st.success(), "publish from {p}: {err}");
                let v: Value = serde_json::from_str(out.trim()).unwrap();
                v["seq"].as_u64().unwrap()
            } else {
                publish(&nodes[p].http, topic, &msg)
            };
            assert_eq!(seq, round, "node {p}'s sequence numbers");
            sent.insert((nodes[p].id.clone(), seq), msg);
        }
    }
    let publishers: BTreeSet<String> = PUBLISHERS.iter().map(|&p| nodes[p].id.clone()).collect();
    for s in &mut subs {
        let checked = |got: &[Value]| {
            got.iter()
                .filter(|v| publishers.contains(v["publisher"].as_str().unwrap_or("")))
                .count()
        };
        s.wait(Duration::from_secs(30), "nine messages", |g| {
            checked(g) >= 9
        });
        let mut got: BTreeMap<(String, u64), String> = BTreeMap::new();
        for v in s
            .got
            .iter()
            .filter(|v| publishers.contains(v["publisher"].as_str().unwrap_or("")))
        {
            assert_eq!(v["encoding"], "utf8", "{v}");
            assert_eq!(v["gap"], false, "node {}: {v}", s.node);
            let key = (
                v["publisher"].as_str().unwrap().to_string(),
                v["seq"].as_u64().unwrap(),
            );
            let dup = got.insert(key, v["data"].as_str().unwrap().to_string());
            assert!(dup.is_none(), "node {} got {v} twice", s.node);
        }
        assert_eq!(got, sent, "subscriber on node {}", s.node);
    }

    // Every node of the tree knows the topic by name; the root's `ringvault topics` says so.
    let mut roles = BTreeMap::new();
    for (i, d) in nodes.iter().enumerate() {
        for t in topics(&d.http) {
            assert_eq!(
                t["name"], topic,
                "node {i} lists a topic without its name: {t}"
            );
            roles.insert(i, t);
        }
    }
    for &i in &SUBSCRIBERS {
        assert_eq!(roles[&i]["member"], true, "node {i}: {}", roles[&i]);
    }
    let root: Vec<usize> = roles
        .iter()
        .filter(|(_, t)| t["root"] == true)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(root.len(), 1, "one root: {roles:?}");
    let root = root[0];
    let (st, out, err) = run(&["topics", "--node", &nodes[root].http]);
    assert!(st.success(), "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(topic) && l.contains("root")),
        "{out}"
    );
    eprintln!(
        "groups test: the tree (node: role, children): {:?}",
        roles
            .iter()
            .map(|(i, t)| (
                i,
                t["role"].clone(),
                t["children"].as_array().map_or(0, Vec::len)
            ))
            .collect::<Vec<_>>()
    );

    // Anycast from a non-member reaches one of the subscribers.
    let (st, out, err) = run(&[
        "anycast",
        topic,
        "work",
        "--node",
        &nodes[ANYCASTER].http,
        "--json",
    ]);
    assert!(st.success(), "anycast: {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let by = v["accepted_by"]["id"].as_str().unwrap();
    assert!(
        SUBSCRIBERS.iter().any(|&i| nodes[i].id == by),
        "accepted by a non-subscriber: {v}"
    );

    // Kill (SIGKILL) a node that forwards to children: a pure forwarder if the tree has one,
    // else the root, else a member with children. Delivery then resumes for every live
    // subscriber, from every live publisher.
    let forwards = |i: &&usize| {
        roles[*i]["children"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    };
    let victim = roles
        .keys()
        .filter(forwards)
        .min_by_key(|&&i| {
            let t = &roles[&i];
            (
                t["member"] == true,
                t["root"] == true,
                PUBLISHERS.contains(&i),
            )
        })
        .copied()
        .expect("a node with children in the tree");
    eprintln!(
        "groups test: killing node {victim} ({}) after {:.1} s",
        roles[&victim]["role"],
        t0.elapsed().as_secs_f64()
    );
    drop(nodes[victim].proc.take());
    subs.retain(|s| s.node != victim);
    assert!(subs.len() >= 4);
    let live_publishers: Vec<String> = PUBLISHERS
        .iter()
        .filter(|&&p| p != victim)
        .map(|&p| nodes[p].http.clone())
        .collect();
    for s in &mut subs {
        s.drain();
        s.got.clear();
    }
    publish_until_all_receive(
        &mut subs,
        &live_publishers,
        topic,
        "after the kill",
        Duration::from_secs(45),
    );
    // Delivery has resumed: the next message from each live publisher reaches everyone.
    let finals: Vec<String> = live_publishers
        .iter()
        .enumerate()
        .map(|(k, http)| {
            let m = format!("final {k}");
            publish(http, topic, &m);
            m
        })
        .collect();
    for s in &mut subs {
        s.wait(Duration::from_secs(20), "final messages", |g| {
            finals
                .iter()
                .all(|f| g.iter().any(|v| v["data"] == f.as_str()))
        });
    }

    // Closing a stream unsubscribes its node; the others stay members.
    let gone = subs.remove(0);
    let gone_node = gone.node;
    drop(gone);
    wait_for(
        Duration::from_secs(30),
        "the closed stream's node to unsubscribe",
        || !entry(&nodes[gone_node].http, topic).is_some_and(|t| t["member"] == true),
    );
    for s in &subs {
        assert!(
            entry(&nodes[s.node].http, topic).is_some_and(|t| t["member"] == true),
            "node {}",
            s.node
        );
    }

    eprintln!("groups test: {:.1} s", t0.elapsed().as_secs_f64());
    drop(subs);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
