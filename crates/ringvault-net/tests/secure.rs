//! Secure mode on loopback: certified nodes form a ring; a peer with no certificate, another
//! CA's, an expired one, one whose id is not its key's hash, one presented with another key, or
//! a revoked one is refused at the handshake with its reason counted; a revocation list spreads
//! along the leaf sets and shuts a revoked member out of the ring.

mod common;

fn ca() -> Identity {
    Identity::from_secret_bytes([200; 32])
}

fn secure(cert: NodeCertificate) -> Security {
    secure_with(&ca(), cert)
}

use std::time::Duration;

use common::*;
use ringvault_net::{Security, SecurityStatus};
use ringvault_types::{Id, Identity, NodeCertificate, RevocationList};

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
            secure(NodeCertificate::issue(&ca(), valid_body(id)))
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
    let good = secure(NodeCertificate::issue(&ca(), valid_body(&stranger)));
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
    assert_eq!(
        refused_reaches(h, "mode_mismatch", before + 1).await,
        before + 1
    );

    assert_each_refused(h, target, &ca(), &stranger).await;
    let rogue_ca = Identity::from_secret_bytes([201; 32]);
    let now = unix_now();

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
    assert!(refused_reaches(h, "revoked", before + 1).await > before);
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
    let mut renewed = cert_body(&me, now - 60, now + 7_200);
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
        .renew_certificate(NodeCertificate::issue(&ca(), valid_body(&stranger)))
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
            valid_body(&Identity::from_secret_bytes([11; 32])),
        )),
    )
    .await
    .expect("the renewed node admits a valid peer");

    for n in nodes {
        n.shutdown().await;
    }
}
