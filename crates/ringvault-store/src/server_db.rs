//! What a server-mode server keeps on disk: the items of its replica, the newest certified
//! configuration, its sign-once record and the key ranges it has not finished taking over, in
//! one redb file (`DATA_DIR/server.redb`). Every write is one transaction committed and synced
//! before it returns: the driver calls these from a thread of their own, never from its event
//! loop, and batches queued item writes into one call (group commit).

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use ringvault_bft::{Config, ConfigCert, Item, SignOnce};
use ringvault_types::Id;

use crate::format::{open_db, OpenError};

const ITEMS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("items");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const CONFIG: &str = "config";
const SIGN_ONCE: &str = "sign_once";
const UNSYNCED: &str = "unsynced";
const FORMAT: &str = "format";
const WIPED: &str = "wiped";
const GENESIS: &str = "genesis";
const LEAVING: &str = "leaving";

/// The format of `server.redb`; bumped on any incompatible change.
pub const SERVER_FORMAT: u32 = 1;

/// What a server finds on disk at start.
#[derive(Debug, Default)]
pub struct ServerState {
    /// The newest configuration it adopted, with its certificate (`None`: genesis).
    pub config: Option<(Config, Option<ConfigCert>)>,
    /// Its sign-once record.
    pub sign_once: Option<SignOnce>,
    /// Key ranges it had not finished taking over.
    pub unsynced: Vec<(Id, Id)>,
    /// The items its replica holds.
    pub items: Vec<Item>,
    /// The server lost its data before and has not finished recovering (see
    /// [`ServerDb::recovered`]).
    pub wiped: bool,
    /// The hash of the genesis this state grew from ([`ServerDb::put_genesis`]).
    pub genesis: Option<Id>,
    /// The operator asked the server to leave ([`ServerDb::put_leaving`]).
    pub leaving: bool,
}

/// What a database file that does not exist yet stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewFile {
    /// A new server: nothing was lost.
    Fresh,
    /// A server whose earlier file is gone: it is marked as having lost its data in the same
    /// transaction that creates the file, so a crash right after cannot forget the loss.
    AfterLoss,
}

/// Why a write failed; nothing of it is on disk.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the server store: {0}")]
pub struct ServerWriteError(String);

fn write_error(e: impl std::fmt::Display) -> ServerWriteError {
    ServerWriteError(e.to_string())
}

/// A server's database.
pub struct ServerDb {
    db: Database,
}

impl ServerDb {
    /// Opens (or creates) the database at `path` and reads back everything in it. A file of
    /// another format, or one whose entries do not decode, is refused rather than half read:
    /// a server that starts with less than it persisted could sign twice or lose data.
    pub fn open(path: &Path, new: NewFile) -> Result<(ServerDb, ServerState), OpenError> {
        let p = path.display().to_string();
        let existed = path.exists();
        let db = open_db(path, 16 << 20)?;
        let damaged = |detail: String| OpenError::Damaged {
            path: p.clone(),
            detail,
        };
        let wrapped = |e: redb::Error| OpenError::Database {
            path: p.clone(),
            source: Box::new(e),
        };
        let tx = db.begin_write().map_err(|e| wrapped(e.into()))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| wrapped(e.into()))?;
            tx.open_table(ITEMS).map_err(|e| wrapped(e.into()))?;
            let found = meta
                .get(FORMAT)
                .map_err(|e| wrapped(e.into()))?
                .map(|v| v.value().to_vec());
            match found {
                None => {
                    meta.insert(FORMAT, SERVER_FORMAT.to_le_bytes().as_slice())
                        .map_err(|e| wrapped(e.into()))?;
                    // A file that existed without its format entry was being created when the
                    // process died: whatever it was created for, count it as a loss (a few
                    // epochs of abstaining), never as a fresh start.
                    if new == NewFile::AfterLoss || existed {
                        meta.insert(WIPED, [1u8].as_slice())
                            .map_err(|e| wrapped(e.into()))?;
                    }
                }
                Some(v) => {
                    let found = <[u8; 4]>::try_from(v.as_slice())
                        .map(u32::from_le_bytes)
                        .map_err(|_| damaged("the format entry is not 4 bytes".into()))?;
                    if found != SERVER_FORMAT {
                        return Err(OpenError::Version { path: p, found });
                    }
                }
            }
        }
        tx.commit().map_err(|e| wrapped(e.into()))?;

        let mut state = ServerState::default();
        let tx = db.begin_read().map_err(|e| wrapped(e.into()))?;
        let meta = tx.open_table(META).map_err(|e| wrapped(e.into()))?;
        let read = |key: &str| -> Result<Option<Vec<u8>>, OpenError> {
            Ok(meta
                .get(key)
                .map_err(|e| wrapped(e.into()))?
                .map(|v| v.value().to_vec()))
        };
        if let Some(bytes) = read(CONFIG)? {
            state.config = Some(
                postcard::from_bytes(&bytes)
                    .map_err(|e| damaged(format!("the configuration does not decode: {e}")))?,
            );
        }
        if let Some(bytes) = read(SIGN_ONCE)? {
            state.sign_once = Some(
                postcard::from_bytes(&bytes)
                    .map_err(|e| damaged(format!("the sign-once record does not decode: {e}")))?,
            );
        }
        state.wiped = read(WIPED)?.is_some();
        state.leaving = read(LEAVING)?.is_some();
        if let Some(bytes) = read(GENESIS)? {
            let hash = <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| damaged("the genesis entry is not 32 bytes".into()))?;
            state.genesis = Some(Id::from_bytes(hash));
        }
        if let Some(bytes) = read(UNSYNCED)? {
            state.unsynced = postcard::from_bytes(&bytes)
                .map_err(|e| damaged(format!("the unsynced ranges do not decode: {e}")))?;
        }
        let items = tx.open_table(ITEMS).map_err(|e| wrapped(e.into()))?;
        for entry in items.iter().map_err(|e| wrapped(e.into()))? {
            let (key, value) = entry.map_err(|e| wrapped(e.into()))?;
            let item: Item = postcard::from_bytes(value.value())
                .map_err(|e| damaged(format!("an item does not decode: {e}")))?;
            if item.key().as_bytes() != key.value() || item.verify().is_err() {
                return Err(damaged(format!(
                    "the item under {} does not verify",
                    Id::from_bytes(*key.value()).short()
                )));
            }
            state.items.push(item);
        }
        drop(items);
        drop(meta);
        drop(tx);
        Ok((ServerDb { db }, state))
    }

    fn put_meta(&self, key: &str, bytes: &[u8]) -> Result<(), ServerWriteError> {
        let tx = self.db.begin_write().map_err(write_error)?;
        tx.open_table(META)
            .map_err(write_error)?
            .insert(key, bytes)
            .map_err(write_error)?;
        tx.commit().map_err(write_error)
    }

    /// Forgets the data loss: the server has recovered (it no longer abstains and adopted a
    /// configuration whose lease runs).
    pub fn recovered(&self) -> Result<(), ServerWriteError> {
        let tx = self.db.begin_write().map_err(write_error)?;
        tx.open_table(META)
            .map_err(write_error)?
            .remove(WIPED)
            .map_err(write_error)?;
        tx.commit().map_err(write_error)
    }

    /// Records that the operator asked the server to leave.
    pub fn put_leaving(&self) -> Result<(), ServerWriteError> {
        self.put_meta(LEAVING, &[1])
    }

    /// Records the hash of the genesis the server runs from, so that a later start with
    /// another ring's genesis is refused.
    pub fn put_genesis(&self, hash: &Id) -> Result<(), ServerWriteError> {
        self.put_meta(GENESIS, hash.as_bytes())
    }

    /// Persists the sign-once record (synced when this returns).
    pub fn put_sign_once(&self, record: &SignOnce) -> Result<(), ServerWriteError> {
        self.put_meta(
            SIGN_ONCE,
            &postcard::to_allocvec(record).map_err(write_error)?,
        )
    }

    /// Persists the newest configuration and its certificate.
    pub fn put_config(
        &self,
        config: &Config,
        cert: Option<&ConfigCert>,
    ) -> Result<(), ServerWriteError> {
        let bytes = postcard::to_allocvec(&(config, cert)).map_err(write_error)?;
        self.put_meta(CONFIG, &bytes)
    }

    /// Persists the key ranges not yet taken over.
    pub fn put_unsynced(&self, ranges: &[(Id, Id)]) -> Result<(), ServerWriteError> {
        self.put_meta(
            UNSYNCED,
            &postcard::to_allocvec(ranges).map_err(write_error)?,
        )
    }

    /// Writes `items` in one transaction; an item replaces the one held under its key only
    /// when it takes precedence ([`Item::replaces`]), so a late older version never
    /// overwrites a newer one.
    pub fn put_items(&self, items: &[Item]) -> Result<(), ServerWriteError> {
        let tx = self.db.begin_write().map_err(write_error)?;
        {
            let mut table = tx.open_table(ITEMS).map_err(write_error)?;
            for item in items {
                let key = *item.key().as_bytes();
                let keep = match table.get(&key).map_err(write_error)? {
                    Some(held) => match postcard::from_bytes::<Item>(held.value()) {
                        Ok(held) => !item.replaces(&held),
                        Err(_) => false,
                    },
                    None => false,
                };
                if !keep {
                    let bytes = postcard::to_allocvec(item).map_err(write_error)?;
                    table.insert(&key, bytes.as_slice()).map_err(write_error)?;
                }
            }
        }
        tx.commit().map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringvault_types::{Identity, Record, RecordValue};

    fn record(owner: &Identity, version: u64, value: &[u8]) -> Item {
        Item::Record(
            Record::sign(owner, "n", version, 0, RecordValue::Inline(value.to_vec())).unwrap(),
        )
    }

    #[test]
    fn what_is_written_comes_back_and_an_older_version_never_replaces_a_newer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.redb");
        let owner = Identity::from_secret_bytes([7; 32]);
        {
            let (db, state) = ServerDb::open(&path, NewFile::Fresh).unwrap();
            assert!(state.items.is_empty() && state.config.is_none() && !state.wiped);
            db.put_items(&[record(&owner, 2, b"two"), Item::Object(b"obj".to_vec())])
                .unwrap();
            db.put_items(&[record(&owner, 1, b"one")]).unwrap();
            db.put_unsynced(&[(Id::from_bytes([1; 32]), Id::from_bytes([2; 32]))])
                .unwrap();
        }
        let (_db, state) = ServerDb::open(&path, NewFile::AfterLoss).unwrap();
        assert!(!state.wiped, "an existing file is not marked");
        assert_eq!(state.items.len(), 2);
        assert!(state.items.contains(&record(&owner, 2, b"two")));
        assert!(state.items.contains(&Item::Object(b"obj".to_vec())));
        assert_eq!(state.unsynced.len(), 1);
    }

    #[test]
    fn a_loss_is_remembered_until_the_server_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.redb");
        let (db, state) = ServerDb::open(&path, NewFile::AfterLoss).unwrap();
        assert!(state.wiped);
        drop(db);
        let (db, state) = ServerDb::open(&path, NewFile::Fresh).unwrap();
        assert!(state.wiped, "a restart before recovering still knows");
        db.recovered().unwrap();
        db.put_leaving().unwrap();
        drop(db);
        let state = ServerDb::open(&path, NewFile::Fresh).unwrap().1;
        assert!(!state.wiped);
        assert!(state.leaving, "a leave asked for survives a restart");
    }

    #[test]
    fn a_file_left_half_created_counts_as_a_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.redb");
        // The file exists, its first transaction never committed (the process died).
        drop(redb::Database::create(&path).unwrap());
        let (_db, state) = ServerDb::open(&path, NewFile::Fresh).unwrap();
        assert!(state.wiped);
    }
}
