//! The tokio shell around `RingCore`. One loop owns the core, on a thread of its own: it moves
//! datagrams, fires timers and takes typed commands (each with a oneshot reply), and hands
//! the core's events to subscribers. Nothing else touches the core. Push-pull exchanges,
//! their sealing and decoding, and persistence run on the supervisor's other runtime, so a
//! slow disk or a 16 MiB frame never delays a probe.

use crate::clock::unix_now;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use super::core::{Event, MemberView, Output, RingCore, decode_pushpull};
use super::identity::MemberId;
use super::metrics::Metrics;
use super::mirror::{Mirror, Persist};
use super::proto;
use super::rumor::{Rumor, RumorError, RumorStore};
use super::wire::{KeyInfo, Keyring, KeyringError, MAX_DATAGRAM, MAX_FRAME, Reject};
use crate::crypto::{KeyId, RingKey};

const PUSHPULL_TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent push-pull exchanges each way; more inbound connections are closed at once.
const MAX_PUSHPULL: usize = 16;
/// Most frames one exchange may send us (the store's byte budget over the chunk size, and
/// then some): a peer cannot stream forever.
const MAX_EXCHANGE_FRAMES: usize = 1024;
/// Commands waiting for the loop; senders wait (backpressure) beyond it.
const COMMAND_QUEUE: usize = 256;
/// After an accept error (out of descriptors), wait before accepting again instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the rest of the supervisor may ask of the ring.
pub enum Command {
    Inject {
        rumor: Rumor,
        reply: oneshot::Sender<Result<bool, RumorError>>,
    },
    Publish {
        rumor: Rumor,
        reply: oneshot::Sender<Result<bool, RumorError>>,
    },
    Depart {
        member: MemberId,
        reply: oneshot::Sender<Result<bool, RumorError>>,
    },
    InstallKey {
        key: RingKey,
        reply: oneshot::Sender<Result<bool, KeyringError>>,
    },
    UseKey {
        id: KeyId,
        reply: oneshot::Sender<Result<(), KeyringError>>,
    },
    RemoveKey {
        id: KeyId,
        reply: oneshot::Sender<Result<(), KeyringError>>,
    },
    /// Makes the keyring exactly these keys (the key cache changed); replies whether it changed.
    ReplaceKeys {
        keys: Vec<RingKey>,
        reply: oneshot::Sender<bool>,
    },
    /// Every event from now on, lossless (an unbounded queue per subscriber).
    Subscribe {
        reply: oneshot::Sender<Subscription>,
    },
    /// Our state for a push-pull exchange, and the keyring to seal and open its frames.
    PushPullState {
        reply: oneshot::Sender<(Vec<proto::PushPull>, Keyring)>,
    },
    /// One decoded frame of a peer's push-pull.
    PushPullFrame(proto::PushPull),
    /// Stops the loop without leaving the ring (`sup restart`: the same member is back within
    /// a probe or two, with a higher incarnation, so peers need not hear it left).
    StopForRestart,
}

/// This member and the ring as it sees them, republished by the loop after every change.
#[derive(Debug, Clone)]
pub struct RingStatus {
    pub id: MemberId,
    pub incarnation: u64,
    pub members: Vec<MemberView>,
    pub keys: Vec<KeyInfo>,
    pub encrypted: bool,
    /// The name of the ring's keys (None: unencrypted).
    pub ring_name: Option<String>,
}

/// Why the ring loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Shutdown,
    Departed,
    Restart,
}

#[derive(Debug, thiserror::Error)]
pub enum RingGone {
    #[error("the ring has stopped")]
    Stopped,
}

/// A cheap, clonable handle on a running ring: commands in, snapshots out.
#[derive(Clone)]
pub struct RingHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Arc<RingStatus>>,
    rumors: Arc<RwLock<RumorStore>>,
    metrics: Arc<Metrics>,
}

impl RingHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, RingGone> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| RingGone::Stopped)?;
        rx.await.map_err(|_| RingGone::Stopped)
    }

    /// Spreads a rumor said by this member (the ring numbers it). Returns whether it was news.
    pub async fn inject(&self, rumor: Rumor) -> Result<Result<bool, RumorError>, RingGone> {
        self.ask(|reply| Command::Inject { rumor, reply }).await
    }

    /// A config or file rumor at its author's version (see `RingCore::publish`).
    pub async fn publish(&self, rumor: Rumor) -> Result<Result<bool, RumorError>, RingGone> {
        self.ask(|reply| Command::Publish { rumor, reply }).await
    }

    pub async fn depart(&self, member: MemberId) -> Result<Result<bool, RumorError>, RingGone> {
        self.ask(|reply| Command::Depart { member, reply }).await
    }

    pub async fn install_key(&self, key: RingKey) -> Result<Result<bool, KeyringError>, RingGone> {
        self.ask(|reply| Command::InstallKey { key, reply }).await
    }

    pub async fn use_key(&self, id: KeyId) -> Result<Result<(), KeyringError>, RingGone> {
        self.ask(|reply| Command::UseKey { id, reply }).await
    }

    pub async fn remove_key(&self, id: KeyId) -> Result<Result<(), KeyringError>, RingGone> {
        self.ask(|reply| Command::RemoveKey { id, reply }).await
    }

    pub async fn replace_keys(&self, keys: Vec<RingKey>) -> Result<bool, RingGone> {
        self.ask(|reply| Command::ReplaceKeys { keys, reply }).await
    }

    /// Ends the loop without a leave; the ring's thread then ends with [`Stopped::Restart`].
    pub async fn stop_for_restart(&self) -> Result<(), RingGone> {
        self.commands.send(Command::StopForRestart).await.map_err(|_| RingGone::Stopped)
    }

    /// Every event from now on, with the ring's state at that very point: the status
    /// watch and [`RingHandle::with_rumors`] lag behind the core, so a reader that subscribed
    /// and then read them could miss a change made in between, for good.
    pub async fn subscribe(&self) -> Result<Subscription, RingGone> {
        self.ask(|reply| Command::Subscribe { reply }).await
    }

    /// The latest status (members, keys, incarnation).
    pub fn status(&self) -> Arc<RingStatus> {
        self.status.borrow().clone()
    }

    /// A receiver that sees every new status.
    pub fn watch_status(&self) -> watch::Receiver<Arc<RingStatus>> {
        self.status.clone()
    }

    /// Reads the mirror of the rumor store (kept by the persistence task, not the core).
    pub fn with_rumors<R>(&self, f: impl FnOnce(&RumorStore) -> R) -> R {
        f(&self.rumors.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
}

/// A subscriber's start: the core's status and rumors when its events begin.
pub struct Subscription {
    pub events: mpsc::UnboundedReceiver<Event>,
    pub status: RingStatus,
    pub rumors: Vec<Rumor>,
}

/// The sockets the ring uses, bound by the caller (std sockets: the ring's thread registers
/// them with its own runtime).
pub struct Sockets {
    pub udp: std::net::UdpSocket,
    pub tcp: std::net::TcpListener,
}

/// A running ring: its handle, and the thread that ends with the ring.
pub struct Running {
    pub handle: RingHandle,
    pub thread: std::thread::JoinHandle<Stopped>,
}

/// Starts the ring loop on a thread of its own. `worker` runs push-pull and persistence;
/// the loop stops (leaving the ring gracefully) when `shutdown` turns true.
pub fn start(
    mut core: RingCore,
    sockets: Sockets,
    persist: Option<Persist>,
    worker: Handle,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Running> {
    let metrics = core.metrics();
    let status = watch::channel(Arc::new(status_of(&core))).0;
    let mirror = Mirror::new(&core, persist);
    let rumors = mirror.store();
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (mirror_tx, mirror_rx) = mpsc::unbounded_channel();
    let mirror_task = worker.spawn(mirror.run(mirror_rx));
    let handle = RingHandle { commands: cmd_tx.clone(), status: status.subscribe(), rumors, metrics };

    sockets.udp.set_nonblocking(true)?;
    sockets.tcp.set_nonblocking(true)?;
    {
        let _guard = worker.enter();
        let tcp = TcpListener::from_std(sockets.tcp)?;
        worker.spawn(accept_pushpull(tcp, cmd_tx.clone(), handle.metrics(), shutdown.clone()));
    }
    let mirror_worker = worker.clone();
    let thread = std::thread::Builder::new().name("warren-ring".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the ring's runtime");
                return Stopped::Shutdown;
            }
        };
        let stopped = rt.block_on(async move {
            let udp = match UdpSocket::from_std(sockets.udp) {
                Ok(u) => u,
                Err(e) => {
                    tracing::error!(error = %e, "cannot use the gossip socket");
                    return Stopped::Shutdown;
                }
            };
            core.set_wall_clock(unix_now());
            let mut ring = Loop {
                core,
                udp,
                commands: cmd_rx,
                command_tx: cmd_tx,
                subscribers: vec![mirror_tx],
                status,
                worker,
                start: Instant::now(),
                clients: Arc::new(Semaphore::new(MAX_PUSHPULL)),
                status_dirty: true,
                published_membership: 0,
            };
            ring.run(shutdown).await
        });
        // The mirror writes its last snapshot once every event sender is gone.
        let _ = mirror_worker.block_on(mirror_task);
        stopped
    })?;
    Ok(Running { handle, thread })
}

fn status_of(core: &RingCore) -> RingStatus {
    RingStatus {
        id: core.identity().id,
        incarnation: core.incarnation(),
        members: core.members(),
        keys: core.keyring().list(),
        encrypted: core.keyring().is_encrypted(),
        ring_name: core.keyring().primary_id().map(|k| k.name.clone()),
    }
}

/// The messages the mirror (persistence and read views) receives from the loop.
pub enum ToMirror {
    Event(Box<Event>),
    /// Generation, incarnation and primary key changed: persist them.
    State {
        generation: u32,
        incarnation: u32,
        primary_key: Option<String>,
    },
}

struct Loop {
    core: RingCore,
    udp: UdpSocket,
    commands: mpsc::Receiver<Command>,
    command_tx: mpsc::Sender<Command>,
    subscribers: Vec<mpsc::UnboundedSender<ToMirror>>,
    status: watch::Sender<Arc<RingStatus>>,
    worker: Handle,
    start: Instant,
    clients: Arc<Semaphore>,
    status_dirty: bool,
    /// The core's membership fingerprint when the status was last published.
    published_membership: u64,
}

impl Loop {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    async fn run(&mut self, mut shutdown: watch::Receiver<bool>) -> Stopped {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let now = self.now();
        self.core.start(now);
        self.save_state();
        let mut event_subs: Vec<mpsc::UnboundedSender<Event>> = Vec::new();
        let stopped = loop {
            if self.flush(&mut event_subs).await {
                break Stopped::Departed;
            }
            self.publish_status();
            let now = self.now();
            if self.core.next_deadline() <= now {
                self.core.set_wall_clock(unix_now());
                self.core.tick(now);
                continue;
            }
            let sleep_for = self.core.next_deadline().saturating_sub(now);
            tokio::select! {
                r = self.udp.recv_from(&mut buf) => match r {
                    Ok((n, _from)) => {
                        let now = self.now();
                        if n > MAX_DATAGRAM {
                            self.core.metrics().reject(Reject::TooLarge);
                        } else {
                            self.core.handle_datagram(now, &buf[..n]);
                        }
                    }
                    Err(e) => tracing::trace!(error = %e, "recv failed"),
                },
                _ = tokio::time::sleep(sleep_for) => {
                    let now = self.now();
                    self.core.set_wall_clock(unix_now());
                    self.core.tick(now);
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Subscribe { reply }) => {
                        // Every earlier output was flushed at the top of this loop.
                        let (tx, events) = mpsc::unbounded_channel();
                        event_subs.push(tx);
                        let status = status_of(&self.core);
                        let rumors = self.core.with_store(|s| s.iter().cloned().collect());
                        let _ = reply.send(Subscription { events, status, rumors });
                    }
                    Some(Command::StopForRestart) => {
                        let _ = self.flush(&mut event_subs).await;
                        break Stopped::Restart;
                    }
                    Some(cmd) => self.command(cmd),
                    None => break Stopped::Shutdown,
                },
                _ = shutdown.wait_for(|s| *s) => {
                    self.core.leave();
                    self.status_dirty = true;
                    let _ = self.flush(&mut event_subs).await;
                    self.publish_status();
                    break Stopped::Shutdown;
                }
            }
        };
        self.save_state();
        stopped
    }

    fn command(&mut self, cmd: Command) {
        let now = self.now();
        match cmd {
            Command::Inject { rumor, reply } => {
                let _ = reply.send(self.core.inject(rumor));
            }
            Command::Publish { rumor, reply } => {
                let _ = reply.send(self.core.publish(rumor));
            }
            Command::Depart { member, reply } => {
                self.core.set_wall_clock(unix_now());
                let _ = reply.send(self.core.depart(member));
            }
            Command::InstallKey { key, reply } => {
                let _ = reply.send(self.core.keyring_mut().install(key));
                self.status_dirty = true;
            }
            Command::UseKey { id, reply } => {
                let r = self.core.keyring_mut().use_key(&id);
                if r.is_ok() {
                    self.save_state();
                }
                let _ = reply.send(r);
                self.status_dirty = true;
            }
            Command::RemoveKey { id, reply } => {
                let _ = reply.send(self.core.keyring_mut().remove(&id).map(|_| ()));
                self.status_dirty = true;
            }
            Command::ReplaceKeys { keys, reply } => {
                let changed = self.core.keyring_mut().replace_all(keys);
                if changed {
                    self.save_state();
                }
                let _ = reply.send(changed);
                self.status_dirty = true;
            }
            Command::PushPullState { reply } => {
                let _ = reply.send((self.core.pushpull_frames(), self.core.keyring().clone()));
            }
            Command::PushPullFrame(frame) => {
                let _ = self.core.apply_pushpull(now, frame);
            }
            // Handled by the loop itself.
            Command::Subscribe { .. } | Command::StopForRestart => {}
        }
    }

    /// Carries out the core's outputs. Returns true when this member was departed.
    async fn flush(&mut self, event_subs: &mut Vec<mpsc::UnboundedSender<Event>>) -> bool {
        let mut departed = false;
        for out in self.core.take_outputs() {
            match out {
                Output::Datagram { to, bytes } => {
                    if let Err(e) = self.udp.send_to(&bytes, to).await {
                        tracing::trace!(%to, error = %e, "send failed");
                    }
                }
                Output::PushPull { to } => self.start_pushpull(to),
                Output::SaveState => self.save_state(),
                Output::Departed => departed = true,
                Output::Event(e) => {
                    if matches!(
                        e,
                        Event::MemberUp(_)
                            | Event::MemberDown(_)
                            | Event::MemberLeft(_)
                            | Event::MemberSuspect(_)
                            | Event::MemberDeparted(_)
                    ) {
                        self.status_dirty = true;
                    }
                    event_subs.retain(|s| s.send(e.clone()).is_ok());
                    self.subscribers.retain(|s| s.send(ToMirror::Event(Box::new(e.clone()))).is_ok());
                }
            }
        }
        departed
    }

    fn publish_status(&mut self) {
        let inc = self.core.incarnation();
        let membership = self.core.membership_fingerprint();
        // Events mark most changes; the fingerprint catches the ones without (a refutation or
        // a rename after an event already published a transient state).
        if self.status_dirty
            || self.status.borrow().incarnation != inc
            || membership != self.published_membership
        {
            self.status_dirty = false;
            self.published_membership = membership;
            let _ = self.status.send(Arc::new(status_of(&self.core)));
        }
    }

    fn save_state(&mut self) {
        let (generation, incarnation) = self.core.persisted_state();
        let primary_key = self.core.keyring().primary_id().map(|k| k.to_string());
        self.subscribers.retain(|s| {
            s.send(ToMirror::State { generation, incarnation, primary_key: primary_key.clone() }).is_ok()
        });
    }

    fn start_pushpull(&mut self, to: SocketAddr) {
        let Ok(permit) = self.clients.clone().try_acquire_owned() else { return };
        let frames = self.core.pushpull_frames();
        let keyring = self.core.keyring().clone();
        let commands = self.command_tx.clone();
        let metrics = self.core.metrics();
        self.worker.spawn(async move {
            let r = tokio::time::timeout(PUSHPULL_TIMEOUT, async {
                let mut stream = TcpStream::connect(to).await?;
                send_frames(&mut stream, &keyring, &frames).await?;
                receive_frames(&mut stream, &keyring, &commands, &metrics).await
            })
            .await;
            if !matches!(r, Ok(Ok(()))) {
                Metrics::inc(&metrics.pushpull_failed, 1);
                tracing::debug!(%to, "push-pull failed or timed out");
            }
            drop(permit);
        });
    }
}

async fn send_frames(
    stream: &mut TcpStream,
    keyring: &Keyring,
    frames: &[proto::PushPull],
) -> std::io::Result<()> {
    use prost::Message as _;
    for f in frames {
        let sealed = keyring.seal(&f.encode_to_vec());
        write_frame(stream, &sealed).await?;
    }
    stream.flush().await
}

/// Reads a peer's frames until the last, handing each (opened and decoded here, off the
/// ring's thread) to the loop.
async fn receive_frames(
    stream: &mut TcpStream,
    keyring: &Keyring,
    commands: &mpsc::Sender<Command>,
    metrics: &Metrics,
) -> std::io::Result<()> {
    for _ in 0..MAX_EXCHANGE_FRAMES {
        let sealed = read_frame(stream).await?;
        let frame = keyring.open(&sealed, MAX_FRAME).and_then(|p| decode_pushpull(&p));
        let frame = match frame {
            Ok(f) => f,
            Err(r) => {
                metrics.reject(r);
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, r.to_string()));
            }
        };
        let more = frame.more;
        if commands.send(Command::PushPullFrame(frame)).await.is_err() {
            return Ok(());
        }
        if !more {
            return Ok(());
        }
    }
    metrics.reject(Reject::TooLarge);
    Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "too many push-pull frames"))
}

async fn accept_pushpull(
    tcp: TcpListener,
    commands: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let servers = Arc::new(Semaphore::new(MAX_PUSHPULL));
    loop {
        let conn = tokio::select! {
            c = tcp.accept() => c,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let mut stream = match conn {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors (or similar): back off instead of spinning on accept.
                Metrics::inc(&metrics.accept_errors, 1);
                tracing::warn!(error = %e, "push-pull accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = servers.clone().try_acquire_owned() else { continue };
        let commands = commands.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(PUSHPULL_TIMEOUT, async {
                let (tx, rx) = oneshot::channel();
                commands.send(Command::PushPullState { reply: tx }).await.map_err(std::io::Error::other)?;
                let (ours, keyring) = rx.await.map_err(std::io::Error::other)?;
                receive_frames(&mut stream, &keyring, &commands, &metrics).await?;
                send_frames(&mut stream, &keyring, &ours).await
            })
            .await;
            drop(permit);
        });
    }
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too large"));
    }
    // Grow with the data actually received rather than trusting the declared length.
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    (&mut *stream).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short frame"));
    }
    Ok(buf)
}

async fn write_frame(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    stream.write_u32(len).await?;
    stream.write_all(bytes).await
}
