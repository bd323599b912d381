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
