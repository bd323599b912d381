//! Daemons for the storage and groups loopback tests: start `ringvault node` processes and talk
//! plain HTTP/1.1 to them.
// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Proc;

/// A plain HTTP/1.1 request with a body, as the CLI sends it (with its client header):
/// (status, body).
pub fn request(base: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let (status, headers, body) = http(base, method, path, &[("x-ringvault-client", "test")], body);
    assert!(
        !headers.iter().any(|(k, _)| k == "transfer-encoding"),
        "{headers:?}"
    );
    (status, body)
}

/// A plain HTTP/1.1 request with these headers and a body: (status, headers lower-cased,
/// body).
pub fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let hostport = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).expect("connect to the HTTP API");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let body = resp[split + 4..].to_vec();
    // A streamed body the server aborted ends short of its announced length (as curl reports
    // "transfer closed with bytes remaining"): say so rather than compare short bytes.
    if let Some((_, len)) = headers.iter().find(|(k, _)| k == "content-length") {
        assert_eq!(
            Ok(body.len()),
            len.parse::<usize>(),
            "{method} {path} on {base}: the server ended the body early"
        );
    }
    (status, headers, body)
}

/// Parses a JSON body, failing the test with the body when it is not JSON.
pub fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// A `ringvault node` process and where it listens; dropping `proc` kills it.
pub struct Daemon {
    pub proc: Option<Proc>,
    pub id: String,
    pub quic: String,
    pub http: String,
}

/// Starts `ringvault node` with its data in `dir`, bootstrapping from `boot`, and waits (30 s at
/// most) until it has joined.
pub fn start_daemon(dir: &Path, config: &Path, boot: &[String], capacity: &str) -> Daemon {
    let d = spawn_daemon(dir, config, boot, capacity);
    wait_joined(&d);
    d
}

/// Starts `ringvault node` like [`start_daemon`] but returns once it serves, before it has
/// joined (for starting many at once; then [`wait_joined`]).
pub fn spawn_daemon(dir: &Path, config: &Path, boot: &[String], capacity: &str) -> Daemon {
    spawn_daemon_with(dir, config, boot, capacity, &[], None)
}

/// Like [`spawn_daemon`], with more arguments, and stderr appended to `log` when given.
pub fn spawn_daemon_with(
    dir: &Path,
    config: &Path,
    boot: &[String],
    capacity: &str,
    extra: &[&str],
    log: Option<&Path>,
) -> Daemon {
    let data = dir.display().to_string();
    let cfg = config.display().to_string();
    let mut args = vec![
        "node",
        "--data-dir",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--config",
        &cfg,
        "--capacity",
        capacity,
    ];
    for b in boot {
        args.extend(["--bootstrap", b.as_str()]);
    }
    args.extend(extra);
    let p = Proc::start_logged(&args, log);
    let line = p
        .read_until("node ", Duration::from_secs(30))
        .pop()
        .unwrap();
    let w: Vec<String> = line.split_whitespace().map(String::from).collect();
    let d = Daemon {
        proc: Some(p),
        id: w[1].clone(),
        quic: w[3].clone(),
        http: w[5].trim_end_matches('/').to_string(),
    };
    d
}

/// Waits (30 s at most) until the node has joined.
pub fn wait_joined(d: &Daemon) {
    wait_for(Duration::from_secs(30), "the node to join", || {
        let (_, b) = request(&d.http, "GET", "/v1/status", b"");
        json(&b)["ready"] == true
    });
}

/// Waits for `cond`, failing the test after `within`.
pub fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "no {what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// splitmix64: the test's only source of randomness, seeded.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Deterministic content of `len` bytes.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed ^ 0xC0FF_EE00);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// `field` ("id" or "addr") of every leaf set member in a `/v1/status` answer, each once, in
/// order.
pub fn leaf_members(st: &Value, field: &str) -> Vec<String> {
    ["leaf_set_smaller", "leaf_set_larger"]
        .iter()
        .flat_map(|k| st[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c[field].as_str().map(String::from))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}
