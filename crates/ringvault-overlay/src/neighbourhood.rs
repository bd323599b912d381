//! The neighbourhood set: the M nodes closest by proximity. Not used to route; used to keep
//! locality good during join and repair.

use ringvault_types::{Duration, Id};

use crate::Peer;

/// The M proximity-closest known nodes, nearest first. Only measured peers are kept.
#[derive(Clone, Debug)]
pub struct NeighbourhoodSet {
    cap: usize,
    peers: Vec<Peer>,
}

impl NeighbourhoodSet {
    /// An empty set holding at most `cap` nodes.
    pub fn new(cap: usize) -> Self {
        NeighbourhoodSet {
            cap,
            peers: Vec::new(),
        }
    }

    /// Offers a peer; unmeasured peers are ignored. Returns whether the set changed.
    pub fn insert(&mut self, peer: Peer) -> bool {
        let Some(rtt) = peer.rtt else { return false };
        if let Some(i) = self.peers.iter().position(|p| p.id() == peer.id()) {
            self.peers.remove(i);
        }
        let at = self
            .peers
            .partition_point(|p| p.rtt.is_some_and(|r| r <= rtt));
        if at >= self.cap {
            return false;
        }
        self.peers.insert(at, peer);
        self.peers.truncate(self.cap);
        true
    }

    /// Whether a peer `rtt` away (or farther) could still enter: the set is not full, or its
    /// farthest member is farther.
    pub fn could_admit(&self, rtt: Duration) -> bool {
        self.peers.len() < self.cap
            || self
                .peers
                .last()
                .and_then(|p| p.rtt)
                .is_none_or(|r| r > rtt)
    }

    /// Removes `id`; true when it was a member.
    pub fn remove(&mut self, id: &Id) -> bool {
        let before = self.peers.len();
        self.peers.retain(|p| p.id() != *id);
        before != self.peers.len()
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &Id) -> bool {
        self.peers.iter().any(|p| p.id() == *id)
    }

    /// Members, nearest first.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringvault_types::{Contact, Duration};
    use std::net::{Ipv4Addr, SocketAddr};

    #[test]
    fn keeps_the_m_nearest_sorted() {
        let mut n = NeighbourhoodSet::new(3);
        for (i, rtt) in [50u64, 10, 40, 30, 20].iter().enumerate() {
            n.insert(Peer {
                contact: Contact::new(
                    Id::hash(&[i as u8]),
                    SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
                ),
                rtt: Some(Duration::from_micros(*rtt)),
            });
        }
        let rtts: Vec<u64> = n
            .peers()
            .iter()
            .map(|p| p.rtt.unwrap().as_micros())
            .collect();
        assert_eq!(rtts, vec![10, 20, 30]);
        assert!(!n.insert(Peer::unmeasured(Contact::new(
            Id::ZERO,
            SocketAddr::from((Ipv4Addr::LOCALHOST, 1))
        ))));
        assert!(n.remove(&Id::hash(&[1])));
        assert_eq!(n.peers().len(), 2);
    }
}
