//! Placeholder, to be replaced by the network driver's commands (`node`, `ring`, `status`,
//! `route`, `bench`).

use anyhow::{bail, Result};
use clap::Subcommand;

/// Commands that run or talk to real nodes.
#[derive(Subcommand)]
pub enum NetCommand {
    /// Run one node (not built yet).
    Node,
}

pub fn run(cmd: NetCommand) -> Result<()> {
    match cmd {
        NetCommand::Node => bail!("the network driver is not built yet"),
    }
}
