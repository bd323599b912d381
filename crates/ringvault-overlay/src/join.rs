//! Joining: route a JOIN to the joiner's own id, build tables from the replies, optionally run
//! the second stage, then announce.

use std::collections::{BTreeMap, BTreeSet};

use ringvault_types::{Contact, Id, Time};

use crate::config::MAX_JOIN_ATTEMPTS;
use crate::overlay::{OverlayEvent, Phase};
use crate::{
    Envelope, JoinReply, JoinVariant, Overlay, OverlayMessage, Peer, RoutedBody, StateSnapshot,
};

/// At most this many contacts are read from any one message; the rest is ignored.
pub const MAX_CONTACTS_PER_MESSAGE: usize = 1024;

impl Overlay {
    /// Joins the ring through `bootstrap`, a node already in it (ideally a nearby one). The
    /// result arrives as [`OverlayEvent::Joined`] or [`OverlayEvent::JoinFailed`].
    pub fn join(&mut self, now: Time, bootstrap: Contact) {
        self.start_join_attempt(now, bootstrap, 1);
    }

    fn start_join_attempt(&mut self, now: Time, bootstrap: Contact, attempt: u32) {
        self.stats.join_attempts += 1;
        self.phase = Phase::AwaitingJoinReplies {
            bootstrap,
            attempt,
            deadline: now + self.cfg.join_timeout,
            hops_seen: BTreeSet::new(),
            root_hop: None,
            versions: BTreeMap::new(),
        };
        let envelope = Envelope {
            key: self.me.id,
            origin: self.me,
            hops: 0,
            trace: None,
            body: RoutedBody::Join { joiner: self.me },
        };
        let seq = self.next_seq();
        self.send(bootstrap, OverlayMessage::Routed { seq, envelope });
    }

    /// Restarts or abandons a join whose step timed out.
    pub(crate) fn join_timeout(&mut self, now: Time) {
        let (bootstrap, attempt) = match &self.phase {
            Phase::AwaitingJoinReplies {
                bootstrap,
                attempt,
                deadline,
                ..
            } if now >= *deadline => (*bootstrap, *attempt),
            Phase::CollectingState { deadline, .. } if now >= *deadline => {
                // Missing second-stage replies: go on with what we have.
                self.finish_join(now);
                return;
            }
            Phase::CheckingJoin { deadline, .. } if now >= *deadline => {
                // Missing answers: go on with the ones that came.
                self.end_join_check(now);
                return;
            }
            _ => return,
        };
        if attempt >= MAX_JOIN_ATTEMPTS {
            self.phase = Phase::Idle;
            self.event(OverlayEvent::JoinFailed { attempts: attempt });
        } else {
            self.start_join_attempt(now, bootstrap, attempt + 1);
        }
    }

    /// A node on our join path sent its state.
    pub(crate) fn on_join_reply(&mut self, now: Time, from: Contact, reply: JoinReply) {
        if !matches!(self.phase, Phase::AwaitingJoinReplies { .. }) {
            return;
        }
        let probe_neighbours = !reply.neighbours.is_empty();
        for c in reply
            .rows
            .iter()
            .chain(reply.leaves.iter())
            .take(MAX_CONTACTS_PER_MESSAGE)
        {
            self.offer(now, Peer::unmeasured(*c));
        }
        if probe_neighbours {
            for c in self.admitted(reply.neighbours) {
                self.offer(now, Peer::unmeasured(c));
                if c.id != self.me.id {
                    self.probe(c);
                }
            }
        }
        let complete = match &mut self.phase {
            Phase::AwaitingJoinReplies {
                hops_seen,
                root_hop,
                versions,
                ..
            } => {
                // A join path is at most MAX_HOPS long; more replies than that are noise.
                if versions.len() > crate::MAX_HOPS as usize {
                    return;
                }
                hops_seen.insert(reply.hop);
                versions.insert(from.id, reply.version);
                if reply.root {
                    *root_hop = Some(reply.hop);
                }
                root_hop.is_some_and(|r| (0..=r).all(|h| hops_seen.contains(&h)))
            }
            _ => false,
        };
        if complete {
            self.after_join_path(now);
        }
    }

    fn after_join_path(&mut self, now: Time) {
        let Phase::AwaitingJoinReplies { versions, .. } =
            std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            return;
        };
        if self.cfg.join_variant != JoinVariant::Full {
            self.phase = Phase::CollectingState {
                deadline: now,
                awaiting: BTreeSet::new(),
                versions,
            };
            self.finish_join(now);
            return;
        }
        let targets = self.known_peers();
        let awaiting: BTreeSet<Id> = targets.iter().map(|c| c.id).collect();
        for c in &targets {
            self.send(*c, OverlayMessage::StateRequest);
        }
        self.phase = Phase::CollectingState {
            deadline: now + self.cfg.join_timeout,
            awaiting,
            versions,
        };
        if targets.is_empty() {
            self.finish_join(now);
        }
    }

    /// Second stage: a node in our new tables sent its state.
    pub(crate) fn on_state_reply(&mut self, now: Time, from: Contact, s: StateSnapshot) {
        let done = match &mut self.phase {
            Phase::CollectingState {
                awaiting, versions, ..
            } => {
                // Only the nodes we asked may contribute: an unsolicited snapshot is ignored.
                if !awaiting.remove(&from.id) {
                    return;
                }
                versions.insert(from.id, s.version);
                awaiting.is_empty()
            }
            _ => return,
        };
        for (c, reported) in s
            .leaves
            .into_iter()
            .chain(s.table)
            .take(MAX_CONTACTS_PER_MESSAGE)
        {
            self.offer_reported(now, &from.id, c, reported, false);
        }
        for (c, reported) in s.neighbours.into_iter().take(MAX_CONTACTS_PER_MESSAGE) {
            if self.admission.admit(&c) {
                self.offer_reported(now, &from.id, c, reported, true);
            }
        }
        if done {
            self.finish_join(now);
        }
    }

    /// Our state as a snapshot for a joiner.
    pub(crate) fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            leaves: self.leaf.iter().map(|p| (p.contact, p.rtt)).collect(),
            table: self.table.entries().map(|p| (p.contact, p.rtt)).collect(),
            neighbours: self
                .neighbours
                .peers()
                .iter()
                .map(|p| (p.contact, p.rtt))
                .collect(),
            version: self.version,
        }
    }

    fn finish_join(&mut self, now: Time) {
        let versions = match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::CollectingState { versions, .. } => versions,
            other => {
                self.phase = other;
                return;
            }
        };
        if self.cfg.secure && self.cfg.secure_join {
            self.check_join(now, versions);
        } else {
            self.announce_joined(now, versions);
        }
    }

    /// Starts routing and tells every node in the new tables, with the state versions the
    /// join copied from them.
    pub(crate) fn announce_joined(&mut self, now: Time, versions: BTreeMap<Id, u64>) {
        self.become_ready(now);
        for c in self.known_peers() {
            let seen_version = versions.get(&c.id).copied();
            self.send(c, OverlayMessage::Announce { seen_version });
        }
    }

    pub(crate) fn become_ready(&mut self, now: Time) {
        self.phase = Phase::Ready;
        for p in self.leaf.members() {
            self.last_heard.insert(p.id(), now);
            self.pending_updates
                .push_back(crate::overlay::PendingUpcall::Leaf(p.contact, true));
        }
        self.next_keepalive = if self.cfg.keepalives {
            now + self.cfg.keepalive_interval
        } else {
            Time::NEVER
        };
        self.next_neighbourhood = if self.cfg.keepalives {
            now + self.cfg.neighbourhood_interval
        } else {
            Time::NEVER
        };
        if self.cfg.keepalives {
            self.schedule_table_maintenance(now);
        } else {
            self.next_table_maintenance = Time::NEVER;
        }
        self.event(OverlayEvent::Joined);
    }

    /// A node that finished joining announced itself.
    pub(crate) fn on_announce(&mut self, now: Time, from: Contact, seen_version: Option<u64>) {
        let version_before = self.version;
        self.offer_sender(now, from);
        // Concurrent joins: if our leaf set changed since the joiner copied it, send it again.
        if self.leaf.contains(&from.id) && seen_version != Some(version_before) {
            self.send_leaf_set(from);
        }
    }
}

impl Overlay {
    /// Fills the tables from `peers` and starts routing at once, skipping the join protocol.
    /// For tests and experiments that need a network with correct tables built from global
    /// knowledge; a real node always joins.
    pub fn start_with_state(&mut self, now: Time, peers: impl IntoIterator<Item = Peer>) {
        for p in peers {
            self.offer(now, p);
        }
        self.probing.clear();
        self.outputs
            .retain(|o| !matches!(o, crate::Output::Probe { .. }));
        self.become_ready(now);
    }
}
