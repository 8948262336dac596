//! The plugin folder watcher: a thin shell over notify's debouncer. Changed paths go to a worker
//! thread that reloads them through the registry, so compiling never blocks the debouncer.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify::RecursiveMode;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use super::{PluginError, PluginRegistry};

/// Quiet period after the last change to a file before it is (re)loaded: long enough for a
/// copy in progress to finish writing.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// Opening or reading a file changes nothing, and the registry itself reads every file it
/// loads: reacting to those events would reload (and, for a refused file, retry) forever.
/// Closing after a write is kept: it marks a copy that has finished.
fn is_read_only(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}

enum Work {
    Paths(BTreeSet<PathBuf>),
    Rescan,
}

/// Keeps the folder watched; dropping it stops watching.
pub struct PluginWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl PluginRegistry {
    /// Watches the plugin folder (created if missing): new, replaced and removed `.wasm` files
    /// are loaded, swapped and unloaded. Call `load_dir` first for the files already there.
    pub fn watch(self: &Arc<Self>) -> Result<PluginWatcher, PluginError> {
        let dir = self.settings().plugin_dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| PluginError::Io { path: dir.display().to_string(), source: e })?;
        let (tx, rx) = mpsc::channel::<Work>();
        let weak: Weak<PluginRegistry> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("warren-plugin-watch".into())
            .spawn(move || {
                // Ends when the debouncer (and so `tx`) is dropped, or the registry is gone.
                while let Ok(work) = rx.recv() {
                    let Some(registry) = weak.upgrade() else { break };
                    match work {
                        Work::Paths(paths) => registry.refresh_paths(paths.iter().map(PathBuf::as_path)),
                        Work::Rescan => {
                            if let Err(e) = registry.load_dir() {
                                tracing::error!(error = %e, "plugin folder rescan failed");
                            }
                        }
                    }
                }
            })
            .map_err(|e| PluginError::Watch(format!("cannot start the watcher thread: {e}")))?;
        let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| match result {
            Ok(events) => {
                let mut paths = BTreeSet::new();
                let mut rescan = false;
                for ev in events {
                    rescan |= ev.need_rescan();
                    if is_read_only(&ev.event.kind) {
                        continue;
                    }
                    paths.extend(ev.event.paths.iter().cloned());
                }
                if rescan {
                    let _ = tx.send(Work::Rescan);
                } else if !paths.is_empty() {
                    let _ = tx.send(Work::Paths(paths));
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::warn!(error = %e, "plugin folder watch error");
                }
                let _ = tx.send(Work::Rescan);
            }
        })
        .map_err(|e| PluginError::Watch(e.to_string()))?;
        debouncer
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| PluginError::Watch(format!("{}: {e}", dir.display())))?;
        Ok(PluginWatcher { _debouncer: debouncer })
    }
}
