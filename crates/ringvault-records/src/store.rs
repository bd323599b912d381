//! Where a node's records live between restarts, as a trait: the redb implementation
//! (`ringvault_store::RedbRecords`) shares the node's object store file, so records and objects
//! are committed together. The service keeps every record it holds in memory as well; the store
//! is written through and read once, at start.

use ringvault_past::{StoreError, WriteProgress};
use ringvault_types::Id;

/// Persistent storage of one node's records.
///
/// A write that returns `Ok` is taken and finished when [`RecordStore::progress`] says so (an
/// acknowledgement waits for that); one that fails after being taken is reported by
/// [`RecordStore::take_failed`]. A write that returns an error changed nothing.
pub trait RecordStore: Send {
    /// The records stored when the node started, encoded, by key (once: later calls answer
    /// nothing). They are checked by the service, which drops any that do not verify.
    fn load(&mut self) -> Vec<(Id, Vec<u8>)>;

    /// Stores the encoded record under `key`, replacing what was there.
    fn put(&mut self, key: &Id, record: Vec<u8>) -> Result<(), StoreError>;

    /// Removes the record under `key`.
    fn remove(&mut self, key: &Id) -> Result<(), StoreError>;

    /// How far the writes have come; the default suits a store that finishes each write before
    /// it returns.
    fn progress(&self) -> WriteProgress {
        WriteProgress::default()
    }

    /// The records whose taken writes (puts and removals) failed since the last call, with the
    /// write's number.
    fn take_failed(&mut self) -> Vec<(Id, u64)> {
        Vec::new()
    }
}

/// Records in memory, surviving a "restart" of the service that uses them (tests, the
/// simulator): the store is shared with whoever keeps a clone.
#[derive(Clone, Debug, Default)]
pub struct MemoryRecordStore {
    records: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<Id, Vec<u8>>>>,
}

impl MemoryRecordStore {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<Id, Vec<u8>>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

impl RecordStore for MemoryRecordStore {
    fn load(&mut self) -> Vec<(Id, Vec<u8>)> {
        self.map().iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    fn put(&mut self, key: &Id, record: Vec<u8>) -> Result<(), StoreError> {
        self.map().insert(*key, record);
        Ok(())
    }

    fn remove(&mut self, key: &Id) -> Result<(), StoreError> {
        self.map().remove(key);
        Ok(())
    }
}
