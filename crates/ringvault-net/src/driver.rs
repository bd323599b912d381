//! The actor that runs one `Node`: it reads the clock, feeds the node what arrives (messages,
//! probe results, commands, timeouts, peers the transport could not dial) and carries out what
//! the node asks (send, probe, report). It makes no protocol decision.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use ringvault_node::{
    Action, Command, CommandError, CommandId, CommandOutput, Node, NodeEvent, RouteReport, Service,
};
use ringvault_overlay::{Config, OverlayEvent, OverlayMessage};
use ringvault_types::{Contact, Id, Identity, NodeCertificate, RevocationList, Time};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::admission::{Admission, ContactCheck, Security};
use crate::latency::LatencySeat;
use crate::status::{Metrics, SecurityStatus, Status};
use crate::transport::{
    inbound_channel, transport_config, Inbound, InboundRx, Transport, UNREACHABLE_QUEUE,
};
use crate::{tls, NetError};

/// Small messages from the network waiting for the node; when full, readers wait
/// (back-pressure on the QUIC streams). Large ones (object transfers) wait in a queue of
/// [`NET_BULK_QUEUE`], bounding the memory they hold.
pub const NET_QUEUE: usize = 4096;
/// Large messages from the network waiting for the node (see [`NET_QUEUE`]).
pub const NET_BULK_QUEUE: usize = 32;
/// Requests from the API waiting for the node.
pub const CONTROL_QUEUE: usize = 1024;
/// How long a graceful shutdown waits for the `Leaving` messages to be written.
const FLUSH_DEADLINE: StdDuration = StdDuration::from_secs(2);

/// How to run one node.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// UDP address for QUIC; port 0 picks a free port. `0.0.0.0` or `[::]` listens on every
    /// interface.
    pub listen: SocketAddr,
    /// The address peers dial, which goes into this node's contact (port 0: the port bound).
    /// Without it: the listen address, or for an unspecified one the first address of an
    /// interface that is neither loopback nor link-local.
    pub advertise: Option<SocketAddr>,
    /// Overlay parameters.
    pub overlay: Config,
    /// Nodes to join through, tried in order; empty starts a new ring.
    pub bootstrap: Vec<SocketAddr>,
    /// Open or secure mode (with the CA, this node's certificate and the revocation list).
    pub security: Security,
    /// A test mode: this node's seat in a latency model whose delays its datagrams to the
    /// model's other nodes are held back by. `None` in production.
    pub emulated_latency: Option<LatencySeat>,
}

/// Wall-clock time in Unix seconds, which certificates are checked against.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why this node's own certificate cannot be used with `identity` under `ca`, if it cannot.
pub(crate) fn check_own_certificate(
    identity: &Identity,
    ca: &ringvault_types::PublicKey,
    cert: &NodeCertificate,
    revocations: &RevocationList,
) -> Result<(), NetError> {
    if cert.body.public_key != identity.public_key() {
        return Err(NetError::Certificate(format!(
            "is for node {}, not this node ({}): it was issued for another data dir's key",
            cert.node_id().short(),
            identity.id().short()
        )));
    }
    cert.verify(ca, unix_now(), revocations)
        .map(|_| ())
        .map_err(|e| NetError::Certificate(e.to_string()))
}

/// The QUIC endpoint of `identity` (with its ring certificate, if any) bound to `listen`, the
/// client configuration it dials with, and the address it advertises.
pub(crate) fn bind(
    identity: &Identity,
    ring_cert: Option<&NodeCertificate>,
    admission: Arc<Admission>,
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    latency: Option<&LatencySeat>,
) -> Result<(quinn::Endpoint, quinn::ClientConfig, SocketAddr), NetError> {
    let (server, client) =
        tls::quic_configs(identity, ring_cert, admission, Arc::new(transport_config()))?;
    let bind_error = |source| NetError::Bind {
        addr: listen,
        source,
    };
    let Some(seat) = latency else {
        let endpoint = quinn::Endpoint::server(server, listen).map_err(bind_error)?;
        let bound = endpoint.local_addr().map_err(bind_error)?;
        return Ok((endpoint, client, advertised(bound, advertise)?));
    };
    let socket = std::net::UdpSocket::bind(listen).map_err(bind_error)?;
    let addr = advertised(socket.local_addr().map_err(bind_error)?, advertise)?;
    let endpoint = crate::latency::endpoint(socket, addr, server, seat).map_err(bind_error)?;
    Ok((endpoint, client, addr))
}

/// The address this node tells peers to dial, given the address its socket is `bound` to and
/// the one the operator asked to advertise.
pub(crate) fn advertised(
    bound: SocketAddr,
    advertise: Option<SocketAddr>,
) -> Result<SocketAddr, NetError> {
    if let Some(mut a) = advertise {
        if a.ip().is_unspecified() {
            return Err(NetError::UnspecifiedAdvertise(a));
        }
        if a.port() == 0 {
            a.set_port(bound.port());
        }
        return Ok(a);
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    let usable = |ip: &IpAddr| {
        !ip.is_loopback()
            && !ip.is_unspecified()
            && ip.is_ipv4() == bound.is_ipv4()
            && match ip {
                IpAddr::V4(v4) => !v4.is_link_local(),
                IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            }
    };
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|ifs| ifs.into_iter().map(|i| i.ip()).filter(usable).collect())
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    let Some(ip) = ips.first() else {
        return Err(NetError::NothingToAdvertise(bound));
    };
    info!(
        "listening on {bound}; advertising {ip} (interface addresses: {ips:?}; choose with --advertise)"
    );
    Ok(SocketAddr::new(*ip, bound.port()))
}

/// The node's clock: time since the driver started, as the core's [`Time`].
#[derive(Clone, Copy)]
pub(crate) struct Clock(pub(crate) Instant);

impl Clock {
    pub(crate) fn now(&self) -> Time {
        Time::from_micros(self.0.elapsed().as_micros() as u64)
    }

    pub(crate) fn instant(&self, t: Time) -> Instant {
        // A deadline far in the future (or NEVER) sleeps a day; a spurious timeout is harmless.
        let cap = StdDuration::from_secs(86_400);
        let d = StdDuration::from_micros(t.as_micros()).min(self.0.elapsed() + cap);
        self.0 + d
    }
}

/// Work run on the node inside its actor, with the current time.
type NodeJob = Box<dyn FnOnce(&mut Node, Time) + Send>;

/// Runs in the actor after everything it handles (a message, a command, a timeout), so the
/// caller can collect what services report (for example PAST's finished requests). It must
/// only read results out and hand them on; it decides nothing.
pub type Poller = Box<dyn FnMut(&mut Node, Time) + Send>;

/// Services to register on the node before it starts, and how to collect their results.
#[derive(Default)]
pub struct Services {
    /// Registered with [`Node::add_service`] before the node joins.
    pub services: Vec<Box<dyn Service>>,
    /// See [`Poller`].
    pub poller: Option<Poller>,
    /// Notified from outside the node when a service has work that waited on something else
    /// (a store that finished a batch of writes): the node then handles its timeouts, and the
    /// service releases what waited.
    pub wake: Option<Arc<tokio::sync::Notify>>,
    /// Tests of Byzantine behaviour only (see `ringvault_testkit::byzantine`): sees every
    /// decoded incoming message first and may answer it in the node's place, returning the
    /// messages to send instead; `None` lets the node handle it. A real node has none.
    pub intercept: Option<Intercept>,
}

/// See [`Services::intercept`].
pub type Intercept = Box<
    dyn FnMut(&Node, Contact, &OverlayMessage) -> Option<Vec<(Contact, OverlayMessage)>> + Send,
>;

enum Control {
    Run(NodeJob),
    Probe {
        peer: Contact,
        rtt: Option<StdDuration>,
    },
    Command {
        cmd: Command,
        reply: oneshot::Sender<Result<CommandOutput, CommandError>>,
    },
    Status(oneshot::Sender<Status>),
    Renew {
        cert: NodeCertificate,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Stop {
        leave: bool,
        done: oneshot::Sender<()>,
    },
}

/// A handle to a running node for the API and tests; cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Control>,
    contact: Contact,
    ready: watch::Receiver<bool>,
}

impl NodeHandle {
    /// This node's id and address.
    pub fn contact(&self) -> Contact {
        self.contact
    }

    async fn command(&self, cmd: Command) -> Result<CommandOutput, NetError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Control::Command { cmd, reply })
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await
            .map_err(|_| NetError::Stopped)?
            .map_err(NetError::Command)
    }

    /// Routes a traced probe to `key`'s root and returns the path.
    pub async fn route(&self, key: Id) -> Result<RouteReport, NetError> {
        match self.command(Command::RouteProbe { key }).await? {
            CommandOutput::Route(r) => Ok(r),
            _ => Err(NetError::Command(CommandError::BadReply)),
        }
    }

    /// Routes securely to `key`'s `r` closest nodes (secure mode) and returns which nodes the
    /// message was sent to, and whether the first answer failed the failure test.
    pub async fn secure_route(
        &self,
        key: Id,
        r: u8,
    ) -> Result<ringvault_overlay::SecureRouteReport, NetError> {
        match self.command(Command::SecureRoute { key, r }).await? {
            CommandOutput::SecureRoute(r) => Ok(r),
            _ => Err(NetError::Command(CommandError::BadReply)),
        }
    }

    /// Offers a revocation list (secure mode): the node adopts it when the ring's CA signed it
    /// and it is newer than the one held, closes connections to revoked nodes and passes the
    /// list on along its leaf set. Returns whether it was adopted and the version held now.
    pub async fn revocations(&self, list: RevocationList) -> Result<(bool, u64), NetError> {
        match self.command(Command::Revocations(list)).await? {
            CommandOutput::Revocations { adopted, held } => Ok((adopted, held)),
            _ => Err(NetError::Command(CommandError::BadReply)),
        }
    }

    /// Replaces this node's certificate (secure mode) without a restart: new connections
    /// present it; open ones keep the old one until they close.
    pub async fn renew_certificate(&self, cert: NodeCertificate) -> Result<(), NetError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Control::Renew { cert, reply })
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Runs `f` on the node inside its actor (between two events, with the driver's clock) and
    /// returns what it returns. This is how the API calls a service's client interface, with
    /// [`Node::with_service`]; what the service asks of the overlay is carried out after `f`.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node, Time) -> R + Send + 'static,
    ) -> Result<R, NetError> {
        let (tx, rx) = oneshot::channel();
        let job: NodeJob = Box::new(move |node, now| {
            let _ = tx.send(f(node, now));
        });
        self.tx
            .send(Control::Run(job))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// A snapshot of the node's tables and counters.
    pub async fn status(&self) -> Result<Status, NetError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Control::Status(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Whether the node has joined (or started) a ring.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the node has joined, or `within` has passed.
    pub async fn wait_ready(&self, within: StdDuration) -> Result<(), NetError> {
        let mut rx = self.ready.clone();
        let r = tokio::time::timeout(within, rx.wait_for(|r| *r))
            .await
            .map(|r| r.is_ok());
        match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(NetError::Stopped),
            Err(_) => Err(NetError::JoinTimeout(within)),
        }
    }
}

/// A node running on the tokio runtime. Stop it with [`RunningNode::shutdown`] (graceful
/// leave) or [`RunningNode::kill`] (abrupt, as if the process died).
pub struct RunningNode {
    handle: NodeHandle,
    transport: Arc<Transport>,
    actor: JoinHandle<()>,
    accept: JoinHandle<()>,
}

impl RunningNode {
    /// A handle for the API.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// This node's id and address.
    pub fn contact(&self) -> Contact {
        self.handle.contact
    }

    /// Opens (or reuses) a verified connection to `addr` and returns the id the peer proved;
    /// with `expected`, a peer whose key does not hash to it is refused. A diagnostic for tools
    /// and tests; the node dials by itself when it has something to send.
    pub async fn dial(&self, addr: SocketAddr, expected: Option<Id>) -> Result<Id, NetError> {
        self.transport
            .connection(addr, expected)
            .await
            .map(|(id, _)| id)
    }

    /// Leaves the ring gracefully (peers are told at once), then closes every connection.
    pub async fn shutdown(self) {
        self.stop(true).await;
    }

    /// Stops at once without telling anyone: peers find out by their failure detection.
    pub async fn kill(self) {
        self.stop(false).await;
    }

    async fn stop(self, leave: bool) {
        let (done, rx) = oneshot::channel();
        if self
            .handle
            .tx
            .send(Control::Stop { leave, done })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        if leave {
            let deadline = Instant::now() + FLUSH_DEADLINE;
            while self.transport.queued() > 0 && Instant::now() < deadline {
                tokio::time::sleep(StdDuration::from_millis(5)).await;
            }
        }
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

/// Starts a node with `identity`: binds the QUIC endpoint, then starts a new ring (no
/// bootstrap) or dials the bootstrap addresses in order, learns the first reachable one's id
/// from its certificate and joins through it. Returns once the join is under way; use
/// [`NodeHandle::wait_ready`] to wait for it.
pub async fn start(identity: Identity, cfg: NetConfig) -> Result<RunningNode, NetError> {
    start_with(identity, cfg, Services::default()).await
}

/// Like [`start`], with `services` registered on the node before it joins.
pub async fn start_with(
    identity: Identity,
    cfg: NetConfig,
    services: Services,
) -> Result<RunningNode, NetError> {
    let admission = Arc::new(Admission::new(&cfg.security));
    let ring_cert = match &cfg.security {
        Security::Open => None,
        Security::Secure(s) => {
            check_own_certificate(&identity, &s.ca, &s.cert, &s.revocations)?;
            Some(s.cert.clone())
        }
    };
    let (endpoint, client, addr) = bind(
        &identity,
        ring_cert.as_ref(),
        admission.clone(),
        cfg.listen,
        cfg.advertise,
        cfg.emulated_latency.as_ref(),
    )?;
    let contact = Contact::new(identity.id(), addr);
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed)
        .map_err(|e| NetError::BadIdentity(format!("the OS random source failed: {e}")))?;
    let mut node = Node::new(contact, cfg.overlay, u64::from_le_bytes(seed))
        .map_err(|e| NetError::Config(e.to_string()))?;
    if let Security::Secure(s) = &cfg.security {
        node.set_ring_ca(s.ca, s.revocations.clone());
        node.overlay_mut()
            .set_admission(Box::new(ContactCheck(admission.clone())));
    }
    for s in services.services {
        node.add_service(s);
    }

    let (net_tx, net_rx) = inbound_channel();
    let (unreachable_tx, unreachable_rx) = mpsc::channel(UNREACHABLE_QUEUE);
    let transport = Transport::new(endpoint, client, admission, net_tx, unreachable_tx);
    let accept = tokio::spawn(transport.clone().accept_loop());
    let (ctl_tx, ctl_rx) = mpsc::channel(CONTROL_QUEUE);
    let (ready_tx, ready) = watch::channel(false);
    let actor = Actor {
        node,
        transport: transport.clone(),
        clock: Clock(Instant::now()),
        pending: HashMap::new(),
        metrics: Metrics::default(),
        ready: ready_tx,
        ctl: ctl_tx.downgrade(),
        poller: services.poller,
        wake: services.wake,
        intercept: services.intercept,
        identity,
        security: cfg.security,
    };
    let actor = tokio::spawn(actor.run(net_rx, unreachable_rx, ctl_rx));
    let running = RunningNode {
        handle: NodeHandle {
            tx: ctl_tx,
            contact,
            ready,
        },
        transport,
        actor,
        accept,
    };

    let first = if cfg.bootstrap.is_empty() {
        Command::StartRing
    } else {
        match find_bootstrap(&running.transport, addr, &cfg.bootstrap).await {
            Ok(bootstrap) => Command::Join { bootstrap },
            Err(e) => {
                running.kill().await;
                return Err(e);
            }
        }
    };
    let (reply, _ignored) = oneshot::channel();
    running
        .handle
        .tx
        .send(Control::Command { cmd: first, reply })
        .await
        .map_err(|_| NetError::Stopped)?;
    info!(id = %contact.id, %addr, "node started");
    Ok(running)
}

/// The first reachable bootstrap, with the id its certificate proves.
async fn find_bootstrap(
    t: &Arc<Transport>,
    me: SocketAddr,
    addrs: &[SocketAddr],
) -> Result<Contact, NetError> {
    let mut reasons = Vec::new();
    for &a in addrs.iter().filter(|a| **a != me) {
        match t.connection(a, None).await {
            Ok((id, _)) => return Ok(Contact::new(id, a)),
            Err(e) => reasons.push(e.to_string()),
        }
    }
    Err(NetError::NoBootstrap(reasons.join("; ")))
}

struct Pending {
    reply: oneshot::Sender<Result<CommandOutput, CommandError>>,
    started: Instant,
}

struct Actor {
    node: Node,
    transport: Arc<Transport>,
    clock: Clock,
    pending: HashMap<CommandId, Pending>,
    metrics: Metrics,
    ready: watch::Sender<bool>,
    ctl: mpsc::WeakSender<Control>,
    poller: Option<Poller>,
    wake: Option<Arc<tokio::sync::Notify>>,
    intercept: Option<Intercept>,
    /// Kept to rebuild the TLS configuration when the certificate is renewed.
    identity: Identity,
    /// The mode, with this node's current certificate in secure mode.
    security: Security,
}

impl Actor {
    async fn run(
        mut self,
        mut net: InboundRx,
        mut unreachable: mpsc::Receiver<Contact>,
        mut ctl: mpsc::Receiver<Control>,
    ) {
        loop {
            if let Some(p) = self.poller.as_mut() {
                p(&mut self.node, self.clock.now());
            }
            self.drain();
            let wake = self.node.next_deadline().map(|t| self.clock.instant(t));
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let wake = async {
                match &self.wake {
                    Some(w) => w.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(m) = net.recv() => self.on_message(m),
                () = wake => self.node.handle_timeout(self.clock.now()),
                Some(peer) = unreachable.recv() => {
                    debug!(peer = %peer.id.short(), addr = %peer.addr, "dial failed: peer unreachable");
                    self.node.handle_unreachable(self.clock.now(), peer.id);
                }
                c = ctl.recv() => match c {
                    Some(Control::Stop { leave, done }) => {
                        if leave {
                            self.node.handle_command(self.clock.now(), Command::Leave);
                            self.drain();
                        }
                        let _ = done.send(());
                        return;
                    }
                    Some(c) => self.on_control(c),
                    None => return,
                },
                () = sleep => self.node.handle_timeout(self.clock.now()),
            }
        }
    }

    fn on_message(&mut self, m: Inbound) {
        match self.unwrap(&m.bytes) {
            Ok(msg) => {
                *self.metrics.messages_in.entry(msg.kind()).or_default() += 1;
                if let Some(out) = self
                    .intercept
                    .as_mut()
                    .and_then(|f| f(&self.node, m.from, &msg))
                {
                    for (to, msg) in out {
                        if let Ok(bytes) = self.wrap(&msg) {
                            self.transport.send(to, bytes);
                        }
                    }
                    return;
                }
                self.node.handle_message(self.clock.now(), m.from, msg);
            }
            Err(e) => {
                self.metrics.decode_errors += 1;
                debug!(peer = %m.from.id.short(), "dropping undecodable message: {e}");
            }
        }
    }

    fn wrap(&self, msg: &OverlayMessage) -> Result<Vec<u8>, ringvault_types::EncodeError> {
        self.transport.admission.wrap(msg)
    }

    fn unwrap(&self, bytes: &[u8]) -> Result<OverlayMessage, ringvault_types::DecodeError> {
        self.transport.admission.unwrap(bytes, unix_now())
    }

    fn on_control(&mut self, c: Control) {
        let now = self.clock.now();
        match c {
            Control::Run(job) => job(&mut self.node, now),
            Control::Probe { peer, rtt } => {
                match rtt {
                    Some(d) => self.metrics.probe_rtt_ms.observe(d.as_secs_f64() * 1e3),
                    None => self.metrics.probes_failed += 1,
                }
                self.node
                    .handle_probe_result(now, peer, rtt.map(Into::into));
            }
            Control::Command { cmd, reply } => {
                let id = self.node.handle_command(now, cmd);
                self.pending.insert(
                    id,
                    Pending {
                        reply,
                        started: Instant::now(),
                    },
                );
            }
            Control::Status(reply) => {
                let mut m = self.metrics.clone();
                let c = &self.transport.counters;
                let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                m.connections_open = self.transport.open_connections() as u64;
                m.connections_dialed = get(&c.dialed);
                m.connections_accepted = get(&c.accepted);
                m.connections_refused = get(&c.refused);
                m.connect_failures = get(&c.connect_failures);
                m.bad_frames = get(&c.bad_frames);
                m.queue_drops = get(&c.queue_drops);
                m.write_failures = get(&c.write_failures);
                m.bytes_in = get(&c.bytes_in);
                m.bytes_out = get(&c.bytes_out);
                m.peers_refused = self.transport.admission.refused();
                let r = self.node.revocation_stats();
                m.revocations_adopted = r.adopted;
                m.revocations_refused = r.refused;
                m.revocations_not_newer = r.not_newer;
                let up = self.clock.0.elapsed().as_secs_f64();
                let security = self.security_status();
                let _ = reply.send(Status::of(self.node.overlay(), security, up, m));
            }
            Control::Renew { cert, reply } => {
                let _ = reply.send(self.renew(cert));
            }
            Control::Stop { .. } => {}
        }
    }

    /// Carries out everything the node asked for.
    fn drain(&mut self) {
        while let Some(action) = self.node.poll_action() {
            match action {
                Action::Send { to, msg } => match self.wrap(&msg) {
                    Ok(bytes) => {
                        *self.metrics.messages_out.entry(msg.kind()).or_default() += 1;
                        self.transport.send(to, bytes);
                    }
                    Err(e) => warn!(to = %to.id.short(), "cannot encode a {}: {e}", msg.kind()),
                },
                Action::Probe { peer } => {
                    let t = self.transport.clone();
                    let ctl = self.ctl.clone();
                    tokio::spawn(async move {
                        let rtt = t.rtt(peer).await;
                        if let Some(ctl) = ctl.upgrade() {
                            let _ = ctl.send(Control::Probe { peer, rtt }).await;
                        }
                    });
                }
                Action::Event(NodeEvent::CommandDone { id, result }) => {
                    self.on_done(id, result);
                }
                Action::Event(NodeEvent::Revocations(list)) => {
                    info!(
                        version = list.version(),
                        revoked = list.body.serials.len(),
                        "adopted a newer revocation list"
                    );
                    if let Security::Secure(s) = &self.security {
                        if list.revokes(s.cert.body.serial) {
                            tracing::error!(
                                serial = s.cert.body.serial,
                                "the ring's CA has revoked this node's certificate: the other nodes refuse it from now on"
                            );
                        }
                    }
                    self.transport.admission.set_revocations(list);
                    let now = self.clock.now();
                    for peer in self.transport.close_revoked() {
                        warn!(peer = %peer.short(), "closed the connection of a revoked node");
                        self.node.handle_unreachable(now, peer);
                    }
                }
                Action::Event(NodeEvent::Overlay(e)) => match e {
                    OverlayEvent::Joined => {
                        info!("joined the ring");
                        self.ready.send_replace(true);
                    }
                    OverlayEvent::JoinFailed { attempts } => {
                        warn!(
                            attempts,
                            "could not join the ring; check the bootstrap address"
                        )
                    }
                    OverlayEvent::PeerFailed { peer, cause } => {
                        self.metrics.peers_failed += 1;
                        *self
                            .metrics
                            .peers_failed_by_cause
                            .entry(cause.label())
                            .or_default() += 1;
                        info!(peer = %peer.id.short(), addr = %peer.addr, %cause, "peer failed");
                    }
                    OverlayEvent::SecureRouted(r) => {
                        debug!(key = %r.key.short(), redundant = r.redundant, to = r.sent_to.len(), "secure route done");
                    }
                },
            }
        }
    }

    fn security_status(&self) -> SecurityStatus {
        let Security::Secure(s) = &self.security else {
            return SecurityStatus::Open;
        };
        let list = self.node.revocations();
        let now = unix_now();
        SecurityStatus::Secure {
            ca: Id::from_bytes(s.ca.0).to_string(),
            serial: s.cert.body.serial,
            cert_not_after: s.cert.body.not_after,
            cert_days_left: (s.cert.body.not_after as i64 - now as i64).div_euclid(86_400),
            revocations_version: list.version(),
            revoked: list.body.serials.len(),
            revocations_next_update: (list.version() > 0).then_some(list.body.next_update),
            revocations_stale: list.is_stale(now),
        }
    }

    /// Presents `cert` from now on (secure mode only).
    fn renew(&mut self, cert: NodeCertificate) -> Result<(), NetError> {
        let Security::Secure(s) = &mut self.security else {
            return Err(NetError::Certificate(
                "cannot be renewed: this node runs in open mode".into(),
            ));
        };
        check_own_certificate(&self.identity, &s.ca, &cert, self.node.revocations())?;
        let (server, client) = tls::quic_configs(
            &self.identity,
            Some(&cert),
            self.transport.admission.clone(),
            Arc::new(transport_config()),
        )?;
        self.transport.endpoint.set_server_config(Some(server));
        self.transport.set_client_config(client);
        info!(
            serial = cert.body.serial,
            not_after = cert.body.not_after,
            "renewed this node's certificate"
        );
        s.cert = cert;
        Ok(())
    }

    fn on_done(&mut self, id: CommandId, result: Result<CommandOutput, CommandError>) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        match &result {
            Ok(CommandOutput::Route(r)) => {
                self.metrics.routes_ok += 1;
                self.metrics.route_hops.observe(r.hops() as f64);
                self.metrics
                    .route_latency_ms
                    .observe(p.started.elapsed().as_secs_f64() * 1e3);
            }
            Err(_)
                if matches!(
                    result,
                    Err(CommandError::Timeout | CommandError::NotJoined | CommandError::Busy)
                ) =>
            {
                self.metrics.routes_failed += 1;
            }
            _ => {}
        }
        let _ = p.reply.send(result);
    }
}
