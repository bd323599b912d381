//! Joins through the simulator (keep-alives on, as a deployed ring runs): leaf sets end exact
//! and routes reach the true root. Ported from the node crate's former in-memory harness.

use rand::Rng;
use ringvault_node::Command;
use ringvault_overlay::Config;
use ringvault_sim::{wrong_leaf_sets, Sim, SimConfig};
use ringvault_types::{Duration, Id};

fn log16(n: usize) -> f64 {
    (n as f64).ln() / 16f64.ln()
}

#[test]
fn a_thousand_sequential_joins_give_exact_leaf_sets_and_correct_routes() {
    let mut net = Sim::new(SimConfig::new(7, Config::default()));
    net.grow(1000);
    net.run_for(Duration::from_secs(5));
    let wrong = wrong_leaf_sets(&net);
    assert!(
        wrong.is_empty(),
        "{} wrong leaf sets, first: {}",
        wrong.len(),
        wrong[0]
    );

    // At N = 1,000 the mean sits just under log16 N (about 2.49 against 2.491), so the sample
    // must be large enough that noise does not decide the assertion.
    let mut hops = 0usize;
    let routes = 4000;
    for _ in 0..routes {
        let src = net.random_alive();
        let key = Id::from_bytes(net.rng.gen());
        let report = net.route(src, key).expect("route answered");
        assert_eq!(
            report.root.id,
            net.true_root(&key),
            "route to {key:?} ended at the wrong node"
        );
        hops += report.hops();
    }
    let mean = hops as f64 / routes as f64;
    assert!(
        mean < log16(1000),
        "mean hops {mean} not below log16 N = {}",
        log16(1000)
    );
}

#[test]
fn concurrent_joins_settle_into_exact_leaf_sets() {
    let mut net = Sim::new(SimConfig::new(11, Config::default()));
    net.grow(100);
    // 40 nodes join at once through random members.
    let joiners: Vec<u32> = (0..40).map(|_| net.add_node()).collect();
    for &j in &joiners {
        let b = net.random_alive();
        let c = net.contact(b);
        net.command(j, Command::Join { bootstrap: c });
    }
    let limit = net.now + Duration::from_secs(120);
    assert!(net.run_until(limit, |n| joiners
        .iter()
        .all(|&j| n.nodes[j as usize].joined)));
    net.run_for(Duration::from_secs(10));
    let wrong = wrong_leaf_sets(&net);
    assert!(
        wrong.is_empty(),
        "{} wrong leaf sets, first: {}",
        wrong.len(),
        wrong[0]
    );
    for _ in 0..200 {
        let src = net.random_alive();
        let key = Id::from_bytes(net.rng.gen());
        let r = net.route(src, key).expect("route answered");
        assert_eq!(r.root.id, net.true_root(&key));
    }
}
