//! Nodes running in this process (`ringvault node`, `ringvault ring`): starting them, their
//! settings file, secure mode (certificates, revocation lists, the local CA), and the glue between the HTTP API and the node's services (objects = PAST,
//! topics = Scribe).

/// `println!` for the daemons (`node`, `ring`): a stdout that cannot be written (a full disk,
/// a closed pipe) is logged at debug level and otherwise ignored, never a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            tracing::debug!("stdout cannot be written: {e}");
        }
    }};
}

pub mod config;
pub mod daemon;
pub mod emulate;
pub mod objects;
pub mod quota;
pub mod records;
pub mod secure;
pub mod server;
pub mod topics;
