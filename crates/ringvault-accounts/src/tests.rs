//! The ledger against a model of concurrent writers: proposals, votes, refusals and commits
//! delivered in any order. Whatever the order, at most one entry is committed per sequence
//! number, committed entries form one chain, and the balance never passes the grant. With
//! managers that vote twice (the negative control) the checker sees two entries committed at
//! one sequence number.

use proptest::prelude::*;
use ringvault_types::{Id, Identity, PublicKey};

use crate::{quorum, Account, Change, Committed, Entry, LedgerError, Vote};

/// What is in flight.
enum Msg {
    /// Client `c` asks manager `m` to vote for `entry`.
    Propose { c: usize, m: usize, entry: Entry },
    /// Manager's answer to client `c`: a vote for the entry with this hash, or a refusal with
    /// the manager's head.
    Answer {
        c: usize,
        hash: Id,
        vote: Result<Vote, Option<Committed>>,
    },
    /// A committed entry, to manager `m`.
    Learn { m: usize, committed: Committed },
}

enum State {
    Idle,
    Waiting {
        entry: Entry,
        votes: Vec<Vote>,
        refused: usize,
    },
    Done,
    Refused,
}

struct Client {
    bytes: u64,
    head: Option<Committed>,
    state: State,
    attempts: u32,
}

struct Model {
    user: PublicKey,
    limit: u64,
    managers: Vec<(Identity, Account)>,
    keys: Vec<PublicKey>,
    clients: Vec<Client>,
    flight: Vec<Msg>,
    committed: Vec<Committed>,
    /// Managers forget their votes (the negative control).
    forgetful: bool,
}

impl Model {
    fn new(m: usize, limit: u64, debits: &[u64]) -> Self {
        let user = Identity::from_secret_bytes([200; 32]).public_key();
        let managers: Vec<(Identity, Account)> = (0..m)
            .map(|i| {
                (
                    Identity::from_secret_bytes([i as u8 + 1; 32]),
                    Account::new(user),
                )
            })
            .collect();
        let keys = managers.iter().map(|(k, _)| k.public_key()).collect();
        Model {
            user,
            limit,
            managers,
            keys,
            clients: debits
                .iter()
                .map(|&bytes| Client {
                    bytes,
                    head: None,
                    state: State::Idle,
                    attempts: 0,
                })
                .collect(),
            flight: Vec::new(),
            committed: Vec::new(),
            forgetful: false,
        }
    }

    /// Takes step `choice` among those possible now; false when nothing is left to do.
    fn step(&mut self, choice: usize) -> bool {
        let idle: Vec<usize> = (0..self.clients.len())
            .filter(|&c| matches!(self.clients[c].state, State::Idle))
            .collect();
        let n = idle.len() + self.flight.len();
        if n == 0 {
            return false;
        }
        let pick = choice % n;
        if pick < idle.len() {
            self.propose(idle[pick]);
        } else {
            let msg = self.flight.swap_remove(pick - idle.len());
            self.deliver(msg);
        }
        true
    }

    fn propose(&mut self, c: usize) {
        let (user, limit, m) = (self.user, self.limit, self.managers.len());
        let client = &mut self.clients[c];
        client.attempts += 1;
        let change = Change::Debit {
            object: Id::hash(&(c as u64).to_le_bytes()),
            binding: Id::hash(&[c as u8, client.attempts as u8]),
            bytes: client.bytes,
        };
        let head = client.head.as_ref().map(|h| &h.entry);
        match Entry::after(user, head, change, limit) {
            Err(_) => client.state = State::Refused,
            Ok(entry) => {
                for m in 0..m {
                    let entry = entry.clone();
                    self.flight.push(Msg::Propose { c, m, entry });
                }
                client.state = State::Waiting {
                    entry,
                    votes: Vec::new(),
                    refused: 0,
                };
            }
        }
    }

    fn deliver(&mut self, msg: Msg) {
        let m_count = self.managers.len();
        match msg {
            Msg::Propose { c, m, entry } => {
                let (me, account) = &mut self.managers[m];
                let vote = account
                    .vote(me, &entry, self.limit)
                    .map_err(|_| account.head().cloned());
                if self.forgetful {
                    account.forget_vote();
                }
                let hash = entry.hash();
                self.flight.push(Msg::Answer { c, hash, vote });
            }
            Msg::Learn { m, committed } => {
                let keys = self.keys.clone();
                self.managers[m]
                    .1
                    .learn(committed, &keys)
                    .expect("only committed entries are sent");
            }
            Msg::Answer { c, hash, vote } => {
                let client = &mut self.clients[c];
                let State::Waiting {
                    entry,
                    votes,
                    refused,
                } = &mut client.state
                else {
                    return;
                };
                if entry.hash() != hash {
                    return; // an answer to an earlier attempt
                }
                match vote {
                    Ok(v) => votes.push(v),
                    Err(head) => {
                        *refused += 1;
                        if head.as_ref().map(|h| h.entry.seq)
                            > client.head.as_ref().map(|h| h.entry.seq)
                        {
                            client.head = head;
                        }
                    }
                }
                if votes.len() >= quorum(m_count) {
                    let committed = Committed {
                        entry: entry.clone(),
                        votes: votes.clone(),
                    };
                    committed
                        .verify(&self.keys)
                        .expect("a majority of valid votes");
                    for m in 0..m_count {
                        let committed = committed.clone();
                        self.flight.push(Msg::Learn { m, committed });
                    }
                    self.committed.push(committed);
                    client.state = State::Done;
                } else if *refused > m_count - quorum(m_count) {
                    // No majority left for this attempt: try again on what was learned.
                    client.state = if client.attempts < 6 {
                        State::Idle
                    } else {
                        State::Refused
                    };
                }
            }
        }
    }
}

/// The committed entries form one chain within the grant; the first violation otherwise.
fn check(committed: &[Committed], limit: u64) -> Result<u64, String> {
    let mut by_seq: std::collections::BTreeMap<u64, Id> = std::collections::BTreeMap::new();
    for c in committed {
        let e = &c.entry;
        if let Some(other) = by_seq.insert(e.seq, e.hash()) {
            if other != e.hash() {
                return Err(format!("two entries committed at {}", e.seq));
            }
        }
        if e.balance > limit {
            return Err(format!("balance {} over the grant {limit}", e.balance));
        }
    }
    for c in committed {
        let e = &c.entry;
        let prev = e.seq.checked_sub(1).and_then(|s| by_seq.get(&s));
        if e.seq > 1 && prev.is_some_and(|p| *p != e.prev) {
            return Err(format!(
                "entry {} does not follow the committed {}",
                e.seq,
                e.seq - 1
            ));
        }
    }
    let debited: u64 = committed
        .iter()
        .map(|c| match c.entry.change {
            Change::Debit { bytes, .. } => bytes,
            Change::Credit { .. } => 0,
        })
        .sum();
    if debited > limit {
        return Err(format!("{debited} bytes approved of {limit}"));
    }
    Ok(debited)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// 16 writers debit one user's ledger at once, in any order of delivery: the approvals
    /// never pass the grant.
    #[test]
    fn concurrent_writers_never_pass_the_grant(
        debits in proptest::collection::vec(1u64..=4, 16),
        choices in proptest::collection::vec(any::<u16>(), 0..4000),
        m in prop_oneof![Just(3usize), Just(7usize)],
    ) {
        let limit = 20;
        let mut model = Model::new(m, limit, &debits);
        let mut steps = choices.into_iter();
        // Then deliver everything left in order, so every writer ends.
        while model.step(steps.next().map_or(0, usize::from)) {}
        let approved = check(&model.committed, limit).map_err(TestCaseError::fail)?;
        prop_assert!(approved <= limit);
        for c in &model.clients {
            let ended = matches!(c.state, State::Done | State::Refused);
            prop_assert!(ended, "every writer ends");
        }
    }
}

#[test]
fn a_grant_is_used_up_and_then_refused() {
    let mut model = Model::new(3, 10, &[4, 4, 4]);
    while model.step(0) {}
    assert_eq!(check(&model.committed, 10), Ok(8));
    assert!(matches!(model.clients[2].state, State::Refused) || model.committed.len() == 2);
    let (me, account) = &mut model.managers[0];
    let head = account.head().map(|c| c.entry.clone());
    let more = Change::Debit {
        object: Id::hash(b"more"),
        binding: Id::hash(b"more"),
        bytes: 3,
    };
    assert_eq!(
        Entry::after(head.as_ref().unwrap().user, head.as_ref(), more, 10),
        Err(LedgerError::OverQuota {
            balance: 11,
            limit: 10
        })
    );
    // A proposal that claims a lower balance is refused too.
    let mut cheat = Entry::after(
        head.as_ref().unwrap().user,
        head.as_ref(),
        Change::Debit {
            object: Id::hash(b"cheat"),
            binding: Id::hash(b"cheat"),
            bytes: 2,
        },
        10,
    )
    .unwrap();
    cheat.balance -= 2;
    assert_eq!(account.vote(me, &cheat, 10), Err(LedgerError::Arithmetic));
}

#[test]
fn an_approval_needs_a_majority_of_the_managers_and_cannot_be_forged() {
    let model = Model::new(3, 10, &[]);
    let e = Entry::after(
        model.user,
        None,
        Change::Debit {
            object: Id::hash(b"o"),
            binding: Id::hash(b"b"),
            bytes: 3,
        },
        10,
    )
    .unwrap();
    let vote = |i: usize, e: &Entry| {
        let mut a = Account::new(model.user);
        a.vote(&model.managers[i].0, e, 10).unwrap()
    };
    let one = Committed {
        entry: e.clone(),
        votes: vec![vote(0, &e), vote(0, &e)],
    };
    assert_eq!(
        one.verify(&model.keys),
        Err(LedgerError::TooFewVotes {
            valid: 1,
            quorum: 2
        }),
        "the same manager twice is one vote"
    );
    let outsider = Identity::from_secret_bytes([99; 32]);
    let mut a = Account::new(model.user);
    let foreign = a.vote(&outsider, &e, 10).unwrap();
    let with_outsider = Committed {
        entry: e.clone(),
        votes: vec![vote(0, &e), foreign],
    };
    assert!(with_outsider.verify(&model.keys).is_err(), "not a manager");
    let good = Committed {
        entry: e.clone(),
        votes: vec![vote(0, &e), vote(2, &e)],
    };
    assert_eq!(good.verify(&model.keys), Ok(()));
    let mut bigger = good.clone();
    if let Change::Debit { bytes, .. } = &mut bigger.entry.change {
        *bytes = 1;
    }
    assert!(
        bigger.verify(&model.keys).is_err(),
        "votes are bound to the entry"
    );
}

#[test]
fn managers_that_vote_twice_commit_two_entries_at_one_sequence_number() {
    // Negative control: the checker sees what the one-vote rule prevents.
    let run = |forgetful: bool| -> Result<u64, String> {
        let mut model = Model::new(3, 10, &[6, 6]);
        model.propose(0);
        model.propose(1);
        // Deliver: A to m0, B to m0, A to m1, B to m2, then the answers.
        let take = |model: &mut Model, c: usize, m: usize| -> Msg {
            let i = model
                .flight
                .iter()
                .position(
                    |x| matches!(x, Msg::Propose { c: cc, m: mm, .. } if *cc == c && *mm == m),
                )
                .unwrap();
            model.flight.remove(i)
        };
        for (c, m) in [(0, 0), (1, 0), (0, 1), (1, 2)] {
            let msg = take(&mut model, c, m);
            model.deliver(msg);
            if forgetful {
                model.managers[m].1.forget_vote();
            }
        }
        while let Some(i) = model
            .flight
            .iter()
            .position(|x| matches!(x, Msg::Answer { .. }))
        {
            let msg = model.flight.remove(i);
            model.deliver(msg);
        }
        check(&model.committed, 10)
    };
    assert_eq!(run(true), Err("two entries committed at 1".into()));
    assert_eq!(
        run(false),
        Ok(6),
        "with the rule one of the two is committed"
    );
}

/// Runs 16 writers under `schedules` seeded orders of delivery; answers the approved bytes of
/// each, or the first violation.
fn schedules(m: usize, forgetful: bool, schedules: u64) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for seed in 0..schedules {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as usize
        };
        let debits: Vec<u64> = (0..16).map(|_| 1 + next() as u64 % 4).collect();
        let mut model = Model::new(m, 20, &debits);
        model.forgetful = forgetful;
        while model.step(next()) {}
        out.push(check(&model.committed, 20)?);
    }
    Ok(out)
}

#[test]
fn the_model_approves_writes_and_catches_managers_that_vote_twice() {
    // Not vacuous: across seeded orders of delivery, writes are approved, up to the grant.
    let approved = schedules(3, false, 300).expect("safe");
    assert!(
        approved.iter().filter(|&&a| a > 0).count() > 30,
        "{approved:?}"
    );
    assert!(approved.iter().any(|&a| a >= 15), "{approved:?}");
    // The same orders with managers that vote twice: the checker finds a violation.
    let broken = schedules(3, true, 300);
    assert!(broken.is_err(), "{broken:?}");
}
