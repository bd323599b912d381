//! The certificate, request, revocation-list, record and grant decoders (and the text armor around
//! them) are total: any bytes give a value or an error, verifying a decoded value never panics,
//! and a decoded value re-encodes to bytes that decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringvault_types::{
    unarmor, CertRequest, Grant, Identity, NodeCertificate, Record, RevocationList,
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
    let _ = unarmor("NODE CERTIFICATE", &String::from_utf8_lossy(data));
});
