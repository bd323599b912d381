//! The ring certificate authority: `ringvault ca init | issue | revoke | list`, and the files a
//! secure node loads (the CA's public key, its certificate, a revocation list).
//!
//! A CA directory holds `ca.key` (the CA's secret, mode 0600: keep the directory offline),
//! `ca.pub` (hand it to every node), `ca.json` (what was issued and revoked), `certs/` (every
//! certificate issued) and `revocations.list` (the newest revocation list).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use ringvault_types::{
    armor, unarmor, CertBody, CertRequest, Id, Identity, NodeCertificate, PublicKey,
    RevocationList, CERT_VERSION,
};
use serde::{Deserialize, Serialize};

const CA_KEY: &str = "ca.key";
const CA_PUB: &str = "ca.pub";
const CA_STATE: &str = "ca.json";
const CERTS: &str = "certs";
/// The file name of the newest revocation list in a CA directory.
pub const REVOCATIONS: &str = "revocations.list";

const LABEL_SECRET: &str = "CA SECRET KEY";
const LABEL_PUBLIC: &str = "CA PUBLIC KEY";
const LABEL_CERT: &str = "NODE CERTIFICATE";
const LABEL_REQUEST: &str = "CERT REQUEST";
const LABEL_REVOCATIONS: &str = "REVOCATION LIST";
const LABEL_GENESIS: &str = "GENESIS CONFIGURATION";

/// How long a revocation list is promised to be the newest, unless `--next-update` says.
const DEFAULT_NEXT_UPDATE: &str = "7d";

/// Commands of the ring's certificate authority.
#[derive(Subcommand)]
pub enum CaCommand {
    /// Make a new CA in DIR: an ed25519 key (ca.key, mode 0600; keep it offline) and its
    /// public key (ca.pub, for every node's --ca). Prints the public key.
    Init {
        /// The CA directory (created; must not hold a CA already).
        #[arg(long)]
        dir: PathBuf,
        /// Refuse to issue when this many certificates are live (not expired, not revoked);
        /// caps how many ids anyone can hold in the ring [default: no cap].
        #[arg(long, value_name = "N")]
        max_live: Option<usize>,
    },
    /// Issue a node certificate from a signing request (made with `ringvault node --data-dir D
    /// --cert-request FILE`); the CA never sees the node's secret key.
    ///
    /// Refuses a second live certificate for the same IP address (IPv4 address, IPv6 /64)
    /// unless --force: how many ids an attacker holds is what the CA lets them have. A new
    /// certificate for a node that already has one (a renewal) is always allowed.
    #[command(after_help = "Example:\n  \
        ringvault node --data-dir n1 --advertise 10.0.0.5:7000 --cert-request n1.req\n  \
        ringvault ca issue --dir ca --request n1.req --valid 30d --out n1.cert")]
    Issue {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The node's signing request.
        #[arg(long)]
        request: PathBuf,
        /// How long it is valid: 90s, 45m, 12h, 30d.
        #[arg(long, default_value = "30d")]
        valid: String,
        /// Where to write it [default: DIR/certs/SERIAL.cert]. It is also kept in DIR/certs.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Issue even if another live certificate names the same IP address.
        #[arg(long)]
        force: bool,
    },
    /// Revoke certificates by serial and write a new signed revocation list (DIR/revocations.list,
    /// and --out). Hand it to any node (`ringvault push-revocations FILE` or the node's
    /// --revocations file); nodes pass it on along their leaf sets.
    Revoke {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Serials to revoke (none: re-sign the current list with a new next-update).
        serials: Vec<u64>,
        /// When nodes should expect a newer list at the latest (90s, 12h, 7d); a node holding
        /// an older list then warns that revocations may be missing.
        #[arg(long, default_value = DEFAULT_NEXT_UPDATE)]
        next_update: String,
        /// Also write the list here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign the genesis configuration of a server-mode ring: its first members (their
    /// certificates from this CA), the committee (picked from them by the committee rule) and
    /// the parameters fixed for the ring's life. Every server starts with it (`ringvault node
    /// --mode server --genesis FILE`); servers that come later join through the committee.
    #[command(after_help = "Example:\n  \
        ringvault ca genesis --dir ca --member s1.cert --member s2.cert --member s3.cert \\\n      \
        --member s4.cert --epoch 60s --out genesis.conf")]
    Genesis {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// A first member's certificate (repeatable; 3f + 1 or more for a full committee and
        /// full replica groups).
        #[arg(long = "member", value_name = "CERT", required = true)]
        members: Vec<PathBuf>,
        /// Epoch length: how often the committee decides a new configuration (90s, 10m).
        #[arg(long, default_value = "60s")]
        epoch: String,
        /// How many epochs a configuration may be served after it starts (its lease).
        #[arg(long, default_value_t = 3)]
        lease_epochs: u32,
        /// Byzantine servers tolerated in each replica group and on the committee (both are
        /// 3f + 1 servers; quorums 2f + 1).
        #[arg(long, default_value_t = 1)]
        f: u8,
        /// How long genesis itself may be served before the first decided epoch replaces it.
        #[arg(long, default_value = "1d")]
        valid: String,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// List the certificates this CA issued.
    List {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// A certificate the CA issued, as its records keep it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Issued {
    serial: u64,
    node_id: String,
    addrs: Vec<SocketAddr>,
    not_before: u64,
    not_after: u64,
    revoked: bool,
}

/// The CA's records (`ca.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct CaState {
    next_serial: u64,
    revocation_version: u64,
    max_live: Option<usize>,
    issued: Vec<Issued>,
}

/// A CA directory, opened.
pub struct Ca {
    dir: PathBuf,
    key: Identity,
    state: CaState,
}

pub fn unix_now() -> u64 {
    crate::node::objects::unix_now()
}

/// Unix seconds as a UTC date and time, for people.
pub fn utc(secs: u64) -> String {
    // Days to civil date (Howard Hinnant's algorithm), valid for every u64 second we print.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60
    )
}

/// Seconds in a span written as a number and a unit (s, m, h, d).
pub fn parse_span(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| anyhow!("{s:?} is not a span: write a number and a unit, like 30d or 12h"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => bail!("{s:?}: the unit must be s, m, h or d (30d, 12h, 45m, 90s)"),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| anyhow!("{s:?} is not a usable span"))
}

pub(crate) fn read_armored(path: &Path, label: &str) -> Result<Vec<u8>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    unarmor(label, &text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

pub(crate) fn write_file(path: &Path, text: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let tmp = path.with_extension("tmp");
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The CA public key in `path` (a `ca.pub` file, or 64 hex digits).
pub fn load_ca_public(path: &Path) -> Result<PublicKey> {
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(hex) = text.trim().parse::<Id>() {
            return Ok(PublicKey(*hex.as_bytes()));
        }
    }
    let bytes = read_armored(path, LABEL_PUBLIC)?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow!("{}: a CA public key is 32 bytes", path.display()))?;
    Ok(PublicKey(key))
}

/// The node certificate in `path`.
pub fn load_certificate(path: &Path) -> Result<NodeCertificate> {
    NodeCertificate::decode(&read_armored(path, LABEL_CERT)?)
        .map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// The revocation list in `path`, checked against `ca`.
pub fn load_revocations(path: &Path, ca: &PublicKey) -> Result<RevocationList> {
    let list = RevocationList::decode(&read_armored(path, LABEL_REVOCATIONS)?)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    list.verify(ca)
        .map_err(|e| anyhow!("{}: not this ring's CA's list: {e}", path.display()))?;
    Ok(list)
}

/// A revocation list from armored text (the body of the admin endpoint).
pub fn parse_revocations(text: &str) -> Result<RevocationList> {
    RevocationList::decode(&unarmor(LABEL_REVOCATIONS, text)?).map_err(Into::into)
}

/// Writes `identity`'s signing request for `addrs` to `path`.
pub fn write_request(identity: &Identity, addrs: Vec<SocketAddr>, path: &Path) -> Result<()> {
    let req = CertRequest::new(identity, addrs)?;
    write_file(path, &armor(LABEL_REQUEST, &req.encode()), false)
}

/// Writes `cert` to `path`.
pub fn write_certificate(cert: &NodeCertificate, path: &Path) -> Result<()> {
    write_file(path, &armor(LABEL_CERT, &cert.encode()), false)
}

/// Server mode's parameters: epochs of `epoch_ms`, leases of `lease_epochs`, `f` Byzantine
/// servers per group and committee; the rest the design's defaults.
pub fn server_params(epoch_ms: u64, lease_epochs: u32, f: u8) -> Result<ringvault_bft::Params> {
    if f == 0 {
        bail!("--f must be at least 1: with f = 0 one lying server decides what is stored");
    }
    if lease_epochs < 2 {
        bail!("--lease-epochs must be at least 2, or a server stops serving whenever one epoch change runs late");
    }
    Ok(ringvault_bft::Params {
        f_r: f,
        f_ms: f,
        epoch_ms,
        lease_epochs,
        ..ringvault_bft::Params::DEFAULT
    })
}

/// Writes `genesis` to `path`.
pub fn write_genesis(genesis: &ringvault_bft::Genesis, path: &Path) -> Result<()> {
    write_file(path, &armor(LABEL_GENESIS, &genesis.encode()), false)
}

/// The genesis configuration in `path`, checked against `ca`.
pub fn load_genesis(path: &Path, ca: &PublicKey) -> Result<ringvault_bft::Config> {
    let genesis = ringvault_bft::Genesis::decode(&read_armored(path, LABEL_GENESIS)?)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let config = genesis
        .verify(ca)
        .map_err(|e| anyhow!("{}: not this ring's CA's genesis: {e}", path.display()))?;
    Ok(config.clone())
}

/// The network an address counts against for one-certificate-per-address: the IPv4 address,
/// or the IPv6 /64.
fn address_block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

impl Ca {
    /// Makes a new CA in `dir`.
    pub fn init(dir: &Path, max_live: Option<usize>) -> Result<Ca> {
        if dir.join(CA_KEY).exists() {
            bail!(
                "{} already holds a CA (ca.key); a second CA would split the ring",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir.join(CERTS))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| anyhow!("the OS random source failed: {e}"))?;
        let key = Identity::from_secret_bytes(secret);
        write_file(&dir.join(CA_KEY), &armor(LABEL_SECRET, &secret), true)?;
        write_file(
            &dir.join(CA_PUB),
            &armor(LABEL_PUBLIC, &key.public_key().0),
            false,
        )?;
        let ca = Ca {
            dir: dir.to_path_buf(),
            key,
            state: CaState {
                next_serial: 1,
                max_live,
                ..CaState::default()
            },
        };
        ca.save()?;
        Ok(ca)
    }

    /// Opens the CA in `dir`.
    pub fn open(dir: &Path) -> Result<Ca> {
        let secret: [u8; 32] = read_armored(&dir.join(CA_KEY), LABEL_SECRET)?
            .try_into()
            .map_err(|_| anyhow!("{}: a CA key is 32 bytes", dir.join(CA_KEY).display()))?;
        let path = dir.join(CA_STATE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let state = serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged", path.display()))?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            key: Identity::from_secret_bytes(secret),
            state,
        })
    }

    fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.state)?;
        write_file(&self.dir.join(CA_STATE), &text, false)
    }

    /// Signs the genesis configuration of `certs` (each must be this CA's and valid now),
    /// its lease ending `valid_secs` from now.
    pub fn genesis(
        &self,
        certs: Vec<NodeCertificate>,
        params: ringvault_bft::Params,
        valid_secs: u64,
    ) -> Result<ringvault_bft::Genesis> {
        let now = unix_now();
        let members = certs
            .into_iter()
            .map(|cert| {
                cert.verify(&self.key.public_key(), now, &RevocationList::empty())
                    .map_err(|e| anyhow!("the certificate of {}: {e}", cert.node_id()))?;
                Ok(ringvault_bft::Member { cert, admitted: 0 })
            })
            .collect::<Result<Vec<_>>>()?;
        let full = params.group_size().max(params.committee_size());
        if members.len() < full {
            bail!(
                "a genesis with f = {} needs at least {full} members (groups and committee of 3f + 1), got {}; with fewer, one lying server could decide what is stored",
                params.f_r,
                members.len()
            );
        }
        let valid_until = now.saturating_add(valid_secs).saturating_mul(1_000);
        let config = ringvault_bft::Config::genesis(members, params, valid_until);
        Ok(ringvault_bft::Genesis::sign(&self.key, config))
    }

    /// The CA's public key.
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// The path of the CA's public key file.
    pub fn public_key_file(&self) -> PathBuf {
        self.dir.join(CA_PUB)
    }

    fn live(&self, now: u64) -> impl Iterator<Item = &Issued> {
        self.state
            .issued
            .iter()
            .filter(move |i| !i.revoked && i.not_after > now)
    }

    /// Issues a certificate valid for `valid_secs` from now for `request`, keeping it in
    /// `certs/`. Refuses a second live certificate for the same address block unless `force`,
    /// and any beyond the configured maximum of live certificates.
    pub fn issue(
        &mut self,
        request: &CertRequest,
        valid_secs: u64,
        force: bool,
    ) -> Result<NodeCertificate> {
        let req = request
            .verify()
            .map_err(|e| anyhow!("the signing request is not valid: {e}"))?;
        let node_id = req.public_key.id();
        let now = unix_now();
        let others: Vec<&Issued> = self
            .live(now)
            .filter(|i| i.node_id != node_id.to_string())
            .collect();
        if let Some(max) = self.state.max_live {
            if others.len() >= max {
                bail!("{max} certificates are live, the most this CA issues (ca.json max_live)");
            }
        }
        if !force {
            for a in &req.addrs {
                let block = address_block(a.ip());
                if let Some(i) = others
                    .iter()
                    .find(|i| i.addrs.iter().any(|b| address_block(b.ip()) == block))
                {
                    bail!(
                        "serial {} (node {}) already holds a live certificate for {}; one id per address keeps Sybil attacks expensive (--force to issue anyway)",
                        i.serial,
                        &i.node_id[..16],
                        a.ip()
                    );
                }
            }
        }
        let serial = self.state.next_serial;
        let body = CertBody {
            version: CERT_VERSION,
            serial,
            node_id,
            public_key: req.public_key,
            addrs: req.addrs.clone(),
            not_before: now.saturating_sub(60), // tolerate a minute of clock skew
            not_after: now.saturating_add(valid_secs),
        };
        let cert = NodeCertificate::issue(&self.key, body);
        write_certificate(&cert, &self.dir.join(CERTS).join(format!("{serial}.cert")))?;
        self.state.next_serial += 1;
        self.state.issued.push(Issued {
            serial,
            node_id: node_id.to_string(),
            addrs: cert.body.addrs.clone(),
            not_before: cert.body.not_before,
            not_after: cert.body.not_after,
            revoked: false,
        });
        self.save()?;
        Ok(cert)
    }

    /// Revokes `serials` and writes the new list (next update in `next_update_secs`).
    pub fn revoke(&mut self, serials: &[u64], next_update_secs: u64) -> Result<RevocationList> {
        for s in serials {
            let i = self
                .state
                .issued
                .iter_mut()
                .find(|i| i.serial == *s)
                .ok_or_else(|| anyhow!("this CA issued no serial {s} (see `ringvault ca list`)"))?;
            i.revoked = true;
        }
        let now = unix_now();
        // Expired certificates need no revocation: they are refused anyway.
        let revoked: Vec<u64> = self
            .state
            .issued
            .iter()
            .filter(|i| i.revoked && i.not_after > now)
            .map(|i| i.serial)
            .collect();
        self.state.revocation_version += 1;
        let list = RevocationList::issue(
            &self.key,
            self.state.revocation_version,
            revoked,
            now,
            now.saturating_add(next_update_secs),
        );
        write_file(
            &self.dir.join(REVOCATIONS),
            &armor(LABEL_REVOCATIONS, &list.encode()),
            false,
        )?;
        self.save()?;
        Ok(list)
    }

    /// Writes `list` as armored text to `path`.
    pub fn write_revocations(list: &RevocationList, path: &Path) -> Result<()> {
        write_file(path, &armor(LABEL_REVOCATIONS, &list.encode()), false)
    }
}

pub fn run(cmd: CaCommand) -> Result<()> {
    match cmd {
        CaCommand::Init { dir, max_live } => {
            let ca = Ca::init(&dir, max_live)?;
            out!("CA public key {}", Id::from_bytes(ca.public_key().0));
            out!(
                "wrote {} (secret, 0600: keep it offline) and {} (give it to every node: --ca {})",
                dir.join(CA_KEY).display(),
                ca.public_key_file().display(),
                ca.public_key_file().display()
            );
        }
        CaCommand::Issue {
            dir,
            request,
            valid,
            out,
            force,
        } => {
            let mut ca = Ca::open(&dir)?;
            let req = CertRequest::decode(&read_armored(&request, LABEL_REQUEST)?)
                .map_err(|e| anyhow!("{}: {e}", request.display()))?;
            let cert = ca.issue(&req, parse_span(&valid)?, force)?;
            let path =
                out.unwrap_or_else(|| dir.join(CERTS).join(format!("{}.cert", cert.body.serial)));
            write_certificate(&cert, &path)?;
            out!(
                "issued serial {} for node {} ({}), valid until {}; wrote {}",
                cert.body.serial,
                cert.node_id(),
                cert.body
                    .addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                utc(cert.body.not_after),
                path.display()
            );
        }
        CaCommand::Revoke {
            dir,
            serials,
            next_update,
            out,
        } => {
            let mut ca = Ca::open(&dir)?;
            let list = ca.revoke(&serials, parse_span(&next_update)?)?;
            if let Some(out) = &out {
                Ca::write_revocations(&list, out)?;
            }
            out!(
                "revocation list version {} revokes {} live serial(s); wrote {}{}",
                list.version(),
                list.body.serials.len(),
                dir.join(REVOCATIONS).display(),
                out.map(|o| format!(" and {}", o.display()))
                    .unwrap_or_default()
            );
            out!("hand it to any node: ringvault push-revocations FILE --node URL (it spreads from there)");
        }
        CaCommand::Genesis {
            dir,
            members,
            epoch,
            lease_epochs,
            f,
            valid,
            out,
        } => {
            let ca = Ca::open(&dir)?;
            let certs = members
                .iter()
                .map(|p| load_certificate(p))
                .collect::<Result<Vec<_>>>()?;
            let params = server_params(parse_span(&epoch)? * 1_000, lease_epochs, f)?;
            let genesis = ca.genesis(certs, params, parse_span(&valid)?)?;
            write_genesis(&genesis, &out)?;
            let c = &genesis.config;
            out!(
                "genesis of {} servers, committee of {} (f = {f}), epochs of {epoch}, hash {}; wrote {}",
                c.members.len(),
                c.committee.len(),
                c.hash(),
                out.display()
            );
        }
        CaCommand::List { dir } => {
            let ca = Ca::open(&dir)?;
            let now = unix_now();
            out!(
                "{:>6}  {:<16}  {:<10}  addresses",
                "serial",
                "node",
                "state"
            );
            for i in &ca.state.issued {
                let state = if i.revoked {
                    "revoked"
                } else if i.not_after <= now {
                    "expired"
                } else {
                    "live"
                };
                let addrs: Vec<String> = i.addrs.iter().map(ToString::to_string).collect();
                out!(
                    "{:>6}  {:<16}  {:<8}  {:<20}  {}",
                    i.serial,
                    &i.node_id[..16],
                    state,
                    utc(i.not_after),
                    addrs.join(", ")
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("rv-ca-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn request(seed: u8, addr: &str) -> CertRequest {
        CertRequest::new(
            &Identity::from_secret_bytes([seed; 32]),
            vec![addr.parse().unwrap()],
        )
        .unwrap()
    }

    #[test]
    fn one_live_certificate_per_address_unless_forced_and_renewals_pass() {
        let dir = tmp("sybil");
        let mut ca = Ca::init(&dir, None).unwrap();
        let first = ca.issue(&request(1, "10.0.0.1:7000"), 3600, false).unwrap();
        let err = ca
            .issue(&request(2, "10.0.0.1:7001"), 3600, false)
            .unwrap_err();
        assert!(
            err.to_string().contains("already holds a live certificate"),
            "{err}"
        );
        // The same node again is a renewal.
        let renewed = ca.issue(&request(1, "10.0.0.1:7000"), 3600, false).unwrap();
        assert_ne!(renewed.body.serial, first.body.serial);
        // Another address in the same IPv6 /64 counts as the same address.
        ca.issue(&request(3, "[2001:db8::1]:7000"), 3600, false)
            .unwrap();
        assert!(ca
            .issue(&request(4, "[2001:db8::2]:7000"), 3600, false)
            .is_err());
        assert!(ca
            .issue(&request(4, "[2001:db8:0:1::2]:7000"), 3600, false)
            .is_ok());
        let forced = ca.issue(&request(5, "10.0.0.1:7002"), 3600, true).unwrap();
        // Revoking every live certificate of the address frees it.
        ca.revoke(&[first.body.serial, renewed.body.serial], 3600)
            .unwrap();
        assert!(ca.issue(&request(6, "10.0.0.1:7003"), 3600, false).is_err());
        ca.revoke(&[forced.body.serial], 3600).unwrap();
        // The records survive reopening.
        let mut ca = Ca::open(&dir).unwrap();
        ca.issue(&request(6, "10.0.0.1:7003"), 3600, false).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_live_cap_holds_and_revocation_lists_grow_in_version() {
        let dir = tmp("cap");
        let mut ca = Ca::init(&dir, Some(2)).unwrap();
        let a = ca.issue(&request(1, "10.0.0.1:7000"), 3600, false).unwrap();
        ca.issue(&request(2, "10.0.0.2:7000"), 3600, false).unwrap();
        let err = ca
            .issue(&request(3, "10.0.0.3:7000"), 3600, false)
            .unwrap_err();
        assert!(err.to_string().contains("most this CA issues"), "{err}");
        let l1 = ca.revoke(&[a.body.serial], 3600).unwrap();
        assert!(l1.revokes(a.body.serial));
        ca.issue(&request(3, "10.0.0.3:7000"), 3600, false).unwrap();
        let l2 = ca.revoke(&[], 3600).unwrap();
        assert_eq!(l2.version(), l1.version() + 1);
        let loaded = load_revocations(&dir.join(REVOCATIONS), &ca.public_key()).unwrap();
        assert_eq!(loaded, l2);
        assert!(ca.revoke(&[99], 3600).is_err());
        assert!(
            Ca::init(&dir, None).is_err(),
            "a second init must not replace the key"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn spans_parse_with_units_only() {
        assert_eq!(parse_span("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_span("90s").unwrap(), 90);
        assert!(parse_span("30").is_err());
        assert!(parse_span("0d").is_err());
        assert!(parse_span("d").is_err());
    }

    #[test]
    fn dates_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_796_679_556), "2026-12-07 21:39 UTC");
    }
}
