//! Log forwarding: what the worker sends as `tracing` events (its own and
//! its plugins') and what it writes to stdout and stderr, emitted on the
//! host under the sandbox's id.
//!
//! Levels cross the channel as numbers ([`level`]): the host sends the most
//! verbose one it wants ([`wanted`]), the worker tags each event with its
//! own ([`level::of`]).

use tracing::level_filters::LevelFilter;

/// The target of events a plugin logged (through its `Host`).
pub(crate) const PLUGIN_TARGET: &str = "sandbox::plugin";
/// The target of everything else a worker logs or writes.
pub(crate) const WORKER_TARGET: &str = "sandbox::worker";
/// Longest line of worker output emitted as one event.
const MAX_LINE: usize = 4 << 10;

/// `tracing` levels as numbers on the wire, most severe first.
pub(crate) mod level {
    use tracing::Level;

    /// [`Level::ERROR`].
    pub(crate) const ERROR: u8 = 0;
    /// [`Level::WARN`].
    pub(crate) const WARN: u8 = 1;
    /// [`Level::INFO`].
    pub(crate) const INFO: u8 = 2;
    /// [`Level::DEBUG`].
    pub(crate) const DEBUG: u8 = 3;
    /// [`Level::TRACE`] (and, received, anything above it).
    pub(crate) const TRACE: u8 = 4;
    /// As the most verbose level wanted: none at all.
    pub(crate) const OFF: u8 = 5;

    /// `level`'s number.
    pub(crate) fn of(level: &Level) -> u8 {
        match *level {
            Level::ERROR => ERROR,
            Level::WARN => WARN,
            Level::INFO => INFO,
            Level::DEBUG => DEBUG,
            Level::TRACE => TRACE,
        }
    }
}

/// The most verbose level the host's subscriber wants, as a wire number.
pub(super) fn wanted() -> u8 {
    match LevelFilter::current() {
        LevelFilter::OFF => level::OFF,
        LevelFilter::ERROR => level::ERROR,
        LevelFilter::WARN => level::WARN,
        LevelFilter::INFO => level::INFO,
        LevelFilter::DEBUG => level::DEBUG,
        _ => level::TRACE,
    }
}

/// Emits an event the worker forwarded, at its level, under
/// [`PLUGIN_TARGET`] when a plugin logged it, else [`WORKER_TARGET`].
pub(super) fn forward(sandbox: &str, level: u8, module: Option<&str>, target: &str, message: &str) {
    let module = module.unwrap_or("");
    macro_rules! emit {
        ($target:expr) => {
            match level {
                level::ERROR => tracing::error!(target: $target, sandbox, module, "{message}"),
                level::WARN => tracing::warn!(target: $target, sandbox, module, "{message}"),
                level::INFO => tracing::info!(target: $target, sandbox, module, "{message}"),
                level::DEBUG => tracing::debug!(target: $target, sandbox, module, "{message}"),
                _ => tracing::trace!(target: $target, sandbox, module, "{message}"),
            }
        };
    }
    if target == PLUGIN_TARGET {
        emit!(PLUGIN_TARGET)
    } else {
        emit!(WORKER_TARGET)
    }
}

/// One of the worker's output streams cut into lines, each emitted as an
/// event (a line longer than 4 KiB is cut there): stdout at `info`, stderr
/// at `warn`.
pub(super) struct Lines {
    stderr: bool,
    partial: Vec<u8>,
}

impl Lines {
    /// Lines of stderr (`true`) or stdout.
    pub(super) fn new(stderr: bool) -> Self {
        Self {
            stderr,
            partial: Vec::new(),
        }
    }

    /// Emits every whole line `chunk` completes; keeps the rest.
    pub(super) fn push(&mut self, sandbox: &str, chunk: &[u8]) {
        self.partial.extend_from_slice(chunk);
        while let Some(pos) = self
            .partial
            .iter()
            .position(|b| *b == b'\n')
            .or((self.partial.len() > MAX_LINE).then_some(MAX_LINE))
        {
            let text: Vec<u8> = self.partial.drain(..=pos).collect();
            self.emit(sandbox, &text);
        }
    }

    /// The stream closed: emits what is left of its last line.
    pub(super) fn finish(self, sandbox: &str) {
        if !self.partial.is_empty() {
            self.emit(sandbox, &self.partial);
        }
    }

    fn emit(&self, sandbox: &str, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        if self.stderr {
            tracing::warn!(target: WORKER_TARGET, sandbox, stream = "stderr", "{text}");
        } else {
            tracing::info!(target: WORKER_TARGET, sandbox, stream = "stdout", "{text}");
        }
    }
}
