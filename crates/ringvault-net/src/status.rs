//! What a running node reports about itself: tables, counters and driver metrics, as plain
//! serialisable values for the HTTP API, the dashboard and tests.

use std::collections::BTreeMap;

use ringvault_overlay::{Overlay, Peer, Side};
use ringvault_types::Id;
use serde::Serialize;

fn ser_display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A peer in one of the node's tables.
#[derive(Clone, Debug, Serialize)]
pub struct PeerView {
    /// Its id.
    #[serde(serialize_with = "ser_display")]
    pub id: Id,
    /// Its QUIC address.
    pub addr: String,
    /// Measured round-trip time in milliseconds, when measured.
    pub rtt_ms: Option<f64>,
    /// Where the id lies on the ring, as a fraction of a turn from zero (for drawing).
    pub ring_fraction: f64,
}

impl PeerView {
    pub(crate) fn of(p: &Peer) -> Self {
        PeerView {
            id: p.contact.id,
            addr: p.contact.addr.to_string(),
            rtt_ms: p.rtt.map(|d| d.as_millis_f64()),
            ring_fraction: p.contact.id.ring_fraction(),
        }
    }
}

/// A routing table entry with its position.
#[derive(Clone, Debug, Serialize)]
pub struct TableEntry {
    /// Row: the length of the prefix shared with this node.
    pub row: usize,
    /// Column: the entry's digit at that position.
    pub col: usize,
    /// The peer.
    #[serde(flatten)]
    pub peer: PeerView,
}

/// A histogram with fixed upper bounds (Prometheus style: counts are per bucket, not cumulative).
#[derive(Clone, Debug, Serialize)]
pub struct Histogram {
    /// Upper bound of each bucket (inclusive); the last bucket is unbounded.
    pub bounds: Vec<f64>,
    /// Observations per bucket (`bounds.len() + 1` of them).
    pub counts: Vec<u64>,
    /// Sum of all observations.
    pub sum: f64,
}

impl Histogram {
    pub(crate) fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub(crate) fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
    }

    /// Adds `other`'s observations (same bounds) to this histogram; others are ignored.
    pub fn merge(&mut self, other: &Histogram) {
        if other.bounds == self.bounds {
            for (a, b) in self.counts.iter_mut().zip(&other.counts) {
                *a += b;
            }
            self.sum += other.sum;
        }
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Counters the driver keeps (the overlay keeps its own in [`OverlayStats`]).
#[derive(Clone, Debug, Serialize)]
pub struct Metrics {
    /// Messages received, by message kind.
    pub messages_in: BTreeMap<&'static str, u64>,
    /// Messages sent, by message kind.
    pub messages_out: BTreeMap<&'static str, u64>,
    /// Frames that did not decode as messages (dropped).
    pub decode_errors: u64,
    /// Route probes that reached a root.
    pub routes_ok: u64,
    /// Route probes that failed (timeout, not joined, busy).
    pub routes_failed: u64,
    /// Overlay hops of successful route probes.
    pub route_hops: Histogram,
    /// Time from starting a route probe to its report, in milliseconds.
    pub route_latency_ms: Histogram,
    /// Proximity probes answered with an RTT, in milliseconds.
    pub probe_rtt_ms: Histogram,
    /// Proximity probes that could not reach the peer.
    pub probes_failed: u64,
    /// Peers the overlay declared failed.
    pub peers_failed: u64,
    /// The same, by what showed each failed (`FailureCause::label`).
    pub peers_failed_by_cause: BTreeMap<&'static str, u64>,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections this node dialed.
    pub connections_dialed: u64,
    /// Connections accepted from peers.
    pub connections_accepted: u64,
    /// Incoming connections refused (limit reached, handshake failed or timed out, or a peer
    /// whose key did not match).
    pub connections_refused: u64,
    /// Dials that failed.
    pub connect_failures: u64,
    /// Streams dropped for an invalid frame length (empty or over the size cap).
    pub bad_frames: u64,
    /// Messages dropped because a peer's send queue was full.
    pub queue_drops: u64,
    /// Messages that could not be written (peer unreachable or stream broken).
    pub write_failures: u64,
    /// Bytes received in frames.
    pub bytes_in: u64,
    /// Bytes sent in frames.
    pub bytes_out: u64,
    /// Peers refused in secure mode, by reason: at the handshake (no certificate, expired,
    /// revoked, another CA's, key mismatch, ...) or named in a message without a certificate
    /// (`unvouched_contact`).
    pub peers_refused: BTreeMap<&'static str, u64>,
    /// Revocation lists adopted, refused (not the CA's), and received but not newer.
    pub revocations_adopted: u64,
    /// See `revocations_adopted`.
    pub revocations_refused: u64,
    /// See `revocations_adopted`.
    pub revocations_not_newer: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            messages_in: BTreeMap::new(),
            messages_out: BTreeMap::new(),
            decode_errors: 0,
            routes_ok: 0,
            routes_failed: 0,
            route_hops: Histogram::new(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0]),
            route_latency_ms: Histogram::new(&[0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0]),
            probe_rtt_ms: Histogram::new(&[0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 200.0]),
            probes_failed: 0,
            peers_failed: 0,
            peers_failed_by_cause: BTreeMap::new(),
            connections_open: 0,
            connections_dialed: 0,
            connections_accepted: 0,
            connections_refused: 0,
            connect_failures: 0,
            bad_frames: 0,
            queue_drops: 0,
            write_failures: 0,
            bytes_in: 0,
            bytes_out: 0,
            peers_refused: BTreeMap::new(),
            revocations_adopted: 0,
            revocations_refused: 0,
            revocations_not_newer: 0,
        }
    }
}

/// The overlay's own counters, as the overlay keeps them.
pub type OverlayStats = ringvault_overlay::Stats;

/// The ring's mode as this node runs it.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum SecurityStatus {
    /// Any node may join.
    Open,
    /// Only nodes certified by the ring's CA.
    Secure {
        /// The CA's public key (hex).
        ca: String,
        /// This node's certificate serial.
        serial: u64,
        /// When this node's certificate expires (Unix seconds).
        cert_not_after: u64,
        /// Whole days until then (negative once expired).
        cert_days_left: i64,
        /// The revocation list's version (0: none seen).
        revocations_version: u64,
        /// Serials it revokes.
        revoked: usize,
        /// When the CA promised a newer list (Unix seconds; absent for none seen).
        revocations_next_update: Option<u64>,
        /// The list is past its next update: revocations may be missing. Get a new list from
        /// the CA (`ringvault ca revoke` writes one) and hand it to any node.
        revocations_stale: bool,
    },
}

/// A snapshot of one node.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Node id.
    #[serde(serialize_with = "ser_display")]
    pub id: Id,
    /// QUIC address it listens on.
    pub addr: String,
    /// Where its id lies on the ring (fraction of a turn).
    pub ring_fraction: f64,
    /// Whether it has joined and routes.
    pub ready: bool,
    /// Open or secure mode, with the certificate and revocation state.
    pub security: SecurityStatus,
    /// Seconds since the node started.
    pub uptime_secs: f64,
    /// Leaf set, smaller ids (counter-clockwise), nearest first.
    pub leaf_set_smaller: Vec<PeerView>,
    /// Leaf set, larger ids (clockwise), nearest first.
    pub leaf_set_larger: Vec<PeerView>,
    /// Routing table entries.
    pub routing_table: Vec<TableEntry>,
    /// Entries per routing table row.
    pub routing_fill: Vec<usize>,
    /// Neighbourhood set (closest by proximity).
    pub neighbourhood: Vec<PeerView>,
    /// Overlay counters.
    pub overlay: OverlayStats,
    /// Driver counters.
    pub metrics: Metrics,
}

impl Status {
    pub(crate) fn of(
        o: &Overlay,
        security: SecurityStatus,
        uptime_secs: f64,
        metrics: Metrics,
    ) -> Self {
        let me = o.contact();
        let table = o.routing_table();
        let s = o.stats();
        Status {
            id: me.id,
            addr: me.addr.to_string(),
            ring_fraction: me.id.ring_fraction(),
            ready: o.is_ready(),
            security,
            uptime_secs,
            leaf_set_smaller: o
                .leaf_set()
                .side(Side::Ccw)
                .iter()
                .map(PeerView::of)
                .collect(),
            leaf_set_larger: o
                .leaf_set()
                .side(Side::Cw)
                .iter()
                .map(PeerView::of)
                .collect(),
            routing_table: table
                .entries()
                .filter_map(|p| {
                    let (row, col) = table.slot_of(&p.contact.id)?;
                    Some(TableEntry {
                        row,
                        col,
                        peer: PeerView::of(p),
                    })
                })
                .collect(),
            routing_fill: table.fill(),
            neighbourhood: o.neighbourhood().peers().iter().map(PeerView::of).collect(),
            overlay: s.clone(),
            metrics,
        }
    }

    /// Ids of the whole leaf set.
    pub fn leaf_ids(&self) -> Vec<Id> {
        self.leaf_set_smaller
            .iter()
            .chain(&self.leaf_set_larger)
            .map(|p| p.id)
            .collect()
    }
}
