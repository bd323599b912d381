//! The prefix routing table: row r holds nodes sharing exactly r digits with the owner, column d
//! of that row a node whose digit r is d.

use ringvault_types::{Contact, Id};

use crate::Peer;

/// How a slot chooses among candidates. The same table type serves both of the overlay's tables:
/// the ordinary one (proximity) and, later, the constrained table of secure routing whose slot
/// contents are fixed by a public rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRule {
    /// Keep the candidate closest by measured proximity (Pastry's proximity neighbour selection).
    Proximity,
    /// Keep the candidate numerically closest to the slot's point: the owner's id with digit r
    /// replaced by d (the constrained table of secure routing). Checkable by anyone.
    ClosestToPoint,
}

/// What became of a candidate offered to a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotOutcome {
    /// The candidate is the owner itself, or already in its slot (proximity refreshed).
    Unchanged,
    /// The slot was empty and now holds the candidate.
    Filled,
    /// The candidate replaced this previous occupant.
    Replaced(Contact),
    /// The slot keeps its occupant.
    Kept,
    /// The slot is taken and the rule needs the candidate's proximity to decide: probe it.
    NeedsProximity,
}

/// A routing table with `2^b` columns per row; rows exist only once something lands in them.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    me: Id,
    b: u8,
    rule: SlotRule,
    rows: Vec<Box<[Option<Peer>]>>,
}

impl RoutingTable {
    /// An empty table for `me` with digits of `b` bits.
    pub fn new(me: Id, b: u8, rule: SlotRule) -> Self {
        RoutingTable {
            me,
            b,
            rule,
            rows: Vec::new(),
        }
    }

    /// Bits per digit.
    pub fn b(&self) -> u8 {
        self.b
    }

    /// The row and column `id` belongs in, or `None` for the owner's own id.
    pub fn slot_of(&self, id: &Id) -> Option<(usize, usize)> {
        if *id == self.me {
            return None;
        }
        let row = self.me.shared_prefix_len(id, self.b);
        Some((row, id.digit(row, self.b) as usize))
    }

    /// The slot's point for [`SlotRule::ClosestToPoint`]: the owner's id with digit `row` set to
    /// `col`.
    pub fn slot_point(&self, row: usize, col: usize) -> Id {
        self.me.with_digit(row, self.b, col as u8)
    }

    /// The entry at (row, col), if any.
    pub fn get(&self, row: usize, col: usize) -> Option<&Peer> {
        self.rows
            .get(row)
            .and_then(|r| r.get(col))
            .and_then(|s| s.as_ref())
    }

    /// Number of rows materialised (one past the highest row ever used).
    pub fn num_rows(&self) -> usize {
        self.rows.len()
    }

    /// Entries of one row.
    pub fn row(&self, row: usize) -> impl Iterator<Item = &Peer> {
        self.rows
            .get(row)
            .into_iter()
            .flat_map(|r| r.iter().flatten())
    }

    /// Every entry, row by row.
    pub fn entries(&self) -> impl Iterator<Item = &Peer> {
        self.rows.iter().flat_map(|r| r.iter().flatten())
    }

    /// Number of entries in each row.
    pub fn fill(&self) -> Vec<usize> {
        self.rows
            .iter()
            .map(|r| r.iter().filter(|s| s.is_some()).count())
            .collect()
    }

    /// Whether `id` is in its slot.
    pub fn contains(&self, id: &Id) -> bool {
        self.slot_of(id)
            .and_then(|(r, c)| self.get(r, c))
            .is_some_and(|p| p.id() == *id)
    }

    /// Offers `candidate` to its slot under the table's rule.
    pub fn insert(&mut self, candidate: Peer) -> SlotOutcome {
        let Some((row, col)) = self.slot_of(&candidate.id()) else {
            return SlotOutcome::Unchanged;
        };
        let cols = 1usize << self.b;
        while self.rows.len() <= row {
            self.rows.push(vec![None; cols].into_boxed_slice());
        }
        let slot = &mut self.rows[row][col];
        let Some(current) = slot else {
            *slot = Some(candidate);
            return SlotOutcome::Filled;
        };
        if current.id() == candidate.id() {
            if candidate.rtt.is_some() {
                current.rtt = candidate.rtt;
            }
            return SlotOutcome::Unchanged;
        }
        let better = match self.rule {
            SlotRule::Proximity => match (candidate.rtt, current.rtt) {
                (Some(c), Some(o)) => c < o,
                (None, _) => return SlotOutcome::NeedsProximity,
                // The occupant was never measured: a measured candidate is preferred.
                (Some(_), None) => true,
            },
            SlotRule::ClosestToPoint => {
                let point = self.me.with_digit(row, self.b, col as u8);
                point.is_closer(&candidate.id(), &current.id())
            }
        };
        if better {
            let old = current.contact;
            *slot = Some(candidate);
            SlotOutcome::Replaced(old)
        } else {
            SlotOutcome::Kept
        }
    }

    /// Updates the proximity of `id` if it is in the table.
    pub fn set_rtt(&mut self, id: &Id, rtt: ringvault_types::Duration) {
        if let Some((r, c)) = self.slot_of(id) {
            if let Some(Some(p)) = self.rows.get_mut(r).map(|row| &mut row[c]) {
                if p.id() == *id {
                    p.rtt = Some(rtt);
                }
            }
        }
    }

    /// Removes `id`; returns its slot when it was there.
    pub fn remove(&mut self, id: &Id) -> Option<(usize, usize)> {
        let (r, c) = self.slot_of(id)?;
        let slot = self.rows.get_mut(r).map(|row| &mut row[c])?;
        if slot.is_some_and(|p| p.id() == *id) {
            *slot = None;
            Some((r, c))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringvault_types::Duration;
    use std::net::{Ipv4Addr, SocketAddr};

    fn peer(id: Id, rtt: Option<u64>) -> Peer {
        Peer {
            contact: Contact::new(id, SocketAddr::from((Ipv4Addr::LOCALHOST, 1))),
            rtt: rtt.map(Duration::from_micros),
        }
    }

    fn arb_id() -> impl Strategy<Value = Id> {
        any::<[u8; 32]>().prop_map(Id::from_bytes)
    }

    proptest! {
        #[test]
        fn every_entry_sits_in_the_slot_its_prefix_dictates(
            me in arb_id(), ids in proptest::collection::vec((arb_id(), any::<u16>()), 0..200), b in 1u8..=5
        ) {
            let mut t = RoutingTable::new(me, b, SlotRule::Proximity);
            for (id, rtt) in &ids { t.insert(peer(*id, Some(*rtt as u64))); }
            for r in 0..t.num_rows() {
                for c in 0..(1usize << b) {
                    if let Some(p) = t.get(r, c) {
                        prop_assert_eq!(me.shared_prefix_len(&p.id(), b), r);
                        prop_assert_eq!(p.id().digit(r, b) as usize, c);
                        prop_assert_ne!(c, me.digit(r, b) as usize);
                        // Proximity rule: no candidate for this slot is closer than the occupant.
                        for (id, rtt) in &ids {
                            if t.slot_of(id) == Some((r, c)) {
                                prop_assert!(p.rtt.unwrap() <= Duration::from_micros(*rtt as u64));
                            }
                        }
                    }
                }
            }
        }

        #[test]
        fn constrained_slots_hold_the_id_closest_to_their_point(
            me in arb_id(), ids in proptest::collection::vec(arb_id(), 0..200)
        ) {
            let mut t = RoutingTable::new(me, 4, SlotRule::ClosestToPoint);
            for id in &ids { t.insert(peer(*id, None)); }
            for id in &ids {
                if let Some((r, c)) = t.slot_of(id) {
                    let occ = t.get(r, c).unwrap().id();
                    let point = t.slot_point(r, c);
                    prop_assert!(!point.is_closer(id, &occ));
                }
            }
        }
    }

    #[test]
    fn unmeasured_candidate_for_a_taken_slot_asks_for_a_probe() {
        let me = Id::ZERO;
        let a = Id::from_bytes([0x10; 32]);
        let b = Id::from_bytes([0x11; 32]);
        let mut t = RoutingTable::new(me, 4, SlotRule::Proximity);
        assert_eq!(t.insert(peer(a, Some(50))), SlotOutcome::Filled);
        assert_eq!(t.insert(peer(b, None)), SlotOutcome::NeedsProximity);
        assert_eq!(t.insert(peer(b, Some(60))), SlotOutcome::Kept);
        assert_eq!(
            t.insert(peer(b, Some(40))),
            SlotOutcome::Replaced(peer(a, None).contact)
        );
        assert_eq!(t.remove(&b), Some((0, 1)));
        assert_eq!(t.remove(&b), None);
        assert_eq!(t.insert(peer(me, Some(1))), SlotOutcome::Unchanged);
    }
}
