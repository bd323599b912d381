//! A store whose filesystem fills up: writes are refused as `Full` on the disk, every object
//! acknowledged before stays readable (also after redb itself hit ENOSPC, which leaves it
//! refusing all work until reopened), and writes resume once the filesystem has room, without
//! reopening the store by hand. A truncated database file is a clean error, never a panic.
//!
//! The disk tests mount a small tmpfs and need root; without it they say so and pass.

use std::path::{Path, PathBuf};
use std::process::Command;

use ringvault_past::{FileCertificate, Kind, SpaceLimit, Store, StoreError, StoredObject};
use ringvault_store::{OpenError, RedbStore, StoreConfig};
use ringvault_types::{Id, Identity};

const OBJECT: usize = 256 << 10;

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, mib: u64) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(st.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn object(n: u32) -> StoredObject {
    let owner = Identity::from_secret_bytes([5; 32]);
    let content: Vec<u8> = (0..OBJECT)
        .map(|i| (i as u32 ^ n.wrapping_mul(7)) as u8)
        .collect();
    let cert = FileCertificate::issue(&owner, &format!("fill{n}"), 0, &content, 3, 0);
    StoredObject {
        cert,
        content,
        kind: Kind::Primary,
    }
}

/// Puts objects until one is refused, which must be for want of disk (also when redb itself
/// hit ENOSPC: that is a full disk, not an I/O failure); answers the acknowledged ones.
fn fill_disk(store: &mut RedbStore) -> Vec<StoredObject> {
    let mut acked = Vec::new();
    for n in 0..1000 {
        let o = object(n);
        // Acknowledged means committed: the writer's failure (ENOSPC inside redb) comes back
        // from `sync`.
        match store.put(o.clone()).and_then(|()| store.sync()) {
            Ok(()) => acked.push(o),
            Err(StoreError::Full {
                limit: SpaceLimit::Disk,
                ..
            }) => return acked,
            Err(e) => panic!("after {n} objects: {e:?}, not a full disk"),
        }
    }
    panic!("1000 objects of {OBJECT} bytes fit on a small tmpfs");
}

fn assert_all_readable(store: &RedbStore, acked: &[StoredObject]) {
    for o in acked {
        let id = o.cert.id();
        let got = store.get(&id).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(
            got.map(|g| g.content == o.content),
            Some(true),
            "acknowledged object {id} is not readable"
        );
        assert_eq!(
            store.meta(&id).unwrap(),
            Some((Kind::Primary, OBJECT as u64))
        );
    }
}

#[test]
fn a_full_disk_refuses_new_writes_and_keeps_every_object() {
    let Some(fs) = Tmpfs::mount(24) else { return };
    let path = fs.path().join("objects.redb");
    let mut store = RedbStore::open_with(&path, StoreConfig::new(1 << 30)).unwrap();
    let acked = fill_disk(&mut store);
    assert!(
        acked.len() >= 20,
        "only {} objects fit in 24 MiB",
        acked.len()
    );
    let u = store.usage();
    let disk_free = u.disk_free.expect("a tmpfs answers statvfs");
    assert!(
        disk_free < 2 * OBJECT as u64,
        "reports {disk_free} bytes free when full"
    );
    assert_eq!(
        u.free(),
        disk_free,
        "free space is the disk's, not the 1 GiB budget"
    );
    let h = store.health();
    assert_eq!((h.disk_full, h.io_errors), (1, 0), "{h:?}");
    assert_all_readable(&store, &acked);

    // The disk grows: the same store takes writes again.
    fs.resize(48);
    assert!(store.usage().disk_free.unwrap() > 20 << 20);
    store
        .put(object(5000))
        .and_then(|()| store.sync())
        .expect("writes resume once the disk has room");
    assert_all_readable(&store, &acked);
}

#[test]
fn after_redb_itself_hits_enospc_the_store_reopens_and_loses_nothing() {
    let Some(fs) = Tmpfs::mount(16) else { return };
    let path = fs.path().join("objects.redb");
    let config = StoreConfig {
        disk_check: false,
        ..StoreConfig::new(1 << 30)
    };
    let mut store = RedbStore::open_with(&path, config).unwrap();
    let acked = fill_disk(&mut store);
    // Before the fix these reads failed with redb's "previous I/O error" until a restart.
    assert_all_readable(&store, &acked);
    assert!(store.health().reopened >= 1, "{:?}", store.health());
    // The refused write may have landed (ENOSPC while syncing a commit that was written): it
    // is then held and counted, but nothing acknowledged is missing.
    let held = store.list().unwrap().len();
    assert!((acked.len()..=acked.len() + 1).contains(&held), "{held}");

    fs.resize(40);
    store
        .put(object(7000))
        .and_then(|()| store.sync())
        .expect("writes resume without a restart");
    assert_all_readable(&store, &acked);
    drop(store);
    let store = RedbStore::open(&path, 1 << 30).unwrap();
    assert_eq!(store.list().unwrap().len(), held + 1);
    assert_all_readable(&store, &acked);
}

fn small_store(dir: &Path) -> (PathBuf, Vec<Id>) {
    let path = dir.join("objects.redb");
    let mut s = RedbStore::open(&path, 1 << 30).unwrap();
    let ids = (0..10)
        .map(|n| {
            let o = object(n);
            let id = o.cert.id();
            s.put(o).unwrap();
            id
        })
        .collect();
    (path, ids)
}

#[test]
fn a_truncated_store_is_a_clean_error_and_can_be_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ids) = small_store(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    // One byte short is what `truncate -s -1` leaves; half a file is worse.
    for cut in [1, 4096, len / 2] {
        let copy = dir.path().join(format!("cut{cut}.redb"));
        std::fs::copy(&path, &copy).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
        f.set_len(len - cut).unwrap();
        drop(f);
        match RedbStore::open(&copy, 1 << 30) {
            Err(e) => assert!(e.is_damage(), "cut {cut}: {e}"),
            Ok(s) => {
                // Whatever redb salvages must still be checked objects, never garbage.
                for id in &ids {
                    if let Ok(Some(o)) = s.get(id) {
                        assert!(o.cert.verify_content(&o.content).is_ok());
                    }
                }
            }
        }
    }
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 1).unwrap();
    drop(f);
    let err = RedbStore::open(&path, 1 << 30)
        .err()
        .expect("a truncated store is refused");
    assert!(matches!(err, OpenError::Damaged { .. }), "{err}");
    let aside = RedbStore::move_aside(&path).unwrap();
    assert!(
        aside.to_string_lossy().ends_with("objects.redb.damaged-1"),
        "{aside:?}"
    );
    assert!(aside.exists() && !path.exists());
    let fresh = RedbStore::open(&path, 1 << 30).unwrap();
    assert!(fresh.list().unwrap().is_empty());
}
