//! `ringvault sim EXPERIMENT...`: runs the simulator experiments of `experiments.md` and writes
//! their JSON, CSV and SVG reports.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use ringvault_sim::experiments::{self, Params, EXPERIMENTS};
use ringvault_sim::TopologyKind;

/// The simulator.
#[derive(Subcommand)]
pub enum SimCommand {
    /// Run simulator experiments on the real protocol code under simulated time.
    ///
    /// Experiments: hops, hop-distribution, stretch, table-quality, replica-locality, failure,
    /// rare-case, join-cost, churn, past-storage, past-caching, scribe (always on
    /// transit-stub), secure-routing (plain and secure routing with f = 0 to 0.3 of the nodes
    /// Byzantine and colluding), byzantine-storage (PAST inserts and lookups with f = 0 to 0.25
    /// colluding, lying about routes and storage; --routes sets the objects per point),
    /// secure-join (joiners' leaf sets and constrained tables with a quarter of the nodes
    /// colluding, with and without the join check; --routes sets the joiners), records (signed
    /// records under churn with a tenth of the nodes losing writes, with and without read
    /// repair; --routes sets the reads), audits (storage audits under churn with 5, 10 and
    /// 25% of the nodes keeping receipts and dropping data, with and without audits; --hours
    /// sets the simulated time), server-mode (a fleet of servers under the BFT membership
    /// service with 30-day sessions and 1,000 joins and leaves: configuration spread, bytes
    /// per server, one-hop lookup delay next to classic routing, NotReady time; --nodes sets
    /// the fleet, default 10,000; use --topology transit-stub). Several names in one run share
    /// their network builds.
    /// Writes DIR/EXPERIMENT.json (every figure, the parameters and the seed), a CSV per table
    /// and an SVG per plot, prints a short table, and ends with the simulator's own speed and
    /// memory per node. The same seed gives the same files, byte for byte.
    Sim(SimArgs),
}

/// Options of `ringvault sim`.
#[derive(Args)]
pub struct SimArgs {
    /// Experiments to run (see above).
    #[arg(required = true, value_name = "EXPERIMENT")]
    experiments: Vec<String>,
    /// Network size, replacing the experiment's own list of sizes.
    #[arg(long)]
    nodes: Option<usize>,
    /// Run seed (`SEED` in the environment works too).
    #[arg(long, env = "SEED", default_value_t = 1)]
    seed: u64,
    /// Directory for the reports.
    #[arg(long, default_value = "sim-results")]
    out: PathBuf,
    /// Latency model.
    #[arg(long, value_enum, default_value_t = Topo::Euclidean)]
    topology: Topo,
    /// Bits per digit b (default: the experiment's, 4 unless stated).
    #[arg(long)]
    b: Option<u8>,
    /// Leaf set size L (default: the experiment's, 16 unless stated).
    #[arg(long = "leaf-set")]
    leaf_set: Option<usize>,
    /// Neighbourhood set size M (default: the experiment's, 32 unless stated).
    #[arg(long)]
    neighbourhood: Option<usize>,
    /// Routes or lookups per measurement (default: the experiment's).
    #[arg(long)]
    routes: Option<usize>,
    /// Simulated hours of experiments that run for a time (audits; default 24).
    #[arg(long)]
    hours: Option<f64>,
    /// secure-routing's failure test threshold gamma: an answer more than gamma times sparser
    /// than the origin's own neighbourhood fails [default: the protocol's].
    #[arg(long)]
    gamma: Option<f64>,
    /// secure-routing without its failure test: every first answer is accepted (what the
    /// attack achieves against secure routing with no defence).
    #[arg(long)]
    no_failure_test: bool,
    /// Ring size of past-storage's t_pri / t_div sweep (default 1,000, or --nodes if smaller;
    /// 0 runs only the paper's thresholds with and without diversion). A sweep run costs
    /// about as much CPU as its ring's size.
    #[arg(long = "sweep-nodes", value_name = "N")]
    sweep_nodes: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Topo {
    Euclidean,
    TransitStub,
}

/// Runs a simulator command.
pub fn run(cmd: SimCommand) -> Result<()> {
    let SimCommand::Sim(a) = cmd;
    for e in &a.experiments {
        if !EXPERIMENTS.contains(&e.as_str()) {
            bail!(
                "unknown experiment {e:?}; choose from: {}",
                EXPERIMENTS.join(", ")
            );
        }
    }
    let params = Params {
        nodes: a.nodes,
        topology: match a.topology {
            Topo::Euclidean => TopologyKind::Euclidean,
            Topo::TransitStub => TopologyKind::TransitStub,
        },
        b: a.b,
        leaf_set: a.leaf_set,
        neighbourhood: a.neighbourhood,
        routes: a.routes,
        hours: a.hours,
        gamma: a.gamma,
        no_failure_test: a.no_failure_test,
        sweep_nodes: a.sweep_nodes,
        progress: std::io::stderr().is_terminal(),
        ..Params::new(a.seed)
    };
    let (reports, perf) = experiments::run(&a.experiments, &params).map_err(anyhow::Error::msg)?;
    for r in &reports {
        print!("{}", r.text());
        let files = r
            .write(&a.out)
            .with_context(|| format!("writing the reports to {}", a.out.display()))?;
        out!("  wrote {} files to {}", files.len(), a.out.display());
    }
    out!("{}", perf.line());
    Ok(())
}
