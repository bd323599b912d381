//! ringvault's shared vocabulary.
//!
//! Owns: the 256-bit [`Id`] and its ring arithmetic, [`Time`]/[`Duration`] (values, never read
//! from a clock here), [`Contact`] (id + address) and node [`Identity`] (ed25519, id = BLAKE3 of
//! the public key), ring certificates (node certificates, signing requests, revocation lists;
//! see [`NodeCertificate`]), signed mutable [`Record`]s (one format for classic and server mode), and the wire format's limits and errors. Does not own any protocol logic: that lives in `ringvault-overlay` and the
//! services above it.
#![deny(missing_docs)]

mod armor;
mod cert;
mod contact;
mod grant;
mod id;
mod identity;
mod record;
mod time;
mod wire;

pub use armor::{armor, unarmor};
pub use cert::{
    CertBody, CertError, CertRequest, NodeCertificate, RequestBody, RevocationBody, RevocationList,
    CERT_VERSION, MAX_CERT_ADDRS, MAX_REVOKED,
};
pub use contact::Contact;
pub use grant::{Grant, GrantBody, GrantError, Grantee, GRANT_VERSION};
pub use id::{Id, ParseIdError, DEFAULT_B, ID_BITS, ID_BYTES};
pub use identity::{Identity, PublicKey, Signature, SignatureError};
pub use record::{
    record_key, Precedence, Record, RecordBody, RecordError, RecordValue, MAX_RECORD_NAME,
    MAX_RECORD_VALUE, RECORD_VERSION,
};
pub use time::{Duration, Time};
pub use wire::{DecodeError, EncodeError, MAX_MESSAGE_SIZE, PROTOCOL_VERSION};
