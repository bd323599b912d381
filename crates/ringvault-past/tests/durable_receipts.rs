//! A store receipt promises a finished write: with a store that finishes its writes later (as
//! the redb store does, batched on its own thread), no receipt leaves a node before its store
//! says the write is done, and a write that fails gives the client a refusal, never a receipt.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use ringvault_overlay::Config;
use ringvault_past::{
    Kind, MemoryStore, Past, PastEvent, Store, StoreError, StoreHealth, StoredObject, Usage,
    WriteProgress,
};
use ringvault_testkit::TestRing;
use ringvault_types::{Contact, Duration, Id, Identity};

/// What the test decides about one node's writes.
#[derive(Default)]
struct Gate {
    /// Writes taken so far, with the object each wrote (if any).
    taken: Vec<Option<Id>>,
    /// Writes finished so far.
    done: u64,
    /// Finished writes that failed, not yet reported.
    failed: Vec<(Id, u64)>,
}

impl Gate {
    /// Finishes every write taken; those of `fail` fail.
    fn finish(&mut self, fail: Option<Id>) {
        for seq in self.done + 1..=self.taken.len() as u64 {
            if let Some(id) = self.taken[seq as usize - 1].filter(|id| Some(*id) == fail) {
                self.failed.push((id, seq));
            }
        }
        self.done = self.taken.len() as u64;
    }
}

/// A memory store whose writes finish only when the test says so. (A failed write stays in
/// the inner store here; PAST must still not vouch for it.)
struct GatedStore {
    inner: MemoryStore,
    gate: Arc<Mutex<Gate>>,
}

impl GatedStore {
    fn took(&self, id: Option<Id>) {
        self.gate.lock().unwrap().taken.push(id);
    }
}

impl Store for GatedStore {
    fn usage(&self) -> Usage {
        self.inner.usage()
    }
    fn put(&mut self, obj: StoredObject) -> Result<(), StoreError> {
        let id = obj.cert.id();
        self.inner.put(obj)?;
        self.took(Some(id));
        Ok(())
    }
    fn get(&self, id: &Id) -> Result<Option<StoredObject>, StoreError> {
        self.inner.get(id)
    }
    fn meta(&self, id: &Id) -> Result<Option<(Kind, u64)>, StoreError> {
        self.inner.meta(id)
    }
    fn set_kind(&mut self, id: &Id, kind: Kind) -> Result<(), StoreError> {
        self.inner.set_kind(id, kind)?;
        self.took(None);
        Ok(())
    }
    fn remove(&mut self, id: &Id) -> Result<u64, StoreError> {
        let freed = self.inner.remove(id)?;
        self.took(None);
        Ok(freed)
    }
    fn list(&self) -> Result<Vec<(Id, Kind, u64)>, StoreError> {
        self.inner.list()
    }
    fn put_pointer(&mut self, id: &Id, holder: Contact) -> Result<(), StoreError> {
        self.inner.put_pointer(id, holder)?;
        self.took(None);
        Ok(())
    }
    fn pointer(&self, id: &Id) -> Result<Option<Contact>, StoreError> {
        self.inner.pointer(id)
    }
    fn remove_pointer(&mut self, id: &Id) -> Result<(), StoreError> {
        self.inner.remove_pointer(id)?;
        self.took(None);
        Ok(())
    }
    fn health(&self) -> StoreHealth {
        self.inner.health()
    }
    fn progress(&self) -> WriteProgress {
        let g = self.gate.lock().unwrap();
        WriteProgress {
            taken: g.taken.len() as u64,
            done: g.done,
        }
    }
    fn take_failed(&mut self) -> Vec<(Id, u64)> {
        std::mem::take(&mut self.gate.lock().unwrap().failed)
    }
}

fn ring(n: usize) -> (TestRing, Vec<Arc<Mutex<Gate>>>) {
    let mut gates = Vec::new();
    let ring = TestRing::new(n, Config::default(), |_, me, node| {
        let gate = Arc::new(Mutex::new(Gate::default()));
        gates.push(gate.clone());
        let store = GatedStore {
            inner: MemoryStore::new(64 << 20),
            gate,
        };
        let key = Identity::from_secret_bytes(me.secret_bytes());
        node.add_service(Box::new(Past::new(key, Box::new(store)).unwrap()));
    });
    (ring, gates)
}

fn events(ring: &mut TestRing, i: usize) -> Vec<PastEvent> {
    let now = ring.now;
    let mut out = Vec::new();
    while let Some(Some(e)) = ring.members[i]
        .node
        .with_service::<Past, _>(now, |p, _| p.poll_event())
    {
        out.push(e);
    }
    out
}

/// Finishes every node's writes (failing `fail`'s on node `on`), then lets the nodes act.
fn finish_writes(ring: &mut TestRing, gates: &[Arc<Mutex<Gate>>], fail: Option<(usize, Id)>) {
    for (i, g) in gates.iter().enumerate() {
        let f = fail.filter(|(n, _)| *n == i).map(|(_, id)| id);
        g.lock().unwrap().finish(f);
    }
    ring.advance(Duration::from_millis(10));
}

const DATA: &[u8] = b"a receipt is a promise";

#[test]
fn receipts_wait_until_the_write_is_done() {
    let (mut ring, gates) = ring(12);
    let req = ring.call::<Past, _>(0, |p, kbr, now, me| {
        p.insert(kbr, now, me, "gated", DATA.to_vec(), 3, 0)
    });
    // Every replica has taken the write, none has finished it: no receipt may have left.
    let holders: Vec<usize> = (0..12)
        .filter(|&i| {
            let id = gates[i].lock().unwrap().taken.iter().flatten().count();
            id > 0
        })
        .collect();
    assert!(holders.len() >= 3, "replicas stored: {holders:?}");
    assert!(
        events(&mut ring, 0).is_empty(),
        "the insert finished before any store had finished its write"
    );

    finish_writes(&mut ring, &gates, None);
    let done = events(&mut ring, 0);
    let Some(PastEvent::Inserted(r, Ok(ins))) = done.first() else {
        panic!("the insert did not finish once the writes were done: {done:?}");
    };
    assert_eq!(*r, req);
    assert_eq!(ins.receipts.len(), 3);
}

#[test]
fn a_failed_write_is_refused_and_never_vouched_for() {
    let (mut ring, gates) = ring(12);
    let id = ringvault_past::object_id("fails-once", &ring.members[0].identity.public_key(), 0);
    let replicas = ring.closest_live(&id, 3);
    let bad = *replicas
        .iter()
        .find(|&&i| i != 0)
        .expect("a remote replica");
    let bad_id = ring.id(bad);
    ring.call::<Past, _>(0, |p, kbr, now, me| {
        p.insert(kbr, now, me, "fails-once", DATA.to_vec(), 3, 0)
    });
    finish_writes(&mut ring, &gates, Some((bad, id)));
    // The client re-sends to the wider replica set; finish those writes too.
    let mut receipts_from = BTreeSet::new();
    let mut finished = None;
    for _ in 0..100 {
        finish_writes(&mut ring, &gates, None);
        ring.advance(Duration::from_millis(100));
        if let Some(e) = events(&mut ring, 0).into_iter().next() {
            finished = Some(e);
            break;
        }
    }
    match finished {
        Some(PastEvent::Inserted(_, Ok(ins))) => {
            receipts_from.extend(ins.receipts.iter().map(|r| r.body.node));
        }
        other => panic!("the insert did not complete around the failed write: {other:?}"),
    }
    assert!(
        !receipts_from.contains(&bad_id),
        "node {bad} vouched for a write that failed"
    );
    assert_eq!(receipts_from.len(), 3, "{receipts_from:?}");
}
