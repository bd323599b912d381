//! PAST in secure mode (`PastConfig::secure`): an insert reaches the key's true replica set
//! through the overlay's `sec_route` (which still finds it when a quarter of the nodes lie),
//! receipts count only from the members of the set it verified, and a lookup whose ordinary
//! route brings no verified copy (a time-out, a refusal, a forged copy) is sent again through
//! `sec_route` to every member of the replica set, each of which answers with its copy or
//! refuses. Content is verified against its certificate in both modes.

use std::collections::{BTreeMap, BTreeSet};

use ringvault_overlay::{Kbr, SecureRouteReport};
use ringvault_types::{Contact, Id, Time};

use crate::past::{encode, Past, Pending, RequestId};
use crate::{PastError, StoreReceipt};

/// Whose store receipts complete an insert.
#[derive(Debug)]
pub(crate) enum Witnesses {
    /// Open mode: every node whose receipt verifies.
    Anyone,
    /// Secure mode: only the members of the replica set that secure routing verified (none
    /// until its report comes).
    Members(BTreeSet<Id>),
}

impl Witnesses {
    pub(crate) fn new(secure: bool) -> Self {
        if secure {
            Witnesses::Members(BTreeSet::new())
        } else {
            Witnesses::Anyone
        }
    }

    /// Whether a receipt from `node` counts.
    pub(crate) fn counts(&self, node: &Id) -> bool {
        match self {
            Witnesses::Anyone => true,
            Witnesses::Members(m) => m.contains(node),
        }
    }

    /// The receipts (by sender) that count.
    pub(crate) fn counted(&self, receipts: &BTreeMap<Id, StoreReceipt>) -> usize {
        receipts.keys().filter(|n| self.counts(n)).count()
    }
}

/// Where a lookup stands.
#[derive(Debug)]
pub(crate) enum LookupStage {
    /// Routed the ordinary way. In secure mode, sent through `sec_route` at `retry` if no
    /// verified answer came by then.
    Plain { retry: Option<Time> },
    /// Sent through `sec_route` to the replica set: its members once the route reports them,
    /// and those of them that said they hold no copy.
    Secure {
        members: Option<BTreeSet<Id>>,
        refused: BTreeSet<Id>,
    },
}

impl LookupStage {
    /// When the stage needs attention before the request's deadline.
    pub(crate) fn wake(&self) -> Option<Time> {
        match self {
            LookupStage::Plain { retry } => *retry,
            LookupStage::Secure { .. } => None,
        }
    }

    /// Whether every member of the replica set said it holds no copy.
    fn exhausted(&self) -> bool {
        match self {
            LookupStage::Secure {
                members: Some(m),
                refused,
            } => m.is_subset(refused),
            _ => false,
        }
    }
}

/// What a secure route started by PAST was for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SecureRequest {
    pub(crate) req: RequestId,
    /// How many of the closest nodes it was sent to.
    pub(crate) r: u8,
}

impl Past {
    /// Sends `msg` for request `req` to the `r` closest nodes of `key` by secure routing.
    pub(crate) fn sec_route(
        &mut self,
        kbr: &mut dyn Kbr,
        key: Id,
        msg: &crate::message::PastMessage,
        req: RequestId,
        r: u8,
    ) {
        let route = kbr.sec_route(key, encode(msg), r);
        self.secure_routes.insert(route, SecureRequest { req, r });
    }

    /// A secure route of this service ended: the members it reached become the nodes whose
    /// receipts (for an insert) or refusals (for a lookup) count.
    pub(crate) fn on_secure_routed(&mut self, now: Time, report: &SecureRouteReport) {
        let Some(SecureRequest { req, r }) = self.secure_routes.remove(&report.id) else {
            return;
        };
        let members = report.sent_to.iter().take(r as usize).map(|c| c.id);
        match self.pending.get_mut(&req) {
            Some(Pending::Insert {
                witnesses: Witnesses::Members(m),
                ..
            }) => {
                m.extend(members);
                self.complete_insert(now, req);
            }
            Some(Pending::Lookup {
                stage: LookupStage::Secure { members: m, .. },
                ..
            }) => {
                *m = Some(members.collect());
                self.fail_exhausted_lookup(req);
            }
            _ => {}
        }
    }

    /// Sends lookup `req` through secure routing to its object's replica set, each member
    /// answering with its copy or refusing (a hand-off list that is already empty).
    pub(crate) fn lookup_securely(&mut self, kbr: &mut dyn Kbr, req: RequestId) {
        let Some(Pending::Lookup {
            id, want, stage, ..
        }) = self.pending.get_mut(&req)
        else {
            return;
        };
        *stage = LookupStage::Secure {
            members: None,
            refused: BTreeSet::new(),
        };
        let (id, want) = (*id, *want);
        self.secure_lookups += 1;
        let msg = want.ask(req, kbr.local_contact(), id, Some(Vec::new()), 0);
        let r = self.config.secure_lookup_width;
        self.sec_route(kbr, id, &msg, req, r);
    }

    /// Lookups whose ordinary route brought no verified answer in time go secure.
    pub(crate) fn retry_lookups(&mut self, kbr: &mut dyn Kbr, now: Time) {
        let due: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                matches!(p, Pending::Lookup { stage: LookupStage::Plain { retry: Some(t) }, .. } if *t <= now)
            })
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            self.lookup_securely(kbr, req);
        }
    }

    /// A lookup's answer was a refusal from `refused_by`, or (with `None`) a copy that did
    /// not verify. In open mode a refusal ends the lookup and a bad copy is ignored (it waits
    /// for a good one or its deadline); in secure mode a bad answer to the ordinary route sends
    /// the lookup through secure routing, and once there only every member refusing ends it.
    pub(crate) fn lookup_went_wrong(
        &mut self,
        kbr: &mut dyn Kbr,
        req: RequestId,
        refused_by: Option<Contact>,
    ) {
        let secure = self.config.secure;
        let Some(Pending::Lookup { stage, .. }) = self.pending.get_mut(&req) else {
            return;
        };
        match stage {
            LookupStage::Plain { .. } if secure => self.lookup_securely(kbr, req),
            LookupStage::Plain { .. } => {
                if refused_by.is_some() {
                    if let Some(Pending::Lookup { want, .. }) = self.pending.remove(&req) {
                        self.events.push_back(want.failed(req, PastError::NotFound));
                    }
                }
            }
            LookupStage::Secure { refused, .. } => {
                if let Some(c) = refused_by {
                    refused.insert(c.id);
                }
                self.fail_exhausted_lookup(req);
            }
        }
    }

    /// Ends a secure lookup every member refused.
    fn fail_exhausted_lookup(&mut self, req: RequestId) {
        let exhausted = matches!(
            self.pending.get(&req),
            Some(Pending::Lookup { stage, .. }) if stage.exhausted()
        );
        if exhausted {
            if let Some(Pending::Lookup { want, .. }) = self.pending.remove(&req) {
                self.events.push_back(want.failed(req, PastError::NotFound));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use ringvault_overlay::{AppMessage, RouteInfo, Service};
    use ringvault_types::{Duration, Identity};

    use super::*;
    use crate::message::{PastMessage, Refusal};
    use crate::{Holding, MemoryStore, PastConfig, PastEvent};

    fn contact(n: u8) -> Contact {
        Contact::new(
            Id::hash(&[n]),
            SocketAddr::from(([127, 0, 0, 1], 7000 + n as u16)),
        )
    }

    /// A KBR that records what the service asks of it and knows ten nodes.
    #[derive(Default)]
    struct Recorder {
        routed: Vec<(Id, AppMessage)>,
        secure: Vec<(Id, AppMessage, u8)>,
    }

    impl Kbr for Recorder {
        fn local_contact(&self) -> Contact {
            contact(0)
        }
        fn route(&mut self, key: Id, msg: AppMessage, _: Option<Contact>) {
            self.routed.push((key, msg));
        }
        fn send_direct(&mut self, _: Contact, _: AppMessage) {}
        fn sec_route(&mut self, key: Id, msg: AppMessage, r: u8) -> u64 {
            self.secure.push((key, msg, r));
            self.secure.len() as u64
        }
        fn local_lookup(&self, _: &Id, _: usize, _: bool) -> Vec<Contact> {
            Vec::new()
        }
        fn neighbor_set(&self, _: usize) -> Vec<Contact> {
            Vec::new()
        }
        fn replica_set(&self, _: &Id, max_rank: usize) -> Vec<Contact> {
            (0..10).map(contact).take(max_rank).collect()
        }
        fn proximity(&self, _: &Id) -> Option<Duration> {
            None
        }
        fn range(&self, _: &Id, _: usize) -> Option<(Id, Id)> {
            None
        }
    }

    fn past(secure: bool) -> Past {
        let config = PastConfig {
            secure,
            ..PastConfig::default()
        };
        let me = Identity::from_secret_bytes([7; 32]);
        Past::with_config(me, Box::new(MemoryStore::new(1 << 20)), config).unwrap()
    }

    fn from(p: &mut Past, kbr: &mut Recorder, sender: Contact, m: &PastMessage) {
        let info = RouteInfo {
            origin: sender,
            hops: 0,
            trace: None,
        };
        p.deliver(kbr, Time::ZERO, sender.id, encode(m), info);
    }

    fn receipt(req: RequestId, object: Id, signer: u8) -> PastMessage {
        let node = Identity::from_secret_bytes([signer; 32]);
        PastMessage::Receipt {
            req,
            receipt: StoreReceipt::issue(&node, object, Holding::Primary),
            already: false,
        }
    }

    fn report(id: u64, key: Id, sent_to: Vec<Contact>) -> SecureRouteReport {
        SecureRouteReport {
            id,
            key,
            app: crate::PAST_APP,
            sent_to,
            redundant: false,
            first: Vec::new(),
        }
    }

    fn inserted(p: &mut Past) -> Option<usize> {
        std::iter::from_fn(|| p.poll_event()).find_map(|e| match e {
            PastEvent::Inserted(_, Ok(done)) => Some(done.receipts.len()),
            _ => None,
        })
    }

    #[test]
    fn a_secure_insert_counts_receipts_only_from_the_verified_replica_set() {
        let mut kbr = Recorder::default();
        let mut p = past(true);
        let owner = Identity::from_secret_bytes([9; 32]);
        let req = p
            .insert(&mut kbr, Time::ZERO, &owner, "a", b"x".to_vec(), 3, 0)
            .unwrap();
        assert!(
            kbr.routed.is_empty(),
            "a secure insert is not routed plainly"
        );
        let (key, _, r) = kbr.secure[0].clone();
        assert_eq!(r, 3);
        // Three receipts from nodes outside the set arrive first: none counts.
        for n in 6..9 {
            from(&mut p, &mut kbr, contact(n), &receipt(req, key, n));
        }
        p.on_secure_routed(Time::ZERO, &report(1, key, (1..4).map(contact).collect()));
        assert_eq!(inserted(&mut p), None);
        from(&mut p, &mut kbr, contact(1), &receipt(req, key, 1));
        from(&mut p, &mut kbr, contact(2), &receipt(req, key, 2));
        assert_eq!(inserted(&mut p), None);
        from(&mut p, &mut kbr, contact(3), &receipt(req, key, 3));
        assert_eq!(inserted(&mut p), Some(3), "only the members' receipts");

        // Negative control: open mode takes the same three outsiders' receipts.
        let mut p = past(false);
        let req = p
            .insert(&mut kbr, Time::ZERO, &owner, "a", b"x".to_vec(), 3, 0)
            .unwrap();
        for n in 6..9 {
            from(&mut p, &mut kbr, contact(n), &receipt(req, key, n));
        }
        assert_eq!(inserted(&mut p), Some(3));
    }

    #[test]
    fn a_refused_or_forged_lookup_goes_secure_and_fails_only_when_every_member_refuses() {
        let mut kbr = Recorder::default();
        let mut p = past(true);
        let id = Id::hash(b"object");
        let req = p.lookup(&mut kbr, Time::ZERO, id).unwrap();
        assert_eq!(kbr.routed.len(), 1, "the ordinary route first");
        let refused = PastMessage::Refused {
            req,
            id,
            reason: Refusal::NotFound,
        };
        // A liar on the path says there is no such object: the lookup goes secure.
        from(&mut p, &mut kbr, contact(8), &refused);
        assert_eq!(kbr.secure.len(), 1);
        assert_eq!(kbr.secure[0].2, p.config().secure_lookup_width);
        let members: Vec<Contact> = (1..6).map(contact).collect();
        p.on_secure_routed(Time::ZERO, &report(1, id, members.clone()));
        // A forged copy and an outsider's refusal change nothing.
        let liar = Identity::from_secret_bytes([8; 32]);
        let forged = PastMessage::Found {
            req,
            hops: 1,
            cert: crate::FileCertificate::issue(&liar, "forged", 0, b"forged", 1, 0),
            content: b"forged".to_vec(),
        };
        from(&mut p, &mut kbr, contact(8), &forged);
        from(&mut p, &mut kbr, contact(9), &refused);
        for m in &members[..4] {
            from(&mut p, &mut kbr, *m, &refused);
        }
        assert!(p.poll_event().is_none(), "one member has not answered");
        from(&mut p, &mut kbr, members[4], &refused);
        assert!(matches!(
            p.poll_event(),
            Some(PastEvent::Found(_, Err(PastError::NotFound)))
        ));

        // With no answer at all, the ordinary route is given up on at its retry time.
        let mut kbr = Recorder::default();
        let req = p.lookup(&mut kbr, Time::ZERO, id).unwrap();
        let retry = p.next_deadline().unwrap();
        assert!(retry < Time::ZERO + crate::REQUEST_TIMEOUT);
        p.handle_timeout(&mut kbr, retry);
        assert_eq!(kbr.secure.len(), 1, "request {req} went secure");
    }
}
