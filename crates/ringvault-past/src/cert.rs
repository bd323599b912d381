//! Self-certifying objects: the owner-signed file certificate that every replica carries, the
//! store receipts nodes sign, and reclaim certificates and receipts.

use serde::{Deserialize, Serialize};

use ringvault_types::{Id, Identity, PublicKey, Signature};

/// Domain separators, so a signature over one kind of statement can never be replayed as
/// another.
const FILE_CERT_DOMAIN: &[u8] = b"ringvault/past/file-certificate/v1";
const STORE_RECEIPT_DOMAIN: &[u8] = b"ringvault/past/store-receipt/v1";
const RECLAIM_CERT_DOMAIN: &[u8] = b"ringvault/past/reclaim-certificate/v1";
const RECLAIM_RECEIPT_DOMAIN: &[u8] = b"ringvault/past/reclaim-receipt/v2";
const ABANDON_CERT_DOMAIN: &[u8] = b"ringvault/past/abandon-certificate/v1";
const OBJECT_ID_DOMAIN: &[u8] = b"ringvault/past/object-id/v1";

/// The largest replication factor a certificate may ask for.
pub const MAX_REPLICAS: u8 = 16;
/// The longest object name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Why a certificate or receipt is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The object id is not hash(name, owner, salt).
    #[error("object id does not match hash(name, owner key, salt)")]
    WrongId,
    /// The signature does not verify under the claimed key.
    #[error("signature does not verify")]
    BadSignature,
    /// The content does not hash to the certified hash, or has another size.
    #[error("content does not match the certificate's hash and size")]
    WrongContent,
    /// The replication factor is 0 or above [`MAX_REPLICAS`].
    #[error("replication factor {0} is outside 1..={MAX_REPLICAS}")]
    BadReplicas(u8),
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("object name of {0} bytes is longer than {MAX_NAME_LEN}")]
    NameTooLong(usize),
    /// A receipt's signer key does not hash to the node id it names.
    #[error("receipt key does not belong to the node it names")]
    WrongNode,
    /// A receipt or reclaim names another object.
    #[error("receipt is for another object")]
    WrongObject,
    /// Bytes that should hold a certificate do not decode as one.
    #[error("not an encoded certificate")]
    Malformed,
}

/// Encodes certificates for carrying outside PAST's messages (a client that signs its own
/// certificates hands them to a node this way); [`decode_certificates`] reads them back.
pub fn encode_certificates(certs: &[FileCertificate]) -> Vec<u8> {
    postcard::to_allocvec(certs).expect("certificates always encode")
}

/// Reads what [`encode_certificates`] wrote. Nothing is verified: call
/// [`FileCertificate::verify_content`] (or let PAST do it) before trusting them.
pub fn decode_certificates(bytes: &[u8]) -> Result<Vec<FileCertificate>, CertError> {
    match postcard::take_from_bytes::<Vec<FileCertificate>>(bytes) {
        Ok((certs, [])) => Ok(certs),
        _ => Err(CertError::Malformed),
    }
}

/// The id of the object `name` owned by `owner`, salted with `salt`.
pub fn object_id(name: &str, owner: &PublicKey, salt: u64) -> Id {
    Id::hash_parts(&[
        OBJECT_ID_DOMAIN,
        name.as_bytes(),
        &owner.0,
        &salt.to_le_bytes(),
    ])
}

fn signed_bytes<T: Serialize>(domain: &[u8], body: &T) -> Vec<u8> {
    let mut out = domain.to_vec();
    out.extend(postcard::to_allocvec(body).expect("certificate bodies always encode"));
    out
}

/// Checks that `key` signed `body` under `domain`.
fn check_signature<T: Serialize>(
    key: &PublicKey,
    domain: &[u8],
    body: &T,
    signature: &Signature,
) -> Result<(), CertError> {
    key.verify(&signed_bytes(domain, body), signature)
        .map_err(|_| CertError::BadSignature)
}

/// What the owner certifies about an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileBody {
    /// hash(name, owner, salt).
    pub id: Id,
    /// The object's name, chosen by the owner.
    pub name: String,
    /// The owner's key.
    pub owner: PublicKey,
    /// Salt; a file diversion re-salts, which moves the object to another part of the ring.
    pub salt: u64,
    /// BLAKE3 of the content.
    pub content_hash: [u8; 32],
    /// Content size in bytes.
    pub size: u64,
    /// Replication factor k.
    pub replicas: u8,
    /// Insertion date, seconds since the Unix epoch, as the owner's clock said.
    pub date: u64,
}

/// A file certificate: the owner's signed statement of an object's id, content hash and
/// replication factor. Every replica carries it, so any holder and any reader can verify the
/// content without trusting whoever served it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCertificate {
    /// The certified facts.
    pub body: FileBody,
    /// The owner's signature over them.
    pub signature: Signature,
}

impl FileCertificate {
    /// The owner signs a certificate for `content`.
    pub fn issue(
        owner: &Identity,
        name: &str,
        salt: u64,
        content: &[u8],
        replicas: u8,
        date: u64,
    ) -> Self {
        let pk = owner.public_key();
        let body = FileBody {
            id: object_id(name, &pk, salt),
            name: name.to_string(),
            owner: pk,
            salt,
            content_hash: *blake3::hash(content).as_bytes(),
            size: content.len() as u64,
            replicas,
            date,
        };
        let signature = owner.sign(&signed_bytes(FILE_CERT_DOMAIN, &body));
        FileCertificate { body, signature }
    }

    /// The object id.
    pub fn id(&self) -> Id {
        self.body.id
    }

    /// Checks the certificate on its own: id derivation, limits and signature.
    pub fn verify(&self) -> Result<(), CertError> {
        let b = &self.body;
        if b.name.len() > MAX_NAME_LEN {
            return Err(CertError::NameTooLong(b.name.len()));
        }
        if b.replicas == 0 || b.replicas > MAX_REPLICAS {
            return Err(CertError::BadReplicas(b.replicas));
        }
        if object_id(&b.name, &b.owner, b.salt) != b.id {
            return Err(CertError::WrongId);
        }
        check_signature(&b.owner, FILE_CERT_DOMAIN, b, &self.signature)
    }

    /// Whether `other` certifies the same object: id, owner, content and replication factor
    /// (the date may differ: a retried insert signs anew).
    pub fn same_object(&self, other: &FileCertificate) -> bool {
        let (a, b) = (&self.body, &other.body);
        a.id == b.id
            && a.owner == b.owner
            && a.size == b.size
            && a.content_hash == b.content_hash
            && a.replicas == b.replicas
    }

    /// Checks the certificate and that `content` is what it certifies.
    pub fn verify_content(&self, content: &[u8]) -> Result<(), CertError> {
        self.verify()?;
        if !self.matches_content(content) {
            return Err(CertError::WrongContent);
        }
        Ok(())
    }

    /// Whether `content` is what the certificate certifies (size and hash), without checking
    /// the signature: for a node's own copies, whose certificate it verified when they arrived.
    pub fn matches_content(&self, content: &[u8]) -> bool {
        content.len() as u64 == self.body.size
            && *blake3::hash(content).as_bytes() == self.body.content_hash
    }
}

/// How a node holds a copy it acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Holding {
    /// As one of the k closest nodes.
    Primary,
    /// As a diverted replica, on behalf of a primary that lacked space.
    Diverted,
}

/// What a storing node signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// The object stored.
    pub object: Id,
    /// The storing node's id.
    pub node: Id,
    /// The storing node's key (hashes to `node`).
    pub node_key: PublicKey,
    /// How it holds the copy.
    pub holding: Holding,
}

/// A store receipt: a node's signed statement that it committed a copy of an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreReceipt {
    /// The statement.
    pub body: ReceiptBody,
    /// The node's signature.
    pub signature: Signature,
}

impl StoreReceipt {
    /// `node` acknowledges storing `object`.
    pub fn issue(node: &Identity, object: Id, holding: Holding) -> Self {
        let body = ReceiptBody {
            object,
            node: node.id(),
            node_key: node.public_key(),
            holding,
        };
        let signature = node.sign(&signed_bytes(STORE_RECEIPT_DOMAIN, &body));
        StoreReceipt { body, signature }
    }

    /// Checks the receipt is for `object` and signed by the node it names.
    pub fn verify(&self, object: &Id) -> Result<(), CertError> {
        if self.body.object != *object {
            return Err(CertError::WrongObject);
        }
        if self.body.node_key.id() != self.body.node {
            return Err(CertError::WrongNode);
        }
        check_signature(
            &self.body.node_key,
            STORE_RECEIPT_DOMAIN,
            &self.body,
            &self.signature,
        )
    }
}

/// The owner's signed request that holders release an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReclaimCertificate {
    /// The object.
    pub object: Id,
    /// The owner's key; must match the file certificate's owner.
    pub owner: PublicKey,
    /// Seconds since the Unix epoch, by the owner's clock.
    pub date: u64,
    /// The owner's signature.
    pub signature: Signature,
}

impl ReclaimCertificate {
    /// The owner asks for `object` to be reclaimed.
    pub fn issue(owner: &Identity, object: Id, date: u64) -> Self {
        let pk = owner.public_key();
        let signature = owner.sign(&signed_bytes(RECLAIM_CERT_DOMAIN, &(object, pk, date)));
        ReclaimCertificate {
            object,
            owner: pk,
            date,
            signature,
        }
    }

    /// The certificate as bytes, for carrying outside PAST's messages.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("certificates always encode")
    }

    /// Reads what [`ReclaimCertificate::to_bytes`] wrote; unverified.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CertError> {
        match postcard::take_from_bytes::<Self>(bytes) {
            Ok((cert, [])) => Ok(cert),
            _ => Err(CertError::Malformed),
        }
    }

    /// Checks the request is signed by the owner named in `file`.
    pub fn verify(&self, file: &FileCertificate) -> Result<(), CertError> {
        if self.object != file.id() {
            return Err(CertError::WrongObject);
        }
        if self.owner != file.body.owner {
            return Err(CertError::BadSignature);
        }
        let body = (self.object, self.owner, self.date);
        check_signature(&self.owner, RECLAIM_CERT_DOMAIN, &body, &self.signature)
    }
}

/// The owner's signed statement that it gave up one insert attempt: holders release a copy
/// certified on exactly that date, and nothing else. Unlike a [`ReclaimCertificate`] it cannot
/// release an earlier or a later insert of the same object, so handing it to every node that
/// stored the attempt gives none of them a way to delete the object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbandonCertificate {
    /// The object.
    pub object: Id,
    /// The owner's key.
    pub owner: PublicKey,
    /// The date of the file certificate of the attempt given up.
    pub attempt: u64,
    /// The owner's signature.
    pub signature: Signature,
}

impl AbandonCertificate {
    /// The owner gives up the insert attempt certified by `file`.
    pub fn issue(owner: &Identity, file: &FileCertificate) -> Self {
        let (object, pk, attempt) = (file.id(), owner.public_key(), file.body.date);
        let signature = owner.sign(&signed_bytes(ABANDON_CERT_DOMAIN, &(object, pk, attempt)));
        AbandonCertificate {
            object,
            owner: pk,
            attempt,
            signature,
        }
    }

    /// Checks that it gives up exactly the attempt `file` certifies, signed by its owner.
    pub fn verify(&self, file: &FileCertificate) -> Result<(), CertError> {
        if self.object != file.id() || self.attempt != file.body.date {
            return Err(CertError::WrongObject);
        }
        if self.owner != file.body.owner {
            return Err(CertError::BadSignature);
        }
        let body = (self.object, self.owner, self.attempt);
        check_signature(&self.owner, ABANDON_CERT_DOMAIN, &body, &self.signature)
    }
}

/// A node's signed statement that it released an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReclaimReceipt {
    /// The object released.
    pub object: Id,
    /// The node.
    pub node: Id,
    /// The node's key.
    pub node_key: PublicKey,
    /// Bytes freed.
    pub freed: u64,
    /// The insertion date of the copy released (its certificate's): names which insert of
    /// the object this releases, so a receipt cannot be replayed for a later one.
    pub inserted: u64,
    /// The node's signature.
    pub signature: Signature,
}

impl ReclaimReceipt {
    /// `node` acknowledges releasing its copy of `object` inserted at `inserted`.
    pub fn issue(node: &Identity, object: Id, freed: u64, inserted: u64) -> Self {
        let signature = node.sign(&signed_bytes(
            RECLAIM_RECEIPT_DOMAIN,
            &(object, node.id(), freed, inserted),
        ));
        ReclaimReceipt {
            object,
            node: node.id(),
            node_key: node.public_key(),
            freed,
            inserted,
            signature,
        }
    }

    /// Checks the receipt is for `object` and signed by the node it names.
    pub fn verify(&self, object: &Id) -> Result<(), CertError> {
        if self.object != *object {
            return Err(CertError::WrongObject);
        }
        if self.node_key.id() != self.node {
            return Err(CertError::WrongNode);
        }
        let body = (self.object, self.node, self.freed, self.inserted);
        check_signature(
            &self.node_key,
            RECLAIM_RECEIPT_DOMAIN,
            &body,
            &self.signature,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn who(n: u8) -> Identity {
        Identity::from_secret_bytes([n; 32])
    }

    /// An abandon releases exactly the attempt it names: not the same object signed on
    /// another date, not another owner's, and its signature is no reclaim certificate's.
    #[test]
    fn an_abandon_certificate_names_one_attempt_and_is_no_reclaim() {
        let owner = who(1);
        let attempt = FileCertificate::issue(&owner, "a", 0, b"bytes", 3, 100);
        let retry = FileCertificate::issue(&owner, "a", 0, b"bytes", 3, 101);
        let abandon = AbandonCertificate::issue(&owner, &attempt);
        assert_eq!(abandon.verify(&attempt), Ok(()));
        assert!(
            abandon.verify(&retry).is_err(),
            "it released a later attempt"
        );
        let earlier = FileCertificate::issue(&owner, "a", 0, b"bytes", 3, 99);
        assert!(
            abandon.verify(&earlier).is_err(),
            "it released an earlier insert"
        );
        let thief = AbandonCertificate::issue(&who(2), &attempt);
        assert!(thief.verify(&attempt).is_err());
        let replayed = ReclaimCertificate {
            object: abandon.object,
            owner: abandon.owner,
            date: abandon.attempt,
            signature: abandon.signature,
        };
        assert!(
            replayed.verify(&attempt).is_err(),
            "an abandon replayed as a reclaim"
        );
        assert!(ReclaimCertificate::issue(&owner, attempt.id(), 100)
            .verify(&attempt)
            .is_ok());
    }

    #[test]
    fn a_certificate_verifies_its_content_and_nothing_else() {
        let owner = who(1);
        let cert = FileCertificate::issue(&owner, "notes.txt", 0, b"hello ring", 3, 1_700_000_000);
        assert_eq!(cert.verify_content(b"hello ring"), Ok(()));
        assert_eq!(
            cert.verify_content(b"hello rinG"),
            Err(CertError::WrongContent)
        );
        assert_eq!(cert.verify_content(b"hello"), Err(CertError::WrongContent));
        assert_eq!(cert.id(), object_id("notes.txt", &owner.public_key(), 0));
        // Re-salting moves the object.
        let moved = FileCertificate::issue(&owner, "notes.txt", 1, b"hello ring", 3, 0);
        assert_ne!(moved.id(), cert.id());
    }

    #[test]
    fn tampering_with_any_field_breaks_the_certificate() {
        let owner = who(2);
        let cert = FileCertificate::issue(&owner, "a", 7, b"x", 3, 5);
        let mut c = cert.clone();
        c.body.replicas = 4;
        assert_eq!(c.verify(), Err(CertError::BadSignature));
        let mut c = cert.clone();
        c.body.name = "b".into();
        assert_eq!(c.verify(), Err(CertError::WrongId));
        let mut c = cert.clone();
        c.body.owner = who(3).public_key();
        assert_eq!(c.verify(), Err(CertError::WrongId));
        let mut c = cert.clone();
        c.body.replicas = 0;
        assert_eq!(c.verify(), Err(CertError::BadReplicas(0)));
        // Someone else's signature over the same facts is not the owner's.
        let mut c = cert.clone();
        c.signature = who(3).sign(b"anything");
        assert_eq!(c.verify(), Err(CertError::BadSignature));
    }

    #[test]
    fn receipts_and_reclaims_are_bound_to_their_signers_and_objects() {
        let owner = who(4);
        let node = who(5);
        let cert = FileCertificate::issue(&owner, "f", 0, b"data", 2, 0);
        let r = StoreReceipt::issue(&node, cert.id(), Holding::Primary);
        assert_eq!(r.verify(&cert.id()), Ok(()));
        assert_eq!(r.verify(&Id::ZERO), Err(CertError::WrongObject));
        let mut forged = r.clone();
        forged.body.node = who(6).id();
        assert_eq!(forged.verify(&cert.id()), Err(CertError::WrongNode));

        let rc = ReclaimCertificate::issue(&owner, cert.id(), 9);
        assert_eq!(rc.verify(&cert), Ok(()));
        let stranger = ReclaimCertificate::issue(&who(7), cert.id(), 9);
        assert_eq!(stranger.verify(&cert), Err(CertError::BadSignature));
        let rr = ReclaimReceipt::issue(&node, cert.id(), 4, 9);
        assert_eq!(rr.verify(&cert.id()), Ok(()));
        let mut lie = rr.clone();
        lie.freed = 400;
        assert_eq!(lie.verify(&cert.id()), Err(CertError::BadSignature));
    }

    #[test]
    fn certificates_round_trip_as_bytes_and_garbage_is_refused() {
        let owner = who(8);
        let certs: Vec<FileCertificate> = (0..4)
            .map(|salt| FileCertificate::issue(&owner, "f", salt, b"data", 3, 1))
            .collect();
        let bytes = encode_certificates(&certs);
        assert_eq!(decode_certificates(&bytes), Ok(certs.clone()));
        assert_eq!(
            decode_certificates(&bytes[..bytes.len() - 1]),
            Err(CertError::Malformed)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_certificates(&longer), Err(CertError::Malformed));
        assert_eq!(decode_certificates(b""), Err(CertError::Malformed));
        let rc = ReclaimCertificate::issue(&owner, certs[0].id(), 7);
        assert_eq!(
            ReclaimCertificate::from_bytes(&rc.to_bytes()),
            Ok(rc.clone())
        );
        assert_eq!(
            ReclaimCertificate::from_bytes(&rc.to_bytes()[1..]),
            Err(CertError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn certificates_survive_the_wire(name in "[a-z]{0,40}", salt in any::<u64>(), content in proptest::collection::vec(any::<u8>(), 0..256)) {
            let cert = FileCertificate::issue(&who(9), &name, salt, &content, 3, 1);
            let bytes = postcard::to_allocvec(&cert).unwrap();
            let back: FileCertificate = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(back.verify_content(&content), Ok(()));
        }
    }
}
