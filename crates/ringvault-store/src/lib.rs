//! ringvault's on-disk object store.
//!
//! Owns: [`RedbStore`], the redb implementation of `ringvault_past::Store`: one database file per
//! node holding objects (certificate and content), replica pointers and a format version, with
//! every write committed (fsync) before it returns; every read checked against the object's
//! certificate, a damaged copy discarded rather than served; and [`FaultyStore`], a wrapper that
//! injects I/O failures for tests. Does not own any protocol decision: PAST decides what to
//! store.
#![deny(missing_docs)]

mod faulty;
mod redb_store;
mod unwind;

pub use faulty::FaultyStore;
pub use redb_store::{
    OpenError, RedbStore, StoreConfig, DEFAULT_CACHE_BYTES, DISK_FULL_MARK, DISK_RESERVE,
    FORMAT_VERSION,
};
