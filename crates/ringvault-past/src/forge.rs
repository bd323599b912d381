//! Byzantine storage behaviour, for tests and experiments only (feature `forge`, which
//! `ringvault-testkit` turns on; a node never calls it): what a lying storage node sends in
//! reply to a PAST message. It signs a receipt for every replica it is handed and throws the
//! data away, and answers every lookup with a forged copy. The message formats stay private
//! to this crate; the lie is told through them here, and `ringvault_testkit::byzantine`
//! decides who tells it. [`Dropper`] is a store that keeps receipts and drops data.

use ringvault_overlay::AppMessage;
use ringvault_types::{Contact, Id, Identity};

use crate::message::PastMessage;
use crate::past::{encode, PAST_APP};
use crate::{FileCertificate, Holding, StoreReceipt};

/// The reply a lying storage node `me` sends, and to whom, when `msg` reaches it (`None`:
/// it stays silent, as it does for anything but replicas and lookups).
pub fn lie(me: Contact, msg: &AppMessage) -> Option<(Contact, AppMessage)> {
    if msg.app != PAST_APP {
        return None;
    }
    let m: PastMessage = postcard::from_bytes(&msg.body).ok()?;
    // A key of its own, derived from its id: its receipts verify like anyone's.
    let key = Identity::from_secret_bytes(*Id::hash(me.id.as_bytes()).as_bytes());
    let (client, reply) = match m {
        PastMessage::Insert {
            req, client, cert, ..
        }
        | PastMessage::Replicate {
            req: Some((req, client)),
            cert,
            ..
        }
        | PastMessage::Divert {
            req: Some((req, client)),
            cert,
            ..
        } => (
            client,
            PastMessage::Receipt {
                req,
                receipt: StoreReceipt::issue(&key, cert.id(), Holding::Primary),
                already: false,
            },
        ),
        PastMessage::Lookup {
            req, client, hops, ..
        } => {
            let content = b"forged".to_vec();
            let cert = FileCertificate::issue(&key, "forged", 0, &content, 1, 0);
            (
                client,
                PastMessage::Found {
                    req,
                    hops,
                    cert,
                    content,
                },
            )
        }
        PastMessage::Describe {
            req, client, hops, ..
        } => {
            let cert = FileCertificate::issue(&key, "forged", 0, b"forged", 1, 0);
            (
                client,
                PastMessage::Described {
                    req,
                    hops,
                    cert,
                    manifest: None,
                },
            )
        }
        _ => return None,
    };
    Some((client, encode(&reply)))
}

/// A store that keeps what it is told to hold (certificates, kinds, so the node still offers
/// the objects in maintenance and signs receipts) but throws the content away: a node that
/// keeps receipts and drops data, for audit experiments.
pub struct Dropper(pub Box<dyn crate::Store>);

impl crate::Store for Dropper {
    fn usage(&self) -> crate::Usage {
        self.0.usage()
    }

    fn put(&mut self, mut obj: crate::StoredObject) -> Result<(), crate::StoreError> {
        obj.content.clear();
        self.0.put(obj)
    }

    fn get(&self, id: &Id) -> Result<Option<crate::StoredObject>, crate::StoreError> {
        self.0.get(id)
    }

    fn meta(&self, id: &Id) -> Result<Option<(crate::Kind, u64)>, crate::StoreError> {
        self.0.meta(id)
    }

    fn set_kind(&mut self, id: &Id, kind: crate::Kind) -> Result<(), crate::StoreError> {
        self.0.set_kind(id, kind)
    }

    fn remove(&mut self, id: &Id) -> Result<u64, crate::StoreError> {
        self.0.remove(id)
    }

    fn list(&self) -> Result<Vec<(Id, crate::Kind, u64)>, crate::StoreError> {
        self.0.list()
    }

    fn put_pointer(&mut self, id: &Id, holder: Contact) -> Result<(), crate::StoreError> {
        self.0.put_pointer(id, holder)
    }

    fn pointer(&self, id: &Id) -> Result<Option<Contact>, crate::StoreError> {
        self.0.pointer(id)
    }

    fn remove_pointer(&mut self, id: &Id) -> Result<(), crate::StoreError> {
        self.0.remove_pointer(id)
    }
}
