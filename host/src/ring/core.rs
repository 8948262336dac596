//! The sans-io ring core: foca plus encryption, Lifeguard suspicion, rumors, push-pull and
//! permanent peers. Inputs are datagrams, push-pull frames, injected rumors and the clock
//! (`now`, time since start); outputs are datagrams and requests to the shell. No sockets,
//! no tokio: the simulation drives thousands of these deterministically.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{Foca, Member, Notification, PeriodicParams, State, Timer};
use prost::Message as _;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::codec::{ProtoCodec, member_from_proto, member_to_proto};
use super::config::RingConfig;
use super::handler::{Handler, Inbound, Shared, lock};
use super::identity::{Ident, MemberId};
use super::metrics::Metrics;
use super::proto;
use super::rumor::{Rumor, RumorError, RumorStore};
use super::suspicion::{Suspicion, min_timeout};
use super::wire::{Keyring, MAX_DATAGRAM, MAX_FRAME, Reject};

type RingFoca = Foca<Ident, ProtoCodec, SmallRng, Handler>;

/// Encoded rumors up to this size ride on SWIM packets; bigger ones travel by push-pull only.
pub const PIGGYBACK_MAX: usize = 1000;

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Datagram {
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Open a TCP push-pull exchange with this member.
    PushPull {
        to: SocketAddr,
    },
    /// Our generation or incarnation changed: persist `persisted_state()`.
    SaveState,
    /// This member was departed from the ring: stop.
    Departed,
}

/// A member's health as Habitat names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Health {
    Alive,
    Suspect,
    Confirmed,
    Departed,
}

impl Health {
    pub const ALL: [Health; 4] = [Health::Alive, Health::Suspect, Health::Confirmed, Health::Departed];
    pub fn label(self) -> &'static str {
        match self {
            Health::Alive => "alive",
            Health::Suspect => "suspect",
            Health::Confirmed => "confirmed",
            Health::Departed => "departed",
        }
    }
}

/// One member as this supervisor sees it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub ident: Ident,
    /// generation + SWIM incarnation: grows on every refutation and every restart.
    pub incarnation: u64,
    pub health: Health,
}

/// Everything needed to build a core.
#[derive(Debug, Clone)]
pub struct CoreParams {
    pub id: MemberId,
    pub addr: SocketAddr,
    pub generation: u32,
    pub persistent: bool,
    pub config: RingConfig,
    pub keyring: Keyring,
    pub peers: Vec<SocketAddr>,
    pub seed: u64,
    /// The HTTP gateway port, advertised in our member rumor.
    pub http_port: u16,
}

#[derive(Default)]
struct Acc {
    sends: Vec<(Ident, Vec<u8>)>,
    timers: Vec<(Duration, Timer<Ident>)>,
    notes: Vec<Note>,
}

enum Note {
    Up(Ident),
    Down(Ident),
    Active,
    Defunct,
    ProbeFailed(Ident),
}

impl foca::Runtime<Ident> for Acc {
    fn notify(&mut self, n: Notification<'_, Ident>) {
        let note = match n {
            Notification::MemberUp(id) => Note::Up(id.clone()),
            Notification::MemberDown(id) => Note::Down(id.clone()),
            Notification::Active => Note::Active,
            Notification::Defunct => Note::Defunct,
            Notification::ProbeFailed(_, id) => Note::ProbeFailed(id.clone()),
            _ => return,
        };
        self.notes.push(note);
    }

    fn send_to(&mut self, to: Ident, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<Ident>, after: Duration) {
        self.timers.push((after, event));
    }
}

pub struct RingCore {
    me: Ident,
    cfg: RingConfig,
    foca: RingFoca,
    acc: Acc,
    keyring: Keyring,
    shared: Arc<Mutex<Shared>>,
    own_incarnation: Arc<AtomicU32>,
    seen_incarnation: u32,
    timers: BinaryHeap<Reverse<(Duration, u64)>>,
    timer_map: HashMap<u64, Timer<Ident>>,
    timer_seq: u64,
    suspicions: HashMap<Ident, (u16, u8, Suspicion)>,
    confirmations: HashMap<(Ident, u16), HashSet<MemberId>>,
    peers: Vec<SocketAddr>,
    next_announce: Duration,
    next_pushpull: Duration,
    rng: SmallRng,
    out: Vec<Output>,
    metrics: Arc<Metrics>,
    departed: bool,
    told_departed: HashMap<MemberId, Duration>,
    http_port: u16,
    now: Duration,
}

fn foca_config(cfg: &RingConfig, members: usize) -> foca::Config {
    let min = min_timeout(cfg.suspicion_mult, members, cfg.probe_interval);
    let mut c = foca::Config::simple();
    c.probe_period = cfg.probe_interval;
    c.probe_rtt = cfg.ping_timeout;
    c.num_indirect_probes = NonZeroUsize::new(cfg.indirect_probes.max(1)).unwrap_or(NonZeroUsize::MIN);
    c.max_transmissions = NonZeroU8::new(cfg.max_transmissions.max(12)).unwrap_or(NonZeroU8::MAX);
    // The core delivers ChangeSuspectToDown itself (Lifeguard), never later than this.
    c.suspect_to_down_after = min * cfg.suspicion_max_mult.max(1);
    c.remove_down_after = Some(Duration::from_secs(24 * 3600));
    c.max_packet_size = NonZeroUsize::new(cfg.max_packet_size.max(512)).unwrap_or(NonZeroUsize::MIN);
    c.notify_down_members = true;
    c.periodic_announce =
        Some(PeriodicParams { frequency: cfg.probe_interval * 10, num_members: NonZeroUsize::MIN });
    c.periodic_announce_to_down_members = Some(PeriodicParams {
        frequency: cfg.probe_interval * 5,
        num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
    });
    c.periodic_gossip = Some(PeriodicParams {
        frequency: cfg.gossip_interval,
        num_members: NonZeroUsize::new(cfg.gossip_fanout.max(1)).unwrap_or(NonZeroUsize::MIN),
    });
    c
}

impl RingCore {
    pub fn new(p: CoreParams) -> Self {
        let me = Ident { id: p.id, addr: p.addr, generation: p.generation, persistent: p.persistent };
        let shared = Arc::new(Mutex::new(Shared::default()));
        let own_incarnation = Arc::new(AtomicU32::new(0));
        let foca = Foca::with_custom_broadcast(
            me.clone(),
            foca_config(&p.config, 1),
            SmallRng::seed_from_u64(p.seed),
            ProtoCodec::new(p.id, own_incarnation.clone()),
            Handler { shared: shared.clone() },
        );
        RingCore {
            me,
            foca,
            acc: Acc::default(),
            keyring: p.keyring,
            shared,
            own_incarnation,
            seen_incarnation: 0,
            timers: BinaryHeap::new(),
            timer_map: HashMap::new(),
            timer_seq: 0,
            suspicions: HashMap::new(),
            confirmations: HashMap::new(),
            peers: p.peers,
            next_announce: Duration::ZERO,
            next_pushpull: p.config.pushpull_interval,
            rng: SmallRng::seed_from_u64(p.seed ^ 0x9e37_79b9_7f4a_7c15),
            out: Vec::new(),
            metrics: Arc::new(Metrics::default()),
            departed: false,
            told_departed: HashMap::new(),
            http_port: p.http_port,
            now: Duration::ZERO,
            cfg: p.config,
        }
    }

    pub fn identity(&self) -> &Ident {
        &self.me
    }

    pub fn config(&self) -> &RingConfig {
        &self.cfg
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub fn keyring_mut(&mut self) -> &mut Keyring {
        &mut self.keyring
    }

    pub fn is_departed(&self) -> bool {
        self.departed
    }

    /// Runs `f` on the rumor store (read-only use: merges go through `inject`).
    pub fn with_store<R>(&self, f: impl FnOnce(&RumorStore) -> R) -> R {
        f(&lock(&self.shared).store)
    }

    pub fn store_mut<R>(&self, f: impl FnOnce(&mut RumorStore) -> R) -> R {
        f(&mut lock(&self.shared).store)
    }

    /// Our generation + SWIM incarnation (what others see as our incarnation).
    pub fn incarnation(&self) -> u64 {
        u64::from(self.me.generation) + u64::from(self.own_incarnation.load(Ordering::Relaxed))
    }

    /// (generation, incarnation) to persist.
    pub fn persisted_state(&self) -> (u32, u32) {
        (self.me.generation, self.own_incarnation.load(Ordering::Relaxed))
    }

    /// Joins: announces to every peer and advertises our member rumor.
    pub fn start(&mut self, now: Duration) {
        self.now = now;
        if self.with_store(|s| s.is_departed(&self.me.id.to_string())) {
            self.departed = true;
            self.out.push(Output::Departed);
            return;
        }
        self.advertise_self();
        self.announce_to_peers();
        self.next_announce = now + self.cfg.probe_interval * 2;
        self.drain();
    }

    fn advertise_self(&mut self) {
        let rumor = Rumor::Member(proto::MemberRumor {
            id: self.me.id.to_string(),
            address: self.me.addr.ip().to_string(),
            gossip_port: u32::from(self.me.addr.port()),
            http_port: u32::from(self.http_port),
            incarnation: self.incarnation(),
            persistent: self.me.persistent,
        });
        let _ = self.inject_inner(rumor);
    }

    fn announce_to_peers(&mut self) {
        let active: HashSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        let peers: Vec<SocketAddr> =
            self.peers.iter().copied().filter(|p| *p != self.me.addr && !active.contains(p)).collect();
        for p in peers {
            let _ = self.foca.announce(Ident::placeholder(p), &mut self.acc);
        }
        // Permanent peers are probed even once confirmed, so a healed partition rejoins.
        let persistent_down: Vec<Ident> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == State::Down && m.id().persistent)
            .map(|m| m.id().clone())
            .collect();
        let mut latest: HashMap<MemberId, u32> = HashMap::new();
        for m in self.foca.iter_membership_state() {
            let g = latest.entry(m.id().id).or_insert(0);
            *g = (*g).max(m.id().generation);
        }
        for id in persistent_down {
            if latest.get(&id.id) == Some(&id.generation) && !self.is_departed_id(&id.id) {
                let _ = self.foca.announce(id, &mut self.acc);
            }
        }
    }

    fn is_departed_id(&self, id: &MemberId) -> bool {
        self.with_store(|s| s.is_departed(&id.to_string()))
    }

    /// Adds members as alive without gossiping about them (bootstraps a simulation or a
    /// member that learned the ring out of band).
    pub fn assume_members(&mut self, members: Vec<Ident>) {
        let updates = members.into_iter().filter(|m| m.id != self.me.id).map(Member::alive);
        let _ = self.foca.apply_many(updates, false, &mut self.acc);
        self.drain();
    }

    /// The next instant `tick` has work to do.
    pub fn next_deadline(&self) -> Duration {
        let mut d = self.next_announce.min(self.next_pushpull);
        if let Some(Reverse((t, _))) = self.timers.peek() {
            d = d.min(*t);
        }
        for (_, _, s) in self.suspicions.values() {
            d = d.min(s.deadline());
        }
        d
    }

    /// Fires every timer that is due.
    pub fn tick(&mut self, now: Duration) {
        self.now = now;
        if self.departed {
            return;
        }
        while let Some(Reverse((t, seq))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(timer) = self.timer_map.remove(&seq)
                && let Err(e) = self.foca.handle_timer(timer, &mut self.acc)
            {
                Metrics::inc(&self.metrics.foca_errors, 1);
                tracing::trace!(error = %e, "foca timer");
            }
            self.drain();
        }
        let due: Vec<Ident> = self
            .suspicions
            .iter()
            .filter(|(_, (_, _, s))| s.deadline() <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for member_id in due {
            if let Some((incarnation, token, _)) = self.suspicions.remove(&member_id) {
                let timer = Timer::ChangeSuspectToDown { member_id, incarnation, token };
                let _ = self.foca.handle_timer(timer, &mut self.acc);
                self.drain();
            }
        }
        if now >= self.next_announce {
            self.next_announce = now + self.cfg.probe_interval * 2;
            self.announce_to_peers();
            self.drain();
        }
        if now >= self.next_pushpull {
            self.next_pushpull = now + self.cfg.pushpull_interval;
            self.request_pushpull();
        }
    }

    fn request_pushpull(&mut self) {
        let members: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        if !members.is_empty() {
            let to = members[self.rng.random_range(0..members.len())];
            self.out.push(Output::PushPull { to });
        } else if let Some(p) = self.peers.iter().find(|p| **p != self.me.addr) {
            self.out.push(Output::PushPull { to: *p });
        }
    }

    /// Handles one datagram from the network. Never panics; bad input is counted and dropped.
    pub fn handle_datagram(&mut self, now: Duration, bytes: &[u8]) {
        self.now = now;
        if self.departed {
            return;
        }
        let payload = match self.keyring.open(bytes, MAX_DATAGRAM) {
            Ok(p) => p,
            Err(r) => return self.reject(r),
        };
        // Peek at the header: departed members are shunned, and an announce addressed to us
        // by address only (a `--peer`) is readdressed to our identity so foca accepts it.
        let mut peek = payload.as_slice();
        let mut header = match proto::SwimHeader::decode_length_delimited(&mut peek) {
            Ok(h) => h,
            Err(_) => return self.reject(Reject::Decode),
        };
        if let Some(src) = header.src.as_ref().and_then(Ident::from_proto)
            && self.is_departed_id(&src.id)
        {
            // Tell it (by push-pull, at most once a probe interval) so it stops.
            let last = self.told_departed.get(&src.id).copied();
            if last.is_none_or(|t| now >= t + self.cfg.probe_interval) {
                self.told_departed.insert(src.id, now);
                self.out.push(Output::PushPull { to: src.addr });
            }
            return self.reject(Reject::Departed);
        }
        let to_placeholder = header.dst.as_ref().is_some_and(|d| d.member_id == MemberId::UNKNOWN.0);
        let payload = if to_placeholder && header.kind == proto::SwimKind::Announce as i32 {
            let rest = peek;
            header.dst = Some(self.me.to_proto());
            let mut readdressed = header.encode_length_delimited_to_vec();
            readdressed.extend_from_slice(rest);
            readdressed
        } else {
            payload
        };
        Metrics::inc(&self.metrics.packets_received, 1);
        Metrics::inc(&self.metrics.bytes_received, bytes.len() as u64);
        if let Err(e) = self.foca.handle_data(&payload, &mut self.acc) {
            match e {
                foca::Error::Decode(_) | foca::Error::MalformedPacket | foca::Error::DataTooBig => {
                    self.reject(Reject::Decode)
                }
                _ => {
                    Metrics::inc(&self.metrics.foca_errors, 1);
                    tracing::trace!(error = %e, "foca rejected a packet");
                }
            }
        }
        self.drain();
    }

    fn reject(&mut self, r: Reject) {
        self.metrics.reject(r);
        tracing::debug!(reason = r.label(), "dropped a ring packet");
    }

    /// Spreads a rumor from this member. Returns whether it was news.
    pub fn inject(&mut self, rumor: Rumor) -> Result<bool, RumorError> {
        let news = self.inject_inner(rumor)?;
        self.drain();
        Ok(news)
    }

    fn inject_inner(&mut self, rumor: Rumor) -> Result<bool, RumorError> {
        let bytes = rumor.encode();
        if bytes.len() > super::rumor::MAX_RUMOR_LEN {
            return Err(RumorError::TooLarge(bytes.len()));
        }
        let stored = lock(&self.shared).store.merge(rumor, true)?;
        let Some(stored) = stored else { return Ok(false) };
        if let Rumor::Departure(d) = &stored {
            lock(&self.shared).inbox.push(Inbound::Departure(d.member_id.clone()));
        }
        self.piggyback(&stored);
        Ok(true)
    }

    fn piggyback(&mut self, rumor: &Rumor) {
        let bytes = rumor.encode();
        if bytes.len() <= PIGGYBACK_MAX {
            let _ = self.foca.add_broadcast(&bytes);
        } else {
            // Too big to ride on SWIM packets: push it now instead of waiting for the period.
            self.request_pushpull();
        }
    }

    /// Departs a member from the ring for good (`warren sup depart`).
    pub fn depart(&mut self, member: MemberId) -> Result<bool, RumorError> {
        self.inject(Rumor::Departure(proto::DepartureRumor { member_id: member.to_string() }))
    }

    /// Our full state, sealed, for a push-pull exchange.
    pub fn pushpull_message(&self) -> Vec<u8> {
        let msg = proto::PushPull {
            from: Some(self.me.to_proto()),
            members: self.foca.iter_membership_state().map(member_to_proto).collect(),
            rumors: self.with_store(|s| s.iter().map(Rumor::to_proto).collect()),
        };
        self.keyring.seal(&msg.encode_to_vec())
    }

    /// Merges a peer's push-pull frame.
    pub fn handle_pushpull(&mut self, now: Duration, bytes: &[u8]) -> Result<(), Reject> {
        self.now = now;
        if self.departed {
            return Ok(());
        }
        let payload = self.keyring.open(bytes, MAX_FRAME).inspect_err(|r| self.reject(*r))?;
        let msg = proto::PushPull::decode(payload.as_slice())
            .map_err(|_| Reject::Decode)
            .inspect_err(|r| self.reject(*r))?;
        let from = msg
            .from
            .as_ref()
            .and_then(Ident::from_proto)
            .ok_or(Reject::Decode)
            .inspect_err(|r| self.reject(*r))?;
        if self.is_departed_id(&from.id) {
            self.reject(Reject::Departed);
            return Err(Reject::Departed);
        }
        let mut updates = Vec::with_capacity(msg.members.len() + 1);
        updates.push(Member::new(from, 0, State::Alive));
        for m in &msg.members {
            match member_from_proto(m) {
                Ok(m) if !self.is_departed_id(&m.id().id) => updates.push(m),
                Ok(_) => {}
                Err(_) => {
                    self.reject(Reject::Decode);
                    return Err(Reject::Decode);
                }
            }
        }
        if let Err(e) = self.foca.apply_many(updates.into_iter(), true, &mut self.acc) {
            Metrics::inc(&self.metrics.foca_errors, 1);
            tracing::trace!(error = %e, "push-pull membership");
        }
        for p in msg.rumors {
            let Ok(Some(rumor)) = Rumor::from_proto(p) else { continue };
            let merged = lock(&self.shared).store.merge(rumor, false);
            if let Ok(Some(stored)) = merged {
                if let Rumor::Departure(d) = &stored {
                    lock(&self.shared).inbox.push(Inbound::Departure(d.member_id.clone()));
                }
                if stored.encode().len() <= PIGGYBACK_MAX {
                    let _ = self.foca.add_broadcast(&stored.encode());
                }
            }
        }
        Metrics::inc(&self.metrics.pushpull_ok, 1);
        self.drain();
        Ok(())
    }

    /// Takes what the shell must do.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// Every known member (latest generation of each id), ourselves included.
    pub fn members(&self) -> Vec<MemberView> {
        let mut by_id: HashMap<MemberId, MemberView> = HashMap::new();
        let departed: HashSet<String> = self.with_store(|s| {
            s.of_kind(super::rumor::RumorKind::Departure)
                .filter_map(|r| match r {
                    Rumor::Departure(d) => Some(d.member_id.clone()),
                    _ => None,
                })
                .collect()
        });
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            let health = if departed.contains(&id.id.to_string()) {
                Health::Departed
            } else {
                match m.state() {
                    State::Alive => Health::Alive,
                    State::Suspect => Health::Suspect,
                    State::Down => Health::Confirmed,
                }
            };
            let view = MemberView {
                ident: id.clone(),
                incarnation: u64::from(id.generation) + u64::from(m.incarnation()),
                health,
            };
            match by_id.get(&id.id) {
                Some(old) if old.ident.generation > id.generation => {}
                _ => {
                    by_id.insert(id.id, view);
                }
            }
        }
        by_id.insert(
            self.me.id,
            MemberView {
                ident: self.me.clone(),
                incarnation: self.incarnation(),
                health: if self.departed { Health::Departed } else { Health::Alive },
            },
        );
        let mut v: Vec<MemberView> = by_id.into_values().collect();
        v.sort_by_key(|m| m.ident.id);
        v
    }

    fn schedule(&mut self, after: Duration, timer: Timer<Ident>) {
        self.timer_seq += 1;
        self.timers.push(Reverse((self.now + after, self.timer_seq)));
        self.timer_map.insert(self.timer_seq, timer);
    }

    fn active_count(&self) -> usize {
        self.foca.num_members() + 1
    }

    fn start_suspicion(&mut self, member: Ident, incarnation: u16, token: u8) {
        // foca re-submits the timer each time it probes a member that is still suspect: keep
        // the running suspicion (and its start) instead of restarting it.
        if let Some((inc, tok, _)) = self.suspicions.get_mut(&member)
            && *inc == incarnation
        {
            *tok = token;
            return;
        }
        let n = self.active_count();
        let min = min_timeout(self.cfg.suspicion_mult, n, self.cfg.probe_interval);
        let max = min * self.cfg.suspicion_max_mult.max(1);
        // memberlist: k = mult - 2 expected confirmations, none if the cluster is too small.
        let mut k = self.cfg.suspicion_mult.saturating_sub(2);
        if (n as u32).saturating_sub(2) < k {
            k = 0;
        }
        let mut s = Suspicion::new(self.now, min, max, k);
        if let Some(confirmers) = self.confirmations.get(&(member.clone(), incarnation)) {
            for c in confirmers {
                s.confirm(*c);
            }
        }
        // Tell the others we independently suspect it.
        let rumor = proto::Rumor {
            body: Some(proto::rumor::Body::Suspicion(proto::SuspicionRumor {
                target: Some(member.to_proto()),
                incarnation: u32::from(incarnation),
                from: self.me.id.0.to_vec(),
            })),
        };
        let _ = self.foca.add_broadcast(&rumor.encode_to_vec());
        self.suspicions.insert(member, (incarnation, token, s));
    }

    fn on_suspicion(&mut self, s: proto::SuspicionRumor) {
        let (Some(target), Some(from)) =
            (s.target.as_ref().and_then(Ident::from_proto), MemberId::from_slice(&s.from))
        else {
            return;
        };
        if from == self.me.id || target.id == self.me.id {
            return;
        }
        let Ok(inc) = u16::try_from(s.incarnation) else { return };
        if let Some((i, _, sus)) = self.suspicions.get_mut(&target)
            && *i == inc
        {
            sus.confirm(from);
        }
        if self.confirmations.len() > 10_000 {
            self.confirmations.clear();
        }
        self.confirmations.entry((target, inc)).or_default().insert(from);
    }

    fn on_departure(&mut self, member_id: String) {
        let Ok(id) = member_id.parse::<MemberId>() else { return };
        if id == self.me.id {
            tracing::warn!("this supervisor was departed from the ring");
            let _ = self.foca.leave_cluster(&mut self.acc);
            self.flush_sends();
            self.departed = true;
            self.out.push(Output::Departed);
            return;
        }
        let downs: Vec<Member<Ident>> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.id().id == id && m.state() != State::Down)
            .map(|m| Member::new(m.id().clone(), m.incarnation(), State::Down))
            .collect();
        if let Some(m) = downs.first() {
            // Push the news straight to it so it stops, then mark it down.
            self.out.push(Output::PushPull { to: m.id().addr });
            let _ = self.foca.apply_many(downs.into_iter(), true, &mut self.acc);
        }
    }

    fn flush_sends(&mut self) {
        for (to, data) in std::mem::take(&mut self.acc.sends) {
            let bytes = self.keyring.seal(&data);
            Metrics::inc(&self.metrics.packets_sent, 1);
            Metrics::inc(&self.metrics.bytes_sent, bytes.len() as u64);
            self.out.push(Output::Datagram { to: to.addr, bytes });
        }
    }

    /// Moves foca's accumulated effects into outputs, timers and state changes.
    fn drain(&mut self) {
        for _ in 0..64 {
            if !self.departed {
                self.flush_sends();
            } else {
                self.acc.sends.clear();
            }
            for (after, timer) in std::mem::take(&mut self.acc.timers) {
                match timer {
                    Timer::ChangeSuspectToDown { member_id, incarnation, token } => {
                        self.start_suspicion(member_id, incarnation, token)
                    }
                    other => self.schedule(after, other),
                }
            }
            for note in std::mem::take(&mut self.acc.notes) {
                match note {
                    Note::Active => {
                        // Just joined: pull the ring's full state at once (late joiners).
                        self.request_pushpull();
                    }
                    Note::Defunct if !self.departed => {
                        // The ring declared us down: come back as a new generation.
                        let next = self.incarnation() + 1;
                        let mut renewed = self.me.clone();
                        renewed.generation = u32::try_from(next).unwrap_or(u32::MAX);
                        self.own_incarnation.store(0, Ordering::Relaxed);
                        self.seen_incarnation = 0;
                        self.me = renewed.clone();
                        let _ = self.foca.change_identity(renewed, &mut self.acc);
                        self.out.push(Output::SaveState);
                        self.advertise_self();
                        self.announce_to_peers();
                    }
                    Note::Up(id) => tracing::info!(member = %id.id, addr = %id.addr, "member alive"),
                    Note::Down(id) => {
                        tracing::info!(member = %id.id, addr = %id.addr, "member confirmed dead")
                    }
                    Note::ProbeFailed(id) => tracing::debug!(member = %id.id, "probe failed; suspecting"),
                    Note::Defunct => {}
                }
            }
            let inbox = std::mem::take(&mut lock(&self.shared).inbox);
            for item in inbox {
                match item {
                    Inbound::Suspicion(s) => self.on_suspicion(s),
                    Inbound::Departure(m) => self.on_departure(m),
                }
            }
            let inc = self.own_incarnation.load(Ordering::Relaxed);
            if inc != self.seen_incarnation {
                // We refuted a suspicion: persist and re-advertise.
                self.seen_incarnation = inc;
                self.out.push(Output::SaveState);
                self.advertise_self();
            }
            if self.acc.sends.is_empty() && self.acc.timers.is_empty() && self.acc.notes.is_empty() {
                let pending = !lock(&self.shared).inbox.is_empty();
                if !pending {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(i: u8, peers: Vec<SocketAddr>) -> RingCore {
        RingCore::new(CoreParams {
            id: MemberId([i; 16]),
            addr: SocketAddr::from(([127, 0, 0, i], 9638)),
            generation: 1,
            persistent: false,
            config: RingConfig::default(),
            keyring: Keyring::with_primary(crate::crypto::RingKey::generate("t").unwrap()),
            peers,
            seed: u64::from(i),
            http_port: 0,
        })
    }

    #[test]
    fn two_cores_meet() {
        let mut a = core(1, vec![]);
        let mut b = core(2, vec![SocketAddr::from(([127, 0, 0, 1], 9638))]);
        let key = a.keyring().clone();
        *b.keyring_mut() = key;
        a.start(Duration::ZERO);
        b.start(Duration::ZERO);
        let mut now = Duration::ZERO;
        for _ in 0..100 {
            now += Duration::from_millis(50);
            a.tick(now);
            b.tick(now);
            for (from, to) in [(0, 1), (1, 0)] {
                let outs = if from == 0 { a.take_outputs() } else { b.take_outputs() };
                for o in outs {
                    if let Output::Datagram { bytes, .. } = o {
                        if to == 0 { a.handle_datagram(now, &bytes) } else { b.handle_datagram(now, &bytes) }
                    }
                }
            }
        }
        assert_eq!(a.members().iter().filter(|m| m.health == Health::Alive).count(), 2);
        assert_eq!(b.members().iter().filter(|m| m.health == Health::Alive).count(), 2);
        assert_eq!(b.with_store(|s| s.len()), 2, "member rumors spread");
    }
}
