//! The validity predicate (`server-mode.md` §2): what every correct committee member checks
//! before it prevotes a proposed [`Delta`]. A Byzantine proposer can then only leave changes
//! out; the next correct proposer puts them back.

use std::collections::BTreeSet;

use ringvault_types::{PublicKey, RevocationList};

use crate::config::{confirm_bytes, join_bytes, leave_bytes, Change, Config, Delta};

/// How far past this member's own now + lease a proposed lease end may lie (clock skew).
pub const MAX_LEASE_SKEW_MS: u64 = 5_000;

/// What a member judges a delta against.
#[derive(Clone, Copy, Debug)]
pub struct Judge<'a> {
    /// The ring's CA key (joins must carry its certificates).
    pub ca: &'a PublicKey,
    /// Revoked certificates.
    pub revoked: &'a RevocationList,
    /// This member's Unix time in milliseconds.
    pub now_ms: u64,
}

/// Why a delta is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDelta {
    /// Not for the epoch after the current one, or not on top of it.
    #[error("delta is not for the next epoch of the current configuration")]
    NotNext,
    /// More changes than the parameters allow.
    #[error("{0} changes, more than an epoch allows")]
    TooManyChanges(usize),
    /// Two changes about one server.
    #[error("two changes about one server")]
    Repeated,
    /// A join whose certificate or signature does not verify, or of a member already in.
    #[error("invalid join: {0}")]
    Join(String),
    /// A leave of a non-member, for another epoch, or with a bad signature.
    #[error("invalid leave")]
    Leave,
    /// An eviction without f_ms + 1 valid confirms of distinct committee members this epoch.
    #[error("eviction has {0} valid confirms, needs f_ms + 1")]
    Evict(usize),
    /// The lease end lies further than now + lease + [`MAX_LEASE_SKEW_MS`].
    #[error("lease end out of bounds")]
    Lease,
    /// Applying it would leave no member.
    #[error("the delta would remove every member")]
    Empty,
}

/// Line 23's `valid(v)` for a proposed delta on top of `current`.
pub fn check_delta(current: &Config, delta: &Delta, judge: &Judge) -> Result<(), InvalidDelta> {
    if delta.epoch != current.epoch + 1 || delta.prev != current.hash() {
        return Err(InvalidDelta::NotNext);
    }
    if delta.changes.len() > current.params.max_changes as usize {
        return Err(InvalidDelta::TooManyChanges(delta.changes.len()));
    }
    let subjects: BTreeSet<_> = delta.changes.iter().map(Change::subject).collect();
    if subjects.len() != delta.changes.len() {
        return Err(InvalidDelta::Repeated);
    }
    // Only an upper bound: a judgement that later time cannot reverse, or a value locked in
    // one round could turn invalid in a later one and never be decided. A Byzantine proposer
    // can shorten a lease (servers then stop serving early until the next epoch), not stretch
    // it past what this member's clock allows.
    let latest = judge
        .now_ms
        .saturating_add(current.params.lease_ms())
        .saturating_add(MAX_LEASE_SKEW_MS);
    if delta.valid_until > latest {
        return Err(InvalidDelta::Lease);
    }
    for change in &delta.changes {
        check_change(current, change, judge)?;
    }
    let leaving = delta
        .changes
        .iter()
        .filter(|c| !matches!(c, Change::Join(_)))
        .count();
    if leaving >= current.members.len() + delta.changes.len() - leaving {
        return Err(InvalidDelta::Empty);
    }
    Ok(())
}

/// Checks one change's own proof against `current`.
pub fn check_change(current: &Config, change: &Change, judge: &Judge) -> Result<(), InvalidDelta> {
    match change {
        Change::Join(j) => {
            if current.member(&j.cert.node_id()).is_some() {
                return Err(InvalidDelta::Join("already a member".into()));
            }
            let body = j
                .cert
                .verify(judge.ca, judge.now_ms / 1000, judge.revoked)
                .map_err(|e| InvalidDelta::Join(e.to_string()))?;
            body.public_key
                .verify(&join_bytes(&j.cert), &j.signature)
                .map_err(|_| InvalidDelta::Join("bad signature".into()))?;
        }
        Change::Leave(l) => {
            let member = current.member(&l.id).ok_or(InvalidDelta::Leave)?;
            if l.epoch != current.epoch {
                return Err(InvalidDelta::Leave);
            }
            member
                .key()
                .verify(&leave_bytes(l.id, l.epoch), &l.signature)
                .map_err(|_| InvalidDelta::Leave)?;
        }
        Change::Evict { suspect, confirms } => {
            if current.member(suspect).is_none() {
                return Err(InvalidDelta::Evict(0));
            }
            let mut by = BTreeSet::new();
            for c in confirms {
                let valid = c.suspect == *suspect
                    && c.epoch == current.epoch
                    && current.seat(&c.by).is_some()
                    && current.member(&c.by).is_some_and(|m| {
                        m.key()
                            .verify(&confirm_bytes(c.epoch, c.suspect), &c.signature)
                            .is_ok()
                    });
                if valid {
                    by.insert(c.by);
                }
            }
            let needed = current.params.f_ms as usize + 1;
            if by.len() < needed.min(current.committee.len()) {
                return Err(InvalidDelta::Evict(by.len()));
            }
        }
    }
    Ok(())
}
