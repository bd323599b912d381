//! Messages that promise a write wait until the store has finished it.
//!
//! A store takes a write at once and may make it durable later, in a batch with others (the
//! redb store commits off the node's event loop). A store receipt, a diverted replica's notice
//! and a transfer's acknowledgement each tell another node that this one holds a copy, so they
//! are sent only once the store reports the write done; if it failed, the client hears a
//! refusal instead and the node forgets the copy.

use std::collections::BTreeMap;

use ringvault_overlay::Kbr;
use ringvault_types::{Contact, Id, Time};

use crate::message::{PastMessage, Refusal};
use crate::past::{refuse, send, Past};
use crate::Kind;

/// A message held back until the store has finished the writes taken before it.
#[derive(Debug)]
pub(crate) struct AfterWrite {
    /// The store's last taken write when the message was made.
    upto: u64,
    /// The object the message vouches for.
    id: Id,
    to: Contact,
    msg: PastMessage,
    /// The client request to refuse instead, should the write fail.
    req: Option<(u64, Contact)>,
    /// A write of `id` taken before the message failed.
    failed: bool,
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
        let p = self.store.progress();
        if p.done >= p.taken && self.after_write.is_empty() {
            send(kbr, to, &msg);
            return;
        }
        self.after_write.push_back(AfterWrite {
            upto: p.taken,
            id,
            to,
            msg,
            req,
            failed: false,
        });
    }

    /// When held-back messages can go: now, if the store has finished the oldest one's writes.
    pub(crate) fn written_deadline(&self) -> Option<Time> {
        let first = self.after_write.front()?;
        (self.store.progress().done >= first.upto).then_some(Time::ZERO)
    }

    /// Sends the held-back messages whose writes are done, and refuses (and forgets) those
    /// whose write failed.
    pub(crate) fn release_written(&mut self, kbr: &mut dyn Kbr) {
        // Progress first: every failure reported next is at or below its `done`.
        let done = self.store.progress().done;
        let failed: BTreeMap<Id, u64> = self.store.take_failed().into_iter().collect();
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
        if !failed.is_empty() {
            // A failure is news only for the messages made after its write was taken and
            // before it was learned: those waiting now.
            for a in &mut self.after_write {
                a.failed |= failed.get(&a.id).is_some_and(|&seq| seq <= a.upto);
            }
        }
        while self.after_write.front().is_some_and(|a| a.upto <= done) {
            let Some(a) = self.after_write.pop_front() else {
                break;
            };
            if !a.failed {
                send(kbr, a.to, &a.msg);
            } else if let Some(req) = a.req {
                refuse(kbr, Some(req), a.id, Refusal::NoSpace);
            }
        }
    }
}
