//! Secure routing (security.md §2–4): the constrained routing table, the routing failure test,
//! redundant routing, and delivery that reaches every correct member of a key's replica set.
//!
//! `sec_route(key, msg, r)` first routes a probe the ordinary (fast) way. The first node on the
//! path whose leaf set surely holds the key's r closest nodes (the root, or a node a hop
//! before it) answers the origin with that neighbourhood. The origin checks the answer against
//! the id density of its own leaf set ([`failure_test`]): with random certified ids, a set that
//! hides correct nodes (or lies far from the key) is sparser. If the answer fails, or none comes,
//! the origin sends copies of the probe through every member of its leaf set, forwarded only
//! along constrained-table entries (each checkable by a public rule, so a liar cannot steer
//! them), merges every answer and keeps the closest ids named. Then it sends the message to the
//! r closest of the accepted set; each correct receiver also hands it to any of the key's r
//! closest nodes (by its own leaf set) that the sender did not name, so an answer that left out
//! a correct member still reaches it.

use std::collections::BTreeMap;

use ringvault_types::{Contact, Id, Time};

use crate::routing::NextHop;
use crate::{AppMessage, Envelope, Overlay, OverlayEvent, OverlayMessage, RoutedBody};

/// The failure test's default threshold: an answer whose ids are more than this many times
/// sparser than the origin's own neighbourhood fails. Chosen with the simulator
/// (`ringvault sim secure-routing --gamma G`, docs/experiments.md): at N = 100,000 with
/// answers of 2L + 1 = 33 ids it fires on under 1% of routes without attack, and lets through
/// almost no answer made of colluders when a quarter of the nodes collude.
pub const DEFAULT_GAMMA: f64 = 1.6;
/// Redundant routing starts copies at the proximity entries of this many rows.
pub const REDUNDANT_ROWS: usize = 2;
/// At most this many secure routes wait for answers at once; more fail at once.
pub const MAX_SECURE_ROUTES: usize = 4096;

/// When a secure route sends copies of its probe along independent paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redundancy {
    /// Only when the ordinary route's answer fails the routing failure test, or none comes:
    /// cheap, and right with high probability.
    OnFailure,
    /// At once: for a retry, after a route whose answer proved wrong (the ordinary route from
    /// here would bring the same answer again).
    Always,
}

/// How a secure route ended, reported as [`OverlayEvent::SecureRouted`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecureRouteReport {
    /// The id `sec_route` returned.
    pub id: u64,
    /// The key.
    pub key: Id,
    /// The service whose message it carried.
    pub app: crate::AppId,
    /// The nodes the message was sent to (the r closest of the accepted answer); empty when no
    /// answer came at all.
    pub sent_to: Vec<Contact>,
    /// Whether the first answer failed the test (or never came) and redundant routing ran.
    pub redundant: bool,
    /// The `r` closest ids of the first answer (empty when none came): what the failure test
    /// judged.
    pub first: Vec<Id>,
}

/// A secure route waiting for answers.
#[derive(Debug)]
pub(crate) struct SecureRoute {
    key: Id,
    r: u8,
    msg: AppMessage,
    deadline: Time,
    stage: Stage,
    /// The r closest ids of the first answer.
    first: Vec<Id>,
}

#[derive(Debug)]
enum Stage {
    /// The ordinary route's answer is awaited.
    Plain,
    /// Copies went out; each answer's closest nodes join the targets as it comes.
    Redundant {
        copies: usize,
        answers: usize,
        /// The `r` closest nodes of every answer (and of this node's own knowledge). The
        /// message goes to all of them: a liar's answer cannot push a correct one's out, and
        /// each correct receiver sends it on to the key's closest nodes it knows.
        targets: BTreeMap<Id, Contact>,
    },
}

/// The routing failure test: does the answer `members` for `key` look like the true
/// neighbourhood of the key? `density` is the origin's estimate of the mean gap between
/// neighbouring ids (see [`Density`]), `known` how many nodes the origin knows around itself
/// (its outer leaf set and itself): a correct answer names about as many. The answer fails when its ids, together with the key, are more than
/// `gamma` times sparser than `density`, or when it names fewer than `r` ids though the ring
/// has them. Pure, so anyone can check a decision.
pub fn failure_test(
    key: &Id,
    members: &[Id],
    density: Option<f64>,
    known: usize,
    r: usize,
    gamma: f64,
) -> bool {
    // A correct answer names as many nodes as the origin knows around itself (give or take
    // a neighbour or two still being learnt): fewer ids would let a liar's sparse answer pass
    // on luck.
    if members.is_empty() || members.len() < r.min(known) || members.len() + 2 < known {
        return false;
    }
    let (Some(local_gap), Some(answer_gap)) = (density, mean_gap(members, Some(key))) else {
        // One node, or none, known: a ring this small has nothing to compare.
        return true;
    };
    answer_gap <= gamma * local_gap
}

/// An estimate of the ring's id density (the mean gap between neighbouring ids, as a fraction
/// of the ring) from what a node can check itself: the span of its leaf set, and how far each
/// constrained-table entry lies from its slot's point (the closest of many random ids to a
/// point lies half a gap away on average). Only rows whose slots hold many nodes count, so
/// the slot's bounds do not cut the distances short.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Density {
    /// Sum of gap-equivalent lengths observed.
    sum: f64,
    /// Number of gaps they stand for.
    count: usize,
}

impl Density {
    /// Adds the span of `ids` (neighbouring ids, as a leaf set and its owner are).
    pub fn add_span(&mut self, ids: &[Id]) {
        if let Some(g) = mean_gap(ids, None) {
            self.sum += g * (ids.len() - 1) as f64;
            self.count += ids.len() - 1;
        }
    }

    /// Adds the distance from a slot's `point` to the node `entry` closest to it.
    pub fn add_nearest(&mut self, point: &Id, entry: &Id) {
        let d = point.ring_distance(entry).ring_fraction();
        // Two-sided: the nearest of a Poisson process lies gap/2 away on average.
        self.sum += 2.0 * d;
        self.count += 1;
    }

    /// The mean gap, if anything was observed.
    pub fn gap(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// The mean gap between neighbouring ids of `ids` (with `anchor` counted as one more point):
/// the span they cover around their centre, over the number of gaps. Fractions of the ring.
fn mean_gap(ids: &[Id], anchor: Option<&Id>) -> Option<f64> {
    let centre = *anchor.or(ids.first())?;
    let points = ids.len() + usize::from(anchor.is_some());
    if points < 2 {
        return None;
    }
    // Signed offsets from the centre, in (-1/2, 1/2].
    let offset = |id: &Id| {
        let cw = centre.cw_distance(id).ring_fraction();
        if cw > 0.5 {
            cw - 1.0
        } else {
            cw
        }
    };
    let (mut lo, mut hi) = (0f64, 0f64);
    for id in ids {
        let o = offset(id);
        lo = lo.min(o);
        hi = hi.max(o);
    }
    Some((hi - lo) / (points - 1) as f64)
}

impl Overlay {
    /// The constrained routing table, in secure mode.
    pub fn constrained_table(&self) -> Option<&crate::RoutingTable> {
        self.ctable.as_ref()
    }

    /// The next hop toward `key` using only the leaf set and the constrained table, whose
    /// entries anyone can check: the redundant copies of a secure route go this way.
    pub fn next_hop_constrained(&self, key: &Id, exclude: Option<&Id>) -> NextHop {
        match &self.ctable {
            Some(t) => self.next_hop_in(t, false, key, &|id| {
                Some(id) == exclude || self.is_suspected(id)
            }),
            None => self.next_hop(key, exclude),
        }
    }

    /// The nodes around this one that secure routing answers with: the outer leaf set in
    /// secure mode, else the leaf set.
    pub(crate) fn wide(&self) -> &crate::LeafSet {
        self.outer.as_ref().unwrap_or(&self.leaf)
    }

    /// [`Overlay::wide`] and this node, closest to `key` first.
    pub(crate) fn wide_by_closeness(&self, key: &Id) -> Vec<Contact> {
        let mut v: Vec<Contact> = self.wide().iter().map(|p| p.contact).collect();
        v.push(self.me);
        v.sort_by(|a, b| key.cmp_closeness(&a.id, &b.id));
        v
    }

    /// Whether `key` lies within one leaf set width of this node: its leaf set then names
    /// nodes around the key, if not all of its closest. A redundant copy is answered from
    /// here rather than sent on: prefix routing funnels every path through the one or two
    /// nodes sharing the longest prefix with the key, and a liar there would catch every copy;
    /// the nodes a width away differ from copy to copy.
    pub(crate) fn near(&self, key: &Id) -> bool {
        let wide = self.wide();
        if wide.covers(key) {
            return true;
        }
        let ends = (
            wide.farthest(crate::Side::Ccw),
            wide.farthest(crate::Side::Cw),
        );
        match ends {
            (Some(lo), Some(hi)) => self.me.id.ring_distance(key) <= lo.id().cw_distance(&hi.id()),
            _ => false,
        }
    }

    /// This node's leaf set and itself, closest to `key` first, when that surely holds the
    /// key's true neighbourhood: the key lies inside the leaf set's span and its `r` closest
    /// stop short of both ends (so no closer node can lie beyond the span).
    pub(crate) fn neighbourhood_of(&self, key: &Id, r: usize) -> Option<Vec<Contact>> {
        let wide = self.wide();
        if !wide.covers(key) {
            return None;
        }
        let all = self.wide_by_closeness(key);
        if !wide.is_partial() {
            let ends = [
                wide.farthest(crate::Side::Cw).map(|p| p.id()),
                wide.farthest(crate::Side::Ccw).map(|p| p.id()),
            ];
            if all.iter().take(r).any(|c| ends.contains(&Some(c.id))) {
                return None;
            }
        }
        Some(all)
    }

    /// This node's estimate of the id density, for the failure test: its leaf set's span and,
    /// for rows whose slots hold at least 16 nodes by that span, how far its constrained
    /// entries lie from their points.
    pub fn density(&self) -> Density {
        let mut ids: Vec<Id> = self.wide().iter().map(|p| p.id()).collect();
        ids.push(self.me.id);
        let mut d = Density::default();
        d.add_span(&ids);
        let (Some(gap), Some(t)) = (d.gap(), &self.ctable) else {
            return d;
        };
        let b = self.cfg.b as i32;
        for row in 0..t.num_rows() {
            let width = 2f64.powi(-b * (row as i32 + 1));
            if width < 16.0 * gap {
                break;
            }
            for col in 0..self.cfg.columns() {
                if let Some(p) = t.get(row, col) {
                    d.add_nearest(&t.slot_point(row, col), &p.id());
                }
            }
        }
        d
    }

    /// Starts a secure route (queued by [`crate::Kbr::sec_route`]).
    pub(crate) fn start_secure_route(
        &mut self,
        now: Time,
        id: u64,
        key: Id,
        msg: AppMessage,
        r: u8,
        redundancy: Redundancy,
    ) {
        self.stats.secure_routes += 1;
        if !self.is_ready() || self.secure_routes.len() >= crate::secure::MAX_SECURE_ROUTES {
            self.stats.secure_failed += 1;
            self.report_secure_route(SecureRouteReport {
                id,
                key,
                app: msg.app,
                sent_to: Vec::new(),
                redundant: false,
                first: Vec::new(),
            });
            return;
        }
        self.secure_routes.insert(
            id,
            SecureRoute {
                key,
                r,
                msg,
                deadline: now + self.cfg.secure_timeout,
                stage: Stage::Plain,
                first: Vec::new(),
            },
        );
        if redundancy == Redundancy::Always {
            self.go_redundant(now, id);
            return;
        }
        let env = Envelope {
            key,
            origin: self.me,
            hops: 0,
            trace: None,
            body: RoutedBody::SecureProbe {
                id,
                r,
                constrained: false,
            },
        };
        self.routed_queue.push_back((env, 0));
    }

    /// A secure probe reached a node that can answer for its key: tell the origin.
    pub(crate) fn answer_secure_probe(&mut self, env: &Envelope, id: u64, members: Vec<Contact>) {
        let answer = OverlayMessage::RootSet {
            id,
            key: env.key,
            members,
        };
        if env.origin.id == self.me.id {
            self.root_sets.push_back((self.me, answer));
        } else {
            self.send(env.origin, answer);
        }
    }

    /// An answer to one of this node's secure probes.
    pub(crate) fn on_root_set(&mut self, now: Time, id: u64, key: Id, members: Vec<Contact>) {
        let Some(route) = self.secure_routes.get_mut(&id) else {
            return;
        };
        if route.key != key {
            return;
        }
        let r = route.r as usize;
        match &mut route.stage {
            Stage::Plain => {
                let ids: Vec<Id> = members.iter().map(|c| c.id).collect();
                let mut first = ids.clone();
                first.sort_by(|a, b| key.cmp_closeness(a, b));
                first.truncate(r);
                route.first = first;
                let known = self.wide().len() + 1;
                let density = self.density().gap();
                if !self.cfg.failure_test
                    || (failure_test(&key, &ids, density, known, r, self.cfg.gamma)
                        && !self.contradicts(&key, &ids, r))
                {
                    self.finish_secure_route(id, members, false);
                } else {
                    self.stats.secure_test_failed += 1;
                    self.go_redundant(now, id);
                }
            }
            Stage::Redundant {
                copies,
                answers,
                targets,
            } => {
                *answers += 1;
                for c in closest_of(&key, members, r) {
                    targets.insert(c.id, c);
                }
                if *answers >= *copies {
                    self.finish_redundant(id);
                }
            }
        }
    }

    /// Where the copies of a redundant route start: the proximity table's entries of the
    /// first rows, then the leaf set. A copy follows constrained entries from its starter on,
    /// and a constrained entry is the node closest to a point built from its owner's own
    /// digits, so copies started at nodes with similar ids take the same nodes: leaf set
    /// members share all but their last digits with this node, and so (by construction) do
    /// this node's constrained entries past their first digits. Proximity entries are chosen
    /// for the network, their ids are random, and so the paths from them differ.
    fn redundant_starters(&self) -> Vec<Contact> {
        let mut v: Vec<Contact> = Vec::new();
        for row in 0..self.table.num_rows().min(REDUNDANT_ROWS) {
            v.extend(self.table.row(row).map(|p| p.contact));
        }
        for p in self.leaf.iter() {
            if !v.iter().any(|c| c.id == p.id()) {
                v.push(p.contact);
            }
        }
        v
    }

    /// Whether this node knows a node closer to `key` than the `r`-th closest id of the answer
    /// `ids` that the answer leaves out: then the answer is not the key's true neighbourhood.
    /// Free, and decisive where this node knows much of the ring.
    fn contradicts(&self, key: &Id, ids: &[Id], r: usize) -> bool {
        let mut sorted = ids.to_vec();
        sorted.sort_by(|a, b| key.cmp_closeness(a, b));
        let Some(rth) = sorted.get(r.min(sorted.len()).saturating_sub(1)) else {
            return true;
        };
        self.known_peers()
            .iter()
            .map(|c| c.id)
            .chain([self.me.id])
            .any(|id| key.is_closer(&id, rth) && !ids.contains(&id))
    }

    /// The `r` nodes closest to `key` among all this node knows (its tables and itself).
    fn own_closest(&self, key: &Id, r: usize) -> Vec<Contact> {
        let mut all = self.known_peers();
        all.push(self.me);
        closest_of(key, all, r)
    }

    /// The first answer failed the test: send copies through every redundant starter, each
    /// forwarded along constrained entries only.
    fn go_redundant(&mut self, now: Time, id: u64) {
        let Some((key, r)) = self.secure_routes.get(&id).map(|r| (r.key, r.r as usize)) else {
            return;
        };
        self.stats.secure_redundant += 1;
        let firsts = self.redundant_starters();
        // What this node itself knows counts as one more answer.
        let targets: BTreeMap<Id, Contact> = self
            .own_closest(&key, r)
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        let Some(route) = self.secure_routes.get_mut(&id) else {
            return;
        };
        route.stage = Stage::Redundant {
            copies: firsts.len(),
            answers: 0,
            targets,
        };
        route.deadline = now + self.cfg.secure_timeout;
        self.send_redundant_probes(&firsts, id, key, r as u8);
        if self
            .secure_routes
            .get(&id)
            .is_some_and(|r| matches!(r.stage, Stage::Redundant { copies: 0, .. }))
        {
            self.finish_redundant(id);
        }
    }

    /// Sends a copy of secure probe `id` for `key` through each of `starters`, each forwarded
    /// along constrained entries only.
    fn send_redundant_probes(&mut self, starters: &[Contact], id: u64, key: Id, r: u8) {
        for first in starters {
            let env = Envelope {
                key,
                origin: self.me,
                hops: 1,
                trace: None,
                body: RoutedBody::SecureProbe {
                    id,
                    r,
                    constrained: true,
                },
            };
            self.send(*first, OverlayMessage::SecureHop(env));
        }
    }

    fn finish_redundant(&mut self, id: u64) {
        if let Some(SecureRoute {
            stage: Stage::Redundant { targets, .. },
            ..
        }) = self.secure_routes.get(&id)
        {
            let targets: Vec<Contact> = targets.values().copied().collect();
            self.finish_secure_route(id, targets, true);
        }
    }

    /// Sends the message to `members` (after a plain answer: its `r` closest; after
    /// redundant routing: every target) and reports the route.
    fn finish_secure_route(&mut self, id: u64, mut members: Vec<Contact>, redundant: bool) {
        let Some(route) = self.secure_routes.remove(&id) else {
            return;
        };
        let key = route.key;
        members.sort_by(|a, b| key.cmp_closeness(&a.id, &b.id));
        members.dedup_by_key(|c| c.id);
        if !redundant {
            members.truncate(route.r as usize);
        }
        if members.is_empty() {
            self.stats.secure_failed += 1;
        }
        let recipients: Vec<Id> = members.iter().map(|c| c.id).collect();
        for c in &members {
            let m = OverlayMessage::SecureDeliver {
                key,
                r: route.r,
                recipients: recipients.clone(),
                msg: route.msg.clone(),
            };
            if c.id == self.me.id {
                self.secure_deliveries.push_back((self.me, m));
            } else {
                self.send(*c, m);
            }
        }
        self.report_secure_route(SecureRouteReport {
            id,
            key,
            app: route.msg.app,
            sent_to: members,
            redundant,
            first: route.first,
        });
    }

    /// Tells the driver (an event) and the service that asked (an upcall at the next flush)
    /// how a secure route ended.
    fn report_secure_route(&mut self, report: SecureRouteReport) {
        self.secure_reports.push_back(report.clone());
        self.event(OverlayEvent::SecureRouted(report));
    }

    /// Secure routes whose answers are overdue: a plain route goes redundant, a redundant one
    /// ends with what it has.
    pub(crate) fn secure_timeouts(&mut self, now: Time) {
        let due: Vec<u64> = self
            .secure_routes
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            match self.secure_routes.get(&id).map(|r| &r.stage) {
                Some(Stage::Plain) => {
                    self.stats.secure_test_failed += 1;
                    self.go_redundant(now, id);
                }
                Some(Stage::Redundant { .. }) => self.finish_redundant(id),
                None => {}
            }
        }
    }

    /// The earliest secure route deadline.
    pub(crate) fn secure_deadline(&self) -> Option<Time> {
        self.secure_routes.values().map(|r| r.deadline).min()
    }

    /// A secure delivery arrived (or is this node's own): the upcall if this node is among the
    /// key's `r` closest by its own leaf set, and the message handed on to those of the key's
    /// closest nodes it knows that the sender did not name (or, near the key but not reaching
    /// it, one step on toward it). Returns whether to deliver here.
    pub(crate) fn on_secure_deliver(
        &mut self,
        key: Id,
        r: u8,
        mut recipients: Vec<Id>,
        msg: &AppMessage,
    ) -> bool {
        let r_us = r as usize;
        let deliver = self
            .neighbourhood_of(&key, r_us)
            .is_some_and(|m| m.iter().take(r_us).any(|c| c.id == self.me.id));
        let onward: Vec<Contact> = if self.wide().covers(&key) {
            closest_of(&key, self.wide_by_closeness(&key), r_us)
        } else if self.near(&key) {
            self.wide().closest(&key, None).into_iter().collect()
        } else {
            Vec::new()
        };
        let missing: Vec<Contact> = onward
            .into_iter()
            .filter(|c| c.id != self.me.id && !recipients.contains(&c.id))
            .collect();
        if !missing.is_empty() {
            self.stats.secure_closure += missing.len() as u64;
            recipients.extend(missing.iter().map(|c| c.id));
            recipients.truncate(crate::join::MAX_CONTACTS_PER_MESSAGE);
            for c in missing {
                self.send(
                    c,
                    OverlayMessage::SecureDeliver {
                        key,
                        r,
                        recipients: recipients.clone(),
                        msg: msg.clone(),
                    },
                );
            }
        }
        deliver
    }
}

/// The secure join (security.md §5): the state a join path handed over may come from a liar (a
/// colluder on the path can answer as the root with a leaf set of colluders), so before it
/// announces itself a joiner sends probes for its own id along independent paths, as redundant
/// routing does (from its proximity entries of the first rows, which the path's nodes chose
/// from the whole ring, and its leaf set, each forwarded along constrained entries), and merges
/// every answer into its tables. Ids are certified and cannot be chosen, so the leaf set and
/// the constrained table, which keep the closest candidates, end with the true ones if any
/// answer named them.
impl Overlay {
    pub(crate) fn check_join(&mut self, now: Time, versions: BTreeMap<Id, u64>) {
        let starters = self.redundant_starters();
        if starters.is_empty() {
            self.announce_joined(now, versions);
            return;
        }
        let id = self.next_secure_id;
        self.next_secure_id += 1;
        self.stats.join_checks += 1;
        let r = (self.cfg.leaf_set_size / 2 + 1).min(u8::MAX as usize) as u8;
        self.send_redundant_probes(&starters, id, self.me.id, r);
        self.phase = crate::overlay::Phase::CheckingJoin {
            id,
            copies: starters.len(),
            answers: 0,
            deadline: now + self.cfg.secure_timeout,
            versions,
            before: self.leaf.iter().map(|p| p.id()).collect(),
            answered: Default::default(),
        };
    }

    /// An answer to the join check's probes: every node it names is offered to the tables.
    pub(crate) fn on_join_check_answer(
        &mut self,
        now: Time,
        from: Contact,
        (id, key): (u64, Id),
        members: Vec<Contact>,
    ) {
        let done = match &mut self.phase {
            crate::overlay::Phase::CheckingJoin {
                id: want,
                copies,
                answers,
                answered,
                ..
            } if *want == id && key == self.me.id => {
                if !answered.insert(from.id) {
                    return;
                }
                *answers += 1;
                *answers >= *copies
            }
            _ => return,
        };
        for c in members
            .into_iter()
            .take(crate::join::MAX_CONTACTS_PER_MESSAGE)
        {
            self.offer(now, crate::Peer::unmeasured(c));
        }
        if done {
            self.end_join_check(now);
        }
    }

    /// Every answer came, or the wait is over: announce.
    pub(crate) fn end_join_check(&mut self, now: Time) {
        let (versions, before) =
            match std::mem::replace(&mut self.phase, crate::overlay::Phase::Idle) {
                crate::overlay::Phase::CheckingJoin {
                    versions, before, ..
                } => (versions, before),
                other => {
                    self.phase = other;
                    return;
                }
            };
        let added = self
            .leaf
            .iter()
            .filter(|p| !before.contains(&p.id()))
            .count();
        self.stats.join_check_corrections += added as u64;
        self.announce_joined(now, versions);
    }
}

/// The `r` of `members` closest to `key`.
fn closest_of(key: &Id, mut members: Vec<Contact>, r: usize) -> Vec<Contact> {
    members.sort_by(|a, b| key.cmp_closeness(&a.id, &b.id));
    members.dedup_by_key(|c| c.id);
    members.truncate(r);
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_at(fraction: f64) -> Id {
        let hi = (fraction.rem_euclid(1.0) * 18_446_744_073_709_551_616.0) as u64;
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&hi.to_be_bytes());
        Id::from_bytes(b)
    }

    /// `n` ids evenly spaced `gap` apart around `centre`.
    fn spread(centre: f64, gap: f64, n: usize) -> Vec<Id> {
        (0..n)
            .map(|i| id_at(centre + (i as f64 - n as f64 / 2.0) * gap))
            .collect()
    }

    fn density_of(ids: &[Id]) -> Option<f64> {
        let mut d = Density::default();
        d.add_span(ids);
        d.gap()
    }

    #[test]
    fn the_true_neighbourhood_passes_and_sparse_or_distant_sets_fail() {
        let local = density_of(&spread(0.2, 1e-5, 17));
        assert!((local.unwrap() - 1e-5).abs() < 1e-8);
        let key = id_at(0.7);
        let honest = spread(0.7, 1e-5, 17);
        let g = DEFAULT_GAMMA;
        assert!(failure_test(&key, &honest, local, 17, 5, g));
        // Colluders at a quarter of the density.
        let colluders = spread(0.7, 4e-5, 17);
        assert!(!failure_test(&key, &colluders, local, 17, 5, g));
        // Dense, but somewhere else on the ring.
        let elsewhere = spread(0.75, 1e-5, 17);
        assert!(!failure_test(&key, &elsewhere, local, 17, 5, g));
        // Too few ids.
        assert!(!failure_test(&key, &honest[..3], local, 17, 5, g));
        assert!(!failure_test(&key, &[], local, 17, 5, g));
        // A ring of one node has nothing to compare with.
        assert!(failure_test(&key, &[key], None, 1, 1, g));
    }

    #[test]
    fn gaps_wrap_around_zero_and_nearest_distances_estimate_the_gap() {
        let key = id_at(0.0);
        let around_zero = spread(0.0, 1e-5, 9);
        let local = density_of(&spread(0.5, 1e-5, 9));
        assert!(failure_test(&key, &around_zero, local, 9, 5, 1.5));
        let mut d = Density::default();
        d.add_nearest(&id_at(0.3), &id_at(0.3 + 0.5e-5));
        d.add_nearest(&id_at(0.6), &id_at(0.6 - 0.5e-5));
        assert!((d.gap().unwrap() - 1e-5).abs() < 1e-8);
    }

    #[test]
    fn a_dead_node_known_only_to_the_outer_leaf_set_or_constrained_table_leaves_them() {
        use crate::{Config, NoServices, Peer};
        let contact = |f: f64| {
            Contact::new(
                id_at(f),
                std::net::SocketAddr::from(([127, 0, 0, 1], (1000.0 + f * 1e4) as u16)),
            )
        };
        let cfg = Config {
            leaf_set_size: 2,
            secure: true,
            keepalives: false,
            ..Config::default()
        };
        let mut o = Overlay::new(contact(0.5), cfg, 1).unwrap();
        // Two on each side: the nearer in the leaf set, the farther in the outer leaf set. The
        // far one on the right (unmeasured, so in no neighbourhood set) loses its routing table
        // slot to a measured rival just beyond it, and so is known only to the outer leaf set
        // and the constrained table (it is nearer its slot's point than the rival).
        let peer = |f: f64, rtt: Option<u64>| Peer {
            contact: contact(f),
            rtt: rtt.map(ringvault_types::Duration::from_millis),
        };
        let peers = [
            peer(0.49, Some(1)),
            peer(0.48, Some(1)),
            peer(0.51, Some(1)),
            peer(0.52, None),
            peer(0.5205, Some(1)),
        ];
        o.start_with_state(Time::ZERO, peers);
        let far = id_at(0.52);
        assert!(!o.leaf_set().contains(&far));
        assert!(o.routing_table().entries().all(|p| p.id() != far));
        assert!(o.known_peers().iter().all(|c| c.id != far));
        assert!(o.wide().contains(&far));
        assert!(o
            .constrained_table()
            .is_some_and(|t| t.entries().any(|p| p.id() == far)));
        o.handle_unreachable(Time::ZERO, far, &mut NoServices);
        assert!(!o.wide().contains(&far), "the dead outer member stays");
        assert!(o
            .constrained_table()
            .is_some_and(|t| t.entries().all(|p| p.id() != far)));
    }
}
