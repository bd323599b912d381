//! Signed mutable records on a daemon node: the service, and the client glue the HTTP API uses.
//! Requests run inside the node's actor; their results come back through the driver's poller,
//! keyed by request id. The records are signed here with the node's operator key (the owner of
//! what this node writes). No protocol decision is made here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ringvault_net::{NetError, NodeHandle, Poller, Services};
use ringvault_records::{
    Notice, ReadResult, RecordStore, Records, RecordsConfig, RecordsError, RecordsEvent, RequestId,
    Watcher, Written,
};
use ringvault_types::{
    record_key, Duration, Id, Identity, PublicKey, Record, RecordError, RecordValue,
};
use tokio::sync::oneshot;

use crate::node::objects::unix_now;
use crate::node::topics::{Subscription, TopicEvent, TopicsClient};

type Waiters = Arc<Mutex<HashMap<RequestId, oneshot::Sender<RecordsEvent>>>>;

/// At most this many requests wait for their results at once.
const MAX_WAITING: usize = 4096;

/// Why a records request did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum RecordsRequestError {
    /// The node could not be asked.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The record could not be made (a bad name, a value too large).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The service refused or failed the request.
    #[error(transparent)]
    Records(#[from] RecordsError),
    /// Too many requests are waiting.
    #[error("too many record requests in flight; retry shortly")]
    Busy,
    /// Watching needs groups (Scribe), which this node does not run.
    #[error("this node runs without groups, so records cannot be watched here")]
    NoGroups,
    /// Subscribing to the record's topic failed.
    #[error("cannot watch the record: {0}")]
    Watch(String),
}

/// The topic a record's new versions are published to: each record key is also a topic.
pub fn record_topic(key: &Id) -> String {
    format!("record:{key}")
}

/// The file in a node's data dir that says when the node last ran (unix seconds), rewritten
/// every [`HEARTBEAT`]: on a restart it tells the records service how long its records were
/// away from the ring.
pub const ALIVE_FILE: &str = "alive";
/// How often [`ALIVE_FILE`] is rewritten.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long the node whose data dir is `dir` has been down: since [`ALIVE_FILE`] was last
/// written, plus the heartbeat it may have missed. `None` when unknown (no file, or a clock
/// that went back): its records are then re-checked before they are served.
pub fn time_away(dir: &Path) -> Option<Duration> {
    let text = std::fs::read_to_string(dir.join(ALIVE_FILE)).ok()?;
    let last: u64 = text.trim().parse().ok()?;
    let away = unix_now().checked_sub(last)?;
    Some(Duration::from_secs(away + HEARTBEAT.as_secs()))
}

/// Writes [`ALIVE_FILE`] in `dir` once `node` is in the ring, then every [`HEARTBEAT`] while it
/// is and holds no suspect records. A heartbeat that cannot be written is logged as a warning
/// once: after a restart the records would be re-checked. (A node that runs cut off from the ring still writes it: only
/// being down is measured.)
pub fn keep_alive(dir: PathBuf, node: NodeHandle) {
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            // Written as soon as the node is in the ring, then every heartbeat; not while
            // suspect records are re-checked (a restart then must re-check them again).
            let suspect = node
                .run(|n, now| n.with_service::<Records, _>(now, |r, _| r.suspect()))
                .await
                .ok()
                .flatten()
                .unwrap_or(0);
            if !node.is_ready() || suspect > 0 {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            let path = dir.join(ALIVE_FILE);
            let tmp = dir.join(format!("{ALIVE_FILE}.tmp"));
            let wrote = std::fs::write(&tmp, unix_now().to_string())
                .and_then(|()| std::fs::rename(&tmp, &path));
            match wrote {
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!("cannot write {}: {e}; after a restart this node's records are re-checked with the other replicas before they are served", path.display());
                }
                Err(_) => {}
                Ok(()) => warned = false,
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    });
}

/// How a node's records service starts.
pub struct RecordsSetup {
    /// Its policy (the mode's: `Mode::records`).
    pub config: RecordsConfig,
    /// Where its records are kept (the node's store file).
    pub store: Box<dyn RecordStore>,
    /// How long the records were away from the ring ([`time_away`]).
    pub away: Option<Duration>,
}

/// Registers the records service on a node with `identity` (it signs acknowledgements and,
/// as the operator key, the records the node writes), as `setup` says; with `topics`, every
/// version written through this node is published to its record's topic for watchers.
pub fn add_records(
    services: &mut Services,
    identity: &Identity,
    setup: RecordsSetup,
    topics: Option<TopicsClient>,
) -> RecordsClient {
    let RecordsSetup {
        config,
        store,
        away,
    } = setup;
    let waiters: Waiters = Arc::default();
    let key = Identity::from_secret_bytes(identity.secret_bytes());
    let records = Records::with_store(key, config, store, away);
    if records.suspect() > 0 {
        tracing::info!(
            "{} records were away from the ring too long (or for an unknown time): each is served again once another replica shows it holds it",
            records.suspect()
        );
    }
    services.services.push(Box::new(records));
    let w = waiters.clone();
    let mut before = services.poller.take();
    let poller: Poller = Box::new(move |node, now| {
        if let Some(p) = before.as_mut() {
            p(node, now);
        }
        let _ = node.with_service::<Records, _>(now, |r, _| deliver(r, &w));
    });
    services.poller = Some(poller);
    RecordsClient {
        waiters,
        owner: Arc::new(Identity::from_secret_bytes(identity.secret_bytes())),
        topics,
    }
}

fn deliver(r: &mut Records, waiters: &Waiters) {
    while let Some(e) = r.poll_event() {
        let req = match &e {
            RecordsEvent::Written(req, _) | RecordsEvent::Read(req, _) => *req,
        };
        if let Some(tx) = waiters.lock().ok().and_then(|mut w| w.remove(&req)) {
            let _ = tx.send(e);
        }
    }
}

/// Calls the records service's client interface on a running node.
#[derive(Clone)]
pub struct RecordsClient {
    waiters: Waiters,
    owner: Arc<Identity>,
    topics: Option<TopicsClient>,
}

impl RecordsClient {
    /// The operator key: the owner of the records this node writes.
    pub fn owner(&self) -> PublicKey {
        self.owner.public_key()
    }

    async fn request(
        &self,
        node: &NodeHandle,
        call: impl FnOnce(
                &mut Records,
                &mut dyn ringvault_overlay::Kbr,
                ringvault_types::Time,
            ) -> Result<RequestId, RecordsError>
            + Send
            + 'static,
    ) -> Result<RecordsEvent, RecordsRequestError> {
        let (tx, rx) = oneshot::channel();
        let waiters = self.waiters.clone();
        let started = node
            .run(move |n, now| {
                n.with_service::<Records, _>(
                    now,
                    |r, kbr| -> Result<Option<RequestId>, RecordsError> {
                        // Full before anything is sent: a request refused as busy must not run.
                        let mut w = waiters.lock().unwrap_or_else(|e| e.into_inner());
                        if w.len() >= MAX_WAITING {
                            return Ok(None);
                        }
                        let req = call(r, kbr, now)?;
                        w.insert(req, tx);
                        drop(w);
                        deliver(r, &waiters);
                        Ok(Some(req))
                    },
                )
            })
            .await?;
        match started {
            None => Err(NetError::Stopped.into()),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(None)) => Err(RecordsRequestError::Busy),
            Some(Ok(Some(_))) => rx.await.map_err(|_| NetError::Stopped.into()),
        }
    }

    /// Reads record `name` of `owner`.
    pub async fn get(
        &self,
        node: &NodeHandle,
        owner: PublicKey,
        name: &str,
    ) -> Result<ReadResult, RecordsRequestError> {
        let key = record_key(&owner, name);
        match self
            .request(node, move |r, kbr, now| Ok(r.get(kbr, now, key)))
            .await?
        {
            RecordsEvent::Read(_, r) => Ok(r?),
            RecordsEvent::Written(..) => Err(NetError::Stopped.into()),
        }
    }

    /// Writes `value` as record `name` of this node's operator, at `version`, or one above the
    /// highest version the replicas hold; done at `quorum` acknowledgements (`None`: k).
    pub async fn put(
        &self,
        node: &NodeHandle,
        name: &str,
        value: RecordValue,
        version: Option<u64>,
        quorum: Option<u8>,
    ) -> Result<Written, RecordsRequestError> {
        let version = match version {
            Some(v) => v,
            None => {
                let held = self.get(node, self.owner(), name).await?;
                held.record.map_or(1, |r| r.body.version.saturating_add(1))
            }
        };
        let record = Record::sign(&self.owner, name, version, unix_now(), value)?;
        self.put_signed(node, record, quorum).await
    }

    /// What this node's records service holds and has sent, for `/metrics`.
    pub async fn state(&self, node: &NodeHandle) -> Result<RecordsState, RecordsRequestError> {
        let state = node
            .run(|n, now| {
                n.with_service::<Records, _>(now, |r, _| RecordsState {
                    held: r.count(),
                    bytes: r.used(),
                    suspect: r.suspect(),
                    stats: r.stats(),
                })
            })
            .await?;
        state.ok_or(NetError::Stopped.into())
    }

    /// What this node holds of the record under `key` as a replica (and serves).
    pub async fn held(
        &self,
        node: &NodeHandle,
        key: Id,
    ) -> Result<Option<Record>, RecordsRequestError> {
        let held = node
            .run(move |n, now| n.with_service::<Records, _>(now, |r, _| r.held(&key).cloned()))
            .await?;
        Ok(held.flatten())
    }

    /// Writes `record`, signed by its owner (any key), and announces it to its watchers;
    /// done at `quorum` acknowledgements (`None`: k).
    pub async fn put_signed(
        &self,
        node: &NodeHandle,
        record: Record,
        quorum: Option<u8>,
    ) -> Result<Written, RecordsRequestError> {
        let written = match self
            .request(node, move |r, kbr, now| r.put(kbr, now, record, quorum))
            .await?
        {
            RecordsEvent::Written(_, w) => w?,
            RecordsEvent::Read(..) => return Err(NetError::Stopped.into()),
        };
        if let Some(t) = &self.topics {
            // The whole record when it fits a message; a bare notice otherwise, on which
            // watchers read the record themselves. Either way watchers verify what they show.
            let mut data = written.record.encode();
            if data.len() > ringvault_scribe::MAX_PAYLOAD {
                data = written.record.body.version.to_le_bytes().to_vec();
            }
            let topic = record_topic(&written.record.key());
            if let Err(e) = t.publish(node, &topic, data).await {
                tracing::debug!("cannot announce record version on {topic}: {e}");
            }
        }
        Ok(written)
    }

    /// Watches record `name` of `owner`: subscribes this node to the record's topic and yields
    /// each new version, verified (the owner's signature, this record's key, higher than the
    /// last shown) and in order; a message that is not such a record (anyone can publish to a
    /// topic) makes the watcher read the record itself.
    pub async fn watch(
        &self,
        node: &NodeHandle,
        owner: PublicKey,
        name: &str,
    ) -> Result<Watch, RecordsRequestError> {
        let topics = self.topics.as_ref().ok_or(RecordsRequestError::NoGroups)?;
        let key = record_key(&owner, name);
        let sub = topics
            .subscribe(node, &record_topic(&key))
            .await
            .map_err(|e| RecordsRequestError::Watch(e.to_string()))?;
        Ok(Watch {
            client: self.clone(),
            node: node.clone(),
            owner,
            name: name.to_string(),
            sub,
            watcher: Watcher::new(key),
        })
    }
}

/// A node's records service in numbers.
#[derive(Clone, Copy, Debug)]
pub struct RecordsState {
    /// Records held (suspect ones included).
    pub held: usize,
    /// Their encoded bytes.
    pub bytes: u64,
    /// Records waiting for another replica to confirm them after a long absence.
    pub suspect: usize,
    /// What the service has sent, by purpose.
    pub stats: ringvault_records::RecordsStats,
}

/// A record being watched (see [`RecordsClient::watch`]).
pub struct Watch {
    client: RecordsClient,
    node: NodeHandle,
    owner: PublicKey,
    name: String,
    sub: Subscription,
    watcher: Watcher,
}

impl Watch {
    /// Reads the record now: its current state, to start from (shown if there is one).
    pub async fn current(&mut self) -> Result<Option<Record>, RecordsRequestError> {
        let r = self.client.get(&self.node, self.owner, &self.name).await?;
        Ok(r.record.and_then(|r| self.watcher.newer(r)))
    }

    /// The next new version; `None` when the node stops.
    pub async fn next(&mut self) -> Option<Record> {
        loop {
            let TopicEvent::Message { data, .. } = self.sub.rx.recv().await? else {
                continue;
            };
            let shown = match self.watcher.judge(&data) {
                Notice::Show(r) => Some(r),
                Notice::Read => self.current().await.ok().flatten(),
                Notice::Ignore => None,
            };
            if shown.is_some() {
                return shown;
            }
        }
    }
}
