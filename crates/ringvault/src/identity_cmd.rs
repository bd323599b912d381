//! `ringvault id` and `ringvault key`: ids and keys as ringvault computes them.

use anyhow::{Context, Result};
use clap::Subcommand;
use ringvault_types::{Id, Identity};

/// Commands about ids.
#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Print the 256-bit key ringvault derives from a name (BLAKE3 of its bytes), with its
    /// base-16 digits, so you can see which node a name maps to.
    Id {
        /// The name to hash.
        name: String,
    },
    /// Show the node id of an ed25519 secret key given as 64 hex digits (id = BLAKE3 of the
    /// public key), or of a fresh random key when none is given.
    ///
    /// With --owner, show the public half of your owner key (the one `put` signs with; created
    /// if missing): what a broker needs to grant you a quota (`ringvault broker grant --user`).
    Key {
        /// A secret key in hex; omit to generate one.
        #[arg(conflicts_with = "owner")]
        secret: Option<String>,
        /// Show your owner key's public half instead (from --key FILE, else the default path).
        #[arg(long)]
        owner: bool,
        /// Your owner key file [default: owner.key in the CLI's config dir].
        #[arg(long, env = "RINGVAULT_KEY", value_name = "FILE", requires = "owner")]
        key: Option<std::path::PathBuf>,
    },
}

pub fn run(cmd: IdentityCommand) -> Result<()> {
    match cmd {
        IdentityCommand::Id { name } => {
            out!("{}", Id::hash(name.as_bytes()));
        }
        IdentityCommand::Key {
            owner: true, key, ..
        } => {
            let path = crate::cli::owner_key::path_or_default(key.as_deref())?;
            let ident = crate::cli::owner_key::load_or_create(&path)?;
            out!("owner key {}", path.display());
            out!("public    {}", Id::from_bytes(ident.public_key().0));
        }
        IdentityCommand::Key { secret, .. } => {
            let bytes: [u8; 32] = match secret {
                Some(hex) => {
                    let id: Id = hex
                        .parse()
                        .context("a secret key is 64 hex digits (32 bytes)")?;
                    *id.as_bytes()
                }
                None => {
                    let mut b = [0u8; 32];
                    getrandom::fill(&mut b)
                        .map_err(|e| anyhow::anyhow!("the OS random source failed: {e}"))?;
                    b
                }
            };
            let ident = Identity::from_secret_bytes(bytes);
            out!("secret  {}", Id::from_bytes(ident.secret_bytes()));
            out!("public  {}", Id::from_bytes(ident.public_key().0));
            out!("node id {}", ident.id());
        }
    }
    Ok(())
}
