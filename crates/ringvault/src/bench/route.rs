//! `ringvault bench route`: route latency (p50/p99) and routes per second on a local ring over
//! QUIC, every route checked against the true root.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ringvault_net::NodeHandle;
use ringvault_types::Id;
use tokio::sync::watch;

use super::{ms, percentile, start_bench_ring};
use crate::node::daemon::{init_logs, stop_all};
use crate::node::objects;

fn true_root(ids: &[Id], key: &Id) -> Id {
    *ids.iter()
        .min_by(|a, b| key.cmp_closeness(a, b))
        .unwrap_or(key)
}

/// Runs `keys` as route probes with at most `concurrency` in flight; returns each latency and
/// the number that failed or reached the wrong root.
async fn run_routes(
    handles: &[NodeHandle],
    ids: &[Id],
    keys: Vec<Id>,
    concurrency: usize,
) -> (Vec<Duration>, usize, usize) {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let h = handles[i % handles.len()].clone();
        let sem = sem.clone();
        let want = true_root(ids, &key);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let t0 = Instant::now();
            let r = h.route(key).await;
            (t0.elapsed(), r.map(|r| (r.root.id == want, r.hops())))
        }));
    }
    let (mut lat, mut failed, mut wrong) = (Vec::new(), 0, 0);
    for t in tasks {
        match t.await {
            Ok((d, Ok((ok, _)))) => {
                lat.push(d);
                if !ok {
                    wrong += 1;
                }
            }
            _ => failed += 1,
        }
    }
    lat.sort();
    (lat, failed, wrong)
}

fn latency_line(lat: &[Duration]) -> String {
    format!(
        "p50 {:.3} ms   p99 {:.3} ms",
        ms(percentile(lat, 0.5)),
        ms(percentile(lat, 0.99))
    )
}

/// `ringvault bench route`: route probes on a local ring, one at a time and `concurrency` at
/// once.
pub async fn run(n: u16, routes: usize, concurrency: usize) -> Result<()> {
    init_logs("warn");
    if n < 2 {
        bail!("--nodes must be at least 2");
    }
    let (_stop_tx, stop_rx) = watch::channel(false);
    out!("starting a {n}-node ring on loopback QUIC ...");
    let t0 = Instant::now();
    let config = objects::store_config(None, None, crate::cli::Durability::Sync, n)?;
    let (dir, nodes) = start_bench_ring(n, false, config, &stop_rx).await?;
    let handles: Vec<NodeHandle> = nodes.iter().map(|x| x.node.handle()).collect();
    let ids: Vec<Id> = nodes.iter().map(|x| x.node.contact().id).collect();
    out!("ring up in {:.1} s", t0.elapsed().as_secs_f64());
    let key = |salt: &str, i: usize| Id::hash(format!("bench-{salt}-{i}").as_bytes());
    // Warm-up: open the connections routes will use.
    let _ = run_routes(
        &handles,
        &ids,
        (0..500).map(|i| key("warm", i)).collect(),
        16,
    )
    .await;

    let seq = (routes / 4).max(1);
    let (lat1, f1, w1) =
        run_routes(&handles, &ids, (0..seq).map(|i| key("seq", i)).collect(), 1).await;
    let t1 = Instant::now();
    let (lat2, f2, w2) = run_routes(
        &handles,
        &ids,
        (0..routes).map(|i| key("par", i)).collect(),
        concurrency,
    )
    .await;
    let elapsed = t1.elapsed();
    let mut hops = ringvault_net::Metrics::default().route_hops;
    for h in &handles {
        hops.merge(&h.status().await?.metrics.route_hops);
    }
    out!();
    out!("bench route: {n} nodes, loopback QUIC, default overlay config");
    let rows = [
        (format!("one at a time ({seq} routes)"), latency_line(&lat1)),
        (
            format!("{concurrency} in flight ({routes} routes)"),
            latency_line(&lat2),
        ),
        (
            "throughput".to_string(),
            format!("{:.0} routes/s", lat2.len() as f64 / elapsed.as_secs_f64()),
        ),
        (
            "mean overlay hops".to_string(),
            format!("{:.2}", hops.sum / hops.count().max(1) as f64),
        ),
    ];
    for (k, v) in rows {
        out!("  {k:<30} {v}");
    }
    out!("  failed: {}   wrong root: {}", f1 + f2, w1 + w2);
    stop_all(nodes).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
