//! Byzantine behaviours, in one place, for the simulator and tests: a fraction of the nodes
//! collude (each knows every colluder) and answer what reaches them with lies instead of
//! running the protocol. Never part of a node's own code path: a driver hands the messages of
//! its Byzantine nodes to [`Colluders::respond`] instead of to the node.
//!
//! What a colluder does with each message:
//! - a routed message: acknowledges the hop (so the sender does not route around it) and then
//!   hijacks it: a secure probe is answered as if the colluder were the key's root, with a
//!   forged neighbourhood (see [`Attack`]); a join is answered as if the colluder were the
//!   joiner's root, with a leaf set and rows of colluders; a storage request is lied to
//!   (below); anything else is dropped;
//! - keep-alives are answered (so it stays in leaf sets); requests for state (leaf set, table
//!   rows, join state) are answered with colluders only;
//! - storage (`ringvault_past::forge`): every replica it is handed, routed, sent or securely
//!   delivered, gets a signed receipt and is thrown away; every lookup gets a forged copy;
//! - other deliveries are accepted and dropped.

use ringvault_overlay::{
    AppMessage, Envelope, JoinReply, Kbr, Overlay, OverlayMessage, RoutedBody, StateSnapshot,
};
use ringvault_types::{Contact, Id};

/// How a colluder forges the neighbourhood of a key it was asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Answer with the colluders closest to the key (padded, when there are too few
    /// colluders, with the known nodes farthest from the key, so the answer is as large as an
    /// honest one): no correct node receives the message unless the origin notices the forgery.
    FakeRoot,
    /// Answer with the true neighbourhood (as far as the colluder knows it) minus the correct
    /// nodes among the closest: as dense as the truth, so a density test cannot tell.
    Suppress,
}

/// The colluding nodes and what they do.
#[derive(Clone, Debug)]
pub struct Colluders {
    /// Every colluder, sorted by id.
    sorted: Vec<Contact>,
    attack: Attack,
    /// How many ids a forged neighbourhood names (an honest answer's size: L + 1).
    answer_size: usize,
}

impl Colluders {
    /// `members` collude with `attack`, forging answers of `answer_size` ids.
    pub fn new(mut members: Vec<Contact>, attack: Attack, answer_size: usize) -> Self {
        members.sort_by_key(|c| c.id);
        members.dedup_by_key(|c| c.id);
        Colluders {
            sorted: members,
            attack,
            answer_size,
        }
    }

    /// Whether `id` is a colluder.
    pub fn contains(&self, id: &Id) -> bool {
        self.sorted.binary_search_by_key(id, |c| c.id).is_ok()
    }

    /// How many collude.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True when nobody colludes.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The `n` colluders closest to `key`, closest first.
    pub fn closest(&self, key: &Id, n: usize) -> Vec<Contact> {
        let len = self.sorted.len();
        if len == 0 {
            return Vec::new();
        }
        let n = n.min(len);
        let at = self.sorted.partition_point(|c| c.id < *key);
        // The n closest lie among the n on either side of the key's position.
        let mut v: Vec<Contact> = (0..2 * n)
            .map(|i| self.sorted[(at + len - n + i) % len])
            .collect();
        v.sort_by(|a, b| key.cmp_closeness(&a.id, &b.id));
        v.dedup_by_key(|c| c.id);
        v.truncate(n);
        v
    }

    /// The forged neighbourhood of `key` that colluder `me` answers with.
    fn forged_neighbourhood(&self, me: &Overlay, key: &Id, r: usize) -> Vec<Contact> {
        match self.attack {
            Attack::FakeRoot => {
                let mut v = self.closest(key, self.answer_size);
                if v.len() < self.answer_size {
                    let mut far = me.known_peers();
                    far.sort_by(|a, b| key.cmp_closeness(&b.id, &a.id));
                    for c in far {
                        if v.len() >= self.answer_size {
                            break;
                        }
                        if !v.iter().any(|x| x.id == c.id) {
                            v.push(c);
                        }
                    }
                }
                v
            }
            Attack::Suppress => {
                let truth = me.replica_set(key, self.answer_size);
                if !me.leaf_set().covers(key) {
                    return self.closest(key, self.answer_size);
                }
                truth
                    .into_iter()
                    .enumerate()
                    .filter(|(i, c)| *i >= r || self.contains(&c.id))
                    .map(|(_, c)| c)
                    .collect()
            }
        }
    }

    /// A join reached a colluder: it answers as the joiner's root, with a leaf set and table
    /// rows of colluders only.
    fn forged_join_reply(&self, hop: u8, joiner: &Contact) -> Vec<(Contact, OverlayMessage)> {
        let near: Vec<Contact> = self
            .closest(&joiner.id, self.answer_size)
            .into_iter()
            .filter(|c| c.id != joiner.id)
            .collect();
        let reply = JoinReply {
            hop,
            root: true,
            rows: near.clone(),
            leaves: near.into_iter().take(self.answer_size / 2).collect(),
            neighbours: Vec::new(),
            version: 0,
        };
        vec![(*joiner, OverlayMessage::JoinReply(reply))]
    }

    /// A routed message reached a colluder: a secure probe is answered with a forged
    /// neighbourhood, anything else dropped.
    fn hijack(&self, me: &Overlay, envelope: &Envelope) -> Vec<(Contact, OverlayMessage)> {
        let (id, r) = match &envelope.body {
            RoutedBody::SecureProbe { id, r, .. } => (*id, *r),
            RoutedBody::App(m) => return lie_about_storage(me, m),
            RoutedBody::Join { joiner } => return self.forged_join_reply(envelope.hops, joiner),
        };
        let members = self.forged_neighbourhood(me, &envelope.key, r as usize);
        vec![(
            envelope.origin,
            OverlayMessage::RootSet {
                id,
                key: envelope.key,
                members,
            },
        )]
    }

    /// What colluder `me` sends when `msg` arrives from `from`, instead of handling it.
    pub fn respond(
        &self,
        me: &Overlay,
        from: Contact,
        msg: OverlayMessage,
    ) -> Vec<(Contact, OverlayMessage)> {
        let near_me = |n: usize| self.closest(&me.contact().id, n);
        match msg {
            OverlayMessage::Routed { seq, envelope } => {
                let mut out = vec![(from, OverlayMessage::HopAck { seq })];
                out.extend(self.hijack(me, &envelope));
                out
            }
            OverlayMessage::SecureHop(envelope) => self.hijack(me, &envelope),
            OverlayMessage::SecureDeliver { msg, .. } | OverlayMessage::Direct(msg) => {
                lie_about_storage(me, &msg)
            }
            OverlayMessage::Ping { nonce } => vec![(from, OverlayMessage::Pong { nonce })],
            OverlayMessage::LeafSetRequest => vec![(
                from,
                OverlayMessage::LeafSetReply {
                    leaves: near_me(self.answer_size),
                    version: 0,
                },
            )],
            OverlayMessage::StateRequest => vec![(
                from,
                OverlayMessage::StateReply(StateSnapshot {
                    leaves: near_me(self.answer_size)
                        .into_iter()
                        .map(|c| (c, None))
                        .collect(),
                    table: near_me(4 * self.answer_size)
                        .into_iter()
                        .map(|c| (c, None))
                        .collect(),
                    neighbours: Vec::new(),
                    version: 0,
                }),
            )],
            OverlayMessage::SlotRequest { row, col } => vec![(
                from,
                OverlayMessage::SlotReply {
                    row,
                    col,
                    entry: near_me(1).first().copied(),
                },
            )],
            _ => Vec::new(),
        }
    }
}

/// A colluder's answer to a storage message: a receipt for data it drops, a forged copy.
fn lie_about_storage(me: &Overlay, msg: &AppMessage) -> Vec<(Contact, OverlayMessage)> {
    ringvault_past::forge::lie(me.contact(), msg)
        .map(|(to, reply)| (to, OverlayMessage::Direct(reply)))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn contact(id: Id, port: u16) -> Contact {
        Contact::new(id, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn closest_colluders_wrap_around_the_ring() {
        let ids: Vec<Contact> = [1u8, 50, 100, 200, 250]
            .iter()
            .map(|&b| contact(Id::from_bytes([b; 32]), 1))
            .collect();
        let c = Colluders::new(ids, Attack::FakeRoot, 3);
        let got: Vec<u8> = c
            .closest(&Id::from_bytes([255; 32]), 3)
            .iter()
            .map(|c| c.id.as_bytes()[0])
            .collect();
        assert_eq!(got, vec![1, 250, 50]);
        assert!(c.contains(&Id::from_bytes([100; 32])));
        assert!(!c.contains(&Id::from_bytes([101; 32])));
    }
}
