//! Server mode's membership service.
//!
//! Owns: one single-shot Tendermint instance per epoch among the committee (`consensus.rs`,
//! model-checked in `model.rs`).
#![deny(missing_docs)]

mod consensus;
#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

pub use consensus::{
    Ignored, Output, Proposal, Round, Rules, Step, Tendermint, Thresholds, Timeout, Vote, VoteKind,
    MAX_ROUND, ROUNDS_AHEAD,
};
