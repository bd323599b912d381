//! The records service end to end on a small ring of real nodes (`ringvault_testkit::TestRing`).

use ringvault_overlay::{Config, Kbr};
use ringvault_testkit::TestRing;
use ringvault_types::{Duration, Id, Identity, Record, RecordValue};

use crate::message::RecordsMessage;
use crate::records::encode;
use crate::{ReadResult, Records, RecordsConfig, RecordsError, RecordsEvent, Written};

const N: usize = 16;

fn new_ring(config: RecordsConfig) -> TestRing {
    TestRing::new(N, Config::default(), |_, identity, node| {
        let key = Identity::from_secret_bytes(identity.secret_bytes());
        node.add_service(Box::new(Records::new(key, config.clone())));
    })
}

fn owner() -> Identity {
    Identity::from_secret_bytes([42; 32])
}

fn rec(version: u64, value: &[u8]) -> Record {
    Record::sign(
        &owner(),
        "profile",
        version,
        1_000 + version,
        RecordValue::Inline(value.to_vec()),
    )
    .unwrap()
}

fn events(ring: &mut TestRing, i: usize) -> Vec<RecordsEvent> {
    ring.call::<Records, _>(i, |r, _, _, _| {
        std::iter::from_fn(|| r.poll_event()).collect()
    })
}

fn put(
    ring: &mut TestRing,
    i: usize,
    record: Record,
    quorum: Option<u8>,
) -> Result<Written, RecordsError> {
    let req = ring
        .call::<Records, _>(i, |r, kbr, now, _| r.put(kbr, now, record, quorum))
        .expect("a valid record");
    ring.advance(Duration::from_secs(12));
    events(ring, i)
        .into_iter()
        .find_map(|e| match e {
            RecordsEvent::Written(r, w) if r == req => Some(w),
            _ => None,
        })
        .expect("the write ended")
}

fn get(ring: &mut TestRing, i: usize, key: Id) -> Result<ReadResult, RecordsError> {
    let req = ring.call::<Records, _>(i, |r, kbr, now, _| r.get(kbr, now, key));
    ring.advance(Duration::from_secs(12));
    events(ring, i)
        .into_iter()
        .find_map(|e| match e {
            RecordsEvent::Read(r, x) if r == req => Some(x),
            _ => None,
        })
        .expect("the read ended")
}

fn held_version(ring: &mut TestRing, i: usize, key: Id) -> Option<u64> {
    ring.call::<Records, _>(i, |r, _, _, _| r.held(&key).map(|h| h.body.version))
}

#[test]
fn writes_reach_the_k_closest_with_signed_acks_and_reads_return_the_highest_version() {
    let mut ring = new_ring(RecordsConfig::default());
    let key = rec(1, b"one").key();
    let closest = ring.closest_live(&key, 3);
    let done = put(&mut ring, 2, rec(1, b"one"), None).unwrap();
    let mut ackers: Vec<Id> = done.acks.iter().map(|a| a.node()).collect();
    ackers.sort();
    let mut want: Vec<Id> = closest.iter().map(|&i| ring.id(i)).collect();
    want.sort();
    assert_eq!(ackers, want, "acks come from the 3 closest");
    for &i in &closest {
        assert_eq!(held_version(&mut ring, i, key), Some(1));
    }
    put(&mut ring, 5, rec(2, b"two"), None).unwrap();
    let read = get(&mut ring, 11, key).unwrap();
    assert_eq!(read.record, Some(rec(2, b"two")));
    assert!(!read.conflict);
    assert!(read.answers >= 2);
    // An older version is refused with the version held, and changes nothing.
    assert_eq!(
        put(&mut ring, 7, rec(1, b"old"), None),
        Err(RecordsError::Stale {
            version: 1,
            held: 2
        })
    );
    assert_eq!(get(&mut ring, 9, key).unwrap().record, Some(rec(2, b"two")));
    // A delete is a higher version with no value.
    let gone = Record::sign(&owner(), "profile", 3, 0, RecordValue::Deleted).unwrap();
    put(&mut ring, 3, gone.clone(), None).unwrap();
    assert_eq!(get(&mut ring, 14, key).unwrap().record, Some(gone));
    // A key nobody wrote reads as nothing.
    let none = get(&mut ring, 4, Id::hash(b"nothing here")).unwrap();
    assert_eq!(none.record, None);
}

#[test]
fn forged_records_are_refused_everywhere_and_change_nothing() {
    let mut ring = new_ring(RecordsConfig::default());
    let good = rec(1, b"good");
    let key = good.key();
    put(&mut ring, 1, good.clone(), None).unwrap();
    let mut forged = rec(5, b"evil");
    forged.body.value = RecordValue::Inline(b"EVIL".to_vec());
    // The client API refuses it before sending anything.
    assert!(matches!(
        ring.call::<Records, _>(6, |r, kbr, now, _| r.put(kbr, now, forged.clone(), None)),
        Err(RecordsError::Invalid(_))
    ));
    // Another owner's key under this owner's name: its own key, so its own (empty) record.
    let other = Identity::from_secret_bytes([43; 32]);
    let theirs = Record::sign(&other, "profile", 9, 0, RecordValue::Inline(b"x".to_vec())).unwrap();
    assert_ne!(theirs.key(), key, "a record's key includes its owner");
    // Sent straight to each replica (as a liar would), the forged record is refused.
    let closest = ring.closest_live(&key, 3);
    let replicas: Vec<_> = closest
        .iter()
        .map(|&i| ring.members[i].node.contact())
        .collect();
    ring.call::<Records, _>(6, move |_, kbr: &mut dyn Kbr, _, _| {
        for to in replicas {
            let m = RecordsMessage::Store {
                req: None,
                record: forged.clone(),
            };
            kbr.send_direct(to, encode(&m));
        }
    });
    for &i in &closest {
        assert_eq!(held_version(&mut ring, i, key), Some(1));
    }
    assert_eq!(get(&mut ring, 12, key).unwrap().record, Some(good));
}

#[test]
fn a_conflict_is_resolved_alike_everywhere_and_reported() {
    let mut ring = new_ring(RecordsConfig::default());
    let (a, b) = (rec(4, b"from laptop"), rec(4, b"from phone"));
    let key = a.key();
    let (winner, loser) = if a.precedence(&b).replaces() {
        (a, b)
    } else {
        (b, a)
    };
    put(&mut ring, 1, loser.clone(), None).unwrap();
    put(&mut ring, 2, winner.clone(), None).unwrap();
    let read = get(&mut ring, 8, key).unwrap();
    assert_eq!(read.record, Some(winner.clone()));
    assert!(read.conflict, "the conflict is reported");
    // Writing the loser again is refused as a conflict.
    assert_eq!(
        put(&mut ring, 3, loser, None),
        Err(RecordsError::Conflict(4))
    );
    // A higher version settles it.
    put(&mut ring, 4, rec(5, b"settled"), None).unwrap();
    assert!(!get(&mut ring, 9, key).unwrap().conflict);
}

#[test]
fn a_read_repairs_a_lagging_replica_and_survives_two_of_three_replicas_dead() {
    for repair in [true, false] {
        let config = RecordsConfig {
            read_repair: repair,
            ..RecordsConfig::default()
        };
        let mut ring = new_ring(config);
        let key = rec(1, b"v1").key();
        let closest = ring.closest_live(&key, 3);
        let writer = (0..N).find(|i| !closest.contains(i)).unwrap();
        put(&mut ring, writer, rec(2, b"v2"), None).unwrap();
        // One replica lags (it was away when version 2 was written).
        let lagging = closest[2];
        ring.call::<Records, _>(lagging, |r, _, _, _| r.force_hold(rec(1, b"v1")));
        assert_eq!(held_version(&mut ring, lagging, key), Some(1));
        let read = get(&mut ring, 13, key).unwrap();
        assert_eq!(read.record, Some(rec(2, b"v2")));
        let now = held_version(&mut ring, lagging, key);
        if repair {
            assert_eq!(now, Some(2), "the read repaired the lagging replica");
        } else {
            // Negative control: without read repair it stays behind.
            assert_eq!(now, Some(1));
        }
    }

    // A write at a quorum of 2 is done with one replica dead.
    let mut ring = new_ring(RecordsConfig::default());
    let key = rec(1, b"v1").key();
    let closest = ring.closest_live(&key, 3);
    ring.kill(closest[2]);
    let writer = (0..N).find(|i| !closest.contains(i)).unwrap();
    let w = put(&mut ring, writer, rec(1, b"v1"), Some(2)).unwrap();
    assert!(w.acks.len() >= 2);

    // Two of the three replicas dead: a read still returns the latest version (from the one
    // left, once the route has found its way past the dead ones), and a new write reaches the
    // three closest live nodes.
    let mut ring = new_ring(RecordsConfig::default());
    let key = rec(1, b"v1").key();
    let closest = ring.closest_live(&key, 3);
    let writer = (0..N).find(|i| !closest.contains(i)).unwrap();
    put(&mut ring, writer, rec(3, b"latest"), None).unwrap();
    ring.kill(closest[0]);
    ring.kill(closest[1]);
    let reader = (0..N).find(|i| !closest.contains(i)).unwrap();
    let read = get(&mut ring, reader, key).unwrap();
    assert_eq!(read.record, Some(rec(3, b"latest")));
    let w = put(&mut ring, reader, rec(4, b"more"), None).unwrap();
    let mut ackers: Vec<Id> = w.acks.iter().map(|a| a.node()).collect();
    ackers.sort();
    let mut live: Vec<Id> = ring
        .closest_live(&key, 3)
        .iter()
        .map(|&i| ring.id(i))
        .collect();
    live.sort();
    assert_eq!(ackers, live);
}

#[test]
fn maintenance_brings_a_record_back_to_k_replicas_after_one_dies() {
    let mut ring = new_ring(RecordsConfig::default());
    let record = rec(7, b"kept");
    let key = record.key();
    let before = ring.closest_live(&key, 4);
    let writer = (0..N).find(|i| !before.contains(i)).unwrap();
    put(&mut ring, writer, record, None).unwrap();
    let newcomer = before[3];
    assert_eq!(held_version(&mut ring, newcomer, key), None);
    ring.kill(before[0]);
    // Failure detection, the leaf set change, then the replicas' sync.
    ring.advance(Duration::from_secs(30));
    let after = ring.closest_live(&key, 3);
    assert!(after.contains(&newcomer));
    for &i in &after {
        assert_eq!(held_version(&mut ring, i, key), Some(7), "node {i}");
    }
    // A node outside the replica set is not made to hold a record sent to it unasked.
    let outsider = (0..N)
        .find(|i| !before.contains(i) && *i != writer)
        .unwrap();
    let to = ring.members[outsider].node.contact();
    let r = rec(8, b"pushed");
    ring.call::<Records, _>(writer, move |_, kbr: &mut dyn Kbr, _, _| {
        let m = RecordsMessage::Store {
            req: None,
            record: r,
        };
        kbr.send_direct(to, encode(&m));
    });
    assert_eq!(held_version(&mut ring, outsider, key), None);
}

#[test]
fn a_replica_refuses_records_beyond_its_capacity_and_keeps_what_it_holds() {
    let size = rec(1, &[0; 100]).encode().len() as u64;
    let config = RecordsConfig {
        capacity: 2 * size + size / 2,
        ..RecordsConfig::default()
    };
    let mut ring = new_ring(config);
    let name = |i: u64| format!("n{i}");
    let mk = |i: u64, v: u64| {
        Record::sign(&owner(), &name(i), v, 0, RecordValue::Inline(vec![0; 100])).unwrap()
    };
    // Records whose replica sets share node `full`: it takes two, then refuses a third.
    let full = ring.closest_live(&mk(0, 1).key(), 1)[0];
    let mut mine = Vec::new();
    for i in 0..500u64 {
        if ring.closest_live(&mk(i, 1).key(), 3).contains(&full) {
            mine.push(i);
        }
        if mine.len() == 3 {
            break;
        }
    }
    let writer = (0..N).find(|&i| i != full).unwrap();
    for &i in &mine[..2] {
        put(&mut ring, writer, mk(i, 1), None).unwrap();
    }
    assert!(matches!(
        put(&mut ring, writer, mk(mine[2], 1), None),
        Err(RecordsError::NoSpace | RecordsError::Timeout { .. })
    ));
    let used = ring.call::<Records, _>(full, |r, _, _, _| r.used());
    assert!(used <= 2 * size + size / 2, "{used}");
    assert_eq!(held_version(&mut ring, full, mk(mine[0], 1).key()), Some(1));
    // A newer version of a record it holds, the same size, still fits.
    put(&mut ring, writer, mk(mine[0], 2), None).unwrap();
    assert_eq!(held_version(&mut ring, full, mk(mine[0], 1).key()), Some(2));
}

#[test]
fn maintenance_settles_replicas_that_hold_different_records_of_one_version() {
    let mut ring = new_ring(RecordsConfig::default());
    let (a, b) = (rec(4, b"from laptop"), rec(4, b"from phone"));
    let (winner, loser) = if a.precedence(&b).replaces() {
        (a, b)
    } else {
        (b, a)
    };
    let key = winner.key();
    let closest = ring.closest_live(&key, 3);
    let writer = (0..N).find(|i| !closest.contains(i)).unwrap();
    put(&mut ring, writer, loser.clone(), None).unwrap();
    // One replica came by the winner some other way (a write that reached it alone).
    ring.call::<Records, _>(closest[1], |r, _, _, _| r.force_hold(winner.clone()));
    ring.advance(Duration::from_secs(70));
    for &i in &closest {
        let held = ring.call::<Records, _>(i, |r, _, _, _| r.held(&key).cloned());
        assert_eq!(held.as_ref(), Some(&winner), "node {i}");
    }
}
