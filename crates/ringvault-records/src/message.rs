//! The records service's messages, carried as the body of KBR application messages.

use serde::{Deserialize, Serialize};

use ringvault_types::{Contact, Id, Identity, PublicKey, Record, Signature};

const ACK_DOMAIN: &[u8] = b"ringvault record ack v1\0";

/// A replica's signed statement that it holds a state of a record: the record's key, version
/// and tie hash (`Record::tie_hash`), so the writer can tell which state it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordAck {
    /// The record's key.
    pub key: Id,
    /// The version the replica holds.
    pub version: u64,
    /// The tie hash of the state it holds.
    pub tie: Id,
    /// The replica's public key (its id is the key's hash).
    pub node_key: PublicKey,
    /// The replica's signature over the fields above.
    pub signature: Signature,
}

impl RecordAck {
    /// `node` acknowledges holding `record`.
    pub fn issue(node: &Identity, record: &Record) -> Self {
        let (key, version, tie) = (record.key(), record.body.version, record.tie_hash());
        let node_key = node.public_key();
        let signature = node.sign(&ack_bytes(&key, version, &tie, &node_key));
        RecordAck {
            key,
            version,
            tie,
            node_key,
            signature,
        }
    }

    /// The node that signed it.
    pub fn node(&self) -> Id {
        self.node_key.id()
    }

    /// Whether the signature verifies and the ack is for exactly `record`.
    pub fn confirms(&self, record: &Record) -> bool {
        self.key == record.key()
            && self.version == record.body.version
            && self.tie == record.tie_hash()
            && self
                .node_key
                .verify(
                    &ack_bytes(&self.key, self.version, &self.tie, &self.node_key),
                    &self.signature,
                )
                .is_ok()
    }
}

fn ack_bytes(key: &Id, version: u64, tie: &Id, node: &PublicKey) -> Vec<u8> {
    let mut out = ACK_DOMAIN.to_vec();
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(tie.as_bytes());
    out.extend_from_slice(&node.0);
    out
}

/// Why a replica refused a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordRefusal {
    /// The record does not verify (signature, name, size, format).
    Invalid,
    /// The replica holds a higher version (given).
    Stale(u64),
    /// The replica holds another record of the same version, which wins the tie: the owner
    /// wrote twice without reading.
    Conflict,
    /// The replica has no room for it.
    Full,
}

/// What a member holds of a key a re-checking node asked about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CheckAnswer {
    /// This record, trusted here (signed by its owner: it proves itself).
    Holds(Record),
    /// Nothing, and this node is not re-checking its own records.
    Nothing,
    /// It cannot say: it holds the key suspect, or is re-checking its own records.
    Unsure,
}

/// One records message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RecordsMessage {
    /// Routed to the record's key: the root keeps it and passes it to the other replicas.
    Put {
        req: u64,
        client: Contact,
        record: Record,
    },
    /// From the root to a replica (with the writer to acknowledge to), or from a reader
    /// repairing a lagging replica (without).
    Store {
        req: Option<(u64, Contact)>,
        record: Record,
    },
    /// A replica holds the record.
    Ack { req: u64, ack: RecordAck },
    /// A replica refused the write.
    Refused {
        req: u64,
        key: Id,
        reason: RecordRefusal,
    },
    /// Routed to the key (`fan_out`: the root also asks the other replicas), or sent straight
    /// to a replica by the root.
    Get {
        req: u64,
        client: Contact,
        key: Id,
        fan_out: bool,
    },
    /// Maintenance: the states (version and tie hash) the sender holds of records both belong
    /// to.
    Offer { entries: Vec<(Id, u64, Id)> },
    /// Maintenance: the offered records the receiver holds older or not at all.
    Want { keys: Vec<Id> },
    /// A node back from a long absence asks the members what they hold of its suspect records.
    Check { keys: Vec<Id> },
    /// The answer to a [`RecordsMessage::Check`], key by key.
    Checked { entries: Vec<(Id, CheckAnswer)> },
    /// Maintenance, from a member of the records' replica sets to a node outside them that
    /// offered them: the member holds these states, or newer ones; the outsider lets its copy
    /// go once a majority of the members said so.
    Have { keys: Vec<Id> },
    /// A replica's answer to a read: what it holds for the key, and whether it has seen
    /// another record of the same version.
    Answer {
        req: u64,
        key: Id,
        record: Option<Record>,
        conflict: bool,
    },
}
