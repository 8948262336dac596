//! Logging through the host's `log` import from code that does not see the generated bindings:
//! the export macros install a sink (a plain function over the bindings) before each call.

use std::sync::OnceLock;

/// The contract's log severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// What the export macros install: the bindings' `host::log`.
pub type Sink = fn(Level, &str, &[(&str, &str)]);

static SINK: OnceLock<Sink> = OnceLock::new();

/// Installs the sink (the first one wins; a plugin has one set of bindings).
pub fn set_sink(sink: Sink) {
    let _ = SINK.set(sink);
}

/// Emits one record with extra key/value fields. Never pass a secret value: the host logs it
/// as given. Without a sink (unit tests on the build machine) the record is dropped.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    if let Some(sink) = SINK.get() {
        sink(level, message, fields);
    }
}

pub fn trace(message: &str, fields: &[(&str, &str)]) {
    log(Level::Trace, message, fields);
}

pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields);
}

pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields);
}

pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warn, message, fields);
}

pub fn error(message: &str, fields: &[(&str, &str)]) {
    log(Level::Error, message, fields);
}
