//! Byzantine storage behaviour, for tests and experiments only (feature `forge`, which
//! `ringvault-testkit` turns on; a node never calls it): what a lying storage node sends in
//! reply to a PAST message. It signs a receipt for every replica it is handed and throws the
//! data away, and answers every lookup with a forged copy. The message formats stay private
//! to this crate; the lie is told through them here, and `ringvault_testkit::byzantine`
//! decides who tells it.

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
