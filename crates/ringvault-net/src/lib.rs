//! ringvault's network driver: runs a sans-IO [`ringvault_node::Node`] on tokio over QUIC.
//!
//! Owns: the QUIC transport (quinn + rustls, one endpoint per node), identity-bound TLS (each
//! node's certificate carries its ed25519 key; the peer's id is the BLAKE3 of that key, and a
//! dialer refuses a peer whose key does not match the id it expected), bounded per-peer
//! connections and send queues, admission of peers by ring certificate in secure mode with connection reuse and idle close, RTT measurement fed to the
//! core as proximity, the clock (read here and only here), and the node's identity file.
//!
//! Server mode runs on the same transport (`server.rs`): one actor per server around
//! `ringvault_bft::Server`, its writes on a disk thread of their own.
//!
//! Does not own: any protocol decision (the node and overlay make them), the HTTP API and the
//! CLI (the `ringvault` binary).
#![deny(missing_docs)]

mod admission;
mod driver;
mod keyfile;
mod latency;
mod server;
mod status;
mod tls;
mod transport;

pub use admission::{Refusal, SecureRing, Security, ALPN, ALPN_SECURE, ALPN_SERVER};
pub use driver::{
    start, start_with, Intercept, NetConfig, NodeHandle, Poller, RunningNode, Services,
    CONTROL_QUEUE, NET_BULK_QUEUE, NET_QUEUE,
};
pub use keyfile::{load_or_create_identity, store_identity, IDENTITY_FILE};
pub use latency::{EmulatedLatency, LatencySeat};
pub use server::{
    start_server, ClientCounters, MemberView, MembershipCounters, Phase, ReadKind, ReplicaCounters,
    RunningServer, ServerBoot, ServerDisk, ServerHandle, ServerHooks, ServerIntercept,
    ServerMetrics, ServerNetConfig, ServerObserver, ServerOpError, ServerStatus,
};
pub use status::{Histogram, Metrics, OverlayStats, PeerView, SecurityStatus, Status, TableEntry};
pub use tls::{client_config, server_name_for};
pub use transport::{CONNECT_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS, PEER_QUEUE, WRITE_TIMEOUT};

use std::net::SocketAddr;

/// What can go wrong running a node.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The QUIC socket could not be bound.
    #[error("cannot listen on {addr}: {source}; pick another address or port")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The node listens on all interfaces and none has an address peers could dial.
    #[error(
        "listening on {0}, but no interface has an address other nodes could dial (neither loopback nor link-local); give one with --advertise HOST:PORT"
    )]
    NothingToAdvertise(SocketAddr),
    /// The address to advertise has no concrete IP.
    #[error("cannot advertise {0}: peers need a concrete IP to dial, not an unspecified one")]
    UnspecifiedAdvertise(SocketAddr),
    /// A local file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The identity file is unusable.
    #[error("bad identity: {0}")]
    BadIdentity(String),
    /// The overlay configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// This node's own ring certificate cannot be used.
    #[error("this node's certificate {0}")]
    Certificate(String),
    /// TLS setup failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// A peer could not be reached (or was refused).
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// The address dialed.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// No bootstrap address answered.
    #[error("no bootstrap node reachable ({0}); check the addresses, or omit --bootstrap to start a new ring")]
    NoBootstrap(String),
    /// The node did not finish joining in time.
    #[error("the node did not join within {0:?}")]
    JoinTimeout(std::time::Duration),
    /// A command failed in the node.
    #[error(transparent)]
    Command(ringvault_node::CommandError),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}
