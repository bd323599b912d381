//! What the server-mode tests share: a simulated network's flight of messages, the storage
//! workload's records and objects, and the history checker.
//!
//! The checker: every value returned verifies and was written; a read that starts after a
//! write completed returns that version or a later one; a read that starts after another read
//! completed returns at least what that one returned (atomic reads); every object written
//! before a read started is read back byte for byte.
// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use ringvault_bft::{Item, QuorumError, QuorumEvent};
use ringvault_types::{
    CertBody, Id, Identity, NodeCertificate, Record, RecordValue, Time, CERT_VERSION,
};

/// Record keys are 0..RECORDS; objects are OBJECT_BASE + 0..OBJECTS.
pub const RECORDS: usize = 12;
/// Where object numbers start among operation keys.
pub const OBJECT_BASE: usize = 1_000;
/// Objects in the workload.
pub const OBJECTS: usize = 10;

/// A deterministic identity.
pub fn identity(i: u64) -> Identity {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&(i + 1).to_le_bytes());
    secret[8] = 0x51;
    Identity::from_secret_bytes(secret)
}

/// The same identity again (identities are not `Clone`).
pub fn dup(identity: &Identity) -> Identity {
    Identity::from_secret_bytes(identity.secret_bytes())
}

/// A certificate from `ca` for `who`, valid for a long time, with address 127.0.0.1:7000 +
/// `serial`.
pub fn cert(ca: &Identity, who: &Identity, serial: u64) -> NodeCertificate {
    NodeCertificate::issue(
        ca,
        CertBody {
            version: CERT_VERSION,
            serial,
            node_id: who.id(),
            public_key: who.public_key(),
            addrs: vec![format!("127.0.0.1:{}", 7000 + serial).parse().unwrap()],
            not_before: 0,
            not_after: u64::MAX / 2,
        },
    )
}

/// The records' owners and the objects' bytes.
pub struct Workload {
    owners: Vec<Identity>,
    objects: Vec<Vec<u8>>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            owners: (0..RECORDS as u64).map(|i| identity(5_000 + i)).collect(),
            objects: (0..OBJECTS as u8)
                .map(|i| vec![i; 100 + i as usize])
                .collect(),
        }
    }
}

impl Workload {
    /// Version `version` of record `key`.
    pub fn record(&self, key: usize, version: u64) -> Item {
        let value = RecordValue::Inline(format!("k{key}v{version}").into_bytes());
        Item::Record(Record::sign(&self.owners[key], "r", version, 0, value).unwrap())
    }

    /// The key record `key` is stored under.
    pub fn record_key(&self, key: usize) -> Id {
        ringvault_types::record_key(&self.owners[key].public_key(), "r")
    }

    /// Object `o`.
    pub fn object(&self, o: usize) -> Item {
        Item::Object(self.objects[o].clone())
    }
}

/// One completed record operation.
#[derive(Clone, Debug)]
pub struct Done {
    key: usize,
    write: bool,
    /// Version written, or read (0: not found).
    version: u64,
    start: Time,
    end: Time,
}

/// What the operations did.
#[derive(Default)]
pub struct History {
    done: Vec<Done>,
    wrong_values: usize,
    /// Objects written, with the time the first write completed.
    objects_written: BTreeMap<usize, Time>,
    /// Object reads: (object, what came back, when the read started).
    object_reads: Vec<(usize, Option<Item>, Time)>,
    /// Operations that failed.
    pub failures: Vec<QuorumError>,
}

impl History {
    /// Records how operation (`key`, `write`, `version`) started at `start` ended at `end`.
    pub fn finish(
        &mut self,
        workload: &Workload,
        (key, write, version, start): (usize, bool, u64, Time),
        end: Time,
        event: QuorumEvent,
    ) {
        let result = match event {
            QuorumEvent::Put { result, .. } => result.map(|_| None),
            QuorumEvent::Got { result, .. } => result,
        };
        let is_object = key >= OBJECT_BASE;
        let done = |version| Done {
            key,
            write,
            version,
            start,
            end,
        };
        match result {
            Err(e) => self.failures.push(e),
            Ok(_) if write && is_object => {
                self.objects_written.entry(key - OBJECT_BASE).or_insert(end);
            }
            Ok(_) if write => self.done.push(done(version)),
            Ok(item) if is_object => self.object_reads.push((key - OBJECT_BASE, item, start)),
            Ok(item) => {
                let version = match &item {
                    Some(Item::Record(r)) => {
                        if item.as_ref() != Some(&workload.record(key, r.body.version)) {
                            self.wrong_values += 1;
                        }
                        r.body.version
                    }
                    Some(Item::Object(_)) => {
                        self.wrong_values += 1;
                        0
                    }
                    None => 0,
                };
                self.done.push(done(version));
            }
        }
    }

    /// Whether `o` was written (so reading it may find it).
    pub fn object_written(&self, o: usize) -> bool {
        self.objects_written.contains_key(&o)
    }

    /// Record reads that found something.
    pub fn found(&self) -> usize {
        self.done
            .iter()
            .filter(|d| !d.write && d.version > 0)
            .count()
    }

    /// Object reads.
    pub fn object_reads(&self) -> usize {
        self.object_reads.len()
    }

    /// The violations the checker finds.
    pub fn violations(&self, workload: &Workload) -> Vec<String> {
        let mut found = Vec::new();
        if self.wrong_values > 0 {
            found.push(format!(
                "{} reads returned a value never written",
                self.wrong_values
            ));
        }
        for r in self.done.iter().filter(|d| !d.write) {
            for w in self.done.iter().filter(|d| d.write && d.key == r.key) {
                if w.end < r.start && r.version < w.version {
                    found.push(format!(
                        "key {}: read got v{} after v{} was written",
                        r.key, r.version, w.version
                    ));
                }
            }
            for r0 in self.done.iter().filter(|d| !d.write && d.key == r.key) {
                if r0.end < r.start && r.version < r0.version {
                    found.push(format!(
                        "key {}: read got v{} after a read got v{}",
                        r.key, r.version, r0.version
                    ));
                }
            }
        }
        for (o, item, start) in &self.object_reads {
            let want = workload.object(*o);
            let written_before = self.objects_written.get(o).is_some_and(|end| end < start);
            match item {
                Some(i) if *i == want => {}
                None if !written_before => {}
                other => found.push(format!("object {o}: read {other:?}")),
            }
        }
        found
    }
}

/// What a simulated network does next.
pub enum Next<M> {
    /// Deliver `msg` from `from` to `to`.
    Deliver {
        /// The sender.
        from: Id,
        /// The receiver.
        to: Id,
        /// The message.
        msg: M,
    },
    /// Fire server `id`'s timer.
    Timer(Id),
}

/// Messages in flight, by delivery time, and the step that decides what happens next.
pub struct Flight<M> {
    queue: BTreeMap<(Time, u64), (Id, Id, M)>,
    seq: u64,
}

impl<M> Default for Flight<M> {
    fn default() -> Self {
        Flight {
            queue: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<M> Flight<M> {
    /// Sends `msg` to arrive at `at`.
    pub fn post(&mut self, at: Time, from: Id, to: Id, msg: M) {
        self.seq += 1;
        self.queue.insert((at, self.seq), (from, to, msg));
    }

    /// The next event no later than `until`, the earlier of the first message and the first
    /// of `timers` (server, deadline); `None` when nothing happens by then. Moves `now`.
    pub fn next(
        &mut self,
        now: &mut Time,
        until: Time,
        timers: impl Iterator<Item = (Id, Time)>,
    ) -> Option<Next<M>> {
        let message = self.queue.keys().next().map(|(t, _)| *t);
        let timer = timers.map(|(id, t)| (t, id)).min();
        let at = match (message, timer) {
            (Some(m), Some((t, _))) => m.min(t),
            (Some(m), None) => m,
            (None, Some((t, _))) => t,
            (None, None) => return None,
        };
        if at > until {
            return None;
        }
        *now = (*now).max(at);
        if message == Some(at) {
            let (_, (from, to, msg)) = self.queue.pop_first()?;
            Some(Next::Deliver { from, to, msg })
        } else {
            timer.map(|(_, id)| Next::Timer(id))
        }
    }
}
