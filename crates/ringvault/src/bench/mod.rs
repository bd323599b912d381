//! Benchmarks of real nodes: `ringvault bench route`, `ringvault bench storage` and
//! `ringvault bench sim-vs-real`, each on a local ring in this process, and what they share
//! (the ring, percentiles).

pub mod route;
pub mod sim_vs_real;
pub mod storage;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ringvault_net::NodeHandle;
use ringvault_overlay::Config;
use ringvault_store::StoreConfig;
use tokio::sync::watch;

use crate::cli::Mode;
use crate::node::daemon::{start_local_ring, stop_all, temp_dir, LocalNode, LocalRing};

/// A local ring for a benchmark, on loopback under a fresh temporary directory (removed again
/// if the ring cannot start), with HTTP APIs on free ports if `http`, returned once it has
/// settled (every leaf set full) so what is measured is a settled ring.
pub async fn start_bench_ring(
    n: u16,
    http: bool,
    store_config: StoreConfig,
    mode: Mode,
    stop: &watch::Receiver<bool>,
) -> Result<(PathBuf, Vec<LocalNode>)> {
    let dir = temp_dir("ringvault-bench")?;
    let http = http.then_some(0);
    let spec = LocalRing {
        nodes: n,
        base_port: 0,
        http_base: http,
        overlay: Config::default(),
        store: store_config,
        mode,
        quota: None,
        latency: None,
    };
    let started = start_local_ring(spec, &dir, stop).await;
    let nodes = match started {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let handles: Vec<NodeHandle> = nodes.iter().map(|x| x.node.handle()).collect();
    if let Err(e) = settle(&handles, Config::default().leaf_set_size).await {
        stop_all(nodes).await;
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok((dir, nodes))
}

/// How long a benchmark's ring may take to settle.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

/// Waits (bounded) until every node's leaf set is full.
pub async fn settle(handles: &[NodeHandle], leaf_set_size: usize) -> Result<()> {
    let want = leaf_set_size.min(handles.len().saturating_sub(1));
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let mut full = true;
        for h in handles {
            let s = h.status().await?;
            full &= s.leaf_set_smaller.len() + s.leaf_set_larger.len() >= want;
        }
        if full {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the ring did not settle (full leaf sets) within {SETTLE_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value at fraction `p` (0 to 1) of `sorted`, ascending (zero for none).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Milliseconds, for tables.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
