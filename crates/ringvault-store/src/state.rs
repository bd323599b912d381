//! What a store file keeps in memory: for each store in it, the index of what it holds (as of
//! every write taken, committed or not); for the file, the writes waiting for the writer and
//! how far they have come.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use ringvault_past::{Held, Kind, StoreError, StoreHealth, StoredObject};
use ringvault_types::{Contact, Id};

use crate::format::{Loaded, Tables};
use crate::redb_store::Waker;

/// A change to one store, taken by it and committed by the file's writer.
pub(crate) enum Op {
    Put(Arc<StoredObject>),
    SetKind(Id, Kind),
    Delete(Id),
    Point(Id, Contact),
    Unpoint(Id),
    /// A signed record (key, encoded).
    PutRecord(Id, Vec<u8>),
    DeleteRecord(Id),
}

impl Op {
    /// The object whose content the change touches.
    pub(crate) fn object(&self) -> Option<Id> {
        match self {
            Op::Put(o) => Some(o.cert.id()),
            Op::Delete(id) => Some(*id),
            Op::SetKind(..)
            | Op::Point(..)
            | Op::Unpoint(_)
            | Op::PutRecord(..)
            | Op::DeleteRecord(_) => None,
        }
    }

    /// The signed record it writes or deletes.
    pub(crate) fn record(&self) -> Option<Id> {
        match self {
            Op::PutRecord(key, _) | Op::DeleteRecord(key) => Some(*key),
            _ => None,
        }
    }

    /// Bytes of content (or of a record) it writes.
    pub(crate) fn bytes(&self) -> u64 {
        match self {
            Op::Put(o) => o.content.len() as u64,
            Op::PutRecord(_, r) => r.len() as u64,
            _ => 0,
        }
    }

    /// Whether losing it in a crash would break a promise: everything but a cached copy.
    pub(crate) fn needs_sync(&self) -> bool {
        !matches!(self, Op::Put(o) if o.kind == Kind::Cached)
    }
}

/// A change, its number (in the file's order) and its store.
pub(crate) struct Write {
    pub(crate) seq: u64,
    pub(crate) space: usize,
    pub(crate) op: Op,
}

/// An object's latest change not yet committed: reads answer from it.
pub(crate) struct Staged {
    /// The number of that change.
    pub(crate) seq: u64,
    /// The object as written, or `None` when deleted.
    pub(crate) obj: Option<Arc<StoredObject>>,
}

/// One store of the file.
pub(crate) struct Space {
    pub(crate) tables: Tables,
    /// Bytes of replicas the store offers.
    pub(crate) capacity: u64,
    /// Kind and size of every object, as of every write taken.
    pub(crate) index: BTreeMap<Id, (Kind, u64)>,
    pub(crate) pointers: BTreeMap<Id, Contact>,
    pub(crate) held: Held,
    pub(crate) health: StoreHealth,
    /// The disk is full (below `DISK_FULL_MARK`, or a write was refused for want of it):
    /// logged once when it happens and once when the disk has room again.
    pub(crate) disk_full: bool,
    pub(crate) staged: HashMap<Id, Staged>,
    /// The number of this store's last write taken.
    pub(crate) taken: u64,
    /// The number of this store's last write of a signed record taken.
    pub(crate) records_taken: u64,
    /// Objects whose writes failed, not yet reported to PAST.
    pub(crate) failed: Vec<(Id, u64)>,
    /// Signed records whose writes failed, not yet reported to the records service.
    pub(crate) failed_records: Vec<(Id, u64)>,
    /// The signed records found in the file at open, until the records service takes them.
    pub(crate) mutable: Vec<(Id, Vec<u8>)>,
    /// The first failure since [`crate::RedbStore::sync`] last reported one.
    pub(crate) last_error: Option<StoreError>,
    /// Called when a batch holding this store's writes ends.
    pub(crate) waker: Option<Waker>,
}

impl Space {
    pub(crate) fn new(tables: Tables, capacity: u64) -> Self {
        Space {
            tables,
            capacity,
            index: BTreeMap::new(),
            pointers: BTreeMap::new(),
            held: Held::default(),
            health: StoreHealth::default(),
            disk_full: false,
            staged: HashMap::new(),
            taken: 0,
            records_taken: 0,
            failed: Vec::new(),
            failed_records: Vec::new(),
            mutable: Vec::new(),
            last_error: None,
            waker: None,
        }
    }

    /// Drops `id` from the index; answers its size.
    pub(crate) fn forget(&mut self, id: &Id) -> Option<u64> {
        let (kind, size) = self.index.remove(id)?;
        self.held.remove(kind, size);
        Some(size)
    }

    fn set(&mut self, id: Id, kind: Kind, size: u64) {
        self.forget(&id);
        self.held.add(kind, size);
        self.index.insert(id, (kind, size));
    }

    /// Replaces the index and pointers with what the file holds (the signed records are the
    /// records service's, which keeps them in memory: they are handed over once, at open).
    pub(crate) fn load(&mut self, loaded: Loaded) {
        self.held = Held::default();
        for (kind, size) in loaded.index.values() {
            self.held.add(*kind, *size);
        }
        self.index = loaded.index;
        self.pointers = loaded.pointers;
    }

    /// What a change does to the index and pointers.
    pub(crate) fn apply(&mut self, op: &Op) {
        match op {
            Op::Put(o) => self.set(o.cert.id(), o.kind, o.content.len() as u64),
            Op::SetKind(id, kind) => {
                if let Some(&(_, size)) = self.index.get(id) {
                    self.set(*id, *kind, size);
                }
            }
            Op::Delete(id) => {
                self.forget(id);
            }
            Op::Point(id, holder) => {
                self.pointers.insert(*id, *holder);
            }
            Op::Unpoint(id) => {
                self.pointers.remove(id);
            }
            Op::PutRecord(..) | Op::DeleteRecord(_) => {}
        }
    }
}

/// Everything behind the file's lock.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) spaces: Vec<Space>,
    /// Writes taken, not yet handed to the writer, oldest first.
    pub(crate) queue: VecDeque<Write>,
    /// Content bytes of the writes taken and not yet committed.
    pub(crate) unwritten_bytes: u64,
    /// The last write number taken in the file, and the last finished (committed or failed).
    pub(crate) taken: u64,
    pub(crate) done: u64,
    /// Commits made without a sync since the last one that synced.
    pub(crate) unsynced: bool,
    /// The database is closed after an I/O error and could not be reopened yet.
    pub(crate) closed: bool,
    /// Every store of the file is dropped: the writer commits what is queued and stops.
    pub(crate) stop: bool,
    /// The writer is held (tests): it commits nothing until released.
    pub(crate) held: bool,
}

impl State {
    /// Takes a change to store `space`: numbers it, applies it to the index, stages it for
    /// reads and queues it for the writer.
    pub(crate) fn take(&mut self, space: usize, op: Op) {
        self.taken += 1;
        let seq = self.taken;
        let s = &mut self.spaces[space];
        s.taken = seq;
        if op.record().is_some() {
            s.records_taken = seq;
        }
        s.apply(&op);
        if let Some(id) = op.object() {
            let obj = match &op {
                Op::Put(o) => Some(o.clone()),
                _ => None,
            };
            s.staged.insert(id, Staged { seq, obj });
        }
        self.unwritten_bytes += op.bytes();
        self.queue.push_back(Write { seq, space, op });
    }

    /// After a batch ended (committed or failed): its changes no longer need staging.
    pub(crate) fn finished(&mut self, batch: &[Write]) {
        let Some(last) = batch.last().map(|w| w.seq) else {
            return;
        };
        for w in batch {
            self.unwritten_bytes -= w.op.bytes();
            if let Some(id) = w.op.object() {
                let staged = &mut self.spaces[w.space].staged;
                if staged.get(&id).is_some_and(|s| s.seq <= last) {
                    staged.remove(&id);
                }
            }
        }
        self.done = last;
    }

    /// Reloads every store's index from what the file holds, then applies the writes still
    /// queued (taken, not yet committed) on top.
    pub(crate) fn reload(&mut self, loaded: Vec<Loaded>) {
        for (s, l) in self.spaces.iter_mut().zip(loaded) {
            s.load(l);
        }
        for w in &self.queue {
            self.spaces[w.space].apply(&w.op);
        }
    }
}
