//! Storage quotas' core: each user's balance kept as a ledger that the user's account managers
//! sign by majority (`ledger.rs`).
//!
//! Owns: [`Entry`], [`Committed`], [`Account`] (one manager's view of one user's ledger and its
//! one-vote-per-entry rule) and the check a storage node would make of an approval
//! ([`Committed::verify`]). Safety under any number of concurrent writers is tested against a
//! model that delivers proposals, votes and commits in any order (`tests.rs`, with the negative
//! control of managers that vote twice).
//!
//! Not built yet (issue 16): the service that runs on the account managers (the m nodes closest
//! to H("account", user), reached by secure routing), a new head after a split vote (a sequence
//! number whose votes split with no majority blocks the ledger: it needs rounds, as in Paxos),
//! grants checked by the managers, approvals carried by PAST inserts and checked by storage
//! nodes, and `--broker` on the ring. Nothing in a node uses this crate yet.
#![deny(missing_docs)]

mod ledger;
#[cfg(test)]
mod tests;

pub use ledger::{quorum, Account, Change, Committed, Entry, LedgerError, Vote, LEDGER_VERSION};
