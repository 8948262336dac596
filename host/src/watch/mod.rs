//! The supervisor's one file-watch service. Every part that follows files (the credential
//! resolver, the key cache watcher, the plugin folder watcher, later services) registers here
//! instead of opening an inotify instance of its own: the kernel allows 128 instances per user
//! by default (`fs.inotify.max_user_instances`), which a few dozen supervisors on one host used
//! to exhaust.
//!
//! One backend (one inotify instance, see `backend.rs`) holds every watch, reference-counted
//! by path; a router thread (`router.rs`) matches each event to the subscribers whose paths it
//! concerns, debounces per subscriber and delivers batches on the subscriber's own channel.
//! When inotify is unavailable or exhausted (EMFILE at init, ENOSPC when adding a watch), or
//! when `WARREN_WATCH=poll` asks for it, paths are polled instead (notify's PollWatcher,
//! every `WARREN_WATCH_POLL_INTERVAL`, default 1s), with one warning.

mod backend;
mod router;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use notify::RecursiveMode;

use backend::Backend;
use router::Router;

/// `auto` (default: inotify, polling only if it is unavailable or exhausted) or `poll`.
pub const MODE_ENV: &str = "WARREN_WATCH";
/// How often the polling fallback rescans its paths (e.g. `250ms`, `2s`).
pub const POLL_INTERVAL_ENV: &str = "WARREN_WATCH_POLL_INTERVAL";
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// inotify, falling back to polling when it is unavailable or exhausted.
    Auto,
    /// Poll every path (tests, or file systems inotify does not see, such as some network mounts).
    Poll,
}

#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    pub mode: Mode,
    pub poll_interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { mode: Mode::Auto, poll_interval: DEFAULT_POLL_INTERVAL }
    }
}

impl WatchOptions {
    /// `WARREN_WATCH` and `WARREN_WATCH_POLL_INTERVAL`; a value that does not parse is
    /// reported and the default used.
    pub fn from_env() -> Self {
        let mut o = WatchOptions::default();
        match std::env::var(MODE_ENV).ok().as_deref().map(str::trim) {
            None | Some("" | "auto" | "inotify") => {}
            Some("poll") => o.mode = Mode::Poll,
            Some(other) => tracing::warn!("{MODE_ENV}={other:?} is not auto or poll; using auto"),
        }
        if let Ok(text) = std::env::var(POLL_INTERVAL_ENV) {
            match parse_interval(&text) {
                Some(d) => o.poll_interval = d,
                None => tracing::warn!(
                    "{POLL_INTERVAL_ENV}={text:?} is not a duration from 10ms to 1h (e.g. 500ms, 2s); using {:?}",
                    o.poll_interval
                ),
            }
        }
        o
    }
}

/// `250ms`, `2s` or a bare number of milliseconds, from 10ms to one hour.
fn parse_interval(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (num, ms_per_unit) = match t.strip_suffix("ms") {
        Some(n) => (n, 1.0),
        None => t.strip_suffix('s').map_or((t, 1.0), |n| (n, 1000.0)),
    };
    let ms = num.trim().parse::<f64>().ok()? * ms_per_unit;
    (10.0..=3_600_000.0).contains(&ms).then(|| Duration::from_secs_f64(ms / 1000.0))
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("cannot watch {path}: {message}")]
    Watch { path: String, message: String },
    #[error("cannot start the file watch service: {0}")]
    Start(String),
}

/// What a subscriber gets: the paths that changed during one burst, or a request to rescan
/// (events were lost: inotify queue overflow, a watch error on its paths).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub paths: BTreeSet<PathBuf>,
    pub rescan: bool,
}

/// How a subscriber wants its events.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Names the subscriber in the log.
    pub name: &'static str,
    /// A batch is delivered once no event came for this long...
    pub debounce: Duration,
    /// ...or at the latest this long after its first event, so a path rewritten nonstop is
    /// still followed.
    pub max_delay: Duration,
    /// Drop events that change nothing (open, read, close without writing). Reading a file
    /// in a watched folder produces them, so an owner that reads what it watches would
    /// otherwise wake itself forever.
    pub ignore_reads: bool,
}

/// Which backend follows a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Inotify,
    Poll,
}

struct Shared {
    backend: Mutex<Backend>,
    router: Router,
}

impl Shared {
    fn backend(&self) -> MutexGuard<'_, Backend> {
        self.backend.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.router.stop();
    }
}

/// The service handle; clones share the one backend. It lives while any clone or
/// subscriber does.
#[derive(Clone)]
pub struct FileWatch {
    shared: Arc<Shared>,
}

impl FileWatch {
    /// The service as `WARREN_WATCH` / `WARREN_WATCH_POLL_INTERVAL` configure it.
    pub fn start() -> Result<FileWatch, WatchError> {
        FileWatch::with_options(WatchOptions::from_env())
    }

    pub fn with_options(opts: WatchOptions) -> Result<FileWatch, WatchError> {
        let router = Router::start()?;
        let backend = Backend::start(opts, router.sender(), backend::inotify)?;
        Ok(FileWatch { shared: Arc::new(Shared { backend: Mutex::new(backend), router }) })
    }

    /// A service whose inotify instance comes from `make` (tests of the fallback).
    #[cfg(test)]
    fn with_inotify(
        opts: WatchOptions,
        make: impl FnOnce(std::sync::mpsc::Sender<router::Msg>) -> notify::Result<backend::Kernel>,
    ) -> FileWatch {
        let router = Router::start().unwrap();
        let backend = Backend::start(opts, router.sender(), make).unwrap();
        FileWatch { shared: Arc::new(Shared { backend: Mutex::new(backend), router }) }
    }

    /// True while the service has an inotify instance (false: everything is polled).
    pub fn has_inotify(&self) -> bool {
        self.shared.backend().has_inotify()
    }

    /// Which backend follows `path`, if it is watched.
    pub fn via(&self, path: &Path) -> Option<Via> {
        self.shared.backend().via(&absolute(path))
    }

    /// Registers a subscriber; `deliver` gets its batches and returns false once nobody
    /// listens any more. Watch paths through the returned `Subscriber`.
    pub fn subscribe(
        &self,
        spec: Spec,
        deliver: impl Fn(Batch) -> bool + Send + Sync + 'static,
    ) -> Subscriber {
        let id = self.shared.router.add(spec, Arc::new(deliver));
        Subscriber { id, shared: self.shared.clone() }
    }

    /// A subscriber whose batches arrive on a std channel (for a thread that blocks on it).
    pub fn subscribe_std(&self, spec: Spec) -> (Subscriber, std::sync::mpsc::Receiver<Batch>) {
        let (tx, rx) = std::sync::mpsc::channel();
        (self.subscribe(spec, move |b| tx.send(b).is_ok()), rx)
    }

    /// A subscriber whose batches arrive on a tokio channel (for a task).
    pub fn subscribe_tokio(&self, spec: Spec) -> (Subscriber, tokio::sync::mpsc::UnboundedReceiver<Batch>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (self.subscribe(spec, move |b| tx.send(b).is_ok()), rx)
    }
}

/// One owner's registration. Dropping it removes its watches (those nobody else needs).
pub struct Subscriber {
    id: u64,
    shared: Arc<Shared>,
}

impl Subscriber {
    /// Follows `path` (a file, or a folder and its entries; `Recursive` for the whole tree).
    /// Watching a path again only changes its mode.
    pub fn watch(&self, path: &Path, mode: RecursiveMode) -> Result<(), WatchError> {
        let path = absolute(path);
        // Routed before the kernel watch exists, so no event in between is lost.
        let before = self.shared.router.route(self.id, &path, Some(mode));
        let added = self.shared.backend().add(self.id, &path, mode);
        if added.is_err() {
            // The backend kept what it had: so do the routes.
            self.shared.router.route(self.id, &path, before);
        }
        added
    }

    /// Stops following `path` (the watch goes when no other subscriber needs it).
    pub fn unwatch(&self, path: &Path) {
        let path = absolute(path);
        self.shared.router.route(self.id, &path, None);
        self.shared.backend().remove(self.id, &path);
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        for path in self.shared.router.remove(self.id) {
            self.shared.backend().remove(self.id, &path);
        }
    }
}

/// notify resolves relative paths against the current directory; so do the routes.
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    }
}

#[cfg(test)]
mod tests;
