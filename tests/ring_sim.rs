//! Deterministic simulation of the sans-io ring core: no sockets, a virtual clock, a seeded
//! network with loss, kills and partitions. Drives the exact `RingCore` the supervisor runs.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::rng::Rng;
use warren::crypto::RingKey;
use warren::ring::proto;
use warren::ring::{CoreParams, Health, Ident, Keyring, MemberId, Output, RingConfig, RingCore, Rumor};

struct Sim {
    cores: Vec<RingCore>,
    idents: Vec<Ident>,
    index: HashMap<SocketAddr, usize>,
    alive: Vec<bool>,
    /// Partition group per member: packets only flow within a group.
    group: Vec<u8>,
    loss: f64,
    rng: Rng,
    now: Duration,
    in_flight: Vec<(Duration, usize, Vec<u8>)>,
    step: Duration,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8), 9638))
}

impl Sim {
    /// `advertise`: run `start()` on every core (member rumors); a 1000-member run skips it
    /// so the start-up flood of member rumors does not dominate the measurement.
    fn new(n: usize, cfg: RingConfig, keyring: Keyring, loss: f64, seed: u64, advertise: bool) -> Sim {
        let idents: Vec<Ident> = (0..n)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                id[8..].copy_from_slice(&seed.to_be_bytes());
                Ident { id: MemberId(id), addr: addr(i), generation: 1, persistent: false }
            })
            .collect();
        let mut cores: Vec<RingCore> = idents
            .iter()
            .enumerate()
            .map(|(i, id)| {
                RingCore::new(CoreParams {
                    id: id.id,
                    addr: id.addr,
                    generation: 1,
                    persistent: false,
                    config: cfg.clone(),
                    keyring: keyring.clone(),
                    peers: vec![addr(0)],
                    seed: seed.wrapping_mul(1000).wrapping_add(i as u64),
                    http_port: 0,
                    restored: None,
                })
            })
            .collect();
        for c in cores.iter_mut() {
            c.assume_members(idents.clone());
            if advertise {
                c.start(Duration::ZERO);
            } else {
                // Everyone already knows everyone: skip the join-time push-pull too.
                c.take_outputs();
            }
        }
        Sim {
            index: idents.iter().enumerate().map(|(i, id)| (id.addr, i)).collect(),
            idents,
            alive: vec![true; n],
            group: vec![0; n],
            cores,
            loss,
            rng: Rng::new(seed),
            now: Duration::ZERO,
            in_flight: Vec::new(),
            step: Duration::from_millis(10),
        }
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.alive[a] && self.alive[b] && self.group[a] == self.group[b]
    }

    fn collect(&mut self, i: usize) {
        for out in self.cores[i].take_outputs() {
            match out {
                Output::Datagram { to, bytes } => {
                    let Some(&j) = self.index.get(&to) else { continue };
                    if !self.connected(i, j) || self.rng.chance(self.loss) {
                        continue;
                    }
                    let latency = Duration::from_micros(500 + self.rng.below(4500) as u64);
                    self.in_flight.push((self.now + latency, j, bytes));
                }
                Output::PushPull { to } => {
                    // TCP: reliable, but only between connected members.
                    let Some(&j) = self.index.get(&to) else { continue };
                    if i == j || !self.connected(i, j) {
                        continue;
                    }
                    let req = self.cores[i].pushpull_sealed();
                    if req.iter().all(|f| self.cores[j].handle_pushpull(self.now, f).is_ok()) {
                        for f in self.cores[j].pushpull_sealed() {
                            let _ = self.cores[i].handle_pushpull(self.now, &f);
                        }
                    }
                    self.collect(j);
                }
                Output::SaveState | Output::Departed | Output::Event(_) => {}
            }
        }
    }

    fn run_for(&mut self, d: Duration, mut check: impl FnMut(&Sim)) {
        let end = self.now + d;
        while self.now < end {
            self.now += self.step;
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.in_flight).into_iter().partition(|p| p.0 <= now);
            self.in_flight = later;
            for (_, j, bytes) in due {
                if self.alive[j] {
                    self.cores[j].handle_datagram(now, &bytes);
                    self.collect(j);
                }
            }
            for i in 0..self.cores.len() {
                if self.alive[i] && self.cores[i].next_deadline() <= now {
                    self.cores[i].tick(now);
                    self.collect(i);
                }
            }
            check(self);
        }
    }

    fn health(&self, observer: usize, member: usize) -> Option<Health> {
        let id = self.idents[member].id;
        self.cores[observer].members().into_iter().find(|m| m.ident.id == id).map(|m| m.health)
    }

    fn has_rumor(&self, i: usize, group: &str) -> bool {
        let key = warren::ring::rumor::RumorKey {
            kind: warren::ring::RumorKind::ServiceConfig,
            a: group.to_string(),
            b: String::new(),
        };
        self.cores[i].with_store(|s| s.get(&key).is_some())
    }
}

fn log3_ceil(n: usize) -> u32 {
    let mut r = 0;
    let mut p = 1usize;
    while p < n {
        p *= 3;
        r += 1;
    }
    r
}

#[test]
fn a_rumor_reaches_all_of_1000_members_under_10_percent_loss() {
    let n = 1000;
    let cfg = RingConfig {
        // Probing is not what this measures; slow it so the run stays quick.
        probe_interval: Duration::from_secs(5),
        ping_timeout: Duration::from_secs(2),
        gossip_interval: Duration::from_millis(100),
        pushpull_interval: Duration::from_secs(3600),
        ..RingConfig::default()
    };
    let mut sim = Sim::new(n, cfg.clone(), Keyring::none(), 0.10, 42, false);
    sim.run_for(Duration::from_secs(1), |_| {});
    let rumor = Rumor::ServiceConfig(proto::ServiceConfigRumor {
        from_id: "sim".into(),
        service_group: "web.default".into(),
        incarnation: 1,
        encrypted: false,
        config: b"port = 80".to_vec(),
    });
    let start = sim.now;
    assert!(sim.cores[0].inject(rumor).unwrap());
    sim.collect(0);
    let mut reached_at: Option<Duration> = None;
    let mut done = vec![false; n];
    let mut have = 0;
    while reached_at.is_none() && sim.now < start + Duration::from_secs(10) {
        sim.run_for(Duration::from_millis(10), |_| {});
        for (i, d) in done.iter_mut().enumerate() {
            *d = *d || sim.has_rumor(i, "web.default");
        }
        have = done.iter().filter(|d| **d).count();
        if have == n {
            reached_at = Some(sim.now - start);
        }
    }
    let took = reached_at.unwrap_or_else(|| panic!("only {have}/{n} members got the rumor"));
    let rounds = took.as_millis().div_ceil(cfg.gossip_interval.as_millis());
    // Simulated time, deterministic for the seed: an epidemic with fanout 3 covers N members
    // in about log3(N) rounds; twice that allows for 10% loss and the tail, while a spread
    // that degraded towards linear (or lost the eager push) fails here.
    let bound = 2 * u128::from(log3_ceil(n));
    assert!(rounds <= bound, "{rounds} gossip rounds to reach {n} members, over 2 x ceil(log3 N) = {bound}");
    println!(
        "sim: rumor reached {n}/{n} members (10% loss) in {took:?} = {rounds} gossip intervals (eager push, then gossip every {:?}); ceil(log3 N) = {}",
        cfg.gossip_interval,
        log3_ceil(n)
    );
}

/// Every `check_every`, no live member may hold another live member, reachable from it and
/// able to talk to a majority, as confirmed dead.
fn no_false_positives(s: &Sim) -> Result<(), String> {
    let n = s.cores.len();
    for (o, core) in s.cores.iter().enumerate() {
        if !s.alive[o] {
            continue;
        }
        for m in core.members() {
            if m.health != Health::Confirmed {
                continue;
            }
            let Some(j) = s.idents.iter().position(|i| i.id == m.ident.id) else { continue };
            let majority = (0..n).filter(|k| s.connected(j, *k)).count() > n / 2;
            if s.alive[j] && s.connected(o, j) && majority {
                return Err(format!("at {:?} member {o} holds live member {j} as confirmed", s.now));
            }
        }
    }
    Ok(())
}

fn sim_config() -> RingConfig {
    RingConfig {
        probe_interval: Duration::from_millis(500),
        ping_timeout: Duration::from_millis(200),
        suspicion_mult: 3,
        gossip_interval: Duration::from_millis(100),
        pushpull_interval: Duration::from_secs(5),
        ..RingConfig::default()
    }
}

#[test]
fn random_kills_are_confirmed_by_every_live_member_within_the_bound() {
    let n = 16;
    let cfg = sim_config();
    let bound = cfg.detection_bound(n);
    let key = Keyring::with_primary(RingKey::generate("sim").unwrap());
    let mut worst = Duration::ZERO;
    for seed in 1..=8u64 {
        let mut sim = Sim::new(n, cfg.clone(), key.clone(), 0.05, seed, true);
        sim.run_for(Duration::from_secs(2), |_| {});
        let mut kills: BTreeMap<usize, Duration> = BTreeMap::new();
        let mut violation = None;
        for _ in 0..3 {
            let victim = 1 + sim.rng.below(n - 1);
            if kills.contains_key(&victim) {
                continue;
            }
            sim.alive[victim] = false;
            kills.insert(victim, sim.now);
            let gap = Duration::from_millis(200 + sim.rng.below(3000) as u64);
            sim.run_for(gap, |s| {
                if violation.is_none() && s.now.as_millis() % 500 == 0 {
                    violation = no_false_positives(s).err();
                }
            });
        }
        let last_kill = kills.values().max().copied().unwrap_or_default();
        let mut confirmed_at: BTreeMap<usize, Duration> = BTreeMap::new();
        sim.run_for(last_kill + bound - sim.now.min(last_kill + bound), |s| {
            if s.now.as_millis() % 100 != 0 {
                return;
            }
            for (&v, _) in kills.iter() {
                if confirmed_at.contains_key(&v) {
                    continue;
                }
                let all = (0..n).filter(|o| s.alive[*o]).all(|o| s.health(o, v) == Some(Health::Confirmed));
                if all {
                    confirmed_at.insert(v, s.now);
                }
            }
            if violation.is_none() && s.now.as_millis() % 500 == 0 {
                violation = no_false_positives(s).err();
            }
        });
        assert!(violation.is_none(), "seed {seed}: {violation:?}");
        for (v, killed) in &kills {
            let at = confirmed_at
                .get(v)
                .unwrap_or_else(|| panic!("seed {seed}: member {v} never confirmed by all"));
            let took = *at - *killed;
            assert!(took <= bound, "seed {seed}: member {v} confirmed after {took:?} > bound {bound:?}");
            worst = worst.max(took);
        }
    }
    println!("sim: {n} members, 5% loss: worst kill→confirmed-by-all {worst:?} (bound {bound:?})");
}

#[test]
fn partitions_never_condemn_the_majority_and_heal() {
    let n = 15;
    let cfg = sim_config();
    for seed in 10..=17u64 {
        let mut sim = Sim::new(n, cfg.clone(), Keyring::none(), 0.01, seed, true);
        sim.run_for(Duration::from_secs(2), |_| {});
        // Split a random minority off for a while.
        let minority = 1 + sim.rng.below(n / 2 - 1);
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = sim.rng.below(i + 1);
            order.swap(i, j);
        }
        for &i in &order[..minority] {
            sim.group[i] = 1;
        }
        let mut violation = None;
        let split_for = Duration::from_secs(10 + sim.rng.below(10) as u64);
        sim.run_for(split_for, |s| {
            if violation.is_none() && s.now.as_millis() % 250 == 0 {
                violation = no_false_positives(s).err();
            }
        });
        assert!(violation.is_none(), "seed {seed}: {violation:?}");
        // The majority confirmed the cut-off members; the minority members are still alive.
        let maj = order[minority];
        for &i in &order[..minority] {
            assert_eq!(sim.health(maj, i), Some(Health::Confirmed), "seed {seed}: majority confirms {i}");
        }
        // Heal: everyone is alive in everyone's view again.
        sim.group = vec![0; n];
        let mut healed = None;
        let start = sim.now;
        sim.run_for(Duration::from_secs(60), |s| {
            if healed.is_some() || s.now.as_millis() % 500 != 0 {
                return;
            }
            let ok = (0..n).all(|o| (0..n).all(|m| s.health(o, m) == Some(Health::Alive)));
            if ok {
                healed = Some(s.now - start);
            }
        });
        let healed = healed.unwrap_or_else(|| panic!("seed {seed}: the ring did not heal"));
        println!(
            "sim: seed {seed}: {minority}/{n} cut off for {split_for:?}, healed {healed:?} after the cut ended"
        );
    }
}
