//! Emulated latency, a test mode: real nodes of a local ring at the places of one of the
//! simulator's latency models, their datagrams to each other held back by the model's delays
//! (`ringvault ring --emulate-latency`, `ringvault bench sim-vs-real`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ringvault_net::EmulatedLatency;
use ringvault_overlay::Config;
use ringvault_sim::{Sim, SimConfig, TopologyKind};
use ringvault_types::Id;

/// The simulator's latency models, for emulated delays.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyModel {
    /// Nodes at random points of a plane; delay is the distance.
    Euclidean,
    /// A transit-stub router graph; delay is the shortest path.
    TransitStub,
}

impl LatencyModel {
    fn kind(self) -> TopologyKind {
        match self {
            LatencyModel::Euclidean => TopologyKind::Euclidean,
            LatencyModel::TransitStub => TopologyKind::TransitStub,
        }
    }

    /// The model's name, as `--emulate-latency` spells it.
    pub fn name(self) -> &'static str {
        match self {
            LatencyModel::Euclidean => "euclidean",
            LatencyModel::TransitStub => "transit-stub",
        }
    }
}

/// The simulator's network of `n` nodes with the given ids (in join order), placed by `model`
/// from `seed`, not yet joined.
pub fn placed(model: LatencyModel, seed: u64, overlay: Config, ids: &[Id]) -> Sim {
    let mut sim = Sim::new(SimConfig {
        topology: model.kind(),
        ..SimConfig::new(seed, overlay)
    });
    for &id in ids {
        sim.add_node_with_id(id, |_| {});
    }
    sim
}

/// The delays of `sim`'s model between its nodes, for the real nodes' sockets.
pub fn emulated(sim: &Sim) -> Result<Arc<EmulatedLatency>> {
    let delays = sim
        .delays()
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|d| Duration::from_micros(d.as_micros()))
                .collect()
        })
        .collect();
    EmulatedLatency::new(delays).map_err(anyhow::Error::msg)
}

/// The delays between `n` nodes placed by `model` from `seed`, for a local ring.
pub fn ring_model(model: LatencyModel, seed: u64, n: u16) -> Result<Arc<EmulatedLatency>> {
    // Places do not depend on the ids; these only keep the simulator's nodes apart.
    let ids: Vec<Id> = (0..n).map(|i| Id::hash(&i.to_le_bytes())).collect();
    emulated(&placed(model, seed, Config::default(), &ids))
}
