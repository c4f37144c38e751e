//! A short-lived memory of tokens the API server accepted, so an agent asking for several
//! certificates in a row costs one `TokenReview`. Only positive results are kept, keyed by a
//! SHA-256 of (node, token): the token itself is never stored, and a hit only holds for the node
//! it was reviewed for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Beyond this many live entries nothing more is cached (the API server is asked instead).
const MAX_ENTRIES: usize = 10_000;

/// Digest of (node, token).
pub(crate) type CacheKey = [u8; 32];

/// The cache key of `token` presented for `node`.
pub(crate) fn cache_key(node: &str, token: &str) -> CacheKey {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(node.as_bytes());
    ctx.update(&[0]);
    ctx.update(token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// Accepted (node, token) digests with their expiry.
#[derive(Debug)]
pub(crate) struct ReviewCache {
    ttl: Duration,
    entries: Mutex<HashMap<CacheKey, Instant>>,
}

impl ReviewCache {
    /// Remembers acceptances for `ttl` (zero: never).
    pub(crate) fn new(ttl: Duration) -> Self {
        ReviewCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` was accepted less than the TTL ago.
    pub(crate) fn hit(&self, key: &CacheKey) -> bool {
        let now = Instant::now();
        self.lock().get(key).is_some_and(|expiry| *expiry > now)
    }

    /// Remembers that `key` was accepted now.
    pub(crate) fn insert(&self, key: CacheKey) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, expiry| *expiry > now);
        if entries.len() < MAX_ENTRIES {
            entries.insert(key, now + self.ttl);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Instant>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_node_and_token() {
        assert_eq!(cache_key("n1", "t"), cache_key("n1", "t"));
        assert_ne!(cache_key("n1", "t"), cache_key("n2", "t"));
        assert_ne!(cache_key("n1", "t"), cache_key("n1", "u"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(cache_key("ab", "c"), cache_key("a", "bc"));
    }

    #[tokio::test]
    async fn entries_expire_and_zero_ttl_caches_nothing() {
        let cache = ReviewCache::new(Duration::from_millis(50));
        let key = cache_key("n1", "t");
        assert!(!cache.hit(&key));
        cache.insert(key);
        assert!(cache.hit(&key));
        assert!(!cache.hit(&cache_key("n2", "t")));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(!cache.hit(&key));

        let never = ReviewCache::new(Duration::ZERO);
        never.insert(key);
        assert!(!never.hit(&key));
    }
}
