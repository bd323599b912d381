//! The `ringvault` binary: one executable for the daemon, the local ring, the simulator and the
//! client commands. Each command group lives in its own module.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod api;
mod bench;
mod cli;
mod identity_cmd;
#[macro_use]
mod node;
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
    Net(cli::NetCommand),
    #[command(flatten)]
    Sim(sim_cmd::SimCommand),
    #[command(flatten)]
    Identity(identity_cmd::IdentityCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Net(c) => cli::run(c),
        Command::Sim(c) => sim_cmd::run(c),
        Command::Identity(c) => identity_cmd::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line (with its causes) for people; the backtrace only when asked for with
            // RUST_LOG=debug, whatever RUST_BACKTRACE says.
            let debug = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("debug"));
            let text = if debug {
                format!("error: {e:?}")
            } else {
                format!("error: {e:#}")
            };
            // stderr may be closed or full: nothing more can be done about it then.
            let _ = writeln!(std::io::stderr(), "{text}");
            ExitCode::FAILURE
        }
    }
}
