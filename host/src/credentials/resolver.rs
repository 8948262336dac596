//! The resolver shell: one thread drives the pure `CredentialStore` — resolves what is due
//! through the plugin registry, watches the parent directories of watch hints through the
//! supervisor's file-watch service, wakes for TTLs and retries, retries failures when plugins
//! change, and publishes new values on tokio watch channels.

use crate::clock::unix_now;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::store::{CredentialStatus, CredentialStore, CredentialValue, Failure, Update};
use super::{ResolveError, resolve_once};
use crate::plugins::PluginRegistry;
use crate::watch::{Batch, FileWatch, RecursiveMode, Spec, Subscriber};

/// Longest sleep between checks (plugin changes, missing watch dirs that may appear).
const MAX_IDLE: Duration = Duration::from_millis(500);
/// Gathers a burst of file events (write + rename + chmod) into one resolution: resolve once
/// no event came for EVENT_SETTLE, or at the latest EVENT_SETTLE_MAX after the first (the
/// file-watch service does the gathering).
const EVENT_SETTLE: Duration = Duration::from_millis(40);
const EVENT_SETTLE_MAX: Duration = Duration::from_millis(400);

enum Msg {
    Wake,
    Changed(Batch),
    Stop,
}

struct Inner {
    registry: Arc<PluginRegistry>,
    store: Mutex<CredentialStore>,
    channels: Mutex<BTreeMap<String, watch::Sender<Option<CredentialValue>>>>,
}

impl Inner {
    fn publish(&self, u: Update) {
        let mut ch = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let tx = ch.entry(u.reference).or_insert_with(|| watch::Sender::new(None));
        tx.send_replace(Some(u.value));
    }
}

pub struct CredentialResolver {
    inner: Arc<Inner>,
    tx: mpsc::Sender<Msg>,
}

impl CredentialResolver {
    /// Starts the resolver thread, watching through `files`. It stops when the resolver is
    /// dropped.
    pub fn start(registry: Arc<PluginRegistry>, files: &FileWatch) -> Result<Self, ResolveError> {
        let inner = Arc::new(Inner {
            registry,
            store: Mutex::new(CredentialStore::new(crate::crypto::sodium::random_array())),
            channels: Mutex::new(BTreeMap::new()),
        });
        let (tx, rx) = mpsc::channel();
        let events_tx = tx.clone();
        // Reads are ignored: resolving reads the file, which must not trigger another round.
        let spec = Spec {
            name: "credentials",
            debounce: EVENT_SETTLE,
            max_delay: EVENT_SETTLE_MAX,
            ignore_reads: true,
        };
        let subscriber = files.subscribe(spec, move |batch| events_tx.send(Msg::Changed(batch)).is_ok());
        let thread_inner = inner.clone();
        std::thread::Builder::new()
            .name("warren-credentials".into())
            .spawn(move || run(thread_inner, rx, subscriber))
            .map_err(|e| ResolveError::Watch(format!("cannot start the resolver thread: {e}")))?;
        Ok(CredentialResolver { inner, tx })
    }

    /// Registers `reference` for the config key `label` and subscribes to its value. The
    /// receiver holds `None` until the first successful resolution; later values arrive
    /// without a restart.
    pub fn subscribe(&self, label: &str, reference: &str) -> watch::Receiver<Option<CredentialValue>> {
        let update =
            self.inner.store.lock().unwrap_or_else(|p| p.into_inner()).add(reference, label, Instant::now());
        let rx = {
            let mut ch = self.inner.channels.lock().unwrap_or_else(|p| p.into_inner());
            let tx = ch.entry(reference.to_string()).or_insert_with(|| watch::Sender::new(None));
            if let Some(u) = update {
                tx.send_replace(Some(u.value));
            }
            tx.subscribe()
        };
        let _ = self.tx.send(Msg::Wake);
        rx
    }

    /// The current value of a registered reference.
    pub fn current(&self, reference: &str) -> Option<CredentialValue> {
        self.inner.store.lock().unwrap_or_else(|p| p.into_inner()).current(reference)
    }

    pub fn status(&self) -> Vec<CredentialStatus> {
        self.inner.store.lock().unwrap_or_else(|p| p.into_inner()).status()
    }

    /// The body of `GET /credentials`: version, fingerprint and last error of each reference.
    pub fn credentials_json(&self) -> serde_json::Value {
        serde_json::json!({ "credentials": self.status() })
    }
}

impl Drop for CredentialResolver {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

fn run(inner: Arc<Inner>, rx: mpsc::Receiver<Msg>, watcher: Subscriber) {
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    let mut plugins = inner.registry.subscribe();
    loop {
        // Resolve whatever is due, outside the store lock (plugin calls can take a while).
        let due = inner.store.lock().unwrap_or_else(|p| p.into_inner()).due(Instant::now());
        for reference in due {
            let outcome = resolve_once(&inner.registry, &reference).map_err(|e| Failure {
                retry: !matches!(e, ResolveError::InvalidReference(_)),
                message: e.to_string(),
            });
            if let Err(e) = &outcome {
                tracing::warn!(reference = %crate::credentials::Reference::parse(&reference).display(), error = %e.message, "credential not resolved");
            }
            let update = inner.store.lock().unwrap_or_else(|p| p.into_inner()).apply(
                &reference,
                outcome,
                Instant::now(),
                unix_now(),
            );
            if let Some(u) = update {
                tracing::info!(reference = %crate::credentials::Reference::parse(&u.reference).display(), version = u.value.version, fingerprint = %u.value.fingerprint, "credential updated");
                inner.publish(u);
            }
        }
        // Follow the watch hints: watch parent directories, since files are often replaced.
        let want = inner.store.lock().unwrap_or_else(|p| p.into_inner()).watch_dirs();
        for gone in watched.difference(&want).cloned().collect::<Vec<_>>() {
            watcher.unwatch(&gone);
            watched.remove(&gone);
        }
        let mut new_watches = false;
        for dir in want.difference(&watched).cloned().collect::<Vec<_>>() {
            // A missing directory is retried on the next round.
            if watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok() {
                // A change between the resolution and this watch would be missed: resolve
                // once more now that the watch is in place (no version bump if unchanged).
                inner.store.lock().unwrap_or_else(|p| p.into_inner()).path_changed(&dir);
                watched.insert(dir);
                new_watches = true;
            }
        }
        if new_watches {
            continue;
        }
        let next = inner.store.lock().unwrap_or_else(|p| p.into_inner()).next_deadline();
        let wait = next.map_or(MAX_IDLE, |t| t.saturating_duration_since(Instant::now())).min(MAX_IDLE);
        match rx.recv_timeout(wait) {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Msg::Wake) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Msg::Changed(batch)) => {
                let mut store = inner.store.lock().unwrap_or_else(|p| p.into_inner());
                for p in &batch.paths {
                    store.path_changed(p);
                }
                if batch.rescan {
                    // Events were lost: everything under the watched folders may have changed.
                    for dir in &watched {
                        store.path_changed(dir);
                    }
                }
            }
        }
        if plugins.has_changed().unwrap_or(false) {
            plugins.borrow_and_update();
            inner.store.lock().unwrap_or_else(|p| p.into_inner()).plugins_changed();
        }
    }
}
