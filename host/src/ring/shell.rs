//! The tokio shell around `RingCore`: a UDP socket for SWIM, a TCP listener for push-pull,
//! a timer, and the public `RingHandle` the rest of the supervisor uses.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Notify, broadcast, watch};

use super::core::{MemberView, Output, RingCore};
use super::metrics::Metrics;
use super::persist::{DataDir, RingState};
use super::rumor::{Rumor, RumorError, RumorEvent};
use super::wire::{MAX_DATAGRAM, MAX_FRAME};

const PUSHPULL_TIMEOUT: Duration = Duration::from_secs(5);
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Concurrent inbound push-pull exchanges; more connections are closed at once.
const MAX_PUSHPULL_SERVERS: usize = 16;

struct Inner {
    core: Mutex<RingCore>,
    wake: Notify,
    start: Instant,
    metrics: Arc<Metrics>,
    data: Option<DataDir>,
}

/// A cheap, clonable handle on a running ring.
#[derive(Clone)]
pub struct RingHandle {
    inner: Arc<Inner>,
}

/// Why the ring loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Shutdown,
    Departed,
}

impl RingHandle {
    pub fn new(core: RingCore, data: Option<DataDir>) -> Self {
        let metrics = core.metrics();
        RingHandle {
            inner: Arc::new(Inner {
                core: Mutex::new(core),
                wake: Notify::new(),
                start: Instant::now(),
                metrics,
                data,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RingCore> {
        self.inner.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Time since the ring started: the core's clock.
    pub fn now(&self) -> Duration {
        self.inner.start.elapsed()
    }

    /// Runs `f` on the core, then wakes the loop so any output is sent at once.
    pub fn with_core<R>(&self, f: impl FnOnce(&mut RingCore) -> R) -> R {
        let r = f(&mut self.lock());
        self.inner.wake.notify_one();
        r
    }

    /// Spreads a rumor to the whole ring. Returns whether it was news.
    pub fn inject(&self, rumor: Rumor) -> Result<bool, RumorError> {
        self.with_core(|c| c.inject(rumor))
    }

    /// Every rumor that changes this member's store from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RumorEvent> {
        self.lock().with_store(|s| s.subscribe())
    }

    pub fn members(&self) -> Vec<MemberView> {
        self.lock().members()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    pub fn data_dir(&self) -> Option<&DataDir> {
        self.inner.data.as_ref()
    }

    /// Persists generation, incarnation and primary key now.
    pub fn save_state(&self) {
        let Some(data) = &self.inner.data else { return };
        let state = {
            let core = self.lock();
            let (generation, incarnation) = core.persisted_state();
            RingState {
                generation,
                incarnation,
                primary_key: core.keyring().primary_id().map(|k| k.to_string()),
            }
        };
        if let Err(e) = data.save_state(&state) {
            tracing::warn!(error = %e, "could not save ring state");
        }
    }

    fn save_rumors(&self, force: bool) {
        let Some(data) = &self.inner.data else { return };
        let snapshot = {
            let core = self.lock();
            core.store_mut(|s| (s.take_dirty() || force).then(|| s.snapshot()))
        };
        if let Some(bytes) = snapshot
            && let Err(e) = data.save_rumors(&bytes)
        {
            tracing::warn!(error = %e, "could not save rumors");
        }
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
    stream.write_all(bytes).await?;
    stream.flush().await
}

async fn pushpull_client(handle: RingHandle, to: SocketAddr) {
    let result = tokio::time::timeout(PUSHPULL_TIMEOUT, async {
        let mut stream = TcpStream::connect(to).await?;
        let msg = handle.lock().pushpull_message();
        write_frame(&mut stream, &msg).await?;
        read_frame(&mut stream).await
    })
    .await;
    match result {
        Ok(Ok(reply)) => {
            let now = handle.now();
            let _ = handle.with_core(|c| c.handle_pushpull(now, &reply));
        }
        Ok(Err(e)) => {
            Metrics::inc(&handle.metrics().pushpull_failed, 1);
            tracing::debug!(%to, error = %e, "push-pull failed");
        }
        Err(_) => {
            Metrics::inc(&handle.metrics().pushpull_failed, 1);
            tracing::debug!(%to, "push-pull timed out");
        }
    }
}

async fn pushpull_server(handle: RingHandle, mut stream: TcpStream) {
    let _ = tokio::time::timeout(PUSHPULL_TIMEOUT, async {
        let frame = read_frame(&mut stream).await?;
        let now = handle.now();
        let reply = handle.with_core(|c| c.handle_pushpull(now, &frame).map(|()| c.pushpull_message()));
        if let Ok(reply) = reply {
            write_frame(&mut stream, &reply).await?;
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Runs the ring until `shutdown` turns true or this member is departed.
pub async fn run(
    handle: RingHandle,
    udp: UdpSocket,
    tcp: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> Stopped {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    {
        let now = handle.now();
        handle.with_core(|c| c.start(now));
    }
    let mut next_save = Instant::now() + SAVE_EVERY;
    let servers = Arc::new(tokio::sync::Semaphore::new(MAX_PUSHPULL_SERVERS));
    let stopped = loop {
        let mut departed = false;
        let outputs = handle.lock().take_outputs();
        for out in outputs {
            match out {
                Output::Datagram { to, bytes } => {
                    if let Err(e) = udp.send_to(&bytes, to).await {
                        tracing::trace!(%to, error = %e, "send failed");
                    }
                }
                Output::PushPull { to } => {
                    tokio::spawn(pushpull_client(handle.clone(), to));
                }
                Output::SaveState => handle.save_state(),
                Output::Departed => departed = true,
            }
        }
        if departed {
            break Stopped::Departed;
        }
        if Instant::now() >= next_save {
            next_save = Instant::now() + SAVE_EVERY;
            handle.save_rumors(false);
        }
        let mut deadline = handle.lock().next_deadline();
        if deadline <= handle.now() {
            let now = handle.now();
            handle.lock().tick(now);
            deadline = handle.lock().next_deadline();
        }
        let sleep_for = deadline.saturating_sub(handle.now()).min(SAVE_EVERY);
        tokio::select! {
            r = udp.recv_from(&mut buf) => match r {
                Ok((n, _from)) => {
                    let now = handle.now();
                    if n > MAX_DATAGRAM {
                        handle.metrics().reject(super::wire::Reject::TooLarge);
                    } else {
                        handle.lock().handle_datagram(now, &buf[..n]);
                    }
                }
                Err(e) => tracing::trace!(error = %e, "recv failed"),
            },
            _ = tokio::time::sleep(sleep_for) => {
                let now = handle.now();
                handle.lock().tick(now);
            }
            _ = handle.inner.wake.notified() => {}
            conn = tcp.accept() => {
                if let Ok((stream, _)) = conn
                    && let Ok(permit) = servers.clone().try_acquire_owned()
                {
                    let h = handle.clone();
                    tokio::spawn(async move {
                        pushpull_server(h, stream).await;
                        drop(permit);
                    });
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break Stopped::Shutdown;
                }
            }
        }
    };
    handle.save_state();
    handle.save_rumors(true);
    stopped
}
