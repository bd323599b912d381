//! Finding the joined node nearest to a newcomer (its bootstrap), fast at 100,000 nodes: a grid
//! on the plane, or per-router lists on the transit-stub graph.

use std::collections::BTreeMap;

use crate::topology::{Place, Topology};

/// Grid cells per side of the plane.
const CELLS: usize = 64;
const CELL: f64 = 1000.0 / CELLS as f64;

/// A spatial index of the nodes eligible as bootstraps.
#[derive(Debug, Default)]
pub(crate) struct NearestIndex {
    cells: Vec<Vec<u32>>,
    by_router: BTreeMap<u32, Vec<u32>>,
    /// Routers sorted by distance from a router, computed on first use.
    router_order: BTreeMap<u32, Vec<u32>>,
}

fn cell_of(x: f64) -> usize {
    ((x / CELL) as usize).min(CELLS - 1)
}

impl NearestIndex {
    pub(crate) fn insert(&mut self, node: u32, place: Place) {
        match place {
            Place::Point(x, y) => {
                if self.cells.is_empty() {
                    self.cells = vec![Vec::new(); CELLS * CELLS];
                }
                self.cells[cell_of(y) * CELLS + cell_of(x)].push(node);
            }
            Place::Router(r) => self.by_router.entry(r).or_default().push(node),
        }
    }

    pub(crate) fn remove(&mut self, node: u32, place: Place) {
        let list = match place {
            Place::Point(x, y) => {
                if self.cells.is_empty() {
                    return;
                }
                &mut self.cells[cell_of(y) * CELLS + cell_of(x)]
            }
            Place::Router(r) => match self.by_router.get_mut(&r) {
                Some(l) => l,
                None => return,
            },
        };
        list.retain(|&n| n != node);
    }

    /// The indexed node nearest to `place` (ties to the lowest index), if any.
    pub(crate) fn nearest(
        &mut self,
        topo: &Topology,
        place: Place,
        places: &[Place],
    ) -> Option<u32> {
        match (topo, place) {
            (Topology::Euclidean, Place::Point(x, y)) => {
                self.nearest_point(topo, place, x, y, places)
            }
            (Topology::TransitStub(ts), Place::Router(r)) => {
                let order = self.router_order.entry(r).or_insert_with(|| {
                    let mut v: Vec<u32> = (0..ts.routers() as u32).collect();
                    v.sort_by_key(|&o| (ts.router_delay(r, o), o));
                    v
                });
                // Access links all have the same delay, so the nearest router with a node wins.
                for o in order.iter() {
                    if let Some(list) = self.by_router.get(o) {
                        if let Some(&n) = list.iter().min() {
                            return Some(n);
                        }
                    }
                }
                None
            }
            _ => None,
        }
    }

    fn nearest_point(
        &self,
        topo: &Topology,
        place: Place,
        x: f64,
        y: f64,
        places: &[Place],
    ) -> Option<u32> {
        if self.cells.is_empty() {
            return None;
        }
        let (cx, cy) = (cell_of(x) as i64, cell_of(y) as i64);
        let mut best: Option<(f64, u32)> = None;
        for radius in 0..CELLS as i64 {
            // Cells not yet searched (ring `radius` and beyond) are more than (radius - 1) cells
            // away along one axis.
            if let Some((d, _)) = best {
                let bound = (radius - 1).max(0) as f64 * CELL * crate::topology::US_PER_UNIT;
                if d <= bound {
                    break;
                }
            }
            for gy in (cy - radius)..=(cy + radius) {
                for gx in (cx - radius)..=(cx + radius) {
                    let on_ring = (gy - cy).abs() == radius || (gx - cx).abs() == radius;
                    if !on_ring || gx < 0 || gy < 0 || gx >= CELLS as i64 || gy >= CELLS as i64 {
                        continue;
                    }
                    for &n in &self.cells[gy as usize * CELLS + gx as usize] {
                        let d = topo.distance(place, places[n as usize]);
                        if best.is_none_or(|(bd, bn)| d < bd || (d == bd && n < bn)) {
                            best = Some((d, n));
                        }
                    }
                }
            }
        }
        best.map(|(_, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn nearest_is_the_brute_force_nearest_on_both_models() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for kind in [
            crate::TopologyKind::Euclidean,
            crate::TopologyKind::TransitStub,
        ] {
            let topo = Topology::new(kind, &mut rng);
            let places: Vec<Place> = (0..600).map(|_| topo.place(&mut rng)).collect();
            let mut index = NearestIndex::default();
            for (i, p) in places.iter().enumerate().take(300) {
                index.insert(i as u32, *p);
            }
            // Remove some, so removal is exercised too.
            for i in (0..300).step_by(7) {
                index.remove(i, places[i as usize]);
            }
            let member = |i: usize| i < 300 && !i.is_multiple_of(7);
            for q in 300..600 {
                let got = index.nearest(&topo, places[q], &places).unwrap();
                let best = (0..300)
                    .filter(|&i| member(i))
                    .map(|i| topo.distance(places[q], places[i]))
                    .fold(f64::MAX, f64::min);
                assert!(member(got as usize));
                assert_eq!(topo.distance(places[q], places[got as usize]), best);
            }
        }
    }
}
