//! The KBR API seen from a service, through the simulator: route/deliver, forward (rewrite,
//! redirect, stop), update, replica_set and range. Ported from the node crate's former
//! in-memory harness.

use std::sync::{Arc, Mutex};

use rand::Rng;
use ringvault_node::Service;
use ringvault_overlay::{AppId, AppMessage, Config, Forward, Kbr, RouteInfo};
use ringvault_sim::{Ring, Sim, SimConfig};
use ringvault_types::{Contact, Duration, Id, Time};

/// The node index of the live node with id `id`.
fn index(net: &Sim, id: &Id) -> usize {
    Ring::of(net).node_of(id).expect("a live node") as usize
}

const APP: AppId = 7;

#[derive(Default)]
struct Log {
    delivered: Vec<(Id, Id, Vec<u8>, u8)>, // (at, key, body, hops)
    forwarded: usize,
    updates: Vec<(Id, bool)>,
}

/// A test service: bodies starting with "stop" are stopped at the first forwarding node, bodies
/// starting with "tag" get a '+' appended at every hop.
struct Probe {
    log: Arc<Mutex<Log>>,
}

impl Service for Probe {
    fn app_id(&self) -> AppId {
        APP
    }

    fn deliver(&mut self, kbr: &mut dyn Kbr, _: Time, key: Id, msg: AppMessage, info: RouteInfo) {
        let me = kbr.local_contact().id;
        self.log
            .lock()
            .unwrap()
            .delivered
            .push((me, key, msg.body, info.hops));
    }

    fn forward(
        &mut self,
        _: &mut dyn Kbr,
        _: Time,
        _: Id,
        msg: &mut AppMessage,
        _: &mut Contact,
    ) -> Forward {
        self.log.lock().unwrap().forwarded += 1;
        if msg.body.starts_with(b"stop") {
            return Forward::Stop;
        }
        if msg.body.starts_with(b"tag") {
            msg.body.push(b'+');
        }
        Forward::Continue
    }

    fn update(&mut self, kbr: &mut dyn Kbr, _: Time, node: Contact, joined: bool) {
        let _ = kbr.local_contact();
        self.log.lock().unwrap().updates.push((node.id, joined));
    }
}

fn ring(n: usize, seed: u64) -> (Sim, Vec<Arc<Mutex<Log>>>) {
    let mut net = Sim::new(SimConfig::new(seed, Config::default()));
    let mut logs = Vec::new();
    for _ in 0..n {
        let log = Arc::new(Mutex::new(Log::default()));
        logs.push(log.clone());
        let i = net.add_node_with(|node| node.add_service(Box::new(Probe { log })));
        assert!(net.join_nearest(i));
    }
    net.run_for(Duration::from_secs(3));
    (net, logs)
}

fn route(net: &mut Sim, src: u32, key: Id, body: &[u8]) {
    let msg = AppMessage {
        app: APP,
        body: body.to_vec(),
    };
    net.with_node(src, |node, now| node.route(now, key, msg, None));
}

#[test]
fn routed_messages_are_delivered_once_at_the_root_and_forward_can_rewrite_or_stop() {
    let (mut net, logs) = ring(120, 3);
    for round in 0..60u32 {
        let src = net.random_alive();
        let key = Id::from_bytes(net.rng.gen());
        let body = if round % 3 == 0 {
            b"stop".to_vec()
        } else {
            b"tag".to_vec()
        };
        let before: usize = logs.iter().map(|l| l.lock().unwrap().delivered.len()).sum();
        route(&mut net, src, key, &body);
        net.run_for(Duration::from_secs(2));
        let root = net.true_root(&key);
        let got: Vec<_> = logs[index(&net, &root)]
            .lock()
            .unwrap()
            .delivered
            .iter()
            .filter(|d| d.1 == key)
            .cloned()
            .collect();
        let total: usize = logs.iter().map(|l| l.lock().unwrap().delivered.len()).sum();
        if body == b"stop" {
            // Stopped at the source's forward upcall unless the source is the root.
            if net.id(src) == root {
                assert_eq!(got.len(), 1);
            } else {
                assert!(got.is_empty(), "a stopped message was delivered");
                assert_eq!(total, before);
            }
        } else {
            assert_eq!(got.len(), 1, "delivered {} times at the root", got.len());
            assert_eq!(total, before + 1, "delivered somewhere other than the root");
            let (_, _, body, hops) = &got[0];
            // One '+' per forwarding node, and the origin forwards too.
            assert_eq!(body.len(), 3 + *hops as usize);
        }
    }
    // On a direct route, the plain route path still used `forward`.
    assert!(
        logs.iter()
            .map(|l| l.lock().unwrap().forwarded)
            .sum::<usize>()
            > 0
    );
}

#[test]
fn update_upcalls_follow_leaf_set_changes_and_replica_sets_are_the_closest_nodes() {
    let (mut net, logs) = ring(80, 9);
    let victim = net.random_alive();
    let vid = net.id(victim);
    let neighbours: Vec<usize> = (0..net.nodes.len())
        .filter(|&i| i != victim as usize && net.nodes[i].node.overlay().leaf_set().contains(&vid))
        .collect();
    assert!(!neighbours.is_empty());
    for l in &logs {
        l.lock().unwrap().updates.clear();
    }
    net.kill(victim);
    net.run_for(Duration::from_secs(20));
    for &i in &neighbours {
        let log = logs[i].lock().unwrap();
        assert!(
            log.updates.contains(&(vid, false)),
            "node {i} got no update for the failure"
        );
    }

    let ids = Ring::of(&net).ids().to_vec();
    for _ in 0..50 {
        let key = Id::from_bytes(net.rng.gen());
        let root = net.true_root(&key);
        let at = index(&net, &root) as u32;
        let replicas = net.with_node(at, |node, _| node.overlay().replica_set(&key, 5));
        let mut truth = ids.clone();
        truth.sort_by(|a, b| key.cmp_closeness(a, b));
        let got: Vec<Id> = replicas.iter().map(|c| c.id).collect();
        assert_eq!(got, truth[..5].to_vec());
        // The root's own range at rank 0 contains the key.
        let (from, to) = net
            .with_node(at, |node, _| node.overlay().range(&root, 0))
            .expect("range known");
        assert!(key.in_cw_arc(&from, &to), "key outside its root's range");
    }
    let some = net.random_alive();
    let ns = net.with_node(some, |node, _| node.overlay().neighbor_set(4));
    assert_eq!(ns.len(), 4);
    let lookup = net.with_node(some, |node, _| {
        node.overlay()
            .local_lookup(&Id::from_bytes([0x42; 32]), 3, false)
    });
    assert!(!lookup.is_empty() && lookup.len() <= 3);
}

/// `range(node, rank)` is exactly the arc of keys for which `node` is among the rank + 1
/// closest, for the node itself and for its leaf set members, while the leaf set knows every
/// node in between; beyond that (rank L/2 and up in a ring larger than the leaf set, where the
/// sorted neighbours would wrap round the far side of the ring) it is `None`.
#[test]
fn range_is_the_arc_where_a_node_is_among_the_rank_plus_one_closest_or_unknown() {
    let (mut net, _) = ring(120, 4);
    let leaf = Config::default().leaf_set_size;
    let mut ids = Ring::of(&net).ids().to_vec();
    ids.sort();
    let mut checked = 0;
    for _ in 0..6 {
        let at = net.random_alive();
        let me = net.id(at);
        // Itself, and its nearest clockwise member.
        let next = ids[(ids.binary_search(&me).unwrap() + 1) % ids.len()];
        for node in [me, next] {
            for rank in 0..=leaf {
                let got = net.with_node(at, |n, _| n.overlay().range(&node, rank));
                let Some((from, to)) = got else {
                    assert!(
                        node != me || rank >= leaf / 2,
                        "rank {rank} of the node itself is within its leaf set, yet unknown"
                    );
                    continue;
                };
                assert!(
                    rank < leaf / 2,
                    "rank {rank}: a range reaching past the leaf set"
                );
                for _ in 0..200 {
                    let key = Id::from_bytes(net.rng.gen());
                    let mut by = ids.clone();
                    by.sort_by(|a, b| key.cmp_closeness(a, b));
                    let among = by[..=rank].contains(&node);
                    assert_eq!(
                        key.in_cw_arc(&from, &to),
                        among,
                        "rank {rank}: key {key:?} in range != among the {} closest",
                        rank + 1
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 6 * 200 * 8, "too few ranges known: {checked}");
}
