//! The replica side of quorum storage: takes writes and reads for the keys whose group it is in
//! during the current epoch, acks only once the store has the item, and at an epoch change takes
//! over the keys it did not own before: digests from 2f + 1 old owners of each part of the new
//! range, then the items it lacks, verified, before it serves that part.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use ringvault_types::{Duration, Id, Identity, Signature, Time};

use super::{in_range, Ack, Item, Refusal, StoreMessage};
use crate::config::Config;

/// The most entries one digest reply carries (larger ranges are not handed over whole: a
/// known limit).
pub const MAX_DIGEST: usize = 1 << 20;

/// How long a new owner waits for digests and fetches before it asks again.
pub const SYNC_TIMEOUT: Duration = Duration::from_millis(2_000);

/// The clockwise range (from, to] of keys whose replica group in `config` includes `me`: the
/// whole ring when the configuration has at most a group's worth of members; `None` when `me`
/// is not a member.
pub fn owned_range(config: &Config, me: &Id) -> Option<(Id, Id)> {
    let members = &config.members;
    let i = members.binary_search_by(|m| m.id().cmp(me)).ok()?;
    let n = members.len();
    let g = config.params.group_size();
    if n <= g {
        return Some((*me, *me));
    }
    Some((members[(i + n - g) % n].id(), *me))
}

/// What the driver does for a replica.
#[derive(Clone, Debug)]
pub enum ReplicaAction {
    /// Send `msg` to `to`.
    Send {
        /// The server.
        to: Id,
        /// The message.
        msg: StoreMessage,
    },
    /// Write `item` durably, then call [`Replica::handle_stored`] with `token`.
    Store {
        /// Echoed on completion.
        token: u64,
        /// The item.
        item: Item,
    },
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Writes acked.
    pub acked: u64,
    /// Requests refused (wrong epoch, not owner, not ready, expired, invalid).
    pub refused: u64,
    /// Items taken over at epoch changes.
    pub taken_over: u64,
    /// Replies from old owners that did not verify (forged items in a hand-over).
    pub forged: u64,
    /// Microseconds spent not ready after epoch changes.
    pub not_ready_micros: u64,
}

/// A write waiting for the store.
struct Storing {
    to: Id,
    op: u64,
    key: Id,
    hash: Id,
}

/// Taking over part of the key space after an epoch change.
struct Sync {
    /// The range not owned before, served only once synced.
    range: (Id, Id),
    /// The old owners asked, in ring order, and the windows of them that are old groups.
    asked: Vec<Id>,
    group: usize,
    quorum: usize,
    replied: BTreeSet<Id>,
    /// Reported (key, hash) -> reporters.
    reported: BTreeMap<(Id, Id), BTreeSet<Id>>,
    /// Items being fetched: (key, hash) -> reporters not yet tried.
    fetching: BTreeMap<(Id, Id), Vec<Id>>,
    op: u64,
    started: Time,
    retry_at: Time,
}

/// One server's replica.
pub struct Replica {
    identity: Identity,
    config: Arc<Config>,
    unix_ms_at_zero: u64,
    items: BTreeMap<Id, Item>,
    storing: BTreeMap<u64, Storing>,
    next_token: u64,
    sync: Option<Sync>,
    actions: VecDeque<ReplicaAction>,
    stats: ReplicaStats,
}

impl Replica {
    /// A replica holding `items` (what its store had) under `config`.
    pub fn new(
        identity: Identity,
        config: Arc<Config>,
        unix_ms_at_zero: u64,
        items: impl IntoIterator<Item = Item>,
    ) -> Self {
        Replica {
            identity,
            config,
            unix_ms_at_zero,
            items: items.into_iter().map(|i| (i.key(), i)).collect(),
            storing: BTreeMap::new(),
            next_token: 1,
            sync: None,
            actions: VecDeque::new(),
            stats: ReplicaStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// The item held under `key`.
    pub fn get(&self, key: &Id) -> Option<&Item> {
        self.items.get(key)
    }

    /// Whether this replica is still taking over a range.
    pub fn syncing(&self) -> bool {
        self.sync.is_some()
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<ReplicaAction> {
        self.actions.pop_front()
    }

    /// When to call [`Replica::handle_timeout`].
    pub fn next_deadline(&self) -> Option<Time> {
        self.sync.as_ref().map(|s| s.retry_at)
    }

    fn me(&self) -> Id {
        self.identity.id()
    }

    fn send(&mut self, to: Id, msg: StoreMessage) {
        self.actions.push_back(ReplicaAction::Send { to, msg });
    }

    fn owns(&self, key: &Id) -> bool {
        let me = self.me();
        self.config.replica_group(key).iter().any(|m| m.id() == me)
    }

    fn ready(&self, key: &Id) -> bool {
        self.sync
            .as_ref()
            .is_none_or(|s| !in_range(key, &s.range.0, &s.range.1))
    }

    fn refuse(&mut self, to: Id, op: u64, reason: Refusal) {
        self.stats.refused += 1;
        self.send(to, StoreMessage::Refuse { op, reason });
    }

    /// Checks a client request's epoch, lease, ownership and readiness.
    fn admit(&self, now: Time, epoch: u64, key: &Id) -> Result<(), Refusal> {
        if epoch != self.config.epoch {
            return Err(Refusal::WrongEpoch(self.config.epoch));
        }
        if self.unix_ms_at_zero + now.as_micros() / 1_000 >= self.config.valid_until {
            return Err(Refusal::Expired);
        }
        if !self.owns(key) {
            return Err(Refusal::NotOwner);
        }
        if !self.ready(key) {
            return Err(Refusal::NotReady);
        }
        Ok(())
    }

    /// A request or a hand-over reply from `from` (authenticated by the transport). Client
    /// answers (acks, replies, refusals) are not for the replica and are ignored.
    pub fn handle_message(&mut self, now: Time, from: Id, msg: StoreMessage) {
        match msg {
            StoreMessage::Write { op, epoch, item } => {
                let key = item.key();
                if let Err(reason) = self.admit(now, epoch, &key) {
                    return self.refuse(from, op, reason);
                }
                if item.verify().is_err() {
                    return self.refuse(from, op, Refusal::Invalid);
                }
                let hash = item.hash();
                let keep = self.items.get(&key).is_none_or(|held| item.replaces(held));
                if keep {
                    self.items.insert(key, item.clone());
                    let token = self.next_token;
                    self.next_token += 1;
                    self.storing.insert(
                        token,
                        Storing {
                            to: from,
                            op,
                            key,
                            hash,
                        },
                    );
                    self.actions.push_back(ReplicaAction::Store { token, item });
                } else {
                    // It holds this item or a newer version already: the write is subsumed.
                    self.ack(from, op, key, hash);
                }
            }
            StoreMessage::Read { op, epoch, key } => {
                if let Err(reason) = self.admit(now, epoch, &key) {
                    return self.refuse(from, op, reason);
                }
                let item = self.items.get(&key).cloned();
                self.send(from, StoreMessage::Reply { op, key, item });
            }
            StoreMessage::Digest { op, from: a, to: b } => {
                let entries = self
                    .items
                    .iter()
                    .filter(|(k, _)| in_range(k, &a, &b))
                    .take(MAX_DIGEST)
                    .map(|(k, i)| (*k, i.hash()))
                    .collect();
                self.send(from, StoreMessage::DigestReply { op, entries });
            }
            StoreMessage::Fetch { op, key } => {
                let item = self.items.get(&key).cloned();
                self.send(from, StoreMessage::Fetched { op, key, item });
            }
            StoreMessage::DigestReply { op, entries } => self.take_digest(now, from, op, entries),
            StoreMessage::Fetched { op, key, item } => self.take_fetched(now, from, op, key, item),
            StoreMessage::Ack(_) | StoreMessage::Reply { .. } | StoreMessage::Refuse { .. } => {}
        }
    }

    /// The store finished the write `token`: ack it.
    pub fn handle_stored(&mut self, token: u64) {
        if let Some(s) = self.storing.remove(&token) {
            self.ack(s.to, s.op, s.key, s.hash);
        }
    }

    fn ack(&mut self, to: Id, op: u64, key: Id, hash: Id) {
        let mut ack = Ack {
            op,
            epoch: self.config.epoch,
            key,
            hash,
            replica: self.me(),
            signature: Signature([0; 64]),
        };
        ack.signature = self.identity.sign(&ack.bytes());
        self.stats.acked += 1;
        self.send(to, StoreMessage::Ack(ack));
    }

    /// A new configuration is in force (`previous` was the one before): start taking over the
    /// part of this replica's new range it did not own.
    pub fn handle_config(&mut self, now: Time, config: Arc<Config>) {
        let previous = std::mem::replace(&mut self.config, config.clone());
        self.sync = None;
        let me = self.me();
        let Some(range) = owned_range(&config, &me) else {
            return;
        };
        let old = owned_range(&previous, &me);
        if old.is_some_and(|(a, b)| covers((a, b), range)) {
            return;
        }
        // The old owners of the range: from the first old member after its start to g - 1
        // members past the first at or after its end.
        let members = &previous.members;
        let n = members.len();
        let g = previous.params.group_size().min(n);
        let whole = range.0 == range.1 || n <= g;
        let asked: Vec<Id> = if whole {
            members.iter().map(|m| m.id()).collect()
        } else {
            let start = members.partition_point(|m| m.id() <= range.0) % n;
            let end = members.partition_point(|m| m.id() < range.1) % n;
            let span = (end + n - start) % n + g;
            (0..span.min(n))
                .map(|i| members[(start + i) % n].id())
                .collect()
        };
        let op = self.next_token;
        self.next_token += 1;
        let quorum = crate::Thresholds::bft(g).quorum();
        self.sync = Some(Sync {
            range,
            asked: asked.clone(),
            group: if whole { asked.len() } else { g },
            quorum: if whole {
                crate::Thresholds::bft(asked.len()).quorum()
            } else {
                quorum
            },
            replied: BTreeSet::new(),
            reported: BTreeMap::new(),
            fetching: BTreeMap::new(),
            op,
            started: now,
            retry_at: now + SYNC_TIMEOUT,
        });
        self.ask_digests();
        self.maybe_done(now);
    }

    fn ask_digests(&mut self) {
        let Some(s) = &self.sync else { return };
        let (op, (from, to)) = (s.op, s.range);
        let pending: Vec<Id> = s
            .asked
            .iter()
            .filter(|id| !s.replied.contains(id))
            .copied()
            .collect();
        let me = self.me();
        for id in pending {
            if id == me {
                continue;
            }
            self.send(id, StoreMessage::Digest { op, from, to });
        }
        if let Some(s) = &mut self.sync {
            s.replied.insert(me);
        }
    }

    fn take_digest(&mut self, now: Time, from: Id, op: u64, entries: Vec<(Id, Id)>) {
        let Some(s) = &mut self.sync else { return };
        if s.op != op || !s.asked.contains(&from) || !s.replied.insert(from) {
            return;
        }
        for (key, hash) in entries.into_iter().take(MAX_DIGEST) {
            if in_range(&key, &s.range.0, &s.range.1) {
                s.reported.entry((key, hash)).or_default().insert(from);
            }
        }
        self.maybe_done(now);
    }

    /// Whether every old group over the range has answered with a quorum.
    fn digests_complete(s: &Sync) -> bool {
        if s.asked.len() <= s.group {
            return s.replied.iter().filter(|id| s.asked.contains(id)).count() >= s.quorum;
        }
        (0..=s.asked.len() - s.group).all(|w| {
            s.asked[w..w + s.group]
                .iter()
                .filter(|id| s.replied.contains(id))
                .count()
                >= s.quorum
        })
    }

    fn maybe_done(&mut self, now: Time) {
        let Some(s) = &mut self.sync else { return };
        if !Self::digests_complete(s) {
            return;
        }
        if s.fetching.is_empty() && !s.reported.is_empty() {
            // Fetch each reported item this replica lacks, from its reporters in turn.
            let reported = std::mem::take(&mut s.reported);
            for ((key, hash), by) in reported {
                let held = self.items.get(&key).map(Item::hash);
                if held != Some(hash) {
                    s.fetching.insert((key, hash), by.into_iter().collect());
                }
            }
            let op = s.op;
            let asks: Vec<(Id, Id)> = s
                .fetching
                .iter_mut()
                .filter_map(|((key, _), by)| by.pop().map(|to| (to, *key)))
                .collect();
            for (to, key) in asks {
                self.send(to, StoreMessage::Fetch { op, key });
            }
        }
        let Some(s) = &self.sync else { return };
        if s.fetching.is_empty() {
            self.stats.not_ready_micros += now.saturating_since(s.started).as_micros();
            self.sync = None;
        }
    }

    fn take_fetched(&mut self, now: Time, from: Id, op: u64, key: Id, item: Option<Item>) {
        let Some(s) = &self.sync else { return };
        if s.op != op {
            return;
        }
        let good = item.filter(|i| i.verify_for(&key).is_ok());
        let Some(s) = &mut self.sync else { return };
        let wanted: Vec<(Id, Id)> = s
            .fetching
            .keys()
            .filter(|(k, _)| *k == key)
            .copied()
            .collect();
        match good {
            Some(item) => {
                let hash = item.hash();
                for w in wanted {
                    if w.1 == hash {
                        s.fetching.remove(&w);
                    }
                }
                let keep = self.items.get(&key).is_none_or(|held| item.replaces(held));
                if keep {
                    self.stats.taken_over += 1;
                    let token = self.next_token;
                    self.next_token += 1;
                    self.items.insert(key, item.clone());
                    self.actions.push_back(ReplicaAction::Store { token, item });
                }
            }
            None => {
                self.stats.forged += 1;
                // Ask the next reporter of that key, or give up on a hash only liars reported.
                let op = s.op;
                let mut asks = Vec::new();
                for w in wanted {
                    if let Some(by) = s.fetching.get_mut(&w) {
                        by.retain(|id| *id != from);
                        match by.pop() {
                            Some(to) => asks.push(to),
                            None => {
                                s.fetching.remove(&w);
                            }
                        }
                    }
                }
                for to in asks {
                    self.send(to, StoreMessage::Fetch { op, key });
                }
            }
        }
        self.maybe_done(now);
    }

    /// Asks again the old owners that have not answered.
    pub fn handle_timeout(&mut self, now: Time) {
        let Some(s) = &mut self.sync else { return };
        if now < s.retry_at {
            return;
        }
        s.retry_at = now + SYNC_TIMEOUT;
        // An unanswered fetch goes to the next reporter; one with none left is given up (only
        // silent servers reported it).
        let op = s.op;
        let mut asks = Vec::new();
        s.fetching.retain(|(key, _), by| match by.pop() {
            Some(to) => {
                asks.push((to, *key));
                true
            }
            None => false,
        });
        for (to, key) in asks {
            self.send(to, StoreMessage::Fetch { op, key });
        }
        self.ask_digests();
        self.maybe_done(now);
    }
}

/// Whether the clockwise range `outer` contains all of `inner` (ranges are (start, end]; equal
/// ends mean the whole ring).
fn covers(outer: (Id, Id), inner: (Id, Id)) -> bool {
    if outer.0 == outer.1 {
        return true;
    }
    if inner.0 == inner.1 {
        return false;
    }
    let a = outer.0;
    let (end, start, stop) = (
        a.cw_distance(&outer.1),
        a.cw_distance(&inner.0),
        a.cw_distance(&inner.1),
    );
    start <= stop && stop <= end
}
