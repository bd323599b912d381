//! Storage audits on a ring of real nodes: a node that signs receipts and drops the data is
//! caught by the nodes holding its objects with it and passed over, so its objects get k
//! correct replicas again (without audits they do not: the control); no correct node suspects a
//! correct node; a minority of false auditors cannot frame one, and a majority can (the control
//! that the checker sees framing).

use ringvault_overlay::Config;
use ringvault_past::forge::Dropper;
use ringvault_past::{AuditConfig, Kind, MemoryStore, Past, PastConfig, PastEvent, Store};
use ringvault_testkit::TestRing;
use ringvault_types::{Duration, Id, Identity};

const N: usize = 24;

fn audits() -> AuditConfig {
    AuditConfig {
        interval: Duration::from_secs(10),
        ..AuditConfig::default()
    }
}

/// A ring where the nodes in `droppers` keep receipts and drop data and those in `liars`
/// accuse at random instead of auditing; audits on when `audit`.
fn ring(droppers: &[usize], liars: &[usize], audit: bool) -> TestRing {
    TestRing::new(N, Config::default(), |i, me, node| {
        let config = PastConfig {
            audit: audit.then(audits),
            ..PastConfig::default()
        };
        let memory: Box<dyn Store> = Box::new(MemoryStore::new(64 << 20));
        let store: Box<dyn Store> = if droppers.contains(&i) {
            Box::new(Dropper(memory))
        } else {
            memory
        };
        let key = Identity::from_secret_bytes(me.secret_bytes());
        let mut past = Past::with_config(key, store, config).unwrap();
        if liars.contains(&i) {
            past.audit_falsely();
        }
        node.add_service(Box::new(past));
    })
}

/// Inserts `n` objects of `k` replicas through nodes spread over the ring; answers their ids.
fn insert_objects(ring: &mut TestRing, n: usize, k: u8) -> Vec<Id> {
    let mut ids = Vec::new();
    for o in 0..n {
        let content = vec![o as u8; 3000 + o];
        let name = format!("object-{o}");
        let client = (o * 7) % N;
        let req = ring
            .call::<Past, _>(client, |p, kbr, now, me| {
                p.insert(kbr, now, me, &name, content, k, 0)
            })
            .unwrap();
        let now = ring.now;
        let mut done = None;
        while let Some(Some(e)) = ring.members[client]
            .node
            .with_service::<Past, _>(now, |p, _| p.poll_event())
        {
            if e.request() == req {
                done = Some(e);
            }
        }
        match done {
            Some(PastEvent::Inserted(_, Ok(ins))) => ids.push(ins.cert.id()),
            other => panic!("insert {o}: {other:?}"),
        }
    }
    ids
}

/// Correct nodes (not in `bad`) holding a good replica of `id`.
fn correct_holders(ring: &mut TestRing, id: &Id, bad: &[usize]) -> usize {
    let now = ring.now;
    (0..N)
        .filter(|i| !bad.contains(i))
        .filter(|&i| {
            ring.members[i]
                .node
                .with_service::<Past, _>(now, |p, _| {
                    p.store().get(id).ok().flatten().is_some_and(|o| {
                        o.kind != Kind::Cached && o.cert.matches_content(&o.content)
                    })
                })
                .unwrap_or(false)
        })
        .count()
}

/// For each node, how many of the nodes not in `bad` suspect it (a faulty node's suspicions
/// only change its own view).
fn suspected(ring: &mut TestRing, bad: &[usize]) -> Vec<usize> {
    let now = ring.now;
    let mut count = vec![0; N];
    for i in (0..N).filter(|i| !bad.contains(i)) {
        let suspects = ring.members[i]
            .node
            .with_service::<Past, _>(now, |p, _| p.audit_report().map(|r| r.1))
            .flatten()
            .unwrap_or_default();
        for s in suspects {
            if let Some(j) = (0..N).find(|&j| ring.id(j) == s) {
                count[j] += 1;
            }
        }
    }
    count
}

#[test]
fn a_node_that_drops_data_is_caught_and_its_objects_get_k_correct_replicas_again() {
    let dropper = [5];
    let mut ring = ring(&dropper, &[], true);
    let ids = insert_objects(&mut ring, 60, 3);
    let dropper_id = ring.id(5);
    // Objects whose k closest include the dropper: it signed receipts for them.
    let affected: Vec<Id> = ids
        .iter()
        .copied()
        .filter(|id| ring.closest_live(id, 3).contains(&5))
        .collect();
    assert!(
        affected.len() >= 3,
        "only {} objects on the dropper",
        affected.len()
    );
    ring.advance(Duration::from_secs(30 * 60));

    let suspected = suspected(&mut ring, &dropper);
    // The nodes that hold its objects with it saw it fail and pass it over; it answers "not
    // held", which nobody it never claimed an object to can hold against it, so it is not
    // suspected by a majority of its leaf set. No correct node suspects a correct node.
    assert!(
        suspected[5] >= 2,
        "the dropper is suspected by only {} nodes",
        suspected[5]
    );
    let framed: Vec<usize> = (0..N).filter(|&i| i != 5 && suspected[i] > 0).collect();
    assert!(framed.is_empty(), "correct nodes suspected: {framed:?}");
    for id in &affected {
        assert!(
            correct_holders(&mut ring, id, &dropper) >= 3,
            "object {id} has fewer than 3 correct replicas"
        );
    }
    let now = ring.now;
    let (stats, _) = ring.members[0]
        .node
        .with_service::<Past, _>(now, |p, _| p.audit_report())
        .flatten()
        .unwrap();
    assert!(stats.passed > 0, "{stats:?}");
    let _ = dropper_id;
}

#[test]
fn without_audits_the_dropped_replicas_stay_missing() {
    // The control: the same ring and objects with audits off.
    let dropper = [5];
    let mut ring = ring(&dropper, &[], false);
    let ids = insert_objects(&mut ring, 60, 3);
    ring.advance(Duration::from_secs(30 * 60));
    let short = ids
        .iter()
        .filter(|id| correct_holders(&mut ring, id, &dropper) < 3)
        .count();
    assert!(
        short >= 3,
        "only {short} objects short of 3 correct replicas"
    );
}

#[test]
fn false_auditors_cannot_frame_a_correct_node_unless_they_are_a_majority() {
    // Objects on 16 of the 24 nodes, so every liar shares objects with (and can name an
    // object held by) most nodes. Three of 24 accuse at random: no correct node becomes a
    // suspect (each correct node audits the accused itself and sees it pass).
    let liars = [2, 9, 17];
    let mut ring_few = ring(&[], &liars, true);
    insert_objects(&mut ring_few, 30, 16);
    ring_few.advance(Duration::from_secs(20 * 60));
    let suspected_few = suspected(&mut ring_few, &liars);
    let framed: Vec<usize> = (0..N)
        .filter(|i| !liars.contains(i) && suspected_few[*i] > 0)
        .collect();
    assert!(framed.is_empty(), "framed by a minority: {framed:?}");

    // Fourteen of 24 (a majority of every leaf set): correct nodes are framed. The checker
    // above would see it.
    let many: Vec<usize> = (0..14).map(|i| i * 24 / 14).collect();
    let mut ring_many = ring(&[], &many, true);
    insert_objects(&mut ring_many, 30, 16);
    ring_many.advance(Duration::from_secs(20 * 60));
    let suspected_many = suspected(&mut ring_many, &many);
    let framed = (0..N)
        .filter(|i| !many.contains(i) && suspected_many[*i] > 0)
        .count();
    assert!(framed > 0, "a majority of false auditors framed nobody");
}
