//! Scribe end to end on a ring of real nodes: every publish reaches every member exactly once,
//! trees are the union of the members' routes to the root, repair after failures (the root's
//! included), anycast with and without a taker, topic names known on every node of the tree, and
//! bad input refused.

use std::collections::{BTreeMap, BTreeSet};

use ringvault_overlay::{Config, Kbr};
use ringvault_scribe::{topic_id, Scribe, ScribeError, ScribeEvent, MAX_CHILDREN, MAX_PAYLOAD};
use ringvault_testkit::TestRing;
use ringvault_types::{Duration, Id, Identity, Time};

struct Groups {
    ring: TestRing,
    events: Vec<(usize, ScribeEvent)>,
}

impl Groups {
    fn new(n: usize) -> Groups {
        Groups::with_config(n, Config::default())
    }

    fn with_config(n: usize, cfg: Config) -> Groups {
        let ring = TestRing::new(n, cfg, |_, _, node| {
            node.add_service(Box::new(Scribe::new()));
        });
        Groups {
            ring,
            events: Vec::new(),
        }
    }

    fn call<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Scribe, &mut dyn Kbr, Time, &Identity) -> R,
    ) -> R {
        let r = self.ring.call::<Scribe, R>(i, f);
        self.collect();
        r
    }

    fn collect(&mut self) {
        for i in 0..self.ring.members.len() {
            let now = self.ring.now;
            while let Some(Some(e)) = self.ring.members[i]
                .node
                .with_service::<Scribe, _>(now, |s, _| s.poll_event())
            {
                self.events.push((i, e));
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.ring.advance(d);
        self.collect();
    }

    /// Messages received per node for `topic`: node -> list of (publisher, seq).
    fn received(&self, topic: Id) -> BTreeMap<usize, Vec<(Id, u64)>> {
        let mut out: BTreeMap<usize, Vec<(Id, u64)>> = BTreeMap::new();
        for (i, e) in &self.events {
            if let ScribeEvent::Message {
                topic: t,
                publisher,
                seq,
                ..
            } = e
            {
                if *t == topic {
                    out.entry(*i).or_default().push((*publisher, *seq));
                }
            }
        }
        out
    }

    /// The tree edges (child, parent) for `topic` as the nodes see them.
    fn edges(&mut self, topic: Id) -> BTreeSet<(Id, Id)> {
        let mut e = BTreeSet::new();
        for i in 0..self.ring.members.len() {
            if !self.ring.members[i].alive {
                continue;
            }
            let now = self.ring.now;
            let me = self.ring.id(i);
            let topics = self.ring.members[i]
                .node
                .with_service::<Scribe, _>(now, |s, _| s.topics())
                .unwrap();
            for v in topics.into_iter().filter(|v| v.topic == topic) {
                for c in v.children {
                    e.insert((c.id, me));
                }
            }
        }
        e
    }

    /// The union of routes from `members` to the topic's root, as (node, next hop) edges.
    fn route_edges(&self, topic: Id, members: &[usize]) -> BTreeSet<(Id, Id)> {
        let mut e = BTreeSet::new();
        for &m in members {
            let mut at = m;
            for _ in 0..64 {
                let hop = self.ring.members[at].node.overlay().next_hop(&topic, None);
                let Some(next) = hop.contact() else { break };
                e.insert((self.ring.id(at), next.id));
                at = (0..self.ring.members.len())
                    .find(|&j| self.ring.id(j) == next.id)
                    .unwrap();
            }
        }
        e
    }
}

fn topic(name: &str) -> Id {
    topic_id(name, &Identity::from_secret_bytes([1; 32]).public_key())
}

#[test]
fn every_member_gets_every_message_once_and_trees_follow_the_routes() {
    let mut g = Groups::new(60);
    let mut groups: Vec<(Id, Vec<usize>)> = Vec::new();
    for (k, size) in [1usize, 4, 9, 17, 30].into_iter().enumerate() {
        let t = topic(&format!("topic-{k}"));
        let members: Vec<usize> = (0..size)
            .map(|j| (j * 7 + k * 3) % 60)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for &m in &members {
            g.call(m, |s, kbr, now, _| s.subscribe(kbr, now, t))
                .unwrap();
        }
        groups.push((t, members));
    }
    g.advance(Duration::from_secs(1));
    for (t, members) in &groups {
        let edges = g.edges(*t);
        if members.len() <= MAX_CHILDREN {
            let routes = g.route_edges(*t, members);
            assert_eq!(edges, routes, "tree is not the union of member routes");
        } else {
            // A full parent pushes newcomers down: fan-out stays bounded and every member
            // still hangs off the root.
            let mut fanout: BTreeMap<Id, usize> = BTreeMap::new();
            for (_, p) in &edges {
                *fanout.entry(*p).or_default() += 1;
            }
            assert!(
                fanout.values().all(|&n| n <= MAX_CHILDREN),
                "fan-out above the bound"
            );
            let parent: BTreeMap<Id, Id> = edges.iter().copied().collect();
            let root = g.ring.id(g.ring.closest_live(t, 1)[0]);
            for &m in members {
                let mut at = g.ring.id(m);
                for _ in 0..=members.len() {
                    if at == root {
                        break;
                    }
                    at = parent[&at];
                }
                assert_eq!(at, root, "a member is not connected to the root");
            }
        }
    }
    for round in 0..3u64 {
        for (k, (t, _)) in groups.iter().enumerate() {
            let publisher = (k * 11 + round as usize) % 60;
            let seq = g
                .call(publisher, |s, kbr, _, _| {
                    s.publish(kbr, *t, vec![k as u8; 10])
                })
                .unwrap();
            assert!(seq >= 1);
        }
    }
    g.advance(Duration::from_secs(1));
    for (t, members) in &groups {
        let got = g.received(*t);
        let who: BTreeSet<usize> = got.keys().copied().collect();
        assert_eq!(
            who,
            members.iter().copied().collect(),
            "delivered to a non-member or missed a member"
        );
        for msgs in got.values() {
            assert_eq!(msgs.len(), 3, "a member got {} of 3 messages", msgs.len());
            let distinct: BTreeSet<_> = msgs.iter().collect();
            assert_eq!(distinct.len(), 3, "a message was delivered twice");
        }
    }
}

#[test]
fn delivery_is_complete_again_after_forwarders_and_the_root_fail() {
    let mut g = Groups::new(60);
    let t = topic("resilient");
    let members: Vec<usize> = (0..60).step_by(4).collect();
    for &m in &members {
        g.call(m, |s, kbr, now, _| s.subscribe(kbr, now, t))
            .unwrap();
    }
    g.advance(Duration::from_secs(1));
    // Kill the root and some pure forwarders (nodes with children that are not members).
    let root = g.ring.closest_live(&t, 1)[0];
    let edges = g.edges(t);
    let parents: BTreeSet<Id> = edges.iter().map(|(_, p)| *p).collect();
    let mut killed = vec![root];
    for i in 0..60 {
        if killed.len() >= 4 {
            break;
        }
        if parents.contains(&g.ring.id(i)) && !members.contains(&i) && i != root {
            killed.push(i);
        }
    }
    for &k in &killed {
        g.ring.kill(k);
    }
    let live: Vec<usize> = members
        .iter()
        .copied()
        .filter(|m| !killed.contains(m))
        .collect();
    // Failure detection, leaf repair, parent timeouts and re-joins: well under a minute.
    g.advance(Duration::from_secs(30));
    g.events.clear();
    let publisher = live[0];
    g.call(publisher, |s, kbr, _, _| {
        s.publish(kbr, t, b"after repair".to_vec())
    })
    .unwrap();
    g.advance(Duration::from_secs(5));
    let got = g.received(t);
    let who: BTreeSet<usize> = got.keys().copied().collect();
    assert_eq!(
        who,
        live.iter().copied().collect(),
        "delivery incomplete after repair (killed {killed:?})"
    );
}

#[test]
fn anycast_finds_an_accepting_member_or_reports_none() {
    let mut g = Groups::new(50);
    let t = topic("workers");
    let members = [3usize, 12, 25, 31, 44];
    for &m in &members {
        g.call(m, |s, kbr, now, _| s.subscribe(kbr, now, t))
            .unwrap();
        g.call(m, |s, _, _, _| s.set_accepts_anycast(t, false));
    }
    g.call(31, |s, _, _, _| s.set_accepts_anycast(t, true));
    g.advance(Duration::from_secs(1));
    let req = g
        .call(7, |s, kbr, now, _| s.anycast(kbr, now, t, b"job".to_vec()))
        .unwrap();
    g.advance(Duration::from_secs(1));
    let done: Vec<_> = g
        .events
        .iter()
        .filter(|(i, e)| {
            *i == 7 && matches!(e, ScribeEvent::AnycastDone { req: r, .. } if *r == req)
        })
        .collect();
    assert_eq!(done.len(), 1);
    match &done[0].1 {
        ScribeEvent::AnycastDone { result: Ok(by), .. } => assert_eq!(by.id, g.ring.id(31)),
        other => panic!("anycast failed: {other:?}"),
    }
    assert!(g
        .events
        .iter()
        .any(|(i, e)| *i == 31 && matches!(e, ScribeEvent::AnycastReceived { .. })));

    g.call(31, |s, _, _, _| s.set_accepts_anycast(t, false));
    let req = g
        .call(9, |s, kbr, now, _| s.anycast(kbr, now, t, b"job".to_vec()))
        .unwrap();
    g.advance(Duration::from_secs(1));
    assert!(g.events.iter().any(|(i, e)| *i == 9
        && matches!(e, ScribeEvent::AnycastDone { req: r, result: Err(ScribeError::NoTaker) } if *r == req)));
}

#[test]
fn the_topic_name_reaches_forwarders_and_the_root_and_a_root_made_by_publishing() {
    let mut g = Groups::new(60);
    let creator = Identity::from_secret_bytes([1; 32]).public_key();
    let members = [4usize, 13, 21, 38, 50, 57];
    let mut t = None;
    for &m in &members {
        let id = g
            .call(m, |s, kbr, now, _| {
                s.subscribe_named(kbr, now, "news-room", &creator)
            })
            .unwrap();
        t = Some(id);
    }
    let t = t.unwrap();
    assert_eq!(t, topic("news-room"));
    g.advance(Duration::from_secs(1));
    let root = g.ring.closest_live(&t, 1)[0];
    let (mut roots, mut forwarders) = (0, 0);
    for i in 0..60 {
        let now = g.ring.now;
        let views = g.ring.members[i]
            .node
            .with_service::<Scribe, _>(now, |s, _| s.topics())
            .unwrap();
        for v in views.into_iter().filter(|v| v.topic == t) {
            assert_eq!(v.name.as_deref(), Some("news-room"), "node {i}: {v:?}");
            roots += usize::from(v.root);
            forwarders += usize::from(!v.member && !v.root && !v.children.is_empty());
            assert_eq!(v.root, i == root, "node {i}");
        }
    }
    assert_eq!(roots, 1, "one root");
    assert!(
        forwarders >= 1,
        "no pure forwarder in this tree: the test checks nothing"
    );

    // Publishing by name to a topic nobody joined makes a root that knows the name.
    let lonely = topic("announcements");
    g.call(7, |s, kbr, _, _| {
        s.publish_named(kbr, "announcements", &creator, b"first".to_vec())
    })
    .unwrap();
    g.advance(Duration::from_secs(1));
    let root = g.ring.closest_live(&lonely, 1)[0];
    let now = g.ring.now;
    let views = g.ring.members[root]
        .node
        .with_service::<Scribe, _>(now, |s, _| s.topics())
        .unwrap();
    let v = views
        .iter()
        .find(|v| v.topic == lonely)
        .expect("root state");
    assert!(v.root && !v.member);
    assert_eq!(v.name.as_deref(), Some("announcements"));
    assert_eq!(
        g.call(7, |s, kbr, now, _| s
            .subscribe_named(kbr, now, "", &creator)),
        Err(ScribeError::BadTopicName(0))
    );
}

#[test]
fn bad_payloads_and_names_are_refused() {
    let mut g = Groups::new(8);
    let t = topic("x");
    assert_eq!(
        g.call(1, |s, kbr, _, _| s.publish(kbr, t, Vec::new())),
        Err(ScribeError::BadPayload(0))
    );
    assert_eq!(
        g.call(1, |s, kbr, _, _| s.publish(
            kbr,
            t,
            vec![0; MAX_PAYLOAD + 1]
        )),
        Err(ScribeError::BadPayload(MAX_PAYLOAD + 1))
    );
    assert_eq!(
        ringvault_scribe::check_topic_name(""),
        Err(ScribeError::BadTopicName(0))
    );
    assert!(ringvault_scribe::check_topic_name(&"n".repeat(300)).is_err());
    assert!(ringvault_scribe::check_topic_name("news").is_ok());
}

#[test]
fn full_parents_spread_newcomers_so_big_trees_stay_shallow() {
    // 48 nodes whose leaf sets hold the whole ring: every join goes straight to the root, 47
    // for its 16 child slots. The 31 pushed down must spread over the 16 children (each takes
    // one or two, a tree two levels deep), not pile into the first child's subtree, which
    // would fill it and push on to a third level and beyond.
    let n = 48;
    let mut g = Groups::with_config(
        n,
        Config {
            leaf_set_size: 64,
            ..Config::default()
        },
    );
    let t = topic("everyone");
    for m in 0..n {
        g.call(m, |s, kbr, now, _| s.subscribe(kbr, now, t))
            .unwrap();
    }
    g.advance(Duration::from_secs(2));
    let edges = g.edges(t);
    let parent: BTreeMap<Id, Id> = edges.iter().copied().collect();
    let root = g.ring.id(g.ring.closest_live(&t, 1)[0]);
    let mut fanout: BTreeMap<Id, usize> = BTreeMap::new();
    for (_, p) in &edges {
        *fanout.entry(*p).or_default() += 1;
    }
    assert_eq!(
        fanout.get(&root),
        Some(&MAX_CHILDREN),
        "the root's slots fill first"
    );
    assert!(fanout.values().all(|&c| c <= MAX_CHILDREN));
    let mut deepest = 0;
    for m in 0..n {
        let mut at = g.ring.id(m);
        let mut depth = 0;
        while at != root {
            at = *parent.get(&at).expect("every member hangs off the root");
            depth += 1;
            assert!(depth <= n, "a loop in the tree");
        }
        deepest = deepest.max(depth);
    }
    assert!(deepest <= 2, "tree {deepest} levels deep");
}
