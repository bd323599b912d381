//! Storage brokers: `ringvault broker init | grant | supply | show`.
//!
//! A broker directory holds `broker.key` (the broker's secret, mode 0600: keep it offline),
//! `broker.pub` (what a quota-enforcing ring is told to trust), `broker.json` (the next serial)
//! and `grants/` (every grant issued). A **quota** grant lets a user's objects occupy so many
//! bytes of the ring; a **supply** grant caps the capacity a storage node may advertise. Both
//! are `ringvault_types::Grant`s, checked offline by anyone holding `broker.pub`.
//!
//! A ring whose nodes run with `--broker broker.pub` enforces quota grants (`node/quota.rs`,
//! `ringvault_accounts`); supply grants are issued and checked here, not enforced by nodes yet.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use ringvault_types::{armor, Grant, Grantee, Id, Identity, PublicKey};
use serde::{Deserialize, Serialize};

use crate::ca::{parse_span, read_armored, unix_now, utc, write_file};
use crate::node::objects::parse_size;

const BROKER_KEY: &str = "broker.key";
const BROKER_PUB: &str = "broker.pub";
const BROKER_STATE: &str = "broker.json";
const GRANTS: &str = "grants";

/// How far back a grant's validity starts (seconds).
const CLOCK_SLACK: u64 = 300;

const LABEL_SECRET: &str = "BROKER SECRET KEY";
const LABEL_PUBLIC: &str = "BROKER PUBLIC KEY";
/// The armor label of a grant file.
pub const LABEL_GRANT: &str = "STORAGE GRANT";

/// Commands of a storage broker.
#[derive(Subcommand)]
pub enum BrokerCommand {
    /// Make a new broker in DIR: an ed25519 key (broker.key, mode 0600; keep it offline) and
    /// its public key (broker.pub). Prints the public key.
    Init {
        /// The broker directory (created; must not hold a broker already).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Grant a user (their owner key, as `ringvault put` uses it) a quota: how many bytes their
    /// objects may occupy on the ring, size × k, chunks and manifests included.
    #[command(after_help = "Example:\n  \
        ringvault broker grant --dir broker --user 3f2a...e9 --bytes 10GiB --valid 90d")]
    Grant {
        /// The broker directory.
        #[arg(long)]
        dir: PathBuf,
        /// The user's owner key: 64 hex digits.
        #[arg(long, value_name = "KEY")]
        user: String,
        #[command(flatten)]
        grant: GrantArgs,
    },
    /// Grant a storage node (its node id, as `ringvault node` prints it) a supply: the most
    /// capacity it may advertise.
    Supply {
        /// The broker directory.
        #[arg(long)]
        dir: PathBuf,
        /// The node's id: 64 hex digits.
        #[arg(long, value_name = "ID")]
        node: String,
        #[command(flatten)]
        grant: GrantArgs,
    },
    /// Print a grant; with --broker, check it (the broker's signature, the validity window)
    /// and exit 1 if it does not hold.
    Show {
        /// The grant file.
        file: PathBuf,
        /// The broker's public key (its broker.pub, or 64 hex digits) to check it against.
        #[arg(long, value_name = "FILE|KEY")]
        broker: Option<String>,
    },
}

/// What a grant gives, and for how long.
#[derive(Args)]
pub struct GrantArgs {
    /// Bytes granted: 10GiB, 500MB, a byte count.
    #[arg(long)]
    bytes: String,
    /// How long it is valid: 90s, 45m, 12h, 90d.
    #[arg(long, default_value = "90d")]
    valid: String,
    /// Where to write it [default: DIR/grants/SERIAL.grant]. It is also kept in DIR/grants.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Default, Serialize, Deserialize)]
struct BrokerState {
    next_serial: u64,
}

/// A broker directory, opened.
struct Broker {
    dir: PathBuf,
    key: Identity,
    state: BrokerState,
}

impl Broker {
    fn init(dir: &Path) -> Result<Broker> {
        if dir.join(BROKER_KEY).exists() {
            bail!("{} already holds a broker (broker.key)", dir.display());
        }
        std::fs::create_dir_all(dir.join(GRANTS))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| anyhow!("the OS random source failed: {e}"))?;
        let key = Identity::from_secret_bytes(secret);
        write_file(&dir.join(BROKER_KEY), &armor(LABEL_SECRET, &secret), true)?;
        write_file(
            &dir.join(BROKER_PUB),
            &armor(LABEL_PUBLIC, &key.public_key().0),
            false,
        )?;
        let b = Broker {
            dir: dir.to_path_buf(),
            key,
            state: BrokerState { next_serial: 1 },
        };
        b.save()?;
        Ok(b)
    }

    fn open(dir: &Path) -> Result<Broker> {
        let secret: [u8; 32] = read_armored(&dir.join(BROKER_KEY), LABEL_SECRET)?
            .try_into()
            .map_err(|_| anyhow!("{}: a broker key is 32 bytes", dir.display()))?;
        let path = dir.join(BROKER_STATE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let state = serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged", path.display()))?;
        Ok(Broker {
            dir: dir.to_path_buf(),
            key: Identity::from_secret_bytes(secret),
            state,
        })
    }

    fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.state)?;
        write_file(&self.dir.join(BROKER_STATE), &text, false)
    }

    /// Issues a grant of `bytes` to `grantee` for `valid` seconds from now and writes it to
    /// DIR/grants (and `out`).
    fn issue(
        &mut self,
        grantee: Grantee,
        bytes: u64,
        valid: u64,
        out: Option<&Path>,
    ) -> Result<(Grant, PathBuf)> {
        let now = unix_now();
        let serial = self.state.next_serial;
        // Valid from a few minutes back, so a checker whose clock lags a little takes it.
        let grant = Grant::issue(
            &self.key,
            grantee,
            bytes,
            (now.saturating_sub(CLOCK_SLACK), now.saturating_add(valid)),
            serial,
        );
        self.state.next_serial += 1;
        self.save()?;
        let text = armor(LABEL_GRANT, &grant.encode());
        let kept = self.dir.join(GRANTS).join(format!("{serial}.grant"));
        write_file(&kept, &text, false)?;
        let path = match out {
            Some(p) => {
                write_file(p, &text, false)?;
                p.to_path_buf()
            }
            None => kept,
        };
        Ok((grant, path))
    }
}

/// A public key given as 64 hex digits, or read from a `broker.pub`-style file.
fn public_key(what: &str, s: &str, label: &str) -> Result<PublicKey> {
    if let Ok(id) = s.trim().parse::<Id>() {
        return Ok(PublicKey(*id.as_bytes()));
    }
    let bytes = read_armored(Path::new(s), label)
        .with_context(|| format!("{what} is neither 64 hex digits nor a readable key file"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow!("{s}: a public key is 32 bytes"))?;
    Ok(PublicKey(key))
}

/// A broker's public key: its broker.pub, or 64 hex digits.
pub fn load_broker_public(path: &Path) -> Result<PublicKey> {
    public_key("--broker", &path.to_string_lossy(), LABEL_PUBLIC)
}

/// Reads the grant in `path`.
pub fn load_grant(path: &Path) -> Result<Grant> {
    let bytes = read_armored(path, LABEL_GRANT)?;
    Grant::decode(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn describe(g: &Grant) -> String {
    let b = &g.body;
    let (kind, who) = match b.grantee {
        Grantee::Quota(k) => ("quota for the user with owner key", Id::from_bytes(k.0)),
        Grantee::Supply(id) => ("supply for node", id),
    };
    format!(
        "{kind} {}\n  bytes      {} ({})\n  valid      {} to {}\n  broker     {}\n  serial     {}",
        who,
        b.bytes,
        crate::cli::output::human_size(b.bytes),
        utc(b.not_before),
        utc(b.not_after),
        Id::from_bytes(b.broker.0),
        b.serial
    )
}

/// `grant` and `supply`: issues the grant `args` describe from the broker in `dir` and says
/// where it went.
fn issue(dir: &Path, grantee: Grantee, args: &GrantArgs) -> Result<()> {
    let bytes = parse_size(&args.bytes).context("--bytes")?;
    let valid = parse_span(&args.valid).context("--valid")?;
    let (g, path) = Broker::open(dir)?.issue(grantee, bytes, valid, args.out.as_deref())?;
    out!("{}\nwrote {}", describe(&g), path.display());
    Ok(())
}

pub fn run(cmd: BrokerCommand) -> Result<()> {
    match cmd {
        BrokerCommand::Init { dir } => {
            let b = Broker::init(&dir)?;
            out!(
                "broker {} in {}\nkeep {} offline; give {} to the ring (--broker, once quotas are enforced)",
                Id::from_bytes(b.key.public_key().0),
                dir.display(),
                dir.join(BROKER_KEY).display(),
                dir.join(BROKER_PUB).display()
            );
        }
        BrokerCommand::Grant { dir, user, grant } => {
            let user = public_key("--user", &user, "OWNER PUBLIC KEY")?;
            issue(&dir, Grantee::Quota(user), &grant)?;
        }
        BrokerCommand::Supply { dir, node, grant } => {
            let node: Id = node
                .trim()
                .parse()
                .map_err(|_| anyhow!("--node: {node:?} is not a node id (64 hex digits)"))?;
            issue(&dir, Grantee::Supply(node), &grant)?;
        }
        BrokerCommand::Show { file, broker } => {
            let g = load_grant(&file)?;
            out!("{}", describe(&g));
            if let Some(b) = broker {
                let key = public_key("--broker", &b, LABEL_PUBLIC)?;
                g.verify(&[key], unix_now())
                    .map_err(|e| anyhow!("{}: {e}", file.display()))?;
                out!("valid: signed by that broker, within its validity window");
            }
        }
    }
    Ok(())
}
