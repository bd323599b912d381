//! PAST's client interface: which node served a lookup and over how many hops, inserts under
//! certificates the owner signed in advance (the owner's key stays with the client), and
//! certificate-only lookups.

use ringvault_overlay::{Config, Kbr};
use ringvault_past::{
    Description, FileCertificate, Found, Inserted, Kind, MemoryStore, Past, PastError, PastEvent,
    RequestId,
};
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
    f: impl FnOnce(&mut Past, &mut dyn Kbr, Time, &Identity) -> Result<RequestId, PastError>,
) -> PastEvent {
    let req = ring.call::<Past, _>(i, f).expect("the request starts");
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
        .find(|e| e.request() == req)
        .unwrap_or_else(|| panic!("request {req} on node {i} did not finish"))
}

/// Advances the ring until request `req` of node `i` finishes (at most 5 simulated
/// seconds): how long it took, and its event.
fn wait_for(
    ring: &mut TestRing,
    i: usize,
    req: RequestId,
) -> (ringvault_types::Duration, PastEvent) {
    let start = ring.now;
    loop {
        let now = ring.now;
        while let Some(Some(e)) = ring.members[i]
            .node
            .with_service::<Past, _>(now, |p, _| p.poll_event())
        {
            if e.request() == req {
                return (ring.now - start, e);
            }
        }
        assert!(
            ring.now < start + ringvault_types::Duration::from_secs(5),
            "request {req} on node {i} did not finish within 5 s"
        );
        ring.advance(ringvault_types::Duration::from_millis(100));
    }
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

fn insert_signed(
    ring: &mut TestRing,
    i: usize,
    certs: Vec<FileCertificate>,
    content: Vec<u8>,
) -> Result<Inserted, PastError> {
    // A request refused at once (an invalid certificate) is the same failure as one that
    // failed later.
    let req = ring.call::<Past, _>(i, move |p, kbr, now, _| {
        p.insert_signed(kbr, now, certs, content)
    })?;
    match finish(ring, i, req) {
        PastEvent::Inserted(_, r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

fn signed(
    owner: &Identity,
    name: &str,
    salts: std::ops::RangeInclusive<u64>,
    data: &[u8],
) -> Vec<FileCertificate> {
    salts
        .map(|s| FileCertificate::issue(owner, name, s, data, 3, 1_700_000_000))
        .collect()
}

fn invalid(r: Result<Inserted, PastError>) -> String {
    match r {
        Err(PastError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn a_presigned_insert_stores_under_the_clients_key_and_checks_its_certificates() {
    let mut ring = ring(16);
    // The client's key: not the key of any node.
    let user = Identity::from_secret_bytes([42; 32]);
    let data = b"signed by the user, stored by the ring".to_vec();
    let certs = signed(&user, "mine", 0..=3, &data);
    let ins = insert_signed(&mut ring, 3, certs.clone(), data.clone()).unwrap();
    assert_eq!(ins.cert, certs[0], "salt 0 was stored: nothing re-salted");
    assert_eq!(ins.receipts.len(), 3);
    for r in &ins.receipts {
        r.verify(&ins.cert.id()).unwrap();
    }
    let found = lookup(&mut ring, 9, ins.cert.id()).unwrap();
    assert_eq!(found.content, data);
    assert_eq!(found.cert.body.owner, user.public_key());
    assert!(!ins.already_stored);
    // The same certificate again is the same object: stored once, acknowledged again.
    let again = insert_signed(&mut ring, 5, certs.clone(), data.clone()).unwrap();
    assert_eq!(again.cert, certs[0]);
    assert!(again.already_stored, "every replica held it already");
    // A retry signed later (another date) with the same content is the same object too.
    let later: Vec<FileCertificate> = (0..=3)
        .map(|s| FileCertificate::issue(&user, "mine", s, &data, 3, 1_800_000_000))
        .collect();
    let retried = insert_signed(&mut ring, 5, later, data.clone()).unwrap();
    assert_eq!(retried.cert.id(), ins.cert.id());
    assert!(retried.already_stored);
    // Other content under the name finds the id taken.
    let other = b"other content, same name".to_vec();
    let clash: Vec<FileCertificate> = (0..=3)
        .map(|s| FileCertificate::issue(&user, "mine", s, &other, 3, 1_800_000_000))
        .collect();
    assert_eq!(
        insert_signed(&mut ring, 5, clash, other).unwrap_err(),
        PastError::Duplicate
    );
    assert_eq!(lookup(&mut ring, 11, ins.cert.id()).unwrap().cert, certs[0]);

    // Content other than certified.
    let m = invalid(insert_signed(
        &mut ring,
        3,
        signed(&user, "b", 0..=0, &data),
        b"other".to_vec(),
    ));
    assert!(m.contains("does not match"), "{m}");
    // A certificate naming the user as owner but signed by another key.
    let mut forged = signed(&user, "c", 0..=0, &data);
    let thief = Identity::from_secret_bytes([7; 32]);
    forged[0].signature = thief.sign(b"whatever");
    let m = invalid(insert_signed(&mut ring, 3, forged, data.clone()));
    assert!(m.contains("signature"), "{m}");
    // Certificates of two owners, or of two names, or one salt twice, or none, or too many.
    let mut mixed = signed(&user, "d", 0..=0, &data);
    mixed.extend(signed(&thief, "d", 1..=1, &data));
    let m = invalid(insert_signed(&mut ring, 3, mixed, data.clone()));
    assert!(m.contains("one name, owner"), "{m}");
    let mut names = signed(&user, "e", 0..=0, &data);
    names.extend(signed(&user, "f", 1..=1, &data));
    invalid(insert_signed(&mut ring, 3, names, data.clone()));
    let mut twice = signed(&user, "g", 0..=0, &data);
    twice.extend(signed(&user, "g", 0..=0, &data));
    let m = invalid(insert_signed(&mut ring, 3, twice, data.clone()));
    assert!(m.contains("salt 0"), "{m}");
    invalid(insert_signed(&mut ring, 3, Vec::new(), data.clone()));
    invalid(insert_signed(
        &mut ring,
        3,
        signed(&user, "h", 0..=4, &data),
        data.clone(),
    ));
    // None of the refused inserts stored anything.
    for name in ["b", "c", "d", "e", "f", "g", "h"] {
        let id = ringvault_past::object_id(name, &user.public_key(), 0);
        assert_eq!(lookup(&mut ring, 0, id).unwrap_err(), PastError::NotFound);
    }
}

/// The ids of a [`TestRing`] of `n` nodes, known before it starts (they derive from the index).
fn ring_ids(n: usize) -> Vec<Id> {
    (0..n as u64)
        .map(|i| Identity::from_secret_bytes(*Id::hash(&i.to_le_bytes()).as_bytes()).id())
        .collect()
}

fn closest(ids: &[Id], key: &Id, k: usize) -> Vec<Id> {
    let mut v = ids.to_vec();
    v.sort_by(|a, b| key.cmp_closeness(a, b));
    v.truncate(k);
    v
}

#[test]
fn file_diversion_moves_to_the_next_presigned_salt_and_stops_when_they_run_out() {
    const N: usize = 64;
    // Nodes this close to salt 0's id are too small for the object: its primaries and every
    // leaf set node they could divert to refuse it.
    const CROWD: usize = 32;
    let ids = ring_ids(N);
    let user = Identity::from_secret_bytes([43; 32]);
    let data = vec![0xAB; 50_000];
    // A name whose salt-1 id lands among roomy nodes only (salt 0's crowd is far away).
    let name = (0..)
        .map(|n| format!("diverted-{n}"))
        .find(|name| {
            let id0 = ringvault_past::object_id(name, &user.public_key(), 0);
            let id1 = ringvault_past::object_id(name, &user.public_key(), 1);
            let crowd = closest(&ids, &id0, CROWD);
            closest(&ids, &id1, 12).iter().all(|c| !crowd.contains(c))
        })
        .unwrap();
    let id0 = ringvault_past::object_id(&name, &user.public_key(), 0);
    let crowd = closest(&ids, &id0, CROWD);
    let mut ring = TestRing::new(N, Config::default(), |_, me, node| {
        let capacity = if crowd.contains(&me.id()) {
            100_000
        } else {
            CAPACITY
        };
        let key = Identity::from_secret_bytes(me.secret_bytes());
        let past = Past::new(key, Box::new(MemoryStore::new(capacity))).unwrap();
        node.add_service(Box::new(past));
    });

    // Only salt 0 signed: the client refused to let the node re-salt, so the insert fails.
    let only = signed(&user, &name, 0..=0, &data);
    assert_eq!(
        insert_signed(&mut ring, 0, only, data.clone()).unwrap_err(),
        PastError::NoSpace(1)
    );
    // Salts 0..=3 signed: the node moves on to salt 1, which fits.
    let certs = signed(&user, &name, 0..=3, &data);
    let ins = insert_signed(&mut ring, 0, certs.clone(), data.clone()).unwrap();
    assert_eq!(ins.cert, certs[1]);
    assert_eq!(ins.receipts.len(), 3);
    let found = lookup(&mut ring, 7, certs[1].id()).unwrap();
    assert_eq!(found.content, data);
    // No node took salt 0 as a replica (nodes on the refused insert's path may have cached it).
    for i in 0..N {
        assert!(
            !matches!(
                kind(&mut ring, i, &id0),
                Some(Kind::Primary | Kind::Diverted)
            ),
            "node {i} holds the refused salt"
        );
    }
}

/// Advances the clock in 100 ms steps until request `req` of node `i` finishes; answers its
/// event.
fn finish(ring: &mut TestRing, i: usize, req: RequestId) -> PastEvent {
    for _ in 0..400 {
        let now = ring.now;
        while let Some(Some(e)) = ring.members[i]
            .node
            .with_service::<Past, _>(now, |p, _| p.poll_event())
        {
            if e.request() == req {
                return e;
            }
        }
        ring.advance(ringvault_types::Duration::from_millis(100));
    }
    panic!("request {req} did not finish in 40 s");
}

/// Starts an insert on node `i` and waits until it finishes; answers its result and how long
/// it took.
fn timed_insert(
    ring: &mut TestRing,
    i: usize,
    owner: &Identity,
    name: &str,
    data: &[u8],
    date: u64,
) -> (Result<Inserted, PastError>, ringvault_types::Duration) {
    let start = ring.now;
    let (name, data, owner) = (name.to_string(), data.to_vec(), owner.secret_bytes());
    let req = ring
        .call::<Past, _>(i, move |p, kbr, now, _| {
            let owner = Identity::from_secret_bytes(owner);
            p.insert(kbr, now, &owner, &name, data, 3, date)
        })
        .expect("the insert starts");
    match finish(ring, i, req) {
        PastEvent::Inserted(_, r) => (r, ring.now.saturating_since(start)),
        other => panic!("unexpected {other:?}"),
    }
}

fn holds(ring: &mut TestRing, i: usize, id: &Id) -> bool {
    matches!(kind(ring, i, id), Some(Kind::Primary | Kind::Diverted))
}

/// A replica-set member that died (silently: the overlay has not noticed yet) holds an insert
/// up only until its re-send: the next closest node is asked too and the insert completes on k
/// live nodes, long before the overlay's failure timeout (6 s) or the request's (30 s).
#[test]
fn an_insert_moves_past_a_dead_replica_holder_within_seconds() {
    let mut ring = ring(16);
    let owner = Identity::from_secret_bytes([77; 32]);
    let data = b"written while a holder dies".to_vec();
    let id = ringvault_past::object_id("past-the-dead", &owner.public_key(), 0);
    let closest = ring.closest_live(&id, 5);
    let client = (0..16).find(|i| !closest.contains(i)).unwrap();
    let dead = closest[1];
    ring.kill(dead);
    let (result, took) = timed_insert(&mut ring, client, &owner, "past-the-dead", &data, 100);
    let ins = result.expect("the insert completes without the dead holder");
    assert!(took.as_secs_f64() <= 2.5, "took {took:?}");
    assert!(!ins.already_stored);
    let signers: Vec<Id> = ins.receipts.iter().map(|r| r.body.node).collect();
    assert!(
        !signers.contains(&ring.id(dead)),
        "a dead node signed a receipt"
    );
    let live = ring.closest_live(&id, 3);
    let on_live = live.iter().filter(|&&i| holds(&mut ring, i, &id)).count();
    assert!(
        on_live >= 2,
        "only {on_live} of the 3 closest live nodes hold it"
    );
    assert_eq!(lookup(&mut ring, client, id).unwrap().content, data);
}

fn keepalives(ring: &mut TestRing, on: bool) {
    let now = ring.now;
    for m in ring.members.iter_mut() {
        m.node.overlay_mut().set_maintenance(now, on, true);
    }
}

/// An insert that cannot complete (three of the five closest nodes are dead, and with
/// keep-alives off the ring does not notice) times out naming its object, leaves no replica
/// behind on the nodes that did store it, and the same insert retried once the ring has
/// noticed succeeds with the same id.
#[test]
fn a_timed_out_insert_leaves_nothing_and_its_retry_succeeds() {
    let mut ring = ring(16);
    let owner = Identity::from_secret_bytes([78; 32]);
    let data = b"first attempt fails, the retry does not".to_vec();
    let id = ringvault_past::object_id("retry-me", &owner.public_key(), 0);
    let closest = ring.closest_live(&id, 5);
    let client = (0..16).find(|i| !closest.contains(i)).unwrap();
    keepalives(&mut ring, false);
    for &i in &closest[1..4] {
        ring.kill(i);
    }
    let (result, _) = timed_insert(&mut ring, client, &owner, "retry-me", &data, 100);
    match result {
        Err(PastError::Timeout {
            id: named,
            receipts,
            wanted,
        }) => {
            assert_eq!((named, wanted), (id, 3));
            assert!(receipts < 3);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    ring.advance(ringvault_types::Duration::from_secs(1));
    for i in [closest[0], closest[4]] {
        assert!(
            !holds(&mut ring, i, &id),
            "node {i} kept a replica of the given-up attempt"
        );
    }
    keepalives(&mut ring, true);
    ring.advance(ringvault_types::Duration::from_secs(15));
    // Retried unchanged (signed anew, a later date): the same id, stored on k live nodes.
    let (result, _) = timed_insert(&mut ring, client, &owner, "retry-me", &data, 101);
    let ins = result.expect("the retry succeeds");
    assert_eq!(ins.cert.id(), id);
    assert!(
        !ins.already_stored,
        "the given-up attempt left nothing to find"
    );
    let live = ring.closest_live(&id, 3);
    for i in live {
        assert!(holds(&mut ring, i, &id), "live node {i} lacks a replica");
    }
    // Retried again: complete already, so nothing new is stored.
    let (again, _) = timed_insert(&mut ring, client, &owner, "retry-me", &data, 102);
    assert!(again.expect("an identical retry succeeds").already_stored);
}

/// Whether the reclaim through node `i` released the object.
fn reclaim(ring: &mut TestRing, i: usize, cert: ringvault_past::ReclaimCertificate) -> bool {
    let req = ring
        .call::<Past, _>(i, move |p, kbr, now, _| p.reclaim(kbr, now, cert, 3))
        .expect("the reclaim starts");
    match finish(ring, i, req) {
        PastEvent::Reclaimed(_, r) => r.is_ok(),
        other => panic!("unexpected {other:?}"),
    }
}

/// A name reclaimed can be used again by its owner (a later insert), and the old reclaim,
/// replayed, releases nothing of the new object; a reclaim dated before an insert does not
/// release it either.
#[test]
fn an_old_reclaim_cannot_release_a_newer_insert() {
    use ringvault_past::ReclaimCertificate;
    let mut ring = ring(16);
    let owner = Identity::from_secret_bytes([79; 32]);
    let (first, second) = (b"first life".to_vec(), b"second life".to_vec());
    let (r, _) = timed_insert(&mut ring, 2, &owner, "reborn", &first, 100);
    let id = r.expect("first insert").cert.id();
    assert!(
        !reclaim(&mut ring, 2, ReclaimCertificate::issue(&owner, id, 50)),
        "a reclaim older than the object released it"
    );
    assert_eq!(lookup(&mut ring, 4, id).unwrap().content, first);
    let old = ReclaimCertificate::issue(&owner, id, 150);
    assert!(reclaim(&mut ring, 2, old.clone()), "the owner's reclaim");
    ring.advance(ringvault_types::Duration::from_secs(1));
    // Signed before the reclaim: refused; after it: the name lives again.
    let (early, _) = timed_insert(&mut ring, 2, &owner, "reborn", &second, 140);
    assert!(
        early.is_err(),
        "an insert signed before the reclaim came back: {early:?}"
    );
    let (r, _) = timed_insert(&mut ring, 2, &owner, "reborn", &second, 200);
    assert_eq!(r.expect("the name used again").cert.id(), id);
    assert!(
        !reclaim(&mut ring, 5, old),
        "the old reclaim, replayed, released the new object"
    );
    assert_eq!(lookup(&mut ring, 7, id).unwrap().content, second);
}

fn describe(ring: &mut TestRing, i: usize, id: Id) -> Result<Description, PastError> {
    match request(ring, i, |p, kbr, now, _| p.describe(kbr, now, id)) {
        PastEvent::Described(_, r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_description_carries_the_certificate_and_a_manifest_but_never_the_content() {
    let mut ring = ring(16);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let plain = match request(&mut ring, 0, |p, kbr, now, me| {
        p.insert(kbr, now, me, "plain", data.clone(), 3, 0)
    }) {
        PastEvent::Inserted(_, Ok(ins)) => ins.cert,
        other => panic!("insert failed: {other:?}"),
    };
    let mut plan = ringvault_past::ChunkedUpload::new(ringvault_past::Upload::new([9; 16]), 1);
    let job = plan.push(&data).expect("a new chunk");
    plan.stored_as(job.index, plain.id());
    let manifest = plan.manifest().expect("every chunk stored");
    let listed = match request(&mut ring, 0, |p, kbr, now, me| {
        p.insert(kbr, now, me, "file", manifest.to_bytes(), 3, 0)
    }) {
        PastEvent::Inserted(_, Ok(ins)) => ins.cert,
        other => panic!("insert failed: {other:?}"),
    };
    for i in 0..16 {
        let held_before = kind(&mut ring, i, &plain.id());
        let d = describe(&mut ring, i, plain.id()).unwrap();
        assert_eq!(d.cert, plain);
        assert_eq!(d.manifest, None);
        assert_eq!(
            kind(&mut ring, i, &plain.id()),
            held_before,
            "describing left a copy on node {i}"
        );
        let d = describe(&mut ring, i, listed.id()).unwrap();
        assert_eq!(d.manifest.as_ref(), Some(&manifest));
    }
    let nothing = ringvault_past::object_id("nothing", &plain.body.owner, 0);
    assert!(matches!(
        describe(&mut ring, 3, nothing),
        Err(PastError::NotFound)
    ));
}

#[test]
fn a_lookup_handed_to_a_holder_that_just_died_goes_on_to_the_next() {
    // Lookups by Pastry's rule alone, so each goes straight to the root (16 nodes: every leaf
    // set spans the ring).
    let config = || ringvault_past::PastConfig {
        lookup_heuristic: None,
        ..Default::default()
    };
    let build = |full: Option<usize>| {
        TestRing::new(16, Config::default(), |i, me, node| {
            let key = Identity::from_secret_bytes(me.secret_bytes());
            let capacity = if Some(i) == full { 1_000 } else { CAPACITY };
            let store = Box::new(MemoryStore::new(capacity));
            node.add_service(Box::new(Past::with_config(key, store, config()).unwrap()));
        })
    };
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
    let client = 0;
    // The same identities every time: find the root of the object first, then make it full,
    // so it diverts its replica and keeps only a pointer. A lookup reaching it is handed on,
    // to the diverted holder first.
    let probe = build(None);
    let owner = probe.members[client].identity.public_key();
    let id = ringvault_past::object_id("handed on", &owner, 0);
    let root = probe.closest_live(&id, 1)[0];
    assert_ne!(root, client);
    let mut ring = build(Some(root));
    let ins = match request(&mut ring, client, |p, kbr, now, me| {
        p.insert(kbr, now, me, "handed on", data.clone(), 3, 0)
    }) {
        PastEvent::Inserted(_, Ok(ins)) => ins,
        other => panic!("insert failed: {other:?}"),
    };
    assert_eq!(
        ins.cert.id(),
        id,
        "stored under its first id (replica diversion)"
    );
    assert_eq!(
        kind(&mut ring, root, &id),
        None,
        "the full root holds no copy"
    );
    let diverted = (0..16)
        .find(|&i| kind(&mut ring, i, &id) == Some(Kind::Diverted))
        .expect("a diverted replica");

    // The diverted holder dies silently; a lookup reaches the root, which hands it there.
    ring.kill(diverted);
    let reader = (0..16)
        .find(|&i| i != client && i != root && kind(&mut ring, i, &id).is_none())
        .unwrap();
    let req = ring.call::<Past, _>(reader, |p, kbr, now, _| p.lookup(kbr, now, id));
    let req = req.expect("the lookup starts");
    let (took, event) = wait_for(&mut ring, reader, req);
    match event {
        PastEvent::Found(_, Ok(f)) => assert_eq!(f.content, data),
        other => panic!("expected the object, got {other:?}"),
    }
    // The root noticed the dead holder within the hop timeout (its watch went unanswered)
    // and handed the lookup to the next, instead of the client waiting for its deadline.
    assert!(
        took <= Config::default().hop_timeout + ringvault_types::Duration::from_millis(500),
        "took {took:?}"
    );
    let now = ring.now;
    let redone = ring.members[root]
        .node
        .with_service::<Past, _>(now, |p, _| p.lookup_stats().handoffs_redone);
    // Once, or twice when the client's own second routing (after its re-send interval)
    // reached the root while the first watch was still open: either way the re-pass, not the
    // second routing, is what found the live holder (the root hands both to the dead one).
    assert!(
        matches!(redone, Some(1..=2)),
        "hand-offs redone: {redone:?}"
    );
}

#[test]
fn a_holder_asked_for_its_own_object_answers_itself_when_the_other_holders_are_dead() {
    let mut ring = TestRing::new(16, Config::default(), |_, me, node| {
        let key = Identity::from_secret_bytes(me.secret_bytes());
        let store = Box::new(MemoryStore::new(CAPACITY));
        node.add_service(Box::new(Past::new(key, store).unwrap()));
    });
    let data: Vec<u8> = (0..5_000u32).map(|i| (i % 251) as u8).collect();
    let ins = match request(&mut ring, 0, |p, kbr, now, me| {
        p.insert(kbr, now, me, "mine too", data.clone(), 3, 0)
    }) {
        PastEvent::Inserted(_, Ok(ins)) => ins,
        other => panic!("insert failed: {other:?}"),
    };
    let id = ins.cert.id();
    let holders: Vec<usize> = (0..16)
        .filter(|&i| kind(&mut ring, i, &id) == Some(Kind::Primary))
        .collect();
    assert_eq!(holders.len(), 3);
    // The last holder is the only one left: the others see no copy anywhere else, so only
    // its own store can answer (the root leaves the client out of its hand-offs).
    let (dead, alive) = (&holders[..2], holders[2]);
    for &h in dead {
        ring.kill(h);
    }
    let req = ring.call::<Past, _>(alive, |p, kbr, now, _| p.lookup(kbr, now, id));
    let (took, event) = wait_for(&mut ring, alive, req.expect("the lookup starts"));
    let found = match event {
        PastEvent::Found(_, Ok(f)) => f,
        other => panic!("expected its own copy, got {other:?}"),
    };
    assert_eq!(took, ringvault_types::Duration::ZERO);
    assert_eq!(found.content, data);
    assert_eq!(found.hops, 0, "answered without leaving the node");
    assert_eq!(found.server.id, ring.members[alive].identity.id());
}
