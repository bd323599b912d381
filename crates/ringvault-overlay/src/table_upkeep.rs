//! Keeping the routing table good: lazy repair of a slot whose entry failed, and periodic
//! routing table maintenance (MSPastry's), which is what makes the tables of nodes that joined
//! early as good as those of late joiners (a joiner announces itself only to the nodes in its
//! own tables).

use rand::Rng;
use ringvault_types::{Contact, Duration, Id, Time};

use crate::config::{MAX_SLOT_REPAIRS, SLOT_REPAIR_FANOUT};
use crate::{Overlay, OverlayMessage, Peer};

/// A lazy repair of one routing table slot under way.
#[derive(Debug)]
pub(crate) struct SlotRepair {
    /// The peers asked and not yet answered.
    waiting: Vec<Id>,
    /// The peers to ask next, nearest first.
    rest: Vec<Contact>,
    /// When the current batch was asked: a batch that has not all answered within the hop
    /// timeout is given up on and the repair widens.
    asked_at: Time,
}

impl SlotRepair {
    /// Whether the current batch still waits on `id`.
    pub(crate) fn waits_on(&self, id: &Id) -> bool {
        self.waiting.contains(id)
    }
}

impl Overlay {
    /// Lazy routing table repair: asks the nearest [`SLOT_REPAIR_FANOUT`] other entries of the
    /// row for their entry in the slot (the entries of the next row when the row has no one
    /// else), and the next ones only when none of those had one.
    pub(crate) fn repair_slot(&mut self, now: Time, row: usize, col: usize) {
        let mut ask: Vec<Peer> = self.table.row(row).copied().collect();
        if ask.is_empty() {
            ask = self.table.row(row + 1).copied().collect();
        }
        // Nearest first (measured before unmeasured): their entries are likeliest near us too.
        ask.sort_by_key(|p| (p.rtt.is_none(), p.rtt));
        let key = (row as u8, col as u8);
        if self.slot_repairs.len() >= MAX_SLOT_REPAIRS && !self.slot_repairs.contains_key(&key) {
            let oldest = self
                .slot_repairs
                .iter()
                .min_by_key(|(_, r)| r.asked_at)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.slot_repairs.remove(&k);
            }
        }
        let rest = ask.into_iter().map(|p| p.contact).collect();
        self.slot_repairs.insert(
            key,
            SlotRepair {
                waiting: Vec::new(),
                rest,
                asked_at: now,
            },
        );
        self.ask_next_for_slot(now, key);
    }

    /// Asks the next batch of a slot repair; ends the repair when nobody is left to ask.
    fn ask_next_for_slot(&mut self, now: Time, (row, col): (u8, u8)) {
        let Some(repair) = self.slot_repairs.get_mut(&(row, col)) else {
            return;
        };
        let n = SLOT_REPAIR_FANOUT.min(repair.rest.len());
        let batch: Vec<Contact> = repair.rest.drain(..n).collect();
        if batch.is_empty() {
            self.slot_repairs.remove(&(row, col));
            return;
        }
        repair.waiting = batch.iter().map(|c| c.id).collect();
        repair.asked_at = now;
        for c in batch {
            self.stats.repair_messages += 1;
            self.send(c, OverlayMessage::SlotRequest { row, col });
        }
    }

    /// A peer's answer to a slot request: its entry is a candidate; when every peer of the
    /// batch answered and the slot is still empty, the repair widens. Unasked answers only
    /// offer their entry (as any contact a peer names).
    pub(crate) fn on_slot_reply(
        &mut self,
        now: Time,
        from: Contact,
        row: u8,
        col: u8,
        entry: Option<Contact>,
    ) {
        if let Some(c) = entry {
            self.offer(now, Peer::unmeasured(c));
        }
        let Some(repair) = self.slot_repairs.get_mut(&(row, col)) else {
            return;
        };
        repair.waiting.retain(|id| *id != from.id);
        if self.table.get(row as usize, col as usize).is_some() {
            self.slot_repairs.remove(&(row, col));
        } else if repair.waiting.is_empty() {
            self.ask_next_for_slot(now, (row, col));
        }
    }

    /// Slot repairs whose batch did not all answer within the hop timeout, or that wait on a
    /// peer found failed, widen; filled slots end theirs.
    pub(crate) fn slot_repair_timeouts(&mut self, now: Time, failed: Option<&Id>) {
        let timeout = self.cfg.hop_timeout;
        let mut widen = Vec::new();
        let table = &self.table;
        self.slot_repairs.retain(|&(row, col), r| {
            if table.get(row as usize, col as usize).is_some() {
                return false;
            }
            if let Some(id) = failed {
                r.waiting.retain(|w| w != id);
            }
            if r.waiting.is_empty() || now.saturating_since(r.asked_at) >= timeout {
                widen.push((row, col));
            }
            true
        });
        for key in widen {
            self.ask_next_for_slot(now, key);
        }
    }

    /// Routing table maintenance: asks one entry of each row, chosen at random, for its own row.
    /// Its entries share our prefix up to that row and were chosen near it, hence near us.
    pub(crate) fn table_maintenance_tick(&mut self, now: Time) {
        let Some(every) = self.cfg.table_maintenance_interval else {
            self.next_table_maintenance = Time::NEVER;
            return;
        };
        self.next_table_maintenance = now + every;
        // Requests of the last round that were never answered are forgotten.
        self.row_requests.clear();
        for row in 0..self.table.num_rows() {
            let n = self.table.row(row).count();
            if n == 0 {
                continue;
            }
            let pick = self.rng.gen_range(0..n);
            let Some(ask) = self.table.row(row).nth(pick).map(|p| p.contact) else {
                continue;
            };
            self.stats.table_maintenance_requests += 1;
            self.row_requests.insert(ask.id, row as u8);
            self.send(ask, OverlayMessage::RowRequest { row: row as u8 });
        }
    }

    /// The answer to our row request: candidates for that row of our table only, each probed
    /// before it may replace an entry or fill an empty slot (the sender's entries may be dead),
    /// and entering the leaf set only once a probe found it alive. A candidate the triangle
    /// inequality rules out is not probed: it is at least |rtt(us, sender) - rtt(sender, it)|
    /// away, and if that is no better than our entry's measured round trip, it cannot win. (A
    /// sender lying about its round trips can only keep us from probing its row's candidates:
    /// it cannot place any.) An answer we did not ask for is ignored.
    pub(crate) fn on_row_reply(
        &mut self,
        from: Contact,
        row: u8,
        entries: Vec<(Contact, Option<Duration>)>,
    ) {
        if self.row_requests.get(&from.id) != Some(&row) {
            return;
        }
        self.row_requests.remove(&from.id);
        let b = self.cfg.b;
        for (c, reported) in entries.into_iter().take(self.cfg.columns()) {
            if c.id == self.me.id
                || self.me.id.shared_prefix_len(&c.id, b) != row as usize
                || !self.admission.admit(&c)
            {
                continue;
            }
            let bound = self.rtt_lower_bound(&from.id, reported);
            if bound.is_some_and(|bound| !self.could_win_slot(&c.id, bound)) {
                self.stats.probes_pruned += 1;
                continue;
            }
            self.offer_table_candidate(Peer {
                contact: c,
                rtt: self.known_rtt(&c.id),
            });
        }
    }

    /// Offers `peer` to the routing table alone: with its round trip known it is compared at
    /// once; unknown, it is probed unless it already holds its slot, and the probe's answer
    /// offers it everywhere.
    pub(crate) fn offer_table_candidate(&mut self, peer: Peer) {
        let id = peer.id();
        if id == self.me.id || self.recently_failed.contains_key(&id) {
            return;
        }
        if peer.rtt.is_some() {
            self.table.insert(peer);
        } else if !self.table.contains(&id) {
            self.probe(peer.contact);
        }
    }
}
