//! Secure mode on loopback: certified nodes form a ring; a peer with no certificate, another
//! CA's, an expired one, one whose id is not its key's hash, one presented with another key, or
//! a revoked one is refused at the handshake with its reason counted; a revocation list spreads
//! along the leaf sets and shuts a revoked member out of the ring.

mod common;

use std::time::Duration;

use common::*;
use ringvault_net::{client_config, server_name_for, SecureRing, Security, SecurityStatus};
use ringvault_types::{CertBody, Id, Identity, NodeCertificate, RevocationList, CERT_VERSION};

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn ca() -> Identity {
    Identity::from_secret_bytes([200; 32])
}

/// A serial unique to `node` (the test's CA numbers certificates by their node).
fn serial_of(node: &Identity) -> u64 {
    u64::from_le_bytes(node.id().as_bytes()[..8].try_into().unwrap())
}

fn body(node: &Identity, not_before: u64, not_after: u64) -> CertBody {
    CertBody {
        version: CERT_VERSION,
        serial: serial_of(node),
        node_id: node.id(),
        public_key: node.public_key(),
        addrs: vec!["127.0.0.1:7000".parse().unwrap()],
        not_before,
        not_after,
    }
}

fn valid(node: &Identity) -> CertBody {
    let now = unix_now();
    body(node, now - 60, now + 3_600)
}

fn secure(cert: NodeCertificate) -> Security {
    Security::Secure(Box::new(SecureRing {
        ca: ca().public_key(),
        cert,
        revocations: RevocationList::empty(),
    }))
}

/// Dials `addr` as `identity` presenting `security`'s certificate; `Ok` when admitted.
///
/// A TLS 1.3 client finishes its side of the handshake before the server has checked the
/// client's certificate, so a refusal can arrive just after the dial "succeeds". The dial
/// therefore sends one (empty, invalid) frame and waits until the server has acknowledged it or
/// the connection is lost: the server answers one way or the other, no timing involved.
async fn dial(
    addr: std::net::SocketAddr,
    identity: &Identity,
    security: &Security,
) -> Result<(), String> {
    let mut ep = quinn::Endpoint::client(loopback()).unwrap();
    ep.set_default_client_config(client_config(identity, security).unwrap());
    let attempt = async {
        let c = ep
            .connect(addr, &server_name_for(None))
            .unwrap()
            .await
            .map_err(|e| e.to_string())?;
        let mut s = c.open_uni().await.map_err(|e| e.to_string())?;
        s.write_all(&[0, 0, 0, 0])
            .await
            .map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())?;
        let r = s.stopped().await.map(|_| ()).map_err(|e| e.to_string());
        c.close(0u32.into(), b"");
        r
    };
    let r = tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".into()));
    ep.close(0u32.into(), b"");
    r
}

async fn refused(h: &ringvault_net::NodeHandle, reason: &str) -> u64 {
    let st = h.status().await.unwrap();
    st.metrics.peers_refused.get(reason).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certified_nodes_form_a_ring_and_every_bad_certificate_is_refused_with_its_reason() {
    let dirs = TempDir::new("secure");
    let cfg = fast_config();
    let mut nodes = Vec::new();
    for i in 0..5 {
        let boot = nodes
            .last()
            .map(|n: &ringvault_net::RunningNode| vec![n.contact().addr])
            .unwrap_or_default();
        let node = start_node_with(&dirs.node(i), loopback(), boot, cfg.clone(), |id| {
            secure(NodeCertificate::issue(&ca(), valid(id)))
        })
        .await;
        nodes.push(node);
    }
    let handles: Vec<_> = nodes.iter().map(|n| n.handle()).collect();
    let ids: Vec<Id> = nodes.iter().map(|n| n.contact().id).collect();
    eventually(Duration::from_secs(20), || async {
        let st = statuses(&handles).await?;
        let wrong = wrong_leaf_sets(&st, &ids, cfg.leaf_set_size / 2);
        wrong.is_empty().then_some(()).ok_or(wrong.join("; "))
    })
    .await;
    let st = handles[0].status().await.unwrap();
    assert!(matches!(st.security, SecurityStatus::Secure { .. }));

    let target = nodes[0].contact().addr;
    let h = &handles[0];
    let stranger = Identity::from_secret_bytes([7; 32]);

    // A valid certificate is admitted: the positive control for every refusal below.
    let good = secure(NodeCertificate::issue(&ca(), valid(&stranger)));
    dial(target, &stranger, &good)
        .await
        .expect("a valid certificate");

    // An open-mode node (no certificate at all) speaks another ALPN: refused as a mode mismatch.
    let before = refused(h, "mode_mismatch").await;
    let e = dial(target, &stranger, &Security::Open).await.unwrap_err();
    assert!(
        e.to_lowercase().contains("application protocol")
            || e.to_lowercase().contains("known protocol"),
        "{e}"
    );
    assert_eq!(refused(h, "mode_mismatch").await, before + 1);

    let rogue_ca = Identity::from_secret_bytes([201; 32]);
    let now = unix_now();
    let mut chosen_id = valid(&stranger);
    chosen_id.node_id = Id::hash(b"an id next to a key I want");
    let someone_else = Identity::from_secret_bytes([8; 32]);
    let cases: Vec<(&str, Identity, NodeCertificate)> = vec![
        (
            "bad_signature",
            Identity::from_secret_bytes([7; 32]),
            NodeCertificate::issue(&rogue_ca, valid(&stranger)),
        ),
        (
            "expired",
            Identity::from_secret_bytes([7; 32]),
            NodeCertificate::issue(&ca(), body(&stranger, now - 7_200, now - 3_600)),
        ),
        (
            "not_yet_valid",
            Identity::from_secret_bytes([7; 32]),
            NodeCertificate::issue(&ca(), body(&stranger, now + 3_600, now + 7_200)),
        ),
        (
            "id_mismatch",
            Identity::from_secret_bytes([7; 32]),
            NodeCertificate::issue(&ca(), chosen_id),
        ),
        (
            // A valid certificate of someone else, presented with the stranger's own key.
            "key_mismatch",
            Identity::from_secret_bytes([7; 32]),
            NodeCertificate::issue(&ca(), valid(&someone_else)),
        ),
    ];
    for (reason, identity, cert) in cases {
        let before = refused(h, reason).await;
        let r = dial(target, &identity, &secure(cert)).await;
        assert!(r.is_err(), "{reason}: admitted");
        assert_eq!(refused(h, reason).await, before + 1, "{reason} not counted");
    }

    // Revocation: hand a list to one node; it spreads along the leaf sets, the stranger's
    // certificate (admitted above) is refused everywhere, and a revoked ring member is shut out.
    let member = Identity::from_secret_bytes(
        ringvault_net::load_or_create_identity(&dirs.node(4))
            .unwrap()
            .secret_bytes(),
    );
    let list = RevocationList::issue(
        &ca(),
        1,
        vec![serial_of(&stranger), serial_of(&member)],
        now,
        now + 3_600,
    );
    let forged = RevocationList::issue(&rogue_ca, 9, vec![], now, now + 3_600);
    assert!(
        handles[2].revocations(forged).await.is_err(),
        "a list not signed by the CA was adopted"
    );
    assert_eq!(handles[2].revocations(list).await.unwrap(), (true, 1));
    let correct = &handles[..4];
    eventually(Duration::from_secs(20), || async {
        for (i, h) in correct.iter().enumerate() {
            let st = h.status().await.map_err(|e| e.to_string())?;
            match st.security {
                SecurityStatus::Secure {
                    revocations_version: 1,
                    ..
                } => {}
                _ => return Err(format!("node {i} has not adopted the list")),
            }
            if st.leaf_ids().contains(&member.id()) {
                return Err(format!("node {i} still has the revoked member"));
            }
        }
        Ok(())
    })
    .await;
    // The revoked member is still running and redialling, so its refusals count here too: the
    // count must grow, by one at least.
    let before = refused(h, "revoked").await;
    assert!(dial(target, &stranger, &good).await.is_err());
    assert!(refused(h, "revoked").await > before);
    // An older list is not adopted over the newer one.
    let old = RevocationList::issue(&ca(), 0, vec![], now, now + 3_600);
    assert_eq!(handles[0].revocations(old).await.unwrap(), (false, 1));

    // Renewal without a restart: a new certificate for the node's own key is taken and shown;
    // one for another key, or another CA's, is refused and the old one kept.
    let me = Identity::from_secret_bytes(
        ringvault_net::load_or_create_identity(&dirs.node(0))
            .unwrap()
            .secret_bytes(),
    );
    let mut renewed = body(&me, now - 60, now + 7_200);
    renewed.serial = 424_242;
    handles[0]
        .renew_certificate(NodeCertificate::issue(&ca(), renewed.clone()))
        .await
        .expect("a new certificate for this node's key");
    let serial = |st: ringvault_net::Status| match st.security {
        SecurityStatus::Secure { serial, .. } => serial,
        SecurityStatus::Open => 0,
    };
    assert_eq!(serial(handles[0].status().await.unwrap()), 424_242);
    let err = handles[0]
        .renew_certificate(NodeCertificate::issue(&ca(), valid(&stranger)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("issued for another"), "{err}");
    let err = handles[0]
        .renew_certificate(NodeCertificate::issue(&rogue_ca, renewed))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    assert_eq!(serial(handles[0].status().await.unwrap()), 424_242);
    // The node still admits a valid peer after its TLS configuration was rebuilt.
    dial(
        target,
        &Identity::from_secret_bytes([11; 32]),
        &secure(NodeCertificate::issue(
            &ca(),
            valid(&Identity::from_secret_bytes([11; 32])),
        )),
    )
    .await
    .expect("the renewed node admits a valid peer");

    for n in nodes {
        n.shutdown().await;
    }
}
