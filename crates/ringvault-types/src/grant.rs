//! Storage grants from brokers. A broker is a key the ring's operators trust to hand out
//! storage: a **quota** grant lets one user's objects occupy so many bytes of the ring (size × k,
//! chunks and manifests included); a **supply** grant caps the capacity one storage node may
//! advertise. A grant is signed by its broker and valid between two instants (Unix seconds);
//! anyone holding the broker's public key checks it offline.

use serde::{Deserialize, Serialize};

use crate::cert::{decode, signed_bytes};
use crate::{Id, Identity, PublicKey, Signature};

/// The format version a grant carries.
pub const GRANT_VERSION: u8 = 1;

const GRANT_DOMAIN: &[u8] = b"ringvault grant v1\0";

/// Whom a grant is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grantee {
    /// A user (their owner key): how many bytes their objects may occupy on the ring.
    Quota(PublicKey),
    /// A storage node (its id, the hash of its key, as its certificate names it): how many
    /// bytes of capacity it may advertise.
    Supply(Id),
}

/// What the broker signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantBody {
    /// [`GRANT_VERSION`].
    pub format: u8,
    /// The broker's public key.
    pub broker: PublicKey,
    /// Whom it is for, and what kind of grant it is.
    pub grantee: Grantee,
    /// Bytes granted.
    pub bytes: u64,
    /// Valid from (Unix seconds).
    pub not_before: u64,
    /// Valid until (Unix seconds, exclusive).
    pub not_after: u64,
    /// The broker's serial number for it.
    pub serial: u64,
}

/// A grant: a body and its broker's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// What is signed.
    pub body: GrantBody,
    /// The broker's signature over the body.
    pub signature: Signature,
}

/// Why a grant is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Another format version.
    #[error("grant format {0}, this node reads {GRANT_VERSION}")]
    Format(u8),
    /// Not signed by a broker this ring trusts.
    #[error("signed by a broker this ring does not trust")]
    UnknownBroker,
    /// The signature does not verify: the grant was changed or forged.
    #[error("the broker's signature does not verify (changed or forged)")]
    Signature,
    /// Not valid yet.
    #[error("not valid before {0} (Unix seconds)")]
    NotYetValid(u64),
    /// Expired.
    #[error("expired at {0} (Unix seconds)")]
    Expired(u64),
    /// The bytes do not decode as a grant.
    #[error("not a grant: {0}")]
    Malformed(String),
}

impl Grant {
    /// `broker` grants `bytes` to `grantee` from `not_before` until `not_after`.
    pub fn issue(
        broker: &Identity,
        grantee: Grantee,
        bytes: u64,
        (not_before, not_after): (u64, u64),
        serial: u64,
    ) -> Self {
        let body = GrantBody {
            format: GRANT_VERSION,
            broker: broker.public_key(),
            grantee,
            bytes,
            not_before,
            not_after,
            serial,
        };
        let signature = broker.sign(&signed_bytes(GRANT_DOMAIN, &body));
        Grant { body, signature }
    }

    /// Checks the grant at `now` (Unix seconds) against the brokers the ring trusts.
    pub fn verify(&self, brokers: &[PublicKey], now: u64) -> Result<(), GrantError> {
        let b = &self.body;
        if b.format != GRANT_VERSION {
            return Err(GrantError::Format(b.format));
        }
        if !brokers.contains(&b.broker) {
            return Err(GrantError::UnknownBroker);
        }
        b.broker
            .verify(&signed_bytes(GRANT_DOMAIN, b), &self.signature)
            .map_err(|_| GrantError::Signature)?;
        if now < b.not_before {
            return Err(GrantError::NotYetValid(b.not_before));
        }
        if now >= b.not_after {
            return Err(GrantError::Expired(b.not_after));
        }
        Ok(())
    }

    /// The grant's bytes (postcard).
    pub fn encode(&self) -> Vec<u8> {
        // Plain structs of keys and integers always encode.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// A grant from its bytes; nothing is verified.
    pub fn decode(bytes: &[u8]) -> Result<Self, GrantError> {
        decode(bytes).map_err(|e| GrantError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Identity {
        Identity::from_secret_bytes([b; 32])
    }

    #[test]
    fn a_grant_verifies_only_unchanged_from_a_trusted_broker_while_valid() {
        let (broker, user) = (key(1), key(2));
        let g = Grant::issue(
            &broker,
            Grantee::Quota(user.public_key()),
            10 << 20,
            (1_000, 2_000),
            7,
        );
        let trusted = [broker.public_key()];
        assert_eq!(g.verify(&trusted, 1_000), Ok(()));
        assert_eq!(Grant::decode(&g.encode()), Ok(g.clone()));
        assert_eq!(g.verify(&trusted, 999), Err(GrantError::NotYetValid(1_000)));
        assert_eq!(g.verify(&trusted, 2_000), Err(GrantError::Expired(2_000)));
        assert_eq!(
            g.verify(&[key(3).public_key()], 1_500),
            Err(GrantError::UnknownBroker)
        );
        let mut more = g.clone();
        more.body.bytes += 1;
        assert_eq!(more.verify(&trusted, 1_500), Err(GrantError::Signature));
        let mut other = g.clone();
        other.body.grantee = Grantee::Quota(key(4).public_key());
        assert_eq!(other.verify(&trusted, 1_500), Err(GrantError::Signature));
        let mut supply = g;
        supply.body.grantee = Grantee::Supply(user.public_key().id());
        assert_eq!(
            supply.verify(&trusted, 1_500),
            Err(GrantError::Signature),
            "a quota is not a supply grant"
        );
        assert!(Grant::decode(b"garbage").is_err());
    }
}
