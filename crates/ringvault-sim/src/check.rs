//! Network-wide invariant checkers, from global knowledge the nodes do not have: the true ring of
//! live nodes, exact leaf sets, and the true root of a key.

use ringvault_node::RouteReport;
use ringvault_overlay::Side;
use ringvault_types::Id;

use crate::Sim;

/// The live, joined nodes sorted by id: the truth invariants are checked against.
#[derive(Clone, Debug)]
pub struct Ring {
    ids: Vec<Id>,
    index: Vec<u32>,
}

impl Ring {
    /// The current ring of `sim`.
    pub fn of(sim: &Sim) -> Self {
        let mut v: Vec<(Id, u32)> = sim.alive().into_iter().map(|i| (sim.id(i), i)).collect();
        v.sort();
        Ring {
            ids: v.iter().map(|p| p.0).collect(),
            index: v.iter().map(|p| p.1).collect(),
        }
    }

    /// Live node ids, ascending.
    pub fn ids(&self) -> &[Id] {
        &self.ids
    }

    /// The live ids that belong in routing table slot (`row`, `col`) of node `owner`: those
    /// sharing its first `row` digits and then digit `col`.
    pub fn in_slot(&self, owner: &Id, row: usize, col: u8, b: u8) -> &[Id] {
        let with = owner.with_digit(row, b, col);
        let keep = ((row + 1) * b as usize).min(256);
        let mut lo = *with.as_bytes();
        let mut hi = lo;
        for bit in keep..256 {
            let mask = 1u8 << (7 - bit % 8);
            lo[bit / 8] &= !mask;
            hi[bit / 8] |= mask;
        }
        let (lo, hi) = (Id::from_bytes(lo), Id::from_bytes(hi));
        let a = self.ids.partition_point(|i| *i < lo);
        let z = self.ids.partition_point(|i| *i <= hi);
        &self.ids[a..z]
    }

    /// Number of live nodes.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True with no live node.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Position of `key`'s true root in [`Ring::ids`]: the live id numerically closest to it
    /// (ties to the smaller id).
    pub fn root_pos(&self, key: &Id) -> usize {
        let n = self.ids.len();
        assert!(n > 0, "an empty ring has no root");
        let p = self.ids.partition_point(|i| i < key);
        let (a, b) = ((p + n - 1) % n, p % n);
        if key.cmp_closeness(&self.ids[a], &self.ids[b]).is_le() {
            a
        } else {
            b
        }
    }

    /// The true root of `key`.
    pub fn root(&self, key: &Id) -> Id {
        self.ids[self.root_pos(key)]
    }

    /// The node index of the true root of `key`.
    pub fn root_node(&self, key: &Id) -> u32 {
        self.index[self.root_pos(key)]
    }

    /// The `k` live ids closest to `key`, closest first.
    pub fn closest(&self, key: &Id, k: usize) -> Vec<Id> {
        let n = self.ids.len();
        let k = k.min(n);
        let p = self.ids.partition_point(|i| i < key);
        let mut cands: Vec<Id> = (0..k)
            .flat_map(|d| [self.ids[(p + d) % n], self.ids[(p + 2 * n - 1 - d) % n]])
            .collect();
        cands.sort_by(|a, b| key.cmp_closeness(a, b));
        cands.dedup();
        cands.truncate(k);
        cands
    }

    /// Node index of the live node with this id.
    pub fn node_of(&self, id: &Id) -> Option<u32> {
        self.ids.binary_search(id).ok().map(|p| self.index[p])
    }
}

/// The true leaf set of the node at `pos` of the ring `sorted` (every live id, ascending) with
/// leaf sets of `l`: its `l / 2` neighbours clockwise and counter-clockwise, nearest first.
pub fn true_leaf_set(sorted: &[Id], pos: usize, l: usize) -> (Vec<Id>, Vec<Id>) {
    let n = sorted.len();
    let k = (l / 2).min(n.saturating_sub(1));
    let cw = (1..=k).map(|d| sorted[(pos + d) % n]).collect();
    let ccw = (1..=k).map(|d| sorted[(pos + n - d) % n]).collect();
    (cw, ccw)
}

/// Live nodes whose leaf set differs from the true L/2 + L/2 neighbours, each described.
pub fn wrong_leaf_sets(sim: &Sim) -> Vec<String> {
    let ring = Ring::of(sim);
    let ids = ring.ids();
    let mut wrong = Vec::new();
    for (pos, id) in ids.iter().enumerate() {
        let i = ring.index[pos];
        let ls = sim.nodes[i as usize].node.overlay().leaf_set();
        let (want_cw, want_ccw) = true_leaf_set(ids, pos, sim.cfg.overlay.leaf_set_size);
        let got_cw: Vec<Id> = ls.side(Side::Cw).iter().map(|p| p.id()).collect();
        let got_ccw: Vec<Id> = ls.side(Side::Ccw).iter().map(|p| p.id()).collect();
        if got_cw != want_cw || got_ccw != want_ccw {
            let short = |v: &[Id]| v.iter().map(|i| i.short()).collect::<Vec<_>>();
            wrong.push(format!(
                "node {} has cw {:?} ccw {:?}, wants cw {:?} ccw {:?}",
                id.short(),
                short(&got_cw),
                short(&got_ccw),
                short(&want_cw),
                short(&want_ccw),
            ));
        }
    }
    wrong
}

/// Whether a route ended at the true root of its key among the live nodes.
pub fn reached_true_root(ring: &Ring, report: &RouteReport) -> bool {
    ring.root(&report.key) == report.root.id
}

/// Routing table rows [`table_quality`] judges (rows beyond are empty below a million nodes).
pub const ROWS: usize = 4;

/// How good the routing tables of a network are.
pub struct Quality {
    /// Per row: mean entries that are not the proximity-closest live candidate for their slot.
    pub worse: Vec<f64>,
    /// Per row: mean empty slots some live node could fill.
    pub empty: Vec<f64>,
    /// Mean entries not the closest (all rows), per tenth of the nodes in join order: tells
    /// whether early joiners (whose tables later joiners rarely tell about themselves) or the
    /// join itself account for what is not the closest.
    pub worse_by_join_decile: Vec<f64>,
}

/// How far every live node's routing table is from the proximity-best one, rows 0 to
/// [`ROWS`] - 1.
pub fn table_quality(sim: &Sim, ring: &Ring, b: u8) -> Quality {
    let ids = ring.ids();
    let cols = 1u8 << b;
    let (mut worse, mut empty) = (vec![0u64; ROWS], vec![0u64; ROWS]);
    let max_index = sim.nodes.len().max(1);
    let (mut by_decile, mut in_decile) = (vec![0u64; 10], vec![0u64; 10]);
    for &me_id in ids {
        let me = ring.node_of(&me_id).expect("in the ring");
        let decile = me as usize * 10 / max_index;
        in_decile[decile] += 1;
        let table = sim.nodes[me as usize].node.overlay().routing_table();
        for row in 0..ROWS {
            for col in 0..cols {
                if col == me_id.digit(row, b) {
                    continue;
                }
                let in_slot = ring.in_slot(&me_id, row, col, b);
                if in_slot.is_empty() {
                    continue;
                }
                match table.get(row, col as usize) {
                    None => empty[row] += 1,
                    Some(p) => {
                        let Some(occ) = sim.index_of(&p.contact) else {
                            continue;
                        };
                        let d = sim.distance(me, occ);
                        let better = in_slot.iter().any(|c| {
                            let j = ring.node_of(c).expect("in the ring");
                            sim.distance(me, j) < d
                        });
                        worse[row] += better as u64;
                        by_decile[decile] += better as u64;
                    }
                }
            }
        }
    }
    let n = ids.len().max(1) as f64;
    Quality {
        worse: worse
            .iter()
            .map(|&w| crate::report::r6(w as f64 / n))
            .collect(),
        empty: empty
            .iter()
            .map(|&e| crate::report::r6(e as f64 / n))
            .collect(),
        worse_by_join_decile: by_decile
            .iter()
            .zip(&in_decile)
            .map(|(&w, &k)| crate::report::r6(w as f64 / k.max(1) as f64))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn root_and_closest_agree_with_a_linear_scan_including_wrap_around() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for n in [1usize, 2, 3, 17, 200] {
            let mut ids: Vec<Id> = (0..n).map(|_| Id::from_bytes(rng.gen())).collect();
            ids.sort();
            let ring = Ring {
                ids: ids.clone(),
                index: (0..n as u32).collect(),
            };
            let mut keys: Vec<Id> = (0..300).map(|_| Id::from_bytes(rng.gen())).collect();
            keys.extend([Id::ZERO, Id::MAX, ids[0], ids[n - 1]]);
            for key in keys {
                let mut truth = ids.clone();
                truth.sort_by(|a, b| key.cmp_closeness(a, b));
                assert_eq!(ring.root(&key), truth[0]);
                let k = 5.min(n);
                assert_eq!(ring.closest(&key, 5), truth[..k].to_vec());
            }
        }
    }
}
