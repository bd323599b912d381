//! The Scribe service state machine (protocols.md §3).

use std::collections::{BTreeMap, VecDeque};

use ringvault_overlay::{AppId, AppMessage, Forward, Kbr, RouteInfo, Service};
use ringvault_types::{Contact, Duration, Id, PublicKey, Time};

use crate::message::ScribeMessage;
use crate::name::TopicName;

/// The application id of Scribe messages.
pub const SCRIBE_APP: AppId = 3;
/// The longest topic name, in bytes.
pub const MAX_TOPIC_NAME: usize = 256;
/// The largest published or anycast payload, in bytes.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// At most this many topics are tracked per node (as member, forwarder or root); joins for
/// more are refused.
pub const MAX_TOPICS: usize = 1024;
/// At most this many children per topic per node; a new child beyond it is pushed down to an
/// existing child.
pub const MAX_CHILDREN: usize = 16;
/// Parents heartbeat children (when no data flowed) and children refresh parents this often.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// A child silent (no refresh) for this long is dropped.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(7);
/// A parent silent (no data, no heartbeat) for this long is presumed dead: re-join.
pub const PARENT_TIMEOUT: Duration = Duration::from_secs(7);
/// The root's state is kept by this many of the nodes closest to the topic.
pub const ROOT_REPLICAS: usize = 3;
/// The deepest tree this node takes part in; joins below it are passed up.
pub const MAX_DEPTH: usize = 64;
/// An anycast visits at most this many nodes before failing.
pub const MAX_ANYCAST_VISITS: usize = 1024;
/// An anycast with no answer by then fails.
pub const ANYCAST_TIMEOUT: Duration = Duration::from_secs(20);

/// The topic id of `name` created by `creator`: the root of this key is the rendezvous point.
pub fn topic_id(name: &str, creator: &PublicKey) -> Id {
    Id::hash_parts(&[b"ringvault/scribe/topic/v1", name.as_bytes(), &creator.0])
}

/// Why a Scribe call was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScribeError {
    /// The topic name is empty or too long.
    #[error("a topic name is 1 to {MAX_TOPIC_NAME} bytes, got {0}")]
    BadTopicName(usize),
    /// The payload is empty or too large.
    #[error("a message is 1 to {MAX_PAYLOAD} bytes, got {0}")]
    BadPayload(usize),
    /// This node already takes part in as many topics as it may.
    #[error("this node already takes part in {MAX_TOPICS} topics")]
    TooManyTopics,
    /// No member accepted the anycast.
    #[error("no member of the group accepted the message")]
    NoTaker,
    /// The anycast got no answer in time.
    #[error("no answer in time")]
    Timeout,
}

/// What a Scribe node reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScribeEvent {
    /// A message published to a topic this node subscribes to.
    Message {
        /// The topic.
        topic: Id,
        /// Who published it.
        publisher: Id,
        /// The publisher's sequence number for this topic (1, 2, ...).
        seq: u64,
        /// The payload.
        data: Vec<u8>,
        /// Messages from this publisher were missed before this one.
        gap: bool,
    },
    /// An anycast this node accepted.
    AnycastReceived {
        /// The topic.
        topic: Id,
        /// Who sent it.
        origin: Contact,
        /// The payload.
        payload: Vec<u8>,
    },
    /// An anycast this node sent finished.
    AnycastDone {
        /// The id `anycast` returned.
        req: u64,
        /// The member that accepted it.
        result: Result<Contact, ScribeError>,
    },
}

/// This node's part in a topic, for status pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicView {
    /// The topic.
    pub topic: Id,
    /// The topic's name, once this node has learnt it: from the application
    /// ([`Scribe::subscribe_named`], [`Scribe::publish_named`]) or from a join, join
    /// acknowledgement, publish or root state whose name hashes to the topic id.
    pub name: Option<String>,
    /// Subscribed here.
    pub member: bool,
    /// This node is the topic's root.
    pub root: bool,
    /// The parent in the tree (none at the root, or while re-joining).
    pub parent: Option<Contact>,
    /// The children in the tree.
    pub children: Vec<Contact>,
}

/// This node's part in one topic's tree.
#[derive(Debug, Default)]
struct Topic {
    /// Children and when each last refreshed.
    children: BTreeMap<Id, (Contact, Time)>,
    parent: Option<Contact>,
    parent_heard: Time,
    /// A JOIN went out and no parent answered yet.
    joining: bool,
    root: bool,
    member: bool,
    accepts_anycast: bool,
    /// Last time data or a heartbeat went to the children.
    sent_down: Time,
    /// Last sequence number seen per publisher (members).
    seqs: BTreeMap<Id, u64>,
    /// This node's ancestors, root first, as the parent last said. A node never adopts one of
    /// its ancestors, and a parent path that contains this node reveals a loop.
    path: Vec<Id>,
    /// The topic's name, checked against the topic id before it was kept.
    name: Option<TopicName>,
}

impl Topic {
    fn in_tree(&self) -> bool {
        self.root || self.parent.is_some() || self.joining
    }

    /// Connected to the root (as far as this node knows): only then does it take children
    /// from passing JOINs, so two re-joining nodes cannot adopt each other.
    fn attached(&self) -> bool {
        self.root || self.parent.is_some()
    }

    /// The path a child of this node has: ours plus us.
    fn child_path(&self, me: Id) -> Vec<Id> {
        let mut p = self.path.clone();
        p.push(me);
        p
    }

    fn needed(&self) -> bool {
        self.member || self.root || !self.children.is_empty()
    }
}

/// One node's Scribe service.
#[derive(Debug, Default)]
pub struct Scribe {
    topics: BTreeMap<Id, Topic>,
    /// Sequence numbers of this node's own publications, per topic.
    published: BTreeMap<Id, u64>,
    /// Cached root per topic, for publishing straight to it.
    roots: BTreeMap<Id, Contact>,
    /// Replicated root state: the children (and name) of roots we may succeed.
    replicas: BTreeMap<Id, (Vec<Contact>, Option<TopicName>)>,
    anycasts: BTreeMap<u64, Time>,
    next_req: u64,
    events: VecDeque<ScribeEvent>,
    next_tick: Option<Time>,
    /// Messages from peers dropped as malformed or carrying a forged topic name.
    refused: u64,
}

pub(crate) fn encode(m: &ScribeMessage) -> AppMessage {
    AppMessage {
        app: SCRIBE_APP,
        body: postcard::to_allocvec(m).expect("Scribe messages always encode"),
    }
}

fn send(kbr: &mut dyn Kbr, to: Contact, m: &ScribeMessage) {
    kbr.send_direct(to, encode(m));
}

fn check_payload(data: &[u8]) -> Result<(), ScribeError> {
    if data.is_empty() || data.len() > MAX_PAYLOAD {
        return Err(ScribeError::BadPayload(data.len()));
    }
    Ok(())
}

/// Checks a topic name the way the API and CLI take it.
pub fn check_topic_name(name: &str) -> Result<(), ScribeError> {
    if name.is_empty() || name.len() > MAX_TOPIC_NAME {
        return Err(ScribeError::BadTopicName(name.len()));
    }
    Ok(())
}

impl Scribe {
    /// A node with no topics.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ScribeEvent> {
        self.events.pop_front()
    }

    /// The topics this node takes part in, as member, forwarder or root.
    pub fn topics(&self) -> Vec<TopicView> {
        self.topics
            .iter()
            .map(|(id, t)| TopicView {
                topic: *id,
                name: t.name.as_ref().map(|n| n.name.clone()),
                member: t.member,
                root: t.root,
                parent: t.parent,
                children: t.children.values().map(|(c, _)| *c).collect(),
            })
            .collect()
    }

    /// Messages from peers dropped because they did not decode or claimed a topic name that
    /// does not hash to the topic id.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Keeps `name` (already checked against `topic`) if this node is in `topic`'s tree and
    /// does not know the name yet.
    fn learn_name(&mut self, topic: Id, name: Option<TopicName>) {
        if let (Some(t), Some(n)) = (self.topics.get_mut(&topic), name) {
            if t.name.is_none() {
                t.name = Some(n);
            }
        }
    }

    /// The name this node knows for `topic`, to pass on in joins.
    fn name_of(&self, topic: Id) -> Option<TopicName> {
        self.topics.get(&topic).and_then(|t| t.name.clone())
    }

    /// A name a peer sent for `topic`, checked; a forged one is counted.
    fn checked(&mut self, topic: Id, name: Option<TopicName>) -> Option<Option<TopicName>> {
        match TopicName::check(topic, name) {
            Ok(n) => Some(n),
            Err(_) => {
                self.refused += 1;
                None
            }
        }
    }

    fn topic_entry(&mut self, topic: Id) -> Result<&mut Topic, ScribeError> {
        if !self.topics.contains_key(&topic) && self.topics.len() >= MAX_TOPICS {
            return Err(ScribeError::TooManyTopics);
        }
        Ok(self.topics.entry(topic).or_default())
    }

    /// Subscribes this node to `topic`; messages arrive as [`ScribeEvent::Message`]. The tree
    /// learns the topic's name only from nodes that know it (see [`Scribe::subscribe_named`]).
    pub fn subscribe(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        topic: Id,
    ) -> Result<(), ScribeError> {
        self.join_topic(kbr, now, topic, None)
    }

    /// Subscribes this node to the topic named `name` created by `creator` and returns its id
    /// ([`topic_id`]). The name travels with the join, so every forwarder on the way and the
    /// root learn it (each checks it against the id first).
    pub fn subscribe_named(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        name: &str,
        creator: &PublicKey,
    ) -> Result<Id, ScribeError> {
        check_topic_name(name)?;
        let topic = topic_id(name, creator);
        let name = TopicName {
            name: name.to_string(),
            creator: *creator,
        };
        self.join_topic(kbr, now, topic, Some(name))?;
        Ok(topic)
    }

    fn join_topic(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        topic: Id,
        name: Option<TopicName>,
    ) -> Result<(), ScribeError> {
        let t = self.topic_entry(topic)?;
        t.member = true;
        t.accepts_anycast = true;
        if t.name.is_none() {
            t.name = name;
        }
        if !t.in_tree() {
            t.joining = true;
            t.parent_heard = now;
            let me = kbr.local_contact();
            let name = t.name.clone();
            kbr.route(
                topic,
                encode(&ScribeMessage::Join {
                    topic,
                    child: me,
                    name,
                }),
                None,
            );
        }
        self.schedule(now);
        Ok(())
    }

    /// Leaves `topic`; the node stays a forwarder while it has children.
    pub fn unsubscribe(&mut self, kbr: &mut dyn Kbr, topic: Id) {
        if let Some(t) = self.topics.get_mut(&topic) {
            t.member = false;
        }
        self.prune(kbr, topic);
    }

    /// Whether this member accepts anycasts to `topic` (the application's decision).
    pub fn set_accepts_anycast(&mut self, topic: Id, accepts: bool) {
        if let Some(t) = self.topics.get_mut(&topic) {
            t.accepts_anycast = accepts;
        }
    }

    /// Publishes `data` to every subscriber of `topic`. Returns the sequence number.
    pub fn publish(
        &mut self,
        kbr: &mut dyn Kbr,
        topic: Id,
        data: Vec<u8>,
    ) -> Result<u64, ScribeError> {
        let name = self.name_of(topic);
        self.publish_with(kbr, topic, data, name)
    }

    /// Publishes `data` to the topic named `name` created by `creator` ([`topic_id`]);
    /// returns the sequence number. The name goes with the message, so a root that this
    /// publish creates knows it.
    pub fn publish_named(
        &mut self,
        kbr: &mut dyn Kbr,
        name: &str,
        creator: &PublicKey,
        data: Vec<u8>,
    ) -> Result<u64, ScribeError> {
        check_topic_name(name)?;
        let topic = topic_id(name, creator);
        let name = TopicName {
            name: name.to_string(),
            creator: *creator,
        };
        self.publish_with(kbr, topic, data, Some(name))
    }

    fn publish_with(
        &mut self,
        kbr: &mut dyn Kbr,
        topic: Id,
        data: Vec<u8>,
        name: Option<TopicName>,
    ) -> Result<u64, ScribeError> {
        check_payload(&data)?;
        let seq = self.published.entry(topic).or_insert(0);
        *seq += 1;
        let seq = *seq;
        let publisher = kbr.local_contact();
        let msg = ScribeMessage::Publish {
            topic,
            publisher,
            seq,
            data,
            name,
        };
        // The cached root is the first hop; if it died the overlay re-routes to the new root.
        let hint = self.roots.get(&topic).copied();
        kbr.route(topic, encode(&msg), hint);
        Ok(seq)
    }

    /// Sends `payload` to one member of `topic` that accepts it; the result comes as
    /// [`ScribeEvent::AnycastDone`] with the returned id.
    pub fn anycast(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        topic: Id,
        payload: Vec<u8>,
    ) -> Result<u64, ScribeError> {
        check_payload(&payload)?;
        self.next_req += 1;
        let req = self.next_req;
        self.anycasts.insert(req, now + ANYCAST_TIMEOUT);
        self.schedule(now);
        let origin = kbr.local_contact();
        let msg = ScribeMessage::Anycast {
            req,
            topic,
            origin,
            payload,
            visited: Vec::new(),
        };
        kbr.route(topic, encode(&msg), None);
        Ok(req)
    }

    fn schedule(&mut self, now: Time) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + HEARTBEAT_INTERVAL);
        }
    }

    /// Adds `child` to `topic` here, or pushes it down when this node is full.
    fn adopt(&mut self, kbr: &mut dyn Kbr, now: Time, topic: Id, child: Contact) {
        let me = kbr.local_contact();
        if child.id == me.id {
            return;
        }
        let Ok(t) = self.topic_entry(topic) else {
            return;
        };
        let name = t.name.clone();
        if t.path.contains(&child.id) || t.path.len() >= MAX_DEPTH {
            // The child is one of our ancestors (adopting it would close a loop), or the tree
            // is too deep here: pass the join up.
            let join = ScribeMessage::Join { topic, child, name };
            match t.parent {
                Some(p) => send(kbr, p, &join),
                None => kbr.route(topic, encode(&join), None),
            }
        } else if t.children.contains_key(&child.id) || t.children.len() < MAX_CHILDREN {
            t.children.insert(child.id, (child, now));
            let path = t.child_path(me.id);
            send(kbr, child, &ScribeMessage::JoinAck { topic, path, name });
        } else {
            // Full: a child takes the newcomer (bounded fan-out). Which child is a hash of
            // (topic, this node, newcomer), so pushed-down joins spread evenly over the children
            // at every level (the subtree grows about 16 times wider per level, not into lines)
            // and a re-join of the same node lands in the same place.
            let pick = Id::hash_parts(&[topic.as_bytes(), me.id.as_bytes(), child.id.as_bytes()]);
            let mut word = [0u8; 8];
            word.copy_from_slice(&pick.as_bytes()[..8]);
            let index = (u64::from_le_bytes(word) % t.children.len() as u64) as usize;
            if let Some((below, _)) = t.children.values().nth(index) {
                let below = *below;
                send(kbr, below, &ScribeMessage::Join { topic, child, name });
            }
        }
        self.schedule(now);
    }

    /// Becomes the root of `topic`, taking over the replicated children of a dead root.
    fn become_root(&mut self, kbr: &mut dyn Kbr, now: Time, topic: Id) {
        let (inherited, name) = self.replicas.remove(&topic).unwrap_or_default();
        let Ok(t) = self.topic_entry(topic) else {
            return;
        };
        if !t.root {
            t.root = true;
            t.parent = None;
            t.joining = false;
            t.path.clear();
        }
        if t.name.is_none() {
            t.name = name;
        }
        for c in inherited {
            self.adopt(kbr, now, topic, c);
        }
    }

    /// Forwards data to this node's children and delivers it here if subscribed.
    fn disseminate(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        topic: Id,
        publisher: Id,
        seq: u64,
        data: Vec<u8>,
    ) {
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        t.sent_down = now;
        let children: Vec<Contact> = t.children.values().map(|(c, _)| *c).collect();
        let path = t.child_path(kbr.local_contact().id);
        if t.member {
            let last = t.seqs.get(&publisher).copied().unwrap_or(0);
            if seq > last {
                t.seqs.insert(publisher, seq);
                self.events.push_back(ScribeEvent::Message {
                    topic,
                    publisher,
                    seq,
                    data: data.clone(),
                    gap: seq > last + 1,
                });
            } else {
                return; // a duplicate: already delivered and forwarded
            }
        }
        for c in children {
            send(
                kbr,
                c,
                &ScribeMessage::Data {
                    topic,
                    publisher,
                    seq,
                    data: data.clone(),
                    path: path.clone(),
                },
            );
        }
    }

    /// Drops this node's state for `topic` when nothing needs it, leaving its parent.
    fn prune(&mut self, kbr: &mut dyn Kbr, topic: Id) {
        let Some(t) = self.topics.get(&topic) else {
            return;
        };
        if t.needed() {
            return;
        }
        if let Some(p) = t.parent {
            send(kbr, p, &ScribeMessage::Leave { topic });
        }
        self.topics.remove(&topic);
    }

    fn anycast_step(
        &mut self,
        kbr: &mut dyn Kbr,
        req: u64,
        topic: Id,
        origin: Contact,
        payload: Vec<u8>,
        mut visited: Vec<Id>,
    ) {
        let me = kbr.local_contact();
        let Some(t) = self.topics.get(&topic) else {
            send(kbr, origin, &ScribeMessage::AnycastFailed { req });
            return;
        };
        if !visited.contains(&me.id) {
            if t.member && t.accepts_anycast {
                self.events.push_back(ScribeEvent::AnycastReceived {
                    topic,
                    origin,
                    payload,
                });
                send(kbr, origin, &ScribeMessage::AnycastAccepted { req, by: me });
                return;
            }
            visited.push(me.id);
        }
        if visited.len() > MAX_ANYCAST_VISITS {
            send(kbr, origin, &ScribeMessage::AnycastFailed { req });
            return;
        }
        // Depth first: an unvisited child, else back up to the parent, else (root) give up.
        let next = t
            .children
            .values()
            .map(|(c, _)| *c)
            .find(|c| !visited.contains(&c.id))
            .or(if t.root { None } else { t.parent });
        match next {
            Some(n) => send(
                kbr,
                n,
                &ScribeMessage::Anycast {
                    req,
                    topic,
                    origin,
                    payload,
                    visited,
                },
            ),
            None => send(kbr, origin, &ScribeMessage::AnycastFailed { req }),
        }
    }

    fn tick(&mut self, kbr: &mut dyn Kbr, now: Time) {
        let me = kbr.local_contact();
        let ids: Vec<Id> = self.topics.keys().copied().collect();
        for topic in ids {
            let Some(t) = self.topics.get_mut(&topic) else {
                continue;
            };
            // Children that stopped refreshing are gone.
            t.children
                .retain(|_, (_, at)| now.saturating_since(*at) < CHILD_TIMEOUT);
            // Heartbeat the children if no data went down lately.
            if !t.children.is_empty() && now.saturating_since(t.sent_down) >= HEARTBEAT_INTERVAL {
                t.sent_down = now;
                let path = t.child_path(me.id);
                for (c, _) in t.children.values() {
                    let path = path.clone();
                    send(kbr, *c, &ScribeMessage::Heartbeat { topic, path });
                }
            }
            let t = self.topics.get_mut(&topic).expect("present");
            if t.root {
                // Keep the root's state with the next closest nodes.
                let children: Vec<Contact> = t.children.values().map(|(c, _)| *c).collect();
                let state = ScribeMessage::RootState {
                    topic,
                    children,
                    name: t.name.clone(),
                };
                for r in kbr.replica_set(&topic, ROOT_REPLICAS + 1) {
                    if r.id != me.id {
                        send(kbr, r, &state);
                    }
                }
            } else if t.parent.is_some() || t.joining {
                if now.saturating_since(t.parent_heard) >= PARENT_TIMEOUT {
                    // The parent is presumed dead: re-join; the overlay finds a new parent.
                    t.parent = None;
                    t.joining = true;
                    t.parent_heard = now;
                    let join = ScribeMessage::Join {
                        topic,
                        child: me,
                        name: t.name.clone(),
                    };
                    kbr.route(topic, encode(&join), None);
                } else if let Some(p) = t.parent {
                    send(kbr, p, &ScribeMessage::Refresh { topic });
                }
            }
            self.prune(kbr, topic);
        }
        // Anycasts that got no answer.
        let expired: Vec<u64> = self
            .anycasts
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in expired {
            self.anycasts.remove(&req);
            self.events.push_back(ScribeEvent::AnycastDone {
                req,
                result: Err(ScribeError::Timeout),
            });
        }
        let busy = !self.topics.is_empty() || !self.anycasts.is_empty();
        self.next_tick = busy.then_some(now + HEARTBEAT_INTERVAL);
    }

    /// A node acting as our parent spoke, with our would-be ancestors.
    fn heard_from_parent(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        topic: Id,
        from: Contact,
        path: Vec<Id>,
    ) {
        let me = kbr.local_contact();
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        if t.root {
            return;
        }
        if path.contains(&me.id) || path.len() > MAX_DEPTH {
            // A loop: we would be our own ancestor. Leave that parent and join again.
            t.children.remove(&from.id);
            send(kbr, from, &ScribeMessage::Leave { topic });
            if t.parent.is_some_and(|p| p.id == from.id) {
                t.parent = None;
                t.path.clear();
                t.joining = true;
                t.parent_heard = now;
                let join = ScribeMessage::Join {
                    topic,
                    child: me,
                    name: t.name.clone(),
                };
                kbr.route(topic, encode(&join), None);
            }
            return;
        }
        t.parent = Some(from);
        t.path = path;
        t.joining = false;
        t.parent_heard = now;
    }
}

impl Service for Scribe {
    fn app_id(&self) -> AppId {
        SCRIBE_APP
    }

    fn deliver(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        _key: Id,
        msg: AppMessage,
        info: RouteInfo,
    ) {
        let Ok(m) = postcard::from_bytes::<ScribeMessage>(&msg.body) else {
            self.refused += 1;
            return; // malformed: dropped
        };
        let from = info.origin;
        let routed = info.hops > 0 || from.id == kbr.local_contact().id;
        match m {
            ScribeMessage::Join { topic, child, name } => {
                let Some(name) = self.checked(topic, name) else {
                    return;
                };
                if routed {
                    // Arrived at the root.
                    self.become_root(kbr, now, topic);
                    self.learn_name(topic, name);
                    self.adopt(kbr, now, topic, child);
                } else if self.topics.get(&topic).is_some_and(Topic::attached) {
                    // Pushed down by a full parent, or passed up by a child.
                    self.learn_name(topic, name);
                    self.adopt(kbr, now, topic, child);
                } else {
                    let join = ScribeMessage::Join { topic, child, name };
                    kbr.route(topic, encode(&join), None);
                }
            }
            ScribeMessage::JoinAck { topic, path, name } => {
                let Some(name) = self.checked(topic, name) else {
                    return;
                };
                self.heard_from_parent(kbr, now, topic, from, path);
                self.learn_name(topic, name);
            }
            ScribeMessage::Refresh { topic } => {
                if let Some(t) = self.topics.get_mut(&topic) {
                    if let Some(e) = t.children.get_mut(&from.id) {
                        e.1 = now;
                    }
                }
            }
            ScribeMessage::Leave { topic } => {
                if let Some(t) = self.topics.get_mut(&topic) {
                    t.children.remove(&from.id);
                }
                self.prune(kbr, topic);
            }
            ScribeMessage::Publish {
                topic,
                publisher,
                seq,
                data,
                name,
            } => {
                if check_payload(&data).is_err() {
                    self.refused += 1;
                    return;
                }
                let Some(name) = self.checked(topic, name) else {
                    return;
                };
                self.become_root(kbr, now, topic);
                self.learn_name(topic, name);
                if publisher.id != kbr.local_contact().id {
                    send(kbr, publisher, &ScribeMessage::RootIs { topic });
                }
                self.disseminate(kbr, now, topic, publisher.id, seq, data);
            }
            ScribeMessage::RootIs { topic } => {
                if self.roots.len() < MAX_TOPICS || self.roots.contains_key(&topic) {
                    self.roots.insert(topic, from);
                }
            }
            ScribeMessage::Data {
                topic,
                publisher,
                seq,
                data,
                path,
            } => {
                self.heard_from_parent(kbr, now, topic, from, path);
                self.disseminate(kbr, now, topic, publisher, seq, data);
            }
            ScribeMessage::Heartbeat { topic, path } => {
                if self.topics.contains_key(&topic) {
                    self.heard_from_parent(kbr, now, topic, from, path);
                } else {
                    // A parent that still counts us: tell it we left.
                    send(kbr, from, &ScribeMessage::Leave { topic });
                }
            }
            ScribeMessage::RootState {
                topic,
                children,
                name,
            } => {
                let Some(name) = self.checked(topic, name) else {
                    return;
                };
                if self.replicas.len() < MAX_TOPICS || self.replicas.contains_key(&topic) {
                    let mut children = children;
                    children.truncate(MAX_CHILDREN);
                    self.replicas.insert(topic, (children, name));
                }
            }
            ScribeMessage::Anycast {
                req,
                topic,
                origin,
                payload,
                visited,
            } => {
                if check_payload(&payload).is_ok() {
                    self.anycast_step(kbr, req, topic, origin, payload, visited);
                }
            }
            ScribeMessage::AnycastAccepted { req, by } => {
                if self.anycasts.remove(&req).is_some() {
                    self.events.push_back(ScribeEvent::AnycastDone {
                        req,
                        result: Ok(by),
                    });
                }
            }
            ScribeMessage::AnycastFailed { req } => {
                if self.anycasts.remove(&req).is_some() {
                    self.events.push_back(ScribeEvent::AnycastDone {
                        req,
                        result: Err(ScribeError::NoTaker),
                    });
                }
            }
        }
    }

    fn forward(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        _key: Id,
        msg: &mut AppMessage,
        _next: &mut Contact,
    ) -> Forward {
        let Ok(m) = postcard::from_bytes::<ScribeMessage>(&msg.body) else {
            return Forward::Continue;
        };
        let me = kbr.local_contact();
        match m {
            ScribeMessage::Join { topic, child, name } => {
                if child.id == me.id {
                    return Forward::Continue; // our own join leaving us
                }
                let Some(name) = self.checked(topic, name) else {
                    return Forward::Stop; // a forged name: the join goes no further
                };
                let state = self.topics.get(&topic);
                if state.is_some_and(Topic::attached) {
                    self.learn_name(topic, name);
                    self.adopt(kbr, now, topic, child);
                    return Forward::Stop;
                }
                if state.is_some_and(|t| t.joining) {
                    // Re-joining ourselves: let the join pass to a node with a path to the root.
                    self.learn_name(topic, name);
                    return Forward::Continue;
                }
                // Not yet in the tree: take the child, then join ourselves in its place.
                if self.topic_entry(topic).is_err() {
                    return Forward::Continue;
                }
                self.learn_name(topic, name);
                self.adopt(kbr, now, topic, child);
                if let Some(t) = self.topics.get_mut(&topic) {
                    t.joining = true;
                    t.parent_heard = now;
                }
                let name = self.name_of(topic);
                *msg = encode(&ScribeMessage::Join {
                    topic,
                    child: me,
                    name,
                });
                Forward::Continue
            }
            ScribeMessage::Anycast {
                req,
                topic,
                origin,
                payload,
                visited,
            } if self.topics.get(&topic).is_some_and(Topic::in_tree) && origin.id != me.id => {
                // The anycast met the tree: walk it from here.
                self.anycast_step(kbr, req, topic, origin, payload, visited);
                Forward::Stop
            }
            _ => Forward::Continue,
        }
    }

    fn update(&mut self, kbr: &mut dyn Kbr, now: Time, _node: Contact, joined: bool) {
        if joined {
            return;
        }
        // A neighbour left: if we now are the root of a topic whose state we keep, take over.
        let me = kbr.local_contact().id;
        let ours: Vec<Id> = self
            .replicas
            .keys()
            .copied()
            .filter(|t| kbr.replica_set(t, 1).first().is_some_and(|c| c.id == me))
            .collect();
        for topic in ours {
            self.become_root(kbr, now, topic);
        }
    }

    fn next_deadline(&self) -> Option<Time> {
        self.next_tick
    }

    fn handle_timeout(&mut self, kbr: &mut dyn Kbr, now: Time) {
        if self.next_tick.is_some_and(|t| t <= now) {
            self.tick(kbr, now);
        }
    }
}
