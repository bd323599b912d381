//! The `ringvault` binary: one executable for the daemon, the local ring, the simulator and the
//! client commands. Each command group lives in its own module.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod identity_cmd;
mod net_cmd;
mod sim_cmd;

/// ringvault: a peer-to-peer storage ring (Pastry overlay, PAST storage, Scribe multicast).
#[derive(Parser)]
#[command(version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Net(net_cmd::NetCommand),
    #[command(flatten)]
    Sim(sim_cmd::SimCommand),
    #[command(flatten)]
    Identity(identity_cmd::IdentityCommand),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Net(c) => net_cmd::run(c),
        Command::Sim(c) => sim_cmd::run(c),
        Command::Identity(c) => identity_cmd::run(c),
    }
}
