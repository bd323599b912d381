//! Latency models: where nodes sit and how long a message takes between two of them.
//!
//! Two models, as in the Pastry papers:
//! - **Euclidean**: every node at a uniform random point of the plane [0,1000] x [0,1000];
//!   proximity and one-way delay are the Euclidean distance, at [`US_PER_UNIT`] microseconds per
//!   unit of distance (no queueing).
//! - **Transit-stub** (GT-ITM style): a router graph of transit domains and stub domains; each
//!   node hangs off a random stub router by an access link; delay is the shortest path. The
//!   generator's parameters are [`TransitStubParams`].

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use ringvault_types::Duration;
use serde::Serialize;

/// One-way delay per unit of plane distance in the Euclidean model (the plane is 1000 x 1000, so
/// the longest delay is about 28 ms).
pub const US_PER_UNIT: f64 = 20.0;

/// Which latency model to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyKind {
    /// Uniform points on the plane [0,1000]^2, delay = distance.
    Euclidean,
    /// Transit-stub router graph, delay = shortest path.
    TransitStub,
}

/// Parameters of the transit-stub generator. Delays are one-way, in microseconds; every range is
/// drawn uniformly per link.
#[derive(Clone, Debug, Serialize)]
pub struct TransitStubParams {
    /// Number of transit domains.
    pub transit_domains: usize,
    /// Routers per transit domain.
    pub transit_routers: usize,
    /// Stub domains attached to each transit router.
    pub stubs_per_transit: usize,
    /// Routers per stub domain.
    pub stub_routers: usize,
    /// Extra random links inside a domain, per router, on top of the ring that keeps it connected.
    pub extra_links_per_router: f64,
    /// Delay of a link between two transit domains.
    pub inter_transit_us: (u64, u64),
    /// Delay of a link inside a transit domain.
    pub intra_transit_us: (u64, u64),
    /// Delay of the link from a stub domain to its transit router.
    pub stub_uplink_us: (u64, u64),
    /// Delay of a link inside a stub domain.
    pub intra_stub_us: (u64, u64),
    /// Delay of a node's access link to its stub router.
    pub access_us: u64,
}

impl Default for TransitStubParams {
    /// 6 transit domains of 8 routers, 4 stub domains of 8 routers per transit router: 48 transit
    /// routers, 192 stub domains, 1,584 routers in all.
    fn default() -> Self {
        TransitStubParams {
            transit_domains: 6,
            transit_routers: 8,
            stubs_per_transit: 4,
            stub_routers: 8,
            extra_links_per_router: 0.5,
            inter_transit_us: (20_000, 50_000),
            intra_transit_us: (5_000, 20_000),
            stub_uplink_us: (2_000, 10_000),
            intra_stub_us: (500, 3_000),
            access_us: 500,
        }
    }
}

/// The router graph of the transit-stub model with all-pairs shortest paths.
#[derive(Debug)]
pub struct TransitStub {
    /// Generator parameters.
    pub params: TransitStubParams,
    /// Number of routers.
    routers: usize,
    /// Number of distinct router pairs joined by a link.
    links: usize,
    /// Stub routers nodes may attach to.
    stub_routers: Vec<u32>,
    /// `dist[a * routers + b]`: shortest-path delay between routers, microseconds.
    dist: Vec<u32>,
    /// `pred[a * routers + b]`: the router before `b` on the shortest path from `a` (`b` itself
    /// when `b == a`); the paths from one source form its shortest-path tree.
    pred: Vec<u16>,
}

impl TransitStub {
    /// Generates the router graph from `params` with `rng`.
    pub fn generate(params: TransitStubParams, rng: &mut ChaCha8Rng) -> Self {
        let mut edges: Vec<Vec<(u32, u32)>> = Vec::new();
        let add_router = |edges: &mut Vec<Vec<(u32, u32)>>| {
            edges.push(Vec::new());
            (edges.len() - 1) as u32
        };
        fn link(edges: &mut [Vec<(u32, u32)>], a: u32, b: u32, d: u32) {
            edges[a as usize].push((b, d));
            edges[b as usize].push((a, d));
        }
        let draw = |rng: &mut ChaCha8Rng, (lo, hi): (u64, u64)| rng.gen_range(lo..=hi) as u32;
        // A connected domain: a ring plus random chords.
        let domain = |edges: &mut Vec<Vec<(u32, u32)>>,
                      rng: &mut ChaCha8Rng,
                      members: &[u32],
                      range: (u64, u64),
                      extra: f64| {
            let n = members.len();
            if n > 1 {
                for i in 0..n {
                    if n == 2 && i == 1 {
                        break;
                    }
                    let d = draw(rng, range);
                    link(edges, members[i], members[(i + 1) % n], d);
                }
                let chords = (extra * n as f64).round() as usize;
                for _ in 0..chords {
                    let a = members[rng.gen_range(0..n)];
                    let b = members[rng.gen_range(0..n)];
                    if a != b {
                        let d = draw(rng, range);
                        link(edges, a, b, d);
                    }
                }
            }
        };
        let mut transit: Vec<Vec<u32>> = Vec::new();
        let mut stub_routers = Vec::new();
        for _ in 0..params.transit_domains {
            let members: Vec<u32> = (0..params.transit_routers)
                .map(|_| add_router(&mut edges))
                .collect();
            domain(
                &mut edges,
                rng,
                &members,
                params.intra_transit_us,
                params.extra_links_per_router,
            );
            for &t in &members {
                for _ in 0..params.stubs_per_transit {
                    let stub: Vec<u32> = (0..params.stub_routers)
                        .map(|_| add_router(&mut edges))
                        .collect();
                    domain(
                        &mut edges,
                        rng,
                        &stub,
                        params.intra_stub_us,
                        params.extra_links_per_router,
                    );
                    let gateway = stub[rng.gen_range(0..stub.len())];
                    let d = draw(rng, params.stub_uplink_us);
                    link(&mut edges, t, gateway, d);
                    stub_routers.extend_from_slice(&stub);
                }
            }
            transit.push(members);
        }
        // Transit domains: a ring of domains plus random chords, between random routers.
        let td = transit.len();
        for i in 0..td {
            let j = (i + 1) % td;
            if i != j && !(td == 2 && i == 1) {
                let a = transit[i][rng.gen_range(0..transit[i].len())];
                let b = transit[j][rng.gen_range(0..transit[j].len())];
                let d = draw(rng, params.inter_transit_us);
                link(&mut edges, a, b, d);
            }
        }
        for _ in 0..td {
            let (i, j) = (rng.gen_range(0..td), rng.gen_range(0..td));
            if i != j {
                let a = transit[i][rng.gen_range(0..transit[i].len())];
                let b = transit[j][rng.gen_range(0..transit[j].len())];
                let d = draw(rng, params.inter_transit_us);
                link(&mut edges, a, b, d);
            }
        }
        let routers = edges.len();
        let links = edges
            .iter()
            .enumerate()
            .flat_map(|(a, out)| {
                out.iter()
                    .map(move |&(b, _)| ((a as u32).min(b), (a as u32).max(b)))
            })
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        assert!(
            routers <= u16::MAX as usize + 1,
            "router indices must fit the predecessor matrix"
        );
        let mut dist = vec![u32::MAX; routers * routers];
        let mut pred = vec![0u16; routers * routers];
        for s in 0..routers {
            let span = s * routers..(s + 1) * routers;
            dijkstra(&edges, s, &mut dist[span.clone()], &mut pred[span]);
        }
        TransitStub {
            params,
            routers,
            stub_routers,
            links,
            dist,
            pred,
        }
    }

    /// Number of routers.
    pub fn routers(&self) -> usize {
        self.routers
    }

    /// Number of physical links (distinct router pairs joined by a link).
    pub fn links(&self) -> usize {
        self.links
    }

    /// A random stub router for a new node.
    pub fn random_stub(&self, rng: &mut ChaCha8Rng) -> u32 {
        self.stub_routers[rng.gen_range(0..self.stub_routers.len())]
    }

    /// One-way delay between two routers, microseconds.
    pub fn router_delay(&self, a: u32, b: u32) -> u64 {
        self.dist[a as usize * self.routers + b as usize] as u64
    }

    /// The routers a packet from router `a` to router `b` crosses on the shortest path, `a`
    /// first and `b` last (just `[a]` when `a == b`). Consecutive routers are the physical
    /// links it uses; the paths from one `a` to every `b` form `a`'s shortest-path tree, the
    /// tree IP multicast from `a` would use.
    pub fn router_path(&self, a: u32, b: u32) -> Vec<u32> {
        let row = &self.pred[a as usize * self.routers..(a as usize + 1) * self.routers];
        let mut path = vec![b];
        let mut at = b;
        while at != a {
            at = row[at as usize] as u32;
            path.push(at);
        }
        path.reverse();
        path
    }
}

/// Shortest paths from `s`: delays into `out`, each router's predecessor into `pred`.
fn dijkstra(edges: &[Vec<(u32, u32)>], s: usize, out: &mut [u32], pred: &mut [u16]) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut heap = BinaryHeap::new();
    out[s] = 0;
    pred[s] = s as u16;
    heap.push(Reverse((0u32, s as u32)));
    while let Some(Reverse((d, v))) = heap.pop() {
        if d > out[v as usize] {
            continue;
        }
        for &(w, len) in &edges[v as usize] {
            let nd = d.saturating_add(len);
            if nd < out[w as usize] {
                out[w as usize] = nd;
                pred[w as usize] = v as u16;
                heap.push(Reverse((nd, w)));
            }
        }
    }
}

/// Where one node sits.
#[derive(Clone, Copy, Debug)]
pub enum Place {
    /// A point of the plane.
    Point(f64, f64),
    /// Attached to a stub router.
    Router(u32),
}

/// The latency model of a run.
#[derive(Debug)]
pub enum Topology {
    /// The plane [0,1000]^2.
    Euclidean,
    /// A transit-stub router graph.
    TransitStub(Box<TransitStub>),
}

impl Topology {
    /// A new topology of `kind`, generated from `rng`.
    pub fn new(kind: TopologyKind, rng: &mut ChaCha8Rng) -> Self {
        match kind {
            TopologyKind::Euclidean => Topology::Euclidean,
            TopologyKind::TransitStub => Topology::TransitStub(Box::new(TransitStub::generate(
                TransitStubParams::default(),
                rng,
            ))),
        }
    }

    /// The kind of this topology.
    pub fn kind(&self) -> TopologyKind {
        match self {
            Topology::Euclidean => TopologyKind::Euclidean,
            Topology::TransitStub(_) => TopologyKind::TransitStub,
        }
    }

    /// A random place for a new node.
    pub fn place(&self, rng: &mut ChaCha8Rng) -> Place {
        match self {
            Topology::Euclidean => {
                Place::Point(rng.gen_range(0.0..1000.0), rng.gen_range(0.0..1000.0))
            }
            Topology::TransitStub(ts) => Place::Router(ts.random_stub(rng)),
        }
    }

    /// One-way delay between two places, in (fractional) microseconds: the proximity metric.
    pub fn distance(&self, a: Place, b: Place) -> f64 {
        match (self, a, b) {
            (_, Place::Point(x1, y1), Place::Point(x2, y2)) => {
                ((x1 - x2).powi(2) + (y1 - y2).powi(2)).sqrt() * US_PER_UNIT
            }
            (Topology::TransitStub(ts), Place::Router(r1), Place::Router(r2)) => {
                (2 * ts.params.access_us + ts.router_delay(r1, r2)) as f64
            }
            _ => unreachable!("places come from the topology"),
        }
    }

    /// One-way delay between two places, at least one microsecond.
    pub fn delay(&self, a: Place, b: Place) -> Duration {
        Duration::from_micros(self.distance(a, b) as u64 + 1)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn router_paths_add_up_to_the_shortest_path_delay_and_share_the_source_tree() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let ts = TransitStub::generate(TransitStubParams::default(), &mut rng);
        for _ in 0..300 {
            let a = rng.gen_range(0..ts.routers() as u32);
            let b = rng.gen_range(0..ts.routers() as u32);
            let path = ts.router_path(a, b);
            assert_eq!((path[0], *path.last().unwrap()), (a, b));
            let sum: u64 = path.windows(2).map(|w| ts.router_delay(w[0], w[1])).sum();
            assert_eq!(sum, ts.router_delay(a, b));
            // Every prefix is itself the path from `a`: one tree per source.
            let mid = path.len() / 2;
            assert_eq!(ts.router_path(a, path[mid]), path[..=mid].to_vec());
        }
        assert_eq!(ts.router_path(3, 3), vec![3]);
    }
}
