//! The common KBR API (Dabek et al.): the only door through which services touch the overlay.

use ringvault_types::{Contact, Duration, Id, Time};

use crate::{AppId, AppMessage};

/// Calls a service may make on the overlay.
pub trait Kbr {
    /// This node's contact.
    fn local_contact(&self) -> Contact;

    /// Routes `msg` toward the live node numerically closest to `key`, where the service's
    /// `deliver` upcall receives it. With `hint`, the first hop is `hint`. The message leaves when
    /// the current input has been handled.
    fn route(&mut self, key: Id, msg: AppMessage, hint: Option<Contact>);

    /// Sends `msg` straight to `to`, whose `deliver` upcall receives it (KBR's `route` with a
    /// null key and `to` as the hint).
    fn send_direct(&mut self, to: Contact, msg: AppMessage);

    /// Delivers `msg` to every correct node among the `r` closest to `key`, with high
    /// probability even when a quarter of the nodes lie (secure mode; see
    /// `ringvault_overlay::secure`). Each receiver's `deliver` upcall gets it with `key`. How
    /// it went comes back, with the returned id, to the service as the `secure_routed` upcall
    /// and to the driver as [`crate::OverlayEvent::SecureRouted`].
    /// `redundancy` says when copies go along independent paths.
    fn sec_route(&mut self, key: Id, msg: AppMessage, r: u8, redundancy: crate::Redundancy) -> u64;

    /// Up to `num` nodes usable as the next hop toward `key`, best first. With `safe`, only
    /// nodes a third party could check: the constrained table's next hop (secure mode) and the
    /// leaf set, closest to the key first.
    fn local_lookup(&self, key: &Id, num: usize, safe: bool) -> Vec<Contact>;

    /// Up to `num` leaf set members, nearest in id first.
    fn neighbor_set(&self, num: usize) -> Vec<Contact>;

    /// Up to `max_rank` nodes (this one included) that are candidates to hold replicas of
    /// `key`, closest first. Meaningful only for keys within the leaf set's span.
    fn replica_set(&self, key: &Id, max_rank: usize) -> Vec<Contact>;

    /// The nodes this one declared failed lately (within two failure timeouts of `now`) that
    /// would be among the `k` closest to `key` with the nodes it knows now. While there are
    /// any, `key`'s replica set changed a moment ago, or the failure was false (a busy node,
    /// back once it is heard from), so "no node here holds it" is not yet a final answer, and
    /// the node itself may be worth asking. (With fewer than `k` nodes known, every lately
    /// failed node counts.) Implementations whose membership is agreed (server mode) have
    /// none.
    fn lately_failed(&self, _key: &Id, _k: usize, _now: Time) -> Vec<Contact> {
        Vec::new()
    }

    /// Pings `node` and, if its pong does not come within the hop timeout, tells the services
    /// ([`Service::unresponsive`]) and suspects it (it is declared failed if it stays silent a
    /// hop timeout more). For a service that sent `node` something it depends on without an
    /// acknowledgement (a lookup handed to a holder): a node killed a moment ago would
    /// otherwise be noticed only by keep-alives, if at all. A node in this node's tables is
    /// pinged at the address they hold; one that is not, at `node`'s address, and it is only
    /// reported, never suspected. False when `node` is already known to have failed, or
    /// presumed dead (it will not answer; go on without it). Implementations with failure
    /// detection of their own (server mode's membership) do nothing and answer true.
    fn watch(&mut self, _node: Contact) -> bool {
        true
    }

    /// The measured proximity (round-trip time, or the simulator's distance) of a node this
    /// node knows, `None` when it is unknown or not yet measured. Lets a service prefer the
    /// nearest of several acceptable next hops, as PAST's lookups do near the replica set.
    fn proximity(&self, node: &Id) -> Option<Duration>;

    /// The range of keys `[from, to)` (clockwise) for which `node` is among the `rank + 1`
    /// closest nodes, if this node knows enough neighbours of `node` to tell.
    fn range(&self, node: &Id, rank: usize) -> Option<(Id, Id)>;

    /// The mean gap between neighbouring node ids as this node estimates it (a fraction of the
    /// ring), `None` when it knows no other node. Lets a service judge whether a node could be
    /// among the few closest to a key it does not route to (the nodes that signed something
    /// for that key).
    fn id_gap(&self) -> Option<f64> {
        None
    }
}

/// What a service decides when a message passes through this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Send it on (to the possibly rewritten next hop).
    Continue,
    /// Stop it here.
    Stop,
}

/// How a delivered message reached this node, and so how far its `origin` can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Routed hop by hop: `origin` is what the first sender wrote, which no hop can check.
    Routed,
    /// Sent straight here (or by this node to itself): `origin` is the sender the transport
    /// authenticated.
    Direct,
    /// A secure route's delivery: `origin` is the node that handed it here, as authenticated.
    Secure,
}

impl Via {
    /// Whether `origin` is the authenticated sender: replies (receipts, answers, refusals)
    /// count only then, or anyone could route one in another node's name.
    pub fn authenticated(self) -> bool {
        !matches!(self, Via::Routed)
    }
}

/// What a delivered message went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// The node that first sent it (see [`Via`] for how far to trust it).
    pub origin: Contact,
    /// How it came.
    pub via: Via,
    /// Hops it took.
    pub hops: u8,
    /// The nodes it passed through, origin first and this node last, when the sender asked
    /// for a trace.
    pub trace: Option<Vec<crate::TraceHop>>,
}

/// The overlay's upcalls to the services above it. The node implements this by dispatching on
/// the message's application id.
pub trait Upcalls {
    /// `msg` reached its root (this node), or was sent straight here.
    fn deliver(&mut self, kbr: &mut dyn Kbr, now: Time, key: Id, msg: AppMessage, info: RouteInfo);

    /// `msg` passes through this node on its way to `key`; the service may rewrite the message,
    /// change the next hop, or stop it.
    fn forward(
        &mut self,
        kbr: &mut dyn Kbr,
        now: Time,
        key: Id,
        msg: &mut AppMessage,
        next_hop: &mut Contact,
    ) -> Forward;

    /// `node` joined (`joined = true`) or left this node's leaf set.
    fn update(&mut self, kbr: &mut dyn Kbr, now: Time, node: Contact, joined: bool);

    /// `node` did not answer a watch in time ([`Kbr::watch`]), or this node declared it failed
    /// (it left every table): what was sent to it may be lost.
    fn unresponsive(&mut self, _kbr: &mut dyn Kbr, _now: Time, _node: Contact) {}

    /// A secure route this node started ended (see [`Kbr::sec_route`]); `report.app` names
    /// the service that started it.
    fn secure_routed(&mut self, kbr: &mut dyn Kbr, now: Time, report: &crate::SecureRouteReport);
}

/// Upcalls that do nothing: for an overlay with no services.
#[derive(Debug, Default)]
pub struct NoServices;

impl Upcalls for NoServices {
    fn deliver(&mut self, _: &mut dyn Kbr, _: Time, _: Id, _: AppMessage, _: RouteInfo) {}
    fn forward(
        &mut self,
        _: &mut dyn Kbr,
        _: Time,
        _: Id,
        _: &mut AppMessage,
        _: &mut Contact,
    ) -> Forward {
        Forward::Continue
    }
    fn update(&mut self, _: &mut dyn Kbr, _: Time, _: Contact, _: bool) {}
    fn secure_routed(&mut self, _: &mut dyn Kbr, _: Time, _: &crate::SecureRouteReport) {}
}

/// A service on the overlay (storage, multicast, ...). It sees the overlay only through
/// [`Kbr`], receives the overlay's upcalls for messages carrying its [`AppId`], and may keep
/// its own timer. Services are `'static` so a node can hand a driver its concrete type back
/// (see `ringvault_node::Node::with_service`).
pub trait Service: std::any::Any + Send {
    /// The id its messages carry.
    fn app_id(&self) -> AppId;

    /// A message for this service reached its root here, or was sent straight here.
    fn deliver(&mut self, kbr: &mut dyn Kbr, now: Time, key: Id, msg: AppMessage, info: RouteInfo);

    /// A message for this service passes through here; see [`Upcalls::forward`].
    fn forward(
        &mut self,
        _kbr: &mut dyn Kbr,
        _now: Time,
        _key: Id,
        _msg: &mut AppMessage,
        _next_hop: &mut Contact,
    ) -> Forward {
        Forward::Continue
    }

    /// The leaf set gained (`joined`) or lost `node`.
    fn update(&mut self, _kbr: &mut dyn Kbr, _now: Time, _node: Contact, _joined: bool) {}

    /// `node` did not answer a watch in time, or was declared failed; see
    /// [`Upcalls::unresponsive`].
    fn unresponsive(&mut self, _kbr: &mut dyn Kbr, _now: Time, _node: Contact) {}

    /// A secure route this service started ended: to whom its message went.
    fn secure_routed(
        &mut self,
        _kbr: &mut dyn Kbr,
        _now: Time,
        _report: &crate::SecureRouteReport,
    ) {
    }

    /// When [`Service::handle_timeout`] should next run.
    fn next_deadline(&self) -> Option<Time> {
        None
    }

    /// The service's timer fired (early or repeated calls must be harmless).
    fn handle_timeout(&mut self, _kbr: &mut dyn Kbr, _now: Time) {}
}
