//! A `tracing` subscriber inside the worker that sends every event to the
//! host, which emits it under the sandbox's id.

use std::fmt::Write as _;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

use super::Outbox;
use crate::process::log::level;
use crate::process::wire::FromWorker;

/// Forwards events at or above a level to the host; spans are dropped.
pub(crate) struct Forward {
    outbox: Arc<Outbox>,
    /// Most verbose level forwarded (see [`level`]); above
    /// [`level::TRACE`]: none.
    max: u8,
}

impl Forward {
    pub(crate) fn new(outbox: Arc<Outbox>, max: u8) -> Self {
        Self { outbox, max }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    module: Option<String>,
    extra: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "module" => self.module = Some(value.to_owned()),
            "sandbox" => {}
            name => {
                let _ = write!(self.extra, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "module" => self.module = Some(format!("{value:?}")),
            "sandbox" => {}
            name => {
                let _ = write!(self.extra, " {name}={value:?}");
            }
        }
    }
}

impl Subscriber for Forward {
    fn register_callsite(&self, _metadata: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && level::of(metadata.level()) <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match self.max {
            level::ERROR => LevelFilter::ERROR,
            level::WARN => LevelFilter::WARN,
            level::INFO => LevelFilter::INFO,
            level::DEBUG => LevelFilter::DEBUG,
            level::TRACE => LevelFilter::TRACE,
            _ => LevelFilter::OFF,
        })
    }

    fn new_span(&self, _span: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _span: &span::Id, _values: &span::Record<'_>) {}

    fn record_follows_from(&self, _span: &span::Id, _follows: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        fields.message.push_str(&fields.extra);
        self.outbox.send(&FromWorker::Log {
            level: level::of(event.metadata().level()),
            module: fields.module,
            target: event.metadata().target().to_owned(),
            message: fields.message,
        });
    }

    fn enter(&self, _span: &span::Id) {}

    fn exit(&self, _span: &span::Id) {}
}
