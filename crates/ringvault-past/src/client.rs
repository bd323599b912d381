//! The client side of PAST: outstanding inserts, lookups and reclaims, and their results.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ringvault_overlay::Kbr;
use ringvault_types::{Contact, Duration, Id, Identity, Time};

use crate::message::{PastMessage, Refusal, Want};
use crate::past::{send, Past, Pending, RequestId, MAX_RESALTS, REQUEST_TIMEOUT};
use crate::secure::{LookupStage, Witnesses};
use crate::{
    AbandonCertificate, Description, FileCertificate, Found, Inserted, Manifest, PastError,
    PastEvent, ReclaimReceipt, StoreReceipt,
};

/// What an insert's latency is taken to be before any has completed.
pub(crate) const INITIAL_INSERT_LATENCY: Duration = Duration::from_millis(250);
/// What a lookup's latency is taken to be before any has been answered.
pub(crate) const INITIAL_LOOKUP_LATENCY: Duration = Duration::from_millis(250);
/// An insert attempt is sent again after this many times the smoothed insert latency...
const RESEND_FACTOR: u64 = 4;
/// ...but never sooner than this (a busy ring is not a failed one)...
const MIN_RESEND: Duration = Duration::from_secs(1);
/// ...nor later than this for the first re-send;
const MAX_RESEND: Duration = Duration::from_secs(4);
/// each later one waits twice as long as the one before, up to this (a congested path is not
/// sent the object again every second).
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// When an insert attempt is sent again if it has not completed, and how many nodes beyond
/// the k closest the next sending asks. A re-sent insert is harmless: nodes that hold the
/// object answer with a receipt again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resend {
    pub(crate) at: Time,
    pub(crate) widen: u8,
    /// Times this attempt was sent again.
    pub(crate) sent: u8,
}

/// Who signs the certificate of an insert's next salt when file diversion re-salts it.
#[derive(Debug)]
pub(crate) enum Signer {
    /// The owner's secret key is here: a fresh certificate is signed for each new salt.
    Key([u8; 32]),
    /// The owner signed in advance (the key stayed with the client): the certificates still
    /// to try, in order. None left means no re-salt.
    Presigned(VecDeque<FileCertificate>),
}

/// Checks certificates an owner signed in advance for `content`: 1 to `MAX_RESALTS + 1` of
/// them, each valid for the content, all for one name, owner and replication factor, no salt
/// twice.
pub fn check_certificates(certs: &[FileCertificate], content: &[u8]) -> Result<(), PastError> {
    let invalid = |m: String| Err(PastError::Invalid(m));
    let Some(first) = certs.first() else {
        return invalid("no certificate; sign one for salt 0".into());
    };
    let most = MAX_RESALTS as usize + 1;
    if certs.len() > most {
        return invalid(format!(
            "{} certificates; at most {most} (salt 0 and one per re-salt)",
            certs.len()
        ));
    }
    let mut salts = BTreeSet::new();
    for c in certs {
        let (b, f) = (&c.body, &first.body);
        if let Err(e) = c.verify_content(content) {
            return invalid(format!("the certificate for salt {}: {e}", b.salt));
        }
        if b.name != f.name || b.owner != f.owner || b.replicas != f.replicas {
            return invalid(
                "the certificates are not all for one name, owner and replication factor".into(),
            );
        }
        if !salts.insert(b.salt) {
            return invalid(format!("two certificates have salt {}", b.salt));
        }
    }
    Ok(())
}

impl Past {
    /// Inserts `content` under certificates its owner signed in advance, so the owner's key
    /// never leaves the client. `certs[0]` is tried first; when the ring has no room for it,
    /// file diversion moves on to the next certificate (another salt, hence another id)
    /// instead of signing one. Certificates must all certify `content` for one name, owner and
    /// replication factor, with distinct salts, at most `MAX_RESALTS + 1` of them; otherwise
    /// the insert fails at once with [`PastError::Invalid`] and nothing is sent. With the
    /// certificates used up it fails with [`PastError::NoSpace`]. The result comes as
    /// [`PastEvent::Inserted`], whose certificate is the one that was stored; a request that
    /// cannot start is refused at once, as for [`Past::insert`].
    pub fn insert_signed(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        certs: Vec<FileCertificate>,
        content: Vec<u8>,
    ) -> Result<RequestId, PastError> {
        self.insert_approved(kbr, now, certs, content, None)
    }

    /// [`Past::insert_signed`] in a ring that enforces quotas: `approval` is the owner's
    /// debit for it (from the owner's account managers), carried to every replica, each of
    /// which checks it before storing. Its ids must be the certificates' ids, in order
    /// ([`Past::salted_ids`]).
    pub fn insert_approved(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        certs: Vec<FileCertificate>,
        content: Vec<u8>,
        approval: Option<ringvault_accounts::Committed>,
    ) -> Result<RequestId, PastError> {
        check_certificates(&certs, &content)?;
        let mut rest: VecDeque<FileCertificate> = certs.into();
        let Some(cert) = rest.pop_front() else {
            return Err(PastError::Invalid("no certificate".into()));
        };
        self.start_insert(kbr, now, Signer::Presigned(rest), cert, content, approval)
    }

    /// Records a new insert (its first attempt under `cert`) and sends it.
    pub(crate) fn start_insert(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        signer: Signer,
        cert: FileCertificate,
        content: Vec<u8>,
        approval: Option<ringvault_accounts::Committed>,
    ) -> Result<RequestId, PastError> {
        // A ring smaller than the leaf set is known whole: asking it for more replicas than it
        // has nodes could only time out.
        let wanted = cert.body.replicas as usize;
        let nodes = kbr.replica_set(&cert.id(), wanted).len();
        if nodes < wanted {
            return Err(PastError::TooFewNodes { wanted, nodes });
        }
        let pending = Pending::Insert {
            signer,
            cert: cert.clone(),
            content: content.clone(),
            receipts: BTreeMap::new(),
            witnesses: Witnesses::new(self.config.secure),
            holders: Vec::new(),
            all_already: true,
            resalts: 0,
            approval,
            started: now,
            resend: self.first_resend(now),
            deadline: now + REQUEST_TIMEOUT,
        };
        let req = self.new_request(pending)?;
        self.send_insert(kbr, req, cert, content, 0);
        Ok(req)
    }

    /// How long an insert attempt waits before it is sent again: a few times what inserts
    /// take here, within bounds.
    pub(crate) fn resend_interval(&self) -> Duration {
        self.insert_latency
            .mul(RESEND_FACTOR)
            .clamp(MIN_RESEND, MAX_RESEND)
    }

    /// How long a lookup waits for an answer before its next try: a few times what lookups
    /// take here, within the same bounds as an insert's first re-send.
    pub(crate) fn lookup_retry_interval(&self) -> Duration {
        self.lookup_latency
            .mul(RESEND_FACTOR)
            .clamp(MIN_RESEND, MAX_RESEND)
    }

    /// Lookup `req` has its verified answer, from `server`: it ends. Its time counts into the
    /// smoothed lookup latency only if it says how long a lookup through the ring takes (Karn's
    /// rule): answered by another node, on the first try (after a second try, the answer may be
    /// to either, and counting the wait would feed the interval on itself).
    fn lookup_answered(&mut self, kbr: &dyn Kbr, now: Time, req: RequestId, server: &Contact) {
        let Some(Pending::Lookup { started, stage, .. }) = self.pending.remove(&req) else {
            return;
        };
        let first_try = matches!(
            stage,
            LookupStage::Plain {
                retry: Some(_),
                unsettled: 0
            }
        );
        if first_try && server.id != kbr.local_contact().id {
            self.lookup_latency = smoothed(self.lookup_latency, now.saturating_since(started));
        }
    }

    pub(crate) fn first_resend(&self, now: Time) -> Resend {
        Resend {
            at: now + self.resend_interval(),
            widen: 0,
            sent: 0,
        }
    }

    /// Sends again, one node wider, every insert attempt whose re-send time has come: a
    /// member of its replica set that died or froze is made up for by the next closest node,
    /// without waiting for the overlay to declare it failed.
    pub(crate) fn resend_due(&mut self, kbr: &mut dyn Kbr, now: Time) {
        let interval = self.resend_interval();
        let mut due = Vec::new();
        for (req, p) in self.pending.iter_mut() {
            if let Pending::Insert {
                cert,
                content,
                resend,
                ..
            } = p
            {
                if resend.at <= now {
                    resend.widen = (resend.widen + 1).min(crate::holder::MAX_WIDEN);
                    resend.sent = resend.sent.saturating_add(1);
                    let wait = interval.mul(1 << resend.sent.min(4));
                    resend.at = now + wait.min(MAX_BACKOFF);
                    due.push((*req, cert.clone(), content.clone(), resend.widen));
                }
            }
        }
        for (req, cert, content, widen) in due {
            self.send_insert(kbr, req, cert, content, widen);
        }
    }

    /// Tells the nodes that stored a fresh copy for an attempt given up on to drop it again,
    /// rather than keep an object nobody will look up. That takes the owner's signature, so
    /// with pre-signed certificates the client must reclaim it. The certificate releases only
    /// copies of this very attempt, never the object as inserted before or after it.
    fn abandon(kbr: &mut dyn Kbr, signer: &Signer, cert: &FileCertificate, holders: Vec<Contact>) {
        let Signer::Key(owner) = signer else {
            return;
        };
        let msg = PastMessage::Abandon {
            cert: AbandonCertificate::issue(&Identity::from_secret_bytes(*owner), cert),
        };
        for h in holders {
            send(kbr, h, &msg);
        }
    }

    pub(crate) fn on_receipt(
        &mut self,
        now: Time,
        req: u64,
        receipt: StoreReceipt,
        already: bool,
        from: Contact,
    ) {
        let Some(Pending::Insert {
            cert,
            receipts,
            holders,
            all_already,
            ..
        }) = self.pending.get_mut(&req)
        else {
            return;
        };
        if receipt.verify(&cert.id()).is_err() {
            return;
        }
        if !already && !holders.contains(&from) && holders.len() < crate::MAX_REPLICAS as usize * 2
        {
            holders.push(from);
        }
        *all_already &= already;
        receipts.insert(from.id, receipt);
        self.complete_insert(now, req);
    }

    /// Finishes insert `req` if enough of the receipts it holds count: k of them, from its
    /// k closest nodes (and as many more as re-sends have widened it to).
    pub(crate) fn complete_insert(&mut self, now: Time, req: RequestId) {
        let Some(Pending::Insert {
            cert,
            receipts,
            witnesses,
            resend,
            ..
        }) = self.pending.get(&req)
        else {
            return;
        };
        let k = cert.body.replicas as usize;
        let counted = witnesses.counted(&cert.id(), k + resend.widen as usize, receipts);
        if counted.len() < k {
            return;
        }
        if let Some(Pending::Insert {
            cert,
            receipts,
            all_already,
            started,
            resend,
            ..
        }) = self.pending.remove(&req)
        {
            self.insert_latency = smoothed(self.insert_latency, now.saturating_since(started));
            let receipts = receipts
                .into_iter()
                .filter(|(node, _)| counted.contains(node))
                .map(|(_, r)| r)
                .collect();
            // After a re-send, "already held" may mean held since this request's own first
            // sending (whose receipts were lost or late): only a request never sent again can
            // say the object was complete before it.
            let done = Inserted {
                cert,
                receipts,
                already_stored: all_already && resend.sent == 0,
            };
            self.events.push_back(PastEvent::Inserted(req, Ok(done)));
        }
    }

    pub(crate) fn on_refused(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        req: u64,
        id: Id,
        reason: Refusal,
        from: Contact,
    ) {
        match self.pending.get_mut(&req) {
            Some(Pending::Insert { cert, .. }) if cert.id() == id => {}
            Some(Pending::Lookup {
                id: asked, stage, ..
            }) if *asked == id => {
                // An open-mode lookup refused by a root whose view is unsettled tries again
                // rather than fail, a little later each time: a holder that root took for dead
                // may be back, or the leaf sets repaired, by then. (A try that was slow to be
                // refused after a second one went may start a third while the second is out:
                // a few more tries at most, and only near failures.)
                if let LookupStage::Plain { retry, unsettled } = stage {
                    if reason == Refusal::Unsettled
                        && !self.config.secure
                        && *unsettled < crate::secure::MAX_UNSETTLED_TRIES
                    {
                        let wait = crate::secure::UNSETTLED_WAIT.mul(1 << *unsettled);
                        *retry = Some(now + wait);
                        *unsettled += 1;
                        self.lookups_unsettled += 1;
                        return;
                    }
                }
                self.lookup_went_wrong(kbr, req, Some(from));
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
            signer,
            cert,
            content,
            resalts,
            holders,
            started,
            approval,
            ..
        }) = self.pending.remove(&req)
        else {
            return;
        };
        // This attempt is given up on (re-salted, or failed for want of room or a busy store).
        if matches!(reason, Refusal::NoSpace | Refusal::Busy) {
            Self::abandon(kbr, &signer, &cert, holders);
        }
        // File diversion: a new salt puts the object in another part of the ring.
        let next = match (&reason, signer) {
            (Refusal::NoSpace, Signer::Key(owner))
                if resalts < MAX_RESALTS && self.config.diversion =>
            {
                let b = &cert.body;
                let fresh = FileCertificate::issue(
                    &Identity::from_secret_bytes(owner),
                    &b.name,
                    b.salt + 1,
                    &content,
                    b.replicas,
                    b.date,
                );
                Some((fresh, Signer::Key(owner)))
            }
            (Refusal::NoSpace, Signer::Presigned(mut rest)) if self.config.diversion => {
                rest.pop_front().map(|c| (c, Signer::Presigned(rest)))
            }
            _ => None,
        };
        if let Some((fresh, signer)) = next {
            let resend = self.first_resend(now);
            self.pending.insert(
                req,
                Pending::Insert {
                    signer,
                    cert: fresh.clone(),
                    content: content.clone(),
                    receipts: BTreeMap::new(),
                    witnesses: Witnesses::new(self.config.secure),
                    holders: Vec::new(),
                    all_already: true,
                    resalts: resalts + 1,
                    approval,
                    started,
                    resend,
                    deadline: now + REQUEST_TIMEOUT,
                },
            );
            self.send_insert(kbr, req, fresh, content, 0);
            return;
        }
        let result = match reason {
            Refusal::NoSpace => PastError::NoSpace(resalts + 1),
            Refusal::Duplicate => PastError::Duplicate,
            Refusal::Invalid => PastError::Invalid("a replica rejected the certificate".into()),
            Refusal::NotFound | Refusal::Unsettled => PastError::NotFound,
            Refusal::NotOwner => PastError::NotOwner,
            Refusal::Busy => PastError::Busy,
            Refusal::Unapproved => PastError::Unapproved,
        };
        self.events.push_back(PastEvent::Inserted(req, Err(result)));
    }

    /// A copy arrived for lookup `req`, served by `server` after `hops` hops.
    pub(crate) fn on_found(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        req: u64,
        (server, hops): (Contact, u8),
        cert: FileCertificate,
        content: Vec<u8>,
    ) {
        let Some(Pending::Lookup {
            id,
            want: Want::Content,
            ..
        }) = self.pending.get(&req)
        else {
            return;
        };
        // Only a verified copy of the object asked for is accepted.
        if cert.id() != *id || cert.verify_content(&content).is_err() {
            self.lookup_went_wrong(kbr, req, None);
            return;
        }
        self.lookup_answered(kbr, now, req, &server);
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

    /// A certificate (and a large file's manifest) arrived for lookup `req`.
    pub(crate) fn on_described(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        req: u64,
        (server, hops): (Contact, u8),
        cert: FileCertificate,
        manifest: Option<Vec<u8>>,
    ) {
        let Some(Pending::Lookup {
            id,
            want: Want::Description,
            ..
        }) = self.pending.get(&req)
        else {
            return;
        };
        // As for a copy: only a verified certificate of the object asked for, and a manifest
        // that is the content it certifies, are accepted.
        let manifest = match manifest {
            _ if cert.id() != *id || cert.verify().is_err() => Err(()),
            None => Ok(None),
            Some(bytes) => match Manifest::from_bytes(&bytes) {
                Ok(m) if cert.matches_content(&bytes) => Ok(Some(m)),
                _ => Err(()),
            },
        };
        let Ok(manifest) = manifest else {
            self.lookup_went_wrong(kbr, req, None);
            return;
        };
        self.lookup_answered(kbr, now, req, &server);
        self.events.push_back(PastEvent::Described(
            req,
            Ok(Description {
                cert,
                manifest,
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

    pub(crate) fn expire(&mut self, kbr: &mut dyn Kbr, now: Time) {
        let due: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline() <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            let ev = match self.pending.remove(&req) {
                Some(Pending::Insert {
                    cert,
                    receipts,
                    signer,
                    holders,
                    ..
                }) => {
                    // Given up: the replicas stored so far are dropped, so a retry starts clean.
                    Self::abandon(kbr, &signer, &cert, holders);
                    PastEvent::Inserted(
                        req,
                        Err(PastError::Timeout {
                            id: cert.id(),
                            receipts: receipts.len(),
                            wanted: cert.body.replicas as usize,
                        }),
                    )
                }
                Some(Pending::Lookup { want, .. }) => want.failed(req, PastError::Unanswered),
                Some(Pending::Reclaim {
                    id,
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
                                id,
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

/// `old` moved an eighth of the way towards `sample`, like TCP's smoothed RTT.
fn smoothed(old: Duration, sample: Duration) -> Duration {
    let (old, new) = (old.as_micros(), sample.as_micros());
    Duration::from_micros(old - old / 8 + new / 8)
}
