//! Signed mutable records on ringvault's KBR API (the format is `ringvault_types::Record`).
//!
//! Owns: the [`Records`] service. A record lives on the k nodes closest to its key. A write is
//! routed to the key's root, which keeps the record if it verifies and is newer than what it
//! holds, and passes it to the other k - 1; each replica answers the writer with a signed
//! [`RecordAck`], and the write is done at k of them (or the quorum the writer asked for). A
//! read is routed to the root, which answers and asks the other k - 1 to answer the reader
//! straight; the reader takes the highest version among the answers that verify once a majority
//! of k answered (or at its deadline), reports a conflict when two answers share a version, and
//! sends the winner to every replica that answered with less (read repair).
//!
//! Replicas keep k copies as the ring changes: after a leaf set change and every minute they
//! offer each other the versions they hold, and the highest wins (`maintenance.rs`).
//!
//! Records are written through a [`RecordStore`] (the node's object store file on a daemon) and
//! kept in memory. A delete is a tombstone, dropped once every replica has held it for
//! `max_absence`; a node that comes back after longer (or after an unknown time) serves none of
//! its records until another replica shows it holds the key too, so a deleted record whose
//! tombstone is gone cannot come back to life.
//!
//! In secure mode (`RecordsConfig::secure`) writes and reads reach every member through the
//! overlay's `sec_route`, and replies count only from the verified replica set.
//!
//! Does not own: change notification (the daemon publishes versions over Scribe; [`Watcher`]
//! judges what watchers receive), secure routing itself (the overlay's). The HTTP API and CLI
//! are the binary's.
#![deny(missing_docs)]

mod maintenance;
mod message;
mod records;
mod store;
#[cfg(test)]
mod tests;
mod watch;

pub use maintenance::{SYNC_DELAY, SYNC_INTERVAL};
pub use message::{RecordAck, RecordRefusal};
pub use records::{
    ReadResult, Records, RecordsConfig, RecordsError, RecordsEvent, RecordsStats, RequestId,
    Written, DEFAULT_MAX_ABSENCE, RECHECK_PERIOD, RECORDS_APP,
};
pub use store::{MemoryRecordStore, RecordStore};
pub use watch::{Notice, Watcher};
