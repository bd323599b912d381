//! Storage quotas end to end on a ring of real nodes (PAST and the accounts service): a grant
//! is used up and then refused with nothing stored, reclaiming gives it back, concurrent
//! writers never pass it, the managers still approve with one of three killed, and forged
//! grants and approvals are refused.

use ringvault_accounts::{
    account_key, binding, Accounts, AccountsConfig, AccountsError, Ballot, Committed, Electorate,
    Entry, RequestId, Vote,
};
use ringvault_overlay::Config;
use ringvault_past::{
    encode_certificates, insert_proven, reclaim_proof, reclaim_proven, sign_salts, FileCertificate,
    Inserted, MemoryStore, Past, PastConfig, PastError, PastEvent, Quota, ReclaimCertificate,
};
use ringvault_testkit::TestRing;
use ringvault_types::{Duration, Grant, Grantee, Id, Identity};

const MIB: u64 = 1 << 20;
/// Unix seconds at the ring's time zero.
const UNIX_AT_ZERO: u64 = 1_800_000_000;

fn broker() -> Identity {
    Identity::from_secret_bytes([77; 32])
}

fn ring(n: usize, m: usize) -> TestRing {
    let electorate = Electorate { m, ca: None };
    TestRing::new(n, Config::default(), |_, me, node| {
        let key = || Identity::from_secret_bytes(me.secret_bytes());
        let config = PastConfig {
            quota: Some(Quota {
                electorate: electorate.clone(),
                unix_at_zero: UNIX_AT_ZERO,
            }),
            ..PastConfig::default()
        };
        let store = Box::new(MemoryStore::new(256 * MIB));
        let past = Past::with_config(key(), store, config).unwrap();
        node.add_service(Box::new(past));
        let accounts = Accounts::new(
            key(),
            AccountsConfig {
                electorate: electorate.clone(),
                brokers: vec![broker().public_key()],
                cert: None,
                unix_at_zero: UNIX_AT_ZERO,
                secure: false,
                reclaimed: Box::new(reclaim_proven),
                inserted: Box::new(insert_proven),
            },
        );
        node.add_service(Box::new(accounts));
    })
}

fn grant_for(user: &Identity, bytes: u64) -> Grant {
    let now = UNIX_AT_ZERO;
    Grant::issue(
        &broker(),
        Grantee::Quota(user.public_key()),
        bytes,
        (now - 60, now + 86_400),
        1,
    )
}

fn answer(ring: &mut TestRing, i: usize, req: RequestId) -> Result<Committed, AccountsError> {
    let now = ring.now;
    let mut found = None;
    while let Some(Some(a)) = ring.members[i]
        .node
        .with_service::<Accounts, _>(now, |s, _| s.poll_answer())
    {
        if a.req == req {
            found = Some(a.result.map(|c| c.expect("an entry")));
        }
    }
    found.unwrap_or_else(|| panic!("request {req:?} on node {i} did not finish"))
}

fn debit(
    ring: &mut TestRing,
    i: usize,
    user: &Identity,
    grant: &Grant,
    certs: &[FileCertificate],
) -> Result<Committed, AccountsError> {
    let req = start_debit(ring, i, user, grant, certs, 1);
    ring.settle();
    answer(ring, i, req)
}

fn start_debit(
    ring: &mut TestRing,
    i: usize,
    user: &Identity,
    grant: &Grant,
    certs: &[FileCertificate],
    nonce: u64,
) -> RequestId {
    let b = &certs[0].body;
    let ids = certs.iter().map(|c| c.id()).collect();
    let bind = binding(&b.content_hash, b.size, b.replicas);
    let (user, grant, size, k, date) =
        (user.public_key(), grant.clone(), b.size, b.replicas, b.date);
    let encoded = encode_certificates(certs);
    ring.start::<Accounts, _>(i, |s, kbr, now, _| {
        s.debit(
            kbr,
            now,
            user,
            (grant, encoded),
            ids,
            bind,
            (size, k, date),
            nonce,
        )
    })
    .expect("the request starts")
}

fn past_event(ring: &mut TestRing, i: usize, req: ringvault_past::RequestId) -> PastEvent {
    let now = ring.now;
    let mut found = None;
    while let Some(Some(e)) = ring.members[i]
        .node
        .with_service::<Past, _>(now, |p, _| p.poll_event())
    {
        if e.request() == req {
            found = Some(e);
        }
    }
    found.unwrap_or_else(|| panic!("request {req} on node {i} did not finish"))
}

fn insert(
    ring: &mut TestRing,
    i: usize,
    certs: &[FileCertificate],
    content: &[u8],
    approval: Option<Committed>,
) -> Result<Inserted, PastError> {
    let (certs, content) = (certs.to_vec(), content.to_vec());
    let req = ring
        .call::<Past, _>(i, |p, kbr, now, _| {
            p.insert_approved(kbr, now, certs, content, approval)
        })
        .expect("the insert starts");
    match past_event(ring, i, req) {
        PastEvent::Inserted(_, r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

/// Debits and stores `name` (`size` bytes, `k` copies) for `user` through node `i`.
fn put(
    ring: &mut TestRing,
    i: usize,
    user: &Identity,
    grant: &Grant,
    name: &str,
    (size, k): (u64, u8),
) -> Result<Inserted, String> {
    let content = vec![name.len() as u8; size as usize];
    let certs = sign_salts(user, name, &content, k, UNIX_AT_ZERO);
    let approval = debit(ring, i, user, grant, &certs).map_err(|e| e.to_string())?;
    insert(ring, i, &certs, &content, Some(approval)).map_err(|e| e.to_string())
}

/// Nodes holding a copy of `id` (caches aside).
fn holders(ring: &mut TestRing, id: &Id) -> usize {
    let now = ring.now;
    (0..ring.members.len())
        .filter(|&i| {
            ring.members[i]
                .node
                .with_service::<Past, _>(now, |p, _| {
                    matches!(p.store().meta(id), Ok(Some((k, _))) if k != ringvault_past::Kind::Cached)
                })
                .unwrap_or(false)
        })
        .count()
}

/// Reclaims `id` for `user` through node `i` and gives its debit back; answers the credit and
/// the reclaim's receipts.
fn reclaim(
    ring: &mut TestRing,
    i: usize,
    user: &Identity,
    id: Id,
    k: u8,
) -> (Committed, Vec<ringvault_past::ReclaimReceipt>) {
    let cert = ReclaimCertificate::issue(user, id, UNIX_AT_ZERO + 30);
    let req = ring
        .call::<Past, _>(i, |p, kbr, now, _| p.reclaim(kbr, now, cert, k))
        .expect("the reclaim starts");
    let receipts = match past_event(ring, i, req) {
        PastEvent::Reclaimed(_, Ok(r)) => r,
        other => panic!("reclaim failed: {other:?}"),
    };
    let proof = reclaim_proof(&receipts);
    let owner = user.public_key();
    let req = ring
        .call::<Accounts, _>(i, |s, kbr, now, _| s.credit(kbr, now, owner, id, proof))
        .expect("the credit starts");
    let credit = answer(ring, i, req).expect("the credit is committed");
    (credit, receipts)
}

#[test]
fn a_grant_of_ten_mib_stores_ten_mib_and_no_more_and_a_reclaim_gives_it_back() {
    let mut ring = ring(24, 7);
    let user = Identity::from_secret_bytes([5; 32]);
    let grant = grant_for(&user, 10 * MIB);
    // Five objects of 1 MiB with two copies each: 10 MiB of the ring, the whole grant.
    let mut stored = Vec::new();
    for n in 0..5 {
        let name = format!("file-{n}");
        let ins = put(&mut ring, n % 24, &user, &grant, &name, (MIB, 2))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(holders(&mut ring, &ins.cert.id()), 2);
        stored.push(ins.cert.id());
    }
    // The sixth is refused by the managers with the balance, and nothing of it is stored:
    // without an approval no replica takes it either.
    let content = vec![1u8; MIB as usize];
    let certs = sign_salts(&user, "file-5", &content, 2, UNIX_AT_ZERO);
    let refused = debit(&mut ring, 7, &user, &grant, &certs);
    assert_eq!(
        refused,
        Err(AccountsError::OverQuota {
            balance: 10 * MIB,
            limit: 10 * MIB,
            asked: 2 * MIB
        })
    );
    assert_eq!(
        insert(&mut ring, 7, &certs, &content, None).unwrap_err(),
        PastError::Unapproved
    );
    assert_eq!(holders(&mut ring, &certs[0].id()), 0);
    // The same object again (a client that re-sends) is answered with its existing charge;
    // the same name with other content is refused. An approval for one object does not store
    // another.
    let same = vec!["file-0".len() as u8; MIB as usize];
    let first = sign_salts(&user, "file-0", &same, 2, UNIX_AT_ZERO);
    let other = debit(&mut ring, 3, &user, &grant, &first);
    assert!(
        other.is_ok(),
        "the same object again is its existing charge: {other:?}"
    );
    let changed = sign_salts(&user, "file-0", &vec![4u8; MIB as usize], 2, UNIX_AT_ZERO);
    assert_eq!(
        debit(&mut ring, 3, &user, &grant, &changed),
        Err(AccountsError::Duplicate)
    );
    assert_eq!(
        insert(&mut ring, 7, &certs, &content, other.ok()).unwrap_err(),
        PastError::Unapproved
    );
    assert_eq!(holders(&mut ring, &certs[0].id()), 0);

    // Reclaiming one object gives its 2 MiB back, once; then the sixth fits.
    let (credit, receipts) = reclaim(&mut ring, 11, &user, stored[2], 2);
    assert_eq!(credit.entry.balance, 8 * MIB);
    let owner = user.public_key();
    let again = reclaim_proof(&[]);
    let req = ring
        .call::<Accounts, _>(11, |s, kbr, now, _| {
            s.credit(kbr, now, owner, stored[2], again)
        })
        .unwrap();
    assert!(matches!(
        answer(&mut ring, 11, req),
        Err(AccountsError::NoCredit(_))
    ));
    put(&mut ring, 9, &user, &grant, "file-5", (MIB, 2)).expect("fits after the reclaim");

    // The same object stored again (a later insert, charged again, once another reclaim made
    // room) cannot be given back with the receipts of the earlier reclaim: they name the
    // earlier insert.
    reclaim(&mut ring, 12, &user, stored[3], 2);
    let content = vec!["file-2".len() as u8; MIB as usize];
    let later = sign_salts(&user, "file-2", &content, 2, UNIX_AT_ZERO + 60);
    let approval = debit(&mut ring, 4, &user, &grant, &later).expect("fits: 10 MiB again");
    insert(&mut ring, 4, &later, &content, Some(approval)).expect("stored again");
    let req = ring
        .call::<Accounts, _>(11, |s, kbr, now, _| {
            s.credit(kbr, now, owner, stored[2], reclaim_proof(&receipts))
        })
        .unwrap();
    assert!(matches!(
        answer(&mut ring, 11, req),
        Err(AccountsError::NoCredit(_))
    ));
}

#[test]
fn sixteen_concurrent_writers_never_pass_the_grant() {
    let mut ring = ring(32, 7);
    let user = Identity::from_secret_bytes([6; 32]);
    let grant = grant_for(&user, 10 * MIB);
    // Sixteen writers on sixteen nodes ask at once for 1 MiB each, twice: 32 MiB asked, 10
    // granted.
    let mut started = Vec::new();
    for round in 0..2 {
        for w in 0..16 {
            let name = format!("w{w}-{round}");
            let content = vec![w as u8; MIB as usize];
            let certs = sign_salts(&user, &name, &content, 1, UNIX_AT_ZERO);
            let node = w * 2;
            let req = start_debit(
                &mut ring,
                node,
                &user,
                &grant,
                &certs,
                (round * 16 + w) as u64,
            );
            started.push((node, req, certs, content));
        }
    }
    ring.settle();
    let now = ring.now;
    let mut answers = std::collections::BTreeMap::new();
    for i in 0..ring.members.len() {
        while let Some(Some(a)) = ring.members[i]
            .node
            .with_service::<Accounts, _>(now, |s, _| s.poll_answer())
        {
            answers.insert((i, a.req), a.result.map(|c| c.expect("an entry")));
        }
    }
    let mut approved = 0;
    let mut over = 0;
    for (node, req, certs, content) in started {
        match answers
            .remove(&(node, req))
            .expect("every request finished")
        {
            Ok(approval) => {
                approved += 1;
                insert(&mut ring, node, &certs, &content, Some(approval)).expect("approved");
            }
            Err(AccountsError::OverQuota { .. }) => over += 1,
            Err(e) => panic!("writer on node {node}: {e}"),
        }
    }
    assert_eq!((approved, over), (10, 22));
    // Every manager that holds the log agrees on it, and it ends at the grant exactly.
    let key = account_key(&user.public_key());
    let managers = ring.closest_live(&key, 7);
    let now = ring.now;
    for i in managers {
        let balance = ring.members[i]
            .node
            .with_service::<Accounts, _>(now, |s, _| {
                s.account(&user.public_key()).map(|a| a.balance())
            })
            .flatten();
        assert!(
            matches!(balance, Some(b) if b == 10 * MIB),
            "manager {i} has {balance:?}"
        );
    }
}

#[test]
fn the_managers_still_approve_with_one_of_three_killed_even_the_proposer() {
    let mut ring = ring(16, 3);
    let user = Identity::from_secret_bytes([8; 32]);
    let grant = grant_for(&user, 10 * MIB);
    put(&mut ring, 0, &user, &grant, "before", (MIB, 2)).unwrap();
    let key = account_key(&user.public_key());
    let managers = ring.closest_live(&key, 3);
    // The root (the proposer) dies; once the leaf sets notice, the next closest proposes
    // under a higher ballot and learns the log from the two left.
    ring.kill(managers[0]);
    ring.advance(Duration::from_secs(60));
    let client = (0..16).find(|i| !managers.contains(i)).unwrap();
    let content = vec![3u8; MIB as usize];
    let certs = sign_salts(&user, "after", &content, 2, UNIX_AT_ZERO);
    // At once: the new proposer's first ballot is refused (the old one's was higher), and it
    // tries again above it without waiting for a round time-out.
    let approval = debit(&mut ring, client, &user, &grant, &certs).expect("approved");
    // Signed by a majority of live managers, none of them the dead one.
    let dead = ring.members[managers[0]].identity.public_key();
    assert!(approval.votes.len() >= 2);
    assert!(approval.votes.iter().all(|v| v.manager != dead));
    insert(&mut ring, client, &certs, &content, Some(approval)).expect("stored");
    let now = ring.now;
    let balance = ring.members[managers[1]]
        .node
        .with_service::<Accounts, _>(now, |s, _| {
            s.account(&user.public_key()).map(|a| a.balance())
        })
        .flatten();
    // The new proposer built on the old log: both charges count.
    assert_eq!(balance, Some(4 * MIB));
}

#[test]
fn forged_grants_and_approvals_are_refused() {
    let mut ring = ring(200, 7);
    let user = Identity::from_secret_bytes([9; 32]);
    let content = vec![2u8; 4096];
    let certs = sign_salts(&user, "forged", &content, 3, UNIX_AT_ZERO);
    // Grants the managers must refuse: a broker the ring does not trust, another user's, an
    // expired one, and a genuine one changed after signing.
    let rogue = Identity::from_secret_bytes([78; 32]);
    let other = Identity::from_secret_bytes([10; 32]);
    let now = UNIX_AT_ZERO;
    let mut inflated = grant_for(&user, MIB);
    inflated.body.bytes = 1 << 40;
    let bad = [
        Grant::issue(
            &rogue,
            Grantee::Quota(user.public_key()),
            MIB,
            (0, now + 60),
            1,
        ),
        grant_for(&other, MIB),
        Grant::issue(
            &broker(),
            Grantee::Quota(user.public_key()),
            MIB,
            (0, now - 1),
            1,
        ),
        inflated,
    ];
    for g in &bad {
        let r = debit(&mut ring, 1, &user, g, &certs);
        assert!(matches!(r, Err(AccountsError::Grant(_))), "{g:?}: {r:?}");
    }
    // The genuine grant, seen by someone who is not the owner (a routing hop, a node the
    // owner used), cannot charge it for objects the owner did not sign.
    let thief = Identity::from_secret_bytes([11; 32]);
    let theirs = sign_salts(&thief, "not-yours", &content, 3, UNIX_AT_ZERO);
    let b = &theirs[0].body;
    let ids = theirs.iter().map(|c| c.id()).collect();
    let bind = binding(&b.content_hash, b.size, b.replicas);
    let (owner, grant, encoded) = (
        user.public_key(),
        grant_for(&user, MIB),
        encode_certificates(&theirs),
    );
    let size = b.size;
    let req = ring
        .call::<Accounts, _>(1, |s, kbr, now, _| {
            s.debit(
                kbr,
                now,
                owner,
                (grant, encoded),
                ids,
                bind,
                (size, 3, UNIX_AT_ZERO),
                5,
            )
        })
        .unwrap();
    assert!(matches!(
        answer(&mut ring, 1, req),
        Err(AccountsError::Grant(_))
    ));
    // Approvals the replicas must refuse: none, one signed by keys made up for it, and a
    // genuine one for other content.
    assert_eq!(
        insert(&mut ring, 2, &certs, &content, None).unwrap_err(),
        PastError::Unapproved
    );
    let b = &certs[0].body;
    let change = ringvault_accounts::Change::Debit(ringvault_accounts::Debit {
        ids: certs.iter().map(|c| c.id()).collect(),
        binding: binding(&b.content_hash, b.size, b.replicas),
        bytes: b.size * 3,
        replicas: 3,
        date: UNIX_AT_ZERO,
        expiry: u64::MAX,
        nonce: 1,
    });
    let entry = Entry::after(user.public_key(), None, change, u64::MAX).unwrap();
    let ballot = Ballot::default();
    let fakes: Vec<Identity> = (0..7)
        .map(|i| Identity::from_secret_bytes([100 + i; 32]))
        .collect();
    let forged = Committed {
        entry: entry.clone(),
        ballot,
        votes: fakes
            .iter()
            .map(|k| Vote::issue(k, None, &entry, ballot))
            .collect(),
    };
    assert_eq!(
        insert(&mut ring, 2, &certs, &content, Some(forged)).unwrap_err(),
        PastError::Unapproved
    );
    let genuine = grant_for(&user, MIB);
    let small = vec![1u8; 10];
    let small_certs = sign_salts(&user, "forged", &small, 3, UNIX_AT_ZERO);
    let approval = debit(&mut ring, 1, &user, &genuine, &small_certs).unwrap();
    assert_eq!(
        insert(&mut ring, 2, &certs, &content, Some(approval.clone())).unwrap_err(),
        PastError::Unapproved
    );
    assert_eq!(holders(&mut ring, &certs[0].id()), 0);
    // The control: the genuine approval stores its own object.
    insert(&mut ring, 2, &small_certs, &small, Some(approval)).expect("the genuine approval");
}

#[test]
fn the_balance_survives_its_managers_replaced_one_by_one_with_no_write_between() {
    let mut ring = ring(16, 3);
    let user = Identity::from_secret_bytes([12; 32]);
    let grant = grant_for(&user, 10 * MIB);
    put(&mut ring, 0, &user, &grant, "first", (MIB, 2)).unwrap();
    let key = account_key(&user.public_key());
    let original = ring.closest_live(&key, 3);
    // Each original manager dies in turn; the leaf sets repair in between, and the newcomer
    // to the set is sent the log.
    for &m in &original {
        ring.kill(m);
        ring.advance(Duration::from_secs(60));
    }
    let client = (0..16).find(|i| !original.contains(i)).unwrap();
    let content = vec![4u8; MIB as usize];
    let certs = sign_salts(&user, "second", &content, 2, UNIX_AT_ZERO);
    let approval = debit(&mut ring, client, &user, &grant, &certs).expect("approved");
    // Built on the first charge: none of the managers that approved it is left.
    assert_eq!(approval.entry.seq, 2);
    assert_eq!(approval.entry.balance, 4 * MIB);
}
