//! The leaf set: the L/2 numerically closest larger ids and the L/2 closest smaller ids.

use ringvault_types::{Contact, Id};

use crate::Peer;

/// The leaf set of one node. Each half is kept sorted by ring distance from the owner, nearest
/// first; in a ring of fewer than L + 1 nodes a node can sit in both halves.
#[derive(Clone, Debug)]
pub struct LeafSet {
    me: Id,
    half: usize,
    /// Clockwise side (larger ids), sorted by clockwise distance from `me`.
    cw: Vec<Peer>,
    /// Counter-clockwise side (smaller ids), sorted by counter-clockwise distance from `me`.
    ccw: Vec<Peer>,
}

/// Which side of the owner a leaf lies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Larger ids (clockwise).
    Cw,
    /// Smaller ids (counter-clockwise).
    Ccw,
}

impl LeafSet {
    /// An empty leaf set of size `l` (l/2 per side) for node `me`.
    pub fn new(me: Id, l: usize) -> Self {
        LeafSet {
            me,
            half: l / 2,
            cw: Vec::with_capacity(l / 2 + 1),
            ccw: Vec::with_capacity(l / 2 + 1),
        }
    }

    /// The owner's id.
    pub fn owner(&self) -> Id {
        self.me
    }

    /// L/2.
    pub fn half_size(&self) -> usize {
        self.half
    }

    /// One side, nearest first.
    pub fn side(&self, side: Side) -> &[Peer] {
        match side {
            Side::Cw => &self.cw,
            Side::Ccw => &self.ccw,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut Vec<Peer> {
        match side {
            Side::Cw => &mut self.cw,
            Side::Ccw => &mut self.ccw,
        }
    }

    fn dist(&self, side: Side, id: &Id) -> Id {
        match side {
            Side::Cw => self.me.cw_distance(id),
            Side::Ccw => id.cw_distance(&self.me),
        }
    }

    /// Offers `peer`. Returns the ids that left the set because of it (pushed out of both
    /// halves) and whether the peer is now a member. An existing member gets its proximity
    /// refreshed.
    pub fn insert(&mut self, peer: Peer) -> (bool, Vec<Contact>) {
        if peer.id() == self.me {
            return (false, Vec::new());
        }
        let mut added = false;
        let mut pushed_out = Vec::new();
        for side in [Side::Cw, Side::Ccw] {
            let d = self.dist(side, &peer.id());
            let half = self.half;
            // Fast rejection: a full half whose farthest member is nearer than the candidate.
            if let Some(last) = self.side(side).last() {
                if self.side(side).len() >= half && self.dist(side, &last.id()) < d {
                    continue;
                }
            }
            let found = self
                .side(side)
                .binary_search_by(|p| self.dist(side, &p.id()).cmp(&d));
            let v = self.side_mut(side);
            match found {
                Ok(i) => {
                    if peer.rtt.is_some() {
                        v[i].rtt = peer.rtt;
                    }
                }
                Err(i) if i < half => {
                    v.insert(i, peer);
                    added = true;
                    if v.len() > half {
                        let out = v.pop().expect("over capacity");
                        pushed_out.push(out.contact);
                    }
                }
                Err(_) => {}
            }
        }
        // A node pushed out of one half may still be in the other.
        pushed_out.retain(|c| !self.contains(&c.id));
        pushed_out.dedup_by_key(|c| c.id);
        (added, pushed_out)
    }

    /// Removes `id` from both halves; true when it was a member.
    pub fn remove(&mut self, id: &Id) -> bool {
        let before = self.cw.len() + self.ccw.len();
        self.cw.retain(|p| p.id() != *id);
        self.ccw.retain(|p| p.id() != *id);
        before != self.cw.len() + self.ccw.len()
    }

    /// Whether `id` is in either half.
    pub fn contains(&self, id: &Id) -> bool {
        self.cw.iter().chain(self.ccw.iter()).any(|p| p.id() == *id)
    }

    /// Looks up a member.
    pub fn get(&self, id: &Id) -> Option<&Peer> {
        self.cw
            .iter()
            .chain(self.ccw.iter())
            .find(|p| p.id() == *id)
    }

    /// Every member once, clockwise side first.
    pub fn members(&self) -> Vec<Peer> {
        self.iter().copied().collect()
    }

    /// Every member once, clockwise side first, without allocating.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> + '_ {
        let cw = &self.cw;
        cw.iter().chain(
            self.ccw
                .iter()
                .filter(move |p| !cw.iter().any(|q| q.id() == p.id())),
        )
    }

    /// Number of distinct members.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True with no members.
    pub fn is_empty(&self) -> bool {
        self.cw.is_empty() && self.ccw.is_empty()
    }

    /// True when either half has fewer than L/2 members: then (with correct state) the leaf set
    /// holds every node of the ring.
    pub fn is_partial(&self) -> bool {
        self.cw.len() < self.half || self.ccw.len() < self.half
    }

    /// Whether `key` lies within the span of the leaf set (wrap-around aware). A partial leaf set
    /// covers the whole ring, and so does one whose halves overlap (a ring of at most L nodes,
    /// where the farthest counter-clockwise leaf lies clockwise within the other half).
    pub fn covers(&self, key: &Id) -> bool {
        self.span().is_none_or(|(lo, hi)| key.in_cw_arc(&lo, &hi))
    }

    /// The arc from the farthest counter-clockwise member to the farthest clockwise one, in
    /// which this node knows every node; `None` when the leaf set covers the whole ring
    /// (partial, or its halves overlap).
    pub fn span(&self) -> Option<(Id, Id)> {
        if self.is_partial() {
            return None;
        }
        self.known_arc()
    }

    /// The arc from the farthest counter-clockwise member to the farthest clockwise one,
    /// partial halves included (a half short of L/2 only while its repair is under way in a
    /// ring larger than the leaf set); `None` when the halves overlap or one is empty: this
    /// node knows every node of the ring.
    pub fn known_arc(&self) -> Option<(Id, Id)> {
        let (lo, hi) = (self.ccw.last()?.id(), self.cw.last()?.id());
        (self.me.cw_distance(&lo) > self.me.cw_distance(&hi)).then_some((lo, hi))
    }

    /// The member or owner numerically closest to `key`, skipping `exclude`.
    pub fn closest(&self, key: &Id, exclude: Option<&Id>) -> Option<Contact> {
        self.closest_where(key, |id| Some(id) != exclude)
    }

    /// The member numerically closest to `key` among those `keep` accepts.
    pub fn closest_where(&self, key: &Id, keep: impl Fn(&Id) -> bool) -> Option<Contact> {
        let mut best: Option<Contact> = None;
        for p in self.cw.iter().chain(self.ccw.iter()) {
            if !keep(&p.id()) {
                continue;
            }
            if best.is_none_or(|b| key.is_closer(&p.id(), &b.id)) {
                best = Some(p.contact);
            }
        }
        best
    }

    /// The farthest member on `side`.
    pub fn farthest(&self, side: Side) -> Option<Peer> {
        self.side(side).last().copied()
    }

    /// The farthest member on `side` that is genuinely on that side (nearer to the owner going
    /// that way than the other way). While a side is short of members in a large ring, nodes
    /// from the far other side fill it; they are no use for repairing it.
    pub fn farthest_genuine(&self, side: Side) -> Option<Peer> {
        self.side(side)
            .iter()
            .rev()
            .find(|p| self.side_of(&p.id()) == side)
            .copied()
    }

    /// Which side `id` would go on: the side with the shorter distance.
    pub fn side_of(&self, id: &Id) -> Side {
        if self.me.cw_distance(id) <= id.cw_distance(&self.me) {
            Side::Cw
        } else {
            Side::Ccw
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn contact(id: Id) -> Contact {
        Contact::new(id, SocketAddr::from((Ipv4Addr::LOCALHOST, 1)))
    }

    fn arb_id() -> impl Strategy<Value = Id> {
        any::<[u8; 32]>().prop_map(Id::from_bytes)
    }

    proptest! {
        #[test]
        fn fewer_nodes_than_l_cover_every_key(
            me in arb_id(), ids in proptest::collection::vec(arb_id(), 1..40), key in arb_id()
        ) {
            let l = 16;
            let mut ls = LeafSet::new(me, l);
            for id in &ids { ls.insert(Peer::unmeasured(contact(*id))); }
            let mut others: Vec<Id> = ids.iter().copied().filter(|i| *i != me).collect();
            others.sort();
            others.dedup();
            if others.len() < l {
                // Every node of the ring is a leaf: the key's root is known, whatever the key.
                prop_assert!(ls.covers(&key));
                let best = others.iter().copied().chain([me]).min_by(|a, b| key.cmp_closeness(a, b));
                let got = ls.closest(&key, None).map(|c| c.id).filter(|c| key.is_closer(c, &me)).unwrap_or(me);
                prop_assert_eq!(Some(got), best);
            }
        }

        #[test]
        fn halves_stay_sorted_bounded_and_hold_the_true_neighbours(
            me in arb_id(), ids in proptest::collection::vec(arb_id(), 0..80), l in 1usize..10
        ) {
            let l = l * 2;
            let mut ls = LeafSet::new(me, l);
            for id in &ids { ls.insert(Peer::unmeasured(contact(*id))); }
            let mut all: Vec<Id> = ids.iter().copied().filter(|i| *i != me).collect();
            all.sort();
            all.dedup();
            // Truth: the l/2 nearest clockwise and counter-clockwise.
            let mut by_cw = all.clone();
            by_cw.sort_by_key(|i| me.cw_distance(i));
            let mut by_ccw = all.clone();
            by_ccw.sort_by_key(|i| i.cw_distance(&me));
            let want_cw: Vec<Id> = by_cw.into_iter().take(l / 2).collect();
            let want_ccw: Vec<Id> = by_ccw.into_iter().take(l / 2).collect();
            let got_cw: Vec<Id> = ls.side(Side::Cw).iter().map(|p| p.id()).collect();
            let got_ccw: Vec<Id> = ls.side(Side::Ccw).iter().map(|p| p.id()).collect();
            prop_assert_eq!(got_cw, want_cw);
            prop_assert_eq!(got_ccw, want_ccw);
            prop_assert_eq!(ls.is_partial(), all.len() < l / 2);
        }

        #[test]
        fn closest_member_is_the_true_closest_for_covered_keys(
            me in arb_id(), ids in proptest::collection::vec(arb_id(), 1..60), key in arb_id()
        ) {
            let mut ls = LeafSet::new(me, 8);
            for id in &ids { ls.insert(Peer::unmeasured(contact(*id))); }
            if ls.covers(&key) {
                let mut cands: Vec<Id> = ls.members().iter().map(|p| p.id()).collect();
                cands.push(me);
                let truth = cands.iter().copied().min_by(|a, b| key.cmp_closeness(a, b)).unwrap();
                let got = ls.closest(&key, None).map(|c| c.id);
                if truth == me {
                    prop_assert!(got.is_none_or(|g| key.is_closer(&me, &g)));
                } else {
                    prop_assert_eq!(got, Some(truth));
                }
            }
        }
    }

    #[test]
    fn span_crosses_the_zero_point() {
        let me = Id::ZERO;
        let mut ls = LeafSet::new(me, 2);
        let small = Id::from_bytes({
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        });
        let big = Id::MAX;
        ls.insert(Peer::unmeasured(contact(small)));
        ls.insert(Peer::unmeasured(contact(big)));
        assert!(!ls.is_partial());
        assert!(ls.covers(&Id::ZERO));
        assert!(ls.covers(&big));
        let mid = Id::from_bytes([0x80; 32]);
        assert!(!ls.covers(&mid));
        assert_eq!(ls.side_of(&small), Side::Cw);
        assert_eq!(ls.side_of(&big), Side::Ccw);
    }

    #[test]
    fn removal_and_reinsertion_restore_membership() {
        let me = Id::hash(b"me");
        let mut ls = LeafSet::new(me, 4);
        let ids: Vec<Id> = (0..10u8).map(|i| Id::hash(&[i])).collect();
        for id in &ids {
            ls.insert(Peer::unmeasured(contact(*id)));
        }
        let before = ls.members();
        let victim = before[0].id();
        assert!(ls.remove(&victim));
        assert!(!ls.contains(&victim));
        assert!(!ls.remove(&victim));
        let (added, _) = ls.insert(Peer::unmeasured(contact(victim)));
        assert!(added);
        assert_eq!(ls.members().len(), before.len());
    }
}
