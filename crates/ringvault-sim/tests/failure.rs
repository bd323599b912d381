//! Failure detection and repair through the simulator: after a tenth of the ring dies at once,
//! leaf sets become exact again and routes reach the correct live root. Ported from the node
//! crate's former in-memory harness.

use rand::seq::SliceRandom;
use rand::Rng;
use ringvault_node::Command;
use ringvault_overlay::Config;
use ringvault_sim::{wrong_leaf_sets, Sim, SimConfig};
use ringvault_types::{Duration, Id};

#[test]
fn ten_percent_silent_failures_are_repaired() {
    let mut net = Sim::new(SimConfig::new(23, Config::default()));
    net.grow(1000);
    net.run_for(Duration::from_secs(5));
    assert!(wrong_leaf_sets(&net).is_empty());

    let mut victims: Vec<u32> = (0..1000).collect();
    victims.shuffle(&mut net.rng);
    for &v in &victims[..100] {
        net.kill(v);
    }
    // Repair must finish within bounded simulated time: detection (failure timeout) plus a few
    // keep-alive rounds.
    let limit = net.now + Duration::from_secs(60);
    let repaired = net.run_until_polling(limit, Duration::from_millis(500), |n| {
        wrong_leaf_sets(n).is_empty()
    });
    let wrong = wrong_leaf_sets(&net);
    assert!(
        repaired,
        "{} wrong leaf sets after repair, first: {}",
        wrong.len(),
        wrong[0]
    );

    for _ in 0..500 {
        let src = net.random_alive();
        let key = Id::from_bytes(net.rng.gen());
        let r = net
            .route(src, key)
            .expect("route answered despite dead entries");
        assert_eq!(r.root.id, net.true_root(&key));
        assert!(r
            .path
            .iter()
            .all(|c| net.index_of(c).is_some_and(|i| net.nodes[i as usize].alive)));
    }
}

#[test]
fn graceful_leave_is_noticed_at_once() {
    let mut net = Sim::new(SimConfig::new(5, Config::default()));
    net.grow(60);
    net.run_for(Duration::from_secs(3));
    assert!(wrong_leaf_sets(&net).is_empty());
    let leaver = net.random_alive();
    let id = net.id(leaver);
    let knew: Vec<_> = net.nodes[leaver as usize]
        .node
        .overlay()
        .known_peers()
        .iter()
        .map(|c| c.id)
        .collect();
    net.command(leaver, Command::Leave);
    net.kill(leaver);
    // Well under the failure timeout: the Leaving message does the work.
    net.run_for(Duration::from_secs(1));
    for s in net.nodes.iter().filter(|s| s.alive) {
        assert!(
            !s.node.overlay().leaf_set().contains(&id),
            "{:?} still has the leaver; leaver knew it: {}",
            s.node.contact(),
            knew.contains(&s.node.contact().id)
        );
    }
    let limit = net.now + Duration::from_secs(10);
    assert!(
        net.run_until_polling(limit, Duration::from_millis(100), |n| wrong_leaf_sets(n)
            .is_empty())
    );
}
