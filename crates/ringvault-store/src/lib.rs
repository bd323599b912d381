//! ringvault's on-disk object store.
//!
//! Owns: [`RedbStore`], the redb implementation of `ringvault_past::Store`: one database file per
//! node holding objects (certificate and content), replica pointers and a format version. Writes
//! are taken at once and committed in batches by a writer thread per store (group commit: one
//! transaction and one sync for everything queued), so a node's event loop never waits on the
//! disk; [`Durability`] says when a write counts as done. Every read is checked against the
//! object's certificate, a damaged copy discarded rather than served. [`FaultyStore`] wraps a
//! store to inject I/O failures for tests. Does not own any protocol decision: PAST decides
//! what to store. [`ServerDb`] is the same for a server-mode server: its replica's items, its
//! configuration and its sign-once record.
#![deny(missing_docs)]

mod faulty;
mod format;
mod redb_store;
mod server_db;
mod state;
mod unwind;
mod writer;

pub use faulty::FaultyStore;
pub use format::{OpenError, FORMAT_VERSION};
pub use redb_store::{
    Durability, RedbRecords, RedbStore, StoreConfig, StoreFile, Waker, DEFAULT_CACHE_BYTES,
    DEFAULT_MAX_WAITING, DISK_FULL_MARK, DISK_RESERVE,
};
pub use server_db::{NewFile, ServerDb, ServerState, ServerWriteError, SERVER_FORMAT};
pub use writer::{MAX_BATCH_BYTES, SYNC_INTERVAL};
