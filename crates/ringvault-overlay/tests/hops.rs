//! A hop to a peer that does not acknowledge costs about that peer's measured round trip, not
//! the fixed hop timeout: the message goes on through another node at once, the silent peer is
//! suspected and pinged, and only a peer that stays silent for the full hop timeout is declared
//! failed. A message whose root (as this node sees it) is the suspect waits instead of being
//! delivered at the wrong node, until the suspect is presumed dead (its pong overdue by twice
//! the hop's time).

mod common;

use common::contact;
use ringvault_overlay::{
    AppMessage, Config, Kbr, NoServices, Output, Overlay, OverlayMessage, Peer, RouteInfo, Upcalls,
    HOP_TIMEOUT_RTTS,
};
use ringvault_types::{Contact, Duration, Id, Time};

const RTT: Duration = Duration::from_millis(10);

fn start() -> Time {
    Time::ZERO + Duration::from_secs(1)
}

/// Node 0x10 with measured peers spread over the ring (the leaf set covers all of it).
fn node(peers: &[Contact]) -> Overlay {
    let mut o = Overlay::new(contact(0x10, 0), Config::default(), 3).unwrap();
    o.start_with_state(
        start(),
        peers.iter().map(|c| Peer {
            contact: *c,
            rtt: Some(RTT),
        }),
    );
    drain(&mut o);
    o
}

fn drain(o: &mut Overlay) -> Vec<(Contact, OverlayMessage)> {
    let mut sent = Vec::new();
    while let Some(out) = o.poll_output() {
        if let Output::Send { to, msg } = out {
            sent.push((to, msg));
        }
    }
    sent
}

/// The receivers of the routed messages in `sent`.
fn routed_to(sent: &[(Contact, OverlayMessage)]) -> Vec<Id> {
    sent.iter()
        .filter(|(_, m)| matches!(m, OverlayMessage::Routed { .. }))
        .map(|(c, _)| c.id)
        .collect()
}

fn msg() -> AppMessage {
    AppMessage {
        app: 9,
        body: b"hello".to_vec(),
    }
}

/// Counts deliveries here, and records the peers reported unresponsive.
#[derive(Default)]
struct Delivered(usize, Vec<Id>);

impl Upcalls for Delivered {
    fn deliver(&mut self, _: &mut dyn Kbr, _: Time, _: Id, _: AppMessage, _: RouteInfo) {
        self.0 += 1;
    }
    fn forward(
        &mut self,
        _: &mut dyn Kbr,
        _: Time,
        _: Id,
        _: &mut AppMessage,
        _: &mut Contact,
    ) -> ringvault_overlay::Forward {
        ringvault_overlay::Forward::Continue
    }
    fn update(&mut self, _: &mut dyn Kbr, _: Time, _: Contact, _: bool) {}
    fn secure_routed(
        &mut self,
        _: &mut dyn Kbr,
        _: Time,
        _: &ringvault_overlay::SecureRouteReport,
    ) {
    }
    fn unresponsive(&mut self, _: &mut dyn Kbr, _: Time, node: Contact) {
        self.1.push(node.id);
    }
}

/// Runs timers in order up to `until`, collecting what was sent.
fn run(o: &mut Overlay, up: &mut dyn Upcalls, until: Time) -> Vec<(Time, Contact, OverlayMessage)> {
    let mut out = Vec::new();
    let mut steps = 0;
    while let Some(t) = o.next_deadline() {
        if t > until {
            break;
        }
        steps += 1;
        assert!(steps < 10_000, "a deadline stays in the past at {t:?}");
        o.handle_timeout(t, up);
        out.extend(drain(o).into_iter().map(|(c, m)| (t, c, m)));
    }
    out
}

#[test]
fn an_unacknowledged_hop_goes_around_the_peer_after_its_round_trips_and_the_peer_is_only_suspected()
{
    let silent = contact(0x80, 0);
    let next = contact(0x81, 0);
    let others = [
        contact(0x30, 0),
        contact(0x50, 0),
        contact(0xc0, 0),
        contact(0xe0, 0),
    ];
    let mut peers = vec![silent, next];
    peers.extend(others);
    let mut o = node(&peers);
    let key = contact(0x80, 1).id; // `silent` is closest, `next` second, this node far.

    o.route(start(), key, msg(), None, false, &mut NoServices);
    assert_eq!(routed_to(&drain(&mut o)), vec![silent.id]);

    let expected = RTT.mul(HOP_TIMEOUT_RTTS) + Config::default().hop_slack;
    assert!(expected < Config::default().hop_timeout);
    let sent = run(&mut o, &mut NoServices, start() + expected);
    let rerouted: Vec<&(Time, Contact, OverlayMessage)> = sent
        .iter()
        .filter(|(_, _, m)| matches!(m, OverlayMessage::Routed { .. }))
        .collect();
    assert_eq!(rerouted.len(), 1, "re-routed once: {sent:?}");
    assert_eq!(rerouted[0].1.id, next.id, "around the silent peer");
    assert_eq!(
        rerouted[0].0,
        start() + expected,
        "after its round trips, not the fixed timeout"
    );
    assert!(
        sent.iter()
            .any(|(_, c, m)| c.id == silent.id && matches!(m, OverlayMessage::Ping { .. })),
        "the silent peer is pinged"
    );
    assert!(o.is_suspected(&silent.id));
    assert_eq!(o.stats().suspicions, 1);
    assert_eq!(o.stats().peers_failed, 0);
    assert!(o.leaf_set().contains(&silent.id), "suspected, not removed");
    let OverlayMessage::Routed { seq, .. } = rerouted[0].2 else {
        unreachable!()
    };
    o.handle_message(
        rerouted[0].0,
        next,
        OverlayMessage::HopAck { seq },
        &mut NoServices,
    );

    // It answers: no longer suspected, kept, and chosen again.
    let t = start() + expected + Duration::from_millis(5);
    o.handle_message(
        t,
        silent,
        OverlayMessage::Pong { nonce: 0 },
        &mut NoServices,
    );
    drain(&mut o);
    assert!(!o.is_suspected(&silent.id));
    assert_eq!(o.stats().suspicions_cleared, 1);
    o.route(t, key, msg(), None, false, &mut NoServices);
    let sent = drain(&mut o);
    assert_eq!(routed_to(&sent), vec![silent.id]);
    let seq = sent
        .iter()
        .find_map(|(_, m)| match m {
            OverlayMessage::Routed { seq, .. } => Some(*seq),
            _ => None,
        })
        .expect("a routed message");
    o.handle_message(t, silent, OverlayMessage::HopAck { seq }, &mut NoServices);
    let later = run(
        &mut o,
        &mut NoServices,
        t + Config::default().hop_timeout.mul(2),
    );
    assert_eq!(o.stats().peers_failed, 0, "{later:?}");
}

#[test]
fn a_suspect_that_stays_silent_is_declared_failed_only_after_the_hop_timeout() {
    let silent = contact(0x80, 0);
    let peers = [silent, contact(0x81, 0), contact(0x30, 0), contact(0xc0, 0)];
    let mut o = node(&peers);
    let cfg = Config::default();
    o.route(
        start(),
        contact(0x80, 1).id,
        msg(),
        None,
        false,
        &mut NoServices,
    );
    drain(&mut o);
    let suspected_at = start() + RTT.mul(HOP_TIMEOUT_RTTS) + cfg.hop_slack;
    // Presumed dead for routing after twice its hop time, but kept in the tables until the
    // full hop timeout: a busy peer is not removed for a slow pong.
    run(
        &mut o,
        &mut NoServices,
        suspected_at + Duration::from_micros(cfg.hop_timeout.as_micros() - 1000),
    );
    assert!(
        o.leaf_set().contains(&silent.id),
        "not failed before the hop timeout"
    );
    run(&mut o, &mut NoServices, suspected_at + cfg.hop_timeout);
    assert!(
        !o.leaf_set().contains(&silent.id),
        "failed once the hop timeout passed"
    );
    assert!(!o.is_suspected(&silent.id));
    assert_eq!(o.stats().peers_failed, 1);
}

#[test]
fn a_message_whose_root_is_suspected_waits_rather_than_being_delivered_here() {
    // The silent peer is the key's root and this node the next closest: going around the
    // suspect would deliver here, at the wrong root if the suspect is alive.
    let silent = contact(0x10, 8);
    let peers = [silent, contact(0x50, 0), contact(0x90, 0), contact(0xd0, 0)];
    let mut o = node(&peers);
    let key = contact(0x10, 7).id;
    let mut up = Delivered::default();
    o.route(start(), key, msg(), None, false, &mut up);
    assert_eq!(routed_to(&drain(&mut o)), vec![silent.id]);
    let suspected_at = start() + RTT.mul(HOP_TIMEOUT_RTTS) + Config::default().hop_slack;
    run(&mut o, &mut up, suspected_at);
    assert!(o.is_suspected(&silent.id));
    assert_eq!(o.stats().parked, 1, "parked");
    assert_eq!(
        up.0, 0,
        "not delivered here while the root is only suspected"
    );

    // The suspect answers: the message goes to it.
    let t = suspected_at + Duration::from_millis(5);
    o.handle_message(t, silent, OverlayMessage::Pong { nonce: 0 }, &mut up);
    assert_eq!(routed_to(&drain(&mut o)), vec![silent.id]);
    assert_eq!(up.0, 0);

    // This time it stays silent: once its pong is overdue (twice the hop's time) it is
    // presumed dead and this node takes the message as the root, long before the suspect is
    // declared failed.
    let cfg = Config::default();
    let hop = RTT.mul(HOP_TIMEOUT_RTTS) + cfg.hop_slack;
    let presumed = t + hop + hop.mul(2);
    run(&mut o, &mut up, presumed);
    assert_eq!(up.0, 1, "delivered here once the root was presumed dead");
    assert!(
        o.leaf_set().contains(&silent.id),
        "presumed dead for routing, not yet failed"
    );
    run(&mut o, &mut up, t + hop + cfg.hop_timeout);
    assert!(!o.leaf_set().contains(&silent.id));
    assert_eq!(up.0, 1, "delivered once");
}

/// Answers every message in its forward upcall, as a holder of a requested object does.
#[derive(Default)]
struct AnswersOnForward(Vec<Id>);

impl Upcalls for AnswersOnForward {
    fn deliver(&mut self, _: &mut dyn Kbr, _: Time, _: Id, _: AppMessage, _: RouteInfo) {
        panic!("answered in forward, never delivered");
    }
    fn forward(
        &mut self,
        _: &mut dyn Kbr,
        _: Time,
        _: Id,
        _: &mut AppMessage,
        next: &mut Contact,
    ) -> ringvault_overlay::Forward {
        self.0.push(next.id);
        ringvault_overlay::Forward::Stop
    }
    fn update(&mut self, _: &mut dyn Kbr, _: Time, _: Contact, _: bool) {}
    fn secure_routed(
        &mut self,
        _: &mut dyn Kbr,
        _: Time,
        _: &ringvault_overlay::SecureRouteReport,
    ) {
    }
}

#[test]
fn a_service_can_answer_a_message_whose_root_is_suspected_without_waiting() {
    let silent = contact(0x10, 8);
    let peers = [silent, contact(0x50, 0), contact(0x90, 0), contact(0xd0, 0)];
    let mut o = node(&peers);
    let key = contact(0x10, 7).id;
    // First sent to the root, which stays silent.
    o.route(start(), key, msg(), None, false, &mut NoServices);
    assert_eq!(routed_to(&drain(&mut o)), vec![silent.id]);
    let suspected_at = start() + RTT.mul(HOP_TIMEOUT_RTTS) + Config::default().hop_slack;
    let mut up = AnswersOnForward::default();
    run(&mut o, &mut up, suspected_at);
    assert!(o.is_suspected(&silent.id));
    assert_eq!(
        up.0,
        vec![silent.id],
        "offered to the service with the suspect as next hop"
    );
    assert_eq!(o.stats().parked, 0, "answered, so not parked");
}

#[test]
fn hops_in_flight_to_a_peer_declared_failed_go_on_at_once() {
    let dead = contact(0x80, 0);
    let next = contact(0x81, 0);
    let mut o = node(&[dead, next, contact(0x30, 0), contact(0xc0, 0)]);
    let key = contact(0x80, 1).id; // `dead` is closest, `next` second.
    o.route(start(), key, msg(), None, false, &mut NoServices);
    assert_eq!(routed_to(&drain(&mut o)), vec![dead.id]);
    // Before the hop's own deadline, a probe finds the peer gone: the message goes on now.
    let soon = start() + Duration::from_millis(1);
    o.handle_probe_result(soon, dead, None, &mut NoServices);
    let sent = drain(&mut o);
    assert_eq!(
        routed_to(&sent),
        vec![next.id],
        "re-routed when the peer was declared failed, not at the hop's deadline"
    );
    assert_eq!(o.stats().reroutes, 1);
    let seq = sent
        .iter()
        .find_map(|(_, m)| match m {
            OverlayMessage::Routed { seq, .. } => Some(*seq),
            _ => None,
        })
        .unwrap();
    o.handle_message(soon, next, OverlayMessage::HopAck { seq }, &mut NoServices);
    // The first hop's deadline no longer stands: nothing more is sent for the message.
    let later = run(&mut o, &mut NoServices, start() + Duration::from_secs(2));
    assert!(
        later
            .iter()
            .all(|(_, _, m)| !matches!(m, OverlayMessage::Routed { .. })),
        "the hop is not re-routed a second time: {later:?}"
    );
    assert_eq!(o.stats().hop_timeouts, 0);
}

/// Runs timers up to `until`; every peer acknowledges the routed messages sent meanwhile.
fn run_acknowledged(o: &mut Overlay, until: Time) {
    for (_, to, m) in run(o, &mut NoServices, until) {
        if let OverlayMessage::Routed { seq, .. } = m {
            o.handle_message(until, to, OverlayMessage::HopAck { seq }, &mut NoServices);
        }
    }
}

/// Routes one message towards `busy` (the key's root) at `t`, runs timers until the hop timed
/// out and the message went on (acknowledged by the next peer), and answers the ping from
/// `busy` (it is alive and answers pings). Returns the hop's sequence number and when it timed
/// out.
fn hop_that_times_out(o: &mut Overlay, busy: Contact, t: Time) -> (u64, Time) {
    o.route(t, contact(0x80, 1).id, msg(), None, false, &mut NoServices);
    let seq = drain(o)
        .iter()
        .find_map(|(c, m)| match m {
            OverlayMessage::Routed { seq, .. } if c.id == busy.id => Some(*seq),
            _ => None,
        })
        .expect("routed to the busy peer");
    let timed_out = t + RTT.mul(HOP_TIMEOUT_RTTS) + Config::default().hop_slack;
    // The other peers acknowledge what goes on around the busy one.
    run_acknowledged(o, timed_out);
    assert!(o.is_suspected(&busy.id));
    o.handle_message(
        timed_out,
        busy,
        OverlayMessage::Pong { nonce: 0 },
        &mut NoServices,
    );
    drain(o);
    (seq, timed_out)
}

/// Many hops to a busy peer at once, each carrying `body_len` bytes, all timing out before the
/// first acknowledgement comes; the peer answers its ping and acknowledges every hop late.
fn busy_peer_acknowledging_late(body_len: usize) -> Overlay {
    let busy = contact(0x80, 0);
    let mut o = node(&[busy, contact(0x81, 0), contact(0x30, 0), contact(0xc0, 0)]);
    let many = 2 * ringvault_overlay::MAX_MISSED_ACKS as usize;
    let body = AppMessage {
        app: 9,
        body: vec![7; body_len],
    };
    let mut seqs = Vec::new();
    let mut timed_out = start();
    for _ in 0..many {
        o.route(
            start(),
            contact(0x80, 1).id,
            body.clone(),
            None,
            false,
            &mut NoServices,
        );
        seqs.extend(drain(&mut o).iter().filter_map(|(c, m)| match m {
            OverlayMessage::Routed { seq, envelope } if c.id == busy.id => {
                timed_out = start() + o.hop_timeout_for(&busy.id, envelope);
                Some(*seq)
            }
            _ => None,
        }));
    }
    assert_eq!(seqs.len(), many);
    run_acknowledged(&mut o, timed_out);
    assert_eq!(o.stats().hop_timeouts, many as u64);
    let late = timed_out + Duration::from_millis(200);
    o.handle_message(
        late,
        busy,
        OverlayMessage::Pong { nonce: 0 },
        &mut NoServices,
    );
    for seq in seqs {
        o.handle_message(late, busy, OverlayMessage::HopAck { seq }, &mut NoServices);
    }
    run(
        &mut o,
        &mut NoServices,
        late + Config::default().hop_timeout.mul(2),
    );
    o
}

#[test]
fn a_busy_peer_whose_acknowledgements_come_late_is_never_declared_failed() {
    // Small hops time out after a few round trips, large ones after the fixed hop timeout:
    // neither kind removes a peer whose acknowledgements come late.
    for len in [5, ringvault_overlay::SMALL_HOP_BYTES + 1] {
        let o = busy_peer_acknowledging_late(len);
        assert_eq!(o.stats().peers_failed, 0, "{len}-byte hops");
        assert!(o.leaf_set().contains(&contact(0x80, 0).id));
    }
}

#[test]
fn a_peer_that_answers_pings_but_never_acknowledges_is_declared_failed_for_it() {
    let busy = contact(0x80, 0);
    let mut o = node(&[busy, contact(0x81, 0), contact(0x30, 0), contact(0xc0, 0)]);
    let mut t = start();
    let mut events = Vec::new();
    for i in 0..ringvault_overlay::MAX_MISSED_ACKS {
        let (_, timed_out) = hop_that_times_out(&mut o, busy, t);
        // It keeps answering pings, so it is never silent for a whole hop timeout; its hop
        // counts as missed when a failure timeout more passes with no acknowledgement.
        t = timed_out + Config::default().failure_timeout;
        o.handle_message(t, busy, OverlayMessage::Pong { nonce: 0 }, &mut NoServices);
        o.handle_timeout(t, &mut NoServices);
        while let Some(out) = o.poll_output() {
            // The other leaves do not answer keep-alives here; only `busy` is watched.
            match out {
                Output::Event(e @ ringvault_overlay::OverlayEvent::PeerFailed { peer, .. })
                    if peer.id == busy.id =>
                {
                    events.push(e)
                }
                _ => {}
            }
        }
        let failed = i + 1 == ringvault_overlay::MAX_MISSED_ACKS;
        assert_eq!(
            o.leaf_set().contains(&busy.id),
            !failed,
            "after {} misses",
            i + 1
        );
        t = t + Duration::from_millis(1);
    }
    assert_eq!(
        events,
        vec![ringvault_overlay::OverlayEvent::PeerFailed {
            peer: busy,
            cause: ringvault_overlay::FailureCause::HopsUnacknowledged,
        }]
    );
}

/// Asks `o` to watch `peer` (as a service would) and returns the nonce of the ping it sent
/// (to the address `peer` gives).
fn watch(o: &mut Overlay, peer: Contact) -> u64 {
    assert!(ringvault_overlay::Kbr::watch(o, peer));
    o.flush(start(), &mut NoServices);
    drain(o)
        .iter()
        .find_map(|(c, m)| match m {
            OverlayMessage::Ping { nonce } if c.id == peer.id && c.addr == peer.addr => {
                Some(*nonce)
            }
            _ => None,
        })
        .expect("the watched peer is pinged at its address")
}

#[test]
fn a_watched_peer_is_reported_unless_the_pong_to_its_ping_comes_in_time() {
    let cfg = Config::default();
    let peer = contact(0x80, 0);
    let peers = [peer, contact(0x81, 0), contact(0x30, 0), contact(0xc0, 0)];

    // It answers the ping: nothing to report.
    let mut o = node(&peers);
    let nonce = watch(&mut o, peer);
    o.handle_message(
        start(),
        peer,
        OverlayMessage::Pong { nonce },
        &mut NoServices,
    );
    let mut up = Delivered::default();
    run(&mut o, &mut up, start() + cfg.hop_timeout.mul(2));
    assert!(up.1.is_empty());
    assert_eq!(o.stats().peers_failed, 0);

    // Only other messages come (sent before it died, say): reported at the hop timeout, and
    // suspected, not failed; failed only when it stays silent a hop timeout more.
    let mut o = node(&peers);
    let nonce = watch(&mut o, peer);
    let other = OverlayMessage::Pong { nonce: nonce + 1 };
    o.handle_message(start(), peer, other, &mut NoServices);
    let before = start() + Duration::from_micros(cfg.hop_timeout.as_micros() - 1000);
    let mut up = Delivered::default();
    run(&mut o, &mut up, before);
    assert!(up.1.is_empty(), "not before the hop timeout");
    run(&mut o, &mut up, start() + cfg.hop_timeout);
    assert_eq!(up.1, vec![peer.id]);
    assert!(o.is_suspected(&peer.id));
    assert!(
        o.leaf_set().contains(&peer.id),
        "unresponsive is not failed"
    );
    // Presumed dead once its pong is overdue: a service asking to watch it again is told to
    // go on without it.
    let presumed = start() + cfg.hop_timeout + Duration::from_millis(1000);
    run(&mut o, &mut up, presumed);
    assert!(o.leaf_set().contains(&peer.id), "presumed dead, not failed");
    assert!(!ringvault_overlay::Kbr::watch(&mut o, peer));
    run(&mut o, &mut up, start() + cfg.hop_timeout.mul(2));
    assert!(
        !o.leaf_set().contains(&peer.id),
        "silent a hop timeout more: failed"
    );
    // Now known failed: a service asking to watch it again is told so.
    assert!(!ringvault_overlay::Kbr::watch(&mut o, peer));
}

#[test]
fn a_watched_node_outside_the_tables_is_pinged_where_named_and_only_reported() {
    let cfg = Config::default();
    let peers = [
        contact(0x80, 0),
        contact(0x81, 0),
        contact(0x30, 0),
        contact(0xc0, 0),
    ];
    // A holder a hand-off list named, which this node never met.
    let stranger = contact(0x55, 7);
    let mut o = node(&peers);
    watch(&mut o, stranger);
    let mut up = Delivered::default();
    run(&mut o, &mut up, start() + cfg.hop_timeout);
    assert_eq!(up.1, vec![stranger.id], "reported at the hop timeout");
    assert!(
        !o.is_suspected(&stranger.id),
        "an address a message named is never suspected"
    );
    assert_eq!(o.stats().peers_failed, 0);
}
