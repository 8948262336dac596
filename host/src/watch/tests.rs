//! The service against real files in temp dirs, with inotify, forced polling, and inotify
//! failing at start or running out of watches.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, Watcher};

use super::backend::{Kernel, exhausted};
use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn spec(ignore_reads: bool) -> Spec {
    Spec {
        name: "test",
        debounce: Duration::from_millis(30),
        max_delay: Duration::from_millis(300),
        ignore_reads,
    }
}

fn polling() -> WatchOptions {
    WatchOptions { mode: Mode::Poll, poll_interval: Duration::from_millis(50) }
}

/// Every path delivered until `want` is among them (fails after WAIT).
fn until(rx: &Receiver<Batch>, want: &Path) -> BTreeSet<PathBuf> {
    let deadline = Instant::now() + WAIT;
    let mut seen = BTreeSet::new();
    while !seen.contains(want) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(b) => seen.extend(b.paths),
            Err(e) => panic!("{} not delivered ({e}); got {seen:?}", want.display()),
        }
    }
    seen
}

fn dirs(n: usize) -> (tempfile::TempDir, Vec<PathBuf>) {
    let root = tempfile::tempdir().unwrap();
    let v: Vec<PathBuf> = (0..n).map(|i| root.path().join(format!("d{i}"))).collect();
    for d in &v {
        std::fs::create_dir(d).unwrap();
    }
    (root, v)
}

/// Creates, rewrites in place (same size, within the same second) and removes a file in a
/// watched folder; each step must be delivered.
fn follows_changes(watch: &FileWatch, via: Via) {
    let (_root, d) = dirs(1);
    let (sub, rx) = watch.subscribe_std(spec(true));
    sub.watch(&d[0], RecursiveMode::NonRecursive).unwrap();
    assert_eq!(watch.via(&d[0]), Some(via));
    let f = d[0].join("f");
    std::fs::write(&f, "a").unwrap();
    until(&rx, &f);
    std::fs::write(&f, "b").unwrap();
    until(&rx, &f);
    std::fs::remove_file(&f).unwrap();
    until(&rx, &f);
}

#[test]
fn inotify_follows_changes() {
    let watch = FileWatch::with_options(WatchOptions::default()).unwrap();
    assert!(watch.has_inotify());
    follows_changes(&watch, Via::Inotify);
}

#[test]
fn forced_polling_follows_changes() {
    let watch = FileWatch::with_options(polling()).unwrap();
    assert!(!watch.has_inotify());
    follows_changes(&watch, Via::Poll);
}

#[test]
fn inotify_failing_at_start_falls_back_to_polling() {
    let emfile = |_| Err(notify::Error::io(std::io::Error::from_raw_os_error(24)));
    let watch = FileWatch::with_inotify(polling_auto(), emfile);
    assert!(!watch.has_inotify());
    follows_changes(&watch, Via::Poll);
}

fn polling_auto() -> WatchOptions {
    WatchOptions { mode: Mode::Auto, ..polling() }
}

/// A real inotify instance that, like a user at fs.inotify.max_user_watches, takes `room`
/// watches and refuses the next with ENOSPC (as notify reports it).
struct Limited {
    inner: RecommendedWatcher,
    room: usize,
}

impl Watcher for Limited {
    fn new<F: notify::EventHandler>(handler: F, config: notify::Config) -> notify::Result<Self> {
        Ok(Limited { inner: RecommendedWatcher::new(handler, config)?, room: 1 })
    }
    fn watch(&mut self, path: &Path, mode: RecursiveMode) -> notify::Result<()> {
        if self.room == 0 {
            return Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch));
        }
        self.room -= 1;
        self.inner.watch(path, mode)
    }
    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        self.inner.unwatch(path)
    }
    fn kind() -> notify::WatcherKind {
        notify::WatcherKind::Inotify
    }
}

#[test]
fn a_full_watch_table_moves_further_paths_to_polling() {
    let limited = |events: std::sync::mpsc::Sender<router::Msg>| -> notify::Result<Kernel> {
        let w = Limited::new(
            move |r: notify::Result<notify::Event>| {
                let _ = events.send(router::Msg::Event(r));
            },
            notify::Config::default(),
        )?;
        Ok(Box::new(w))
    };
    let watch = FileWatch::with_inotify(polling_auto(), limited);
    assert!(watch.has_inotify());
    let (_root, d) = dirs(2);
    let (sub, rx) = watch.subscribe_std(spec(true));
    sub.watch(&d[0], RecursiveMode::NonRecursive).unwrap();
    sub.watch(&d[1], RecursiveMode::NonRecursive).unwrap();
    assert_eq!(watch.via(&d[0]), Some(Via::Inotify));
    assert_eq!(watch.via(&d[1]), Some(Via::Poll));
    for dir in &d {
        let f = dir.join("f");
        std::fs::write(&f, "x").unwrap();
        until(&rx, &f);
    }
}

#[test]
fn exhaustion_is_told_apart_from_bad_paths() {
    assert!(exhausted(&notify::Error::new(notify::ErrorKind::MaxFilesWatch)));
    assert!(exhausted(&notify::Error::io(std::io::Error::from_raw_os_error(28)))); // ENOSPC
    assert!(!exhausted(&notify::Error::new(notify::ErrorKind::PathNotFound)));
    assert!(!exhausted(&notify::Error::io(std::io::Error::from_raw_os_error(13)))); // EACCES
}

#[test]
fn subscribers_get_only_their_paths_and_share_watches() {
    let watch = FileWatch::with_options(WatchOptions::default()).unwrap();
    let (_root, d) = dirs(2);
    let (a, rx_a) = watch.subscribe_std(spec(true));
    let (b, rx_b) = watch.subscribe_std(spec(true));
    a.watch(&d[0], RecursiveMode::NonRecursive).unwrap();
    b.watch(&d[0], RecursiveMode::NonRecursive).unwrap();
    b.watch(&d[1], RecursiveMode::NonRecursive).unwrap();
    let (x, y, z) = (d[0].join("x"), d[1].join("y"), d[0].join("z"));
    std::fs::write(&x, "1").unwrap();
    std::fs::write(&y, "1").unwrap();
    std::fs::write(&z, "1").unwrap();
    // Events come in order: by the time A sees z, y would have reached it too.
    let seen_a = until(&rx_a, &z);
    assert!(seen_a.contains(&x) && !seen_a.contains(&y), "{seen_a:?}");
    let seen_b = until(&rx_b, &z);
    assert!(seen_b.contains(&x) && seen_b.contains(&y), "{seen_b:?}");

    // A leaves: the folder B still needs stays watched; once B leaves too, it is unwatched.
    drop(a);
    assert_eq!(watch.via(&d[0]), Some(Via::Inotify));
    let w = d[0].join("w");
    std::fs::write(&w, "1").unwrap();
    until(&rx_b, &w);
    let deadline = Instant::now() + WAIT;
    loop {
        match rx_a.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(_) => continue, // batches already under way
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("A's channel still open after A left"),
        }
    }
    b.unwatch(&d[1]);
    assert_eq!(watch.via(&d[1]), None);
    drop(b);
    assert_eq!(watch.via(&d[0]), None);
}

#[test]
fn recursive_and_flat_users_of_one_folder() {
    let watch = FileWatch::with_options(WatchOptions::default()).unwrap();
    let (_root, d) = dirs(1);
    std::fs::create_dir(d[0].join("sub")).unwrap();
    let (flat, rx_flat) = watch.subscribe_std(spec(true));
    let (deep, rx_deep) = watch.subscribe_std(spec(true));
    flat.watch(&d[0], RecursiveMode::NonRecursive).unwrap();
    deep.watch(&d[0], RecursiveMode::Recursive).unwrap();
    let (nested, top) = (d[0].join("sub").join("n"), d[0].join("t"));
    std::fs::write(&nested, "1").unwrap();
    std::fs::write(&top, "1").unwrap();
    let seen = until(&rx_flat, &top);
    assert!(!seen.contains(&nested), "a flat watch does not see into subfolders: {seen:?}");
    let seen = until(&rx_deep, &top);
    assert!(seen.contains(&nested), "{seen:?}");
    // The recursive user leaves: the flat one keeps its folder.
    drop(deep);
    let t2 = d[0].join("t2");
    std::fs::write(&t2, "1").unwrap();
    until(&rx_flat, &t2);
}

#[test]
fn reads_are_dropped_only_for_subscribers_that_ask() {
    let watch = FileWatch::with_options(WatchOptions::default()).unwrap();
    let (_root, d) = dirs(1);
    let f = d[0].join("f");
    std::fs::write(&f, "secret").unwrap();
    let (quiet, rx_quiet) = watch.subscribe_std(spec(true));
    let (all, rx_all) = watch.subscribe_std(spec(false));
    quiet.watch(&d[0], RecursiveMode::NonRecursive).unwrap();
    all.watch(&d[0], RecursiveMode::NonRecursive).unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), b"secret");
    let marker = d[0].join("m");
    std::fs::write(&marker, "1").unwrap();
    let seen = until(&rx_quiet, &marker);
    assert!(!seen.contains(&f), "reading f woke a subscriber that ignores reads: {seen:?}");
    let seen = until(&rx_all, &marker);
    assert!(seen.contains(&f), "the read was an event at all: {seen:?}");
}

#[test]
fn missing_paths_are_refused_in_both_modes() {
    for opts in [WatchOptions::default(), polling()] {
        let watch = FileWatch::with_options(opts).unwrap();
        let (root, _) = dirs(0);
        let missing = root.path().join("nope");
        let (sub, _rx) = watch.subscribe_std(spec(true));
        let err = sub.watch(&missing, RecursiveMode::NonRecursive).unwrap_err();
        assert!(matches!(err, WatchError::NotFound(_)), "{opts:?}: {err}");
        assert_eq!(watch.via(&missing), None);
        // Once it exists, the same call works.
        std::fs::create_dir(&missing).unwrap();
        sub.watch(&missing, RecursiveMode::NonRecursive).unwrap();
        assert!(watch.via(&missing).is_some());
    }
}

#[test]
fn poll_intervals_parse() {
    assert_eq!(parse_interval("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_interval(" 2s "), Some(Duration::from_secs(2)));
    assert_eq!(parse_interval("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_interval("40"), Some(Duration::from_millis(40)));
    for bad in ["", "fast", "0", "5ms", "-1s", "2h", "NaN"] {
        assert_eq!(parse_interval(bad), None, "{bad:?}");
    }
}

#[test]
fn a_deleted_folder_is_no_rescan_when_polling() {
    let watch = FileWatch::with_options(polling()).unwrap();
    let (_root, d) = dirs(2);
    let (sub, rx) = watch.subscribe_std(spec(true));
    sub.watch(&d[0], RecursiveMode::NonRecursive).unwrap();
    sub.watch(&d[1], RecursiveMode::NonRecursive).unwrap();
    std::fs::remove_dir(&d[0]).unwrap();
    let mut rescans = 0;
    // The poller fails to scan d0 on every round; two rounds of markers in d1 later, every
    // such failure has been routed.
    for name in ["m1", "m2"] {
        let marker = d[1].join(name);
        std::fs::write(&marker, "1").unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let b = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("marker");
            rescans += usize::from(b.rescan);
            if b.paths.contains(&marker) {
                break;
            }
        }
    }
    assert_eq!(rescans, 0, "a deleted folder made its owner rescan");
}
