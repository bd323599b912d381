//! One user's balance as a chain of entries, each committed by a majority of the user's account
//! managers' signatures, agreed on as in Paxos.
//!
//! Entry n says "after this change the user occupies `balance` bytes" and names entry n - 1 by
//! hash. Each sequence number is one instance of single-decree Paxos among the managers: a
//! proposer (the manager closest to the account key) first gets a majority to promise its
//! [`Ballot`] (phase 1: they report what they accepted under older ballots, and the proposer
//! must carry the newest such entry forward), then asks them to accept its entry under that
//! ballot (phase 2). An acceptance is a signed [`Vote`]; a majority of votes at one ballot is a
//! [`Committed`] entry. Two majorities share a manager, so a later ballot always learns an
//! entry that may have been committed, and two different entries are never both committed at
//! one sequence number, however many proposers compete (a root that changed, a message that
//! came late): committed entries form one chain, and its balance, which every debit raises,
//! never passes the grant. A committed debit is what a storage node checks before storing (the
//! approval, `approval.rs`).
//!
//! A manager also checks what it accepts: the entry extends its log, adds up, and stays within
//! the grant; a credit gives back a debit that is in the log and not given back yet.

use serde::{Deserialize, Serialize};

use ringvault_types::{Id, Identity, NodeCertificate, PublicKey, Signature};

/// The format version an entry carries.
pub const LEDGER_VERSION: u8 = 1;

const ENTRY_DOMAIN: &[u8] = b"ringvault ledger entry v1\0";
const VOTE_DOMAIN: &[u8] = b"ringvault ledger vote v2\0";

/// A proposer's ballot: a higher round wins, the proposer's id breaks ties, so two proposers
/// never share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// The round.
    pub round: u64,
    /// The proposer's node id.
    pub proposer: Id,
}

impl Default for Ballot {
    /// Below every proposer's ballot.
    fn default() -> Self {
        Ballot {
            round: 0,
            proposer: Id::ZERO,
        }
    }
}

/// The highest round a manager takes at all.
pub const MAX_ROUND: u64 = 1 << 48;
/// How far above the ballot it promised a manager takes a new one: a faulty proposer cannot
/// push the rounds to the top in one message (correct proposers step one above what they saw).
pub const MAX_ROUND_STEP: u64 = 1 << 10;

impl Ballot {
    /// The first ballot of `proposer` above `seen` (`None` past [`MAX_ROUND`]).
    pub fn above(seen: Ballot, proposer: Id) -> Option<Ballot> {
        let round = seen.round.checked_add(1).filter(|r| *r <= MAX_ROUND)?;
        Some(Ballot { round, proposer })
    }
}

/// An insert's charge: `bytes` (size × k) for an object stored under one of `ids` (its id under
/// each salt file diversion may try), bound to the content by `binding` and usable until
/// `expiry`; `nonce` makes every debit a new entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debit {
    /// The object's id under each salt it may be stored with, the first one first.
    pub ids: Vec<Id>,
    /// [`crate::binding`] of the content hash, size and replication factor.
    pub binding: Id,
    /// Bytes it occupies on the ring: size × k.
    pub bytes: u64,
    /// Its replication factor k (how many reclaim receipts giving it back takes).
    pub replicas: u8,
    /// The insertion date its certificates carry (the owner's clock): the reclaim receipts
    /// that give it back must name it.
    pub date: u64,
    /// Storage nodes refuse the approval after this (Unix seconds).
    pub expiry: u64,
    /// Chosen by the client.
    pub nonce: u64,
}

impl Debit {
    /// The object's id under its first salt, which names the debit.
    pub fn object(&self) -> Option<Id> {
        self.ids.first().copied()
    }
}

/// How a user's occupied bytes change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// An insert.
    Debit(Debit),
    /// A reclaim: the debit named by `object` (its first id) given back, `bytes` of it.
    Credit {
        /// The debit's first id.
        object: Id,
        /// Bytes given back (the debit's).
        bytes: u64,
    },
}

/// One entry of a user's ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// [`LEDGER_VERSION`].
    pub format: u8,
    /// The user (their owner key).
    pub user: PublicKey,
    /// 1 for the first entry, then one more each.
    pub seq: u64,
    /// The hash of entry `seq - 1` ([`Id::ZERO`] for the first).
    pub prev: Id,
    /// What changed.
    pub change: Change,
    /// Bytes the user occupies after it.
    pub balance: u64,
}

/// Why an entry, a vote or a ballot is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The debit would take the user past their grant.
    #[error("over quota: {balance} bytes would be used of {limit} granted")]
    OverQuota {
        /// The balance it would reach.
        balance: u64,
        /// The grant.
        limit: u64,
    },
    /// A credit that gives back no debit of the log (never debited, or given back already).
    #[error("nothing to give back for object {0}")]
    NothingToCredit(Id),
    /// The object is charged already, by entry `seq`.
    #[error("the object is charged already (entry {seq})")]
    AlreadyDebited {
        /// The entry that charged it.
        seq: u64,
    },
    /// It does not extend this manager's log.
    #[error("entry {seq} does not follow entry {head} of this manager's log")]
    NotNext {
        /// Its sequence number.
        seq: u64,
        /// The newest entry in the log here.
        head: u64,
    },
    /// A committed entry that contradicts one in the log (a forged majority, or managers that
    /// broke their promises).
    #[error("entry {0} differs from the committed one in the log")]
    Fork(u64),
    /// This manager promised a higher ballot.
    #[error("a higher ballot was promised (round {})", .0.round)]
    Promised(Ballot),
    /// Its balance is not the previous balance plus the change.
    #[error("the balance does not add up")]
    Arithmetic,
    /// Another user's, or another format.
    #[error("not an entry of this ledger")]
    Foreign,
    /// Fewer valid votes of distinct plausible managers at one ballot than a majority.
    #[error("{valid} valid votes of the managers, {quorum} needed")]
    TooFewVotes {
        /// Valid votes of distinct managers.
        valid: usize,
        /// A majority.
        quorum: usize,
    },
}

impl Entry {
    /// The hash that names it.
    pub fn hash(&self) -> Id {
        // Plain structs of keys and integers always encode.
        let body = postcard::to_allocvec(self).unwrap_or_default();
        Id::hash_parts(&[ENTRY_DOMAIN, &body])
    }

    /// The entry that applies `change` after `head` (`None`: the first entry) for `user`;
    /// refused if it would pass `limit` or give back more than is occupied.
    pub fn after(
        user: PublicKey,
        head: Option<&Entry>,
        change: Change,
        limit: u64,
    ) -> Result<Entry, LedgerError> {
        let (seq, prev, balance) = match head {
            None => (1, Id::ZERO, 0),
            Some(h) => (
                h.seq.checked_add(1).ok_or(LedgerError::Foreign)?,
                h.hash(),
                h.balance,
            ),
        };
        let balance = apply(balance, &change, limit)?;
        Ok(Entry {
            format: LEDGER_VERSION,
            user,
            seq,
            prev,
            change,
            balance,
        })
    }
}

/// The balance after `change` from `balance`, within `limit`.
fn apply(balance: u64, change: &Change, limit: u64) -> Result<u64, LedgerError> {
    match change {
        Change::Debit(d) => {
            let after = balance.saturating_add(d.bytes);
            if after > limit {
                return Err(LedgerError::OverQuota {
                    balance: after,
                    limit,
                });
            }
            Ok(after)
        }
        Change::Credit { object, bytes } => balance
            .checked_sub(*bytes)
            .ok_or(LedgerError::NothingToCredit(*object)),
    }
}

/// A manager's acceptance of an entry under a ballot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The manager's public key.
    pub manager: PublicKey,
    /// The ballot it accepted the entry under.
    pub ballot: Ballot,
    /// Its signature over the entry's hash and the ballot.
    pub signature: Signature,
    /// Its node certificate (secure mode), so a storage node can tell a certified manager
    /// from a key made up for the occasion.
    pub cert: Option<NodeCertificate>,
}

impl Vote {
    /// `manager` accepts `entry` under `ballot`.
    pub fn issue(
        manager: &Identity,
        cert: Option<NodeCertificate>,
        entry: &Entry,
        ballot: Ballot,
    ) -> Vote {
        Vote {
            manager: manager.public_key(),
            ballot,
            signature: manager.sign(&vote_bytes(&entry.hash(), &ballot)),
            cert,
        }
    }

    /// Whether the signature is the manager's, over `entry` under the vote's ballot.
    pub fn signs(&self, entry: &Id) -> bool {
        self.manager
            .verify(&vote_bytes(entry, &self.ballot), &self.signature)
            .is_ok()
    }
}

fn vote_bytes(entry: &Id, ballot: &Ballot) -> Vec<u8> {
    let mut out = VOTE_DOMAIN.to_vec();
    out.extend_from_slice(entry.as_bytes());
    out.extend_from_slice(&ballot.round.to_le_bytes());
    out.extend_from_slice(ballot.proposer.as_bytes());
    out
}

/// A majority of `m` managers.
pub fn quorum(m: usize) -> usize {
    m / 2 + 1
}

/// An entry with a majority of the managers' votes under one ballot: committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The entry.
    pub entry: Entry,
    /// The ballot the votes are under.
    pub ballot: Ballot,
    /// The managers' votes.
    pub votes: Vec<Vote>,
}

impl Committed {
    /// Its bytes (postcard), as approvals travel.
    pub fn encode(&self) -> Vec<u8> {
        // Plain structs of keys and integers always encode.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// A committed entry from its bytes; nothing is verified (see [`Committed::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        match postcard::take_from_bytes(bytes)? {
            (c, []) => Ok(c),
            _ => Err(postcard::Error::DeserializeBadEncoding),
        }
    }

    /// Whether votes under its ballot of a majority of `m` distinct managers, each of which
    /// `plausible` takes for one of the user's managers, sign it.
    pub fn verify(
        &self,
        m: usize,
        mut plausible: impl FnMut(&Vote) -> bool,
    ) -> Result<(), LedgerError> {
        let hash = self.entry.hash();
        let mut valid: Vec<PublicKey> = Vec::new();
        for v in &self.votes {
            if v.ballot == self.ballot
                && !valid.contains(&v.manager)
                && v.signs(&hash)
                && plausible(v)
            {
                valid.push(v.manager);
            }
        }
        let quorum = quorum(m);
        if valid.len() < quorum {
            return Err(LedgerError::TooFewVotes {
                valid: valid.len(),
                quorum,
            });
        }
        Ok(())
    }
}

/// What justifies a change: the grant a debit was checked against, or the proof that the
/// object a credit gives back was reclaimed. A manager accepts a change only with it, and a
/// new proposer carrying an accepted entry forward passes it on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Warrant {
    /// A debit: the user's quota grant, and the owner-signed certificates of the object
    /// (encoded by the storage layer, checked by the closure the service is given), so that
    /// nobody who sees the grant can charge it for objects the owner did not sign.
    Grant {
        /// The grant.
        grant: ringvault_types::Grant,
        /// The certificates.
        certs: Vec<u8>,
    },
    /// A credit: the storage nodes' receipts for the reclaim of `object` (encoded by the
    /// storage layer, checked by the closure the service is given).
    Reclaimed {
        /// The object reclaimed (one of the debit's ids).
        object: Id,
        /// The receipts.
        proof: Vec<u8>,
    },
}

/// An entry a manager accepted and has not seen committed (or superseded) yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The ballot it was accepted under.
    pub ballot: Ballot,
    /// The entry.
    pub entry: Entry,
    /// What justified it.
    pub warrant: Warrant,
}

/// One manager's state for one user: the committed log, the highest ballot promised, and the
/// entry accepted for the next sequence number.
#[derive(Clone, Debug)]
pub struct Account {
    user: PublicKey,
    log: Vec<Committed>,
    promised: Ballot,
    accepted: Option<Accepted>,
}

impl Account {
    /// The ledger of `user`, empty.
    pub fn new(user: PublicKey) -> Self {
        Account {
            user,
            log: Vec::new(),
            promised: Ballot::default(),
            accepted: None,
        }
    }

    /// The user.
    pub fn user(&self) -> PublicKey {
        self.user
    }

    /// The newest committed entry known here.
    pub fn head(&self) -> Option<&Committed> {
        self.log.last()
    }

    /// Entries in the log.
    pub fn len(&self) -> u64 {
        self.log.len() as u64
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// Bytes the user occupies, as of the head.
    pub fn balance(&self) -> u64 {
        self.head().map_or(0, |c| c.entry.balance)
    }

    /// The committed entries after the first `seq`.
    pub fn after(&self, seq: u64) -> &[Committed] {
        let from = usize::try_from(seq).unwrap_or(usize::MAX);
        self.log.get(from..).unwrap_or(&[])
    }

    /// The highest ballot promised.
    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// The entry accepted for the next sequence number, if any.
    pub fn accepted(&self) -> Option<&Accepted> {
        self.accepted.as_ref()
    }

    /// The committed debit still charged (not given back) under which `id` may be stored.
    pub fn charged(&self, id: &Id) -> Option<&Committed> {
        let debit = self.log.iter().rev().find(|c| match &c.entry.change {
            Change::Debit(d) => d.ids.contains(id),
            Change::Credit { .. } => false,
        })?;
        let Change::Debit(d) = &debit.entry.change else {
            return None;
        };
        let object = d.object()?;
        let returned = self
            .after(debit.entry.seq)
            .iter()
            .any(|c| matches!(c.entry.change, Change::Credit { object: o, .. } if o == object));
        (!returned).then_some(debit)
    }

    /// Appends `c` if it verifies (by `verify`) and is the next entry of the log. Answers
    /// whether it was new; an entry beyond the next is refused as [`LedgerError::NotNext`]
    /// (the ones between are needed first).
    pub fn learn(
        &mut self,
        c: Committed,
        verify: impl FnOnce(&Committed) -> Result<(), LedgerError>,
    ) -> Result<bool, LedgerError> {
        if c.entry.user != self.user || c.entry.format != LEDGER_VERSION {
            return Err(LedgerError::Foreign);
        }
        let seq = c.entry.seq;
        if seq == 0 {
            return Err(LedgerError::Foreign);
        }
        if seq <= self.len() {
            let held = &self.log[(seq - 1) as usize];
            return if held.entry == c.entry {
                Ok(false)
            } else {
                Err(LedgerError::Fork(seq))
            };
        }
        if seq > self.len() + 1 {
            return Err(LedgerError::NotNext {
                seq,
                head: self.len(),
            });
        }
        let prev = self.head().map_or(Id::ZERO, |h| h.entry.hash());
        if c.entry.prev != prev {
            return Err(LedgerError::Fork(seq));
        }
        verify(&c)?;
        // The entries a committed one was accepted under were checked by a majority; its sum
        // is checked here too, so a log never holds a balance that does not add up.
        let expected = Entry::after(
            self.user,
            self.head().map(|h| &h.entry),
            c.entry.change.clone(),
            u64::MAX,
        )?;
        if expected.balance != c.entry.balance {
            return Err(LedgerError::Arithmetic);
        }
        self.log.push(c);
        if self.accepted.as_ref().is_some_and(|a| a.entry.seq <= seq) {
            self.accepted = None;
        }
        Ok(true)
    }

    /// Phase 1: promises `ballot` if it is higher than any promised (or the same, again).
    /// Answers with the entry accepted for the next sequence number, which the proposer must
    /// carry forward.
    pub fn promise(&mut self, ballot: Ballot) -> Result<Option<&Accepted>, LedgerError> {
        if ballot.round > MAX_ROUND
            || ballot.round > self.promised.round.saturating_add(MAX_ROUND_STEP)
        {
            return Err(LedgerError::Foreign);
        }
        if ballot < self.promised {
            return Err(LedgerError::Promised(self.promised));
        }
        self.promised = ballot;
        Ok(self.accepted.as_ref())
    }

    /// Phase 2: manager `me` accepts `entry` under `ballot` if no higher ballot was promised
    /// and the entry is the next of the log, adds up, stays within `limit`, and (a credit)
    /// gives back a debit still charged, or (a debit) charges no object charged already.
    pub fn accept(
        &mut self,
        me: &Identity,
        cert: Option<NodeCertificate>,
        ballot: Ballot,
        entry: &Entry,
        limit: u64,
        warrant: Warrant,
    ) -> Result<Vote, LedgerError> {
        if ballot < self.promised {
            return Err(LedgerError::Promised(self.promised));
        }
        if ballot.round > self.promised.round.saturating_add(MAX_ROUND_STEP) {
            return Err(LedgerError::Foreign);
        }
        // One entry per sequence number and ballot: a proposer that sends another has lost
        // track of its own log.
        if let Some(a) = &self.accepted {
            if a.ballot == ballot && a.entry.seq == entry.seq && a.entry != *entry {
                return Err(LedgerError::Fork(entry.seq));
            }
        }
        self.check(entry, limit)?;
        self.promised = ballot;
        self.accepted = Some(Accepted {
            ballot,
            entry: entry.clone(),
            warrant,
        });
        Ok(Vote::issue(me, cert, entry, ballot))
    }

    /// Whether `entry` may follow the log: next, adding up within `limit`, and charging or
    /// giving back what it may.
    pub fn check(&self, entry: &Entry, limit: u64) -> Result<(), LedgerError> {
        if entry.format != LEDGER_VERSION || entry.user != self.user {
            return Err(LedgerError::Foreign);
        }
        let head = self.head().map(|c| &c.entry);
        let expected = Entry::after(self.user, head, entry.change.clone(), limit)?;
        if (expected.seq, expected.prev) != (entry.seq, entry.prev) {
            return Err(LedgerError::NotNext {
                seq: entry.seq,
                head: self.len(),
            });
        }
        if expected.balance != entry.balance {
            return Err(LedgerError::Arithmetic);
        }
        match &entry.change {
            Change::Debit(d) => {
                if d.ids.is_empty() {
                    return Err(LedgerError::Foreign);
                }
                if let Some(c) = d.ids.iter().find_map(|id| self.charged(id)) {
                    return Err(LedgerError::AlreadyDebited { seq: c.entry.seq });
                }
            }
            Change::Credit { object, bytes } => {
                let charged = self.charged(object).map(|c| &c.entry.change);
                match charged {
                    Some(Change::Debit(d)) if d.object() == Some(*object) && d.bytes == *bytes => {}
                    _ => return Err(LedgerError::NothingToCredit(*object)),
                }
            }
        }
        Ok(())
    }

    /// Tests only: a manager that breaks its promises (accepts under any ballot).
    #[cfg(test)]
    pub(crate) fn forget_promises(&mut self) {
        self.promised = Ballot::default();
    }
}
