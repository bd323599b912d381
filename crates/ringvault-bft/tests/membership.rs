//! The membership service on a simulated network of servers (seeded, simulated time): epochs
//! advance, a server joins, one leaves, a crashed one is evicted after f + 1 confirms, a
//! committee member that proposes two different deltas (equivocates) or invalid ones cannot
//! make two configurations certified for one epoch, and a member restarted from its sign-once
//! record never signs two values for one round and step. The checkers (one certified
//! configuration per epoch; no correct member signs twice) are shown to catch the Byzantine
//! member's own double signing (negative control).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{cert, Flight, Next};
use std::sync::Arc;

use ringvault_bft::{
    proposal_bytes, Action, BftMessage, Change, Config, Delta, Epoch, Genesis, Member, Membership,
    MembershipConfig, Params, SignOnce, SignedProposal, SignedVote, VoteKind,
};
use ringvault_types::{Duration, Id, Identity, RevocationList, Time};

const UNIX_MS: u64 = 1_800_000_000_000;
const LATENCY: Duration = Duration::from_millis(5);

fn identity(i: u64) -> Identity {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&(i + 1).to_le_bytes());
    Identity::from_secret_bytes(secret)
}

/// What a server persisted: its sign-once record and its newest configuration.
type Disk = (
    Option<SignOnce>,
    Option<(Arc<Config>, Option<ringvault_bft::ConfigCert>)>,
);

/// What a Byzantine committee member does to its own proposals.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Sends a second, different proposal for the same round to half the committee.
    Equivocate,
    /// Replaces its proposals by an invalid delta (a join with a forged certificate).
    Invalid,
}

struct Net {
    ca: Identity,
    ids: Vec<Identity>,
    servers: BTreeMap<Id, Membership>,
    now: Time,
    wire: Flight<BftMessage>,
    crashed: BTreeSet<Id>,
    shared: ringvault_bft::SharedConfigs,
    byzantine: BTreeMap<Id, Fault>,
    /// Relays that withhold (true) or forge (false) the configurations they pass on.
    relays: BTreeMap<Id, bool>,
    /// Interior nodes of the first dissemination tree withhold the configuration they would
    /// pass on (the trees change every epoch, so who withholds does too).
    withhold_tree0: bool,
    /// Servers cut off from everyone.
    isolated: BTreeSet<Id>,
    /// Decided messages refused by correct servers (forgeries caught).
    refused_configs: usize,
    /// When each server adopted each epoch's configuration.
    adoption: BTreeMap<Epoch, Vec<Time>>,
    /// Bytes of every message sent.
    bytes: u64,
    /// Sign-once records and configurations persisted, per server (its "disk").
    disk: BTreeMap<Id, Disk>,
    /// Every signed vote sent: (voter, epoch, round, kind) -> values.
    votes: BTreeMap<(Id, Epoch, u32, VoteKind), BTreeSet<Option<Id>>>,
    /// Every configuration a server adopted: epoch -> hashes.
    adopted: BTreeMap<Epoch, BTreeSet<Id>>,
    genesis: Arc<Config>,
}

impl Net {
    fn new(servers: usize, params: Params) -> Self {
        let ca = identity(1_000);
        let ids: Vec<Identity> = (0..servers as u64 + 2).map(identity).collect();
        let members = ids[..servers]
            .iter()
            .enumerate()
            .map(|(i, who)| Member {
                cert: cert(&ca, who, i as u64),
                admitted: 0,
            })
            .collect();
        let genesis = Genesis::sign(&ca, Config::genesis(members, params, UNIX_MS + 3_600_000));
        let config = Arc::new(genesis.verify(&ca.public_key()).unwrap().clone());
        let mut net = Net {
            ca,
            ids,
            servers: BTreeMap::new(),
            now: Time::ZERO,
            wire: Flight::default(),
            crashed: BTreeSet::new(),
            shared: ringvault_bft::SharedConfigs::new(),
            byzantine: BTreeMap::new(),
            relays: BTreeMap::new(),
            withhold_tree0: false,
            isolated: BTreeSet::new(),
            refused_configs: 0,
            adoption: BTreeMap::new(),
            bytes: 0,
            disk: BTreeMap::new(),
            votes: BTreeMap::new(),
            adopted: BTreeMap::new(),
            genesis: config.clone(),
        };
        for i in 0..servers {
            net.start(i, None, false);
        }
        net
    }

    fn settings(&self) -> MembershipConfig {
        MembershipConfig {
            ca: self.ca.public_key(),
            revoked: RevocationList::empty(),
            unix_ms_at_zero: UNIX_MS,
            // Every server of the test network shares the configurations it derives, so the
            // tests check the shared path against the same forgeries and withholdings.
            shared: Some(self.shared.clone()),
        }
    }

    /// Starts (or restarts) server `i` from its disk, or from genesis.
    fn start(&mut self, i: usize, from: Option<(Option<SignOnce>, Arc<Config>)>, wiped: bool) {
        let who = dup(&self.ids[i]);
        let (sign_once, config) = from.unwrap_or((None, self.genesis.clone()));
        let id = who.id();
        let m = Membership::new(
            who,
            self.settings(),
            config,
            None,
            sign_once,
            wiped,
            self.now,
        );
        self.crashed.remove(&id);
        self.servers.insert(id, m);
        self.flush(id);
    }

    fn index(&self, id: Id) -> usize {
        self.ids.iter().position(|x| x.id() == id).unwrap()
    }

    fn flush(&mut self, id: Id) {
        let Some(m) = self.servers.get_mut(&id) else {
            return;
        };
        let mut actions = Vec::new();
        while let Some(a) = m.poll_action() {
            actions.push(a);
        }
        for action in actions {
            match action {
                Action::Send { to, msg } => self.send(id, to, msg),
                Action::PersistSignOnce(s) => self.disk.entry(id).or_default().0 = Some(s),
                Action::PersistConfig(c, cert) => {
                    self.adoption.entry(c.epoch).or_default().push(self.now);
                    self.adopted.entry(c.epoch).or_default().insert(c.hash());
                    self.disk.entry(id).or_default().1 = Some((c, cert));
                }
                Action::Probe(suspect) => {
                    if self.crashed.contains(&suspect) {
                        let _ = self.servers.get_mut(&id).unwrap().confirm(suspect);
                        self.flush(id);
                    }
                }
                Action::Event(_) => {}
            }
        }
    }

    fn record(&mut self, v: &SignedVote) {
        self.votes
            .entry((v.voter, v.epoch, v.round, v.kind))
            .or_default()
            .insert(v.value);
    }

    fn send(&mut self, from: Id, to: Id, msg: BftMessage) {
        if let BftMessage::Vote(v) = &msg {
            self.record(v);
        }
        self.bytes += msg.encode().len() as u64;
        let mut msg = msg;
        if let (true, BftMessage::Decided { delta, .. }) = (self.withhold_tree0, &msg) {
            // The members do not change in this test: the trees of epoch e are genesis's
            // member list under epoch e.
            let mut config = Config::clone(&self.genesis);
            config.epoch = delta.epoch;
            let interior = config.tree_interior(0, 2);
            let committee = &self.genesis.committee;
            if interior.contains(&from) && !committee.contains(&from) {
                return;
            }
        }
        if let (Some(&withhold), BftMessage::Decided { delta, cert }) =
            (self.relays.get(&from), &msg)
        {
            if withhold {
                return;
            }
            let mut delta = (**delta).clone();
            delta.valid_until += 1; // no longer the certified configuration
            msg = BftMessage::Decided {
                delta: Arc::new(delta),
                cert: cert.clone(),
            };
        }
        if let (Some(fault), BftMessage::Propose(p)) = (self.byzantine.get(&from).copied(), &msg) {
            let who = dup(&self.ids[self.index(from)]);
            let mut delta = p.delta.clone();
            match fault {
                Fault::Equivocate if to.as_bytes()[0].is_multiple_of(2) => {
                    delta.valid_until += 1; // a different, still valid, delta
                }
                Fault::Equivocate => {}
                Fault::Invalid => {
                    let stranger = identity(9_999);
                    let forged = cert(&stranger, &stranger, 99); // not signed by the CA
                    delta.changes = vec![Change::Join(ringvault_bft::JoinRequest::new(
                        &stranger, forged,
                    ))];
                }
            }
            let signature = who.sign(&proposal_bytes(
                delta.epoch,
                p.round,
                delta.hash(),
                p.valid_round,
            ));
            msg = BftMessage::Propose(Box::new(SignedProposal {
                delta,
                signature,
                ..(**p).clone()
            }));
        }
        self.wire.post(self.now + LATENCY, from, to, msg);
    }

    /// Runs the network until `until`.
    fn run(&mut self, until: Time) {
        loop {
            let timers: Vec<(Id, Time)> = self
                .servers
                .iter()
                .filter(|(id, _)| !self.crashed.contains(id))
                .filter_map(|(id, m)| m.next_deadline().map(|t| (*id, t)))
                .collect();
            match self.wire.next(&mut self.now, until, timers.into_iter()) {
                None => break,
                Some(Next::Deliver { from, to, msg }) => {
                    let cut = |id: &Id| self.crashed.contains(id) || self.isolated.contains(id);
                    if cut(&to) || cut(&from) {
                        continue;
                    }
                    let decided = matches!(msg, BftMessage::Decided { .. });
                    if let Some(m) = self.servers.get_mut(&to) {
                        let taken = m.handle_message(self.now, from, msg);
                        if decided && matches!(taken, Err(ringvault_bft::Refused::Config(_))) {
                            self.refused_configs += 1;
                        }
                        self.flush(to);
                    }
                }
                Some(Next::Timer(id)) => {
                    self.servers.get_mut(&id).unwrap().handle_timeout(self.now);
                    self.flush(id);
                }
            }
        }
        self.now = until;
    }

    fn epochs(&self) -> BTreeMap<Id, Epoch> {
        self.servers
            .iter()
            .filter(|(id, _)| !self.crashed.contains(id))
            .map(|(id, m)| (*id, m.current().epoch))
            .collect()
    }

    /// Epochs with two different configurations adopted.
    fn forks(&self) -> Vec<Epoch> {
        self.adopted
            .iter()
            .filter(|(_, h)| h.len() > 1)
            .map(|(e, _)| *e)
            .collect()
    }

    /// Voters that signed two values for one (epoch, round, kind).
    fn double_signers(&self) -> BTreeSet<Id> {
        self.votes
            .iter()
            .filter(|(_, values)| values.len() > 1)
            .map(|((voter, ..), _)| *voter)
            .collect()
    }
}

fn params() -> Params {
    Params {
        epoch_ms: 2_000,
        ..Params::DEFAULT
    }
}

fn secs(s: u64) -> Time {
    Time::from_micros(s * 1_000_000)
}

#[test]
fn epochs_advance_and_servers_join_leave_and_are_evicted() {
    let mut net = Net::new(7, params());
    net.run(secs(10));
    let epochs = net.epochs();
    assert!(
        epochs.values().all(|e| *e >= 3),
        "epochs did not advance: {epochs:?}"
    );

    // A new server joins (it knows genesis and pulls the rest).
    let newcomer = 7;
    net.start(newcomer, None, false);
    let newcomer_id = net.ids[newcomer].id();
    let c = cert(&net.ca, &net.ids[newcomer], 7);
    net.run(net.now + Duration::from_millis(100));
    net.servers.get_mut(&newcomer_id).unwrap().join(c);
    net.flush(newcomer_id);
    net.run(net.now + Duration::from_secs(10));
    for (id, m) in &net.servers {
        assert!(
            m.current().member(&newcomer_id).is_some(),
            "{id:?} does not list the newcomer at epoch {}",
            m.current().epoch
        );
    }

    // A member that is not on the committee leaves.
    let leaver = net
        .servers
        .values()
        .next()
        .unwrap()
        .current()
        .members
        .iter()
        .map(|m| m.id())
        .find(|id| net.servers[id].current().seat(id).is_none() && *id != newcomer_id)
        .unwrap();
    net.servers.get_mut(&leaver).unwrap().leave().unwrap();
    net.flush(leaver);
    net.run(net.now + Duration::from_secs(10));
    let any = net.servers[&newcomer_id].current().clone();
    assert!(
        any.member(&leaver).is_none(),
        "the leaver is still a member"
    );

    // A member crashes; everyone's failure detector suspects it; the committee evicts it.
    let victim = any
        .members
        .iter()
        .map(|m| m.id())
        .find(|id| any.seat(id).is_none() && *id != newcomer_id && *id != leaver)
        .unwrap();
    net.crashed.insert(victim);
    let live: Vec<Id> = net.epochs().keys().copied().collect();
    for id in live {
        net.servers.get_mut(&id).unwrap().suspect(victim);
        net.flush(id);
    }
    net.run(net.now + Duration::from_secs(10));
    let now_config = net.servers[&newcomer_id].current().clone();
    assert!(
        now_config.member(&victim).is_none(),
        "the crashed member was not evicted"
    );
    assert!(
        net.servers
            .values()
            .map(|m| m.stats().evictions)
            .sum::<u64>()
            > 0,
        "no eviction counted"
    );

    // The evicted server comes back (as a daemon does: asking to be a member) and is admitted
    // again; the leaver, which asked to leave, stays out.
    let v = net.index(victim);
    net.start(v, None, false);
    let c = cert(&net.ca, &net.ids[v], 8);
    net.servers.get_mut(&victim).unwrap().join(c);
    net.flush(victim);
    net.run(net.now + Duration::from_secs(10));
    let back = net.servers[&newcomer_id].current().clone();
    assert!(
        back.member(&victim).is_some(),
        "the evicted server was not admitted again"
    );
    assert!(back.member(&leaver).is_none(), "the leaver came back");
    assert!(
        net.forks().is_empty(),
        "two configurations for epochs {:?}",
        net.forks()
    );
    assert!(net.double_signers().is_empty());
}

#[test]
fn an_equivocating_or_invalid_proposer_cannot_fork_the_configuration() {
    for fault in [Fault::Equivocate, Fault::Invalid] {
        let mut net = Net::new(7, params());
        let committee = net.genesis.committee.clone();
        let byzantine = committee[1];
        net.byzantine.insert(byzantine, fault);
        net.run(secs(40));
        let epochs = net.epochs();
        assert!(
            epochs.values().all(|e| *e >= 8),
            "epochs stalled with a Byzantine proposer: {epochs:?}"
        );
        assert!(
            net.forks().is_empty(),
            "two configurations for epochs {:?}",
            net.forks()
        );
        let invalid: u64 = net
            .servers
            .values()
            .map(|m| m.stats().invalid_proposals)
            .sum();
        if fault == Fault::Invalid {
            assert!(invalid > 0, "no invalid proposal was seen");
            // Every adopted configuration holds only the genesis members.
            for m in net.servers.values() {
                assert_eq!(m.current().members.len(), 7);
            }
        }
    }
}

#[test]
fn a_member_restarted_mid_round_never_signs_twice_and_the_checker_catches_one_that_does() {
    let mut net = Net::new(7, params());
    net.run(Time::from_micros(2_008_000)); // after its prevote, before its precommit
    let member = net.genesis.committee[0];
    // Crash it, then restart it from what it persisted.
    net.crashed.insert(member);
    net.run(net.now + Duration::from_millis(300));
    let (sign_once, config) = net.disk.get(&member).cloned().unwrap_or_default();
    let config = config.map(|(c, _)| c).unwrap_or(net.genesis.clone());
    assert!(
        sign_once.is_some(),
        "it had signed nothing before the crash"
    );
    let i = net.index(member);
    net.start(i, Some((sign_once, config)), false);
    // And another member with a wiped disk.
    let wiped = net.genesis.committee[2];
    net.crashed.insert(wiped);
    net.run(net.now + Duration::from_millis(300));
    let j = net.index(wiped);
    net.start(j, None, true);
    // Once it has caught up, it still refrains from the next instances.
    net.run(net.now + Duration::from_secs(3));
    let caught_up = net.servers[&wiped].current().epoch;
    assert!(caught_up >= 1, "the wiped member did not catch up");
    assert!(
        net.servers[&wiped].abstaining(caught_up + 1),
        "the wiped member would sign in the very next instance"
    );
    net.run(secs(30));
    assert!(
        net.double_signers().is_empty(),
        "{:?} signed twice",
        net.double_signers()
    );
    assert!(net.forks().is_empty());
    let epochs = net.epochs();
    assert!(
        epochs.values().all(|e| *e >= 5),
        "epochs stalled: {epochs:?}"
    );

    // Negative control: a member that signs a second prevote for a round is caught.
    let cheat = dup(&net.ids[net.index(member)]);
    let mut v = SignedVote {
        epoch: 1,
        round: 0,
        kind: VoteKind::Prevote,
        value: Some(Id::hash(b"something else")),
        voter: cheat.id(),
        signature: ringvault_types::Signature([0; 64]),
    };
    v.signature = cheat.sign(&v.bytes());
    net.record(&v);
    assert_eq!(net.double_signers(), BTreeSet::from([cheat.id()]));
}

#[test]
fn forged_configurations_are_refused() {
    let mut net = Net::new(4, params());
    net.run(secs(3));
    let (a, b) = (net.ids[0].id(), net.ids[1].id());
    let current = net.servers[&a].current().clone();
    let delta = Delta {
        epoch: current.epoch + 1,
        prev: current.hash(),
        changes: Vec::new(),
        valid_until: UNIX_MS,
    };
    // Signed by one member only: short of a quorum.
    let next = current.apply(&delta);
    let signer = dup(&net.ids[0]);
    let sig = signer.sign(&ringvault_bft::vote_bytes(
        next.epoch,
        0,
        ringvault_bft::PRECOMMIT,
        Some(next.hash()),
    ));
    let cert = ringvault_bft::ConfigCert {
        epoch: next.epoch,
        round: 0,
        config_hash: next.hash(),
        sigs: vec![(signer.id(), sig); 3],
    };
    let before = net.servers[&a].current().epoch;
    let refused = net.servers.get_mut(&a).unwrap().handle_message(
        net.now,
        b,
        BftMessage::Decided {
            delta: Arc::new(delta),
            cert,
        },
    );
    assert!(
        refused.is_err(),
        "a certificate with one signer repeated was taken"
    );
    assert_eq!(net.servers[&a].current().epoch, before);
    assert!(BftMessage::decode(&[0xff; 40]).is_err());
}

fn dup(identity: &Identity) -> Identity {
    Identity::from_secret_bytes(identity.secret_bytes())
}

#[test]
fn configurations_spread_down_trees_past_withholding_and_forging_relays() {
    let mut net = Net::new(64, params());
    let genesis = net.genesis.clone();
    // Every interior node of each epoch's first tree withholds (committee members aside), and
    // a few others forge.
    net.withhold_tree0 = true;
    let committee: BTreeSet<Id> = genesis.committee.iter().copied().collect();
    let forgers: Vec<Id> = genesis
        .members
        .iter()
        .map(|m| m.id())
        .filter(|id| !committee.contains(id) && !net.relays.contains_key(id))
        .take(3)
        .collect();
    for id in &forgers {
        net.relays.insert(*id, false);
    }
    // One server is cut off, after it adopted epoch 1, for longer than a lease.
    let loner = genesis
        .members
        .iter()
        .map(|m| m.id())
        .find(|id| !committee.contains(id) && !net.relays.contains_key(id))
        .unwrap();
    net.run(secs(3));
    assert!(net.servers[&loner].current().epoch >= 1);
    net.isolated.insert(loner);
    net.run(secs(12));
    let newest = net.epochs().values().copied().max().unwrap();
    assert!(newest >= 4, "epochs did not advance: {newest}");
    let lagging: Vec<_> = net
        .epochs()
        .into_iter()
        .filter(|(id, e)| *id != loner && *e + 1 < newest)
        .collect();
    assert!(lagging.is_empty(), "servers left behind: {lagging:?}");
    assert!(
        net.refused_configs > 0,
        "no forged configuration was refused"
    );
    assert!(net.forks().is_empty());
    // The loner's lease ran out: it must not serve.
    assert!(
        !net.servers[&loner].serving(net.now),
        "an isolated server still serves"
    );
    assert!(net.servers[&loner].current().epoch < newest);
    // Healed, it catches up by pulling and serves again.
    net.isolated.clear();
    net.run(net.now + Duration::from_secs(8));
    let newest = net.epochs().values().copied().max().unwrap();
    assert!(
        net.servers[&loner].current().epoch + 1 >= newest,
        "the loner did not catch up"
    );
    assert!(net.servers[&loner].serving(net.now));
}

#[test]
fn a_thousand_servers_adopt_each_configuration_within_a_few_hops() {
    // S15 at small scale: 1,000 servers, 5 ms links, 2 s epochs.
    let servers = 1_000;
    let mut net = Net::new(servers, params());
    let span = secs(9);
    net.run(span);
    let mut spreads = Vec::new();
    for (epoch, times) in net.adoption.iter().filter(|(e, _)| **e > 0) {
        let mut times = times.clone();
        times.sort();
        if times.len() < servers {
            // The last epoch may still be spreading when the run ends.
            assert_eq!(
                *epoch,
                *net.adoption.keys().max().unwrap(),
                "epoch {epoch} stopped"
            );
            continue;
        }
        let first = times[0];
        let p999 = times[times.len() * 999 / 1000 - 1];
        spreads.push(p999.saturating_since(first).as_millis_f64());
    }
    let per_server_per_s = net.bytes as f64 / servers as f64 / span.as_micros() as f64 * 1e6;
    eprintln!(
        "1,000 servers: {} configurations spread to 99.9% in {:?} ms after the first adoption; \
         {per_server_per_s:.0} B/s per server (all membership traffic)",
        spreads.len(),
        spreads
    );
    assert!(spreads.len() >= 3, "too few epochs: {}", spreads.len());
    // Two levels of trees below the committee's sends: a few 5 ms hops.
    assert!(
        spreads.iter().all(|ms| *ms <= 50.0),
        "slow spread: {spreads:?}"
    );
    assert!(
        per_server_per_s < 2_000.0,
        "{per_server_per_s:.0} B/s per server"
    );
}
