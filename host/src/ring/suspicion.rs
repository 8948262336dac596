//! Lifeguard-style suspicion: the timeout starts long and shrinks, logarithmically, as other
//! members independently report the same failed probe (memberlist's `suspicion.go` idea).

use std::collections::HashSet;
use std::time::Duration;

use super::identity::MemberId;

/// The shortest suspicion: `mult × max(1, log10(n)) × probe_interval`.
pub fn min_timeout(mult: u32, members: usize, probe_interval: Duration) -> Duration {
    let scale = (members.max(1) as f64).log10().max(1.0);
    probe_interval.mul_f64(f64::from(mult) * scale)
}

#[derive(Debug, Clone)]
pub struct Suspicion {
    pub start: Duration,
    pub min: Duration,
    pub max: Duration,
    /// Confirmations that bring the timeout down to `min`.
    pub k: u32,
    pub confirmers: HashSet<MemberId>,
}

impl Suspicion {
    pub fn new(start: Duration, min: Duration, max: Duration, k: u32) -> Self {
        Suspicion { start, min, max: max.max(min), k, confirmers: HashSet::new() }
    }

    /// Records an independent confirmation; true if it was new.
    pub fn confirm(&mut self, from: MemberId) -> bool {
        self.confirmers.insert(from)
    }

    pub fn timeout(&self) -> Duration {
        if self.k == 0 {
            return self.min;
        }
        let c = self.confirmers.len() as f64;
        let frac = (c + 1.0).ln() / (f64::from(self.k) + 1.0).ln();
        let span = self.max.saturating_sub(self.min).as_secs_f64();
        let raw = self.max.as_secs_f64() - frac * span;
        Duration::from_secs_f64(raw.max(self.min.as_secs_f64()))
    }

    pub fn deadline(&self) -> Duration {
        self.start + self.timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_timeout_scales_with_log_of_cluster_size() {
        let p = Duration::from_secs(1);
        assert_eq!(min_timeout(4, 5, p), Duration::from_secs(4));
        assert_eq!(min_timeout(4, 10, p), Duration::from_secs(4));
        assert_eq!(min_timeout(4, 100, p), Duration::from_secs(8));
    }

    #[test]
    fn confirmations_shorten_the_timeout_down_to_min() {
        let mut s = Suspicion::new(Duration::ZERO, Duration::from_secs(2), Duration::from_secs(12), 3);
        assert_eq!(s.timeout(), Duration::from_secs(12));
        let mut last = s.timeout();
        for i in 1..=5u8 {
            let mut id = [0u8; 16];
            id[0] = i;
            assert!(s.confirm(MemberId(id)));
            assert!(!s.confirm(MemberId(id)), "the same member counts once");
            assert!(s.timeout() <= last);
            last = s.timeout();
        }
        assert_eq!(s.timeout(), Duration::from_secs(2));
        let none = Suspicion::new(Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(12), 0);
        assert_eq!(none.deadline(), Duration::from_secs(3));
    }
}
