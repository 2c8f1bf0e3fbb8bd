//! The result cache of pure modules: LRU with a time to live.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
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
    hits: AtomicU64,
    misses: AtomicU64,
}

/// How often the result cache of pure modules answered a call
/// ([`Manager::result_cache_stats`](crate::Manager::result_cache_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Calls of a pure module answered from the cache.
    pub hits: u64,
    /// Calls of a pure module that ran (nothing cached, or expired).
    pub misses: u64,
}

impl crate::Manager {
    /// Hits and misses of the result cache of pure modules since the
    /// manager was built (calls of modules that are not pure count in
    /// neither; with the cache disabled every pure call is a miss).
    pub fn result_cache_stats(&self) -> CacheStats {
        let cache = &self.inner.results;
        CacheStats {
            hits: cache.hits.load(Ordering::Relaxed),
            misses: cache.misses.load(Ordering::Relaxed),
        }
    }
}

impl ResultCache {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
            ttl,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
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

    /// The cached answer for `key`, counted as a hit or a miss.
    pub(crate) fn get(&self, key: &Key) -> Option<Vec<u8>> {
        let found = self.lookup(key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn lookup(&self, key: &Key) -> Option<Vec<u8>> {
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

    #[test]
    fn lookups_are_counted() {
        let cache = ResultCache::new(2, Duration::from_secs(3600));
        let k = ResultCache::key(1, "m", 1, b"x");
        assert_eq!(cache.get(&k), None);
        cache.put(k.clone(), b"y".to_vec());
        assert!(cache.get(&k).is_some());
        assert!(cache.get(&k).is_some());
        assert_eq!(cache.hits.load(Ordering::Relaxed), 2);
        assert_eq!(cache.misses.load(Ordering::Relaxed), 1);
    }
}
