//! Contacts named inside messages: in secure mode a node takes a contact a peer hands it into
//! its tables only with a ring certificate for that id (carried in the message, as every secure
//! node attaches them, or remembered from an earlier message or handshake); a contact named
//! without one is refused and counted (`unvouched_contact`). In open mode the very same contact
//! is taken (the negative control: the check, not the message, keeps it out).

mod common;

use std::time::Duration;

use common::*;
use ringvault_net::{RunningNode, Security};
use ringvault_overlay::OverlayMessage;
use ringvault_types::{Contact, Id, Identity, NodeCertificate};

fn ca() -> Identity {
    Identity::from_secret_bytes([201; 32])
}

fn certified(node: &Identity) -> Security {
    secure_with(&ca(), NodeCertificate::issue(&ca(), valid_body(node)))
}

async fn ring(dirs: &TempDir, secure: bool) -> Vec<RunningNode> {
    let mut nodes: Vec<RunningNode> = Vec::new();
    for i in 0..4 {
        let boot = nodes
            .last()
            .map(|p| vec![p.contact().addr])
            .unwrap_or_default();
        let node = start_node_with(&dirs.node(i), loopback(), boot, fast_config(), |id| {
            if secure {
                certified(id)
            } else {
                Security::Open
            }
        })
        .await;
        nodes.push(node);
    }
    nodes
}

/// Node 0 hears from node 1 a leaf set naming an id right next to its own, at an address
/// nobody listens on: whether node 0's leaf set takes it.
async fn takes_a_stranger(nodes: &[RunningNode]) -> bool {
    let victim = nodes[0].handle();
    let liar = nodes[1].contact();
    let mut near = *victim.contact().id.as_bytes();
    near[31] ^= 1;
    let stranger = Contact::new(Id::from_bytes(near), "127.0.0.1:9".parse().unwrap());
    victim
        .run(move |node, now| {
            let reply = OverlayMessage::LeafSetReply {
                leaves: vec![stranger],
                version: 1,
            };
            node.handle_message(now, liar, reply);
            node.overlay().leaf_set().contains(&stranger.id)
        })
        .await
        .expect("the node runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_named_without_a_certificate_is_refused_in_secure_mode_only() {
    let dirs = TempDir::new("contacts-secure");
    let nodes = ring(&dirs, true).await;
    // The ring forms, which it does only on the certificates its messages carry: a joiner
    // learns of most nodes from join replies and leaf set exchanges, not handshakes (without
    // the certificates the leaf sets stay incomplete; `admission.rs` tests them travelling).
    let ids: Vec<Id> = nodes.iter().map(|n| n.contact().id).collect();
    let handles: Vec<_> = nodes.iter().map(|n| n.handle()).collect();
    eventually(Duration::from_secs(20), || async {
        let st = statuses(&handles).await?;
        let wrong = wrong_leaf_sets(&st, &ids, fast_config().leaf_set_size / 2);
        wrong.is_empty().then_some(()).ok_or(wrong.join("; "))
    })
    .await;
    let before = handles[0].status().await.unwrap().metrics.peers_refused;
    assert!(!takes_a_stranger(&nodes).await);
    let after = handles[0].status().await.unwrap().metrics.peers_refused;
    let count = |m: &std::collections::BTreeMap<&str, u64>| {
        m.get("unvouched_contact").copied().unwrap_or(0)
    };
    assert!(
        count(&after) > count(&before),
        "the refusal is counted: {after:?}"
    );
    for n in nodes {
        n.kill().await;
    }

    let dirs = TempDir::new("contacts-open");
    let nodes = ring(&dirs, false).await;
    assert!(
        takes_a_stranger(&nodes).await,
        "open mode takes a named contact as it is"
    );
    for n in nodes {
        n.kill().await;
    }
}
