//! Scribe group communication on ringvault's KBR API.
//!
//! Owns: topics (id = hash of name and creator key), multicast trees built from the routes of
//! subscribers' JOINs toward the topic's root, publish through the root, parent heartbeats and
//! child refreshes with expiry, tree repair by re-joining, root state replicated on the nodes
//! closest to the topic, anycast by depth-first walk from where the message meets the tree, and
//! per-publisher sequence numbers so subscribers see gaps. Topic names travel with joins (and
//! publishes, acknowledgements and root state) so forwarders and the root know them too; a
//! node keeps a name only if it hashes, with the creator key it comes with, to the topic id.
//! Does not own routing (the overlay) or any I/O.
#![deny(missing_docs)]

mod anycast;
mod client;
mod message;
mod name;
mod scribe;
#[cfg(test)]
mod tests;
mod topic;
mod tree;

pub use scribe::{
    check_topic_name, topic_id, Scribe, ScribeError, ScribeEvent, TopicView, ANYCAST_TIMEOUT,
    CHILD_TIMEOUT, HEARTBEAT_INTERVAL, MAX_ANYCAST_VISITS, MAX_CHILDREN, MAX_DEPTH, MAX_PAYLOAD,
    MAX_TOPICS, MAX_TOPIC_NAME, PARENT_TIMEOUT, ROOT_REPLICAS, SCRIBE_APP,
};
