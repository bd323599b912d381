//! Messages that promise a write wait until the store has finished it.
//!
//! A store takes a write at once and may make it durable later, in a batch with others (the
//! redb store commits off the node's event loop). A store receipt, a diverted replica's notice
//! and a transfer's acknowledgement each tell another node that this one holds a copy, so they
//! are sent only once the store reports the write done; if it failed, the client hears a
//! refusal instead and the node forgets the copy. [`WriteGate`] is that queue, for every service
//! whose messages vouch for stored data (PAST here, signed records too).

use std::collections::{BTreeMap, VecDeque};

use ringvault_overlay::Kbr;
use ringvault_types::{Contact, Id, Time};

use crate::message::{PastMessage, Refusal};
use crate::past::{refuse, send, Past};
use crate::{Kind, WriteProgress};

/// Items (messages to send) held back until the store has finished the writes taken before
/// them, in the order they were made.
#[derive(Debug)]
pub struct WriteGate<T> {
    waiting: VecDeque<Gated<T>>,
}

#[derive(Debug)]
struct Gated<T> {
    /// The store's last taken write when the item was made.
    upto: u64,
    /// What the item vouches for.
    key: Id,
    /// A write of `key` taken before the item failed.
    failed: bool,
    item: T,
}

impl<T> Default for WriteGate<T> {
    fn default() -> Self {
        WriteGate {
            waiting: VecDeque::new(),
        }
    }
}

impl<T> WriteGate<T> {
    /// `item` (which vouches for `key`) made with the store at `progress`: back at once when
    /// every write taken is finished and nothing waits before it, else held.
    pub fn pass(&mut self, progress: WriteProgress, key: Id, item: T) -> Option<T> {
        if progress.done >= progress.taken && self.waiting.is_empty() {
            return Some(item);
        }
        self.waiting.push_back(Gated {
            upto: progress.taken,
            key,
            failed: false,
            item,
        });
        None
    }

    /// When held items can go: now, if the store (`done`: its finished writes) has finished
    /// the oldest one's writes.
    pub fn deadline(&self, done: u64) -> Option<Time> {
        let first = self.waiting.front()?;
        (done >= first.upto).then_some(Time::ZERO)
    }

    /// Takes the items whose writes are finished (`done`), each with whether a write of its
    /// key failed; `failed` are the writes the store reported failed (key, write number), all
    /// at or below `done`.
    pub fn release(&mut self, done: u64, failed: &BTreeMap<Id, u64>) -> Vec<(T, bool)> {
        if !failed.is_empty() {
            // A failure is news only for the items made after its write was taken and
            // before it was learned: those waiting now.
            for g in &mut self.waiting {
                g.failed |= failed.get(&g.key).is_some_and(|&seq| seq <= g.upto);
            }
        }
        let mut out = Vec::new();
        while self.waiting.front().is_some_and(|g| g.upto <= done) {
            if let Some(g) = self.waiting.pop_front() {
                out.push((g.item, g.failed));
            }
        }
        out
    }

    /// The failed writes a store reported (key, write number), as [`WriteGate::release`] takes
    /// them: the first failure of each key, since every item made after it failed.
    pub fn failures(reported: Vec<(Id, u64)>) -> BTreeMap<Id, u64> {
        let mut out: BTreeMap<Id, u64> = BTreeMap::new();
        for (key, seq) in reported {
            out.entry(key)
                .and_modify(|s| *s = (*s).min(seq))
                .or_insert(seq);
        }
        out
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// A PAST message held back: where it goes, and the client request to refuse instead should
/// the write fail.
#[derive(Debug)]
pub(crate) struct AfterWrite {
    id: Id,
    to: Contact,
    msg: PastMessage,
    req: Option<(u64, Contact)>,
}

impl Past {
    /// Sends `msg` (which vouches that this node holds `id`) once the store has finished every
    /// write taken so far; at once when it has. Should the write of `id` fail, `req` (if any)
    /// is refused instead.
    pub(crate) fn send_when_written(
        &mut self,
        kbr: &mut dyn Kbr,
        id: Id,
        to: Contact,
        msg: PastMessage,
        req: Option<(u64, Contact)>,
    ) {
        let item = AfterWrite { id, to, msg, req };
        if let Some(a) = self.after_write.pass(self.store.progress(), id, item) {
            send(kbr, a.to, &a.msg);
        }
    }

    /// When held-back messages can go.
    pub(crate) fn written_deadline(&self) -> Option<Time> {
        self.after_write.deadline(self.store.progress().done)
    }

    /// Sends the held-back messages whose writes are done, and refuses (and forgets) those
    /// whose write failed.
    pub(crate) fn release_written(&mut self, kbr: &mut dyn Kbr) {
        // Progress first: every failure reported next is at or below its `done`.
        let done = self.store.progress().done;
        let failed = WriteGate::<AfterWrite>::failures(self.store.take_failed());
        for id in failed.keys() {
            // Undone: the store holds what it held before the write, if anything.
            if matches!(
                self.store.meta(id),
                Ok(Some((Kind::Primary | Kind::Diverted, _)))
            ) {
                continue;
            }
            self.held.remove(id);
            self.known.remove(id);
            self.fresh.retain(|f| f != id);
        }
        for (a, failed) in self.after_write.release(done, &failed) {
            if !failed {
                send(kbr, a.to, &a.msg);
            } else if let Some(req) = a.req {
                refuse(kbr, Some(req), a.id, Refusal::NoSpace);
            }
        }
    }
}
