//! Keep-alives, failure detection and repair, and message dispatch.

use rand::Rng;
use ringvault_types::{Contact, Time};

use crate::join::MAX_CONTACTS_PER_MESSAGE;
use crate::leafset::Side;
use crate::overlay::{FailureCause, Phase};
use crate::{Overlay, OverlayMessage, Peer, RoutedBody};

impl Overlay {
    /// Routes an incoming message to its handler.
    pub(crate) fn dispatch(&mut self, now: Time, from: Contact, msg: OverlayMessage) {
        let ready = self.is_ready();
        match msg {
            OverlayMessage::Routed { seq, envelope } => {
                // A node that does not route yet (joining, or restarted under an id others
                // still hold) does not acknowledge: the sender's hop times out and it
                // re-routes around us instead of losing the message here.
                if ready {
                    // A join this node is asked to start (it is the joiner's bootstrap) costs
                    // the ring a route and replies: at most so many per source address. Not
                    // acknowledged, so the joiner times out and tries again later.
                    let starts_join = envelope.hops == 0
                        && matches!(envelope.body, RoutedBody::Join { joiner } if joiner.id == from.id);
                    if starts_join && !self.join_limit.admit(now, from.addr.ip()) {
                        self.stats.joins_refused += 1;
                        return;
                    }
                    self.send(from, OverlayMessage::HopAck { seq });
                    self.routed_queue.push_back((envelope, 0));
                }
            }
            OverlayMessage::HopAck { seq } => {
                self.on_hop_ack(seq, &from.id);
            }
            OverlayMessage::Direct(m) => {
                if ready {
                    self.local_deliveries.push_back((from, m));
                }
            }
            OverlayMessage::JoinReply(r) => self.on_join_reply(now, from, r),
            OverlayMessage::StateRequest => {
                if ready {
                    let s = self.snapshot();
                    self.send(from, OverlayMessage::StateReply(s));
                }
            }
            OverlayMessage::StateReply(s) => self.on_state_reply(now, from, s),
            OverlayMessage::Announce { seen_version } => {
                if ready {
                    self.on_announce(now, from, seen_version);
                }
            }
            OverlayMessage::Ping { nonce } => {
                if ready {
                    self.offer_sender(now, from);
                    self.send(from, OverlayMessage::Pong { nonce });
                }
            }
            OverlayMessage::Pong { nonce } => {
                if self.watched.get(&from.id).is_some_and(|w| w.nonce == nonce) {
                    self.watched.remove(&from.id);
                }
                if ready {
                    self.offer_sender(now, from);
                }
            }
            OverlayMessage::LeafSetRequest => {
                if ready {
                    self.offer_sender(now, from);
                    self.send_leaf_set(from);
                }
            }
            OverlayMessage::LeafSetReply { leaves, .. } => {
                if ready {
                    self.offer_sender(now, from);
                    self.merge_leaf_set(now, &leaves);
                }
            }
            OverlayMessage::SlotRequest { row, col } => {
                if ready {
                    let entry = self
                        .table
                        .get(row as usize, col as usize)
                        .map(|p| p.contact);
                    self.send(from, OverlayMessage::SlotReply { row, col, entry });
                }
            }
            OverlayMessage::SlotReply { row, col, entry } => {
                if ready {
                    self.on_slot_reply(now, from, row, col, entry);
                }
            }
            OverlayMessage::RowRequest { row } => {
                if ready {
                    let entries = self
                        .table
                        .row(row as usize)
                        .map(|p| (p.contact, p.rtt))
                        .collect();
                    self.send(from, OverlayMessage::RowReply { row, entries });
                }
            }
            OverlayMessage::RowReply { row, entries } => {
                if ready {
                    self.on_row_reply(from, row, entries);
                }
            }
            OverlayMessage::NeighbourhoodRequest => {
                if ready {
                    let peers = self.neighbours.peers().iter().map(|p| p.contact).collect();
                    self.send(from, OverlayMessage::NeighbourhoodReply { peers });
                }
            }
            OverlayMessage::NeighbourhoodReply { peers } => {
                if ready {
                    for c in self.admitted(peers) {
                        if c.id != self.me.id && !self.neighbours.contains(&c.id) {
                            self.probe(c);
                        }
                    }
                }
            }
            OverlayMessage::Leaving => self.declare_failed(now, from.id, FailureCause::Left),
            OverlayMessage::SecureHop(envelope) => {
                if ready && matches!(envelope.body, RoutedBody::SecureProbe { .. }) {
                    self.routed_queue
                        .push_back((envelope, crate::config::MAX_REROUTES));
                }
            }
            OverlayMessage::RootSet { id, key, members } => {
                let members = self.admitted(members);
                if ready {
                    self.on_root_set(now, id, key, members);
                } else {
                    self.on_join_check_answer(now, from, (id, key), members);
                }
            }
            m @ OverlayMessage::SecureDeliver { .. } => {
                if ready {
                    self.secure_deliveries.push_back((from, m));
                }
            }
        }
    }

    pub(crate) fn send_leaf_set(&mut self, to: Contact) {
        let leaves = self.leaf.members().iter().map(|p| p.contact).collect();
        self.send(
            to,
            OverlayMessage::LeafSetReply {
                leaves,
                version: self.version,
            },
        );
    }

    /// Merges a peer's leaf set into ours. New leaves are pinged (so they learn of us and prove
    /// they are alive); if our leaf set changed, the repair goes on outward.
    fn merge_leaf_set(&mut self, now: Time, leaves: &[Contact]) {
        let mut changed = false;
        for c in leaves.iter().take(MAX_CONTACTS_PER_MESSAGE) {
            if self.offer(now, Peer::unmeasured(*c)) {
                changed = true;
                let nonce = self.next_seq();
                self.send(*c, OverlayMessage::Ping { nonce });
            }
        }
        if changed {
            self.repair_leaf_set(now, None);
        }
    }

    /// Asks the farthest live leaf on `side` (both sides when `None`) for its leaf set, at most
    /// once per keep-alive interval per peer.
    pub(crate) fn repair_leaf_set(&mut self, now: Time, side: Option<Side>) {
        let sides: &[Side] = match side {
            Some(Side::Cw) => &[Side::Cw],
            Some(Side::Ccw) => &[Side::Ccw],
            None => &[Side::Cw, Side::Ccw],
        };
        for &s in sides {
            let other = if s == Side::Cw { Side::Ccw } else { Side::Cw };
            let target = self
                .leaf
                .farthest_genuine(s)
                .or_else(|| self.leaf.farthest_genuine(other));
            let Some(t) = target else { continue };
            let recent = self
                .leaf_requests
                .get(&t.id())
                .is_some_and(|at| now.saturating_since(*at) < self.cfg.keepalive_interval);
            if recent {
                continue;
            }
            self.leaf_requests.insert(t.id(), now);
            self.stats.repair_messages += 1;
            self.send(t.contact, OverlayMessage::LeafSetRequest);
        }
    }

    /// Pings quiet leaves and declares silent ones failed.
    pub(crate) fn keepalive_tick(&mut self, now: Time) {
        let late = now.saturating_since(self.next_keepalive);
        self.next_keepalive = now + self.cfg.keepalive_interval;
        if late > self.cfg.keepalive_interval {
            // This node itself stalled (its tick fired long after it was due: a slow disk, a
            // paused process). It heard nobody meanwhile, so its peers' silence over the stall
            // is no evidence against them: credit every leaf with the stall instead of
            // declaring the whole leaf set dead at once.
            self.stats.self_stalls += 1;
            for heard in self.last_heard.values_mut() {
                *heard = (*heard + late).min(now);
            }
        }
        let leaves = self.leaf.members();
        let mut dead = Vec::new();
        for p in &leaves {
            let heard = *self.last_heard.entry(p.id()).or_insert(now);
            let silent = now.saturating_since(heard);
            if silent >= self.cfg.failure_timeout {
                dead.push(p.id());
            } else if silent >= self.cfg.keepalive_interval {
                let nonce = self.next_seq();
                self.send(p.contact, OverlayMessage::Ping { nonce });
            }
        }
        for id in dead {
            self.declare_failed(now, id, FailureCause::LeafSilent);
        }
        // Forget bookkeeping for peers that are no longer leaves, and old failure marks.
        let leaf = &self.leaf;
        self.last_heard.retain(|id, _| leaf.contains(id));
        let keep_failed = self.cfg.failure_timeout.mul(10);
        self.recently_failed
            .retain(|_, (at, _)| now.saturating_since(*at) < keep_failed);
        let ka = self.cfg.keepalive_interval;
        self.leaf_requests
            .retain(|_, at| now.saturating_since(*at) < ka);
        self.slot_repair_timeouts(now, None);
        // Periodic leaf set exchange with the farthest leaf on each side: it repairs what
        // failure-triggered repair missed (both ends of a gap having dropped each other).
        if !self.leaf.is_empty() {
            self.repair_leaf_set(now, None);
        }
    }

    /// Re-measures the neighbourhood set; unreachable members are dropped by the probe results.
    pub(crate) fn neighbourhood_tick(&mut self, now: Time) {
        self.next_neighbourhood = now + self.cfg.neighbourhood_interval;
        let peers: Vec<Contact> = self.neighbours.peers().iter().map(|p| p.contact).collect();
        for c in peers {
            self.probe(c);
        }
        if matches!(self.phase, Phase::Ready)
            && self.neighbours.peers().len() < self.cfg.neighbourhood_size
        {
            let n = self.neighbours.peers().len();
            if n > 0 {
                let pick = self.neighbours.peers()[self.rng.gen_range(0..n)].contact;
                self.stats.repair_messages += 1;
                self.send(pick, OverlayMessage::NeighbourhoodRequest);
            }
        }
    }
}
