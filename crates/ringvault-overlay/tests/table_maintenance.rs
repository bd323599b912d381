//! Routing table maintenance: a row's answer is taken only when asked for, only for that row,
//! each candidate probed before it may take a slot, and candidates the triangle inequality
//! rules out are not probed; the same for the candidates a joiner learns from state replies.

mod common;

use common::contact;
use ringvault_overlay::{Config, NoServices, Output, Overlay, OverlayMessage, Peer};
use ringvault_types::{Duration, Id, Time};

fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

/// Probes and row requests sent, by receiver.
fn outputs(o: &mut Overlay) -> (Vec<Id>, Vec<(Id, u8)>) {
    let (mut probes, mut asks) = (Vec::new(), Vec::new());
    while let Some(out) = o.poll_output() {
        match out {
            Output::Probe { peer } => probes.push(peer.id),
            Output::Send {
                to,
                msg: OverlayMessage::RowRequest { row },
            } => asks.push((to.id, row)),
            _ => {}
        }
    }
    (probes, asks)
}

#[test]
fn a_row_answer_is_taken_only_when_asked_and_only_for_that_row_and_pruned_by_the_triangle_inequality(
) {
    let start = Time::ZERO + Duration::from_secs(1);
    // Node 0x10..; row 0 holds 0x30 (rtt 10 ms) and 0x80 (rtt 40 ms).
    let asked = contact(0x30, 0);
    let entry80 = contact(0x80, 0);
    // No keep-alives: the silent peers must not be declared failed while the test waits.
    let cfg = Config {
        keepalives: false,
        ..Config::default()
    };
    let mut o = Overlay::new(contact(0x10, 0), cfg, 5).unwrap();
    o.start_with_state(
        start,
        [
            Peer {
                contact: asked,
                rtt: ms(10),
            },
            Peer {
                contact: entry80,
                rtt: ms(40),
            },
        ],
    );
    while o.poll_output().is_some() {}
    let near = contact(0x81, 0); // contests 0x80's slot: |10 - 35| = 25 < 40, probed
    let far = contact(0x82, 0); // |10 - 90| = 80 >= 40: cannot beat 0x80, not probed
    let fresh = contact(0x90, 0); // an empty slot: probed, not taken before the probe
    let wrong_row = contact(0x12, 0); // shares a digit with us: not row 0
    let answer = OverlayMessage::RowReply {
        row: 0,
        entries: vec![
            (near, ms(35)),
            (far, ms(90)),
            (fresh, ms(20)),
            (wrong_row, ms(5)),
        ],
    };

    // Unasked: ignored.
    o.handle_message(start, asked, answer.clone(), &mut NoServices);
    assert_eq!(
        outputs(&mut o).0,
        Vec::<Id>::new(),
        "an unasked answer is ignored"
    );

    // Turn maintenance on and let its first round ask row 0 of 0x30 or 0x80.
    o.set_table_maintenance(start, Some(Duration::from_secs(60)));
    let mut t = start;
    let mut asks = Vec::new();
    while asks.is_empty() {
        t = o.next_deadline().expect("a maintenance round is due");
        assert!(
            t <= start + Duration::from_secs(60),
            "the first round comes within an interval"
        );
        o.handle_timeout(t, &mut NoServices);
        asks = outputs(&mut o).1;
    }
    assert_eq!(asks.len(), 1, "one request per row: {asks:?}");
    let (who, row) = asks[0];
    assert_eq!(row, 0);
    let from = if who == asked.id { asked } else { entry80 };
    // Whichever was asked (rtt 10 or 40 ms): `near` is at least 25 or 5 ms away, under 0x80's
    // 40 ms, so probed; `far` at least 80 or 50 ms, so not.
    o.handle_message(t, from, answer.clone(), &mut NoServices);
    let (probes, _) = outputs(&mut o);
    assert_eq!(
        probes,
        vec![near.id, fresh.id],
        "pruned `far`, skipped the wrong row"
    );
    assert_eq!(o.stats().probes_pruned, 1);
    assert!(
        o.routing_table().get(0, 9).is_none(),
        "an empty slot is not filled before its probe"
    );
    // A second copy of the answer is not asked for any more.
    o.handle_message(t, from, answer, &mut NoServices);
    assert_eq!(outputs(&mut o).0, Vec::<Id>::new());
    // The probe answers: the candidate takes the empty slot.
    o.handle_probe_result(t, fresh, ms(25), &mut NoServices);
    assert_eq!(o.routing_table().get(0, 9).map(|p| p.id()), Some(fresh.id));
}

/// Probes sent, by receiver.
fn probes(o: &mut Overlay) -> Vec<Id> {
    outputs(o).0
}

#[test]
fn a_joiner_does_not_probe_state_reply_candidates_the_triangle_inequality_rules_out() {
    let start = Time::ZERO + Duration::from_secs(1);
    let boot = contact(0x30, 0);
    let entry80 = contact(0x80, 0);
    let entry11 = contact(0x11, 0x80); // row 1's slot 1
    let left = contact(0x0f, 0); // the leaf on the other side
                                 // A leaf set of two and a neighbourhood set of one, so that both are full once the join
                                 // path's nodes are in and measured.
    let cfg = Config {
        keepalives: false,
        leaf_set_size: 2,
        neighbourhood_size: 1,
        ..Config::default()
    };
    let mut o = Overlay::new(contact(0x10, 0), cfg, 5).unwrap();
    o.join(start, boot);
    while o.poll_output().is_some() {}
    // The join route ends at once: the bootstrap node is the root. Then the joiner asks the
    // nodes it learnt for their state, and measures them.
    let reply = ringvault_overlay::JoinReply {
        hop: 0,
        root: true,
        rows: vec![boot, entry80, entry11, left],
        leaves: vec![boot, entry11, left],
        neighbours: Vec::new(),
        version: 1,
    };
    o.handle_message(
        start,
        boot,
        OverlayMessage::JoinReply(reply),
        &mut NoServices,
    );
    while o.poll_output().is_some() {}
    o.handle_probe_result(start, boot, ms(10), &mut NoServices);
    o.handle_probe_result(start, entry80, ms(40), &mut NoServices);
    o.handle_probe_result(start, entry11, ms(5), &mut NoServices);
    while o.poll_output().is_some() {}
    assert_eq!(o.leaf_set().len(), 2);

    // Reported from the bootstrap node (10 ms away); the neighbourhood set's one member is
    // 5 ms away.
    let near = contact(0x81, 0); // |10 - 35| = 25 < 40: could beat 0x80, probed
    let far = contact(0x82, 0); // |10 - 90| = 80 >= 40, and >= 5: hopeless, not probed
    let fresh = contact(0x90, 0); // an empty slot: probed
    let close_neighbour = contact(0x31, 0); // |10 - 2| = 8 < 10: could beat the bootstrap node
    let far_neighbour = contact(0x83, 0); // |10 - 50| = 40: cannot beat 0x80, no neighbour
                                          // Cannot beat 0x1180's 5 ms, but becomes a leaf (nearer to us in id): probed all the same.
    let new_leaf = contact(0x11, 0x10);
    let state = ringvault_overlay::StateSnapshot {
        leaves: vec![(new_leaf, ms(90))],
        table: vec![(near, ms(35)), (far, ms(90)), (fresh, ms(20))],
        neighbours: vec![(close_neighbour, ms(2)), (far_neighbour, ms(50))],
        version: 1,
    };
    o.handle_message(
        start,
        boot,
        OverlayMessage::StateReply(state),
        &mut NoServices,
    );
    let mut probed = probes(&mut o);
    probed.sort();
    let mut want = vec![near.id, fresh.id, close_neighbour.id, new_leaf.id];
    want.sort();
    assert_eq!(probed, want, "`far` and `far_neighbour` are not probed");
    assert_eq!(o.stats().probes_pruned, 2);
    assert!(o.leaf_set().contains(&new_leaf.id));
}
