//! The ledger's agreement against a model of competing proposers: prepares, promises,
//! accepts, votes and commits delivered in any order, proposers that time out and start over
//! under higher ballots at any moment. Whatever the schedule, at most one entry is committed
//! per sequence number, committed entries form one chain, and the balance never passes the
//! grant. With managers that break their promises (the negative control) the checker sees two
//! entries committed at one sequence number.

use std::collections::BTreeMap;

use proptest::prelude::*;
use ringvault_types::{Grant, Grantee, Id, Identity, RevocationList};

use crate::approval::{binding, check, ApprovalError, Electorate, Insert, Vantage};
use crate::{quorum, Account, Ballot, Change, Committed, Debit, Entry, LedgerError, Vote, Warrant};

fn user_key() -> Identity {
    Identity::from_secret_bytes([200; 32])
}

fn warrant(limit: u64) -> Warrant {
    let broker = Identity::from_secret_bytes([201; 32]);
    Warrant::Grant {
        grant: Grant::issue(
            &broker,
            Grantee::Quota(user_key().public_key()),
            limit,
            (0, u64::MAX),
            1,
        ),
        certs: Vec::new(),
    }
}

fn debit(tag: u64, bytes: u64) -> Change {
    Change::Debit(Debit {
        ids: vec![Id::hash(&tag.to_le_bytes())],
        binding: Id::hash(b"content"),
        bytes,
        replicas: 3,
        date: 0,
        expiry: u64::MAX,
        nonce: tag,
    })
}

enum Msg {
    Prepare {
        p: usize,
        m: usize,
        ballot: Ballot,
    },
    Promise {
        p: usize,
        ballot: Ballot,
        log: Vec<Committed>,
        accepted: Option<(Ballot, Entry)>,
        ok: bool,
    },
    Accept {
        p: usize,
        m: usize,
        ballot: Ballot,
        entry: Entry,
    },
    Voted {
        p: usize,
        ballot: Ballot,
        vote: Option<Vote>,
    },
    Commit {
        m: usize,
        c: Committed,
    },
}

enum Phase {
    Idle,
    Preparing {
        promises: usize,
        /// Every accepted entry the promises reported.
        accepted: Vec<(Ballot, Entry)>,
    },
    Accepting {
        entry: Entry,
        votes: Vec<Vote>,
        mine: bool,
    },
}

struct Proposer {
    id: Id,
    ballot: Ballot,
    log: Account,
    phase: Phase,
    /// Debits still to commit: (tag, bytes).
    queue: Vec<(u64, u64)>,
}

struct Model {
    limit: u64,
    managers: Vec<(Identity, Account)>,
    proposers: Vec<Proposer>,
    flight: Vec<Msg>,
    committed: BTreeMap<u64, Vec<Committed>>,
    /// Managers break their promises (the negative control).
    faithless: bool,
}

fn any_vote(_: &Vote) -> bool {
    true
}

impl Model {
    fn new(m: usize, proposers: usize, limit: u64, debits: &[u64]) -> Self {
        let user = user_key().public_key();
        let managers = (0..m)
            .map(|i| {
                (
                    Identity::from_secret_bytes([i as u8 + 1; 32]),
                    Account::new(user),
                )
            })
            .collect();
        let proposers = (0..proposers)
            .map(|p| Proposer {
                id: Id::hash(&[p as u8]),
                ballot: Ballot::default(),
                log: Account::new(user),
                phase: Phase::Idle,
                queue: debits
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % proposers == p)
                    .map(|(i, &b)| (i as u64, b))
                    .collect(),
            })
            .collect();
        Model {
            limit,
            managers,
            proposers,
            flight: Vec::new(),
            committed: BTreeMap::new(),
            faithless: false,
        }
    }

    fn m(&self) -> usize {
        self.managers.len()
    }

    /// Takes step `choice` among those possible now (deliver a message, or a proposer with
    /// work times out and prepares a higher ballot); false when nothing is left to do.
    fn step(&mut self, choice: usize) -> bool {
        let restartable: Vec<usize> = (0..self.proposers.len())
            .filter(|&p| {
                let pr = &self.proposers[p];
                !pr.queue.is_empty() || !matches!(pr.phase, Phase::Idle)
            })
            .collect();
        let n = restartable.len() + self.flight.len();
        if n == 0 {
            return false;
        }
        let pick = choice % n;
        if pick < restartable.len() {
            self.prepare(restartable[pick]);
        } else {
            let msg = self.flight.swap_remove(pick - restartable.len());
            self.deliver(msg);
        }
        true
    }

    fn prepare(&mut self, p: usize) {
        let highest = self
            .proposers
            .iter()
            .map(|p| p.ballot)
            .max()
            .unwrap_or_default();
        let pr = &mut self.proposers[p];
        // Sometimes below another proposer's ballot: its promises are then refused.
        pr.ballot = Ballot::above(
            pr.ballot.max(Ballot {
                round: highest.round.saturating_sub(1),
                proposer: Id::ZERO,
            }),
            pr.id,
        )
        .expect("rounds stay small");
        pr.phase = Phase::Preparing {
            promises: 0,
            accepted: Vec::new(),
        };
        for m in 0..self.m() {
            self.flight.push(Msg::Prepare {
                p,
                m,
                ballot: self.proposers[p].ballot,
            });
        }
    }

    fn deliver(&mut self, msg: Msg) {
        let q = quorum(self.m());
        match msg {
            Msg::Prepare { p, m, ballot } => {
                let account = &mut self.managers[m].1;
                let log = account.after(0).to_vec();
                let (ok, accepted) = match account.promise(ballot) {
                    Ok(a) => (true, a.map(|a| (a.ballot, a.entry.clone()))),
                    Err(_) => (false, None),
                };
                self.flight.push(Msg::Promise {
                    p,
                    ballot,
                    log,
                    accepted,
                    ok,
                });
            }
            Msg::Promise {
                p,
                ballot,
                log,
                accepted,
                ok,
            } => {
                let pr = &mut self.proposers[p];
                if pr.ballot != ballot || !ok {
                    return;
                }
                for c in log {
                    let _ = pr.log.learn(c, |_| Ok(()));
                }
                let Phase::Preparing {
                    promises,
                    accepted: reported,
                } = &mut pr.phase
                else {
                    return;
                };
                *promises += 1;
                reported.extend(accepted);
                if *promises == q {
                    // As the service does: the highest ballot among the entries accepted for
                    // the next sequence number (a higher ballot's entry for an earlier one,
                    // from a manager behind, must not hide it).
                    let next = pr.log.len() + 1;
                    let carried = std::mem::take(reported)
                        .into_iter()
                        .filter(|(_, e)| e.seq == next)
                        .max_by_key(|(b, _)| *b);
                    match carried {
                        Some((_, entry)) => self.start_accept(p, entry, false),
                        None => self.propose_next(p),
                    }
                }
            }
            Msg::Accept {
                p,
                m,
                ballot,
                entry,
            } => {
                let limit = self.limit;
                let faithless = self.faithless;
                let (me, account) = &mut self.managers[m];
                if faithless {
                    account.forget_promises();
                }
                let vote = account
                    .accept(me, None, ballot, &entry, limit, warrant(limit))
                    .ok();
                self.flight.push(Msg::Voted { p, ballot, vote });
            }
            Msg::Voted { p, ballot, vote } => {
                let pr = &mut self.proposers[p];
                let Phase::Accepting { entry, votes, mine } = &mut pr.phase else {
                    return;
                };
                let Some(vote) = vote else {
                    return;
                };
                if pr.ballot != ballot || votes.iter().any(|v| v.manager == vote.manager) {
                    return;
                }
                votes.push(vote);
                if votes.len() < q {
                    return;
                }
                let c = Committed {
                    entry: entry.clone(),
                    ballot,
                    votes: votes.clone(),
                };
                let mine = *mine;
                self.committed
                    .entry(c.entry.seq)
                    .or_default()
                    .push(c.clone());
                let _ = pr.log.learn(c.clone(), |_| Ok(()));
                if mine {
                    let nonce = match &c.entry.change {
                        Change::Debit(d) => d.nonce,
                        Change::Credit { .. } => u64::MAX,
                    };
                    pr.queue.retain(|(tag, _)| *tag != nonce);
                }
                for m in 0..self.m() {
                    self.flight.push(Msg::Commit { m, c: c.clone() });
                }
                self.propose_next(p);
            }
            Msg::Commit { m, c } => {
                let _ = self.managers[m].1.learn(c, |_| Ok(()));
            }
        }
    }

    fn propose_next(&mut self, p: usize) {
        let limit = self.limit;
        let pr = &mut self.proposers[p];
        loop {
            let Some(&(tag, bytes)) = pr.queue.first() else {
                pr.phase = Phase::Idle;
                return;
            };
            let head = pr.log.head().map(|c| &c.entry);
            match Entry::after(pr.log.user(), head, debit(tag, bytes), limit) {
                Ok(entry) if pr.log.check(&entry, limit).is_ok() => {
                    self.start_accept(p, entry, true);
                    return;
                }
                // Over quota (refused to the client), or charged already by an entry a
                // competitor carried forward.
                _ => {
                    pr.queue.remove(0);
                }
            }
        }
    }

    fn start_accept(&mut self, p: usize, entry: Entry, mine: bool) {
        let ballot = self.proposers[p].ballot;
        for m in 0..self.m() {
            self.flight.push(Msg::Accept {
                p,
                m,
                ballot,
                entry: entry.clone(),
            });
        }
        self.proposers[p].phase = Phase::Accepting {
            entry,
            votes: Vec::new(),
            mine,
        };
    }
}

/// Checks what was committed: one entry per sequence number, a chain, within the grant.
/// Answers how many entries were committed.
fn check_committed(committed: &BTreeMap<u64, Vec<Committed>>, limit: u64) -> Result<u64, String> {
    let mut prev = Id::ZERO;
    for (seq, cs) in committed {
        let first = &cs[0].entry;
        if cs.iter().any(|c| c.entry != *first) {
            return Err(format!("two different entries committed at {seq}"));
        }
        if first.prev != prev && *seq > 1 && committed.contains_key(&(seq - 1)) {
            return Err(format!("entry {seq} does not follow entry {}", seq - 1));
        }
        if first.balance > limit {
            return Err(format!(
                "balance {} passes the grant {limit}",
                first.balance
            ));
        }
        prev = first.hash();
    }
    Ok(committed.len() as u64)
}

/// Runs `schedule` (then delivers what is left in order) and checks the outcome.
fn run(m: usize, proposers: usize, faithless: bool, schedule: &[usize]) -> Result<u64, String> {
    let limit = 100;
    let debits = [30, 30, 30, 30, 30, 30];
    let mut model = Model::new(m, proposers, limit, &debits);
    model.faithless = faithless;
    for p in 0..proposers {
        model.prepare(p);
    }
    for &c in schedule {
        if !model.step(c) {
            break;
        }
    }
    // Then the competition stops: every message is delivered in order, and each proposer
    // with work left in turn starts over alone (a stable leader), so all that fits commits.
    let drain = |model: &mut Model| {
        while !model.flight.is_empty() {
            let msg = model.flight.remove(0);
            model.deliver(msg);
        }
    };
    drain(&mut model);
    for _ in 0..3 {
        for p in 0..proposers {
            let pr = &model.proposers[p];
            if !pr.queue.is_empty() || !matches!(pr.phase, Phase::Idle) {
                model.prepare(p);
                drain(&mut model);
            }
        }
    }
    check_committed(&model.committed, limit)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn competing_proposers_commit_one_chain_within_the_grant(
        m in prop::sample::select(vec![3usize, 5, 7]),
        proposers in 1usize..4,
        schedule in prop::collection::vec(any::<usize>(), 0..400),
    ) {
        let r = run(m, proposers, false, &schedule);
        prop_assert!(r.is_ok(), "{r:?}");
    }
}

/// Seeded schedules: a simple generator so the negative control is reproducible.
fn schedules(faithless: bool, count: u64) -> (u64, Vec<String>) {
    let mut committed = 0;
    let mut violations = Vec::new();
    for seed in 0..count {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let schedule: Vec<usize> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as usize
            })
            .collect();
        match run(3, 3, faithless, &schedule) {
            Ok(n) => committed += n,
            Err(e) => violations.push(format!("seed {seed}: {e}")),
        }
    }
    (committed, violations)
}

#[test]
fn the_model_commits_writes_and_catches_managers_that_break_their_promises() {
    let (committed, violations) = schedules(false, 300);
    assert!(violations.is_empty(), "{violations:?}");
    // Three debits of 30 fit a grant of 100, and all three commit in every run: the model
    // makes progress, not just no harm.
    assert_eq!(committed, 300 * 3);
    let (_, violations) = schedules(true, 300);
    assert!(
        violations
            .iter()
            .any(|v| v.contains("two different entries")),
        "the checker missed managers that accept under any ballot"
    );
}

#[test]
fn a_grant_is_used_up_and_then_refused() {
    let me = Identity::from_secret_bytes([1; 32]);
    let user = user_key().public_key();
    let mut a = Account::new(user);
    let ballot = Ballot::above(Ballot::default(), me.id()).unwrap();
    let mut head: Option<Entry> = None;
    for tag in 0..3 {
        let e = Entry::after(user, head.as_ref(), debit(tag, 30), 100).unwrap();
        let v = a.accept(&me, None, ballot, &e, 100, warrant(100)).unwrap();
        let c = Committed {
            entry: e.clone(),
            ballot,
            votes: vec![v],
        };
        assert_eq!(a.learn(c, |c| c.verify(1, any_vote)), Ok(true));
        head = Some(e);
    }
    assert_eq!(a.balance(), 90);
    let over = Entry::after(user, head.as_ref(), debit(9, 30), 100);
    assert_eq!(
        over,
        Err(LedgerError::OverQuota {
            balance: 120,
            limit: 100
        })
    );
    // The same object twice is refused; giving one back frees its bytes, once.
    let again = Entry::after(user, head.as_ref(), debit(1, 5), 100).unwrap();
    assert!(matches!(
        a.check(&again, 100),
        Err(LedgerError::AlreadyDebited { seq: 2 })
    ));
    let object = Id::hash(&1u64.to_le_bytes());
    let credit = Change::Credit { object, bytes: 30 };
    let e = Entry::after(user, head.as_ref(), credit.clone(), 100).unwrap();
    let v = a.accept(&me, None, ballot, &e, 100, warrant(100)).unwrap();
    let c = Committed {
        entry: e.clone(),
        ballot,
        votes: vec![v],
    };
    a.learn(c, |c| c.verify(1, any_vote)).unwrap();
    assert_eq!(a.balance(), 60);
    let twice = Entry::after(user, Some(&e), credit, 100).unwrap();
    assert_eq!(
        a.check(&twice, 100),
        Err(LedgerError::NothingToCredit(object))
    );
}

#[test]
fn a_lower_ballot_is_refused_after_a_promise() {
    let me = Identity::from_secret_bytes([1; 32]);
    let user = user_key().public_key();
    let mut a = Account::new(user);
    let low = Ballot::above(Ballot::default(), Id::hash(b"a")).unwrap();
    let high = Ballot::above(low, Id::hash(b"b")).unwrap();
    a.promise(high).unwrap();
    assert_eq!(a.promise(low), Err(LedgerError::Promised(high)));
    let e = Entry::after(user, None, debit(0, 10), 100).unwrap();
    assert_eq!(
        a.accept(&me, None, low, &e, 100, warrant(100)),
        Err(LedgerError::Promised(high))
    );
    // What was accepted is reported to the next proposer.
    a.accept(&me, None, high, &e, 100, warrant(100)).unwrap();
    let top = Ballot::above(high, Id::hash(b"c")).unwrap();
    assert_eq!(a.promise(top).unwrap().map(|x| x.entry.clone()), Some(e));
}

/// Ids of managers near an account key: a ring of `n` evenly spread ids around it.
fn ring_vantage(revoked: &RevocationList) -> Vantage<'_> {
    Vantage {
        me: Id::ZERO,
        gap: Some(1.0 / 1000.0),
        unix: 1_000,
        revoked,
    }
}

#[test]
fn an_approval_must_fit_its_insert_and_come_from_plausible_managers() {
    let owner = user_key();
    let user = owner.public_key();
    let account = crate::account_key(&user);
    // Keys whose ids lie near the account key, as its managers' would: ground for the test
    // (a real ring's managers are whoever is closest).
    let electorate = Electorate { m: 3, ca: None };
    let revoked = RevocationList::empty();
    let at = ring_vantage(&revoked);
    let mut near = Vec::new();
    let mut far = Vec::new();
    for i in 0u32.. {
        let k = Identity::from_secret_bytes(*Id::hash(&i.to_le_bytes()).as_bytes());
        if crate::near(&account, &k.id(), 3, &at) {
            near.push(k);
        } else if far.len() < 3 {
            far.push(k);
        }
        if near.len() == 3 {
            break;
        }
    }
    let content_hash = [7u8; 32];
    let object = Id::hash(b"object");
    let change = Change::Debit(Debit {
        ids: vec![object],
        binding: binding(&content_hash, 10, 3),
        bytes: 30,
        replicas: 3,
        date: 0,
        expiry: 2_000,
        nonce: 1,
    });
    let entry = Entry::after(user, None, change, 100).unwrap();
    let ballot = Ballot::above(Ballot::default(), near[0].id()).unwrap();
    let sign = |keys: &[Identity]| Committed {
        entry: entry.clone(),
        ballot,
        votes: keys
            .iter()
            .map(|k| Vote::issue(k, None, &entry, ballot))
            .collect(),
    };
    let insert = Insert {
        id: object,
        owner: &user,
        content_hash: &content_hash,
        size: 10,
        replicas: 3,
    };
    let good = sign(&near[..2]);
    assert!(check(&electorate, &good, &insert, &at).is_ok());
    // Votes of made-up keys far from the account key: refused (the negative control is the
    // approval above, which the same check lets through).
    let forged = sign(&far[..3]);
    assert!(matches!(
        check(&electorate, &forged, &insert, &at),
        Err(ApprovalError::Votes(LedgerError::TooFewVotes {
            valid: 0,
            ..
        }))
    ));
    // One vote is not a majority of three.
    assert!(check(&electorate, &sign(&near[..1]), &insert, &at).is_err());
    // Another object, another size, or an expired approval.
    let other = Insert {
        id: Id::hash(b"another"),
        ..insert
    };
    assert_eq!(
        check(&electorate, &good, &other, &at),
        Err(ApprovalError::Mismatch)
    );
    let bigger = Insert { size: 11, ..insert };
    assert_eq!(
        check(&electorate, &good, &bigger, &at),
        Err(ApprovalError::Mismatch)
    );
    let later = Vantage { unix: 2_000, ..at };
    assert_eq!(
        check(&electorate, &good, &insert, &later),
        Err(ApprovalError::Expired(2_000))
    );
    // A vote changed after signing does not count.
    let mut tampered = good.clone();
    tampered.entry.balance = 1;
    assert!(check(&electorate, &tampered, &insert, &at).is_err());
    // In secure mode a vote needs a certificate from the CA.
    let secure = Electorate {
        m: 3,
        ca: Some(Identity::from_secret_bytes([9; 32]).public_key()),
    };
    assert!(check(&secure, &good, &insert, &at).is_err());
}

#[test]
fn a_manager_takes_no_ballot_far_above_its_promise() {
    let user = user_key().public_key();
    let mut a = Account::new(user);
    let far = Ballot {
        round: crate::MAX_ROUND,
        proposer: Id::hash(b"faulty"),
    };
    // A faulty proposer cannot push the rounds to the top in one message...
    assert_eq!(
        a.promise(far).map(|x| x.cloned()),
        Err(LedgerError::Foreign)
    );
    // ...while the next proposer's step above is taken (the control).
    let next = Ballot::above(Ballot::default(), Id::hash(b"correct")).unwrap();
    assert!(a.promise(next).is_ok());
    assert_eq!(a.promised(), next);
}
