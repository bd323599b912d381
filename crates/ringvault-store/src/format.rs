//! The database file: its tables, its format version, opening it and loading what the store
//! keeps in memory.

// Database operations return redb's own error, large but short-lived: it is turned into a
// `StoreError` or an `OpenError` as soon as an operation ends.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use ringvault_past::{FileCertificate, Kind};
use ringvault_types::{Contact, Id};

use crate::unwind::quiet_catch;

/// The on-disk format this build reads and writes. A database of another version is refused
/// at open, never silently reinterpreted.
pub const FORMAT_VERSION: u32 = 1;

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");

/// A table of one store, keyed by object id.
pub(crate) type Table<'a> = TableDefinition<'a, &'static [u8; 32], &'static [u8]>;

/// The tables of one store. A node's own file holds one store in the plain tables; a file the
/// nodes of one process share (`ringvault ring`) holds one set per node, named after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tables {
    /// id -> postcard(Record): certificate and kind, small.
    records: String,
    /// id -> content bytes.
    content: String,
    /// id -> postcard(Contact): where a diverted replica lives.
    pointers: String,
    /// record key -> an encoded signed mutable record (`ringvault_types::Record`).
    mutable: String,
}

impl Tables {
    /// The plain tables (`None`), or those of the store of node `space`.
    pub(crate) fn of(space: Option<Id>) -> Self {
        let name = |t: &str| match space {
            None => t.to_string(),
            Some(id) => format!("{t}.{id}"),
        };
        Tables {
            records: name("records"),
            content: name("content"),
            pointers: name("pointers"),
            mutable: name("mutable"),
        }
    }

    pub(crate) fn records(&self) -> Table<'_> {
        TableDefinition::new(&self.records)
    }

    pub(crate) fn content(&self) -> Table<'_> {
        TableDefinition::new(&self.content)
    }

    pub(crate) fn pointers(&self) -> Table<'_> {
        TableDefinition::new(&self.pointers)
    }

    pub(crate) fn mutable(&self) -> Table<'_> {
        TableDefinition::new(&self.mutable)
    }

    /// Every table of the store.
    fn all(&self) -> [Table<'_>; 4] {
        [
            self.records(),
            self.content(),
            self.pointers(),
            self.mutable(),
        ]
    }
}

/// An object's entry in `RECORDS`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) cert: FileCertificate,
    pub(crate) kind: Kind,
}

/// What a store keeps in memory of its file, loaded at open.
#[derive(Default)]
pub(crate) struct Loaded {
    /// Kind and size of every object.
    pub(crate) index: BTreeMap<Id, (Kind, u64)>,
    /// Where this node's diverted replicas live.
    pub(crate) pointers: BTreeMap<Id, Contact>,
    /// The signed records held, encoded, by key: the records service checks them.
    pub(crate) mutable: Vec<(Id, Vec<u8>)>,
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
    /// The thread that commits the store's writes could not be started.
    #[error("cannot start the writer of the object store at {path}: {source}")]
    Writer {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
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
        !matches!(self, OpenError::Version { .. } | OpenError::Writer { .. })
    }
}

/// Whether an I/O error means the filesystem (or this user's quota on it) is out of space.
pub(crate) fn out_of_space(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || [Errno::NOSPC, Errno::DQUOT]
            .iter()
            .any(|n| e.raw_os_error() == Some(n.raw_os_error()))
}

pub(crate) fn open_db(path: &Path, cache_bytes: usize) -> Result<Database, OpenError> {
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

/// Whether the database already holds this build's format and the tables of every store in
/// `tables` (then it can be loaded with read transactions alone: a reopen on a full disk
/// writes nothing).
fn formatted(db: &Database, tables: &[&Tables]) -> bool {
    let Ok(txn) = db.begin_read() else {
        return false;
    };
    let Ok(meta) = txn.open_table(META) else {
        return false;
    };
    matches!(meta.get("format"), Ok(Some(v)) if v.value() == FORMAT_VERSION)
        && tables
            .iter()
            .all(|t| t.all().into_iter().all(|t| txn.open_table(t).is_ok()))
}

/// Loads one store's index, pointers and signed records from a database in this build's format, reading only.
fn load_index(db: &Database, path: &Path, tables: &Tables) -> Result<Loaded, OpenError> {
    let p = path.display().to_string();
    let dberr = |e: redb::Error| OpenError::Database {
        path: p.clone(),
        source: Box::new(e),
    };
    let txn = db.begin_read().map_err(|e| dberr(e.into()))?;
    let records = txn
        .open_table(tables.records())
        .map_err(|e| dberr(e.into()))?;
    let mut index = BTreeMap::new();
    for entry in records.iter().map_err(|e| dberr(e.into()))? {
        let (k, v) = entry.map_err(|e| dberr(e.into()))?;
        let rec: Record = postcard::from_bytes(v.value()).map_err(|e| OpenError::Damaged {
            path: p.clone(),
            detail: format!("record {}: {e}", Id::from_bytes(*k.value())),
        })?;
        index.insert(Id::from_bytes(*k.value()), (rec.kind, rec.cert.body.size));
    }
    let mut pointers = BTreeMap::new();
    let table = txn
        .open_table(tables.pointers())
        .map_err(|e| dberr(e.into()))?;
    for entry in table.iter().map_err(|e| dberr(e.into()))? {
        let (k, v) = entry.map_err(|e| dberr(e.into()))?;
        // A pointer that does not decode is only a lost hint: maintenance finds the replica.
        if let Ok(holder) = postcard::from_bytes::<Contact>(v.value()) {
            pointers.insert(Id::from_bytes(*k.value()), holder);
        }
    }
    let table = txn
        .open_table(tables.mutable())
        .map_err(|e| dberr(e.into()))?;
    let mut mutable = Vec::new();
    for entry in table.iter().map_err(|e| dberr(e.into()))? {
        let (k, v) = entry.map_err(|e| dberr(e.into()))?;
        mutable.push((Id::from_bytes(*k.value()), v.value().to_vec()));
    }
    Ok(Loaded {
        index,
        pointers,
        mutable,
    })
}

/// Checks the format (writing it, and the tables, into a new database) and loads the index
/// of every store in `tables`, in order.
pub(crate) fn load(
    db: &Database,
    path: &Path,
    tables: &[&Tables],
) -> Result<Vec<Loaded>, OpenError> {
    if !formatted(db, tables) {
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
            // A file from before signed records lacks only their table: it is added here.
            for t in tables.iter().flat_map(|t| t.all()) {
                txn.open_table(t).map_err(|e| dberr(e.into()))?;
            }
        }
        txn.commit().map_err(|e| dberr(e.into()))?;
    }
    tables.iter().map(|t| load_index(db, path, t)).collect()
}
