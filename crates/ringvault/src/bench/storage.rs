//! `ringvault bench storage`: put and get latency (p50/p99) and throughput on a local ring, each
//! operation an HTTP request to one of the ring's nodes, as a client of the ring sees it.
//!
//! Per object size: puts one at a time (latency), puts with `--concurrency` in flight
//! (throughput), then gets of those same objects the same two ways, each from another node than
//! the one that stored it. Every get's bytes are compared with what was put.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use ringvault_net::NodeHandle;
use ringvault_overlay::Config;
use ringvault_store::StoreConfig;
use serde::Serialize;
use tokio::sync::watch;

use super::{ms, percentile};
use crate::api::objects::MAX_UPLOAD;
use crate::api::stream::ChannelBody;
use crate::cli::client;
use crate::node::daemon;
use crate::node::objects;

/// How long a request may take to be answered, plus one second per MiB it carries.
const REQUEST_WITHIN: Duration = Duration::from_secs(30);

/// Options of `ringvault bench storage`.
#[derive(Args)]
pub struct StorageArgs {
    /// Ring size.
    #[arg(long, default_value_t = 16)]
    pub nodes: u16,
    /// Object sizes, comma-separated (e.g. 1KiB,1MiB,10MB,1GiB; above 4 MiB an object is
    /// stored as chunks plus a manifest). Bodies are generated and checked as they stream, so
    /// any size up to 64 GiB fits in memory; the disk needs k copies of each.
    #[arg(long, value_delimiter = ',', default_value = "1KiB,1MiB")]
    pub sizes: Vec<String>,
    /// Objects put (then got) in each phase, per size, comma-separated in the order of --sizes
    /// (one number applies to every size).
    #[arg(long, value_delimiter = ',', default_value = "1000,200")]
    pub counts: Vec<usize>,
    /// Operations in flight, comma-separated: one put phase and one get phase each (1 gives
    /// latency, more gives throughput). Each worker keeps its HTTP connections alive.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub concurrency: Vec<usize>,
    /// Replicas of each object (k).
    #[arg(long, default_value_t = 3)]
    pub replicas: u8,
    #[command(flatten)]
    pub durability: crate::cli::DurabilityArg,
    /// `open` (the default) or `secure`: a classic ring; `server`: a ring of servers from one
    /// genesis (committee of 4, replica groups of 3f + 1 = 4, objects of at most 4 MiB; --replicas
    /// and --durability do not apply: every write waits for 2f + 1 signed acks, each after its
    /// replica synced it).
    #[arg(long, value_enum, default_value_t = crate::cli::Mode::Open)]
    pub mode: crate::cli::Mode,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One measured phase.
#[derive(Serialize)]
struct Row {
    size: u64,
    op: &'static str,
    in_flight: usize,
    ops: usize,
    failed: usize,
    wrong_bytes: usize,
    p50_ms: f64,
    p99_ms: f64,
    ops_per_s: f64,
    /// Object bytes moved per second (10^6 bytes; a put writes k copies of them).
    mb_per_s: f64,
}

#[derive(Serialize)]
struct Report {
    mode: &'static str,
    nodes: u16,
    replicas: u8,
    durability: &'static str,
    concurrency: Vec<usize>,
    cpus: usize,
    rows: Vec<Row>,
    /// Peers any node declared failed while measuring (none fails; one declared failed means
    /// a node answered too late, for example while busy storing); classic mode only.
    peers_declared_failed: Option<u64>,
    /// The most memory this process (the ring and the client) held at once, from the kernel
    /// (VmHWM); `None` where /proc is not there.
    peak_rss_bytes: Option<u64>,
}

/// The peak resident memory of this process so far (Linux: VmHWM in /proc/self/status).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The bytes of the objects of one size, made piece by piece so an object of any size is never
/// held whole: object `i` is `size` bytes of 1 MiB blocks, each a copy of one filler block
/// tagged with (i, block number) in its first 16 bytes, so no two objects and no two chunks
/// are equal (equal chunks would be deduplicated).
struct Content {
    size: u64,
    base: Vec<u8>,
}

/// Bytes per block of [`Content`] (and per piece of a streamed body).
const BLOCK: u64 = 1 << 20;

impl Content {
    fn new(size: u64, seed: u64) -> Self {
        Content {
            size,
            base: filler(size.min(BLOCK) as usize, seed),
        }
    }

    fn blocks(&self) -> u64 {
        self.size.div_ceil(BLOCK)
    }

    /// Block `k` of object `i`.
    fn block(&self, i: usize, k: u64) -> Vec<u8> {
        let len = (self.size - k * BLOCK).min(BLOCK) as usize;
        let mut v = self.base[..len].to_vec();
        let tag: Vec<u8> = (i as u64)
            .to_le_bytes()
            .into_iter()
            .chain(k.to_le_bytes())
            .collect();
        let n = len.min(tag.len());
        v[..n].copy_from_slice(&tag[..n]);
        v
    }

    /// Object `i` as an upload body: its blocks, two at most in memory.
    fn body(self: &Arc<Self>, i: usize) -> ChannelBody {
        let (tx, body) = ChannelBody::new(Some(self.size), 2);
        let me = self.clone();
        tokio::spawn(async move {
            for k in 0..me.blocks() {
                if tx.send(Ok(Bytes::from(me.block(i, k)))).await.is_err() {
                    return; // the request ended
                }
            }
        });
        body
    }

    /// Whether a download of object `i` is exactly its bytes, compared piece by piece as they
    /// arrive; `Err` when the download broke off.
    async fn matches(&self, i: usize, mut body: hyper::body::Incoming) -> Result<bool> {
        let (mut k, mut cur, mut at) = (0, self.block(i, 0), 0);
        let mut same = true;
        while let Some(frame) = body.frame().await {
            let Ok(mut data) = frame?.into_data() else {
                continue;
            };
            while !data.is_empty() {
                if at == cur.len() {
                    k += 1;
                    if k >= self.blocks() {
                        return Ok(false); // longer than the object
                    }
                    (cur, at) = (self.block(i, k), 0);
                }
                let n = data.len().min(cur.len() - at);
                same &= data[..n] == cur[at..at + n];
                data = data.slice(n..);
                at += n;
            }
        }
        Ok(same && k + 1 >= self.blocks() && at == cur.len())
    }
}

/// Deterministic filler bytes (xorshift), incompressible enough for a storage benchmark.
fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What one phase needs to know.
struct Phase {
    op: &'static str,
    /// Object names of the phase (index i -> name).
    tag: String,
    count: usize,
    in_flight: usize,
    size: u64,
}

/// Shared by the workers of a phase.
struct Ctx {
    urls: Vec<String>,
    /// Server mode: objects are content-addressed, put without a name.
    servers: bool,
    content: Arc<Content>,
    replicas: u8,
    /// Ids of the objects put, by phase tag and index (None: the put failed).
    ids: Mutex<std::collections::BTreeMap<String, Vec<Option<String>>>>,
    bar: ProgressBar,
}

/// Outcome of one operation.
enum Outcome {
    Ok(Duration),
    Failed,
    WrongBytes,
}

/// How long a request carrying an object of `size` bytes may take.
fn within(size: u64) -> Duration {
    REQUEST_WITHIN + Duration::from_secs(size / BLOCK)
}

/// One worker's kept-alive connections, by node index.
type Connections = std::collections::HashMap<usize, client::Connection>;

fn connection<'a>(
    conns: &'a mut Connections,
    ctx: &Ctx,
    node: usize,
) -> &'a mut client::Connection {
    conns
        .entry(node)
        .or_insert_with(|| client::Connection::new(&ctx.urls[node]))
}

async fn put_one(
    ctx: &Ctx,
    conns: &mut Connections,
    tag: &str,
    i: usize,
) -> (Outcome, Option<String>) {
    let n = i % ctx.urls.len();
    let node = &ctx.urls[n];
    let path = if ctx.servers {
        "/v1/objects".to_string()
    } else {
        format!("/v1/objects?name={tag}-{i}&replicas={}", ctx.replicas)
    };
    let body = client::any_body(ctx.content.body(i));
    let t0 = Instant::now();
    let conn = connection(conns, ctx, n);
    let r = match conn
        .open(Method::PUT, &path, &[], body, within(ctx.content.size))
        .await
    {
        Ok(resp) => client::read_all(node, resp).await,
        Err(e) => Err(e),
    };
    let took = t0.elapsed();
    match r {
        Ok((201, _, b)) => {
            let id = serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| v["id"].as_str().map(String::from));
            match id {
                Some(id) => (Outcome::Ok(took), Some(id)),
                None => (Outcome::Failed, None),
            }
        }
        Ok((status, _, b)) => {
            tracing::warn!(
                "put {tag}-{i} through {node}: {status} {}",
                String::from_utf8_lossy(&b)
            );
            (Outcome::Failed, None)
        }
        Err(e) => {
            tracing::warn!("put {tag}-{i} through {node}: {e}");
            (Outcome::Failed, None)
        }
    }
}

async fn get_one(ctx: &Ctx, conns: &mut Connections, id: &str, i: usize) -> Outcome {
    // Half the ring away from the node that stored it.
    let n = (i + ctx.urls.len() / 2) % ctx.urls.len();
    let node = &ctx.urls[n];
    let t0 = Instant::now();
    let path = format!("/v1/objects/{id}");
    let within = within(ctx.content.size);
    let body = client::any_body(Empty::<Bytes>::new());
    let conn = connection(conns, ctx, n);
    let r = match conn.open(Method::GET, &path, &[], body, within).await {
        Ok(resp) if resp.status() == 200 => match ctx.content.matches(i, resp.into_body()).await {
            Ok(true) => return Outcome::Ok(t0.elapsed()),
            Ok(false) => return Outcome::WrongBytes,
            Err(e) => Err(e),
        },
        Ok(resp) => client::read_all(node, resp).await,
        Err(e) => Err(e),
    };
    match r {
        Ok((status, _, b)) => {
            tracing::warn!(
                "get {id} from {node}: {status} {}",
                String::from_utf8_lossy(&b)
            );
            Outcome::Failed
        }
        Err(e) => {
            tracing::warn!("get {id} from {node}: {e}");
            Outcome::Failed
        }
    }
}

/// Runs one phase with `in_flight` workers taking the next index until `count` are done.
async fn run_phase(ctx: Arc<Ctx>, p: Phase) -> Row {
    ctx.bar.set_message(format!(
        "{} {} x{} ({} in flight)",
        p.op,
        crate::cli::output::human_size(p.size),
        p.count,
        p.in_flight
    ));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..p.in_flight.max(1) {
        let (ctx, next, tag, op, count) = (ctx.clone(), next.clone(), p.tag.clone(), p.op, p.count);
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut conns = Connections::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return out;
                }
                let outcome = if op == "put" {
                    let (o, id) = put_one(&ctx, &mut conns, &tag, i).await;
                    if let Ok(mut ids) = ctx.ids.lock() {
                        if let Some(v) = ids.get_mut(&tag) {
                            v[i] = id;
                        }
                    }
                    o
                } else {
                    let id = ctx
                        .ids
                        .lock()
                        .ok()
                        .and_then(|ids| ids.get(&tag).and_then(|v| v[i].clone()));
                    match id {
                        Some(id) => get_one(&ctx, &mut conns, &id, i).await,
                        None => Outcome::Failed, // its put failed
                    }
                };
                ctx.bar.inc(1);
                out.push(outcome);
            }
        }));
    }
    let mut lat = Vec::new();
    let (mut failed, mut wrong) = (0, 0);
    for w in workers {
        for o in w.await.unwrap_or_default() {
            match o {
                Outcome::Ok(d) => lat.push(d),
                Outcome::Failed => failed += 1,
                Outcome::WrongBytes => wrong += 1,
            }
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    lat.sort();
    Row {
        size: p.size,
        op: p.op,
        in_flight: p.in_flight,
        ops: p.count,
        failed,
        wrong_bytes: wrong,
        p50_ms: ms(percentile(&lat, 0.5)),
        p99_ms: ms(percentile(&lat, 0.99)),
        ops_per_s: lat.len() as f64 / secs,
        mb_per_s: lat.len() as f64 * p.size as f64 / secs / 1e6,
    }
}

/// Peers the nodes have declared failed so far, all together.
async fn peers_failed(handles: &[NodeHandle]) -> u64 {
    let mut n = 0;
    for h in handles {
        if let Ok(s) = h.status().await {
            n += s.metrics.peers_failed;
        }
    }
    n
}

fn print_table(r: &Report) {
    out!(
        "bench storage: {} mode, {} nodes on loopback QUIC in one process, k = {}, --durability {}, through each node's HTTP API (connections kept alive); {} CPUs",
        r.mode, r.nodes, r.replicas, r.durability, r.cpus
    );
    out!(
        "  {:<8} {:<4} {:>9} {:>6} {:>9} {:>9} {:>9} {:>8} {:>7}",
        "size",
        "op",
        "in flight",
        "ops",
        "p50 ms",
        "p99 ms",
        "ops/s",
        "MB/s",
        "failed"
    );
    for x in &r.rows {
        out!(
            "  {:<8} {:<4} {:>9} {:>6} {:>9.2} {:>9.2} {:>9.1} {:>8.2} {:>7}",
            crate::cli::output::human_size(x.size),
            x.op,
            x.in_flight,
            x.ops,
            x.p50_ms,
            x.p99_ms,
            x.ops_per_s,
            x.mb_per_s,
            x.failed + x.wrong_bytes
        );
    }
    let wrong: usize = r.rows.iter().map(|x| x.wrong_bytes).sum();
    out!(
        "  wrong bytes returned: {wrong}   (MB = 10^6 bytes of object data; a put stores k copies)"
    );
    if let Some(n) = r.peers_declared_failed {
        out!("  peers declared failed while measuring: {n}");
    }
    if let Some(b) = r.peak_rss_bytes {
        out!(
            "  peak memory of this process (the ring and the client): {} MiB",
            b >> 20
        );
    }
}

/// `ringvault bench storage`.
pub async fn run(a: StorageArgs) -> Result<()> {
    daemon::init_logs("warn");
    if a.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    if a.concurrency.is_empty() || a.concurrency.contains(&0) {
        bail!("--concurrency: give operations in flight of at least 1, e.g. 1,16");
    }
    let sizes = a
        .sizes
        .iter()
        .map(|s| objects::parse_size(s).with_context(|| format!("--sizes {s}")))
        .collect::<Result<Vec<u64>>>()?;
    if let Some(s) = sizes.iter().find(|s| **s > MAX_UPLOAD) {
        bail!("--sizes: {s} bytes is more than an upload may be ({MAX_UPLOAD})");
    }
    let counts: Vec<usize> = match a.counts.len() {
        1 => vec![a.counts[0]; sizes.len()],
        n if n == sizes.len() => a.counts.clone(),
        n => bail!(
            "--counts has {n} numbers for {} sizes; give one per size or one for all",
            sizes.len()
        ),
    };
    let servers = a.mode == crate::cli::Mode::Server;
    if servers {
        if let Some(s) = sizes
            .iter()
            .find(|s| **s > ringvault_bft::MAX_OBJECT as u64)
        {
            bail!(
                "--sizes: server mode stores objects of at most {} bytes, not {s}",
                ringvault_bft::MAX_OBJECT
            );
        }
        if a.nodes < 4 {
            bail!("--nodes must be at least 4 in server mode (a replica group is 4 servers)");
        }
    }
    let max_k = Config::default().leaf_set_size / 2 + 1;
    if a.replicas == 0 || a.replicas as usize > max_k || a.replicas as usize > a.nodes as usize {
        bail!(
            "--replicas must be from 1 to {} for {} nodes",
            max_k.min(a.nodes as usize),
            a.nodes
        );
    }
    // Room for everything on every node even if unevenly spread, and for the acceptance rule
    // (an object is refused when it is more than a tenth of the free space).
    let total: u64 = sizes
        .iter()
        .zip(&counts)
        .map(|(s, c)| s * (*c * a.concurrency.len()) as u64)
        .sum();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let capacity = (objects::DEFAULT_CAPACITY)
        .max(4 * total * a.replicas as u64 / a.nodes as u64 + 20 * largest);

    let (stop_tx, stop_rx) = watch::channel(false);
    if !a.json {
        out!("starting a {}-node ring on loopback QUIC ...", a.nodes);
    }
    let t0 = Instant::now();
    let report = if servers {
        let dir = daemon::temp_dir("ringvault-bench")?;
        let started = daemon::start_local_servers(&dir, a.nodes, 0, 0, 10_000, &stop_rx).await;
        let result = match started {
            Ok((genesis, ring)) => {
                let urls = ring.iter().map(|s| format!("http://{}", s.http)).collect();
                let k = genesis.params.group_size() as u8;
                let r = measure(&a, &sizes, &counts, urls, &[], k, t0).await;
                stop_tx.send_replace(true);
                daemon::stop_servers(ring).await;
                r
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_dir_all(&dir);
        result?
    } else {
        let config = StoreConfig {
            capacity,
            ..objects::store_config(None, None, a.durability.durability, a.nodes)?
        };
        let (dir, nodes) = super::start_bench_ring(a.nodes, true, config, a.mode, &stop_rx).await?;
        let handles: Vec<NodeHandle> = nodes.iter().map(|x| x.node.handle()).collect();
        let urls = nodes
            .iter()
            .map(|n| {
                n.http
                    .as_ref()
                    .map(|(addr, _)| format!("http://{addr}"))
                    .ok_or_else(|| anyhow!("a node of the ring serves no HTTP API"))
            })
            .collect::<Result<Vec<String>>>();
        let result = match urls {
            Ok(urls) => measure(&a, &sizes, &counts, urls, &handles, a.replicas, t0).await,
            Err(e) => Err(e),
        };
        // The HTTP servers stop when this flips; stop_all waits for them.
        stop_tx.send_replace(true);
        daemon::stop_all(nodes).await;
        let _ = std::fs::remove_dir_all(&dir);
        result?
    };
    if a.json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!();
        print_table(&report);
    }
    Ok(())
}

/// Measures through the HTTP APIs at `urls`, objects kept on `k` nodes each; `handles` are a
/// classic ring's nodes (for the count of peers declared failed), empty for servers.
async fn measure(
    a: &StorageArgs,
    sizes: &[u64],
    counts: &[usize],
    urls: Vec<String>,
    handles: &[NodeHandle],
    k: u8,
    t0: Instant,
) -> Result<Report> {
    let failed_before = peers_failed(handles).await;
    if !a.json {
        out!("ring up in {:.1} s", t0.elapsed().as_secs_f64());
    }
    let total_ops: usize = counts.iter().map(|c| 2 * c * a.concurrency.len()).sum();
    let bar = ProgressBar::new(total_ops as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} ops  {elapsed_precise}  {msg}")
            .map_err(|e| anyhow!("progress bar template: {e}"))?,
    );
    let mut rows = Vec::new();
    // A run tag keeps names fresh if the same data dir were ever reused.
    let run = format!("{:x}", std::process::id());
    for (s, (&size, &count)) in sizes.iter().zip(counts).enumerate() {
        let ctx = Arc::new(Ctx {
            urls: urls.clone(),
            servers: a.mode == crate::cli::Mode::Server,
            content: Arc::new(Content::new(size, s as u64 + 1)),
            replicas: a.replicas,
            ids: Mutex::default(),
            bar: bar.clone(),
        });
        let puts = a.concurrency.iter().map(|&c| ("put", c));
        let gets = a.concurrency.iter().map(|&c| ("get", c));
        for (op, in_flight) in puts.chain(gets).collect::<Vec<_>>() {
            let tag = format!("bench-{run}-{size}-c{in_flight}");
            if op == "put" {
                if let Ok(mut ids) = ctx.ids.lock() {
                    ids.insert(tag.clone(), vec![None; count]);
                }
            }
            let phase = Phase {
                op,
                tag,
                count,
                in_flight,
                size,
            };
            rows.push(run_phase(ctx.clone(), phase).await);
        }
    }
    bar.finish_and_clear();
    let servers = a.mode == crate::cli::Mode::Server;
    let peers_declared_failed =
        (!servers).then_some(peers_failed(handles).await.saturating_sub(failed_before));
    Ok(Report {
        mode: match a.mode {
            crate::cli::Mode::Open => "open",
            crate::cli::Mode::Secure => "secure",
            crate::cli::Mode::Server => "server",
        },
        peers_declared_failed,
        nodes: a.nodes,
        replicas: k,
        durability: match (servers, a.durability.durability) {
            (true, _) => "sync (server mode)",
            (false, crate::cli::Durability::Sync) => "sync",
            (false, crate::cli::Durability::Replicated) => "replicated",
        },
        concurrency: a.concurrency.clone(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rows,
        peak_rss_bytes: peak_rss(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_their_blocks_differ_and_keep_their_size() {
        let c = Content::new(3 * BLOCK + 10, 1);
        assert_eq!(c.blocks(), 4);
        assert_eq!(c.block(7, 0).len(), BLOCK as usize);
        assert_eq!(c.block(7, 3).len(), 10);
        assert_ne!(c.block(7, 0), c.block(8, 0));
        assert_ne!(c.block(7, 0), c.block(7, 1));
        let small = Content::new(2, 1);
        assert_eq!(small.block(1, 0), vec![1, 0]);
        assert_eq!(Content::new(0, 1).blocks(), 0);
    }
}
