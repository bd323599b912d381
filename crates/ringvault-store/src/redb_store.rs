//! The redb-backed store.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use ringvault_past::{FileCertificate, Kind, Store, StoreError, StoredObject, Usage};
use ringvault_types::{Contact, Id};

/// The on-disk format this build reads and writes. A database of another version is refused
/// at open, never silently reinterpreted.
pub const FORMAT_VERSION: u32 = 1;

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
/// id -> postcard(Record): certificate and kind, small.
const RECORDS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("records");
/// id -> content bytes.
const CONTENT: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("content");
/// id -> postcard(Contact): where a diverted replica lives.
const POINTERS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("pointers");

#[derive(Serialize, Deserialize)]
struct Record {
    cert: FileCertificate,
    kind: Kind,
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database file could not be opened or created.
    #[error("cannot open the object store at {path}: {source}")]
    Database {
        /// The file.
        path: String,
        /// What redb said.
        source: Box<redb::Error>,
    },
    /// The file was written by another format version.
    #[error("the object store at {path} has format version {found}, this build reads {FORMAT_VERSION}; use a matching ringvault or move the data directory aside")]
    Version {
        /// The file.
        path: String,
        /// The version found.
        found: u32,
    },
    /// A record could not be decoded: the file is damaged.
    #[error("the object store at {path} is damaged: {detail}")]
    Damaged {
        /// The file.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

/// Objects in a redb database file. Writes are acknowledged only after commit.
pub struct RedbStore {
    db: Database,
    capacity: u64,
    /// In a cell because a read that finds a damaged copy discards it (reads take `&self`).
    state: RefCell<State>,
}

/// What the store keeps in memory, in step with what is committed.
#[derive(Default)]
struct State {
    /// Kind and size of every object, loaded at open.
    index: BTreeMap<Id, (Kind, u64)>,
    used: u64,
    cached: u64,
    discarded: u64,
}

impl State {
    fn account(&mut self, kind: Kind, size: u64, add: bool) {
        let slot = match kind {
            Kind::Cached => &mut self.cached,
            Kind::Primary | Kind::Diverted => &mut self.used,
        };
        if add {
            *slot += size;
        } else {
            *slot -= size;
        }
    }

    fn forget(&mut self, id: &Id) -> Option<u64> {
        let (kind, size) = self.index.remove(id)?;
        self.account(kind, size, false);
        Some(size)
    }
}

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the store in file `path`, advertising `capacity` bytes.
    pub fn open(path: &Path, capacity: u64) -> Result<Self, OpenError> {
        let p = path.display().to_string();
        let dberr = |e: redb::Error| OpenError::Database {
            path: p.clone(),
            source: Box::new(e),
        };
        let db = Database::create(path).map_err(|e| dberr(e.into()))?;
        let txn = db.begin_write().map_err(|e| dberr(e.into()))?;
        let mut index = BTreeMap::new();
        {
            let mut meta = txn.open_table(META).map_err(|e| dberr(e.into()))?;
            let found = meta
                .get("format")
                .map_err(|e| dberr(e.into()))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert("format", FORMAT_VERSION)
                        .map_err(|e| dberr(e.into()))?;
                }
                Some(v) if v == FORMAT_VERSION => {}
                Some(found) => return Err(OpenError::Version { path: p, found }),
            }
            txn.open_table(CONTENT).map_err(|e| dberr(e.into()))?;
            txn.open_table(POINTERS).map_err(|e| dberr(e.into()))?;
            let records = txn.open_table(RECORDS).map_err(|e| dberr(e.into()))?;
            for entry in records.iter().map_err(|e| dberr(e.into()))? {
                let (k, v) = entry.map_err(|e| dberr(e.into()))?;
                let rec: Record =
                    postcard::from_bytes(v.value()).map_err(|e| OpenError::Damaged {
                        path: p.clone(),
                        detail: format!("record {}: {e}", Id::from_bytes(*k.value())),
                    })?;
                index.insert(Id::from_bytes(*k.value()), (rec.kind, rec.cert.body.size));
            }
        }
        txn.commit().map_err(|e| dberr(e.into()))?;
        let mut state = State::default();
        for (kind, size) in index.values() {
            state.account(*kind, *size, true);
        }
        state.index = index;
        Ok(RedbStore {
            db,
            capacity,
            state: RefCell::new(state),
        })
    }

    /// Copies found damaged on read and discarded since open.
    pub fn discarded(&self) -> u64 {
        self.state.borrow().discarded
    }

    fn delete(&self, id: &Id) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            txn.open_table(RECORDS)
                .map_err(io)?
                .remove(id.as_bytes())
                .map_err(io)?;
            txn.open_table(CONTENT)
                .map_err(io)?
                .remove(id.as_bytes())
                .map_err(io)?;
        }
        txn.commit().map_err(io)
    }

    /// Reads and checks one object; `Ok(None)` when absent or damaged.
    fn read(&self, id: &Id) -> Result<Option<StoredObject>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let records = txn.open_table(RECORDS).map_err(io)?;
        let Some(rec) = records.get(id.as_bytes()).map_err(io)? else {
            return Ok(None);
        };
        let content = txn.open_table(CONTENT).map_err(io)?;
        let Some(bytes) = content.get(id.as_bytes()).map_err(io)? else {
            return Ok(None);
        };
        let Ok(rec) = postcard::from_bytes::<Record>(rec.value()) else {
            return Ok(None);
        };
        let content = bytes.value().to_vec();
        if rec.cert.id() != *id || rec.cert.verify_content(&content).is_err() {
            return Ok(None);
        }
        Ok(Some(StoredObject {
            cert: rec.cert,
            content,
            kind: rec.kind,
        }))
    }
}

impl Store for RedbStore {
    fn usage(&self) -> Usage {
        let s = self.state.borrow();
        Usage {
            capacity: self.capacity,
            used: s.used,
            cached: s.cached,
        }
    }

    fn put(&mut self, obj: StoredObject) -> Result<(), StoreError> {
        let id = obj.cert.id();
        let size = obj.content.len() as u64;
        let used = self.state.borrow().used;
        let old = self.state.borrow().index.get(&id).copied();
        let old_replica = old.filter(|(k, _)| *k != Kind::Cached).map_or(0, |o| o.1);
        let new_replica = if obj.kind == Kind::Cached { 0 } else { size };
        if used - old_replica + new_replica > self.capacity {
            return Err(StoreError::Full {
                needed: size,
                free: self.capacity.saturating_sub(used),
            });
        }
        let record = postcard::to_allocvec(&Record {
            cert: obj.cert,
            kind: obj.kind,
        })
        .map_err(io)?;
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut records = txn.open_table(RECORDS).map_err(io)?;
            records
                .insert(id.as_bytes(), record.as_slice())
                .map_err(io)?;
            let mut content = txn.open_table(CONTENT).map_err(io)?;
            content
                .insert(id.as_bytes(), obj.content.as_slice())
                .map_err(io)?;
        }
        txn.commit().map_err(io)?;
        let mut s = self.state.borrow_mut();
        s.forget(&id);
        s.account(obj.kind, size, true);
        s.index.insert(id, (obj.kind, size));
        Ok(())
    }

    fn get(&self, id: &Id) -> Result<Option<StoredObject>, StoreError> {
        if !self.state.borrow().index.contains_key(id) {
            return Ok(None);
        }
        let found = self.read(id)?;
        if found.is_none() {
            // Damaged on disk: discard it so it is never served; PAST fetches it again.
            self.delete(id)?;
            let mut s = self.state.borrow_mut();
            s.forget(id);
            s.discarded += 1;
        }
        Ok(found)
    }

    fn meta(&self, id: &Id) -> Result<Option<(Kind, u64)>, StoreError> {
        Ok(self.state.borrow().index.get(id).copied())
    }

    fn set_kind(&mut self, id: &Id, kind: Kind) -> Result<(), StoreError> {
        let Some((old, size)) = self.state.borrow().index.get(id).copied() else {
            return Ok(());
        };
        if old == kind {
            return Ok(());
        }
        let used = self.state.borrow().used;
        if old == Kind::Cached && used + size > self.capacity {
            return Err(StoreError::Full {
                needed: size,
                free: self.capacity.saturating_sub(used),
            });
        }
        let Some(obj) = self.read(id)? else {
            return Err(StoreError::Io(format!("object {id} is damaged")));
        };
        let record = postcard::to_allocvec(&Record {
            cert: obj.cert,
            kind,
        })
        .map_err(io)?;
        let txn = self.db.begin_write().map_err(io)?;
        txn.open_table(RECORDS)
            .map_err(io)?
            .insert(id.as_bytes(), record.as_slice())
            .map_err(io)?;
        txn.commit().map_err(io)?;
        let mut s = self.state.borrow_mut();
        s.forget(id);
        s.account(kind, size, true);
        s.index.insert(*id, (kind, size));
        Ok(())
    }

    fn remove(&mut self, id: &Id) -> Result<u64, StoreError> {
        if !self.state.borrow().index.contains_key(id) {
            return Ok(0);
        }
        self.delete(id)?;
        Ok(self.state.borrow_mut().forget(id).unwrap_or(0))
    }

    fn list(&self) -> Result<Vec<(Id, Kind, u64)>, StoreError> {
        Ok(self
            .state
            .borrow()
            .index
            .iter()
            .map(|(id, (k, s))| (*id, *k, *s))
            .collect())
    }

    fn put_pointer(&mut self, id: &Id, holder: Contact) -> Result<(), StoreError> {
        let bytes = postcard::to_allocvec(&holder).map_err(io)?;
        let txn = self.db.begin_write().map_err(io)?;
        txn.open_table(POINTERS)
            .map_err(io)?
            .insert(id.as_bytes(), bytes.as_slice())
            .map_err(io)?;
        txn.commit().map_err(io)
    }

    fn pointer(&self, id: &Id) -> Result<Option<Contact>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let t = txn.open_table(POINTERS).map_err(io)?;
        let v = t.get(id.as_bytes()).map_err(io)?;
        Ok(v.and_then(|v| postcard::from_bytes(v.value()).ok()))
    }

    fn remove_pointer(&mut self, id: &Id) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        txn.open_table(POINTERS)
            .map_err(io)?
            .remove(id.as_bytes())
            .map_err(io)?;
        txn.commit().map_err(io)
    }
}
