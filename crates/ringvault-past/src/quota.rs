//! PAST in a ring that enforces storage quotas (`PastConfig::quota`): an insert carries the
//! owner's debit approval (a committed entry of the owner's ledger, `ringvault_accounts`) to
//! every replica, and a node stores it only if the approval fits this object and is signed by
//! a majority of plausible account managers of the owner. Reclaim receipts are the proof the
//! managers take for giving a debit back.
//!
//! Maintenance copies need no new debit: they carry no approval and are taken, as in any ring,
//! only by members of the object's replica set.

use ringvault_accounts::{check, quorum, Committed, Debit, Electorate, Insert, Vantage};
use ringvault_overlay::Kbr;
use ringvault_types::{Id, Identity, PublicKey, RevocationList, Time};

use crate::past::{Past, MAX_RESALTS};
use crate::{FileCertificate, ReclaimReceipt};

/// How a node enforces quotas.
#[derive(Clone, Debug)]
pub struct Quota {
    /// Whose votes count, and how many managers an account has.
    pub electorate: Electorate,
    /// Unix seconds at the driver's time zero (approvals expire in Unix time).
    pub unix_at_zero: u64,
}

impl PartialEq for Quota {
    fn eq(&self, other: &Self) -> bool {
        self.unix_at_zero == other.unix_at_zero
            && self.electorate.m == other.electorate.m
            && self.electorate.ca == other.electorate.ca
    }
}

impl Past {
    /// Whether an insert of `cert` with `approval` may be stored here: always in a ring
    /// without quotas; with them, when the approval fits and verifies, or this node holds
    /// this very object already (a client re-sending an insert that completed).
    pub(crate) fn approved(
        &self,
        kbr: &dyn Kbr,
        now: Time,
        cert: &FileCertificate,
        approval: Option<&Committed>,
    ) -> bool {
        let Some(q) = &self.config.quota else {
            return true;
        };
        let held = matches!(self.store.get(&cert.id()), Ok(Some(o))
            if o.kind != crate::Kind::Cached && o.cert.same_object(cert));
        if held {
            return true;
        }
        let Some(approval) = approval else {
            return false;
        };
        let b = &cert.body;
        let insert = Insert {
            id: cert.id(),
            owner: &b.owner,
            content_hash: &b.content_hash,
            size: b.size,
            replicas: b.replicas,
        };
        let revoked = RevocationList::empty();
        let at = Vantage {
            me: kbr.local_contact().id,
            gap: kbr.id_gap(),
            unix: q.unix_at_zero + now.as_micros() / 1_000_000,
            revoked: &revoked,
        };
        check(&q.electorate, approval, &insert, &at).is_ok()
    }
}

/// The certificates of `content` as object `name` of `owner` under every salt file diversion
/// may try (0 to `MAX_RESALTS`): signed in advance, so a debit can name every id the object
/// may end up under.
pub fn sign_salts(
    owner: &Identity,
    name: &str,
    content: &[u8],
    replicas: u8,
    date: u64,
) -> Vec<FileCertificate> {
    (0..=u64::from(MAX_RESALTS))
        .map(|salt| FileCertificate::issue(owner, name, salt, content, replicas, date))
        .collect()
}

/// Whether `certs` (as [`crate::encode_certificates`] wrote them) are `user`'s signed
/// certificates of one object under the salts `debit` names, in order, certifying the content,
/// size, k and date it charges for: so a debit can only be made for what the owner signed.
pub fn insert_proven(user: &PublicKey, certs: &[u8], debit: &Debit) -> bool {
    let Ok(certs) = crate::decode_certificates(certs) else {
        return false;
    };
    let Some(first) = certs.first() else {
        return false;
    };
    let b = &first.body;
    let same = |c: &FileCertificate| {
        let o = &c.body;
        o.owner == *user
            && o.name == b.name
            && o.content_hash == b.content_hash
            && (o.size, o.replicas, o.date) == (b.size, b.replicas, b.date)
            && c.verify().is_ok()
    };
    certs.len() == debit.ids.len()
        && certs
            .iter()
            .zip(&debit.ids)
            .all(|(c, id)| c.id() == *id && same(c))
        && debit.binding == ringvault_accounts::binding(&b.content_hash, b.size, b.replicas)
        && b.size.checked_mul(u64::from(b.replicas)) == Some(debit.bytes)
        && (debit.replicas, debit.date) == (b.replicas, b.date)
}

/// The proof of a reclaim the account managers take to give its debit back: the storage
/// nodes' reclaim receipts.
pub fn reclaim_proof(receipts: &[ReclaimReceipt]) -> Vec<u8> {
    // Plain data always encodes.
    postcard::to_allocvec(receipts).unwrap_or_default()
}

/// Whether `proof` shows `object`, as inserted at `date` or later, released by a majority of its
/// `replicas` holders: receipts for that insert that verify, from distinct nodes plausibly among
/// its closest (the density rule of the account managers' votes). Later: a put the client sent
/// again under a newer certificate reuses the first one's charge, and holders keep the newer
/// certificate; earlier receipts (a reclaim before this insert) never count. The user is the
/// managers' concern: their log says whose object it is.
pub fn reclaim_proven(
    _user: &PublicKey,
    object: &Id,
    proof: &[u8],
    at: &Vantage<'_>,
    (replicas, date): (u8, u64),
) -> bool {
    let Ok(receipts) = postcard::from_bytes::<Vec<ReclaimReceipt>>(proof) else {
        return false;
    };
    let k = usize::from(replicas.max(1));
    let mut nodes: Vec<Id> = receipts
        .iter()
        .filter(|r| r.inserted >= date && r.verify(object).is_ok())
        .filter(|r| ringvault_accounts::near(object, &r.node, k, at))
        .map(|r| r.node)
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes.len() >= quorum(k)
}
