//! The built-in route probe: routes a traced message to a key's root, which answers the origin
//! directly with the path taken. Used by `ringvault route`, the HTTP API and the simulator.

use std::collections::BTreeMap;

use ringvault_overlay::{AppId, AppMessage, Kbr, RouteInfo, TraceHop};
use ringvault_types::{Contact, Duration, Id, Time};
use serde::{Deserialize, Serialize};

use crate::CommandId;

/// The application id of route probes.
pub const PROBE_APP: AppId = 0;
/// How long a route probe waits for the root's answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many probes wait for answers; a new probe beyond it fails at once.
pub const MAX_PENDING_PROBES: usize = 65_536;

#[derive(Serialize, Deserialize)]
enum ProbeMessage {
    Request {
        id: u64,
    },
    Reply {
        id: u64,
        key: Id,
        path: Vec<TraceHop>,
    },
}

/// A finished route probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteReport {
    /// The key routed to.
    pub key: Id,
    /// The node that received it as root.
    pub root: Contact,
    /// Every node on the way, origin first, root last.
    pub path: Vec<Contact>,
    /// `hop_rtts[i]`: the proximity `path[i]` had measured to `path[i + 1]`, if it had.
    pub hop_rtts: Vec<Option<Duration>>,
}

impl RouteReport {
    /// Overlay hops taken.
    pub fn hops(&self) -> usize {
        self.path.len().saturating_sub(1)
    }
}

/// Outstanding route probes of this node.
#[derive(Debug, Default)]
pub(crate) struct RouteProbes {
    pending: BTreeMap<u64, (CommandId, Time)>,
    next: u64,
    pub(crate) done: Vec<(CommandId, Result<RouteReport, crate::CommandError>)>,
}

impl RouteProbes {
    pub(crate) fn start(&mut self, now: Time, cmd: CommandId) -> Option<AppMessage> {
        if self.pending.len() >= MAX_PENDING_PROBES {
            self.done.push((cmd, Err(crate::CommandError::Busy)));
            return None;
        }
        self.next += 1;
        self.pending.insert(self.next, (cmd, now + PROBE_TIMEOUT));
        Some(encode(&ProbeMessage::Request { id: self.next }))
    }

    pub(crate) fn deliver(&mut self, kbr: &mut dyn Kbr, key: Id, msg: AppMessage, info: RouteInfo) {
        match postcard::from_bytes::<ProbeMessage>(&msg.body) {
            Ok(ProbeMessage::Request { id }) => {
                let path = info.trace.unwrap_or_else(|| {
                    [info.origin, kbr.local_contact()]
                        .map(|node| TraceHop {
                            node,
                            rtt_to_next: None,
                        })
                        .to_vec()
                });
                kbr.send_direct(info.origin, encode(&ProbeMessage::Reply { id, key, path }));
            }
            Ok(ProbeMessage::Reply { id, key, path }) => {
                let Some((cmd, _)) = self.pending.remove(&id) else {
                    return;
                };
                let Some(root) = path.last().map(|h| h.node) else {
                    self.done.push((cmd, Err(crate::CommandError::BadReply)));
                    return;
                };
                let hop_rtts = path[..path.len() - 1]
                    .iter()
                    .map(|h| h.rtt_to_next)
                    .collect();
                let path = path.iter().map(|h| h.node).collect();
                self.done.push((
                    cmd,
                    Ok(RouteReport {
                        key,
                        root,
                        path,
                        hop_rtts,
                    }),
                ));
            }
            Err(_) => {}
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Time> {
        // Ids are issued in time order with one fixed timeout, so the first is the earliest.
        self.pending.values().next().map(|(_, t)| *t)
    }

    pub(crate) fn handle_timeout(&mut self, now: Time) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().1 > now {
                break;
            }
            let (cmd, _) = entry.remove();
            self.done.push((cmd, Err(crate::CommandError::Timeout)));
        }
    }
}

fn encode(m: &ProbeMessage) -> AppMessage {
    AppMessage {
        app: PROBE_APP,
        body: postcard::to_allocvec(m).expect("probe messages always encode"),
    }
}
