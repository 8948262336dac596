//! The plugin folder watcher: a subscriber of the supervisor's file-watch service. Changed
//! paths go to a worker thread that reloads them through the registry, so compiling never
//! holds up the events of other subscribers.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{PluginError, PluginRegistry};
use crate::watch::{FileWatch, RecursiveMode, Spec, Subscriber};

/// Quiet period after the last change in the folder before it is (re)loaded: long enough for
/// a copy in progress to finish writing.
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// A folder that never goes quiet is still followed; a file caught mid-copy then is refused
/// once and loaded when its copy finishes (the end of a write is an event too).
const MAX_DELAY: Duration = Duration::from_millis(2500);

/// Keeps the folder watched; dropping it stops watching (and ends the worker thread).
pub struct PluginWatcher {
    _subscriber: Subscriber,
}

impl PluginRegistry {
    /// Watches the plugin folder (created if missing) through `files`: new, replaced and
    /// removed `.wasm` files are loaded, swapped and unloaded, each burst of changes as one
    /// batch (removals first, see `refresh_paths`). Call `load_dir` first for the files
    /// already there.
    pub fn watch(self: &Arc<Self>, files: &FileWatch) -> Result<PluginWatcher, PluginError> {
        let dir = self.settings().plugin_dir.clone();
        crate::fsutil::create_private_dir(&dir)
            .map_err(|e| PluginError::Io { path: dir.display().to_string(), source: e })?;
        // Reads are ignored: the registry reads every file it loads, and reacting to that
        // would reload (and, for a refused file, retry) forever.
        let spec =
            Spec { name: "plugin folder", debounce: DEBOUNCE, max_delay: MAX_DELAY, ignore_reads: true };
        let (subscriber, rx) = files.subscribe_std(spec);
        subscriber.watch(&dir, RecursiveMode::NonRecursive).map_err(|e| PluginError::Watch(e.to_string()))?;
        let weak: Weak<PluginRegistry> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("warren-plugin-watch".into())
            .spawn(move || {
                // Ends when the subscriber (and so the sending side) is dropped, or the
                // registry is gone.
                while let Ok(batch) = rx.recv() {
                    let Some(registry) = weak.upgrade() else { break };
                    if batch.rescan {
                        if let Err(e) = registry.load_dir() {
                            tracing::error!(error = %e, "plugin folder rescan failed");
                        }
                    } else if !batch.paths.is_empty() {
                        registry.refresh_paths(batch.paths.iter().map(PathBuf::as_path));
                    }
                }
            })
            .map_err(|e| PluginError::Watch(format!("cannot start the watcher thread: {e}")))?;
        Ok(PluginWatcher { _subscriber: subscriber })
    }
}
