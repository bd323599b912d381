//! The redb-backed store.

// Database operations return redb's own error, large but short-lived: it is turned into a
// `StoreError` as soon as an operation ends (`RedbStore::run`).
#![allow(clippy::result_large_err)]

use std::cell::{Cell, Ref, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use ringvault_past::{
    FileCertificate, Kind, SpaceLimit, Store, StoreError, StoreHealth, StoredObject, Usage,
};
use ringvault_types::{Contact, Id};

use crate::unwind::quiet_catch;

/// The on-disk format this build reads and writes. A database of another version is refused
/// at open, never silently reinterpreted.
pub const FORMAT_VERSION: u32 = 1;

/// redb's page cache per store when none is configured. redb's own default (1 GiB) would let
/// every node of a process grow its cache to a gigabyte under a large upload.
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

/// Bytes of the filesystem a store never counts as its own: redb's metadata, the node's key
/// and the logs need room too.
pub const DISK_RESERVE: u64 = 1 << 20;

/// Below this many usable bytes the disk counts as full (logged once); it counts as having
/// room again above twice as many, so a disk hovering near the mark is not logged each time.
pub const DISK_FULL_MARK: u64 = 4 << 20;

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

/// How a store is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Bytes of replicas the node offers the ring.
    pub capacity: u64,
    /// redb's page cache for this store, in bytes.
    pub cache_bytes: usize,
    /// How many stores of this process share the filesystem: each counts only its share of
    /// the free space, so the nodes of one `ring` process do not each claim all of it.
    pub disk_share: u32,
    /// Refuse a write the filesystem has no room for before it starts. Off only in tests of
    /// what happens when the disk fills between that check and the write.
    #[doc(hidden)]
    pub disk_check: bool,
}

impl StoreConfig {
    /// A store offering `capacity` bytes, alone on its filesystem, with the default cache.
    pub fn new(capacity: u64) -> Self {
        StoreConfig {
            capacity,
            cache_bytes: DEFAULT_CACHE_BYTES,
            disk_share: 1,
            disk_check: true,
        }
    }
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
    /// The file is damaged (truncated, or a record that does not decode).
    #[error("the object store at {path} is damaged: {detail}")]
    Damaged {
        /// The file.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

impl OpenError {
    /// Whether the file itself is unreadable (as opposed to of another format version), so
    /// that moving it aside and starting empty is the way out.
    pub fn is_damage(&self) -> bool {
        !matches!(self, OpenError::Version { .. })
    }
}

/// Objects in a redb database file. Writes are acknowledged only after commit.
///
/// An I/O error (a full disk among them) leaves redb refusing every later operation until the
/// database is reopened; this store closes it and reopens it before its next operation, so a
/// node whose disk filled up serves its objects again, and takes writes again once the disk has
/// room, without a restart. Writes that the filesystem cannot take are refused before they
/// start, as [`StoreError::Full`] with [`SpaceLimit::Disk`].
pub struct RedbStore {
    path: PathBuf,
    config: StoreConfig,
    /// `None` only between an I/O error and a successful reopen.
    db: RefCell<Option<Database>>,
    /// Set by an I/O error: the next operation reopens the database first.
    broken: Cell<bool>,
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
    health: StoreHealth,
    /// The disk is full (below [`DISK_FULL_MARK`], or a write was refused for want of it):
    /// logged once when it happens and once when the disk has room again.
    disk_full: bool,
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

    fn load(&mut self, index: BTreeMap<Id, (Kind, u64)>) {
        (self.used, self.cached) = (0, 0);
        for (kind, size) in index.values() {
            self.account(*kind, *size, true);
        }
        self.index = index;
    }

    fn set(&mut self, id: Id, kind: Kind, size: u64) {
        self.forget(&id);
        self.account(kind, size, true);
        self.index.insert(id, (kind, size));
    }
}

/// Whether an I/O error means the filesystem (or this user's quota on it) is out of space.
fn out_of_space(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || [Errno::NOSPC, Errno::DQUOT]
            .iter()
            .any(|n| e.raw_os_error() == Some(n.raw_os_error()))
}

fn open_db(path: &Path, cache_bytes: usize) -> Result<Database, OpenError> {
    let p = path.display().to_string();
    // redb asserts on some damage (a truncated file) instead of returning an error.
    let built = quiet_catch(|| {
        redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
    });
    match built {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(OpenError::Database {
            path: p,
            source: Box::new(e.into()),
        }),
        Err(why) => Err(OpenError::Damaged {
            path: p,
            detail: format!("redb cannot read it ({why}); was it truncated?"),
        }),
    }
}

/// Whether the database already holds this build's format (then it can be loaded with a read
/// transaction alone: a reopen on a full disk writes nothing).
fn formatted(db: &Database) -> bool {
    let Ok(txn) = db.begin_read() else {
        return false;
    };
    let Ok(meta) = txn.open_table(META) else {
        return false;
    };
    matches!(meta.get("format"), Ok(Some(v)) if v.value() == FORMAT_VERSION)
}

/// Loads the index from a database in this build's format, reading only.
fn load_index(db: &Database, path: &Path) -> Result<BTreeMap<Id, (Kind, u64)>, OpenError> {
    let p = path.display().to_string();
    let dberr = |e: redb::Error| OpenError::Database {
        path: p.clone(),
        source: Box::new(e),
    };
    let txn = db.begin_read().map_err(|e| dberr(e.into()))?;
    let records = txn.open_table(RECORDS).map_err(|e| dberr(e.into()))?;
    let mut index = BTreeMap::new();
    for entry in records.iter().map_err(|e| dberr(e.into()))? {
        let (k, v) = entry.map_err(|e| dberr(e.into()))?;
        let rec: Record = postcard::from_bytes(v.value()).map_err(|e| OpenError::Damaged {
            path: p.clone(),
            detail: format!("record {}: {e}", Id::from_bytes(*k.value())),
        })?;
        index.insert(Id::from_bytes(*k.value()), (rec.kind, rec.cert.body.size));
    }
    Ok(index)
}

/// Checks the format (writing it, and the tables, into a new database) and loads the index.
fn load(db: &Database, path: &Path) -> Result<BTreeMap<Id, (Kind, u64)>, OpenError> {
    if formatted(db) {
        return load_index(db, path);
    }
    let p = path.display().to_string();
    let dberr = |e: redb::Error| OpenError::Database {
        path: p.clone(),
        source: Box::new(e),
    };
    let txn = db.begin_write().map_err(|e| dberr(e.into()))?;
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
        txn.open_table(RECORDS).map_err(|e| dberr(e.into()))?;
    }
    txn.commit().map_err(|e| dberr(e.into()))?;
    load_index(db, path)
}

impl RedbStore {
    /// Opens (or creates) the store in file `path`, advertising `capacity` bytes, with the
    /// default cache, alone on its filesystem.
    pub fn open(path: &Path, capacity: u64) -> Result<Self, OpenError> {
        Self::open_with(path, StoreConfig::new(capacity))
    }

    /// Opens (or creates) the store in file `path`.
    pub fn open_with(path: &Path, config: StoreConfig) -> Result<Self, OpenError> {
        let db = open_db(path, config.cache_bytes)?;
        let index = load(&db, path)?;
        let mut state = State::default();
        state.load(index);
        Ok(RedbStore {
            path: path.to_path_buf(),
            config,
            db: RefCell::new(Some(db)),
            broken: Cell::new(false),
            state: RefCell::new(state),
        })
    }

    /// Moves a damaged store file aside (to `objects.redb.damaged-N`, the first N free) and
    /// answers where it went. The node then starts with an empty store under its own id, and
    /// replica maintenance brings back what it should hold.
    pub fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
        for n in 1u32.. {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".damaged-{n}"));
            let to = PathBuf::from(name);
            if !to.exists() {
                std::fs::rename(path, &to)?;
                return Ok(to);
            }
        }
        unreachable!("u32 ran out of free names")
    }

    /// Bytes the filesystem can still take for this store: its share of what is free, less
    /// the reserve. `None` when the filesystem cannot be asked.
    fn disk_free(&self) -> Option<u64> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let st = rustix::fs::statvfs(dir).ok()?;
        let avail = st.f_bavail.saturating_mul(st.f_frsize);
        Some((avail / u64::from(self.config.disk_share.max(1))).saturating_sub(DISK_RESERVE))
    }

    /// Refuses a write of `bytes` the disk cannot take. redb's allocator rounds an object up
    /// to a power of two of pages, so twice its size is asked for.
    fn check_disk(&self, bytes: u64) -> Result<(), StoreError> {
        let Some(free) = self.disk_free().filter(|_| self.config.disk_check) else {
            return Ok(());
        };
        if bytes.saturating_mul(2) <= free {
            return Ok(());
        }
        Err(self.disk_refused(bytes, free))
    }

    fn disk_refused(&self, needed: u64, free: u64) -> StoreError {
        self.state.borrow_mut().health.disk_full += 1;
        self.note_disk(Some(free));
        StoreError::Full {
            needed,
            free,
            limit: SpaceLimit::Disk,
        }
    }

    /// Logs the disk filling up, and having room again, once each time it happens.
    fn note_disk(&self, free: Option<u64>) {
        let Some(free) = free else { return };
        let mut s = self.state.borrow_mut();
        if !s.disk_full && free < DISK_FULL_MARK {
            s.disk_full = true;
            tracing::warn!(
                "the disk under {} is full ({free} bytes usable): this node takes no new replicas (the ring places them elsewhere) and keeps every one it holds; it takes writes again once the disk has room",
                self.path.display()
            );
        } else if s.disk_full && free >= 2 * DISK_FULL_MARK {
            s.disk_full = false;
            tracing::info!(
                "the disk under {} has room again ({free} bytes usable): taking writes",
                self.path.display()
            );
        }
    }

    /// Reopens the database after an I/O error, and reloads the index from it: a commit that
    /// reported a failure (ENOSPC while syncing) may still have landed.
    fn reopen_if_broken(&self) -> Result<(), StoreError> {
        if !self.broken.get() {
            return Ok(());
        }
        // Drop the old handle first: it holds the file's lock.
        *self.db.borrow_mut() = None;
        let reopened = open_db(&self.path, self.config.cache_bytes)
            .and_then(|db| load(&db, &self.path).map(|index| (db, index)));
        match reopened {
            Ok((db, index)) => {
                *self.db.borrow_mut() = Some(db);
                self.broken.set(false);
                let mut s = self.state.borrow_mut();
                s.load(index);
                s.health.reopened += 1;
                drop(s);
                tracing::info!(
                    "reopened the object store {} after an I/O error",
                    self.path.display()
                );
                Ok(())
            }
            Err(e) => {
                self.state.borrow_mut().health.io_errors += 1;
                Err(StoreError::Io(format!(
                    "the object store is closed after an I/O error and cannot be reopened: {e}"
                )))
            }
        }
    }

    /// Runs one database operation; an I/O error closes the database for reopening, and a
    /// full filesystem comes back as [`StoreError::Full`].
    fn run<T>(
        &self,
        needed: u64,
        op: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        self.reopen_if_broken()?;
        let result = {
            let db: Ref<'_, Option<Database>> = self.db.borrow();
            let Some(db) = db.as_ref() else {
                return Err(StoreError::Io("the object store is closed".into()));
            };
            op(db)
        };
        result.map_err(|e| self.failed(e, needed))
    }

    fn failed(&self, e: redb::Error, needed: u64) -> StoreError {
        // Every redb failure past this point leaves the database refusing work until reopened
        // (redb's PreviousIo); reopening is harmless for the rest.
        self.broken.set(true);
        match &e {
            redb::Error::Io(io) if out_of_space(io) => self.disk_refused(needed, 0),
            _ => {
                self.state.borrow_mut().health.io_errors += 1;
                tracing::warn!(
                    "the object store {} failed: {e}; it is reopened before its next operation",
                    self.path.display()
                );
                StoreError::Io(e.to_string())
            }
        }
    }

    fn delete(&self, id: &Id) -> Result<(), StoreError> {
        self.run(0, |db| {
            let txn = db.begin_write()?;
            {
                txn.open_table(RECORDS)?.remove(id.as_bytes())?;
                txn.open_table(CONTENT)?.remove(id.as_bytes())?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Reads and checks one object; `Ok(None)` when absent or damaged.
    fn read(&self, id: &Id) -> Result<Option<StoredObject>, StoreError> {
        let raw = self.run(0, |db| {
            let txn = db.begin_read()?;
            let records = txn.open_table(RECORDS)?;
            let Some(rec) = records.get(id.as_bytes())? else {
                return Ok(None);
            };
            let content = txn.open_table(CONTENT)?;
            let Some(bytes) = content.get(id.as_bytes())? else {
                return Ok(None);
            };
            Ok(Some((rec.value().to_vec(), bytes.value().to_vec())))
        })?;
        let Some((rec, content)) = raw else {
            return Ok(None);
        };
        let Ok(rec) = postcard::from_bytes::<Record>(&rec) else {
            return Ok(None);
        };
        if rec.cert.id() != *id || rec.cert.verify_content(&content).is_err() {
            return Ok(None);
        }
        Ok(Some(StoredObject {
            cert: rec.cert,
            content,
            kind: rec.kind,
        }))
    }

    fn write_record(
        &self,
        id: &Id,
        record: &[u8],
        content: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let needed = (record.len() + content.map_or(0, <[u8]>::len)) as u64;
        self.check_disk(needed)?;
        self.run(needed, |db| {
            let txn = db.begin_write()?;
            {
                txn.open_table(RECORDS)?.insert(id.as_bytes(), record)?;
                if let Some(content) = content {
                    txn.open_table(CONTENT)?.insert(id.as_bytes(), content)?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }
}

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(e.to_string())
}

impl Store for RedbStore {
    fn usage(&self) -> Usage {
        let disk_free = self.disk_free();
        self.note_disk(disk_free);
        let s = self.state.borrow();
        Usage {
            capacity: self.config.capacity,
            used: s.used,
            cached: s.cached,
            disk_free,
        }
    }

    fn put(&mut self, obj: StoredObject) -> Result<(), StoreError> {
        let id = obj.cert.id();
        let size = obj.content.len() as u64;
        let (used, old) = {
            let s = self.state.borrow();
            (s.used, s.index.get(&id).copied())
        };
        let old_replica = old.filter(|(k, _)| *k != Kind::Cached).map_or(0, |o| o.1);
        let new_replica = if obj.kind == Kind::Cached { 0 } else { size };
        if used - old_replica + new_replica > self.config.capacity {
            return Err(StoreError::Full {
                needed: size,
                free: self.config.capacity.saturating_sub(used),
                limit: SpaceLimit::Capacity,
            });
        }
        let record = postcard::to_allocvec(&Record {
            cert: obj.cert,
            kind: obj.kind,
        })
        .map_err(io)?;
        self.write_record(&id, &record, Some(&obj.content))?;
        self.state.borrow_mut().set(id, obj.kind, size);
        Ok(())
    }

    fn get(&self, id: &Id) -> Result<Option<StoredObject>, StoreError> {
        if !self.state.borrow().index.contains_key(id) {
            return Ok(None);
        }
        let found = self.read(id)?;
        if found.is_none() {
            // Damaged on disk: never served. It is dropped from the index only once the
            // delete is committed; PAST fetches a good copy again.
            self.delete(id)?;
            let mut s = self.state.borrow_mut();
            s.forget(id);
            s.health.discarded += 1;
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
        if old == Kind::Cached && used + size > self.config.capacity {
            return Err(StoreError::Full {
                needed: size,
                free: self.config.capacity.saturating_sub(used),
                limit: SpaceLimit::Capacity,
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
        self.write_record(id, &record, None)?;
        self.state.borrow_mut().set(*id, kind, size);
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
        self.check_disk(bytes.len() as u64)?;
        self.run(bytes.len() as u64, |db| {
            let txn = db.begin_write()?;
            txn.open_table(POINTERS)?
                .insert(id.as_bytes(), bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
    }

    fn pointer(&self, id: &Id) -> Result<Option<Contact>, StoreError> {
        self.run(0, |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(POINTERS)?;
            let v = t.get(id.as_bytes())?;
            Ok(v.and_then(|v| postcard::from_bytes(v.value()).ok()))
        })
    }

    fn remove_pointer(&mut self, id: &Id) -> Result<(), StoreError> {
        self.run(0, |db| {
            let txn = db.begin_write()?;
            txn.open_table(POINTERS)?.remove(id.as_bytes())?;
            txn.commit()?;
            Ok(())
        })
    }

    fn health(&self) -> StoreHealth {
        self.state.borrow().health
    }
}
