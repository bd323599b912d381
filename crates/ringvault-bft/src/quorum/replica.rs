//! The replica side of quorum storage: takes writes and reads for the keys whose group it is in
//! during the current epoch and acks only once the store has the item. It takes over key
//! ranges it did not own (after an epoch change) and checks its own range again after a
//! restart: digests from a quorum of every old group over the range, then the items it lacks,
//! verified, before it serves that range.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use ringvault_types::{Duration, Id, Identity, Signature, Time};

use super::{in_range, Ack, Item, Refusal, StoreMessage};
use crate::config::Config;

/// The most entries one digest reply carries (64 bytes each, well under a message's cap);
/// larger ranges come in several replies.
pub const MAX_DIGEST: usize = 50_000;

/// How long a replica waits for digests and fetches before it asks again.
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

/// Whether two clockwise ranges (a, b] share a key (equal ends: the whole ring).
fn overlaps(x: (Id, Id), y: (Id, Id)) -> bool {
    x.0 == x.1 || y.0 == y.1 || in_range(&x.1, &y.0, &y.1) || in_range(&y.1, &x.0, &x.1)
}

/// The replica groups of `config` that hold some key of `range`: for each member j, the group
/// of the keys in (member j - 1, member j] is members j .. j + g - 1.
fn groups_over(config: &Config, range: (Id, Id)) -> Vec<Vec<Id>> {
    let members = &config.members;
    let n = members.len();
    let g = config.params.group_size();
    if n <= g {
        return vec![members.iter().map(|m| m.id()).collect()];
    }
    (0..n)
        .filter(|&j| overlaps((members[(j + n - 1) % n].id(), members[j].id()), range))
        .map(|j| (0..g).map(|d| members[(j + d) % n].id()).collect())
        .collect()
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
    /// Items taken over at epoch changes or restarts.
    pub taken_over: u64,
    /// Items from old owners that did not verify (forged items in a hand-over).
    pub forged: u64,
    /// Microseconds spent not ready after epoch changes and restarts.
    pub not_ready_micros: u64,
}

/// An ack owed once a store completes.
struct Owed {
    to: Id,
    op: u64,
    hash: Id,
}

/// A write waiting for the store, and every ack that waits on it.
struct Storing {
    key: Id,
    owed: Vec<Owed>,
}

/// Why a range is being synced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Keys this replica did not own before: it holds none of them yet, and its digests of the
    /// range would be incomplete.
    Takeover,
    /// Its own range again after a restart: what it holds is what it acked.
    Restart,
}

/// Taking over (or checking again) a range.
struct Sync {
    why: Why,
    range: (Id, Id),
    epoch: u64,
    /// The groups over the range in the configuration the data comes from.
    groups: Vec<Vec<Id>>,
    quorum: usize,
    /// Owners whose digest is complete.
    replied: BTreeSet<Id>,
    /// Owners whose digest continues after a key.
    cursors: BTreeMap<Id, Id>,
    /// Reported (key, hash) -> reporters.
    reported: BTreeMap<(Id, Id), BTreeSet<Id>>,
    /// Items being fetched: (key, hash) -> (asked now, reporters not yet tried).
    fetching: BTreeMap<(Id, Id), (Id, Vec<Id>)>,
    op: u64,
    started: Time,
    retry_at: Time,
}

impl Sync {
    fn asked(&self) -> BTreeSet<Id> {
        self.groups.iter().flatten().copied().collect()
    }

    /// Whether every group over the range has answered with a quorum.
    fn digests_complete(&self) -> bool {
        self.groups.iter().all(|g| {
            g.iter().filter(|id| self.replied.contains(id)).count() >= self.quorum.min(g.len())
        })
    }
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
    /// Keys of a hand-over dropped unfinished when the next configuration came: this replica
    /// does not vouch for them until a sync completes.
    gap: Option<(Id, Id)>,
    actions: VecDeque<ReplicaAction>,
    stats: ReplicaStats,
}

impl Replica {
    /// A replica holding `items` (what its store had) under `config`, started at `now`. One
    /// that holds items checks its range against its group first (it may have missed writes
    /// while it was down, or stopped halfway through a hand-over).
    pub fn new(
        identity: Identity,
        config: Arc<Config>,
        unix_ms_at_zero: u64,
        items: impl IntoIterator<Item = Item>,
        now: Time,
    ) -> Self {
        let mut r = Replica {
            identity,
            config: config.clone(),
            unix_ms_at_zero,
            items: items.into_iter().map(|i| (i.key(), i)).collect(),
            storing: BTreeMap::new(),
            next_token: 1,
            sync: None,
            gap: None,
            actions: VecDeque::new(),
            stats: ReplicaStats::default(),
        };
        if !r.items.is_empty() || config.epoch > 0 {
            if let Some(range) = owned_range(&config, &r.me()) {
                r.start_sync(now, Why::Restart, &config, range, true);
            }
        }
        r
    }

    /// Counters.
    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// The item held under `key`.
    pub fn get(&self, key: &Id) -> Option<&Item> {
        self.items.get(key)
    }

    /// Whether this replica is still taking over or checking a range.
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

    fn store(&mut self, item: Item, owed: Vec<Owed>) {
        let token = self.next_token;
        self.next_token += 1;
        let key = item.key();
        self.items.insert(key, item.clone());
        self.storing.insert(token, Storing { key, owed });
        self.actions.push_back(ReplicaAction::Store { token, item });
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
                let owed = Owed {
                    to: from,
                    op,
                    hash: item.hash(),
                };
                if self.items.get(&key).is_none_or(|held| item.replaces(held)) {
                    self.store(item, vec![owed]);
                } else if let Some(pending) = self.storing.values_mut().find(|s| s.key == key) {
                    // It holds this item or a newer version, not yet on disk: ack once it is.
                    pending.owed.push(owed);
                } else {
                    // It holds this item or a newer version already: the write is subsumed.
                    self.ack(owed, key);
                }
            }
            StoreMessage::Read { op, epoch, key } => {
                if let Err(reason) = self.admit(now, epoch, &key) {
                    return self.refuse(from, op, reason);
                }
                let item = self.items.get(&key).cloned();
                self.send(from, StoreMessage::Reply { op, key, item });
            }
            StoreMessage::Digest {
                op,
                epoch,
                from: a,
                to: b,
                after,
            } => {
                // Only to members, once this replica has left the epoch before (so it takes no
                // more writes the new owner would miss), and not for keys of a hand-over it
                // never finished (its digest would be incomplete there). An old owner of a key
                // held it in the epoch before, so a hand-over in progress does not matter.
                let gap = self.gap.is_some_and(|g| overlaps(g, (a, b)));
                if self.config.epoch < epoch || self.config.member(&from).is_none() || gap {
                    return;
                }
                let mut entries: Vec<(Id, Id)> = self
                    .items
                    .iter()
                    .filter(|(k, _)| in_range(k, &a, &b) && after.is_none_or(|x| **k > x))
                    .take(MAX_DIGEST + 1)
                    .map(|(k, i)| (*k, i.hash()))
                    .collect();
                let more = entries.len() > MAX_DIGEST;
                entries.truncate(MAX_DIGEST);
                self.send(from, StoreMessage::DigestReply { op, entries, more });
            }
            StoreMessage::Fetch { op, key } => {
                if self.config.member(&from).is_none() {
                    return;
                }
                let item = self.items.get(&key).cloned();
                self.send(from, StoreMessage::Fetched { op, key, item });
            }
            StoreMessage::DigestReply { op, entries, more } => {
                self.take_digest(now, from, op, entries, more)
            }
            StoreMessage::Fetched { op, key, item } => self.take_fetched(now, from, op, key, item),
            StoreMessage::Ack(_) | StoreMessage::Reply { .. } | StoreMessage::Refuse { .. } => {}
        }
    }

    /// The store finished the write `token`: send the acks that waited on it.
    pub fn handle_stored(&mut self, token: u64) {
        if let Some(s) = self.storing.remove(&token) {
            for owed in s.owed {
                self.ack(owed, s.key);
            }
        }
    }

    fn ack(&mut self, owed: Owed, key: Id) {
        let mut ack = Ack {
            op: owed.op,
            epoch: self.config.epoch,
            key,
            hash: owed.hash,
            replica: self.me(),
            signature: Signature([0; 64]),
        };
        ack.signature = self.identity.sign(&ack.bytes());
        self.stats.acked += 1;
        self.send(owed.to, StoreMessage::Ack(ack));
    }

    /// A new configuration is in force: take over the part of this replica's new range it did
    /// not own (all of it if an earlier hand-over had not finished).
    pub fn handle_config(&mut self, now: Time, config: Arc<Config>) {
        if config.epoch <= self.config.epoch {
            return;
        }
        let previous = std::mem::replace(&mut self.config, config.clone());
        let unfinished = match self.sync.take() {
            Some(s) if s.why == Why::Takeover => {
                // Two unfinished hand-overs in a row: vouch for nothing until one completes.
                self.gap = Some(match self.gap {
                    Some(_) => (s.range.1, s.range.1),
                    None => s.range,
                });
                true
            }
            Some(_) => true,
            None => false,
        };
        let me = self.me();
        let Some(range) = owned_range(&config, &me) else {
            return;
        };
        let old = owned_range(&previous, &me).filter(|_| !unfinished);
        if old.is_some_and(|old| covers(old, range)) {
            return;
        }
        self.start_sync(now, Why::Takeover, &previous, range, !unfinished);
    }

    /// Starts syncing `range` from its groups in `source`. With `complete_here`, what this
    /// replica holds is complete for the groups of `source` it was in (it acked only what it
    /// stored): its own digest counts.
    fn start_sync(
        &mut self,
        now: Time,
        why: Why,
        source: &Config,
        range: (Id, Id),
        complete_here: bool,
    ) {
        let groups = groups_over(source, range);
        let g = source.params.group_size().min(source.members.len());
        let op = self.next_token;
        self.next_token += 1;
        let me = self.me();
        let mut sync = Sync {
            why,
            range,
            epoch: self.config.epoch,
            groups,
            quorum: crate::Thresholds::bft(g).quorum(),
            replied: BTreeSet::new(),
            cursors: BTreeMap::new(),
            reported: BTreeMap::new(),
            fetching: BTreeMap::new(),
            op,
            started: now,
            retry_at: now + SYNC_TIMEOUT,
        };
        if complete_here && sync.asked().contains(&me) {
            sync.replied.insert(me);
        }
        self.sync = Some(sync);
        self.ask_digests();
        self.maybe_done(now);
    }

    fn ask_digests(&mut self) {
        let Some(s) = &self.sync else { return };
        let (op, epoch, (from, to)) = (s.op, s.epoch, s.range);
        let me = self.me();
        let asks: Vec<(Id, Option<Id>)> = s
            .asked()
            .into_iter()
            .filter(|id| !s.replied.contains(id) && *id != me)
            .map(|id| (id, s.cursors.get(&id).copied()))
            .collect();
        for (id, after) in asks {
            self.send(
                id,
                StoreMessage::Digest {
                    op,
                    epoch,
                    from,
                    to,
                    after,
                },
            );
        }
    }

    fn take_digest(&mut self, now: Time, from: Id, op: u64, entries: Vec<(Id, Id)>, more: bool) {
        let Some(s) = &mut self.sync else { return };
        if s.op != op || !s.asked().contains(&from) || s.replied.contains(&from) {
            return;
        }
        let mut last = None;
        for (key, hash) in entries.into_iter().take(MAX_DIGEST) {
            if s.cursors.get(&from).is_some_and(|c| key <= *c) {
                continue;
            }
            last = Some(key);
            if in_range(&key, &s.range.0, &s.range.1) {
                s.reported.entry((key, hash)).or_default().insert(from);
            }
        }
        match (more, last) {
            (true, Some(last)) => {
                s.cursors.insert(from, last);
                let (epoch, range) = (s.epoch, s.range);
                self.send(
                    from,
                    StoreMessage::Digest {
                        op,
                        epoch,
                        from: range.0,
                        to: range.1,
                        after: Some(last),
                    },
                );
            }
            _ => {
                s.replied.insert(from);
                s.cursors.remove(&from);
            }
        }
        self.maybe_done(now);
    }

    fn maybe_done(&mut self, now: Time) {
        let Some(s) = &mut self.sync else { return };
        if !s.digests_complete() {
            return;
        }
        if !s.reported.is_empty() {
            // Fetch each reported item this replica lacks, from its reporters in turn.
            let reported = std::mem::take(&mut s.reported);
            let mut asks = Vec::new();
            for ((key, hash), by) in reported {
                if self.items.get(&key).map(Item::hash) == Some(hash) {
                    continue;
                }
                let mut by: Vec<Id> = by.into_iter().collect();
                if let Some(first) = by.pop() {
                    asks.push((first, key));
                    s.fetching.insert((key, hash), (first, by));
                }
            }
            let op = s.op;
            for (to, key) in asks {
                self.send(to, StoreMessage::Fetch { op, key });
            }
        }
        let Some(s) = &self.sync else { return };
        if s.fetching.is_empty() {
            self.stats.not_ready_micros += now.saturating_since(s.started).as_micros();
            self.sync = None;
            self.gap = None;
        }
    }

    fn take_fetched(&mut self, now: Time, from: Id, op: u64, key: Id, item: Option<Item>) {
        let Some(s) = &mut self.sync else { return };
        // Only answers from the owner asked, for a key asked.
        let wanted: Vec<(Id, Id)> = s
            .fetching
            .iter()
            .filter(|((k, _), (asked, _))| *k == key && *asked == from)
            .map(|(w, _)| *w)
            .collect();
        if s.op != op || wanted.is_empty() {
            return;
        }
        let good = item.filter(|i| i.verify_for(&key).is_ok());
        let mut asks = Vec::new();
        let mut keep = None;
        for w in wanted {
            match &good {
                Some(i) if i.hash() == w.1 => {
                    s.fetching.remove(&w);
                }
                _ => {
                    // Not what it reported: ask the next reporter, or give up on a hash only
                    // liars reported.
                    self.stats.forged += 1;
                    if let Some((asked, rest)) = s.fetching.get_mut(&w) {
                        match rest.pop() {
                            Some(next) => {
                                *asked = next;
                                asks.push(next);
                            }
                            None => {
                                s.fetching.remove(&w);
                            }
                        }
                    }
                }
            }
        }
        if let Some(item) = good {
            if self.items.get(&key).is_none_or(|held| item.replaces(held)) {
                keep = Some(item);
            }
        }
        for to in asks {
            self.send(to, StoreMessage::Fetch { op, key });
        }
        if let Some(item) = keep {
            self.stats.taken_over += 1;
            self.store(item, Vec::new());
        }
        self.maybe_done(now);
    }

    /// Asks again the owners that have not answered.
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
        s.fetching
            .retain(|(key, _), (asked, rest)| match rest.pop() {
                Some(next) => {
                    *asked = next;
                    asks.push((next, *key));
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
