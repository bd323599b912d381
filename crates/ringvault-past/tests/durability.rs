//! What a store receipt promises, against a model disk whose writes finish when the test says
//! (as the redb store's writer finishes them, in batches on its own thread) and which can lose
//! power (every write not yet synced is gone):
//! - no receipt leaves a node before its store says the write is done, and a write that fails
//!   gives the client a refusal, never a receipt;
//! - `sync` (a write is done once synced): a power cut loses no acknowledged replica;
//! - a store with too much waiting to be written refuses as busy: the client hears `Busy`,
//!   and nothing is diverted (the ring has room; one node is behind);
//! - `replicated` (done once written in memory): a power cut of one node loses its unsynced
//!   replicas, yet every object keeps k - 1, and maintenance restores k. The same check that
//!   finds nothing lost under `sync` finds these losses (its negative control).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use ringvault_overlay::Config;
use ringvault_past::{
    Inserted, Kind, MemoryStore, Past, PastError, PastEvent, Store, StoreError, StoreHealth,
    StoredObject, Usage, WriteProgress,
};
use ringvault_testkit::TestRing;
use ringvault_types::{Contact, Duration, Id, Identity};

/// When a write counts as done, as `--durability` says.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sync,
    Replicated,
}

/// One node's disk.
struct Disk {
    mode: Mode,
    /// What reads see.
    now: MemoryStore,
    /// What survives a power cut.
    synced: MemoryStore,
    /// Writes taken so far, with the object each wrote (if any).
    taken: Vec<Option<Id>>,
    /// Writes synced so far.
    synced_upto: u64,
    /// Finished writes that failed, not yet reported.
    failed: Vec<(Id, u64)>,
    /// The writer is behind: object writes are refused as busy.
    busy: bool,
}

impl Disk {
    fn new(mode: Mode) -> Self {
        Disk {
            mode,
            now: MemoryStore::new(64 << 20),
            synced: MemoryStore::new(64 << 20),
            taken: Vec::new(),
            synced_upto: 0,
            failed: Vec::new(),
            busy: false,
        }
    }

    /// The writer syncs everything taken; the writes of `fail` fail (they stay in memory
    /// here: PAST must still not vouch for them).
    fn sync(&mut self, fail: Option<Id>) {
        for seq in self.synced_upto + 1..=self.taken.len() as u64 {
            if let Some(id) = self.taken[seq as usize - 1].filter(|id| Some(*id) == fail) {
                self.failed.push((id, seq));
            }
        }
        self.synced = self.now.clone();
        self.synced_upto = self.taken.len() as u64;
    }

    /// Power lost: what was not synced is gone.
    fn power_cut(&mut self) {
        self.now = self.synced.clone();
        self.taken.truncate(self.synced_upto as usize);
    }
}

/// A node's store on its [`Disk`] (shared with the test, which plays the writer).
struct DiskStore(Arc<Mutex<Disk>>);

impl DiskStore {
    fn write<T>(
        &mut self,
        id: Option<Id>,
        f: impl FnOnce(&mut MemoryStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut d = self.0.lock().unwrap();
        if d.busy && id.is_some() {
            return Err(StoreError::Busy { waiting: 1 << 20 });
        }
        let r = f(&mut d.now)?;
        d.taken.push(id);
        Ok(r)
    }

    fn read<T>(&self, f: impl FnOnce(&MemoryStore) -> T) -> T {
        f(&self.0.lock().unwrap().now)
    }
}

impl Store for DiskStore {
    fn usage(&self) -> Usage {
        self.read(|s| s.usage())
    }
    fn put(&mut self, obj: StoredObject) -> Result<(), StoreError> {
        let id = obj.cert.id();
        self.write(Some(id), |s| s.put(obj))
    }
    fn get(&self, id: &Id) -> Result<Option<StoredObject>, StoreError> {
        self.read(|s| s.get(id))
    }
    fn meta(&self, id: &Id) -> Result<Option<(Kind, u64)>, StoreError> {
        self.read(|s| s.meta(id))
    }
    fn set_kind(&mut self, id: &Id, kind: Kind) -> Result<(), StoreError> {
        self.write(None, |s| s.set_kind(id, kind))
    }
    fn remove(&mut self, id: &Id) -> Result<u64, StoreError> {
        self.write(None, |s| s.remove(id))
    }
    fn list(&self) -> Result<Vec<(Id, Kind, u64)>, StoreError> {
        self.read(|s| s.list())
    }
    fn put_pointer(&mut self, id: &Id, holder: Contact) -> Result<(), StoreError> {
        self.write(None, |s| s.put_pointer(id, holder))
    }
    fn pointer(&self, id: &Id) -> Result<Option<Contact>, StoreError> {
        self.read(|s| s.pointer(id))
    }
    fn remove_pointer(&mut self, id: &Id) -> Result<(), StoreError> {
        self.write(None, |s| s.remove_pointer(id))
    }
    fn health(&self) -> StoreHealth {
        StoreHealth::default()
    }
    fn progress(&self) -> WriteProgress {
        let d = self.0.lock().unwrap();
        let taken = d.taken.len() as u64;
        let done = match d.mode {
            Mode::Sync => d.synced_upto,
            Mode::Replicated => taken,
        };
        WriteProgress { taken, done }
    }
    fn take_failed(&mut self) -> Vec<(Id, u64)> {
        std::mem::take(&mut self.0.lock().unwrap().failed)
    }
}

struct Ring {
    ring: TestRing,
    disks: Vec<Arc<Mutex<Disk>>>,
}

const K: u8 = 3;

impl Ring {
    fn new(n: usize, mode: Mode) -> Self {
        let mut disks = Vec::new();
        let ring = TestRing::new(n, Config::default(), |_, me, node| {
            let disk = Arc::new(Mutex::new(Disk::new(mode)));
            disks.push(disk.clone());
            let key = Identity::from_secret_bytes(me.secret_bytes());
            let past = Past::new(key, Box::new(DiskStore(disk))).unwrap();
            node.add_service(Box::new(past));
        });
        Ring { ring, disks }
    }

    fn events(&mut self, i: usize) -> Vec<PastEvent> {
        let now = self.ring.now;
        let mut out = Vec::new();
        while let Some(Some(e)) = self.ring.members[i]
            .node
            .with_service::<Past, _>(now, |p, _| p.poll_event())
        {
            out.push(e);
        }
        out
    }

    /// Every node's writer syncs (failing `fail`'s write on node `on`); the nodes then act.
    fn sync_all(&mut self, fail: Option<(usize, Id)>) {
        for (i, d) in self.disks.iter().enumerate() {
            let f = fail.filter(|(n, _)| *n == i).map(|(_, id)| id);
            d.lock().unwrap().sync(f);
        }
        self.ring.advance(Duration::from_millis(10));
    }

    /// Inserts `name` from node 0, the writers syncing as the insert goes on.
    fn insert(&mut self, name: &str) -> Inserted {
        self.insert_dated(name, 0)
    }

    /// Like [`Ring::insert`], signed on `date` (a retry of a given-up insert is signed later).
    fn insert_dated(&mut self, name: &str, date: u64) -> Inserted {
        self.ring
            .call::<Past, _>(0, |p, kbr, now, me| {
                p.insert(kbr, now, me, name, name.as_bytes().to_vec(), K, date)
            })
            .expect("the insert starts");
        for _ in 0..50 {
            if let Some(e) = self.events(0).into_iter().next() {
                match e {
                    PastEvent::Inserted(_, Ok(ins)) => return ins,
                    other => panic!("insert {name}: {other:?}"),
                }
            }
            self.sync_all(None);
        }
        panic!("insert {name} did not finish");
    }

    /// Node `v` loses power and comes back: its PAST starts again from what its disk kept.
    fn power_cut(&mut self, v: usize) {
        self.disks[v].lock().unwrap().power_cut();
        let key = Identity::from_secret_bytes(self.ring.members[v].identity.secret_bytes());
        let past = Past::new(key, Box::new(DiskStore(self.disks[v].clone()))).unwrap();
        self.ring.members[v].node.add_service(Box::new(past));
    }

    /// Whether node `i` holds a replica of `id`.
    fn holds(&self, i: usize, id: &Id) -> bool {
        let d = self.disks[i].lock().unwrap();
        matches!(
            d.now.meta(id),
            Ok(Some((Kind::Primary | Kind::Diverted, _)))
        )
    }

    fn index_of(&self, node: Id) -> usize {
        (0..self.disks.len())
            .find(|&i| self.ring.id(i) == node)
            .expect("a ring member")
    }

    /// Acknowledged replicas no longer held: (object, node) for every receipt whose node has
    /// lost the copy.
    fn lost(&self, acked: &[Inserted]) -> Vec<(Id, usize)> {
        let mut lost = Vec::new();
        for ins in acked {
            let id = ins.cert.id();
            for r in &ins.receipts {
                let i = self.index_of(r.body.node);
                if !self.holds(i, &id) {
                    lost.push((id, i));
                }
            }
        }
        lost
    }

    /// The number of nodes holding a replica of `id`.
    fn replicas(&self, id: &Id) -> usize {
        (0..self.disks.len()).filter(|&i| self.holds(i, id)).count()
    }

    /// The node that gave the most receipts.
    fn busiest(&self, acked: &[Inserted]) -> usize {
        (1..self.disks.len())
            .max_by_key(|&i| {
                let me = self.ring.id(i);
                acked
                    .iter()
                    .filter(|a| a.receipts.iter().any(|r| r.body.node == me))
                    .count()
            })
            .expect("nodes")
    }
}

const DATA: &[u8] = b"a receipt is a promise";

#[test]
fn receipts_wait_until_the_write_is_done() {
    let mut r = Ring::new(12, Mode::Sync);
    let req = r
        .ring
        .call::<Past, _>(0, |p, kbr, now, me| {
            p.insert(kbr, now, me, "gated", DATA.to_vec(), K, 0)
        })
        .expect("the insert starts");
    // Every replica has taken the write, none has synced it: no receipt may have left.
    let holders = (0..12)
        .filter(|&i| !r.disks[i].lock().unwrap().taken.is_empty())
        .count();
    assert!(holders >= K as usize, "replicas stored: {holders}");
    assert!(
        r.events(0).is_empty(),
        "the insert finished before any store had finished its write"
    );

    r.sync_all(None);
    let done = r.events(0);
    let Some(PastEvent::Inserted(id, Ok(ins))) = done.first() else {
        panic!("the insert did not finish once the writes were done: {done:?}");
    };
    assert_eq!(*id, req);
    assert_eq!(ins.receipts.len(), K as usize);
}

#[test]
fn a_failed_write_is_refused_and_never_vouched_for() {
    let mut r = Ring::new(12, Mode::Sync);
    let owner = r.ring.members[0].identity.public_key();
    let id = ringvault_past::object_id("fails-once", &owner, 0);
    let replicas = r.ring.closest_live(&id, K as usize);
    let bad = *replicas
        .iter()
        .find(|&&i| i != 0)
        .expect("a remote replica");
    let bad_id = r.ring.id(bad);
    r.ring
        .call::<Past, _>(0, |p, kbr, now, me| {
            p.insert(kbr, now, me, "fails-once", DATA.to_vec(), K, 0)
        })
        .expect("the insert starts");
    r.sync_all(Some((bad, id)));
    // The client re-sends to the wider replica set; the writers sync those writes too.
    let mut finished = None;
    for _ in 0..100 {
        r.sync_all(None);
        r.ring.advance(Duration::from_millis(100));
        if let Some(e) = r.events(0).into_iter().next() {
            finished = Some(e);
            break;
        }
    }
    let receipts_from: BTreeSet<Id> = match finished {
        Some(PastEvent::Inserted(_, Ok(ins))) => ins.receipts.iter().map(|r| r.body.node).collect(),
        other => panic!("the insert did not complete around the failed write: {other:?}"),
    };
    assert!(
        !receipts_from.contains(&bad_id),
        "node {bad} vouched for a write that failed"
    );
    assert_eq!(receipts_from.len(), K as usize, "{receipts_from:?}");
}

#[test]
fn under_sync_a_power_cut_loses_no_acknowledged_replica() {
    let mut r = Ring::new(12, Mode::Sync);
    let acked: Vec<Inserted> = (0..30).map(|n| r.insert(&format!("sync-{n}"))).collect();
    // Writes in flight when the power goes: taken, not synced, so never acknowledged.
    for n in 0..5 {
        r.ring
            .call::<Past, _>(0, |p, kbr, now, me| {
                p.insert(kbr, now, me, &format!("in-flight-{n}"), DATA.to_vec(), K, 0)
            })
            .expect("the insert starts");
    }
    assert!(
        r.events(0).is_empty(),
        "an insert finished before its writes were synced"
    );
    let v = r.busiest(&acked);
    r.power_cut(v);
    assert_eq!(
        r.lost(&acked),
        vec![],
        "node {v} lost acknowledged replicas"
    );
}

#[test]
fn under_replicated_a_power_cut_loses_one_nodes_last_writes_and_maintenance_restores_k() {
    let mut r = Ring::new(12, Mode::Replicated);
    let acked: Vec<Inserted> = (0..30).map(|n| r.insert(&format!("repl-{n}"))).collect();
    // Acknowledged at once: nothing has been synced when the power goes.
    let v = r.busiest(&acked);
    r.power_cut(v);
    let lost = r.lost(&acked);
    assert!(
        !lost.is_empty() && lost.iter().all(|(_, i)| *i == v),
        "the check must see node {v}'s unsynced replicas gone: {lost:?}"
    );
    for ins in &acked {
        let id = ins.cert.id();
        assert!(
            r.replicas(&id) >= K as usize - 1,
            "{id} kept {} replicas",
            r.replicas(&id)
        );
    }
    // Anti-entropy (every minute) finds node v short and sends its replicas back.
    for _ in 0..3 {
        r.ring.advance(Duration::from_secs(61));
        r.sync_all(None);
    }
    for ins in &acked {
        let id = ins.cert.id();
        assert!(
            r.replicas(&id) >= K as usize,
            "{id} is back on {} nodes only",
            r.replicas(&id)
        );
    }
    assert_eq!(
        r.lost(&acked),
        vec![],
        "maintenance did not restore node {v}"
    );
}

#[test]
fn a_busy_store_makes_the_insert_fail_as_busy_without_diverting() {
    let mut r = Ring::new(12, Mode::Sync);
    let owner = r.ring.members[0].identity.public_key();
    let id = ringvault_past::object_id("behind", &owner, 0);
    let replicas = r.ring.closest_live(&id, K as usize);
    let behind = *replicas
        .iter()
        .find(|&&i| i != 0)
        .expect("a remote replica");
    r.disks[behind].lock().unwrap().busy = true;
    r.ring
        .call::<Past, _>(0, |p, kbr, now, me| {
            p.insert(kbr, now, me, "behind", b"behind".to_vec(), K, 0)
        })
        .expect("the insert starts");
    r.sync_all(None);
    let done = r.events(0);
    assert!(
        matches!(
            done.first(),
            Some(PastEvent::Inserted(_, Err(PastError::Busy)))
        ),
        "{done:?}"
    );
    for i in 0..12 {
        let kind = r.disks[i].lock().unwrap().now.meta(&id).unwrap();
        assert_ne!(
            kind.map(|k| k.0),
            Some(Kind::Diverted),
            "node {i} took a diverted replica for a node that was only busy"
        );
    }
    // Once it has caught up, the insert tried again (signed later) goes through.
    r.disks[behind].lock().unwrap().busy = false;
    let ins = r.insert_dated("behind", 1);
    assert_eq!(ins.receipts.len(), K as usize);
}
