//! One single-shot Tendermint instance: Algorithm 1 of Buchman, Kwon and Milosevic, "The latest
//! gossip on BFT consensus" (arXiv:1807.04938v3), for one height (here: the epoch whose
//! configuration the committee decides). Comments cite the algorithm's line numbers.
//!
//! It comes in two layers so that the model checker can drive the part that decides:
//! - [`Rules`] is the control state (round, step, locked and valid values, the decision) with one
//!   method per upon-rule, each taking the evidence the rule needs and returning whether it fired;
//! - [`Tendermint`] adds the log of received proposals and votes that gathers that evidence, and
//!   fires the rules whenever it holds.
//!
//! The model (`model.rs`) fires the same [`Rules`] with evidence drawn from every message any
//! process has sent (a process may have received any subset of them), which covers every order
//! of delivery. Values are opaque here: the caller judges validity (line 23's `valid(v)`) and
//! signs, verifies and persists what this layer asks for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use serde::{Deserialize, Serialize};

/// A round number within one instance.
pub type Round = u32;

/// No round goes beyond this: a faulty peer cannot push a process's round out of range.
pub const MAX_ROUND: Round = 1 << 20;

/// Proposals and votes more than this many rounds ahead of a process are dropped, which bounds
/// what a peer can make it store.
pub const ROUNDS_AHEAD: Round = 64;

/// Where a process is within a round (line 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Step {
    /// Waiting for the round's proposal.
    Propose,
    /// Prevoted; waiting for a quorum of prevotes.
    Prevote,
    /// Precommitted; waiting for a quorum of precommits or the round's end.
    Precommit,
}

/// The two kinds of vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum VoteKind {
    /// The first vote of a round.
    Prevote,
    /// The second vote of a round: 2f + 1 of them for one value decide it.
    Precommit,
}

/// How many votes make a quorum and how many make sure one correct process is among them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Thresholds {
    n: usize,
    quorum: usize,
    weak: usize,
}

impl Thresholds {
    /// The thresholds for `n` processes of which at most f = (n - 1) / 3 are faulty: a quorum
    /// is more than (n + f) / 2 (2f + 1 when n = 3f + 1), so two quorums share a correct
    /// process; f + 1 processes include a correct one.
    pub fn bft(n: usize) -> Self {
        let n = n.max(1);
        let f = (n - 1) / 3;
        Thresholds {
            n,
            quorum: (n + f) / 2 + 1,
            weak: f + 1,
        }
    }

    /// Thresholds with a chosen quorum: only for negative controls that show a checker catches
    /// what a too small quorum allows.
    pub fn with_quorum(n: usize, quorum: usize) -> Self {
        Thresholds {
            quorum,
            ..Thresholds::bft(n)
        }
    }

    /// The number of processes.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Votes that make a quorum (2f + 1).
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// Processes that include at least one correct one (f + 1).
    pub fn weak(&self) -> usize {
        self.weak
    }
}

/// A proposal for one round.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Proposal<V> {
    /// The round it is for.
    pub round: Round,
    /// The value proposed.
    pub value: V,
    /// The round in which the proposer saw a quorum of prevotes for `value` (`-1` in the paper:
    /// `None`).
    pub valid_round: Option<Round>,
}

/// A prevote or precommit; `value: None` is a vote for nil.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Vote<V> {
    /// The round it is for.
    pub round: Round,
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// The value voted for, or nil.
    pub value: Option<V>,
}

/// A timer the algorithm schedules (lines 21, 35, 48) and handles (lines 57-67).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timeout {
    /// The round it was scheduled in.
    pub round: Round,
    /// `Propose`: timeoutPropose; `Prevote`: timeoutPrevote; `Precommit`: timeoutPrecommit.
    pub step: Step,
}

/// What a process asks its caller to do, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output<V> {
    /// Sign and broadcast this proposal. The caller persists [`Rules`] first (sign-once).
    Propose(Proposal<V>),
    /// Sign and broadcast this vote. The caller persists [`Rules`] first (sign-once).
    Vote(Vote<V>),
    /// Call [`Tendermint::handle_timeout`] with this after the step's timeout for its round.
    Schedule(Timeout),
    /// `value` is decided, in `round` (the round's 2f + 1 precommits certify it).
    Decide {
        /// The round whose precommits decided it.
        round: Round,
        /// The value.
        value: V,
    },
}

/// A process's control state and its upon-rules. Everything a process must remember across a
/// crash so that it never signs two values for one (round, step) is in here: the caller persists
/// it before it signs what an [`Output::Propose`] or [`Output::Vote`] asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rules<V> {
    me: usize,
    thresholds: Thresholds,
    /// The proposer of round 0; round r's is `(first_proposer + r) mod n`.
    first_proposer: usize,
    /// What this process proposes when it has no valid value (line 18's getValue()).
    candidate: V,
    round: Round,
    step: Step,
    locked: Option<(Round, V)>,
    valid: Option<(Round, V)>,
    decision: Option<(Round, V)>,
    /// The round in which lines 34 and 47 last scheduled their timeouts ("for the first time").
    prevote_timer: Option<Round>,
    precommit_timer: Option<Round>,
}

impl<V: Clone + Eq + Debug> Rules<V> {
    /// A process that has not started. `me` is its index among the `thresholds.n()` processes.
    pub fn new(me: usize, thresholds: Thresholds, first_proposer: usize, candidate: V) -> Self {
        Rules {
            me,
            thresholds,
            first_proposer,
            candidate,
            round: 0,
            step: Step::Propose,
            locked: None,
            valid: None,
            decision: None,
            prevote_timer: None,
            precommit_timer: None,
        }
    }

    /// The proposer of `round`.
    pub fn proposer(&self, round: Round) -> usize {
        (self.first_proposer + round as usize) % self.thresholds.n
    }

    /// This process's index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// The thresholds in force.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// The current round.
    pub fn round(&self) -> Round {
        self.round
    }

    /// The current step.
    pub fn step(&self) -> Step {
        self.step
    }

    /// The decided value and the round that decided it.
    pub fn decision(&self) -> Option<&(Round, V)> {
        self.decision.as_ref()
    }

    /// The value and round this process is locked on.
    pub fn locked(&self) -> Option<&(Round, V)> {
        self.locked.as_ref()
    }

    /// The timeouts scheduled for the current round whose step has not passed: what a restarted
    /// process schedules again.
    pub fn timeouts(&self) -> Vec<Timeout> {
        let round = self.round;
        if !self.live() {
            return Vec::new();
        }
        let mut pending = Vec::new();
        if self.step == Step::Propose && self.proposer(round) != self.me {
            pending.push(Step::Propose);
        }
        if self.step == Step::Prevote && self.prevote_timer == Some(round) {
            pending.push(Step::Prevote);
        }
        if self.precommit_timer == Some(round) {
            pending.push(Step::Precommit);
        }
        pending
            .into_iter()
            .map(|step| Timeout { round, step })
            .collect()
    }

    /// Replaces the value this process proposes when it has no valid value (the next round it
    /// proposes in uses it).
    pub fn set_candidate(&mut self, candidate: V) {
        self.candidate = candidate;
    }

    /// Line 10: start round 0.
    pub fn start(&mut self, out: &mut Vec<Output<V>>) {
        self.start_round(0, out);
    }

    /// Lines 11-21.
    fn start_round(&mut self, round: Round, out: &mut Vec<Output<V>>) {
        self.round = round;
        self.step = Step::Propose;
        if self.proposer(round) == self.me {
            let (value, valid_round) = match &self.valid {
                Some((vr, v)) => (v.clone(), Some(*vr)),
                None => (self.candidate.clone(), None),
            };
            out.push(Output::Propose(Proposal {
                round,
                value,
                valid_round,
            }));
        } else {
            self.schedule(Step::Propose, out);
        }
    }

    fn schedule(&self, step: Step, out: &mut Vec<Output<V>>) {
        out.push(Output::Schedule(Timeout {
            round: self.round,
            step,
        }));
    }

    fn vote(&mut self, kind: VoteKind, value: Option<V>, out: &mut Vec<Output<V>>) {
        self.step = match kind {
            VoteKind::Prevote => Step::Prevote,
            VoteKind::Precommit => Step::Precommit,
        };
        out.push(Output::Vote(Vote {
            round: self.round,
            kind,
            value,
        }));
    }

    fn live(&self) -> bool {
        self.decision.is_none()
    }

    /// Lines 22-27: the current round's proposal `value`, with no valid round, came from its
    /// proposer. `valid` is line 23's `valid(v)`.
    pub fn upon_proposal(&mut self, value: &V, valid: bool, out: &mut Vec<Output<V>>) -> bool {
        if !self.live() || self.step != Step::Propose {
            return false;
        }
        let accept = valid && self.locked.as_ref().is_none_or(|(_, l)| l == value);
        self.vote(VoteKind::Prevote, accept.then(|| value.clone()), out);
        true
    }

    /// Lines 28-33: the current round's proposal re-proposes `value` from round `valid_round`,
    /// and a quorum prevoted `value` in `valid_round`.
    pub fn upon_proposal_with_polka(
        &mut self,
        value: &V,
        valid_round: Round,
        valid: bool,
        out: &mut Vec<Output<V>>,
    ) -> bool {
        if !self.live() || self.step != Step::Propose || valid_round >= self.round {
            return false;
        }
        let accept = valid
            && self
                .locked
                .as_ref()
                .is_none_or(|(lr, l)| *lr <= valid_round || l == value);
        self.vote(VoteKind::Prevote, accept.then(|| value.clone()), out);
        true
    }

    /// Lines 34-35: a quorum of prevotes (for anything) in the current round.
    pub fn upon_prevote_quorum(&mut self, out: &mut Vec<Output<V>>) -> bool {
        if !self.live() || self.step != Step::Prevote || self.prevote_timer == Some(self.round) {
            return false;
        }
        self.prevote_timer = Some(self.round);
        self.schedule(Step::Prevote, out);
        true
    }

    /// Lines 36-43: the current round's proposal `value` and a quorum of prevotes for it.
    pub fn upon_polka(&mut self, value: &V, valid: bool, out: &mut Vec<Output<V>>) -> bool {
        // "For the first time": the rule sets the valid round to this round, and nothing else
        // does.
        let first = self.valid.as_ref().is_none_or(|(r, _)| *r != self.round);
        if !self.live() || !valid || self.step < Step::Prevote || !first {
            return false;
        }
        if self.step == Step::Prevote {
            self.locked = Some((self.round, value.clone()));
            self.vote(VoteKind::Precommit, Some(value.clone()), out);
        }
        self.valid = Some((self.round, value.clone()));
        true
    }

    /// Lines 44-46: a quorum of prevotes for nil in the current round.
    pub fn upon_nil_polka(&mut self, out: &mut Vec<Output<V>>) -> bool {
        if !self.live() || self.step != Step::Prevote {
            return false;
        }
        self.vote(VoteKind::Precommit, None, out);
        true
    }

    /// Lines 47-48: a quorum of precommits (for anything) in the current round.
    pub fn upon_precommit_quorum(&mut self, out: &mut Vec<Output<V>>) -> bool {
        if !self.live() || self.precommit_timer == Some(self.round) {
            return false;
        }
        self.precommit_timer = Some(self.round);
        self.schedule(Step::Precommit, out);
        true
    }

    /// Lines 49-54: round `round`'s proposal `value` and a quorum of precommits for it, in any
    /// round. The instance is single-shot: deciding ends it.
    pub fn upon_commit(
        &mut self,
        round: Round,
        value: &V,
        valid: bool,
        out: &mut Vec<Output<V>>,
    ) -> bool {
        if !self.live() || !valid {
            return false;
        }
        self.decision = Some((round, value.clone()));
        out.push(Output::Decide {
            round,
            value: value.clone(),
        });
        true
    }

    /// Lines 55-56: f + 1 processes sent messages for `round`, ahead of this one.
    pub fn upon_round_skip(&mut self, round: Round, out: &mut Vec<Output<V>>) -> bool {
        if !self.live() || round <= self.round || round > MAX_ROUND {
            return false;
        }
        self.start_round(round, out);
        true
    }

    /// Lines 57-67: a timeout expired. One whose round or step has passed does nothing; one
    /// that was never scheduled acts as an early timeout, which safety does not depend on.
    pub fn on_timeout(&mut self, timeout: Timeout, out: &mut Vec<Output<V>>) -> bool {
        if !self.live() || timeout.round != self.round {
            return false;
        }
        match timeout.step {
            Step::Propose if self.step == Step::Propose => {
                self.vote(VoteKind::Prevote, None, out);
                true
            }
            Step::Prevote if self.step == Step::Prevote => {
                self.vote(VoteKind::Precommit, None, out);
                true
            }
            Step::Precommit if self.round < MAX_ROUND => {
                self.start_round(self.round + 1, out);
                true
            }
            _ => false,
        }
    }
}

/// Why a proposal or vote was not taken. None of these is an error of this process: they are
/// counted by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// The sender is not one of the processes.
    #[error("sender is not in the committee")]
    UnknownSender,
    /// A proposal from a process that does not propose in its round.
    #[error("proposal from a process that is not the round's proposer")]
    NotProposer,
    /// The round is too far ahead (or past [`MAX_ROUND`]).
    #[error("round too far ahead")]
    TooFarAhead,
    /// A proposal whose valid round is not before its round.
    #[error("malformed proposal")]
    Malformed,
    /// A second, different proposal or vote from the same process for the same round and
    /// kind: the first one stays (the signed pair is evidence of equivocation).
    #[error("equivocation: a second, different message for the same round")]
    Equivocation,
    /// The same message again.
    #[error("duplicate")]
    Duplicate,
}

#[derive(Clone, Debug)]
struct Received<V> {
    value: V,
    valid_round: Option<Round>,
    valid: bool,
}

/// What a process received: the round's proposal (the first from its proposer) and each
/// process's first prevote and precommit per round.
#[derive(Clone, Debug)]
struct Log<V> {
    proposals: BTreeMap<Round, Received<V>>,
    votes: BTreeMap<(Round, VoteKind), BTreeMap<usize, Option<V>>>,
    /// Quorums of prevotes shown whole (a certificate the caller checked), one per round.
    polkas: BTreeMap<Round, V>,
}

impl<V: Clone + Eq> Log<V> {
    /// Whether a quorum prevoted `value` in `round`, counted here or shown as a certificate.
    fn polka(&self, round: Round, value: &V, quorum: usize) -> bool {
        self.polkas.get(&round) == Some(value)
            || self.count(round, VoteKind::Prevote, Some(value)) >= quorum
    }

    fn count(&self, round: Round, kind: VoteKind, value: Option<&V>) -> usize {
        self.votes
            .get(&(round, kind))
            .map_or(0, |m| m.values().filter(|v| v.as_ref() == value).count())
    }

    fn total(&self, round: Round, kind: VoteKind) -> usize {
        self.votes.get(&(round, kind)).map_or(0, BTreeMap::len)
    }

    /// The distinct processes that sent anything for `round`.
    fn senders(&self, round: Round, proposer: usize) -> usize {
        let mut who = BTreeSet::new();
        if self.proposals.contains_key(&round) {
            who.insert(proposer);
        }
        for kind in [VoteKind::Prevote, VoteKind::Precommit] {
            if let Some(m) = self.votes.get(&(round, kind)) {
                who.extend(m.keys().copied());
            }
        }
        who.len()
    }

    fn rounds(&self) -> BTreeSet<Round> {
        self.proposals
            .keys()
            .copied()
            .chain(self.votes.keys().map(|(r, _)| *r))
            .collect()
    }
}

/// A process of one instance: [`Rules`] fed by its log of received messages.
///
/// Call [`Tendermint::start`] once, then [`Tendermint::handle_proposal`],
/// [`Tendermint::handle_vote`] and [`Tendermint::handle_timeout`] as inputs arrive, and drain
/// [`Tendermint::poll_output`] after each. Senders are indices into the committee; the caller
/// has checked their signatures.
#[derive(Clone, Debug)]
pub struct Tendermint<V> {
    rules: Rules<V>,
    log: Log<V>,
    outputs: std::collections::VecDeque<Output<V>>,
}

impl<V: Clone + Eq + Debug> Tendermint<V> {
    /// A fresh process (see [`Rules::new`]).
    pub fn new(me: usize, thresholds: Thresholds, first_proposer: usize, candidate: V) -> Self {
        Self::restore(Rules::new(me, thresholds, first_proposer, candidate))
    }

    /// A process resumed from its persisted [`Rules`] after a crash: it will not vote again in
    /// a step it already voted in, and its pending timeouts are scheduled again. Its log starts
    /// empty: peers send their messages again.
    pub fn restore(rules: Rules<V>) -> Self {
        let outputs = rules.timeouts().into_iter().map(Output::Schedule).collect();
        Tendermint {
            rules,
            log: Log {
                proposals: BTreeMap::new(),
                votes: BTreeMap::new(),
                polkas: BTreeMap::new(),
            },
            outputs,
        }
    }

    /// The control state, to persist before signing (see [`Output::Propose`]).
    pub fn rules(&self) -> &Rules<V> {
        &self.rules
    }

    /// Replaces the value proposed when there is no valid value.
    pub fn set_candidate(&mut self, candidate: V) {
        self.rules.set_candidate(candidate);
    }

    /// Line 10.
    pub fn start(&mut self) {
        let mut out = Vec::new();
        self.rules.start(&mut out);
        self.emit(out);
        self.progress();
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output<V>> {
        self.outputs.pop_front()
    }

    fn check_round(&self, round: Round) -> Result<(), Ignored> {
        if round > MAX_ROUND || round > self.rules.round.saturating_add(ROUNDS_AHEAD) {
            return Err(Ignored::TooFarAhead);
        }
        Ok(())
    }

    /// A proposal from process `from`; `valid` is the caller's judgement of its value.
    pub fn handle_proposal(
        &mut self,
        from: usize,
        proposal: Proposal<V>,
        valid: bool,
    ) -> Result<(), Ignored> {
        if from >= self.rules.thresholds.n {
            return Err(Ignored::UnknownSender);
        }
        if from != self.rules.proposer(proposal.round) {
            return Err(Ignored::NotProposer);
        }
        self.check_round(proposal.round)?;
        if proposal.valid_round.is_some_and(|vr| vr >= proposal.round) {
            return Err(Ignored::Malformed);
        }
        self.record_proposal(proposal, valid)?;
        self.progress();
        Ok(())
    }

    fn record_proposal(&mut self, proposal: Proposal<V>, valid: bool) -> Result<(), Ignored> {
        if let Some(had) = self.log.proposals.get(&proposal.round) {
            return Err(
                if had.value == proposal.value && had.valid_round == proposal.valid_round {
                    Ignored::Duplicate
                } else {
                    Ignored::Equivocation
                },
            );
        }
        self.log.proposals.insert(
            proposal.round,
            Received {
                value: proposal.value,
                valid_round: proposal.valid_round,
                valid,
            },
        );
        Ok(())
    }

    /// A vote from process `from`.
    pub fn handle_vote(&mut self, from: usize, vote: Vote<V>) -> Result<(), Ignored> {
        if from >= self.rules.thresholds.n {
            return Err(Ignored::UnknownSender);
        }
        self.check_round(vote.round)?;
        self.record_vote(from, vote)?;
        self.progress();
        Ok(())
    }

    fn record_vote(&mut self, from: usize, vote: Vote<V>) -> Result<(), Ignored> {
        let votes = self.log.votes.entry((vote.round, vote.kind)).or_default();
        match votes.get(&from) {
            Some(had) if *had == vote.value => Err(Ignored::Duplicate),
            Some(_) => Err(Ignored::Equivocation),
            None => {
                votes.insert(from, vote.value);
                Ok(())
            }
        }
    }

    /// A certificate (a quorum of signed precommits for `value` in `round`, with `value`)
    /// reached the caller, who checked it: decide `value` (line 49 with the evidence gathered
    /// elsewhere). A process whose log misses the round's proposal, because the proposer
    /// equivocated, learns the decision this way.
    pub fn handle_commit(&mut self, round: Round, value: V) {
        let mut out = Vec::new();
        if self.rules.upon_commit(round, &value, true, &mut out) {
            self.emit(out);
        }
    }

    /// A certificate of a quorum of prevotes for `value` in `round` reached the caller, who
    /// checked it. A proposer that proposes its valid value again attaches one: a process whose
    /// log misses some of those prevotes (a Byzantine voter sent it a different one first) would
    /// otherwise never prevote the value again, and a locked correct process could block every
    /// later round.
    pub fn handle_polka(&mut self, round: Round, value: V) -> Result<(), Ignored> {
        self.check_round(round)?;
        if self.log.polkas.contains_key(&round) {
            return Err(Ignored::Duplicate);
        }
        self.log.polkas.insert(round, value);
        self.progress();
        Ok(())
    }

    /// A timeout this process scheduled has expired. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, timeout: Timeout) {
        let mut out = Vec::new();
        if self.rules.on_timeout(timeout, &mut out) {
            self.emit(out);
            self.progress();
        }
    }

    /// Records this process's own proposals and votes in its log (a process receives its own
    /// broadcasts) and queues the outputs.
    fn emit(&mut self, out: Vec<Output<V>>) {
        for output in out {
            match &output {
                Output::Propose(p) => {
                    let _ = self.record_proposal(p.clone(), true);
                }
                Output::Vote(v) => {
                    let _ = self.record_vote(self.rules.me, v.clone());
                }
                Output::Schedule(_) | Output::Decide { .. } => {}
            }
            self.outputs.push_back(output);
        }
    }

    /// Fires rules until none holds.
    fn progress(&mut self) {
        loop {
            let mut out = Vec::new();
            let fired = self.fire_one(&mut out);
            self.emit(out);
            if !fired {
                return;
            }
        }
    }

    fn fire_one(&mut self, out: &mut Vec<Output<V>>) -> bool {
        let rules = &mut self.rules;
        let log = &self.log;
        let quorum = rules.thresholds.quorum;
        if !rules.live() {
            return false;
        }
        // Line 49, in any round.
        for (&r, p) in &log.proposals {
            if p.valid
                && log.count(r, VoteKind::Precommit, Some(&p.value)) >= quorum
                && rules.upon_commit(r, &p.value, true, out)
            {
                return true;
            }
        }
        // Line 55: the highest round that f + 1 processes are in.
        let ahead = log
            .rounds()
            .into_iter()
            .rev()
            .filter(|&r| r > rules.round)
            .find(|&r| log.senders(r, rules.proposer(r)) >= rules.thresholds.weak);
        if let Some(r) = ahead {
            if rules.upon_round_skip(r, out) {
                return true;
            }
        }
        let round = rules.round;
        if let Some(p) = log.proposals.get(&round) {
            // Lines 22 and 28.
            let fired = match p.valid_round {
                None => rules.upon_proposal(&p.value, p.valid, out),
                Some(vr) => {
                    log.polka(vr, &p.value, quorum)
                        && rules.upon_proposal_with_polka(&p.value, vr, p.valid, out)
                }
            };
            // Line 36.
            if fired
                || (log.polka(round, &p.value, quorum) && rules.upon_polka(&p.value, p.valid, out))
            {
                return true;
            }
        }
        // Line 44.
        if log.count(round, VoteKind::Prevote, None) >= quorum && rules.upon_nil_polka(out) {
            return true;
        }
        // Lines 34 and 47.
        (log.total(round, VoteKind::Prevote) >= quorum && rules.upon_prevote_quorum(out))
            || (log.total(round, VoteKind::Precommit) >= quorum && rules.upon_precommit_quorum(out))
    }
}
