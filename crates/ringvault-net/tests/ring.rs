//! A 16-node ring over real QUIC on loopback: convergence, routing, abrupt failures, restart.

mod common;

use std::time::Duration;

use common::*;
use ringvault_net::NodeHandle;
use ringvault_types::Id;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_node_ring_converges_routes_exactly_heals_after_four_die_and_a_restart_keeps_its_id(
) {
    let dirs = TempDir::new("ring16");
    let cfg = fast_config();
    let half = cfg.leaf_set_size / 2;
    let mut nodes = start_ring(&dirs, 16, cfg.clone()).await;
    let mut handles: Vec<NodeHandle> = nodes.iter().map(|n| n.handle()).collect();
    let mut ids: Vec<Id> = nodes.iter().map(|n| n.contact().id).collect();

    // Every leaf set converges to the true neighbours.
    eventually(Duration::from_secs(30), || async {
        let st = statuses(&handles).await?;
        let wrong = wrong_leaf_sets(&st, &ids, half);
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    })
    .await;

    // 500 keys route to the numerically closest node, over QUIC.
    let wrong = wrong_routes(&handles, &ids, &keys(500, "before")).await;
    assert!(
        wrong.is_empty(),
        "{} wrong routes: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let st = statuses(&handles).await.unwrap();
    assert!(st.iter().all(|s| s.metrics.connections_open > 0));
    assert!(st.iter().map(|s| s.metrics.routes_ok).sum::<u64>() >= 500);

    // Kill 4 abruptly (no leave); the rest repair.
    let mut killed = Vec::new();
    for i in [3usize, 7, 10, 14] {
        killed.push((i, nodes[i].contact()));
    }
    for &(i, _) in killed.iter().rev() {
        let n = nodes.remove(i);
        n.kill().await;
    }
    handles = nodes.iter().map(|n| n.handle()).collect();
    ids = nodes.iter().map(|n| n.contact().id).collect();
    eventually(Duration::from_secs(30), || async {
        let st = statuses(&handles).await?;
        let wrong = wrong_leaf_sets(&st, &ids, half);
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    })
    .await;
    let wrong = wrong_routes(&handles, &ids, &keys(200, "after")).await;
    assert!(
        wrong.is_empty(),
        "{} wrong routes after failures: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let failed: u64 = statuses(&handles)
        .await
        .unwrap()
        .iter()
        .map(|s| s.metrics.peers_failed)
        .sum();
    assert!(failed >= 4, "failures detected: {failed}");

    // Restart one killed node from its data dir on its old address: same id, rejoins.
    let (i, old) = killed[0];
    let back = start_node(
        &dirs.node(i),
        old.addr,
        vec![nodes[0].contact().addr],
        cfg.clone(),
    )
    .await;
    assert_eq!(back.contact().id, old.id, "restarted node changed its id");
    nodes.push(back);
    handles = nodes.iter().map(|n| n.handle()).collect();
    ids = nodes.iter().map(|n| n.contact().id).collect();
    eventually(Duration::from_secs(30), || async {
        let st = statuses(&handles).await?;
        let wrong = wrong_leaf_sets(&st, &ids, half);
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    })
    .await;
    let wrong = wrong_routes(&handles, &ids, &keys(100, "restart")).await;
    assert!(
        wrong.is_empty(),
        "{} wrong routes after restart: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );

    for n in nodes {
        n.shutdown().await;
    }
}

/// A failed dial reaches the overlay at once: with keep-alive failure detection slowed to two
/// minutes (and neighbourhood probes to ten), a killed peer still leaves the survivor's leaf
/// set within seconds, because the survivor's next keep-alive finds no connection, the re-dial
/// fails (the handshake times out after `CONNECT_TIMEOUT`) and the driver calls
/// `Node::handle_unreachable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dial_declares_the_peer_failed_long_before_the_failure_timeout() {
    let dirs = TempDir::new("unreachable");
    let cfg = ringvault_overlay::Config {
        failure_timeout: ringvault_types::Duration::from_secs(120),
        neighbourhood_interval: ringvault_types::Duration::from_secs(600),
        ..fast_config()
    };
    let mut nodes = start_ring(&dirs, 2, cfg).await;
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    let (ha, gone) = (a.handle(), b.contact().id);
    eventually(Duration::from_secs(20), || async {
        let st = ha.status().await.map_err(|e| e.to_string())?;
        let leaves = st.leaf_set_smaller.iter().chain(&st.leaf_set_larger);
        if leaves.into_iter().any(|p| p.id == gone) {
            Ok(())
        } else {
            Err("the other node is not in the leaf set yet".into())
        }
    })
    .await;

    b.kill().await;
    // Far below the 120 s failure timeout: only a failed dial can explain it.
    eventually(Duration::from_secs(45), || async {
        let st = ha.status().await.map_err(|e| e.to_string())?;
        let leaves = st.leaf_set_smaller.iter().chain(&st.leaf_set_larger);
        let still = leaves.into_iter().any(|p| p.id == gone);
        if !still && st.metrics.peers_failed >= 1 && st.metrics.connect_failures >= 1 {
            Ok(())
        } else {
            Err(format!(
                "still in the leaf set: {still}, peers failed: {}, connect failures: {}",
                st.metrics.peers_failed, st.metrics.connect_failures
            ))
        }
    })
    .await;
    a.shutdown().await;
}
