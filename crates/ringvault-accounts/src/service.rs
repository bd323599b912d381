//! The accounts service on the KBR API: clients ask a user's account managers to charge an
//! insert or give back a reclaimed object; the manager closest to the account key proposes the
//! change and the managers agree on it (`ledger.rs`); the client gets the committed entry,
//! which is the approval storage nodes check.
//!
//! Who may take part: a proposer takes promises and votes only from the managers it counts
//! (the m closest to the account key in its leaf set); a manager takes prepares and accepts
//! only from a node plausibly among the m closest (`approval::near`), and keeps accounts only
//! for keys it is plausibly a manager of. A client takes a refusal only from a plausible
//! manager, and an approval only when a majority of plausible managers signed it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ringvault_overlay::{AppId, AppMessage, Kbr, Redundancy, RouteInfo, Service};
use ringvault_types::{
    Contact, Duration, Grant, Grantee, Id, Identity, NodeCertificate, PublicKey, RevocationList,
    Time,
};

use crate::approval::{account_key, near, Electorate, Vantage};
use crate::message::{AcceptRefusal, AccountsMessage, Ask, Promised, Refusal};
use crate::{quorum, Account, Ballot, Change, Committed, Debit, Entry, LedgerError, Vote, Warrant};

/// The application id of accounts messages.
pub const ACCOUNTS_APP: AppId = 6;
/// Managers per account when none is set. With a quarter of the nodes Byzantine, a set of 7
/// has a Byzantine majority for 7.1% of users (3: 15.6%, 15: 1.7%), by the binomial tail.
pub const DEFAULT_MANAGERS: usize = 7;
/// How long an approval lets storage nodes store the object.
pub const APPROVAL_LIFETIME: Duration = Duration::from_secs(600);
/// A client gives up on its managers after this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A proposer that has not got a majority of promises or votes after this (plus up to half
/// of it again, so competing proposers fall out of step) tries a higher ballot.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(1);
/// Entries a promise carries at most: a proposer further behind asks again.
const PAGE: usize = 64;
/// Requests a proposer queues per user, and clients wait for, at most.
const MAX_QUEUED: usize = 256;
/// Accounts one manager keeps at most.
const MAX_ACCOUNTS: usize = 1 << 20;
/// A proposer with nothing to do for this long is forgotten.
const IDLE_PROPOSER: Duration = Duration::from_secs(600);
/// How far a ledger entry's creation may lie ahead of a manager's clock.
const CLOCK_SLACK: u64 = 300;

/// Checks the proof that a reclaimed object's copies were released: `(user, object, proof,
/// vantage, (replicas, insertion date))`. Given by the node that composes the services (the
/// storage layer knows its receipts).
pub type ReclaimCheck = Box<dyn Fn(&PublicKey, &Id, &[u8], &Vantage<'_>, (u8, u64)) -> bool + Send>;

/// Checks that encoded certificates are the owner's and certify exactly what a debit charges:
/// `(user, certificates, debit)`. Given by the node that composes the services.
pub type InsertCheck = Box<dyn Fn(&PublicKey, &[u8], &Debit) -> bool + Send>;

/// How the accounts service runs.
pub struct AccountsConfig {
    /// Managers per account, and the CA their votes' certificates must be signed by.
    pub electorate: Electorate,
    /// The brokers whose quota grants count.
    pub brokers: Vec<PublicKey>,
    /// This node's certificate, attached to its votes (secure mode).
    pub cert: Option<NodeCertificate>,
    /// Unix seconds at the driver's time zero.
    pub unix_at_zero: u64,
    /// Secure mode: requests go to the managers by secure routing.
    pub secure: bool,
    /// The check of reclaim proofs.
    pub reclaimed: ReclaimCheck,
    /// The check of a debit's certificates.
    pub inserted: InsertCheck,
}

/// Why an accounts request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountsError {
    /// The debit would pass the user's grant.
    #[error("quota exceeded: {balance} of {limit} bytes used, {asked} more asked")]
    OverQuota {
        /// Bytes occupied.
        balance: u64,
        /// Bytes granted.
        limit: u64,
        /// Bytes asked for.
        asked: u64,
    },
    /// The managers refused the grant.
    #[error("the quota grant was refused: {0}")]
    Grant(String),
    /// Nothing to give back.
    #[error("no credit: {0}")]
    NoCredit(String),
    /// The object is charged already for other content.
    #[error("the object is charged already for other content")]
    Duplicate,
    /// The managers did not answer, or could not agree, in time.
    #[error("the account managers did not answer in time")]
    Timeout,
    /// The answer did not verify.
    #[error("the account managers' answer does not verify: {0}")]
    BadAnswer(String),
    /// Too many requests are waiting.
    #[error("too many account requests in flight; retry shortly")]
    Busy,
    /// The node is not in a ring.
    #[error("this node has not joined a ring yet")]
    NotJoined,
}

/// A request's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// What a finished request produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered {
    /// The request.
    pub req: RequestId,
    /// The committed entry (the approval of a debit, the entry of a credit, the head for a
    /// balance: none for an empty ledger), or why not.
    pub result: Result<Option<Committed>, AccountsError>,
}

impl From<Refusal> for AccountsError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::OverQuota {
                balance,
                limit,
                asked,
            } => AccountsError::OverQuota {
                balance,
                limit,
                asked,
            },
            Refusal::Grant(e) => AccountsError::Grant(e),
            Refusal::NoCredit(e) => AccountsError::NoCredit(e),
            Refusal::Duplicate => AccountsError::Duplicate,
            Refusal::Unavailable => AccountsError::Timeout,
        }
    }
}

/// What a manager counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountsStats {
    /// Entries this node committed as proposer.
    pub committed: u64,
    /// Requests refused as over quota.
    pub over_quota: u64,
    /// Grants refused (forged, expired, foreign or unknown broker) or certificates that do
    /// not match the debit.
    pub bad_grants: u64,
    /// Rounds restarted under a higher ballot.
    pub rounds: u64,
}

struct Waiting {
    req: u64,
    client: Contact,
    ask: Ask,
    warrant: Option<Warrant>,
    /// The client has given up by then.
    deadline: Time,
}

// One per account a node proposes for; boxing the entry buys nothing.
#[allow(clippy::large_enum_variant)]
enum Phase {
    /// Phase 1 under the proposer's ballot.
    Preparing {
        promises: BTreeMap<Id, Promised>,
        /// Higher ballots managers said they promised (refusals).
        nacks: Vec<Ballot>,
    },
    /// Prepared: entries go straight to phase 2.
    Ready,
    /// Phase 2 of one entry.
    Accepting {
        entry: Entry,
        votes: BTreeMap<Id, Vote>,
        refused: usize,
        /// Higher ballots managers said they promised.
        higher: Vec<Ballot>,
        /// The client it answers; none for an entry carried forward from an older ballot.
        for_client: Option<Waiting>,
    },
    /// Refused or unanswered: a new round starts at the round time-out.
    Stalled,
}

struct Proposer {
    ballot: Ballot,
    /// The highest ballot seen in refusals: the next one goes above it.
    seen: Ballot,
    phase: Phase,
    queue: VecDeque<Waiting>,
    /// Managers' log lengths, as their promises said.
    lens: BTreeMap<Id, u64>,
    since: Time,
    /// Whether the round under way started at once after a refusal: the next refusal waits
    /// for the round time-out (two proposers do not chase each other's ballots).
    retried: bool,
}

impl Proposer {
    /// When a new round starts if nothing answers first: for a round under way, or a stall
    /// with work left (`me`: this node's id, for the jitter).
    fn retry_at(&self, me: &Id) -> Option<Time> {
        let busy = matches!(
            self.phase,
            Phase::Preparing { .. } | Phase::Accepting { .. }
        );
        let waiting = matches!(self.phase, Phase::Stalled) && !self.queue.is_empty();
        (busy || waiting).then(|| self.since + ROUND_TIMEOUT + jitter(me, self.ballot.round))
    }
}

struct Pending {
    user: PublicKey,
    ask: Ask,
    deadline: Time,
}

/// The accounts service: manager (acceptor) of the accounts whose key this node is among the
/// m closest to, proposer of those it is the root of, and client of the rest.
pub struct Accounts {
    identity: Identity,
    config: AccountsConfig,
    revoked: RevocationList,
    accounts: BTreeMap<PublicKey, Account>,
    proposers: BTreeMap<PublicKey, Proposer>,
    pending: BTreeMap<u64, Pending>,
    next_req: u64,
    answered: VecDeque<Answered>,
    stats: AccountsStats,
    /// Per account, the managers this node last counted (its log went to each newcomer).
    handed: BTreeMap<PublicKey, BTreeSet<Id>>,
}

impl Accounts {
    /// The service of the node with `identity` under `config`.
    pub fn new(identity: Identity, config: AccountsConfig) -> Self {
        Accounts {
            identity,
            config,
            revoked: RevocationList::empty(),
            accounts: BTreeMap::new(),
            proposers: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_req: 1,
            answered: VecDeque::new(),
            stats: AccountsStats::default(),
            handed: BTreeMap::new(),
        }
    }

    /// Managers' counters.
    pub fn stats(&self) -> AccountsStats {
        self.stats
    }

    /// Accounts this node keeps a log of.
    pub fn accounts(&self) -> usize {
        self.accounts.len()
    }

    /// This node's log of `user`'s account, if it manages it.
    pub fn account(&self, user: &PublicKey) -> Option<&Account> {
        self.accounts.get(user)
    }

    /// The next finished request.
    pub fn poll_answer(&mut self) -> Option<Answered> {
        self.answered.pop_front()
    }

    /// What a node judging votes knows now.
    pub fn vantage<'a>(&'a self, kbr: &dyn Kbr, now: Time) -> Vantage<'a> {
        Vantage {
            me: kbr.local_contact().id,
            gap: kbr.id_gap(),
            unix: self.unix(now),
            revoked: &self.revoked,
        }
    }

    /// Takes a newer revocation list (votes of revoked managers stop counting).
    pub fn set_revocations(&mut self, list: RevocationList) {
        self.revoked = list;
    }

    /// The electorate approvals are judged by.
    pub fn electorate(&self) -> &Electorate {
        &self.config.electorate
    }

    fn unix(&self, now: Time) -> u64 {
        self.config.unix_at_zero + now.as_micros() / 1_000_000
    }

    fn m(&self) -> usize {
        self.config.electorate.m
    }

    /// Asks `user`'s managers to charge an insert: `certs` are the object's certificates as
    /// the owner signed them (encoded by the storage layer), under `grant`.
    #[allow(clippy::too_many_arguments)]
    pub fn debit(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        user: PublicKey,
        (grant, certs): (Grant, Vec<u8>),
        ids: Vec<Id>,
        binding: Id,
        (size, replicas, date): (u64, u8, u64),
        nonce: u64,
    ) -> Result<RequestId, AccountsError> {
        let ask = Ask::Debit {
            ids,
            binding,
            bytes: size.saturating_mul(u64::from(replicas)),
            replicas,
            date,
            nonce,
        };
        self.request(kbr, now, user, ask, Some(Warrant::Grant { grant, certs }))
    }

    /// Asks `user`'s managers to give back the debit under which `object` was stored, with
    /// `proof` that its copies were released.
    pub fn credit(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        user: PublicKey,
        object: Id,
        proof: Vec<u8>,
    ) -> Result<RequestId, AccountsError> {
        let warrant = Warrant::Reclaimed { object, proof };
        self.request(kbr, now, user, Ask::Credit, Some(warrant))
    }

    /// Asks `user`'s managers for the head of the ledger (its balance).
    pub fn balance(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        user: PublicKey,
    ) -> Result<RequestId, AccountsError> {
        self.request(kbr, now, user, Ask::Balance, None)
    }

    fn request(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        user: PublicKey,
        ask: Ask,
        warrant: Option<Warrant>,
    ) -> Result<RequestId, AccountsError> {
        if self.pending.len() >= MAX_QUEUED {
            return Err(AccountsError::Busy);
        }
        let req = self.next_req;
        self.next_req += 1;
        self.pending.insert(
            req,
            Pending {
                user,
                ask: ask.clone(),
                deadline: now + REQUEST_TIMEOUT,
            },
        );
        let msg = encode(&AccountsMessage::Request {
            req,
            client: kbr.local_contact(),
            user,
            ask,
            warrant,
        });
        let key = account_key(&user);
        if self.config.secure {
            let m = u8::try_from(self.m()).unwrap_or(u8::MAX);
            kbr.sec_route(key, msg, m, Redundancy::OnFailure);
        } else {
            kbr.route(key, msg, None);
        }
        Ok(RequestId(req))
    }

    // ---- the client's side ----

    fn on_answer(
        &mut self,
        kbr: &dyn Kbr,
        now: Time,
        from: Id,
        req: u64,
        result: Result<Option<Committed>, Refusal>,
    ) {
        let Some(p) = self.pending.get(&req) else {
            return;
        };
        let result = match result {
            Ok(c) => match self.judge_answer(kbr, now, p, c) {
                Ok(c) => Ok(c),
                // A forged or wrong answer is dropped: the true one may still come.
                Err(_) => return,
            },
            Err(r) => {
                // A refusal proves nothing: it counts only from a plausible manager.
                let at = self.vantage(kbr, now);
                if !near(&account_key(&p.user), &from, self.m(), &at) {
                    return;
                }
                Err(r.into())
            }
        };
        self.pending.remove(&req);
        self.answered.push_back(Answered {
            req: RequestId(req),
            result,
        });
    }

    /// The committed entry of an answer, if it verifies and is what was asked for.
    fn judge_answer(
        &self,
        kbr: &dyn Kbr,
        now: Time,
        p: &Pending,
        c: Option<Committed>,
    ) -> Result<Option<Committed>, AccountsError> {
        let bad = |m: &str| Err(AccountsError::BadAnswer(m.into()));
        let Some(c) = c else {
            return match p.ask {
                Ask::Balance => Ok(None),
                _ => bad("no entry"),
            };
        };
        if let Err(e) = self
            .config
            .electorate
            .verify(&p.user, &c, &self.vantage(kbr, now))
        {
            return Err(AccountsError::BadAnswer(e.to_string()));
        }
        let fits = match (&p.ask, &c.entry.change) {
            (
                Ask::Debit {
                    ids,
                    binding,
                    bytes,
                    ..
                },
                Change::Debit(d),
            ) => d.ids == *ids && d.binding == *binding && d.bytes == *bytes,
            (Ask::Credit, Change::Credit { .. }) | (Ask::Balance, _) => true,
            _ => false,
        };
        if !fits {
            return bad("an entry for another change");
        }
        Ok(Some(c))
    }

    // ---- the proposer's side ----

    fn on_request(&mut self, kbr: &mut dyn Kbr, now: Time, user: PublicKey, w: Waiting) {
        let key = account_key(&user);
        let me = kbr.local_contact().id;
        // Secure routing hands the request to every manager; only the root proposes.
        if kbr.replica_set(&key, 1).first().map(|c| c.id) != Some(me) {
            return;
        }
        // A debit's grant and certificates are checked at once; a credit's proof needs the
        // log, so after phase 1 (`drive`).
        if let (Ask::Debit { .. }, Some(Warrant::Grant { grant, certs })) = (&w.ask, &w.warrant) {
            let debit = debit_of(&w.ask, self.unix(now));
            let r = self
                .grant_holds(self.unix(now), &user, grant)
                .and_then(|()| self.certs_hold(&user, certs, debit.as_ref()));
            if let Err(r) = r {
                self.stats.bad_grants += 1;
                send(kbr, w.client, &answer(w.req, Err(r)));
                return;
            }
        }
        let shaped = matches!(
            (&w.ask, &w.warrant),
            (Ask::Debit { .. }, Some(Warrant::Grant { .. }))
                | (Ask::Credit, Some(Warrant::Reclaimed { .. }))
                | (Ask::Balance, _)
        );
        if !shaped {
            let r = Refusal::Grant("no grant or proof given".into());
            send(kbr, w.client, &answer(w.req, Err(r)));
            return;
        }
        let p = self.proposers.entry(user).or_insert_with(|| Proposer {
            ballot: Ballot::default(),
            seen: Ballot::default(),
            phase: Phase::Stalled,
            queue: VecDeque::new(),
            lens: BTreeMap::new(),
            since: now,
            retried: false,
        });
        if p.queue.len() >= MAX_QUEUED {
            send(kbr, w.client, &answer(w.req, Err(Refusal::Unavailable)));
            return;
        }
        // A re-sent request is queued once.
        if !p
            .queue
            .iter()
            .any(|q| q.req == w.req && q.client.id == w.client.id)
        {
            p.queue.push_back(w);
        }
        let balance = matches!(
            p.queue.back(),
            Some(Waiting {
                ask: Ask::Balance,
                ..
            })
        );
        match p.phase {
            // A balance is read after a phase 1 of its own: another proposer (a root that
            // changed and back) may have committed since this one last did.
            Phase::Ready if balance => self.prepare(kbr, now, user),
            Phase::Ready => self.drive(kbr, now, user),
            // A first request, or one after a stall: start a round now.
            Phase::Stalled => self.prepare(kbr, now, user),
            Phase::Preparing { .. } | Phase::Accepting { .. } => {}
        }
    }

    /// Whether `g` is `user`'s quota from a trusted broker, valid at `unix`.
    fn grant_holds(&self, unix: u64, user: &PublicKey, g: &Grant) -> Result<(), Refusal> {
        if g.body.grantee != Grantee::Quota(*user) {
            return Err(Refusal::Grant("the grant is not this user's quota".into()));
        }
        g.verify(&self.config.brokers, unix)
            .map_err(|e| Refusal::Grant(e.to_string()))
    }

    /// Whether `certs` are the owner's and certify what `debit` charges.
    fn certs_hold(
        &self,
        user: &PublicKey,
        certs: &[u8],
        debit: Option<&Debit>,
    ) -> Result<(), Refusal> {
        match debit {
            Some(d) if (self.config.inserted)(user, certs, d) => Ok(()),
            _ => Err(Refusal::Grant(
                "the certificates are not the owner's for this object, size and k".into(),
            )),
        }
    }

    /// Whether a credit's proof holds for a debit charged in this node's log.
    fn reclaim_holds(
        &self,
        kbr: &dyn Kbr,
        now: Time,
        user: &PublicKey,
        warrant: &Warrant,
    ) -> Result<Debit, Refusal> {
        let Warrant::Reclaimed { object, proof } = warrant else {
            return Err(Refusal::NoCredit("no proof".into()));
        };
        let charged = self.accounts.get(user).and_then(|a| a.charged(object));
        let Some(Change::Debit(d)) = charged.map(|c| &c.entry.change) else {
            return Err(Refusal::NoCredit(format!(
                "nothing is charged for {}",
                object.short()
            )));
        };
        let at = self.vantage(kbr, now);
        if (self.config.reclaimed)(user, object, proof, &at, (d.replicas, d.date)) {
            Ok(d.clone())
        } else {
            Err(Refusal::NoCredit(
                "the reclaim receipts do not prove this insert's copies were released".into(),
            ))
        }
    }

    /// The managers of `user`'s account as this node sees them.
    fn managers(&self, kbr: &dyn Kbr, user: &PublicKey) -> Vec<Contact> {
        kbr.replica_set(&account_key(user), self.m())
    }

    /// Whether an answer from `from` under `ballot` counts toward the round under way for
    /// `user`: from a manager this node counts, under the round's ballot.
    fn counts(&self, kbr: &dyn Kbr, user: &PublicKey, from: Id, ballot: Ballot) -> bool {
        self.proposers.get(user).is_some_and(|p| p.ballot == ballot)
            && self.managers(kbr, user).iter().any(|c| c.id == from)
    }

    /// Starts phase 1 under a ballot above every one seen.
    fn prepare(&mut self, kbr: &mut dyn Kbr, now: Time, user: PublicKey) {
        let me = kbr.local_contact().id;
        let have = self.accounts.get(&user).map_or(0, Account::len);
        let managers = self.managers(kbr, &user);
        // The round under way ends (its client goes back to the head of the queue).
        self.stall(now, &user, Ballot::default());
        let Some(p) = self.proposers.get_mut(&user) else {
            return;
        };
        let Some(ballot) = Ballot::above(p.seen.max(p.ballot), me) else {
            return; // rounds used up by a faulty manager: stalled for good
        };
        if p.ballot != Ballot::default() {
            self.stats.rounds += 1;
        }
        p.ballot = ballot;
        p.phase = Phase::Preparing {
            promises: BTreeMap::new(),
            nacks: Vec::new(),
        };
        for c in managers {
            send(kbr, c, &AccountsMessage::Prepare { user, ballot, have });
        }
    }

    /// Stops the current round (refused, or rounds compete; an entry in flight for a client
    /// goes back to the head of the queue): a new one starts at the round time-out.
    fn stall(&mut self, now: Time, user: &PublicKey, seen: Ballot) {
        let Some(p) = self.proposers.get_mut(user) else {
            return;
        };
        p.seen = p.seen.max(seen);
        p.since = now;
        if let Phase::Accepting {
            for_client: Some(w),
            ..
        } = std::mem::replace(&mut p.phase, Phase::Stalled)
        {
            p.queue.push_front(w);
        }
    }

    fn on_promise(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        from: Id,
        user: PublicKey,
        (ballot, result): (Ballot, Result<Promised, Ballot>),
    ) {
        let m = self.m();
        if !self.counts(kbr, &user, from, ballot) {
            return;
        }
        let Some(p) = self.proposers.get_mut(&user) else {
            return;
        };
        let Phase::Preparing { promises, nacks } = &mut p.phase else {
            return;
        };
        let promised = match result {
            Ok(promised) => promised,
            Err(higher) => {
                nacks.push(higher);
                if nacks.len() > m - quorum(m) {
                    let higher = credible(nacks, m);
                    // A new proposer learns the ballot to beat from its first refusals: it
                    // tries once more at once, then waits.
                    let again = !p.retried;
                    p.retried = again;
                    self.stall(now, &user, higher);
                    if again {
                        self.prepare(kbr, now, user);
                    }
                }
                return;
            }
        };
        p.lens.insert(from, promised.len);
        promises.insert(from, promised);
        if promises.len() < quorum(m) {
            return;
        }
        let promises = std::mem::take(promises);
        p.retried = false;
        // Take the entries this node lacks, in order, from whoever has them.
        let at = Vantage {
            me: kbr.local_contact().id,
            gap: kbr.id_gap(),
            unix: self.unix(now),
            revoked: &self.revoked,
        };
        let electorate = &self.config.electorate;
        let account = self
            .accounts
            .entry(user)
            .or_insert_with(|| Account::new(user));
        let before = account.len();
        let mut entries: Vec<&Committed> = promises.values().flat_map(|p| &p.entries).collect();
        entries.sort_by_key(|c| c.entry.seq);
        for c in entries {
            let _ = account.learn(c.clone(), |c| electorate.verify(&user, c, &at));
        }
        let grew = account.len() > before;
        // A length counts as far as the promise's entries show it, or as claimed when they
        // fill a page (more follow): a made-up length alone cannot keep the proposer paging.
        let longest = promises
            .values()
            .map(|p| {
                if p.entries.len() >= PAGE {
                    p.len
                } else {
                    p.entries.last().map_or(0, |c| c.entry.seq)
                }
            })
            .max()
            .unwrap_or(0);
        let next = account.len() + 1;
        if longest >= next {
            // Behind the managers: a page at a time while the log grows; if it cannot (the
            // entries do not verify here), wait for the round time-out.
            if grew {
                self.prepare(kbr, now, user);
            } else {
                self.stall(now, &user, ballot);
            }
            return;
        }
        let carried = promises
            .values()
            .filter_map(|p| p.accepted.as_ref())
            .filter(|a| a.entry.seq == next)
            .max_by_key(|a| a.ballot)
            .cloned();
        if let Some(p) = self.proposers.get_mut(&user) {
            p.phase = Phase::Ready;
        }
        if let Some(a) = carried {
            // An entry some manager accepted may have been committed: it goes first.
            self.start_accept(kbr, now, user, (a.entry, a.warrant), None);
        } else {
            self.drive(kbr, now, user);
        }
    }

    /// Proposes the next queued request, if the proposer is prepared; answers balances and
    /// refusals from the log, which phase 1 brought up to date.
    fn drive(&mut self, kbr: &mut dyn Kbr, now: Time, user: PublicKey) {
        loop {
            let Some(p) = self.proposers.get_mut(&user) else {
                return;
            };
            if !matches!(p.phase, Phase::Ready) {
                return;
            }
            let Some(w) = p.queue.pop_front() else {
                return;
            };
            if w.deadline <= now {
                continue; // its client has given up
            }
            let unix = self.unix(now);
            if let Ask::Balance = w.ask {
                let head = self.accounts.get(&user).and_then(|a| a.head().cloned());
                send(kbr, w.client, &answer(w.req, Ok(head)));
                continue;
            }
            let account = self
                .accounts
                .entry(user)
                .or_insert_with(|| Account::new(user));
            let (change, limit) = match (&w.ask, &w.warrant) {
                (Ask::Debit { .. }, Some(Warrant::Grant { grant, .. })) => {
                    let Some(d) = debit_of(&w.ask, unix) else {
                        continue;
                    };
                    // An object charged already comes first (over quota or not, it is no new
                    // charge): the same content is answered with its charge, while that
                    // approval is still good; other content is a duplicate.
                    let charged = d.ids.iter().find_map(|id| account.charged(id)).cloned();
                    if let Some(c) = charged {
                        let reply = match &c.entry.change {
                            Change::Debit(old)
                                if old.binding == d.binding
                                    && old.ids == d.ids
                                    && old.expiry > unix + 60 =>
                            {
                                Ok(Some(c.clone()))
                            }
                            _ => Err(Refusal::Duplicate),
                        };
                        send(kbr, w.client, &answer(w.req, reply));
                        continue;
                    }
                    (Change::Debit(d), grant.body.bytes)
                }
                (Ask::Credit, Some(warrant @ Warrant::Reclaimed { .. })) => {
                    match self.reclaim_holds(kbr, now, &user, warrant) {
                        Ok(d) => (
                            Change::Credit {
                                object: d.object().unwrap_or(Id::ZERO),
                                bytes: d.bytes,
                            },
                            u64::MAX,
                        ),
                        Err(r) => {
                            send(kbr, w.client, &answer(w.req, Err(r)));
                            continue;
                        }
                    }
                }
                _ => continue,
            };
            let Some(account) = self.accounts.get(&user) else {
                return;
            };
            let head = account.head().map(|c| &c.entry);
            let entry = Entry::after(user, head, change, limit)
                .and_then(|e| account.check(&e, limit).map(|()| e));
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let refusal = refusal(account.balance(), &w, e);
                    if let Refusal::OverQuota { .. } = refusal {
                        self.stats.over_quota += 1;
                    }
                    send(kbr, w.client, &answer(w.req, Err(refusal)));
                    continue;
                }
            };
            let Some(warrant) = w.warrant.clone() else {
                continue;
            };
            self.start_accept(kbr, now, user, (entry, warrant), Some(w));
            return;
        }
    }

    fn start_accept(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        user: PublicKey,
        (entry, warrant): (Entry, Warrant),
        for_client: Option<Waiting>,
    ) {
        let managers = self.managers(kbr, &user);
        let Some(p) = self.proposers.get_mut(&user) else {
            return;
        };
        let ballot = p.ballot;
        p.since = now;
        let lens = p.lens.clone();
        p.phase = Phase::Accepting {
            entry: entry.clone(),
            votes: BTreeMap::new(),
            refused: 0,
            higher: Vec::new(),
            for_client,
        };
        let account = self.accounts.get(&user);
        for c in managers {
            let have = lens.get(&c.id).copied().unwrap_or(0);
            let catchup = account
                .map(|a| a.after(have).iter().take(PAGE).cloned().collect())
                .unwrap_or_default();
            send(
                kbr,
                c,
                &AccountsMessage::Accept {
                    user,
                    ballot,
                    entry: entry.clone(),
                    warrant: warrant.clone(),
                    catchup,
                },
            );
        }
    }

    fn on_accepted(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        from: Id,
        user: PublicKey,
        (ballot, seq, result): (Ballot, u64, Result<Vote, AcceptRefusal>),
    ) {
        let m = self.m();
        if !self.counts(kbr, &user, from, ballot) {
            return;
        }
        let Some(p) = self.proposers.get_mut(&user) else {
            return;
        };
        let Phase::Accepting {
            entry,
            votes,
            refused,
            higher,
            ..
        } = &mut p.phase
        else {
            return;
        };
        if entry.seq != seq {
            return;
        }
        match result {
            Ok(v) if v.manager.id() == from && v.ballot == ballot && v.signs(&entry.hash()) => {
                votes.insert(from, v);
            }
            // One manager's word does not stop a round (a faulty one would stop them all):
            // a refusal like the others.
            Err(AcceptRefusal::Promised(b)) => {
                higher.push(b);
                *refused += 1;
            }
            Err(AcceptRefusal::Behind(len)) => {
                // Its catch-up goes with the next round's accept.
                p.lens.insert(from, len);
                *refused += 1;
            }
            _ => *refused += 1,
        }
        let (refused, voted) = (*refused, votes.len());
        if refused > m - quorum(m) {
            let seen = credible(higher, m).max(ballot);
            self.stall(now, &user, seen);
            return;
        }
        if voted < quorum(m) {
            return;
        }
        let Phase::Accepting {
            entry,
            votes,
            for_client,
            ..
        } = std::mem::replace(&mut p.phase, Phase::Ready)
        else {
            return;
        };
        let committed = Committed {
            entry,
            ballot,
            votes: votes.into_values().collect(),
        };
        self.stats.committed += 1;
        // Into this node's own log first: the next entry is built on it.
        if let Some(account) = self.accounts.get_mut(&user) {
            let _ = account.learn(committed.clone(), |_| Ok(()));
        }
        for c in self.managers(kbr, &user) {
            send(
                kbr,
                c,
                &AccountsMessage::Commit {
                    committed: committed.clone(),
                },
            );
        }
        if let Some(w) = for_client {
            send(kbr, w.client, &answer(w.req, Ok(Some(committed))));
        }
        self.drive(kbr, now, user);
    }

    // ---- the manager's (acceptor's) side ----

    /// Whether `from` may propose for `user`'s account to this node: both plausibly among its
    /// m closest. Makes room for the account if it is new.
    fn may_manage(&mut self, kbr: &dyn Kbr, now: Time, from: Id, user: &PublicKey) -> bool {
        let account = account_key(user);
        let at = self.vantage(kbr, now);
        let plausible =
            near(&account, &from, self.m(), &at) && near(&account, &at.me, self.m(), &at);
        if !plausible {
            return false;
        }
        if !self.accounts.contains_key(user) {
            if self.accounts.len() >= MAX_ACCOUNTS {
                return false;
            }
            self.accounts.insert(*user, Account::new(*user));
        }
        true
    }

    fn on_prepare(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        from: Contact,
        user: PublicKey,
        (ballot, have): (Ballot, u64),
    ) {
        if ballot.proposer != from.id || !self.may_manage(kbr, now, from.id, &user) {
            return;
        }
        let Some(account) = self.accounts.get_mut(&user) else {
            return;
        };
        let len = account.len();
        let entries: Vec<Committed> = account.after(have).iter().take(PAGE).cloned().collect();
        let result = match account.promise(ballot) {
            Ok(accepted) => Ok(Promised {
                len,
                entries,
                accepted: accepted.cloned(),
            }),
            Err(LedgerError::Promised(b)) => Err(b),
            Err(_) => return,
        };
        send(
            kbr,
            from,
            &AccountsMessage::Promise {
                user,
                ballot,
                result,
            },
        );
    }

    fn on_accept(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        from: Contact,
        user: PublicKey,
        (ballot, entry, warrant, catchup): (Ballot, Entry, Warrant, Vec<Committed>),
    ) {
        if ballot.proposer != from.id
            || entry.user != user
            || !self.may_manage(kbr, now, from.id, &user)
        {
            return;
        }
        let (me, gap, unix) = (kbr.local_contact().id, kbr.id_gap(), self.unix(now));
        self.learn_all(me, gap, unix, user, catchup);
        let seq = entry.seq;
        let len = self.accounts.get(&user).map_or(0, Account::len);
        if seq > len + 1 {
            let msg = accepted(user, ballot, seq, Err(AcceptRefusal::Behind(len)));
            send(kbr, from, &msg);
            return;
        }
        let limit = match self.warrant_holds(kbr, now, &user, &entry, &warrant) {
            Ok(limit) => limit,
            Err(r) => {
                let msg = accepted(
                    user,
                    ballot,
                    seq,
                    Err(AcceptRefusal::Invalid(format!("{r:?}"))),
                );
                send(kbr, from, &msg);
                return;
            }
        };
        let cert = self.config.cert.clone();
        let Some(account) = self.accounts.get_mut(&user) else {
            return;
        };
        let result = account
            .accept(&self.identity, cert, ballot, &entry, limit, warrant)
            .map_err(|e| match e {
                LedgerError::Promised(b) => AcceptRefusal::Promised(b),
                e => AcceptRefusal::Invalid(e.to_string()),
            });
        send(kbr, from, &accepted(user, ballot, seq, result));
    }

    /// Whether `warrant` justifies `entry`, and the limit it sets. A debit's grant is judged
    /// as of the debit's creation (its expiry less the approval's lifetime), so an entry
    /// carried forward to a later round is judged as when it was first proposed.
    fn warrant_holds(
        &self,
        kbr: &dyn Kbr,
        now: Time,
        user: &PublicKey,
        entry: &Entry,
        warrant: &Warrant,
    ) -> Result<u64, Refusal> {
        match (&entry.change, warrant) {
            (Change::Debit(d), Warrant::Grant { grant, certs }) => {
                let created = d
                    .expiry
                    .saturating_sub(APPROVAL_LIFETIME.as_micros() / 1_000_000);
                if created > self.unix(now) + CLOCK_SLACK {
                    return Err(Refusal::Grant("a debit created in the future".into()));
                }
                self.grant_holds(created, user, grant)?;
                self.certs_hold(user, certs, Some(d))?;
                Ok(grant.body.bytes)
            }
            (Change::Credit { object, .. }, w @ Warrant::Reclaimed { object: o, .. }) => {
                let debit = self.reclaim_holds(kbr, now, user, w)?;
                if debit.object() != Some(*object) || !debit.ids.contains(o) {
                    return Err(Refusal::NoCredit("the proof is for another object".into()));
                }
                Ok(u64::MAX)
            }
            _ => Err(Refusal::Grant("the warrant does not fit the change".into())),
        }
    }

    /// Takes committed entries into `user`'s log, in order, each checked.
    fn learn_all(
        &mut self,
        me: Id,
        gap: Option<f64>,
        unix: u64,
        user: PublicKey,
        cs: Vec<Committed>,
    ) {
        let at = Vantage {
            me,
            gap,
            unix,
            revoked: &self.revoked,
        };
        let electorate = &self.config.electorate;
        let Some(account) = self.accounts.get_mut(&user) else {
            return;
        };
        for c in cs {
            if account
                .learn(c, |c| electorate.verify(&user, c, &at))
                .is_err()
            {
                break;
            }
        }
    }
}

/// The debit a request asks for, created at `unix` (its approval expires a lifetime later).
fn debit_of(ask: &Ask, unix: u64) -> Option<Debit> {
    let Ask::Debit {
        ids,
        binding,
        bytes,
        replicas,
        date,
        nonce,
    } = ask
    else {
        return None;
    };
    Some(Debit {
        ids: ids.clone(),
        binding: *binding,
        bytes: *bytes,
        replicas: *replicas,
        date: *date,
        expiry: unix + APPROVAL_LIFETIME.as_micros() / 1_000_000,
        nonce: *nonce,
    })
}

/// What the client is told when its change cannot follow the log.
fn refusal(balance: u64, w: &Waiting, e: LedgerError) -> Refusal {
    match e {
        LedgerError::OverQuota { limit, .. } => Refusal::OverQuota {
            balance,
            limit,
            asked: match &w.ask {
                Ask::Debit { bytes, .. } => *bytes,
                _ => 0,
            },
        },
        LedgerError::AlreadyDebited { .. } => Refusal::Duplicate,
        LedgerError::NothingToCredit(_) => Refusal::NoCredit(e.to_string()),
        _ => Refusal::Unavailable,
    }
}

fn answer(req: u64, result: Result<Option<Committed>, Refusal>) -> AccountsMessage {
    AccountsMessage::Answer { req, result }
}

fn accepted(
    user: PublicKey,
    ballot: Ballot,
    seq: u64,
    result: Result<Vote, AcceptRefusal>,
) -> AccountsMessage {
    AccountsMessage::Accepted {
        user,
        ballot,
        seq,
        result,
    }
}

fn encode(m: &AccountsMessage) -> AppMessage {
    AppMessage {
        app: ACCOUNTS_APP,
        // Plain data always encodes.
        body: postcard::to_allocvec(m).unwrap_or_default(),
    }
}

fn send(kbr: &mut dyn Kbr, to: Contact, m: &AccountsMessage) {
    kbr.send_direct(to, encode(m));
}

/// The highest ballot that more than `m - quorum(m)` managers report promising, at or above
/// which a faulty minority cannot push the next round: the (m - q + 1)-th highest.
fn credible(ballots: &mut [Ballot], m: usize) -> Ballot {
    ballots.sort_by(|a, b| b.cmp(a));
    ballots.get(m - quorum(m)).copied().unwrap_or_default()
}

/// Up to half a round time-out, different for each proposer and round: competing proposers
/// retry out of step.
fn jitter(me: &Id, round: u64) -> Duration {
    let h = Id::hash_parts(&[me.as_bytes(), &round.to_le_bytes()]);
    let half = ROUND_TIMEOUT.as_micros() / 2;
    let v = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]));
    Duration::from_micros(v % half.max(1))
}

impl Service for Accounts {
    fn app_id(&self) -> AppId {
        ACCOUNTS_APP
    }

    fn deliver(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        _key: Id,
        msg: AppMessage,
        info: RouteInfo,
    ) {
        let Ok(m) = postcard::from_bytes::<AccountsMessage>(&msg.body) else {
            return; // a malformed message from a peer is dropped
        };
        // Only a request travels routed; every other message names its sender through
        // `info.origin`, which only an authenticated sender vouches for.
        let routable = matches!(m, AccountsMessage::Request { .. });
        if !routable && !info.via.authenticated() {
            return;
        }
        let from = info.origin;
        match m {
            AccountsMessage::Request {
                req,
                client,
                user,
                ask,
                warrant,
            } => {
                let w = Waiting {
                    req,
                    client,
                    ask,
                    warrant,
                    deadline: now + REQUEST_TIMEOUT,
                };
                self.on_request(kbr, now, user, w);
            }
            AccountsMessage::Answer { req, result } => {
                self.on_answer(kbr, now, from.id, req, result)
            }
            AccountsMessage::Prepare { user, ballot, have } => {
                self.on_prepare(kbr, now, from, user, (ballot, have))
            }
            AccountsMessage::Promise {
                user,
                ballot,
                result,
            } => self.on_promise(kbr, now, from.id, user, (ballot, result)),
            AccountsMessage::Accept {
                user,
                ballot,
                entry,
                warrant,
                catchup,
            } => self.on_accept(kbr, now, from, user, (ballot, entry, warrant, catchup)),
            AccountsMessage::Accepted {
                user,
                ballot,
                seq,
                result,
            } => self.on_accepted(kbr, now, from.id, user, (ballot, seq, result)),
            AccountsMessage::Commit { committed } => {
                let user = committed.entry.user;
                let (me, gap, unix) = (kbr.local_contact().id, kbr.id_gap(), self.unix(now));
                self.learn_all(me, gap, unix, user, vec![committed]);
            }
            AccountsMessage::Log { user, entries } => {
                if self.may_manage(kbr, now, from.id, &user) {
                    let (me, gap, unix) = (kbr.local_contact().id, kbr.id_gap(), self.unix(now));
                    self.learn_all(me, gap, unix, user, entries);
                }
            }
        }
    }

    /// The leaf set changed: each account's log goes to the nodes that have become its
    /// managers since this node last looked (each entry verified on arrival), so a log is not
    /// lost when its managers are replaced one by one with no write in between.
    fn update(&mut self, kbr: &mut dyn Kbr, _now: Time, _node: Contact, _joined: bool) {
        let m = self.m();
        let me = kbr.local_contact().id;
        for (user, account) in &self.accounts {
            if account.is_empty() {
                continue;
            }
            let managers: BTreeSet<Contact> =
                kbr.replica_set(&account_key(user), m).into_iter().collect();
            if !managers.iter().any(|c| c.id == me) {
                continue; // no longer a manager: the others hand the log on
            }
            let known = self.handed.entry(*user).or_default();
            for c in managers
                .iter()
                .filter(|c| c.id != me && !known.contains(&c.id))
            {
                for page in account.after(0).chunks(PAGE) {
                    let msg = AccountsMessage::Log {
                        user: *user,
                        entries: page.to_vec(),
                    };
                    send(kbr, *c, &msg);
                }
            }
            *known = managers.iter().map(|c| c.id).collect();
        }
    }

    fn next_deadline(&self) -> Option<Time> {
        let clients = self.pending.values().map(|p| p.deadline);
        let me = self.identity.id();
        let rounds = self.proposers.values().filter_map(|p| p.retry_at(&me));
        clients.chain(rounds).min()
    }

    fn handle_timeout(&mut self, kbr: &mut dyn Kbr, now: Time) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in expired {
            self.pending.remove(&req);
            self.answered.push_back(Answered {
                req: RequestId(req),
                result: Err(AccountsError::Timeout),
            });
        }
        let me = self.identity.id();
        // Requests whose clients gave up leave the queues; a round that is stuck, or a stall
        // with work left, starts over; a proposer idle for long is forgotten (its next request
        // costs one more round).
        self.proposers.retain(|_, p| {
            let idle = matches!(p.phase, Phase::Ready | Phase::Stalled) && p.queue.is_empty();
            !(idle && p.since + IDLE_PROPOSER <= now)
        });
        let mut stuck = Vec::new();
        for (user, p) in self.proposers.iter_mut() {
            p.queue.retain(|w| w.deadline > now);
            if p.retry_at(&me).is_some_and(|t| t <= now) {
                stuck.push(*user);
            }
        }
        for user in stuck {
            self.prepare(kbr, now, user);
        }
    }
}
