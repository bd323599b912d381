//! Server mode's driver: runs one sans-IO [`ringvault_bft::Server`] on tokio over the same
//! QUIC transport as classic mode (identity-bound TLS, CA certificates checked at every
//! handshake, server mode's own ALPN). It reads the clock, feeds the server what arrives
//! (messages, completed writes, peers the transport could not dial, probe results, requests
//! from the API) and carries out what the server asks, in order: sends, persistence through a
//! [`ServerDisk`] on a thread of its own (a sign-once record is on disk before anything after it
//! is done), probes and events. It makes no protocol decision.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use ringvault_bft::{
    Config, ConfigCert, Item, MembershipConfig, MembershipError, MembershipEvent, OpId, Params,
    QuorumError, QuorumEvent, Server, ServerAction, ServerEvent, ServerMessage, ServerStart,
    ServerSummary, SignOnce,
};
use ringvault_types::{Contact, Id, Identity, NodeCertificate, PublicKey, RevocationList};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info};

use crate::admission::Admission;
use crate::driver::{bind, check_own_certificate, Clock};
use crate::status::Histogram;
use crate::transport::{inbound_channel, Inbound, InboundRx, Transport, UNREACHABLE_QUEUE};
use crate::{NetError, CONTROL_QUEUE};

/// Writes waiting for the disk thread; when full, the server's event loop waits for it.
const DISK_QUEUE: usize = 4096;

/// How to run one server.
#[derive(Clone, Debug)]
pub struct ServerNetConfig {
    /// UDP address for QUIC (port 0 picks one).
    pub listen: SocketAddr,
    /// The address peers dial, when not the listen address; it must be one of the addresses
    /// in this server's certificate for peers to reach it.
    pub advertise: Option<SocketAddr>,
    /// The ring CA's key.
    pub ca: PublicKey,
    /// This server's certificate from that CA.
    pub cert: NodeCertificate,
    /// Revoked certificates.
    pub revocations: RevocationList,
}

/// What a server starts from: the newest configuration it has and what it persisted.
pub struct ServerBoot {
    /// Genesis, or the newest configuration persisted.
    pub config: Arc<Config>,
    /// Its certificate (`None` for genesis).
    pub cert: Option<ConfigCert>,
    /// The sign-once record persisted.
    pub sign_once: Option<SignOnce>,
    /// The server lost its data (the key kept, its store gone), now or at an earlier start
    /// from which it has not recovered; the disk forgets it only when told
    /// ([`ServerDisk::recovered`]).
    pub wiped: bool,
    /// The items persisted.
    pub items: Vec<Item>,
    /// The key ranges persisted as not yet taken over.
    pub unsynced: Vec<(Id, Id)>,
    /// The operator asked it to leave ([`ServerDisk::leaving`]): it asks again, never to join.
    pub leaving: bool,
}

/// Where a server persists, called from a thread of its own; each call returns once what it
/// wrote is durable. `ringvault_store::ServerDb` is the one on disk.
pub trait ServerDisk: Send + 'static {
    /// The sign-once record.
    fn sign_once(&self, record: &SignOnce) -> Result<(), String>;
    /// The newest configuration.
    fn config(&self, config: &Config, cert: Option<&ConfigCert>) -> Result<(), String>;
    /// The ranges not yet taken over.
    fn unsynced(&self, ranges: &[(Id, Id)]) -> Result<(), String>;
    /// Items, in one transaction (an item replaces a held one only if it takes precedence).
    fn items(&self, items: &[Item]) -> Result<(), String>;
    /// The server recovered from a lost disk: forget the loss (see
    /// [`ServerBoot::wiped`]).
    fn recovered(&self) -> Result<(), String>;
    /// The operator asked the server to leave (see [`ServerBoot::leaving`]).
    fn leaving(&self) -> Result<(), String>;
}

/// Rewrites (or drops, with an empty list) what a server sends: how tests make a Byzantine
/// server out of a correct one.
pub type ServerIntercept = Box<dyn FnMut(Id, ServerMessage) -> Vec<(Id, ServerMessage)> + Send>;

/// Sees every message a server receives (that decodes), before the server does.
pub type ServerObserver = Box<dyn FnMut(Id, &ServerMessage) + Send>;

/// Test hooks of a server; none in production.
#[derive(Default)]
pub struct ServerHooks {
    /// Rewrites what it sends.
    pub outbound: Option<ServerIntercept>,
    /// Watches what it receives.
    pub inbound: Option<ServerObserver>,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerOpError {
    /// The quorum operation failed.
    #[error(transparent)]
    Quorum(#[from] QuorumError),
    /// A membership request this server cannot make.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// The server stopped.
    #[error("the server has stopped")]
    Stopped,
}

/// Which kind of item a read expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadKind {
    /// An immutable object: the first copy that verifies.
    Object,
    /// A record: the highest of a quorum, written back (atomic).
    Record,
}

/// A member as the status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberView {
    /// Its id (hex).
    pub id: String,
    /// The address its certificate names.
    pub addr: Option<SocketAddr>,
    /// Its committee seat, if it has one.
    pub seat: Option<usize>,
    /// The epoch it joined in.
    pub admitted: u64,
}

/// Counters the driver keeps.
#[derive(Clone, Debug, Serialize)]
pub struct ServerMetrics {
    /// Frames that did not decode as server messages.
    pub decode_errors: u64,
    /// Messages sent, and those dropped because no address was known for the receiver.
    pub sent: u64,
    /// See `sent`.
    pub unaddressed: u64,
    /// Writes that completed (a quorum acked) and that failed.
    pub puts_ok: u64,
    /// See `puts_ok`.
    pub puts_failed: u64,
    /// Reads that completed and that failed.
    pub gets_ok: u64,
    /// See `gets_ok`.
    pub gets_failed: u64,
    /// Latency of completed writes, milliseconds.
    pub put_latency_ms: Histogram,
    /// Latency of completed reads, milliseconds.
    pub get_latency_ms: Histogram,
    /// Items written to disk.
    pub items_written: u64,
    /// Probes sent to suspects, and those the suspect did not answer.
    pub probes: u64,
    /// See `probes`.
    pub probes_failed: u64,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        let ms = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0, 2000.0];
        ServerMetrics {
            decode_errors: 0,
            sent: 0,
            unaddressed: 0,
            puts_ok: 0,
            puts_failed: 0,
            gets_ok: 0,
            gets_failed: 0,
            put_latency_ms: Histogram::new(&ms),
            get_latency_ms: Histogram::new(&ms),
            items_written: 0,
            probes: 0,
            probes_failed: 0,
        }
    }
}

/// A snapshot of one server, for `/v1/status`, `/metrics` and the dashboard.
#[derive(Clone, Debug, Serialize)]
pub struct ServerStatus {
    /// Always "server".
    pub mode: &'static str,
    /// This server's id (hex).
    pub id: String,
    /// The address peers dial.
    pub addr: SocketAddr,
    /// The epoch in force.
    pub epoch: u64,
    /// The hash of its configuration (hex).
    pub config_hash: String,
    /// Whether this server is a member of it.
    pub member: bool,
    /// Whether its lease runs (a server serves only then).
    pub serving: bool,
    /// Unix milliseconds at which the configuration's lease ends.
    pub valid_until_ms: u64,
    /// Parameters fixed at genesis.
    pub params: Params,
    /// The committee, in seat order (hex ids).
    pub committee: Vec<String>,
    /// The members, by id.
    pub members: Vec<MemberView>,
    /// The round of the instance deciding the next epoch, on a committee member.
    pub round: Option<u32>,
    /// Requests held for the next epoch (committee members).
    pub pending: usize,
    /// Whether this server asked to leave.
    pub leaving: bool,
    /// The key range (from, to] its replica group covers (hex), if a member.
    pub range: Option<(String, String)>,
    /// Whether its replica is still taking over a range.
    pub syncing: bool,
    /// Items its replica holds.
    pub items: usize,
    /// Membership counters: configurations adopted, decisions, view changes, evictions, ...
    pub membership: MembershipCounters,
    /// Replica counters.
    pub replica: ReplicaCounters,
    /// Forged replies the quorum client refused, records it wrote back.
    pub client: ClientCounters,
    /// The driver's counters.
    pub metrics: ServerMetrics,
    /// Transport: connections open, bytes in and out.
    pub connections_open: u64,
    /// See `connections_open`.
    pub bytes_in: u64,
    /// See `connections_open`.
    pub bytes_out: u64,
    /// Handshakes refused, by reason (no certificate, another CA's, revoked, ...).
    pub peers_refused: std::collections::BTreeMap<&'static str, u64>,
}

/// See [`ringvault_bft::MembershipStats`].
#[derive(Clone, Debug, Serialize)]
#[allow(missing_docs)]
pub struct MembershipCounters {
    pub adopted: u64,
    pub decisions: u64,
    pub view_changes: u64,
    pub evictions: u64,
    pub invalid_proposals: u64,
    pub refused: u64,
    pub equivocations: u64,
}

/// See [`ringvault_bft::ReplicaStats`].
#[derive(Clone, Debug, Serialize)]
#[allow(missing_docs)]
pub struct ReplicaCounters {
    pub acked: u64,
    pub refused: u64,
    pub taken_over: u64,
    pub forged: u64,
    pub given_up: u64,
    pub not_ready_ms: u64,
}

/// See [`ringvault_bft::ClientStats`].
#[derive(Clone, Debug, Serialize)]
#[allow(missing_docs)]
pub struct ClientCounters {
    pub forged: u64,
    pub written_back: u64,
}

impl ServerStatus {
    fn new(s: ServerSummary, addr: SocketAddr, metrics: ServerMetrics, t: &Transport) -> Self {
        let c = &s.config;
        let (m, r) = (&s.membership, &s.replica);
        ServerStatus {
            mode: "server",
            id: s.id.to_string(),
            addr,
            epoch: c.epoch,
            config_hash: c.hash().to_string(),
            member: s.member,
            serving: s.serving,
            valid_until_ms: c.valid_until,
            params: c.params,
            committee: c.committee.iter().map(|id| id.to_string()).collect(),
            members: c
                .members
                .iter()
                .map(|m| MemberView {
                    id: m.id().to_string(),
                    addr: m.cert.body.addrs.first().copied(),
                    seat: c.seat(&m.id()),
                    admitted: m.admitted,
                })
                .collect(),
            round: s.round,
            pending: s.pending,
            leaving: s.leaving,
            range: s.range.map(|(a, b)| (a.to_string(), b.to_string())),
            syncing: s.syncing,
            items: s.items,
            membership: MembershipCounters {
                adopted: m.adopted,
                decisions: m.decisions,
                view_changes: m.view_changes,
                evictions: m.evictions,
                invalid_proposals: m.invalid_proposals,
                refused: m.refused,
                equivocations: m.equivocations,
            },
            replica: ReplicaCounters {
                acked: r.acked,
                refused: r.refused,
                taken_over: r.taken_over,
                forged: r.forged,
                given_up: r.given_up,
                not_ready_ms: r.not_ready_micros / 1_000,
            },
            client: ClientCounters {
                forged: s.client.forged,
                written_back: s.client.written_back,
            },
            metrics,
            connections_open: t.open_connections() as u64,
            bytes_in: t.counters.bytes_in.load(Ordering::Relaxed),
            bytes_out: t.counters.bytes_out.load(Ordering::Relaxed),
            peers_refused: t.admission.refused(),
        }
    }
}

/// Where a server is in its life, as a handle sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Running.
    Running,
    /// It asked to leave and a configuration without it is in force.
    Left,
    /// It stopped on an error it cannot go on from (a sign-once record it could not persist).
    Failed,
}

enum Control {
    Put {
        item: Item,
        reply: oneshot::Sender<Result<usize, ServerOpError>>,
    },
    Get {
        key: Id,
        kind: ReadKind,
        reply: oneshot::Sender<Result<Option<Item>, ServerOpError>>,
    },
    Leave(oneshot::Sender<Result<(), ServerOpError>>),
    Status(oneshot::Sender<ServerStatus>),
    Probed {
        suspect: Id,
        alive: bool,
    },
}

/// A handle on a running server, for the API.
#[derive(Clone)]
pub struct ServerHandle {
    tx: mpsc::Sender<Control>,
    contact: Contact,
    phase: watch::Receiver<Phase>,
}

impl ServerHandle {
    /// This server's id and address.
    pub fn contact(&self) -> Contact {
        self.contact
    }

    async fn ask<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<R>) -> Control,
    ) -> Result<R, ServerOpError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| ServerOpError::Stopped)?;
        rx.await.map_err(|_| ServerOpError::Stopped)
    }

    /// Writes `item` to its replica group; the number of signed acks (at least a quorum).
    pub async fn put(&self, item: Item) -> Result<usize, ServerOpError> {
        self.ask(|reply| Control::Put { item, reply }).await?
    }

    /// Reads the item under `key` (`None`: a quorum said it has none).
    pub async fn get(&self, key: Id, kind: ReadKind) -> Result<Option<Item>, ServerOpError> {
        self.ask(|reply| Control::Get { key, kind, reply }).await?
    }

    /// Asks the committee to let this server leave; [`ServerHandle::wait_left`] waits for it.
    pub async fn leave(&self) -> Result<(), ServerOpError> {
        self.ask(Control::Leave).await?
    }

    /// A snapshot of the server.
    pub async fn status(&self) -> Result<ServerStatus, ServerOpError> {
        self.ask(Control::Status).await
    }

    /// Resolves when the server has left the ring or failed; the phase it ended in.
    pub async fn wait_left(&self) -> Phase {
        let mut phase = self.phase.clone();
        let ended = match phase.wait_for(|p| *p != Phase::Running).await {
            Ok(p) => *p,
            Err(_) => Phase::Failed,
        };
        ended
    }
}

/// A server running in this process.
pub struct RunningServer {
    handle: ServerHandle,
    transport: Arc<Transport>,
    actor: JoinHandle<()>,
    accept: JoinHandle<()>,
}

impl RunningServer {
    /// A handle for the API.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Stops at once: the event loop, the connections and the endpoint. What the disk thread
    /// has queued is still written (a SIGKILL would lose it; a test that wants that kills the
    /// process).
    pub async fn stop(self) {
        self.actor.abort();
        self.transport.close();
        self.accept.abort();
        let _ = tokio::time::timeout(
            StdDuration::from_secs(1),
            self.transport.endpoint.wait_idle(),
        )
        .await;
    }
}

/// Starts a server: checks its certificate, binds the QUIC endpoint and runs the server from
/// `boot`, asking to join when it is not a member of the configuration it has.
pub async fn start_server(
    identity: Identity,
    cfg: ServerNetConfig,
    boot: ServerBoot,
    disk: Box<dyn ServerDisk>,
    hooks: ServerHooks,
) -> Result<RunningServer, NetError> {
    check_own_certificate(&identity, &cfg.ca, &cfg.cert, &cfg.revocations)?;
    let admission = Arc::new(Admission::servers(cfg.ca, cfg.revocations.clone()));
    let (endpoint, client_tls, addr) = bind(
        &identity,
        Some(&cfg.cert),
        admission.clone(),
        cfg.listen,
        cfg.advertise,
        None,
    )?;
    if cfg.cert.body.addrs.first() != Some(&addr) {
        return Err(NetError::Certificate(format!(
            "names {:?} first, but this server is reached at {addr}: the others dial the first address of each member's certificate; have the CA issue one for {addr} (or give --advertise {})",
            cfg.cert.body.addrs,
            cfg.cert
                .body
                .addrs
                .first()
                .map_or("HOST:PORT".to_string(), |a| a.to_string())
        )));
    }
    let contact = Contact::new(identity.id(), addr);

    let clock = Clock(Instant::now());
    let unix_ms_at_zero = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let boot_wiped = boot.wiped;
    let leaving = boot.leaving;
    let start = ServerStart {
        identity,
        settings: MembershipConfig {
            ca: cfg.ca,
            revoked: cfg.revocations,
            unix_ms_at_zero,
            shared: None,
        },
        config: boot.config,
        cert: boot.cert,
        sign_once: boot.sign_once,
        wiped: boot.wiped,
        items: boot.items,
        unsynced: boot.unsynced,
    };
    let mut server = Server::new(start, clock.now());
    let already_left = if leaving {
        server.leave(clock.now()).is_err()
    } else {
        server.join(clock.now(), cfg.cert);
        false
    };

    let (net_tx, net_rx) = inbound_channel();
    let (unreachable_tx, unreachable_rx) = mpsc::channel(UNREACHABLE_QUEUE);
    let transport = Transport::new(endpoint, client_tls, admission, net_tx, unreachable_tx);
    let accept = tokio::spawn(transport.clone().accept_loop());
    let (ctl_tx, ctl_rx) = mpsc::channel(CONTROL_QUEUE);
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    let disk = DiskThread::start(disk, report_tx)?;
    let recovering = boot_wiped;
    let (phase_tx, phase) = watch::channel(if already_left {
        Phase::Left
    } else {
        Phase::Running
    });
    let actor = Actor {
        server,
        transport: transport.clone(),
        clock,
        addr,
        me: contact.id,
        loopback: std::collections::VecDeque::new(),
        addrs: HashMap::new(),
        waiting: HashMap::new(),
        metrics: ServerMetrics::default(),
        disk,
        recovering,
        ctl: ctl_tx.downgrade(),
        phase: phase_tx,
        hooks,
    };
    let actor = tokio::spawn(actor.run(net_rx, unreachable_rx, report_rx, ctl_rx));
    info!(id = %contact.id, %addr, "server started");
    Ok(RunningServer {
        handle: ServerHandle {
            tx: ctl_tx,
            contact,
            phase,
        },
        transport,
        actor,
        accept,
    })
}

enum DiskJob {
    SignOnce(SignOnce, oneshot::Sender<Result<(), String>>),
    Config(Arc<Config>, Option<ConfigCert>),
    Unsynced(Vec<(Id, Id)>),
    Recovered,
    Leaving,
    /// An item write, holding its share of [`DISK_BYTES`] until it is committed.
    Item(u64, Item, tokio::sync::OwnedSemaphorePermit),
}

/// What the disk thread reports.
enum DiskReport {
    /// These item writes are durable.
    Stored(Vec<u64>),
    /// A write failed: the server stops (a disk that refuses writes cannot hold replicas, and
    /// a configuration or hand-over state it cannot persist could mislead it after a restart).
    Failed(String),
}

/// Item bytes that may wait for the disk thread; beyond it the event loop waits (back-pressure
/// on the peers sending writes).
const DISK_BYTES: usize = 64 << 20;

/// The thread that performs a server's writes. Whatever is queued when it looks is done in
/// two steps: first the sign-once record, configuration and hand-over state in the order
/// asked (the event loop waits for a sign-once record, so nothing it asked later is queued
/// behind one), then every queued item write in one transaction (group commit). No write
/// depends on an item write queued before it: acks follow completions, and the hand-over
/// state is persisted only after the items it counts are on disk.
struct DiskThread {
    tx: std::sync::mpsc::SyncSender<DiskJob>,
    bytes: Arc<tokio::sync::Semaphore>,
}

impl DiskThread {
    fn start(
        disk: Box<dyn ServerDisk>,
        report: mpsc::UnboundedSender<DiskReport>,
    ) -> Result<DiskThread, NetError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<DiskJob>(DISK_QUEUE);
        std::thread::Builder::new()
            .name("server-disk".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    jobs.extend(rx.try_iter());
                    let mut items = Vec::new();
                    for job in jobs {
                        let failed = match job {
                            DiskJob::SignOnce(record, done) => {
                                let _ = done.send(disk.sign_once(&record));
                                None
                            }
                            DiskJob::Config(config, cert) => disk
                                .config(&config, cert.as_ref())
                                .err()
                                .map(|e| format!("configuration {}: {e}", config.epoch)),
                            DiskJob::Unsynced(ranges) => disk
                                .unsynced(&ranges)
                                .err()
                                .map(|e| format!("the ranges not yet taken over: {e}")),
                            DiskJob::Recovered => disk
                                .recovered()
                                .err()
                                .map(|e| format!("the end of the recovery: {e}")),
                            DiskJob::Leaving => {
                                disk.leaving().err().map(|e| format!("the leave: {e}"))
                            }
                            DiskJob::Item(token, item, permit) => {
                                items.push((token, item, permit));
                                None
                            }
                        };
                        if let Some(why) = failed {
                            let _ = report.send(DiskReport::Failed(why));
                            return;
                        }
                    }
                    if items.is_empty() {
                        continue;
                    }
                    let batch: Vec<Item> = items.iter().map(|(_, i, _)| i.clone()).collect();
                    let done = match disk.items(&batch) {
                        Ok(()) => DiskReport::Stored(items.iter().map(|(t, _, _)| *t).collect()),
                        Err(e) => DiskReport::Failed(format!("{} items: {e}", batch.len())),
                    };
                    let failed = matches!(done, DiskReport::Failed(_));
                    if report.send(done).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| NetError::Io {
                what: "cannot start the server's disk thread".into(),
                source: e,
            })?;
        Ok(DiskThread {
            tx,
            bytes: Arc::new(tokio::sync::Semaphore::new(DISK_BYTES)),
        })
    }

    /// Queues a write of `item`, waiting while [`DISK_BYTES`] of item writes are queued.
    async fn store(&self, token: u64, item: Item) -> bool {
        let size = match &item {
            Item::Object(bytes) => bytes.len(),
            Item::Record(r) => r.encode().len(),
        };
        let permits = size.clamp(1, DISK_BYTES) as u32;
        let Ok(permit) = self.bytes.clone().acquire_many_owned(permits).await else {
            return false;
        };
        self.send(DiskJob::Item(token, item, permit)).await
    }

    /// Queues `job`; waits (off the runtime's worker) when the queue is full. False when the
    /// disk thread has stopped.
    async fn send(&self, job: DiskJob) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(job).is_ok())
                    .await
                    .unwrap_or(false)
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => false,
        }
    }
}

struct Waiting {
    started: Instant,
    reply: Reply,
}

enum Reply {
    Put(oneshot::Sender<Result<usize, ServerOpError>>),
    Get(oneshot::Sender<Result<Option<Item>, ServerOpError>>),
}

struct Actor {
    server: Server,
    transport: Arc<Transport>,
    clock: Clock,
    addr: SocketAddr,
    me: Id,
    /// Messages the server sent itself, not yet delivered.
    loopback: std::collections::VecDeque<ServerMessage>,
    /// Addresses of servers that are not (or not yet) members, from their connections.
    addrs: HashMap<Id, SocketAddr>,
    waiting: HashMap<OpId, Waiting>,
    metrics: ServerMetrics,
    disk: DiskThread,
    /// Whether the disk still records a data loss the server has not recovered from.
    recovering: bool,
    ctl: mpsc::WeakSender<Control>,
    phase: watch::Sender<Phase>,
    hooks: ServerHooks,
}

impl Actor {
    async fn run(
        mut self,
        mut net: InboundRx,
        mut unreachable: mpsc::Receiver<Contact>,
        mut disk: mpsc::UnboundedReceiver<DiskReport>,
        mut ctl: mpsc::Receiver<Control>,
    ) {
        loop {
            if let Err(why) = self.perform().await {
                error!("stopping the server: {why}");
                self.phase.send_replace(Phase::Failed);
                return;
            }
            let wake = self.server.next_deadline().map(|t| self.clock.instant(t));
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let now = || self.clock.now();
            tokio::select! {
                Some(m) = net.recv() => self.on_message(m),
                Some(peer) = unreachable.recv() => {
                    debug!(peer = %peer.id.short(), "dial failed: suspecting the server");
                    self.server.suspect(now(), peer.id);
                }
                Some(report) = disk.recv() => match report {
                    DiskReport::Stored(tokens) => self.on_stored(tokens),
                    DiskReport::Failed(why) => {
                        error!("stopping the server: the disk refused a write ({why}); its replicas are on the other servers of each group");
                        self.phase.send_replace(Phase::Failed);
                        return;
                    }
                },
                c = ctl.recv() => match c {
                    Some(Control::Leave(reply)) => {
                        // The leave is on disk before it is asked for: a daemon restarted
                        // before it is decided asks again instead of asking to join.
                        let asked = if self.disk.send(DiskJob::Leaving).await {
                            self.server.leave(self.clock.now()).map_err(Into::into)
                        } else {
                            Err(ServerOpError::Stopped)
                        };
                        let _ = reply.send(asked);
                    }
                    Some(c) => self.on_control(c),
                    None => return,
                },
                () = sleep => self.server.handle_timeout(self.clock.now()),
            }
        }
    }

    fn on_message(&mut self, m: Inbound) {
        match ServerMessage::decode(&m.bytes) {
            Ok(msg) => {
                if let Some(f) = self.hooks.inbound.as_mut() {
                    f(m.from.id, &msg);
                }
                if self.member_addr(&m.from.id).is_none() {
                    self.addrs.insert(m.from.id, m.from.addr);
                }
                self.server.handle_message(self.clock.now(), m.from.id, msg);
            }
            Err(e) => {
                self.metrics.decode_errors += 1;
                debug!(peer = %m.from.id.short(), "dropping undecodable message: {e}");
            }
        }
    }

    fn on_stored(&mut self, tokens: Vec<u64>) {
        let now = self.clock.now();
        self.metrics.items_written += tokens.len() as u64;
        for t in tokens {
            self.server.handle_stored(now, t);
        }
    }

    fn on_control(&mut self, c: Control) {
        let now = self.clock.now();
        match c {
            Control::Put { item, reply } => match self.server.put(now, item) {
                Ok(op) => {
                    self.waiting.insert(
                        op,
                        Waiting {
                            started: Instant::now(),
                            reply: Reply::Put(reply),
                        },
                    );
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Control::Get { key, kind, reply } => {
                let op = match kind {
                    ReadKind::Object => self.server.get_object(now, key),
                    ReadKind::Record => self.server.get_record(now, key),
                };
                self.waiting.insert(
                    op,
                    Waiting {
                        started: Instant::now(),
                        reply: Reply::Get(reply),
                    },
                );
            }
            Control::Leave(_) => unreachable!("run handles leaves (they persist first)"),
            Control::Status(reply) => {
                let s = self.server.summary(now);
                let _ = reply.send(ServerStatus::new(
                    s,
                    self.addr,
                    self.metrics.clone(),
                    &self.transport,
                ));
            }
            Control::Probed { suspect, alive } => {
                if !alive {
                    self.metrics.probes_failed += 1;
                    let _ = self.server.confirm(now, suspect);
                }
            }
        }
    }

    /// The address to send to `to` at: its certificate's in the configuration, else the
    /// one its connection came from.
    fn address(&self, to: &Id) -> Option<SocketAddr> {
        self.member_addr(to).or_else(|| self.addrs.get(to).copied())
    }

    fn member_addr(&self, id: &Id) -> Option<SocketAddr> {
        let config = self.server.membership().current();
        config.member(id)?.cert.body.addrs.first().copied()
    }

    fn send(&mut self, to: Id, msg: ServerMessage) {
        let out = match self.hooks.outbound.as_mut() {
            Some(f) => f(to, msg),
            None => vec![(to, msg)],
        };
        for (to, msg) in out {
            if to == self.me {
                // To itself (a replica of the key it reads or writes): no network.
                self.loopback.push_back(msg);
                continue;
            }
            match self.address(&to) {
                Some(addr) => {
                    self.metrics.sent += 1;
                    self.transport.send(Contact::new(to, addr), msg.encode());
                }
                None => {
                    self.metrics.unaddressed += 1;
                    debug!(peer = %to.short(), "no address known; message dropped");
                }
            }
        }
    }

    /// Carries out everything the server asked, in order, delivering what it sent itself as it
    /// goes. An error when the server must stop.
    async fn perform(&mut self) -> Result<(), String> {
        loop {
            self.perform_actions().await?;
            let Some(msg) = self.loopback.pop_front() else {
                return Ok(());
            };
            self.server.handle_message(self.clock.now(), self.me, msg);
        }
    }

    async fn perform_actions(&mut self) -> Result<(), String> {
        const STOPPED: &str = "the disk thread stopped";
        while let Some(action) = self.server.poll_action() {
            match action {
                ServerAction::Send { to, msg } => self.send(to, msg),
                ServerAction::PersistSignOnce(record) => {
                    let (done, rx) = oneshot::channel();
                    let result = if self.disk.send(DiskJob::SignOnce(record, done)).await {
                        rx.await.unwrap_or_else(|_| Err(STOPPED.into()))
                    } else {
                        Err(STOPPED.into())
                    };
                    result.map_err(|e| {
                        format!("cannot persist the sign-once record ({e}); it must not sign without it")
                    })?;
                }
                ServerAction::PersistConfig(config, cert) => {
                    if !self.disk.send(DiskJob::Config(config, cert)).await {
                        return Err(STOPPED.into());
                    }
                    if self.recovering && !self.server.membership().recovering() {
                        self.recovering = false;
                        if !self.disk.send(DiskJob::Recovered).await {
                            return Err(STOPPED.into());
                        }
                    }
                }
                ServerAction::PersistUnsynced(ranges) => {
                    if !self.disk.send(DiskJob::Unsynced(ranges)).await {
                        return Err(STOPPED.into());
                    }
                }
                ServerAction::Store { token, item } => {
                    if !self.disk.store(token, item).await {
                        return Err(STOPPED.into());
                    }
                }
                ServerAction::Probe(suspect) => self.probe(suspect),
                ServerAction::Event(e) => self.on_event(e),
            }
        }
        Ok(())
    }

    fn probe(&mut self, suspect: Id) {
        let Some(addr) = self.address(&suspect) else {
            return;
        };
        self.metrics.probes += 1;
        let transport = self.transport.clone();
        let ctl = self.ctl.clone();
        tokio::spawn(async move {
            let alive = transport.answers(addr, suspect).await;
            if let Some(ctl) = ctl.upgrade() {
                let _ = ctl.send(Control::Probed { suspect, alive }).await;
            }
        });
    }

    fn on_event(&mut self, e: ServerEvent) {
        match e {
            ServerEvent::Membership(m) => match &m {
                MembershipEvent::Adopted { epoch, members } => {
                    info!(epoch, members, "configuration adopted")
                }
                MembershipEvent::Decided { epoch, round } => {
                    debug!(epoch, round, "decided")
                }
                MembershipEvent::Left { epoch } => {
                    info!(epoch, "left the ring");
                    self.phase.send_replace(Phase::Left);
                }
            },
            ServerEvent::Quorum(q) => {
                let (op, ok) = match &q {
                    QuorumEvent::Put { op, result } => (*op, result.is_ok()),
                    QuorumEvent::Got { op, result } => (*op, result.is_ok()),
                };
                let Some(w) = self.waiting.remove(&op) else {
                    return;
                };
                let ms = w.started.elapsed().as_secs_f64() * 1e3;
                match (w.reply, q) {
                    (Reply::Put(reply), QuorumEvent::Put { result, .. }) => {
                        if ok {
                            self.metrics.puts_ok += 1;
                            self.metrics.put_latency_ms.observe(ms);
                        } else {
                            self.metrics.puts_failed += 1;
                        }
                        let _ = reply.send(result.map_err(Into::into));
                    }
                    (Reply::Get(reply), QuorumEvent::Got { result, .. }) => {
                        if ok {
                            self.metrics.gets_ok += 1;
                            self.metrics.get_latency_ms.observe(ms);
                        } else {
                            self.metrics.gets_failed += 1;
                        }
                        let _ = reply.send(result.map_err(Into::into));
                    }
                    _ => {}
                }
            }
        }
    }
}
