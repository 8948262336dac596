//! Ring timings. Every one is a `warren sup run` flag.

use std::time::Duration;

/// Timings and sizes of the ring. Defaults suit a LAN and are faster than Habitat's (probe
/// 3.1 s, ping timeout 1 s, gossip 1 s): probe every 500 ms, ping timeout 200 ms, suspicion
/// 3 × max(1, log10 N) probe periods once another member confirms it (up to 6× that
/// without confirmations), gossip every 100 ms to 3 members, each update piggybacked up to
/// 12 times, TCP push-pull every 5 s. On 16 members a kill is confirmed by all in ~3 s.
#[derive(Debug, Clone)]
pub struct RingConfig {
    pub probe_interval: Duration,
    pub ping_timeout: Duration,
    pub suspicion_mult: u32,
    /// Longest suspicion, as a multiple of the shortest (used with no confirmations).
    pub suspicion_max_mult: u32,
    pub gossip_interval: Duration,
    pub gossip_fanout: usize,
    pub indirect_probes: usize,
    pub max_transmissions: u8,
    pub pushpull_interval: Duration,
    pub max_packet_size: usize,
    /// Count cap and byte budget of the rumor store.
    pub rumor_limits: super::rumor::RumorLimits,
    /// How long a departed member's tombstone and rumors are kept; after it the id may rejoin.
    pub departed_retention: Duration,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            probe_interval: Duration::from_millis(500),
            ping_timeout: Duration::from_millis(200),
            suspicion_mult: 3,
            suspicion_max_mult: 6,
            gossip_interval: Duration::from_millis(100),
            gossip_fanout: 3,
            indirect_probes: 3,
            max_transmissions: 12,
            pushpull_interval: Duration::from_secs(5),
            max_packet_size: 1400,
            rumor_limits: super::rumor::RumorLimits::default(),
            departed_retention: Duration::from_secs(24 * 3600),
        }
    }
}

impl RingConfig {
    /// HashiCorp Serf's LAN defaults, for benchmarks.
    pub fn serf_like() -> Self {
        RingConfig {
            probe_interval: Duration::from_millis(1000),
            ping_timeout: Duration::from_millis(500),
            suspicion_mult: 4,
            gossip_interval: Duration::from_millis(200),
            pushpull_interval: Duration::from_secs(30),
            ..RingConfig::default()
        }
    }

    /// Upper bound on "killed → confirmed by every live member": a full probe round
    /// (each member probes round-robin), the longest suspicion, and gossip of the verdict.
    pub fn detection_bound(&self, members: usize) -> Duration {
        let min = super::suspicion::min_timeout(self.suspicion_mult, members, self.probe_interval);
        let max = min * self.suspicion_max_mult.max(1);
        self.probe_interval * (members as u32 + 1)
            + self.ping_timeout
            + max
            + self.gossip_interval * u32::from(self.max_transmissions)
            + self.pushpull_interval
    }
}
