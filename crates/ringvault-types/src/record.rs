//! Signed mutable records: the one format both classic mode's records service and server mode's
//! quorum storage keep.
//!
//! A record is a value an owner may change: `{owner key, name, version, timestamp, value}`
//! signed by the owner. It lives under the key H(owner key, name), so nobody else can write
//! there. Versions order a record's states: a replica keeps a record only if it is higher than
//! what it holds. Two different records with the same version are a **conflict** (the owner
//! wrote twice without reading); every replica keeps the same one by a rule that needs no
//! coordination (the lower hash of the signed body), and readers are told. The timestamp is the
//! owner's clock, shown to readers and never used for ordering. A delete is a record with a
//! higher version and no value (a tombstone), so an old version cannot come back.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::cert::{decode, signed_bytes};
use crate::{Id, Identity, PublicKey, Signature};

/// The format version a record carries.
pub const RECORD_VERSION: u8 = 1;
/// The largest value kept inline; a larger one is stored as an object and named by its id.
pub const MAX_RECORD_VALUE: usize = 64 * 1024;
/// The longest record name, in bytes.
pub const MAX_RECORD_NAME: usize = 255;

const RECORD_DOMAIN: &[u8] = b"ringvault record v1\0";
const KEY_DOMAIN: &[u8] = b"ringvault record key v1\0";

/// What a record holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordValue {
    /// The value itself (at most [`MAX_RECORD_VALUE`] bytes).
    Inline(Vec<u8>),
    /// A larger value, stored as an immutable object with this id.
    Object(Id),
    /// Deleted: a tombstone that outranks every lower version.
    Deleted,
}

/// What the owner signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBody {
    /// [`RECORD_VERSION`].
    pub format: u8,
    /// The owner's public key.
    pub owner: PublicKey,
    /// The record's name, unique per owner.
    pub name: String,
    /// Orders the record's states: higher wins.
    pub version: u64,
    /// The owner's clock when it wrote this version (Unix seconds): shown, never compared.
    pub timestamp: u64,
    /// The value.
    pub value: RecordValue,
}

/// A record: a body and its owner's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// What is signed.
    pub body: RecordBody,
    /// The owner's signature over the body.
    pub signature: Signature,
}

/// Why a record is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Another format version.
    #[error("record format {0}, this node reads {RECORD_VERSION}")]
    Format(u8),
    /// The name is empty, too long, or holds a control character.
    #[error("record name {0}")]
    Name(&'static str),
    /// The inline value is too large.
    #[error(
        "value of {0} bytes; at most {MAX_RECORD_VALUE} inline (store larger ones as objects)"
    )]
    TooLarge(usize),
    /// The owner's signature does not verify.
    #[error("the owner's signature does not verify")]
    BadSignature,
    /// The bytes are not a record.
    #[error("malformed record: {0}")]
    Malformed(String),
}

impl RecordError {
    /// A short, stable name for metric labels and API error codes.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::Format(_) => "record_format",
            RecordError::Name(_) => "bad_name",
            RecordError::TooLarge(_) => "value_too_large",
            RecordError::BadSignature => "bad_signature",
            RecordError::Malformed(_) => "malformed",
        }
    }
}

/// The key record `name` of `owner` lives under.
pub fn record_key(owner: &PublicKey, name: &str) -> Id {
    Id::hash_parts(&[KEY_DOMAIN, &owner.0, name.as_bytes()])
}

fn check_name(name: &str) -> Result<(), RecordError> {
    if name.is_empty() {
        return Err(RecordError::Name("is empty"));
    }
    if name.len() > MAX_RECORD_NAME {
        return Err(RecordError::Name("is longer than 255 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(RecordError::Name("holds a control character"));
    }
    Ok(())
}

/// How a record stands against another state of the same record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precedence {
    /// It is newer: keep it.
    Newer,
    /// It is the same record.
    Same,
    /// It is older: keep the other.
    Older,
    /// Same version, other content, and it wins the tie (keep it, and report the conflict).
    ConflictWins,
    /// Same version, other content, and it loses the tie (keep the other, report the conflict).
    ConflictLoses,
}

impl Precedence {
    /// Whether the record judged should replace the one held.
    pub fn replaces(self) -> bool {
        matches!(self, Precedence::Newer | Precedence::ConflictWins)
    }

    /// Whether the two were a conflict.
    pub fn is_conflict(self) -> bool {
        matches!(self, Precedence::ConflictWins | Precedence::ConflictLoses)
    }
}

impl Record {
    /// `owner` signs version `version` of its record `name` holding `value`, written at Unix
    /// time `timestamp` by its clock.
    pub fn sign(
        owner: &Identity,
        name: &str,
        version: u64,
        timestamp: u64,
        value: RecordValue,
    ) -> Result<Self, RecordError> {
        let body = RecordBody {
            format: RECORD_VERSION,
            owner: owner.public_key(),
            name: name.to_string(),
            version,
            timestamp,
            value,
        };
        check_body(&body)?;
        let signature = owner.sign(&signed_bytes(RECORD_DOMAIN, &body));
        Ok(Record { body, signature })
    }

    /// The key the record lives under.
    pub fn key(&self) -> Id {
        record_key(&self.body.owner, &self.body.name)
    }

    /// Checks the format, the name, the value's size and the owner's signature.
    pub fn verify(&self) -> Result<(), RecordError> {
        check_body(&self.body)?;
        self.body
            .owner
            .verify(&signed_bytes(RECORD_DOMAIN, &self.body), &self.signature)
            .map_err(|_| RecordError::BadSignature)
    }

    /// Whether this is a tombstone.
    pub fn is_deleted(&self) -> bool {
        self.body.value == RecordValue::Deleted
    }

    /// The hash that breaks ties between two records of one version: of the signed body, so
    /// every replica computes the same.
    pub fn tie_hash(&self) -> Id {
        Id::hash(&signed_bytes(RECORD_DOMAIN, &self.body))
    }

    /// How this record stands against `held`, another state of the same record (same key).
    pub fn precedence(&self, held: &Record) -> Precedence {
        match self.body.version.cmp(&held.body.version) {
            Ordering::Greater => Precedence::Newer,
            Ordering::Less => Precedence::Older,
            Ordering::Equal if self.body == held.body => Precedence::Same,
            Ordering::Equal => {
                if self.tie_hash() < held.tie_hash() {
                    Precedence::ConflictWins
                } else {
                    Precedence::ConflictLoses
                }
            }
        }
    }

    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Parses a record (not checked: see [`Record::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode(bytes).map_err(|e| RecordError::Malformed(e.to_string()))
    }
}

fn check_body(b: &RecordBody) -> Result<(), RecordError> {
    if b.format != RECORD_VERSION {
        return Err(RecordError::Format(b.format));
    }
    check_name(&b.name)?;
    if let RecordValue::Inline(v) = &b.value {
        if v.len() > MAX_RECORD_VALUE {
            return Err(RecordError::TooLarge(v.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owner() -> Identity {
        Identity::from_secret_bytes([5; 32])
    }

    fn rec(version: u64, value: &[u8]) -> Record {
        Record::sign(
            &owner(),
            "profile",
            version,
            1_000,
            RecordValue::Inline(value.to_vec()),
        )
        .unwrap()
    }

    #[test]
    fn a_record_verifies_and_every_field_is_signed() {
        let r = rec(3, b"hello");
        r.verify().unwrap();
        assert_eq!(r.key(), record_key(&owner().public_key(), "profile"));
        let mut changed = Vec::new();
        let mut x = r.clone();
        x.body.version += 1;
        changed.push(x);
        let mut x = r.clone();
        x.body.timestamp += 1;
        changed.push(x);
        let mut x = r.clone();
        x.body.name = "profil".into();
        changed.push(x);
        let mut x = r.clone();
        x.body.value = RecordValue::Inline(b"hellO".to_vec());
        changed.push(x);
        let mut x = r.clone();
        x.body.value = RecordValue::Deleted;
        changed.push(x);
        let mut x = r.clone();
        x.body.owner = Identity::from_secret_bytes([6; 32]).public_key();
        changed.push(x);
        for x in changed {
            assert_eq!(x.verify(), Err(RecordError::BadSignature), "{:?}", x.body);
        }
    }

    #[test]
    fn limits_are_checked_when_signing_and_verifying() {
        let o = owner();
        let big = RecordValue::Inline(vec![0; MAX_RECORD_VALUE + 1]);
        assert_eq!(
            Record::sign(&o, "n", 1, 0, big.clone()),
            Err(RecordError::TooLarge(MAX_RECORD_VALUE + 1))
        );
        let edge = RecordValue::Inline(vec![0; MAX_RECORD_VALUE]);
        assert!(Record::sign(&o, "n", 1, 0, edge).is_ok());
        for bad in ["", "a\0b", "line\nbreak", &"x".repeat(MAX_RECORD_NAME + 1)] {
            assert!(matches!(
                Record::sign(&o, bad, 1, 0, RecordValue::Deleted),
                Err(RecordError::Name(_))
            ));
        }
        let mut r = rec(1, b"v");
        r.body.value = big;
        assert_eq!(r.verify(), Err(RecordError::TooLarge(MAX_RECORD_VALUE + 1)));
    }

    #[test]
    fn higher_versions_win_and_conflicts_resolve_the_same_way_everywhere() {
        let (a, b) = (rec(2, b"a"), rec(2, b"b"));
        assert_eq!(rec(3, b"x").precedence(&a), Precedence::Newer);
        assert_eq!(rec(1, b"x").precedence(&a), Precedence::Older);
        assert_eq!(a.precedence(&a.clone()), Precedence::Same);
        let (ab, ba) = (a.precedence(&b), b.precedence(&a));
        assert!(ab.is_conflict() && ba.is_conflict());
        assert_ne!(ab.replaces(), ba.replaces(), "exactly one wins the tie");
        // A tombstone is just a higher version.
        let gone = Record::sign(&owner(), "profile", 3, 0, RecordValue::Deleted).unwrap();
        assert!(gone.is_deleted());
        assert_eq!(gone.precedence(&a), Precedence::Newer);
        assert_eq!(a.precedence(&gone), Precedence::Older);
    }

    proptest! {
        #[test]
        fn records_round_trip_and_truncations_are_errors(
            version in any::<u64>(),
            value in proptest::collection::vec(any::<u8>(), 0..64),
            cut in 1usize..32,
        ) {
            let r = rec(version, &value);
            let bytes = r.encode();
            prop_assert_eq!(Record::decode(&bytes).unwrap(), r);
            prop_assume!(cut < bytes.len());
            prop_assert!(Record::decode(&bytes[..bytes.len() - cut]).is_err());
        }

        #[test]
        fn the_decoder_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(r) = Record::decode(&bytes) {
                let _ = r.verify();
            }
        }
    }
}
