//! Resource monitoring for sandboxes: usage sampling (memory, CPU, threads,
//! child processes, open files, uptime), [`ResourceLimits`], threshold
//! [`Alert`]s, the [`Enforcement`] action a host should take, and a bounded
//! history of samples per monitored process.
//!
//! Who uses it: `sandbox-core` samples each sandbox's host or worker process
//! through the [`Monitor`] trait; a library consumer can use the crate alone to
//! watch any process. The default backend, [`ProcMonitor`], reads `/proc`
//! (Linux); [`NoopMonitor`] measures nothing.
//!
//! This crate measures and reports; it does not enforce. Kernel-enforced
//! limits (rlimits, namespaces) belong to the isolation crate, and acting on an
//! [`Enforcement`] belongs to the host.
//!
//! ```
//! use sandbox_monitor::{AlertLevel, EnforcementPolicy, Enforcement, Monitor, ProcMonitor, ResourceLimits};
//!
//! let monitor = ProcMonitor::new();
//! let limits = ResourceLimits { memory_bytes: Some(1), ..ResourceLimits::default() };
//! monitor.register("me", std::process::id(), limits)?;
//! monitor.sample("me")?;
//! let alerts = monitor.alerts("me")?;
//! assert!(alerts.iter().any(|a| a.level == AlertLevel::Exceeded));
//! assert_eq!(EnforcementPolicy::default().action_for_all(&alerts), Enforcement::Kill);
//! # Ok::<(), sandbox_monitor::Error>(())
//! ```

mod error;
mod limits;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod proc;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::SystemTime;

pub use error::{Error, Result};
pub use limits::{
    defaults, Alert, AlertLevel, Enforcement, EnforcementPolicy, Limit, ResourceLimits, Usage,
    DEFAULT_WARNING_FRACTION,
};
#[cfg(any(target_os = "linux", target_os = "android"))]
pub use proc::{ProcMonitor, DEFAULT_HISTORY_LEN};

/// Samples the resource usage of registered processes and checks it against
/// their limits.
///
/// A process is tracked under a caller-chosen key (a sandbox id, say).
///
/// Required methods, and when the host calls them:
/// - [`register`](Monitor::register) once the sandbox's process runs, with its
///   limits;
/// - [`sample`](Monitor::sample) periodically (or before and after a call):
///   measure now, append to the key's bounded history, and evaluate the limits;
/// - [`alerts`](Monitor::alerts) after a sample, to act on the alerts it raised
///   (see [`EnforcementPolicy`]);
/// - [`history`](Monitor::history) when someone asks how the sandbox has been
///   doing;
/// - [`unregister`](Monitor::unregister) when the process stops or is
///   replaced.
///
/// Provided methods: [`set_limits`](Monitor::set_limits) (when a sandbox's
/// limits change; unsupported unless overridden) and [`keys`](Monitor::keys)
/// (empty unless overridden).
///
/// Implementations must be usable from several threads at once.
///
/// # A whole implementation
///
/// A monitor that hands out usage fed to it by the caller (a worker process
/// that reports its own usage, say):
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use std::time::SystemTime;
/// use sandbox_monitor::{Alert, Error, Monitor, ResourceLimits, Result, Usage};
///
/// #[derive(Debug, Default)]
/// struct Reported {
///     // key -> (limits, latest usage, alerts)
///     keys: Mutex<HashMap<String, (ResourceLimits, Vec<(SystemTime, Usage)>, Vec<Alert>)>>,
/// }
///
/// impl Reported {
///     fn report(&self, key: &str, usage: Usage) {
///         if let Some((_, history, _)) = self.keys.lock().unwrap().get_mut(key) {
///             history.push((SystemTime::now(), usage));
///         }
///     }
/// }
///
/// impl Monitor for Reported {
///     fn register(&self, key: &str, _pid: u32, limits: ResourceLimits) -> Result<()> {
///         limits.validate()?;
///         self.keys.lock().unwrap().insert(key.to_owned(), (limits, Vec::new(), Vec::new()));
///         Ok(())
///     }
///     fn unregister(&self, key: &str) -> Result<()> {
///         let removed = self.keys.lock().unwrap().remove(key);
///         removed.map(drop).ok_or_else(|| Error::UnknownKey { key: key.to_owned() })
///     }
///     fn sample(&self, key: &str) -> Result<Usage> {
///         let mut keys = self.keys.lock().unwrap();
///         let (limits, history, alerts) =
///             keys.get_mut(key).ok_or_else(|| Error::UnknownKey { key: key.to_owned() })?;
///         let usage = history.last().map(|(_, u)| *u).unwrap_or_default();
///         *alerts = limits.evaluate(key, &usage, 0.8);
///         Ok(usage)
///     }
///     fn history(&self, key: &str) -> Result<Vec<(SystemTime, Usage)>> {
///         let keys = self.keys.lock().unwrap();
///         keys.get(key).map(|k| k.1.clone()).ok_or_else(|| Error::UnknownKey { key: key.to_owned() })
///     }
///     fn alerts(&self, key: &str) -> Result<Vec<Alert>> {
///         let keys = self.keys.lock().unwrap();
///         keys.get(key).map(|k| k.2.clone()).ok_or_else(|| Error::UnknownKey { key: key.to_owned() })
///     }
/// }
///
/// let monitor = Reported::default();
/// monitor.register("worker", 0, ResourceLimits { threads: Some(4), ..ResourceLimits::unlimited() })?;
/// monitor.report("worker", Usage { threads: 8, ..Usage::default() });
/// assert_eq!(monitor.sample("worker")?.threads, 8);
/// assert_eq!(monitor.alerts("worker")?.len(), 1);
/// assert!(monitor.set_limits("worker", ResourceLimits::default()).is_err()); // not overridden
/// # Ok::<(), Error>(())
/// ```
pub trait Monitor: Send + Sync + Debug {
    /// Starts tracking process `pid` under `key`, checking it against `limits`.
    fn register(&self, key: &str, pid: u32, limits: ResourceLimits) -> Result<()>;

    /// Stops tracking `key` and forgets its history.
    fn unregister(&self, key: &str) -> Result<()>;

    /// Measures `key`'s process now, appends the sample to its history, and
    /// evaluates its limits (see [`alerts`](Monitor::alerts)).
    fn sample(&self, key: &str) -> Result<Usage>;

    /// The retained samples of `key`, oldest first.
    fn history(&self, key: &str) -> Result<Vec<(SystemTime, Usage)>>;

    /// The alerts raised by `key`'s latest sample (empty before the first).
    fn alerts(&self, key: &str) -> Result<Vec<Alert>>;

    /// Replaces the limits of `key`. Unsupported unless overridden.
    fn set_limits(&self, key: &str, limits: ResourceLimits) -> Result<()> {
        let _ = (key, limits);
        Err(Error::Unsupported {
            operation: "changing limits",
        })
    }

    /// The registered keys. Empty unless overridden.
    fn keys(&self) -> Vec<String> {
        Vec::new()
    }
}

macro_rules! forward {
    ($($ty:ty),*) => {$(
        impl<T: Monitor + ?Sized> Monitor for $ty {
            fn register(&self, key: &str, pid: u32, limits: ResourceLimits) -> Result<()> {
                (**self).register(key, pid, limits)
            }
            fn unregister(&self, key: &str) -> Result<()> {
                (**self).unregister(key)
            }
            fn sample(&self, key: &str) -> Result<Usage> {
                (**self).sample(key)
            }
            fn history(&self, key: &str) -> Result<Vec<(SystemTime, Usage)>> {
                (**self).history(key)
            }
            fn alerts(&self, key: &str) -> Result<Vec<Alert>> {
                (**self).alerts(key)
            }
            fn set_limits(&self, key: &str, limits: ResourceLimits) -> Result<()> {
                (**self).set_limits(key, limits)
            }
            fn keys(&self) -> Vec<String> {
                (**self).keys()
            }
        }
    )*};
}

forward!(Box<T>, Arc<T>, &T);

/// A monitor that measures nothing: every call succeeds, samples are
/// [`Usage::default()`], history and alerts are empty.
///
/// For hosts that do not want monitoring, and for platforms without `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopMonitor;

impl Monitor for NoopMonitor {
    fn register(&self, _key: &str, _pid: u32, _limits: ResourceLimits) -> Result<()> {
        Ok(())
    }
    fn unregister(&self, _key: &str) -> Result<()> {
        Ok(())
    }
    fn sample(&self, _key: &str) -> Result<Usage> {
        Ok(Usage::default())
    }
    fn history(&self, _key: &str) -> Result<Vec<(SystemTime, Usage)>> {
        Ok(Vec::new())
    }
    fn alerts(&self, _key: &str) -> Result<Vec<Alert>> {
        Ok(Vec::new())
    }
    fn set_limits(&self, _key: &str, _limits: ResourceLimits) -> Result<()> {
        Ok(())
    }
}
