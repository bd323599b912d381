//! Node identity: an ed25519 key pair whose public key hashes to the node's id.

use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};

use crate::Id;

/// An ed25519 public key in its 32-byte encoding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

/// An ed25519 signature in its 64-byte encoding.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "sig_bytes")] pub [u8; 64]);

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The bytes are not a valid ed25519 public key.
    #[error("malformed public key")]
    BadKey,
    /// The signature does not match the message and key.
    #[error("signature does not verify")]
    Mismatch,
}

impl PublicKey {
    /// The node id this key stands for: BLAKE3 of the key bytes.
    pub fn id(&self) -> Id {
        Id::hash(&self.0)
    }

    /// Checks `sig` over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), SignatureError> {
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::BadKey)?;
        key.verify(msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .map_err(|_| SignatureError::Mismatch)
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PublicKey({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

/// A node's (or a user's) signing identity. The secret never leaves this type except through
/// [`Identity::secret_bytes`], which exists so a driver can persist it.
pub struct Identity {
    key: ed25519_dalek::SigningKey,
}

impl Identity {
    /// The identity whose secret key is `secret`. Callers get `secret` from a CSPRNG (the
    /// daemon) or from a seeded RNG (the simulator), or from disk.
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Identity {
            key: ed25519_dalek::SigningKey::from_bytes(&secret),
        }
    }

    /// The secret key bytes, for persisting the identity.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// The node id: BLAKE3 of the public key, so it cannot be chosen freely.
    pub fn id(&self) -> Id {
        self.public_key().id()
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.key.sign(msg).to_bytes())
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({:?})", self.id())
    }
}

mod sig_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: &[u8] = <&[u8]>::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::invalid_length(v.len(), &"64 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_the_hash_of_the_public_key_and_signatures_verify() {
        let a = Identity::from_secret_bytes([7; 32]);
        assert_eq!(a.id(), Id::hash(&a.public_key().0));
        let sig = a.sign(b"hello");
        assert_eq!(a.public_key().verify(b"hello", &sig), Ok(()));
        assert_eq!(
            a.public_key().verify(b"hellp", &sig),
            Err(SignatureError::Mismatch)
        );
        let b = Identity::from_secret_bytes([8; 32]);
        assert_ne!(a.id(), b.id());
        assert_eq!(
            b.public_key().verify(b"hello", &sig),
            Err(SignatureError::Mismatch)
        );
        let restored = Identity::from_secret_bytes(a.secret_bytes());
        assert_eq!(restored.id(), a.id());
    }
}
