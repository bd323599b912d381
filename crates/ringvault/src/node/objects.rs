//! PAST on a daemon node: the service with its redb store in the node's data dir, and the
//! client glue the HTTP API uses. Requests run inside the node's actor (through
//! [`NodeHandle::run`]); their results come back through the driver's poller, keyed by request
//! id. No protocol decision is made here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use ringvault_accounts::{Accounts, AccountsStats, Committed};
use ringvault_net::{NetError, NodeHandle, Poller, Services};
use ringvault_past::{check_certificates, sign_salts, AuditStats, LookupStats};
use ringvault_past::{
    FileCertificate, Kind, Past, PastConfig, PastError, PastEvent, ReclaimCertificate, RequestId,
    StoreError, StoreHealth, Usage, MAX_PENDING,
};
use ringvault_store::{RedbStore, StoreConfig};
use ringvault_types::{Contact, Grant, Id, Identity, PublicKey};

use crate::node::quota::{Balance, QuotaClient, QuotaError};
use tokio::sync::oneshot;

/// The store's file in a node's data dir.
pub const STORE_FILE: &str = "objects.redb";
/// Advertised capacity when none is given.
pub const DEFAULT_CAPACITY: u64 = 1 << 30;
/// redb page cache of all the stores of one process together, when none is given: a node
/// alone gets all of it, the nodes of a `ring` share it.
pub const DEFAULT_STORE_CACHE: u64 = 32 << 20;

type Waiters = Arc<Mutex<HashMap<RequestId, oneshot::Sender<PastEvent>>>>;

/// Parses a size such as `10GiB`, `500MB`, `4096` (bytes) or `1.5GiB`.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        u => bail!("unknown size unit {u:?} in {s:?}; use e.g. 10GiB, 500MB or a byte count"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("{s:?} is not a size; use e.g. 10GiB, 500MB or a byte count"))?;
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        bail!("{s:?} is out of range");
    }
    Ok(bytes as u64)
}

/// The store settings of `--capacity`, `--store-cache` and `--durability` for `nodes` nodes of
/// one process: they share one store file (and its cache), and each counts only its share of
/// the filesystem.
pub fn store_config(
    capacity: Option<&str>,
    cache: Option<&str>,
    durability: crate::cli::Durability,
    nodes: u16,
) -> Result<StoreConfig> {
    let capacity = match capacity {
        Some(c) => parse_size(c).context("--capacity")?,
        None => DEFAULT_CAPACITY,
    };
    let cache = match cache {
        Some(c) => parse_size(c).context("--store-cache")?,
        None => DEFAULT_STORE_CACHE,
    };
    let nodes = nodes.max(1);
    Ok(StoreConfig {
        capacity,
        cache_bytes: usize::try_from(cache).unwrap_or(usize::MAX).max(1 << 20),
        disk_share: u32::from(nodes),
        durability: durability.into(),
        ..StoreConfig::new(capacity)
    })
}

/// What a node does when its store file cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDamage {
    /// Stop with an error that names the file and the way out.
    Refuse,
    /// Move the file aside and start with an empty store under the same id; replica
    /// maintenance brings back what the node should hold (`--recover-store`).
    MoveAside,
}

/// Opens the node's store in `data_dir`, moving a damaged file aside when told to.
pub fn open_store(data_dir: &Path, config: StoreConfig, on_damage: OnDamage) -> Result<RedbStore> {
    let path = data_dir.join(STORE_FILE);
    match RedbStore::open_with(&path, config.clone()) {
        Ok(s) => Ok(s),
        Err(e) if e.is_damage() && on_damage == OnDamage::MoveAside => {
            let aside = RedbStore::move_aside(&path)
                .with_context(|| format!("{e}; moving it aside failed"))?;
            tracing::warn!(
                "{e}; moved it to {} and starting with an empty store: replica maintenance brings back what this node should hold",
                aside.display()
            );
            RedbStore::open_with(&path, config)
                .with_context(|| format!("cannot create a fresh object store {}", path.display()))
        }
        Err(e) if e.is_damage() => Err(anyhow!(
            "{e}\nstart the node with --recover-store to move the file aside and start empty under the same id (the ring's other replicas bring its objects back)"
        )),
        Err(e) => Err(e.into()),
    }
}

/// PAST for the node with `identity` under `config`, keeping its objects in `store`, and the
/// client the API uses.
pub fn past_services(
    identity: &Identity,
    store: RedbStore,
    config: PastConfig,
) -> Result<(Services, ObjectsClient)> {
    // The store commits on its own thread; when a batch ends, the node releases the receipts
    // that waited for it.
    let wake = Arc::new(tokio::sync::Notify::new());
    let w = wake.clone();
    store.set_waker(Arc::new(move || w.notify_one()));
    let key = Identity::from_secret_bytes(identity.secret_bytes());
    let past = Past::with_config(key, Box::new(store), config).map_err(|e| anyhow!("{e}"))?;
    let waiters: Waiters = Arc::default();
    let w = waiters.clone();
    let poller: Poller = Box::new(move |node, now| {
        let _ = node.with_service::<Past, _>(now, |p, _| deliver(p, &w));
    });
    Ok((
        Services {
            services: vec![Box::new(past)],
            poller: Some(poller),
            wake: Some(wake),
            intercept: None,
        },
        ObjectsClient {
            waiters,
            owner: Arc::new(Identity::from_secret_bytes(identity.secret_bytes())),
            quota: None,
        },
    ))
}

/// Hands every finished request to whoever waits for it (nobody, if the HTTP client left).
fn deliver(p: &mut Past, waiters: &Waiters) {
    while let Some(e) = p.poll_event() {
        let req = e.request();
        let tx = waiters.lock().ok().and_then(|mut w| w.remove(&req));
        if let Some(tx) = tx {
            let _ = tx.send(e);
        }
    }
}

/// Now in Unix seconds: the date certificates carry (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why a request to this node's PAST did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The node could not be asked (stopped, not joined).
    #[error(transparent)]
    Net(#[from] NetError),
    /// PAST refused the request at once: the caller's mistake (an invalid certificate, more
    /// replicas than the ring has nodes) or too many requests in flight. Nothing was sent.
    #[error(transparent)]
    Refused(PastError),
    /// The ring enforces quotas and the owner's managers gave no approval (over quota, no
    /// grant, ...). Nothing was stored.
    #[error(transparent)]
    Quota(#[from] QuotaError),
}

/// The node's storage as `/v1/status` and `/metrics` report it.
#[derive(Clone, Debug)]
pub struct StorageState {
    /// Space.
    pub usage: Usage,
    /// Faults of the store.
    pub health: StoreHealth,
    /// Replicas held here whose object is known to be on fewer than k nodes.
    pub under_replicated: usize,
    /// What audits of the leaf set counted, and the nodes this node suspects of dropping data
    /// (`None` with audits off).
    pub audits: Option<(AuditStats, Vec<Id>)>,
    /// How this node's lookups went.
    pub lookups: LookupStats,
}

/// What this node holds of an object.
#[derive(Clone, Debug)]
pub struct LocalHolding {
    /// Why it is held, and its size, if it is.
    pub kind: Option<(Kind, u64)>,
    /// Where this node diverted its replica, if it did.
    pub pointer: Option<Contact>,
}

/// Calls PAST's client interface on a running node.
#[derive(Clone)]
pub struct ObjectsClient {
    waiters: Waiters,
    /// The operator key: owner of what this node inserts.
    owner: Arc<Identity>,
    /// In a ring that enforces quotas: where inserts get their approvals.
    quota: Option<QuotaClient>,
}

impl ObjectsClient {
    /// The owner's public key, as file certificates carry it.
    pub fn owner(&self) -> &Identity {
        &self.owner
    }

    /// Inserts get a debit approval from `quota` first, and reclaims give it back after.
    pub fn set_quota(&mut self, quota: QuotaClient) {
        self.quota = Some(quota);
    }

    /// In a ring that enforces quotas, the approval for storing `certs`' object, charged to
    /// `grant` (the operator's when none); `None` in a ring without quotas. The certificates
    /// are checked first, so a malformed insert is not charged.
    async fn approval(
        &self,
        node: &NodeHandle,
        certs: &[FileCertificate],
        content: &[u8],
        grant: Option<Grant>,
    ) -> Result<Option<Committed>, RequestError> {
        let Some(q) = &self.quota else {
            return Ok(None);
        };
        check_certificates(certs, content).map_err(RequestError::Refused)?;
        Ok(Some(q.debit(node, grant, certs).await?))
    }

    /// What `user` occupies as their account managers say; `None` in a ring without quotas.
    pub async fn balance(
        &self,
        node: &NodeHandle,
        user: PublicKey,
    ) -> Result<Option<Balance>, QuotaError> {
        match &self.quota {
            Some(q) => q.balance(node, user).await.map(Some),
            None => Ok(None),
        }
    }

    /// The accounts this node manages and the service's counters; `None` in a ring without
    /// quotas.
    pub async fn accounts(
        &self,
        node: &NodeHandle,
    ) -> Result<Option<(usize, AccountsStats)>, NetError> {
        if self.quota.is_none() {
            return Ok(None);
        }
        node.run(|n, now| n.with_service::<Accounts, _>(now, |a, _| (a.accounts(), a.stats())))
            .await
    }

    /// After a reclaim of `id` by `owner`: gives its charge back (a ring with quotas). A
    /// credit that fails leaves the owner charged (never the reverse); it is logged.
    async fn give_back(&self, node: &NodeHandle, owner: PublicKey, id: Id, event: &PastEvent) {
        let (Some(q), PastEvent::Reclaimed(_, Ok(receipts))) = (&self.quota, event) else {
            return;
        };
        if let Err(e) = q.credit(node, owner, id, receipts).await {
            tracing::warn!("object {id} was reclaimed but its charge was not given back: {e}");
        }
    }

    /// Runs `call` on the node's PAST and waits for the event of the request it started.
    async fn request(
        &self,
        node: &NodeHandle,
        call: impl FnOnce(
                &mut Past,
                &mut dyn ringvault_overlay::Kbr,
                ringvault_types::Time,
            ) -> Result<RequestId, PastError>
            + Send
            + 'static,
    ) -> Result<PastEvent, RequestError> {
        let started = self.request_with(node, move |p, kbr, now| {
            call(p, kbr, now).map(|req| (req, ()))
        });
        started.await.map(|((), e)| e)
    }

    /// Like [`ObjectsClient::request`], with something `call` read from PAST as it started the
    /// request (in the same turn of the node, so no second round trip).
    async fn request_with<T: Send + 'static>(
        &self,
        node: &NodeHandle,
        call: impl FnOnce(
                &mut Past,
                &mut dyn ringvault_overlay::Kbr,
                ringvault_types::Time,
            ) -> Result<(RequestId, T), PastError>
            + Send
            + 'static,
    ) -> Result<(T, PastEvent), RequestError> {
        let (tx, rx) = oneshot::channel();
        let waiters = self.waiters.clone();
        let started = node
            .run(move |n, now| {
                n.with_service::<Past, _>(now, |p, kbr| {
                    let (req, seen) = call(p, kbr, now)?;
                    if let Ok(mut w) = waiters.lock() {
                        if w.len() < MAX_PENDING * 2 {
                            w.insert(req, tx);
                        }
                    }
                    deliver(p, &waiters);
                    Ok(seen)
                })
            })
            .await?;
        let seen = match started {
            Some(Err(e)) => return Err(RequestError::Refused(e)),
            Some(Ok(seen)) => seen,
            None => return Err(RequestError::Net(NetError::Stopped)),
        };
        let event = rx.await.map_err(|_| RequestError::Net(NetError::Stopped))?;
        Ok((seen, event))
    }

    /// Inserts `content` as `name` with `replicas` copies, owned by the operator key.
    pub async fn insert(
        &self,
        node: &NodeHandle,
        name: String,
        content: Vec<u8>,
        replicas: u8,
    ) -> Result<PastEvent, RequestError> {
        let owner = self.owner.clone();
        let date = unix_now();
        if self.quota.is_some() {
            let certs = sign_salts(&owner, &name, &content, replicas, date);
            return self.insert_signed(node, certs, content, None).await;
        }
        self.request(node, move |p, kbr, now| {
            p.insert(kbr, now, &owner, &name, content, replicas, date)
        })
        .await
    }

    /// Inserts `content` under certificates its owner signed (the owner's key is not here):
    /// file diversion moves on to the next certificate instead of signing one. In a ring that
    /// enforces quotas it is charged to `grant` first (the operator's grant when none).
    pub async fn insert_signed(
        &self,
        node: &NodeHandle,
        certs: Vec<FileCertificate>,
        content: Vec<u8>,
        grant: Option<Grant>,
    ) -> Result<PastEvent, RequestError> {
        let approval = self.approval(node, &certs, &content, grant).await?;
        self.request(node, move |p, kbr, now| {
            p.insert_approved(kbr, now, certs, content, approval)
        })
        .await
    }

    /// Looks object `id` up.
    pub async fn lookup(&self, node: &NodeHandle, id: Id) -> Result<PastEvent, RequestError> {
        self.request(node, move |p, kbr, now| p.lookup(kbr, now, id))
            .await
    }

    /// Looks object `id` up, and says whether this node held a copy of it before (a lookup may
    /// leave one), both in one turn of the node.
    pub async fn lookup_noting_local(
        &self,
        node: &NodeHandle,
        id: Id,
    ) -> Result<(bool, PastEvent), RequestError> {
        self.request_with(node, move |p, kbr, now| {
            let held = matches!(p.store().meta(&id), Ok(Some(_)));
            p.lookup(kbr, now, id).map(|req| (req, held))
        })
        .await
    }

    /// Looks up object `id`'s certificate (and manifest) only: no content moves, no copy is
    /// cached.
    pub async fn describe(&self, node: &NodeHandle, id: Id) -> Result<PastEvent, RequestError> {
        self.request(node, move |p, kbr, now| p.describe(kbr, now, id))
            .await
    }

    /// Reclaims object `id` (k replicas) with the operator key.
    pub async fn reclaim(
        &self,
        node: &NodeHandle,
        id: Id,
        k: u8,
    ) -> Result<PastEvent, RequestError> {
        let owner = self.owner.clone();
        let date = unix_now();
        let cert = ReclaimCertificate::issue(&owner, id, date);
        self.reclaim_signed(node, cert, k).await
    }

    /// Reclaims an object (k replicas) with a reclaim certificate its owner signed.
    pub async fn reclaim_signed(
        &self,
        node: &NodeHandle,
        cert: ReclaimCertificate,
        k: u8,
    ) -> Result<PastEvent, RequestError> {
        let (owner, id) = (cert.owner, cert.object);
        let event = self
            .request(node, move |p, kbr, now| p.reclaim(kbr, now, cert, k))
            .await?;
        self.give_back(node, owner, id, &event).await;
        Ok(event)
    }

    /// The node's storage accounting.
    pub async fn usage(&self, node: &NodeHandle) -> Result<Option<StorageState>, NetError> {
        node.run(|n, now| {
            n.with_service::<Past, _>(now, |p, kbr| StorageState {
                usage: p.store().usage(),
                health: p.store().health(),
                under_replicated: p.under_replicated(kbr, now),
                audits: p.audit_report(),
                lookups: p.lookup_stats(),
            })
        })
        .await
    }

    /// Why and how large this node holds `id`, from a copy read from its disk that passes the
    /// certificate check (a damaged copy is discarded by the store, as on every read). No
    /// network.
    pub async fn verified_local(
        &self,
        node: &NodeHandle,
        id: Id,
    ) -> Result<Result<Option<(Kind, u64)>, StoreError>, NetError> {
        node.run(move |n, now| {
            n.with_service::<Past, _>(now, |p, _| {
                let found = p.store().get(&id)?;
                Ok(found.map(|o| (o.kind, o.content.len() as u64)))
            })
        })
        .await
        .map(|r| r.unwrap_or(Ok(None)))
    }

    /// What this node holds of `id`.
    pub async fn local(&self, node: &NodeHandle, id: Id) -> Result<Option<LocalHolding>, NetError> {
        node.run(move |n, now| {
            n.with_service::<Past, _>(now, |p, _| LocalHolding {
                kind: p.store().meta(&id).ok().flatten(),
                pointer: p.store().pointer(&id).ok().flatten(),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1.5 KiB").unwrap(), 1536);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("").is_err());
    }
}
