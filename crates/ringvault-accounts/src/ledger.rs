//! One user's balance as a chain of entries, each committed by a majority of the user's account
//! managers' signatures.
//!
//! Entry n says "after this change the user occupies `balance` bytes" and names entry n - 1 by
//! hash. A manager votes (signs) at most one entry per sequence number, and only one that
//! extends the newest committed entry it knows and keeps the balance within the user's grant.
//! Two majorities of the managers share at least one manager, so two different entries can
//! never both be committed at one sequence number: committed entries form one chain, and its
//! balance, which every debit raises, never passes the grant however many writers debit at
//! once. A committed debit is what a storage node would check before storing (the approval).

use serde::{Deserialize, Serialize};

use ringvault_types::{Id, Identity, PublicKey, Signature};

/// The format version an entry carries.
pub const LEDGER_VERSION: u8 = 1;

const ENTRY_DOMAIN: &[u8] = b"ringvault ledger entry v1\0";
const VOTE_DOMAIN: &[u8] = b"ringvault ledger vote v1\0";

/// How a user's occupied bytes change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// An insert: `bytes` (size × k) more for `object`, bound by `binding` to the insert's
    /// salts, size, k, expiry and nonce so the approval fits no other insert.
    Debit {
        /// The object.
        object: Id,
        /// The hash of what the insert is bound to.
        binding: Id,
        /// Bytes it occupies on the ring.
        bytes: u64,
    },
    /// A reclaim: `bytes` given back for `object`.
    Credit {
        /// The object.
        object: Id,
        /// Bytes given back.
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

/// Why an entry is not acceptable.
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
    /// A credit of more than the user occupies.
    #[error("a credit of {bytes} bytes with only {balance} occupied")]
    Overdrawn {
        /// The credit.
        bytes: u64,
        /// What is occupied.
        balance: u64,
    },
    /// It does not extend the newest committed entry this manager knows.
    #[error("entry {seq} does not follow the committed entry {head}")]
    NotNext {
        /// Its sequence number.
        seq: u64,
        /// The newest committed one here.
        head: u64,
    },
    /// This manager voted for another entry at this sequence number already.
    #[error("already voted for another entry at {0}")]
    AlreadyVoted(u64),
    /// Its balance is not the previous balance plus the change.
    #[error("the balance does not add up")]
    Arithmetic,
    /// Another user's, or another format.
    #[error("not an entry of this ledger")]
    Foreign,
    /// Fewer valid votes of distinct managers than a majority.
    #[error("{valid} valid votes of the managers, {quorum} needed")]
    TooFewVotes {
        /// Valid votes of distinct managers.
        valid: usize,
        /// A majority.
        quorum: usize,
    },
}

impl Entry {
    /// The hash that names it (and that managers sign).
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
    match *change {
        Change::Debit { bytes, .. } => {
            let after = balance.saturating_add(bytes);
            if after > limit {
                return Err(LedgerError::OverQuota {
                    balance: after,
                    limit,
                });
            }
            Ok(after)
        }
        Change::Credit { bytes, .. } => balance
            .checked_sub(bytes)
            .ok_or(LedgerError::Overdrawn { bytes, balance }),
    }
}

/// A manager's signature on an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The manager's public key.
    pub manager: PublicKey,
    /// Its signature over the entry's hash.
    pub signature: Signature,
}

fn vote_bytes(entry: &Id) -> Vec<u8> {
    let mut out = VOTE_DOMAIN.to_vec();
    out.extend_from_slice(entry.as_bytes());
    out
}

/// A majority of `m` managers.
pub fn quorum(m: usize) -> usize {
    m / 2 + 1
}

/// An entry with a majority of the managers' votes: committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The entry.
    pub entry: Entry,
    /// The managers' votes.
    pub votes: Vec<Vote>,
}

impl Committed {
    /// Whether votes of a majority of `managers` (distinct, each verifying) are on it.
    pub fn verify(&self, managers: &[PublicKey]) -> Result<(), LedgerError> {
        let hash = vote_bytes(&self.entry.hash());
        let mut valid: Vec<PublicKey> = Vec::new();
        for v in &self.votes {
            if managers.contains(&v.manager)
                && !valid.contains(&v.manager)
                && v.manager.verify(&hash, &v.signature).is_ok()
            {
                valid.push(v.manager);
            }
        }
        let quorum = quorum(managers.len());
        if valid.len() < quorum {
            return Err(LedgerError::TooFewVotes {
                valid: valid.len(),
                quorum,
            });
        }
        Ok(())
    }
}

/// One manager's view of one user's ledger: the newest committed entry it knows and the entry
/// it voted for after it.
#[derive(Clone, Debug)]
pub struct Account {
    user: PublicKey,
    head: Option<Committed>,
    voted: Option<(u64, Id)>,
}

impl Account {
    /// The ledger of `user`, empty.
    pub fn new(user: PublicKey) -> Self {
        Account {
            user,
            head: None,
            voted: None,
        }
    }

    /// The newest committed entry known here.
    pub fn head(&self) -> Option<&Committed> {
        self.head.as_ref()
    }

    /// Bytes the user occupies, as of that entry.
    pub fn balance(&self) -> u64 {
        self.head.as_ref().map_or(0, |c| c.entry.balance)
    }

    /// Takes `c` as the newest committed entry if it verifies and is newer than the head.
    /// Answers whether it did.
    pub fn learn(&mut self, c: Committed, managers: &[PublicKey]) -> Result<bool, LedgerError> {
        if c.entry.user != self.user || c.entry.format != LEDGER_VERSION {
            return Err(LedgerError::Foreign);
        }
        c.verify(managers)?;
        if self
            .head
            .as_ref()
            .is_some_and(|h| h.entry.seq >= c.entry.seq)
        {
            return Ok(false);
        }
        self.head = Some(c);
        Ok(true)
    }

    /// Manager `me` votes for `proposal` if it extends the head, adds up within `limit`, and
    /// no other entry got this manager's vote at its sequence number.
    pub fn vote(
        &mut self,
        me: &Identity,
        proposal: &Entry,
        limit: u64,
    ) -> Result<Vote, LedgerError> {
        let head = self.head.as_ref().map(|c| &c.entry);
        if proposal.format != LEDGER_VERSION || proposal.user != self.user {
            return Err(LedgerError::Foreign);
        }
        let expected = Entry::after(proposal.user, head, proposal.change.clone(), limit)?;
        if (expected.seq, expected.prev) != (proposal.seq, proposal.prev) {
            return Err(LedgerError::NotNext {
                seq: proposal.seq,
                head: head.map_or(0, |h| h.seq),
            });
        }
        if expected.balance != proposal.balance {
            return Err(LedgerError::Arithmetic);
        }
        let hash = proposal.hash();
        match self.voted {
            Some((seq, voted)) if seq == proposal.seq && voted != hash => {
                return Err(LedgerError::AlreadyVoted(seq));
            }
            _ => {}
        }
        self.voted = Some((proposal.seq, hash));
        Ok(Vote {
            manager: me.public_key(),
            signature: me.sign(&vote_bytes(&hash)),
        })
    }

    /// Tests only: forgets whom it voted for, as a manager without the one-vote rule would.
    #[cfg(test)]
    pub(crate) fn forget_vote(&mut self) {
        self.voted = None;
    }
}
