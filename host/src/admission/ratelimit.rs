//! Per-address budget of failed claims on the join port, checked
//! before anything is opened. Each failure spends one token of a bucket that refills at a
//! steady rate; with the bucket empty, that address is refused at once. Successful claims
//! cost nothing, so many nodes behind one address admit as fast as they like, and a token is
//! never locked: a correct claim from another address still succeeds.

use std::collections::HashMap;
use std::net::IpAddr;

pub const DEFAULT_BURST: u32 = 5;
/// Tokens regained per second: one failure per 10 s on average once the burst is spent
/// (the per-token slow-down alone would let a patient guesser go on).
pub const DEFAULT_REFILL: f64 = 0.1;
/// Addresses tracked at most; beyond it, full buckets are forgotten first, then all.
const MAX_TRACKED: usize = 65_536;

pub struct FailureLimit {
    burst: f64,
    refill: f64,
    buckets: HashMap<IpAddr, (f64, u64)>,
}

impl FailureLimit {
    pub fn new(burst: u32, refill: f64) -> FailureLimit {
        FailureLimit { burst: f64::from(burst.max(1)), refill: refill.max(0.001), buckets: HashMap::new() }
    }

    fn tokens(&self, ip: IpAddr, now_ms: u64) -> f64 {
        match self.buckets.get(&ip) {
            None => self.burst,
            Some(&(t, at)) => (t + now_ms.saturating_sub(at) as f64 / 1000.0 * self.refill).min(self.burst),
        }
    }

    /// `Ok` when `ip` may try now, else the seconds until it may.
    pub fn check(&self, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        let t = self.tokens(ip, now_ms);
        if t >= 1.0 { Ok(()) } else { Err(((1.0 - t) / self.refill).ceil().max(1.0) as u64) }
    }

    /// Spends one token of `ip`.
    pub fn failed(&mut self, ip: IpAddr, now_ms: u64) {
        let t = (self.tokens(ip, now_ms) - 1.0).max(0.0);
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&ip) {
            let (burst, refill) = (self.burst, self.refill);
            self.buckets
                .retain(|_, (t, at)| *t + now_ms.saturating_sub(*at) as f64 / 1000.0 * refill < burst);
            if self.buckets.len() >= MAX_TRACKED {
                self.buckets.clear();
            }
        }
        self.buckets.insert(ip, (t, now_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_empty_one_address_only_and_refill() {
        let mut l = FailureLimit::new(3, 1.0);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(l.check(a, 0), Ok(()));
            l.failed(a, 0);
        }
        assert_eq!(l.check(a, 0), Err(1));
        assert_eq!(l.check(b, 0), Ok(()), "another address is not affected");
        assert_eq!(l.check(a, 999), Err(1));
        assert_eq!(l.check(a, 1000), Ok(()), "one token back after a second");
        l.failed(a, 1000);
        assert_eq!(l.check(a, 1000), Err(1));
        assert_eq!(l.check(a, 60_000), Ok(()));
        assert!((l.tokens(a, 600_000) - 3.0).abs() < 1e-9, "never above the burst");
    }
}
