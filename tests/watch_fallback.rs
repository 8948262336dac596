//! inotify refused for real at start (EMFILE, as when a user's 128 inotify instances are
//! used up): the service starts anyway and follows files by polling. The only test in its
//! binary, since it lowers the process's file limit for a moment.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use warren::watch::{FileWatch, Mode, RecursiveMode, Spec, WatchOptions};

fn nofile() -> libc::rlimit {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    r
}

fn set_nofile(r: &libc::rlimit) {
    // SAFETY: setrlimit only reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, r) }, 0);
}

#[test]
fn inotify_refused_at_start_falls_back_to_polling() {
    // With the soft limit at the lowest free descriptor, the next open (inotify_init1) fails
    // with EMFILE; starting the service opens nothing else.
    let lowest = std::fs::File::open("/dev/null").unwrap().as_raw_fd();
    let old = nofile();
    set_nofile(&libc::rlimit { rlim_cur: lowest as libc::rlim_t, rlim_max: old.rlim_max });
    let started =
        FileWatch::with_options(WatchOptions { mode: Mode::Auto, poll_interval: Duration::from_millis(50) });
    set_nofile(&old);
    let watch = started.expect("the service starts without inotify");
    assert!(!watch.has_inotify());

    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        name: "test",
        debounce: Duration::from_millis(30),
        max_delay: Duration::from_millis(300),
        ignore_reads: true,
    };
    let (sub, rx) = watch.subscribe_std(spec);
    sub.watch(dir.path(), RecursiveMode::NonRecursive).unwrap();
    assert_eq!(watch.via(dir.path()), Some(warren::watch::Via::Poll));
    let f = dir.path().join("f");
    std::fs::write(&f, "x").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let batch = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("change seen by polling");
        if batch.paths.contains(&f) {
            break;
        }
    }
}
