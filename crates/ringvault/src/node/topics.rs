//! Scribe on a daemon node: the service, registered next to PAST, and the client glue the HTTP
//! API uses. Calls run inside the node's actor (through [`NodeHandle::run`]); Scribe's events come
//! back through the driver's poller and go to whoever waits: messages to the open event streams
//! of their topic, anycast results to the request that started them. No protocol decision is
//! made here.
//!
//! Topic names map to ids with one fixed creator key (derived from [`TOPIC_CREATOR_SEED`]), so
//! every node maps a name to the same topic: a topic is a name shared by the whole ring.
//! Subscribes and publishes pass the name to Scribe, which carries it through the tree so that
//! forwarders and the root can list the topic by name too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ringvault_net::{NetError, NodeHandle, Poller, Services};
use ringvault_scribe::{check_topic_name, topic_id, Scribe, ScribeError, ScribeEvent, TopicView};
use ringvault_types::{Contact, Id, Identity, PublicKey};
use tokio::sync::{mpsc, oneshot};

/// The seed of the key every node uses as the "creator" of a named topic.
pub const TOPIC_CREATOR_SEED: [u8; 32] = *b"ringvault/groups/shared-creator!";
/// Events buffered per open stream; a stream that falls further behind loses events.
const STREAM_QUEUE: usize = 1024;
/// Anycasts waiting for their answer at most.
const MAX_WAITING: usize = 4096;

/// What an open event stream receives.
#[derive(Clone, Debug)]
pub enum TopicEvent {
    /// A message published to the topic.
    Message {
        publisher: Id,
        seq: u64,
        data: Vec<u8>,
        gap: bool,
    },
    /// An anycast this node accepted for the topic.
    Anycast { origin: Contact, payload: Vec<u8> },
}

#[derive(Default)]
struct Shared {
    /// Open streams per topic: (stream number, sender).
    streams: HashMap<Id, Vec<(u64, mpsc::Sender<TopicEvent>)>>,
    next_stream: u64,
    anycasts: HashMap<u64, oneshot::Sender<Result<Contact, ScribeError>>>,
}

type SharedRef = Arc<Mutex<Shared>>;

/// The key every node names as a topic's creator (see the module docs).
fn creator() -> PublicKey {
    Identity::from_secret_bytes(TOPIC_CREATOR_SEED).public_key()
}

/// The topic id of `name` (see the module docs).
pub fn named_topic(name: &str) -> Id {
    topic_id(name, &creator())
}

/// Registers Scribe in `services` (after what is there) and chains its event delivery after
/// the existing poller.
pub fn add_scribe(services: &mut Services) -> TopicsClient {
    let shared: SharedRef = Arc::default();
    let s = shared.clone();
    services.services.push(Box::new(Scribe::new()));
    let mut before = services.poller.take();
    let poller: Poller = Box::new(move |node, now| {
        if let Some(p) = before.as_mut() {
            p(node, now);
        }
        let _ = node.with_service::<Scribe, _>(now, |sc, _| deliver(sc, &s));
    });
    services.poller = Some(poller);
    TopicsClient { shared }
}

fn deliver(sc: &mut Scribe, shared: &SharedRef) {
    while let Some(e) = sc.poll_event() {
        let Ok(mut sh) = shared.lock() else {
            return;
        };
        match e {
            ScribeEvent::Message {
                topic,
                publisher,
                seq,
                data,
                gap,
            } => {
                let ev = TopicEvent::Message {
                    publisher,
                    seq,
                    data,
                    gap,
                };
                send_to(&mut sh, topic, ev);
            }
            ScribeEvent::AnycastReceived {
                topic,
                origin,
                payload,
            } => send_to(&mut sh, topic, TopicEvent::Anycast { origin, payload }),
            ScribeEvent::AnycastDone { req, result } => {
                if let Some(tx) = sh.anycasts.remove(&req) {
                    let _ = tx.send(result);
                }
            }
        }
    }
}

fn send_to(sh: &mut Shared, topic: Id, ev: TopicEvent) {
    if let Some(list) = sh.streams.get(&topic) {
        for (_, tx) in list {
            let _ = tx.try_send(ev.clone());
        }
    }
}

/// Why a group call failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(transparent)]
    Scribe(ScribeError),
    #[error(transparent)]
    Net(NetError),
}

impl From<NetError> for TopicError {
    fn from(e: NetError) -> Self {
        TopicError::Net(e)
    }
}

/// An open event stream: events of one topic. Dropping it closes the stream and, when it was
/// the node's last stream on the topic, unsubscribes the node.
pub struct Subscription {
    pub rx: mpsc::Receiver<TopicEvent>,
    _guard: StreamGuard,
}

struct StreamGuard {
    node: NodeHandle,
    shared: SharedRef,
    topic: Id,
    stream: u64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let last = match self.shared.lock() {
            Ok(mut sh) => {
                let mut last = false;
                if let Some(list) = sh.streams.get_mut(&self.topic) {
                    list.retain(|(n, _)| *n != self.stream);
                    last = list.is_empty();
                }
                if last {
                    sh.streams.remove(&self.topic);
                }
                last
            }
            Err(_) => false,
        };
        if !last {
            return;
        }
        let (node, shared, topic) = (self.node.clone(), self.shared.clone(), self.topic);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = node
                    .run(move |n, now| {
                        n.with_service::<Scribe, _>(now, |sc, kbr| {
                            // A stream opened since keeps the subscription.
                            let reopened =
                                shared.lock().map(|s| s.streams.contains_key(&topic)).ok();
                            if reopened == Some(false) {
                                sc.unsubscribe(kbr, topic);
                            }
                        })
                    })
                    .await;
            });
        }
    }
}

/// Calls Scribe's client interface on a running node.
#[derive(Clone)]
pub struct TopicsClient {
    shared: SharedRef,
}

impl TopicsClient {
    /// Subscribes the node to the topic `name` (if it is not already) and opens a stream of
    /// its events.
    pub async fn subscribe(
        &self,
        node: &NodeHandle,
        name: &str,
    ) -> Result<Subscription, TopicError> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let shared = self.shared.clone();
        let topic = check_name(name).map_err(TopicError::Scribe)?;
        let name = name.to_string();
        let r = node
            .run(move |n, now| {
                n.with_service::<Scribe, _>(now, |sc, kbr| {
                    sc.subscribe_named(kbr, now, &name, &creator())?;
                    let mut sh = shared.lock().map_err(|_| ScribeError::Timeout)?;
                    sh.next_stream += 1;
                    let id = sh.next_stream;
                    sh.streams.entry(topic).or_default().push((id, tx));
                    Ok(id)
                })
            })
            .await?;
        let stream = match r {
            Some(Ok(id)) => id,
            Some(Err(e)) => return Err(TopicError::Scribe(e)),
            None => return Err(TopicError::Net(NetError::Stopped)),
        };
        Ok(Subscription {
            rx,
            _guard: StreamGuard {
                node: node.clone(),
                shared: self.shared.clone(),
                topic,
                stream,
            },
        })
    }

    /// Publishes `data` to the topic `name`; returns the sequence number.
    pub async fn publish(
        &self,
        node: &NodeHandle,
        name: &str,
        data: Vec<u8>,
    ) -> Result<u64, TopicError> {
        let name = name.to_string();
        let r = node
            .run(move |n, now| {
                n.with_service::<Scribe, _>(now, |sc, kbr| {
                    sc.publish_named(kbr, &name, &creator(), data)
                })
            })
            .await?;
        match r {
            Some(r) => r.map_err(TopicError::Scribe),
            None => Err(TopicError::Net(NetError::Stopped)),
        }
    }

    /// Sends `payload` to one member of `topic` that accepts it; returns that member.
    pub async fn anycast(
        &self,
        node: &NodeHandle,
        topic: Id,
        payload: Vec<u8>,
    ) -> Result<Contact, TopicError> {
        let (tx, rx) = oneshot::channel();
        let shared = self.shared.clone();
        let r = node
            .run(move |n, now| {
                n.with_service::<Scribe, _>(now, |sc, kbr| {
                    let req = sc.anycast(kbr, now, topic, payload)?;
                    if let Ok(mut sh) = shared.lock() {
                        if sh.anycasts.len() < MAX_WAITING {
                            sh.anycasts.insert(req, tx);
                        }
                    }
                    deliver(sc, &shared);
                    Ok(req)
                })
            })
            .await?;
        match r {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(TopicError::Scribe(e)),
            None => return Err(TopicError::Net(NetError::Stopped)),
        }
        match rx.await {
            Ok(r) => r.map_err(TopicError::Scribe),
            Err(_) => Err(TopicError::Net(NetError::Stopped)),
        }
    }

    /// The topics the node takes part in.
    pub async fn topics(&self, node: &NodeHandle) -> Result<Vec<TopicView>, TopicError> {
        let r = node
            .run(|n, now| n.with_service::<Scribe, _>(now, |sc, _| sc.topics()))
            .await?;
        Ok(r.unwrap_or_default())
    }
}

/// Checks a topic name from a URL or the command line.
pub fn check_name(name: &str) -> Result<Id, ScribeError> {
    check_topic_name(name)?;
    Ok(named_topic(name))
}

/// Standard base64 (with padding), for message bodies that are not UTF-8.
pub fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn every_node_maps_a_name_to_the_same_topic() {
        assert_eq!(named_topic("news"), named_topic("news"));
        assert_ne!(named_topic("news"), named_topic("weather"));
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(257)).is_err());
    }
}
