//! Secure mode between real daemons on loopback with a quarter of them Byzantine: 24 nodes
//! in secure mode (L = 8, so leaf sets do not hold the whole ring). First the handshake: a
//! member admits a valid certificate and refuses, with the reason counted, a node with none,
//! another CA's, an expired or not yet valid one, one whose id is not its key's hash, one
//! presented with another key, and a revoked one. Then 6 of the 24 collude
//! (`ringvault_testkit::byzantine`: they hijack every route they are handed and answer secure
//! probes with the colluders closest to the key). `sec_route` from a correct node must reach
//! every correct node among the key's 3 closest and never name a colluder as the root of a key
//! a correct node owns. The negative control: two correct nodes run with the failure test
//! switched off, and some of their secure routes are fooled.
//!
//! Then storage, with the colluders also signing receipts for replicas they drop and serving
//! forged copies: every object with a correct node among its k closest, put through a correct
//! node, reads back identical through another correct node. Its negative control: the same
//! lookups from a node whose PAST trusts the ordinary route (secure mode off) see the lies.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ringvault_net::{start_with, NetConfig, NodeHandle, RunningNode, Security, Services};
use ringvault_node::Node;
use ringvault_overlay::{Config, Kbr};
use ringvault_past::{MemoryStore, Past, PastConfig, PastEvent, RequestId};
use ringvault_testkit::byzantine::{Attack, Colluders};
use ringvault_types::{Id, Identity, NodeCertificate, RevocationList, Time};

const N: usize = 24;
const R: u8 = 3;
/// The correct nodes whose failure test is switched off (the negative control).
const BLIND: [usize; 2] = [1, 2];
/// Replicas per object.
const K: u8 = 3;
/// Objects put.
const OBJECTS: usize = 36;
/// The correct node whose PAST runs with secure mode off (storage's negative control).
const TRUSTING: usize = 4;

fn is_byzantine(i: usize) -> bool {
    i % 4 == 3
}

fn ca() -> Identity {
    Identity::from_secret_bytes([210; 32])
}

fn identity(i: usize) -> Identity {
    Identity::from_secret_bytes(*Id::hash(format!("byzantine-test-{i}").as_bytes()).as_bytes())
}

fn security(node: &Identity) -> Security {
    secure_with(&ca(), NodeCertificate::issue(&ca(), valid_body(node)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sec_route_reaches_the_correct_replica_set_with_a_quarter_of_the_daemons_lying() {
    let colluders: Arc<Mutex<Option<Colluders>>> = Arc::new(Mutex::new(None));
    let mut nodes: Vec<RunningNode> = Vec::new();
    for i in 0..N {
        let ident = identity(i);
        let mut services = Services::default();
        let past = PastConfig {
            secure: i != TRUSTING,
            secure_lookup_width: K,
            ..PastConfig::default()
        };
        let store = Box::new(MemoryStore::new(1 << 26));
        let key = Identity::from_secret_bytes(ident.secret_bytes());
        services.services.push(Box::new(
            Past::with_config(key, store, past).expect("an empty store"),
        ));
        if is_byzantine(i) {
            let c = colluders.clone();
            services.intercept = Some(Box::new(move |node, from, msg| {
                // Honest until the ring has formed and the colluders know each other.
                let guard = c.lock().unwrap_or_else(|e| e.into_inner());
                let col = guard.as_ref()?;
                Some(col.respond(node.overlay(), from, msg.clone()))
            }));
        }
        let overlay = Config {
            secure: true,
            failure_test: !BLIND.contains(&i),
            ..fast_config()
        };
        let cfg = NetConfig {
            listen: loopback(),
            advertise: None,
            overlay,
            bootstrap: nodes
                .iter()
                .rev()
                .take(2)
                .map(|n| n.contact().addr)
                .collect(),
            security: security(&ident),
            emulated_latency: None,
        };
        let node = start_with(ident, cfg, services).await.expect("node starts");
        node.handle()
            .wait_ready(Duration::from_secs(20))
            .await
            .expect("node joins");
        nodes.push(node);
    }
    let handles: Vec<_> = nodes.iter().map(|n| n.handle()).collect();
    let ids: Vec<Id> = nodes.iter().map(|n| n.contact().id).collect();
    let half = fast_config().leaf_set_size / 2;
    eventually(Duration::from_secs(30), || async {
        let st = statuses(&handles).await?;
        let wrong = wrong_leaf_sets(&st, &ids, half);
        wrong.is_empty().then_some(()).ok_or(wrong.join("; "))
    })
    .await;
    handshakes_admit_only_valid_certificates(&handles, &nodes).await;

    let byz: Vec<_> = (0..N)
        .filter(|&i| is_byzantine(i))
        .map(|i| nodes[i].contact())
        .collect();
    *colluders.lock().unwrap() = Some(Colluders::new(
        byz,
        Attack::FakeRoot,
        2 * fast_config().leaf_set_size + 1,
    ));

    let checking: Vec<usize> = (0..N)
        .filter(|&i| !is_byzantine(i) && !BLIND.contains(&i))
        .collect();
    let (mut checked, mut fooled_blind, mut violations) = (0, 0, Vec::new());
    for k in 0..240 {
        // A third of the routes start at the nodes whose failure test is off.
        let origin = if k % 3 == 0 {
            BLIND[(k / 3) % BLIND.len()]
        } else {
            checking[k % checking.len()]
        };
        let key = Id::hash(format!("byzantine-key-{k}").as_bytes());
        let mut truth: Vec<usize> = (0..N).collect();
        truth.sort_by(|&a, &b| key.cmp_closeness(&ids[a], &ids[b]));
        truth.truncate(R as usize);
        let rep = handles[origin]
            .secure_route(key, R)
            .await
            .expect("a secure route always reports");
        let sent: Vec<Id> = rep.sent_to.iter().map(|c| c.id).collect();
        let missed: Vec<usize> = truth
            .iter()
            .copied()
            .filter(|&j| !is_byzantine(j) && !sent.contains(&ids[j]))
            .collect();
        let root_is_correct = !is_byzantine(truth[0]);
        let wrong_root = root_is_correct && sent.first() != Some(&ids[truth[0]]);
        if BLIND.contains(&origin) {
            fooled_blind += usize::from(!missed.is_empty() || wrong_root);
        } else {
            checked += 1;
            if !missed.is_empty() || wrong_root {
                violations.push(format!(
                    "key {k} from node {origin}: missed {missed:?}, root named {:?} (true root {}, byzantine {})",
                    sent.first().map(|i| i.short()),
                    ids[truth[0]].short(),
                    is_byzantine(truth[0])
                ));
            }
        }
    }
    assert_eq!(checked, 160);
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    assert!(
        fooled_blind > 0,
        "with the failure test off, no secure route was fooled: the attack did not bite"
    );

    storage_under_attack(&handles, &ids).await;

    for n in nodes {
        n.kill().await;
    }
}

/// Starts a PAST request on node `h` with `f`; `None` when PAST refused it at once.
async fn past_request(
    h: &NodeHandle,
    f: impl FnOnce(&mut Past, &mut dyn Kbr, Time) -> Option<RequestId> + Send + 'static,
) -> Option<RequestId> {
    h.run(move |node: &mut Node, now| {
        node.with_service::<Past, _>(now, |p, kbr| f(p, kbr, now))
            .flatten()
    })
    .await
    .expect("the node runs")
}

/// Waits until node `h` has reported every request of `reqs`, and returns the reports.
async fn past_results(
    h: &NodeHandle,
    reqs: &[RequestId],
) -> std::collections::BTreeMap<RequestId, PastEvent> {
    let got = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let want = reqs.len();
    eventually(Duration::from_secs(60), || {
        let (got, h) = (got.clone(), h.clone());
        async move {
            let events = h
                .run(|node: &mut Node, now| {
                    node.with_service::<Past, _>(now, |p, _| {
                        std::iter::from_fn(|| p.poll_event()).collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let mut got = got.lock().unwrap();
            for e in events {
                got.insert(e.request(), e);
            }
            (got.len() >= want)
                .then_some(())
                .ok_or(format!("{} of {want} requests finished", got.len()))
        }
    })
    .await;
    let got = got.lock().unwrap().clone();
    got
}

/// Puts objects through correct nodes and reads them back through others, with the colluders
/// lying about storage; then the same lookups from the node whose PAST trusts plain routing.
async fn storage_under_attack(handles: &[NodeHandle], ids: &[Id]) {
    let owner = Identity::from_secret_bytes([77; 32]);
    let correct: Vec<usize> = (0..N)
        .filter(|&i| !is_byzantine(i) && i != TRUSTING)
        .collect();
    let content = |o: usize| format!("object {o} ").repeat(40).into_bytes();
    // Inserts, several from each putting node at once.
    let mut puts: Vec<(usize, usize, RequestId)> = Vec::new();
    for o in 0..OBJECTS {
        let at = correct[o % correct.len()];
        let (owner, body) = (
            Identity::from_secret_bytes(owner.secret_bytes()),
            content(o),
        );
        let req = past_request(&handles[at], move |p, kbr, now| {
            p.insert(kbr, now, &owner, &format!("obj-{o}"), body, K, 0)
                .ok()
        })
        .await
        .expect("the insert starts");
        puts.push((o, at, req));
    }
    let mut stored: Vec<(usize, Id)> = Vec::new();
    for &at in &correct {
        let mine: Vec<RequestId> = puts.iter().filter(|p| p.1 == at).map(|p| p.2).collect();
        let results = past_results(&handles[at], &mine).await;
        for &(o, _, req) in puts.iter().filter(|p| p.1 == at) {
            match &results[&req] {
                PastEvent::Inserted(_, Ok(done)) => stored.push((o, done.cert.id())),
                other => panic!("object {o}: insert failed: {other:?}"),
            }
        }
    }
    assert_eq!(stored.len(), OBJECTS);

    // Lookups through another correct node, and through the trusting one.
    let readable = |id: &Id| {
        let mut by: Vec<usize> = (0..N).collect();
        by.sort_by(|&a, &b| id.cmp_closeness(&ids[a], &ids[b]));
        by.iter().take(K as usize).any(|&j| !is_byzantine(j))
    };
    let (mut wrong, mut fooled, mut checked) = (Vec::new(), 0usize, 0usize);
    for (reader, label) in [(None, "secure"), (Some(TRUSTING), "trusting")] {
        let mut gets: Vec<(usize, usize, RequestId)> = Vec::new();
        for (x, &(o, id)) in stored.iter().enumerate() {
            let at = reader.unwrap_or(correct[(x + 1 + x / correct.len()) % correct.len()]);
            let req = past_request(&handles[at], move |p, kbr, now| p.lookup(kbr, now, id).ok())
                .await
                .expect("the lookup starts");
            gets.push((o, at, req));
        }
        let readers: std::collections::BTreeSet<usize> = gets.iter().map(|g| g.1).collect();
        for at in readers {
            let mine: Vec<RequestId> = gets.iter().filter(|g| g.1 == at).map(|g| g.2).collect();
            let results = past_results(&handles[at], &mine).await;
            for &(o, _, req) in gets.iter().filter(|g| g.1 == at) {
                let id = stored.iter().find(|s| s.0 == o).expect("stored").1;
                let right = matches!(
                    &results[&req],
                    PastEvent::Found(_, Ok(f)) if f.content == content(o)
                );
                if label == "trusting" {
                    fooled += usize::from(!right);
                } else if readable(&id) {
                    checked += 1;
                    if !right {
                        wrong.push(format!("object {o} through node {at}: {:?}", results[&req]));
                    }
                }
            }
        }
    }
    eprintln!(
        "storage: {checked} readable objects read back through correct nodes, {} wrong; the trusting node was fooled on {fooled} of {}",
        wrong.len(),
        stored.len()
    );
    assert!(
        checked >= OBJECTS * 9 / 10,
        "only {checked} objects were readable"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        fooled > 0,
        "lookups that trust the ordinary route were never fooled: the storage attack did not bite"
    );
}

/// At a ring member: a valid certificate is admitted (the positive control); a node with none
/// (open mode), another CA's, an expired or not yet valid one, one for an id that is not its
/// key's hash, one presented with another key, and a revoked one are refused, each counted
/// under its reason.
async fn handshakes_admit_only_valid_certificates(handles: &[NodeHandle], nodes: &[RunningNode]) {
    let stranger = Identity::from_secret_bytes([7; 32]);
    let (h, target) = (&handles[0], nodes[0].contact().addr);
    dial(target, &stranger, &security(&stranger))
        .await
        .expect("a valid certificate is admitted");
    let before = refused(h, "mode_mismatch").await;
    assert!(dial(target, &stranger, &Security::Open).await.is_err());
    assert_eq!(
        refused_reaches(h, "mode_mismatch", before + 1).await,
        before + 1
    );
    assert_each_refused(h, target, &ca(), &stranger).await;
    let now = unix_now();
    let list = RevocationList::issue(&ca(), 1, vec![serial_of(&stranger)], now, now + 3_600);
    h.revocations(list).await.expect("the CA's list is adopted");
    let before = refused(h, "revoked").await;
    assert!(dial(target, &stranger, &security(&stranger)).await.is_err());
    assert!(
        refused_reaches(h, "revoked", before + 1).await > before,
        "revoked not counted"
    );
}
