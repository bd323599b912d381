//! The whole [`Tendermint`] process (its log included, which the model replaces) under random
//! schedules: three correct processes and a Byzantine one that sends random proposals and votes
//! to each process separately. Messages are delayed, reordered, duplicated and dropped for a
//! while; then every process relays all it sent and received (and from then on relays what it
//! receives, once) and delivery is reliable; timeouts fire in random order. Every run must agree, and decide once
//! delivery is reliable. With a quorum of f + 1 some run must disagree (negative control).

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::consensus::{Output, Proposal, Round, Tendermint, Thresholds, Timeout, Vote, VoteKind};

const N: usize = 4;
const BYZANTINE: usize = 3;

#[derive(Clone, Debug)]
enum Msg {
    Proposal(Proposal<u8>),
    Vote(Vote<u8>),
    /// A decision with its certificate (which this harness does not model: only correct
    /// processes send it).
    Decided(Round, u8),
    /// A certificate of a quorum of prevotes, which a proposer attaches when it proposes its
    /// valid value again (only correct processes send it here).
    Polka(Round, u8),
}

struct Run {
    nodes: Vec<Tendermint<u8>>,
    /// (to, from, message) in flight.
    flight: Vec<(usize, usize, Msg)>,
    timers: Vec<(usize, Timeout)>,
    decisions: BTreeMap<usize, u8>,
    /// Everything the correct processes sent or received (signed by its sender), which they
    /// relay once the network heals, as the membership service's gossip does: Tendermint's
    /// liveness needs every message one correct process received to reach the others.
    seen: Vec<(usize, Msg)>,
    /// After the heal, what has been relayed already (each message once).
    relayed: std::collections::BTreeSet<(usize, String)>,
    healed: bool,
    /// Every precommit signed, by anyone: (round, value) -> signers. Two values with a quorum
    /// each would be two valid certificates, whatever the processes decided.
    precommits: BTreeMap<(Round, u8), std::collections::BTreeSet<usize>>,
}

impl Run {
    fn drain(&mut self, node: usize) {
        while let Some(out) = self.nodes[node].poll_output() {
            match out {
                Output::Propose(p) => {
                    if let Some(vr) = p.valid_round {
                        self.broadcast(node, Msg::Polka(vr, p.value));
                    }
                    self.broadcast(node, Msg::Proposal(p));
                }
                Output::Vote(v) => self.broadcast(node, Msg::Vote(v)),
                Output::Schedule(t) => self.timers.push((node, t)),
                Output::Decide { round, value } => {
                    self.broadcast(node, Msg::Decided(round, value));
                    assert!(
                        self.decisions.insert(node, value).is_none(),
                        "process {node} decided twice"
                    );
                }
            }
        }
    }

    fn broadcast(&mut self, from: usize, msg: Msg) {
        self.sign(from, &msg);
        self.seen.push((from, msg.clone()));
        for to in 0..N - 1 {
            if to != from {
                self.flight.push((to, from, msg.clone()));
            }
        }
    }

    fn sign(&mut self, from: usize, msg: &Msg) {
        if let Msg::Vote(Vote {
            round,
            kind: VoteKind::Precommit,
            value: Some(v),
        }) = msg
        {
            self.precommits
                .entry((*round, *v))
                .or_default()
                .insert(from);
        }
    }

    /// The values that have a certificate (a quorum of precommits in some round).
    fn certified(&self, quorum: usize) -> std::collections::BTreeSet<u8> {
        self.precommits
            .iter()
            .filter(|(_, by)| by.len() >= quorum)
            .map(|((_, v), _)| *v)
            .collect()
    }

    fn deliver(&mut self, to: usize, from: usize, msg: Msg) {
        if !self.healed {
            self.seen.push((from, msg.clone()));
        } else if self.relayed.insert((from, format!("{msg:?}"))) {
            for other in (0..N - 1).filter(|&o| o != from && o != to) {
                self.flight.push((other, from, msg.clone()));
            }
        }
        let node = &mut self.nodes[to];
        let _ = match msg {
            Msg::Proposal(p) => {
                let valid = p.value != 3;
                node.handle_proposal(from, p, valid)
            }
            Msg::Vote(v) => node.handle_vote(from, v),
            Msg::Polka(round, value) => node.handle_polka(round, value),
            Msg::Decided(round, value) => {
                node.handle_commit(round, value);
                Ok(())
            }
        };
        self.drain(to);
    }
}

fn byzantine_message(rng: &mut ChaCha8Rng, max_round: Round) -> Msg {
    let round = rng.gen_range(0..=max_round);
    let value = rng.gen_range(1..=3u8);
    match rng.gen_range(0..3) {
        0 => Msg::Proposal(Proposal {
            round,
            value,
            valid_round: None,
        }),
        kind => Msg::Vote(Vote {
            round,
            kind: if kind == 1 {
                VoteKind::Prevote
            } else {
                VoteKind::Precommit
            },
            value: rng.gen_bool(0.8).then_some(value),
        }),
    }
}

/// One run; returns the correct processes' decisions and the values that got a certificate.
fn run(seed: u64, thresholds: Thresholds) -> (BTreeMap<usize, u8>, std::collections::BTreeSet<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let nodes = (0..N - 1)
        .map(|i| Tendermint::new(i, thresholds, BYZANTINE, if i % 2 == 0 { 1 } else { 2 }))
        .collect();
    let mut run = Run {
        nodes,
        flight: Vec::new(),
        timers: Vec::new(),
        decisions: BTreeMap::new(),
        seen: Vec::new(),
        relayed: Default::default(),
        healed: false,
        precommits: BTreeMap::new(),
    };
    for i in 0..N - 1 {
        run.nodes[i].start();
        run.drain(i);
    }
    // Asynchrony, then reliable delivery with timeouts only when nothing is in flight.
    let mut stormy = true;
    for step in 0..4_000 {
        let idle = run.flight.is_empty() && run.timers.is_empty();
        if stormy && (step == 1_500 || idle) {
            stormy = false;
            run.healed = true;
            for (from, msg) in std::mem::take(&mut run.seen) {
                if run.relayed.insert((from, format!("{msg:?}"))) {
                    for to in (0..N - 1).filter(|&to| to != from) {
                        run.flight.push((to, from, msg.clone()));
                    }
                }
            }
        }
        if stormy && rng.gen_bool(0.3) {
            let to = rng.gen_range(0..N - 1);
            let msg = byzantine_message(&mut rng, 4);
            run.sign(BYZANTINE, &msg);
            run.deliver(to, BYZANTINE, msg);
            continue;
        }
        if !run.flight.is_empty() && (!stormy || run.timers.is_empty() || rng.gen_bool(0.7)) {
            let i = rng.gen_range(0..run.flight.len());
            let (to, from, msg) = run.flight.swap_remove(i);
            if stormy && rng.gen_bool(0.1) {
                continue; // lost
            }
            if stormy && rng.gen_bool(0.1) {
                run.flight.push((to, from, msg.clone())); // duplicated
            }
            run.deliver(to, from, msg);
        } else if !run.timers.is_empty() {
            let i = rng.gen_range(0..run.timers.len());
            let (node, timeout) = run.timers.swap_remove(i);
            run.nodes[node].handle_timeout(timeout);
            run.drain(node);
        } else {
            break;
        }
        if run.decisions.len() == N - 1 {
            break;
        }
    }
    let certified = run.certified(thresholds.quorum());
    (run.decisions, certified)
}

#[test]
fn random_schedules_with_a_byzantine_process_agree_and_decide() {
    for seed in 0..300 {
        let (decisions, certified) = run(seed, Thresholds::bft(N));
        let values: std::collections::BTreeSet<u8> = decisions.values().copied().collect();
        assert!(values.len() <= 1, "seed {seed}: disagreement {decisions:?}");
        // Decisions spread as certificates; two certified values would be a violation even if
        // every process had adopted the first.
        assert!(
            certified.len() <= 1,
            "seed {seed}: certificates for {certified:?}"
        );
        assert!(
            !values.contains(&3),
            "seed {seed}: decided an invalid value"
        );
        assert_eq!(
            decisions.len(),
            N - 1,
            "seed {seed}: not every process decided"
        );
    }
}

#[test]
fn random_schedules_with_a_quorum_of_f_plus_1_disagree_sometimes() {
    let disagreements = (0..300)
        .filter(|&seed| {
            let (decisions, certified) = run(seed, Thresholds::with_quorum(N, 2));
            let decided: std::collections::BTreeSet<_> = decisions.values().collect();
            decided.len() > 1 || certified.len() > 1
        })
        .count();
    assert!(disagreements > 0, "the checker never caught a disagreement");
}

#[test]
fn a_restored_process_does_not_vote_again_in_a_step_it_voted_in() {
    let mut p = Tendermint::new(0, Thresholds::bft(N), BYZANTINE, 1u8);
    p.start();
    while p.poll_output().is_some() {}
    p.handle_proposal(
        BYZANTINE,
        Proposal {
            round: 0,
            value: 2,
            valid_round: None,
        },
        true,
    )
    .unwrap();
    let voted: Vec<_> = std::iter::from_fn(|| p.poll_output()).collect();
    assert!(voted.iter().any(|o| matches!(
        o,
        Output::Vote(Vote {
            kind: VoteKind::Prevote,
            value: Some(2),
            ..
        })
    )));
    // Crash and restore from the persisted rules; the same round's other proposal, or the
    // propose timeout, must not make it prevote again.
    let mut q = Tendermint::restore(p.rules().clone());
    while q.poll_output().is_some() {}
    let _ = q.handle_proposal(
        BYZANTINE,
        Proposal {
            round: 0,
            value: 1,
            valid_round: None,
        },
        true,
    );
    q.handle_timeout(Timeout {
        round: 0,
        step: crate::consensus::Step::Propose,
    });
    let again: Vec<_> = std::iter::from_fn(|| q.poll_output()).collect();
    assert!(
        !again.iter().any(|o| matches!(
            o,
            Output::Vote(Vote {
                kind: VoteKind::Prevote,
                ..
            })
        )),
        "prevoted twice in round 0: {again:?}"
    );
}
