//! Configurations: who the servers are in an epoch, who decides the next epoch, and the
//! certificates that let anyone check a chain of configurations from one they trust
//! (`server-mode.md` §1).
//!
//! Config(e + 1) is Config(e) with a [`Delta`] applied; the committee of epoch e decides the
//! delta, and its precommits over (e + 1, round, hash(Config(e + 1))) are the [`ConfigCert`].
//! Genesis is signed by the ring's CA.

use serde::{Deserialize, Serialize};

use ringvault_types::{Id, Identity, NodeCertificate, PublicKey, Signature};

/// An epoch number.
pub type Epoch = u64;

/// Format version of configurations and their signatures.
pub const CONFIG_VERSION: u8 = 1;

/// Children per node in a dissemination tree.
pub const FAN_OUT: usize = 16;

/// The most members a configuration may hold; what a forged snapshot can make a node decode.
pub const MAX_MEMBERS: usize = 1_000_000;

/// Server mode's parameters, fixed at genesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Params {
    /// Byzantine servers a replica group tolerates (groups of 3 f_r + 1).
    pub f_r: u8,
    /// Byzantine members the committee tolerates (committees of 3 f_ms + 1).
    pub f_ms: u8,
    /// Epoch length in milliseconds.
    pub epoch_ms: u64,
    /// How many epochs a configuration's lease lasts past its start.
    pub lease_epochs: u32,
    /// The most joins, leaves and evictions one epoch applies.
    pub max_changes: u16,
    /// Every this many epochs one committee seat rotates to another server.
    pub rotate_every: u32,
}

impl Params {
    /// Defaults of the design: f_r = f_ms = 1, 60 s epochs, leases of 3 epochs, 16 changes per
    /// epoch, one committee seat rotated every 10 epochs.
    pub const DEFAULT: Params = Params {
        f_r: 1,
        f_ms: 1,
        epoch_ms: 60_000,
        lease_epochs: 3,
        max_changes: 16,
        rotate_every: 10,
    };

    /// Servers per replica group (3 f_r + 1).
    pub fn group_size(&self) -> usize {
        3 * self.f_r as usize + 1
    }

    /// Committee seats (3 f_ms + 1).
    pub fn committee_size(&self) -> usize {
        3 * self.f_ms as usize + 1
    }

    /// The lease: how long past its start a configuration may be served.
    pub fn lease_ms(&self) -> u64 {
        self.epoch_ms.saturating_mul(self.lease_epochs as u64)
    }
}

/// A server in a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its CA certificate (id, key, addresses).
    pub cert: NodeCertificate,
    /// The epoch it joined in.
    pub admitted: Epoch,
}

impl Member {
    /// Its id.
    pub fn id(&self) -> Id {
        self.cert.body.node_id
    }

    /// Its public key.
    pub fn key(&self) -> PublicKey {
        self.cert.body.public_key
    }
}

/// The membership of one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// [`CONFIG_VERSION`].
    pub version: u8,
    /// The epoch.
    pub epoch: Epoch,
    /// Hash of the previous epoch's configuration (zero at genesis).
    pub prev: Id,
    /// The servers, sorted by id, no id twice.
    pub members: Vec<Member>,
    /// The committee that decides the next configuration: ids of members, in seat order.
    pub committee: Vec<Id>,
    /// Parameters (fixed at genesis).
    pub params: Params,
    /// Unix milliseconds after which no server serves this configuration (the lease).
    pub valid_until: u64,
}

/// One change to the membership, each carrying its own proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A server asks to join: its CA certificate and its signature over the request.
    Join(JoinRequest),
    /// A member asks to leave, signed by itself.
    Leave(LeaveRequest),
    /// A member found dead: f_ms + 1 committee members confirm it.
    Evict {
        /// The member evicted.
        suspect: Id,
        /// Confirms from distinct committee members.
        confirms: Vec<Confirm>,
    },
}

impl Change {
    /// The server the change is about.
    pub fn subject(&self) -> Id {
        match self {
            Change::Join(j) => j.cert.node_id(),
            Change::Leave(l) => l.id,
            Change::Evict { suspect, .. } => *suspect,
        }
    }
}

/// A request to join, signed by the joining server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Its CA certificate.
    pub cert: NodeCertificate,
    /// Its signature over the certificate ([`join_bytes`]).
    pub signature: Signature,
}

impl JoinRequest {
    /// A signed request to join.
    pub fn new(identity: &Identity, cert: NodeCertificate) -> Self {
        let signature = identity.sign(&join_bytes(&cert));
        JoinRequest { cert, signature }
    }
}

/// A request to leave, signed by the leaving member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveRequest {
    /// The member.
    pub id: Id,
    /// The epoch it asks to leave after (stops a replay in a later epoch after it rejoined).
    pub epoch: Epoch,
    /// Its signature ([`leave_bytes`]).
    pub signature: Signature,
}

impl LeaveRequest {
    /// A signed request to leave after `epoch`.
    pub fn new(identity: &Identity, epoch: Epoch) -> Self {
        let id = identity.id();
        LeaveRequest {
            id,
            epoch,
            signature: identity.sign(&leave_bytes(id, epoch)),
        }
    }
}

/// A committee member's statement that it probed `suspect` itself in `epoch` and found it dead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirm {
    /// The member that probed.
    pub by: Id,
    /// The epoch it probed in.
    pub epoch: Epoch,
    /// The suspect.
    pub suspect: Id,
    /// Its signature ([`confirm_bytes`]).
    pub signature: Signature,
}

impl Confirm {
    /// A signed confirm.
    pub fn new(identity: &Identity, epoch: Epoch, suspect: Id) -> Self {
        Confirm {
            by: identity.id(),
            epoch,
            suspect,
            signature: identity.sign(&confirm_bytes(epoch, suspect)),
        }
    }
}

/// The changes from one configuration to the next: what the committee of epoch `epoch - 1`
/// decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The epoch it makes.
    pub epoch: Epoch,
    /// Hash of the configuration it applies to.
    pub prev: Id,
    /// Joins, leaves and evictions, at most one per server.
    pub changes: Vec<Change>,
    /// The new configuration's lease end (Unix ms), chosen by the proposer within bounds.
    pub valid_until: u64,
}

/// A certificate that the committee of `epoch - 1` decided Config(`epoch`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigCert {
    /// The epoch of the certified configuration.
    pub epoch: Epoch,
    /// The consensus round that decided it.
    pub round: u32,
    /// Hash of the configuration.
    pub config_hash: Id,
    /// Precommits of distinct members of the deciding committee.
    pub sigs: Vec<(Id, Signature)>,
}

/// Why a configuration or its certificate is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not the next epoch.
    #[error("configuration is for epoch {got}, expected {want}")]
    WrongEpoch {
        /// The epoch it claims.
        got: Epoch,
        /// The epoch that would follow the trusted one.
        want: Epoch,
    },
    /// Its `prev` is not the trusted configuration's hash.
    #[error("configuration does not follow the trusted one (prev hash differs)")]
    WrongPrev,
    /// The certificate names another configuration.
    #[error("certificate is for another configuration")]
    CertMismatch,
    /// Fewer than 2 f_ms + 1 valid signatures of distinct committee members.
    #[error("certificate has {valid} valid committee signatures, needs {needed}")]
    TooFewSignatures {
        /// Valid ones.
        valid: usize,
        /// Needed.
        needed: usize,
    },
    /// Genesis not signed by the CA.
    #[error("genesis is not signed by the ring's CA")]
    BadGenesis,
    /// Members unsorted or repeated, a committee seat not a member, or a version unknown.
    #[error("malformed configuration: {0}")]
    Malformed(&'static str),
}

/// Bytes signed under a domain tag, so no signature can be replayed as another kind.
fn tagged<T: Serialize>(tag: &str, value: &T) -> Vec<u8> {
    let mut bytes = format!("ringvault-bft/{tag}/v{CONFIG_VERSION}").into_bytes();
    bytes.extend(postcard::to_allocvec(value).unwrap_or_default());
    bytes
}

/// What a joining server signs.
pub fn join_bytes(cert: &NodeCertificate) -> Vec<u8> {
    tagged("join", cert)
}

/// What a leaving member signs.
pub fn leave_bytes(id: Id, epoch: Epoch) -> Vec<u8> {
    tagged("leave", &(id, epoch))
}

/// What a confirming committee member signs.
pub fn confirm_bytes(epoch: Epoch, suspect: Id) -> Vec<u8> {
    tagged("confirm", &(epoch, suspect))
}

/// What a committee member signs for a vote of the instance that decides `epoch` (the
/// precommits are the certificate's signatures). `kind`: 0 proposal, 1 prevote, 2 precommit.
pub fn vote_bytes(epoch: Epoch, round: u32, kind: u8, value: Option<Id>) -> Vec<u8> {
    tagged("vote", &(epoch, round, kind, value))
}

/// The precommit kind in [`vote_bytes`].
pub const PRECOMMIT: u8 = 2;

impl Delta {
    /// The delta's hash (what a proposer signs, so that a receiver checks the signature before
    /// it spends anything on applying the delta).
    pub fn hash(&self) -> Id {
        Id::hash(&tagged("delta", self))
    }
}

impl Config {
    /// The genesis configuration of `members` (the committee: the first seats by the committee
    /// rule), valid until `valid_until`.
    pub fn genesis(mut members: Vec<Member>, params: Params, valid_until: u64) -> Self {
        members.sort_by_key(Member::id);
        members.dedup_by_key(|m| m.id());
        let mut config = Config {
            version: CONFIG_VERSION,
            epoch: 0,
            prev: Id::ZERO,
            members,
            committee: Vec::new(),
            params,
            valid_until,
        };
        config.committee = config.fill_committee(Vec::new(), 0);
        config
    }

    /// The configuration's hash (what certificates sign).
    pub fn hash(&self) -> Id {
        Id::hash(&tagged("config", self))
    }

    /// The member with id `id`.
    pub fn member(&self, id: &Id) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.id().cmp(id))
            .ok()
            .map(|i| &self.members[i])
    }

    /// Precommits a certificate needs: a quorum of the committee (2 f_ms + 1 when every seat
    /// is filled; fewer seats in a fleet smaller than a committee).
    pub fn quorum(&self) -> usize {
        crate::Thresholds::bft(self.committee.len()).quorum()
    }

    /// `id`'s seat on the committee.
    pub fn seat(&self, id: &Id) -> Option<usize> {
        self.committee.iter().position(|c| c == id)
    }

    /// The replica group of `key`: the 3 f_r + 1 members whose ids follow `key` clockwise (all
    /// members when there are fewer).
    pub fn replica_group(&self, key: &Id) -> Vec<&Member> {
        let n = self.members.len();
        let start = self.members.partition_point(|m| m.id() < *key);
        (0..self.params.group_size().min(n))
            .map(|i| &self.members[(start + i) % n])
            .collect()
    }

    /// Where tree `tree` of `trees` starts in the sorted member list. The trees spreading this
    /// configuration are the member list rotated to start at evenly spaced points after
    /// BLAKE3(epoch), each node forwarding to the [`FAN_OUT`] nodes at positions 16p + 1 ..
    /// 16p + 16 after its own position p: so the interiors (the first N / 16 positions) of up
    /// to 16 trees are disjoint, and any server computes its children in O(log N).
    fn tree_start(&self, tree: usize, trees: usize) -> usize {
        let n = self.members.len().max(1);
        let offset = Id::hash_parts(&[b"trees", &self.epoch.to_be_bytes()]);
        let first = self.members.partition_point(|m| m.id() < offset);
        (first + tree * n / trees.max(1)) % n
    }

    /// The root of each of `trees` dissemination trees.
    pub fn tree_roots(&self, trees: usize) -> Vec<Id> {
        if self.members.is_empty() {
            return Vec::new();
        }
        (0..trees)
            .map(|t| self.members[self.tree_start(t, trees)].id())
            .collect()
    }

    /// The interior nodes (those with children) of tree `tree` of `trees`, root first.
    pub fn tree_interior(&self, tree: usize, trees: usize) -> Vec<Id> {
        let n = self.members.len();
        let start = self.tree_start(tree, trees);
        (0..n.saturating_sub(1).div_ceil(FAN_OUT).max(1).min(n))
            .map(|p| self.members[(start + p) % n].id())
            .collect()
    }

    /// `me`'s children in tree `tree` of `trees` (empty for leaves and non-members).
    pub fn tree_children(&self, tree: usize, trees: usize, me: &Id) -> Vec<Id> {
        let n = self.members.len();
        let Ok(j) = self.members.binary_search_by(|m| m.id().cmp(me)) else {
            return Vec::new();
        };
        let start = self.tree_start(tree, trees);
        let p = (j + n - start) % n;
        (FAN_OUT * p + 1..=FAN_OUT * p + FAN_OUT)
            .take_while(|q| *q < n)
            .map(|q| self.members[(start + q) % n].id())
            .collect()
    }

    /// The committee rule: seats still held by members stay (except the one seat rotated this
    /// epoch); empty seats go to the members ranked first by BLAKE3(epoch, id), so no proposer
    /// can choose who sits.
    fn fill_committee(&self, mut seats: Vec<Id>, epoch: Epoch) -> Vec<Id> {
        let size = self.params.committee_size().min(self.members.len());
        seats.retain(|id| self.member(id).is_some());
        let rotate = self.params.rotate_every as u64;
        if rotate > 0
            && epoch > 0
            && epoch.is_multiple_of(rotate)
            && seats.len() == size
            && size > 0
        {
            let seat = ((epoch / rotate) % size as u64) as usize;
            seats.remove(seat);
        }
        let mut ranked: Vec<(Id, Id)> = self
            .members
            .iter()
            .map(Member::id)
            .filter(|id| !seats.contains(id))
            .map(|id| (Id::hash_parts(&[&epoch.to_be_bytes(), id.as_bytes()]), id))
            .collect();
        ranked.sort();
        seats.extend(
            ranked
                .into_iter()
                .map(|(_, id)| id)
                .take(size - seats.len()),
        );
        seats
    }

    /// Config(e + 1): this configuration with `delta` applied. The delta's checks
    /// ([`crate::check_delta`]) come first; this only applies it.
    pub fn apply(&self, delta: &Delta) -> Config {
        let mut members = self.members.clone();
        for change in &delta.changes {
            match change {
                Change::Join(j) => members.push(Member {
                    cert: j.cert.clone(),
                    admitted: delta.epoch,
                }),
                Change::Leave(_) | Change::Evict { .. } => {
                    let gone = change.subject();
                    members.retain(|m| m.id() != gone);
                }
            }
        }
        members.sort_by_key(Member::id);
        members.dedup_by_key(|m| m.id());
        let mut next = Config {
            version: CONFIG_VERSION,
            epoch: delta.epoch,
            prev: self.hash(),
            members,
            committee: Vec::new(),
            params: self.params,
            valid_until: delta.valid_until,
        };
        next.committee = next.fill_committee(self.committee.clone(), delta.epoch);
        next
    }

    /// Checks the shape every configuration must have.
    pub fn check_shape(&self) -> Result<(), ConfigError> {
        if self.version != CONFIG_VERSION {
            return Err(ConfigError::Malformed("unknown version"));
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(ConfigError::Malformed("too many members"));
        }
        if !self.members.windows(2).all(|w| w[0].id() < w[1].id()) {
            return Err(ConfigError::Malformed(
                "members not sorted by id or repeated",
            ));
        }
        if self.committee.iter().any(|id| self.member(id).is_none()) {
            return Err(ConfigError::Malformed("a committee seat is not a member"));
        }
        Ok(())
    }

    /// Checks that `next`, certified by `cert`, is the configuration that follows this one: the
    /// right epoch and predecessor, and 2 f_ms + 1 distinct members of this committee signed
    /// their precommit for it.
    pub fn verify_next(&self, next: &Config, cert: &ConfigCert) -> Result<(), ConfigError> {
        let want = self.epoch + 1;
        if next.epoch != want {
            return Err(ConfigError::WrongEpoch {
                got: next.epoch,
                want,
            });
        }
        if next.prev != self.hash() {
            return Err(ConfigError::WrongPrev);
        }
        next.check_shape()?;
        if cert.epoch != next.epoch || cert.config_hash != next.hash() {
            return Err(ConfigError::CertMismatch);
        }
        self.check_signatures(cert)
    }

    /// Counts the distinct committee members of this configuration whose precommit signatures
    /// in `cert` verify; fails below 2 f_ms + 1.
    pub fn check_signatures(&self, cert: &ConfigCert) -> Result<(), ConfigError> {
        let signed = vote_bytes(cert.epoch, cert.round, PRECOMMIT, Some(cert.config_hash));
        let mut valid = std::collections::BTreeSet::new();
        for (id, sig) in &cert.sigs {
            if self.seat(id).is_none() || valid.contains(id) {
                continue;
            }
            let Some(member) = self.member(id) else {
                continue;
            };
            if member.key().verify(&signed, sig).is_ok() {
                valid.insert(*id);
            }
        }
        let needed = self.quorum();
        if valid.len() < needed {
            return Err(ConfigError::TooFewSignatures {
                valid: valid.len(),
                needed,
            });
        }
        Ok(())
    }
}

/// Genesis with the operator's (CA's) signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// Config(0).
    pub config: Config,
    /// The CA's signature over its hash.
    pub signature: Signature,
}

impl Genesis {
    /// Signs `config` with the CA key.
    pub fn sign(ca: &Identity, config: Config) -> Self {
        let signature = ca.sign(&tagged("genesis", &config.hash()));
        Genesis { config, signature }
    }

    /// Its bytes (the genesis file's content).
    pub fn encode(&self) -> Vec<u8> {
        crate::message::encode(self)
    }

    /// Decodes genesis bytes; total on any input.
    pub fn decode(bytes: &[u8]) -> Result<Self, ringvault_types::DecodeError> {
        crate::message::decode(bytes)
    }

    /// Checks the CA's signature and the configuration's shape.
    pub fn verify(&self, ca: &PublicKey) -> Result<&Config, ConfigError> {
        if self.config.epoch != 0 {
            return Err(ConfigError::BadGenesis);
        }
        ca.verify(&tagged("genesis", &self.config.hash()), &self.signature)
            .map_err(|_| ConfigError::BadGenesis)?;
        self.config.check_shape()?;
        Ok(&self.config)
    }
}

/// Checks a chain of certified configurations from a trusted one; returns the last.
pub fn verify_chain<'a>(
    trusted: &'a Config,
    chain: &'a [(Config, ConfigCert)],
) -> Result<&'a Config, (Epoch, ConfigError)> {
    let mut at = trusted;
    for (next, cert) in chain {
        at.verify_next(next, cert).map_err(|e| (next.epoch, e))?;
        at = next;
    }
    Ok(at)
}

/// A configuration of `n` servers with deterministic keys, for tests: the CA, the servers'
/// identities (sorted as the members are) and the configuration.
#[cfg(test)]
pub(crate) fn test_config(n: u64, params: Params) -> (Identity, Vec<Identity>, Config) {
    let ca = Identity::from_secret_bytes([9; 32]);
    let mut ids: Vec<Identity> = (0..n)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&(i + 1).to_le_bytes());
            Identity::from_secret_bytes(s)
        })
        .collect();
    ids.sort_by_key(|i| i.id());
    let members = ids
        .iter()
        .enumerate()
        .map(|(i, who)| Member {
            cert: NodeCertificate::issue(&ca, test_cert_body(who, i as u64)),
            admitted: 0,
        })
        .collect();
    (ca, ids, Config::genesis(members, params, u64::MAX / 2))
}

/// A certificate body for `who`, valid for a long time, for tests.
#[cfg(test)]
pub(crate) fn test_cert_body(who: &Identity, serial: u64) -> ringvault_types::CertBody {
    ringvault_types::CertBody {
        version: ringvault_types::CERT_VERSION,
        serial,
        node_id: who.id(),
        public_key: who.public_key(),
        addrs: vec![std::net::SocketAddr::from((
            [127, 0, 0, 1],
            7000 + serial as u16,
        ))],
        not_before: 0,
        not_after: u64::MAX / 2,
    }
}
