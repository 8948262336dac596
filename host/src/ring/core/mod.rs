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
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::codec::ProtoCodec;
use super::config::RingConfig;
use super::handler::{Handler, Inbound, Shared, lock};
use super::identity::{Ident, MemberId};
use super::metrics::Metrics;
use super::proto;
use super::rumor::{Rumor, RumorError, RumorKey, RumorKind, RumorStore};
use super::suspicion::{Suspicion, min_timeout};
use super::wire::{Keyring, MAX_DATAGRAM, Reject};

mod antientropy;
mod lifeguard;
mod merge;
mod view;

pub use antientropy::{MAX_FRAME_MEMBERS, MAX_FRAME_RUMORS, PUSHPULL_CHUNK, decode_pushpull};
pub use merge::Origin;
pub use view::{Health, MemberView};

type RingFoca = Foca<Ident, ProtoCodec, SmallRng, Handler>;

/// Encoded rumors up to this size ride on SWIM packets; bigger ones travel by push-pull only.
pub const PIGGYBACK_MAX: usize = 1000;

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
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
    /// Something others may want to react to (census, services, election, persistence).
    Event(Event),
}

/// What changed in the ring, in the order it happened. Lossless: every change is one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    MemberUp(MemberId),
    MemberSuspect(MemberId),
    /// Confirmed dead after its suspicion ran out.
    MemberDown(MemberId),
    /// Left gracefully (SIGTERM / Ctrl-C): down without a suspicion.
    MemberLeft(MemberId),
    /// Departed by an operator (`warren sup depart`).
    MemberDeparted(MemberId),
    /// A rumor was added or replaced; `rumor` is the value now stored.
    RumorChanged {
        rumor: Rumor,
        origin: Origin,
    },
    /// A rumor was dropped (a departed member's, after `departed_retention`).
    RumorRemoved {
        key: RumorKey,
    },
    /// A peer's full state (members and rumors) was merged, its changes already reported:
    /// from here on this member's view is the ring's, not only what it restored from disk.
    Synced,
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
    /// Rumors restored from the data path (a snapshot), merged before the first event.
    pub restored: Option<Vec<u8>>,
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
    /// Left gracefully: inputs are ignored from now on.
    left: bool,
    told_departed: HashMap<MemberId, Duration>,
    /// The state each member was last reported in (by an event), latest generation.
    reported: HashMap<MemberId, State>,
    membership_fingerprint: u64,
    http_port: u16,
    now: Duration,
    /// Wall clock (unix seconds), given by the shell: departure times and their expiry.
    wall: u64,
    next_gc: Duration,
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
        let mut store = RumorStore::with_limits(p.config.rumor_limits);
        if let Some(bytes) = &p.restored {
            match store.restore(bytes) {
                Ok(n) => tracing::info!(rumors = n, "restored rumors"),
                Err(e) => tracing::warn!(error = %e, "ignoring unreadable rumor file"),
            }
        }
        let shared = Arc::new(Mutex::new(Shared::new(store)));
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
            left: false,
            told_departed: HashMap::new(),
            reported: HashMap::new(),
            membership_fingerprint: 0,
            http_port: p.http_port,
            now: Duration::ZERO,
            wall: 0,
            next_gc: Duration::ZERO,
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

    /// The keyring, to change it (install, use, remove): the core owns it, so only its owner
    /// (the ring loop, or a test) gets here.
    pub fn keyring_mut(&mut self) -> &mut Keyring {
        &mut self.keyring
    }

    pub fn is_departed(&self) -> bool {
        self.departed
    }

    /// Runs `f` on the rumor store (read-only: every change goes through the merge path).
    pub fn with_store<R>(&self, f: impl FnOnce(&RumorStore) -> R) -> R {
        f(&lock(&self.shared).store)
    }

    /// Sets the wall clock (unix seconds): the shell's input, so the core never reads a clock.
    pub fn set_wall_clock(&mut self, unix_secs: u64) {
        self.wall = unix_secs;
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
        self.advertise_self(false);
        self.announce_to_peers();
        self.next_announce = now + self.cfg.probe_interval * 2;
        self.drain();
    }

    /// Our member rumor. A leave is advertised one incarnation higher, so the leave wins
    /// over our last rumor (and the next start's generation skips past it: see `sup`).
    fn advertise_self(&mut self, left: bool) {
        let rumor = Rumor::Member(proto::MemberRumor {
            id: self.me.id.to_string(),
            address: self.me.addr.ip().to_string(),
            gossip_port: u32::from(self.me.addr.port()),
            http_port: u32::from(self.http_port),
            incarnation: self.incarnation() + u64::from(left),
            persistent: self.me.persistent,
            left,
        });
        let _ = self.merge_rumor(rumor, Origin::Local);
    }

    /// Leaves the ring gracefully (SIGTERM / Ctrl-C): says so in our member rumor, tells a few
    /// members we are down, and ignores every input after. The shell sends the outputs, then
    /// stops; others see "left" within a gossip round or two instead of a suspicion timeout.
    pub fn leave(&mut self) {
        if self.departed || self.left {
            return;
        }
        self.advertise_self(true);
        let _ = self.foca.leave_cluster(&mut self.acc);
        self.flush_sends();
        self.left = true;
        self.acc = Acc::default();
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
        if self.departed || self.left {
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
        if now >= self.next_gc {
            self.next_gc = now + GC_EVERY;
            self.expire_departed();
        }
        self.notice_membership_changes();
    }

    /// Handles one datagram from the network. Never panics; bad input is counted and dropped.
    pub fn handle_datagram(&mut self, now: Duration, bytes: &[u8]) {
        self.now = now;
        if self.departed || self.left {
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
        self.forward_news();
        self.drain();
    }

    /// Eager push: news is sent on to a few members right away (Broadcast messages carry
    /// only rumors); the periodic gossip then finishes the remaining transmissions.
    pub(super) fn forward_news(&mut self) {
        let fresh = std::mem::take(&mut lock(&self.shared).fresh);
        if fresh && !self.departed {
            let _ = self.foca.broadcast(&mut self.acc);
        }
    }

    fn reject(&mut self, r: Reject) {
        self.metrics.reject(r);
        tracing::debug!(reason = r.label(), "dropped a ring packet");
    }

    /// Spreads a rumor from this member. Returns whether it was news. The core, not the
    /// caller, numbers this member's own rumors: one above what the ring holds for the key.
    pub fn inject(&mut self, rumor: Rumor) -> Result<bool, RumorError> {
        let rumor = self.own_rumor(rumor)?;
        let news = self.merge_rumor(rumor, Origin::Local)?.is_some();
        self.drain();
        Ok(news)
    }

    /// Spreads a config or file rumor at the version its author chose (`config apply`,
    /// `file upload`): Habitat silently drops a version the ring already holds (#3009); here
    /// the caller hears it, with the version to beat.
    pub fn publish(&mut self, rumor: Rumor) -> Result<bool, RumorError> {
        let rumor = self.own_versioned(rumor)?;
        let news = self.merge_rumor(rumor, Origin::Local)?.is_some();
        self.drain();
        Ok(news)
    }

    /// Departs a member from the ring for good (`warren sup depart`).
    pub fn depart(&mut self, member: MemberId) -> Result<bool, RumorError> {
        let rumor =
            Rumor::Departure(proto::DepartureRumor { member_id: member.to_string(), departed_at: self.wall });
        let news = self.merge_rumor(rumor, Origin::Local)?.is_some();
        self.drain();
        Ok(news)
    }

    /// Takes what the shell must do.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    fn schedule(&mut self, after: Duration, timer: Timer<Ident>) {
        self.timer_seq += 1;
        self.timers.push(Reverse((self.now + after, self.timer_seq)));
        self.timer_map.insert(self.timer_seq, timer);
    }

    fn active_count(&self) -> usize {
        self.foca.num_members() + 1
    }

    fn on_departure(&mut self, member_id: String) {
        let Ok(id) = member_id.parse::<MemberId>() else { return };
        self.emit(Event::MemberDeparted(id));
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

    fn emit(&mut self, event: Event) {
        self.out.push(Output::Event(event));
    }

    /// Moves foca's accumulated effects into outputs, timers and state changes, until handling
    /// them produces nothing more (bounded, in case two steps keep feeding each other).
    fn drain(&mut self) {
        for _ in 0..64 {
            self.flush_or_drop_sends();
            self.schedule_timers();
            self.handle_notes();
            self.handle_inbox();
            self.notice_refutation();
            let idle = self.acc.sends.is_empty() && self.acc.timers.is_empty() && self.acc.notes.is_empty();
            if idle && lock(&self.shared).inbox.is_empty() {
                break;
            }
        }
    }

    fn flush_or_drop_sends(&mut self) {
        if self.departed || self.left {
            self.acc.sends.clear();
        } else {
            self.flush_sends();
        }
    }

    fn schedule_timers(&mut self) {
        for (after, timer) in std::mem::take(&mut self.acc.timers) {
            match timer {
                Timer::ChangeSuspectToDown { member_id, incarnation, token } => {
                    self.start_suspicion(member_id, incarnation, token)
                }
                other => self.schedule(after, other),
            }
        }
    }

    fn handle_notes(&mut self) {
        for note in std::mem::take(&mut self.acc.notes) {
            match note {
                // Just joined: pull the ring's full state at once (late joiners).
                Note::Active => self.request_pushpull(),
                Note::Defunct if !self.departed && !self.left => self.renew_identity(),
                Note::Defunct => {}
                Note::Up(id) => {
                    self.reported.insert(id.id, State::Alive);
                    tracing::info!(member = %id.id, addr = %id.addr, "member alive");
                    self.emit(Event::MemberUp(id.id));
                }
                Note::Down(id) => {
                    self.reported.insert(id.id, State::Down);
                    if self.has_left(&id.id) {
                        tracing::info!(member = %id.id, addr = %id.addr, "member left");
                        self.emit(Event::MemberLeft(id.id));
                    } else {
                        tracing::info!(member = %id.id, addr = %id.addr, "member confirmed dead");
                        self.emit(Event::MemberDown(id.id));
                    }
                }
                Note::ProbeFailed(id) => tracing::debug!(member = %id.id, "probe failed; suspecting"),
            }
        }
    }

    /// The ring declared us down: come back as a new generation.
    fn renew_identity(&mut self) {
        let next = self.incarnation() + 1;
        let mut renewed = self.me.clone();
        renewed.generation = u32::try_from(next).unwrap_or(u32::MAX);
        self.own_incarnation.store(0, Ordering::Relaxed);
        self.seen_incarnation = 0;
        self.me = renewed.clone();
        let _ = self.foca.change_identity(renewed, &mut self.acc);
        self.out.push(Output::SaveState);
        self.advertise_self(false);
        self.announce_to_peers();
    }

    /// Does the member's latest rumor say it left gracefully?
    fn has_left(&self, id: &MemberId) -> bool {
        let key = RumorKey { kind: RumorKind::Member, a: id.to_string(), b: String::new() };
        self.with_store(|s| matches!(s.get(&key), Some(Rumor::Member(m)) if m.left))
    }

    fn handle_inbox(&mut self) {
        let inbox = std::mem::take(&mut lock(&self.shared).inbox);
        for item in inbox {
            match item {
                Inbound::Suspicion(s) => self.on_suspicion(s),
                Inbound::Departure(m) => self.on_departure(m),
                Inbound::Rumor(r) => {
                    if let Err(e) = self.merge_rumor(r, Origin::Gossip) {
                        tracing::debug!(error = %e, "refused a gossiped rumor");
                    }
                }
            }
        }
    }

    /// foca bumped our incarnation to refute a suspicion: persist and re-advertise.
    fn notice_refutation(&mut self) {
        let inc = self.own_incarnation.load(Ordering::Relaxed);
        if inc != self.seen_incarnation {
            self.seen_incarnation = inc;
            self.out.push(Output::SaveState);
            self.advertise_self(false);
        }
    }
}

/// How often departed members' rumors are checked for expiry.
const GC_EVERY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests;
