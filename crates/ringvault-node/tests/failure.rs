//! Failure detection and repair: after a tenth of the ring dies at once, leaf sets become exact
//! again and routes reach the correct live root.

mod common;

use common::Net;
use rand::seq::SliceRandom;
use rand::Rng;
use ringvault_overlay::Config;
use ringvault_types::{Duration, Id};

#[test]
fn ten_percent_silent_failures_are_repaired() {
    let mut net = Net::new(23, Config::default());
    net.grow(1000);
    net.run_for(Duration::from_secs(5));
    assert!(net.wrong_leaf_sets().is_empty());

    let mut victims: Vec<usize> = (0..1000).collect();
    victims.shuffle(&mut net.rng);
    for &v in &victims[..100] {
        net.kill(v);
    }
    // Repair must finish within bounded simulated time: detection (failure timeout) plus a few
    // keep-alive rounds.
    let limit = net.now + Duration::from_secs(60);
    let repaired = net.run_until_polling(limit, Duration::from_millis(500), |n| {
        n.wrong_leaf_sets().is_empty()
    });
    eprintln!("repaired after {:?}", net.now);
    let wrong = net.wrong_leaf_sets();
    for w in wrong.iter().take(6) {
        eprintln!("{w}");
    }
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
        assert!(r.path.iter().all(|c| net.slots[net.index_of(&c.id)].alive));
    }
}

#[test]
fn graceful_leave_is_noticed_at_once() {
    let mut net = Net::new(5, Config::default());
    net.grow(60);
    net.run_for(Duration::from_secs(3));
    assert!(net.wrong_leaf_sets().is_empty());
    let leaver = net.random_alive();
    let id = net.id(leaver);
    let knew: Vec<_> = net.slots[leaver]
        .node
        .overlay()
        .known_peers()
        .iter()
        .map(|c| c.id)
        .collect();
    net.command(leaver, ringvault_node::Command::Leave);
    net.kill(leaver);
    // Well under the failure timeout: the Leaving message does the work.
    net.run_for(Duration::from_secs(1));
    for s in net.slots.iter().filter(|s| s.alive) {
        assert!(
            !s.node.overlay().leaf_set().contains(&id),
            "{:?} still has the leaver; leaver knew it: {}",
            s.node.contact(),
            knew.contains(&s.node.contact().id)
        );
    }
    let limit = net.now + Duration::from_secs(10);
    assert!(
        net.run_until_polling(limit, Duration::from_millis(100), |n| n
            .wrong_leaf_sets()
            .is_empty())
    );
}
