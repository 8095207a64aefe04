//! The objects a store has hashed whole and found intact, so ranges of them
//! can be served without hashing again. Bounded: a server that serves many
//! artifacts over months must not grow with them; a key pushed out is hashed
//! again on its next range request, which costs time, never correctness.

use std::collections::{HashMap, VecDeque};

/// How many objects are remembered (about 200 bytes each).
pub const CAPACITY: usize = 10_000;

#[derive(Debug)]
pub struct VerifiedKeys {
    /// key -> (sha256 it matched, size)
    seen: HashMap<String, (String, u64)>,
    /// Keys oldest first: the first goes when full.
    order: VecDeque<String>,
    capacity: usize,
}

impl Default for VerifiedKeys {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl VerifiedKeys {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The size of `key` if it was found to hash to `sha256`.
    pub fn get(&self, key: &str, sha256: &str) -> Option<u64> {
        self.seen
            .get(key)
            .filter(|(hash, _)| hash == sha256)
            .map(|&(_, size)| size)
    }

    pub fn insert(&mut self, key: &str, sha256: &str, size: u64) {
        let entry = (sha256.to_string(), size);
        if self.seen.insert(key.to_string(), entry).is_some() {
            return; // already in the order
        }
        self.order.push_back(key.to_string());
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
    }

    /// Forget `key` (its object was deleted). Linear in the keys held;
    /// deletes are rare next to reads.
    pub fn remove(&mut self, key: &str) {
        if self.seen.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_size_for_the_hash_it_matched_only() {
        let mut v = VerifiedKeys::with_capacity(4);
        v.insert("a", "h1", 10);
        assert_eq!(v.get("a", "h1"), Some(10));
        assert_eq!(
            v.get("a", "h2"),
            None,
            "another row's hash is not vouched for"
        );
        assert_eq!(v.get("b", "h1"), None);
    }

    #[test]
    fn the_oldest_key_goes_when_full() {
        let mut v = VerifiedKeys::with_capacity(2);
        v.insert("a", "ha", 1);
        v.insert("b", "hb", 2);
        v.insert("a", "ha", 1); // again: no second place in the order
        v.insert("c", "hc", 3);
        assert_eq!(v.len(), 2);
        assert_eq!(v.get("a", "ha"), None);
        assert_eq!(v.get("b", "hb"), Some(2));
        assert_eq!(v.get("c", "hc"), Some(3));
        for i in 0..100 {
            v.insert(&format!("k{i}"), "h", i);
        }
        assert_eq!(v.len(), 2, "never more than the capacity");
        assert_eq!(v.get("k99", "h"), Some(99));
        v.remove("k99");
        assert_eq!(v.get("k99", "h"), None);
        v.insert("k99", "h", 99);
        v.insert("z", "h", 0);
        assert_eq!(
            v.get("k99", "h"),
            Some(99),
            "re-inserted after removal: a fresh place"
        );
        assert_eq!(v.len(), 2);
    }
}
