//! `ringvault node` and `ringvault ring`: nodes running in this process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ringvault_net::{
    load_or_create_identity, start_with, EmulatedLatency, LatencySeat, NetConfig, NodeHandle,
    RunningNode, Security,
};
use ringvault_overlay::Config;
use ringvault_store::{StoreConfig, StoreFile};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::auth::HttpAuth;
use crate::api::conns::HttpLimits;
use crate::api::http::{self, Clients};
use crate::cli::{Mode, NodeArgs, RingArgs};
use crate::node::config::FileConfig;
use crate::node::objects;
use crate::node::quota;
use crate::node::records;
use crate::node::secure::{self, LocalCa, SecureFiles};
use crate::node::server::{LocalServers, ServerApi, ServerSetup};
use crate::node::topics;
use ringvault_net::Phase;

/// How long a node of a local ring may take to join.
const JOIN_WITHIN: Duration = Duration::from_secs(30);

pub fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Resolves when the process is asked to stop (Ctrl-C, or SIGTERM on Unix). The handlers are
/// installed when this is called, not when it is first awaited, so a signal sent as soon as
/// the node says it is serving is not lost.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn resolve(addrs: &[String]) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for a in addrs {
        let found = tokio::net::lookup_host(a.as_str())
            .await
            .with_context(|| format!("cannot resolve bootstrap address {a:?}; give HOST:PORT"))?;
        out.extend(found);
    }
    Ok(out)
}

/// Binds the HTTP API's port: done before the node starts, so a taken port fails before the
/// node joins anything.
async fn bind_http(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve HTTP on {addr}; pick a free port"))
}

/// Runs `serve` (an HTTP API) on `listener` in a task of its own, handing it a shutdown signal
/// that resolves when `stop` flips; the address bound and the task.
fn spawn_http<F, Fut>(
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
    serve: F,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)>
where
    F: FnOnce(tokio::net::TcpListener, Shutdown) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let shutdown: Shutdown = Box::pin(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        if let Err(e) = serve(listener, shutdown).await {
            tracing::error!("HTTP server on {bound} failed: {e}");
        }
    });
    Ok((bound, task))
}

/// What an HTTP server stops on.
type Shutdown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// An HTTP server for `node` on `listener`; stops when `stop` flips.
fn serve_http(
    listener: tokio::net::TcpListener,
    node: NodeHandle,
    clients: Clients,
    limits: HttpLimits,
    auth: HttpAuth,
    stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    spawn_http(listener, stop, move |l, shutdown| {
        http::serve(l, node, clients, limits, auth, shutdown)
    })
}

pub async fn node(a: NodeArgs) -> Result<()> {
    init_logs("info");
    let file = match &a.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let data_dir = a.data_dir.clone().or(file.data_dir).ok_or_else(|| {
        anyhow!("no data directory; pass --data-dir DIR (or data_dir in --config)")
    })?;
    let listen = a
        .listen
        .or(file.listen)
        .unwrap_or(([127, 0, 0, 1], 7000).into());
    let http_addr = a
        .http
        .or(file.http)
        .unwrap_or(([127, 0, 0, 1], 8000).into());
    let bootstrap = resolve(if a.bootstrap.is_empty() {
        &file.bootstrap
    } else {
        &a.bootstrap
    })
    .await?;
    let overlay = a.mode.mode.overlay(file.overlay.to_config()?);
    let store_config = objects::store_config(
        a.capacity.as_deref(),
        a.store_cache.as_deref(),
        a.durability.durability,
        1,
    )?;
    let on_damage = if a.recover_store {
        objects::OnDamage::MoveAside
    } else {
        objects::OnDamage::Refuse
    };

    let advertise = match a.advertise.clone().or(file.advertise) {
        Some(a) => Some(
            tokio::net::lookup_host(a.as_str())
                .await
                .ok()
                .and_then(|mut found| found.next())
                .ok_or_else(|| anyhow!("cannot resolve --advertise {a:?}; give HOST:PORT"))?,
        ),
        None => None,
    };
    let identity = if a.mode.mode == Mode::Server {
        crate::node::server::load_key(&data_dir)?.0
    } else {
        load_or_create_identity(&data_dir)?
    };
    if let Some(path) = &a.cert_request {
        let addr = advertise.unwrap_or(listen);
        secure::write_request(&identity, addr, path)?;
        say!(
            "wrote a certificate signing request for node {} at {addr} to {}\nhave the ring's CA issue it: ringvault ca issue --dir CA_DIR --request {}",
            identity.id(),
            path.display(),
            path.display()
        );
        return Ok(());
    }
    let (limits, auth) = http_settings(&a, http_addr)?;
    if a.mode.mode == Mode::Server {
        if a.capacity.is_some()
            || a.store_cache.is_some()
            || a.quota.setup()?.is_some()
            || a.recover_store
            || !bootstrap.is_empty()
        {
            bail!("--capacity, --store-cache, --broker, --recover-store and --bootstrap are classic-mode settings: a server finds the others in its configuration (--genesis), and server mode has no quotas yet");
        }
        if file.storage.cache.is_some() {
            bail!("[storage] cache in the config file is a classic-mode setting: servers do not cache objects passing through (they hold their key ranges' objects in full)");
        }
        let setup = ServerSetup {
            listen,
            advertise,
            ..server_files(&a)?
        };
        return server_node(data_dir, identity, setup, http_addr, limits, auth).await;
    }
    if a.genesis.is_some() {
        bail!("--genesis is for --mode server");
    }
    let secure_files = match a.mode.mode {
        Mode::Open => {
            if a.ca.is_some() || a.cert.is_some() || a.revocations.is_some() {
                bail!("--ca, --cert and --revocations are for --mode secure");
            }
            None
        }
        Mode::Server => unreachable!("server mode returned above"),
        Mode::Secure => Some(SecureFiles {
            ca: a.ca.clone().context("--mode secure needs --ca FILE")?,
            cert: a.cert.clone().context("--mode secure needs --cert FILE")?,
            revocations: a.revocations.clone(),
        }),
    };
    let (security, ca_key) = match &secure_files {
        None => (Security::Open, None),
        Some(f) => {
            let (ca, ring) = f.load()?;
            (Security::Secure(Box::new(ring)), Some(ca))
        }
    };
    let quota = a.quota.setup()?;
    let mut store_config = store_config;
    store_config.capacity = a.quota.supplied(identity.id(), store_config.capacity)?;
    let objects = objects::open_store(&data_dir, store_config, on_damage)?;
    let record_store = Box::new(objects.records());
    let mut past = a.mode.mode.past();
    past.quota = quota.as_ref().map(|q| q.past_quota(ca_key));
    if let Some(c) = file.storage.cache {
        past.cache = c.into();
    }
    let (mut services, mut store) = objects::past_services(&identity, objects, past)?;
    if let Some(q) = &quota {
        let secure = match &security {
            Security::Secure(s) => Some((s.ca, s.cert.clone())),
            Security::Open => None,
        };
        store.set_quota(quota::add_accounts(&mut services, &identity, q, secure));
    }
    let topic_client = topics::add_scribe(&mut services);
    let record_client = records::add_records(
        &mut services,
        &identity,
        records::RecordsSetup {
            config: a.mode.mode.records(),
            store: record_store,
            away: records::time_away(&data_dir),
        },
        Some(topic_client.clone()),
    );
    let http_listener = bind_http(http_addr).await?;
    let running = start_with(
        identity,
        NetConfig {
            listen,
            advertise,
            overlay,
            bootstrap,
            security,
            emulated_latency: None,
        },
        services,
    )
    .await?;
    if let (Some(files), Some(ca)) = (secure_files, ca_key) {
        files.watch(running.handle(), ca);
    }
    records::keep_alive(data_dir.clone(), running.handle());
    let (stop_tx, stop_rx) = watch::channel(false);
    let served = serve_http(
        http_listener,
        running.handle(),
        Clients {
            objects: Some(store),
            topics: Some(topic_client),
            records: Some(record_client),
        },
        limits,
        auth,
        stop_rx,
    );
    let (http_bound, http_task) = match served {
        Ok(x) => x,
        Err(e) => {
            running.shutdown().await;
            return Err(e);
        }
    };
    let c = running.contact();
    let stop = stop_signal();
    say!("node {} quic {} http http://{http_bound}/", c.id, c.addr);
    info!(id = %c.id, quic = %c.addr, http = %format!("http://{http_bound}"), "serving; Ctrl-C to leave");
    stop.await;
    info!("leaving the ring");
    running.shutdown().await;
    stop_tx.send_replace(true);
    let _ = http_task.await;
    Ok(())
}

/// The HTTP API's connection limits and authentication from the flags, with a warning when
/// the API is reachable off this machine.
fn http_settings(a: &NodeArgs, http_addr: SocketAddr) -> Result<(HttpLimits, HttpAuth)> {
    let defaults = HttpLimits::default();
    let limits = HttpLimits {
        header_timeout: a
            .http_header_timeout_ms
            .map_or(defaults.header_timeout, Duration::from_millis),
        max_connections: a.http_max_connections.unwrap_or(defaults.max_connections),
    };
    if limits.max_connections == 0 || limits.header_timeout.is_zero() {
        bail!("--http-max-connections and --http-header-timeout-ms must be at least 1");
    }
    let auth = HttpAuth::new(a.http_token.as_deref(), a.http_token_reads, &a.http_host)?;
    if !http_addr.ip().is_loopback() {
        if auth.has_token() {
            warn!(
                "the HTTP API on {http_addr} is reachable off this machine over plain HTTP: its token crosses the network in clear; put a TLS proxy in front (docs/operating.md)"
            );
        } else {
            warn!(
                "the HTTP API on {http_addr} is reachable off this machine and has no token: anyone who reaches it can store, read and reclaim as this node (--http-token FILE)"
            );
        }
    }
    Ok((limits, auth))
}

/// Server mode's files from the flags: the CA key, the certificate, the revocation list and
/// the genesis (checked against the CA). The addresses are the caller's to fill in.
fn server_files(a: &NodeArgs) -> Result<ServerSetup> {
    let files = SecureFiles {
        ca: a.ca.clone().context("--mode server needs --ca FILE")?,
        cert: a.cert.clone().context("--mode server needs --cert FILE")?,
        revocations: a.revocations.clone(),
    };
    let (ca, ring) = files.load()?;
    let genesis = a
        .genesis
        .as_deref()
        .context("--mode server needs --genesis FILE (`ringvault ca genesis` signs one)")?;
    Ok(ServerSetup {
        listen: ([127, 0, 0, 1], 0).into(),
        advertise: None,
        ca,
        cert: ring.cert,
        revocations: ring.revocations,
        genesis: crate::ca::load_genesis(genesis, &ca)?,
    })
}

/// `ringvault node --mode server`: the server and its HTTP API, until Ctrl-C or until it has
/// left the ring (`ringvault server leave`).
async fn server_node(
    data_dir: PathBuf,
    identity: ringvault_types::Identity,
    setup: ServerSetup,
    http_addr: SocketAddr,
    limits: HttpLimits,
    auth: HttpAuth,
) -> Result<()> {
    let http_listener = bind_http(http_addr).await?;
    let api_identity = ringvault_types::Identity::from_secret_bytes(identity.secret_bytes());
    let running = crate::node::server::start(&data_dir, identity, setup).await?;
    let handle = running.handle();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (http_bound, http_task) = serve_server_http(
        http_listener,
        ServerApi::new(handle.clone(), &api_identity),
        limits,
        auth,
        stop_rx,
    )?;
    let c = handle.contact();
    let stop = stop_signal();
    say!("server {} quic {} http http://{http_bound}/", c.id, c.addr);
    info!(id = %c.id, quic = %c.addr, http = %format!("http://{http_bound}"), "serving; Ctrl-C to stop");
    tokio::select! {
        () = stop => info!("stopping"),
        phase = handle.wait_left() => match phase {
            Phase::Left => {
                // The new owners of its ranges take them over from the old owners, this one
                // included: it answers them for one lease before it goes.
                let lease = handle
                    .status()
                    .await
                    .map_or(Duration::ZERO, |s| Duration::from_millis(s.params.lease_ms()));
                say!(
                    "left the ring; serving the hand-over of its ranges for {} s, then exiting",
                    lease.as_secs()
                );
                tokio::select! {
                    () = tokio::time::sleep(lease) => {}
                    () = stop_signal() => {}
                }
            }
            _ => {
                running.stop().await;
                stop_tx.send_replace(true);
                let _ = http_task.await;
                bail!("the server stopped on an error (see the log above)");
            }
        },
    }
    running.stop().await;
    stop_tx.send_replace(true);
    let _ = http_task.await;
    Ok(())
}

/// A server-mode HTTP API on `listener`; stops when `stop` flips.
fn serve_server_http(
    listener: tokio::net::TcpListener,
    api: ServerApi,
    limits: HttpLimits,
    auth: HttpAuth,
    stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    spawn_http(listener, stop, move |l, shutdown| {
        crate::api::server::serve(l, api, limits, auth, shutdown)
    })
}

/// One server of a local ring.
pub struct LocalServer {
    pub server: ringvault_net::RunningServer,
    pub http: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// Starts a local ring of `n` servers under `dir` (QUIC on 127.0.0.1:(base_port + i), HTTP on
/// 127.0.0.1:(http_base + i); 0: free ports), with its CA and genesis made on first use; their
/// HTTP servers stop when `stop` flips. Answers the genesis and the servers.
pub async fn start_local_servers(
    dir: &Path,
    n: u16,
    base_port: u16,
    http_base: u16,
    epoch_ms: u64,
    stop: &watch::Receiver<bool>,
) -> Result<(ringvault_bft::Config, Vec<LocalServer>)> {
    let local = LocalServers::prepare(dir, n, base_port, epoch_ms)?;
    let mut running = Vec::new();
    for (i, (server_dir, identity, listen, cert)) in local.servers.into_iter().enumerate() {
        let http_addr: SocketAddr = (
            [127, 0, 0, 1],
            port(http_base, i as u16, "--http-base-port")?,
        )
            .into();
        let started = async {
            let listener = bind_http(http_addr).await?;
            let api_identity =
                ringvault_types::Identity::from_secret_bytes(identity.secret_bytes());
            let setup = ServerSetup {
                listen,
                advertise: None,
                ca: local.ca,
                cert,
                revocations: ringvault_types::RevocationList::empty(),
                genesis: local.genesis.clone(),
            };
            let server = crate::node::server::start(&server_dir, identity, setup).await?;
            let api = ServerApi::new(server.handle(), &api_identity);
            let (http, task) = serve_server_http(
                listener,
                api,
                HttpLimits::default(),
                HttpAuth::default(),
                stop.clone(),
            )?;
            anyhow::Ok(LocalServer { server, http, task })
        };
        match started.await {
            Ok(s) => running.push(s),
            Err(e) => {
                stop_servers(running).await;
                return Err(e.context(format!("server {i}")));
            }
        }
    }
    Ok((local.genesis, running))
}

/// Stops a local ring's servers and their HTTP servers.
pub async fn stop_servers(servers: Vec<LocalServer>) {
    for s in servers {
        s.server.stop().await;
        s.task.abort();
    }
}

/// `ringvault ring --mode server`: a CA, a genesis of `a.nodes` servers (committee of 4,
/// f = 1) and the servers with their HTTP APIs, until Ctrl-C.
async fn server_ring(a: RingArgs, dir: &Path) -> Result<()> {
    let epoch_ms = crate::ca::parse_span(&a.epoch)? * 1_000;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (genesis, running) = start_local_servers(
        dir,
        a.nodes,
        a.base_port,
        a.http_base_port,
        epoch_ms,
        &stop_rx,
    )
    .await?;
    say!();
    say!(
        "{:<5} {:<18} {:<22} {:<27} COMMITTEE",
        "NODE",
        "ID",
        "QUIC",
        "HTTP"
    );
    for (i, s) in running.iter().enumerate() {
        let c = s.server.handle().contact();
        say!(
            "{i:<5} {:<18} {:<22} {:<27} {}",
            c.id.short(),
            c.addr.to_string(),
            format!("http://{}/", s.http),
            genesis
                .seat(&c.id)
                .map(|s| format!("seat {s}"))
                .unwrap_or_default()
        );
    }
    if let Some(first) = running.first().map(|s| s.http) {
        say!();
        say!(
            "server mode: f = 1, replica groups of 4, committee of {}, epochs of {}",
            genesis.committee.len(),
            a.epoch
        );
        say!("dashboard: http://{first}/");
        say!("try:       ringvault server status --node http://{first}");
        say!("           curl -T FILE http://{first}/v1/objects");
    }
    say!("ring ready; press Ctrl-C to stop");
    stop_signal().await;
    say!("stopping {} servers ...", running.len());
    stop_tx.send_replace(true);
    stop_servers(running).await;
    Ok(())
}

/// The quotas of `ringvault ring`: its nodes' operator keys are made with the ring, so no
/// operator grant can be given for them (users' puts bring their own).
fn ring_quota(q: &quota::QuotaArg) -> Result<Option<quota::QuotaSetup>> {
    if q.grant.is_some() || q.supply.is_some() {
        bail!("--grant and --supply are for `ringvault node`: a local ring's node keys are new, so users' puts bring their own grants (`ringvault put --grant FILE`)");
    }
    q.setup()
}

/// One node of a local ring.
pub struct LocalNode {
    pub node: RunningNode,
    pub http: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
}

fn port(base: u16, i: u16, what: &str) -> Result<u16> {
    if base == 0 {
        return Ok(0);
    }
    base.checked_add(i)
        .ok_or_else(|| anyhow!("{what} {base} + {i} is past 65535; pick a lower base port"))
}

/// What a local ring is made of.
pub struct LocalRing {
    /// How many nodes.
    pub nodes: u16,
    /// Node i listens for QUIC on 127.0.0.1:(base_port + i); 0 picks free ports.
    pub base_port: u16,
    /// With it, node i serves the HTTP API on 127.0.0.1:(http_base + i).
    pub http_base: Option<u16>,
    /// Overlay parameters.
    pub overlay: Config,
    /// The shared store file's settings.
    pub store: StoreConfig,
    /// Open, or secure with a CA in the ring's directory.
    pub mode: Mode,
    /// Storage quotas, if the ring enforces them.
    pub quota: Option<quota::QuotaSetup>,
    /// A test mode: node i is node i of a latency model (see [`Latency`]).
    pub latency: Option<Latency>,
}

/// How a local ring's nodes take part in a latency model (a test mode).
#[derive(Clone, Debug)]
pub enum Latency {
    /// Node i joins through the nodes nearest it in the model, and its datagrams to the
    /// others are held back by the model's delays.
    Emulated(Arc<EmulatedLatency>),
    /// The joins as with [`Latency::Emulated`], but no datagram is delayed: the control that
    /// shows what the delays change.
    JoinsOnly(Arc<EmulatedLatency>),
}

impl Latency {
    fn model(&self) -> &Arc<EmulatedLatency> {
        match self {
            Latency::Emulated(m) | Latency::JoinsOnly(m) => m,
        }
    }
}

/// Starts a local ring's nodes on loopback under `dir`, one after another, each joining
/// through the previous ones (nearest first). The nodes keep their objects in one file,
/// `dir/objects.redb` (a store per node, named after its id), so their writes are committed
/// together.
pub async fn start_local_ring(
    ring: LocalRing,
    dir: &Path,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<LocalNode>> {
    let LocalRing {
        nodes: n,
        base_port,
        http_base,
        overlay: cfg,
        store: store_config,
        mode,
        quota,
        latency,
    } = ring;
    if let Some(model) = latency.as_ref().map(Latency::model) {
        if model.len() != n as usize {
            bail!("the latency model has {} nodes, the ring {n}", model.len());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut ca = match mode {
        Mode::Open => None,
        Mode::Secure => Some(LocalCa::open_or_init(dir)?),
        Mode::Server => bail!("a local ring of servers is started by server_ring"),
    };
    let cfg = mode.overlay(cfg);
    let mut past = mode.past();
    past.quota = quota
        .as_ref()
        .map(|q| q.past_quota(ca.as_ref().map(|c| c.public_key())));
    let file = StoreFile::open(&dir.join(objects::STORE_FILE), store_config)?;
    let mut nodes: Vec<LocalNode> = Vec::new();
    for i in 0..n {
        let listen: SocketAddr = ([127, 0, 0, 1], port(base_port, i, "--base-port")?).into();
        // The last to join first (their joins have finished), or in a latency model the
        // nearest, as the simulator's joins go (and as it breaks ties: the earliest).
        let mut earlier: Vec<usize> = (0..nodes.len()).rev().collect();
        if let Some(model) = latency.as_ref().map(Latency::model) {
            earlier.sort_by_key(|&j| (model.delay(i as usize, j), j));
        }
        let bootstrap = earlier
            .into_iter()
            .take(3)
            .map(|j| nodes[j].node.contact().addr)
            .collect();
        let node_dir = dir.join(format!("node-{i}"));
        let identity = load_or_create_identity(&node_dir)?;
        let security = match ca.as_mut() {
            None => Security::Open,
            Some(ca) => ca.certify(&identity, listen)?,
        };
        let opened = file
            .store(Some(identity.id()))
            .map_err(anyhow::Error::from)
            .and_then(|objects| {
                let record_store = Box::new(objects.records());
                objects::past_services(&identity, objects, past.clone()).map(|s| (s, record_store))
            });
        let ((mut services, mut store), record_store) = match opened {
            Ok(x) => x,
            Err(e) => {
                stop_all(nodes).await;
                return Err(e.context(format!("node {i}")));
            }
        };
        if let Some(q) = &quota {
            let secure = match &security {
                Security::Secure(s) => Some((s.ca, s.cert.clone())),
                Security::Open => None,
            };
            store.set_quota(quota::add_accounts(&mut services, &identity, q, secure));
        }
        let topic_client = topics::add_scribe(&mut services);
        let record_client = records::add_records(
            &mut services,
            &identity,
            records::RecordsSetup {
                config: mode.records(),
                store: record_store,
                away: records::time_away(&node_dir),
            },
            Some(topic_client.clone()),
        );
        let http_listener = match http_base {
            Some(b) => {
                let addr: SocketAddr = ([127, 0, 0, 1], port(b, i, "--http-base-port")?).into();
                match bind_http(addr).await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        stop_all(nodes).await;
                        return Err(e.context(format!("node {i}")));
                    }
                }
            }
            None => None,
        };
        let started = start_with(
            identity,
            NetConfig {
                listen,
                advertise: None,
                overlay: cfg.clone(),
                bootstrap,
                security,
                emulated_latency: match &latency {
                    Some(Latency::Emulated(model)) => Some(LatencySeat {
                        model: model.clone(),
                        index: i as usize,
                    }),
                    _ => None,
                },
            },
            services,
        )
        .await;
        let node = match started {
            Ok(n) => n,
            Err(e) => {
                stop_all(nodes).await;
                return Err(anyhow!("node {i}: {e}"));
            }
        };
        if let Err(e) = node.handle().wait_ready(JOIN_WITHIN).await {
            node.shutdown().await;
            stop_all(nodes).await;
            bail!("node {i} on {listen}: {e}");
        }
        records::keep_alive(node_dir.clone(), node.handle());
        let http = match http_listener {
            Some(listener) => {
                match serve_http(
                    listener,
                    node.handle(),
                    Clients {
                        objects: Some(store),
                        topics: Some(topic_client),
                        records: Some(record_client),
                    },
                    HttpLimits::default(),
                    HttpAuth::default(),
                    stop.clone(),
                ) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        node.shutdown().await;
                        stop_all(nodes).await;
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        nodes.push(LocalNode { node, http });
    }
    Ok(nodes)
}

/// Stops every node gracefully (concurrently) and waits for their HTTP servers.
pub async fn stop_all(nodes: Vec<LocalNode>) {
    let mut tasks = Vec::new();
    for n in nodes {
        tasks.push(tokio::spawn(async move {
            n.node.shutdown().await;
            if let Some((_, t)) = n.http {
                let _ = t.await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(prefix: &str) -> Result<PathBuf> {
    let mut r = [0u8; 4];
    getrandom::fill(&mut r).map_err(|e| anyhow!("the OS random source failed: {e}"))?;
    let p = std::env::temp_dir().join(format!(
        "{prefix}-{}-{:08x}",
        std::process::id(),
        u32::from_le_bytes(r)
    ));
    std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
    Ok(p)
}

pub async fn ring(a: RingArgs) -> Result<()> {
    init_logs("warn");
    if a.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let (dir, temporary) = match &a.data_dir {
        Some(d) => (d.clone(), false),
        None => (temp_dir("ringvault-ring")?, true),
    };
    if a.mode.mode == Mode::Server {
        if a.capacity.is_some() || a.store_cache.is_some() || a.quota.setup()?.is_some() {
            bail!("--capacity, --store-cache and --broker are classic-mode settings (server mode has no quotas yet)");
        }
        if a.emulate_latency.is_some() {
            bail!("--emulate-latency runs a classic ring (open or secure); server mode's one-hop lookups have no routes to compare");
        }
        say!(
            "starting {} servers on 127.0.0.1 (data in {}) ...",
            a.nodes,
            dir.display()
        );
        let keep = a.keep;
        let result = server_ring(a, &dir).await;
        if temporary && !keep {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        } else {
            say!("data kept in {}", dir.display());
        }
        return result;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    say!(
        "starting {} nodes on 127.0.0.1 (data in {}) ...",
        a.nodes,
        dir.display()
    );
    let store_config = objects::store_config(
        a.capacity.as_deref(),
        a.store_cache.as_deref(),
        a.durability.durability,
        a.nodes,
    )?;
    let latency = match a.emulate_latency {
        Some(model) => {
            say!(
                "TEST MODE: emulating the {} latency model (seed {}) between the nodes",
                model.name(),
                a.seed
            );
            Some(Latency::Emulated(crate::node::emulate::ring_model(
                model, a.seed, a.nodes,
            )?))
        }
        None => None,
    };
    let spec = LocalRing {
        nodes: a.nodes,
        base_port: a.base_port,
        http_base: Some(a.http_base_port),
        overlay: Config::default(),
        store: store_config,
        mode: a.mode.mode,
        quota: ring_quota(&a.quota)?,
        latency,
    };
    let result = start_local_ring(spec, &dir, &stop_rx).await;
    let nodes = match result {
        Ok(n) => n,
        Err(e) => {
            if temporary && !a.keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e);
        }
    };
    say!();
    say!("{:<5} {:<18} {:<22} HTTP", "NODE", "ID", "QUIC");
    for (i, n) in nodes.iter().enumerate() {
        let c = n.node.contact();
        let http = n
            .http
            .as_ref()
            .map(|(a, _)| format!("http://{a}/"))
            .unwrap_or_default();
        say!(
            "{i:<5} {:<18} {:<22} {http}",
            c.id.short(),
            c.addr.to_string()
        );
    }
    if let Some((first, _)) = nodes.first().and_then(|n| n.http.as_ref()) {
        say!();
        say!("dashboard: http://{first}/");
        say!("try:       ringvault status --node http://{first}");
        say!("           ringvault route $(ringvault id hello) --node http://{first}");
    }
    if a.mode.mode == Mode::Secure {
        say!();
        say!(
            "secure mode: the ring's CA is in {} (its public key: {}/ca.pub)",
            dir.join("ca").display(),
            dir.join("ca").display()
        );
    }
    let stop = stop_signal();
    say!("ring ready; press Ctrl-C to stop");
    stop.await;
    say!("stopping {} nodes ...", nodes.len());
    stop_tx.send_replace(true);
    stop_all(nodes).await;
    if temporary && !a.keep {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    } else {
        say!("data kept in {}", dir.display());
    }
    Ok(())
}
