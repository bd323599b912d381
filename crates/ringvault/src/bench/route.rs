//! `ringvault bench route`: route latency (p50/p99) and routes per second on a local ring over
//! QUIC, every route checked against the true root.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ringvault_net::NodeHandle;
use ringvault_types::Id;
use tokio::sync::watch;

use super::{ms, percentile, start_bench_ring};
use crate::cli::Mode;
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

/// Message kinds a plain route causes, and a secure one (its deliveries counted apart).
const PLAIN_KINDS: &[&str] = &["routed", "hop_ack", "direct"];
const SECURE_KINDS: &[&str] = &["secure_hop", "root_set"];

/// Messages of `kinds` sent so far by every node.
async fn messages_of(handles: &[NodeHandle], kinds: &[&str]) -> Result<u64> {
    let mut n = 0;
    for h in handles {
        let st = h.status().await?;
        n += kinds
            .iter()
            .map(|k| st.metrics.messages_out.get(k).copied().unwrap_or(0))
            .sum::<u64>();
    }
    Ok(n)
}

/// What the secure routes measured.
struct SecureFigures {
    lat1: Vec<Duration>,
    lat2: Vec<Duration>,
    elapsed: Duration,
    routes: usize,
    messages: f64,
    deliveries: f64,
    failed: usize,
    redundant: usize,
    wrong: usize,
}

/// `seq` secure routes one at a time, then `routes` with `concurrency` in flight; each one's
/// set checked against the true 5 closest.
async fn secure_routes(
    handles: &[NodeHandle],
    ids: &[Id],
    seq: usize,
    routes: usize,
    concurrency: usize,
) -> Result<SecureFigures> {
    const R: u8 = 5;
    let m0 = messages_of(handles, SECURE_KINDS).await?;
    let d0 = messages_of(handles, &["secure_deliver"]).await?;
    let (mut failed, mut redundant, mut wrong) = (0, 0, 0);
    let run = |keys: Vec<Id>, c: usize| {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(c.max(1)));
        let tasks: Vec<_> = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let h = handles[i % handles.len()].clone();
                let sem = sem.clone();
                let mut want: Vec<Id> = ids.to_vec();
                want.sort_by(|a, b| key.cmp_closeness(a, b));
                want.truncate(R as usize);
                tokio::spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let t0 = Instant::now();
                    let r = h.secure_route(key, R).await;
                    (t0.elapsed(), r, want)
                })
            })
            .collect();
        tasks
    };
    let mut collect = |lat: &mut Vec<Duration>,
                       out: Vec<(
        Duration,
        Result<ringvault_overlay::SecureRouteReport, ringvault_net::NetError>,
        Vec<Id>,
    )>| {
        for (d, r, want) in out {
            match r {
                Ok(rep) => {
                    lat.push(d);
                    redundant += rep.redundant as usize;
                    let got: Vec<Id> = rep.sent_to.iter().map(|c| c.id).collect();
                    if !want.iter().all(|w| got.contains(w)) {
                        wrong += 1;
                    }
                }
                Err(_) => failed += 1,
            }
        }
    };
    let key = |salt: &str, i: usize| Id::hash(format!("bench-secure-{salt}-{i}").as_bytes());
    let mut lat1 = Vec::new();
    let mut done = Vec::new();
    for t in run((0..seq).map(|i| key("seq", i)).collect(), 1) {
        done.push(t.await?);
    }
    collect(&mut lat1, done);
    let t1 = Instant::now();
    let mut lat2 = Vec::new();
    let mut done = Vec::new();
    for t in run((0..routes).map(|i| key("par", i)).collect(), concurrency) {
        done.push(t.await?);
    }
    let elapsed = t1.elapsed();
    collect(&mut lat2, done);
    lat1.sort();
    lat2.sort();
    let all = (seq + routes).max(1);
    Ok(SecureFigures {
        lat1,
        lat2,
        elapsed,
        routes: all,
        messages: (messages_of(handles, SECURE_KINDS).await? - m0) as f64,
        deliveries: (messages_of(handles, &["secure_deliver"]).await? - d0) as f64,
        failed,
        redundant,
        wrong,
    })
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
pub async fn run(n: u16, routes: usize, concurrency: usize, mode: Mode) -> Result<()> {
    init_logs("warn");
    if n < 2 {
        bail!("--nodes must be at least 2");
    }
    let (_stop_tx, stop_rx) = watch::channel(false);
    out!("starting a {n}-node ring on loopback QUIC ...");
    let t0 = Instant::now();
    let config = objects::store_config(None, None, crate::cli::Durability::Sync, n)?;
    let (dir, nodes) = start_bench_ring(n, false, config, mode, &stop_rx).await?;
    let handles: Vec<NodeHandle> = nodes.iter().map(|x| x.node.handle()).collect();
    let ids: Vec<Id> = nodes.iter().map(|x| x.node.contact().id).collect();
    out!("ring up in {:.1} s", t0.elapsed().as_secs_f64());
    let key = |salt: &str, i: usize| Id::hash(format!("bench-{salt}-{i}").as_bytes());
    let p0 = messages_of(&handles, PLAIN_KINDS).await?;
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
    let plain_messages = (messages_of(&handles, PLAIN_KINDS).await? - p0) as f64;
    let secure = if mode == Mode::Secure {
        Some(secure_routes(&handles, &ids, seq, routes, concurrency).await?)
    } else {
        None
    };
    let mut hops = ringvault_net::Metrics::default().route_hops;
    for h in &handles {
        hops.merge(&h.status().await?.metrics.route_hops);
    }
    out!();
    out!(
        "bench route: {n} nodes, loopback QUIC, default overlay config, {} mode",
        if mode == Mode::Secure {
            "secure"
        } else {
            "open"
        }
    );
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
    let all = 500 + seq + routes;
    out!(
        "  {:<30} {:.2} (hops, hop acknowledgements, the root's reply)",
        "messages per plain route",
        plain_messages / all as f64
    );
    out!("  failed: {}   wrong root: {}", f1 + f2, w1 + w2);
    if let Some(s) = secure {
        out!();
        out!("secure routes (sec_route to the 5 closest nodes):");
        out!(
            "  {:<30} {}",
            format!("one at a time ({seq} routes)"),
            latency_line(&s.lat1)
        );
        out!(
            "  {:<30} {}",
            format!("{concurrency} in flight ({routes} routes)"),
            latency_line(&s.lat2)
        );
        out!(
            "  {:<30} {:.0} secure routes/s",
            "throughput",
            s.lat2.len() as f64 / s.elapsed.as_secs_f64()
        );
        out!(
            "  {:<30} {:.2} (secure hops, the answer; plain route: {:.2})",
            "messages per secure route",
            s.messages / s.routes as f64,
            plain_messages / all as f64
        );
        out!(
            "  {:<30} {:.2} per route",
            "deliveries to the set",
            s.deliveries / s.routes as f64
        );
        out!(
            "  failed: {}   redundant (failure test fired): {}   chosen set missed one of the true 5 closest (receivers then complete it): {}",
            s.failed, s.redundant, s.wrong
        );
    }
    stop_all(nodes).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
