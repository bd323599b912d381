//! PAST in secure mode (`PastConfig::secure`): an insert reaches the key's true replica set
//! through the overlay's `sec_route` (which still finds it when a quarter of the nodes lie),
//! receipts count only from the members of the set it verified, and a lookup whose ordinary
//! route brings no verified copy (a time-out, a refusal, a forged copy) is sent again through
//! `sec_route` to every member of the replica set, each of which answers with its copy or
//! refuses. Content is verified against its certificate in both modes.

use std::collections::{BTreeMap, BTreeSet};

use ringvault_overlay::{Kbr, Redundancy, SecureRouteReport};
use ringvault_types::{Contact, Duration, Id, Time};

use crate::past::{encode, Past, Pending, RequestId};
use crate::PastError;

/// Whose replies count toward a request to a key's replica set: store receipts for a PAST
/// insert, acknowledgements and answers for signed records.
#[derive(Debug)]
pub enum Witnesses {
    /// Open mode: every node whose receipt verifies.
    Anyone,
    /// Secure mode: the nodes closest to the key among the certified ones the client has
    /// heard of: those the secure route named (none before its report) and those that sent
    /// receipts. An id cannot be chosen, so a node whose receipt proves it closer than a
    /// named one belongs in the set more than the named one does: when every answer left a
    /// correct member out, the receivers hand the replica on to it (secure routing's
    /// closure), and its receipt puts it in its place.
    Closest {
        /// The members the secure route reached.
        named: BTreeSet<Id>,
        /// Whether the secure route has reported (nothing counts before).
        reported: bool,
    },
}

impl Witnesses {
    /// Anyone in open mode, the closest certified nodes heard of in secure mode.
    pub fn new(secure: bool) -> Self {
        if secure {
            Witnesses::Closest {
                named: BTreeSet::new(),
                reported: false,
            }
        } else {
            Witnesses::Anyone
        }
    }

    /// The secure route reported the nodes it reached (`members`, closest first): they are
    /// named, and replies can count from now on.
    pub fn report(&mut self, members: impl IntoIterator<Item = Id>) {
        if let Witnesses::Closest { named, reported } = self {
            named.extend(members);
            *reported = true;
        }
    }

    /// The senders of `replies` whose replies count toward a request to `key` that wants them
    /// from its `r` closest nodes.
    pub fn counted<T>(&self, key: &Id, r: usize, replies: &BTreeMap<Id, T>) -> BTreeSet<Id> {
        let receipts = replies;
        match self {
            Witnesses::Anyone => receipts.keys().copied().collect(),
            Witnesses::Closest {
                reported: false, ..
            } => BTreeSet::new(),
            Witnesses::Closest { named, .. } => {
                let mut known: Vec<Id> = named.iter().chain(receipts.keys()).copied().collect();
                known.sort_by(|a, b| key.cmp_closeness(a, b));
                known.dedup();
                known.truncate(r);
                known
                    .into_iter()
                    .filter(|n| receipts.contains_key(n))
                    .collect()
            }
        }
    }
}

/// Tries of an open-mode lookup that a root may refuse as unsettled before the refusal is
/// taken as final...
pub(crate) const MAX_UNSETTLED_TRIES: u8 = 3;
/// ...after waits of this, then twice and four times as long (7 s in all, well within the
/// request's deadline, and past the two failure timeouts a default root counts as lately).
pub(crate) const UNSETTLED_WAIT: Duration = Duration::from_secs(1);

/// Where a lookup stands.
#[derive(Debug)]
pub(crate) enum LookupStage {
    /// Routed the ordinary way. If no verified answer came by `retry`: in secure mode, sent
    /// through `sec_route`; in open mode, routed once more. `unsettled` counts the tries a
    /// root refused as [`crate::Refusal::Unsettled`] (open mode routes again after each, up to
    /// [`MAX_UNSETTLED_TRIES`]).
    Plain { retry: Option<Time>, unsettled: u8 },
    /// Sent through `sec_route` to the replica set: its members once the route reports them,
    /// those of them that said they hold no copy, and (routed with copies only on a failed
    /// test) when to try again with copies at once.
    Secure {
        redundancy: Redundancy,
        retry: Option<Time>,
        members: Option<BTreeSet<Id>>,
        refused: BTreeSet<Id>,
    },
}

impl LookupStage {
    /// When the stage needs attention before the request's deadline.
    pub(crate) fn wake(&self) -> Option<Time> {
        match self {
            LookupStage::Plain { retry, .. } | LookupStage::Secure { retry, .. } => *retry,
        }
    }

    /// Whether every member of the replica set said it holds no copy.
    fn exhausted(&self) -> bool {
        match self {
            LookupStage::Secure {
                members: Some(m),
                refused,
                ..
            } => m.is_subset(refused),
            _ => false,
        }
    }

    /// The next try after this stage brought no verified copy: secure routing, then secure
    /// routing with copies along independent paths at once (an answer that passed the
    /// failure test can still be a lie, and the ordinary route from here would bring it
    /// again). `None`: nothing left to try.
    fn next(&self, secure: bool) -> Option<Redundancy> {
        match self {
            LookupStage::Plain { .. } => secure.then_some(Redundancy::OnFailure),
            LookupStage::Secure {
                redundancy: Redundancy::OnFailure,
                ..
            } => Some(Redundancy::Always),
            LookupStage::Secure {
                redundancy: Redundancy::Always,
                ..
            } => None,
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
        (req, r): (RequestId, u8),
        redundancy: Redundancy,
    ) {
        let route = kbr.sec_route(key, encode(msg), r, redundancy);
        self.secure_routes.insert(route, SecureRequest { req, r });
    }

    /// A secure route of this service ended: the members it reached become the nodes whose
    /// receipts (for an insert) or refusals (for a lookup) count.
    pub(crate) fn on_secure_routed(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        report: &SecureRouteReport,
    ) {
        let Some(SecureRequest { req, r }) = self.secure_routes.remove(&report.id) else {
            return;
        };
        let members = report.sent_to.iter().take(r as usize).map(|c| c.id);
        let wait = self.lookup_retry_interval();
        match self.pending.get_mut(&req) {
            Some(Pending::Insert { witnesses, .. }) => {
                witnesses.report(members);
                self.complete_insert(now, req);
            }
            Some(Pending::Lookup {
                stage:
                    LookupStage::Secure {
                        redundancy,
                        retry,
                        members: m,
                        ..
                    },
                ..
            }) => {
                *m = Some(members.collect());
                if *redundancy == Redundancy::OnFailure {
                    // Nobody to ask is as good as a wrong answer: try again at once.
                    let after = if report.sent_to.is_empty() {
                        now
                    } else {
                        now + wait
                    };
                    *retry = Some(after);
                }
                self.on_lookup_exhausted(kbr, req);
            }
            _ => {}
        }
    }

    /// Sends lookup `req` through secure routing to its object's replica set, each member
    /// answering with its copy or refusing (a hand-off list that is already empty).
    fn lookup_securely(&mut self, kbr: &mut dyn Kbr, req: RequestId, redundancy: Redundancy) {
        let Some(Pending::Lookup {
            id, want, stage, ..
        }) = self.pending.get_mut(&req)
        else {
            return;
        };
        *stage = LookupStage::Secure {
            redundancy,
            retry: None,
            members: None,
            refused: BTreeSet::new(),
        };
        let (id, want) = (*id, *want);
        self.secure_lookups += 1;
        let msg = want.ask(req, kbr.local_contact(), id, Some(Vec::new()), 0);
        let r = self.config.secure_lookup_width;
        self.sec_route(kbr, id, &msg, (req, r), redundancy);
    }

    /// Lookups whose last try brought no verified answer in time try the next way, or fail.
    pub(crate) fn retry_lookups(&mut self, kbr: &mut dyn Kbr, now: Time) {
        let due: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                matches!(p, Pending::Lookup { stage, .. } if stage.wake().is_some_and(|t| t <= now))
            })
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            if self.config.secure {
                self.try_next(kbr, req);
            } else {
                self.route_again(kbr, req);
            }
        }
    }

    /// An open-mode lookup with no answer yet is routed once more (same request: the first
    /// answer from either counts), then waits for its deadline.
    fn route_again(&mut self, kbr: &mut dyn Kbr, req: RequestId) {
        let Some(Pending::Lookup {
            id,
            want,
            stage: LookupStage::Plain { retry, .. },
            ..
        }) = self.pending.get_mut(&req)
        else {
            return;
        };
        if retry.take().is_some() {
            let (id, want) = (*id, *want);
            self.lookups_resent += 1;
            self.route_lookup(kbr, req, id, want);
        }
    }

    /// Lookup `req`'s current try failed: the next one, or (nothing left) the lookup fails.
    fn try_next(&mut self, kbr: &mut dyn Kbr, req: RequestId) {
        let secure = self.config.secure;
        let Some(Pending::Lookup { stage, .. }) = self.pending.get(&req) else {
            return;
        };
        match stage.next(secure) {
            Some(redundancy) => self.lookup_securely(kbr, req, redundancy),
            None => {
                if let Some(Pending::Lookup { want, .. }) = self.pending.remove(&req) {
                    self.events.push_back(want.failed(req, PastError::NotFound));
                }
            }
        }
    }

    /// A lookup's answer was a refusal from `refused_by`, or (with `None`) a copy that did
    /// not verify. In open mode a refusal ends the lookup and a bad copy is ignored (it waits
    /// for a good one or its deadline); in secure mode a bad answer to the ordinary route sends
    /// the lookup through secure routing, and once there every member refusing moves it on.
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
            LookupStage::Plain { .. } if secure || refused_by.is_some() => self.try_next(kbr, req),
            LookupStage::Plain { .. } => {}
            LookupStage::Secure { refused, .. } => {
                if let Some(c) = refused_by {
                    refused.insert(c.id);
                }
                self.on_lookup_exhausted(kbr, req);
            }
        }
    }

    /// Moves a secure lookup every member refused on to its next try.
    fn on_lookup_exhausted(&mut self, kbr: &mut dyn Kbr, req: RequestId) {
        if matches!(
            self.pending.get(&req),
            Some(Pending::Lookup { stage, .. }) if stage.exhausted()
        ) {
            self.try_next(kbr, req);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use ringvault_overlay::{AppMessage, RouteInfo, Service};
    use ringvault_types::Identity;

    use super::*;
    use crate::message::{PastMessage, Refusal};
    use crate::{Holding, MemoryStore, PastConfig, PastEvent, StoreReceipt};

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
        secure: Vec<(Id, AppMessage, u8, Redundancy)>,
        direct: Vec<(Contact, AppMessage)>,
        /// What `lately_failed` answers.
        failed: Vec<Contact>,
    }

    impl Kbr for Recorder {
        fn local_contact(&self) -> Contact {
            contact(0)
        }
        fn route(&mut self, key: Id, msg: AppMessage, _: Option<Contact>) {
            self.routed.push((key, msg));
        }
        fn send_direct(&mut self, to: Contact, msg: AppMessage) {
            self.direct.push((to, msg));
        }
        fn lately_failed(&self, _: &Id, _: usize, _: Time) -> Vec<Contact> {
            self.failed.clone()
        }
        fn sec_route(&mut self, key: Id, msg: AppMessage, r: u8, red: Redundancy) -> u64 {
            self.secure.push((key, msg, r, red));
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
            via: ringvault_overlay::Via::Direct,
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
    fn a_secure_insert_counts_receipts_only_from_the_closest_nodes_it_knows() {
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
        let (key, _, r, red) = kbr.secure[0].clone();
        assert_eq!((r, red), (3, Redundancy::OnFailure));
        // Nine nodes by closeness to the key: the route names 0, 1 and 3; 2 is a member it
        // left out; 6, 7, 8 are far.
        let mut by_closeness: Vec<(u8, Contact)> = (1..10).map(|n| (n, contact(n))).collect();
        by_closeness.sort_by(|a, b| key.cmp_closeness(&a.1.id, &b.1.id));
        let at = |i: usize| by_closeness[i];
        // Receipts from far nodes arrive before the report, and after it: none counts.
        for i in 6..9 {
            from(&mut p, &mut kbr, at(i).1, &receipt(req, key, at(i).0));
        }
        let named = vec![at(0).1, at(1).1, at(3).1];
        p.on_secure_routed(&mut kbr, Time::ZERO, &report(1, key, named));
        assert_eq!(inserted(&mut p), None);
        from(&mut p, &mut kbr, at(0).1, &receipt(req, key, at(0).0));
        from(&mut p, &mut kbr, at(3).1, &receipt(req, key, at(3).0));
        assert_eq!(inserted(&mut p), None, "two members and far nodes");
        // The member the route left out proves itself closer than the third named one.
        from(&mut p, &mut kbr, at(2).1, &receipt(req, key, at(2).0));
        assert_eq!(inserted(&mut p), None, "the closest three are 0, 1, 2");
        from(&mut p, &mut kbr, at(1).1, &receipt(req, key, at(1).0));
        assert_eq!(inserted(&mut p), Some(3), "only the closest three count");

        // Negative control: open mode takes three far nodes' receipts.
        let mut p = past(false);
        let req = p
            .insert(&mut kbr, Time::ZERO, &owner, "a", b"x".to_vec(), 3, 0)
            .unwrap();
        for i in 6..9 {
            from(&mut p, &mut kbr, at(i).1, &receipt(req, key, at(i).0));
        }
        assert_eq!(inserted(&mut p), Some(3));
    }

    #[test]
    fn a_receipt_routed_in_under_a_members_name_does_not_count() {
        let mut kbr = Recorder::default();
        let mut p = past(true);
        let owner = Identity::from_secret_bytes([9; 32]);
        let req = p
            .insert(&mut kbr, Time::ZERO, &owner, "a", b"x".to_vec(), 1, 0)
            .unwrap();
        let key = kbr.secure[0].0;
        p.on_secure_routed(&mut kbr, Time::ZERO, &report(1, key, vec![contact(1)]));
        // Routed, its origin is whatever its sender wrote: dropped.
        let routed = RouteInfo {
            origin: contact(1),
            via: ringvault_overlay::Via::Routed,
            hops: 2,
            trace: None,
        };
        p.deliver(
            &mut kbr,
            Time::ZERO,
            key,
            encode(&receipt(req, key, 1)),
            routed,
        );
        assert_eq!(inserted(&mut p), None);
        // Sent by the member itself (authenticated), it counts.
        from(&mut p, &mut kbr, contact(1), &receipt(req, key, 1));
        assert_eq!(inserted(&mut p), Some(1));
    }

    #[test]
    fn a_secure_reclaim_goes_to_the_replica_set_itself() {
        let mut kbr = Recorder::default();
        let mut p = past(true);
        let owner = Identity::from_secret_bytes([9; 32]);
        let cert = crate::ReclaimCertificate::issue(&owner, Id::hash(b"object"), 1);
        p.reclaim(&mut kbr, Time::ZERO, cert, 4).unwrap();
        assert!(kbr.routed.is_empty());
        let (_, msg, r, _) = &kbr.secure[0];
        assert_eq!(*r, 4);
        let m: PastMessage = postcard::from_bytes(&msg.body).unwrap();
        assert!(matches!(m, PastMessage::ReclaimReplica { .. }), "{m:?}");
    }

    #[test]
    fn a_refused_or_forged_lookup_goes_secure_then_redundant_and_fails_only_after_both() {
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
        let width = p.config().secure_lookup_width;
        assert_eq!(kbr.secure[0].2, width);
        assert_eq!(kbr.secure[0].3, Redundancy::OnFailure);
        let members: Vec<Contact> = (1..6).map(contact).collect();
        p.on_secure_routed(&mut kbr, Time::ZERO, &report(1, id, members.clone()));
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
        assert_eq!(kbr.secure.len(), 1);
        // Every member refused: once more, with copies along independent paths at once.
        from(&mut p, &mut kbr, members[4], &refused);
        assert!(p.poll_event().is_none());
        assert_eq!(kbr.secure.len(), 2);
        assert_eq!(kbr.secure[1].3, Redundancy::Always);
        p.on_secure_routed(&mut kbr, Time::ZERO, &report(2, id, members.clone()));
        for m in &members {
            from(&mut p, &mut kbr, *m, &refused);
        }
        assert!(matches!(
            p.poll_event(),
            Some(PastEvent::Found(_, Err(PastError::NotFound)))
        ));

        // With no answer at all, each try is given up on at its retry time.
        let mut kbr = Recorder::default();
        p.lookup(&mut kbr, Time::ZERO, id).unwrap();
        let retry = p.next_deadline().unwrap();
        assert!(retry < Time::ZERO + crate::REQUEST_TIMEOUT);
        p.handle_timeout(&mut kbr, retry);
        assert_eq!(kbr.secure.len(), 1, "secure after the ordinary route");
        p.on_secure_routed(&mut kbr, retry, &report(1, id, members.clone()));
        let retry = p.next_deadline().unwrap();
        p.handle_timeout(&mut kbr, retry);
        assert_eq!(kbr.secure.len(), 2, "redundant after the secure route");
        assert_eq!(kbr.secure[1].3, Redundancy::Always);
    }

    /// A root without a copy hands a lookup to the nodes closest to the id, and last to a node
    /// near it that it declared failed lately (the failure may be false, and the nodes after
    /// it did not declare it); with none, the list is the closest alone (the control).
    #[test]
    fn a_root_hands_a_lookup_last_to_a_lately_failed_node_near_the_id() {
        let gone = contact(42);
        for failed in [vec![], vec![gone]] {
            let mut p = past(false);
            let mut kbr = Recorder {
                failed: failed.clone(),
                ..Recorder::default()
            };
            let client = contact(9);
            let ask = PastMessage::Lookup {
                req: 5,
                client,
                id: Id::hash(b"held by a busy node"),
                handoff: None,
                hops: 0,
            };
            from(&mut p, &mut kbr, client, &ask);
            let (to, msg) = kbr.direct.first().expect("handed on");
            assert_eq!(*to, contact(1), "the closest other than this node first");
            let Ok(PastMessage::Lookup {
                handoff: Some(then),
                ..
            }) = postcard::from_bytes::<PastMessage>(&msg.body)
            else {
                panic!("not a hand-off");
            };
            let ids: Vec<Contact> = then;
            assert!(
                ids.len() <= crate::holder::LOOKUP_HANDOFFS,
                "within the cut"
            );
            assert_eq!(ids.last() == Some(&gone), !failed.is_empty(), "{ids:?}");
        }
    }
}
