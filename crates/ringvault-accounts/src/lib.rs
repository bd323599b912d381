//! Storage quotas: each user's balance kept as a ledger that the user's account managers (the
//! m nodes closest to H("account", user key)) agree on and sign by majority, and the approval
//! a storage node checks before it stores an object.
//!
//! Owns: the ledger and its Paxos-style agreement ([`Account`], [`Entry`], [`Committed`],
//! `ledger.rs`), what storage nodes check ([`check`], [`Electorate`], `approval.rs`), and the
//! [`Accounts`] service on the KBR API that runs the managers, their proposer and their
//! clients (`service.rs`). Grants come from brokers (`ringvault_types::Grant`). Safety under
//! competing proposers and any delivery order is checked against a model (`tests.rs`, with
//! the negative control of managers that break their promises).
//!
//! Does not own: PAST (which carries approvals with inserts and checks them through
//! [`check`]), the proof that a reclaimed object was released (the node gives the service a
//! [`ReclaimCheck`]), or any I/O. Managers keep their state in memory (see the README's
//! "Storage quotas" for what that leaves open).
#![deny(missing_docs)]

mod approval;
mod ledger;
mod message;
mod service;
#[cfg(test)]
mod tests;

pub use approval::{
    account_key, binding, check, near, ApprovalError, Electorate, Insert, Vantage, SPREAD,
};
pub use ledger::{
    quorum, Accepted, Account, Ballot, Change, Committed, Debit, Entry, LedgerError, Vote, Warrant,
    LEDGER_VERSION, MAX_ROUND,
};
pub use message::{Ask, Refusal};
pub use service::{
    Accounts, AccountsConfig, AccountsError, AccountsStats, Answered, ReclaimCheck, RequestId,
    ACCOUNTS_APP, APPROVAL_LIFETIME, DEFAULT_MANAGERS, REQUEST_TIMEOUT, ROUND_TIMEOUT,
};
