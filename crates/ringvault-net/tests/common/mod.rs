//! Helpers for loopback tests: fast timings, rings on ephemeral ports, conditions with deadlines.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringvault_net::{
    load_or_create_identity, start, NetConfig, NodeHandle, RunningNode, Security, Status,
};
use ringvault_overlay::Config;
use ringvault_types::{Duration as CoreDuration, Id, Identity};

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
