//! Server mode's membership service (`server-mode.md`).
//!
//! Owns: certified configurations and the checks anyone can run on a chain of them
//! ([`Config`], [`ConfigCert`], [`Genesis`], `config.rs`), one-hop replica groups
//! ([`Config::replica_group`]), the validity predicate a committee member checks before it
//! prevotes ([`check_delta`], `delta.rs`), one single-shot Tendermint instance per epoch
//! ([`Tendermint`], `consensus.rs`, model-checked in `model.rs`), and the service that runs it
//! on each server: requests, evictions after f + 1 confirms, sign-once persistence,
//! dissemination and pull ([`Membership`], `membership.rs`).
//!
//! Byzantine quorum storage of self-verifying items on each key's group of 3 f_r + 1
//! ([`Replica`], [`QuorumClient`], `quorum/`) is here too, and [`Server`] (`server.rs`), the one
//! state machine a driver runs: membership, replica and client, with each new configuration
//! handed from the first to the other two.
//!
//! [`OneHop`] (`kbr.rs`) is the KBR API over the configuration, for services.
//!
//! Does not own: sockets, disks or clocks (the driver performs [`Action`]s and
//! [`ReplicaAction`]s).
#![deny(missing_docs)]

mod config;
mod consensus;
mod delta;
mod kbr;
mod membership;
mod message;
#[cfg(test)]
mod model;
mod quorum;
mod server;
mod shared;
#[cfg(test)]
mod tests;

pub use config::{
    confirm_bytes, join_bytes, leave_bytes, verify_chain, vote_bytes, Change, Config, ConfigCert,
    ConfigError, Confirm, Delta, Epoch, Genesis, JoinRequest, LeaveRequest, Member, Params,
    CONFIG_VERSION, FAN_OUT, MAX_MEMBERS, PRECOMMIT,
};
pub use consensus::{
    Ignored, Output, Proposal, Round, Rules, Step, Tendermint, Thresholds, Timeout, Vote, VoteKind,
    MAX_ROUND, ROUNDS_AHEAD,
};
pub use delta::{check_change, check_delta, InvalidDelta, Judge, MAX_LEASE_SKEW_MS};
pub use kbr::{OneHop, OneHopSend};
pub use membership::{
    Action, Membership, MembershipConfig, MembershipError, MembershipEvent, MembershipStats,
    Refused, SignOnce, GOSSIP_EVERY, HISTORY, MAX_PENDING, MAX_VALUES, TIMEOUT_BASE, TIMEOUT_STEP,
};
pub use message::{kind_tag, proposal_bytes, BftMessage, SignedProposal, SignedVote};
pub use quorum::{
    in_range, owned_range, Ack, ClientStats, Item, ItemError, OpId, QuorumClient, QuorumError,
    QuorumEvent, Refusal, Replica, ReplicaAction, ReplicaStats, StoreMessage, MAX_DIGEST,
    MAX_DIGEST_PAGES, MAX_FETCH_TRIES, MAX_OBJECT, OP_TIMEOUT, RETRY_EVERY, SYNC_TIMEOUT,
};
pub use server::{Server, ServerAction, ServerEvent, ServerMessage, ServerStart, ServerSummary};
pub use shared::SharedConfigs;
