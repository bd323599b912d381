//! The node identity on disk: `identity.key` in the data directory, 32 secret bytes, written
//! atomically (temporary file, fsync, rename) and readable by the owner only.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ringvault_types::Identity;

use crate::NetError;

/// The identity file's name inside a data directory.
pub const IDENTITY_FILE: &str = "identity.key";

fn io_err(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> NetError {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |source| NetError::Io {
        what: format!("{what} {}", path.display()),
        source,
    }
}

/// Loads the identity stored in `dir`, or creates `dir` and a fresh random identity there. A
/// restarted node therefore comes back with the same id.
pub fn load_or_create_identity(dir: &Path) -> Result<Identity, NetError> {
    let path: PathBuf = dir.join(IDENTITY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                NetError::BadIdentity(format!(
                    "{} holds {} bytes, not a 32-byte key; move it away to start this node with a new identity",
                    path.display(),
                    bytes.len()
                ))
            })?;
            Ok(Identity::from_secret_bytes(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret)
                .map_err(|e| NetError::BadIdentity(format!("the OS random source failed: {e}")))?;
            let identity = Identity::from_secret_bytes(secret);
            store_identity(dir, &identity)?;
            Ok(identity)
        }
        Err(e) => Err(io_err(&path, "reading")(e)),
    }
}

/// Stores `identity` in `dir` (created if missing), where [`load_or_create_identity`] finds
/// it: for a node whose key was made elsewhere. Refuses to replace a key already there (that
/// would change the node's id).
pub fn store_identity(dir: &Path, identity: &Identity) -> Result<(), NetError> {
    let path = dir.join(IDENTITY_FILE);
    if path.exists() {
        return Err(NetError::BadIdentity(format!(
            "{} already holds a key; move it away first to give this node another identity",
            path.display()
        )));
    }
    fs::create_dir_all(dir).map_err(io_err(dir, "creating data directory"))?;
    write_atomically(&path, &identity.secret_bytes())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    let tmp = path.with_extension("key.tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io_err(&tmp, "creating"))?;
    f.write_all(bytes).map_err(io_err(&tmp, "writing"))?;
    f.sync_all().map_err(io_err(&tmp, "syncing"))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err(path, "renaming into place"))?;
    if let Some(dir) = path.parent() {
        // Make the rename durable; not every platform can open a directory, so best effort.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_a_restart_and_a_corrupt_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("rv-keyfile-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let a = load_or_create_identity(&dir).unwrap();
        let b = load_or_create_identity(&dir).unwrap();
        assert_eq!(a.id(), b.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(IDENTITY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "identity readable by others: {mode:o}");
        }
        fs::write(dir.join(IDENTITY_FILE), b"short").unwrap();
        assert!(matches!(
            load_or_create_identity(&dir),
            Err(NetError::BadIdentity(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
