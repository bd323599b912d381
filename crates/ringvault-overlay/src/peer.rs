//! A known node and what we measured of it.

use ringvault_types::{Contact, Duration, Id};

/// A node in one of the overlay's tables, with its proximity when measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// How to reach it.
    pub contact: Contact,
    /// Measured proximity (round-trip time, or the simulator's distance); `None` until probed.
    pub rtt: Option<Duration>,
}

impl Peer {
    /// A peer whose proximity is not yet known.
    pub fn unmeasured(contact: Contact) -> Self {
        Peer { contact, rtt: None }
    }

    /// The peer's id.
    pub fn id(&self) -> Id {
        self.contact.id
    }
}
