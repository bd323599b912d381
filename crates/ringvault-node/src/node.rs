//! The `Node`: the overlay plus its services, behind the one surface drivers use.

use std::collections::{BTreeMap, VecDeque};

use ringvault_overlay::{
    AppId, AppMessage, Config, ConfigError, Forward, Kbr, Output, Overlay, OverlayEvent,
    OverlayMessage, Redundancy, RouteInfo, SecureRouteReport, Upcalls,
};
use ringvault_types::{
    CertError, Contact, DecodeError, Duration, Id, PublicKey, RevocationList, Time,
};

use crate::probe::{RouteProbes, RouteReport, PROBE_APP};
use crate::revocation::{RevocationGossip, RevocationStats, REVOCATION_APP};
use ringvault_overlay::Service;

/// The application id of the (empty) messages of secure routes a command starts: no service
/// takes them, so they only show where secure routing reached.
pub const SECURE_ROUTE_APP: AppId = 4;

/// Identifies a command; its result comes back as [`NodeEvent::CommandDone`] with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId(pub u64);

/// Something asked of the node by its operator (through a driver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start a new ring with this node alone in it.
    StartRing,
    /// Join the ring through `bootstrap`.
    Join {
        /// A node already in the ring.
        bootstrap: Contact,
    },
    /// Route a traced probe to `key`'s root and report the path.
    RouteProbe {
        /// The key.
        key: Id,
    },
    /// Route securely to `key`'s `r` closest nodes (secure mode) and report which nodes the
    /// (empty) message went to.
    SecureRoute {
        /// The key.
        key: Id,
        /// How many of its closest nodes.
        r: u8,
    },
    /// Leave the ring gracefully.
    Leave,
    /// Adopt this CA-signed revocation list if it is newer than the one held, and pass it on
    /// along the leaf set (secure mode).
    Revocations(RevocationList),
}

/// Why a command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No answer in time: the ring may be partitioned or the root unreachable.
    #[error("timed out waiting for the ring to answer")]
    Timeout,
    /// Too many commands of this kind are outstanding; retry later.
    #[error("too many requests in flight; retry later")]
    Busy,
    /// The node has not joined a ring yet.
    #[error("this node has not joined a ring yet")]
    NotJoined,
    /// The join gave up.
    #[error("could not join the ring after {0} attempts; check the bootstrap address")]
    JoinFailed(u32),
    /// A peer answered with something unusable.
    #[error("a peer sent an unusable reply")]
    BadReply,
    /// The command needs secure mode.
    #[error("secure routing needs a node in secure mode (--mode secure)")]
    NotSecure,
    /// A revocation list was refused.
    #[error("revocation list refused: {0}")]
    Revocations(CertError),
}

/// What a finished command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandOutput {
    /// The command had nothing to report beyond success.
    Done,
    /// A route probe's report.
    Route(RouteReport),
    /// A secure route's report.
    SecureRoute(SecureRouteReport),
    /// What became of an offered revocation list.
    Revocations {
        /// Whether it was newer and is now the node's list.
        adopted: bool,
        /// The version the node holds now.
        held: u64,
    },
}

/// Notable happenings, for the driver and operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// An overlay event.
    Overlay(OverlayEvent),
    /// A command finished.
    CommandDone {
        /// The id `handle_command` returned.
        id: CommandId,
        /// Its result.
        result: Result<CommandOutput, CommandError>,
    },
    /// The node adopted a newer revocation list (from the operator or a peer): connections to
    /// revoked nodes must close, and they must be refused from now on.
    Revocations(RevocationList),
}

/// What the node asks its driver to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send `msg` to `to` (encode it with [`crate::encode`]).
    Send {
        /// Receiver.
        to: Contact,
        /// Message.
        msg: OverlayMessage,
    },
    /// Measure proximity to `peer`, then call [`Node::handle_probe_result`].
    Probe {
        /// Peer to measure.
        peer: Contact,
    },
    /// Tell the operator.
    Event(NodeEvent),
}

/// The services registered on a node, dispatched by application id.
#[derive(Default)]
struct Services {
    probes: RouteProbes,
    revocations: RevocationGossip,
    apps: BTreeMap<AppId, Box<dyn Service>>,
    /// Secure routes started by commands, by the overlay's id for them.
    secure_commands: BTreeMap<u64, CommandId>,
    /// Those that ended, for the node's events.
    secure_done: Vec<(CommandId, SecureRouteReport)>,
}

impl Upcalls for Services {
    fn deliver(&mut self, kbr: &mut dyn Kbr, now: Time, key: Id, msg: AppMessage, info: RouteInfo) {
        if msg.app == PROBE_APP {
            self.probes.deliver(kbr, key, msg, info);
        } else if msg.app == REVOCATION_APP {
            self.revocations.deliver(kbr, msg, info.origin);
        } else if let Some(s) = self.apps.get_mut(&msg.app) {
            s.deliver(kbr, now, key, msg, info);
        }
    }

    fn forward(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        key: Id,
        msg: &mut AppMessage,
        next_hop: &mut Contact,
    ) -> Forward {
        match self.apps.get_mut(&msg.app) {
            Some(s) => s.forward(kbr, now, key, msg, next_hop),
            None => Forward::Continue,
        }
    }

    fn update(&mut self, kbr: &mut dyn Kbr, now: Time, node: Contact, joined: bool) {
        if joined {
            self.revocations.joined(kbr, node);
        }
        for s in self.apps.values_mut() {
            s.update(kbr, now, node, joined);
        }
    }

    fn unresponsive(&mut self, kbr: &mut dyn Kbr, now: Time, node: Contact) {
        for s in self.apps.values_mut() {
            s.unresponsive(kbr, now, node);
        }
    }

    fn secure_routed(&mut self, kbr: &mut dyn Kbr, now: Time, report: &SecureRouteReport) {
        if report.app == SECURE_ROUTE_APP {
            if let Some(id) = self.secure_commands.remove(&report.id) {
                self.secure_done.push((id, report.clone()));
            }
        } else if let Some(s) = self.apps.get_mut(&report.app) {
            s.secure_routed(kbr, now, report);
        }
    }
}

/// One ringvault node as a sans-IO state machine: feed it messages, commands, probe results and
/// timeouts with the current time; drain [`Node::poll_action`] after each.
pub struct Node {
    overlay: Overlay,
    services: Services,
    events: VecDeque<NodeEvent>,
    next_command: u64,
    join_command: Option<CommandId>,
}

impl Node {
    /// A node reachable at `me` with overlay parameters `cfg`; `seed` seeds its private RNG.
    pub fn new(me: Contact, cfg: Config, seed: u64) -> Result<Self, ConfigError> {
        Ok(Node {
            overlay: Overlay::new(me, cfg, seed)?,
            services: Services::default(),
            events: VecDeque::new(),
            next_command: 0,
            join_command: None,
        })
    }

    /// Secure mode: revocation lists are checked against the ring CA `ca`, starting from
    /// `held` (verified by the caller, or empty).
    pub fn set_ring_ca(&mut self, ca: PublicKey, held: RevocationList) {
        self.services.revocations = RevocationGossip::secure(ca, held);
    }

    /// The newest revocation list this node holds (the empty list in open mode).
    pub fn revocations(&self) -> &RevocationList {
        self.services.revocations.held()
    }

    /// What the revocation gossip has seen.
    pub fn revocation_stats(&self) -> RevocationStats {
        self.services.revocations.stats
    }

    /// Registers a service. A second service with the same id replaces the first.
    pub fn add_service(&mut self, service: Box<dyn Service>) {
        self.services.apps.insert(service.app_id(), service);
    }

    /// Runs `f` on the registered service of type `S` with this node's KBR, then carries out
    /// what it asked the overlay to do. This is how a driver calls a service's client API (an
    /// insert, a subscription) and reads its results. `None` when no such service is
    /// registered.
    pub fn with_service<S: Service, R>(
        &mut self,
        now: Time,
        f: impl FnOnce(&mut S, &mut dyn Kbr) -> R,
    ) -> Option<R> {
        let service = self
            .services
            .apps
            .values_mut()
            .find_map(|s| (s.as_mut() as &mut dyn std::any::Any).downcast_mut::<S>())?;
        let r = f(service, &mut self.overlay);
        self.overlay.flush(now, &mut self.services);
        self.collect_probe_results();
        Some(r)
    }

    /// The overlay, read-only (tables, stats, next-hop decisions).
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// The overlay, for setting up tests and experiments (for example
    /// [`Overlay::start_with_state`]).
    pub fn overlay_mut(&mut self) -> &mut Overlay {
        &mut self.overlay
    }

    /// This node's contact.
    pub fn contact(&self) -> Contact {
        self.overlay.contact()
    }

    /// Starts a command; its result comes later as [`NodeEvent::CommandDone`] with this id.
    pub fn handle_command(&mut self, now: Time, cmd: Command) -> CommandId {
        self.next_command += 1;
        let id = CommandId(self.next_command);
        match cmd {
            Command::StartRing => {
                self.overlay.start_ring(now);
                self.done(id, Ok(CommandOutput::Done));
            }
            Command::Join { bootstrap } => {
                self.join_command = Some(id);
                self.overlay.join(now, bootstrap);
            }
            Command::RouteProbe { key } => {
                if !self.overlay.is_ready() {
                    self.done(id, Err(CommandError::NotJoined));
                } else if let Some(msg) = self.services.probes.start(now, id) {
                    self.overlay
                        .route(now, key, msg, None, true, &mut self.services);
                }
            }
            Command::SecureRoute { key, r } => {
                if !self.overlay.is_ready() {
                    self.done(id, Err(CommandError::NotJoined));
                } else if !self.overlay.config().secure {
                    self.done(id, Err(CommandError::NotSecure));
                } else {
                    let msg = AppMessage {
                        app: SECURE_ROUTE_APP,
                        body: Vec::new(),
                    };
                    let sid = self.overlay.sec_route(key, msg, r, Redundancy::OnFailure);
                    self.services.secure_commands.insert(sid, id);
                    self.overlay.flush(now, &mut self.services);
                }
            }
            Command::Leave => {
                self.overlay.leave(now);
                self.done(id, Ok(CommandOutput::Done));
            }
            Command::Revocations(list) => {
                let r = self
                    .services
                    .revocations
                    .offer(&mut self.overlay, list, None)
                    .map(|adopted| CommandOutput::Revocations {
                        adopted,
                        held: self.services.revocations.held().version(),
                    })
                    .map_err(CommandError::Revocations);
                self.overlay.flush(now, &mut self.services);
                self.done(id, r);
            }
        }
        self.collect_probe_results();
        id
    }

    /// Routes a service's message from this node toward `key` (the KBR `route` call, for
    /// drivers and tests acting on a service's behalf).
    pub fn route(&mut self, now: Time, key: Id, msg: AppMessage, hint: Option<Contact>) {
        self.overlay
            .route(now, key, msg, hint, false, &mut self.services);
    }

    /// A message from `from`, already decoded.
    pub fn handle_message(&mut self, now: Time, from: Contact, msg: OverlayMessage) {
        self.overlay
            .handle_message(now, from, msg, &mut self.services);
        self.collect_probe_results();
    }

    /// Raw bytes from `from`: decoded, then handled. A malformed message changes nothing.
    pub fn handle_bytes(
        &mut self,
        now: Time,
        from: Contact,
        bytes: &[u8],
    ) -> Result<(), DecodeError> {
        let msg = crate::decode(bytes)?;
        self.handle_message(now, from, msg);
        Ok(())
    }

    /// The answer to [`Action::Probe`].
    pub fn handle_probe_result(&mut self, now: Time, peer: Contact, rtt: Option<Duration>) {
        self.overlay
            .handle_probe_result(now, peer, rtt, &mut self.services);
        self.collect_probe_results();
    }

    /// The transport could not reach `peer`: the overlay declares it failed and repairs.
    pub fn handle_unreachable(&mut self, now: Time, peer: Id) {
        self.overlay
            .handle_unreachable(now, peer, &mut self.services);
        self.collect_probe_results();
    }

    /// When [`Node::handle_timeout`] should next be called.
    pub fn next_deadline(&self) -> Option<Time> {
        [
            self.overlay.next_deadline(),
            self.services.probes.next_deadline(),
        ]
        .into_iter()
        .chain(self.services.apps.values().map(|s| s.next_deadline()))
        .flatten()
        .min()
    }

    /// Call at (or after) [`Node::next_deadline`]; early or repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: Time) {
        self.overlay.handle_timeout(now, &mut self.services);
        self.services.probes.handle_timeout(now);
        for s in self.services.apps.values_mut() {
            if s.next_deadline().is_some_and(|d| d <= now) {
                s.handle_timeout(&mut self.overlay, now);
            }
        }
        self.overlay.flush(now, &mut self.services);
        self.collect_probe_results();
    }

    /// The next thing for the driver to do. Call after every input until `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Some(out) = self.overlay.poll_output() {
            return Some(match out {
                Output::Send { to, msg } => Action::Send { to, msg },
                Output::Probe { peer } => Action::Probe { peer },
                Output::Event(e) => {
                    self.on_overlay_event(&e);
                    Action::Event(NodeEvent::Overlay(e))
                }
            });
        }
        self.events.pop_front().map(Action::Event)
    }

    fn on_overlay_event(&mut self, e: &OverlayEvent) {
        let result = match e {
            OverlayEvent::Joined => Ok(CommandOutput::Done),
            OverlayEvent::JoinFailed { attempts } => Err(CommandError::JoinFailed(*attempts)),
            OverlayEvent::SecureRouted(_) | OverlayEvent::PeerFailed { .. } => return,
        };
        if let Some(id) = self.join_command.take() {
            self.done(id, result);
        }
    }

    fn done(&mut self, id: CommandId, result: Result<CommandOutput, CommandError>) {
        self.events.push_back(NodeEvent::CommandDone { id, result });
    }

    /// Moves what the built-in parts finished (route probes, adopted revocation lists) into
    /// the node's events.
    fn collect_probe_results(&mut self) {
        for list in std::mem::take(&mut self.services.revocations.adopted) {
            self.events.push_back(NodeEvent::Revocations(list));
        }
        for (id, r) in std::mem::take(&mut self.services.probes.done) {
            self.done(id, r.map(CommandOutput::Route));
        }
        for (id, r) in std::mem::take(&mut self.services.secure_done) {
            self.done(id, Ok(CommandOutput::SecureRoute(r)));
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("overlay", &self.overlay)
            .field("services", &self.services.apps.keys().collect::<Vec<_>>())
            .finish()
    }
}
