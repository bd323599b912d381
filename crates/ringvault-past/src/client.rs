//! The client side of PAST: outstanding inserts, lookups and reclaims, and their results.

use std::collections::BTreeMap;

use ringvault_overlay::Kbr;
use ringvault_types::{Contact, Id, Identity, Time};

use crate::message::Refusal;
use crate::past::{Past, Pending, RequestId, MAX_RESALTS, REQUEST_TIMEOUT};
use crate::{FileCertificate, Found, Inserted, PastError, PastEvent, ReclaimReceipt, StoreReceipt};

impl Past {
    pub(crate) fn on_receipt(&mut self, kbr: &mut dyn Kbr, req: u64, receipt: StoreReceipt) {
        let Some(Pending::Insert { cert, receipts, .. }) = self.pending.get_mut(&req) else {
            return;
        };
        if receipt.verify(&cert.id()).is_err() {
            return;
        }
        receipts.insert(receipt.body.node, receipt);
        if receipts.len() >= cert.body.replicas as usize {
            if let Some(Pending::Insert { cert, receipts, .. }) = self.pending.remove(&req) {
                let receipts = receipts.into_values().collect();
                self.events
                    .push_back(PastEvent::Inserted(req, Ok(Inserted { cert, receipts })));
            }
        }
        let _ = kbr;
    }

    pub(crate) fn on_refused(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        req: u64,
        id: Id,
        reason: Refusal,
    ) {
        match self.pending.get_mut(&req) {
            Some(Pending::Insert { cert, .. }) if cert.id() == id => {}
            Some(Pending::Lookup { id: want, .. }) if *want == id => {
                self.pending.remove(&req);
                self.events
                    .push_back(PastEvent::Found(req, Err(PastError::NotFound)));
                return;
            }
            Some(Pending::Reclaim {
                id: want, refusal, ..
            }) if *want == id => {
                *refusal = Some(reason);
                return;
            }
            _ => return,
        }
        let Some(Pending::Insert {
            owner,
            cert,
            content,
            resalts,
            ..
        }) = self.pending.remove(&req)
        else {
            return;
        };
        let result = match reason {
            Refusal::NoSpace if resalts < MAX_RESALTS && self.config.diversion => {
                // File diversion: a new salt puts the object in another part of the ring.
                let owner_id = Identity::from_secret_bytes(owner);
                let b = &cert.body;
                let fresh = FileCertificate::issue(
                    &owner_id,
                    &b.name,
                    b.salt + 1,
                    &content,
                    b.replicas,
                    b.date,
                );
                self.pending.insert(
                    req,
                    Pending::Insert {
                        owner,
                        cert: fresh.clone(),
                        content: content.clone(),
                        receipts: BTreeMap::new(),
                        resalts: resalts + 1,
                        deadline: now + REQUEST_TIMEOUT,
                    },
                );
                self.send_insert(kbr, req, fresh, content);
                return;
            }
            Refusal::NoSpace => PastError::NoSpace(resalts + 1),
            Refusal::Duplicate => PastError::Duplicate,
            Refusal::Invalid => PastError::Invalid("a replica rejected the certificate".into()),
            Refusal::NotFound => PastError::NotFound,
            Refusal::NotOwner => PastError::NotOwner,
        };
        self.events.push_back(PastEvent::Inserted(req, Err(result)));
    }

    pub(crate) fn on_found(
        &mut self,
        req: u64,
        server: Contact,
        hops: u8,
        cert: FileCertificate,
        content: Vec<u8>,
    ) {
        let Some(Pending::Lookup { id, .. }) = self.pending.get(&req) else {
            return;
        };
        // Only a verified copy of the object asked for is accepted; anything else is ignored
        // and the lookup waits for a good answer or its deadline.
        if cert.id() != *id || cert.verify_content(&content).is_err() {
            return;
        }
        self.pending.remove(&req);
        self.cache_copy(&cert, &content);
        self.events.push_back(PastEvent::Found(
            req,
            Ok(Found {
                cert,
                content,
                server,
                hops,
            }),
        ));
    }

    pub(crate) fn on_reclaimed(&mut self, req: u64, receipt: ReclaimReceipt) {
        let Some(Pending::Reclaim {
            id, k, receipts, ..
        }) = self.pending.get_mut(&req)
        else {
            return;
        };
        if receipt.verify(id).is_err() {
            return;
        }
        receipts.insert(receipt.node, receipt);
        if receipts.len() >= *k {
            if let Some(Pending::Reclaim { receipts, .. }) = self.pending.remove(&req) {
                self.events.push_back(PastEvent::Reclaimed(
                    req,
                    Ok(receipts.into_values().collect()),
                ));
            }
        }
    }

    pub(crate) fn expire(&mut self, now: Time) {
        let due: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline() <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            let ev = match self.pending.remove(&req) {
                Some(Pending::Insert { cert, receipts, .. }) => PastEvent::Inserted(
                    req,
                    Err(PastError::Timeout {
                        receipts: receipts.len(),
                        wanted: cert.body.replicas as usize,
                    }),
                ),
                Some(Pending::Lookup { .. }) => PastEvent::Found(req, Err(PastError::NotFound)),
                Some(Pending::Reclaim {
                    receipts,
                    refusal,
                    k,
                    ..
                }) => {
                    let r = if !receipts.is_empty() {
                        Ok(receipts.into_values().collect())
                    } else {
                        match refusal {
                            Some(Refusal::NotOwner) => Err(PastError::NotOwner),
                            Some(Refusal::NotFound) => Err(PastError::NotFound),
                            _ => Err(PastError::Timeout {
                                receipts: 0,
                                wanted: k,
                            }),
                        }
                    };
                    PastEvent::Reclaimed(req, r)
                }
                None => continue,
            };
            self.events.push_back(ev);
        }
    }
}
