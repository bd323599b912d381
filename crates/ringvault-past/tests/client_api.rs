//! What PAST tells its client: which node served a lookup and over how many hops.

use ringvault_overlay::{Config, Kbr};
use ringvault_past::{Found, Kind, MemoryStore, Past, PastError, PastEvent, RequestId};
use ringvault_testkit::TestRing;
use ringvault_types::{Id, Identity, Time};

const CAPACITY: u64 = 64 << 20;

fn ring(n: usize) -> TestRing {
    TestRing::new(n, Config::default(), |_, me, node| {
        let key = Identity::from_secret_bytes(me.secret_bytes());
        let past = Past::new(key, Box::new(MemoryStore::new(CAPACITY))).unwrap();
        node.add_service(Box::new(past));
    })
}

/// Runs `f` on node `i`'s PAST, then returns the result of the request it started (the ring
/// delivers everything at once, so a finished request has its event by then).
fn request(
    ring: &mut TestRing,
    i: usize,
    f: impl FnOnce(&mut Past, &mut dyn Kbr, Time, &Identity) -> RequestId,
) -> PastEvent {
    let req = ring.call::<Past, _>(i, f);
    let now = ring.now;
    let mut events = Vec::new();
    while let Some(Some(e)) = ring.members[i]
        .node
        .with_service::<Past, _>(now, |p, _| p.poll_event())
    {
        events.push(e);
    }
    events
        .into_iter()
        .find(|e| match e {
            PastEvent::Inserted(r, _) | PastEvent::Found(r, _) | PastEvent::Reclaimed(r, _) => {
                *r == req
            }
        })
        .unwrap_or_else(|| panic!("request {req} on node {i} did not finish"))
}

fn lookup(ring: &mut TestRing, i: usize, id: Id) -> Result<Found, PastError> {
    match request(ring, i, |p, kbr, now, _| p.lookup(kbr, now, id)) {
        PastEvent::Found(_, r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

fn kind(ring: &mut TestRing, i: usize, id: &Id) -> Option<Kind> {
    let now = ring.now;
    ring.members[i]
        .node
        .with_service::<Past, _>(now, |p, _| p.store().meta(id).ok().flatten().map(|m| m.0))
        .flatten()
}

fn index_of(ring: &TestRing, id: Id) -> usize {
    (0..ring.members.len())
        .find(|&i| ring.id(i) == id)
        .expect("the server is a ring member")
}

fn forwarded(ring: &TestRing) -> u64 {
    ring.members
        .iter()
        .map(|m| m.node.overlay().stats().forwarded)
        .sum()
}

#[test]
fn a_lookup_names_the_node_that_served_it_and_the_hops() {
    let mut ring = ring(16);
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let ins = match request(&mut ring, 0, |p, kbr, now, me| {
        p.insert(kbr, now, me, "served-by", data.clone(), 3, 0)
    }) {
        PastEvent::Inserted(_, Ok(ins)) => ins,
        other => panic!("insert failed: {other:?}"),
    };
    let id = ins.cert.id();

    let mut remote = 0;
    for i in 0..ring.members.len() {
        let before = forwarded(&ring);
        let found = lookup(&mut ring, i, id).unwrap();
        let passed_on = forwarded(&ring) - before;
        assert_eq!(found.content, data);
        let server = index_of(&ring, found.server.id);
        // Whoever served it holds a copy: a replica, or a copy cached by an earlier path.
        assert!(
            kind(&mut ring, server, &id).is_some(),
            "node {server} served an object it does not hold"
        );
        if server == i {
            assert_eq!(found.hops, 0, "node {i} served itself");
        } else {
            remote += 1;
            // Every node that passed the lookup on is one hop. Two hops no node counts as
            // forwarded may add to them: a first hop the client hinted (the density
            // heuristic) and a handoff from the root to another holder.
            assert!(
                (passed_on..=passed_on + 2).contains(&u64::from(found.hops)),
                "{} hops reported, {passed_on} nodes passed the lookup on",
                found.hops
            );
            assert!(found.hops >= 1);
        }
    }
    assert!(remote >= 10, "only {remote} lookups were served remotely");
}
