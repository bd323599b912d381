//! Secure mode for the daemon and the local ring: loading the CA key, certificate and
//! revocation list a node runs with, watching those files for renewals and new lists, and the
//! CA that `ring --mode secure` makes for its nodes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use ringvault_net::{NodeHandle, SecureRing, Security};
use ringvault_types::{CertRequest, Identity, PublicKey, RevocationList};
use tracing::{info, warn};

use crate::ca::{self, Ca};

/// How often the node looks at its certificate and revocation files for changes.
const WATCH_EVERY: Duration = Duration::from_secs(5);
/// Warn this long before the node's certificate expires.
const RENEW_WARNING: u64 = 7 * 86_400;
/// How often to repeat the expiry and stale-list warnings.
const WARN_EVERY: Duration = Duration::from_secs(3_600);
/// Validity of the certificates `ring --mode secure` issues (reissued at every start).
const LOCAL_VALIDITY: u64 = 30 * 86_400;

/// The files a secure node runs with.
pub struct SecureFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub revocations: Option<PathBuf>,
}

impl SecureFiles {
    /// Loads them: the CA key, the certificate, and the revocation list (empty when none).
    pub fn load(&self) -> Result<(PublicKey, SecureRing)> {
        let ca = ca::load_ca_public(&self.ca)?;
        let cert = ca::load_certificate(&self.cert)?;
        let revocations = match &self.revocations {
            Some(p) if p.exists() => ca::load_revocations(p, &ca)?,
            _ => RevocationList::empty(),
        };
        Ok((
            ca,
            SecureRing {
                ca,
                cert,
                revocations,
            },
        ))
    }

    /// Watches the certificate and revocation files until `handle`'s node stops: a changed
    /// certificate is presented from then on, a changed list is offered to the node (which
    /// passes it on). Warns when the certificate nears its end or the list is stale.
    pub fn watch(self, handle: NodeHandle, ca: PublicKey) {
        tokio::spawn(async move {
            let mut cert_seen = modified(&self.cert);
            let mut list_seen = self.revocations.as_deref().and_then(modified);
            let mut last_warning: Option<tokio::time::Instant> = None;
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                let cert_now = modified(&self.cert);
                if cert_now != cert_seen {
                    cert_seen = cert_now;
                    let renewed = async {
                        let cert = ca::load_certificate(&self.cert)?;
                        handle
                            .renew_certificate(cert)
                            .await
                            .map_err(anyhow::Error::from)
                    };
                    if let Err(e) = renewed.await {
                        warn!(
                            "{} changed but cannot be used; keeping the current certificate: {e:#}",
                            self.cert.display()
                        );
                    }
                }
                if let Some(path) = &self.revocations {
                    let list_now = modified(path);
                    if list_now != list_seen {
                        list_seen = list_now;
                        let offered = async {
                            let list = ca::load_revocations(path, &ca)?;
                            handle.revocations(list).await.map_err(anyhow::Error::from)
                        };
                        match offered.await {
                            Ok((adopted, held)) => info!(
                                adopted,
                                held,
                                "read the revocation list in {}",
                                path.display()
                            ),
                            Err(e) => warn!("{}: {e:#}", path.display()),
                        }
                    }
                }
                let Ok(st) = handle.status().await else {
                    return; // the node stopped
                };
                if last_warning.is_some_and(|t| t.elapsed() < WARN_EVERY) {
                    continue;
                }
                if let ringvault_net::SecurityStatus::Secure {
                    cert_not_after,
                    revocations_stale,
                    revocations_next_update,
                    ..
                } = st.security
                {
                    let now = ca::unix_now();
                    if cert_not_after.saturating_sub(now) < RENEW_WARNING {
                        warn!(
                            "this node's certificate expires {} (in {} h): have the CA issue a new one and replace {} (no restart needed)",
                            ca::utc(cert_not_after),
                            cert_not_after.saturating_sub(now) / 3600,
                            self.cert.display()
                        );
                        last_warning = Some(tokio::time::Instant::now());
                    }
                    if revocations_stale {
                        warn!(
                            "REVOCATION LIST IS STALE: its next update was due {}; revoked nodes may be missing from it. Get a new list from the CA (`ringvault ca revoke`) and hand it to any node",
                            ca::utc(revocations_next_update.unwrap_or(0))
                        );
                        last_warning = Some(tokio::time::Instant::now());
                    }
                }
            }
        });
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The CA of a local ring (`ring --mode secure`): kept in the ring's data dir, so it goes with
/// it; each node's certificate is reissued at every start.
pub struct LocalCa(Ca);

impl LocalCa {
    /// Opens the CA under `dir/ca`, making it on first use.
    pub fn open_or_init(dir: &Path) -> Result<LocalCa> {
        let ca_dir = dir.join("ca");
        let ca = if ca_dir.join("ca.key").exists() {
            Ca::open(&ca_dir)?
        } else {
            Ca::init(&ca_dir, None)?
        };
        Ok(LocalCa(ca))
    }

    /// A certificate for `identity` at `addr`, and the ring settings that go with it. Every
    /// node of a local ring is on 127.0.0.1, so the one-per-address rule is waived here.
    /// The CA's public key.
    pub fn public_key(&self) -> ringvault_types::PublicKey {
        self.0.public_key()
    }

    pub fn certify(&mut self, identity: &Identity, addr: SocketAddr) -> Result<Security> {
        let req = CertRequest::new(identity, vec![addr])?;
        let cert = self
            .0
            .issue(&req, LOCAL_VALIDITY, true)
            .context("issuing a local ring certificate")?;
        Ok(Security::Secure(Box::new(SecureRing {
            ca: self.0.public_key(),
            cert,
            revocations: RevocationList::empty(),
        })))
    }
}

/// Writes a signing request for `identity` naming `addr`, for `node --cert-request`.
pub fn write_request(identity: &Identity, addr: SocketAddr, path: &Path) -> Result<()> {
    if addr.ip().is_unspecified() {
        return Err(anyhow!(
            "{addr} is not an address peers can dial; give --advertise HOST:PORT for the request"
        ));
    }
    ca::write_request(identity, vec![addr], path)
}
