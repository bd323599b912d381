//! The overlay's wire messages. Encoding (postcard, framing, version) is the node's business;
//! these types only need to be serde-able and bounded.

use serde::{Deserialize, Serialize};

use ringvault_types::{Contact, Id};

/// Identifies the service a routed application message belongs to.
pub type AppId = u16;

/// An application's message, opaque to the overlay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppMessage {
    /// The service that sent it and will receive it.
    pub app: AppId,
    /// The service's own encoding.
    pub body: Vec<u8>,
}

/// What a routed message carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoutedBody {
    /// A node asking to join with the envelope's key as its id.
    Join {
        /// The joining node.
        joiner: Contact,
    },
    /// An application message.
    App(AppMessage),
    /// A secure route's probe: the first node that can tell the key's neighbourhood answers
    /// the origin with it ([`OverlayMessage::RootSet`]).
    SecureProbe {
        /// The origin's id for the secure route.
        id: u64,
        /// How many of the key's closest nodes the route is for.
        r: u8,
        /// Forward along constrained-table entries only (the redundant copies).
        constrained: bool,
    },
}

/// A message routed hop by hop toward the node numerically closest to `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The destination key.
    pub key: Id,
    /// The node that first sent it.
    pub origin: Contact,
    /// Hops taken so far.
    pub hops: u8,
    /// Nodes that forwarded the message, origin first, when the origin asked for a trace.
    pub trace: Option<Vec<TraceHop>>,
    /// The payload.
    pub body: RoutedBody,
}

/// One forwarding step of a traced message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHop {
    /// The node that forwarded the message.
    pub node: Contact,
    /// Its measured proximity to the node it forwarded to, if it had measured it.
    pub rtt_to_next: Option<ringvault_types::Duration>,
}

/// One overlay message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverlayMessage {
    /// A routed message; the receiver acknowledges it with [`OverlayMessage::HopAck`].
    Routed {
        /// Per-hop sequence number chosen by the sender, echoed in the ack.
        seq: u64,
        /// The message.
        envelope: Envelope,
    },
    /// An application message sent straight to the receiver (KBR route with a null key).
    Direct(AppMessage),
    /// Acknowledges one hop of a routed message.
    HopAck {
        /// The sequence number of the acknowledged hop.
        seq: u64,
    },
    /// A node on a join path gives the joiner its state.
    JoinReply(JoinReply),
    /// A joining node (second stage) asks for the receiver's state.
    StateRequest,
    /// The receiver's state, for a joining node.
    StateReply(StateSnapshot),
    /// A node that finished joining tells the nodes in its tables it exists.
    Announce {
        /// The version of the receiver's state the sender built its tables from, if any.
        seen_version: Option<u64>,
    },
    /// Keep-alive.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Keep-alive answer.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Asks for the receiver's leaf set (leaf repair, concurrent joins).
    LeafSetRequest,
    /// The sender's leaf set.
    LeafSetReply {
        /// The sender's leaf set members.
        leaves: Vec<Contact>,
        /// The sender's state version.
        version: u64,
    },
    /// Lazy routing table repair: asks for the receiver's entry in a slot.
    SlotRequest {
        /// Row.
        row: u8,
        /// Column.
        col: u8,
    },
    /// The receiver's entry for a requested slot.
    SlotReply {
        /// Row.
        row: u8,
        /// Column.
        col: u8,
        /// The entry, if the sender has one.
        entry: Option<Contact>,
    },
    /// Asks for the receiver's neighbourhood set (neighbourhood repair).
    NeighbourhoodRequest,
    /// The sender's neighbourhood set.
    NeighbourhoodReply {
        /// Members, nearest to the sender first.
        peers: Vec<Contact>,
    },
    /// The sender is leaving the ring on purpose.
    Leaving,
    /// The answer to a secure probe: the key's neighbourhood as the sender knows it, closest
    /// first.
    RootSet {
        /// The secure route's id.
        id: u64,
        /// The key.
        key: Id,
        /// The sender's leaf set and itself, closest to the key first.
        members: Vec<Contact>,
    },
    /// One hop of a secure probe. Not acknowledged: a liar acknowledges and drops anyway, so
    /// the origin's end-to-end timeout and redundant routing stand in for hop-by-hop
    /// recovery, at half the messages.
    SecureHop(Envelope),
    /// A secure route's message for one of the key's closest nodes.
    SecureDeliver {
        /// The key.
        key: Id,
        /// How many of the key's closest nodes it is for.
        r: u8,
        /// Every node it has been sent to so far (receivers send it on to any of the key's r
        /// closest they know that are missing).
        recipients: Vec<Id>,
        /// The message.
        msg: AppMessage,
    },
    /// Routing table maintenance: asks for the receiver's routing table row.
    RowRequest {
        /// The row.
        row: u8,
    },
    /// The receiver's entries in a requested row.
    RowReply {
        /// The row.
        row: u8,
        /// Its entries (at most 2^b), each with the sender's measured round trip to it, which
        /// lets the asker skip probing candidates that cannot beat its own entries.
        entries: Vec<Measured>,
    },
}

/// State given to a joining node by one node on its join path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReply {
    /// The sender's position on the path (0 = the bootstrap node).
    pub hop: u8,
    /// True when the sender is the root (numerically closest to the joiner's id).
    pub root: bool,
    /// Routing table entries the joiner can use.
    pub rows: Vec<Contact>,
    /// The root's leaf set (root only; whole-state variant: every hop).
    pub leaves: Vec<Contact>,
    /// The bootstrap node's neighbourhood set (hop 0; whole-state variant: every hop).
    pub neighbours: Vec<Contact>,
    /// The sender's state version.
    pub version: u64,
}

/// A node named to another with the sender's measured round trip to it, if measured: by the
/// triangle inequality the receiver is at least |rtt(receiver, sender) - that| from it, which
/// lets it skip probing a candidate that could not win a place in its tables.
pub type Measured = (Contact, Option<ringvault_types::Duration>);

/// A node's whole state, for the second stage of a join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// Leaf set members.
    pub leaves: Vec<Measured>,
    /// Routing table entries.
    pub table: Vec<Measured>,
    /// Neighbourhood set members.
    pub neighbours: Vec<Measured>,
    /// The sender's state version.
    pub version: u64,
}

impl OverlayMessage {
    /// The nodes this message hands its receiver as candidates for its tables (neither its
    /// sender nor a routed message's origin, which the receiver only answers): in secure mode
    /// they travel with their certificates, and a receiver takes none it cannot check.
    pub fn named_contacts(&self) -> Vec<Id> {
        let mut ids: Vec<Id> = match self {
            OverlayMessage::JoinReply(r) => r
                .rows
                .iter()
                .chain(&r.leaves)
                .chain(&r.neighbours)
                .map(|c| c.id)
                .collect(),
            OverlayMessage::StateReply(s) => s
                .leaves
                .iter()
                .chain(&s.table)
                .chain(&s.neighbours)
                .map(|(c, _)| c.id)
                .collect(),
            OverlayMessage::LeafSetReply { leaves: v, .. }
            | OverlayMessage::NeighbourhoodReply { peers: v }
            | OverlayMessage::RootSet { members: v, .. } => v.iter().map(|c| c.id).collect(),
            OverlayMessage::RowReply { entries, .. } => entries.iter().map(|(c, _)| c.id).collect(),
            OverlayMessage::SlotReply { entry, .. } => entry.iter().map(|c| c.id).collect(),
            _ => Vec::new(),
        };
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            OverlayMessage::Routed { .. } => "routed",
            OverlayMessage::Direct(_) => "direct",
            OverlayMessage::HopAck { .. } => "hop_ack",
            OverlayMessage::JoinReply(_) => "join_reply",
            OverlayMessage::StateRequest => "state_request",
            OverlayMessage::StateReply(_) => "state_reply",
            OverlayMessage::Announce { .. } => "announce",
            OverlayMessage::Ping { .. } => "ping",
            OverlayMessage::Pong { .. } => "pong",
            OverlayMessage::LeafSetRequest => "leafset_request",
            OverlayMessage::LeafSetReply { .. } => "leafset_reply",
            OverlayMessage::SlotRequest { .. } => "slot_request",
            OverlayMessage::SlotReply { .. } => "slot_reply",
            OverlayMessage::NeighbourhoodRequest => "neighbourhood_request",
            OverlayMessage::NeighbourhoodReply { .. } => "neighbourhood_reply",
            OverlayMessage::Leaving => "leaving",
            OverlayMessage::RootSet { .. } => "root_set",
            OverlayMessage::SecureHop(_) => "secure_hop",
            OverlayMessage::SecureDeliver { .. } => "secure_deliver",
            OverlayMessage::RowRequest { .. } => "row_request",
            OverlayMessage::RowReply { .. } => "row_reply",
        }
    }
}
