//! ringvault's discrete-event simulator.
//!
//! Owns: the driver that runs many real [`ringvault_node::Node`] state machines under simulated
//! time ([`Sim`]: an event queue ordered by (time, sequence), one timer per node, delivery
//! delayed by a latency model, optional loss and partitions), the latency models
//! ([`Topology`]: Euclidean plane and transit-stub), failure and churn scripts, network-wide
//! invariant checkers ([`check`]), the experiments of the design's `experiments.md`
//! ([`experiments`]) with their JSON/CSV/SVG reports, and fixed-seed scenarios ([`scenario`]).
//!
//! Does not own any protocol logic: every decision is made by the same node code the daemon
//! runs. The simulator only moves messages, answers proximity probes from its topology, fires
//! timers and reads state for its checks.
#![deny(missing_docs)]

pub mod check;
pub mod experiments;
mod nearest;
pub mod perf;
pub mod report;
pub mod scenario;
mod sim;
mod topology;

pub use check::{true_leaf_set, wrong_leaf_sets, Ring};
pub use sim::{
    addr_of, node_seed, Counters, Sim, SimConfig, SimNode, JOIN_LIMIT, PROBE_FAILURE_DELAY,
    ROUTE_LIMIT, SETTLE_LIMIT,
};
pub use topology::{Place, Topology, TopologyKind, TransitStub, TransitStubParams, US_PER_UNIT};
