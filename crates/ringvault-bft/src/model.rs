//! A `stateright` model of one consensus instance at n = 4, f = 1: three correct processes run
//! the real [`Rules`]; the fourth is Byzantine and has sent every message it could (proposals of
//! a valid value A, a valid value B and an invalid value C, fresh or claiming any earlier valid
//! round, in the round it proposes, round 1; prevotes and precommits for A, B, C and nil in
//! every round). Every message any process sent stays in the
//! network forever, and a process may fire a rule whenever the messages the rule needs have been
//! sent (it may have received any subset of them, in any order), so the search covers every
//! delivery order, loss, duplication and delay. A timeout fires at any moment of its step, even
//! before the rule that schedules it (lines 34, 47) would have: safety must not depend on
//! timing, so the model allows more than timers would.
//!
//! Every execution through round 1 is visited; into round 2 ([`MAX_MODEL_ROUND`]) there are too
//! many for CI, and a breadth-first search covers every execution up to a depth. It checks
//! agreement (no two
//! correct processes decide different values) and validity (no correct process prevotes,
//! precommits or decides the invalid value), and that some execution decides (so the search is
//! not vacuous). With the quorum wrongly set to f + 1 the checker must find a disagreement.

use std::collections::BTreeSet;

use stateright::{Checker, Model, Property};

use crate::consensus::{Output, Round, Rules, Step, Thresholds, Timeout, VoteKind};

/// The values: A and B are valid, C is not.
const A: u8 = 1;
const B: u8 = 2;
const C: u8 = 3;
const VALUES: [u8; 3] = [A, B, C];

/// The last round the search enters.
pub(crate) const MAX_MODEL_ROUND: Round = 2;

const N: usize = 4;
const BYZANTINE: usize = 3;

/// A message some process sent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Msg {
    Proposal {
        from: usize,
        round: Round,
        value: u8,
        valid_round: Option<Round>,
    },
    Vote {
        from: usize,
        round: Round,
        kind: VoteKind,
        value: Option<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct State {
    correct: Vec<Rules<u8>>,
    sent: BTreeSet<Msg>,
}

/// A rule a correct process fires, with the evidence it uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    Proposal {
        node: usize,
        value: u8,
        valid_round: Option<Round>,
    },
    Polka {
        node: usize,
        value: u8,
    },
    NilPolka(usize),
    Commit {
        node: usize,
        round: Round,
        value: u8,
    },
    Skip {
        node: usize,
        round: Round,
    },
    Timeout {
        node: usize,
        timeout: Timeout,
    },
}

pub(crate) struct TendermintModel {
    thresholds: Thresholds,
    max_round: Round,
    /// Round 0's proposer: a correct process, so that the Byzantine one proposes in round 1,
    /// where it can re-propose a value "from round 0" (lines 28-33) as well as equivocate.
    first_proposer: usize,
    byzantine: BTreeSet<Msg>,
}

impl TendermintModel {
    pub(crate) fn new(thresholds: Thresholds, max_round: Round) -> Self {
        let first_proposer = (BYZANTINE + N - 1) % N;
        let mut byzantine = BTreeSet::new();
        for round in 0..=max_round {
            if (first_proposer + round as usize) % N == BYZANTINE {
                for value in VALUES {
                    for valid_round in std::iter::once(None).chain((0..round).map(Some)) {
                        byzantine.insert(Msg::Proposal {
                            from: BYZANTINE,
                            round,
                            value,
                            valid_round,
                        });
                    }
                }
            }
            for kind in [VoteKind::Prevote, VoteKind::Precommit] {
                for value in VALUES.map(Some).into_iter().chain([None]) {
                    byzantine.insert(Msg::Vote {
                        from: BYZANTINE,
                        round,
                        kind,
                        value,
                    });
                }
            }
        }
        TendermintModel {
            thresholds,
            max_round,
            first_proposer,
            byzantine,
        }
    }

    fn valid(value: u8) -> bool {
        value != C
    }

    fn all<'a>(&'a self, state: &'a State) -> impl Iterator<Item = &'a Msg> {
        state.sent.iter().chain(self.byzantine.iter())
    }

    /// Distinct senders of `kind` votes in `round` for `value` (`Some(None)`: nil), or for
    /// anything (`None`).
    fn votes(
        &self,
        state: &State,
        round: Round,
        kind: VoteKind,
        value: Option<Option<u8>>,
    ) -> usize {
        self.all(state)
            .filter_map(|m| match m {
                Msg::Vote {
                    from,
                    round: r,
                    kind: k,
                    value: v,
                } if *r == round && *k == kind && value.is_none_or(|want| want == *v) => {
                    Some(*from)
                }
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .len()
    }

    fn senders(&self, state: &State, round: Round) -> usize {
        self.all(state)
            .filter_map(|m| match m {
                Msg::Proposal { from, round: r, .. } | Msg::Vote { from, round: r, .. }
                    if *r == round =>
                {
                    Some(*from)
                }
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .len()
    }

    fn proposals<'a>(
        &'a self,
        state: &'a State,
        round: Round,
    ) -> impl Iterator<Item = (u8, Option<Round>)> + 'a {
        self.all(state).filter_map(move |m| match m {
            Msg::Proposal {
                round: r,
                value,
                valid_round,
                ..
            } if *r == round => Some((*value, *valid_round)),
            _ => None,
        })
    }
}

impl Model for TendermintModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let mut state = State {
            correct: Vec::new(),
            sent: BTreeSet::new(),
        };
        for node in 0..N - 1 {
            // Correct processes want different values, so that disagreement is possible.
            let candidate = if node % 2 == 0 { A } else { B };
            let mut rules = Rules::new(node, self.thresholds, self.first_proposer, candidate);
            let mut out = Vec::new();
            rules.start(&mut out);
            record(&mut state.sent, node, out);
            state.correct.push(rules);
        }
        vec![state]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let quorum = self.thresholds.quorum();
        for (node, rules) in state.correct.iter().enumerate() {
            if rules.decision().is_some() {
                continue;
            }
            let round = rules.round();
            for r in 0..=self.max_round {
                for (value, _) in self.proposals(state, r) {
                    if self.votes(state, r, VoteKind::Precommit, Some(Some(value))) >= quorum {
                        actions.push(Action::Commit {
                            node,
                            round: r,
                            value,
                        });
                    }
                }
                if r > round && self.senders(state, r) >= self.thresholds.weak() {
                    actions.push(Action::Skip { node, round: r });
                }
            }
            for (value, valid_round) in self.proposals(state, round) {
                if rules.step() == Step::Propose
                    && valid_round.is_none_or(|vr| {
                        self.votes(state, vr, VoteKind::Prevote, Some(Some(value))) >= quorum
                    })
                {
                    actions.push(Action::Proposal {
                        node,
                        value,
                        valid_round,
                    });
                }
                if self.votes(state, round, VoteKind::Prevote, Some(Some(value))) >= quorum {
                    actions.push(Action::Polka { node, value });
                }
            }
            if self.votes(state, round, VoteKind::Prevote, Some(None)) >= quorum {
                actions.push(Action::NilPolka(node));
            }
            // Timeouts fire at any moment of their step (the rules that only schedule them,
            // lines 34 and 47, need no action of their own).
            for step in [Step::Propose, Step::Prevote, Step::Precommit] {
                if step == Step::Precommit || step == rules.step() {
                    let timeout = Timeout { round, step };
                    actions.push(Action::Timeout { node, timeout });
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        let mut out = Vec::new();
        let node = match action {
            Action::Proposal { node, .. }
            | Action::Polka { node, .. }
            | Action::NilPolka(node)
            | Action::Commit { node, .. }
            | Action::Skip { node, .. }
            | Action::Timeout { node, .. } => node,
        };
        let rules = &mut state.correct[node];
        let fired = match action {
            Action::Proposal {
                value,
                valid_round: None,
                ..
            } => rules.upon_proposal(&value, Self::valid(value), &mut out),
            Action::Proposal {
                value,
                valid_round: Some(vr),
                ..
            } => rules.upon_proposal_with_polka(&value, vr, Self::valid(value), &mut out),
            Action::Polka { value, .. } => rules.upon_polka(&value, Self::valid(value), &mut out),
            Action::NilPolka(_) => rules.upon_nil_polka(&mut out),
            Action::Commit { round, value, .. } => {
                rules.upon_commit(round, &value, Self::valid(value), &mut out)
            }
            Action::Skip { round, .. } => rules.upon_round_skip(round, &mut out),
            Action::Timeout { timeout, .. } => rules.on_timeout(timeout, &mut out),
        };
        if !fired {
            return None;
        }
        record(&mut state.sent, node, out);
        Some(state)
    }

    fn within_boundary(&self, state: &State) -> bool {
        state.correct.iter().all(|r| r.round() <= self.max_round)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("agreement", |_, state: &State| {
                let decided: BTreeSet<u8> = state
                    .correct
                    .iter()
                    .filter_map(|r| r.decision().map(|(_, v)| *v))
                    .collect();
                decided.len() <= 1
            }),
            Property::always("validity", |_, state: &State| {
                let voted_invalid = state
                    .sent
                    .iter()
                    .any(|m| matches!(m, Msg::Vote { value: Some(C), .. }));
                let decided_invalid = state
                    .correct
                    .iter()
                    .any(|r| r.decision().is_some_and(|(_, v)| *v == C));
                !voted_invalid && !decided_invalid
            }),
            Property::sometimes("decides", |_, state: &State| {
                state.correct.iter().any(|r| r.decision().is_some())
            }),
        ]
    }
}

/// Puts what a correct process signed into the network.
fn record(sent: &mut BTreeSet<Msg>, from: usize, out: Vec<Output<u8>>) {
    for output in out {
        match output {
            Output::Propose(p) => {
                sent.insert(Msg::Proposal {
                    from,
                    round: p.round,
                    value: p.value,
                    valid_round: p.valid_round,
                });
            }
            Output::Vote(v) => {
                sent.insert(Msg::Vote {
                    from,
                    round: v.round,
                    kind: v.kind,
                    value: v.value,
                });
            }
            Output::Schedule(_) | Output::Decide { .. } => {}
        }
    }
}

/// Runs the model with the right thresholds to round `max_round`, stopping after `states`
/// states if given.
fn check(max_round: Round, states: Option<usize>) -> impl Checker<TendermintModel> {
    let builder = TendermintModel::new(Thresholds::bft(N), max_round).checker();
    let builder = match states {
        Some(states) => builder.target_state_count(states),
        None => builder,
    };
    let checker = builder.threads(2).spawn_bfs().join();
    eprintln!(
        "tendermint model, n = 4, f = 1, rounds 0..={max_round}: {} states, {} unique, depth {}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth()
    );
    checker
}

#[test]
fn every_execution_through_round_1_agrees_and_never_votes_for_an_invalid_value() {
    let checker = check(1, None);
    // Some executions decide, so agreement is not checked on an empty set of decisions.
    checker.assert_properties();
    assert!(
        checker.unique_state_count() > 100_000,
        "the search looks too small"
    );
}

#[test]
fn executions_into_round_2_agree_and_never_vote_for_an_invalid_value() {
    // Rounds 0 to 2 have too many states to visit all in CI; breadth first, the first 10
    // million cover every execution up to the depth printed.
    let checker = check(MAX_MODEL_ROUND, Some(10_000_000));
    assert!(checker.discovery("agreement").is_none());
    assert!(checker.discovery("validity").is_none());
    assert!(
        checker.max_depth() >= 12,
        "the bounded search went too shallow"
    );
}

#[test]
fn a_quorum_of_f_plus_1_lets_the_checker_find_a_disagreement() {
    let thresholds = Thresholds::with_quorum(N, 2);
    let checker = TendermintModel::new(thresholds, MAX_MODEL_ROUND)
        .checker()
        .finish_when(stateright::HasDiscoveries::AnyFailures)
        .threads(2)
        .spawn_bfs()
        .join();
    let path = checker.discovery("agreement");
    assert!(
        path.is_some(),
        "a quorum of f + 1 must allow two correct processes to decide differently"
    );
    eprintln!(
        "counterexample with quorum f + 1 ({} steps)",
        path.map_or(0, |p| p.into_actions().len())
    );
}
