//! The replica side of quorum storage: takes writes and reads for the keys whose group it is in
//! during the current epoch, answers reads and digests only from what is on disk, and acks a
//! write only once the store has it. It takes over key ranges it did not own (after an epoch
//! change) and checks its own range again after a restart: digests from a quorum of every
//! group over the range in the epoch the data comes from, then the items it lacks, verified,
//! before it serves that range. A hand-over that has not finished when the next configuration
//! comes goes on beside the new one, and the ranges not yet taken over are persisted, so that a
//! restart does not mistake them for data it holds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use ringvault_types::{Duration, Id, Identity, Signature, Time};

use super::{in_range, Ack, Item, Refusal, StoreMessage};
use crate::config::{Config, Epoch};

/// The most entries one digest reply carries (64 bytes each, well under a message's cap);
/// larger ranges come in several replies.
pub const MAX_DIGEST: usize = 50_000;

/// The most digest pages taken from one owner for one hand-over (3.2 million keys); beyond it
/// the owner counts as done, so a lying one cannot keep a hand-over open.
pub const MAX_DIGEST_PAGES: u32 = 64;

/// How many times each reporter of an item is asked for it before the item is given up.
pub const MAX_FETCH_TRIES: u32 = 3;

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
    /// Persist the key ranges this replica owns but has not taken over yet (give them to
    /// [`Replica::new`] after a restart).
    PersistUnsynced(Vec<(Id, Id)>),
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
    /// Items reported by old owners and given up (no reporter produced them).
    pub given_up: u64,
    /// Microseconds spent not ready after epoch changes and restarts.
    pub not_ready_micros: u64,
    /// The longest of them (one hand-over or restart check).
    pub not_ready_max_micros: u64,
    /// Hand-overs and restart checks finished.
    pub syncs: u64,
}

/// An ack owed once a store completes.
struct Owed {
    to: Id,
    op: u64,
    hash: Id,
}

/// A write waiting for the store, and every ack that waits on it.
struct Staged {
    item: Item,
    owed: Vec<Owed>,
}

/// An item being fetched from the owners that reported it, in turn.
struct Fetching {
    reporters: Vec<Id>,
    next: usize,
    tries: u32,
}

impl Fetching {
    fn asked(&self) -> Id {
        self.reporters[self.next % self.reporters.len()]
    }
}

/// Why a range is being synced.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Why {
    /// Keys this replica did not own (or may not have finished receiving) in the source epoch.
    Takeover,
    /// Its own range again after a restart: what it holds is what it acked.
    Restart,
}

/// Taking over (or checking again) a range.
struct Sync {
    why: Why,
    range: (Id, Id),
    /// The epoch in which this replica owns the range.
    target: Epoch,
    /// The epoch whose owners are asked.
    source: Epoch,
    groups: Vec<Vec<Id>>,
    quorum: usize,
    /// Owners whose digest is complete.
    replied: BTreeSet<Id>,
    /// Owners whose digest continues after a key, and the pages taken from each.
    cursors: BTreeMap<Id, Id>,
    pages: BTreeMap<Id, u32>,
    /// Reported (key, hash) -> reporters.
    reported: BTreeMap<(Id, Id), BTreeSet<Id>>,
    fetching: BTreeMap<(Id, Id), Fetching>,
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
    /// What is on disk: all that reads and digests answer from.
    items: BTreeMap<Id, Item>,
    staged: BTreeMap<u64, Staged>,
    next_token: u64,
    syncs: Vec<Sync>,
    actions: VecDeque<ReplicaAction>,
    stats: ReplicaStats,
}

impl Replica {
    /// A replica holding `items` (what its store had) under `config`, started at `now`, with
    /// `unsynced` the ranges it had persisted as not yet taken over. One that holds items, or
    /// runs in a later epoch than genesis, checks its range against its group before it
    /// serves it (it may have missed writes while it was down); its own digest counts only if
    /// no hand-over was left unfinished.
    pub fn new(
        identity: Identity,
        config: Arc<Config>,
        unix_ms_at_zero: u64,
        items: impl IntoIterator<Item = Item>,
        unsynced: &[(Id, Id)],
        now: Time,
    ) -> Self {
        let mut r = Replica {
            identity,
            config: config.clone(),
            unix_ms_at_zero,
            items: items.into_iter().map(|i| (i.key(), i)).collect(),
            staged: BTreeMap::new(),
            next_token: 1,
            syncs: Vec::new(),
            actions: VecDeque::new(),
            stats: ReplicaStats::default(),
        };
        if !r.items.is_empty() || config.epoch > 0 || !unsynced.is_empty() {
            if let Some(range) = owned_range(&config, &r.id()) {
                let why = if unsynced.is_empty() {
                    Why::Restart
                } else {
                    Why::Takeover
                };
                r.start_sync(now, why, &config, range, unsynced.is_empty());
            }
        }
        r
    }

    /// Counters.
    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// The item on disk under `key`.
    pub fn get(&self, key: &Id) -> Option<&Item> {
        self.items.get(key)
    }

    /// Items on disk.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// This replica's server.
    pub fn id(&self) -> Id {
        self.identity.id()
    }

    /// Whether this replica is still taking over or checking a range.
    pub fn syncing(&self) -> bool {
        !self.syncs.is_empty()
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<ReplicaAction> {
        self.actions.pop_front()
    }

    /// When to call [`Replica::handle_timeout`].
    pub fn next_deadline(&self) -> Option<Time> {
        self.syncs.iter().map(|s| s.retry_at).min()
    }

    fn send(&mut self, to: Id, msg: StoreMessage) {
        self.actions.push_back(ReplicaAction::Send { to, msg });
    }

    fn owns(&self, key: &Id) -> bool {
        let me = self.id();
        self.config.replica_group(key).iter().any(|m| m.id() == me)
    }

    fn ready(&self, key: &Id) -> bool {
        !self
            .syncs
            .iter()
            .any(|s| in_range(key, &s.range.0, &s.range.1))
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

    /// The newest version of `key` this replica has, on disk or on its way there, and the
    /// token of the newest write on its way.
    fn newest(&self, key: &Id) -> (Option<&Item>, Option<u64>) {
        match self.staged.iter().rev().find(|(_, s)| s.item.key() == *key) {
            Some((token, s)) => (Some(&s.item), Some(*token)),
            None => (self.items.get(key), None),
        }
    }

    fn stage(&mut self, item: Item, owed: Vec<Owed>) {
        let token = self.next_token;
        self.next_token += 1;
        self.staged.insert(
            token,
            Staged {
                item: item.clone(),
                owed,
            },
        );
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
                match self.newest(&key) {
                    (held, _) if held.is_none_or(|h| item.replaces(h)) => {
                        self.stage(item, vec![owed])
                    }
                    // It has this item or a newer version on its way to disk: ack once there.
                    (_, Some(token)) => {
                        if let Some(s) = self.staged.get_mut(&token) {
                            s.owed.push(owed);
                        }
                    }
                    // It has this item or a newer version on disk: the write is subsumed.
                    (_, None) => self.ack(owed, key),
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
                source,
                from: a,
                to: b,
                after,
            } => self.answer_digest(from, op, epoch, source, (a, b), after),
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

    /// Answers a new owner that asks this replica as an owner in epoch `source`: only members,
    /// only once this replica is in `epoch` too (so it takes no more writes of the epoch
    /// before), and not at all if the range overlaps a hand-over it had not finished by
    /// `source` (it would vouch for data it never received). Keys of hand-overs that began
    /// later were not this replica's in `source`; they are left out.
    fn answer_digest(
        &mut self,
        from: Id,
        op: u64,
        epoch: Epoch,
        source: Epoch,
        range: (Id, Id),
        after: Option<Id>,
    ) {
        if self.config.epoch < epoch || self.config.member(&from).is_none() {
            return;
        }
        let unfinished = |s: &&Sync| s.why == Why::Takeover && overlaps(s.range, range);
        if self
            .syncs
            .iter()
            .filter(unfinished)
            .any(|s| s.target <= source)
        {
            return;
        }
        let later: Vec<(Id, Id)> = self
            .syncs
            .iter()
            .filter(|s| s.why == Why::Takeover && s.target > source)
            .map(|s| s.range)
            .collect();
        let mut entries: Vec<(Id, Id)> = self
            .items
            .iter()
            .filter(|(k, _)| {
                in_range(k, &range.0, &range.1)
                    && after.is_none_or(|x| **k > x)
                    && !later.iter().any(|r| in_range(k, &r.0, &r.1))
            })
            .take(MAX_DIGEST + 1)
            .map(|(k, i)| (*k, i.hash()))
            .collect();
        let more = entries.len() > MAX_DIGEST;
        entries.truncate(MAX_DIGEST);
        self.send(from, StoreMessage::DigestReply { op, entries, more });
    }

    /// The store finished the write `token`: it is on disk (unless a newer version already
    /// is), and the acks that waited on it go out.
    pub fn handle_stored(&mut self, now: Time, token: u64) {
        let Some(s) = self.staged.remove(&token) else {
            return;
        };
        let key = s.item.key();
        if self
            .items
            .get(&key)
            .is_none_or(|held| s.item.replaces(held))
        {
            self.items.insert(key, s.item);
        }
        for owed in s.owed {
            self.ack(owed, key);
        }
        // A hand-over may have been waiting for this write to finish.
        let ops: Vec<u64> = self
            .syncs
            .iter()
            .filter(|s| s.fetching.is_empty() && s.reported.is_empty() && s.digests_complete())
            .map(|s| s.op)
            .collect();
        for op in ops {
            self.maybe_done(now, op);
        }
    }

    fn ack(&mut self, owed: Owed, key: Id) {
        let mut ack = Ack {
            op: owed.op,
            epoch: self.config.epoch,
            key,
            hash: owed.hash,
            replica: self.id(),
            signature: Signature([0; 64]),
        };
        ack.signature = self.identity.sign(&ack.bytes());
        self.stats.acked += 1;
        self.send(owed.to, StoreMessage::Ack(ack));
    }

    /// A new configuration is in force: take over the part of this replica's new range it did
    /// not own. Hand-overs still running go on beside it (their sources still hold the data).
    pub fn handle_config(&mut self, now: Time, config: Arc<Config>) {
        if config.epoch <= self.config.epoch {
            return;
        }
        let previous = std::mem::replace(&mut self.config, config.clone());
        let me = self.id();
        let Some(range) = owned_range(&config, &me) else {
            return;
        };
        if owned_range(&previous, &me).is_some_and(|old| covers(old, range)) {
            return;
        }
        let clean = !self
            .syncs
            .iter()
            .any(|s| s.why == Why::Takeover && overlaps(s.range, range));
        self.start_sync(now, Why::Takeover, &previous, range, clean);
    }

    /// The ranges not yet taken over, as persisted.
    fn unsynced(&self) -> Vec<(Id, Id)> {
        self.syncs
            .iter()
            .filter(|s| s.why == Why::Takeover)
            .map(|s| s.range)
            .collect()
    }

    /// Starts syncing `range` from its groups in `source`. With `complete_here`, what this
    /// replica holds is complete for the groups of `source` it was in (it acked only what it
    /// stored, and left no hand-over unfinished): its own digest counts.
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
        let me = self.id();
        let mut sync = Sync {
            why,
            range,
            target: self.config.epoch,
            source: source.epoch,
            groups,
            quorum: crate::Thresholds::bft(g).quorum(),
            replied: BTreeSet::new(),
            cursors: BTreeMap::new(),
            pages: BTreeMap::new(),
            reported: BTreeMap::new(),
            fetching: BTreeMap::new(),
            op,
            started: now,
            retry_at: now + SYNC_TIMEOUT,
        };
        if complete_here && sync.asked().contains(&me) {
            sync.replied.insert(me);
        }
        self.syncs.push(sync);
        if why == Why::Takeover {
            let unsynced = self.unsynced();
            self.actions
                .push_back(ReplicaAction::PersistUnsynced(unsynced));
        }
        self.ask_digests(op);
        self.maybe_done(now, op);
    }

    fn sync_mut(&mut self, op: u64) -> Option<&mut Sync> {
        self.syncs.iter_mut().find(|s| s.op == op)
    }

    fn ask_digests(&mut self, op: u64) {
        let me = self.id();
        let Some(s) = self.syncs.iter().find(|s| s.op == op) else {
            return;
        };
        let (epoch, source, (from, to)) = (self.config.epoch, s.source, s.range);
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
                    source,
                    from,
                    to,
                    after,
                },
            );
        }
    }

    fn take_digest(&mut self, now: Time, from: Id, op: u64, entries: Vec<(Id, Id)>, more: bool) {
        let epoch = self.config.epoch;
        let Some(s) = self.sync_mut(op) else { return };
        if !s.asked().contains(&from) || s.replied.contains(&from) {
            return;
        }
        let page = s.pages.entry(from).or_insert(0);
        *page += 1;
        let last_page = *page >= MAX_DIGEST_PAGES;
        let mut last = None;
        for (key, hash) in entries.into_iter().take(MAX_DIGEST) {
            // Keys come in order, each page after the last: anything else is not counted.
            if s.cursors.get(&from).is_some_and(|c| key <= *c) || last.is_some_and(|l| key <= l) {
                continue;
            }
            last = Some(key);
            if in_range(&key, &s.range.0, &s.range.1) {
                s.reported.entry((key, hash)).or_default().insert(from);
            }
        }
        match (more && !last_page, last) {
            (true, Some(last)) => {
                s.cursors.insert(from, last);
                let (source, range) = (s.source, s.range);
                self.send(
                    from,
                    StoreMessage::Digest {
                        op,
                        epoch,
                        source,
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
        self.maybe_done(now, op);
    }

    fn maybe_done(&mut self, now: Time, op: u64) {
        let Some(i) = self.syncs.iter().position(|s| s.op == op) else {
            return;
        };
        if !self.syncs[i].digests_complete() {
            return;
        }
        if !self.syncs[i].reported.is_empty() {
            // Fetch each reported item this replica lacks, from its reporters in turn.
            let reported = std::mem::take(&mut self.syncs[i].reported);
            let mut asks = Vec::new();
            for ((key, hash), by) in reported {
                if self.newest(&key).0.map(Item::hash) == Some(hash) {
                    continue;
                }
                let f = Fetching {
                    reporters: by.into_iter().collect(),
                    next: 0,
                    tries: 1,
                };
                asks.push((f.asked(), key));
                self.syncs[i].fetching.insert((key, hash), f);
            }
            for (to, key) in asks {
                self.send(to, StoreMessage::Fetch { op, key });
            }
        }
        // Done once nothing is being fetched and what was fetched is on disk (a restart must
        // not find the range marked taken over with its items lost).
        let range = self.syncs[i].range;
        let storing = self
            .staged
            .values()
            .any(|s| in_range(&s.item.key(), &range.0, &range.1));
        if self.syncs[i].fetching.is_empty() && !storing {
            let s = self.syncs.remove(i);
            let took = now.saturating_since(s.started).as_micros();
            self.stats.not_ready_micros += took;
            self.stats.not_ready_max_micros = self.stats.not_ready_max_micros.max(took);
            self.stats.syncs += 1;
            if s.why == Why::Takeover {
                let unsynced = self.unsynced();
                self.actions
                    .push_back(ReplicaAction::PersistUnsynced(unsynced));
            }
        }
    }

    fn take_fetched(&mut self, now: Time, from: Id, op: u64, key: Id, item: Option<Item>) {
        let Some(s) = self.sync_mut(op) else { return };
        // Only answers from an owner that reported the key (a late answer from one asked
        // before is as good as any).
        let wanted: Vec<(Id, Id)> = s
            .fetching
            .iter()
            .filter(|((k, _), f)| *k == key && f.reporters.contains(&from))
            .map(|(w, _)| *w)
            .collect();
        if wanted.is_empty() {
            return;
        }
        let good = item.filter(|i| i.verify_for(&key).is_ok());
        let mut asks = Vec::new();
        let mut forged = 0;
        let mut given_up = 0;
        for w in wanted {
            if good.as_ref().is_some_and(|i| i.hash() == w.1) {
                s.fetching.remove(&w);
                continue;
            }
            // It answered without the item it reported: strike it off and ask the next.
            forged += 1;
            let Some(f) = s.fetching.get_mut(&w) else {
                continue;
            };
            let was_asked = f.asked() == from;
            f.reporters.retain(|r| *r != from);
            if f.reporters.is_empty() {
                s.fetching.remove(&w);
                given_up += 1;
            } else if was_asked {
                asks.push(f.asked());
            }
        }
        self.stats.forged += forged;
        self.stats.given_up += given_up;
        if let Some(item) = good {
            if self.newest(&key).0.is_none_or(|held| item.replaces(held)) {
                self.stats.taken_over += 1;
                self.stage(item, Vec::new());
            }
        }
        for to in asks {
            self.send(to, StoreMessage::Fetch { op, key });
        }
        self.maybe_done(now, op);
    }

    /// Asks again the owners that have not answered: digests, and fetches (the next reporter
    /// of each item, each reporter at most [`MAX_FETCH_TRIES`] times).
    pub fn handle_timeout(&mut self, now: Time) {
        let due: Vec<u64> = self
            .syncs
            .iter()
            .filter(|s| s.retry_at <= now)
            .map(|s| s.op)
            .collect();
        for op in due {
            let mut asks = Vec::new();
            let mut given_up = 0;
            if let Some(s) = self.sync_mut(op) {
                s.retry_at = now + SYNC_TIMEOUT;
                s.fetching.retain(|(key, _), f| {
                    f.next += 1;
                    if f.next % f.reporters.len() == 0 {
                        f.tries += 1;
                    }
                    if f.tries > MAX_FETCH_TRIES {
                        given_up += 1;
                        return false;
                    }
                    asks.push((f.asked(), *key));
                    true
                });
            }
            self.stats.given_up += given_up;
            for (to, key) in asks {
                self.send(to, StoreMessage::Fetch { op, key });
            }
            self.ask_digests(op);
            self.maybe_done(now, op);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{test_config, Params};
    use ringvault_types::{Record, RecordValue};

    fn record(owner: &Identity, version: u64) -> Item {
        let value = RecordValue::Inline(vec![version as u8]);
        Item::Record(Record::sign(owner, "r", version, 0, value).unwrap())
    }

    fn sends(r: &mut Replica) -> (Vec<StoreMessage>, Vec<u64>) {
        let (mut msgs, mut stores) = (Vec::new(), Vec::new());
        while let Some(a) = r.poll_action() {
            match a {
                ReplicaAction::Send { msg, .. } => msgs.push(msg),
                ReplicaAction::Store { token, .. } => stores.push(token),
                ReplicaAction::PersistUnsynced(_) => {}
            }
        }
        (msgs, stores)
    }

    #[test]
    fn reads_see_only_what_is_on_disk_and_acks_wait_for_the_right_write() {
        let (_, ids, config) = test_config(4, Params::DEFAULT);
        let config = Arc::new(config);
        let me = Identity::from_secret_bytes(ids[0].secret_bytes());
        let mut r = Replica::new(me, config.clone(), 0, Vec::new(), &[], Time::ZERO);
        let owner = Identity::from_secret_bytes([5; 32]);
        let (v2, v3) = (record(&owner, 2), record(&owner, 3));
        let key = v2.key();
        let client = ids[1].id();
        let now = Time::from_micros(1);
        let write = |op, item: &Item| StoreMessage::Write {
            op,
            epoch: 0,
            item: item.clone(),
        };
        r.handle_message(now, client, write(1, &v2));
        r.handle_message(now, client, write(2, &v3));
        let (acks, stores) = sends(&mut r);
        assert!(acks.is_empty(), "acked before anything was on disk");
        assert_eq!(stores.len(), 2);
        // Not on disk yet: a read finds nothing.
        r.handle_message(
            now,
            client,
            StoreMessage::Read {
                op: 3,
                epoch: 0,
                key,
            },
        );
        let (replies, _) = sends(&mut r);
        assert!(matches!(
            &replies[..],
            [StoreMessage::Reply { item: None, .. }]
        ));
        // v3 again (a retry): its ack waits for v3's store, not v2's.
        r.handle_message(now, client, write(4, &v3));
        r.handle_stored(now, stores[0]);
        let (acks, _) = sends(&mut r);
        let acked: Vec<u64> = acks
            .iter()
            .filter_map(|m| match m {
                StoreMessage::Ack(a) => Some(a.op),
                _ => None,
            })
            .collect();
        assert_eq!(acked, vec![1], "only v2's write is on disk");
        r.handle_stored(now, stores[1]);
        let (acks, _) = sends(&mut r);
        assert_eq!(acks.len(), 2, "v3's write and its retry");
        r.handle_message(
            now,
            client,
            StoreMessage::Read {
                op: 5,
                epoch: 0,
                key,
            },
        );
        let (replies, _) = sends(&mut r);
        assert!(matches!(&replies[..], [StoreMessage::Reply { item: Some(i), .. }] if *i == v3));
    }
}
