//! What servers send each other about membership.

use serde::{Deserialize, Serialize};

use ringvault_types::{DecodeError, Id, Signature, MAX_MESSAGE_SIZE};

use crate::config::{vote_bytes, Change, ConfigCert, Confirm, Delta, Epoch};
use crate::consensus::{Round, VoteKind};

/// A signed prevote or precommit of the instance that decides `epoch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedVote {
    /// The epoch being decided.
    pub epoch: Epoch,
    /// The round.
    pub round: Round,
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// Hash of the configuration voted for, or nil.
    pub value: Option<Id>,
    /// The committee member.
    pub voter: Id,
    /// Its signature over [`SignedVote::bytes`].
    pub signature: Signature,
}

impl SignedVote {
    /// The bytes signed.
    pub fn bytes(&self) -> Vec<u8> {
        vote_bytes(self.epoch, self.round, kind_tag(self.kind), self.value)
    }
}

/// The tag of a vote kind in signed bytes (0 is the proposal).
pub fn kind_tag(kind: VoteKind) -> u8 {
    match kind {
        VoteKind::Prevote => 1,
        VoteKind::Precommit => crate::config::PRECOMMIT,
    }
}

/// A signed proposal of the instance that decides `delta.epoch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedProposal {
    /// The round.
    pub round: Round,
    /// The proposed changes.
    pub delta: Delta,
    /// The round in which the proposer saw a quorum prevote it (a re-proposal).
    pub valid_round: Option<Round>,
    /// For a re-proposal: that quorum of signed prevotes.
    pub polka: Vec<SignedVote>,
    /// The proposer.
    pub proposer: Id,
    /// Its signature over [`proposal_bytes`].
    pub signature: Signature,
}

/// What a proposer signs: the epoch, round, hash of the configuration the delta makes, and
/// the valid round.
pub fn proposal_bytes(
    epoch: Epoch,
    round: Round,
    config: Id,
    valid_round: Option<Round>,
) -> Vec<u8> {
    let mut bytes = vote_bytes(epoch, round, 0, Some(config));
    bytes.extend(postcard::to_allocvec(&valid_round).unwrap_or_default());
    bytes
}

/// A message's bytes: postcard.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_allocvec(msg).unwrap_or_default()
}

/// Decodes a message of at most [`MAX_MESSAGE_SIZE`] bytes; total on any input.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    postcard::from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// A membership message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BftMessage {
    /// A proposal (committee to committee).
    Propose(Box<SignedProposal>),
    /// A vote (committee to committee).
    Vote(SignedVote),
    /// A join, leave or confirmed eviction request (anyone to the committee).
    Request(Box<Change>),
    /// A committee member's confirm that a suspect is dead (committee to committee).
    Confirm(Confirm),
    /// A server suspects `suspect` (to the committee, which probes it).
    Suspect {
        /// The epoch the sender is in.
        epoch: Epoch,
        /// The suspected member.
        suspect: Id,
    },
    /// A decided configuration: the delta on top of the one before, and its certificate.
    Decided {
        /// The changes (shared: a relay passes the same one on to its children).
        delta: std::sync::Arc<Delta>,
        /// The committee's precommits.
        cert: ConfigCert,
    },
    /// The sender has configurations up to `have` and asks for later ones.
    Pull {
        /// The sender's epoch.
        have: Epoch,
    },
}

impl BftMessage {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        crate::message::encode(self)
    }

    /// Decodes a message; total on any input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        crate::message::decode(bytes)
    }
}
