//! The records service end to end on a small ring of real nodes (`ringvault_testkit::TestRing`).

use ringvault_overlay::{Config, Kbr};
use ringvault_testkit::TestRing;
use ringvault_types::{Duration, Id, Identity, Record, RecordValue};

use crate::message::RecordsMessage;
use crate::records::encode;
use ringvault_overlay::Service;

use crate::{
    MemoryRecordStore, ReadResult, RecordStore, Records, RecordsConfig, RecordsError, RecordsEvent,
    Written,
};

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

/// The write's acknowledgements came from exactly the nodes `closest`.
fn assert_acked_by_closest(ring: &TestRing, done: &Written, closest: &[usize]) {
    let mut ackers: Vec<Id> = done.acks.iter().map(|a| a.node()).collect();
    ackers.sort();
    let mut want: Vec<Id> = closest.iter().map(|&i| ring.id(i)).collect();
    want.sort();
    assert_eq!(ackers, want, "acks come from the {} closest", closest.len());
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
    assert_acked_by_closest(&ring, &done, &closest);
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

/// A ring whose nodes keep their records in memory stores the test holds on to.
fn ring_with_stores(config: RecordsConfig) -> (TestRing, Vec<MemoryRecordStore>) {
    let stores: Vec<MemoryRecordStore> = (0..N).map(|_| MemoryRecordStore::default()).collect();
    let s = stores.clone();
    let ring = TestRing::new(N, Config::default(), move |i, identity, node| {
        let key = Identity::from_secret_bytes(identity.secret_bytes());
        let store = Box::new(s[i].clone());
        let away = Some(Duration::ZERO);
        node.add_service(Box::new(Records::with_store(
            key,
            config.clone(),
            store,
            away,
        )));
    });
    (ring, stores)
}

/// A copy of what `store` holds now, apart from it.
fn snapshot(store: &mut MemoryRecordStore) -> MemoryRecordStore {
    let mut copy = MemoryRecordStore::default();
    for (key, bytes) in store.load() {
        copy.put(&key, bytes).unwrap();
    }
    copy
}

/// Node `i` restarts its records service from `store`, `away` from the ring for that long,
/// and is back in its leaf set.
fn restart(
    ring: &mut TestRing,
    i: usize,
    config: RecordsConfig,
    store: MemoryRecordStore,
    away: Option<Duration>,
) {
    reload(ring, i, config, store, away);
    rejoin(ring, i);
}

/// Node `i`'s records service starts again from `store` (not yet back in its leaf set).
fn reload(
    ring: &mut TestRing,
    i: usize,
    config: RecordsConfig,
    store: MemoryRecordStore,
    away: Option<Duration>,
) {
    ring.call::<Records, _>(i, |r, _, _, identity| {
        let key = Identity::from_secret_bytes(identity.secret_bytes());
        *r = Records::with_store(key, config, Box::new(store), away);
    });
}

/// Node `i` is back in its leaf set (the update upcall).
fn rejoin(ring: &mut TestRing, i: usize) {
    ring.call::<Records, _>(i, |r, kbr, now, _| {
        let me = kbr.local_contact();
        r.update(kbr, now, me, true);
    });
}

#[test]
fn records_survive_a_restart_through_their_store() {
    let config = RecordsConfig::default();
    let (mut ring, mut stores) = ring_with_stores(config.clone());
    put(&mut ring, 2, rec(1, b"one"), None).unwrap();
    put(&mut ring, 3, rec(2, b"two"), None).unwrap();
    let key = rec(2, b"two").key();
    let replica = ring.closest_live(&key, 3)[0];
    assert_eq!(stores[replica].len(), 1, "the replica wrote it through");
    let kept = snapshot(&mut stores[replica]);
    restart(
        &mut ring,
        replica,
        config,
        kept,
        Some(Duration::from_secs(600)),
    );
    assert_eq!(
        held_version(&mut ring, replica, key),
        Some(2),
        "served at once after a short absence"
    );
}

#[test]
fn a_record_deleted_while_a_replica_was_away_long_does_not_come_back() {
    let config = RecordsConfig {
        max_absence: Duration::from_secs(600),
        ..RecordsConfig::default()
    };
    let (mut ring, mut stores) = ring_with_stores(config.clone());
    let kept = rec(1, b"kept");
    // A replica of both: the root of `kept` and of a record found to share it.
    let replica = ring.closest_live(&kept.key(), 3)[0];
    let doomed = (0..)
        .map(|n| {
            let name = format!("doomed-{n}");
            Record::sign(&owner(), &name, 1, 0, RecordValue::Inline(b"x".to_vec())).unwrap()
        })
        .find(|d| ring.closest_live(&d.key(), 3)[0] == replica)
        .unwrap();
    put(&mut ring, 1, kept.clone(), None).unwrap();
    put(&mut ring, 1, doomed.clone(), None).unwrap();
    let before = snapshot(&mut stores[replica]);
    assert_eq!(before.len(), 2);
    ring.kill(replica);
    // The delete, while it is away; every replica holds the tombstone, then drops it once
    // all have held it for max_absence.
    let gone = Record::sign(
        &owner(),
        doomed.body.name.as_str(),
        2,
        0,
        RecordValue::Deleted,
    )
    .unwrap();
    put(&mut ring, 4, gone, Some(2)).unwrap();
    ring.advance(Duration::from_secs(5 * 60));
    let holders = ring.closest_live(&doomed.key(), 3);
    for &i in &holders {
        assert_eq!(
            held_version(&mut ring, i, doomed.key()),
            Some(2),
            "tombstone kept"
        );
    }
    ring.advance(Duration::from_secs(12 * 60));
    for &i in &holders {
        assert_eq!(
            held_version(&mut ring, i, doomed.key()),
            None,
            "tombstone dropped"
        );
        assert!(stores[i].len() <= 1, "and removed from the store");
    }

    // Back after longer than max_absence: it asks the members what they hold. They hold the
    // kept record (confirmed), and a majority of them hold nothing of the doomed one (dropped).
    ring.members[replica].alive = true;
    restart(
        &mut ring,
        replica,
        config.clone(),
        snapshot(&mut before.clone()),
        None,
    );
    assert_eq!(held_version(&mut ring, replica, kept.key()), Some(1));
    assert_eq!(held_version(&mut ring, replica, doomed.key()), None);
    assert_eq!(ring.call::<Records, _>(replica, |r, _, _, _| r.count()), 1);
    ring.advance(crate::RECHECK_PERIOD + Duration::from_secs(60));
    assert_eq!(
        held_version(&mut ring, replica, kept.key()),
        Some(1),
        "confirmed by the replicas that hold it"
    );
    assert_eq!(
        ring.call::<Records, _>(replica, |r, _, _, _| r.suspect()),
        0
    );
    ring.advance(Duration::from_secs(3 * 60));
    assert_eq!(
        get(&mut ring, 9, doomed.key()).unwrap().record,
        None,
        "not back to life"
    );
    assert_eq!(held_version(&mut ring, replica, doomed.key()), None);

    // Negative control: trusted after a short absence, the old version does come back, which
    // is what the re-check is for.
    restart(
        &mut ring,
        replica,
        config,
        before,
        Some(Duration::from_secs(60)),
    );
    ring.advance(Duration::from_secs(3 * 60));
    assert_eq!(
        get(&mut ring, 9, doomed.key()).unwrap().record,
        Some(doomed),
        "without the re-check the deleted record is back"
    );
}

/// A store whose writes finish only when the test says, or fail.
#[derive(Clone, Default)]
struct SlowStore(std::sync::Arc<std::sync::Mutex<Slow>>);

/// Writes taken, writes done, failures not yet reported, the last key written.
type Slow = (u64, u64, Vec<(Id, u64)>, Option<Id>);

impl RecordStore for SlowStore {
    fn load(&mut self) -> Vec<(Id, Vec<u8>)> {
        Vec::new()
    }
    fn put(&mut self, key: &Id, _: Vec<u8>) -> Result<(), ringvault_past::StoreError> {
        let mut s = self.0.lock().unwrap();
        s.0 += 1;
        s.3 = Some(*key);
        Ok(())
    }
    fn remove(&mut self, _: &Id) -> Result<(), ringvault_past::StoreError> {
        Ok(())
    }
    fn progress(&self) -> ringvault_past::WriteProgress {
        let s = self.0.lock().unwrap();
        ringvault_past::WriteProgress {
            taken: s.0,
            done: s.1,
        }
    }
    fn take_failed(&mut self) -> Vec<(Id, u64)> {
        std::mem::take(&mut self.0.lock().unwrap().2)
    }
}

impl SlowStore {
    /// Finishes every write taken; `fail`: as failed.
    fn finish(&self, fail: bool) {
        let mut s = self.0.lock().unwrap();
        s.1 = s.0;
        if fail {
            let (key, seq) = (s.3.unwrap(), s.0);
            s.2.push((key, seq));
        }
    }
}

#[test]
fn an_ack_waits_for_the_store_and_a_failed_write_is_refused() {
    let stores: Vec<SlowStore> = (0..N).map(|_| SlowStore::default()).collect();
    let s = stores.clone();
    let mut ring = TestRing::new(N, Config::default(), move |i, identity, node| {
        let key = Identity::from_secret_bytes(identity.secret_bytes());
        let store = Box::new(s[i].clone());
        let records = Records::with_store(key, RecordsConfig::default(), store, None);
        node.add_service(Box::new(records));
    });
    let record = rec(1, b"one");
    let replicas = ring.closest_live(&record.key(), 3);
    let req = ring
        .call::<Records, _>(0, |r, kbr, now, _| r.put(kbr, now, record.clone(), None))
        .unwrap();
    ring.advance(Duration::from_secs(2));
    assert!(
        events(&mut ring, 0).is_empty(),
        "no ack before the stores finish"
    );
    for &i in &replicas[..2] {
        stores[i].finish(false);
    }
    stores[replicas[2]].finish(true);
    ring.advance(Duration::from_secs(2));
    let ended = events(&mut ring, 0);
    assert_eq!(
        ended,
        vec![RecordsEvent::Written(req, Err(RecordsError::NoSpace))],
        "the replica whose write failed refuses"
    );
    assert_eq!(held_version(&mut ring, replicas[2], record.key()), None);
    assert_eq!(held_version(&mut ring, replicas[0], record.key()), Some(1));
}

#[test]
fn a_newer_late_answer_is_sent_to_the_replicas_that_answered_with_less() {
    let run = |read_repair: bool| -> (Option<u64>, Vec<Option<u64>>) {
        let config = RecordsConfig {
            read_quorum: Some(1),
            read_repair,
            ..RecordsConfig::default()
        };
        let mut ring = new_ring(config);
        let key = rec(1, b"one").key();
        put(&mut ring, 2, rec(1, b"one"), None).unwrap();
        let replicas = ring.closest_live(&key, 3);
        // The farthest replica alone got version 2 (the others missed the write).
        let newer = rec(2, b"two");
        ring.call::<Records, _>(replicas[2], |r, _, _, _| r.force_hold(newer));
        let reader = (0..N).find(|i| !replicas.contains(i)).unwrap();
        // The root answers first, so a read that ends at one answer returns version 1.
        let read = get(&mut ring, reader, key).unwrap();
        let held = replicas
            .iter()
            .map(|&i| held_version(&mut ring, i, key))
            .collect();
        (read.record.map(|r| r.body.version), held)
    };
    let (returned, held) = run(true);
    assert_eq!(returned, Some(1), "the first answer ends the read");
    assert_eq!(
        held,
        vec![Some(2); 3],
        "the later, newer answer reached the others"
    );
    // Without read repair the replicas stay as they were: what the test checks can fail.
    let (_, held) = run(false);
    assert_eq!(held, vec![Some(1), Some(1), Some(2)]);
}

#[test]
fn in_secure_mode_writes_and_reads_reach_every_member_through_secure_routing() {
    let config = RecordsConfig {
        secure: true,
        ..RecordsConfig::default()
    };
    let overlay = Config {
        secure: true,
        ..Config::default()
    };
    let mut ring = TestRing::new(N, overlay, |_, identity, node| {
        let key = Identity::from_secret_bytes(identity.secret_bytes());
        node.add_service(Box::new(Records::new(key, config.clone())));
    });
    let key = rec(1, b"one").key();
    let closest = ring.closest_live(&key, 3);
    let done = put(&mut ring, 2, rec(1, b"one"), None).unwrap();
    assert_acked_by_closest(&ring, &done, &closest);
    put(&mut ring, 9, rec(2, b"two"), None).unwrap();
    let read = get(&mut ring, 13, key).unwrap();
    assert_eq!(read.record, Some(rec(2, b"two")));
    assert!(
        read.answers >= 2,
        "a majority of members answered themselves"
    );
    assert_eq!(
        put(&mut ring, 6, rec(1, b"old"), None),
        Err(RecordsError::Stale {
            version: 1,
            held: 2
        })
    );
}

#[test]
fn a_ring_down_as_a_whole_longer_than_max_absence_keeps_its_records() {
    let config = RecordsConfig::default();
    let (mut ring, mut stores) = ring_with_stores(config.clone());
    let record = rec(1, b"one");
    put(&mut ring, 2, record.clone(), None).unwrap();
    // Every replica comes back after an unknown time: nobody can vouch for anything.
    let replicas = ring.closest_live(&record.key(), 3);
    for &i in &replicas {
        let kept = snapshot(&mut stores[i]);
        reload(&mut ring, i, config.clone(), kept, None);
    }
    for &i in &replicas {
        rejoin(&mut ring, i);
        assert_eq!(held_version(&mut ring, i, record.key()), None, "suspect");
    }
    ring.advance(crate::RECHECK_PERIOD + Duration::from_secs(60));
    for &i in &replicas {
        assert_eq!(
            held_version(&mut ring, i, record.key()),
            Some(1),
            "no member could contradict it: served again"
        );
    }
}

#[test]
fn a_node_the_replica_set_moved_away_from_takes_the_delete_and_lets_its_copy_go() {
    let (mut ring, _stores) = ring_with_stores(RecordsConfig::default());
    let record = rec(1, b"one");
    put(&mut ring, 2, record.clone(), None).unwrap();
    let key = record.key();
    // A node outside the set still holding version 1 (it was a member before the set moved).
    let members = ring.closest_live(&key, 3);
    let outsider = ring.closest_live(&key, 4)[3];
    ring.call::<Records, _>(outsider, |r, _, _, _| r.force_hold(record.clone()));
    let gone = Record::sign(&owner(), "profile", 2, 0, RecordValue::Deleted).unwrap();
    put(&mut ring, 5, gone, None).unwrap();
    // Its offers get the delete back; then the members say they hold it, and it lets go.
    ring.advance(Duration::from_secs(3 * 60));
    for &i in &members {
        assert_eq!(held_version(&mut ring, i, key), Some(2));
    }
    let left = ring.call::<Records, _>(outsider, |r, _, _, _| r.count());
    assert_eq!(left, 0, "the outsider's copy is gone, not offered back");
}
