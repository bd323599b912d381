//! Scribe at the size issue 7 names: 2,000 nodes, 50 topics of 1 to 500 members. Every publish
//! reaches every member exactly once; trees follow the members' routes; after 10% of the nodes
//! (a root among them) fail, delivery is complete again; anycast finds a taker or says none.

use std::collections::{BTreeMap, BTreeSet};

use ringvault_overlay::Config;
use ringvault_scribe::{topic_id, Scribe, ScribeEvent, MAX_CHILDREN};
use ringvault_testkit::TestRing;
use ringvault_types::{Duration, Id, Identity};

fn events(ring: &mut TestRing) -> Vec<(usize, ScribeEvent)> {
    let mut out = Vec::new();
    for i in 0..ring.members.len() {
        let now = ring.now;
        while let Some(Some(e)) = ring.members[i]
            .node
            .with_service::<Scribe, _>(now, |s, _| s.poll_event())
        {
            out.push((i, e));
        }
    }
    out
}

/// Per topic, which nodes got which (publisher, seq), counting duplicates.
fn deliveries(ev: &[(usize, ScribeEvent)]) -> BTreeMap<Id, BTreeMap<usize, Vec<(Id, u64)>>> {
    let mut out: BTreeMap<Id, BTreeMap<usize, Vec<(Id, u64)>>> = BTreeMap::new();
    for (i, e) in ev {
        if let ScribeEvent::Message {
            topic,
            publisher,
            seq,
            ..
        } = e
        {
            out.entry(*topic)
                .or_default()
                .entry(*i)
                .or_default()
                .push((*publisher, *seq));
        }
    }
    out
}

#[test]
fn two_thousand_nodes_fifty_topics() {
    let n = 2000;
    let mut ring = TestRing::new(n, Config::default(), |_, _, node| {
        node.add_service(Box::new(Scribe::new()))
    });
    let creator = Identity::from_secret_bytes([9; 32]).public_key();
    // Zipf-like sizes from 500 down to 1.
    let topics: Vec<(Id, Vec<usize>)> = (0..50usize)
        .map(|k| {
            let size = (500 / (k + 1)).max(1);
            let members: BTreeSet<usize> = (0..size).map(|j| (j * 131 + k * 17 + 5) % n).collect();
            (
                topic_id(&format!("group-{k}"), &creator),
                members.into_iter().collect(),
            )
        })
        .collect();
    for (t, members) in &topics {
        for &m in members {
            ring.call::<Scribe, _>(m, |s, kbr, now, _| s.subscribe(kbr, now, *t))
                .unwrap();
        }
    }
    ring.advance(Duration::from_secs(1));
    events(&mut ring);

    // Every publish reaches every member exactly once.
    for (k, (t, _)) in topics.iter().enumerate() {
        let publisher = (k * 37 + 1) % n;
        ring.call::<Scribe, _>(publisher, |s, kbr, _, _| {
            s.publish(kbr, *t, vec![k as u8; 32])
        })
        .unwrap();
    }
    ring.advance(Duration::from_secs(1));
    let got = deliveries(&events(&mut ring));
    for (t, members) in &topics {
        let per_node = got.get(t).cloned().unwrap_or_default();
        let who: BTreeSet<usize> = per_node.keys().copied().collect();
        assert_eq!(
            who,
            members.iter().copied().collect::<BTreeSet<_>>(),
            "wrong receivers"
        );
        assert!(
            per_node.values().all(|v| v.len() == 1),
            "a duplicate delivery"
        );
    }

    // Trees: every parent is the child's next overlay hop toward the topic, unless that hop
    // was full and pushed the child down; fan-out never exceeds the bound.
    let index: BTreeMap<Id, usize> = (0..n).map(|i| (ring.id(i), i)).collect();
    let mut off_route = 0;
    for (t, _) in &topics {
        let mut fanout: BTreeMap<Id, usize> = BTreeMap::new();
        let mut edges: Vec<(usize, Id)> = Vec::new();
        for i in 0..n {
            let now = ring.now;
            let views = ring.members[i]
                .node
                .with_service::<Scribe, _>(now, |s, _| s.topics())
                .unwrap();
            for v in views.into_iter().filter(|v| v.topic == *t) {
                fanout.insert(ring.id(i), v.children.len());
                if let Some(p) = v.parent {
                    edges.push((i, p.id));
                }
            }
        }
        assert!(
            fanout.values().all(|&c| c <= MAX_CHILDREN),
            "fan-out above the bound"
        );
        for (child, parent) in edges {
            let hop = ring.members[child]
                .node
                .overlay()
                .next_hop(t, None)
                .contact();
            let hop = hop.expect("a node with a parent is not the root").id;
            if hop != parent {
                off_route += 1;
                assert_eq!(
                    fanout.get(&hop),
                    Some(&MAX_CHILDREN),
                    "parent off the route"
                );
                assert!(index.contains_key(&parent));
            }
        }
    }
    eprintln!("tree edges pushed down by full parents: {off_route}");

    // Kill 10% of the nodes, the root of the biggest topic among them.
    let big = topics[0].0;
    let root = ring.closest_live(&big, 1)[0];
    let mut killed: BTreeSet<usize> = (0..n).filter(|i| i % 10 == 3).collect();
    killed.insert(root);
    for &k in &killed {
        ring.kill(k);
    }
    ring.advance(Duration::from_secs(30));
    events(&mut ring);
    for (k, (t, members)) in topics.iter().enumerate() {
        let publisher = (0..n)
            .map(|j| (j + k * 7) % n)
            .find(|j| !killed.contains(j))
            .unwrap();
        ring.call::<Scribe, _>(publisher, |s, kbr, _, _| {
            s.publish(kbr, *t, b"after".to_vec())
        })
        .unwrap();
        let _ = members;
    }
    // Routing table entries of dead nodes are found lazily, on use: a publish may time out on
    // a dead hop or two (1.5 s each) before it is re-routed.
    ring.advance(Duration::from_secs(10));
    let got = deliveries(&events(&mut ring));
    for (t, members) in &topics {
        let live: BTreeSet<usize> = members
            .iter()
            .copied()
            .filter(|m| !killed.contains(m))
            .collect();
        let who: BTreeSet<usize> = got
            .get(t)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        assert_eq!(who, live, "delivery incomplete after repair");
        // And the repaired tree has no loop: every member's parents lead to the root.
        let index: BTreeMap<Id, usize> = (0..n).map(|i| (ring.id(i), i)).collect();
        for &m in &live {
            let mut at = m;
            let mut reached_root = false;
            for _ in 0..=ringvault_scribe::MAX_DEPTH {
                let now = ring.now;
                let views = ring.members[at]
                    .node
                    .with_service::<Scribe, _>(now, |s, _| s.topics())
                    .unwrap();
                let v = views
                    .into_iter()
                    .find(|v| v.topic == *t)
                    .expect("member in tree");
                if v.root {
                    reached_root = true;
                    break;
                }
                at = index[&v.parent.expect("attached").id];
            }
            assert!(reached_root, "member {m} does not reach the root: a loop");
        }
    }

    // Anycast over the big tree: one accepting member is found; with none, failure is reported.
    let (big_topic, big_members) = &topics[0];
    let live: Vec<usize> = big_members
        .iter()
        .copied()
        .filter(|m| !killed.contains(m))
        .collect();
    let taker = live[live.len() / 2];
    for &m in &live {
        ring.call::<Scribe, _>(m, |s, _, _, _| {
            s.set_accepts_anycast(*big_topic, m == taker)
        });
    }
    let asker = (0..n)
        .find(|i| !killed.contains(i) && !big_members.contains(i))
        .unwrap();
    let req = ring
        .call::<Scribe, _>(asker, |s, kbr, now, _| {
            s.anycast(kbr, now, *big_topic, b"work".to_vec())
        })
        .unwrap();
    ring.advance(Duration::from_secs(3));
    let ev = events(&mut ring);
    let done: Vec<_> = ev
        .iter()
        .filter_map(|(i, e)| match e {
            ScribeEvent::AnycastDone { req: r, result } if *i == asker && *r == req => {
                Some(result.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].as_ref().map(|c| c.id), Ok(ring.id(taker)));
    ring.call::<Scribe, _>(taker, |s, _, _, _| s.set_accepts_anycast(*big_topic, false));
    let req = ring
        .call::<Scribe, _>(asker, |s, kbr, now, _| {
            s.anycast(kbr, now, *big_topic, b"work".to_vec())
        })
        .unwrap();
    ring.advance(Duration::from_secs(3));
    let ev = events(&mut ring);
    assert!(ev.iter().any(|(i, e)| *i == asker
        && matches!(e, ScribeEvent::AnycastDone { req: r, result: Err(ringvault_scribe::ScribeError::NoTaker) } if *r == req)));
}
