//! Limits and errors of the wire format shared by every driver.

/// The protocol version carried in every encoded overlay message; a peer speaking another
/// version is refused with [`DecodeError::Version`]. Also part of the QUIC ALPN strings of open
/// and secure mode (server mode's protocol is versioned on its own). 2: a join's state replies
/// carry round trips.
pub const PROTOCOL_VERSION: u8 = 2;

/// The largest encoded message accepted or produced, in bytes (version byte included). Bulk
/// object data is split below this size by the services that move it.
pub const MAX_MESSAGE_SIZE: usize = 8 * 1024 * 1024;

/// Why bytes from the network are not a message. Decoding is total: every input yields a
/// message or one of these, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// Larger than [`MAX_MESSAGE_SIZE`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit")]
    TooLarge(usize),
    /// Another protocol version: the peer runs an incompatible ringvault.
    #[error("peer speaks protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    Version(u8),
    /// The bytes do not parse as a message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message parsed but bytes were left over.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message would exceed [`MAX_MESSAGE_SIZE`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit")]
    TooLarge(usize),
    /// The serializer failed.
    #[error("cannot encode message: {0}")]
    Serialize(String),
}
