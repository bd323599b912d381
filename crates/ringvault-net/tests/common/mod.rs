//! Helpers for loopback tests: fast timings, rings on ephemeral ports, conditions with deadlines.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringvault_net::{
    client_config, load_or_create_identity, server_name_for, start, NetConfig, NodeHandle,
    RunningNode, SecureRing, Security, Status,
};
use ringvault_overlay::Config;
use ringvault_types::{
    CertBody, Duration as CoreDuration, Id, Identity, NodeCertificate, RevocationList, CERT_VERSION,
};

/// Overlay timings fast enough for tests; L = 8 so a 16-node ring has proper leaf sets.
pub fn fast_config() -> Config {
    Config {
        leaf_set_size: 8,
        keepalive_interval: CoreDuration::from_millis(250),
        failure_timeout: CoreDuration::from_millis(1000),
        hop_timeout: CoreDuration::from_millis(500),
        join_timeout: CoreDuration::from_secs(3),
        ..Config::default()
    }
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("rv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn node(&self, i: usize) -> PathBuf {
        self.0.join(format!("node{i}"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Starts the node whose data dir is `dir`, joining through `bootstrap`, and waits for it to
/// join.
pub async fn start_node(
    dir: &Path,
    listen: SocketAddr,
    bootstrap: Vec<SocketAddr>,
    cfg: Config,
) -> RunningNode {
    start_node_with(dir, listen, bootstrap, cfg, |_| Security::Open).await
}

/// Like [`start_node`], in the mode `security` gives for the node's identity.
pub async fn start_node_with(
    dir: &Path,
    listen: SocketAddr,
    bootstrap: Vec<SocketAddr>,
    cfg: Config,
    security: impl Fn(&Identity) -> Security,
) -> RunningNode {
    // A just-stopped node's socket is released asynchronously: retry binding it, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let node = loop {
        let identity = load_or_create_identity(dir).unwrap();
        let cfg = NetConfig {
            listen,
            advertise: None,
            overlay: cfg.clone(),
            bootstrap: bootstrap.clone(),
            security: security(&identity),
            emulated_latency: None,
        };
        match start(identity, cfg).await {
            Ok(n) => break n,
            Err(ringvault_net::NetError::Bind { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("starting node in {}: {e}", dir.display()),
        }
    };
    node.handle()
        .wait_ready(Duration::from_secs(20))
        .await
        .unwrap();
    node
}

/// Starts `n` nodes one after another, each joining through the previous one.
pub async fn start_ring(dirs: &TempDir, n: usize, cfg: Config) -> Vec<RunningNode> {
    let mut nodes: Vec<RunningNode> = Vec::new();
    for i in 0..n {
        let boot = nodes
            .last()
            .map(|p| vec![p.contact().addr])
            .unwrap_or_default();
        nodes.push(start_node(&dirs.node(i), loopback(), boot, cfg.clone()).await);
    }
    nodes
}

/// Polls `cond` every 50 ms until it returns `Ok`, failing with its last `Err` after `within`.
pub async fn eventually<F, Fut>(within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match cond().await {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!("not within {within:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Leaf sets that differ from the true L/2 + L/2 neighbours among `ids`.
pub fn wrong_leaf_sets(statuses: &[Status], ids: &[Id], half: usize) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    let n = ids.len();
    let k = half.min(n - 1);
    let mut wrong = Vec::new();
    for s in statuses {
        let pos = ids.binary_search(&s.id).expect("status of a live node");
        let want_cw: Vec<Id> = (1..=k).map(|d| ids[(pos + d) % n]).collect();
        let want_ccw: Vec<Id> = (1..=k).map(|d| ids[(pos + n - d) % n]).collect();
        let got_cw: Vec<Id> = s.leaf_set_larger.iter().map(|p| p.id).collect();
        let got_ccw: Vec<Id> = s.leaf_set_smaller.iter().map(|p| p.id).collect();
        if got_cw != want_cw || got_ccw != want_ccw {
            wrong.push(format!("{} has a wrong leaf set", s.id.short()));
        }
    }
    wrong
}

pub async fn statuses(handles: &[NodeHandle]) -> Result<Vec<Status>, String> {
    let mut v = Vec::new();
    for h in handles {
        v.push(h.status().await.map_err(|e| e.to_string())?);
    }
    Ok(v)
}

/// The id numerically closest to `key` among `ids`.
pub fn true_root(ids: &[Id], key: &Id) -> Id {
    *ids.iter()
        .min_by(|a, b| key.cmp_closeness(a, b))
        .expect("a live node")
}

/// Routes `keys` from the nodes in turn, concurrently; returns the wrong roots found.
pub async fn wrong_routes(handles: &[NodeHandle], ids: &[Id], keys: &[Id]) -> Vec<String> {
    let mut tasks = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let h = handles[i % handles.len()].clone();
        let key = *key;
        tasks.push(tokio::spawn(async move { (key, h.route(key).await) }));
    }
    let mut wrong = Vec::new();
    for t in tasks {
        let (key, r) = t.await.unwrap();
        match r {
            Ok(r) if r.root.id == true_root(ids, &key) => {}
            Ok(r) => wrong.push(format!("{} routed to {}", key.short(), r.root.id.short())),
            Err(e) => wrong.push(format!("{}: {e}", key.short())),
        }
    }
    wrong
}

pub fn keys(n: usize, salt: &str) -> Vec<Id> {
    (0..n)
        .map(|i| Id::hash(format!("{salt}-{i}").as_bytes()))
        .collect()
}

// Secure mode: certificates from a test CA, and dials that show what a node admits.

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A serial unique to `node` (the tests' CAs number certificates by their node).
pub fn serial_of(node: &Identity) -> u64 {
    u64::from_le_bytes(node.id().as_bytes()[..8].try_into().unwrap())
}

pub fn cert_body(node: &Identity, not_before: u64, not_after: u64) -> CertBody {
    CertBody {
        version: CERT_VERSION,
        serial: serial_of(node),
        node_id: node.id(),
        public_key: node.public_key(),
        addrs: vec!["127.0.0.1:7000".parse().unwrap()],
        not_before,
        not_after,
    }
}

/// Valid from a minute ago for an hour.
pub fn valid_body(node: &Identity) -> CertBody {
    let now = unix_now();
    cert_body(node, now - 60, now + 3_600)
}

/// Secure mode under `ca` with `cert`.
pub fn secure_with(ca: &Identity, cert: NodeCertificate) -> Security {
    Security::Secure(Box::new(SecureRing {
        ca: ca.public_key(),
        cert,
        revocations: RevocationList::empty(),
    }))
}

/// Dials `addr` as `identity` presenting `security`'s certificate; `Ok` when admitted.
///
/// A TLS 1.3 client finishes its side of the handshake before the server has checked the
/// client's certificate, so a refusal can arrive just after the dial "succeeds". The dial
/// therefore sends one (empty, invalid) frame and waits until the server has acknowledged it or
/// the connection is lost: the server answers one way or the other, no timing involved.
pub async fn dial(
    addr: SocketAddr,
    identity: &Identity,
    security: &Security,
) -> Result<(), String> {
    let mut ep = quinn::Endpoint::client(loopback()).unwrap();
    ep.set_default_client_config(client_config(identity, security).unwrap());
    let attempt = async {
        let c = ep
            .connect(addr, &server_name_for(None))
            .unwrap()
            .await
            .map_err(|e| e.to_string())?;
        let mut s = c.open_uni().await.map_err(|e| e.to_string())?;
        s.write_all(&[0, 0, 0, 0])
            .await
            .map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())?;
        let r = s.stopped().await.map(|_| ()).map_err(|e| e.to_string());
        c.close(0u32.into(), b"");
        r
    };
    let r = tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".into()));
    ep.close(0u32.into(), b"");
    r
}

/// Peers `h` refused so far for `reason`.
pub async fn refused(h: &NodeHandle, reason: &str) -> u64 {
    let st = h.status().await.unwrap();
    st.metrics.peers_refused.get(reason).copied().unwrap_or(0)
}

/// The refusals counted for `reason` once they reach `want` (within five seconds). The refusing
/// side counts a handshake that failed only after it saw the failure, which can be after the
/// dialler saw it: a count read at once can still be one short.
pub async fn refused_reaches(h: &NodeHandle, reason: &str, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = refused(h, reason).await;
        if n >= want || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Certificates `stranger` might present to a ring under `ca`, each wrong in one way, with the
/// reason the ring must refuse it for.
pub fn bad_certificates(
    ca: &Identity,
    rogue_ca: &Identity,
    stranger: &Identity,
) -> Vec<(&'static str, NodeCertificate)> {
    let now = unix_now();
    let mut chosen_id = valid_body(stranger);
    chosen_id.node_id = Id::hash(b"an id next to a key I want");
    let someone_else = Identity::from_secret_bytes([8; 32]);
    vec![
        (
            "bad_signature",
            NodeCertificate::issue(rogue_ca, valid_body(stranger)),
        ),
        (
            "expired",
            NodeCertificate::issue(ca, cert_body(stranger, now - 7_200, now - 3_600)),
        ),
        (
            "not_yet_valid",
            NodeCertificate::issue(ca, cert_body(stranger, now + 3_600, now + 7_200)),
        ),
        ("id_mismatch", NodeCertificate::issue(ca, chosen_id)),
        // A valid certificate of someone else, presented with the stranger's own key.
        (
            "key_mismatch",
            NodeCertificate::issue(ca, valid_body(&someone_else)),
        ),
    ]
}

/// Dials the node `h` at `addr` as `stranger` with each of [`bad_certificates`]: every one is
/// refused and counted under its reason.
pub async fn assert_each_refused(
    h: &NodeHandle,
    addr: SocketAddr,
    ca: &Identity,
    stranger: &Identity,
) {
    let rogue_ca = Identity::from_secret_bytes([199; 32]);
    for (reason, cert) in bad_certificates(ca, &rogue_ca, stranger) {
        let before = refused(h, reason).await;
        let r = dial(addr, stranger, &secure_with(ca, cert)).await;
        assert!(r.is_err(), "{reason}: admitted");
        assert_eq!(
            refused_reaches(h, reason, before + 1).await,
            before + 1,
            "{reason} not counted once"
        );
    }
}
