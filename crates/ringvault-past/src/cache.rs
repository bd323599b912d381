//! GreedyDual-Size replacement for cached copies (Cao and Irani): each cached object has a value
//! H = L + cost / size; the lowest H is evicted first and L rises to it, so small objects and
//! recently used ones stay. Cost is 1 for every object (maximising hit rate).

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
}
