//! Cache replacement for copies held in unused space. Two policies: GreedyDual-Size (Cao and
//! Irani; each cached object has a value H = L + cost / size, the lowest H is evicted first and
//! L rises to it, so small objects and recently used ones stay; cost is 1 for every object,
//! which maximises the hit rate) and least-recently-used. [`Cache`] is what a PAST node holds:
//! the policy chosen in its configuration, or none ([`CachePolicy::Off`]: nothing new is
//! cached, and replicas demoted to cache are still tracked so their space can be reclaimed).

use std::collections::BTreeMap;

use ringvault_types::Id;

/// Bookkeeping of which cached object to evict next. Holds ids and sizes, not the objects.
#[derive(Debug, Default, Clone)]
pub struct GreedyDualSize {
    inflation: f64,
    by_value: BTreeMap<(u64, Id), u64>,
    value_of: BTreeMap<Id, u64>,
}

/// A positive f64 as a key that sorts like the number.
fn key(v: f64) -> u64 {
    v.to_bits()
}

impl GreedyDualSize {
    /// An empty cache index.
    pub fn new() -> Self {
        Self::default()
    }

    fn value(&self, size: u64) -> f64 {
        self.inflation + 1.0 / (size.max(1) as f64)
    }

    /// Records a newly cached object, or a hit on a cached one (which refreshes its value).
    pub fn touch(&mut self, id: Id, size: u64) {
        self.remove(&id);
        let v = key(self.value(size));
        self.by_value.insert((v, id), size);
        self.value_of.insert(id, v);
    }

    /// Forgets an object (removed or promoted to a replica).
    pub fn remove(&mut self, id: &Id) {
        if let Some(v) = self.value_of.remove(id) {
            self.by_value.remove(&(v, *id));
        }
    }

    /// The object to evict next; evicting it raises the inflation value to its H.
    pub fn evict(&mut self) -> Option<(Id, u64)> {
        let ((v, id), size) = self.by_value.pop_first()?;
        self.value_of.remove(&id);
        self.inflation = f64::from_bits(v);
        Some((id, size))
    }

    /// Number of cached objects tracked.
    pub fn len(&self) -> usize {
        self.value_of.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.value_of.is_empty()
    }
}

/// Least-recently-used replacement: the copy touched longest ago is evicted first, whatever
/// its size.
#[derive(Debug, Default, Clone)]
pub struct Lru {
    clock: u64,
    by_age: BTreeMap<(u64, Id), u64>,
    age_of: BTreeMap<Id, u64>,
}

impl Lru {
    /// An empty cache index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a newly cached object, or a hit on a cached one (it becomes the most recent).
    pub fn touch(&mut self, id: Id, size: u64) {
        self.remove(&id);
        self.clock += 1;
        self.by_age.insert((self.clock, id), size);
        self.age_of.insert(id, self.clock);
    }

    /// Forgets an object (removed or promoted to a replica).
    pub fn remove(&mut self, id: &Id) {
        if let Some(a) = self.age_of.remove(id) {
            self.by_age.remove(&(a, *id));
        }
    }

    /// The least recently used object, taken out of the index.
    pub fn evict(&mut self) -> Option<(Id, u64)> {
        let ((_, id), size) = self.by_age.pop_first()?;
        self.age_of.remove(&id);
        Some((id, size))
    }

    /// Number of cached objects tracked.
    pub fn len(&self) -> usize {
        self.age_of.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.age_of.is_empty()
    }
}

/// Which copies a PAST node caches in its unused space, and which it evicts first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CachePolicy {
    /// No caching of copies passing through (replicas a node no longer owns are still kept as
    /// evictable cache, least recently used first).
    Off,
    /// Least recently used first.
    Lru,
    /// GreedyDual-Size (the paper's choice): large and long-unused copies first.
    #[default]
    GreedyDualSize,
}

#[derive(Debug, Clone)]
enum Index {
    Gds(GreedyDualSize),
    Lru(Lru),
}

/// A node's cache index under its [`CachePolicy`]. Holds ids and sizes, not the objects.
#[derive(Debug, Clone)]
pub struct Cache {
    policy: CachePolicy,
    index: Index,
}

impl Cache {
    /// An empty index for `policy`.
    pub fn new(policy: CachePolicy) -> Self {
        let index = match policy {
            CachePolicy::GreedyDualSize => Index::Gds(GreedyDualSize::new()),
            CachePolicy::Lru | CachePolicy::Off => Index::Lru(Lru::new()),
        };
        Cache { policy, index }
    }

    /// The policy.
    pub fn policy(&self) -> CachePolicy {
        self.policy
    }

    /// Whether copies passing through (inserts and lookups) may be cached.
    pub fn admits(&self) -> bool {
        self.policy != CachePolicy::Off
    }

    /// Records a newly cached object, or a hit on a cached one.
    pub fn touch(&mut self, id: Id, size: u64) {
        match &mut self.index {
            Index::Gds(c) => c.touch(id, size),
            Index::Lru(c) => c.touch(id, size),
        }
    }

    /// Forgets an object (removed or promoted to a replica).
    pub fn remove(&mut self, id: &Id) {
        match &mut self.index {
            Index::Gds(c) => c.remove(id),
            Index::Lru(c) => c.remove(id),
        }
    }

    /// The object to evict next, taken out of the index.
    pub fn evict(&mut self) -> Option<(Id, u64)> {
        match &mut self.index {
            Index::Gds(c) => c.evict(),
            Index::Lru(c) => c.evict(),
        }
    }

    /// Number of cached objects tracked.
    pub fn len(&self) -> usize {
        match &self.index {
            Index::Gds(c) => c.len(),
            Index::Lru(c) => c.len(),
        }
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id::from_bytes([n; 32])
    }

    #[test]
    fn large_objects_go_first_and_hits_protect_objects() {
        let mut c = GreedyDualSize::new();
        c.touch(id(1), 1000);
        c.touch(id(2), 10);
        c.touch(id(3), 500);
        assert_eq!(c.evict(), Some((id(1), 1000)));
        // After inflation rose, a fresh touch of the big object outranks the old small one
        // only if its value is higher: L + 1/500 vs 1/10 -> the 500-byte one goes next.
        assert_eq!(c.evict(), Some((id(3), 500)));
        c.touch(id(4), 20);
        c.touch(id(2), 10); // hit
        assert_eq!(c.evict(), Some((id(4), 20)));
        assert_eq!(c.evict(), Some((id(2), 10)));
        assert_eq!(c.evict(), None);
        assert!(c.is_empty());
    }

    #[test]
    fn inflation_ages_out_objects_that_are_never_hit() {
        let mut c = GreedyDualSize::new();
        // A small object is worth more than a fresh larger one at first...
        c.touch(id(1), 1);
        c.touch(id(10), 2);
        assert_eq!(c.evict(), Some((id(10), 2)));
        // ...but evictions raise L, so objects touched later catch up with it, and the
        // untouched one goes within a few rounds.
        let mut gone_at = None;
        for round in 0..5u8 {
            c.touch(id(20 + round), 2);
            if c.evict() == Some((id(1), 1)) {
                gone_at = Some(round);
                break;
            }
        }
        assert!(gone_at.is_some(), "a never-hit object was never evicted");
        // A hit resets an object's value above the current inflation.
        c.touch(id(50), 4);
        c.touch(id(51), 4);
        c.touch(id(50), 4);
        assert_eq!(c.evict().map(|e| e.0), Some(id(20 + gone_at.unwrap())));
    }

    #[test]
    fn lru_evicts_the_least_recently_touched_whatever_its_size() {
        let mut c = Lru::new();
        c.touch(id(1), 10);
        c.touch(id(2), 1000);
        c.touch(id(3), 5);
        c.touch(id(1), 10); // hit: 1 becomes the most recent
        assert_eq!(c.len(), 3);
        assert_eq!(c.evict(), Some((id(2), 1000)));
        c.remove(&id(3));
        assert_eq!(c.evict(), Some((id(1), 10)));
        assert_eq!(c.evict(), None);
        assert!(c.is_empty());
    }

    #[test]
    fn each_policy_evicts_in_its_own_order() {
        // The same touches: a small object, then a large one that is hit again.
        let order = |policy| {
            let mut c = Cache::new(policy);
            c.touch(id(1), 10);
            c.touch(id(2), 1000);
            c.touch(id(2), 1000);
            std::iter::from_fn(|| c.evict().map(|e| e.0)).collect::<Vec<_>>()
        };
        // LRU: the small one was used longest ago; Off tracks demoted replicas the same way.
        assert_eq!(order(CachePolicy::Lru), vec![id(1), id(2)]);
        assert_eq!(order(CachePolicy::Off), vec![id(1), id(2)]);
        // GreedyDual-Size: the large one is worth less (cost 1 over 1000 bytes) despite the hit.
        assert_eq!(order(CachePolicy::GreedyDualSize), vec![id(2), id(1)]);
        assert!(Cache::new(CachePolicy::Lru).admits());
        assert!(Cache::new(CachePolicy::GreedyDualSize).admits());
        assert!(!Cache::new(CachePolicy::Off).admits());
        assert_eq!(CachePolicy::default(), CachePolicy::GreedyDualSize);
    }
}
