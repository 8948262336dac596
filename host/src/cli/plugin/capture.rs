//! Records the tracing events emitted on this thread while a plugin call runs: the plugin's own
//! `log` calls (target warren::plugin) and the host's notes about it (a refused HTTP request...).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};

/// One recorded event.
#[derive(Debug, Clone)]
pub struct Event {
    /// `log` for the plugin's own records, `host` for the host's.
    pub source: &'static str,
    pub level: tracing::Level,
    pub message: String,
    /// `key=value` pairs, space separated.
    pub fields: String,
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(
                self.rest,
                "{}{}={value:?}",
                if self.rest.is_empty() { "" } else { " " },
                field.name()
            );
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ =
                write!(self.rest, "{}{}={value}", if self.rest.is_empty() { "" } else { " " }, field.name());
        }
    }
}

struct Recorder(Arc<Mutex<Vec<Event>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let meta = event.metadata();
        let source_is_plugin = meta.target() == "warren::plugin";
        // The host's trace records (call/return of every export) say nothing the result does not.
        if !source_is_plugin && *meta.level() == tracing::Level::TRACE {
            return;
        }
        let source = if meta.target() == "warren::plugin" { "log" } else { "host" };
        let e = Event { source, level: *meta.level(), message: f.message, fields: f.rest };
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }
}

/// Runs `f` with every event at trace level and above recorded instead of printed.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<Event>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Recorder(events.clone()));
    let r = tracing::subscriber::with_default(subscriber, f);
    let events = events.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (r, events)
}
