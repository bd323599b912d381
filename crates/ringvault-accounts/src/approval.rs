//! What a storage node checks before it stores an object in a ring that enforces quotas: a
//! committed debit of the object's owner (the approval) whose votes come from plausible account
//! managers of that owner, and that fits this very insert.
//!
//! A storage node does not know the owner's managers: they are the m nodes closest to
//! [`account_key`], far from the object in the ring. It knows the ring's density (its leaf set's
//! spacing), and ids are hashes of keys: a manager's id must lie within [`SPREAD`] × m mean gaps
//! of the account key, a distance the m closest nodes stay within except with vanishing
//! probability, and which a made-up key lands in with probability about 2 × SPREAD × m / N. In
//! secure mode each vote must also carry a node certificate of the ring's CA for that key, so
//! keys cannot be ground until enough land there.

use ringvault_types::{Id, PublicKey, RevocationList};

use crate::{Change, Committed, Debit, LedgerError, Vote};

const ACCOUNT_DOMAIN: &[u8] = b"account";
const BINDING_DOMAIN: &[u8] = b"ringvault debit binding v1\0";

/// How many mean gaps per manager a plausible manager may lie from the account key: the m
/// closest nodes lie within about m / 2 gaps on average.
pub const SPREAD: f64 = 2.0;

/// The key whose m closest nodes manage `user`'s account: H("account", user public key).
pub fn account_key(user: &PublicKey) -> Id {
    Id::hash_parts(&[ACCOUNT_DOMAIN, &user.0])
}

/// What a debit binds an approval to besides the object's ids: its content, size and
/// replication factor.
pub fn binding(content_hash: &[u8; 32], size: u64, replicas: u8) -> Id {
    Id::hash_parts(&[
        BINDING_DOMAIN,
        content_hash,
        &size.to_le_bytes(),
        &[replicas],
    ])
}

/// How a node judges whether a vote comes from one of a user's account managers.
#[derive(Clone, Debug)]
pub struct Electorate {
    /// Managers per account (m).
    pub m: usize,
    /// Secure mode: the CA whose certificates votes must carry.
    pub ca: Option<PublicKey>,
}

/// What a node knows when it judges votes: the ring's density and the time.
#[derive(Clone, Copy, Debug)]
pub struct Vantage<'a> {
    /// This node's id.
    pub me: Id,
    /// The mean gap between neighbouring ids, as a fraction of the ring (`None` for a node
    /// alone).
    pub gap: Option<f64>,
    /// Unix seconds.
    pub unix: u64,
    /// Revoked certificates.
    pub revoked: &'a RevocationList,
}

impl Electorate {
    /// Whether `vote` may come from one of the managers of the account at `account`.
    pub fn plausible(&self, account: &Id, vote: &Vote, at: &Vantage<'_>) -> bool {
        let id = vote.manager.id();
        if let Some(ca) = &self.ca {
            let certified = vote.cert.as_ref().is_some_and(|c| {
                c.body.public_key == vote.manager && c.verify(ca, at.unix, at.revoked).is_ok()
            });
            if !certified {
                return false;
            }
        }
        near(account, &id, self.m, at)
    }

    /// Checks a committed entry of `user`'s ledger: a majority of plausible managers' votes.
    pub fn verify(
        &self,
        user: &PublicKey,
        c: &Committed,
        at: &Vantage<'_>,
    ) -> Result<(), LedgerError> {
        if c.entry.user != *user {
            return Err(LedgerError::Foreign);
        }
        let account = account_key(user);
        c.verify(self.m, |v| self.plausible(&account, v, at))
    }
}

/// Whether node `id` may be among the `m` closest to `key`, by the density `at` knows: within
/// [`SPREAD`] × m mean gaps (a node that knows no other is the only candidate itself).
pub fn near(key: &Id, id: &Id, m: usize, at: &Vantage<'_>) -> bool {
    match at.gap {
        Some(gap) => key.ring_distance(id).ring_fraction() <= SPREAD * m as f64 * gap,
        None => *id == at.me,
    }
}

/// The insert an approval must fit, as its file certificate states it.
#[derive(Clone, Copy, Debug)]
pub struct Insert<'a> {
    /// The object's id.
    pub id: Id,
    /// Its owner.
    pub owner: &'a PublicKey,
    /// BLAKE3 of its content.
    pub content_hash: &'a [u8; 32],
    /// Its size.
    pub size: u64,
    /// Its replication factor.
    pub replicas: u8,
}

/// Why an approval does not let an insert through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// The ring enforces quotas and the insert carries none.
    #[error("this ring enforces storage quotas: the insert needs a debit approval")]
    Missing,
    /// The approval is for another object, content, size, replication factor or owner.
    #[error("the approval is for another insert")]
    Mismatch,
    /// The approval has expired.
    #[error("the approval expired at {0} (Unix seconds)")]
    Expired(u64),
    /// Its votes are not a majority of plausible managers.
    #[error("the approval's votes do not verify: {0}")]
    Votes(LedgerError),
}

/// The debit `approval` commits, if it lets `insert` through at `at`.
pub fn check<'c>(
    electorate: &Electorate,
    approval: &'c Committed,
    insert: &Insert<'_>,
    at: &Vantage<'_>,
) -> Result<&'c Debit, ApprovalError> {
    let Change::Debit(d) = &approval.entry.change else {
        return Err(ApprovalError::Mismatch);
    };
    let fits = approval.entry.user == *insert.owner
        && d.ids.contains(&insert.id)
        && d.binding == binding(insert.content_hash, insert.size, insert.replicas)
        && Some(d.bytes) == insert.size.checked_mul(u64::from(insert.replicas));
    if !fits {
        return Err(ApprovalError::Mismatch);
    }
    if at.unix >= d.expiry {
        return Err(ApprovalError::Expired(d.expiry));
    }
    electorate
        .verify(insert.owner, approval, at)
        .map_err(ApprovalError::Votes)?;
    Ok(d)
}
