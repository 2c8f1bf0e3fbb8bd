//! Token-bucket rate limiting per key.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::{Error, Result};

/// Buckets kept before full (idle) ones are dropped.
const PRUNE_ABOVE: usize = 4096;

/// A monotonic clock: the time elapsed since an arbitrary fixed origin.
///
/// [`MonotonicClock`] is the real one; [`ManualClock`] moves only when told,
/// so tests need no sleeps.
pub trait Clock: Send + Sync + Debug {
    /// The time since this clock's origin. Never decreases.
    fn now(&self) -> Duration;
}

/// The system's monotonic clock ([`Instant`]).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that stands still until [`ManualClock::advance`] is called.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: Mutex<Duration>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        *now = now.saturating_add(by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.lock()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
}

/// A token bucket per key: each key may make `burst` requests at once, then
/// `rate_per_sec` requests per second.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use sandbox_security::{Error, ManualClock, RateLimiter};
///
/// let clock = Arc::new(ManualClock::new());
/// let limiter = RateLimiter::with_clock(2.0, 1, clock.clone())?;
/// limiter.check("alice")?;
/// let Err(Error::RateLimited { retry_after, .. }) = limiter.check("alice") else {
///     panic!("the second request in a row must be refused")
/// };
/// assert_eq!(retry_after, Duration::from_millis(500));
/// clock.advance(retry_after);
/// limiter.check("alice")?;
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_sec: f64,
    burst: f64,
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Duration,
}

impl RateLimiter {
    /// A limiter on the [`MonotonicClock`]. `rate_per_sec` must be finite and
    /// above 0, `burst` at least 1.
    pub fn new(rate_per_sec: f64, burst: u32) -> Result<Self> {
        Self::with_clock(rate_per_sec, burst, Arc::new(MonotonicClock::default()))
    }

    /// A limiter on `clock`.
    pub fn with_clock(rate_per_sec: f64, burst: u32, clock: Arc<dyn Clock>) -> Result<Self> {
        if !(rate_per_sec.is_finite() && rate_per_sec > 0.0) {
            return Err(Error::InvalidRate {
                reason: format!("rate is {rate_per_sec} per second"),
            });
        }
        if burst == 0 {
            return Err(Error::InvalidRate {
                reason: "burst is 0, no request could pass".to_owned(),
            });
        }
        Ok(RateLimiter {
            rate_per_sec,
            burst: f64::from(burst),
            clock,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one token from `key`'s bucket, or refuses with
    /// [`Error::RateLimited`] saying when the next token is due.
    pub fn check(&self, key: &str) -> Result<()> {
        let now = self.clock.now();
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(key) && buckets.len() >= PRUNE_ABOVE {
            buckets.retain(|_, b| self.refilled(b, now) < self.burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate_per_sec;
            let retry_after = Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX);
            tracing::debug!(key, ?retry_after, "rate limited");
            Err(Error::RateLimited {
                key: key.to_owned(),
                retry_after,
            })
        }
    }

    /// Forgets `key`'s bucket (it starts full again).
    pub fn reset(&self, key: &str) {
        self.buckets.lock().remove(key);
    }

    fn refilled(&self, bucket: &Bucket, now: Duration) -> f64 {
        let elapsed = now.saturating_sub(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.rate_per_sec).min(self.burst)
    }
}
