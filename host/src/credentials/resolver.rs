//! The resolver shell: one thread drives the pure `CredentialStore` — resolves what is due
//! through the plugin registry, watches the parent directories of watch hints with notify,
//! wakes for TTLs and retries, retries failures when plugins change, and publishes new values
//! on tokio watch channels.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::watch;

use super::store::{CredentialStatus, CredentialStore, CredentialValue, Failure, Update};
use super::{ResolveError, resolve_once};
use crate::plugins::PluginRegistry;

/// Longest sleep between checks (plugin changes, missing watch dirs that may appear).
const MAX_IDLE: Duration = Duration::from_millis(500);
/// Gathers a burst of file events (write + rename + chmod) into one resolution: resolve once
/// no event came for EVENT_SETTLE, or at the latest EVENT_SETTLE_MAX after the first.
const EVENT_SETTLE: Duration = Duration::from_millis(40);
const EVENT_SETTLE_MAX: Duration = Duration::from_millis(400);

enum Msg {
    Wake,
    Paths(Vec<PathBuf>),
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

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl CredentialResolver {
    /// Starts the resolver thread. It stops when the resolver is dropped.
    pub fn start(registry: Arc<PluginRegistry>) -> Result<Self, ResolveError> {
        let inner = Arc::new(Inner {
            registry,
            store: Mutex::new(CredentialStore::new(crate::crypto::sodium::random_array())),
            channels: Mutex::new(BTreeMap::new()),
        });
        let (tx, rx) = mpsc::channel();
        let events_tx = tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                let _ = events_tx.send(Msg::Paths(ev.paths));
            }
            Err(e) => tracing::warn!(error = %e, "credential watch error"),
        })
        .map_err(|e| ResolveError::Watch(e.to_string()))?;
        let thread_inner = inner.clone();
        std::thread::Builder::new()
            .name("warren-credentials".into())
            .spawn(move || run(thread_inner, rx, watcher))
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

fn run(inner: Arc<Inner>, rx: mpsc::Receiver<Msg>, mut watcher: notify::RecommendedWatcher) {
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
            let _ = watcher.unwatch(&gone);
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
        let mut changed_paths = Vec::new();
        match rx.recv_timeout(wait) {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Msg::Wake) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Msg::Paths(p)) => {
                changed_paths.extend(p);
                // Debounce: wait until the burst (write, rename, chmod) has been quiet for
                // EVENT_SETTLE, bounded so a file rewritten nonstop is still followed.
                let until = Instant::now() + EVENT_SETTLE_MAX;
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(EVENT_SETTLE.min(left)) {
                        Ok(Msg::Paths(p)) => changed_paths.extend(p),
                        Ok(Msg::Wake) => {}
                        Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                        Err(RecvTimeoutError::Timeout) => break,
                    }
                    if left.is_zero() {
                        break;
                    }
                }
            }
        }
        if !changed_paths.is_empty() {
            let mut store = inner.store.lock().unwrap_or_else(|p| p.into_inner());
            for p in &changed_paths {
                store.path_changed(p);
            }
        }
        if plugins.has_changed().unwrap_or(false) {
            plugins.borrow_and_update();
            inner.store.lock().unwrap_or_else(|p| p.into_inner()).plugins_changed();
        }
    }
}
