//! Services: what runs on the overlay, seen by the node only through the KBR API.

use ringvault_overlay::{AppId, AppMessage, Forward, Kbr, RouteInfo};
use ringvault_types::{Contact, Id, Time};

/// A service on the overlay (storage, multicast, ...). It sees the overlay only through
/// [`Kbr`], receives the overlay's upcalls for messages carrying its [`AppId`], and may keep
/// its own timer.
pub trait Service: Send {
    /// The id its messages carry.
    fn app_id(&self) -> AppId;

    /// A message for this service reached its root here, or was sent straight here.
    fn deliver(&mut self, kbr: &mut dyn Kbr, now: Time, key: Id, msg: AppMessage, info: RouteInfo);

    /// A message for this service passes through here; see [`ringvault_overlay::Upcalls::forward`].
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

    /// When [`Service::handle_timeout`] should next run.
    fn next_deadline(&self) -> Option<Time> {
        None
    }

    /// The service's timer fired (early or repeated calls must be harmless).
    fn handle_timeout(&mut self, _kbr: &mut dyn Kbr, _now: Time) {}
}
