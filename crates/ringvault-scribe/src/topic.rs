//! This node's part in one topic: where it stands in the topic's tree, whether it subscribed,
//! its children, and what it knows of the topic.

use std::collections::BTreeMap;

use ringvault_types::{Contact, Id, Time};

use crate::name::TopicName;

/// Where this node stands in a topic's tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Place {
    /// Not in the tree: no parent, not the root, not joining (a forwarder with children only
    /// is here until it joins, and a topic entry that nothing needs is dropped).
    #[default]
    Outside,
    /// A JOIN went out at `since` and no parent has answered yet; the join is sent again if
    /// none answers within the parent timeout.
    Joining {
        /// When the join went out.
        since: Time,
    },
    /// Below `parent`, which spoke last at `heard`.
    Child {
        /// The parent.
        parent: Contact,
        /// When it last spoke (data, a heartbeat or an acknowledgement).
        heard: Time,
    },
    /// The topic's root.
    Root,
}

/// Whether this node subscribed to a topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Membership {
    /// Not subscribed (a forwarder or root only).
    #[default]
    None,
    /// Subscribed; takes anycasts unless the application said not to.
    Member {
        /// Accepts anycasts.
        accepts_anycast: bool,
    },
}

/// This node's part in one topic.
#[derive(Debug, Default)]
pub(crate) struct Topic {
    pub(crate) place: Place,
    pub(crate) membership: Membership,
    /// Children and when each last refreshed.
    pub(crate) children: BTreeMap<Id, (Contact, Time)>,
    /// Last time data or a heartbeat went to the children.
    pub(crate) sent_down: Time,
    /// Last sequence number seen per publisher (members).
    pub(crate) seqs: BTreeMap<Id, u64>,
    /// This node's ancestors, root first, as the parent last said. A node never adopts one of
    /// its ancestors, and a parent path that contains this node reveals a loop.
    pub(crate) path: Vec<Id>,
    /// The topic's name, checked against the topic id before it was kept.
    pub(crate) name: Option<TopicName>,
}

impl Topic {
    /// In the tree, or on its way in.
    pub(crate) fn in_tree(&self) -> bool {
        self.place != Place::Outside
    }

    /// Connected to the root (as far as this node knows): only then does it take children
    /// from passing JOINs, so two re-joining nodes cannot adopt each other.
    pub(crate) fn attached(&self) -> bool {
        matches!(self.place, Place::Root | Place::Child { .. })
    }

    pub(crate) fn is_root(&self) -> bool {
        self.place == Place::Root
    }

    pub(crate) fn is_member(&self) -> bool {
        matches!(self.membership, Membership::Member { .. })
    }

    /// The parent, when this node has one.
    pub(crate) fn parent(&self) -> Option<Contact> {
        match self.place {
            Place::Child { parent, .. } => Some(parent),
            _ => None,
        }
    }

    /// Joining from `now`: the parent (if any) is given up.
    pub(crate) fn start_joining(&mut self, now: Time) {
        self.place = Place::Joining { since: now };
    }

    /// The path a child of this node has: ours plus us.
    pub(crate) fn child_path(&self, me: Id) -> Vec<Id> {
        let mut p = self.path.clone();
        p.push(me);
        p
    }

    /// Whether this node must keep the topic: a member, the root, or a forwarder for children.
    pub(crate) fn needed(&self) -> bool {
        self.is_member() || self.is_root() || !self.children.is_empty()
    }
}
