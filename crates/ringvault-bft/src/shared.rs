//! Configurations shared by many servers in one process (a simulation of a large fleet): each
//! successor configuration is derived and checked once and handed to every server as the same
//! `Arc`, instead of every server holding and hashing its own copy of tens of megabytes.
//!
//! A server given [`SharedConfigs`] ([`crate::MembershipConfig::shared`]) computes nothing
//! differently: the cache answers exactly what [`Config::apply`] and [`Config::verify_next`]
//! would, for the same inputs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ringvault_types::Id;

use crate::config::{Config, ConfigCert, ConfigError, Delta};

/// The cache (cheap to clone; clones share it).
#[derive(Clone, Default)]
pub struct SharedConfigs {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for SharedConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedConfigs")
    }
}

#[derive(Default)]
struct Inner {
    /// Every configuration seen, by address, with its hash. Kept alive here, so an address
    /// names one configuration for as long as the cache lives.
    known: BTreeMap<usize, (Arc<Config>, Id)>,
    /// The one copy of each configuration, by hash: the same configuration reached with
    /// different certificates (each deciding member assembles its own) is shared too.
    copies: BTreeMap<Id, Arc<Config>>,
    /// Checked successors: (the current configuration's hash, the delta's hash, the
    /// certificate's hash) -> the next configuration, or why it was refused.
    next: BTreeMap<(Id, Id, Id), Result<Arc<Config>, ConfigError>>,
}

fn address(config: &Arc<Config>) -> usize {
    Arc::as_ptr(config) as usize
}

impl Inner {
    fn hash(&mut self, config: &Arc<Config>) -> Id {
        let hash = self
            .known
            .entry(address(config))
            .or_insert_with(|| (config.clone(), config.hash()))
            .1;
        self.copies.entry(hash).or_insert_with(|| config.clone());
        hash
    }
}

impl SharedConfigs {
    /// A new, empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// `config`'s hash, computed once.
    pub fn hash(&self, config: &Arc<Config>) -> Id {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hash(config)
    }

    /// `current` with `delta` applied, checked against `cert` (as [`Config::verify_next`]).
    pub fn next(
        &self,
        current: &Arc<Config>,
        delta: &Delta,
        cert: &ConfigCert,
    ) -> Result<Arc<Config>, ConfigError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let current_hash = inner.hash(current);
        let cert_hash = Id::hash(&postcard::to_allocvec(cert).unwrap_or_default());
        let key = (current_hash, delta.hash(), cert_hash);
        if let Some(r) = inner.next.get(&key) {
            return r.clone();
        }
        let next = current.apply(delta);
        let result = current.verify_next(&next, cert).map(|()| {
            let hash = next.hash();
            let copy = inner
                .copies
                .entry(hash)
                .or_insert_with(|| Arc::new(next))
                .clone();
            inner.hash(&copy);
            copy
        });
        inner.next.insert(key, result.clone());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{test_config, Params};

    #[test]
    fn a_shared_successor_is_the_same_one_a_server_derives_and_forgeries_stay_refused() {
        let (_, _, genesis) = test_config(7, Params::DEFAULT);
        let genesis = Arc::new(genesis);
        let shared = SharedConfigs::new();
        assert_eq!(shared.hash(&genesis), genesis.hash());
        let delta = Delta {
            epoch: 1,
            prev: genesis.hash(),
            changes: Vec::new(),
            valid_until: genesis.valid_until + 1,
        };
        let forged = ConfigCert {
            epoch: 1,
            round: 0,
            config_hash: genesis.apply(&delta).hash(),
            sigs: Vec::new(),
        };
        let alone = genesis.verify_next(&genesis.apply(&delta), &forged);
        assert!(alone.is_err());
        assert_eq!(shared.next(&genesis, &delta, &forged).err(), alone.err());
        // Asked again, the same refusal, from the cache.
        assert!(shared.next(&genesis, &delta, &forged).is_err());
    }
}
