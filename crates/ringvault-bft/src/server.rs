//! One server of server mode as a single state machine: its membership service, its replica
//! and its quorum client, with the configuration each new epoch brings passed from the first
//! to the other two. A driver (the network one, or a simulator) sees only this.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use ringvault_types::{DecodeError, Id, Identity, NodeCertificate, Time};

use crate::config::{Config, ConfigCert};
use crate::membership::{
    Action, Membership, MembershipConfig, MembershipError, MembershipEvent, MembershipStats,
    SignOnce,
};
use crate::message::BftMessage;
use crate::quorum::{
    ClientStats, Item, OpId, QuorumClient, QuorumError, QuorumEvent, Replica, ReplicaAction,
    ReplicaStats, StoreMessage,
};

/// What servers send each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// Membership: consensus, requests, configurations.
    Membership(BftMessage),
    /// Quorum storage.
    Store(StoreMessage),
}

impl ServerMessage {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        crate::message::encode(self)
    }

    /// Decodes a message; total on any input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        crate::message::decode(bytes)
    }
}

/// What the driver does for a server, in order.
#[derive(Clone, Debug)]
pub enum ServerAction {
    /// Send `msg` to server `to`.
    Send {
        /// The server.
        to: Id,
        /// The message.
        msg: ServerMessage,
    },
    /// Persist the sign-once record, and finish, before performing any later action.
    PersistSignOnce(SignOnce),
    /// Persist the newest certified configuration.
    PersistConfig(Arc<Config>, Option<ConfigCert>),
    /// Persist the key ranges not yet taken over (for [`ServerStart::unsynced`]).
    PersistUnsynced(Vec<(Id, Id)>),
    /// Write `item` durably, then call [`Server::handle_stored`] with `token`.
    Store {
        /// Echoed on completion.
        token: u64,
        /// The item.
        item: Item,
    },
    /// Check whether `suspect` answers; call [`Server::confirm`] if it does not.
    Probe(Id),
    /// A membership change or a finished storage operation.
    Event(ServerEvent),
}

/// What a server reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// From the membership service.
    Membership(MembershipEvent),
    /// A storage operation finished.
    Quorum(QuorumEvent),
}

/// How a server starts.
pub struct ServerStart {
    /// Its key.
    pub identity: Identity,
    /// Membership settings.
    pub settings: MembershipConfig,
    /// The newest configuration it has (genesis at first) and its certificate.
    pub config: Arc<Config>,
    /// Its certificate (`None` for genesis).
    pub cert: Option<ConfigCert>,
    /// Its persisted sign-once record.
    pub sign_once: Option<SignOnce>,
    /// Whether its data dir was lost.
    pub wiped: bool,
    /// The items its store holds.
    pub items: Vec<Item>,
    /// The key ranges it had persisted as not yet taken over.
    pub unsynced: Vec<(Id, Id)>,
}

/// What a server says about itself, for status pages and metrics.
#[derive(Clone, Debug)]
pub struct ServerSummary {
    /// Its id.
    pub id: Id,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Whether it is a member of that configuration.
    pub member: bool,
    /// Whether the configuration's lease still runs (it serves only while it does).
    pub serving: bool,
    /// The round of the instance deciding the next epoch, on a committee member.
    pub round: Option<crate::Round>,
    /// Requests its committee seat holds for the next epochs.
    pub pending: usize,
    /// Whether it asked to leave.
    pub leaving: bool,
    /// Whether it is still recovering from a lost disk (see [`Membership::recovering`]).
    pub recovering: bool,
    /// The key range (from, to] its replica group covers.
    pub range: Option<(Id, Id)>,
    /// Whether its replica is still taking over a range (it answers NotReady meanwhile).
    pub syncing: bool,
    /// Items its replica holds.
    pub items: usize,
    /// Membership counters.
    pub membership: MembershipStats,
    /// Replica counters.
    pub replica: ReplicaStats,
    /// Quorum client counters.
    pub client: ClientStats,
}

/// One server.
pub struct Server {
    membership: Membership,
    replica: Replica,
    client: QuorumClient,
    epoch: u64,
    actions: VecDeque<ServerAction>,
}

impl Server {
    /// Starts a server at `now`.
    pub fn new(start: ServerStart, now: Time) -> Self {
        let twin = Identity::from_secret_bytes(start.identity.secret_bytes());
        let unix = start.settings.unix_ms_at_zero;
        let epoch = start.config.epoch;
        Server {
            replica: Replica::new(
                twin,
                start.config.clone(),
                unix,
                start.items,
                &start.unsynced,
                now,
            ),
            client: QuorumClient::new(start.identity.id(), start.config.clone()),
            membership: Membership::new(
                start.identity,
                start.settings,
                start.config,
                start.cert,
                start.sign_once,
                start.wiped,
                now,
            ),
            epoch,
            actions: VecDeque::new(),
        }
    }

    /// The membership service (configuration, committee, counters).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The replica (what it holds, counters).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The quorum client's counters.
    pub fn client(&self) -> &QuorumClient {
        &self.client
    }

    /// What it says about itself at `now`.
    pub fn summary(&self, now: Time) -> ServerSummary {
        let config = self.membership.current().clone();
        let id = self.replica.id();
        ServerSummary {
            id,
            member: config.member(&id).is_some(),
            serving: self.membership.serving(now),
            round: self.membership.round(),
            pending: self.membership.pending(),
            leaving: self.membership.leaving(),
            recovering: self.membership.recovering(),
            range: crate::owned_range(&config, &id),
            syncing: self.replica.syncing(),
            items: self.replica.len(),
            membership: self.membership.stats().clone(),
            replica: self.replica.stats().clone(),
            client: self.client.stats().clone(),
            config,
        }
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<ServerAction> {
        self.actions.pop_front()
    }

    /// When to call [`Server::handle_timeout`].
    pub fn next_deadline(&self) -> Option<Time> {
        [
            self.membership.next_deadline(),
            self.replica.next_deadline(),
            self.client.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A message from server `from` (authenticated by the transport).
    pub fn handle_message(&mut self, now: Time, from: Id, msg: ServerMessage) {
        match msg {
            ServerMessage::Membership(m) => {
                let _ = self.membership.handle_message(now, from, m);
            }
            ServerMessage::Store(m) => match m {
                StoreMessage::Ack(_) | StoreMessage::Reply { .. } | StoreMessage::Refuse { .. } => {
                    self.client.handle_message(now, from, m)
                }
                m => {
                    // A request from an older epoch is refused with this replica's epoch, and
                    // the certified configurations the requester lacks go with the refusal.
                    let behind = match &m {
                        StoreMessage::Write { epoch, .. } | StoreMessage::Read { epoch, .. } => {
                            (*epoch < self.epoch).then_some(*epoch)
                        }
                        _ => None,
                    };
                    self.replica.handle_message(now, from, m);
                    if let Some(have) = behind {
                        let _ =
                            self.membership
                                .handle_message(now, from, BftMessage::Pull { have });
                    }
                }
            },
        }
        self.pump(now);
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Time) {
        self.membership.handle_timeout(now);
        self.replica.handle_timeout(now);
        self.client.handle_timeout(now);
        self.pump(now);
    }

    /// The store finished writing `token`.
    pub fn handle_stored(&mut self, now: Time, token: u64) {
        self.replica.handle_stored(now, token);
        self.pump(now);
    }

    /// Writes `item` to its replica group; the result comes as [`QuorumEvent::Put`].
    pub fn put(&mut self, now: Time, item: Item) -> Result<OpId, QuorumError> {
        let op = self.client.put(now, item)?;
        self.pump(now);
        Ok(op)
    }

    /// Reads the object under `key`; the result comes as [`QuorumEvent::Got`].
    pub fn get_object(&mut self, now: Time, key: Id) -> OpId {
        let op = self.client.get_object(now, key);
        self.pump(now);
        op
    }

    /// Reads the record under `key` (atomically); the result comes as [`QuorumEvent::Got`].
    pub fn get_record(&mut self, now: Time, key: Id) -> OpId {
        let op = self.client.get_record(now, key);
        self.pump(now);
        op
    }

    /// Asks to be a member from now on (see [`Membership::join`]).
    pub fn join(&mut self, now: Time, cert: NodeCertificate) {
        self.membership.join(cert);
        self.pump(now);
    }

    /// Asks the committee to let this server leave after the current epoch.
    pub fn leave(&mut self, now: Time) -> Result<(), MembershipError> {
        self.membership.leave()?;
        self.pump(now);
        Ok(())
    }

    /// This server's failure detector finds `suspect` silent.
    pub fn suspect(&mut self, now: Time, suspect: Id) {
        self.membership.suspect(suspect);
        self.pump(now);
    }

    /// A probe of `suspect` went unanswered (after [`ServerAction::Probe`]).
    pub fn confirm(&mut self, now: Time, suspect: Id) -> Result<(), MembershipError> {
        self.membership.confirm(suspect)?;
        self.pump(now);
        Ok(())
    }

    /// Moves what the replica asked for into the action queue; whether there was any.
    fn drain_replica(&mut self) -> bool {
        let mut any = false;
        while let Some(a) = self.replica.poll_action() {
            any = true;
            self.actions.push_back(match a {
                ReplicaAction::Send { to, msg } => ServerAction::Send {
                    to,
                    msg: ServerMessage::Store(msg),
                },
                ReplicaAction::Store { token, item } => ServerAction::Store { token, item },
                ReplicaAction::PersistUnsynced(r) => ServerAction::PersistUnsynced(r),
            });
        }
        any
    }

    /// Moves what the parts asked for into the action queue, handing each new configuration
    /// from the membership service to the replica and the client.
    fn pump(&mut self, now: Time) {
        loop {
            let mut progressed = false;
            while let Some(a) = self.membership.poll_action() {
                progressed = true;
                let action = match a {
                    Action::Send { to, msg } => ServerAction::Send {
                        to,
                        msg: ServerMessage::Membership(msg),
                    },
                    Action::PersistSignOnce(s) => ServerAction::PersistSignOnce(s),
                    Action::PersistConfig(config, cert) => {
                        if config.epoch > self.epoch {
                            self.epoch = config.epoch;
                            self.replica.handle_config(now, config.clone());
                            self.client.handle_config(config.clone());
                            // The ranges the new configuration leaves to take over are on disk
                            // before the configuration: a restart between the two then starts
                            // from the old configuration and only distrusts more of its range,
                            // never trusts a range it has not taken over.
                            self.drain_replica();
                        }
                        ServerAction::PersistConfig(config, cert)
                    }
                    Action::Probe(id) => ServerAction::Probe(id),
                    Action::Event(e) => ServerAction::Event(ServerEvent::Membership(e)),
                };
                self.actions.push_back(action);
            }
            progressed |= self.drain_replica();
            while let Some((to, msg)) = self.client.poll_send() {
                progressed = true;
                self.actions.push_back(ServerAction::Send {
                    to,
                    msg: ServerMessage::Store(msg),
                });
            }
            while let Some(e) = self.client.poll_event() {
                progressed = true;
                self.actions
                    .push_back(ServerAction::Event(ServerEvent::Quorum(e)));
            }
            if !progressed {
                return;
            }
        }
    }
}
