//! The command line of everything that runs or talks to real nodes (`node`, `ring`, `status`,
//! `route`, `put`, `get`, `reclaim`, `stat`, the topic commands, `bench route`, `bench
//! storage`): the arguments, and the client commands, which talk to a node's HTTP API.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

pub mod client;
pub mod objects;
pub mod output;
pub mod owner_key;
pub mod records;
pub mod topics;

/// Commands that run or talk to real nodes.
#[derive(Subcommand)]
pub enum NetCommand {
    /// Run one node as a daemon: QUIC on --listen, the HTTP API and dashboard on --http.
    /// Ctrl-C or SIGTERM leaves the ring gracefully.
    Node(Box<NodeArgs>),
    /// Start N nodes on loopback in this process, each joining through the previous ones, and
    /// print their HTTP URLs; runs until Ctrl-C.
    Ring(RingArgs),
    /// Show a node's id, leaf set, routing table fill and counters.
    Status(ClientArgs),
    /// Route a probe to KEY's root and show the hops (KEY: 64 hex digits, e.g. from
    /// `ringvault id NAME`).
    Route {
        /// The key.
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Store FILE in the ring, owned by your owner key, and print its id.
    ///
    /// The certificates are signed here with your owner key (created on first use in your
    /// config dir; see --key); the node never sees the key. Files over 4 MiB are split here
    /// into 4 MiB chunks, each signed and stored as its own object, plus a manifest under
    /// the name; the file is read one chunk at a time.
    #[command(after_help = "Examples:\n  \
        ringvault put notes.txt\n  \
        ringvault put big.iso --name iso/2024 --replicas 5 --json\n  \
        ringvault put notes.txt --operator   # owned by the node's key, like curl -T")]
    Put {
        /// The file.
        file: PathBuf,
        /// The object's name [default: the file name]; the id derives from it and the owner.
        #[arg(long)]
        name: Option<String>,
        /// Copies kept on distinct nodes.
        #[arg(long, default_value_t = 3)]
        replicas: u8,
        #[command(flatten)]
        key: KeyArgs,
        /// Your quota grant (`ringvault broker grant --user YOUR_KEY`), for a ring that
        /// enforces storage quotas: the object's size × replicas is charged to it, and a put
        /// over it is refused (403 quota_exceeded) with nothing stored.
        #[arg(long, value_name = "FILE")]
        grant: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Fetch object ID (verified against its certificate) to stdout or -o FILE.
    ///
    /// With -v, says on stderr which node served it and how many overlay hops the lookup
    /// took; with --json, prints that and the size as JSON on stderr once the download is
    /// complete. stdout only ever carries the object's bytes.
    Get {
        /// The object id (64 hex digits).
        id: String,
        /// Write to this file instead of stdout ("-" is stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Say on stderr which node served the object, and the hops.
        #[arg(short, long)]
        verbose: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reclaim object ID, signed with your owner key (it must be the key that stored it).
    Reclaim {
        /// The object id (64 hex digits).
        id: String,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show what your objects occupy on the ring (size × replicas), as your account managers
    /// say, in a ring that enforces storage quotas (`--broker`). With --operator, the node's
    /// operator key's; with OWNER (64 hex digits), anyone's.
    Quota {
        /// Whose balance [default: yours].
        owner: Option<String>,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show object ID's certificate facts, root and replica set.
    Stat {
        /// The object id (64 hex digits).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Publish MESSAGE (or stdin when omitted) to every subscriber of TOPIC.
    Publish {
        /// The topic name (1 to 256 bytes; the same name is the same topic on every node).
        topic: String,
        /// The message (1 byte to 64 KiB) [default: read stdin].
        message: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Subscribe the node to TOPIC and print its messages as they arrive, until Ctrl-C.
    Subscribe {
        /// The topic name.
        topic: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send MESSAGE (or stdin when omitted) to one subscriber of TOPIC and print which one
    /// took it.
    Anycast {
        /// The topic name.
        topic: String,
        /// The message (1 byte to 64 KiB) [default: read stdin].
        message: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the topics the node takes part in, with its role and children.
    Topics(ClientArgs),
    /// Signed mutable records: values up to 64 KiB under a name, signed by the node's operator
    /// key, kept on the k nodes closest to H(owner, name), versioned (higher wins).
    #[command(subcommand)]
    Record(RecordCommand),
    /// Hand a revocation list from the ring's CA (`ringvault ca revoke` writes one) to a
    /// secure node; it checks the CA's signature, adopts it if newer, shuts out the revoked
    /// nodes and passes it on along its leaf set.
    PushRevocations {
        /// The revocation list file.
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Benchmarks on a local ring.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Server mode: a server's configuration and committee, and leaving the ring.
    #[command(subcommand)]
    Server(ServerCommand),
}

/// `ringvault server ...`.
#[derive(Subcommand)]
pub enum ServerCommand {
    /// Show a server's epoch, configuration hash, committee, members, its key range, pending
    /// requests and counters.
    Status(ClientArgs),
    /// Ask the committee to let the server leave: it stays until the next epoch change, its
    /// key ranges move to the servers after it, and then its daemon exits.
    Leave(ClientArgs),
}

/// Options of `ringvault node`.
#[derive(Args)]
pub struct NodeArgs {
    /// Directory for the node's identity and state (created if missing); a node restarted on
    /// the same directory keeps its id.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// QUIC (UDP) address to listen on [default: 127.0.0.1:7000]; 0.0.0.0:PORT or [::]:PORT
    /// listens on every interface.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The QUIC address other nodes dial (HOST:PORT; port 0: the one bound), when it is not
    /// the listen address: behind a NAT, a load balancer or in a container. Without it a node
    /// listening on every interface advertises its first address that is neither loopback nor
    /// link-local, and logs which.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// HTTP API address [default: 127.0.0.1:8000]. Off loopback the API has no
    /// authentication: anyone who reaches it can store and reclaim as this node.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// A node to join through (HOST:PORT of its QUIC address); repeatable, tried in order.
    /// None starts a new ring.
    #[arg(long)]
    pub bootstrap: Vec<String>,
    /// TOML file with the same settings (data_dir, listen, http, bootstrap, [overlay]); flags
    /// override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Storage this node offers the ring, e.g. 10GiB or 500MB [default: 1GiB]; objects live in
    /// DATA_DIR/objects.redb. The node never claims more than its filesystem has free: when
    /// the disk fills first, it refuses new replicas (the ring diverts them), keeps every one it
    /// holds, and takes writes again once the disk has room.
    #[arg(long)]
    pub capacity: Option<String>,
    /// Memory for the object store's page cache, e.g. 64MiB [default: 32MiB].
    #[arg(long, value_name = "SIZE")]
    pub store_cache: Option<String>,
    #[command(flatten)]
    pub durability: DurabilityArg,
    /// Close an HTTP connection whose request head has not arrived whole within this many
    /// milliseconds, or that has been idle between requests that long (a streamed response is
    /// not cut) [default: 10000].
    #[arg(long, value_name = "MS")]
    pub http_header_timeout_ms: Option<u64>,
    /// HTTP connections open at once, topic event streams included; more are closed at once
    /// [default: 1024].
    #[arg(long, value_name = "N")]
    pub http_max_connections: Option<usize>,
    /// A file holding the HTTP API's token (at least 16 characters; readable by its owner
    /// only): PUT, DELETE, POST and topic event streams then need `Authorization: Bearer
    /// TOKEN`. The CLI sends it when RINGVAULT_HTTP_TOKEN names the same file (or it is
    /// http.token in the CLI's config dir).
    #[arg(long, env = "RINGVAULT_HTTP_TOKEN", value_name = "FILE")]
    pub http_token: Option<PathBuf>,
    /// Reads need the token too (all but /, /v1/status and /metrics).
    #[arg(long, requires = "http_token")]
    pub http_token_reads: bool,
    /// A DNS name this node's API may be reached by (repeatable). IP addresses and localhost
    /// always work; any other Host is refused, so a web page on a name rebound to the node's
    /// address cannot use it.
    #[arg(long, value_name = "NAME")]
    pub http_host: Vec<String>,
    #[command(flatten)]
    pub mode: ModeArg,
    #[command(flatten)]
    pub quota: crate::node::quota::QuotaArg,
    /// The ring CA's public key (its ca.pub, or 64 hex digits); required in secure and server
    /// mode.
    #[arg(long, value_name = "FILE", required_if_eq("mode", "secure"))]
    pub ca: Option<PathBuf>,
    /// This node's certificate from the ring's CA; required in secure and server mode. In
    /// secure mode the node reloads it when the file changes (renewal without a restart) and
    /// warns a week before it expires.
    #[arg(long, value_name = "FILE", required_if_eq("mode", "secure"))]
    pub cert: Option<PathBuf>,
    /// Server mode: the ring's genesis configuration (`ringvault ca genesis` signs it). A
    /// server in it starts as a member; any other server asks the committee to join.
    #[arg(long, value_name = "FILE")]
    pub genesis: Option<PathBuf>,
    /// A revocation list from the ring's CA: in secure mode loaded at start and whenever the
    /// file changes, and passed on to the ring; in server mode loaded at start.
    #[arg(long, value_name = "FILE", requires = "ca")]
    pub revocations: Option<PathBuf>,
    /// Write a certificate signing request for this node's key (from --data-dir) and its
    /// advertised address (--advertise, else --listen) to FILE, and exit. Give the file to the
    /// ring's CA (`ringvault ca issue --request FILE`); the secret key never leaves DATA_DIR.
    #[arg(long, value_name = "FILE")]
    pub cert_request: Option<PathBuf>,
    /// When DATA_DIR/objects.redb cannot be read (truncated or damaged beyond repair), move it
    /// aside to objects.redb.damaged-N and start with an empty store under the same node id;
    /// the ring's other replicas bring this node's objects back. Without it such a node stops
    /// with an error naming the file.
    #[arg(long)]
    pub recover_store: bool,
}

/// Options of `ringvault ring`.
#[derive(Args)]
pub struct RingArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 8)]
    pub nodes: u16,
    /// Node i listens for QUIC on 127.0.0.1:(base-port + i); 0 picks free ports.
    #[arg(long, default_value_t = 7000)]
    pub base_port: u16,
    /// Node i serves HTTP on 127.0.0.1:(http-base-port + i); 0 picks free ports.
    #[arg(long, default_value_t = 8000)]
    pub http_base_port: u16,
    /// Parent directory of the nodes' data dirs [default: a temporary directory].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the temporary data directory on exit.
    #[arg(long)]
    pub keep: bool,
    /// Storage each node offers, e.g. 10GiB or 500MB [default: 1GiB]. The nodes share the
    /// filesystem of --data-dir: each counts only its share of the free space.
    #[arg(long)]
    pub capacity: Option<String>,
    /// Memory for the page caches of all the nodes' object stores together, e.g. 64MiB
    /// [default: 32MiB], split evenly between the nodes.
    #[arg(long, value_name = "SIZE")]
    pub store_cache: Option<String>,
    #[command(flatten)]
    pub durability: DurabilityArg,
    #[command(flatten)]
    pub mode: ModeArg,
    #[command(flatten)]
    pub quota: crate::node::quota::QuotaArg,
    /// TEST MODE, off by default, never for production: node i sits at place i of the
    /// simulator's latency model (`euclidean` or `transit-stub`, places drawn from --seed),
    /// every datagram between the ring's nodes is held back by the model's one-way delay, and
    /// each node joins through its nearest. Proximity, tables and routes then behave as on a
    /// spread-out network, for comparing with `ringvault sim` (see `ringvault bench
    /// sim-vs-real`).
    #[arg(long, value_enum, value_name = "MODEL")]
    pub emulate_latency: Option<crate::node::emulate::LatencyModel>,
    /// The seed of --emulate-latency's places.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Server mode: the epoch length of the ring's genesis (how often the committee decides a
    /// configuration), e.g. 10s or 1m.
    #[arg(long, default_value = "10s")]
    pub epoch: String,
}

/// `--mode`: who may join the ring.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct ModeArg {
    /// `open`: any node may join (ids are the hash of each node's key, so they cannot be
    /// chosen, but keys are free). `secure`: only nodes with a certificate from the ring's CA
    /// (--ca, --cert); every connection checks it, and revoked nodes are shut out. `server`:
    /// dedicated servers under a committee that decides each epoch's membership by Byzantine
    /// agreement (--genesis, --ca, --cert); every server knows every other, reaches a key's
    /// replica group of 3f + 1 in one hop, and stores with quorums of 2f + 1 signed acks. A
    /// ring is all open, all secure or all server.
    #[arg(long, value_enum, default_value_t = Mode::Open)]
    pub mode: Mode,
}

/// The values of `--mode`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Anyone may join.
    #[default]
    Open,
    /// Only nodes certified by the ring's CA.
    Secure,
    /// Dedicated servers under a BFT membership service.
    Server,
}

impl Mode {
    /// The overlay configuration `cfg` in this mode: secure mode routes securely (the
    /// constrained table, `sec_route`).
    pub fn overlay(self, cfg: ringvault_overlay::Config) -> ringvault_overlay::Config {
        ringvault_overlay::Config {
            secure: self == Mode::Secure,
            ..cfg
        }
    }

    /// PAST's policy in this mode: secure mode stores and looks up through `sec_route`; in
    /// every mode leaf set members audit each other's storage.
    pub fn past(self) -> ringvault_past::PastConfig {
        ringvault_past::PastConfig {
            secure: self == Mode::Secure,
            audit: Some(ringvault_past::AuditConfig::default()),
            ..Default::default()
        }
    }

    /// The records service's policy in this mode: secure mode writes and reads through
    /// `sec_route`, counting replies only from the verified replica set.
    pub fn records(self) -> ringvault_records::RecordsConfig {
        ringvault_records::RecordsConfig {
            secure: self == Mode::Secure,
            ..Default::default()
        }
    }
}

/// `--durability`: when a node's write of a replica counts, and so when it sends the store
/// receipt that a put waits for.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct DurabilityArg {
    /// When a stored replica counts toward a put's k receipts. `sync`: once it is synced to
    /// disk (batched with the node's other writes); survives a killed process, a power cut and
    /// a lost machine as long as one replica's disk does. `replicated`: once it is written in
    /// memory, synced within a second; a power cut or crash of a node loses up to its last
    /// second of writes, which the other replicas still hold and maintenance copies back.
    /// Server mode always syncs before it acks.
    #[arg(long, value_enum, default_value_t = Durability::Sync)]
    pub durability: Durability,
}

/// The values of `--durability`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Count a replica once it is synced to disk.
    #[default]
    Sync,
    /// Count a replica once it is written; sync within a second.
    Replicated,
}

impl From<Durability> for ringvault_store::Durability {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Sync => ringvault_store::Durability::Sync,
            Durability::Replicated => ringvault_store::Durability::Replicated,
        }
    }
}

/// Whose key owns what `put` stores and signs what `reclaim` releases.
#[derive(Args)]
pub struct KeyArgs {
    /// Your owner key file (32 secret bytes, created on first `put` with mode 0600)
    /// [default: owner.key in $RINGVAULT_CONFIG_DIR, else $XDG_CONFIG_HOME/ringvault, else
    /// ~/.config/ringvault].
    #[arg(
        long,
        env = "RINGVAULT_KEY",
        value_name = "FILE",
        conflicts_with = "operator"
    )]
    pub key: Option<PathBuf>,
    /// Use the node's operator key instead of yours: the node signs, and the object belongs
    /// to whoever runs that node (as with `curl -T FILE`).
    #[arg(long)]
    pub operator: bool,
}

/// How the client commands reach a node.
#[derive(Args)]
pub struct ClientArgs {
    /// The node's HTTP API.
    #[arg(long, env = "RINGVAULT_NODE", default_value = "http://127.0.0.1:8000")]
    pub node: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `ringvault record ...`.
#[derive(Subcommand)]
pub enum RecordCommand {
    /// Write FILE (or stdin, or `-`) as record NAME, signed here with your owner key (or by
    /// the node, --operator), at --record-version or one above the highest version a replica
    /// holds. Read it back as `record get OWNER/NAME` (`me/NAME` for your own).
    Put {
        /// The record's name (1 to 255 bytes).
        name: String,
        /// The value (at most 64 KiB) [default: read stdin].
        file: Option<PathBuf>,
        #[command(flatten)]
        write: RecordWriteArgs,
    },
    /// Print record OWNER/NAME's value (OWNER: 64 hex digits, or `self` for the node's own);
    /// its version, and whether replicas saw a conflict, go to stderr.
    Get {
        /// OWNER/NAME.
        record: String,
        /// Write the value to this file instead of stdout.
        #[arg(short, long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print record OWNER/NAME's current version, then each new one as it is written, until
    /// Ctrl-C (each verified: the owner's signature, higher than the last).
    Watch {
        /// OWNER/NAME.
        record: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete record NAME: a tombstone at the next version (an old version cannot come back).
    Delete {
        /// The record's name.
        name: String,
        #[command(flatten)]
        write: RecordWriteArgs,
    },
}

/// How a record is written.
#[derive(Args)]
pub struct RecordWriteArgs {
    /// The version to write (higher wins); omitted, one above the highest held.
    #[arg(long, value_name = "N")]
    pub record_version: Option<u64>,
    /// Done at this many replicas' acknowledgements (1 to k) [default: all k].
    #[arg(long, value_name = "N")]
    pub quorum: Option<u8>,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl RecordWriteArgs {
    fn how(&self) -> records::WriteArgs<'_> {
        records::WriteArgs {
            key: self.key.key.as_deref(),
            operator: self.key.operator,
            version: self.record_version,
            quorum: self.quorum,
            json: self.client.json,
        }
    }
}

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Route latency (p50/p99) and routes per second on a local ring over QUIC.
    Route {
        /// Ring size.
        #[arg(long, default_value_t = 32)]
        nodes: u16,
        /// Routes in the throughput phase (a quarter as many run one at a time for latency).
        #[arg(long, default_value_t = 4000)]
        routes: usize,
        /// Routes in flight during the throughput phase.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// `secure`: a secure ring, and secure routes (sec_route to the 5 closest nodes) measured
        /// beside plain ones, with the messages each costs.
        #[command(flatten)]
        mode: ModeArg,
    },
    /// Put and get latency (p50/p99) and throughput on a local ring (16 nodes, k = 3, 1 KiB
    /// and 1 MiB objects by default), through each node's HTTP API.
    Storage(crate::bench::storage::StorageArgs),
    /// The simulator checked against real daemons: N nodes built by the simulator and the
    /// same N as real nodes over QUIC with the model's delays emulated at their sockets (same
    /// keys, places and join order), routing the same keys; prints mean hops and stretch of
    /// both and whether they agree within 10%.
    SimVsReal(crate::bench::sim_vs_real::SimVsRealArgs),
}

pub fn run(cmd: NetCommand) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        match cmd {
            NetCommand::Node(a) => crate::node::daemon::node(*a).await,
            NetCommand::Ring(a) => crate::node::daemon::ring(a).await,
            NetCommand::Server(ServerCommand::Status(c)) => {
                let v = one_line(client::get_ok(&c.node, "/v1/status").await);
                output::server_status(&v, c.json)
            }
            NetCommand::Server(ServerCommand::Leave(c)) => {
                let v = one_line(
                    client::send_ok(&c.node, hyper::Method::POST, "/v1/server/leave", Vec::new())
                        .await,
                );
                output::server_left(&v, c.json)
            }
            NetCommand::Status(c) => {
                let v = one_line(client::get_ok(&c.node, "/v1/status").await);
                output::status(&v, c.json)
            }
            NetCommand::Route { key, client: c } => {
                let v = one_line(client::get_ok(&c.node, &format!("/v1/route/{key}")).await);
                output::route(&v, c.json)
            }
            NetCommand::Put {
                file,
                name,
                replicas,
                key: k,
                grant,
                client: c,
            } => {
                let put = objects::put(
                    &c.node,
                    &file,
                    name,
                    replicas,
                    (&k, grant.as_deref()),
                    c.json,
                );
                one_line(put.await);
                Ok(())
            }
            NetCommand::Get {
                id,
                output,
                verbose,
                client: c,
            } => {
                one_line(objects::get(&c.node, &id, output, verbose, c.json).await);
                Ok(())
            }
            NetCommand::Reclaim {
                id,
                key: k,
                client: c,
            } => {
                let r = objects::reclaim(&c.node, &id, k.key.as_deref(), k.operator, c.json);
                one_line(r.await);
                Ok(())
            }
            NetCommand::Quota {
                owner,
                key: k,
                client: c,
            } => {
                let owner = match (owner, k.operator) {
                    (Some(o), _) => o,
                    (None, true) => "self".to_string(),
                    (None, false) => {
                        let path = owner_key::path_or_default(k.key.as_deref())?;
                        let key = owner_key::load(&path)?.with_context(|| {
                            format!(
                                "no owner key at {} yet: you have stored nothing",
                                path.display()
                            )
                        })?;
                        ringvault_types::Id::from_bytes(key.public_key().0).to_string()
                    }
                };
                let v = one_line(client::get_ok(&c.node, &format!("/v1/quota/{owner}")).await);
                output::quota(&v, c.json)
            }
            NetCommand::Stat { id, client: c } => {
                one_line(objects::stat(&c.node, &id, c.json).await);
                Ok(())
            }
            NetCommand::Publish {
                topic,
                message,
                client: c,
            } => {
                one_line(topics::publish(&c.node, &topic, message, c.json).await);
                Ok(())
            }
            NetCommand::Record(cmd) => {
                match cmd {
                    RecordCommand::Put { name, file, write } => one_line(
                        records::put(&write.client.node, &name, file.as_deref(), write.how()).await,
                    ),
                    RecordCommand::Get {
                        record,
                        out,
                        client: c,
                    } => one_line(records::get(&c.node, &record, out.as_deref()).await),
                    RecordCommand::Watch { record, client: c } => {
                        one_line(records::watch(&c.node, &record, c.json).await)
                    }
                    RecordCommand::Delete { name, write } => {
                        one_line(records::delete(&write.client.node, &name, write.how()).await)
                    }
                }
                Ok(())
            }
            NetCommand::Subscribe { topic, client: c } => {
                one_line(topics::subscribe(&c.node, &topic, c.json).await);
                Ok(())
            }
            NetCommand::Anycast {
                topic,
                message,
                client: c,
            } => {
                one_line(topics::anycast(&c.node, &topic, message, c.json).await);
                Ok(())
            }
            NetCommand::Topics(c) => {
                one_line(topics::topics(&c.node, c.json).await);
                Ok(())
            }
            NetCommand::PushRevocations { file, client: c } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let v = one_line(
                    client::send_ok(
                        &c.node,
                        hyper::Method::POST,
                        "/v1/admin/revocations",
                        text.into_bytes(),
                    )
                    .await,
                );
                output::revocations(&v, c.json)
            }
            NetCommand::Bench(BenchCommand::Route {
                nodes,
                routes,
                concurrency,
                mode,
            }) => crate::bench::route::run(nodes, routes, concurrency, mode.mode).await,
            NetCommand::Bench(BenchCommand::Storage(a)) => crate::bench::storage::run(a).await,
            NetCommand::Bench(BenchCommand::SimVsReal(a)) => {
                crate::bench::sim_vs_real::run(a).await
            }
        }
    })
}

/// A client command's failure is one line on stderr and exit status 1, whatever the
/// environment asks of error reports (no backtrace, no cause chain).
fn one_line<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
