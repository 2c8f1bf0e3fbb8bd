//! Rate limits: a burst passes, then refuses and refills; the error says when to retry; bad rates are refused.

use std::sync::Arc;
use std::time::Duration;

use sandbox_security::{Error, ManualClock, RateLimiter};

fn refused(limiter: &RateLimiter, key: &str) -> anyhow::Result<Duration> {
    match limiter.check(key) {
        Err(Error::RateLimited {
            key: k,
            retry_after,
        }) if k == key => Ok(retry_after),
        other => anyhow::bail!("expected `{key}` to be rate limited, got {other:?}"),
    }
}

#[test]
fn burst_passes_then_refuses_then_refills() -> anyhow::Result<()> {
    let clock = Arc::new(ManualClock::new());
    let limiter = RateLimiter::with_clock(1.0, 3, clock.clone())?;
    for _ in 0..3 {
        limiter.check("alice")?;
    }
    assert_eq!(refused(&limiter, "alice")?, Duration::from_secs(1));
    limiter.check("bob")?; // keys are independent

    clock.advance(Duration::from_millis(500));
    assert_eq!(refused(&limiter, "alice")?, Duration::from_millis(500));
    clock.advance(Duration::from_millis(500));
    limiter.check("alice")?;
    assert_eq!(refused(&limiter, "alice")?, Duration::from_secs(1));

    // Refill is capped at the burst.
    clock.advance(Duration::from_secs(100));
    for _ in 0..3 {
        limiter.check("alice")?;
    }
    refused(&limiter, "alice")?;

    limiter.reset("alice");
    limiter.check("alice")?;
    Ok(())
}

#[test]
fn the_error_says_when_to_retry() -> anyhow::Result<()> {
    let clock = Arc::new(ManualClock::new());
    let limiter = RateLimiter::with_clock(4.0, 1, clock)?;
    limiter.check("k")?;
    let err = limiter.check("k").map(|_| ()).expect_err("second request");
    assert_eq!(
        err.to_string(),
        "rate limit for `k` exceeded; retry after 250 ms"
    );
    Ok(())
}

#[test]
fn invalid_rates_are_refused() {
    for (rate, burst) in [
        (0.0, 1),
        (-1.0, 1),
        (f64::NAN, 1),
        (f64::INFINITY, 1),
        (1.0, 0),
    ] {
        let result = RateLimiter::new(rate, burst);
        assert!(
            matches!(result, Err(Error::InvalidRate { .. })),
            "{rate} {burst}: {result:?}"
        );
    }
    assert!(RateLimiter::new(10.0, 5).is_ok());
}
