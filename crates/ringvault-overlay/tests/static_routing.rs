//! Routing over static networks with correct tables built from global knowledge: every route
//! ends at the numerically closest node, and every hop makes progress.

use std::net::{Ipv4Addr, SocketAddr};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringvault_overlay::{Config, NextHop, Overlay, Peer};
use ringvault_types::{Contact, Duration, Id, Time};

/// Builds `n` overlays whose tables hold every other node (so leaf sets are exact and every
/// slot that can be filled is filled with the proximity-closest candidate).
fn static_network(n: usize, seed: u64, b: u8, l: usize) -> Vec<Overlay> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let nodes: Vec<(Contact, (f64, f64))> = (0..n)
        .map(|i| {
            let id = Id::from_bytes(rng.gen());
            let addr = SocketAddr::from((Ipv4Addr::new(127, 0, (i >> 8) as u8, i as u8), 7000));
            (
                Contact::new(id, addr),
                (rng.gen_range(0.0..1000.0), rng.gen_range(0.0..1000.0)),
            )
        })
        .collect();
    let cfg = Config {
        b,
        leaf_set_size: l,
        ..Config::default()
    };
    nodes
        .iter()
        .map(|(me, p)| {
            let mut o = Overlay::new(*me, cfg.clone(), 0).unwrap();
            let peers = nodes.iter().filter(|(c, _)| c.id != me.id).map(|(c, q)| {
                let d = ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt();
                Peer {
                    contact: *c,
                    rtt: Some(Duration::from_micros(d as u64 + 1)),
                }
            });
            o.start_with_state(Time::ZERO, peers);
            o
        })
        .collect()
}

/// Follows next-hop decisions from `src` to the root of `key`, checking progress at every hop;
/// returns (root, hops, rare-case hops).
fn walk(net: &[Overlay], src: usize, key: &Id, b: u8) -> Result<(Id, usize, usize), TestCaseError> {
    let index: std::collections::BTreeMap<Id, usize> = net
        .iter()
        .enumerate()
        .map(|(i, o)| (o.contact().id, i))
        .collect();
    let mut at = src;
    let mut hops = 0;
    let mut rare = 0;
    loop {
        let here = net[at].contact().id;
        match net[at].next_hop(key, None) {
            NextHop::Local => return Ok((here, hops, rare)),
            h => {
                let next = h.contact().unwrap().id;
                rare += matches!(h, NextHop::Rare(_)) as usize;
                let longer = next.shared_prefix_len(key, b) > here.shared_prefix_len(key, b);
                let same_and_closer = next.shared_prefix_len(key, b)
                    >= here.shared_prefix_len(key, b)
                    && key.is_closer(&next, &here);
                let closer = key.is_closer(&next, &here);
                // Table hops lengthen the prefix; rare-case hops keep it and get closer; the
                // final leaf-set hop gets numerically closer.
                match h {
                    NextHop::Table(_) => {
                        prop_assert!(longer, "table hop did not lengthen the prefix")
                    }
                    NextHop::Rare(_) => {
                        prop_assert!(same_and_closer, "rare-case hop made no progress")
                    }
                    NextHop::Leaf(_) => prop_assert!(closer, "leaf hop did not get closer"),
                    NextHop::Local => unreachable!(),
                }
                hops += 1;
                prop_assert!(hops <= 64, "route did not terminate");
                at = index[&next];
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn every_route_ends_at_the_numerically_closest_node(
        n in 1usize..2000, seed in any::<u64>(), b in prop_oneof![Just(4u8), Just(3u8), Just(2u8)]
    ) {
        let net = static_network(n, seed, b, 16);
        let mut sorted: Vec<Id> = net.iter().map(|o| o.contact().id).collect();
        sorted.sort();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        for _ in 0..300 {
            let key = Id::from_bytes(rng.gen());
            let src = rng.gen_range(0..n);
            let (root, _, _) = walk(&net, src, &key, b)?;
            // Truth from the sorted list: the closest is the successor or predecessor of key.
            let pos = sorted.partition_point(|i| *i < key);
            let succ = sorted[pos % n];
            let pred = sorted[(pos + n - 1) % n];
            let truth = if key.is_closer(&succ, &pred) { succ } else { pred };
            prop_assert_eq!(root, truth);
        }
    }
}

#[test]
fn mean_hops_stay_below_log16_n_and_rare_case_is_rare() {
    let n = 2000;
    let net = static_network(n, 99, 4, 16);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (mut hops, mut rare, routes) = (0, 0, 2000);
    for _ in 0..routes {
        let key = Id::from_bytes(rng.gen());
        let (_, h, r) = walk(&net, rng.gen_range(0..n), &key, 4).unwrap();
        hops += h;
        rare += r;
    }
    let mean = hops as f64 / routes as f64;
    let bound = (n as f64).ln() / 16f64.ln();
    assert!(mean < bound, "mean hops {mean} >= log16 N = {bound}");
    assert!(
        (rare as f64) < 0.02 * hops as f64,
        "rare case on {rare} of {hops} hops"
    );
}

#[test]
fn an_unreachable_peer_leaves_every_table_and_repair_starts() {
    let mut net = static_network(60, 5, 4, 16);
    let victim = net[0].leaf_set().members()[0].contact;
    net[0].handle_unreachable(
        Time::from_micros(1),
        victim.id,
        &mut ringvault_overlay::NoServices,
    );
    let me = &mut net[0];
    assert!(!me.leaf_set().contains(&victim.id));
    assert!(!me.routing_table().contains(&victim.id));
    let mut failed = false;
    let mut asked_for_leaves = false;
    while let Some(out) = me.poll_output() {
        match out {
            ringvault_overlay::Output::Event(ringvault_overlay::OverlayEvent::PeerFailed {
                peer: c,
                ..
            }) => failed |= c.id == victim.id,
            ringvault_overlay::Output::Send {
                msg: ringvault_overlay::OverlayMessage::LeafSetRequest,
                ..
            } => asked_for_leaves = true,
            _ => {}
        }
    }
    assert!(failed && asked_for_leaves);
    // Stale state from a peer does not bring it back...
    me.handle_message(
        Time::from_micros(2),
        net_contact_of(me, 1),
        ringvault_overlay::OverlayMessage::LeafSetReply {
            leaves: vec![victim],
            version: 0,
        },
        &mut ringvault_overlay::NoServices,
    );
    assert!(!me.leaf_set().contains(&victim.id));
    // ...but the peer itself speaking does.
    me.handle_message(
        Time::from_micros(3),
        victim,
        ringvault_overlay::OverlayMessage::Ping { nonce: 1 },
        &mut ringvault_overlay::NoServices,
    );
    assert!(me.leaf_set().contains(&victim.id));
}

/// Some live leaf of `o` other than its first.
fn net_contact_of(o: &Overlay, i: usize) -> Contact {
    o.leaf_set().members()[i].contact
}
