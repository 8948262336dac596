//! Counters for /metrics. Plain atomics: cheap to bump from the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

use super::wire::Reject;

#[derive(Debug, Default)]
pub struct Metrics {
    pub packets_sent: AtomicU64,
    pub packets_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    rejected: [AtomicU64; Reject::ALL.len()],
    pub pushpull_ok: AtomicU64,
    pub pushpull_failed: AtomicU64,
    /// Push-pull accepts that failed (out of descriptors, mostly); each backs off.
    pub accept_errors: AtomicU64,
    pub foca_errors: AtomicU64,
}

impl Metrics {
    pub fn reject(&self, r: Reject) {
        self.rejected[r.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejected[r.index()].load(Ordering::Relaxed)
    }

    pub fn rejected_total(&self) -> u64 {
        Reject::ALL.iter().map(|r| self.rejected(*r)).sum()
    }

    pub fn inc(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
