//! Helpers shared by the overlay's tests.

use std::net::{Ipv4Addr, SocketAddr};

use ringvault_types::{Contact, Id};

/// A contact whose id starts with `first` then `second`, zeros after (so tests can place nodes
/// and keys on the ring by hand).
pub fn contact(first: u8, second: u8) -> Contact {
    let mut b = [0u8; 32];
    b[0] = first;
    b[1] = second;
    Contact::new(
        Id::from_bytes(b),
        SocketAddr::from((Ipv4Addr::new(127, 0, first, second), 7000)),
    )
}
