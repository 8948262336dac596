//! Polling with deadlines: tests wait for an outcome, never for a fixed time. The limits are
//! generous; they only decide how long a broken build takes to fail, never what passes.

use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(50);

/// Polls `f` until it returns Some (returned), or None once `limit` has passed.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `f` until it holds; panics naming `what` if `limit` passes first.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    if wait_for(limit, || f().then_some(())).is_none() {
        panic!("timed out after {limit:?} waiting for: {what}");
    }
}
