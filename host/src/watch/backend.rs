//! The watches themselves: one inotify instance (notify's RecommendedWatcher) for every path
//! of every subscriber, reference-counted by path, and notify's PollWatcher for the paths
//! inotify cannot take (no instance at start, or the per-user watch limit reached).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use notify::{Config, ErrorKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};

use super::router::Msg;
use super::{MODE_ENV, Mode, POLL_INTERVAL_ENV, Via, WatchError, WatchOptions};

pub(super) type Kernel = Box<dyn Watcher + Send>;

/// The real inotify instance; its events go to the router.
pub(super) fn inotify(events: Sender<Msg>) -> notify::Result<Kernel> {
    let w = RecommendedWatcher::new(
        move |r: notify::Result<notify::Event>| {
            let _ = events.send(Msg::Event(r));
        },
        Config::default(),
    )?;
    Ok(Box::new(w))
}

/// The kernel refused a watch for lack of room (ENOSPC from inotify_add_watch: the
/// `fs.inotify.max_user_watches` limit), not because of the path.
pub(super) fn exhausted(e: &notify::Error) -> bool {
    match &e.kind {
        ErrorKind::MaxFilesWatch => true,
        ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    }
}

fn watch_error(path: &Path, e: notify::Error) -> WatchError {
    match &e.kind {
        ErrorKind::PathNotFound => WatchError::NotFound(path.display().to_string()),
        ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            WatchError::NotFound(path.display().to_string())
        }
        _ => WatchError::Watch { path: path.display().to_string(), message: e.to_string() },
    }
}

struct Entry {
    /// Subscriber id → the mode it asked for.
    users: BTreeMap<u64, RecursiveMode>,
    /// What the watch was installed with: recursive if any user asked for it.
    mode: RecursiveMode,
    via: Via,
}

fn wanted(users: &BTreeMap<u64, RecursiveMode>) -> RecursiveMode {
    if users.values().any(|m| *m == RecursiveMode::Recursive) {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    }
}

pub(super) struct Backend {
    kernel: Option<Kernel>,
    poll: Option<PollWatcher>,
    opts: WatchOptions,
    events: Sender<Msg>,
    entries: BTreeMap<PathBuf, Entry>,
    warned_watch_limit: bool,
}

impl Backend {
    /// Opens the inotify instance (unless polling is forced); if that fails, everything is
    /// polled and one warning says so.
    pub(super) fn start(
        opts: WatchOptions,
        events: Sender<Msg>,
        make_inotify: impl FnOnce(Sender<Msg>) -> notify::Result<Kernel>,
    ) -> Result<Backend, WatchError> {
        let every = opts.poll_interval;
        let kernel = match opts.mode {
            Mode::Poll => {
                tracing::warn!(
                    "{MODE_ENV}=poll: file changes are found by polling every {every:?} ({POLL_INTERVAL_ENV}), not inotify"
                );
                None
            }
            Mode::Auto => match make_inotify(events.clone()) {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "inotify is unavailable (too many inotify instances for this user? see \
                         fs.inotify.max_user_instances): file changes are found by polling every \
                         {every:?} ({POLL_INTERVAL_ENV}) instead"
                    );
                    None
                }
            },
        };
        let mut b =
            Backend { kernel, poll: None, opts, events, entries: BTreeMap::new(), warned_watch_limit: false };
        if b.kernel.is_none() {
            // The fallback must work, or the service cannot follow anything.
            b.poller()?;
        }
        Ok(b)
    }

    pub(super) fn has_inotify(&self) -> bool {
        self.kernel.is_some()
    }

    pub(super) fn via(&self, path: &Path) -> Option<Via> {
        self.entries.get(path).map(|e| e.via)
    }

    fn poller(&mut self) -> Result<&mut PollWatcher, WatchError> {
        if self.poll.is_none() {
            let events = self.events.clone();
            // notify's poller compares modification times in whole seconds: a file replaced
            // twice within a second would go unseen without comparing contents too.
            let config =
                Config::default().with_poll_interval(self.opts.poll_interval).with_compare_contents(true);
            let w = PollWatcher::new(
                move |r: notify::Result<notify::Event>| {
                    let _ = events.send(Msg::Event(r));
                },
                config,
            )
            .map_err(|e| WatchError::Start(format!("polling: {e}")))?;
            self.poll = Some(w);
        }
        self.poll.as_mut().ok_or_else(|| WatchError::Start("polling is unavailable".into()))
    }

    /// Installs a watch on inotify if there is one and it has room, else on the poller.
    fn install(&mut self, path: &Path, mode: RecursiveMode) -> Result<Via, WatchError> {
        if let Some(k) = self.kernel.as_mut() {
            match k.watch(path, mode) {
                Ok(()) => return Ok(Via::Inotify),
                Err(e) if exhausted(&e) => {
                    // A recursive watch may have been half installed: take it back.
                    let _ = k.unwatch(path);
                    if !self.warned_watch_limit {
                        self.warned_watch_limit = true;
                        tracing::warn!(
                            path = %path.display(),
                            "the inotify watch limit is reached (fs.inotify.max_user_watches): this \
                             path and any further one are polled every {:?} ({POLL_INTERVAL_ENV})",
                            self.opts.poll_interval
                        );
                    }
                }
                Err(e) => return Err(watch_error(path, e)),
            }
        }
        // The poller accepts a missing path silently and never picks it up: refuse it here
        // like inotify does, so the owner retries.
        if std::fs::metadata(path).is_err() {
            return Err(WatchError::NotFound(path.display().to_string()));
        }
        self.poller()?.watch(path, mode).map_err(|e| watch_error(path, e))?;
        Ok(Via::Poll)
    }

    fn uninstall(&mut self, path: &Path, via: Via) {
        let r = match via {
            Via::Inotify => self.kernel.as_mut().map(|k| k.unwatch(path)),
            Via::Poll => self.poll.as_mut().map(|p| p.unwatch(path)),
        };
        if let Some(Err(e)) = r {
            // A watched folder that was deleted has already lost its watch.
            tracing::debug!(path = %path.display(), error = %e, "unwatch");
        }
    }

    /// Subscriber `id` wants `path` followed with `mode`.
    pub(super) fn add(&mut self, id: u64, path: &Path, mode: RecursiveMode) -> Result<(), WatchError> {
        let Some(entry) = self.entries.get(path) else {
            let via = self.install(path, mode)?;
            self.entries.insert(path.to_path_buf(), Entry { users: BTreeMap::from([(id, mode)]), mode, via });
            return Ok(());
        };
        let mut users = entry.users.clone();
        users.insert(id, mode);
        self.reinstall(path, users)
    }

    /// Subscriber `id` no longer needs `path`; the watch goes once nobody does.
    pub(super) fn remove(&mut self, id: u64, path: &Path) {
        let Some(entry) = self.entries.get(path) else { return };
        let mut users = entry.users.clone();
        if users.remove(&id).is_none() {
            return;
        }
        if users.is_empty() {
            let via = entry.via;
            self.entries.remove(path);
            self.uninstall(path, via);
        } else if let Err(e) = self.reinstall(path, users) {
            tracing::warn!(path = %path.display(), error = %e, "cannot narrow a watch");
        }
    }

    /// Records a new set of users for a watched path, re-installing the watch if the mode
    /// they need together changed. On failure the old watch and users stay.
    fn reinstall(&mut self, path: &Path, users: BTreeMap<u64, RecursiveMode>) -> Result<(), WatchError> {
        let Some(entry) = self.entries.get(path) else { return Ok(()) };
        let (old_mode, old_via) = (entry.mode, entry.via);
        let mode = wanted(&users);
        if mode != old_mode {
            self.uninstall(path, old_via);
            let via = match self.install(path, mode) {
                Ok(v) => v,
                Err(e) => {
                    if let Ok(v) = self.install(path, old_mode)
                        && let Some(entry) = self.entries.get_mut(path)
                    {
                        entry.via = v;
                    }
                    return Err(e);
                }
            };
            if let Some(entry) = self.entries.get_mut(path) {
                (entry.mode, entry.via) = (mode, via);
            }
        }
        if let Some(entry) = self.entries.get_mut(path) {
            entry.users = users;
        }
        Ok(())
    }
}
