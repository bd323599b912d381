//! ringvault's `Node`: the overlay and its services composed into one sans-IO state machine,
//! the single surface the drivers (network daemon, simulator) see.
//!
//! Owns: the [`Node`] dispatcher (commands with ids, actions out, one timer), the wire encoding
//! of messages ([`encode`], [`decode`]: version byte + postcard, size-capped, total), the
//! built-in route probe, and revocation gossip in secure mode. Does not own protocol
//! logic (the overlay and the services do) or any I/O (the drivers do).
#![deny(missing_docs)]

mod node;
mod probe;
mod revocation;
mod wire;

pub use node::{
    Action, Command, CommandError, CommandId, CommandOutput, Node, NodeEvent, SECURE_ROUTE_APP,
};
pub use probe::{RouteReport, PROBE_APP, PROBE_TIMEOUT};
pub use revocation::{RevocationStats, REVOCATION_APP};
pub use ringvault_overlay::Service;
pub use wire::{decode, decode_vouched, encode, encode_vouched, Vouched};
