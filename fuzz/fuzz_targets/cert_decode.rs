//! The certificate, request, revocation-list, record, grant and quota-approval decoders (and the text armor around
//! them) are total: any bytes give a value or an error, verifying a decoded value never panics,
//! and a decoded value re-encodes to bytes that decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringvault_accounts::{check, Account, Committed, Debit, Electorate, Insert, Vantage};
use ringvault_past::{insert_proven, reclaim_proven};
use ringvault_types::{
    unarmor, CertRequest, Grant, Id, Identity, NodeCertificate, Record, RevocationList,
};

fuzz_target!(|data: &[u8]| {
    let ca = Identity::from_secret_bytes([1; 32]).public_key();
    let revoked = RevocationList::empty();
    if let Ok(cert) = NodeCertificate::decode(data) {
        let _ = cert.verify(&ca, 1_800_000_000, &revoked);
        assert_eq!(NodeCertificate::decode(&cert.encode()), Ok(cert));
    }
    if let Ok(list) = RevocationList::decode(data) {
        let _ = list.verify(&ca);
        let _ = list.revokes(7);
        assert_eq!(RevocationList::decode(&list.encode()), Ok(list));
    }
    if let Ok(req) = CertRequest::decode(data) {
        let _ = req.verify();
        assert_eq!(CertRequest::decode(&req.encode()), Ok(req));
    }
    if let Ok(record) = Record::decode(data) {
        let _ = record.verify();
        let _ = record.precedence(&record);
        assert_eq!(Record::decode(&record.encode()), Ok(record));
    }
    if let Ok(grant) = Grant::decode(data) {
        let _ = grant.verify(&[ca], 1_800_000_000);
        assert_eq!(Grant::decode(&grant.encode()), Ok(grant));
    }
    let user = Identity::from_secret_bytes([2; 32]).public_key();
    let at = Vantage {
        me: Id::ZERO,
        gap: Some(1e-3),
        unix: 1_800_000_000,
        revoked: &revoked,
    };
    let electorate = Electorate { m: 7, ca: Some(ca) };
    if let Ok(c) = Committed::decode(data) {
        let insert = Insert {
            id: Id::hash(data),
            owner: &user,
            content_hash: &[0; 32],
            size: 10,
            replicas: 3,
        };
        let _ = check(&electorate, &c, &insert, &at);
        let _ = Account::new(user).learn(c.clone(), |c| electorate.verify(&user, c, &at));
        assert_eq!(Committed::decode(&c.encode()), Ok(c));
    }
    let _ = reclaim_proven(&user, &Id::hash(data), data, &at, (3, 7));
    let debit = Debit {
        ids: vec![Id::hash(data)],
        binding: Id::ZERO,
        bytes: 30,
        replicas: 3,
        date: 0,
        expiry: 1,
        nonce: 0,
    };
    let _ = insert_proven(&user, data, &debit);
    let _ = unarmor("NODE CERTIFICATE", &String::from_utf8_lossy(data));
});
