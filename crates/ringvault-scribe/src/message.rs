//! Scribe's messages, carried as the body of KBR application messages.

use serde::{Deserialize, Serialize};

use ringvault_types::{Contact, Id};

use crate::name::TopicName;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ScribeMessage {
    /// Routed toward the topic; every node it passes adds `child` and, if it was not yet in
    /// the tree, puts itself as `child` and lets it go on. Sent directly when a full parent
    /// pushes a new child down to one of its children. `name` (when the joiner knows it) lets
    /// every node on the way learn the topic's name; a name that does not hash to `topic`
    /// gets the whole join refused.
    Join {
        topic: Id,
        child: Contact,
        name: Option<TopicName>,
    },
    /// Parent to new child: "I am your parent"; `path` is the child's ancestors, root first;
    /// `name` is the topic's name when the parent knows it.
    JoinAck {
        topic: Id,
        path: Vec<Id>,
        name: Option<TopicName>,
    },
    /// Child to parent: "keep me" (children expire unless refreshed).
    Refresh { topic: Id },
    /// Child to parent: "drop me".
    Leave { topic: Id },
    /// Routed to the topic's root (or sent with the cached root as first hop); `name` lets a
    /// root made by this publish know the topic's name.
    Publish {
        topic: Id,
        publisher: Contact,
        seq: u64,
        data: Vec<u8>,
        name: Option<TopicName>,
    },
    /// Root to publisher: where the root is, to cache.
    RootIs { topic: Id },
    /// Down the tree.
    Data {
        topic: Id,
        publisher: Id,
        seq: u64,
        data: Vec<u8>,
        path: Vec<Id>,
    },
    /// Parent to children when there was no data for a while.
    Heartbeat { topic: Id, path: Vec<Id> },
    /// The root's children (and the topic's name), kept by the next closest nodes to take
    /// over if the root dies.
    RootState {
        topic: Id,
        children: Vec<Contact>,
        name: Option<TopicName>,
    },
    /// Routed to the topic, then walked depth first through the tree.
    Anycast {
        req: u64,
        topic: Id,
        origin: Contact,
        payload: Vec<u8>,
        visited: Vec<Id>,
    },
    /// A member accepted an anycast.
    AnycastAccepted { req: u64, by: Contact },
    /// The whole tree was walked and nobody accepted.
    AnycastFailed { req: u64 },
}
