//! A test mode: emulated link delays, so that nodes on one machine see the distances of a
//! latency model (the simulator's, for checking it against real daemons).
//!
//! Every UDP datagram a node sends to another node of the model is held back by the model's
//! one-way delay for that pair, at the socket, beneath QUIC: QUIC's own RTT estimate, which is
//! the overlay's proximity metric, sees the model's round trip (both directions' delays) plus
//! what the machine adds. Datagrams to an address the model does not know go out at once.
//! Off unless a node is given a [`LatencySeat`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The one-way delays between the nodes of a model, and where each node listens (nodes
/// register their address as they bind). Shared by the nodes of one process.
pub struct EmulatedLatency {
    /// `delays[i][j]`: the one-way delay from node `i` to node `j`.
    delays: Vec<Vec<Duration>>,
    /// Which node of the model listens at an address.
    nodes: RwLock<BTreeMap<SocketAddr, usize>>,
}

impl fmt::Debug for EmulatedLatency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatedLatency")
            .field("nodes", &self.delays.len())
            .finish()
    }
}

impl EmulatedLatency {
    /// A model of `delays.len()` nodes; `delays[i][j]` is the one-way delay from `i` to `j`.
    /// Refuses a matrix that is not square.
    pub fn new(delays: Vec<Vec<Duration>>) -> Result<Arc<Self>, String> {
        let n = delays.len();
        if let Some(i) = delays.iter().position(|row| row.len() != n) {
            return Err(format!(
                "row {i} of the delay matrix has {} entries, not {n}",
                delays[i].len()
            ));
        }
        Ok(Arc::new(EmulatedLatency {
            delays,
            nodes: RwLock::new(BTreeMap::new()),
        }))
    }

    /// Nodes in the model.
    pub fn len(&self) -> usize {
        self.delays.len()
    }

    /// True for a model of no nodes.
    pub fn is_empty(&self) -> bool {
        self.delays.is_empty()
    }

    /// The one-way delay from node `from` to node `to`.
    pub fn delay(&self, from: usize, to: usize) -> Duration {
        self.delays[from][to]
    }

    /// Node `index` listens at `addr`.
    fn register(&self, index: usize, addr: SocketAddr) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        nodes.insert(addr, index);
    }

    /// The delay from node `from` to whoever listens at `to`, if it is a node of the model.
    fn delay_to(&self, from: usize, to: SocketAddr) -> Option<Duration> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        nodes.get(&to).map(|&j| self.delays[from][j])
    }
}

/// Which node of an [`EmulatedLatency`] model a node is.
#[derive(Clone, Debug)]
pub struct LatencySeat {
    /// The model.
    pub model: Arc<EmulatedLatency>,
    /// This node's index in it.
    pub index: usize,
}

/// A QUIC endpoint on `socket` whose datagrams to the model's nodes are delayed; registers
/// `advertised` (the address peers dial) as the seat's node.
pub(crate) fn endpoint(
    socket: std::net::UdpSocket,
    advertised: SocketAddr,
    server: quinn::ServerConfig,
    seat: &LatencySeat,
) -> io::Result<quinn::Endpoint> {
    if seat.index >= seat.model.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "latency seat {} of a model of {} nodes",
                seat.index,
                seat.model.len()
            ),
        ));
    }
    let sender = socket.try_clone()?;
    sender.set_nonblocking(true)?;
    let sender = tokio::net::UdpSocket::from_std(sender)?;
    let inner = TokioRuntime.wrap_udp_socket(socket)?;
    let (queue, rx) = mpsc::unbounded_channel();
    tokio::spawn(send_when_due(rx, sender));
    let delayed = DelayedSocket {
        inner,
        seat: seat.clone(),
        queue,
        sent: std::sync::atomic::AtomicU64::new(0),
    };
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(server),
        Arc::new(delayed),
        Arc::new(TokioRuntime),
    )?;
    seat.model.register(seat.index, advertised);
    Ok(endpoint)
}

/// A datagram waiting for its delay; queued earliest first, then in the order sent.
struct Delayed {
    due: Instant,
    seq: u64,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// A UDP socket that holds back datagrams to the model's nodes.
#[derive(Debug)]
struct DelayedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    seat: LatencySeat,
    queue: mpsc::UnboundedSender<Delayed>,
    /// Datagrams queued so far: their order among equal due times.
    sent: std::sync::atomic::AtomicU64,
}

impl AsyncUdpSocket for DelayedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let Some(delay) = self
            .seat
            .model
            .delay_to(self.seat.index, transmit.destination)
        else {
            return self.inner.try_send(transmit);
        };
        // max_transmit_segments is 1, so a transmit is one datagram. Its ECN mark and source
        // address are not kept: on loopback quinn then simply runs without ECN.
        debug_assert!(transmit.segment_size.is_none());
        let seq = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A closed queue means the node is shutting down: the datagram is dropped, as the
        // network may drop any.
        let _ = self.queue.send(Delayed {
            due: Instant::now() + delay,
            seq,
            to: transmit.destination,
            bytes: transmit.contents.to_vec(),
        });
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Half the timer's resolution (tokio's is a millisecond, and a sleep ends at the first tick
/// at or after its deadline): the sender wakes this much before a datagram is due and sends
/// what is due within this much after, so a datagram leaves within about half a millisecond of
/// its due time either way, not up to a whole millisecond late.
const HALF_TICK: Duration = Duration::from_micros(500);

/// Sends each queued datagram when its delay is over, earliest first (datagrams to one peer
/// share a delay, so they leave in the order they were sent). Once the socket is gone it still
/// sends what it holds (a connection's closing frames among them), each when due, then ends.
async fn send_when_due(mut rx: mpsc::UnboundedReceiver<Delayed>, socket: tokio::net::UdpSocket) {
    let mut waiting: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
    let mut open = true;
    loop {
        let next = waiting.peek().map(|Reverse(d)| d.due);
        if !open && next.is_none() {
            return;
        }
        let wake = next.map_or_else(Instant::now, |due| {
            due.checked_sub(HALF_TICK).unwrap_or(due)
        });
        tokio::select! {
            got = rx.recv(), if open => match got {
                Some(d) => waiting.push(Reverse(d)),
                None => open = false,
            },
            _ = tokio::time::sleep_until(wake), if next.is_some() => {
                let until = Instant::now() + HALF_TICK;
                while waiting.peek().is_some_and(|Reverse(d)| d.due <= until) {
                    if let Some(Reverse(d)) = waiting.pop() {
                        // A send error is a lost datagram, which QUIC recovers from.
                        let _ = socket.send_to(&d.bytes, d.to).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_that_is_not_square_is_refused() {
        let ms = Duration::from_millis;
        assert!(EmulatedLatency::new(vec![vec![ms(0), ms(5)], vec![ms(5), ms(0)]]).is_ok());
        let err = EmulatedLatency::new(vec![vec![ms(0), ms(5)], vec![ms(5)]]).unwrap_err();
        assert!(err.contains("row 1"), "{err}");
    }
}
