//! A ready node with storage (enforcing quotas, auditing its neighbours), account managers,
//! records and multicast services never panics on what a peer sends: the input is split into
//! messages from a few peers (some known, some not), each decoded and handled, with time moving
//! and every action drained.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringvault_accounts::{Accounts, AccountsConfig, Electorate};
use ringvault_node::Node;
use ringvault_overlay::{Config, Peer};
use ringvault_past::{
    insert_proven, reclaim_proven, AuditConfig, MemoryStore, Past, PastConfig, Quota,
};
use ringvault_records::{Records, RecordsConfig};
use ringvault_scribe::Scribe;
use ringvault_types::{Contact, Duration, Id, Identity, Time};

/// The node (0) and its 20 peers; deriving ed25519 keys is slow, so once per process.
fn contact(n: u8) -> Contact {
    static CONTACTS: OnceLock<Vec<Contact>> = OnceLock::new();
    CONTACTS.get_or_init(|| {
        (0..=20u8)
            .map(|n| {
                let id = Identity::from_secret_bytes([n; 32]).id();
                Contact::new(id, SocketAddr::from((Ipv4Addr::new(127, 0, 0, n), 7000)))
            })
            .collect()
    })[n as usize]
}

fuzz_target!(|data: &[u8]| {
    let me = Identity::from_secret_bytes([0; 32]);
    let mut node = Node::new(contact(0), Config::default(), 1).unwrap();
    let electorate = Electorate { m: 5, ca: None };
    let quota = Quota {
        electorate: electorate.clone(),
        unix_at_zero: 1_800_000_000,
    };
    let config = PastConfig {
        quota: Some(quota),
        audit: Some(AuditConfig::default()),
        ..PastConfig::default()
    };
    node.add_service(Box::new(
        Past::with_config(me, Box::new(MemoryStore::new(1 << 20)), config).unwrap(),
    ));
    let accounts = AccountsConfig {
        electorate,
        brokers: vec![Identity::from_secret_bytes([9; 32]).public_key()],
        cert: None,
        unix_at_zero: 1_800_000_000,
        secure: false,
        reclaimed: Box::new(reclaim_proven),
        inserted: Box::new(insert_proven),
    };
    let key = Identity::from_secret_bytes([0; 32]);
    node.add_service(Box::new(Accounts::new(key, accounts)));
    node.add_service(Box::new(Scribe::new()));
    let key = Identity::from_secret_bytes([0; 32]);
    node.add_service(Box::new(Records::new(key, RecordsConfig::default())));
    let peers = (1..=20u8).map(|n| Peer {
        contact: contact(n),
        rtt: Some(Duration::from_millis(n as u64)),
    });
    node.overlay_mut().start_with_state(Time::ZERO, peers);
    let mut now = Time::ZERO;
    // Frames: [peer byte][len byte][len bytes]...
    let mut rest = data;
    while rest.len() >= 2 {
        let (peer, len) = (rest[0], rest[1] as usize);
        rest = &rest[2..];
        let take = len.min(rest.len());
        let (frame, tail) = rest.split_at(take);
        rest = tail;
        let from = if peer % 4 == 0 {
            Contact::new(
                Id::hash(&[peer]),
                SocketAddr::from((Ipv4Addr::LOCALHOST, 9)),
            )
        } else {
            contact(1 + peer % 20)
        };
        now = now + Duration::from_millis(peer as u64 * 37);
        let _ = node.handle_bytes(now, from, frame);
        if peer % 7 == 0 {
            node.handle_timeout(now);
        }
        while node.poll_action().is_some() {}
    }
});
