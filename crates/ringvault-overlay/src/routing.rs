//! The next-hop rule, hop-by-hop forwarding, and the KBR API calls.

use ringvault_types::{Contact, Id, Time};

use crate::config::MAX_HOPS;
use crate::kbr::{Forward, Kbr, RouteInfo, Upcalls};
use crate::overlay::LocalRoute;
use crate::{
    AppMessage, Envelope, JoinReply, JoinVariant, Overlay, OverlayMessage, Redundancy, RoutedBody,
    RoutingTable, TraceHop,
};

/// Where a message for a key goes next, and by which rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// This node is the root: deliver here.
    Local,
    /// The key is within the leaf set's span; this is the numerically closest leaf.
    Leaf(Contact),
    /// The routing table entry sharing one more digit with the key.
    Table(Contact),
    /// The rare case: a known node with at least as long a shared prefix, numerically closer.
    Rare(Contact),
}

impl NextHop {
    /// The node to forward to, if any.
    pub fn contact(&self) -> Option<Contact> {
        match self {
            NextHop::Local => None,
            NextHop::Leaf(c) | NextHop::Table(c) | NextHop::Rare(c) => Some(*c),
        }
    }
}

impl Overlay {
    /// Pastry's next-hop rule for `key` (protocols.md §1), never choosing `exclude` or a
    /// suspect.
    pub fn next_hop(&self, key: &Id, exclude: Option<&Id>) -> NextHop {
        self.next_hop_in(&self.table, true, key, &|id| {
            Some(id) == exclude || self.is_suspected(id)
        })
    }

    /// The next-hop rule over `table` (the proximity table, or the constrained one), the leaf
    /// set and, with `neighbours`, the neighbourhood set, never choosing a node `skip` names.
    pub(crate) fn next_hop_in(
        &self,
        table: &RoutingTable,
        neighbours: bool,
        key: &Id,
        skip: &dyn Fn(&Id) -> bool,
    ) -> NextHop {
        let me = self.me.id;
        if self.leaf.covers(key) {
            return match self.leaf.closest_where(key, |id| !skip(id)) {
                Some(c) if key.is_closer(&c.id, &me) => NextHop::Leaf(c),
                _ => NextHop::Local,
            };
        }
        let b = self.cfg.b;
        let l = me.shared_prefix_len(key, b);
        if l >= Id::num_digits(b) {
            return NextHop::Local;
        }
        if let Some(p) = table.get(l, key.digit(l, b) as usize) {
            if !skip(&p.id()) {
                return NextHop::Table(p.contact);
            }
        }
        match self.rare_case_candidate(table, neighbours, key, l, skip) {
            Some(c) => NextHop::Rare(c),
            None => NextHop::Local,
        }
    }

    /// Any known node with shared prefix >= `l` that is numerically closer to `key` than this
    /// node; the longest prefix, then the closest, wins.
    fn rare_case_candidate(
        &self,
        table: &RoutingTable,
        neighbours: bool,
        key: &Id,
        l: usize,
        skip: &dyn Fn(&Id) -> bool,
    ) -> Option<Contact> {
        let b = self.cfg.b;
        let me = self.me.id;
        let mut best: Option<(usize, Contact)> = None;
        let nb: &[crate::Peer] = if neighbours {
            self.neighbours.peers()
        } else {
            &[]
        };
        let candidates = self
            .leaf
            .iter()
            .copied()
            .chain(table.entries().copied())
            .chain(nb.iter().copied());
        for p in candidates {
            let id = p.id();
            if skip(&id) || !key.is_closer(&id, &me) {
                continue;
            }
            let pl = id.shared_prefix_len(key, b);
            if pl < l {
                continue;
            }
            let better = match &best {
                None => true,
                Some((bl, bc)) => pl > *bl || (pl == *bl && key.is_closer(&id, &bc.id)),
            };
            if better {
                best = Some((pl, p.contact));
            }
        }
        best.map(|(_, c)| c)
    }

    /// Routes a message that originated here.
    pub(crate) fn route_local(&mut self, now: Time, r: LocalRoute, up: &mut dyn Upcalls) {
        let env = Envelope {
            key: r.key,
            origin: self.me,
            hops: 0,
            trace: r.trace.then(Vec::new),
            body: RoutedBody::App(r.msg),
        };
        match r.hint {
            Some(h) if h.id != self.me.id && self.is_ready() => {
                let mut sent = env.clone();
                let rtt_to_next = self.known_rtt(&h.id);
                if let Some(t) = &mut sent.trace {
                    t.push(TraceHop {
                        node: self.me,
                        rtt_to_next,
                    });
                }
                sent.hops = 1;
                self.send_hop(now, h, env, sent, 0);
            }
            _ => self.process_envelope_with(now, env, 0, up),
        }
    }

    /// Delivers `env` here or forwards it one hop.
    pub(crate) fn process_envelope_with(
        &mut self,
        now: Time,
        mut env: Envelope,
        reroutes: u8,
        up: &mut dyn Upcalls,
    ) {
        let trace_len = env.trace.as_ref().map_or(0, Vec::len);
        if !self.is_ready() || trace_len > MAX_HOPS as usize {
            self.stats.dropped += 1;
            return;
        }
        let joiner = Self::joiner_of(&env.body);
        if let RoutedBody::SecureProbe { id, r, constrained } = env.body {
            // A redundant copy is answered by the first node near the key (see
            // `Overlay::near`), even with part of its neighbourhood: the origin merges the
            // copies' answers, and the receivers of the message complete the set. The first
            // answer must vouch for the whole neighbourhood, as it is judged alone.
            let answer = if constrained {
                self.near(&env.key)
                    .then(|| self.wide_by_closeness(&env.key))
            } else {
                self.neighbourhood_of(&env.key, r as usize)
            };
            if let Some(members) = answer {
                self.answer_secure_probe(&env, id, members);
                return;
            }
        }
        let hop = match env.body {
            RoutedBody::SecureProbe {
                constrained: true, ..
            } => self.next_hop_constrained(&env.key, None),
            _ => self.next_hop(&env.key, joiner.as_ref()),
        };
        if matches!(hop, NextHop::Rare(_)) {
            self.stats.rare_case += 1;
        }
        // Where this node takes itself for the root only because the next hop it would use is
        // suspected, the suspect stays the next hop: the message waits for the suspicion to end
        // (below), after the services had their say, so that one holding what is asked for can
        // still answer at once.
        let waiting_for = match hop {
            NextHop::Local if !self.suspects.is_empty() => self
                .next_hop_in(&self.table, true, &env.key, &|id| {
                    Some(id) == joiner.as_ref()
                })
                .contact()
                .filter(|c| self.is_awaited(&c.id)),
            _ => None,
        };
        let root_here = hop == NextHop::Local && waiting_for.is_none();
        if let RoutedBody::Join { joiner } = &env.body {
            // Once, and again if this node turned out to be the root only on a later pass (the
            // suspect it waited for was found dead): the joiner needs the root's answer.
            if reroutes == 0 || root_here {
                let root = root_here;
                let reply = self.join_reply(env.hops, root, joiner.id);
                self.send(*joiner, OverlayMessage::JoinReply(reply));
            }
        }
        let Some(mut next) = hop.contact().or(waiting_for) else {
            self.stats.delivered += 1;
            if let RoutedBody::SecureProbe { id, .. } = env.body {
                // The root, though it cannot vouch for a full neighbourhood (a small ring).
                let members = self.wide_by_closeness(&env.key);
                self.answer_secure_probe(&env, id, members);
                return;
            }
            if let RoutedBody::App(msg) = env.body {
                let trace = env.trace.map(|mut t| {
                    t.push(TraceHop {
                        node: self.me,
                        rtt_to_next: None,
                    });
                    t
                });
                let info = RouteInfo {
                    origin: env.origin,
                    via: crate::Via::Routed,
                    hops: env.hops,
                    trace,
                };
                up.deliver(self, now, env.key, msg, info);
            }
            return;
        };
        if let RoutedBody::App(msg) = &mut env.body {
            let mut m = msg.clone();
            if up.forward(self, now, env.key, &mut m, &mut next) == Forward::Stop {
                return;
            }
            *msg = m;
        }
        if self.is_suspected(&next.id) {
            // A service's choice of a suspect gives way to the overlay's live hop, if any.
            match hop.contact() {
                Some(live) => next = live,
                None => {
                    self.park(env, reroutes, next.id);
                    return;
                }
            }
        }
        if env.hops >= MAX_HOPS {
            self.stats.dropped += 1;
            return;
        }
        self.stats.forwarded += 1;
        if matches!(env.body, RoutedBody::SecureProbe { .. }) {
            env.hops += 1;
            self.send(next, OverlayMessage::SecureHop(env));
            return;
        }
        let mut sent = env.clone();
        sent.hops += 1;
        let rtt_to_next = self.known_rtt(&next.id);
        if let Some(t) = &mut sent.trace {
            t.push(TraceHop {
                node: self.me,
                rtt_to_next,
            });
        }
        self.send_hop(now, next, env, sent, reroutes);
    }

    /// The state this node gives a joiner it is on the join path of.
    fn join_reply(&self, hop: u8, root: bool, joiner: Id) -> JoinReply {
        let whole = self.cfg.join_variant == JoinVariant::WholeState;
        let l = self.me.id.shared_prefix_len(&joiner, self.cfg.b);
        let mut rows: Vec<Contact> = self
            .table
            .entries()
            .filter(|p| whole || self.me.id.shared_prefix_len(&p.id(), self.cfg.b) <= l)
            .map(|p| p.contact)
            .filter(|c| c.id != joiner)
            .collect();
        rows.push(self.me);
        let leaves = if root || whole {
            let mut v: Vec<Contact> = self.leaf.members().iter().map(|p| p.contact).collect();
            v.retain(|c| c.id != joiner);
            v.push(self.me);
            v
        } else {
            Vec::new()
        };
        let neighbours = if hop == 0 || whole {
            let mut v: Vec<Contact> = self.neighbours.peers().iter().map(|p| p.contact).collect();
            v.retain(|c| c.id != joiner);
            v.push(self.me);
            v
        } else {
            Vec::new()
        };
        JoinReply {
            hop,
            root,
            rows,
            leaves,
            neighbours,
            version: self.version,
        }
    }

    /// Every node in leaf set, table and neighbourhood that could be the next hop for `key`,
    /// best first.
    fn hop_candidates(&self, key: &Id) -> Vec<Contact> {
        let me = self.me.id;
        let b = self.cfg.b;
        let l = me.shared_prefix_len(key, b);
        let mut out: Vec<Contact> = self.next_hop(key, None).contact().into_iter().collect();
        let mut rest: Vec<(usize, Contact)> = self
            .known_peers()
            .into_iter()
            .filter(|c| !out.iter().any(|o| o.id == c.id) && !self.is_suspected(&c.id))
            .map(|c| (c.id.shared_prefix_len(key, b), c))
            .filter(|(pl, c)| *pl > l || (*pl == l && key.is_closer(&c.id, &me)))
            .collect();
        rest.sort_by(|(la, a), (lb, bb)| lb.cmp(la).then_with(|| key.cmp_closeness(&a.id, &bb.id)));
        out.extend(rest.into_iter().map(|(_, c)| c));
        out
    }

    /// The measured proximity of `id`, from whichever table holds it measured.
    pub fn known_rtt(&self, id: &Id) -> Option<ringvault_types::Duration> {
        let in_table = self
            .table
            .slot_of(id)
            .and_then(|(r, c)| self.table.get(r, c))
            .filter(|p| p.id() == *id)
            .and_then(|p| p.rtt);
        in_table
            .or_else(|| {
                self.neighbours
                    .peers()
                    .iter()
                    .find(|p| p.id() == *id)
                    .and_then(|p| p.rtt)
            })
            .or_else(|| self.leaf.get(id).and_then(|p| p.rtt))
    }

    /// Leaf set members and this node, closest to `key` first.
    pub(crate) fn by_closeness(&self, key: &Id) -> Vec<Contact> {
        let mut v: Vec<Contact> = self.leaf.members().iter().map(|p| p.contact).collect();
        v.push(self.me);
        v.sort_by(|a, b| key.cmp_closeness(&a.id, &b.id));
        v
    }
}

impl Kbr for Overlay {
    fn local_contact(&self) -> Contact {
        self.me
    }

    fn id_gap(&self) -> Option<f64> {
        self.density().gap()
    }

    fn route(&mut self, key: Id, msg: AppMessage, hint: Option<Contact>) {
        self.local_routes.push_back(LocalRoute {
            key,
            msg,
            hint,
            trace: false,
        });
    }

    fn sec_route(&mut self, key: Id, msg: AppMessage, r: u8, redundancy: Redundancy) -> u64 {
        let id = self.next_secure_id;
        self.next_secure_id += 1;
        self.local_secure
            .push_back((id, key, msg, r.max(1), redundancy));
        id
    }

    fn watch(&mut self, node: Contact) -> bool {
        if self.recently_failed.contains_key(&node.id) || self.is_presumed_dead(&node.id) {
            return false;
        }
        self.local_watches.push_back(node);
        true
    }

    fn send_direct(&mut self, to: Contact, msg: AppMessage) {
        if to.id == self.me.id {
            self.local_deliveries.push_back((self.me, msg));
        } else {
            self.send(to, OverlayMessage::Direct(msg));
        }
    }

    fn local_lookup(&self, key: &Id, num: usize, safe: bool) -> Vec<Contact> {
        let mut v = if safe {
            let mut v: Vec<Contact> = self
                .next_hop_constrained(key, None)
                .contact()
                .into_iter()
                .collect();
            for c in self.by_closeness(key) {
                if c.id != self.me.id && !v.iter().any(|o| o.id == c.id) {
                    v.push(c);
                }
            }
            v
        } else {
            self.hop_candidates(key)
        };
        v.truncate(num);
        v
    }

    fn neighbor_set(&self, num: usize) -> Vec<Contact> {
        let me = self.me.id;
        let mut v: Vec<Contact> = self.leaf.members().iter().map(|p| p.contact).collect();
        v.sort_by(|a, b| me.cmp_closeness(&a.id, &b.id));
        v.truncate(num);
        v
    }

    fn replica_set(&self, key: &Id, max_rank: usize) -> Vec<Contact> {
        let mut v = self.by_closeness(key);
        v.truncate(max_rank);
        v
    }

    fn lately_failed(&self, key: &Id, k: usize, now: Time) -> Vec<Contact> {
        let lately = self.cfg.failure_timeout.mul(2);
        let failed = self
            .recently_failed
            .values()
            .filter(|(at, _)| now.saturating_since(*at) < lately)
            .map(|(_, c)| *c);
        if k == 0 {
            return Vec::new();
        }
        let closest = self.by_closeness(key);
        match closest.get(k - 1) {
            None => failed.collect(),
            Some(kth) => failed
                .filter(|f| key.cmp_closeness(&f.id, &kth.id) == std::cmp::Ordering::Less)
                .collect(),
        }
    }

    fn proximity(&self, node: &Id) -> Option<ringvault_types::Duration> {
        self.known_rtt(node)
    }

    fn range(&self, node: &Id, rank: usize) -> Option<(Id, Id)> {
        let mut known: Vec<Id> = self.leaf.members().iter().map(|p| p.id()).collect();
        known.push(self.me.id);
        if !known.contains(node) {
            return None;
        }
        let others: Vec<Id> = known.iter().copied().filter(|i| i != node).collect();
        // Not `span`: a half that is short while its repair is under way in a large ring does
        // not make this node know the whole ring.
        let span = self.leaf.known_arc();
        if others.len() <= rank {
            // Every node known is among the rank + 1 closest for every key: the whole ring.
            return span.is_none().then_some((*node, *node));
        }
        let mut succ = others.clone();
        succ.sort_by_key(|i| node.cw_distance(i));
        let mut pred = others;
        pred.sort_by_key(|i| i.cw_distance(node));
        let (s, p) = (succ[rank], pred[rank]);
        // The rank-th successor and predecessor among known nodes are the true ones only if
        // every node between them and `node` is known: p, node and s in this order within the
        // leaf span, not round the far side of the ring, where this node knows nobody.
        if let Some((lo, hi)) = span {
            let at = |i: &Id| lo.cw_distance(i);
            let inside = |i: &Id| at(i) <= at(&hi);
            if !(inside(&p) && inside(&s) && at(&p) <= at(node) && at(node) <= at(&s)) {
                return None;
            }
        }
        Some((p.cw_midpoint(node), node.cw_midpoint(&s)))
    }
}
