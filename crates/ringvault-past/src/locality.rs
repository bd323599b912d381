//! The density heuristic for lookups (Pastry's "locating the nearest among k nodes").
//!
//! Plain prefix routing reaches the replica set wherever the key's numerically closest node
//! happens to be, so the first replica a lookup meets is nearly random among the k. Near the
//! key, a node can do better: from its leaf set it estimates how densely node ids are spread,
//! hence how far from the key the k closest nodes lie, and among the nodes it knows within that
//! distance it forwards to the proximity-nearest. Sending to a node that turns out not to hold
//! a replica costs nothing but a hop: the lookup goes on from there.

use ringvault_overlay::Kbr;
use ringvault_types::{Contact, Id};

/// Known nodes looked at when searching for likely replica holders.
const CANDIDATES: usize = 64;

/// Mean gap between adjacent node ids as a fraction of the ring, estimated from the leaf set;
/// `None` without at least two leaves.
fn mean_gap(kbr: &dyn Kbr) -> Option<f64> {
    let me = kbr.local_contact().id;
    let leaves = kbr.neighbor_set(usize::MAX);
    if leaves.len() < 2 {
        return None;
    }
    let (mut cw, mut ccw) = (0.0f64, 0.0f64);
    for c in &leaves {
        let right = me.cw_distance(&c.id).ring_fraction();
        let left = c.id.cw_distance(&me).ring_fraction();
        if right <= left {
            cw = cw.max(right);
        } else {
            ccw = ccw.max(left);
        }
    }
    Some((cw + ccw) / leaves.len() as f64)
}

/// Where a lookup for `key` should go from here, when the density heuristic has a better
/// choice than Pastry's next hop: among the known nodes estimated to be within the `k` closest
/// to `key` and numerically closer to it than this node, the one with the smallest measured
/// proximity. Requiring each such hop to get numerically closer keeps lookups loop-free.
pub(crate) fn nearest_replica_hop(kbr: &dyn Kbr, key: &Id, k: usize) -> Option<Contact> {
    let gap = mean_gap(kbr)?;
    // The k closest nodes straddle the key: about k / 2 gaps on either side.
    let radius = gap * (k as f64 + 1.0) / 2.0;
    let me = kbr.local_contact().id;
    kbr.local_lookup(key, CANDIDATES, false)
        .into_iter()
        .filter(|c| key.is_closer(&c.id, &me))
        .filter(|c| key.ring_distance(&c.id).ring_fraction() <= radius)
        .filter_map(|c| kbr.proximity(&c.id).map(|d| (d, c)))
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)))
        .map(|(_, c)| c)
}
