//! QUIC transport: one quinn endpoint per node (server and client on the same socket, so a
//! connection's remote address is the peer's listening address), connections keyed by the
//! peer's verified id and reused in both directions, and per peer two [`Lane`]s, each a bounded
//! send queue and writer task with length-prefixed frames on a long-lived unidirectional
//! stream: small messages never wait behind a bulk transfer. A dial to a peer that fails is
//! reported to the node (once per failed dial) so the overlay can route around the peer at
//! once instead of waiting for keep-alive silence.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use ringvault_types::{Contact, Id, MAX_MESSAGE_SIZE};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::{debug, trace, warn};

use crate::admission::Admission;
use crate::tls::{cert_ring_extension, peer_certificate, peer_id, server_name_for};
use crate::{NetError, NET_BULK_QUEUE, NET_QUEUE};

/// At most this many QUIC connections are open at once; further incoming connections are
/// refused and sends to further peers are dropped until one closes.
pub const MAX_CONNECTIONS: usize = 1024;
/// At most this many encoded messages wait to be sent to one peer; beyond it new messages to
/// that peer are dropped (the overlay's acknowledgements and keep-alives recover).
pub const PEER_QUEUE: usize = 256;
/// How long a dial (QUIC + TLS handshake) may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(3);
/// How long writing one frame may block before the stream is abandoned.
pub const WRITE_TIMEOUT: StdDuration = StdDuration::from_secs(5);
/// Failed dials waiting to be reported to the node; beyond it reports are dropped (the
/// overlay's keep-alives still find the peer dead).
pub const UNREACHABLE_QUEUE: usize = 1024;
/// A connection with no traffic for this long is closed by QUIC; a per-peer writer with nothing
/// to send for this long exits.
pub const IDLE_TIMEOUT: StdDuration = StdDuration::from_secs(30);
/// Concurrent unidirectional streams a peer may open to us (each carries frames).
const MAX_STREAMS: u32 = 8;

/// Which of a peer's two send queues (and streams) a message takes. One FIFO stream per peer
/// put a keep-alive or a hop acknowledgement behind megabytes of object transfers: under bulk
/// load live peers missed their deadlines and were declared failed. Control frames go on a
/// stream of their own that QUIC sends first; order holds within a lane, not across lanes.
/// Nothing depends on it for correctness (routed messages take different paths anyway, and
/// replies carry request ids or versions); server mode's membership can see a small epoch
/// decision overtake a large one before it, refuses it and pulls it again a gossip round later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Lane {
    /// Frames up to [`CONTROL_FRAME_BYTES`]: pings, acknowledgements, routing state, small
    /// objects.
    Control,
    /// Larger messages: object and chunk transfers.
    Bulk,
}

/// The largest frame on the control lane: a routed message whose payload the overlay counts
/// as small ([`ringvault_overlay::SMALL_HOP_BYTES`], acknowledged within a few round trips)
/// plus its envelope and, in secure mode, its signature and certificate.
const CONTROL_FRAME_BYTES: usize = ringvault_overlay::SMALL_HOP_BYTES + 16 * 1024;

/// Control messages the actor takes in a row while a bulk one waits: control goes first, but
/// a steady stream of it does not starve object transfers (whose senders would give up on a
/// stream that does not drain).
const CONTROL_BURST: u32 = 16;

impl Lane {
    fn of(frame_len: usize) -> Lane {
        if frame_len > CONTROL_FRAME_BYTES {
            Lane::Bulk
        } else {
            Lane::Control
        }
    }

    /// The QUIC stream priority: higher is sent first.
    fn priority(self) -> i32 {
        match self {
            Lane::Control => 1,
            Lane::Bulk => 0,
        }
    }
}

/// Error code used when we stop a stream that sent an invalid frame.
const BAD_FRAME: u32 = 1;
/// Error code used when we close the connection of a node whose certificate was revoked.
const REVOKED: u32 = 2;

/// A message as received: from whom (id vouched for by TLS, address of the connection) and
/// its bytes (not yet decoded).
pub(crate) struct Inbound {
    pub(crate) from: Contact,
    pub(crate) bytes: Vec<u8>,
}

/// The queue of one peer's lane, drained by its writer task.
type Writer = mpsc::Sender<Vec<u8>>;

/// Where the transport hands received messages to the node's actor: a queue per [`Lane`].
pub(crate) struct InboundTx {
    control: mpsc::Sender<Inbound>,
    bulk: mpsc::Sender<Inbound>,
}

/// The actor's end of [`InboundTx`].
pub(crate) struct InboundRx {
    control: mpsc::Receiver<Inbound>,
    bulk: mpsc::Receiver<Inbound>,
    /// Control messages taken in a row since the last bulk one.
    burst: u32,
}

/// Queues for what the transport receives: [`NET_QUEUE`] small messages and
/// [`NET_BULK_QUEUE`] large ones.
pub(crate) fn inbound_channel() -> (InboundTx, InboundRx) {
    let (control, control_rx) = mpsc::channel(NET_QUEUE);
    let (bulk, bulk_rx) = mpsc::channel(NET_BULK_QUEUE);
    (
        InboundTx { control, bulk },
        InboundRx {
            control: control_rx,
            bulk: bulk_rx,
            burst: 0,
        },
    )
}

impl InboundRx {
    /// The next message received, a control one first when both are waiting (but never more
    /// than [`CONTROL_BURST`] in a row while a bulk one waits): a node busy verifying and
    /// storing object transfers answers pings and acknowledges hops in the meantime instead of
    /// after the whole backlog. `None` once the transport is gone.
    pub(crate) async fn recv(&mut self) -> Option<Inbound> {
        if self.burst >= CONTROL_BURST {
            if let Ok(m) = self.bulk.try_recv() {
                self.burst = 0;
                return Some(m);
            }
        }
        let (m, control) = tokio::select! {
            biased;
            Some(m) = self.control.recv() => (m, true),
            Some(m) = self.bulk.recv() => (m, false),
            else => return None,
        };
        self.burst = if control {
            self.burst.saturating_add(1)
        } else {
            0
        };
        Some(m)
    }
}

/// Transport counters, shared with the status snapshot.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) dialed: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) bad_frames: AtomicU64,
    pub(crate) queue_drops: AtomicU64,
    pub(crate) write_failures: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Messages queued in writers and not yet written or dropped.
    pub(crate) queued: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) struct Transport {
    pub(crate) endpoint: quinn::Endpoint,
    /// What this node dials with; replaced when its certificate is renewed.
    client: Mutex<quinn::ClientConfig>,
    /// Who may connect (the TLS verifiers hold the same).
    pub(crate) admission: Arc<Admission>,
    conns: Mutex<HashMap<Id, quinn::Connection>>,
    writers: Mutex<HashMap<(Id, Lane), Writer>>,
    /// One dial at a time per peer: the two lanes' writers start together, and each dialing
    /// would open two connections (one of them uncounted once the other replaced it).
    dials: Dials,
    inbound: InboundTx,
    /// Peers a dial to failed, for the node's `handle_unreachable`.
    unreachable: mpsc::Sender<Contact>,
    pub(crate) counters: Counters,
    /// Flips to true when the node stops; every task of the transport then ends.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Transport {
    pub(crate) fn new(
        endpoint: quinn::Endpoint,
        client: quinn::ClientConfig,
        admission: Arc<Admission>,
        inbound: InboundTx,
        unreachable: mpsc::Sender<Contact>,
    ) -> Arc<Self> {
        Arc::new(Transport {
            endpoint,
            client: Mutex::new(client),
            admission,
            conns: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
            dials: Mutex::new(HashMap::new()),
            inbound,
            unreachable,
            counters: Counters::default(),
            closed: tokio::sync::watch::channel(false).0,
        })
    }

    /// Open connections right now.
    pub(crate) fn open_connections(&self) -> usize {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|_, c| c.close_reason().is_none());
        conns.len()
    }

    /// Accepts incoming connections until the endpoint closes.
    pub(crate) async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            if self.open_connections() >= MAX_CONNECTIONS {
                bump(&self.counters.refused);
                incoming.refuse();
                continue;
            }
            let t = self.clone();
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                match timeout(CONNECT_TIMEOUT, incoming).await {
                    Ok(Ok(conn)) => match peer_id(&conn) {
                        Some(id) => {
                            bump(&t.counters.accepted);
                            t.register(id, conn);
                        }
                        None => conn.close(BAD_FRAME.into(), b"no ringvault identity"),
                    },
                    Ok(Err(e)) => {
                        bump(&t.counters.refused);
                        match handshake_refusal(&e, &t.admission) {
                            Some(Refused::Mode(why)) => {
                                t.admission.count("mode_mismatch");
                                warn!(%remote, "refused a connection: {why}")
                            }
                            Some(Refused::Certificate(why)) => {
                                warn!(%remote, "refused a connection: {why}")
                            }
                            None => debug!(%remote, "incoming handshake failed: {e}"),
                        }
                    }
                    Err(_) => {
                        bump(&t.counters.refused);
                        debug!(%remote, "incoming handshake timed out");
                    }
                }
            });
        }
    }

    /// Remembers `conn` as the connection to `id` and starts reading what the peer sends on it.
    fn register(self: &Arc<Self>, id: Id, conn: quinn::Connection) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, conn.clone());
        let t = self.clone();
        tokio::spawn(async move {
            let from = Contact::new(id, conn.remote_address());
            while let Ok(stream) = conn.accept_uni().await {
                tokio::spawn(t.clone().read_stream(from, stream));
            }
            let mut conns = t.conns.lock().unwrap_or_else(|e| e.into_inner());
            if conns
                .get(&id)
                .is_some_and(|c| c.stable_id() == conn.stable_id())
            {
                conns.remove(&id);
            }
        });
    }

    /// Reads length-prefixed frames from one stream and hands them to the node. A frame of zero
    /// or more than [`MAX_MESSAGE_SIZE`] bytes stops the stream; the connection and the node
    /// are unaffected.
    async fn read_stream(self: Arc<Self>, from: Contact, mut stream: quinn::RecvStream) {
        loop {
            let mut len = [0u8; 4];
            if stream.read_exact(&mut len).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes(len) as usize;
            if len == 0 || len > MAX_MESSAGE_SIZE {
                bump(&self.counters.bad_frames);
                debug!(peer = %from.id.short(), len, "dropping stream with an invalid frame length");
                let _ = stream.stop(BAD_FRAME.into());
                return;
            }
            let mut bytes = vec![0u8; len];
            if stream.read_exact(&mut bytes).await.is_err() {
                return;
            }
            self.counters
                .bytes_in
                .fetch_add(len as u64 + 4, Ordering::Relaxed);
            let queue = match Lane::of(len) {
                Lane::Control => &self.inbound.control,
                Lane::Bulk => &self.inbound.bulk,
            };
            if queue.send(Inbound { from, bytes }).await.is_err() {
                return; // the node stopped
            }
        }
    }

    /// A live connection to `addr`, reusing one to `expected` when there is one; dialing
    /// otherwise. The TLS verifier refuses a peer whose key does not hash to `expected`.
    pub(crate) async fn connection(
        self: &Arc<Self>,
        addr: SocketAddr,
        expected: Option<Id>,
    ) -> Result<(Id, quinn::Connection), NetError> {
        self.connect(addr, expected).await.map_err(|e| match e {
            NoConnection::Busy(e) | NoConnection::DialFailed(e) => e,
        })
    }

    /// Like [`Transport::connection`], telling apart a dial that failed (the peer's problem)
    /// from one not tried because this node has too many connections (ours).
    async fn connect(
        self: &Arc<Self>,
        addr: SocketAddr,
        expected: Option<Id>,
    ) -> Result<(Id, quinn::Connection), NoConnection> {
        let Some(id) = expected else {
            return self.dial(addr, None).await;
        };
        let turn = DialTurn::new(&self.dials, id);
        let _one_at_a_time = turn.lock.lock().await;
        self.dial(addr, Some(id)).await
    }

    /// [`Transport::connect`] once it holds the peer's dial lock.
    async fn dial(
        self: &Arc<Self>,
        addr: SocketAddr,
        expected: Option<Id>,
    ) -> Result<(Id, quinn::Connection), NoConnection> {
        if let Some(id) = expected {
            let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = conns.get(&id).filter(|c| c.close_reason().is_none()) {
                return Ok((id, c.clone()));
            }
        }
        if self.open_connections() >= MAX_CONNECTIONS {
            return Err(NoConnection::Busy(NetError::Unreachable {
                addr,
                reason: "too many open connections".into(),
            }));
        }
        let fail = |reason: String| {
            bump(&self.counters.connect_failures);
            NoConnection::DialFailed(NetError::Unreachable { addr, reason })
        };
        let client = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let connecting = self
            .endpoint
            .connect_with(client, addr, &server_name_for(expected))
            .map_err(|e| fail(e.to_string()))?;
        let conn = match timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(fail(match handshake_refusal(&e, &self.admission) {
                    Some(Refused::Mode(why) | Refused::Certificate(why)) => {
                        warn!(%addr, "connection refused: {why}");
                        why
                    }
                    None => e.to_string(),
                }))
            }
            Err(_) => return Err(fail("handshake timed out".into())),
        };
        let id = peer_id(&conn).ok_or_else(|| fail("peer presented no ed25519 key".into()))?;
        bump(&self.counters.dialed);
        self.register(id, conn.clone());
        Ok((id, conn))
    }

    /// Whether `id` answers a fresh handshake at `addr` within [`CONNECT_TIMEOUT`]: a probe
    /// of a suspect. A fresh one, because the connection to a peer killed without closing it
    /// stays open until its idle timeout. The probe's connection is closed at once.
    pub(crate) async fn answers(&self, addr: SocketAddr, id: Id) -> bool {
        let client = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Ok(connecting) = self
            .endpoint
            .connect_with(client, addr, &server_name_for(Some(id)))
        else {
            return false;
        };
        match timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => {
                let alive = peer_id(&conn) == Some(id);
                conn.close(0u32.into(), b"probe");
                alive
            }
            _ => false,
        }
    }

    /// The smoothed RTT of the (possibly new) connection to `peer`; `None` when unreachable.
    pub(crate) async fn rtt(self: &Arc<Self>, peer: Contact) -> Option<StdDuration> {
        let (_, conn) = self.connection(peer.addr, Some(peer.id)).await.ok()?;
        Some(conn.rtt())
    }

    /// Queues `bytes` for `to` in its [`Lane`]. Never blocks: a full queue or too many peers
    /// drops the message.
    pub(crate) fn send(self: &Arc<Self>, to: Contact, bytes: Vec<u8>) {
        let lane = Lane::of(bytes.len());
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        let tx = match writers.get(&(to.id, lane)) {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                if writers.len() >= 2 * MAX_CONNECTIONS {
                    bump(&self.counters.queue_drops);
                    return;
                }
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                writers.insert((to.id, lane), tx.clone());
                tokio::spawn(self.clone().writer(to, lane, rx, tx.clone()));
                tx
            }
        };
        match tx.try_send(bytes) {
            Ok(()) => bump(&self.counters.queued),
            Err(_) => bump(&self.counters.queue_drops),
        }
    }

    /// Sends everything queued for `to` in `lane`, in order, on one stream of the current
    /// connection.
    async fn writer(
        self: Arc<Self>,
        to: Contact,
        lane: Lane,
        mut rx: mpsc::Receiver<Vec<u8>>,
        me: mpsc::Sender<Vec<u8>>,
    ) {
        let mut stream: Option<(usize, quinn::SendStream)> = None;
        let mut closed = self.closed.subscribe();
        loop {
            let next = tokio::select! {
                m = timeout(IDLE_TIMEOUT, rx.recv()) => m,
                _ = closed.wait_for(|c| *c) => break,
            };
            let Ok(Some(bytes)) = next else { break };
            let _written = Dequeued(&self.counters.queued);
            let conn = match self.connect(to.addr, Some(to.id)).await {
                Ok((_, c)) => c,
                Err(e) => {
                    let e = match e {
                        NoConnection::Busy(e) => e,
                        NoConnection::DialFailed(e) => {
                            // Tell the node, which declares the peer failed and repairs.
                            if self.unreachable.try_send(to).is_err() {
                                trace!(peer = %to.id.short(), "unreachable report dropped");
                            }
                            e
                        }
                    };
                    trace!(peer = %to.id.short(), "send failed: {e}");
                    // The peer is unreachable now: drop what is queued rather than retry it.
                    let mut dropped = 1;
                    while rx.try_recv().is_ok() {
                        self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                        dropped += 1;
                    }
                    self.counters
                        .write_failures
                        .fetch_add(dropped, Ordering::Relaxed);
                    continue;
                }
            };
            if stream.as_ref().map(|(id, _)| *id) != Some(conn.stable_id()) {
                stream = match timeout(WRITE_TIMEOUT, conn.open_uni()).await {
                    Ok(Ok(s)) => {
                        // Fails only on a stream already closed, which the write then reports.
                        let _ = s.set_priority(lane.priority());
                        Some((conn.stable_id(), s))
                    }
                    _ => {
                        bump(&self.counters.write_failures);
                        continue;
                    }
                };
            }
            let Some((_, s)) = stream.as_mut() else {
                continue;
            };
            let mut frame = Vec::with_capacity(bytes.len() + 4);
            frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            frame.extend_from_slice(&bytes);
            match timeout(WRITE_TIMEOUT, s.write_all(&frame)).await {
                Ok(Ok(())) => {
                    self.counters
                        .bytes_out
                        .fetch_add(frame.len() as u64, Ordering::Relaxed);
                }
                _ => {
                    bump(&self.counters.write_failures);
                    stream = None;
                }
            }
        }
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        if writers
            .get(&(to.id, lane))
            .is_some_and(|tx| tx.same_channel(&me))
        {
            writers.remove(&(to.id, lane));
        }
    }

    /// Dials with `client` from now on (a renewed certificate).
    pub(crate) fn set_client_config(&self, client: quinn::ClientConfig) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = client;
    }

    /// Closes the connections of peers whose certificate the admission's revocation list now
    /// revokes, and returns their ids.
    pub(crate) fn close_revoked(&self) -> Vec<Id> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let revoked: Vec<Id> = conns
            .iter()
            .filter(|(_, c)| {
                peer_certificate(c)
                    .and_then(|der| {
                        let ring = cert_ring_extension(der.as_ref())?;
                        ringvault_types::NodeCertificate::decode(ring).ok()
                    })
                    .is_some_and(|cert| self.admission.revokes(cert.body.serial))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &revoked {
            if let Some(c) = conns.remove(id) {
                c.close(REVOKED.into(), b"certificate revoked");
            }
        }
        revoked
    }

    /// Messages waiting in send queues.
    pub(crate) fn queued(&self) -> u64 {
        self.counters.queued.load(Ordering::Relaxed)
    }

    /// Closes every connection at once and the endpoint.
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
        self.endpoint.close(0u32.into(), b"shutting down");
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Per peer, the lock its dials take turns on.
type Dials = Mutex<HashMap<Id, Arc<tokio::sync::Mutex<()>>>>;

/// A place in a peer's queue of dials ([`Transport::connect`]). Its map entry goes when the
/// last one waiting is done, also when a dial is abandoned half way (its future dropped).
struct DialTurn<'a> {
    dials: &'a Dials,
    id: Id,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> DialTurn<'a> {
    fn new(dials: &'a Dials, id: Id) -> Self {
        let lock = dials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone();
        DialTurn { dials, id, lock }
    }
}

impl Drop for DialTurn<'_> {
    fn drop(&mut self) {
        let mut dials = self.dials.lock().unwrap_or_else(|e| e.into_inner());
        // Ours and the map's: no one else waits (clones are only taken under this mutex).
        if Arc::strong_count(&self.lock) == 2 {
            dials.remove(&self.id);
        }
    }
}

/// A handshake that failed because one side refused the other, explained for an operator.
enum Refused {
    /// The two nodes run in different modes (or protocol versions).
    Mode(String),
    /// A certificate was refused, by this node (counted by the verifier) or by the peer.
    Certificate(String),
}

/// What a failed handshake means for an operator, when it is a refusal between ringvault
/// nodes (another mode, or a certificate the other side refused); `None` for other failures.
fn handshake_refusal(e: &quinn::ConnectionError, admission: &Admission) -> Option<Refused> {
    let text = e.to_string();
    let ours = admission.mode_name();
    let lower = text.to_lowercase();
    if lower.contains("no application protocol")
        || lower.contains("noapplicationprotocol")
        || lower.contains("no_application_protocol")
        || lower.contains("doesn't support any known protocol")
    {
        return Some(Refused::Mode(format!(
            "the peer runs in another mode or protocol version (this node runs in {ours} mode; a ring is all open, all secure or all server)"
        )));
    }
    let peer_refused_ours = [
        (
            "certificateexpired",
            "the peer says this node's certificate has expired",
        ),
        (
            "certificaterevoked",
            "the peer says this node's certificate is revoked",
        ),
        ("unknownca", "the peer does not trust this node's CA"),
        (
            "accessdenied",
            "the peer requires a ring certificate (it runs in secure mode)",
        ),
        ("badcertificate", "the peer refused this node's certificate"),
        ("decodeerror", "the peer refused this node's certificate"),
    ];
    let squashed: String = lower.chars().filter(|c| c.is_alphanumeric()).collect();
    for (alert, why) in peer_refused_ours {
        if squashed.contains(alert) {
            return Some(Refused::Certificate(format!("{why} ({text})")));
        }
    }
    if lower.contains("invalid peer certificate") {
        return Some(Refused::Certificate(format!(
            "the peer's certificate was refused ({text})"
        )));
    }
    None
}

/// Why no connection to a peer was had.
enum NoConnection {
    /// Not tried: this node has [`MAX_CONNECTIONS`] open.
    Busy(NetError),
    /// Tried, and the peer could not be reached or did not prove the expected id.
    DialFailed(NetError),
}

/// Counts a queued message as gone when dropped (written, or given up on).
struct Dequeued<'a>(&'a AtomicU64);

impl Drop for Dequeued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The QUIC transport parameters: idle close and a bounded number of streams per peer.
pub(crate) fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(MAX_STREAMS.into())
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("30 s fits a QUIC idle timeout"),
        ))
        .datagram_receive_buffer_size(None);
    t
}
