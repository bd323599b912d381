//! Lazy routing table repair asks the nearest two entries of the row first, and only the next
//! ones when those had nothing for the slot; it stops once the slot is filled.

mod common;

use common::contact;
use ringvault_overlay::{
    Config, NoServices, Output, Overlay, OverlayMessage, Peer, SLOT_REPAIR_FANOUT,
};
use ringvault_types::{Duration, Time};

/// The slot requests sent, by receiver's first id byte.
fn slot_requests(o: &mut Overlay) -> Vec<u8> {
    let mut v = Vec::new();
    while let Some(out) = o.poll_output() {
        if let Output::Send {
            to,
            msg: OverlayMessage::SlotRequest { row: 0, col: 8 },
        } = out
        {
            v.push(to.id.as_bytes()[0]);
        }
    }
    v
}

#[test]
fn slot_repair_asks_the_nearest_two_then_widens_only_when_they_have_nothing() {
    assert_eq!(SLOT_REPAIR_FANOUT, 2);
    let now = Time::ZERO + Duration::from_secs(1);
    // Row 0 of node 0x10: the failed entry 0x80 and five others, nearest first by first byte.
    let rtts = [(0x30, 10), (0x50, 20), (0xc0, 30), (0xe0, 40), (0x90, 50)];
    let failed = contact(0x80, 0);
    let mut o = Overlay::new(contact(0x10, 0), Config::default(), 1).unwrap();
    let mut peers: Vec<Peer> = rtts
        .iter()
        .map(|&(f, ms)| Peer {
            contact: contact(f, 0),
            rtt: Some(Duration::from_millis(ms)),
        })
        .collect();
    peers.push(Peer {
        contact: failed,
        rtt: Some(Duration::from_millis(5)),
    });
    o.start_with_state(now, peers);
    while o.poll_output().is_some() {}

    o.handle_unreachable(now, failed.id, &mut NoServices);
    assert_eq!(slot_requests(&mut o), vec![0x30, 0x50], "the nearest two");

    // One of them has nothing: wait for the other before widening.
    let none = |row, col| OverlayMessage::SlotReply {
        row,
        col,
        entry: None,
    };
    o.handle_message(now, contact(0x30, 0), none(0, 8), &mut NoServices);
    assert_eq!(slot_requests(&mut o), Vec::<u8>::new());
    o.handle_message(now, contact(0x50, 0), none(0, 8), &mut NoServices);
    assert_eq!(slot_requests(&mut o), vec![0xc0, 0xe0], "widened");

    // A candidate fills the slot: the repair ends, the last answer asks no one.
    let found = contact(0x88, 0);
    let reply = OverlayMessage::SlotReply {
        row: 0,
        col: 8,
        entry: Some(found),
    };
    o.handle_message(now, contact(0xc0, 0), reply, &mut NoServices);
    assert_eq!(
        o.routing_table().get(0, 8).map(|p| p.id()),
        Some(found.id),
        "the slot is filled"
    );
    o.handle_message(now, contact(0xe0, 0), none(0, 8), &mut NoServices);
    assert_eq!(slot_requests(&mut o), Vec::<u8>::new(), "nobody else asked");
}
