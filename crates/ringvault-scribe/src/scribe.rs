//! The Scribe service state machine (protocols.md §3): its state, its events, and the
//! messages it handles; the client calls, the tree and anycast live in `client.rs`, `tree.rs`
//! and `anycast.rs`.

use std::collections::{BTreeMap, VecDeque};

use ringvault_overlay::{AppId, AppMessage, Forward, Kbr, RouteInfo, Service};
use ringvault_types::{Contact, Duration, Id, PublicKey, Time};

use crate::message::ScribeMessage;
use crate::name::TopicName;
use crate::topic::{Place, Topic};

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

/// One node's Scribe service.
#[derive(Debug, Default)]
pub struct Scribe {
    pub(crate) topics: BTreeMap<Id, Topic>,
    /// Sequence numbers of this node's own publications, per topic.
    pub(crate) published: BTreeMap<Id, u64>,
    /// Cached root per topic, for publishing straight to it.
    pub(crate) roots: BTreeMap<Id, Contact>,
    /// Replicated root state: the children (and name) of roots we may succeed.
    pub(crate) replicas: BTreeMap<Id, (Vec<Contact>, Option<TopicName>)>,
    pub(crate) anycasts: BTreeMap<u64, Time>,
    pub(crate) next_req: u64,
    pub(crate) events: VecDeque<ScribeEvent>,
    pub(crate) next_tick: Option<Time>,
    /// Messages from peers dropped as malformed or carrying a forged topic name.
    pub(crate) refused: u64,
}

pub(crate) fn encode(m: &ScribeMessage) -> AppMessage {
    AppMessage {
        app: SCRIBE_APP,
        body: postcard::to_allocvec(m).expect("Scribe messages always encode"),
    }
}

pub(crate) fn send(kbr: &mut dyn Kbr, to: Contact, m: &ScribeMessage) {
    kbr.send_direct(to, encode(m));
}

pub(crate) fn check_payload(data: &[u8]) -> Result<(), ScribeError> {
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
                member: t.is_member(),
                root: t.is_root(),
                parent: t.parent(),
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
    pub(crate) fn learn_name(&mut self, topic: Id, name: Option<TopicName>) {
        if let (Some(t), Some(n)) = (self.topics.get_mut(&topic), name) {
            if t.name.is_none() {
                t.name = Some(n);
            }
        }
    }

    /// The name this node knows for `topic`, to pass on in joins.
    pub(crate) fn name_of(&self, topic: Id) -> Option<TopicName> {
        self.topics.get(&topic).and_then(|t| t.name.clone())
    }

    /// A name a peer sent for `topic`, checked; a forged one is counted.
    pub(crate) fn checked(
        &mut self,
        topic: Id,
        name: Option<TopicName>,
    ) -> Option<Option<TopicName>> {
        match TopicName::check(topic, name) {
            Ok(n) => Some(n),
            Err(_) => {
                self.refused += 1;
                None
            }
        }
    }

    pub(crate) fn topic_entry(&mut self, topic: Id) -> Result<&mut Topic, ScribeError> {
        if !self.topics.contains_key(&topic) && self.topics.len() >= MAX_TOPICS {
            return Err(ScribeError::TooManyTopics);
        }
        Ok(self.topics.entry(topic).or_default())
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
                if state.is_some_and(|t| matches!(t.place, Place::Joining { .. })) {
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
                    t.start_joining(now);
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
