//! Topic names as carried through the tree: a name is only believed when it hashes, with the
//! creator key it comes with, to the topic id it is claimed for.

use serde::{Deserialize, Serialize};

use ringvault_types::{Id, PublicKey};

use crate::scribe::{check_topic_name, topic_id};

/// A topic's name and the key of its creator: together they are the topic id's preimage, so
/// any node can check the pair against the id without trusting whoever sent it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TopicName {
    pub(crate) name: String,
    pub(crate) creator: PublicKey,
}

/// A peer claimed a name that is not the topic's (wrong hash, or a malformed name).
#[derive(Debug)]
pub(crate) struct Forged;

impl TopicName {
    /// Whether this is the name of `topic`: 1 to `MAX_TOPIC_NAME` bytes, and hashing with the
    /// creator to `topic`.
    pub(crate) fn names(&self, topic: Id) -> bool {
        check_topic_name(&self.name).is_ok() && topic_id(&self.name, &self.creator) == topic
    }

    /// A name a peer sent for `topic`: kept when it names the topic, refused when it does not.
    pub(crate) fn check(topic: Id, name: Option<TopicName>) -> Result<Option<TopicName>, Forged> {
        match name {
            Some(n) if !n.names(topic) => Err(Forged),
            n => Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringvault_types::Identity;

    fn key(b: u8) -> PublicKey {
        Identity::from_secret_bytes([b; 32]).public_key()
    }

    #[test]
    fn a_name_is_believed_only_for_its_own_topic_and_creator() {
        let news = TopicName {
            name: "news".into(),
            creator: key(1),
        };
        let topic = topic_id("news", &key(1));
        assert!(news.names(topic));
        assert!(!news.names(topic_id("news", &key(2))), "another creator");
        assert!(!news.names(topic_id("weather", &key(1))), "another name");
        assert!(TopicName::check(topic, Some(news.clone())).is_ok());
        assert!(TopicName::check(topic, None).is_ok_and(|n| n.is_none()));
        let forged = TopicName {
            name: "weather".into(),
            creator: key(1),
        };
        assert!(TopicName::check(topic, Some(forged)).is_err());
    }

    #[test]
    fn an_oversized_or_empty_name_is_refused_even_though_it_hashes_to_the_topic() {
        for name in [String::new(), "x".repeat(crate::MAX_TOPIC_NAME + 1)] {
            let topic = topic_id(&name, &key(1));
            let n = TopicName {
                name,
                creator: key(1),
            };
            assert!(!n.names(topic));
            assert!(TopicName::check(topic, Some(n)).is_err());
        }
    }
}
