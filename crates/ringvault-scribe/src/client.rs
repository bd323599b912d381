//! Scribe's client interface: subscribing, publishing and anycasting, as an application on
//! this node asks.

use ringvault_overlay::Kbr;
use ringvault_types::{Id, PublicKey, Time};

use crate::message::ScribeMessage;
use crate::name::TopicName;
use crate::scribe::{
    check_payload, check_topic_name, encode, topic_id, Scribe, ScribeError, ANYCAST_TIMEOUT,
    HEARTBEAT_INTERVAL,
};
use crate::topic::Membership;
use crate::tree::join;

impl Scribe {
    /// Subscribes this node to `topic`; messages arrive as [`ScribeEvent::Message`](crate::ScribeEvent::Message). The tree
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

    pub(crate) fn join_topic(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        topic: Id,
        name: Option<TopicName>,
    ) -> Result<(), ScribeError> {
        let t = self.topic_entry(topic)?;
        t.membership = Membership::Member {
            accepts_anycast: true,
        };
        if t.name.is_none() {
            t.name = name;
        }
        if !t.in_tree() {
            join(kbr, now, topic, t);
        }
        self.schedule(now);
        Ok(())
    }

    /// Leaves `topic`; the node stays a forwarder while it has children.
    pub fn unsubscribe(&mut self, kbr: &mut dyn Kbr, topic: Id) {
        if let Some(t) = self.topics.get_mut(&topic) {
            t.membership = Membership::None;
        }
        self.prune(kbr, topic);
    }

    /// Whether this member accepts anycasts to `topic` (the application's decision; a node
    /// that is not a member takes none).
    pub fn set_accepts_anycast(&mut self, topic: Id, accepts: bool) {
        if let Some(Membership::Member { accepts_anycast }) =
            self.topics.get_mut(&topic).map(|t| &mut t.membership)
        {
            *accepts_anycast = accepts;
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

    pub(crate) fn publish_with(
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
    /// [`ScribeEvent::AnycastDone`](crate::ScribeEvent::AnycastDone) with the returned id.
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

    pub(crate) fn schedule(&mut self, now: Time) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + HEARTBEAT_INTERVAL);
        }
    }
}
