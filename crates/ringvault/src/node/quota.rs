//! Storage quotas on a daemon node (`--broker`): the accounts service (this node as account
//! manager, proposer and client), the quota policy PAST enforces, and the client glue the
//! objects API uses to get a debit approval before an insert and a credit after a reclaim.
//! Requests run inside the node's actor; answers come back through the driver's poller, keyed
//! by request id. No protocol decision is made here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use ringvault_accounts::{
    binding, Accounts, AccountsConfig, AccountsError, Answered, Committed, Electorate, RequestId,
    DEFAULT_MANAGERS,
};
use ringvault_net::{NetError, NodeHandle, Poller, Services};
use ringvault_past::{
    encode_certificates, insert_proven, reclaim_proof, reclaim_proven, FileCertificate, Quota,
    ReclaimReceipt,
};
use ringvault_types::{Grant, Id, Identity, NodeCertificate, PublicKey};
use tokio::sync::oneshot;

use crate::node::objects::unix_now;

type Waiters = Arc<Mutex<HashMap<RequestId, oneshot::Sender<Answered>>>>;

/// At most this many requests wait for their answers at once.
const MAX_WAITING: usize = 4096;

/// `--broker`, `--grant`, `--managers`: storage quotas.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct QuotaArg {
    /// A broker's public key (its broker.pub, or 64 hex digits) whose quota grants this ring
    /// honours; repeatable. With it the ring enforces storage quotas: every insert needs a
    /// debit approval from the owner's account managers, given only within the owner's grant
    /// (size × k counted; `ringvault broker grant`). Every node of the ring needs the same
    /// brokers. Without it nothing is counted.
    #[arg(long, value_name = "FILE")]
    pub broker: Vec<PathBuf>,
    /// This node's operator grant (a file from `ringvault broker grant --user` for the node's
    /// operator key), charged for what the node stores under its own key: objects put without
    /// client-signed certificates, records aside. Without it such puts are refused with 403.
    #[arg(long, value_name = "FILE", requires = "broker")]
    pub grant: Option<PathBuf>,
    /// Account managers per user: the m nodes closest to H("account", user key) keep each
    /// user's balance and approve by majority. Every node of the ring needs the same m, and the
    /// ring at least m nodes.
    #[arg(long, value_name = "M", default_value_t = DEFAULT_MANAGERS, requires = "broker")]
    pub managers: usize,
    /// This node's supply grant (`ringvault broker supply --node NODE_ID`): the storage it
    /// offers (--capacity) is capped at the grant's bytes. Checked at start against --broker;
    /// other nodes do not check it yet.
    #[arg(long, value_name = "FILE", requires = "broker")]
    pub supply: Option<PathBuf>,
}

/// What a node needs to run quotas, read from [`QuotaArg`].
#[derive(Clone, Debug)]
pub struct QuotaSetup {
    /// Trusted brokers.
    pub brokers: Vec<PublicKey>,
    /// Managers per account.
    pub managers: usize,
    /// The operator's grant, if given.
    pub operator_grant: Option<Grant>,
}

impl QuotaArg {
    /// The setup these flags give; `None` without `--broker` (no quotas).
    pub fn setup(&self) -> Result<Option<QuotaSetup>> {
        if self.broker.is_empty() {
            return Ok(None);
        }
        if self.managers == 0 || self.managers > 64 {
            anyhow::bail!("--managers must be 1 to 64");
        }
        let brokers = self.brokers()?;
        let operator_grant = match &self.grant {
            Some(p) => Some(crate::broker::load_grant(p).context("--grant")?),
            None => None,
        };
        Ok(Some(QuotaSetup {
            brokers,
            managers: self.managers,
            operator_grant,
        }))
    }

    /// The brokers `--broker` names.
    fn brokers(&self) -> Result<Vec<PublicKey>> {
        self.broker
            .iter()
            .map(|p| crate::broker::load_broker_public(p))
            .collect::<Result<Vec<_>>>()
            .context("--broker")
    }

    /// The capacity node `node` may offer under its `--supply` grant, `capacity` without one.
    pub fn supplied(&self, node: Id, capacity: u64) -> Result<u64> {
        let Some(path) = &self.supply else {
            return Ok(capacity);
        };
        let grant = crate::broker::load_grant(path).context("--supply")?;
        let brokers = self.brokers()?;
        grant
            .verify(&brokers, unix_now())
            .with_context(|| format!("--supply {}", path.display()))?;
        if grant.body.grantee != ringvault_types::Grantee::Supply(node) {
            anyhow::bail!(
                "--supply {}: not a supply grant for this node ({node}); ask the broker for `ringvault broker supply --node {node}`",
                path.display()
            );
        }
        if grant.body.bytes < capacity {
            tracing::info!(
                "offering {} bytes: the supply grant caps the {capacity} bytes of --capacity",
                grant.body.bytes
            );
        }
        Ok(capacity.min(grant.body.bytes))
    }
}

impl QuotaSetup {
    /// The policy PAST enforces with it (`ca`: secure mode's CA, whose certificates manager
    /// votes must carry).
    pub fn past_quota(&self, ca: Option<PublicKey>) -> Quota {
        Quota {
            electorate: Electorate {
                m: self.managers,
                ca,
            },
            unix_at_zero: unix_now(),
        }
    }
}

/// Why a quota request did not produce an approval or a credit.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The node could not be asked.
    #[error(transparent)]
    Net(#[from] NetError),
    /// No grant was given for an insert that needs one.
    #[error("this ring enforces storage quotas and no grant was given: send the owner's grant (X-Quota-Grant, `ringvault put --grant FILE`), or start the node with --grant for what it stores under its own key")]
    NoGrant,
    /// The grant does not decode.
    #[error("the quota grant does not decode: {0}")]
    BadGrant(String),
    /// The managers refused or did not answer.
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    /// Too many requests are waiting.
    #[error("too many quota requests in flight; retry shortly")]
    Busy,
}

/// Registers the accounts service on a node with `identity` under `setup` (`secure`: the CA and
/// this node's certificate in secure mode) and returns the client the objects API uses.
pub fn add_accounts(
    services: &mut Services,
    identity: &Identity,
    setup: &QuotaSetup,
    secure: Option<(PublicKey, NodeCertificate)>,
) -> QuotaClient {
    let waiters: Waiters = Arc::default();
    let (ca, cert) = match secure {
        Some((ca, cert)) => (Some(ca), Some(cert)),
        None => (None, None),
    };
    let accounts = Accounts::new(
        Identity::from_secret_bytes(identity.secret_bytes()),
        AccountsConfig {
            electorate: Electorate {
                m: setup.managers,
                ca,
            },
            brokers: setup.brokers.clone(),
            cert,
            unix_at_zero: unix_now(),
            secure: ca.is_some(),
            reclaimed: Box::new(reclaim_proven),
            inserted: Box::new(insert_proven),
        },
    );
    services.services.push(Box::new(accounts));
    let w = waiters.clone();
    let mut before = services.poller.take();
    let poller: Poller = Box::new(move |node, now| {
        if let Some(p) = before.as_mut() {
            p(node, now);
        }
        let _ = node.with_service::<Accounts, _>(now, |a, _| deliver(a, &w));
    });
    services.poller = Some(poller);
    QuotaClient {
        waiters,
        operator_grant: setup.operator_grant.clone(),
    }
}

fn deliver(a: &mut Accounts, waiters: &Waiters) {
    while let Some(answer) = a.poll_answer() {
        let tx = waiters.lock().ok().and_then(|mut w| w.remove(&answer.req));
        if let Some(tx) = tx {
            let _ = tx.send(answer);
        }
    }
}

/// What the managers say a user occupies.
#[derive(Clone, Copy, Debug)]
pub struct Balance {
    /// Bytes occupied (size × k of what is stored).
    pub used: u64,
    /// Entries in the user's ledger.
    pub entries: u64,
}

/// Asks a running node's accounts service for approvals, credits and balances.
/// A request started inside the node on its accounts service.
trait AccountsCall:
    FnOnce(
        &mut Accounts,
        &mut dyn ringvault_overlay::Kbr,
        ringvault_types::Time,
    ) -> Result<RequestId, AccountsError>
    + Send
    + 'static
{
}

impl<F> AccountsCall for F where
    F: FnOnce(
            &mut Accounts,
            &mut dyn ringvault_overlay::Kbr,
            ringvault_types::Time,
        ) -> Result<RequestId, AccountsError>
        + Send
        + 'static
{
}

#[derive(Clone)]
pub struct QuotaClient {
    waiters: Waiters,
    operator_grant: Option<Grant>,
}

impl QuotaClient {
    async fn ask(
        &self,
        node: &NodeHandle,
        call: impl AccountsCall,
    ) -> Result<Option<Committed>, QuotaError> {
        let (tx, rx) = oneshot::channel();
        let waiters = self.waiters.clone();
        let started = node
            .run(move |n, now| {
                n.with_service::<Accounts, _>(now, |a, kbr| -> Result<_, AccountsError> {
                    let req = call(a, kbr, now)?;
                    let mut w = waiters.lock().unwrap_or_else(|e| e.into_inner());
                    if w.len() >= MAX_WAITING {
                        return Ok(None);
                    }
                    w.insert(req, tx);
                    drop(w);
                    deliver(a, &waiters);
                    Ok(Some(()))
                })
            })
            .await?;
        match started {
            None => return Err(QuotaError::Net(NetError::Stopped)),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(None)) => return Err(QuotaError::Busy),
            Some(Ok(Some(()))) => {}
        }
        let answer = rx.await.map_err(|_| QuotaError::Net(NetError::Stopped))?;
        Ok(answer.result?)
    }

    /// [`QuotaClient::ask`] for a change: its committed entry.
    async fn change(
        &self,
        node: &NodeHandle,
        call: impl AccountsCall,
    ) -> Result<Committed, QuotaError> {
        self.ask(node, call)
            .await?
            .ok_or_else(|| QuotaError::Accounts(AccountsError::BadAnswer("no entry".into())))
    }

    /// A debit approval for storing `certs`' object (every salt of it), charged to its owner
    /// under `grant` (the operator's grant when none is given).
    pub async fn debit(
        &self,
        node: &NodeHandle,
        grant: Option<Grant>,
        certs: &[FileCertificate],
    ) -> Result<Committed, QuotaError> {
        let grant = grant
            .or_else(|| self.operator_grant.clone())
            .ok_or(QuotaError::NoGrant)?;
        let first = certs
            .first()
            .ok_or_else(|| QuotaError::BadGrant("no certificate".into()))?;
        let b = first.body.clone();
        let ids: Vec<Id> = certs.iter().map(|c| c.id()).collect();
        let bind = binding(&b.content_hash, b.size, b.replicas);
        let nonce = rand_nonce();
        let encoded = encode_certificates(certs);
        self.change(node, move |a, kbr, now| {
            let size = (b.size, b.replicas, b.date);
            a.debit(kbr, now, b.owner, (grant, encoded), ids, bind, size, nonce)
        })
        .await
    }

    /// Gives back the debit under which `object` of `owner` was stored, with the receipts of
    /// its reclaim as proof.
    pub async fn credit(
        &self,
        node: &NodeHandle,
        owner: PublicKey,
        object: Id,
        receipts: &[ReclaimReceipt],
    ) -> Result<Committed, QuotaError> {
        let proof = reclaim_proof(receipts);
        self.change(node, move |a, kbr, now| {
            a.credit(kbr, now, owner, object, proof)
        })
        .await
    }

    /// What `user` occupies, as the managers' proposer's log says.
    pub async fn balance(&self, node: &NodeHandle, user: PublicKey) -> Result<Balance, QuotaError> {
        let head = self
            .ask(node, move |a, kbr, now| a.balance(kbr, now, user))
            .await?;
        // An empty ledger has no head.
        Ok(head.map_or(
            Balance {
                used: 0,
                entries: 0,
            },
            |c| Balance {
                used: c.entry.balance,
                entries: c.entry.seq,
            },
        ))
    }
}

/// A debit's nonce: any value a client does not repeat; the time in nanoseconds mixed with a
/// process-wide counter will do (it is not a secret).
fn rand_nonce() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ n.rotate_left(48)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringvault_types::Grantee;

    #[test]
    fn a_supply_grant_caps_the_capacity_only_for_its_node_and_broker() {
        let dir = std::env::temp_dir().join(format!("ringvault-supply-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let broker = Identity::from_secret_bytes([3; 32]);
        let rogue = Identity::from_secret_bytes([4; 32]);
        let node = Id::hash(b"node");
        let now = unix_now();
        let write = |name: &str, by: &Identity, for_node: Id| {
            let g = Grant::issue(
                by,
                Grantee::Supply(for_node),
                1 << 30,
                (now - 60, now + 60),
                1,
            );
            let path = dir.join(name);
            let text = ringvault_types::armor(crate::broker::LABEL_GRANT, &g.encode());
            std::fs::write(&path, text).unwrap();
            path
        };
        let arg = |supply: Option<PathBuf>| QuotaArg {
            broker: vec![PathBuf::from(
                Id::from_bytes(broker.public_key().0).to_string(),
            )],
            grant: None,
            managers: 3,
            supply,
        };
        let ten = 10 << 30;
        assert_eq!(arg(None).supplied(node, ten).unwrap(), ten);
        let good = write("good", &broker, node);
        assert_eq!(arg(Some(good)).supplied(node, ten).unwrap(), 1 << 30);
        // The control above passes; another node's grant, or another broker's, does not.
        let other = write("other", &broker, Id::hash(b"another node"));
        let e = arg(Some(other)).supplied(node, ten).unwrap_err();
        assert!(
            format!("{e:#}").contains("not a supply grant for this node"),
            "{e:#}"
        );
        let forged = write("forged", &rogue, node);
        let e = arg(Some(forged)).supplied(node, ten).unwrap_err();
        assert!(format!("{e:#}").contains("does not trust"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
