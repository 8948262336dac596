//! Restart delays: Habitat's decorrelated jitter (`next = min(max, rand[min ..= prev × 3])`)
//! with non-zero defaults, because Habitat's 0 / 0 restarts a crash loop in a tight spin.
//!
//! The first failure after a good run restarts at once; consecutive failures back off; a run
//! that stays up for the cooldown wipes the slate. Pure: time and randomness come in.

use std::time::Duration;

/// `--service-min-backoff-period`, `--service-max-backoff-period`,
/// `--service-restart-cooldown-period` (Habitat's flags; warren's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub min: Duration,
    pub max: Duration,
    pub cooldown: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            min: Duration::from_millis(100),
            max: Duration::from_secs(30),
            cooldown: Duration::from_secs(300),
        }
    }
}

/// One service's restart history.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    /// Failures since the last reset (a run that outlived the cooldown).
    failures: u32,
    prev: Duration,
}

impl Backoff {
    /// The delay before restarting a process that ran for `uptime` and then failed. `random`
    /// is any u64 (the caller's generator), so a simulation can replay a schedule.
    pub fn next_delay(&mut self, policy: &BackoffPolicy, uptime: Duration, random: u64) -> Duration {
        if uptime >= policy.cooldown {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures == 1 {
            self.prev = policy.min;
            return Duration::ZERO;
        }
        let lo = policy.min.min(policy.max);
        let hi = self.prev.saturating_mul(3).clamp(lo, policy.max);
        let span = (hi - lo).as_millis() as u64;
        let delay = lo + Duration::from_millis(if span == 0 { 0 } else { random % (span + 1) });
        self.prev = delay.max(lo);
        delay
    }

    /// Consecutive failures (shown by `svc status` as a crash loop).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A deliberate start (`svc start`, a reload): the history no longer applies.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn first_failure_restarts_at_once_then_delays_grow_within_bounds() {
        let policy = BackoffPolicy::default();
        let mut b = Backoff::default();
        let mut rng = 7u64;
        assert_eq!(b.next_delay(&policy, Duration::from_secs(5), xorshift(&mut rng)), Duration::ZERO);
        let mut delays = Vec::new();
        for _ in 0..40 {
            let d = b.next_delay(&policy, Duration::from_millis(10), xorshift(&mut rng));
            assert!(d >= policy.min && d <= policy.max, "{d:?}");
            delays.push(d);
        }
        assert_eq!(b.failures(), 41);
        // Decorrelated jitter climbs towards the cap: late delays are far above the first.
        let early: Duration = delays[..3].iter().sum();
        let late: Duration = delays[30..33].iter().sum();
        assert!(late > early * 3, "early {early:?}, late {late:?}");
        assert!(delays.iter().any(|d| *d > Duration::from_secs(5)), "{delays:?}");
    }

    #[test]
    fn a_run_past_the_cooldown_resets_the_history() {
        let policy = BackoffPolicy { cooldown: Duration::from_secs(60), ..Default::default() };
        let mut b = Backoff::default();
        for r in 0..10 {
            b.next_delay(&policy, Duration::from_millis(1), r);
        }
        assert!(b.failures() == 10);
        assert_eq!(b.next_delay(&policy, Duration::from_secs(61), 12345), Duration::ZERO);
        assert_eq!(b.failures(), 1);
    }

    #[test]
    fn zero_bounds_never_divide_by_zero_and_min_above_max_is_capped() {
        let zero = BackoffPolicy { min: Duration::ZERO, max: Duration::ZERO, cooldown: Duration::ZERO };
        let mut b = Backoff::default();
        for r in [0, 1, u64::MAX] {
            assert_eq!(b.next_delay(&zero, Duration::ZERO, r), Duration::ZERO);
        }
        let odd =
            BackoffPolicy { min: Duration::from_secs(9), max: Duration::from_secs(2), ..Default::default() };
        let mut b = Backoff::default();
        b.next_delay(&odd, Duration::ZERO, 0);
        for r in [0, 1, u64::MAX] {
            assert_eq!(b.next_delay(&odd, Duration::ZERO, r), Duration::from_secs(2));
        }
    }
}
