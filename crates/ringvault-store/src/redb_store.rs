//! The redb-backed store: a file ([`StoreFile`]) with its writer thread, and the store handle
//! each node owns ([`RedbStore`]). Reads answer from memory (the index, the pointers, writes not
//! yet committed) or from the database; writes are taken at once and committed by the file's
//! writer thread (`writer.rs`).

// Database operations return redb's own error, large but short-lived: it is turned into a
// `StoreError` as soon as an operation ends.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use redb::Database;

use ringvault_past::{
    Kind, SpaceLimit, Store, StoreError, StoreHealth, StoredObject, Usage, WriteProgress,
};
use ringvault_records::RecordStore;
use ringvault_types::{Contact, Id};

use crate::format::{self, OpenError, Record, Tables};
use crate::state::{Op, Space, State};

/// redb's page cache per store when none is configured. redb's own default (1 GiB) would let
/// every node of a process grow its cache to a gigabyte under a large upload.
pub const DEFAULT_CACHE_BYTES: usize = 16 << 20;

/// Bytes of the filesystem a store never counts as its own: redb's metadata, the node's key
/// and the logs need room too.
pub const DISK_RESERVE: u64 = 1 << 20;

/// Below this many usable bytes the disk counts as full (logged once); it counts as having
/// room again above twice as many, so a disk hovering near the mark is not logged each time.
pub const DISK_FULL_MARK: u64 = 4 << 20;

/// Content bytes a store file lets wait for its writer before it refuses new writes as busy
/// (back-pressure: clients get 503 `busy`, maintenance transfers wait for their next round).
pub const DEFAULT_MAX_WAITING: u64 = 256 << 20;

/// When a write counts as done, and so when a store receipt may be sent for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Once the batch holding it is committed and synced to the disk: it survives a killed
    /// process, a power cut and a crash of the machine.
    #[default]
    Sync,
    /// Once the batch holding it is committed in memory; a sync follows within a second.
    /// A killed process, a power cut or a crash loses up to the last second of this node's
    /// writes; the object's other replicas keep it and maintenance restores the lost copy.
    Replicated,
}

/// How a store is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Bytes of replicas the node offers the ring.
    pub capacity: u64,
    /// redb's page cache for this store, in bytes.
    pub cache_bytes: usize,
    /// How many stores of this process share the filesystem: each counts only its share of
    /// the free space, so the nodes of one `ring` process do not each claim all of it. Set
    /// for the file; the same for each of its stores.
    pub disk_share: u32,
    /// When a write counts as done.
    pub durability: Durability,
    /// Content bytes that may wait for the writer (taken, not yet committed); a write beyond
    /// them is refused as [`StoreError::Busy`]. Set for the file.
    pub max_waiting: u64,
    /// Refuse a write the filesystem has no room for before it starts. Off only in tests of
    /// what happens when the disk fills between that check and the write.
    #[doc(hidden)]
    pub disk_check: bool,
}

impl StoreConfig {
    /// A store offering `capacity` bytes, alone on its filesystem, with the default cache,
    /// syncing every write before it counts.
    pub fn new(capacity: u64) -> Self {
        StoreConfig {
            capacity,
            cache_bytes: DEFAULT_CACHE_BYTES,
            disk_share: 1,
            durability: Durability::Sync,
            max_waiting: DEFAULT_MAX_WAITING,
            disk_check: true,
        }
    }
}

/// Called (on the writer thread) each time a batch holding a store's writes ends, so the
/// node's driver can let PAST send what waited for them.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// What a file's stores and its writer share.
pub(crate) struct Shared {
    pub(crate) path: PathBuf,
    pub(crate) config: StoreConfig,
    /// `None` only after an I/O error, until the writer reopens it.
    pub(crate) db: RwLock<Option<Database>>,
    state: Mutex<State>,
    /// Wakes the writer: writes queued, or every handle dropped.
    pub(crate) work: Condvar,
    /// Wakes [`RedbStore::sync`]: a batch ended.
    pub(crate) finished: Condvar,
    /// Live handles ([`StoreFile`] and [`RedbStore`]s): the last one dropped stops the writer.
    handles: AtomicUsize,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every store's tables, in order.
    pub(crate) fn tables(&self) -> Vec<Tables> {
        self.lock()
            .spaces
            .iter()
            .map(|s| s.tables.clone())
            .collect()
    }

    /// The wakers of `spaces`.
    pub(crate) fn wakers(&self, spaces: &BTreeSet<usize>) -> Vec<Waker> {
        let st = self.lock();
        spaces
            .iter()
            .filter_map(|&s| st.spaces.get(s).and_then(|s| s.waker.clone()))
            .collect()
    }

    /// Bytes the filesystem can still take for one store: its share of what is free, less
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

    /// Counts and logs a write refused for want of disk.
    pub(crate) fn disk_refused(&self, space: &mut Space, needed: u64, free: u64) -> StoreError {
        space.health.disk_full += 1;
        self.note_disk(space, Some(free));
        StoreError::Full {
            needed,
            free,
            limit: SpaceLimit::Disk,
        }
    }

    /// Logs the disk filling up, and having room again, once each time it happens.
    fn note_disk(&self, space: &mut Space, free: Option<u64>) {
        let Some(free) = free else { return };
        if !space.disk_full && free < DISK_FULL_MARK {
            space.disk_full = true;
            tracing::warn!(
                "the disk under {} is full ({free} bytes usable): this node takes no new replicas (the ring places them elsewhere) and keeps every one it holds; it takes writes again once the disk has room",
                self.path.display()
            );
        } else if space.disk_full && free >= 2 * DISK_FULL_MARK {
            space.disk_full = false;
            tracing::info!(
                "the disk under {} has room again ({free} bytes usable): taking writes",
                self.path.display()
            );
        }
    }

    /// Takes a write to store `space`, after checking the disk has room for it and
    /// everything not yet committed.
    fn take(&self, space: usize, op: Op) -> Result<(), StoreError> {
        let bytes = op.bytes();
        let free = if self.config.disk_check && bytes > 0 {
            self.disk_free()
        } else {
            None
        };
        let mut st = self.lock();
        let waiting = st.unwritten_bytes;
        if bytes > 0 && waiting > 0 && waiting + bytes > self.config.max_waiting {
            st.spaces[space].health.busy += 1;
            return Err(StoreError::Busy { waiting });
        }
        if let Some(free) = free {
            // redb's allocator rounds an object up to a power of two of pages: twice its size
            // is asked for.
            let free = free.saturating_sub(2 * st.unwritten_bytes);
            if bytes.saturating_mul(2) > free {
                return Err(self.disk_refused(&mut st.spaces[space], bytes, free));
            }
        }
        st.take(space, op);
        drop(st);
        self.work.notify_one();
        Ok(())
    }

    /// A handle went away; the last one stops the writer once it has committed what is queued.
    fn release(&self) {
        if self.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        self.lock().stop = true;
        self.work.notify_one();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

/// A redb database file and the thread that commits its writes: the home of one node's store
/// (`ringvault node`: [`RedbStore::open_with`]), or of the stores of all the nodes of one
/// process (`ringvault ring`: [`StoreFile::store`] once per node), whose writes are then
/// committed together, one transaction and one sync for all.
pub struct StoreFile {
    shared: Arc<Shared>,
}

impl StoreFile {
    /// Opens (or creates) the file at `path` and starts its writer. `config.capacity` is what
    /// each store of the file offers.
    pub fn open(path: &Path, config: StoreConfig) -> Result<Self, OpenError> {
        let db = format::open_db(path, config.cache_bytes)?;
        format::load(&db, path, &[])?;
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            config,
            db: RwLock::new(Some(db)),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            finished: Condvar::new(),
            handles: AtomicUsize::new(1),
            writer: Mutex::new(None),
        });
        let s = shared.clone();
        let writer = std::thread::Builder::new()
            .name("ringvault-store".into())
            .spawn(move || crate::writer::run(s))
            .map_err(|source| OpenError::Writer {
                path: path.display().to_string(),
                source,
            })?;
        *shared.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
        Ok(StoreFile { shared })
    }

    /// Holds the writer (it commits nothing) until called with `false`: for tests of what
    /// happens while writes wait.
    #[doc(hidden)]
    pub fn hold_writer(&self, hold: bool) {
        self.shared.lock().held = hold;
        self.shared.work.notify_one();
    }

    /// The store of node `node` in this file (its tables are named after it), or with `None`
    /// the file's one store in the plain tables. Opening the same store twice is an error.
    pub fn store(&self, node: Option<Id>) -> Result<RedbStore, OpenError> {
        let tables = Tables::of(node);
        let path = &self.shared.path;
        let db = self.shared.db.read().unwrap_or_else(|e| e.into_inner());
        let Some(d) = db.as_ref() else {
            return Err(OpenError::Damaged {
                path: path.display().to_string(),
                detail: "closed after an I/O error".into(),
            });
        };
        let mut st = self.shared.lock();
        if st.spaces.iter().any(|s| s.tables == tables) {
            return Err(OpenError::Damaged {
                path: path.display().to_string(),
                detail: format!("the store of {node:?} is open already"),
            });
        }
        let mut loaded = format::load(d, path, &[&tables])?.pop().unwrap_or_default();
        let mut space = Space::new(tables, self.shared.config.capacity);
        space.mutable = std::mem::take(&mut loaded.mutable);
        space.load(loaded);
        st.spaces.push(space);
        let index = st.spaces.len() - 1;
        self.shared.handles.fetch_add(1, Ordering::AcqRel);
        Ok(RedbStore {
            shared: self.shared.clone(),
            space: index,
        })
    }
}

impl Drop for StoreFile {
    fn drop(&mut self) {
        self.shared.release();
    }
}

/// One node's objects in a redb database file.
///
/// A write is taken at once: the index and reads reflect it, and the file's writer thread
/// commits it with the others queued (one transaction and one sync for all). It counts as done
/// ([`Store::progress`]) once committed as [`Durability`] asks. Writes that the filesystem
/// cannot take are refused before they are taken, as [`StoreError::Full`] with
/// [`SpaceLimit::Disk`]. A batch that fails anyway (the disk filled meanwhile, an I/O error) is
/// undone and its objects reported by [`Store::take_failed`]; redb refuses all work after an
/// I/O error, so the writer reopens the database, and a node whose disk filled up serves its
/// objects again, and takes writes again once the disk has room, without a restart.
///
/// Dropping the last store of a file commits what is queued first.
pub struct RedbStore {
    shared: Arc<Shared>,
    space: usize,
}

impl RedbStore {
    /// Opens (or creates) the store in file `path`, advertising `capacity` bytes, with the
    /// default cache, alone on its filesystem.
    pub fn open(path: &Path, capacity: u64) -> Result<Self, OpenError> {
        Self::open_with(path, StoreConfig::new(capacity))
    }

    /// Opens (or creates) a file at `path` holding one store.
    pub fn open_with(path: &Path, config: StoreConfig) -> Result<Self, OpenError> {
        StoreFile::open(path, config)?.store(None)
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

    /// Has `wake` called each time a batch holding this store's writes ends (on the writer
    /// thread).
    pub fn set_waker(&self, wake: Waker) {
        self.shared.lock().spaces[self.space].waker = Some(wake);
    }

    /// Waits until every write this store has taken is done; answers the first failure since
    /// the last call, if a batch failed.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut st = self.shared.lock();
        let want = st.spaces[self.space].taken;
        while st.done < want {
            st = self
                .shared
                .finished
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
        match st.spaces[self.space].last_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn take(&self, op: Op) -> Result<(), StoreError> {
        self.shared.take(self.space, op)
    }

    /// This store's signed records: a second handle on the same tables, for the records
    /// service, whose writes are committed with the objects' (one batch, one sync).
    pub fn records(&self) -> RedbRecords {
        self.shared.handles.fetch_add(1, Ordering::AcqRel);
        RedbRecords {
            shared: self.shared.clone(),
            space: self.space,
        }
    }

    /// Reads and checks one committed object; `Ok(None)` when absent or damaged.
    fn read(&self, tables: &Tables, id: &Id) -> Result<Option<StoredObject>, StoreError> {
        let db = self.shared.db.read().unwrap_or_else(|e| e.into_inner());
        let Some(db) = db.as_ref() else {
            return Err(StoreError::Io(
                "the object store is closed after an I/O error".into(),
            ));
        };
        let raw = (|| -> Result<_, redb::Error> {
            let txn = db.begin_read()?;
            let records = txn.open_table(tables.records())?;
            let Some(rec) = records.get(id.as_bytes())? else {
                return Ok(None);
            };
            let content = txn.open_table(tables.content())?;
            let Some(bytes) = content.get(id.as_bytes())? else {
                return Ok(None);
            };
            Ok(Some((rec.value().to_vec(), bytes.value().to_vec())))
        })()
        .map_err(|e| {
            self.shared.lock().spaces[self.space].health.io_errors += 1;
            StoreError::Io(e.to_string())
        })?;
        let Some((rec, content)) = raw else {
            return Ok(None);
        };
        let Ok(rec) = postcard::from_bytes::<Record>(&rec) else {
            return Ok(None);
        };
        // The certificate's signature was checked when the object arrived; what can have
        // changed on disk since is caught by the hash (and a client checks the signature of
        // whatever it is served).
        if rec.cert.id() != *id || !rec.cert.matches_content(&content) {
            return Ok(None);
        }
        Ok(Some(StoredObject {
            cert: rec.cert,
            content,
            kind: rec.kind,
        }))
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.shared.lock().spaces[self.space].waker = None;
        self.shared.release();
    }
}

impl Store for RedbStore {
    fn usage(&self) -> Usage {
        let disk_free = self.shared.disk_free();
        let mut st = self.shared.lock();
        let disk_free = disk_free.map(|f| f.saturating_sub(2 * st.unwritten_bytes));
        let space = &mut st.spaces[self.space];
        self.shared.note_disk(space, disk_free);
        Usage {
            capacity: space.capacity,
            used: space.held.replicas,
            cached: space.held.cached,
            disk_free,
        }
    }

    fn put(&mut self, obj: StoredObject) -> Result<(), StoreError> {
        {
            let st = self.shared.lock();
            let space = &st.spaces[self.space];
            let old = space.index.get(&obj.cert.id()).copied();
            let new = (obj.kind, obj.content.len() as u64);
            space.held.admits(space.capacity, old, new)?;
        }
        self.take(Op::Put(Arc::new(obj)))
    }

    fn get(&self, id: &Id) -> Result<Option<StoredObject>, StoreError> {
        let (kind, tables) = {
            let st = self.shared.lock();
            let space = &st.spaces[self.space];
            if let Some(staged) = space.staged.get(id) {
                return Ok(staged.obj.as_ref().map(|o| StoredObject {
                    kind: space.index.get(id).map_or(o.kind, |m| m.0),
                    ..(**o).clone()
                }));
            }
            match space.index.get(id) {
                Some(&(kind, _)) => (kind, space.tables.clone()),
                None => return Ok(None),
            }
        };
        if let Some(o) = self.read(&tables, id)? {
            // A kind change may be queued: the index has the latest.
            return Ok(Some(StoredObject { kind, ..o }));
        }
        // Damaged on disk (or changed meanwhile): a damaged copy is never served, and is
        // dropped; PAST fetches a good one again.
        let mut st = self.shared.lock();
        let space = &mut st.spaces[self.space];
        if space.index.contains_key(id) && !space.staged.contains_key(id) {
            space.health.discarded += 1;
            st.take(self.space, Op::Delete(*id));
            drop(st);
            self.shared.work.notify_one();
        }
        Ok(None)
    }

    fn meta(&self, id: &Id) -> Result<Option<(Kind, u64)>, StoreError> {
        Ok(self.shared.lock().spaces[self.space].index.get(id).copied())
    }

    fn set_kind(&mut self, id: &Id, kind: Kind) -> Result<(), StoreError> {
        {
            let st = self.shared.lock();
            let space = &st.spaces[self.space];
            let Some(old) = space.index.get(id).copied() else {
                return Ok(());
            };
            if old.0 == kind {
                return Ok(());
            }
            space
                .held
                .admits(space.capacity, Some(old), (kind, old.1))?;
        }
        self.take(Op::SetKind(*id, kind))
    }

    fn remove(&mut self, id: &Id) -> Result<u64, StoreError> {
        let size = self.shared.lock().spaces[self.space]
            .index
            .get(id)
            .map(|m| m.1);
        let Some(size) = size else {
            return Ok(0);
        };
        self.take(Op::Delete(*id))?;
        Ok(size)
    }

    fn list(&self) -> Result<Vec<(Id, Kind, u64)>, StoreError> {
        Ok(self.shared.lock().spaces[self.space]
            .index
            .iter()
            .map(|(id, (k, s))| (*id, *k, *s))
            .collect())
    }

    fn put_pointer(&mut self, id: &Id, holder: Contact) -> Result<(), StoreError> {
        self.take(Op::Point(*id, holder))
    }

    fn pointer(&self, id: &Id) -> Result<Option<Contact>, StoreError> {
        Ok(self.shared.lock().spaces[self.space]
            .pointers
            .get(id)
            .copied())
    }

    fn remove_pointer(&mut self, id: &Id) -> Result<(), StoreError> {
        self.take(Op::Unpoint(*id))
    }

    fn health(&self) -> StoreHealth {
        self.shared.lock().spaces[self.space].health
    }

    fn progress(&self) -> WriteProgress {
        let st = self.shared.lock();
        WriteProgress {
            taken: st.spaces[self.space].taken,
            done: st.done,
        }
    }

    fn take_failed(&mut self) -> Vec<(Id, u64)> {
        std::mem::take(&mut self.shared.lock().spaces[self.space].failed)
    }
}

/// One node's signed records in its store file (`RedbStore::records`): written through the
/// file's writer with the objects, read back once at open.
pub struct RedbRecords {
    shared: Arc<Shared>,
    space: usize,
}

impl Drop for RedbRecords {
    fn drop(&mut self) {
        self.shared.release();
    }
}

impl RecordStore for RedbRecords {
    fn load(&mut self) -> Vec<(Id, Vec<u8>)> {
        std::mem::take(&mut self.shared.lock().spaces[self.space].mutable)
    }

    fn put(&mut self, key: &Id, record: Vec<u8>) -> Result<(), StoreError> {
        self.shared.take(self.space, Op::PutRecord(*key, record))
    }

    fn remove(&mut self, key: &Id) -> Result<(), StoreError> {
        self.shared.take(self.space, Op::DeleteRecord(*key))
    }

    fn progress(&self) -> WriteProgress {
        let st = self.shared.lock();
        WriteProgress {
            taken: st.spaces[self.space].records_taken,
            done: st.done,
        }
    }

    fn take_failed(&mut self) -> Vec<(Id, u64)> {
        std::mem::take(&mut self.shared.lock().spaces[self.space].failed_records)
    }
}
