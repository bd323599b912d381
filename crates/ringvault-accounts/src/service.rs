//! The accounts service on the KBR API: clients ask a user's account managers to charge an
//! insert or give back a reclaimed object; the manager closest to the account key proposes the
//! change and the managers agree on it (`ledger.rs`); the client gets the committed entry,
//! which is the approval storage nodes check.

use std::collections::{BTreeMap, VecDeque};

use ringvault_overlay::{AppId, AppMessage, Kbr, Redundancy, RouteInfo, Service};
use ringvault_types::{
    Contact, Duration, Grant, Grantee, Id, Identity, NodeCertificate, PublicKey, RevocationList,
    Time,
};

use crate::approval::{account_key, Electorate, Vantage};
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
/// A proposer that has not got a majority of promises or votes after this tries a higher
/// ballot (managers died, or another proposer competes).
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(1);
/// Entries a promise carries at most: a proposer further behind asks again.
const PAGE: usize = 64;
/// Requests a proposer queues per user, and clients wait for, at most.
const MAX_QUEUED: usize = 256;

/// Checks the proof that a reclaimed object's copies were released: `(user, object, proof,
/// vantage, replicas)`. Given by the node that composes the services (the storage layer knows
/// its receipts).
pub type ReclaimCheck = Box<dyn Fn(&PublicKey, &Id, &[u8], &Vantage<'_>, u8) -> bool + Send>;

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
    /// Bytes granted, as the managers read the grant (0 if unknown).
    pub limit: u64,
}

/// What a manager counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountsStats {
    /// Entries this node committed as proposer.
    pub committed: u64,
    /// Requests refused as over quota.
    pub over_quota: u64,
    /// Grants refused (forged, expired, another user's, unknown broker).
    pub bad_grants: u64,
    /// Rounds restarted under a higher ballot.
    pub rounds: u64,
}

struct Waiting {
    req: u64,
    client: Contact,
    ask: Ask,
    warrant: Option<Warrant>,
}

// One per account a node proposes for; boxing the entry buys nothing.
#[allow(clippy::large_enum_variant)]
enum Phase {
    Preparing {
        promises: BTreeMap<Id, Promised>,
        nacks: usize,
    },
    Ready,
    Accepting {
        entry: Entry,
        warrant: Warrant,
        votes: BTreeMap<Id, Vote>,
        refused: usize,
        /// The client it answers; none for an entry carried forward from an older ballot.
        for_client: Option<Waiting>,
    },
}

struct Proposer {
    ballot: Ballot,
    phase: Phase,
    queue: VecDeque<Waiting>,
    /// Managers' log lengths, as their promises said.
    lens: BTreeMap<Id, u64>,
    since: Time,
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

    /// Asks `user`'s managers to charge an insert, justified by `grant`.
    #[allow(clippy::too_many_arguments)]
    pub fn debit(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        user: PublicKey,
        grant: Grant,
        ids: Vec<Id>,
        binding: Id,
        (size, replicas): (u64, u8),
        nonce: u64,
    ) -> Result<RequestId, AccountsError> {
        let ask = Ask::Debit {
            ids,
            binding,
            bytes: size.saturating_mul(u64::from(replicas)),
            replicas,
            nonce,
        };
        self.request(kbr, now, user, ask, Some(Warrant::Grant(grant)))
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
            let m = u8::try_from(self.config.electorate.m).unwrap_or(u8::MAX);
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
        req: u64,
        result: Result<Option<Committed>, Refusal>,
        limit: u64,
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
            Err(r) => Err(match r {
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
            }),
        };
        self.pending.remove(&req);
        self.answered.push_back(Answered {
            req: RequestId(req),
            result,
            limit,
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
        if let Err(r) = self.check_warrant(kbr, now, &user, &w) {
            let limit = self.limit_of(&w);
            send(kbr, w.client, &answer(w.req, Err(r), limit));
            return;
        }
        if let Ask::Balance = w.ask {
            let head = self.accounts.get(&user).and_then(|a| a.head().cloned());
            send(kbr, w.client, &answer(w.req, Ok(head), 0));
            return;
        }
        let p = self.proposers.entry(user).or_insert_with(|| Proposer {
            ballot: Ballot::default(),
            phase: Phase::Ready,
            queue: VecDeque::new(),
            lens: BTreeMap::new(),
            since: now,
        });
        if p.queue.len() >= MAX_QUEUED {
            send(kbr, w.client, &answer(w.req, Err(Refusal::Unavailable), 0));
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
        if p.ballot == Ballot::default() {
            self.prepare(kbr, now, user, Ballot::default());
        } else {
            self.drive(kbr, now, user);
        }
    }

    fn limit_of(&self, w: &Waiting) -> u64 {
        match &w.warrant {
            Some(Warrant::Grant(g)) => g.body.bytes,
            _ => 0,
        }
    }

    /// Whether a request's warrant justifies it: a debit's grant is the user's, from a
    /// trusted broker, valid now; a credit's proof holds.
    fn check_warrant(
        &mut self,
        kbr: &dyn Kbr,
        now: Time,
        user: &PublicKey,
        w: &Waiting,
    ) -> Result<(), Refusal> {
        match (&w.ask, &w.warrant) {
            (Ask::Balance, _) => Ok(()),
            (Ask::Debit { .. }, Some(Warrant::Grant(g))) => {
                let r = self.grant_holds(now, user, g);
                if r.is_err() {
                    self.stats.bad_grants += 1;
                }
                r
            }
            (Ask::Credit, Some(warrant @ Warrant::Reclaimed { .. })) => {
                self.reclaim_holds(kbr, now, user, warrant)
            }
            _ => Err(Refusal::Grant("no grant or proof given".into())),
        }
    }

    fn grant_holds(&self, now: Time, user: &PublicKey, g: &Grant) -> Result<(), Refusal> {
        if g.body.grantee != Grantee::Quota(*user) {
            return Err(Refusal::Grant("the grant is not this user's quota".into()));
        }
        g.verify(&self.config.brokers, self.unix(now))
            .map_err(|e| Refusal::Grant(e.to_string()))
    }

    /// Whether a credit's proof holds for a debit charged in this node's log.
    fn reclaim_holds(
        &self,
        kbr: &dyn Kbr,
        now: Time,
        user: &PublicKey,
        warrant: &Warrant,
    ) -> Result<(), Refusal> {
        let Warrant::Reclaimed { object, proof } = warrant else {
            return Err(Refusal::NoCredit("no proof".into()));
        };
        let Some(debit) = self.accounts.get(user).and_then(|a| a.charged(object)) else {
            return Err(Refusal::NoCredit(format!(
                "nothing is charged for {}",
                object.short()
            )));
        };
        let Change::Debit(d) = &debit.entry.change else {
            return Err(Refusal::NoCredit("not a debit".into()));
        };
        if (self.config.reclaimed)(user, object, proof, &self.vantage(kbr, now), d.replicas) {
            Ok(())
        } else {
            Err(Refusal::NoCredit(
                "the reclaim receipts do not prove the copies were released".into(),
            ))
        }
    }

    /// The managers of `user`'s account as this node sees them.
    fn managers(&self, kbr: &dyn Kbr, user: &PublicKey) -> Vec<Contact> {
        kbr.replica_set(&account_key(user), self.config.electorate.m)
    }

    fn prepare(&mut self, kbr: &mut dyn Kbr, now: Time, user: PublicKey, seen: Ballot) {
        let me = kbr.local_contact().id;
        let have = self.accounts.get(&user).map_or(0, Account::len);
        let managers = self.managers(kbr, &user);
        let Some(p) = self.proposers.get_mut(&user) else {
            return;
        };
        let ballot = Ballot::above(seen.max(p.ballot), me);
        if p.ballot != Ballot::default() {
            self.stats.rounds += 1;
        }
        p.ballot = ballot;
        // An entry in flight for a client goes back to the head of the queue.
        if let Phase::Accepting {
            for_client: Some(w),
            ..
        } = std::mem::replace(
            &mut p.phase,
            Phase::Preparing {
                promises: BTreeMap::new(),
                nacks: 0,
            },
        ) {
            p.queue.push_front(w);
        }
        p.since = now;
        for c in managers {
            send(kbr, c, &AccountsMessage::Prepare { user, ballot, have });
        }
    }

    fn on_promise(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        from: Id,
        user: PublicKey,
        ballot: Ballot,
        result: Result<Promised, Ballot>,
    ) {
        let m = self.config.electorate.m;
        let Some(p) = self.proposers.get_mut(&user) else {
            return;
        };
        if p.ballot != ballot {
            return;
        }
        let Phase::Preparing { promises, nacks } = &mut p.phase else {
            return;
        };
        let promised = match result {
            Ok(promised) => promised,
            Err(higher) => {
                *nacks += 1;
                if *nacks > m - quorum(m) {
                    self.prepare(kbr, now, user, higher);
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
        // Take the entries this node lacks, in order, from whoever has them.
        let vantage_gap = kbr.id_gap();
        let me = kbr.local_contact().id;
        let unix = self.unix(now);
        let account = self
            .accounts
            .entry(user)
            .or_insert_with(|| Account::new(user));
        let at = Vantage {
            me,
            gap: vantage_gap,
            unix,
            revoked: &self.revoked,
        };
        let electorate = &self.config.electorate;
        let mut entries: Vec<&Committed> = promises.values().flat_map(|p| &p.entries).collect();
        entries.sort_by_key(|c| c.entry.seq);
        for c in entries {
            let _ = account.learn(c.clone(), |c| electorate.verify(&user, c, &at));
        }
        let longest = promises.values().map(|p| p.len).max().unwrap_or(0);
        if longest > account.len() {
            // A page at a time: ask again from where the log now ends.
            let seen = ballot;
            let p = self.proposers.get_mut(&user).expect("present above");
            p.ballot = Ballot::default();
            self.prepare(kbr, now, user, seen);
            return;
        }
        let next = account.len() + 1;
        let carried = promises
            .values()
            .filter_map(|p| p.accepted.as_ref())
            .filter(|a| a.entry.seq == next)
            .max_by_key(|a| a.ballot)
            .cloned();
        let p = self.proposers.get_mut(&user).expect("present above");
        p.phase = Phase::Ready;
        if let Some(a) = carried {
            // An entry some manager accepted may have been committed: it goes first.
            self.start_accept(kbr, now, user, a.entry, a.warrant, None);
        } else {
            self.drive(kbr, now, user);
        }
    }

    /// Proposes the next queued request, if the proposer is ready.
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
            let account = self
                .accounts
                .entry(user)
                .or_insert_with(|| Account::new(user));
            let limit = match &w.warrant {
                Some(Warrant::Grant(g)) => g.body.bytes,
                _ => u64::MAX,
            };
            let change = match (&w.ask, &w.warrant) {
                (
                    Ask::Debit {
                        ids,
                        binding,
                        bytes,
                        replicas,
                        nonce,
                    },
                    _,
                ) => Change::Debit(Debit {
                    ids: ids.clone(),
                    binding: *binding,
                    bytes: *bytes,
                    replicas: *replicas,
                    expiry: self.config.unix_at_zero
                        + (now + APPROVAL_LIFETIME).as_micros() / 1_000_000,
                    nonce: *nonce,
                }),
                (Ask::Credit, Some(Warrant::Reclaimed { object, .. })) => {
                    match account.charged(object).map(|c| &c.entry.change) {
                        Some(Change::Debit(d)) => Change::Credit {
                            object: d.object().unwrap_or(*object),
                            bytes: d.bytes,
                        },
                        _ => {
                            let r = Refusal::NoCredit("nothing is charged for it".into());
                            send(kbr, w.client, &answer(w.req, Err(r), 0));
                            continue;
                        }
                    }
                }
                _ => continue,
            };
            // An object charged already comes first (over quota or not, it is no new charge).
            let charged = match &change {
                Change::Debit(d) => d.ids.iter().find_map(|id| account.charged(id)),
                Change::Credit { .. } => None,
            };
            let head = account.head().map(|c| &c.entry);
            let entry = match charged {
                Some(c) => Err(LedgerError::AlreadyDebited { seq: c.entry.seq }),
                None => Entry::after(user, head, change, limit)
                    .and_then(|e| account.check(&e, limit).map(|()| e)),
            };
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let refusal = self.refusal(&user, &w, e);
                    if let Refusal::OverQuota { .. } = refusal {
                        self.stats.over_quota += 1;
                    }
                    // An object charged already for the same content: the charge is the
                    // approval (a client that re-sends, or stores the same object again).
                    if let Ok(c) = refusal_or_approval(&refusal, &self.accounts, &user, &w) {
                        send(kbr, w.client, &answer(w.req, Ok(Some(c.clone())), limit));
                    } else {
                        send(kbr, w.client, &answer(w.req, Err(refusal), limit));
                    }
                    continue;
                }
            };
            let warrant = w.warrant.clone().unwrap_or(Warrant::Reclaimed {
                object: Id::ZERO,
                proof: Vec::new(),
            });
            self.start_accept(kbr, now, user, entry, warrant, Some(w));
            return;
        }
    }

    fn refusal(&self, user: &PublicKey, w: &Waiting, e: LedgerError) -> Refusal {
        let balance = self.accounts.get(user).map_or(0, Account::balance);
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

    fn start_accept(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        user: PublicKey,
        entry: Entry,
        warrant: Warrant,
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
            warrant: warrant.clone(),
            votes: BTreeMap::new(),
            refused: 0,
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

    #[allow(clippy::too_many_arguments)]
    fn on_accepted(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        from: Id,
        user: PublicKey,
        ballot: Ballot,
        seq: u64,
        result: Result<Vote, AcceptRefusal>,
    ) {
        let m = self.config.electorate.m;
        let Some(p) = self.proposers.get_mut(&user) else {
            return;
        };
        if p.ballot != ballot {
            return;
        }
        let Phase::Accepting {
            entry,
            votes,
            refused,
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
            Err(AcceptRefusal::Promised(higher)) => {
                self.prepare(kbr, now, user, higher);
                return;
            }
            Err(AcceptRefusal::Behind(len)) => {
                // Its catch-up is sent again with the next round.
                p.lens.insert(from, len);
                *refused += 1;
            }
            _ => *refused += 1,
        }
        let Phase::Accepting { votes, refused, .. } = &p.phase else {
            return;
        };
        if *refused > m - quorum(m) {
            self.prepare(kbr, now, user, ballot);
            return;
        }
        if votes.len() < quorum(m) {
            return;
        }
        let Phase::Accepting {
            entry,
            votes,
            for_client,
            warrant,
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
            let limit = match warrant {
                Warrant::Grant(g) => g.body.bytes,
                Warrant::Reclaimed { .. } => 0,
            };
            send(kbr, w.client, &answer(w.req, Ok(Some(committed)), limit));
        }
        self.drive(kbr, now, user);
    }

    // ---- the manager's (acceptor's) side ----

    fn on_prepare(
        &mut self,
        kbr: &mut dyn Kbr,
        from: Contact,
        user: PublicKey,
        ballot: Ballot,
        have: u64,
    ) {
        if ballot.proposer != from.id {
            return;
        }
        let account = self
            .accounts
            .entry(user)
            .or_insert_with(|| Account::new(user));
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

    #[allow(clippy::too_many_arguments)]
    fn on_accept(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        from: Contact,
        user: PublicKey,
        ballot: Ballot,
        entry: Entry,
        warrant: Warrant,
        catchup: Vec<Committed>,
    ) {
        if ballot.proposer != from.id || entry.user != user {
            return;
        }
        let (me, gap, unix) = (kbr.local_contact().id, kbr.id_gap(), self.unix(now));
        self.learn_all(me, gap, unix, user, catchup);
        let seq = entry.seq;
        let limit = match &warrant {
            Warrant::Grant(g) => {
                if let Err(r) = self.grant_holds(now, &user, g) {
                    self.reply_accepted(kbr, from, user, ballot, seq, Err(invalid(r)));
                    return;
                }
                g.body.bytes
            }
            Warrant::Reclaimed { .. } => {
                if let Err(r) = self.reclaim_holds(kbr, now, &user, &warrant) {
                    self.reply_accepted(kbr, from, user, ballot, seq, Err(invalid(r)));
                    return;
                }
                u64::MAX
            }
        };
        let cert = self.config.cert.clone();
        let account = self
            .accounts
            .entry(user)
            .or_insert_with(|| Account::new(user));
        let result = if seq > account.len() + 1 {
            Err(AcceptRefusal::Behind(account.len()))
        } else {
            account
                .accept(&self.identity, cert, ballot, &entry, limit, warrant)
                .map_err(|e| match e {
                    LedgerError::Promised(b) => AcceptRefusal::Promised(b),
                    e => AcceptRefusal::Invalid(e.to_string()),
                })
        };
        self.reply_accepted(kbr, from, user, ballot, seq, result);
    }

    fn reply_accepted(
        &self,
        kbr: &mut dyn Kbr,
        to: Contact,
        user: PublicKey,
        ballot: Ballot,
        seq: u64,
        result: Result<Vote, AcceptRefusal>,
    ) {
        let msg = AccountsMessage::Accepted {
            user,
            ballot,
            seq,
            result,
        };
        send(kbr, to, &msg);
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
        let account = self
            .accounts
            .entry(user)
            .or_insert_with(|| Account::new(user));
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

fn invalid(r: Refusal) -> AcceptRefusal {
    AcceptRefusal::Invalid(format!("{r:?}"))
}

/// For a debit of an object charged already: the charge, when it is for the same content
/// (the client may use it as its approval).
fn refusal_or_approval<'a>(
    refusal: &Refusal,
    accounts: &'a BTreeMap<PublicKey, Account>,
    user: &PublicKey,
    w: &Waiting,
) -> Result<&'a Committed, ()> {
    let (Refusal::Duplicate, Ask::Debit { ids, binding, .. }) = (refusal, &w.ask) else {
        return Err(());
    };
    let account = accounts.get(user).ok_or(())?;
    let c = ids.iter().find_map(|id| account.charged(id)).ok_or(())?;
    match &c.entry.change {
        Change::Debit(d) if d.binding == *binding && d.ids == *ids => Ok(c),
        _ => Err(()),
    }
}

fn answer(req: u64, result: Result<Option<Committed>, Refusal>, limit: u64) -> AccountsMessage {
    AccountsMessage::Answer { req, result, limit }
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
                };
                self.on_request(kbr, now, user, w);
            }
            AccountsMessage::Answer { req, result, limit } => {
                self.on_answer(kbr, now, req, result, limit)
            }
            AccountsMessage::Prepare { user, ballot, have } => {
                self.on_prepare(kbr, from, user, ballot, have)
            }
            AccountsMessage::Promise {
                user,
                ballot,
                result,
            } => self.on_promise(kbr, now, from.id, user, ballot, result),
            AccountsMessage::Accept {
                user,
                ballot,
                entry,
                warrant,
                catchup,
            } => self.on_accept(kbr, now, from, user, ballot, entry, warrant, catchup),
            AccountsMessage::Accepted {
                user,
                ballot,
                seq,
                result,
            } => self.on_accepted(kbr, now, from.id, user, ballot, seq, result),
            AccountsMessage::Commit { committed } => {
                let user = committed.entry.user;
                let (me, gap, unix) = (kbr.local_contact().id, kbr.id_gap(), self.unix(now));
                self.learn_all(me, gap, unix, user, vec![committed]);
            }
        }
    }

    fn next_deadline(&self) -> Option<Time> {
        let clients = self.pending.values().map(|p| p.deadline);
        let rounds = self
            .proposers
            .values()
            .filter(|p| !matches!(p.phase, Phase::Ready) || !p.queue.is_empty())
            .map(|p| p.since + ROUND_TIMEOUT);
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
                limit: 0,
            });
        }
        let stuck: Vec<(PublicKey, Ballot)> = self
            .proposers
            .iter()
            .filter(|(_, p)| {
                (!matches!(p.phase, Phase::Ready) || !p.queue.is_empty())
                    && p.since + ROUND_TIMEOUT <= now
            })
            .map(|(u, p)| (*u, p.ballot))
            .collect();
        for (user, ballot) in stuck {
            self.prepare(kbr, now, user, ballot);
        }
    }
}
