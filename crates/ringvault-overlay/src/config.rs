//! Overlay parameters, named after the Pastry papers' symbols.

use ringvault_types::{Duration, DEFAULT_B};

/// Default leaf set size `L`: L/2 closest larger and L/2 closest smaller ids.
pub const LEAF_SET_SIZE: usize = 16;
/// Default neighbourhood set size `M`: the M nodes closest by proximity.
pub const NEIGHBOURHOOD_SIZE: usize = 32;
/// A routed message that has taken this many hops is dropped (a guard against routing loops in
/// inconsistent states; correct tables need about log16 N).
pub const MAX_HOPS: u8 = 48;
/// At most this many forwarded messages wait for a hop acknowledgement at once; beyond it the
/// oldest is forgotten (treated as acknowledged).
pub const MAX_IN_FLIGHT: usize = 4096;
/// At most this many proximity probes are outstanding; further candidates are not probed (they
/// can still fill empty slots).
pub const MAX_PENDING_PROBES: usize = 1024;
/// At most this many recently failed ids are remembered, so stale state from peers does not
/// resurrect them; the oldest is forgotten first.
pub const MAX_RECENTLY_FAILED: usize = 1024;
/// Round trips a hop may take before it times out, on top of [`Config::hop_slack`].
pub const HOP_TIMEOUT_RTTS: u64 = 3;
/// A routed message larger than this waits [`Config::hop_timeout`] for its acknowledgement
/// whatever the peer's round trip: its transfer time, not the round trip, dominates.
pub const SMALL_HOP_BYTES: usize = 64 * 1024;
/// At most this many peers are suspected at once; a suspicion beyond it is a failure at once
/// (the behaviour without suspicion).
pub const MAX_SUSPECTS: usize = 1024;
/// Hops in a row a peer may leave unacknowledged before it is declared failed even though it
/// answers pings (a peer that drops what it should forward). A hop counts as missed when it is
/// still unacknowledged [`Config::failure_timeout`] after it timed out; an acknowledgement that
/// comes late, after the message went on around the peer, still counts as one.
pub const MAX_MISSED_ACKS: u8 = 3;
/// Messages waiting for a suspicion to end, at most; beyond it the oldest is dropped.
pub const MAX_PARKED: usize = 256;
/// Bytes of application payload parked at most; beyond it the oldest is dropped.
pub const MAX_PARKED_BYTES: usize = 16 << 20;
/// Row entries a lazy slot repair asks at once.
pub const SLOT_REPAIR_FANOUT: usize = 2;
/// Slot repairs tracked at once; beyond it the oldest is forgotten.
pub const MAX_SLOT_REPAIRS: usize = 256;
/// How many times one node re-sends a routed message to an alternative next hop after hops
/// time out. Each re-route suspects one more peer and routing avoids suspects, so this bounds
/// the time a message spends at a node whose tables are mostly dead, not a loop. Under churn
/// the alternatives are stale more often than the first choice (at 1.4-minute sessions, 16% of
/// second tries and 24% of fourth tries time out too), so three re-routes lost 0.3% of lookups.
pub const MAX_REROUTES: u8 = 8;
/// Default joins per source address per minute a bootstrap node starts (see
/// [`Config::join_rate_per_minute`]).
pub const JOIN_RATE_PER_MINUTE: u32 = 60;
/// Default period of routing table maintenance (see [`Config::table_maintenance_interval`]).
pub const TABLE_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// How many times a join is restarted before the node gives up and reports `JoinFailed`.
pub const MAX_JOIN_ATTEMPTS: u32 = 5;

/// Which state a joining node collects: the three join variants of the Pastry locality study.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinVariant {
    /// Row i from the i-th node on the join path, leaf set from the root, neighbourhood set from
    /// the first node; no second stage.
    PathRows,
    /// Every node on the path sends its whole state (all rows, leaf set, neighbourhood set); no
    /// second stage.
    WholeState,
    /// Path rows, then the second stage: ask every node in the new tables for its state, keep
    /// the proximity-closest candidates. The default.
    Full,
}

/// Overlay parameters. `Config::default()` is Pastry's: b = 4, L = 16, M = 32.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bits per digit `b` (1..=8). Routing table rows have 2^b columns.
    pub b: u8,
    /// Leaf set size `L` (even, >= 2).
    pub leaf_set_size: usize,
    /// Neighbourhood set size `M`.
    pub neighbourhood_size: usize,
    /// How the join collects state.
    pub join_variant: JoinVariant,
    /// A leaf not heard from for this long is sent a keep-alive.
    pub keepalive_interval: Duration,
    /// A leaf silent for this long is declared failed.
    pub failure_timeout: Duration,
    /// How long a forwarded message may wait for its next hop's acknowledgement when no round
    /// trip is known at all or the message is large (the longest any hop waits), and the
    /// longest a suspect (a peer a hop to which timed out) may stay silent before it is
    /// declared failed. A measured peer's hop times out after [`HOP_TIMEOUT_RTTS`] round trips
    /// plus [`Config::hop_slack`], the message is re-routed at once, and the suspect is
    /// presumed dead for routing when it has not answered its ping within twice that.
    pub hop_timeout: Duration,
    /// What a hop to a measured peer may take beyond [`HOP_TIMEOUT_RTTS`] round trips before it
    /// times out (the peer's queueing and processing).
    pub hop_slack: Duration,
    /// How long a joining node waits for each join step before starting over.
    pub join_timeout: Duration,
    /// How often the neighbourhood set is re-probed.
    pub neighbourhood_interval: Duration,
    /// How often routing table maintenance runs (MSPastry's): each row asks one of its
    /// entries, at random, for that entry's own row, and closer candidates replace entries once
    /// probed. This is what keeps the tables of nodes that joined early as good as those of
    /// late joiners: a joiner announces itself only to the nodes in its own tables. It runs
    /// with the other periodic maintenance, when [`Config::keepalives`] is on. `None`: off.
    pub table_maintenance_interval: Option<Duration>,
    /// Whether keep-alives, and with them every periodic maintenance timer, run at all (the
    /// simulator turns them off for static experiments).
    pub keepalives: bool,
    /// Whether dead routing table entries are repaired lazily by asking row peers.
    pub table_repair: bool,
    /// Secure routing: keep the constrained routing table and serve `sec_route`.
    pub secure: bool,
    /// The routing failure test's threshold (see [`crate::failure_test`]).
    pub gamma: f64,
    /// Joins this node starts for one source address (IPv4 address, IPv6 /64) per minute, as
    /// their bootstrap; also the burst allowed. Beyond it the join is not acknowledged and the
    /// joiner retries later. 0: no limit.
    pub join_rate_per_minute: u32,
    /// Whether secure routes judge their first answer at all. Off, every first answer is
    /// accepted: only for experiments that show what the test is worth.
    pub failure_test: bool,
    /// Secure mode: a joiner checks the state its join path handed it against the answers of
    /// probes sent along independent paths before it announces itself (see
    /// `Overlay::check_join`). Off only for experiments that show what the check is worth.
    pub secure_join: bool,
    /// How long a secure route waits for its answers, per stage.
    pub secure_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            b: DEFAULT_B,
            leaf_set_size: LEAF_SET_SIZE,
            neighbourhood_size: NEIGHBOURHOOD_SIZE,
            join_variant: JoinVariant::Full,
            keepalive_interval: Duration::from_secs(2),
            failure_timeout: Duration::from_secs(6),
            hop_timeout: Duration::from_millis(1500),
            hop_slack: Duration::from_millis(50),
            join_timeout: Duration::from_secs(10),
            neighbourhood_interval: Duration::from_secs(30),
            table_maintenance_interval: Some(TABLE_MAINTENANCE_INTERVAL),
            keepalives: true,
            table_repair: true,
            secure: false,
            gamma: crate::secure::DEFAULT_GAMMA,
            failure_test: true,
            secure_join: true,
            join_rate_per_minute: JOIN_RATE_PER_MINUTE,
            secure_timeout: Duration::from_secs(3),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid overlay configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks the parameters, saying what to change when one is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=8).contains(&self.b) {
            return Err(ConfigError(format!("b must be 1..=8, got {}", self.b)));
        }
        if self.leaf_set_size < 2 || !self.leaf_set_size.is_multiple_of(2) {
            return Err(ConfigError(format!(
                "leaf set size L must be even and at least 2, got {}",
                self.leaf_set_size
            )));
        }
        if !(self.gamma > 1.0 && self.gamma.is_finite()) {
            return Err(ConfigError(format!(
                "the failure test's gamma must be a number above 1, got {}",
                self.gamma
            )));
        }
        if self.table_maintenance_interval == Some(Duration::ZERO) {
            return Err(ConfigError(
                "the routing table maintenance interval must be above zero (None turns it off)"
                    .into(),
            ));
        }
        if self.failure_timeout <= self.keepalive_interval {
            return Err(ConfigError(
                "failure timeout must be longer than the keep-alive interval".into(),
            ));
        }
        Ok(())
    }

    /// Columns per routing table row: 2^b.
    pub fn columns(&self) -> usize {
        1 << self.b
    }
}
