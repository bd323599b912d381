//! Watching a record: what to show of the messages published to its topic. Anyone can publish
//! to a topic, so a watcher shows only records that verify, are this record's, and are newer
//! than the last it showed; anything else is only a hint that the record may have changed, on
//! which the watcher reads it itself (and judges what it read the same way).

use ringvault_types::{Id, Record};

/// What to do with a message published to a watched record's topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A new version: show it.
    Show(Record),
    /// Not a verifiable record of this key (a notice for a value too large to carry, or
    /// junk): read the record and offer what comes back to [`Watcher::newer`].
    Read,
    /// A version already shown, or an older one: nothing to do.
    Ignore,
}

/// The state of one watch: the record's key and the last version shown.
#[derive(Clone, Debug)]
pub struct Watcher {
    key: Id,
    last: Option<u64>,
}

impl Watcher {
    /// A watch of the record under `key`, nothing shown yet.
    pub fn new(key: Id) -> Self {
        Watcher { key, last: None }
    }

    /// Judges a message published to the record's topic.
    pub fn judge(&mut self, data: &[u8]) -> Notice {
        match Record::decode(data) {
            Ok(r) if r.key() == self.key && r.verify().is_ok() => {
                self.newer(r).map_or(Notice::Ignore, Notice::Show)
            }
            _ => Notice::Read,
        }
    }

    /// `r` (a verified record of this key, as a read returns it) if it is newer than the last
    /// version shown; it is then the last.
    pub fn newer(&mut self, r: Record) -> Option<Record> {
        if r.key() != self.key || self.last.is_some_and(|v| r.body.version <= v) {
            return None;
        }
        self.last = Some(r.body.version);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringvault_types::{Identity, RecordValue};

    fn rec(owner: u8, name: &str, version: u64) -> Record {
        let o = Identity::from_secret_bytes([owner; 32]);
        Record::sign(&o, name, version, 0, RecordValue::Inline(vec![1])).unwrap()
    }

    #[test]
    fn only_verified_newer_versions_of_the_watched_record_are_shown() {
        let mut w = Watcher::new(rec(1, "n", 1).key());
        assert_eq!(
            w.judge(&rec(1, "n", 2).encode()),
            Notice::Show(rec(1, "n", 2))
        );
        assert_eq!(w.judge(&rec(1, "n", 2).encode()), Notice::Ignore);
        assert_eq!(w.judge(&rec(1, "n", 1).encode()), Notice::Ignore);
        // Another owner's record, junk, or a forged one: read the record instead.
        assert_eq!(w.judge(&rec(2, "n", 9).encode()), Notice::Read);
        assert_eq!(w.judge(b"junk"), Notice::Read);
        let mut forged = rec(1, "n", 9);
        forged.body.version = 10;
        assert_eq!(w.judge(&forged.encode()), Notice::Read);
        assert_eq!(w.newer(rec(2, "n", 9)), None);
        assert_eq!(w.newer(rec(1, "n", 3)), Some(rec(1, "n", 3)));
    }
}
