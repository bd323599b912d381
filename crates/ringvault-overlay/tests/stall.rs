//! Failure detection holds silence against a peer only for time this node itself was running:
//! a node whose own timer fired long after it was due (it stalled) does not declare its whole
//! leaf set dead, but a peer that stays silent afterwards is still found failed.

use std::net::{Ipv4Addr, SocketAddr};

use ringvault_overlay::{Config, NoServices, Overlay, Peer};
use ringvault_types::{Contact, Duration, Id, Time};

fn contact(n: u8) -> Contact {
    Contact::new(
        Id::hash(&[n]),
        SocketAddr::from((Ipv4Addr::new(127, 0, 0, n), 7000)),
    )
}

/// A ready node whose leaf set holds peers 2..=5, started at `start`.
fn node(start: Time) -> Overlay {
    let mut o = Overlay::new(contact(1), Config::default(), 7).unwrap();
    o.start_with_state(start, (2..=5).map(|n| Peer::unmeasured(contact(n))));
    while o.poll_output().is_some() {}
    o
}

/// Runs the node's timers on time until `until`; returns when the peer left the leaf set.
fn run_until(o: &mut Overlay, until: Time, peer: &Id) -> Option<Time> {
    while let Some(t) = o.next_deadline() {
        if t > until {
            break;
        }
        o.handle_timeout(t, &mut NoServices);
        while o.poll_output().is_some() {}
        if !o.leaf_set().contains(peer) {
            return Some(t);
        }
    }
    None
}

#[test]
fn a_stalled_node_does_not_declare_its_silent_leaves_dead_at_once() {
    let cfg = Config::default();
    let start = Time::ZERO + Duration::from_secs(1);
    let peer = contact(2).id;

    // On time and silent: the peer is failed within a failure timeout and a tick.
    let mut steady = node(start);
    let failed = run_until(&mut steady, start + Duration::from_secs(60), &peer)
        .expect("a silent peer is declared failed");
    assert!(failed <= start + cfg.failure_timeout + cfg.keepalive_interval.mul(2));

    // Stalled for 5 failure timeouts right after starting: the late tick keeps every leaf.
    let mut stalled = node(start);
    let late = start + cfg.failure_timeout.mul(5);
    stalled.handle_timeout(late, &mut NoServices);
    while stalled.poll_output().is_some() {}
    for n in 2..=5 {
        assert!(
            stalled.leaf_set().contains(&contact(n).id),
            "peer {n} declared failed for the node's own stall"
        );
    }
    assert_eq!(stalled.stats().self_stalls, 1);
    assert_eq!(stalled.stats().peers_failed, 0);
    // Still silent after the stall: found failed about a failure timeout later.
    let failed = run_until(&mut stalled, late + Duration::from_secs(60), &peer)
        .expect("a peer silent after the stall is still declared failed");
    assert!(failed > late);
    assert!(failed <= late + cfg.failure_timeout + cfg.keepalive_interval.mul(2));
}
