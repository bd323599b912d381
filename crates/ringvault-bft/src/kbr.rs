//! The KBR API over a certified configuration (`server-mode.md` §5): in server mode a key's
//! replica set is the 3 f_r + 1 members that follow it clockwise in the configuration every
//! server holds, and routing a message is sending it straight to the first of them. Services
//! keep talking to [`Kbr`]; what differs from classic mode: `route` takes one hop (no
//! `forward` upcalls on the way), `replica_set` is the fixed group whatever rank is asked
//! beyond it, `sec_route` sends to the group directly (the configuration is certified, so
//! there is nothing to route around), and `proximity` is unknown.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ringvault_overlay::{AppMessage, Kbr, Redundancy};
use ringvault_types::{Contact, Duration, Id};

use crate::config::{Config, Member};

/// A message the driver sends for a service: to `to`, about `key` when it was routed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneHopSend {
    /// The server.
    pub to: Contact,
    /// The key it was routed to (`None`: sent directly).
    pub key: Option<Id>,
    /// The service's message.
    pub msg: AppMessage,
}

/// The KBR API of one server over the configuration in force.
pub struct OneHop {
    config: Arc<Config>,
    me: Id,
    sends: VecDeque<OneHopSend>,
    next_secure: u64,
}

fn contact(m: &Member) -> Contact {
    let addr = m
        .cert
        .body
        .addrs
        .first()
        .copied()
        .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    Contact::new(m.id(), addr)
}

impl OneHop {
    /// Server `me`'s view under `config`.
    pub fn new(config: Arc<Config>, me: Id) -> Self {
        OneHop {
            config,
            me,
            sends: VecDeque::new(),
            next_secure: 1,
        }
    }

    /// A new configuration is in force.
    pub fn set_config(&mut self, config: Arc<Config>) {
        self.config = config;
    }

    /// The next message to send.
    pub fn poll_send(&mut self) -> Option<OneHopSend> {
        self.sends.pop_front()
    }

    fn group(&self, key: &Id) -> Vec<Contact> {
        self.config
            .replica_group(key)
            .into_iter()
            .map(contact)
            .collect()
    }
}

impl Kbr for OneHop {
    fn local_contact(&self) -> Contact {
        self.config
            .member(&self.me)
            .map(contact)
            .unwrap_or(Contact::new(
                self.me,
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            ))
    }

    fn route(&mut self, key: Id, msg: AppMessage, hint: Option<Contact>) {
        let to = hint.or_else(|| self.group(&key).first().copied());
        if let Some(to) = to {
            self.sends.push_back(OneHopSend {
                to,
                key: Some(key),
                msg,
            });
        }
    }

    fn send_direct(&mut self, to: Contact, msg: AppMessage) {
        self.sends.push_back(OneHopSend { to, key: None, msg });
    }

    fn sec_route(&mut self, key: Id, msg: AppMessage, r: u8, _redundancy: Redundancy) -> u64 {
        for to in self.group(&key).into_iter().take(r.max(1) as usize) {
            self.sends.push_back(OneHopSend {
                to,
                key: Some(key),
                msg: msg.clone(),
            });
        }
        let id = self.next_secure;
        self.next_secure += 1;
        id
    }

    fn local_lookup(&self, key: &Id, num: usize, _safe: bool) -> Vec<Contact> {
        self.group(key).into_iter().take(num).collect()
    }

    fn neighbor_set(&self, num: usize) -> Vec<Contact> {
        let members = &self.config.members;
        let n = members.len();
        let Ok(i) = members.binary_search_by(|m| m.id().cmp(&self.me)) else {
            return Vec::new();
        };
        // Successors and predecessors alternately, nearest first.
        (1..n)
            .map(|d| {
                let step = d.div_ceil(2);
                if d % 2 == 1 {
                    (i + step) % n
                } else {
                    (i + n - step % n) % n
                }
            })
            .filter(|&j| j != i)
            .take(num)
            .map(|j| contact(&members[j]))
            .collect()
    }

    fn replica_set(&self, key: &Id, max_rank: usize) -> Vec<Contact> {
        self.group(key).into_iter().take(max_rank).collect()
    }

    fn proximity(&self, _node: &Id) -> Option<Duration> {
        None
    }

    fn range(&self, node: &Id, rank: usize) -> Option<(Id, Id)> {
        // `node` is among the rank + 1 successors of the keys in (members[i - rank - 1], node],
        // which is [that + 1, node + 1) in the trait's half-open terms.
        let members = &self.config.members;
        let n = members.len();
        let i = members.binary_search_by(|m| m.id().cmp(node)).ok()?;
        if n <= rank + 1 {
            return Some((*node, *node));
        }
        let one = {
            let mut b = [0u8; 32];
            b[31] = 1;
            Id::from_bytes(b)
        };
        let before = members[(i + n - rank - 1) % n].id();
        Some((before.wrapping_add(&one), node.wrapping_add(&one)))
    }

    fn id_gap(&self) -> Option<f64> {
        let n = self.config.members.len();
        (n > 1).then(|| 1.0 / n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Params;

    fn config(n: u64) -> Arc<Config> {
        Arc::new(crate::config::test_config(n, Params::DEFAULT).2)
    }

    /// Whether `key` lies in the half-open clockwise range [from, to).
    fn within(key: &Id, from: Id, to: Id) -> bool {
        from.cw_distance(key) < from.cw_distance(&to)
    }

    #[test]
    fn replica_sets_are_the_successors_and_ranges_agree_with_them() {
        let config = config(40);
        let me = config.members[5].id();
        let mut kbr = OneHop::new(config.clone(), me);
        let ids: Vec<Id> = config.members.iter().map(|m| m.id()).collect();
        for k in 0..300u32 {
            let key = Id::hash(&k.to_be_bytes());
            // Brute force: the 4 members with the smallest clockwise distance from the key.
            let mut by_distance = ids.clone();
            by_distance.sort_by_key(|id| key.cw_distance(id));
            let want: Vec<Id> = by_distance[..4].to_vec();
            let got: Vec<Id> = kbr.replica_set(&key, 8).iter().map(|c| c.id).collect();
            assert_eq!(got, want, "key {key:?}");
            // `range` says the same as `replica_set` for every member and rank.
            for (rank, id) in want.iter().enumerate() {
                let (from, to) = kbr.range(id, rank).unwrap();
                assert!(within(&key, from, to), "rank {rank}: key outside the range");
            }
            let outsider = by_distance[4];
            let (from, to) = kbr.range(&outsider, 3).unwrap();
            assert!(!within(&key, from, to), "a fifth member claims the key");
            // A route is one message to the first of the group.
            let msg = AppMessage {
                app: 1,
                body: vec![1],
            };
            kbr.route(key, msg.clone(), None);
            let sent = kbr.poll_send().unwrap();
            assert_eq!((sent.to.id, sent.key), (want[0], Some(key)));
            assert!(kbr.poll_send().is_none());
        }
        let neighbours = kbr.neighbor_set(4);
        let n = ids.len();
        assert_eq!(
            neighbours.iter().map(|c| c.id).collect::<Vec<_>>(),
            vec![ids[6], ids[4], ids[7], ids[3 % n]]
        );
    }
}
