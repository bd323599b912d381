//! A store wrapper that fails chosen operations, for testing that nothing acknowledged is lost.

use ringvault_past::{Kind, Store, StoreError, StoreHealth, StoredObject, Usage, WriteProgress};
use ringvault_types::{Contact, Id};

/// Wraps a store and fails every write whose sequence number `fail` picks, before it reaches
/// the inner store (so a failed write changes nothing, as the trait promises).
pub struct FaultyStore<S, F> {
    inner: S,
    fail: F,
    writes: u64,
}

impl<S: Store, F: FnMut(u64) -> bool + Send> FaultyStore<S, F> {
    /// Wraps `inner`; `fail(n)` decides whether the n-th write fails.
    pub fn new(inner: S, fail: F) -> Self {
        FaultyStore {
            inner,
            fail,
            writes: 0,
        }
    }

    /// The wrapped store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn check(&mut self) -> Result<(), StoreError> {
        self.writes += 1;
        if (self.fail)(self.writes) {
            Err(StoreError::Io(format!(
                "injected failure of write {}",
                self.writes
            )))
        } else {
            Ok(())
        }
    }
}

impl<S: Store, F: FnMut(u64) -> bool + Send> Store for FaultyStore<S, F> {
    fn usage(&self) -> Usage {
        self.inner.usage()
    }
    fn put(&mut self, obj: StoredObject) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put(obj)
    }
    fn get(&self, id: &Id) -> Result<Option<StoredObject>, StoreError> {
        self.inner.get(id)
    }
    fn meta(&self, id: &Id) -> Result<Option<(Kind, u64)>, StoreError> {
        self.inner.meta(id)
    }
    fn set_kind(&mut self, id: &Id, kind: Kind) -> Result<(), StoreError> {
        self.check()?;
        self.inner.set_kind(id, kind)
    }
    fn remove(&mut self, id: &Id) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.remove(id)
    }
    fn list(&self) -> Result<Vec<(Id, Kind, u64)>, StoreError> {
        self.inner.list()
    }
    fn put_pointer(&mut self, id: &Id, holder: Contact) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_pointer(id, holder)
    }
    fn pointer(&self, id: &Id) -> Result<Option<Contact>, StoreError> {
        self.inner.pointer(id)
    }
    fn remove_pointer(&mut self, id: &Id) -> Result<(), StoreError> {
        self.check()?;
        self.inner.remove_pointer(id)
    }
    fn health(&self) -> StoreHealth {
        self.inner.health()
    }
    fn progress(&self) -> WriteProgress {
        self.inner.progress()
    }
    fn take_failed(&mut self) -> Vec<(Id, u64)> {
        self.inner.take_failed()
    }
}
