//! The store's writer thread: it commits the writes the node has taken in batches (group
//! commit: one redb transaction, and one sync, for everything queued), so the node's event loop
//! never waits on the disk.
//!
//! A batch that needs no sync (cached copies only, or every batch under
//! [`Durability::Replicated`]) is committed without one; a sync follows within
//! [`SYNC_INTERVAL`]. A batch that fails is undone: the database is reopened (redb refuses all
//! work after an I/O error) and the in-memory index reloaded from it, and its objects are
//! reported failed.

// redb's error is large but short-lived: it becomes a `StoreError` as soon as a batch ends.
#![allow(clippy::result_large_err)]

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableTable};
use serde::Serialize;

use ringvault_past::{FileCertificate, Kind, StoreError};

use crate::format::{self, out_of_space, Record, Tables};
use crate::redb_store::{Durability, Shared};
use crate::state::{Op, State, Write};
use crate::unwind::quiet_catch;

/// Writes left unsynced (cached copies, or any write under `Durability::Replicated`) are
/// synced within this long.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// A batch carries at most this many bytes of content (and at least one write): it bounds
/// the time one commit takes.
pub const MAX_BATCH_BYTES: u64 = 64 << 20;

/// An object's record as it is written, borrowing the certificate (encodes as [`Record`]).
#[derive(Serialize)]
struct RecordRef<'a> {
    cert: &'a FileCertificate,
    kind: Kind,
}

/// What the writer does next.
enum Next {
    Commit(Vec<Write>),
    /// Nothing queued and commits left unsynced for a while: sync them.
    Sync,
    Stop,
}

/// The writer's loop; returns once the store is dropped and everything queued is committed.
pub(crate) fn run(shared: Arc<Shared>) {
    loop {
        match next(&shared) {
            Next::Commit(batch) => {
                let sync = shared.config.durability == Durability::Sync
                    && batch.iter().any(|w| w.op.needs_sync());
                let result = commit(&shared, &batch, sync);
                finish(&shared, &batch, sync, result);
            }
            Next::Sync => {
                let result = commit(&shared, &[], true);
                finish(&shared, &[], true, result);
            }
            Next::Stop => return,
        }
    }
}

/// Waits for work: a batch of queued writes, a sync that is due, or the store dropped.
fn next(shared: &Shared) -> Next {
    let mut st = shared.lock();
    loop {
        if st.held && !st.stop {
            st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        if !st.queue.is_empty() {
            return Next::Commit(batch(&mut st));
        }
        if st.stop {
            return if st.unsynced { Next::Sync } else { Next::Stop };
        }
        if st.unsynced {
            let (guard, waited) = shared
                .work
                .wait_timeout(st, SYNC_INTERVAL)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            if waited.timed_out() && st.queue.is_empty() {
                return Next::Sync;
            }
        } else {
            st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The writes queued, oldest first, up to [`MAX_BATCH_BYTES`] of content.
fn batch(st: &mut State) -> Vec<Write> {
    let mut bytes = 0;
    let mut out = Vec::new();
    while let Some(w) = st.queue.front() {
        if !out.is_empty() && bytes + w.op.bytes() > MAX_BATCH_BYTES {
            break;
        }
        bytes += w.op.bytes();
        out.extend(st.queue.pop_front());
    }
    out
}

/// Commits `batch` in one transaction, synced or not. A panic inside redb is an error too.
fn commit(shared: &Shared, batch: &[Write], sync: bool) -> Result<(), redb::Error> {
    if shared.lock().closed {
        reopen(shared)?;
    }
    // Only the tables this batch writes to: a file may hold many stores.
    let spaces: BTreeMap<usize, Tables> = {
        let st = shared.lock();
        batch
            .iter()
            .map(|w| (w.space, st.spaces[w.space].tables.clone()))
            .collect()
    };
    let db = shared.db.read().unwrap_or_else(|e| e.into_inner());
    let Some(db) = db.as_ref() else {
        return Err(redb::Error::Io(std::io::Error::other(
            "the object store is closed",
        )));
    };
    quiet_catch(|| apply(db, &spaces, batch, sync))
        .unwrap_or_else(|why| Err(redb::Error::Io(std::io::Error::other(why))))
}

fn apply(
    db: &Database,
    spaces: &BTreeMap<usize, Tables>,
    batch: &[Write],
    sync: bool,
) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(if sync {
        redb::Durability::Immediate
    } else {
        redb::Durability::None
    });
    // Each store's tables, opened at its first write in the batch.
    let mut open = BTreeMap::new();
    for w in batch {
        let (records, content, pointers, mutable) = match open.entry(w.space) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let Some(t) = spaces.get(&w.space) else {
                    continue;
                };
                e.insert((
                    txn.open_table(t.records())?,
                    txn.open_table(t.content())?,
                    txn.open_table(t.pointers())?,
                    txn.open_table(t.mutable())?,
                ))
            }
        };
        let id = |id: &ringvault_types::Id| *id.as_bytes();
        match &w.op {
            Op::Put(o) => {
                let key = id(&o.cert.id());
                let record = encode(&RecordRef {
                    cert: &o.cert,
                    kind: o.kind,
                })?;
                records.insert(&key, record.as_slice())?;
                content.insert(&key, o.content.as_slice())?;
            }
            Op::SetKind(object, kind) => {
                let key = id(object);
                let old = records.get(&key)?.map(|v| v.value().to_vec());
                // A record that does not decode stays as it is: the read that finds it
                // discards the copy.
                if let Some(mut rec) = old.and_then(|r| postcard::from_bytes::<Record>(&r).ok()) {
                    rec.kind = *kind;
                    records.insert(&key, encode(&rec)?.as_slice())?;
                }
            }
            Op::Delete(object) => {
                let key = id(object);
                records.remove(&key)?;
                content.remove(&key)?;
            }
            Op::Point(object, holder) => {
                pointers.insert(&id(object), encode(holder)?.as_slice())?;
            }
            Op::Unpoint(object) => {
                pointers.remove(&id(object))?;
            }
            Op::PutRecord(key, record) => {
                mutable.insert(&id(key), record.as_slice())?;
            }
            Op::DeleteRecord(key) => {
                mutable.remove(&id(key))?;
            }
        }
    }
    drop(open);
    txn.commit()?;
    Ok(())
}

fn encode(v: &impl Serialize) -> Result<Vec<u8>, redb::Error> {
    postcard::to_allocvec(v).map_err(|e| redb::Error::Io(std::io::Error::other(e)))
}

/// Records how a batch ended and wakes whoever waits: the nodes whose writes it held
/// (through their wakers) and [`crate::RedbStore::sync`].
fn finish(shared: &Shared, batch: &[Write], sync: bool, result: Result<(), redb::Error>) {
    let mut spaces: BTreeSet<usize> = batch.iter().map(|w| w.space).collect();
    match result {
        Ok(()) => {
            let mut st = shared.lock();
            st.finished(batch);
            st.unsynced = !sync;
        }
        Err(e) => {
            let error = {
                let mut st = shared.lock();
                st.finished(batch);
                let error = shared.classify(&mut st, &spaces, &e);
                for w in batch {
                    let s = &mut st.spaces[w.space];
                    match &w.op {
                        Op::Put(o) => s.failed.push((o.cert.id(), w.seq)),
                        Op::PutRecord(key, _) | Op::DeleteRecord(key) => {
                            s.failed_records.push((*key, w.seq))
                        }
                        _ => {}
                    }
                    s.last_error.get_or_insert(error.clone());
                }
                st.closed = true;
                spaces.extend(0..st.spaces.len());
                error
            };
            tracing::warn!(
                "the object store {} failed to commit {} writes: {error}; they are undone and the store reopened",
                shared.path.display(),
                batch.len()
            );
            // The index was updated when the writes were taken: reload it from what the
            // file holds (a commit that reported a failure may still have landed).
            let _ = reopen(shared);
        }
    }
    for wake in shared.wakers(&spaces) {
        wake();
    }
    shared.finished.notify_all();
}

/// Closes and reopens the database after an I/O error and reloads the index from it.
fn reopen(shared: &Shared) -> Result<(), redb::Error> {
    let spaces = shared.tables();
    let mut db = shared.db.write().unwrap_or_else(|e| e.into_inner());
    // Drop the old handle first: it holds the file's lock.
    *db = None;
    let opened = format::open_db(&shared.path, shared.config.cache_bytes).and_then(|d| {
        let tables: Vec<&Tables> = spaces.iter().collect();
        format::load(&d, &shared.path, &tables).map(|loaded| (d, loaded))
    });
    let mut st = shared.lock();
    match opened {
        Ok((d, loaded)) => {
            *db = Some(d);
            st.reload(loaded);
            st.closed = false;
            for s in &mut st.spaces {
                s.health.reopened += 1;
            }
            tracing::info!(
                "reopened the object store {} after an I/O error",
                shared.path.display()
            );
            Ok(())
        }
        Err(e) => {
            for s in &mut st.spaces {
                s.health.io_errors += 1;
            }
            st.closed = true;
            Err(redb::Error::Io(std::io::Error::other(format!(
                "the object store is closed after an I/O error and cannot be reopened: {e}"
            ))))
        }
    }
}

impl Shared {
    /// A failed commit as the stores report it: a full filesystem is [`StoreError::Full`].
    fn classify(&self, st: &mut State, spaces: &BTreeSet<usize>, e: &redb::Error) -> StoreError {
        match e {
            redb::Error::Io(io) if out_of_space(io) => {
                let mut error = None;
                for &s in spaces {
                    error = Some(self.disk_refused(&mut st.spaces[s], 0, 0));
                }
                error.unwrap_or(StoreError::Full {
                    needed: 0,
                    free: 0,
                    limit: ringvault_past::SpaceLimit::Disk,
                })
            }
            _ => {
                for &s in spaces {
                    st.spaces[s].health.io_errors += 1;
                }
                StoreError::Io(e.to_string())
            }
        }
    }
}
