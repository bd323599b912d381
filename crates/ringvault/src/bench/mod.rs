//! Benchmarks of real nodes: `ringvault bench storage` (`bench route` starts its ring with the
//! daemons, in `node::daemon`).

pub mod storage;
