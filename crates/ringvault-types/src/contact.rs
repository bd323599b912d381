//! How to reach a node: its id and its network address.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

use crate::Id;

/// A node's id together with the address it listens on.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Contact {
    /// The node's id.
    pub id: Id,
    /// The node's transport address (UDP for QUIC; a fabricated loopback address in simulation).
    pub addr: SocketAddr,
}

impl Contact {
    /// A contact from its parts.
    pub const fn new(id: Id, addr: SocketAddr) -> Self {
        Contact { id, addr }
    }
}

impl fmt::Debug for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id.short(), self.addr)
    }
}
