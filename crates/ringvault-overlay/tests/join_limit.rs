//! A bootstrap node starts at most `join_rate_per_minute` joins per source address, refills with
//! time, and does not limit other addresses; with the limit off every join is started (the
//! negative control).

use std::net::{Ipv4Addr, SocketAddr};

use ringvault_overlay::{
    Config, Envelope, NoServices, Output, Overlay, OverlayMessage, Peer, RoutedBody,
};
use ringvault_types::{Contact, Duration, Id, Time};

fn contact(n: u32, ip: [u8; 4]) -> Contact {
    Contact::new(
        Id::hash(&n.to_le_bytes()),
        SocketAddr::from((Ipv4Addr::from(ip), 7000 + (n % 1000) as u16)),
    )
}

fn bootstrap(rate: u32) -> Overlay {
    let cfg = Config {
        join_rate_per_minute: rate,
        ..Config::default()
    };
    let me = contact(0, [10, 0, 0, 1]);
    let mut o = Overlay::new(me, cfg, 1).unwrap();
    o.start_with_state(
        Time::ZERO,
        (1..=8).map(|n| Peer::unmeasured(contact(n, [10, 0, 1, n as u8]))),
    );
    while o.poll_output().is_some() {}
    o
}

/// Asks `o` to start a join for a new node `n` from `ip` at `now`; true when it did (the joiner
/// got a join reply).
fn join(o: &mut Overlay, now: Time, n: u32, ip: [u8; 4]) -> bool {
    let joiner = contact(n, ip);
    let envelope = Envelope {
        key: joiner.id,
        origin: joiner,
        hops: 0,
        trace: None,
        body: RoutedBody::Join { joiner },
    };
    o.handle_message(
        now,
        joiner,
        OverlayMessage::Routed { seq: 1, envelope },
        &mut NoServices,
    );
    let mut replied = false;
    while let Some(out) = o.poll_output() {
        if let Output::Send {
            to,
            msg: OverlayMessage::JoinReply(_),
        } = out
        {
            replied |= to.id == joiner.id;
        }
    }
    replied
}

#[test]
fn joins_from_one_address_are_limited_and_refill_and_others_are_not() {
    let mut o = bootstrap(10);
    let t = Time::ZERO + Duration::from_secs(1);
    let started = (100..125)
        .filter(|&n| join(&mut o, t, n, [192, 0, 2, 7]))
        .count();
    assert_eq!(started, 10, "a burst of 25 from one address");
    assert_eq!(o.stats().joins_refused, 15);
    // Another address is not held back by the first one's.
    assert!(join(&mut o, t, 200, [198, 51, 100, 9]));
    // Six seconds refill one token at 10 a minute.
    let later = t + Duration::from_secs(6);
    assert!(join(&mut o, later, 300, [192, 0, 2, 7]));
    assert!(!join(&mut o, later, 301, [192, 0, 2, 7]));

    // Negative control: with the limit off all 25 are started.
    let mut open = bootstrap(0);
    let started = (100..125)
        .filter(|&n| join(&mut open, t, n, [192, 0, 2, 7]))
        .count();
    assert_eq!(started, 25);
}
