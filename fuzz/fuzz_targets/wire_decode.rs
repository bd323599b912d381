//! The wire decoders are total: any bytes give a message or an error, and a decoded message
//! re-encodes to bytes that decode to the same message (open mode's framing, and secure mode's,
//! which carries certificates, and server mode's membership and quorum storage messages, which
//! a server's membership service, replica and quorum client then take without panicking).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ringvault_bft::{
    BftMessage, Config, Member, Membership, MembershipConfig, Params, QuorumClient, Replica,
    StoreMessage,
};
use ringvault_types::{CertBody, Identity, NodeCertificate, RevocationList, Time, CERT_VERSION};

fn identity(i: u8) -> Identity {
    Identity::from_secret_bytes([i + 1; 32])
}

/// A four-server configuration, made once.
fn genesis() -> &'static Arc<Config> {
    static GENESIS: OnceLock<Arc<Config>> = OnceLock::new();
    GENESIS.get_or_init(|| {
        let ca = identity(100);
        let members = (0..4)
            .map(|i| {
                let who = identity(i);
                let body = CertBody {
                    version: CERT_VERSION,
                    serial: i as u64,
                    node_id: who.id(),
                    public_key: who.public_key(),
                    addrs: vec![format!("127.0.0.1:{}", 7000 + i as u16).parse().unwrap()],
                    not_before: 0,
                    not_after: u64::MAX / 2,
                };
                Member {
                    cert: NodeCertificate::issue(&ca, body),
                    admitted: 0,
                }
            })
            .collect();
        Arc::new(Config::genesis(members, Params::DEFAULT, u64::MAX / 2))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = StoreMessage::decode(data) {
        assert_eq!(
            StoreMessage::decode(&msg.encode()).expect("re-encoded decodes"),
            msg
        );
        let config = genesis().clone();
        let mut replica = Replica::new(identity(0), config.clone(), 0, Vec::new(), &[], Time::ZERO);
        let mut client = QuorumClient::new(identity(2).id(), config);
        let _ = client.get_record(Time::ZERO, ringvault_types::Id::ZERO);
        let from = identity(1).id();
        replica.handle_message(Time::ZERO, from, msg.clone());
        client.handle_message(Time::ZERO, from, msg);
        while replica.poll_action().is_some() {}
        while client.poll_send().is_some() {}
    }
    if let Ok(msg) = BftMessage::decode(data) {
        assert_eq!(
            BftMessage::decode(&msg.encode()).expect("re-encoded decodes"),
            msg
        );
        let settings = MembershipConfig {
            ca: identity(100).public_key(),
            revoked: RevocationList::empty(),
            unix_ms_at_zero: 0,
            shared: None,
        };
        let config = genesis().clone();
        let mut m = Membership::new(identity(0), settings, config, None, None, false, Time::ZERO);
        m.handle_timeout(Time::from_micros(120_000_000));
        let from = identity(1).id();
        let _ = m.handle_message(Time::from_micros(120_000_000), from, msg);
        while m.poll_action().is_some() {}
    }
    if let Ok(msg) = ringvault_node::decode(data) {
        let bytes = ringvault_node::encode(&msg).expect("a decoded message re-encodes");
        assert_eq!(
            ringvault_node::decode(&bytes).expect("re-encoded decodes"),
            msg
        );
    }
    if let Ok(v) = ringvault_node::decode_vouched(data) {
        let bytes =
            ringvault_node::encode_vouched(&v.msg, &v.certs).expect("a decoded message re-encodes");
        assert_eq!(
            ringvault_node::decode_vouched(&bytes).expect("re-encoded decodes"),
            v
        );
    }
});
