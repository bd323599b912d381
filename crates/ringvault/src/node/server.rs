//! Server mode in this process (`ringvault node --mode server`, `ringvault ring --mode
//! server`): the server's database, starting it from genesis or from what it persisted, the
//! operations the HTTP API offers (objects and records, signed with the operator's key), and
//! the local ring of servers with its own CA and genesis.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use ringvault_bft::{Config, ConfigCert, Item, SignOnce};
use ringvault_net::{
    load_or_create_identity, start_server, ReadKind, RunningServer, ServerBoot, ServerDisk,
    ServerHandle, ServerNetConfig, ServerOpError, IDENTITY_FILE,
};
use ringvault_store::{NewFile, ServerDb};
use ringvault_types::{
    record_key, CertRequest, Id, Identity, NodeCertificate, PublicKey, Record, RecordError,
    RecordValue, RevocationList,
};
use tracing::warn;

use crate::ca::{self, Ca};

/// A server's database in its data dir.
pub const SERVER_DB: &str = "server.redb";

/// The genesis file of a local ring, in the ring's directory.
pub const LOCAL_GENESIS: &str = "genesis.conf";

/// Validity of the certificates a local ring's CA issues (reissued at every start).
const LOCAL_VALIDITY: u64 = 30 * 86_400;

struct Disk(ServerDb);

impl ServerDisk for Disk {
    fn sign_once(&self, record: &SignOnce) -> Result<(), String> {
        self.0.put_sign_once(record).map_err(|e| e.to_string())
    }

    fn config(&self, config: &Config, cert: Option<&ConfigCert>) -> Result<(), String> {
        self.0.put_config(config, cert).map_err(|e| e.to_string())
    }

    fn unsynced(&self, ranges: &[(Id, Id)]) -> Result<(), String> {
        self.0.put_unsynced(ranges).map_err(|e| e.to_string())
    }

    fn items(&self, items: &[Item]) -> Result<(), String> {
        self.0.put_items(items).map_err(|e| e.to_string())
    }

    fn recovered(&self) -> Result<(), String> {
        self.0.recovered().map_err(|e| e.to_string())
    }

    fn leaving(&self) -> Result<(), String> {
        self.0.put_leaving().map_err(|e| e.to_string())
    }
}

/// What a server runs with besides its data dir.
pub struct ServerSetup {
    /// QUIC address.
    pub listen: SocketAddr,
    /// The address peers dial, if not `listen`.
    pub advertise: Option<SocketAddr>,
    /// The ring CA's key.
    pub ca: PublicKey,
    /// This server's certificate.
    pub cert: NodeCertificate,
    /// Revoked certificates.
    pub revocations: RevocationList,
    /// The ring's genesis configuration (checked against the CA).
    pub genesis: Config,
}

/// Creates `dir`'s server database beside a new key, so that a database missing later, with
/// the key still there, means the server lost its data (see [`start`]).
pub fn create_db(dir: &Path) -> Result<()> {
    ServerDb::open(&dir.join(SERVER_DB), NewFile::Fresh)
        .map(drop)
        .map_err(anyhow::Error::from)
}

/// Loads (or makes) the key in `dir`; true when it was made now. A database without its key
/// is refused: a new key must not inherit another server's sign-once record and items.
pub fn load_key(dir: &Path) -> Result<(Identity, bool)> {
    let fresh = !dir.join(IDENTITY_FILE).exists();
    if fresh && dir.join(SERVER_DB).exists() {
        bail!(
            "{} holds a server's state but its key ({IDENTITY_FILE}) is gone; restore the key, or move the data dir aside to start a new server",
            dir.display()
        );
    }
    let identity = load_or_create_identity(dir)?;
    if fresh {
        create_db(dir)?;
    }
    Ok((identity, fresh))
}

/// Starts the server whose key and database are in `dir`. A server whose key is there but
/// whose database is not lost its data: it may have signed votes it no longer remembers, so it
/// signs nothing in the epochs it could have signed in before (`Membership`'s wiped rule).
pub async fn start(dir: &Path, identity: Identity, setup: ServerSetup) -> Result<RunningServer> {
    let path = dir.join(SERVER_DB);
    let new = if path.exists() {
        NewFile::Fresh
    } else {
        warn!(
            "{} is missing but this server's key is in {}: treating the server as one that lost its data (it signs nothing in the epochs it may have signed in before, and takes its key ranges over from the other replicas)",
            path.display(),
            dir.display()
        );
        NewFile::AfterLoss
    };
    let (db, state) = ServerDb::open(&path, new)?;
    let genesis = setup.genesis.hash();
    match state.genesis {
        Some(g) if g != genesis => bail!(
            "{} holds the state of the ring whose genesis is {}, not {} (--genesis); give that ring's genesis, or a fresh data dir",
            path.display(),
            g.short(),
            genesis.short()
        ),
        Some(_) => {}
        None if state.config.is_some() => bail!(
            "{} holds a server's state but not the genesis it grew from; start it with a fresh data dir",
            path.display()
        ),
        None => db.put_genesis(&genesis)?,
    }
    let wiped = state.wiped;
    let (config, cert) = match state.config {
        Some((c, cert)) => (Arc::new(c), cert),
        None => (Arc::new(setup.genesis), None),
    };
    let boot = ServerBoot {
        config,
        cert,
        sign_once: state.sign_once,
        wiped,
        items: state.items,
        unsynced: state.unsynced,
        leaving: state.leaving,
    };
    let running = start_server(
        identity,
        ServerNetConfig {
            listen: setup.listen,
            advertise: setup.advertise,
            ca: setup.ca,
            cert: setup.cert,
            revocations: setup.revocations,
        },
        boot,
        Box::new(Disk(db)),
        ringvault_net::ServerHooks::default(),
    )
    .await?;
    Ok(running)
}

/// Why a record write failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordPutError {
    /// The record is not valid (name, size, signature).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The version asked for is not above the one held.
    #[error("version {asked} is not above the current version {held}")]
    Stale {
        /// The version asked for.
        asked: u64,
        /// The highest version a quorum holds.
        held: u64,
    },
    /// The quorum operation failed.
    #[error(transparent)]
    Server(#[from] ServerOpError),
}

/// What a write stored.
pub struct RecordWritten {
    /// The record.
    pub record: Record,
    /// Signed acks (at least a quorum).
    pub acks: usize,
}

/// Server-mode operations for the HTTP API, with the operator's key for records it signs.
#[derive(Clone)]
pub struct ServerApi {
    pub handle: ServerHandle,
    operator: Arc<Identity>,
}

impl ServerApi {
    pub fn new(handle: ServerHandle, operator: &Identity) -> Self {
        ServerApi {
            handle,
            operator: Arc::new(Identity::from_secret_bytes(operator.secret_bytes())),
        }
    }

    /// The operator's key (the owner of records this node signs).
    pub fn operator(&self) -> PublicKey {
        self.operator.public_key()
    }

    /// Stores `bytes` as an immutable object under their BLAKE3 hash; the id and the acks.
    pub async fn put_object(&self, bytes: Vec<u8>) -> Result<(Id, usize), ServerOpError> {
        let item = Item::Object(bytes);
        let id = item.key();
        Ok((id, self.handle.put(item).await?))
    }

    /// The object `id` (`None`: not found by a quorum).
    pub async fn get_object(&self, id: Id) -> Result<Option<Vec<u8>>, ServerOpError> {
        match self.handle.get(id, ReadKind::Object).await? {
            Some(Item::Object(bytes)) => Ok(Some(bytes)),
            _ => Ok(None),
        }
    }

    /// The record `owner`/`name` (an atomic read: the highest version of a quorum, written back
    /// until a quorum holds it).
    pub async fn get_record(
        &self,
        owner: PublicKey,
        name: &str,
    ) -> Result<Option<Record>, ServerOpError> {
        match self
            .handle
            .get(record_key(&owner, name), ReadKind::Record)
            .await?
        {
            Some(Item::Record(r)) => Ok(Some(r)),
            _ => Ok(None),
        }
    }

    /// Writes the operator's record `name` at `version`, or one above the highest a quorum
    /// holds.
    pub async fn put_record(
        &self,
        name: &str,
        value: RecordValue,
        version: Option<u64>,
    ) -> Result<RecordWritten, RecordPutError> {
        let held = self
            .get_record(self.operator(), name)
            .await?
            .map_or(0, |r| r.body.version);
        let version = match version {
            Some(v) if v <= held => return Err(RecordPutError::Stale { asked: v, held }),
            Some(v) => v,
            None => held + 1,
        };
        let record = Record::sign(&self.operator, name, version, ca::unix_now(), value)?;
        self.put_signed(record).await
    }

    /// Writes a record signed by its owner.
    pub async fn put_signed(&self, record: Record) -> Result<RecordWritten, RecordPutError> {
        record.verify()?;
        let acks = self.handle.put(Item::Record(record.clone())).await?;
        Ok(RecordWritten { record, acks })
    }
}

/// A local ring's CA, genesis and the servers' certificates: made on first use in `dir`,
/// certificates reissued at every start (same keys, same addresses).
pub struct LocalServers {
    pub ca: PublicKey,
    pub genesis: Config,
    /// Per server: its data dir, key, listen address and certificate.
    pub servers: Vec<(PathBuf, Identity, SocketAddr, NodeCertificate)>,
}

impl LocalServers {
    /// Prepares `n` servers on 127.0.0.1:(base_port + i) under `dir` with epochs of
    /// `epoch_ms`; a genesis already in `dir` is reused (a restarted local ring).
    pub fn prepare(dir: &Path, n: u16, base_port: u16, epoch_ms: u64) -> Result<LocalServers> {
        if n < 4 {
            bail!("--nodes must be at least 4 in server mode: a replica group and the committee are 3f + 1 = 4 servers");
        }
        let ca_dir = dir.join("ca");
        let mut ca = if ca_dir.join("ca.key").exists() {
            Ca::open(&ca_dir)?
        } else {
            Ca::init(&ca_dir, None)?
        };
        let mut servers = Vec::new();
        for i in 0..n {
            let port = if base_port == 0 {
                free_udp_port()?
            } else {
                base_port.checked_add(i).ok_or_else(|| {
                    anyhow!("--base-port {base_port} + {i} is past 65535; pick a lower one")
                })?
            };
            let listen: SocketAddr = ([127, 0, 0, 1], port).into();
            let server_dir = dir.join(format!("server-{i}"));
            let (identity, _) = load_key(&server_dir)?;
            let req = CertRequest::new(&identity, vec![listen])?;
            let cert = ca
                .issue(&req, LOCAL_VALIDITY, true)
                .context("issuing a local server certificate")?;
            servers.push((server_dir, identity, listen, cert));
        }
        let genesis_path = dir.join(LOCAL_GENESIS);
        let genesis = if genesis_path.exists() {
            ca::load_genesis(&genesis_path, &ca.public_key())?
        } else {
            let params = ca::server_params(epoch_ms, 3, 1)?;
            let certs = servers.iter().map(|s| s.3.clone()).collect();
            let genesis = ca.genesis(certs, params, 86_400)?;
            ca::write_genesis(&genesis, &genesis_path)?;
            genesis.config
        };
        Ok(LocalServers {
            ca: ca.public_key(),
            genesis,
            servers,
        })
    }
}

/// A UDP port free right now on 127.0.0.1 (for certificates, which must name the port before
/// the server binds it).
fn free_udp_port() -> Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").context("cannot find a free UDP port")?;
    Ok(s.local_addr()?.port())
}
