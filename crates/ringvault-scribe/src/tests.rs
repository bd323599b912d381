//! Peers that lie about a topic's name: a join, acknowledgement, publish or root state whose
//! name does not hash to the topic id is refused where it arrives, on a ring of real nodes.

use ringvault_overlay::Config;
use ringvault_testkit::TestRing;
use ringvault_types::{Duration, Id, Identity, PublicKey};

use crate::message::ScribeMessage;
use crate::name::TopicName;
use crate::scribe::encode;
use crate::{topic_id, Scribe, ScribeEvent, TopicView};

fn ring(n: usize) -> TestRing {
    TestRing::new(n, Config::default(), |_, _, node| {
        node.add_service(Box::new(Scribe::new()));
    })
}

fn creator() -> PublicKey {
    Identity::from_secret_bytes([7; 32]).public_key()
}

fn forged() -> TopicName {
    TopicName {
        name: "not the name".into(),
        creator: creator(),
    }
}

fn views(r: &mut TestRing, i: usize, topic: Id) -> Vec<TopicView> {
    r.call::<Scribe, _>(i, |s, _, _, _| s.topics())
        .into_iter()
        .filter(|v| v.topic == topic)
        .collect()
}

fn refused(r: &mut TestRing) -> u64 {
    (0..r.members.len())
        .map(|i| r.call::<Scribe, _>(i, |s, _, _, _| s.refused()))
        .sum()
}

fn messages(r: &mut TestRing, i: usize) -> usize {
    let mut n = 0;
    while let Some(e) = r.call::<Scribe, _>(i, |s, _, _, _| s.poll_event()) {
        n += usize::from(matches!(e, ScribeEvent::Message { .. }));
    }
    n
}

/// A node that is neither the root of `topic` nor in `skip`.
fn outsider(r: &TestRing, topic: &Id, skip: &[usize]) -> usize {
    let root = r.closest_live(topic, 1)[0];
    (0..r.members.len())
        .find(|i| *i != root && !skip.contains(i))
        .expect("a node outside")
}

#[test]
fn a_join_with_a_forged_name_starts_no_tree_and_is_counted() {
    let mut r = ring(30);
    let topic = topic_id("fresh", &creator());
    let j = outsider(&r, &topic, &[]);
    let me = r.members[j].node.contact();
    let join = ScribeMessage::Join {
        topic,
        child: me,
        name: Some(forged()),
    };
    r.call::<Scribe, _>(j, |_, kbr, _, _| kbr.route(topic, encode(&join), None));
    r.advance(Duration::from_secs(1));
    for i in 0..30 {
        assert!(views(&mut r, i, topic).is_empty(), "node {i} took the join");
    }
    assert!(refused(&mut r) >= 1);
}

#[test]
fn forged_names_for_a_live_topic_are_refused_and_the_true_name_stays() {
    let mut r = ring(30);
    let topic = topic_id("real", &creator());
    let members = [2usize, 9, 17, 23];
    for &m in &members {
        let t = r.call::<Scribe, _>(m, |s, kbr, now, _| {
            s.subscribe_named(kbr, now, "real", &creator())
        });
        assert_eq!(t, Ok(topic));
    }
    r.advance(Duration::from_secs(1));
    let before = refused(&mut r);

    // A join from outside with a forged name: nobody adopts the joiner.
    let j = outsider(&r, &topic, &members);
    let me = r.members[j].node.contact();
    let join = ScribeMessage::Join {
        topic,
        child: me,
        name: Some(forged()),
    };
    r.call::<Scribe, _>(j, |_, kbr, _, _| kbr.route(topic, encode(&join), None));
    // A forged acknowledgement to a member: it does not take the liar as its parent.
    let m = members[0];
    let parent = views(&mut r, m, topic)[0].parent;
    let ack = ScribeMessage::JoinAck {
        topic,
        path: Vec::new(),
        name: Some(forged()),
    };
    let to = r.members[m].node.contact();
    r.call::<Scribe, _>(j, |_, kbr, _, _| kbr.send_direct(to, encode(&ack)));
    // Forged root state to the root, and a publish with a forged name: both dropped.
    let root = r.closest_live(&topic, 1)[0];
    let state = ScribeMessage::RootState {
        topic,
        children: vec![me],
        name: Some(forged()),
    };
    let root_contact = r.members[root].node.contact();
    r.call::<Scribe, _>(j, |_, kbr, _, _| {
        kbr.send_direct(root_contact, encode(&state))
    });
    for &m in &members {
        messages(&mut r, m);
    }
    let publish = ScribeMessage::Publish {
        topic,
        publisher: me,
        seq: 1,
        data: b"spoof".to_vec(),
        name: Some(forged()),
    };
    r.call::<Scribe, _>(j, |_, kbr, _, _| kbr.route(topic, encode(&publish), None));
    r.advance(Duration::from_secs(1));

    assert!(
        refused(&mut r) >= before + 4,
        "every forged message is counted"
    );
    assert_eq!(views(&mut r, m, topic)[0].parent, parent, "parent changed");
    for i in 0..30 {
        for v in views(&mut r, i, topic) {
            assert_eq!(v.name.as_deref(), Some("real"), "node {i}: {v:?}");
            assert!(
                v.children.iter().all(|c| c.id != me.id),
                "node {i} adopted the forger"
            );
        }
    }
    for &m in &members {
        assert_eq!(messages(&mut r, m), 0, "member {m} got the spoofed publish");
    }
    // The tree still works for honest publishers.
    let p = outsider(&r, &topic, &members);
    r.call::<Scribe, _>(p, |s, kbr, _, _| {
        s.publish_named(kbr, "real", &creator(), b"honest".to_vec())
    })
    .unwrap();
    r.advance(Duration::from_secs(1));
    for &m in &members {
        assert_eq!(messages(&mut r, m), 1, "member {m}");
    }
}
