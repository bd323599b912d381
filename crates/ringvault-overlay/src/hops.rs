//! Hop-by-hop acknowledgements and suspicion.
//!
//! Each forwarded message waits for its next hop's acknowledgement for a time set by what this
//! node measured of that peer (a few round trips plus slack), not a fixed second and a half: a
//! hop to a dead node costs about its round trip. A missing acknowledgement makes the peer a
//! *suspect*: routing goes around it at once, and it is pinged. When its pong is overdue by
//! twice the hop's time it is *presumed dead* for routing (messages that waited for it as their
//! root go on); it is declared failed, and leaves the tables, only if it stays silent for
//! [`crate::Config::hop_timeout`], or if it leaves [`MAX_MISSED_ACKS`] hops in a row
//! unacknowledged while answering pings, each still unacknowledged a failure timeout after it
//! timed out. A lost acknowledgement or a busy peer (whose acknowledgements come late) thus
//! costs a re-sent message, never the removal of a live node from the tables.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ringvault_types::{Contact, Duration, Id, Time};

use crate::config::{
    HOP_TIMEOUT_RTTS, MAX_IN_FLIGHT, MAX_MISSED_ACKS, MAX_PARKED, MAX_PARKED_BYTES, MAX_REROUTES,
    MAX_SUSPECTS, SMALL_HOP_BYTES,
};
use crate::overlay::{FailureCause, InFlight};
use crate::{Envelope, Overlay, OverlayMessage, RoutedBody};

/// Forwarded messages waiting for their hop acknowledgements, by sequence number, with their
/// deadlines indexed (deadlines differ per peer, so sequence order is not deadline order); and
/// hops that timed out (their messages went on around the peer) whose acknowledgement may still
/// come late, until they count as missed.
#[derive(Debug, Default)]
pub(crate) struct InFlightHops {
    by_seq: BTreeMap<u64, InFlight>,
    deadlines: BTreeSet<(Time, u64)>,
    /// Timed-out hops by sequence number: the peer and when the hop counts as missed.
    late: BTreeMap<u64, (Id, Time)>,
    late_deadlines: BTreeSet<(Time, u64)>,
}

impl InFlightHops {
    /// Remembers a hop; beyond [`MAX_IN_FLIGHT`] the oldest is forgotten (as if acknowledged).
    fn insert(&mut self, seq: u64, hop: InFlight) {
        if self.by_seq.len() >= MAX_IN_FLIGHT {
            if let Some((old, f)) = self.by_seq.pop_first() {
                self.deadlines.remove(&(f.deadline, old));
            }
        }
        self.deadlines.insert((hop.deadline, seq));
        self.by_seq.insert(seq, hop);
    }

    /// Ends the wait for hop `seq`, in time or late, if `from` is the peer it was sent to.
    fn acknowledge(&mut self, seq: u64, from: &Id) {
        if self.by_seq.get(&seq).is_some_and(|f| f.to.id == *from) {
            if let Some(f) = self.by_seq.remove(&seq) {
                self.deadlines.remove(&(f.deadline, seq));
            }
        } else if self.late.get(&seq).is_some_and(|(to, _)| to == from) {
            self.forget_late(seq);
        }
    }

    /// The earliest deadline, of a hop in time or of a late one.
    fn next_deadline(&self) -> Option<Time> {
        let late = self.late_deadlines.first().map(|(t, _)| *t);
        match (self.deadlines.first().map(|(t, _)| *t), late) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Removes and returns every hop sent to `id`, and forgets its late ones (it was declared
    /// failed: misses from before must not count against it if it comes back).
    fn take_to(&mut self, id: &Id) -> Vec<InFlight> {
        let late: Vec<u64> = self
            .late
            .iter()
            .filter(|(_, (to, _))| to == id)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in late {
            self.forget_late(seq);
        }
        let seqs: Vec<u64> = self
            .by_seq
            .iter()
            .filter(|(_, f)| f.to.id == *id)
            .map(|(seq, _)| *seq)
            .collect();
        seqs.into_iter()
            .filter_map(|seq| {
                let f = self.by_seq.remove(&seq)?;
                self.deadlines.remove(&(f.deadline, seq));
                Some(f)
            })
            .collect()
    }

    /// Removes and returns a hop whose deadline has passed; it waits on as a late hop for
    /// `grace` more.
    fn pop_due(&mut self, now: Time, grace: Duration) -> Option<InFlight> {
        let &(deadline, seq) = self.deadlines.first()?;
        if deadline > now {
            return None;
        }
        self.deadlines.pop_first();
        let f = self.by_seq.remove(&seq)?;
        if self.late.len() >= MAX_IN_FLIGHT {
            if let Some(&old) = self.late.keys().next() {
                self.forget_late(old);
            }
        }
        // From now if this node stalled past the deadline: the stall is no peer's fault.
        let give_up = now.max(deadline) + grace;
        self.late.insert(seq, (f.to.id, give_up));
        self.late_deadlines.insert((give_up, seq));
        Some(f)
    }

    /// Forgets late hop `seq`, if there is one.
    fn forget_late(&mut self, seq: u64) {
        if let Some((_, give_up)) = self.late.remove(&seq) {
            self.late_deadlines.remove(&(give_up, seq));
        }
    }

    /// Removes and returns the peer of a late hop that is now missed.
    fn pop_missed(&mut self, now: Time) -> Option<Id> {
        let &(give_up, seq) = self.late_deadlines.first()?;
        if give_up > now {
            return None;
        }
        self.late_deadlines.pop_first();
        self.late.remove(&seq).map(|(to, _)| to)
    }

    pub(crate) fn clear(&mut self) {
        self.by_seq.clear();
        self.deadlines.clear();
        self.late.clear();
        self.late_deadlines.clear();
    }
}

/// A peer a service asked to watch ([`crate::Kbr::watch`]), pinged.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Watch {
    /// Whom the services are told about if it stays silent.
    pub(crate) contact: Contact,
    /// When it is reported unresponsive unless the pong comes first.
    pub(crate) until: Time,
    /// The ping's nonce: only its pong ends the watch.
    pub(crate) nonce: u64,
}

/// A peer that missed a hop acknowledgement and was pinged.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Suspicion {
    /// When it is presumed dead for routing, unless heard from first.
    presume_at: Time,
    /// When it is declared failed, unless heard from first.
    fail_at: Time,
    presumed_dead: bool,
}

impl Suspicion {
    fn next_deadline(&self) -> Time {
        if self.presumed_dead {
            self.fail_at
        } else {
            self.presume_at
        }
    }
}

/// Messages that wait for a suspicion to end, oldest first, with the payload bytes they hold.
#[derive(Debug, Default)]
pub(crate) struct Parked {
    /// Each with its re-routes so far and the suspect it waits for.
    queue: VecDeque<(Envelope, u8, Id)>,
    bytes: usize,
}

impl Parked {
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

/// Application payload bytes an envelope carries.
fn payload_len(env: &Envelope) -> usize {
    match &env.body {
        RoutedBody::App(m) => m.body.len(),
        RoutedBody::Join { .. } | RoutedBody::SecureProbe { .. } => 0,
    }
}

impl Overlay {
    /// How long a hop to `peer` carrying `env` may go unacknowledged: [`HOP_TIMEOUT_RTTS`]
    /// measured round trips plus the configured slack, never more than
    /// [`crate::Config::hop_timeout`]. A peer never measured counts with the largest round trip
    /// measured to any member of the tables; with nothing measured, and for a message larger
    /// than [`SMALL_HOP_BYTES`] (whose transfer takes more than a round trip), the wait is
    /// `hop_timeout`.
    pub fn hop_timeout_for(&self, peer: &Id, env: &Envelope) -> Duration {
        if payload_len(env) > SMALL_HOP_BYTES {
            return self.cfg.hop_timeout;
        }
        self.rtt_timeout(peer)
    }

    /// [`HOP_TIMEOUT_RTTS`] round trips to `peer` plus the slack, at most `hop_timeout` (see
    /// [`Overlay::hop_timeout_for`]).
    fn rtt_timeout(&self, peer: &Id) -> Duration {
        let rtt = self.known_rtt(peer).or_else(|| self.largest_rtt());
        match rtt {
            Some(rtt) => {
                let adaptive = rtt.mul(HOP_TIMEOUT_RTTS) + self.cfg.hop_slack;
                adaptive.min(self.cfg.hop_timeout)
            }
            None => self.cfg.hop_timeout,
        }
    }

    /// The largest round trip this node measured to any member of its tables: the stand-in for
    /// a peer it never measured (a leaf learned from another node's leaf set, typically), so
    /// that a hop to a dead leaf does not cost the fixed hop timeout either.
    fn largest_rtt(&self) -> Option<Duration> {
        self.leaf
            .iter()
            .chain(self.table.entries())
            .chain(self.neighbours.peers())
            .filter_map(|p| p.rtt)
            .max()
    }

    /// Whether `id` is suspected (a hop to it went unacknowledged, and it has not been heard
    /// from since): routing goes around it.
    pub fn is_suspected(&self, id: &Id) -> bool {
        self.suspects.contains_key(id)
    }

    /// Sends `sent` to `to` as one hop and remembers `before` until acknowledged.
    pub(crate) fn send_hop(
        &mut self,
        now: Time,
        to: Contact,
        before: Envelope,
        sent: Envelope,
        reroutes: u8,
    ) {
        let seq = self.next_seq();
        let deadline = now + self.hop_timeout_for(&to.id, &sent);
        self.in_flight.insert(
            seq,
            InFlight {
                to,
                envelope: before,
                deadline,
                reroutes,
            },
        );
        self.send(
            to,
            OverlayMessage::Routed {
                seq,
                envelope: sent,
            },
        );
    }

    /// A hop acknowledgement: it ends the wait for that hop, and (even when it comes after the
    /// hop timed out) shows that `from` forwards what it is sent.
    pub(crate) fn on_hop_ack(&mut self, seq: u64, from: &Id) {
        self.in_flight.acknowledge(seq, from);
        self.missed_acks.remove(from);
    }

    /// When the next hop, suspicion or watch times out.
    pub(crate) fn hops_deadline(&self) -> Option<Time> {
        let suspect = self.suspects.values().map(Suspicion::next_deadline).min();
        let watch = self.watched.values().map(|w| w.until).min();
        [self.in_flight.next_deadline(), suspect, watch]
            .into_iter()
            .flatten()
            .min()
    }

    /// A service asked to watch `node` ([`crate::Kbr::watch`]): ping it, and report it
    /// unresponsive unless the pong to that ping comes within the hop timeout. Any other
    /// message does not count: one the peer sent before it died may still be arriving. A peer
    /// in the tables is pinged at the address they hold, and suspected if silent; one that is
    /// not (a holder a hand-off list named) is pinged where the service was told it is and
    /// only reported: an address a message named must not make this node suspect a live
    /// peer. One already watched is not watched again (its watch reports it).
    pub(crate) fn start_watch(&mut self, now: Time, node: Contact) {
        let id = node.id;
        // At the bound, a node goes unwatched rather than be reported untested (which would
        // send a service on past a live node).
        if id == self.me.id
            || !self.is_ready()
            || self.recently_failed.contains_key(&id)
            || self.watched.contains_key(&id)
            || self.watched.len() >= MAX_SUSPECTS
        {
            return;
        }
        let contact = self.contact_in_tables(&id).unwrap_or(node);
        let nonce = self.next_seq();
        let until = now + self.cfg.hop_timeout;
        self.watched.insert(
            id,
            Watch {
                contact,
                until,
                nonce,
            },
        );
        self.send(contact, OverlayMessage::Ping { nonce });
    }

    /// Unacknowledged hops: suspect the peer and re-route the message around it at once.
    /// Hops still unacknowledged [`crate::Config::failure_timeout`] after that count as
    /// missed.
    /// Suspects silent past their deadline are declared failed.
    pub(crate) fn hop_timeouts(&mut self, now: Time) {
        while let Some(f) = self.in_flight.pop_due(now, self.cfg.failure_timeout) {
            self.stats.hop_timeouts += 1;
            self.suspect(now, f.to);
            self.reroute(f);
        }
        while let Some(peer) = self.in_flight.pop_missed(now) {
            self.missed_ack(now, peer);
        }
        let presumed: Vec<Id> = self
            .suspects
            .iter_mut()
            .filter(|(_, s)| !s.presumed_dead && s.presume_at <= now)
            .map(|(id, s)| {
                s.presumed_dead = true;
                *id
            })
            .collect();
        for id in presumed {
            self.release_parked_for(&id);
        }
        let silent: Vec<Id> = self
            .suspects
            .iter()
            .filter(|(_, s)| s.fail_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            self.declare_failed(now, id, FailureCause::SuspectSilent);
        }
        let unanswered: Vec<Id> = self
            .watched
            .iter()
            .filter(|(_, w)| w.until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in unanswered {
            let Some(w) = self.watched.remove(&id) else {
                continue;
            };
            // Unresponsive is not failed: the services that asked go on without it, and a peer
            // in the tables is suspected, so it is declared failed only if it stays silent a
            // hop timeout more (a busy peer's late pong clears it).
            self.pending_updates
                .push_back(crate::overlay::PendingUpcall::Unresponsive(w.contact));
            if let Some(peer) = self.contact_in_tables(&id) {
                self.suspect(now, peer);
            }
        }
    }

    /// A hop that will not be acknowledged (it timed out, or its peer was declared failed):
    /// its message goes on around the peer, if it has re-routes left.
    fn reroute(&mut self, f: InFlight) {
        if f.reroutes < MAX_REROUTES && self.is_ready() {
            self.stats.reroutes += 1;
            self.routed_queue.push_back((f.envelope, f.reroutes + 1));
        } else {
            self.stats.dropped += 1;
            self.stats.reroutes_exhausted += 1;
        }
    }

    /// `id` was declared failed (by keep-alives, a probe, a hop timeout): the hops still in
    /// flight to it go on around it now rather than each at its own deadline.
    pub(crate) fn reroute_hops_to(&mut self, id: &Id) {
        for f in self.in_flight.take_to(id) {
            self.reroute(f);
        }
    }

    /// A hop to `peer` is still unacknowledged a failure timeout after it timed out: declare the
    /// peer failed if it has missed too many in a row (answering pings meanwhile does not make
    /// up for that).
    fn missed_ack(&mut self, now: Time, peer: Id) {
        if peer == self.me.id || self.recently_failed.contains_key(&peer) {
            return;
        }
        let missed = self.missed_acks.entry(peer).or_insert(0);
        *missed = missed.saturating_add(1);
        if *missed >= MAX_MISSED_ACKS {
            self.declare_failed(now, peer, FailureCause::HopsUnacknowledged);
        } else if self.missed_acks.len() > MAX_SUSPECTS {
            // Bounded: forget another peer's count (the peer that just missed keeps its own).
            let other = self.missed_acks.keys().find(|id| **id != peer).copied();
            if let Some(other) = other {
                self.missed_acks.remove(&other);
            }
        }
    }

    /// A hop to `peer` timed out: suspect it and ping it.
    fn suspect(&mut self, now: Time, peer: Contact) {
        if peer.id == self.me.id || self.recently_failed.contains_key(&peer.id) {
            return;
        }
        if !self.suspects.contains_key(&peer.id) && self.suspects.len() >= MAX_SUSPECTS {
            self.declare_failed(now, peer.id, FailureCause::TooManySuspects);
            return;
        }
        if self.suspects.contains_key(&peer.id) {
            return;
        }
        self.stats.suspicions += 1;
        // Two stages. After twice what the hop got without an answer to the ping, the suspect
        // is presumed dead for routing: the messages parked for it go on (this node takes
        // itself for their root) within a few round trips rather than the fixed hop timeout.
        // It is declared failed, and leaves the tables, only after the full hop timeout: a
        // busy peer whose acknowledgement and pong queue behind a large transfer is not
        // removed for it.
        let presume = self.rtt_timeout(&peer.id).mul(2).min(self.cfg.hop_timeout);
        self.suspects.insert(
            peer.id,
            Suspicion {
                presume_at: now + presume,
                fail_at: now + self.cfg.hop_timeout,
                presumed_dead: false,
            },
        );
        let nonce = self.next_seq();
        self.send(peer, OverlayMessage::Ping { nonce });
    }

    /// `id` was heard from: it is no longer suspected (its missed acknowledgements still count
    /// until it acknowledges a hop).
    pub(crate) fn heard_from(&mut self, id: &Id) {
        if self.end_suspicion(id) {
            self.stats.suspicions_cleared += 1;
        }
    }

    /// Ends the suspicion of `id`, if any (it answered, or it was declared failed): the
    /// messages parked for it route again, marked as processed before (at least one re-route:
    /// no second join reply) without using up more of their re-routes. True if it was
    /// suspected.
    pub(crate) fn end_suspicion(&mut self, id: &Id) -> bool {
        if self.suspects.remove(id).is_none() {
            return false;
        }
        self.release_parked_for(id);
        true
    }

    /// Whether `id` is suspected and presumed dead (not heard from for a few of its round
    /// trips after a missed hop): it is not waited for.
    pub(crate) fn is_presumed_dead(&self, id: &Id) -> bool {
        self.suspects.get(id).is_some_and(|s| s.presumed_dead)
    }

    /// Whether `id` is suspected and not yet presumed dead: messages whose root it is wait
    /// for it.
    pub(crate) fn is_awaited(&self, id: &Id) -> bool {
        self.suspects.get(id).is_some_and(|s| !s.presumed_dead)
    }

    /// The messages parked for `id` route again.
    fn release_parked_for(&mut self, id: &Id) {
        let (go, stay): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.parked.queue)
            .into_iter()
            .partition(|(_, _, waiting_for)| waiting_for == id);
        self.parked.queue = stay;
        for (env, reroutes, _) in go {
            self.parked.bytes -= payload_len(&env);
            self.routed_queue.push_back((env, reroutes.max(1)));
        }
    }

    /// Holds a message whose next hop is a suspect and that has no other way on (this node
    /// would take itself for the key's root): delivering it here could deliver at the wrong
    /// root, so it waits for the suspicion to end. Bounded in count and bytes; the oldest go
    /// first.
    pub(crate) fn park(&mut self, env: Envelope, reroutes: u8, waiting_for: Id) {
        let len = payload_len(&env);
        while !self.parked.queue.is_empty()
            && (self.parked.queue.len() >= MAX_PARKED || self.parked.bytes + len > MAX_PARKED_BYTES)
        {
            if let Some((old, _, _)) = self.parked.queue.pop_front() {
                self.parked.bytes -= payload_len(&old);
                self.stats.dropped += 1;
            }
        }
        self.stats.parked += 1;
        self.parked.bytes += len;
        self.parked.queue.push_back((env, reroutes, waiting_for));
    }
}
