//! Rings of real supervisors: timings and helpers over `sup::Sup`.

use std::path::Path;
use std::time::Duration;

use warren::ring::RingConfig;

use super::sup::Sup;

/// Fast timings so tests finish quickly. Under load a member may be suspected for a moment
/// with these; tests using them only wait for outcomes, never assert the absence of suspicion.
pub fn fast() -> RingConfig {
    RingConfig {
        probe_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(100),
        suspicion_mult: 3,
        gossip_interval: Duration::from_millis(50),
        pushpull_interval: Duration::from_secs(1),
        ..RingConfig::default()
    }
}

/// Fast probing, slow verdicts: for tests that assert nobody is ever confirmed dead by
/// mistake. Suspicion lasts at least 15 probe intervals (3 s) and at most twice that, so a live
/// member is only condemned if it cannot answer for 3 s or more. A busy 2-core machine stalls
/// a process for tens or hundreds of milliseconds, not seconds; the 3 s is that slack, not a
/// claim about speed. Transient suspicion stays possible and is not what those tests check.
pub fn patient() -> RingConfig {
    RingConfig { suspicion_mult: 15, suspicion_max_mult: 2, ..fast() }
}

/// The `warren sup run` flags for `c`'s timings.
pub fn timing_args(c: &RingConfig) -> Vec<String> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    vec![
        "--probe-interval".into(),
        ms(c.probe_interval),
        "--ping-timeout".into(),
        ms(c.ping_timeout),
        "--suspicion-mult".into(),
        c.suspicion_mult.to_string(),
        "--suspicion-max-mult".into(),
        c.suspicion_max_mult.to_string(),
        "--gossip-interval".into(),
        ms(c.gossip_interval),
        "--pushpull-interval".into(),
        ms(c.pushpull_interval),
    ]
}

pub fn fast_timings() -> Vec<String> {
    timing_args(&fast())
}

pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Starts `n` supervisors on 127.0.0.(first..), all with `extra`; the first is the seed the
/// others `--peer` with.
pub fn start_ring(dir: &Path, first: u8, n: u8, extra: &[String], envs: &[(String, String)]) -> Vec<Sup> {
    start_ring_each(dir, first, n, envs, |_| extra.to_vec())
}

/// Like `start_ring`, with member `i`'s extra args from `extra(i)`.
pub fn start_ring_each(
    dir: &Path,
    first: u8,
    n: u8,
    envs: &[(String, String)],
    extra: impl Fn(u8) -> Vec<String>,
) -> Vec<Sup> {
    let mut sups = vec![Sup::start(dir, first, extra(0), envs.to_vec())];
    let seed = sups[0].gossip.clone();
    for i in 1..n {
        let mut a = extra(i);
        a.extend(args(&["--peer", &seed]));
        sups.push(Sup::start(dir, first + i, a, envs.to_vec()));
    }
    sups
}

/// Every supervisor sees every one of `ids` alive.
pub fn all_see_alive(sups: &[&Sup], ids: &[String]) -> bool {
    sups.iter().all(|s| {
        let h = s.health();
        ids.iter().all(|id| h.get(id).map(String::as_str) == Some("Alive"))
    })
}

/// Every supervisor's member id.
pub fn member_ids(sups: &[Sup]) -> Vec<String> {
    sups.iter().map(Sup::member_id).collect()
}
