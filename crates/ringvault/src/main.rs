//! The `ringvault` binary: one executable for the daemon, the local ring, the simulator and the
//! client commands. Each command group lives in its own module.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` for commands whose output is their result: a reader that went away (`| head`)
/// ends the command quietly with success, and a stdout that cannot be written (a full disk)
/// ends it with one line on stderr and status 1, never a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            crate::stdout_failed(e);
        }
    }};
}

/// What [`out!`] does when stdout cannot be written.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    let _ = writeln!(std::io::stderr(), "error: cannot write to stdout: {e}");
    std::process::exit(1);
}

mod api;
mod bench;
mod broker;
mod ca;
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
    /// The ring's certificate authority, for secure mode: init, issue, revoke, list.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// A storage broker: signed quota grants for users (a ring started with `--broker`
    /// enforces them) and supply grants for storage nodes (issued and checked, not enforced yet).
    #[command(subcommand)]
    Broker(broker::BrokerCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Net(c) => cli::run(c),
        Command::Sim(c) => sim_cmd::run(c),
        Command::Identity(c) => identity_cmd::run(c),
        Command::Ca(c) => ca::run(c),
        Command::Broker(c) => broker::run(c),
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
