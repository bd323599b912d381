//! Server mode on loopback: seven `ringvault node --mode server` servers from one genesis
//! (committee of 4, f = 1, replica groups of 4), 1,000 objects and 200 records written and
//! read by four clients under load while one committee member is killed with SIGKILL and
//! restarted from its data dir, then one server answers every read with forged or stale
//! items, then a new server joins and an old one leaves, so key ranges move across an epoch
//! change. With seven servers any two share a replica group, so the faults come one after the
//! other (two at once in a group is scenario S7, the negative control of `ringvault-bft`'s
//! quorum tests).
//!
//! The lying server runs in this test's process (the same driver as the daemon, with
//! `ringvault_testkit::server_byzantine` rewriting its replies), which also lets it watch the
//! committee's signed votes: the killed member, back from its data dir, never signed two
//! values for one round. What must hold: nothing acknowledged is lost, no wrong byte is ever
//! returned, and the history checker finds every record read atomic.

mod common;
mod daemons;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{run, tmp, Proc};
use daemons::{content, http, json, wait_for, Rng};
use ringvault_bft::{BftMessage, Config, ConfigCert, Genesis, Item, ServerMessage, SignOnce};
use ringvault_net::{ServerBoot, ServerDisk, ServerHooks, ServerNetConfig};
use ringvault_testkit::server_byzantine::LyingReplica;
use ringvault_types::{Id, Identity, NodeCertificate, Record, RecordValue, RevocationList};

const GENESIS: usize = 7;
const OBJECTS: usize = 1_000;
const RECORDS: usize = 200;
const CLIENTS: usize = 4;

/// An HTTP answer: status, headers (lower-cased names), body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// An HTTP/1.1 request that may fail (a server killed mid-request): (status, headers, body).
fn try_http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Answer> {
    use std::io::{Read, Write};
    let hostport = base.trim_start_matches("http://");
    let addr: std::net::SocketAddr = hostport.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, resp[split + 4..].to_vec()))
}

/// [`try_http`] for the clients: a request that got no answer counts as status 0.
fn call(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    try_http(base, method, path, headers, body).unwrap_or((0, Vec::new(), Vec::new()))
}

fn free_udp() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn free_tcp() -> u16 {
    let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn ok(args: &[&str]) -> String {
    let (status, out, err) = run(args);
    assert!(status.success(), "ringvault {args:?} failed: {err}");
    out
}

/// One server's files and ports.
struct Slot {
    dir: PathBuf,
    cert: PathBuf,
    quic: u16,
    http: String,
    id: Id,
}

struct Layout {
    root: PathBuf,
    ca_pub: PathBuf,
    genesis: PathBuf,
    slots: Vec<Slot>,
    config: Config,
}

/// A CA, keys and certificates for `n` servers, and a genesis of the first seven (3 s epochs).
fn layout(root: &Path, n: usize) -> Layout {
    let s = |p: &Path| p.display().to_string();
    let ca = root.join("ca");
    ok(&["ca", "init", "--dir", &s(&ca)]);
    let mut slots = Vec::new();
    for i in 0..n {
        let dir = root.join(format!("s{i}"));
        let req = root.join(format!("s{i}.req"));
        let cert = root.join(format!("s{i}.cert"));
        let quic = free_udp();
        let listen = format!("127.0.0.1:{quic}");
        ok(&[
            "node",
            "--mode",
            "server",
            "--data-dir",
            &s(&dir),
            "--listen",
            &listen,
            "--cert-request",
            &s(&req),
        ]);
        ok(&[
            "ca",
            "issue",
            "--dir",
            &s(&ca),
            "--request",
            &s(&req),
            "--force",
            "--out",
            &s(&cert),
        ]);
        let id = ringvault_net::load_or_create_identity(&dir).unwrap().id();
        let http = format!("http://127.0.0.1:{}", free_tcp());
        slots.push(Slot {
            dir,
            cert,
            quic,
            http,
            id,
        });
    }
    let genesis = root.join("genesis.conf");
    let mut args = vec![
        "ca".to_string(),
        "genesis".into(),
        "--dir".into(),
        s(&ca),
        "--epoch".into(),
        "3s".into(),
        "--out".into(),
        s(&genesis),
    ];
    for slot in &slots[..GENESIS] {
        args.push("--member".into());
        args.push(s(&slot.cert));
    }
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = std::fs::read_to_string(&genesis).unwrap();
    let bytes = ringvault_types::unarmor("GENESIS CONFIGURATION", &text).unwrap();
    let config = Genesis::decode(&bytes).unwrap().config;
    Layout {
        root: root.to_path_buf(),
        ca_pub: ca.join("ca.pub"),
        genesis,
        slots,
        config,
    }
}

impl Layout {
    fn start(&self, i: usize) -> Proc {
        let slot = &self.slots[i];
        let s = |p: &Path| p.display().to_string();
        let listen = format!("127.0.0.1:{}", slot.quic);
        let http = slot.http.trim_start_matches("http://").to_string();
        let log = self.root.join(format!("s{i}.log"));
        let p = Proc::start_logged(
            &[
                "node",
                "--mode",
                "server",
                "--data-dir",
                &s(&slot.dir),
                "--listen",
                &listen,
                "--http",
                &http,
                "--ca",
                &s(&self.ca_pub),
                "--cert",
                &s(&slot.cert),
                "--genesis",
                &s(&self.genesis),
            ],
            Some(&log),
        );
        p.read_until("quic", Duration::from_secs(60));
        p
    }
}

fn status(url: &str) -> Option<serde_json::Value> {
    let (code, _, body) = try_http(url, "GET", "/v1/status", &[], b"")?;
    (code == 200).then(|| json(&body))
}

/// A server's store for the in-process server: memory (it is not the one killed).
struct MemDisk;

impl ServerDisk for MemDisk {
    fn sign_once(&self, _: &SignOnce) -> Result<(), String> {
        Ok(())
    }
    fn config(&self, _: &Config, _: Option<&ConfigCert>) -> Result<(), String> {
        Ok(())
    }
    fn unsynced(&self, _: &[(Id, Id)]) -> Result<(), String> {
        Ok(())
    }
    fn items(&self, _: &[Item]) -> Result<(), String> {
        Ok(())
    }
    fn recovered(&self) -> Result<(), String> {
        Ok(())
    }
    fn leaving(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Signed proposals (kind 0, by the hash of the delta) and votes (kind 1 prevote, 2
/// precommit) seen: per (epoch, round, kind, signer), the values signed.
type Votes = BTreeMap<(u64, u32, u8, Id), BTreeSet<Option<Id>>>;

/// Voters that signed two values for one (epoch, round, kind).
fn double_signers(votes: &Votes) -> Vec<(u64, u32, u8, Id)> {
    votes
        .iter()
        .filter(|(_, values)| values.len() > 1)
        .map(|(k, _)| *k)
        .collect()
}

/// One operation on a record, as the clients saw it.
#[derive(Clone, Debug)]
enum RecordOp {
    Write {
        version: u64,
        start: Instant,
        end: Instant,
        acked: bool,
    },
    Read {
        version: u64,
        start: Instant,
        end: Instant,
    },
}

/// What the history checker finds wrong with one record's operations: a read of a version no
/// write had begun, a read older than a write acknowledged before it began (lost or stale), or
/// older than a read that ended before it began (not atomic).
fn check_history(ops: &[RecordOp]) -> Vec<String> {
    let mut bad = Vec::new();
    for r in ops {
        let RecordOp::Read {
            version,
            start,
            end: read_end,
        } = r
        else {
            continue;
        };
        let written = ops.iter().any(|o| {
            matches!(o, RecordOp::Write { version: w, start: ws, .. } if w == version && ws < read_end)
        });
        if *version > 0 && !written {
            bad.push(format!("read v{version}, which no write had begun"));
        }
        for o in ops {
            match o {
                RecordOp::Write {
                    version: w,
                    end,
                    acked: true,
                    ..
                } if end < start && w > version => bad.push(format!(
                    "read v{version} began after write v{w} was acknowledged"
                )),
                RecordOp::Read {
                    version: v2, end, ..
                } if end < start && v2 > version => {
                    bad.push(format!("read v{version} began after a read of v{v2} ended"))
                }
                _ => {}
            }
        }
    }
    bad
}

#[test]
fn the_history_checker_catches_a_stale_read_and_a_read_going_backwards() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let good = vec![
        RecordOp::Write {
            version: 1,
            start: at(0),
            end: at(10),
            acked: true,
        },
        RecordOp::Read {
            version: 1,
            start: at(20),
            end: at(30),
        },
        RecordOp::Write {
            version: 2,
            start: at(40),
            end: at(60),
            acked: true,
        },
        // Concurrent with the write: either version is atomic.
        RecordOp::Read {
            version: 1,
            start: at(45),
            end: at(50),
        },
        RecordOp::Read {
            version: 2,
            start: at(70),
            end: at(80),
        },
    ];
    assert!(check_history(&good).is_empty());
    let mut stale = good.clone();
    stale.push(RecordOp::Read {
        version: 1,
        start: at(90),
        end: at(95),
    });
    assert_eq!(
        check_history(&stale).len(),
        2,
        "{:?}",
        check_history(&stale)
    );
    let mut backwards = good.clone();
    backwards.push(RecordOp::Read {
        version: 2,
        start: at(52),
        end: at(55),
    });
    backwards.push(RecordOp::Read {
        version: 1,
        start: at(56),
        end: at(58),
    });
    assert_eq!(check_history(&backwards).len(), 1);
    let mut future = good.clone();
    future.push(RecordOp::Read {
        version: 3,
        start: at(90),
        end: at(95),
    });
    assert_eq!(check_history(&future).len(), 1);
    let mut votes = Votes::new();
    let voter = Id::from_bytes([3; 32]);
    votes
        .entry((1, 0, 1, voter))
        .or_default()
        .insert(Some(Id::from_bytes([1; 32])));
    assert!(double_signers(&votes).is_empty());
    votes
        .entry((1, 0, 1, voter))
        .or_default()
        .insert(Some(Id::from_bytes([2; 32])));
    assert_eq!(double_signers(&votes), vec![(1, 0, 1, voter)]);
}

/// What the clients share.
struct Shared {
    /// HTTP URLs of the servers clients may use now.
    live: Mutex<Vec<String>>,
    stop: AtomicBool,
    owner: Identity,
    /// Per record: its next version (one writer at a time per record).
    versions: Vec<Mutex<u64>>,
    history: Vec<Mutex<Vec<RecordOp>>>,
    /// Objects acknowledged: index -> id.
    objects: Mutex<BTreeMap<usize, String>>,
    /// Objects not yet written, highest index first; clients write those below the budget,
    /// which each phase raises, so the objects are written across every phase.
    unwritten: Mutex<Vec<usize>>,
    object_budget: AtomicU64,
    wrong: Mutex<Vec<String>>,
    ops: AtomicU64,
    failed: AtomicU64,
}

fn record_value(i: usize, version: u64) -> Vec<u8> {
    format!("record {i} version {version}").into_bytes()
}

fn object_bytes(i: usize) -> Vec<u8> {
    content(i as u64, 256 + (i * 37) % 3_000)
}

fn client(shared: Arc<Shared>, seed: u64) {
    let mut rng = Rng(seed);
    let owner_hex: String = shared
        .owner
        .public_key()
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    while !shared.stop.load(Ordering::Relaxed) {
        let url = {
            let live = shared.live.lock().unwrap();
            live[rng.below(live.len())].clone()
        };
        shared.ops.fetch_add(1, Ordering::Relaxed);
        match rng.below(4) {
            0 => {
                let budget = shared.object_budget.load(Ordering::Relaxed) as usize;
                let next = {
                    let mut u = shared.unwritten.lock().unwrap();
                    match u.last() {
                        Some(&i) if i < budget => u.pop(),
                        _ => None,
                    }
                };
                let Some(i) = next else { continue };
                let bytes = object_bytes(i);
                let (code, _, body) = call(&url, "PUT", "/v1/objects", &[], &bytes);
                if code == 201 {
                    let id = json(&body)["id"].as_str().unwrap().to_string();
                    shared.objects.lock().unwrap().insert(i, id);
                } else {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                    // Not acknowledged: written again later.
                    let mut u = shared.unwritten.lock().unwrap();
                    u.push(i);
                    u.sort_unstable_by(|a, b| b.cmp(a));
                }
            }
            1 => {
                let acked: Vec<(usize, String)> = {
                    let o = shared.objects.lock().unwrap();
                    if o.is_empty() {
                        continue;
                    }
                    let k = rng.below(o.len());
                    o.iter()
                        .nth(k)
                        .map(|(i, id)| (*i, id.clone()))
                        .into_iter()
                        .collect()
                };
                let (i, id) = &acked[0];
                let (code, _, body) = call(&url, "GET", &format!("/v1/objects/{id}"), &[], b"");
                match code {
                    200 if body == object_bytes(*i) => {}
                    200 => shared
                        .wrong
                        .lock()
                        .unwrap()
                        .push(format!("object {i} read wrong bytes from {url}")),
                    404 => shared
                        .wrong
                        .lock()
                        .unwrap()
                        .push(format!("acknowledged object {i} not found at {url}")),
                    _ => {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            2 => {
                let i = rng.below(RECORDS);
                let mut next = shared.versions[i].lock().unwrap();
                let version = *next + 1;
                let name = format!("r{i}");
                let record = Record::sign(
                    &shared.owner,
                    &name,
                    version,
                    0,
                    RecordValue::Inline(record_value(i, version)),
                )
                .unwrap();
                let hex: String = record.encode().iter().map(|b| format!("{b:02x}")).collect();
                let start = Instant::now();
                let (code, _, _) = call(
                    &url,
                    "PUT",
                    &format!("/v1/records/{name}"),
                    &[("x-record-signed", &hex)],
                    b"",
                );
                let end = Instant::now();
                // A write not acknowledged may still have landed: later versions go above it.
                *next = version;
                if code != 200 {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                }
                shared.history[i].lock().unwrap().push(RecordOp::Write {
                    version,
                    start,
                    end,
                    acked: code == 200,
                });
            }
            _ => {
                let i = rng.below(RECORDS);
                let start = Instant::now();
                let (code, headers, body) = call(
                    &url,
                    "GET",
                    &format!("/v1/records/{owner_hex}/r{i}"),
                    &[],
                    b"",
                );
                let end = Instant::now();
                let version = match code {
                    200 => headers
                        .iter()
                        .find(|(k, _)| k == "x-record-version")
                        .and_then(|(_, v)| v.parse::<u64>().ok())
                        .unwrap_or(0),
                    404 => 0,
                    _ => {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                if code == 200 && body != record_value(i, version) {
                    shared
                        .wrong
                        .lock()
                        .unwrap()
                        .push(format!("record {i} v{version} read wrong bytes from {url}"));
                }
                shared.history[i].lock().unwrap().push(RecordOp::Read {
                    version,
                    start,
                    end,
                });
            }
        }
    }
}

/// Waits until every server in `urls` is a serving member of one configuration that holds
/// exactly `members` (by id), with no range still being taken over.
fn wait_settled(urls: &[String], members: &BTreeSet<String>, within: Duration, what: &str) {
    wait_for(within, what, || {
        urls.iter().all(|u| {
            status(u).is_some_and(|s| {
                let have: BTreeSet<String> = s["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["id"].as_str().unwrap().to_string())
                    .collect();
                s["member"] == true
                    && s["serving"] == true
                    && s["syncing"] == false
                    && have == *members
            })
        })
    });
}

#[test]
fn seven_servers_keep_every_acknowledged_write_and_read_atomically_through_a_kill_a_liar_a_join_and_a_leave(
) {
    let root = tmp("server-mode");
    let lay = layout(&root, GENESIS + 1);
    let committee: Vec<usize> = lay
        .config
        .committee
        .iter()
        .map(|id| lay.slots.iter().position(|s| s.id == *id).unwrap())
        .collect();
    // The liar and the killed server sit on the committee (so the liar sees the killed one's
    // votes); the leaver does not; server 7 joins.
    let liar = committee[0];
    let killed = committee[1];
    let leaver = (0..GENESIS).find(|i| !committee.contains(i)).unwrap();
    let joiner = GENESIS;
    eprintln!(
        "server mode test: liar {liar}, killed {killed}, leaver {leaver}, in {}",
        root.display()
    );

    // The liar, in this process.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut lying = LyingReplica::new();
    let lying_on = lying.on.clone();
    let lies = lying.lies.clone();
    let votes: Arc<Mutex<Votes>> = Arc::default();
    let seen = votes.clone();
    // The newest epoch whose instance the member to be killed has signed in.
    let victim = lay.slots[killed].id;
    let victim_signed = Arc::new(AtomicU64::new(0));
    let signed = victim_signed.clone();
    let hooks = ServerHooks {
        outbound: Some(Box::new(move |to, msg| lying.outbound(to, msg))),
        inbound: Some(Box::new(move |_, msg: &ServerMessage| {
            let (key, value) = match msg {
                ServerMessage::Membership(BftMessage::Vote(v)) => (
                    (v.epoch, v.round, ringvault_bft::kind_tag(v.kind), v.voter),
                    v.value,
                ),
                ServerMessage::Membership(BftMessage::Propose(p)) => (
                    (p.delta.epoch, p.round, 0, p.proposer),
                    Some(p.delta.hash()),
                ),
                _ => return,
            };
            if key.3 == victim {
                signed.fetch_max(key.0, Ordering::SeqCst);
            }
            seen.lock().unwrap().entry(key).or_default().insert(value);
        })),
    };
    let liar_slot = &lay.slots[liar];
    let liar_identity = ringvault_net::load_or_create_identity(&liar_slot.dir).unwrap();
    let cert_text = std::fs::read_to_string(&liar_slot.cert).unwrap();
    let liar_cert =
        NodeCertificate::decode(&ringvault_types::unarmor("NODE CERTIFICATE", &cert_text).unwrap())
            .unwrap();
    let ca_text = std::fs::read_to_string(&lay.ca_pub).unwrap();
    let ca = ringvault_types::PublicKey(
        ringvault_types::unarmor("CA PUBLIC KEY", &ca_text)
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let liar_server = rt
        .block_on(ringvault_net::start_server(
            liar_identity,
            ServerNetConfig {
                listen: format!("127.0.0.1:{}", liar_slot.quic).parse().unwrap(),
                advertise: None,
                ca,
                cert: liar_cert,
                revocations: RevocationList::empty(),
            },
            ServerBoot {
                config: Arc::new(lay.config.clone()),
                cert: None,
                sign_once: None,
                wiped: false,
                items: Vec::new(),
                unsynced: Vec::new(),
                leaving: false,
            },
            Box::new(MemDisk),
            hooks,
        ))
        .unwrap();

    // The six daemons.
    let mut procs: BTreeMap<usize, Proc> = BTreeMap::new();
    for i in (0..GENESIS).filter(|i| *i != liar) {
        procs.insert(i, lay.start(i));
    }
    let honest: Vec<String> = (0..GENESIS)
        .filter(|i| *i != liar)
        .map(|i| lay.slots[i].http.clone())
        .collect();
    let genesis_ids: BTreeSet<String> = lay.slots[..GENESIS]
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    wait_settled(
        &honest,
        &genesis_ids,
        Duration::from_secs(60),
        "all six daemons serving",
    );
    let epoch_of = |url: &str| status(url).map_or(0, |s| s["epoch"].as_u64().unwrap());
    let start_epoch = epoch_of(&honest[0]);
    wait_for(Duration::from_secs(30), "an epoch change", || {
        epoch_of(&honest[0]) > start_epoch
    });

    let shared = Arc::new(Shared {
        live: Mutex::new(honest.clone()),
        stop: AtomicBool::new(false),
        owner: Identity::from_secret_bytes([42; 32]),
        versions: (0..RECORDS).map(|_| Mutex::new(0)).collect(),
        history: (0..RECORDS).map(|_| Mutex::new(Vec::new())).collect(),
        objects: Mutex::new(BTreeMap::new()),
        unwritten: Mutex::new((0..OBJECTS).rev().collect()),
        object_budget: AtomicU64::new(OBJECTS as u64 / 4),
        wrong: Mutex::new(Vec::new()),
        ops: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let s = shared.clone();
            std::thread::spawn(move || client(s, 1 + c as u64))
        })
        .collect();
    let live = |urls: Vec<String>| *shared.live.lock().unwrap() = urls;
    let began = Instant::now();
    let phase = |what: &str| {
        eprintln!(
            "server mode test: {what} ({} ops, {} failed, {} objects acked, {:.1} s)",
            shared.ops.load(Ordering::Relaxed),
            shared.failed.load(Ordering::Relaxed),
            shared.objects.lock().unwrap().len(),
            began.elapsed().as_secs_f64()
        )
    };
    let ops_after = |n: u64| {
        let target = shared.ops.load(Ordering::Relaxed) + n;
        wait_for(Duration::from_secs(120), "client operations", || {
            shared.ops.load(Ordering::Relaxed) >= target
        });
    };
    ops_after(400);
    phase("load running");

    // 1. SIGKILL a committee member near the end of an epoch, when the committee's instance for
    // the next one starts, and restart it from its data dir at once: it comes back into an
    // instance it may have signed in (the others decide it without it) and must sign nothing
    // that contradicts what it signed before. Then kill it again and keep it down for two
    // epoch changes.
    let killed_url = lay.slots[killed].http.clone();
    let killed_id = lay.slots[killed].id;
    let voted_last = |votes: &Votes| {
        votes
            .keys()
            .filter(|k| k.3 == killed_id)
            .map(|k| k.0)
            .max()
            .unwrap_or(0)
    };
    live(
        honest
            .iter()
            .filter(|u| **u != killed_url)
            .cloned()
            .collect(),
    );
    // Killed the moment it is seen signing in the instance for the next epoch (its first
    // signed message there), so that it comes back into an instance it signed in.
    let e = victim_signed.load(Ordering::SeqCst);
    let mut process = procs.remove(&killed).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while victim_signed.load(Ordering::SeqCst) <= e {
        assert!(
            Instant::now() < deadline,
            "the committee member never signed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    process.child.kill().unwrap();
    process.child.wait().unwrap();
    let voted_before_first_kill = victim_signed.load(Ordering::SeqCst);
    procs.insert(killed, lay.start(killed));
    wait_for(Duration::from_secs(90), "the killed member back", || {
        status(&killed_url)
            .is_some_and(|s| s["member"] == true && s["serving"] == true && s["syncing"] == false)
    });
    phase("killed a committee member at an epoch's end and restarted it at once");
    let mut process = procs.remove(&killed).unwrap();
    process.child.kill().unwrap();
    process.child.wait().unwrap();
    phase("killed it again");
    let others: Vec<String> = honest
        .iter()
        .filter(|u| **u != killed_url)
        .cloned()
        .collect();
    let before = epoch_of(&others[0]);
    ops_after(400);
    wait_for(
        Duration::from_secs(60),
        "two epoch changes without the killed member",
        || others.iter().all(|u| epoch_of(u) > before + 1),
    );
    let last_vote_before_kill = voted_last(&votes.lock().unwrap());
    shared
        .object_budget
        .store(OBJECTS as u64 / 2, Ordering::Relaxed);
    procs.insert(killed, lay.start(killed));
    wait_for(Duration::from_secs(90), "the killed member back", || {
        status(&killed_url)
            .is_some_and(|s| s["member"] == true && s["serving"] == true && s["syncing"] == false)
    });
    live(honest.clone());
    phase("restarted it");
    ops_after(400);

    // 2. One server lies in every reply.
    lying_on.store(true, Ordering::Relaxed);
    shared
        .object_budget
        .store(OBJECTS as u64 * 3 / 4, Ordering::Relaxed);
    phase("a server lies");
    let e = epoch_of(&honest[0]);
    ops_after(600);
    wait_for(
        Duration::from_secs(60),
        "two epoch changes while it lies",
        || epoch_of(&honest[0]) > e + 1,
    );
    wait_for(Duration::from_secs(60), "lies told", || {
        lies.load(Ordering::Relaxed) >= 20
    });

    // 3. A server joins and another leaves.
    shared
        .object_budget
        .store(OBJECTS as u64, Ordering::Relaxed);
    procs.insert(joiner, lay.start(joiner));
    let leaver_url = lay.slots[leaver].http.clone();
    let (code, _, body) = http(
        &leaver_url,
        "POST",
        "/v1/server/leave",
        &[("x-ringvault-client", "test")],
        b"",
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    live(
        honest
            .iter()
            .filter(|u| **u != leaver_url)
            .cloned()
            .collect(),
    );
    let mut after: BTreeSet<String> = genesis_ids.clone();
    after.remove(&lay.slots[leaver].id.to_string());
    after.insert(lay.slots[joiner].id.to_string());
    let mut final_urls: Vec<String> = honest
        .iter()
        .filter(|u| **u != leaver_url)
        .cloned()
        .collect();
    final_urls.push(lay.slots[joiner].http.clone());
    wait_settled(
        &final_urls,
        &after,
        Duration::from_secs(120),
        "the join and the leave in force",
    );
    let exited = procs
        .get_mut(&leaver)
        .unwrap()
        .child
        .wait_timeout_or_kill(Duration::from_secs(30));
    assert!(exited, "the leaver's daemon exits once it has left");
    live(final_urls.clone());
    phase("joined and left");
    wait_for(Duration::from_secs(300), "every object written", || {
        shared.objects.lock().unwrap().len() >= OBJECTS
    });
    ops_after(400);
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    phase("load stopped");

    // An object near the 4 MiB limit goes through the API, and one over it is refused.
    let big = content(7_777, 3 << 20);
    let (code, _, body) = http(&final_urls[0], "PUT", "/v1/objects", &[], &big);
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let id = json(&body)["id"].as_str().unwrap().to_string();
    let (code, _, got) = http(
        &final_urls[1],
        "GET",
        &format!("/v1/objects/{id}"),
        &[],
        b"",
    );
    assert!(code == 200 && got == big, "the 3 MiB object reads back");
    let (code, _, body) = http(
        &final_urls[0],
        "PUT",
        "/v1/objects",
        &[],
        &vec![1u8; (4 << 20) + 1],
    );
    assert_eq!(code, 413, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["code"], "too_large");

    // Everything acknowledged reads back, from two servers each, the liar still lying.
    let objects = shared.objects.lock().unwrap().clone();
    assert_eq!(objects.len(), OBJECTS);
    for (n, (i, id)) in objects.iter().enumerate() {
        for url in [
            &final_urls[n % final_urls.len()],
            &final_urls[(n + 1) % final_urls.len()],
        ] {
            let (code, _, body) = http(url, "GET", &format!("/v1/objects/{id}"), &[], b"");
            assert_eq!(code, 200, "object {i} at {url}");
            assert!(
                body == object_bytes(*i),
                "object {i} read wrong bytes at {url}"
            );
        }
    }
    let owner_hex: String = shared
        .owner
        .public_key()
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut records_written = 0;
    for i in 0..RECORDS {
        let history = shared.history[i].lock().unwrap().clone();
        let acked = history
            .iter()
            .filter_map(|o| match o {
                RecordOp::Write {
                    version,
                    acked: true,
                    ..
                } => Some(*version),
                _ => None,
            })
            .max();
        let Some(acked) = acked else { continue };
        records_written += 1;
        let url = &final_urls[i % final_urls.len()];
        let (code, headers, body) = http(
            url,
            "GET",
            &format!("/v1/records/{owner_hex}/r{i}"),
            &[],
            b"",
        );
        assert_eq!(code, 200, "record {i} at {url}");
        let version: u64 = headers
            .iter()
            .find(|(k, _)| k == "x-record-version")
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert!(
            version >= acked,
            "record {i}: read v{version}, v{acked} was acknowledged"
        );
        assert_eq!(body, record_value(i, version));
        let bad = check_history(&history);
        assert!(bad.is_empty(), "record {i}: {bad:?}");
    }
    assert!(
        records_written >= RECORDS * 9 / 10,
        "only {records_written} records written"
    );
    let wrong = shared.wrong.lock().unwrap().clone();
    assert!(wrong.is_empty(), "{wrong:?}");

    // The lies were told and refused.
    let refused: u64 = final_urls
        .iter()
        .filter_map(|u| status(u))
        .map(|s| s["client"]["forged"].as_u64().unwrap())
        .sum();
    assert!(
        lies.load(Ordering::Relaxed) > 0 && refused > 0,
        "lies {}, refused {refused}",
        lies.load(Ordering::Relaxed)
    );

    // The killed member signed after its restart, and nobody signed twice in one round.
    let votes = votes.lock().unwrap().clone();
    assert!(
        voted_last(&votes) > last_vote_before_kill,
        "no vote of the killed member after its restart (last before: epoch {last_vote_before_kill})"
    );
    eprintln!(
        "server mode test: the member was killed while signing in the instance for epoch {voted_before_first_kill}"
    );
    assert!(voted_before_first_kill > 0);
    assert!(
        double_signers(&votes).is_empty(),
        "{:?}",
        double_signers(&votes)
    );

    eprintln!(
        "server mode test: {} operations ({} failed during faults), {OBJECTS} objects and {records_written} records checked, {} lies told and {refused} refused, {} votes checked",
        shared.ops.load(Ordering::Relaxed),
        shared.failed.load(Ordering::Relaxed),
        lies.load(Ordering::Relaxed),
        votes.len()
    );
    drop(procs);
    rt.block_on(liar_server.stop());
    let _ = std::fs::remove_dir_all(&root);
}

trait WaitTimeout {
    /// Waits for the child to exit within `within`; kills it and answers false if it does not.
    fn wait_timeout_or_kill(&mut self, within: Duration) -> bool;
}

impl WaitTimeout for std::process::Child {
    fn wait_timeout_or_kill(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.kill();
        let _ = self.wait();
        false
    }
}
