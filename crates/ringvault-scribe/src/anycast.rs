//! Anycast: a message to one member of a topic that accepts it, found by a depth-first walk of
//! the tree from where the message meets it.

use ringvault_overlay::Kbr;
use ringvault_types::{Contact, Id};

use crate::message::ScribeMessage;
use crate::scribe::{send, Scribe, ScribeEvent, MAX_ANYCAST_VISITS};
use crate::topic::Membership;

impl Scribe {
    pub(crate) fn anycast_step(
        &mut self,
        kbr: &mut dyn Kbr,
        req: u64,
        topic: Id,
        origin: Contact,
        payload: Vec<u8>,
        mut visited: Vec<Id>,
    ) {
        let me = kbr.local_contact();
        let Some(t) = self.topics.get(&topic) else {
            send(kbr, origin, &ScribeMessage::AnycastFailed { req });
            return;
        };
        if !visited.contains(&me.id) {
            if t.membership
                == (Membership::Member {
                    accepts_anycast: true,
                })
            {
                self.events.push_back(ScribeEvent::AnycastReceived {
                    topic,
                    origin,
                    payload,
                });
                send(kbr, origin, &ScribeMessage::AnycastAccepted { req, by: me });
                return;
            }
            visited.push(me.id);
        }
        if visited.len() > MAX_ANYCAST_VISITS {
            send(kbr, origin, &ScribeMessage::AnycastFailed { req });
            return;
        }
        // Depth first: an unvisited child, else back up to the parent, else (root) give up.
        let next = t
            .children
            .values()
            .map(|(c, _)| *c)
            .find(|c| !visited.contains(&c.id))
            .or(t.parent());
        match next {
            Some(n) => send(
                kbr,
                n,
                &ScribeMessage::Anycast {
                    req,
                    topic,
                    origin,
                    payload,
                    visited,
                },
            ),
            None => send(kbr, origin, &ScribeMessage::AnycastFailed { req }),
        }
    }
}
