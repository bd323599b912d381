//! The side of quorum storage that runs an operation for a caller (an HTTP request on some
//! server): writes to the whole replica group, done at 2f + 1 signed acks; object reads done at
//! the first reply that verifies ("not found" after 2f + 1 say so); record reads that collect
//! 2f + 1 replies, return the highest valid version, and first write it back until 2f + 1
//! replicas hold it, so that no later read returns less (atomic reads).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use ringvault_types::{Duration, Id, Time};

use super::{Item, ItemError, Refusal, StoreMessage};
use crate::config::{Config, Epoch};

/// How long an operation may take before it fails.
pub const OP_TIMEOUT: Duration = Duration::from_millis(10_000);

/// How often replicas that have not answered are asked again.
pub const RETRY_EVERY: Duration = Duration::from_millis(500);

/// An object read asks one replica first (itself when it is one); the rest are asked when that
/// one has not answered with the object within this long, or at once when it answers without.
pub const HEDGE_AFTER: Duration = Duration::from_millis(100);

/// An operation's id, echoed by its event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    /// Fewer than a quorum answered in time (more than f of the group are down or lying).
    #[error("only {answered} of the replica group answered, {needed} needed")]
    Unavailable {
        /// Replicas that answered usefully.
        answered: usize,
        /// A quorum.
        needed: usize,
    },
    /// Replicas are in a newer epoch than this server knows: its membership must catch up.
    #[error("replicas are in epoch {0}, newer than this server's")]
    WrongEpoch(Epoch),
    /// The item to write does not verify (a caller mistake).
    #[error("invalid item: {0}")]
    Invalid(#[from] ItemError),
}

/// What an operation ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuorumEvent {
    /// A write: the number of acks (at least a quorum) or why it failed.
    Put {
        /// The operation.
        op: OpId,
        /// Acks, or the error.
        result: Result<usize, QuorumError>,
    },
    /// A read: the item (`None`: not found by a quorum) or why it failed.
    Got {
        /// The operation.
        op: OpId,
        /// The item, or the error.
        result: Result<Option<Item>, QuorumError>,
    },
}

/// What an operation waits for.
enum Waiting {
    /// Acks for `hash` under `key`.
    Acks {
        item: Item,
        hash: Id,
        acked: BTreeSet<Id>,
    },
    /// The first object that verifies; `only` is the one replica asked so far, until the read
    /// widens to the whole group.
    Object {
        key: Id,
        not_found: BTreeSet<Id>,
        only: Option<Id>,
    },
    /// A quorum of record replies.
    Replies {
        key: Id,
        replies: BTreeMap<Id, Option<Item>>,
    },
    /// The highest record read, written back until a quorum holds it.
    WriteBack {
        item: Item,
        hash: Id,
        holders: BTreeSet<Id>,
    },
}

struct Op {
    waiting: Waiting,
    deadline: Time,
    retry_at: Time,
    newer_epoch: Option<Epoch>,
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Replies or acks that did not verify (forged items, bad signatures, strangers).
    pub forged: u64,
    /// Records written back to lagging replicas.
    pub written_back: u64,
}

/// Runs quorum operations from one server.
pub struct QuorumClient {
    me: Id,
    config: Arc<Config>,
    ops: BTreeMap<OpId, Op>,
    next_op: u64,
    sends: VecDeque<(Id, StoreMessage)>,
    events: VecDeque<QuorumEvent>,
    stats: ClientStats,
}

impl QuorumClient {
    /// Server `me`'s client under `config`.
    pub fn new(me: Id, config: Arc<Config>) -> Self {
        QuorumClient {
            me,
            config,
            ops: BTreeMap::new(),
            next_op: 1,
            sends: VecDeque::new(),
            events: VecDeque::new(),
            stats: ClientStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// A new configuration is in force; operations in flight go on under it, keeping only
    /// the answers of servers in the key's new group (a quorum must come from one group).
    pub fn handle_config(&mut self, config: Arc<Config>) {
        self.config = config;
        let mut widened = Vec::new();
        let groups: Vec<(OpId, BTreeSet<Id>)> = self
            .ops
            .iter()
            .map(|(id, o)| {
                (
                    *id,
                    self.group(&waiting_key(&o.waiting)).into_iter().collect(),
                )
            })
            .collect();
        for (id, group) in groups {
            let Some(o) = self.ops.get_mut(&id) else {
                continue;
            };
            match &mut o.waiting {
                Waiting::Acks { acked, .. } | Waiting::WriteBack { holders: acked, .. } => {
                    acked.retain(|m| group.contains(m))
                }
                Waiting::Object {
                    not_found, only, ..
                } => {
                    not_found.retain(|m| group.contains(m));
                    // The one replica asked first is no longer in the group: ask the group.
                    if only.is_some_and(|first| !group.contains(&first)) {
                        *only = None;
                        widened.push(id);
                    }
                }
                Waiting::Replies { replies, .. } => replies.retain(|m, _| group.contains(m)),
            }
        }
        for op in widened {
            self.ask(op);
        }
    }

    /// The next message to send.
    pub fn poll_send(&mut self) -> Option<(Id, StoreMessage)> {
        self.sends.pop_front()
    }

    /// The next finished operation.
    pub fn poll_event(&mut self) -> Option<QuorumEvent> {
        self.events.pop_front()
    }

    /// When to call [`QuorumClient::handle_timeout`].
    pub fn next_deadline(&self) -> Option<Time> {
        self.ops.values().map(|o| o.retry_at.min(o.deadline)).min()
    }

    fn group(&self, key: &Id) -> Vec<Id> {
        self.config
            .replica_group(key)
            .into_iter()
            .map(|m| m.id())
            .collect()
    }

    fn quorum(&self, key: &Id) -> usize {
        crate::Thresholds::bft(self.group(key).len()).quorum()
    }

    fn start(&mut self, now: Time, waiting: Waiting) -> OpId {
        let op = OpId(self.next_op);
        self.next_op += 1;
        let retry = match waiting {
            Waiting::Object { only: Some(_), .. } => HEDGE_AFTER,
            _ => RETRY_EVERY,
        };
        self.ops.insert(
            op,
            Op {
                waiting,
                deadline: now + OP_TIMEOUT,
                retry_at: now + retry,
                newer_epoch: None,
            },
        );
        self.ask(op);
        op
    }

    /// Writes `item` to its replica group.
    pub fn put(&mut self, now: Time, item: Item) -> Result<OpId, QuorumError> {
        item.verify()?;
        let hash = item.hash();
        Ok(self.start(
            now,
            Waiting::Acks {
                item,
                hash,
                acked: BTreeSet::new(),
            },
        ))
    }

    /// Reads the immutable object stored under `key`: from one replica first (this server
    /// when it is one; otherwise one picked by the key and this server's id, so a server's
    /// reads spread over each group), from the whole group if that one does not produce it.
    pub fn get_object(&mut self, now: Time, key: Id) -> OpId {
        let group = self.group(&key);
        let only = if group.contains(&self.me) {
            Some(self.me)
        } else if group.is_empty() {
            None
        } else {
            let pick = Id::hash_parts(&[self.me.as_bytes(), key.as_bytes()]);
            let at = u64::from_le_bytes(pick.as_bytes()[..8].try_into().unwrap_or_default());
            Some(group[(at % group.len() as u64) as usize])
        };
        self.start(
            now,
            Waiting::Object {
                key,
                not_found: BTreeSet::new(),
                only,
            },
        )
    }

    /// Asks the rest of the group for an object read that asked one replica so far (the
    /// next retry a full period later: the replies take a round trip).
    fn widen(&mut self, op: OpId, now: Time) {
        if let Some(Op {
            waiting: Waiting::Object { only, .. },
            retry_at,
            ..
        }) = self.ops.get_mut(&op)
        {
            if only.take().is_some() {
                *retry_at = now + RETRY_EVERY;
                self.ask(op);
            }
        }
    }

    /// Reads the record stored under `key` (atomically: see the module's doc).
    pub fn get_record(&mut self, now: Time, key: Id) -> OpId {
        self.start(
            now,
            Waiting::Replies {
                key,
                replies: BTreeMap::new(),
            },
        )
    }

    /// Sends the operation's request to the group members that have not answered.
    fn ask(&mut self, op: OpId) {
        let Some(o) = self.ops.get(&op) else { return };
        let epoch = self.config.epoch;
        let (key, answered, msg): (Id, BTreeSet<Id>, StoreMessage) = match &o.waiting {
            Waiting::Acks { item, acked, .. }
            | Waiting::WriteBack {
                item,
                holders: acked,
                ..
            } => (
                item.key(),
                acked.clone(),
                StoreMessage::Write {
                    op: op.0,
                    epoch,
                    item: item.clone(),
                },
            ),
            Waiting::Object {
                key,
                only: Some(first),
                ..
            } => {
                let msg = StoreMessage::Read {
                    op: op.0,
                    epoch,
                    key: *key,
                };
                self.sends.push_back((*first, msg));
                return;
            }
            Waiting::Object { key, not_found, .. } => (
                *key,
                not_found.clone(),
                StoreMessage::Read {
                    op: op.0,
                    epoch,
                    key: *key,
                },
            ),
            Waiting::Replies { key, replies } => (
                *key,
                replies.keys().copied().collect(),
                StoreMessage::Read {
                    op: op.0,
                    epoch,
                    key: *key,
                },
            ),
        };
        for to in self.group(&key) {
            if !answered.contains(&to) {
                self.sends.push_back((to, msg.clone()));
            }
        }
    }

    fn finish(&mut self, op: OpId, event: QuorumEvent) {
        self.ops.remove(&op);
        self.events.push_back(event);
    }

    /// An answer from replica `from` (authenticated by the transport).
    pub fn handle_message(&mut self, now: Time, from: Id, msg: StoreMessage) {
        let (op, answer) = match msg {
            StoreMessage::Ack(ack) => (OpId(ack.op), Answer::Ack(ack)),
            StoreMessage::Reply { op, key, item } => (OpId(op), Answer::Reply(key, item)),
            StoreMessage::Refuse { op, reason } => (OpId(op), Answer::Refused(reason)),
            _ => return,
        };
        let group = self
            .ops
            .get(&op)
            .map(|o| self.group(&waiting_key(&o.waiting)));
        let Some(group) = group else { return };
        if !group.contains(&from) {
            self.stats.forged += 1;
            return;
        }
        let quorum = crate::Thresholds::bft(group.len()).quorum();
        let key_of = |m: &Id| self.config.member(m).map(|m| m.key());
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        // An object read whose first replica answered without the object asks the others.
        let mut widen = false;
        match (answer, &mut o.waiting) {
            (Answer::Refused(Refusal::WrongEpoch(e)), waiting) if e > self.config.epoch => {
                o.newer_epoch = Some(o.newer_epoch.unwrap_or(0).max(e));
                widen = matches!(waiting, Waiting::Object { .. });
            }
            (Answer::Refused(_), Waiting::Object { .. }) => widen = true,
            (Answer::Refused(_), _) => {}
            (
                Answer::Ack(ack),
                Waiting::Acks { hash, acked, .. }
                | Waiting::WriteBack {
                    hash,
                    holders: acked,
                    ..
                },
            ) => {
                let genuine = ack.hash == *hash
                    && ack.replica == from
                    && ack.epoch == self.config.epoch
                    && key_of(&from)
                        .is_some_and(|k| k.verify(&ack.bytes(), &ack.signature).is_ok());
                if !genuine {
                    self.stats.forged += 1;
                    return;
                }
                acked.insert(from);
                let acks = acked.len();
                if acks >= quorum {
                    let event = match &o.waiting {
                        Waiting::WriteBack { item, .. } => QuorumEvent::Got {
                            op,
                            result: Ok(Some(item.clone())),
                        },
                        _ => QuorumEvent::Put {
                            op,
                            result: Ok(acks),
                        },
                    };
                    self.finish(op, event);
                }
            }
            (
                Answer::Reply(key, item),
                Waiting::Object {
                    key: want,
                    not_found,
                    ..
                },
            ) => {
                if key != *want {
                    self.stats.forged += 1;
                    widen = true;
                }
                match item {
                    _ if widen => {}
                    Some(item) if item.verify_for(want).is_ok() => {
                        self.finish(
                            op,
                            QuorumEvent::Got {
                                op,
                                result: Ok(Some(item)),
                            },
                        );
                    }
                    Some(_) => {
                        self.stats.forged += 1;
                        widen = true;
                    }
                    None => {
                        not_found.insert(from);
                        if not_found.len() < quorum {
                            widen = true;
                        } else {
                            self.finish(
                                op,
                                QuorumEvent::Got {
                                    op,
                                    result: Ok(None),
                                },
                            );
                        }
                    }
                }
            }
            (Answer::Reply(key, item), Waiting::Replies { key: want, replies }) => {
                if key != *want {
                    self.stats.forged += 1;
                    return;
                }
                let item =
                    item.filter(|i| matches!(i, Item::Record(_)) && i.verify_for(want).is_ok());
                replies.insert(from, item);
                if replies.len() >= quorum {
                    self.conclude_read(op, quorum);
                }
            }
            _ => {}
        }
        if widen {
            self.widen(op, now);
        }
    }

    /// A quorum replied to a record read: take the highest valid version and make sure a
    /// quorum holds it before answering.
    fn conclude_read(&mut self, op: OpId, quorum: usize) {
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        let Waiting::Replies { replies, .. } = &o.waiting else {
            return;
        };
        let best = replies
            .values()
            .flatten()
            .fold(None::<&Item>, |best, i| match best {
                Some(b) if !i.replaces(b) => Some(b),
                _ => Some(i),
            })
            .cloned();
        let Some(item) = best else {
            self.finish(
                op,
                QuorumEvent::Got {
                    op,
                    result: Ok(None),
                },
            );
            return;
        };
        let hash = item.hash();
        let holders: BTreeSet<Id> = replies
            .iter()
            .filter(|(_, i)| i.as_ref().is_some_and(|i| i.hash() == hash))
            .map(|(id, _)| *id)
            .collect();
        if holders.len() >= quorum {
            self.finish(
                op,
                QuorumEvent::Got {
                    op,
                    result: Ok(Some(item)),
                },
            );
            return;
        }
        self.stats.written_back += 1;
        o.waiting = Waiting::WriteBack {
            item,
            hash,
            holders,
        };
        self.ask(op);
    }

    /// Asks again where answers are missing; fails operations past their deadline.
    pub fn handle_timeout(&mut self, now: Time) {
        let due: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, o)| o.retry_at <= now || o.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for op in due {
            let quorum = self
                .ops
                .get(&op)
                .map(|o| self.quorum(&waiting_key(&o.waiting)));
            let Some(o) = self.ops.get_mut(&op) else {
                continue;
            };
            if o.deadline <= now {
                let answered = match &o.waiting {
                    Waiting::Acks { acked, .. } => acked.len(),
                    Waiting::WriteBack { holders, .. } => holders.len(),
                    Waiting::Object { not_found, .. } => not_found.len(),
                    Waiting::Replies { replies, .. } => replies.len(),
                };
                let error = match o.newer_epoch {
                    Some(e) => QuorumError::WrongEpoch(e),
                    None => QuorumError::Unavailable {
                        answered,
                        needed: quorum.unwrap_or(0),
                    },
                };
                let event = match o.waiting {
                    Waiting::Acks { .. } => QuorumEvent::Put {
                        op,
                        result: Err(error),
                    },
                    _ => QuorumEvent::Got {
                        op,
                        result: Err(error),
                    },
                };
                self.finish(op, event);
            } else {
                o.retry_at = now + RETRY_EVERY;
                if let Waiting::Object { only, .. } = &mut o.waiting {
                    // The one replica asked first did not answer in time: ask them all.
                    *only = None;
                }
                self.ask(op);
            }
        }
    }
}

enum Answer {
    Ack(super::Ack),
    Reply(Id, Option<Item>),
    Refused(Refusal),
}

fn waiting_key(w: &Waiting) -> Id {
    match w {
        Waiting::Acks { item, .. } | Waiting::WriteBack { item, .. } => item.key(),
        Waiting::Object { key, .. } | Waiting::Replies { key, .. } => *key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{test_config, Params};

    fn sends(c: &mut QuorumClient) -> Vec<Id> {
        std::iter::from_fn(|| c.poll_send())
            .map(|(to, _)| to)
            .collect()
    }

    #[test]
    fn an_object_read_asks_one_replica_then_the_group_when_it_lacks_the_object_or_is_slow() {
        let (_, ids, config) = test_config(7, Params::DEFAULT);
        let config = Arc::new(config);
        let key = Id::hash(b"some object");
        let group: Vec<Id> = config.replica_group(&key).iter().map(|m| m.id()).collect();
        let outsider = ids.iter().map(|i| i.id()).find(|id| !group.contains(id));
        let mut c = QuorumClient::new(outsider.unwrap(), config.clone());

        // Not found at the first: the others are asked at once.
        let op = c.get_object(Time::ZERO, key);
        let first = sends(&mut c);
        assert_eq!(first.len(), 1);
        assert!(group.contains(&first[0]));
        let msg = StoreMessage::Reply {
            op: op.0,
            key,
            item: None,
        };
        c.handle_message(Time::ZERO, first[0], msg);
        let rest = sends(&mut c);
        assert_eq!(rest.len(), group.len() - 1);
        assert!(!rest.contains(&first[0]));

        // Silent first: the others are asked after HEDGE_AFTER, not before.
        let mut c = QuorumClient::new(outsider.unwrap(), config.clone());
        let _ = c.get_object(Time::ZERO, key);
        assert_eq!(sends(&mut c).len(), 1);
        c.handle_timeout(Time::ZERO + Duration::from_millis(HEDGE_AFTER.as_micros() / 2_000));
        assert!(sends(&mut c).is_empty());
        c.handle_timeout(Time::ZERO + HEDGE_AFTER);
        assert_eq!(sends(&mut c).len(), group.len());

        // A replica of the key asks itself first.
        let mut own = QuorumClient::new(group[1], config);
        let _ = own.get_object(Time::ZERO, key);
        assert_eq!(sends(&mut own), vec![group[1]]);
    }
}
