//! The multicast tree of each topic: adopting children (and pushing them down when full),
//! taking over as root, sending data and heartbeats down, refreshing and repairing the way up,
//! and leaving when nothing needs the topic here.

use ringvault_overlay::Kbr;
use ringvault_types::{Contact, Id, Time};

use crate::message::ScribeMessage;
use crate::scribe::{
    encode, send, Scribe, ScribeError, ScribeEvent, CHILD_TIMEOUT, HEARTBEAT_INTERVAL,
    MAX_CHILDREN, MAX_DEPTH, PARENT_TIMEOUT, ROOT_REPLICAS,
};
use crate::topic::{Place, Topic};

/// Routes a JOIN for this node toward `topic`'s root (carrying the name, if known) and marks
/// the topic joining from `now`: the first join of a subscriber and every re-join.
pub(crate) fn join(kbr: &mut dyn Kbr, now: Time, topic: Id, t: &mut Topic) {
    t.start_joining(now);
    let join = ScribeMessage::Join {
        topic,
        child: kbr.local_contact(),
        name: t.name.clone(),
    };
    kbr.route(topic, encode(&join), None);
}

impl Scribe {
    /// Adds `child` to `topic` here, or pushes it down when this node is full.
    pub(crate) fn adopt(&mut self, kbr: &mut dyn Kbr, now: Time, topic: Id, child: Contact) {
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
            match t.parent() {
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
    pub(crate) fn become_root(&mut self, kbr: &mut dyn Kbr, now: Time, topic: Id) {
        let (inherited, name) = self.replicas.remove(&topic).unwrap_or_default();
        let Ok(t) = self.topic_entry(topic) else {
            return;
        };
        if !t.is_root() {
            t.place = Place::Root;
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
    pub(crate) fn disseminate(
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
        if t.is_member() {
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
    pub(crate) fn prune(&mut self, kbr: &mut dyn Kbr, topic: Id) {
        let Some(t) = self.topics.get(&topic) else {
            return;
        };
        if t.needed() {
            return;
        }
        if let Some(p) = t.parent() {
            send(kbr, p, &ScribeMessage::Leave { topic });
        }
        self.topics.remove(&topic);
    }

    pub(crate) fn tick(&mut self, kbr: &mut dyn Kbr, now: Time) {
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
            if t.is_root() {
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
            } else if let Place::Child { heard: since, .. } | Place::Joining { since } = t.place {
                if now.saturating_since(since) >= PARENT_TIMEOUT {
                    // The parent is presumed dead (or none answered the join): join again;
                    // the overlay finds a new parent.
                    join(kbr, now, topic, t);
                } else if let Some(p) = t.parent() {
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
    pub(crate) fn heard_from_parent(
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
        if t.is_root() {
            return;
        }
        if path.contains(&me.id) || path.len() > MAX_DEPTH {
            // A loop: we would be our own ancestor. Leave that parent and join again.
            t.children.remove(&from.id);
            send(kbr, from, &ScribeMessage::Leave { topic });
            if t.parent().is_some_and(|p| p.id == from.id) {
                t.path.clear();
                join(kbr, now, topic, t);
            }
            return;
        }
        t.place = Place::Child {
            parent: from,
            heard: now,
        };
        t.path = path;
    }
}
