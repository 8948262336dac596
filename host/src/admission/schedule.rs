//! When an admitted node talks to its keyserver, as pure functions of the time: renew at about
//! 2/3 of the CGC's life (±10 % jitter, so a fleet admitted together does not renew together),
//! re-fetch keys every interval, and back off while the keyserver is unreachable.

use std::time::Duration;

use super::cgc::Cgc;

/// Longest wait between retries while the keyserver is down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The Unix second at which `cgc` should be renewed; `jitter` in [-1, 1] moves it by up to
/// a tenth of the 2/3 point.
pub fn renew_at(cgc: &Cgc, jitter: f64) -> u64 {
    let life = cgc.not_after.saturating_sub(cgc.not_before) as f64;
    let offset = life * (2.0 / 3.0) * (1.0 + 0.1 * jitter.clamp(-1.0, 1.0));
    cgc.not_before.saturating_add(offset as u64)
}

/// The wait after `failures` failed attempts in a row: 1 s doubling, at most `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(max).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_near_two_thirds_and_backoff_doubles_to_a_cap() {
        let (mut c, _) = crate::admission::cgc::tests_support::sample();
        c.not_before = 1000;
        c.not_after = 1000 + 3000;
        assert_eq!(renew_at(&c, 0.0), 3000);
        assert_eq!(renew_at(&c, 1.0), 3200);
        assert_eq!(renew_at(&c, -5.0), 2800, "jitter is clamped");
        assert!(renew_at(&c, 0.5) < c.not_after);
        let max = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=8).map(|f| backoff(f, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(0, max).as_secs(), 1);
        assert_eq!(backoff(u32::MAX, Duration::from_secs(3600)), MAX_BACKOFF);
    }
}
