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
    /// The lease end lies further than now + lease + [`MAX_LEASE_SKEW_MS`], or not after the
    /// current configuration's.
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
    // Every judgement here must stay true as time passes, or a value locked in one round could
    // turn invalid in a later one and never be decided. So the lease end has an upper bound
    // from this member's clock (later time only relaxes it) and a lower bound from the current
    // configuration (leases never move back, so a Byzantine proposer cannot cut one short);
    // and joins' certificates are judged at the proposal's own time (lease end minus lease),
    // which those bounds keep between the last configuration's and this member's now.
    let lease = current.params.lease_ms();
    let latest = judge
        .now_ms
        .saturating_add(lease)
        .saturating_add(MAX_LEASE_SKEW_MS);
    if delta.valid_until > latest || (current.epoch > 0 && delta.valid_until <= current.valid_until)
    {
        return Err(InvalidDelta::Lease);
    }
    let at = Judge {
        now_ms: delta.valid_until.saturating_sub(lease),
        ..*judge
    };
    for change in &delta.changes {
        check_change(current, change, &at)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{test_cert_body, test_config, JoinRequest, Params};
    use ringvault_types::{Identity, NodeCertificate};

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn the_validity_predicate_refuses_bad_deltas_and_does_not_change_its_mind_later() {
        let (ca, _, genesis) = test_config(7, Params::DEFAULT);
        // Epoch 1, with its lease, as the committee would have made it.
        let lease = genesis.params.lease_ms();
        let first = Delta {
            epoch: 1,
            prev: genesis.hash(),
            changes: Vec::new(),
            valid_until: NOW + lease,
        };
        let current = genesis.apply(&first);
        let revoked = RevocationList::empty();
        let key = ca.public_key();
        let judge = |now_ms| Judge {
            ca: &key,
            revoked: &revoked,
            now_ms,
        };
        let newcomer = Identity::from_secret_bytes([77; 32]);
        let join = |ca: &Identity, not_after: u64| {
            let mut body = test_cert_body(&newcomer, 99);
            body.not_after = not_after;
            Change::Join(JoinRequest::new(
                &newcomer,
                NodeCertificate::issue(ca, body),
            ))
        };
        let now = NOW + genesis.params.epoch_ms;
        let delta = |changes, valid_until| Delta {
            epoch: 2,
            prev: current.hash(),
            changes,
            valid_until,
        };
        // The certificate runs out a minute after the proposal.
        let good = delta(vec![join(&ca, now / 1000 + 60)], now + lease);
        assert_eq!(check_delta(&current, &good, &judge(now)), Ok(()));
        // An hour later (the instance stalled, the certificate expired) it is still valid:
        // a value locked in an early round stays decidable.
        assert_eq!(
            check_delta(&current, &good, &judge(now + 3_600_000)),
            Ok(())
        );
        // A lease end too far ahead, or not after the current one, is refused.
        let far = delta(Vec::new(), now + lease + MAX_LEASE_SKEW_MS + 1);
        assert_eq!(
            check_delta(&current, &far, &judge(now)),
            Err(InvalidDelta::Lease)
        );
        let short = delta(Vec::new(), current.valid_until);
        assert_eq!(
            check_delta(&current, &short, &judge(now)),
            Err(InvalidDelta::Lease)
        );
        // A join signed by another CA, or expired at the proposal's time, is refused.
        let stranger = Identity::from_secret_bytes([78; 32]);
        let forged = delta(vec![join(&stranger, u64::MAX / 2)], now + lease);
        assert!(matches!(
            check_delta(&current, &forged, &judge(now)),
            Err(InvalidDelta::Join(_))
        ));
        let expired = delta(vec![join(&ca, now / 1000 - 1)], now + lease);
        assert!(matches!(
            check_delta(&current, &expired, &judge(now)),
            Err(InvalidDelta::Join(_))
        ));
        // Not on top of the current configuration.
        let mut stale = good.clone();
        stale.prev = genesis.hash();
        assert_eq!(
            check_delta(&current, &stale, &judge(now)),
            Err(InvalidDelta::NotNext)
        );
    }
}
