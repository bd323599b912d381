//! Large files: content-addressed chunks stored as ordinary objects, plus a manifest object
//! listing them. The driver streams chunks in and out; this module names them, describes them
//! and verifies them as they come back, so memory stays bounded by one chunk.

use serde::{Deserialize, Serialize};

use ringvault_types::Id;

/// Objects larger than this are split into chunks of this size (the last one shorter).
pub const CHUNK_SIZE: usize = 4 * 1024 * 1024;
/// The most chunks one manifest may list (a 4 TiB file at the default chunk size).
pub const MAX_CHUNKS: usize = 1 << 20;
/// Marks a manifest's content, so a manifest is never mistaken for file bytes.
const MANIFEST_MAGIC: &[u8; 8] = b"rvmanif1";

/// One chunk of a large file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// The chunk object's id (as its certificate says, after any re-salting).
    pub id: Id,
    /// Its size in bytes.
    pub size: u64,
    /// BLAKE3 of its bytes.
    pub hash: [u8; 32],
}

/// The manifest of a large file: stored as the content of the object the user named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Total size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole file.
    pub hash: [u8; 32],
    /// The chunks, in order.
    pub chunks: Vec<ChunkRef>,
}

/// Why a manifest or a reassembled file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The bytes are not a manifest.
    #[error("not a manifest")]
    NotManifest,
    /// The manifest is inconsistent (sizes do not add up, too many chunks).
    #[error("inconsistent manifest: {0}")]
    BadManifest(&'static str),
    /// A chunk arrived out of order or beyond the last.
    #[error("chunk {got} arrived, chunk {want} was expected")]
    OutOfOrder {
        /// The index that arrived.
        got: usize,
        /// The index expected.
        want: usize,
    },
    /// A chunk's bytes do not match the manifest.
    #[error("chunk {0} does not match the manifest")]
    BadChunk(usize),
    /// The whole file does not hash to the manifest's hash, or is incomplete.
    #[error("the reassembled file does not match the manifest")]
    BadFile,
}

/// Names the chunks of one upload. Every upload draws a fresh random tag, so a chunk belongs
/// to exactly one file: reclaiming the file may release all its chunks without touching
/// another file's, and the chunks of an upload that failed can be taken back. Equal chunks
/// within one file share a name, and are stored once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upload([u8; 16]);

impl Upload {
    /// An upload tagged with `tag` (random: the driver draws it from the OS).
    pub fn new(tag: [u8; 16]) -> Self {
        Upload(tag)
    }

    /// The object name of a chunk of this upload: the tag and the chunk's content hash.
    pub fn chunk_name(&self, bytes: &[u8]) -> String {
        let mut s = String::from("chunk:");
        for b in self.0.iter().chain(blake3::hash(bytes).as_bytes()) {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl Manifest {
    /// Encodes the manifest as object content.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MANIFEST_MAGIC.to_vec();
        out.extend(postcard::to_allocvec(self).expect("manifests always encode"));
        out
    }

    /// Reads object content as a manifest, checking it is consistent.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, ChunkError> {
        let body = bytes
            .strip_prefix(MANIFEST_MAGIC.as_slice())
            .ok_or(ChunkError::NotManifest)?;
        let m: Manifest = postcard::from_bytes(body).map_err(|_| ChunkError::NotManifest)?;
        if m.chunks.len() > MAX_CHUNKS {
            return Err(ChunkError::BadManifest("too many chunks"));
        }
        let total = m
            .chunks
            .iter()
            .try_fold(0u64, |acc, c| acc.checked_add(c.size))
            .ok_or(ChunkError::BadManifest("sizes overflow"))?;
        if total != m.size {
            return Err(ChunkError::BadManifest(
                "chunk sizes do not add up to the file size",
            ));
        }
        Ok(m)
    }

    /// The ids of the file's chunks, each once, in file order: what reclaiming the file
    /// releases.
    pub fn distinct_chunks(&self) -> Vec<Id> {
        let mut seen = std::collections::BTreeSet::new();
        self.chunks
            .iter()
            .filter(|c| seen.insert(c.id))
            .map(|c| c.id)
            .collect()
    }

    /// Whether object content is a manifest (rather than a small file's bytes).
    pub fn is_manifest(bytes: &[u8]) -> bool {
        bytes.starts_with(MANIFEST_MAGIC)
    }
}

/// Builds a manifest as chunks are stored, hashing the whole file on the way. It also knows
/// which chunks the upload stored, so equal chunks are stored once and a failed upload can
/// take back what it stored.
#[derive(Debug, Default)]
pub struct ManifestBuilder {
    hasher: blake3::Hasher,
    size: u64,
    chunks: Vec<ChunkRef>,
    /// The chunks stored so far, by content hash, in the order they were stored.
    stored: Vec<Id>,
    by_hash: std::collections::BTreeMap<[u8; 32], Id>,
}

impl ManifestBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the next chunk, just stored as object `id`.
    pub fn push(&mut self, bytes: &[u8], id: Id) {
        let hash = *blake3::hash(bytes).as_bytes();
        if self.by_hash.insert(hash, id).is_none() {
            self.stored.push(id);
        }
        self.record(bytes, hash, id);
    }

    /// Records the next chunk if the same bytes were pushed before, and answers true; false
    /// when they are new (store them, then [`push`](Self::push) them).
    pub fn push_repeat(&mut self, bytes: &[u8]) -> bool {
        let hash = *blake3::hash(bytes).as_bytes();
        let Some(&id) = self.by_hash.get(&hash) else {
            return false;
        };
        self.record(bytes, hash, id);
        true
    }

    fn record(&mut self, bytes: &[u8], hash: [u8; 32], id: Id) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.chunks.push(ChunkRef {
            id,
            size: bytes.len() as u64,
            hash,
        });
    }

    /// The chunks stored so far, each once: what an upload that fails takes back.
    pub fn stored(&self) -> &[Id] {
        &self.stored
    }

    /// The manifest of what was pushed so far.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            size: self.size,
            hash: *self.hasher.finalize().as_bytes(),
            chunks: self.chunks.clone(),
        }
    }
}

/// Verifies a large file as its chunks come back in order.
#[derive(Debug)]
pub struct Reassembler<'m> {
    manifest: &'m Manifest,
    next: usize,
    hasher: blake3::Hasher,
}

impl<'m> Reassembler<'m> {
    /// Starts verifying the file `manifest` describes.
    pub fn new(manifest: &'m Manifest) -> Self {
        Reassembler {
            manifest,
            next: 0,
            hasher: blake3::Hasher::new(),
        }
    }

    /// The chunk to fetch next, if any.
    pub fn next_chunk(&self) -> Option<&'m ChunkRef> {
        self.manifest.chunks.get(self.next)
    }

    /// Checks chunk `index`; on success its bytes may be written out.
    pub fn push(&mut self, index: usize, bytes: &[u8]) -> Result<(), ChunkError> {
        if index != self.next || index >= self.manifest.chunks.len() {
            return Err(ChunkError::OutOfOrder {
                got: index,
                want: self.next,
            });
        }
        let c = &self.manifest.chunks[index];
        if bytes.len() as u64 != c.size || *blake3::hash(bytes).as_bytes() != c.hash {
            return Err(ChunkError::BadChunk(index));
        }
        self.hasher.update(bytes);
        self.next += 1;
        Ok(())
    }

    /// Confirms every chunk arrived and the whole file matches.
    pub fn finish(self) -> Result<(), ChunkError> {
        if self.next != self.manifest.chunks.len()
            || *self.hasher.finalize().as_bytes() != self.manifest.hash
        {
            return Err(ChunkError::BadFile);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(data: &[u8], chunk: usize) -> Manifest {
        let mut b = ManifestBuilder::new();
        for (i, c) in data.chunks(chunk).enumerate() {
            b.push(c, Id::hash(&(i as u64).to_le_bytes()));
        }
        b.manifest()
    }

    proptest! {
        #[test]
        fn split_describe_and_reassemble_round_trip(
            data in proptest::collection::vec(any::<u8>(), 0..5000), chunk in 1usize..700
        ) {
            let m = build(&data, chunk);
            let back = Manifest::from_bytes(&m.to_bytes()).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert!(Manifest::is_manifest(&m.to_bytes()));
            let mut r = Reassembler::new(&back);
            for (i, c) in data.chunks(chunk).enumerate() {
                prop_assert_eq!(r.next_chunk().unwrap().size, c.len() as u64);
                r.push(i, c).unwrap();
            }
            prop_assert!(r.next_chunk().is_none());
            r.finish().unwrap();
        }

        #[test]
        fn garbage_is_not_a_manifest(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = MANIFEST_MAGIC.to_vec();
            b.extend(&bytes);
            // Total: any input gives a consistent manifest or an error.
            if let Ok(m) = Manifest::from_bytes(&b) {
                prop_assert_eq!(m.chunks.iter().map(|c| c.size).sum::<u64>(), m.size);
            }
        }
    }

    #[test]
    fn bad_chunks_and_short_files_are_caught() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let m = build(&data, 300);
        let mut r = Reassembler::new(&m);
        assert_eq!(
            r.push(1, &data[300..600]),
            Err(ChunkError::OutOfOrder { got: 1, want: 0 })
        );
        let mut bad = data[..300].to_vec();
        bad[5] ^= 1;
        assert_eq!(r.push(0, &bad), Err(ChunkError::BadChunk(0)));
        r.push(0, &data[..300]).unwrap();
        assert_eq!(r.finish(), Err(ChunkError::BadFile));
        let mut lying = m.clone();
        lying.size += 1;
        assert!(matches!(
            Manifest::from_bytes(&lying.to_bytes()),
            Err(ChunkError::BadManifest(_))
        ));
        assert_eq!(
            Manifest::from_bytes(b"plain file bytes"),
            Err(ChunkError::NotManifest)
        );
    }

    #[test]
    fn chunk_names_are_per_upload_and_per_content() {
        let (a, b) = (Upload::new([1; 16]), Upload::new([2; 16]));
        assert_eq!(a.chunk_name(b"x"), a.chunk_name(b"x"));
        assert_ne!(a.chunk_name(b"x"), a.chunk_name(b"y"));
        assert_ne!(a.chunk_name(b"x"), b.chunk_name(b"x"));
    }

    #[test]
    fn a_repeated_chunk_is_released_once() {
        let mut b = ManifestBuilder::new();
        let (x, y) = (Id::hash(b"x"), Id::hash(b"y"));
        b.push(b"aa", x);
        assert!(!b.push_repeat(b"bb"), "new bytes are stored");
        b.push(b"bb", y);
        assert!(
            b.push_repeat(b"aa"),
            "bytes seen before are not stored again"
        );
        assert_eq!(b.stored(), &[x, y][..]);
        let m = b.manifest();
        assert_eq!(m.chunks.len(), 3);
        assert_eq!((m.chunks[2].id, m.size), (x, 6));
        assert_eq!(m.distinct_chunks(), vec![x, y]);
        assert_eq!(m.hash, *blake3::hash(b"aabbaa").as_bytes());
    }
}
