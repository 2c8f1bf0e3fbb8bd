//! The result cache of pure modules: LRU with a time to live.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// What a cached answer is keyed by: the sandbox incarnation, the module,
/// its version and the request's digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    generation: u64,
    module: String,
    version: u32,
    request: [u8; 32],
}

/// An answer and when it was stored.
type Entry = (Instant, Vec<u8>);

#[derive(Debug)]
pub(crate) struct ResultCache {
    entries: Option<Mutex<LruCache<Key, Entry>>>,
    ttl: Duration,
}

impl ResultCache {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
            ttl,
        }
    }

    pub(crate) fn key(generation: u64, module: &str, version: u32, request: &[u8]) -> Key {
        Key {
            generation,
            module: module.to_owned(),
            version,
            request: Sha256::digest(request).into(),
        }
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Vec<u8>> {
        let mut entries = self.entries.as_ref()?.lock();
        match entries.get(key) {
            Some((at, value)) if at.elapsed() <= self.ttl => Some(value.clone()),
            Some(_) => {
                entries.pop(key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn put(&self, key: Key, value: Vec<u8>) {
        if let Some(entries) = &self.entries {
            entries.lock().put(key, (Instant::now(), value));
        }
    }

    /// Drops every entry of a destroyed sandbox.
    pub(crate) fn forget_generation(&self, generation: u64) {
        if let Some(entries) = &self.entries {
            let mut entries = entries.lock();
            let stale: Vec<Key> = entries
                .iter()
                .filter(|(k, _)| k.generation == generation)
                .map(|(k, _)| k.clone())
                .collect();
            for k in stale {
                entries.pop(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_are_bounded() {
        let cache = ResultCache::new(2, Duration::ZERO);
        let k = ResultCache::key(1, "m", 1, b"x");
        cache.put(k.clone(), b"y".to_vec());
        // A zero TTL: even an immediate read may be stale; a fresh cache with a long TTL must hit.
        let cache = ResultCache::new(2, Duration::from_secs(3600));
        cache.put(k.clone(), b"y".to_vec());
        assert_eq!(cache.get(&k), Some(b"y".to_vec()));
        cache.put(ResultCache::key(1, "m", 1, b"a"), vec![]);
        cache.put(ResultCache::key(1, "m", 1, b"b"), vec![]);
        assert_eq!(
            cache.get(&k),
            None,
            "capacity 2 evicts the least recently used"
        );
        cache.forget_generation(1);
        assert_eq!(cache.get(&ResultCache::key(1, "m", 1, b"b")), None);
    }

    #[test]
    fn disabled_cache_never_hits() {
        let cache = ResultCache::new(0, Duration::from_secs(60));
        let k = ResultCache::key(1, "m", 1, b"x");
        cache.put(k.clone(), b"y".to_vec());
        assert_eq!(cache.get(&k), None);
    }
}
