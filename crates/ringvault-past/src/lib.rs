//! PAST storage on ringvault's KBR API.
//!
//! Owns: self-certifying objects (owner-signed [`FileCertificate`]s, node-signed
//! [`StoreReceipt`]s, [`ReclaimCertificate`]s and receipts), the [`Store`] trait a node's storage
//! implements (with [`MemoryStore`] for tests and the simulator), GreedyDual-Size cache
//! replacement ([`GreedyDualSize`], or [`Lru`], chosen by [`CachePolicy`]), the acceptance rule for replicas ([`accepts`]), and the
//! [`Past`] service: insert with k signed receipts, lookup answered by the first holder on the
//! path, reclaim, replica and file diversion, caching along insert and lookup paths, and
//! replica maintenance (offer/want on leaf set changes and periodic anti-entropy).
//! Large files are content-addressed chunks plus a [`Manifest`] object; [`ChunkedUpload`] and
//! [`ChunkedDownload`] plan their transfer (several chunks at once, equal chunks stored once,
//! each chunk verified as it comes back, a failed upload taken back) for any driver.
//! Does not own: the overlay (it only ever sees the KBR API), disk formats (`ringvault-store`),
//! or I/O of any kind.
#![deny(missing_docs)]

mod audit;
mod cache;
mod cert;
mod chunks;
mod client;
mod durable;
#[cfg(feature = "forge")]
pub mod forge;
mod holder;
mod locality;
mod maintenance;
mod message;
mod past;
mod quota;
mod secure;
mod store;

pub use audit::{AuditConfig, AuditStats, Challenge, Proof};
pub use cache::{Cache, CachePolicy, GreedyDualSize, Lru};
pub use cert::{
    decode_certificates, encode_certificates, object_id, AbandonCertificate, CertError, FileBody,
    FileCertificate, Holding, ReceiptBody, ReclaimCertificate, ReclaimReceipt, StoreReceipt,
    MAX_NAME_LEN, MAX_REPLICAS,
};
pub use chunks::{
    ChunkError, ChunkJob, ChunkRef, ChunkedDownload, ChunkedUpload, Manifest, Upload,
    CHUNK_RETRY_DELAY, CHUNK_SIZE, DEFAULT_WINDOW, MAX_CHUNKS, MAX_CHUNK_ATTEMPTS, UPLOAD_WINDOW,
};
pub use client::check_certificates;
pub use durable::WriteGate;
pub use message::Refusal;
pub use past::{
    Description, Found, Inserted, LookupStats, Past, PastConfig, PastError, PastEvent, RequestId,
    ANTI_ENTROPY_INTERVAL, MAINTENANCE_DELAY, MAX_IDS_PER_MESSAGE, MAX_PENDING, MAX_RESALTS,
    MAX_TOMBSTONES, PAST_APP, REQUEST_TIMEOUT,
};
pub use quota::{insert_proven, reclaim_proof, reclaim_proven, sign_salts, Quota};
pub use secure::Witnesses;
pub use store::{
    Held, Kind, MemoryStore, SpaceLimit, Store, StoreError, StoreHealth, StoredObject, Usage,
    WriteProgress,
};

/// The replication factor k when the client does not choose one (PAST's k closest nodes).
pub const DEFAULT_REPLICAS: u8 = 3;

/// PAST's acceptance threshold for a primary replica: refuse when size / free > T_PRI.
pub const T_PRI: f64 = 0.1;
/// Acceptance threshold for a diverted replica: refuse when size / free > T_DIV.
pub const T_DIV: f64 = 0.05;

/// Whether a node with `free` bytes (cache counts as free) accepts a replica of `size` bytes
/// under threshold `t` (PAST: refuse when size / free > t).
pub fn accepts(size: u64, free: u64, t: f64) -> bool {
    free > 0 && (size as f64) <= t * free as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptance_follows_the_size_to_free_space_ratio() {
        assert!(accepts(10, 100, T_PRI));
        assert!(!accepts(11, 100, T_PRI));
        assert!(!accepts(6, 100, T_DIV));
        assert!(accepts(5, 100, T_DIV));
        assert!(!accepts(0, 0, T_PRI));
    }
}
