//! `ringvault bench sim-vs-real`: the simulator checked against real daemons.
//!
//! The simulator places N nodes (ids derived from the seed) in its latency model and builds a
//! ring of them, each joining through its nearest joined node, with no maintenance (its static
//! build). Then N real nodes with the same keys run over QUIC on loopback in this process, in
//! the same join order, each joining through its nearest node, with the model's delays
//! emulated at their sockets (so QUIC's RTT, their proximity metric, sees the model) and
//! routing table maintenance off. Both route the same keys from the same nodes, and the
//! figures the simulator's experiments report (mean hops, stretch) are compared; stretch is
//! computed from the model's delays for both, so it compares the paths, not the clocks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringvault_net::{store_identity, NodeHandle};
use ringvault_node::RouteReport;
use ringvault_overlay::Config;
use ringvault_sim::Sim;
use ringvault_types::{Id, Identity};
use serde::Serialize;
use tokio::sync::watch;

use super::settle;
use crate::cli::Mode;
use crate::node::daemon::{start_local_ring, stop_all, temp_dir, Latency, LocalRing};
use crate::node::emulate::{emulated, placed, LatencyModel};
use crate::node::objects;

/// Options of `ringvault bench sim-vs-real`.
#[derive(Args)]
pub struct SimVsRealArgs {
    /// Nodes, in the simulator and as real daemons.
    #[arg(long, default_value_t = 64)]
    pub nodes: u16,
    /// Routes, the same in both: from a random node to a random other node's id.
    #[arg(long, default_value_t = 2000)]
    pub routes: usize,
    /// Seed of the node keys, the places and the routes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Bits per digit of the routing tables (b), on both sides.
    #[arg(long, default_value_t = 4)]
    pub b: u8,
    /// Leaf set size (L), on both sides. A small ring with a leaf set that spans it routes
    /// every key in one hop, where proximity plays no part: make it small there.
    #[arg(long, default_value_t = 16)]
    pub leaf_set_size: usize,
    /// The latency model the real nodes' datagrams are delayed by.
    #[arg(long, value_enum, default_value_t = LatencyModel::Euclidean)]
    pub model: LatencyModel,
    /// Routes in flight on the real ring at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The control: the real nodes join as with the delays but run without them (they then
    /// choose their neighbours by loopback noise), which the comparison must reject.
    #[arg(long)]
    pub control: bool,
    /// Write the comparison to DIR/sim-vs-real[-N][-control].json as well (N when not 64).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print the comparison as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What one side's routes measured.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Figures {
    /// Routes that came back with a report.
    pub answered: usize,
    /// Of those, routes that ended at the key's node (every key is a node's id).
    pub at_the_right_node: usize,
    /// Mean overlay hops.
    pub mean_hops: f64,
    /// Mean relative distance: the model's delay along the path over the direct delay.
    pub stretch: f64,
    /// Fraction of routes taking 0, 1, 2, ... hops.
    pub hop_fractions: Vec<f64>,
}

/// The comparison.
#[derive(Serialize, Debug)]
pub struct Comparison {
    /// Nodes on each side.
    pub nodes: usize,
    /// Routes asked of each side.
    pub routes: usize,
    /// The seed.
    pub seed: u64,
    /// The latency model.
    pub model: &'static str,
    /// Bits per digit.
    pub b: u8,
    /// Leaf set size.
    pub leaf_set_size: usize,
    /// The real nodes' figures.
    pub real: Figures,
    /// The simulator's figures.
    pub sim: Figures,
    /// |real - sim| / sim of the mean hops.
    pub hops_difference: f64,
    /// |real - sim| / sim of the stretch.
    pub stretch_difference: f64,
    /// Both within the 10% the simulator is held to.
    pub agree: bool,
    /// The real nodes ran without emulated delays (the control).
    pub control: bool,
    /// Fraction of the routes answered on both sides whose paths were identical.
    pub same_path: f64,
    /// Real nodes whose leaf set was not exact when the routes began (the comparison waits
    /// up to a minute for none, as in the simulator's build).
    pub real_wrong_leaf_sets: usize,
    /// Seconds the real ring took to start and settle.
    pub real_ring_s: f64,
    /// Load average (1 minute) when the routes were done: the machine's other work.
    pub load_average: Option<f64>,
}

/// How far apart the two sides may be (relative), per figure.
pub const TOLERANCE: f64 = 0.10;
/// Longest route a figure counts by hop number; longer ones share the last bucket.
const HOP_BUCKETS: usize = 8;

/// The deterministic identities of a comparison's nodes.
fn identities(seed: u64, n: usize) -> Vec<Identity> {
    (0..n as u64)
        .map(|i| {
            let tag = [
                b"sim-vs-real".as_slice(),
                &seed.to_le_bytes(),
                &i.to_le_bytes(),
            ]
            .concat();
            Identity::from_secret_bytes(*Id::hash(&tag).as_bytes())
        })
        .collect()
}

/// The routes: from a random node to a random other node's id, by index.
fn routes(seed: u64, n: usize, count: usize) -> Vec<(usize, usize)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x05ee_d0f0_a7e5);
    (0..count)
        .map(|_| {
            let src = rng.gen_range(0..n);
            let dst = (src + rng.gen_range(1..n)) % n;
            (src, dst)
        })
        .collect()
}

/// Hops, stretch and the right node for each answered route; the path as node indices.
fn figures(
    sim: &Sim,
    ids: &[Id],
    routes: &[(usize, usize)],
    reports: &[Option<Vec<Id>>],
) -> Figures {
    let index = |id: &Id| ids.iter().position(|x| x == id).map(|i| i as u32);
    let (mut answered, mut right, mut hops) = (0usize, 0usize, 0usize);
    let mut stretch = (0f64, 0usize);
    let mut hist = [0usize; HOP_BUCKETS];
    for (&(src, dst), path) in routes.iter().zip(reports) {
        let Some(path) = path else { continue };
        let Some(idx) = path.iter().map(index).collect::<Option<Vec<u32>>>() else {
            continue; // a node outside the ring: not answered
        };
        answered += 1;
        right += (idx.last() == Some(&(dst as u32))) as usize;
        let h = idx.len().saturating_sub(1);
        hops += h;
        hist[h.min(HOP_BUCKETS - 1)] += 1;
        if let Some(x) = sim.path_stretch(src as u32, dst as u32, &idx) {
            stretch.0 += x;
            stretch.1 += 1;
        }
    }
    let a = answered.max(1) as f64;
    Figures {
        answered,
        at_the_right_node: right,
        mean_hops: hops as f64 / a,
        stretch: stretch.0 / stretch.1.max(1) as f64,
        hop_fractions: hist.iter().map(|&x| x as f64 / a).collect(),
    }
}

fn path_ids(r: &RouteReport) -> Vec<Id> {
    r.path.iter().map(|c| c.id).collect()
}

/// Routes `routes` on the real ring, at most `concurrency` at once, in order.
async fn route_real(
    handles: &[NodeHandle],
    ids: &[Id],
    routes: &[(usize, usize)],
    concurrency: usize,
) -> Vec<Option<Vec<Id>>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(routes.len());
    for &(src, dst) in routes {
        let (h, key, sem) = (handles[src].clone(), ids[dst], sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            h.route(key).await.ok().map(|r| path_ids(&r))
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.ok().flatten());
    }
    out
}

/// How many of the real nodes' leaf sets differ from the true L/2 + L/2 neighbours.
async fn wrong_leaf_sets(handles: &[NodeHandle], ids: &[Id], l: usize) -> Result<usize> {
    let mut ring: Vec<Id> = ids.to_vec();
    ring.sort();
    let mut wrong = 0;
    for h in handles {
        let s = h.status().await?;
        let me = h.contact().id;
        let pos = ring.iter().position(|x| *x == me).unwrap_or(0);
        let (cw, ccw) = ringvault_sim::true_leaf_set(&ring, pos, l);
        let got_cw: Vec<Id> = s.leaf_set_larger.iter().map(|p| p.id).collect();
        let got_ccw: Vec<Id> = s.leaf_set_smaller.iter().map(|p| p.id).collect();
        wrong += (got_cw != cw || got_ccw != ccw) as usize;
    }
    Ok(wrong)
}

/// Waits (bounded) until every real node's leaf set is exact, as the simulator's are after
/// its build; the number still wrong at the deadline.
async fn exact_leaf_sets(handles: &[NodeHandle], ids: &[Id], l: usize) -> Result<usize> {
    let deadline = Instant::now() + EXACT_WITHIN;
    loop {
        let wrong = wrong_leaf_sets(handles, ids, l).await?;
        if wrong == 0 || Instant::now() > deadline {
            return Ok(wrong);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// How long the real ring may take to reach exact leaf sets.
const EXACT_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs the comparison: the simulator's build and routes, then the real ring's.
pub async fn compare(a: &SimVsRealArgs, dir: &Path) -> Result<Comparison> {
    let n = a.nodes as usize;
    if n < 2 {
        bail!("--nodes must be at least 2");
    }
    let keys = identities(a.seed, n);
    let ids: Vec<Id> = keys.iter().map(Identity::id).collect();
    let routes = routes(a.seed, n, a.routes);

    // The simulator: its static build, as its hops and stretch experiments make it.
    let overlay = Config {
        b: a.b,
        leaf_set_size: a.leaf_set_size,
        ..Config::default()
    };
    overlay
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}; fix --b or --leaf-set-size"))?;
    let sim_overlay = Config {
        keepalives: false,
        ..overlay.clone()
    };
    let mut sim = placed(a.model, a.seed, sim_overlay, &ids);
    for i in 0..n as u32 {
        if !sim.join_and_settle(i) {
            bail!("simulated node {i} did not join (seed {})", a.seed);
        }
    }
    let probes: Vec<(u32, Id)> = routes.iter().map(|&(s, d)| (s as u32, ids[d])).collect();
    let sim_paths: Vec<Option<Vec<Id>>> = sim
        .route_many(&probes, 64, |_| {})
        .iter()
        .map(|r| r.as_ref().map(path_ids))
        .collect();

    // The real ring, at the same places, joining in the same order.
    for (i, key) in keys.iter().enumerate() {
        store_identity(&dir.join(format!("node-{i}")), key)?;
    }
    let real_overlay = Config {
        table_maintenance_interval: None,
        ..overlay
    };
    let (_stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let spec = LocalRing {
        nodes: a.nodes,
        base_port: 0,
        http_base: None,
        overlay: real_overlay.clone(),
        store: objects::store_config(None, None, crate::cli::Durability::Sync, a.nodes)?,
        mode: Mode::Open,
        quota: None,
        latency: Some(if a.control {
            Latency::JoinsOnly(emulated(&sim)?)
        } else {
            Latency::Emulated(emulated(&sim)?)
        }),
    };
    let nodes = start_local_ring(spec, dir, &stop_rx).await?;
    let handles: Vec<NodeHandle> = nodes.iter().map(|x| x.node.handle()).collect();
    let measured = async {
        for (i, h) in handles.iter().enumerate() {
            let id = h.contact().id;
            if id != ids[i] {
                bail!("real node {i} runs as {id}, not the id it was given");
            }
        }
        settle(&handles, real_overlay.leaf_set_size).await?;
        let wrong = exact_leaf_sets(&handles, &ids, real_overlay.leaf_set_size).await?;
        let real_ring_s = started.elapsed().as_secs_f64();
        let paths = route_real(&handles, &ids, &routes, a.concurrency).await;
        Ok((paths, wrong, real_ring_s, load_average()))
    }
    .await;
    stop_all(nodes).await;
    let (real_paths, real_wrong_leaf_sets, real_ring_s, load_average) = measured?;

    let real = figures(&sim, &ids, &routes, &real_paths);
    let simulated = figures(&sim, &ids, &routes, &sim_paths);
    let both: Vec<bool> = real_paths
        .iter()
        .zip(&sim_paths)
        .filter_map(|(r, s)| Some(r.as_ref()? == s.as_ref()?))
        .collect();
    let same_path = both.iter().filter(|&&x| x).count() as f64 / both.len().max(1) as f64;
    let rel = |r: f64, s: f64| (r - s).abs() / s.max(f64::MIN_POSITIVE);
    let hops_difference = rel(real.mean_hops, simulated.mean_hops);
    let stretch_difference = rel(real.stretch, simulated.stretch);
    Ok(Comparison {
        nodes: n,
        routes: a.routes,
        seed: a.seed,
        model: a.model.name(),
        b: a.b,
        leaf_set_size: a.leaf_set_size,
        agree: hops_difference <= TOLERANCE && stretch_difference <= TOLERANCE,
        control: a.control,
        real,
        sim: simulated,
        hops_difference,
        stretch_difference,
        same_path,
        real_wrong_leaf_sets,
        real_ring_s,
        load_average,
    })
}

/// `ringvault bench sim-vs-real`.
pub async fn run(a: SimVsRealArgs) -> Result<()> {
    let dir = temp_dir("ringvault-sim-vs-real")?;
    if !a.json {
        eprintln!(
            "simulating {} nodes ({:?} model, seed {}), then running them as real nodes with emulated delays ...",
            a.nodes,
            a.model,
            a.seed
        );
    }
    let result = compare(&a, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let c = result?;
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let size = if c.nodes == 64 {
            String::new()
        } else {
            format!("-{}", c.nodes)
        };
        let control = if c.control { "-control" } else { "" };
        let file = out.join(format!("sim-vs-real{size}{control}.json"));
        std::fs::write(&file, serde_json::to_string_pretty(&c)? + "\n")
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    if a.json {
        out!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    let pct = |x: f64| x * 100.0;
    out!(
        "{:<24} {:>10} {:>10} {:>11}",
        "",
        "real",
        "simulator",
        "difference"
    );
    out!(
        "{:<24} {:>10.3} {:>10.3} {:>10.1}%",
        "mean hops",
        c.real.mean_hops,
        c.sim.mean_hops,
        pct(c.hops_difference)
    );
    out!(
        "{:<24} {:>10.3} {:>10.3} {:>10.1}%",
        "stretch",
        c.real.stretch,
        c.sim.stretch,
        pct(c.stretch_difference)
    );
    out!(
        "{:<24} {:>10} {:>10}",
        "answered",
        c.real.answered,
        c.sim.answered
    );
    out!(
        "{:<24} {:>10} {:>10}",
        "at the key's node",
        c.real.at_the_right_node,
        c.sim.at_the_right_node
    );
    out!(
        "identical paths: {:.1}% of the routes; real ring up in {:.1} s ({} leaf sets not exact); load average {}",
        pct(c.same_path),
        c.real_ring_s,
        c.real_wrong_leaf_sets,
        c.load_average
            .map_or("unknown".to_string(), |l| format!("{l:.2}"))
    );
    out!(
        "{}",
        if c.agree {
            format!("the simulator agrees within {:.0}%", pct(TOLERANCE))
        } else {
            format!("the simulator does NOT agree within {:.0}%", pct(TOLERANCE))
        }
    );
    Ok(())
}
