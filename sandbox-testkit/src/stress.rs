//! A stress runner: many concurrent calls, with throughput and latency.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a stress run measured.
#[derive(Debug, Clone)]
pub struct StressReport {
    /// Calls made.
    pub calls: usize,
    /// Calls that returned an error.
    pub failures: usize,
    /// The first few error messages.
    pub errors: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Calls per second.
    pub throughput: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Slowest call.
    pub max: Duration,
}

/// Runs `calls` calls of `f(i)` with at most `concurrency` in flight, on the
/// current tokio runtime, and reports how they went.
pub async fn run<F, Fut, E>(concurrency: usize, calls: usize, f: F) -> StressReport
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (f, next) = (Arc::clone(&f), Arc::clone(&next));
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= calls {
                    break;
                }
                let t = Instant::now();
                let r = f(i).await;
                latencies.push(t.elapsed());
                if let Err(e) = r {
                    errors.push(e.to_string());
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::with_capacity(calls);
    let mut errors = Vec::new();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((l, e)) => {
                latencies.extend(l);
                errors.extend(e);
            }
            Err(e) => errors.push(format!("a stress worker failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pick = |q: f64| {
        if latencies.is_empty() {
            Duration::ZERO
        } else {
            latencies[((latencies.len() - 1) as f64 * q).round() as usize]
        }
    };
    let failures = errors.len();
    errors.truncate(5);
    StressReport {
        calls: latencies.len(),
        failures,
        errors,
        elapsed,
        throughput: latencies.len() as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        p50: pick(0.5),
        p99: pick(0.99),
        max: latencies.last().copied().unwrap_or_default(),
    }
}
