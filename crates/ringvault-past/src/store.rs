//! The storage a PAST node needs, as a trait: the redb implementation lives in
//! `ringvault-store`; [`MemoryStore`] serves tests and the simulator.

use std::collections::BTreeMap;

use ringvault_types::{Contact, Id};

use crate::FileCertificate;

/// Why a copy is held.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    /// This node is one of the k closest to the object: it must keep it.
    Primary,
    /// Held for a primary that lacked space: it must keep it while the pointer stands.
    Diverted,
    /// A copy cached in otherwise unused space; evictable at any time.
    Cached,
}

/// A stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// Its certificate.
    pub cert: FileCertificate,
    /// Its content.
    pub content: Vec<u8>,
    /// Why it is held.
    pub kind: Kind,
}

/// What ran out when a store had no room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceLimit {
    /// The space the node offers the ring (`--capacity`).
    Capacity,
    /// The filesystem under the store.
    Disk,
}

impl std::fmt::Display for SpaceLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SpaceLimit::Capacity => "the node's capacity",
            SpaceLimit::Disk => "the disk",
        })
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Not enough free space; nothing was changed. PAST treats it as a full node (diversion).
    #[error("not enough free space on {limit}: {needed} bytes needed, {free} free")]
    Full {
        /// Bytes the operation needed.
        needed: u64,
        /// Bytes free.
        free: u64,
        /// What ran out.
        limit: SpaceLimit,
    },
    /// Too much is waiting to be written already; nothing was changed. Try again shortly:
    /// the store is catching up.
    #[error("the store is busy: {waiting} bytes are waiting to be written")]
    Busy {
        /// Bytes taken and not yet committed.
        waiting: u64,
    },
    /// The underlying storage failed; nothing was changed.
    #[error("storage failure: {0}")]
    Io(String),
}

/// Space accounting of a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Advertised capacity in bytes.
    pub capacity: u64,
    /// Bytes held as primary or diverted replicas.
    pub used: u64,
    /// Bytes held as cache.
    pub cached: u64,
    /// Bytes the filesystem under the store can still take for it (this store's share of it,
    /// less a reserve), when the store lives on one.
    pub disk_free: Option<u64>,
}

impl Usage {
    /// Bytes a new replica may use: the capacity not used by replicas (cache counts as free:
    /// it is evicted on demand), and never more than the disk really has.
    pub fn free(&self) -> u64 {
        let budget = self.capacity.saturating_sub(self.used);
        self.disk_free.map_or(budget, |d| budget.min(d))
    }
}

/// The bytes a store holds, as it accounts them: replicas (primary and diverted) count
/// against its capacity, cached copies do not (they are evicted on demand). One account for
/// every store implementation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Bytes of primary and diverted replicas.
    pub replicas: u64,
    /// Bytes of cached copies.
    pub cached: u64,
}

impl Held {
    fn slot(&mut self, kind: Kind) -> &mut u64 {
        match kind {
            Kind::Cached => &mut self.cached,
            Kind::Primary | Kind::Diverted => &mut self.replicas,
        }
    }

    /// Counts `size` bytes held as `kind`.
    pub fn add(&mut self, kind: Kind, size: u64) {
        *self.slot(kind) += size;
    }

    /// Stops counting `size` bytes held as `kind`.
    pub fn remove(&mut self, kind: Kind, size: u64) {
        let slot = self.slot(kind);
        *slot = slot.saturating_sub(size);
    }

    /// Whether replacing what is held of an object (`old`: kind and size, if anything) by
    /// `new` keeps the replicas within `capacity`; [`StoreError::Full`] if not.
    pub fn admits(
        &self,
        capacity: u64,
        old: Option<(Kind, u64)>,
        new: (Kind, u64),
    ) -> Result<(), StoreError> {
        let replica = |m: (Kind, u64)| if m.0 == Kind::Cached { 0 } else { m.1 };
        let after = self.replicas.saturating_sub(old.map_or(0, replica)) + replica(new);
        if after > capacity {
            return Err(StoreError::Full {
                needed: new.1,
                free: capacity.saturating_sub(self.replicas),
                limit: SpaceLimit::Capacity,
            });
        }
        Ok(())
    }
}

/// What went wrong in a store since it was opened, for operators (`/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// Writes refused because the disk (not the capacity budget) had no room.
    pub disk_full: u64,
    /// Operations that failed with an I/O error.
    pub io_errors: u64,
    /// Times the store reopened its database after an I/O error, without a restart.
    pub reopened: u64,
    /// Copies found damaged on read and discarded (never served).
    pub discarded: u64,
    /// Writes refused because too much was waiting to be written (back-pressure).
    pub busy: u64,
}

/// How far a store's writes have come. Writes are numbered 1, 2, ... in the order the store
/// takes them; a store that completes each write before returning is always done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteProgress {
    /// The number of the last write taken.
    pub taken: u64,
    /// Every write up to this number is finished: durable as the store promises, or failed
    /// (and then reported by [`Store::take_failed`]).
    pub done: u64,
}

/// Object storage for one node.
///
/// A write (`put`, `set_kind`, `remove`, the pointer calls) that returns `Ok` is taken: reads
/// see it at once, and it is finished when [`Store::progress`] says so. A store may finish
/// writes later, off the caller's thread (the redb store commits them in batches); what a
/// receipt promises waits for that. A write that fails after being taken is undone and its
/// object reported by [`Store::take_failed`]. A write that returns an error changed nothing.
pub trait Store: Send {
    /// Space accounting.
    fn usage(&self) -> Usage;

    /// Stores an object (replacing any copy with the same id). Fails with
    /// [`StoreError::Full`] when replicas would exceed the capacity; cache is not evicted here.
    fn put(&mut self, obj: StoredObject) -> Result<(), StoreError>;

    /// Reads an object. A store that finds a copy damaged discards it and answers `None`:
    /// a bad copy is never served.
    fn get(&self, id: &Id) -> Result<Option<StoredObject>, StoreError>;

    /// Why and how large an object is held, without reading it.
    fn meta(&self, id: &Id) -> Result<Option<(Kind, u64)>, StoreError>;

    /// Changes why an object is held (for example primary to cached after the ring changed).
    fn set_kind(&mut self, id: &Id, kind: Kind) -> Result<(), StoreError>;

    /// Removes an object; returns the bytes freed.
    fn remove(&mut self, id: &Id) -> Result<u64, StoreError>;

    /// Every object held: id, kind and size.
    fn list(&self) -> Result<Vec<(Id, Kind, u64)>, StoreError>;

    /// Records that a diverted replica of `id` lives on `holder`.
    fn put_pointer(&mut self, id: &Id, holder: Contact) -> Result<(), StoreError>;

    /// The node holding the diverted replica of `id`, if this node pointed one there.
    fn pointer(&self, id: &Id) -> Result<Option<Contact>, StoreError>;

    /// Drops a pointer.
    fn remove_pointer(&mut self, id: &Id) -> Result<(), StoreError>;

    /// Faults since the store was opened.
    fn health(&self) -> StoreHealth {
        StoreHealth::default()
    }

    /// How far the writes have come. The default suits a store whose writes finish before
    /// they return.
    fn progress(&self) -> WriteProgress {
        WriteProgress::default()
    }

    /// The objects whose taken writes failed since the last call, with the number of the last
    /// such write: all of them at or below the `done` of a [`Store::progress`] asked before
    /// this call. The store has undone them (the object is as before the write, or absent).
    fn take_failed(&mut self) -> Vec<(Id, u64)> {
        Vec::new()
    }
}

/// A store in memory: for tests and the simulator.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    capacity: u64,
    objects: BTreeMap<Id, StoredObject>,
    pointers: BTreeMap<Id, Contact>,
    held: Held,
}

impl MemoryStore {
    /// An empty store advertising `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        MemoryStore {
            capacity,
            ..Default::default()
        }
    }
}

impl Store for MemoryStore {
    fn usage(&self) -> Usage {
        Usage {
            capacity: self.capacity,
            used: self.held.replicas,
            cached: self.held.cached,
            disk_free: None,
        }
    }

    fn put(&mut self, obj: StoredObject) -> Result<(), StoreError> {
        let size = obj.content.len() as u64;
        let old = self
            .objects
            .get(&obj.cert.id())
            .map(|o| (o.kind, o.content.len() as u64));
        self.held.admits(self.capacity, old, (obj.kind, size))?;
        if let Some((k, s)) = old {
            self.held.remove(k, s);
        }
        self.held.add(obj.kind, size);
        self.objects.insert(obj.cert.id(), obj);
        Ok(())
    }

    fn get(&self, id: &Id) -> Result<Option<StoredObject>, StoreError> {
        Ok(self.objects.get(id).cloned())
    }

    fn meta(&self, id: &Id) -> Result<Option<(Kind, u64)>, StoreError> {
        Ok(self
            .objects
            .get(id)
            .map(|o| (o.kind, o.content.len() as u64)))
    }

    fn set_kind(&mut self, id: &Id, kind: Kind) -> Result<(), StoreError> {
        let Some(o) = self.objects.get(id) else {
            return Ok(());
        };
        let (old, size) = (o.kind, o.content.len() as u64);
        if old == kind {
            return Ok(());
        }
        self.held
            .admits(self.capacity, Some((old, size)), (kind, size))?;
        self.held.remove(old, size);
        self.held.add(kind, size);
        self.objects.get_mut(id).expect("present").kind = kind;
        Ok(())
    }

    fn remove(&mut self, id: &Id) -> Result<u64, StoreError> {
        match self.objects.remove(id) {
            Some(o) => {
                let size = o.content.len() as u64;
                self.held.remove(o.kind, size);
                Ok(size)
            }
            None => Ok(0),
        }
    }

    fn list(&self) -> Result<Vec<(Id, Kind, u64)>, StoreError> {
        Ok(self
            .objects
            .iter()
            .map(|(id, o)| (*id, o.kind, o.content.len() as u64))
            .collect())
    }

    fn put_pointer(&mut self, id: &Id, holder: Contact) -> Result<(), StoreError> {
        self.pointers.insert(*id, holder);
        Ok(())
    }

    fn pointer(&self, id: &Id) -> Result<Option<Contact>, StoreError> {
        Ok(self.pointers.get(id).copied())
    }

    fn remove_pointer(&mut self, id: &Id) -> Result<(), StoreError> {
        self.pointers.remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringvault_types::Identity;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, usize, Kind),
        SetKind(u8, Kind),
        Remove(u8),
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
            (0u8..12, 0usize..400, kind()).prop_map(|(n, s, k)| Op::Put(n, s, k)),
            (0u8..12, kind()).prop_map(|(n, k)| Op::SetKind(n, k)),
            (0u8..12).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Random operations against a plain map: contents agree, accounting adds up, replicas
        /// never exceed capacity, and a refused operation changes nothing.
        #[test]
        fn memory_store_matches_a_model(ops in proptest::collection::vec(op(), 0..80)) {
            let owner = Identity::from_secret_bytes([1; 32]);
            let mut store = MemoryStore::new(1000);
            let mut model: BTreeMap<Id, (Vec<u8>, Kind)> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put(n, size, k) => {
                        let content = vec![n; size];
                        let cert = FileCertificate::issue(&owner, &n.to_string(), 0, &content, 3, 0);
                        let id = cert.id();
                        let before = store.usage();
                        match store.put(StoredObject { cert, content: content.clone(), kind: k }) {
                            Ok(()) => { model.insert(id, (content, k)); }
                            Err(StoreError::Full { .. }) => prop_assert_eq!(store.usage(), before),
                            Err(e) => prop_assert!(false, "unexpected {e}"),
                        }
                    }
                    Op::SetKind(n, k) => {
                        let cert = FileCertificate::issue(&owner, &n.to_string(), 0, &[], 3, 0);
                        if store.set_kind(&cert.id(), k).is_ok() {
                            if let Some(e) = model.get_mut(&cert.id()) { e.1 = k; }
                        }
                    }
                    Op::Remove(n) => {
                        let cert = FileCertificate::issue(&owner, &n.to_string(), 0, &[], 3, 0);
                        let freed = store.remove(&cert.id()).unwrap();
                        let expect = model.remove(&cert.id()).map_or(0, |(c, _)| c.len() as u64);
                        prop_assert_eq!(freed, expect);
                    }
                }
                let u = store.usage();
                prop_assert!(u.used <= u.capacity);
                let used: u64 = model.values().filter(|(_, k)| *k != Kind::Cached).map(|(c, _)| c.len() as u64).sum();
                let cached: u64 = model.values().filter(|(_, k)| *k == Kind::Cached).map(|(c, _)| c.len() as u64).sum();
                prop_assert_eq!((u.used, u.cached), (used, cached));
                let listed: Vec<(Id, Kind, u64)> = store.list().unwrap();
                let want: Vec<(Id, Kind, u64)> = model.iter().map(|(id, (c, k))| (*id, *k, c.len() as u64)).collect();
                prop_assert_eq!(listed, want);
            }
        }
    }
}
