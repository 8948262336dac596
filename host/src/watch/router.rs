//! The router thread: matches each raw event to the subscribers whose paths it concerns,
//! gathers a subscriber's events until they settle (its own debounce) and delivers the batch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use notify::RecursiveMode;
use notify::event::{AccessKind, AccessMode, EventKind};

use super::{Batch, Spec, WatchError};

pub(super) enum Msg {
    Event(notify::Result<notify::Event>),
    Stop,
}

pub(super) type Deliver = Arc<dyn Fn(Batch) -> bool + Send + Sync>;

struct Pending {
    batch: Batch,
    first: Instant,
    last: Instant,
}

struct Route {
    spec: Spec,
    paths: BTreeMap<PathBuf, RecursiveMode>,
    deliver: Deliver,
    pending: Option<Pending>,
}

impl Route {
    fn concerns(&self, path: &Path) -> bool {
        self.paths.iter().any(|(w, mode)| {
            path == w
                || match mode {
                    RecursiveMode::NonRecursive => path.parent() == Some(w.as_path()),
                    RecursiveMode::Recursive => path.starts_with(w),
                }
        })
    }

    fn pending(&mut self, now: Instant) -> &mut Batch {
        let p =
            self.pending.get_or_insert_with(|| Pending { batch: Batch::default(), first: now, last: now });
        p.last = now;
        &mut p.batch
    }

    fn due(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| (p.last + self.spec.debounce).min(p.first + self.spec.max_delay))
    }
}

/// Opening or reading a file changes nothing. Closing after a write is kept: it marks a
/// write that has finished.
pub(super) fn is_read_only(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(a) if *a != AccessKind::Close(AccessMode::Write))
}

fn gone(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::PathNotFound => true,
        notify::ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

#[derive(Default)]
struct Routes {
    map: BTreeMap<u64, Route>,
    next_id: u64,
    /// Error messages already logged at warn (a poller meets the same one every scan).
    seen_errors: BTreeSet<String>,
}

const MAX_SEEN_ERRORS: usize = 64;

impl Routes {
    fn dispatch(&mut self, event: notify::Result<notify::Event>, now: Instant) {
        match event {
            Ok(ev) => {
                let rescan = ev.need_rescan();
                for route in self.map.values_mut() {
                    if rescan {
                        route.pending(now).rescan = true;
                    }
                    if route.spec.ignore_reads && is_read_only(&ev.kind) {
                        continue;
                    }
                    let mine: Vec<PathBuf> = ev.paths.iter().filter(|p| route.concerns(p)).cloned().collect();
                    if !mine.is_empty() {
                        route.pending(now).paths.extend(mine);
                    }
                }
            }
            Err(e) if gone(&e) => {
                // The poller meets a deleted path on every scan; its removal was an event.
                tracing::debug!(paths = ?e.paths, error = %e, "file watch: path gone");
            }
            Err(e) => {
                let message = e.to_string();
                if self.seen_errors.len() < MAX_SEEN_ERRORS && self.seen_errors.insert(message.clone()) {
                    tracing::warn!(paths = ?e.paths, error = %message, "file watch error");
                } else {
                    tracing::debug!(paths = ?e.paths, error = %message, "file watch error");
                }
                // Events may be lost: the owners of the paths concerned rescan.
                for route in self.map.values_mut() {
                    if e.paths.is_empty() || e.paths.iter().any(|p| route.concerns(p)) {
                        route.pending(now).rescan = true;
                    }
                }
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.map.values().filter_map(Route::due).min()
    }

    fn take_due(&mut self, now: Instant) -> Vec<(&'static str, Deliver, Batch)> {
        let mut ready = Vec::new();
        for route in self.map.values_mut() {
            if route.due().is_some_and(|t| t <= now)
                && let Some(p) = route.pending.take()
            {
                ready.push((route.spec.name, route.deliver.clone(), p.batch));
            }
        }
        ready
    }
}

pub(super) struct Router {
    routes: Arc<Mutex<Routes>>,
    tx: Sender<Msg>,
}

fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

impl Router {
    pub(super) fn start() -> Result<Router, WatchError> {
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (tx, rx) = mpsc::channel();
        let thread_routes = routes.clone();
        std::thread::Builder::new()
            .name("warren-watch".into())
            .spawn(move || run(&thread_routes, &rx))
            .map_err(|e| WatchError::Start(format!("cannot start the router thread: {e}")))?;
        Ok(Router { routes, tx })
    }

    pub(super) fn sender(&self) -> Sender<Msg> {
        self.tx.clone()
    }

    pub(super) fn add(&self, spec: Spec, deliver: Deliver) -> u64 {
        let mut r = lock(&self.routes);
        r.next_id += 1;
        let id = r.next_id;
        r.map.insert(id, Route { spec, paths: BTreeMap::new(), deliver, pending: None });
        id
    }

    /// Routes `path` to subscriber `id` (None: stops routing it); returns how it was routed.
    pub(super) fn route(&self, id: u64, path: &Path, mode: Option<RecursiveMode>) -> Option<RecursiveMode> {
        let mut r = lock(&self.routes);
        let route = r.map.get_mut(&id)?;
        match mode {
            Some(m) => route.paths.insert(path.to_path_buf(), m),
            None => route.paths.remove(path),
        }
    }

    /// Forgets subscriber `id`; returns the paths it had.
    pub(super) fn remove(&self, id: u64) -> Vec<PathBuf> {
        lock(&self.routes).map.remove(&id).map(|r| r.paths.into_keys().collect()).unwrap_or_default()
    }

    pub(super) fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

fn run(routes: &Mutex<Routes>, rx: &Receiver<Msg>) {
    loop {
        let next = lock(routes).next_due();
        let msg = match next {
            Some(t) => rx.recv_timeout(t.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Msg::Event(event)) => lock(routes).dispatch(event, Instant::now()),
            Err(RecvTimeoutError::Timeout) => {}
        }
        // Delivered outside the lock: a subscriber may be registering meanwhile.
        let ready = lock(routes).take_due(Instant::now());
        for (name, deliver, batch) in ready {
            if !deliver(batch) {
                tracing::debug!(subscriber = name, "a file watch subscriber stopped listening");
            }
        }
    }
}
