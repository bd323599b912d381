//! The redb store against a model: nothing acknowledged is lost across reopen or injected
//! failures, damaged copies are discarded rather than served, and foreign formats are refused.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use proptest::prelude::*;
use redb::{Database, ReadableTable, TableDefinition};
use ringvault_past::{FileCertificate, Kind, Store, StoreError, StoredObject};
use ringvault_store::{FaultyStore, OpenError, RedbStore};
use ringvault_types::{Contact, Id, Identity};

const CAPACITY: u64 = 20_000;

fn owner() -> Identity {
    Identity::from_secret_bytes([3; 32])
}

fn object(n: u8, size: usize, kind: Kind) -> StoredObject {
    let content: Vec<u8> = (0..size).map(|i| (i as u8) ^ n).collect();
    let cert = FileCertificate::issue(&owner(), &format!("obj{n}"), 0, &content, 3, 0);
    StoredObject {
        cert,
        content,
        kind,
    }
}

fn id_of(n: u8) -> Id {
    ringvault_past::object_id(&format!("obj{n}"), &owner().public_key(), 0)
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, usize, Kind),
    SetKind(u8, Kind),
    Remove(u8),
    Pointer(u8, u16),
    Reopen,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Primary),
        Just(Kind::Diverted),
        Just(Kind::Cached)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..10, 0usize..3000, kind()).prop_map(|(n, s, k)| Op::Put(n, s, k)),
        2 => (0u8..10, kind()).prop_map(|(n, k)| Op::SetKind(n, k)),
        2 => (0u8..10).prop_map(Op::Remove),
        1 => (0u8..10, any::<u16>()).prop_map(|(n, p)| Op::Pointer(n, p)),
        1 => Just(Op::Reopen),
    ]
}

/// The store with every `every`-th write failing.
fn wrap(s: RedbStore, every: u64) -> FaultyStore<RedbStore, impl FnMut(u64) -> bool + Send> {
    FaultyStore::new(s, move |n| n % every == 0)
}

type Model = BTreeMap<Id, (Vec<u8>, Kind)>;

fn check_against(store: &RedbStore, model: &Model) -> Result<(), TestCaseError> {
    let listed: Vec<(Id, Kind, u64)> = store.list().unwrap();
    let want: Vec<(Id, Kind, u64)> = model
        .iter()
        .map(|(id, (c, k))| (*id, *k, c.len() as u64))
        .collect();
    prop_assert_eq!(listed, want);
    for (id, (content, kind)) in model {
        let got = store.get(id).unwrap().expect("acknowledged object present");
        prop_assert_eq!(&got.content, content);
        prop_assert_eq!(got.kind, *kind);
    }
    let u = store.usage();
    let used: u64 = model
        .values()
        .filter(|(_, k)| *k != Kind::Cached)
        .map(|(c, _)| c.len() as u64)
        .sum();
    prop_assert_eq!(u.used, used);
    prop_assert!(u.used <= u.capacity);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random operations, one write in five failing by injection, and reopenings: the store
    /// always holds exactly what was acknowledged.
    #[test]
    fn acknowledged_writes_survive_failures_and_reopening(
        ops in proptest::collection::vec(op(), 1..40), fail_every in 3u64..7
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("objects.redb");
        let mut model: Model = BTreeMap::new();
        let mut pointers: BTreeMap<Id, Contact> = BTreeMap::new();
        let mut store = wrap(RedbStore::open(&path, CAPACITY).unwrap(), fail_every);
        for op in ops {
            match op {
                Op::Put(n, size, k) => {
                    let obj = object(n, size, k);
                    let id = obj.cert.id();
                    match store.put(obj.clone()) {
                        Ok(()) => { model.insert(id, (obj.content, k)); }
                        Err(StoreError::Full { .. } | StoreError::Io(_) | StoreError::Busy { .. }) => {}
                    }
                }
                Op::SetKind(n, k) => {
                    if store.set_kind(&id_of(n), k).is_ok() {
                        if let Some(e) = model.get_mut(&id_of(n)) { e.1 = k; }
                    }
                }
                Op::Remove(n) => {
                    if store.remove(&id_of(n)).is_ok() {
                        model.remove(&id_of(n));
                    }
                }
                Op::Pointer(n, port) => {
                    let c = Contact::new(Id::hash(&port.to_le_bytes()), SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
                    if store.put_pointer(&id_of(n), c).is_ok() {
                        pointers.insert(id_of(n), c);
                    }
                }
                Op::Reopen => {
                    drop(store);
                    let reopened = RedbStore::open(&path, CAPACITY).unwrap();
                    check_against(&reopened, &model)?;
                    store = wrap(reopened, fail_every);
                }
            }
        }
        let inner = store.into_inner();
        check_against(&inner, &model)?;
        for (id, c) in &pointers {
            prop_assert_eq!(inner.pointer(id).unwrap(), Some(*c));
        }
    }
}

const CONTENT: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("content");
const META: TableDefinition<&str, u32> = TableDefinition::new("meta");

#[test]
fn a_damaged_copy_is_discarded_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects.redb");
    let obj = object(1, 500, Kind::Primary);
    let good = object(2, 300, Kind::Primary);
    let id = obj.cert.id();
    {
        let mut s = RedbStore::open(&path, CAPACITY).unwrap();
        s.put(obj).unwrap();
        s.put(good.clone()).unwrap();
    }
    // Flip a byte of the stored content behind the store's back (bit rot).
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(CONTENT).unwrap();
            let mut bytes = t.get(id.as_bytes()).unwrap().unwrap().value().to_vec();
            bytes[10] ^= 0xff;
            t.insert(id.as_bytes(), bytes.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let s = RedbStore::open(&path, CAPACITY).unwrap();
    assert_eq!(s.meta(&id).unwrap(), Some((Kind::Primary, 500)));
    assert_eq!(s.get(&id).unwrap(), None, "a damaged copy was served");
    assert_eq!(s.health().discarded, 1);
    assert_eq!(s.meta(&id).unwrap(), None);
    assert_eq!(s.usage().used, 300);
    // The healthy neighbour is untouched.
    assert_eq!(
        s.get(&good.cert.id()).unwrap().unwrap().content,
        good.content
    );
    drop(s);
    let s = RedbStore::open(&path, CAPACITY).unwrap();
    assert_eq!(s.list().unwrap().len(), 1);
}

#[test]
fn a_store_of_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects.redb");
    drop(RedbStore::open(&path, CAPACITY).unwrap());
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format", 99).unwrap();
        txn.commit().unwrap();
    }
    match RedbStore::open(&path, CAPACITY) {
        Err(OpenError::Version { found: 99, .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a foreign format was opened"),
    }
    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, b"this is not a database").unwrap();
    assert!(matches!(
        RedbStore::open(&garbage, CAPACITY),
        Err(OpenError::Database { .. })
    ));
}

#[test]
fn the_stores_of_one_file_hold_their_own_objects_and_commit_together() {
    use ringvault_store::{StoreConfig, StoreFile};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ring.redb");
    let (a_node, b_node) = (Id::hash(b"node a"), Id::hash(b"node b"));
    let (one, two) = (object(1, 700, Kind::Primary), object(2, 900, Kind::Cached));
    {
        let file = StoreFile::open(&path, StoreConfig::new(CAPACITY)).unwrap();
        let mut a = file.store(Some(a_node)).unwrap();
        let mut b = file.store(Some(b_node)).unwrap();
        assert!(file.store(Some(a_node)).is_err(), "one store opened twice");
        drop(file);
        a.put(one.clone()).unwrap();
        b.put(two.clone()).unwrap();
        b.put(one.clone()).unwrap();
        b.remove(&one.cert.id()).unwrap();
        assert_eq!(a.get(&two.cert.id()).unwrap(), None);
        assert_eq!(b.get(&one.cert.id()).unwrap(), None);
        a.sync().unwrap();
        b.sync().unwrap();
        assert_eq!(a.progress().done, b.progress().done, "one writer for both");
    }
    let file = StoreFile::open(&path, StoreConfig::new(CAPACITY)).unwrap();
    let a = file.store(Some(a_node)).unwrap();
    let b = file.store(Some(b_node)).unwrap();
    let ids = |s: &RedbStore| -> Vec<Id> { s.list().unwrap().into_iter().map(|e| e.0).collect() };
    assert_eq!(ids(&a), vec![one.cert.id()]);
    assert_eq!(ids(&b), vec![two.cert.id()]);
    assert_eq!(a.get(&one.cert.id()).unwrap().unwrap().content, one.content);
    assert_eq!(b.usage().cached, 900);
    // The file's plain tables are a store of their own, empty here.
    assert!(file.store(None).unwrap().list().unwrap().is_empty());
}

#[test]
fn writes_beyond_what_may_wait_are_refused_as_busy_and_nothing_is_half_stored() {
    use ringvault_store::{StoreConfig, StoreFile};
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        max_waiting: 5_000,
        ..StoreConfig::new(CAPACITY)
    };
    let file = StoreFile::open(&dir.path().join("objects.redb"), config).unwrap();
    let mut s = file.store(None).unwrap();
    file.hold_writer(true);
    let (mut taken, mut busy) = (Vec::new(), Vec::new());
    for n in 0..6 {
        let o = object(n, 2_000, Kind::Primary);
        match s.put(o.clone()) {
            Ok(()) => taken.push(o),
            Err(StoreError::Busy { waiting }) => {
                assert!(waiting + 2_000 > 5_000, "busy with {waiting} bytes waiting");
                busy.push(o);
            }
            Err(e) => panic!("{e}"),
        }
    }
    // 2,000 and 4,000 bytes may wait; a third write would make 6,000.
    assert_eq!((taken.len(), busy.len()), (2, 4));
    assert_eq!(s.health().busy, 4);
    for o in &busy {
        assert_eq!(
            s.meta(&o.cert.id()).unwrap(),
            None,
            "a refused write was kept"
        );
    }
    assert!(
        s.progress().done < s.progress().taken,
        "the writer was held"
    );
    file.hold_writer(false);
    s.sync().unwrap();
    for o in &taken {
        assert_eq!(s.get(&o.cert.id()).unwrap().unwrap().content, o.content);
    }
    s.put(busy[0].clone())
        .expect("taken again once the writer caught up");
}

#[test]
fn signed_records_are_committed_with_the_objects_and_survive_reopen() {
    use ringvault_records::RecordStore;
    use ringvault_store::{StoreConfig, StoreFile};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ring.redb");
    let (a_node, b_node) = (Id::hash(b"node a"), Id::hash(b"node b"));
    let (k1, k2) = (Id::hash(b"record 1"), Id::hash(b"record 2"));
    {
        let file = StoreFile::open(&path, StoreConfig::new(CAPACITY)).unwrap();
        let mut a = file.store(Some(a_node)).unwrap();
        let b = file.store(Some(b_node)).unwrap();
        let (mut ar, mut br) = (a.records(), b.records());
        drop(file);
        assert!(ar.load().is_empty());
        ar.put(&k1, b"one".to_vec()).unwrap();
        ar.put(&k2, b"two".to_vec()).unwrap();
        ar.remove(&k2).unwrap();
        br.put(&k2, b"b's".to_vec()).unwrap();
        a.put(object(1, 700, Kind::Primary)).unwrap();
        let p = ar.progress();
        assert_eq!(p.taken, 3, "the records' own last write");
        a.sync().unwrap();
        b.sync().unwrap();
        assert!(
            ar.progress().done >= p.taken,
            "finished with the objects' batch"
        );
        assert!(ar.take_failed().is_empty());
    }
    let file = StoreFile::open(&path, StoreConfig::new(CAPACITY)).unwrap();
    let a = file.store(Some(a_node)).unwrap();
    let b = file.store(Some(b_node)).unwrap();
    assert_eq!(a.records().load(), vec![(k1, b"one".to_vec())]);
    assert_eq!(b.records().load(), vec![(k2, b"b's".to_vec())]);
    assert_eq!(a.list().unwrap().len(), 1, "the objects are there too");
}

#[test]
fn a_store_from_before_signed_records_opens_and_gains_their_table() {
    use ringvault_records::RecordStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects.redb");
    let one = object(1, 700, Kind::Primary);
    {
        let mut s = RedbStore::open(&path, CAPACITY).unwrap();
        s.put(one.clone()).unwrap();
        s.sync().unwrap();
    }
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let table: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("mutable");
        assert!(txn.delete_table(table).unwrap(), "the table existed");
        txn.commit().unwrap();
    }
    let s = RedbStore::open(&path, CAPACITY).unwrap();
    assert_eq!(s.get(&one.cert.id()).unwrap(), Some(one));
    let mut r = s.records();
    assert!(r.load().is_empty());
    r.put(&Id::hash(b"k"), b"v".to_vec()).unwrap();
    s.sync().unwrap();
}
