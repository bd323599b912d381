//! The sans-IO Pastry overlay.
//!
//! Owns: the routing table ([`RoutingTable`]), leaf set ([`LeafSet`]) and neighbourhood set
//! ([`NeighbourhoodSet`]); the next-hop rule ([`Overlay::next_hop`]); join with its second stage;
//! keep-alives, failure detection and repair; proximity via probes the driver answers; and the
//! KBR API ([`Kbr`], [`Upcalls`], and the [`Service`] trait applications implement), the only door through which services touch the overlay.
//!
//! Does not own: encoding and framing (the node), sockets and clocks (the drivers), or any
//! service (storage, multicast). Everything here takes the current [`ringvault_types::Time`] as
//! an argument and returns [`Output`]s; there is no I/O, no clock and no global RNG.
#![deny(missing_docs)]

mod config;
mod hops;
mod join;
mod kbr;
mod leafset;
mod limits;
mod maintenance;
mod message;
mod neighbourhood;
mod overlay;
mod peer;
mod routing;
mod secure;
mod table;
mod table_upkeep;

pub use config::{
    Config, ConfigError, JoinVariant, HOP_TIMEOUT_RTTS, JOIN_RATE_PER_MINUTE, LEAF_SET_SIZE,
    MAX_HOPS, MAX_IN_FLIGHT, MAX_JOIN_ATTEMPTS, MAX_MISSED_ACKS, MAX_PARKED, MAX_PARKED_BYTES,
    MAX_PENDING_PROBES, MAX_RECENTLY_FAILED, MAX_REROUTES, MAX_SLOT_REPAIRS, MAX_SUSPECTS,
    NEIGHBOURHOOD_SIZE, SLOT_REPAIR_FANOUT, SMALL_HOP_BYTES, TABLE_MAINTENANCE_INTERVAL,
};
pub use join::MAX_CONTACTS_PER_MESSAGE;
pub use kbr::{Forward, Kbr, NoServices, RouteInfo, Service, Upcalls, Via};
pub use leafset::{LeafSet, Side};
pub use limits::MAX_TRACKED_ADDRESSES;
pub use message::{
    AppId, AppMessage, Envelope, JoinReply, Measured, OverlayMessage, RoutedBody, StateSnapshot,
    TraceHop,
};
pub use neighbourhood::NeighbourhoodSet;
pub use overlay::{Admission, AdmitAll, FailureCause, Output, Overlay, OverlayEvent, Stats};
pub use peer::Peer;
pub use routing::NextHop;
pub use secure::{
    failure_test, Density, Redundancy, SecureRouteReport, DEFAULT_GAMMA, MAX_SECURE_ROUTES,
};
pub use table::{RoutingTable, SlotOutcome, SlotRule};
