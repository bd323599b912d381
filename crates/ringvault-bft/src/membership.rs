//! The membership service of one server (`server-mode.md` §2-§4): it holds the certified
//! configuration, collects join, leave and eviction requests, and, while it sits on the
//! committee, runs the [`Tendermint`] instance that decides the next epoch's configuration,
//! signing what the instance asks for only after its sign-once record is persisted. Decided
//! configurations go to every member with their certificate; a server that missed some pulls
//! them.
//!
//! Sans-IO like the rest of the core: time is an argument, actions come out of
//! [`Membership::poll_action`] and are performed in order (a [`Action::PersistSignOnce`]
//! completes before the actions after it).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use ringvault_types::{Duration, Id, Identity, NodeCertificate, PublicKey, RevocationList, Time};

use crate::config::{Change, Config, ConfigCert, Confirm, Delta, Epoch, JoinRequest, LeaveRequest};
use crate::consensus::{Output, Proposal, Round, Rules, Step, Tendermint, Timeout, Vote, VoteKind};
use crate::delta::{check_change, check_delta, Judge};
use crate::message::{proposal_bytes, BftMessage, SignedProposal, SignedVote};

/// Requests a committee member holds for the next epochs; more are refused.
pub const MAX_PENDING: usize = 1_024;

/// Certified configurations kept to answer pulls.
pub const HISTORY: usize = 64;

/// Proposed values an instance remembers (by hash, one per round from its proposer); further
/// ones are dropped.
pub const MAX_VALUES: usize = 128;

/// The first round's timeouts; each round adds [`TIMEOUT_STEP`].
pub const TIMEOUT_BASE: Duration = Duration::from_millis(1_000);

/// What each round adds to the timeouts, so that rounds grow until they fit the network.
pub const TIMEOUT_STEP: Duration = Duration::from_millis(500);

/// How often a committee member sends its current round's messages again (Tendermint's
/// liveness needs every message a correct member received to reach the others).
pub const GOSSIP_EVERY: Duration = Duration::from_millis(1_000);

/// A server's membership settings.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// The ring's CA key.
    pub ca: PublicKey,
    /// Revoked certificates.
    pub revoked: RevocationList,
    /// Unix milliseconds at `Time::ZERO` (leases are wall-clock times).
    pub unix_ms_at_zero: u64,
    /// Configurations shared with the other servers of this process (a simulation); `None`:
    /// this server derives and checks each one itself.
    pub shared: Option<crate::SharedConfigs>,
}

/// What a committee member persists before it signs: its instance's control state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignOnce {
    /// The epoch the instance decides.
    pub epoch: Epoch,
    /// The instance's rules (round, step, locks).
    pub rules: Rules<Id>,
    /// What this member signed in the current and previous round, which it sends again after
    /// a restart (peers that missed it could otherwise wait forever).
    pub signed: Vec<BftMessage>,
}

/// What the driver does for the service.
#[derive(Clone, Debug)]
pub enum Action {
    /// Send `msg` to server `to` (its address is in its certificate).
    Send {
        /// The server.
        to: Id,
        /// The message.
        msg: BftMessage,
    },
    /// Persist this record, and finish, before performing any later action.
    PersistSignOnce(SignOnce),
    /// Persist the newest certified configuration (what a restart resumes from).
    PersistConfig(Arc<Config>, Option<ConfigCert>),
    /// Check whether `suspect` answers; call [`Membership::confirm`] if it does not.
    Probe(Id),
    /// Something happened.
    Event(MembershipEvent),
}

/// What the service reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A new configuration is in force.
    Adopted {
        /// Its epoch.
        epoch: Epoch,
        /// Members.
        members: usize,
    },
    /// This member's instance decided (it signed the certificate's precommits).
    Decided {
        /// The epoch decided.
        epoch: Epoch,
        /// The round that decided it.
        round: Round,
    },
    /// This server asked to leave, and a configuration without it is in force.
    Left {
        /// That configuration's epoch.
        epoch: Epoch,
    },
}

/// What this server asks of the membership; it keeps asking until it holds.
#[derive(Clone, Debug)]
enum Intent {
    /// Nothing: it serves while it is a member (genesis members start so).
    Serve,
    /// To be a member: its join request, sent again whenever it is not one (at start, after
    /// an eviction).
    Member(Box<JoinRequest>),
    /// To leave.
    Leave,
}

/// Why a message was not taken; counted, never fatal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The sender is not on the committee the message needs.
    #[error("sender is not on the committee")]
    NotCommittee,
    /// A signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// For an epoch this server is not deciding.
    #[error("for another epoch")]
    OtherEpoch,
    /// A configuration or certificate that does not verify.
    #[error("configuration refused: {0}")]
    Config(#[from] crate::ConfigError),
    /// A request whose proof does not verify.
    #[error("request refused: {0}")]
    Request(#[from] crate::InvalidDelta),
    /// The consensus instance ignored it (duplicate, too far ahead, equivocation, ...).
    #[error("consensus: {0}")]
    Consensus(#[from] crate::Ignored),
    /// More requests pending than [`MAX_PENDING`].
    #[error("too many pending requests")]
    Full,
}

/// Caller mistakes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Only a member can leave.
    #[error("this server is not a member of epoch {0}")]
    NotMember(Epoch),
    /// Only committee members confirm.
    #[error("this server is not on the committee")]
    NotCommittee,
}

/// Counters for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipStats {
    /// Configurations adopted.
    pub adopted: u64,
    /// Instances this member decided.
    pub decisions: u64,
    /// Rounds started beyond round 0 (view changes).
    pub view_changes: u64,
    /// Members evicted by configurations this server adopted.
    pub evictions: u64,
    /// Proposals judged invalid.
    pub invalid_proposals: u64,
    /// Messages refused (bad signature, wrong committee, forged configuration, ...).
    pub refused: u64,
    /// Equivocations seen (a second, different signed message for one round and step).
    pub equivocations: u64,
}

/// The instance deciding the next epoch, on a committee member.
struct Instance {
    epoch: Epoch,
    tendermint: Tendermint<Id>,
    /// The deltas proposed, by the hash of the configuration they make.
    values: BTreeMap<Id, Delta>,
    /// Signed votes taken into the instance's log, first per (round, kind, voter).
    votes: BTreeMap<(Round, VoteKind, Id), SignedVote>,
    /// The proposals taken, per round.
    proposals: BTreeMap<Round, SignedProposal>,
    timers: BTreeMap<Timeout, Time>,
    /// What this member signed in this instance, recent rounds only (see [`SignOnce`]).
    signed: Vec<BftMessage>,
    /// Whether it may sign (a member restarted without its sign-once record may not).
    signing: bool,
}

/// One server's membership service.
pub struct Membership {
    identity: Identity,
    config: MembershipConfig,
    current: Arc<Config>,
    cert: Option<ConfigCert>,
    history: BTreeMap<Epoch, (Arc<Config>, Arc<Delta>, ConfigCert)>,
    /// When the current configuration was adopted.
    adopted_at: Time,
    pending: BTreeMap<Id, Change>,
    confirms: BTreeMap<Id, BTreeMap<Id, Confirm>>,
    instance: Option<Instance>,
    /// Set on a restart without a sign-once record: sign nothing for instances up to this
    /// epoch, which it may have signed in before losing its disk.
    abstain_through: Option<Epoch>,
    wiped: bool,
    restored: Option<SignOnce>,
    next_gossip: Time,
    next_pull: Time,
    /// Pulls sent, which picks whom the next one goes to.
    pulls: u64,
    /// When this server last pulled because a configuration from ahead arrived.
    last_ahead_pull: Time,
    intent: Intent,
    actions: VecDeque<Action>,
    stats: MembershipStats,
}

impl Membership {
    /// A server starting from `current` (genesis, or the newest configuration it persisted)
    /// with `sign_once`, the record it persisted before its last signature, if any. `wiped`
    /// says its data dir was lost: it then signs nothing in the instances it could have signed
    /// in before (see [`Membership::abstaining`]).
    pub fn new(
        identity: Identity,
        config: MembershipConfig,
        current: Arc<Config>,
        cert: Option<ConfigCert>,
        sign_once: Option<SignOnce>,
        wiped: bool,
        now: Time,
    ) -> Self {
        let mut m = Membership {
            identity,
            config,
            current,
            cert,
            history: BTreeMap::new(),
            adopted_at: now,
            pending: BTreeMap::new(),
            confirms: BTreeMap::new(),
            instance: None,
            abstain_through: None,
            wiped,
            restored: sign_once,
            next_gossip: now,
            next_pull: now,
            pulls: 0,
            last_ahead_pull: Time::ZERO,
            intent: Intent::Serve,
            actions: VecDeque::new(),
            stats: MembershipStats::default(),
        };
        if wiped {
            m.abstain_through = Some(m.abstain_horizon());
        }
        m
    }

    /// A server whose disk was lost may have signed in any instance up to the newest epoch
    /// plus one. Epochs begin at least an epoch apart, so while a configuration's lease runs
    /// (lease plus the skew a proposer may add) at most that many epochs can follow it.
    fn abstain_horizon(&self) -> Epoch {
        let params = &self.current.params;
        let span = params.lease_ms() + crate::delta::MAX_LEASE_SKEW_MS;
        self.current.epoch + span.div_ceil(params.epoch_ms.max(1)) + 1
    }

    /// The configuration in force.
    pub fn current(&self) -> &Arc<Config> {
        &self.current
    }

    /// Its certificate (`None` for genesis).
    pub fn cert(&self) -> Option<&ConfigCert> {
        self.cert.as_ref()
    }

    /// Counters.
    pub fn stats(&self) -> &MembershipStats {
        &self.stats
    }

    /// Requests waiting for the next configuration.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The round the instance deciding the next epoch is in, if this server sits on the
    /// committee.
    pub fn round(&self) -> Option<Round> {
        self.instance.as_ref().map(|i| i.tendermint.rules().round())
    }

    /// Whether this server refrains from signing in the instance for `epoch` (it lost its
    /// disk and may have signed there before).
    pub fn abstaining(&self, epoch: Epoch) -> bool {
        self.abstain_through.is_some_and(|e| epoch <= e)
    }

    /// Whether this server is still recovering from a lost disk: it abstains from the next
    /// instance, or has not yet adopted a configuration whose lease runs. Until this turns
    /// false a driver must remember the loss across restarts.
    pub fn recovering(&self) -> bool {
        self.wiped || self.abstaining(self.current.epoch + 1)
    }

    /// Whether the configuration's lease still runs at `now`: a server serves key ranges only
    /// while it does.
    pub fn serving(&self, now: Time) -> bool {
        self.unix_ms(now) < self.current.valid_until
    }

    fn unix_ms(&self, now: Time) -> u64 {
        self.config.unix_ms_at_zero + now.as_micros() / 1_000
    }

    fn me(&self) -> Id {
        self.identity.id()
    }

    fn send(&mut self, to: Id, msg: BftMessage) {
        if to != self.me() {
            self.actions.push_back(Action::Send { to, msg });
        }
    }

    fn tell_committee(&mut self, msg: BftMessage) {
        for to in self.current.committee.clone() {
            self.send(to, msg.clone());
        }
    }

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`Membership::handle_timeout`].
    pub fn next_deadline(&self) -> Option<Time> {
        let mut at = self.next_pull;
        if self.instance.is_none() && self.current.seat(&self.me()).is_some() {
            at = at.min(self.epoch_end());
        }
        if let Some(i) = &self.instance {
            at = at.min(self.next_gossip);
            if let Some(t) = i.timers.values().min() {
                at = at.min(*t);
            }
        }
        Some(at)
    }

    fn epoch_end(&self) -> Time {
        self.adopted_at + Duration::from_millis(self.current.params.epoch_ms)
    }

    /// Asks to be a member from now on (signed with its key; `cert` from the CA): the request
    /// goes to the committee now unless this server is a member, and again at each pull while
    /// it is not one (a server evicted while it was unreachable comes back by itself), until
    /// [`Membership::leave`].
    pub fn join(&mut self, cert: NodeCertificate) {
        let request = JoinRequest::new(&self.identity, cert);
        self.intent = Intent::Member(Box::new(request));
        self.ask();
    }

    /// Sends the request this server's intent needs under the current configuration, if any:
    /// a join while it is not a member, a leave while it still is one (a request can be lost,
    /// or dropped when a configuration fills up with changes).
    fn ask(&mut self) {
        let member = self.current.member(&self.me()).is_some();
        let change = match &self.intent {
            Intent::Member(request) if !member => Change::Join((**request).clone()),
            Intent::Leave if member => {
                Change::Leave(LeaveRequest::new(&self.identity, self.current.epoch))
            }
            _ => return,
        };
        self.tell_committee(BftMessage::Request(Box::new(change)));
    }

    /// Whether this server asked to leave.
    pub fn leaving(&self) -> bool {
        matches!(self.intent, Intent::Leave)
    }

    /// Asks the committee to let this server leave after the current epoch.
    pub fn leave(&mut self) -> Result<(), MembershipError> {
        if self.current.member(&self.me()).is_none() {
            return Err(MembershipError::NotMember(self.current.epoch));
        }
        self.intent = Intent::Leave;
        self.ask();
        Ok(())
    }

    /// This server found `suspect` silent past the failure timeout: committee members confirm
    /// (they probed it themselves), others tell the committee, which probes.
    pub fn suspect(&mut self, suspect: Id) {
        if self.current.member(&suspect).is_none() || suspect == self.me() {
            return;
        }
        if self.current.seat(&self.me()).is_some() {
            let _ = self.confirm(suspect);
        } else {
            let epoch = self.current.epoch;
            self.tell_committee(BftMessage::Suspect { epoch, suspect });
        }
    }

    /// A committee member probed `suspect` and it did not answer: sign a confirm and share it.
    pub fn confirm(&mut self, suspect: Id) -> Result<(), MembershipError> {
        if self.current.seat(&self.me()).is_none() {
            return Err(MembershipError::NotCommittee);
        }
        let confirm = Confirm::new(&self.identity, self.current.epoch, suspect);
        self.take_confirm(confirm.clone());
        self.tell_committee(BftMessage::Confirm(confirm));
        Ok(())
    }

    fn take_confirm(&mut self, confirm: Confirm) {
        let suspect = confirm.suspect;
        let known = self.confirms.len() < MAX_PENDING || self.confirms.contains_key(&suspect);
        if known {
            self.confirms
                .entry(suspect)
                .or_default()
                .insert(confirm.by, confirm);
        }
    }

    /// What deltas and requests are judged against at `now`.
    fn judge(&self, now: Time) -> Judge<'_> {
        Judge {
            ca: &self.config.ca,
            revoked: &self.config.revoked,
            now_ms: self.unix_ms(now),
        }
    }

    /// A message from server `from` (authenticated by the transport).
    pub fn handle_message(&mut self, now: Time, from: Id, msg: BftMessage) -> Result<(), Refused> {
        let result = self.dispatch(now, from, msg);
        if let Err(e) = &result {
            self.stats.refused += 1;
            if matches!(e, Refused::Consensus(crate::Ignored::Equivocation)) {
                self.stats.equivocations += 1;
            }
        }
        result
    }

    fn dispatch(&mut self, now: Time, from: Id, msg: BftMessage) -> Result<(), Refused> {
        match msg {
            BftMessage::Propose(p) => self.take_proposal(now, from, *p),
            BftMessage::Vote(v) => self.take_vote(now, v),
            BftMessage::Request(change) => self.take_request(now, *change),
            BftMessage::Confirm(c) => {
                if self.current.seat(&c.by).is_none() || c.epoch != self.current.epoch {
                    return Err(Refused::NotCommittee);
                }
                if self.current.member(&c.suspect).is_none() {
                    // Confirms name members only, or one member could fill the table with
                    // made-up ids and crowd out real evictions.
                    return Err(Refused::OtherEpoch);
                }
                let key = self.current.member(&c.by).map(|m| m.key());
                let signed = crate::config::confirm_bytes(c.epoch, c.suspect);
                if key.is_none_or(|k| k.verify(&signed, &c.signature).is_err()) {
                    return Err(Refused::BadSignature);
                }
                self.take_confirm(c);
                Ok(())
            }
            BftMessage::Suspect { suspect, .. } => {
                if self.current.seat(&self.me()).is_some()
                    && self.current.member(&suspect).is_some()
                    && self.current.member(&from).is_some()
                {
                    self.actions.push_back(Action::Probe(suspect));
                }
                Ok(())
            }
            BftMessage::Decided { delta, cert } => self.take_decided(now, from, delta, cert),
            BftMessage::Pull { have } => {
                let later: Vec<_> = self
                    .history
                    .range(have.saturating_add(1)..)
                    .map(|(_, (_, d, c))| (d.clone(), c.clone()))
                    .collect();
                for (delta, cert) in later {
                    self.send(from, BftMessage::Decided { delta, cert });
                }
                Ok(())
            }
        }
    }

    fn take_request(&mut self, now: Time, change: Change) -> Result<(), Refused> {
        if self.current.seat(&self.me()).is_none() {
            return Err(Refused::NotCommittee);
        }
        let judge = self.judge(now);
        check_change(&self.current, &change, &judge)?;
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&change.subject()) {
            return Err(Refused::Full);
        }
        self.pending.insert(change.subject(), change);
        Ok(())
    }

    /// The delta this member would propose: pending requests and evictions with enough
    /// confirms that still hold against the current configuration, in id order, capped.
    fn candidate(&self, now: Time) -> Delta {
        let judge = self.judge(now);
        let mut changes: BTreeMap<Id, Change> = BTreeMap::new();
        for (suspect, confirms) in &self.confirms {
            let change = Change::Evict {
                suspect: *suspect,
                confirms: confirms.values().cloned().collect(),
            };
            if check_change(&self.current, &change, &judge).is_ok() {
                changes.insert(*suspect, change);
            }
        }
        for (id, change) in &self.pending {
            if !changes.contains_key(id) && check_change(&self.current, change, &judge).is_ok() {
                changes.insert(*id, change.clone());
            }
        }
        let mut changes: Vec<Change> = changes.into_values().collect();
        changes.truncate(self.current.params.max_changes as usize);
        // Never propose removing every member.
        while changes.len() >= self.current.members.len()
            && changes.iter().all(|c| !matches!(c, Change::Join(_)))
            && !changes.is_empty()
        {
            changes.pop();
        }
        Delta {
            epoch: self.current.epoch + 1,
            prev: self.current.hash(),
            changes,
            valid_until: self.lease_end(judge.now_ms),
        }
    }

    /// The lease end this member proposes: a lease from now, and never before the current
    /// configuration's (leases only move forward; genesis is the operator's to set).
    fn lease_end(&self, now_ms: u64) -> u64 {
        let end = now_ms + self.current.params.lease_ms();
        if self.current.epoch > 0 {
            end.max(self.current.valid_until + 1)
        } else {
            end
        }
    }

    /// Time passed: start the instance at the epoch's end, fire consensus timeouts, gossip,
    /// and pull when the next configuration is overdue.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.instance.is_none()
            && now >= self.epoch_end()
            && self.current.seat(&self.me()).is_some()
        {
            self.start_instance(now);
        }
        let due: Vec<Timeout> = self
            .instance
            .as_ref()
            .map(|i| {
                i.timers
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(t, _)| *t)
                    .collect()
            })
            .unwrap_or_default();
        for timeout in due {
            if let Some(i) = &mut self.instance {
                i.timers.remove(&timeout);
                i.tendermint.handle_timeout(timeout);
            }
            self.drain(now);
        }
        if self.instance.is_some() && now >= self.next_gossip {
            self.next_gossip = now + GOSSIP_EVERY;
            self.gossip();
        }
        if now >= self.next_pull {
            let overdue =
                now >= self.epoch_end() + Duration::from_millis(self.current.params.epoch_ms);
            self.next_pull = now + GOSSIP_EVERY.mul(2);
            // A server just started does not know how far behind it is: it asks once.
            let starting = self.pulls == 0;
            if overdue || starting || self.current.member(&self.me()).is_none() {
                let have = self.current.epoch;
                // Ask a committee member (they decide every configuration, so they hold it), a
                // different one each time, starting at a seat that depends on who asks so that
                // laggards spread over the committee.
                let seats = &self.current.committee;
                if !seats.is_empty() {
                    let first = self.me().as_bytes()[0] as u64;
                    let to = seats[((first + self.pulls) % seats.len() as u64) as usize];
                    self.pulls += 1;
                    self.send(to, BftMessage::Pull { have });
                }
                self.ask();
            }
        }
    }

    fn start_instance(&mut self, now: Time) {
        let epoch = self.current.epoch + 1;
        let Some(me) = self.current.seat(&self.me()) else {
            return;
        };
        let candidate = self.candidate(now);
        let value = self.current.apply(&candidate).hash();
        let thresholds = crate::Thresholds::bft(self.current.committee.len());
        let first = ((epoch) % self.current.committee.len() as u64) as usize;
        // A record for this instance resumes it; one for a later instance (the configuration
        // persisted lagged behind the record) is kept for then, and this member signs nothing
        // until it gets there: it may have signed here too, in a record since overwritten.
        let restored = match self.restored.take() {
            Some(s) if s.epoch == epoch && s.rules.me() == me => Some(s),
            Some(s) if s.epoch > epoch => {
                self.restored = Some(s);
                None
            }
            _ => None,
        };
        let later_record = self.restored.as_ref().is_some_and(|s| s.epoch > epoch);
        let resumed = restored.is_some();
        let (mut tendermint, signed_before) = match restored {
            Some(s) => (Tendermint::restore(s.rules), s.signed),
            None => (Tendermint::new(me, thresholds, first, value), Vec::new()),
        };
        tendermint.set_candidate(value);
        let mut values = BTreeMap::new();
        values.insert(value, candidate);
        self.instance = Some(Instance {
            epoch,
            tendermint,
            values,
            votes: BTreeMap::new(),
            proposals: BTreeMap::new(),
            timers: BTreeMap::new(),
            signed: Vec::new(),
            signing: !self.abstaining(epoch) && !later_record,
        });
        if let Some(i) = &mut self.instance {
            if resumed {
                // Take back what it signed before the crash, and gossip will send it again.
                for msg in signed_before {
                    match msg {
                        BftMessage::Vote(v) => {
                            let vote = Vote {
                                round: v.round,
                                kind: v.kind,
                                value: v.value,
                            };
                            let _ = i.tendermint.handle_vote(me, vote);
                            i.votes.insert((v.round, v.kind, v.voter), v.clone());
                            i.signed.push(BftMessage::Vote(v));
                        }
                        BftMessage::Propose(p) => {
                            let value = self.current.apply(&p.delta).hash();
                            i.values.entry(value).or_insert_with(|| p.delta.clone());
                            let proposal = Proposal {
                                round: p.round,
                                value,
                                valid_round: p.valid_round,
                            };
                            let _ = i.tendermint.handle_proposal(me, proposal, true);
                            i.proposals.insert(p.round, (*p).clone());
                            i.signed.push(BftMessage::Propose(p));
                        }
                        _ => {}
                    }
                }
            } else {
                i.tendermint.start();
            }
        }
        self.drain(now);
    }

    fn timeout_length(timeout: Timeout) -> Duration {
        TIMEOUT_BASE + TIMEOUT_STEP.mul(timeout.round.min(64) as u64)
    }

    /// Performs what the instance asked for.
    fn drain(&mut self, now: Time) {
        loop {
            let Some(instance) = &mut self.instance else {
                return;
            };
            let Some(output) = instance.tendermint.poll_output() else {
                return;
            };
            match output {
                Output::Schedule(t) => {
                    instance.timers.insert(t, now + Self::timeout_length(t));
                    if t.step == Step::Propose && t.round > 0 {
                        self.stats.view_changes += 1;
                    }
                }
                Output::Propose(p) => self.sign_proposal(p),
                Output::Vote(v) => self.sign_vote(v),
                Output::Decide { round, value } => self.decided(now, round, value),
            }
        }
    }

    /// Records `msg`, which this member just signed, persists the sign-once record with it,
    /// and only then lets it go to the committee.
    fn persist_and_send(&mut self, msg: BftMessage) {
        let Some(i) = &mut self.instance else {
            return;
        };
        let round = i.tendermint.rules().round().saturating_sub(1);
        i.signed.retain(|m| match m {
            BftMessage::Vote(v) => v.round >= round,
            BftMessage::Propose(p) => p.round >= round,
            _ => false,
        });
        i.signed.push(msg.clone());
        let record = SignOnce {
            epoch: i.epoch,
            rules: i.tendermint.rules().clone(),
            signed: i.signed.clone(),
        };
        self.actions.push_back(Action::PersistSignOnce(record));
        self.tell_committee(msg);
    }

    fn sign_proposal(&mut self, p: Proposal<Id>) {
        let me = self.me();
        let Some(i) = &mut self.instance else {
            return;
        };
        if !i.signing {
            return;
        }
        let Some(delta) = i.values.get(&p.value).cloned() else {
            return;
        };
        let polka: Vec<SignedVote> = match p.valid_round {
            Some(vr) => i
                .votes
                .range((vr, VoteKind::Prevote, Id::ZERO)..=(vr, VoteKind::Prevote, Id::MAX))
                .map(|(_, v)| v.clone())
                .filter(|v| v.value == Some(p.value))
                .collect(),
            None => Vec::new(),
        };
        let signature = self.identity.sign(&proposal_bytes(
            i.epoch,
            p.round,
            delta.hash(),
            p.valid_round,
        ));
        let signed = SignedProposal {
            round: p.round,
            delta,
            valid_round: p.valid_round,
            polka,
            proposer: me,
            signature,
        };
        i.proposals.insert(p.round, signed.clone());
        self.persist_and_send(BftMessage::Propose(Box::new(signed)));
    }

    fn sign_vote(&mut self, v: Vote<Id>) {
        let me = self.me();
        let Some(i) = &mut self.instance else {
            return;
        };
        if !i.signing {
            return;
        }
        let mut signed = SignedVote {
            epoch: i.epoch,
            round: v.round,
            kind: v.kind,
            value: v.value,
            voter: me,
            signature: ringvault_types::Signature([0; 64]),
        };
        signed.signature = self.identity.sign(&signed.bytes());
        i.votes.insert((v.round, v.kind, me), signed.clone());
        self.persist_and_send(BftMessage::Vote(signed));
    }

    /// Sends the current round's messages again (own and relayed), and the last decision.
    fn gossip(&mut self) {
        let Some(i) = &self.instance else {
            return;
        };
        let round = i.tendermint.rules().round();
        let from = round.saturating_sub(1);
        let mut msgs: Vec<BftMessage> = i
            .proposals
            .range(from..)
            .map(|(_, p)| BftMessage::Propose(Box::new(p.clone())))
            .collect();
        msgs.extend(
            i.votes
                .range((from, VoteKind::Prevote, Id::ZERO)..)
                .map(|(_, v)| BftMessage::Vote(v.clone())),
        );
        for msg in msgs {
            self.tell_committee(msg);
        }
    }

    fn verify_vote(&self, v: &SignedVote) -> Result<usize, Refused> {
        let seat = self.current.seat(&v.voter).ok_or(Refused::NotCommittee)?;
        let key = self
            .current
            .member(&v.voter)
            .ok_or(Refused::NotCommittee)?
            .key();
        key.verify(&v.bytes(), &v.signature)
            .map_err(|_| Refused::BadSignature)?;
        Ok(seat)
    }

    fn take_vote(&mut self, now: Time, v: SignedVote) -> Result<(), Refused> {
        if self.instance.as_ref().is_none_or(|i| i.epoch != v.epoch) {
            return Err(Refused::OtherEpoch);
        }
        let seat = self.verify_vote(&v)?;
        let Some(i) = &mut self.instance else {
            return Ok(());
        };
        let vote = Vote {
            round: v.round,
            kind: v.kind,
            value: v.value,
        };
        let taken = i.tendermint.handle_vote(seat, vote);
        if taken.is_ok() {
            i.votes.insert((v.round, v.kind, v.voter), v);
        }
        self.drain(now);
        Ok(taken?)
    }

    fn take_proposal(&mut self, now: Time, from: Id, p: SignedProposal) -> Result<(), Refused> {
        let epoch = p.delta.epoch;
        if self.instance.as_ref().is_none_or(|i| i.epoch != epoch) {
            return Err(Refused::OtherEpoch);
        }
        let _ = from;
        let seat = self
            .current
            .seat(&p.proposer)
            .ok_or(Refused::NotCommittee)?;
        let key = self
            .current
            .member(&p.proposer)
            .ok_or(Refused::NotCommittee)?
            .key();
        key.verify(
            &proposal_bytes(epoch, p.round, p.delta.hash(), p.valid_round),
            &p.signature,
        )
        .map_err(|_| Refused::BadSignature)?;
        let value = self.current.apply(&p.delta).hash();
        let judge = self.judge(now);
        let valid = check_delta(&self.current, &p.delta, &judge).is_ok();
        if !valid {
            self.stats.invalid_proposals += 1;
        }
        // A re-proposal's quorum of prevotes, checked vote by vote.
        let polka: Vec<SignedVote> = match p.valid_round {
            Some(vr) => p
                .polka
                .iter()
                .filter(|v| {
                    v.epoch == epoch
                        && v.round == vr
                        && v.kind == VoteKind::Prevote
                        && v.value == Some(value)
                        && self.verify_vote(v).is_ok()
                })
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let voters: BTreeSet<Id> = polka.iter().map(|v| v.voter).collect();
        let proven = voters.len() >= self.current.quorum();
        let Some(i) = &mut self.instance else {
            return Ok(());
        };
        // Values are kept only from the round's proposer, one per round, so a Byzantine member
        // cannot crowd out the ones that matter.
        let rules = i.tendermint.rules();
        let first_of_round = rules.proposer(p.round) == seat
            && p.round <= rules.round().saturating_add(crate::consensus::ROUNDS_AHEAD)
            && !i.proposals.contains_key(&p.round);
        if first_of_round && i.values.len() < MAX_VALUES {
            i.values.entry(value).or_insert_with(|| p.delta.clone());
        }
        if let (true, Some(vr)) = (proven, p.valid_round) {
            // Kept, so that this member can forward the proof when it re-proposes the value.
            for v in polka {
                i.votes.entry((v.round, v.kind, v.voter)).or_insert(v);
            }
            let _ = i.tendermint.handle_polka(vr, value);
        }
        let proposal = Proposal {
            round: p.round,
            value,
            valid_round: p.valid_round,
        };
        let round = p.round;
        let taken = i.tendermint.handle_proposal(seat, proposal, valid);
        if taken.is_ok() {
            i.proposals.insert(round, p);
        }
        self.drain(now);
        Ok(taken?)
    }

    /// The instance decided `value` in `round`: build the certificate from the precommits
    /// this member holds, adopt the configuration and send it to every member.
    fn decided(&mut self, now: Time, round: Round, value: Id) {
        let Some(i) = &self.instance else {
            return;
        };
        let Some(delta) = i.values.get(&value).cloned() else {
            return;
        };
        let sigs = i
            .votes
            .range((round, VoteKind::Precommit, Id::ZERO)..=(round, VoteKind::Precommit, Id::MAX))
            .filter(|(_, v)| v.value == Some(value))
            .map(|(_, v)| (v.voter, v.signature))
            .collect();
        let cert = ConfigCert {
            epoch: i.epoch,
            round,
            config_hash: value,
            sigs,
        };
        let epoch = i.epoch;
        self.stats.decisions += 1;
        self.actions
            .push_back(Action::Event(MembershipEvent::Decided { epoch, round }));
        let next = self.current.apply(&delta);
        if self.current.verify_next(&next, &cert).is_err() {
            // Decided through a certificate received (handle_commit): adopting waits for it.
            return;
        }
        let delta = Arc::new(delta);
        let msg = BftMessage::Decided {
            delta: delta.clone(),
            cert: cert.clone(),
        };
        // To every interior node of the new configuration's trees, which pass it on to their
        // leaves: a faulty interior node then costs only its own children one tree (they have
        // a parent in each), and every committee member that decides sends, so a silent one
        // withholds nothing. (N / 16 sends per tree and epoch.)
        let trees = self.trees();
        let mut to: BTreeSet<Id> = (0..trees)
            .flat_map(|t| next.tree_interior(t, trees))
            .collect();
        // Servers leaving are in no tree of the new configuration; they hear it from here.
        to.extend(
            self.current
                .members
                .iter()
                .map(|m| m.id())
                .filter(|id| next.member(id).is_none()),
        );
        for id in to {
            self.send(id, msg.clone());
        }
        self.adopt(now, Arc::new(next), delta, cert);
        self.forward(msg);
    }

    /// Dissemination trees per configuration: f_ms + 1, so that a Byzantine interior node of
    /// one tree (interiors are disjoint) leaves the others whole; pulls cover the rest.
    fn trees(&self) -> usize {
        (self.current.params.f_ms as usize + 1).min(crate::config::FAN_OUT)
    }

    /// Sends a configuration this server just adopted on to its children in every tree.
    fn forward(&mut self, msg: BftMessage) {
        let trees = self.trees();
        let me = self.me();
        let children: BTreeSet<Id> = (0..trees)
            .flat_map(|t| self.current.tree_children(t, trees, &me))
            .collect();
        for child in children {
            self.send(child, msg.clone());
        }
    }

    fn take_decided(
        &mut self,
        now: Time,
        from: Id,
        delta: Arc<Delta>,
        cert: ConfigCert,
    ) -> Result<(), Refused> {
        if delta.epoch <= self.current.epoch {
            return Ok(());
        }
        if delta.epoch > self.current.epoch + 1 {
            // Behind: ask the sender for what is missing, at most once per gossip period (each
            // answer to a pull brings several configurations, and each could trigger another).
            if now >= self.last_ahead_pull + GOSSIP_EVERY {
                self.last_ahead_pull = now;
                let have = self.current.epoch;
                self.send(from, BftMessage::Pull { have });
            }
            return Err(Refused::OtherEpoch);
        }
        let next = match &self.config.shared {
            Some(shared) => {
                if delta.prev != shared.hash(&self.current) {
                    return Err(Refused::Config(crate::ConfigError::WrongPrev));
                }
                shared.next(&self.current, &delta, &cert)?
            }
            None => {
                if delta.prev != self.current.hash() {
                    return Err(Refused::Config(crate::ConfigError::WrongPrev));
                }
                let next = self.current.apply(&delta);
                self.current.verify_next(&next, &cert)?;
                Arc::new(next)
            }
        };
        let msg = BftMessage::Decided {
            delta: delta.clone(),
            cert: cert.clone(),
        };
        self.adopt(now, next, delta, cert);
        // Verified before it goes on: a relay can withhold a configuration, never forge one.
        self.forward(msg);
        Ok(())
    }

    fn adopt(&mut self, now: Time, next: Arc<Config>, delta: Arc<Delta>, cert: ConfigCert) {
        let evicted = delta
            .changes
            .iter()
            .filter(|c| matches!(c, Change::Evict { .. }))
            .count();
        self.stats.evictions += evicted as u64;
        self.stats.adopted += 1;
        for change in &delta.changes {
            self.pending.remove(&change.subject());
            self.confirms.remove(&change.subject());
        }
        // Confirms were for the old epoch; requests are checked again at the next proposal.
        self.confirms.clear();
        self.history
            .insert(next.epoch, (next.clone(), delta, cert.clone()));
        while self.history.len() > HISTORY {
            self.history.pop_first();
        }
        self.current = next.clone();
        if self.wiped {
            // Each configuration adopted after a wipe moves the horizon on; the first whose
            // lease still runs bounds how far behind the newest it can be, and ends the wipe.
            let horizon = self.abstain_horizon();
            self.abstain_through = Some(self.abstain_through.unwrap_or(0).max(horizon));
            if self.serving(now) {
                self.wiped = false;
            }
        }
        // Requests that no longer hold (the joiner got in, the leaver left, a certificate
        // expired) would otherwise fill the pending set.
        let judge = Judge {
            ca: &self.config.ca,
            revoked: &self.config.revoked,
            now_ms: self.unix_ms(now),
        };
        let current = &self.current;
        self.pending
            .retain(|_, c| check_change(current, c, &judge).is_ok());
        self.cert = Some(cert.clone());
        self.adopted_at = now;
        self.instance = None;
        self.next_pull = now + Duration::from_millis(self.current.params.epoch_ms);
        self.actions
            .push_back(Action::PersistConfig(next.clone(), Some(cert)));
        self.actions
            .push_back(Action::Event(MembershipEvent::Adopted {
                epoch: next.epoch,
                members: next.members.len(),
            }));
        if self.leaving() && next.member(&self.me()).is_none() {
            self.actions
                .push_back(Action::Event(MembershipEvent::Left { epoch: next.epoch }));
        }
        self.ask();
    }
}
