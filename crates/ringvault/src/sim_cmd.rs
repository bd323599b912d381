//! Placeholder, to be replaced by `ringvault sim EXPERIMENT`.

use anyhow::{bail, Result};
use clap::Subcommand;

/// The simulator.
#[derive(Subcommand)]
pub enum SimCommand {
    /// Run a simulator experiment (not built yet).
    Sim,
}

pub fn run(cmd: SimCommand) -> Result<()> {
    match cmd {
        SimCommand::Sim => bail!("the simulator is not built yet"),
    }
}
