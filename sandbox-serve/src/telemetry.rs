//! `/metrics`: what the service counts, through the `metrics` facade, and
//! its Prometheus text (`metrics-exporter-prometheus`).
//!
//! Counted as it happens: `sandbox_calls_total{sandbox,module}`,
//! `sandbox_call_duration_seconds{sandbox,module}` (histogram),
//! `sandbox_errors_total{kind}` (every error answer, by the error's kind).
//! From the manager's events: `sandbox_swaps_total{sandbox}` (a module
//! replaced by a newer or rolled-back version), `sandbox_rollbacks_total{sandbox,reason}`
//! (`manual`, or `failed_swap` for a batch undone), `sandbox_crashes_total{sandbox}`,
//! `sandbox_restarts_total{sandbox}`, `sandbox_compile_seconds` (histogram of
//! builds that ran cargo), `sandbox_build_cache_hits_total` and
//! `sandbox_build_cache_misses_total`. Read when scraped:
//! `sandbox_result_cache_hits_total` / `…_misses_total` (the result cache
//! of pure modules), `sandbox_sandboxes`, and per sandbox
//! `sandbox_memory_bytes{sandbox}` and `sandbox_cpu_percent{sandbox}` (of
//! the process hosting its modules: its worker, or the service itself
//! in-process).
//!
//! The recorder is process-wide (the facade has one): services started in
//! one process (tests) share it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sandbox_core::{Event, Manager};

/// The service's view of the process-wide recorder.
#[derive(Debug, Clone)]
pub(crate) struct Telemetry {
    handle: Option<PrometheusHandle>,
}

/// Latency buckets, in seconds: 10 µs to 60 s.
const BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the Prometheus recorder once per process (`None` when another
/// recorder was installed first: then `/metrics` says so).
fn handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

impl Telemetry {
    pub(crate) fn new() -> Self {
        let handle = handle();
        for (name, help) in [
            (
                "sandbox_calls_total",
                "module calls answered, by sandbox and module",
            ),
            ("sandbox_errors_total", "error answers, by error kind"),
            ("sandbox_swaps_total", "modules swapped to another version"),
            (
                "sandbox_rollbacks_total",
                "rollbacks: manual, or a failed swap batch undone",
            ),
            ("sandbox_crashes_total", "worker crashes"),
            (
                "sandbox_restarts_total",
                "sandbox restarts (by hand or after a crash)",
            ),
            (
                "sandbox_build_cache_hits_total",
                "builds answered from the build cache",
            ),
            ("sandbox_build_cache_misses_total", "builds that ran cargo"),
            (
                "sandbox_result_cache_hits_total",
                "calls of pure modules answered from the result cache",
            ),
            (
                "sandbox_result_cache_misses_total",
                "calls of pure modules that ran",
            ),
        ] {
            metrics::describe_counter!(name, help);
        }
        metrics::describe_histogram!(
            "sandbox_call_duration_seconds",
            metrics::Unit::Seconds,
            "time to answer a module call, as the service saw it"
        );
        metrics::describe_histogram!(
            "sandbox_compile_seconds",
            metrics::Unit::Seconds,
            "time of builds that ran cargo"
        );
        metrics::describe_gauge!("sandbox_sandboxes", "sandboxes hosted");
        metrics::describe_gauge!(
            "sandbox_memory_bytes",
            metrics::Unit::Bytes,
            "resident memory of the process hosting the sandbox's modules"
        );
        metrics::describe_gauge!(
            "sandbox_cpu_percent",
            "CPU use of the process hosting the sandbox's modules"
        );
        // Present from the start, so a scrape shows them at zero.
        counter!("sandbox_build_cache_hits_total").absolute(0);
        counter!("sandbox_build_cache_misses_total").absolute(0);
        Self { handle }
    }

    /// An error answer of `kind`.
    pub(crate) fn error(&self, kind: &str) {
        counter!("sandbox_errors_total", "kind" => kind.to_owned()).increment(1);
    }

    /// A call answered (successfully or not) after `took`.
    pub(crate) fn call(&self, sandbox: &str, module: &str, took: Duration) {
        let labels = [
            ("sandbox", sandbox.to_owned()),
            ("module", module.to_owned()),
        ];
        counter!("sandbox_calls_total", &labels).increment(1);
        histogram!("sandbox_call_duration_seconds", &labels).record(took.as_secs_f64());
    }

    /// Counts what an event reports.
    pub(crate) fn event(&self, event: &Event) {
        let v = sandbox_core::wire::event_object(event);
        let sandbox = event.sandbox.to_string();
        match v["event"].as_str().unwrap_or_default() {
            "swapped" if !v["from"].is_null() => {
                counter!("sandbox_swaps_total", "sandbox" => sandbox).increment(1)
            }
            "rollback" => {
                counter!("sandbox_rollbacks_total", "sandbox" => sandbox, "reason" => "manual")
                    .increment(1)
            }
            "rolled_back" => counter!(
                "sandbox_rollbacks_total", "sandbox" => sandbox, "reason" => "failed_swap"
            )
            .increment(1),
            "crashed" => counter!("sandbox_crashes_total", "sandbox" => sandbox).increment(1),
            "restarted" => counter!("sandbox_restarts_total", "sandbox" => sandbox).increment(1),
            "compile_finished" if v["ok"] == true => {
                if v["cached"] == true {
                    counter!("sandbox_build_cache_hits_total").increment(1);
                } else {
                    counter!("sandbox_build_cache_misses_total").increment(1);
                    let millis = v["millis"].as_f64().unwrap_or(0.0);
                    histogram!("sandbox_compile_seconds").record(millis / 1000.0);
                }
            }
            "destroyed" => {
                // Its gauges would stay at their last value otherwise.
                gauge!("sandbox_memory_bytes", "sandbox" => sandbox.clone()).set(0.0);
                gauge!("sandbox_cpu_percent", "sandbox" => sandbox).set(0.0);
            }
            _ => {}
        }
    }

    /// The Prometheus text, with the gauges read from `manager` now.
    pub(crate) fn render(&self, manager: &Manager) -> String {
        let stats = manager.result_cache_stats();
        counter!("sandbox_result_cache_hits_total").absolute(stats.hits);
        counter!("sandbox_result_cache_misses_total").absolute(stats.misses);
        let list = manager.list();
        gauge!("sandbox_sandboxes").set(list.len() as f64);
        for info in &list {
            if let Some(usage) = &info.usage {
                let sandbox = info.id.to_string();
                gauge!("sandbox_memory_bytes", "sandbox" => sandbox.clone())
                    .set(usage.memory_bytes as f64);
                gauge!("sandbox_cpu_percent", "sandbox" => sandbox).set(usage.cpu_percent);
            }
        }
        match &self.handle {
            Some(handle) => {
                handle.run_upkeep();
                handle.render()
            }
            None => "# another metrics recorder was installed in this process first\n".into(),
        }
    }
}
