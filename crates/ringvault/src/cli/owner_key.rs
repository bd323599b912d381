//! The user's owner key: the key the storage commands sign file and reclaim certificates with,
//! so what a user stores is theirs whichever node they put it through. 32 secret bytes in a
//! file only its owner can read, created on first use.
//!
//! Where: `--key FILE` (or `RINGVAULT_KEY`), else `owner.key` in `RINGVAULT_CONFIG_DIR`, else
//! in `$XDG_CONFIG_HOME/ringvault`, else in `$HOME/.config/ringvault` (`%APPDATA%\ringvault` on
//! Windows).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ringvault_types::Identity;

/// The key file's name in the config directory.
pub const KEY_FILE: &str = "owner.key";

/// Where the owner key lives when `--key` is not given.
pub fn default_path() -> Result<PathBuf> {
    Ok(config_dir()?.join(KEY_FILE))
}

/// The CLI's config directory: `RINGVAULT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/ringvault`, else
/// `$HOME/.config/ringvault` (`%APPDATA%\ringvault` on Windows).
pub fn config_dir() -> Result<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = if let Some(d) = var("RINGVAULT_CONFIG_DIR") {
        d
    } else if let Some(d) = var("XDG_CONFIG_HOME") {
        d.join("ringvault")
    } else if let Some(h) = var("HOME") {
        h.join(".config").join("ringvault")
    } else if let Some(a) = var("APPDATA") {
        a.join("ringvault")
    } else {
        bail!("no config directory: set RINGVAULT_CONFIG_DIR or HOME, or pass --key FILE");
    };
    Ok(dir)
}

/// The key at `path`, or the default path's.
pub fn path_or_default(path: Option<&Path>) -> Result<PathBuf> {
    match path {
        Some(p) => Ok(p.to_path_buf()),
        None => default_path(),
    }
}

/// Reads the owner key at `path`; `None` when there is no file.
pub fn load(path: &Path) -> Result<Option<Identity>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the owner key {}", path.display()))
        }
    };
    let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        anyhow!(
            "{} holds {} bytes, not a 32-byte owner key; pass another with --key FILE",
            path.display(),
            bytes.len()
        )
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "the owner key {} can be read by others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
    Ok(Some(Identity::from_secret_bytes(secret)))
}

/// Reads the owner key at `path`, creating a fresh one there (and its directory) when there is
/// none. Two commands creating it at once agree on one key: the file appears whole, once.
pub fn load_or_create(path: &Path) -> Result<Identity> {
    if let Some(k) = load(path)? {
        return Ok(k);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow!("the OS random source failed: {e}"))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = write_new(&tmp, &secret)
        // Link, not rename: it fails if another command created the key meanwhile, and then
        // that key is the one.
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
            let key = Identity::from_secret_bytes(secret);
            eprintln!(
                "created your owner key {} (owner {}); keep it: only this key can reclaim what you store with it",
                path.display(),
                key.id()
            );
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load(path)?.ok_or_else(|| {
            anyhow!(
                "the owner key {} vanished as it was created",
                path.display()
            )
        }),
        Err(e) => Err(e).with_context(|| format!("cannot write the owner key {}", path.display())),
    }
}

/// Writes a new file readable by its owner only, and syncs it.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("rv-owner-key-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("sub").join(KEY_FILE);
        assert!(load(&path).unwrap().is_none());
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(fs::read(&path).unwrap().len(), 32);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.join("sub")).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "owner key readable by others: {mode:o}");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(load(&path).is_err(), "a key others can read is refused");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        fs::write(&path, b"short").unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("not a 32-byte owner key"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
