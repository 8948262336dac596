//! The ctl gateway's server: one handshake per TCP connection, then requests, replies streamed.
//!
//! The first frame picks the handshake. `NoiseHandshake` is warren's (see [`super::noise`]):
//! every later frame travels encrypted. `Handshake{secret_key}` is Habitat's plaintext one,
//! accepted only as [`PlaintextPolicy`] allows. Either way a wrong secret gets
//! `NetErr{Unauthorized}` and the connection closes at once: nothing after a failed handshake
//! is read. The handshake and the request frame must each arrive within the handshake timeout;
//! the handler then has as long as it needs (a service install streams for minutes).
//!
//! A plaintext connection serves one request and closes, as Habitat's does (its client reads
//! until the end of the stream). A Noise connection is a session: after a request's complete
//! reply the next request may follow, within the same timeout, so a client that asks often
//! (a monitor's `ctl ping --count`) pays for the key exchange once. A session ends when the
//! client closes, stays idle past the timeout, uploads, or the gateway stops.
//!
//! An upload request (`PkgInstall`) is followed by its body in `PkgChunk` frames; each must
//! arrive within the same timeout, and the handler ([`CtlHandler::handle_upload`]) reads them
//! as an [`Upload`] while its replies stream back on the same connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use super::metrics::CtlMetrics;
use super::noise::{self, Channel, NoiseError};
use super::proto::{self, CtlMessage, ErrCode, NetErr};
use super::protocol::{CtlRequest, Frame, FrameError, MAX_BODY_LEN, Parsed, Reply, Txn, parse_frame};
use super::secret::CtlSecret;

/// Habitat's `REQ_TIMEOUT`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: usize = 64;
/// A handshake frame is tiny; nothing larger is read before the peer is authenticated.
pub const HANDSHAKE_MAX_BODY: usize = 4096;

/// Who may use Habitat's plaintext handshake (`ctl_plaintext` in sup.toml).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlaintextPolicy {
    /// Only peers on a loopback address (the secret then never leaves the host).
    #[default]
    Loopback,
    Allow,
    Deny,
}

impl std::str::FromStr for PlaintextPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "loopback" => Ok(PlaintextPolicy::Loopback),
            "allow" => Ok(PlaintextPolicy::Allow),
            "deny" => Ok(PlaintextPolicy::Deny),
            other => Err(format!("ctl_plaintext: {other:?} is not loopback, allow or deny")),
        }
    }
}

pub struct ServerConfig {
    /// The current secret; each connection uses the value at its start (rotation needs no
    /// restart), and a session waiting for its next request ends when it changes, so a
    /// retired secret keeps no access. `None`: every handshake is refused.
    pub secret: watch::Receiver<Option<CtlSecret>>,
    pub plaintext: PlaintextPolicy,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    /// The largest request body accepted after the handshake (at most [`MAX_BODY_LEN`]).
    pub max_body: usize,
    /// An upload of N bytes may take this plus N / [`MIN_UPLOAD_RATE`] seconds in all.
    pub upload_grace: Duration,
}

impl ServerConfig {
    pub fn new(secret: watch::Receiver<Option<CtlSecret>>) -> ServerConfig {
        ServerConfig {
            secret,
            plaintext: PlaintextPolicy::default(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_body: MAX_BODY_LEN,
            upload_grace: UPLOAD_GRACE,
        }
    }
}

/// The client went away; a handler may stop early.
#[derive(Debug, thiserror::Error)]
#[error("the ctl client went away")]
pub struct Disconnected;

/// Where a handler streams its partial replies (`ConsoleLine`, `NetProgress`, or any message,
/// e.g. one `ServiceStatus` per service). The final reply is the handler's return value.
#[derive(Clone)]
pub struct ReplySink {
    tx: mpsc::Sender<Frame>,
    txn: Txn,
}

impl ReplySink {
    pub async fn send<M: CtlMessage>(&self, msg: &M) -> Result<(), Disconnected> {
        self.tx.send(Frame::new(msg, Some(self.txn.reply(false)))).await.map_err(|_| Disconnected)
    }

    /// A `ConsoleLine` (a newline is added when missing, as Habitat's lines end with one).
    pub async fn line(&self, text: impl Into<String>) -> Result<(), Disconnected> {
        let mut line = text.into();
        if !line.ends_with('\n') {
            line.push('\n');
        }
        self.send(&proto::ConsoleLine { line, color: None, bold: false }).await
    }

    pub async fn progress(&self, total: u64, position: u64) -> Result<(), Disconnected> {
        self.send(&proto::NetProgress { total, position }).await
    }

    /// A `NetProgress` that never waits: dropped when replies are backed up (a client busy
    /// sending an upload reads them later; progress is advisory).
    pub fn try_progress(&self, total: u64, position: u64) {
        let frame = Frame::new(&proto::NetProgress { total, position }, Some(self.txn.reply(false)));
        let _ = self.tx.try_send(frame);
    }
}

/// The largest chunk of an upload's data (a `PkgChunk` frame also has a few bytes of framing).
pub const MAX_UPLOAD_CHUNK: usize = 256 * 1024;

/// Why an upload ended before all its bytes arrived.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UploadError {
    #[error("the client sent nothing for {0:?}; upload abandoned")]
    Timeout(Duration),
    #[error("the client went away after {received} of {declared} bytes")]
    Closed { received: u64, declared: u64 },
    #[error("bad upload frame: {0}")]
    Protocol(String),
    #[error("the client sent more than the {declared} bytes it announced")]
    TooLong { declared: u64 },
    #[error(
        "the upload took longer than {0:?} (slower than {MIN_UPLOAD_RATE} bytes/s on average); abandoned"
    )]
    TooSlow(Duration),
}

/// An upload may take [`ServerConfig::upload_grace`] plus its size at this rate, however
/// steadily its chunks come: a trickle must not hold an install slot for days.
pub const MIN_UPLOAD_RATE: u64 = 64 * 1024;
pub const UPLOAD_GRACE: Duration = Duration::from_secs(30);

/// The body of an upload request (`PkgInstall`), as the client's chunk frames arrive. Each
/// chunk must arrive within the gateway's timeout.
pub struct Upload {
    rx: mpsc::Receiver<Result<Vec<u8>, UploadError>>,
    declared: u64,
    received: u64,
}

impl Upload {
    /// The byte count the client announced.
    pub fn declared_len(&self) -> u64 {
        self.declared
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next chunk (never empty), or None once all the announced bytes have arrived.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, UploadError> {
        if self.received >= self.declared {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Ok(chunk)) => {
                self.received += chunk.len() as u64;
                Ok(Some(chunk))
            }
            Some(Err(e)) => Err(e),
            None => Err(UploadError::Closed { received: self.received, declared: self.declared }),
        }
    }

    /// An upload fed from a channel (tests of handlers).
    pub fn from_channel(rx: mpsc::Receiver<Result<Vec<u8>, UploadError>>, declared: u64) -> Upload {
        Upload { rx, declared, received: 0 }
    }
}

/// What the gateway serves. The server decodes and authenticates; the handler acts.
pub trait CtlHandler: Send + Sync + 'static {
    /// Handles one request: stream partial replies into `out`, return the final one (sent
    /// `complete`), or a `NetErr` (sent as the complete reply).
    fn handle(&self, req: CtlRequest, out: ReplySink) -> impl Future<Output = Result<Reply, NetErr>> + Send;

    /// Handles a request whose body follows in chunk frames ([`CtlRequest::upload_len`]).
    /// Returning before the upload is complete refuses the rest of it.
    fn handle_upload(
        &self,
        req: CtlRequest,
        upload: Upload,
        out: ReplySink,
    ) -> impl Future<Output = Result<Reply, NetErr>> + Send {
        let _ = (upload, out);
        async move {
            Err(NetErr::new(ErrCode::NotSupported, format!("{} is not supported by this server", req.name())))
        }
    }
}

/// How long a stopping gateway waits for the connections it is serving.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Serves `listener` until `shutdown` resolves, then lets open connections finish (up to
/// [`DRAIN`]). Connections over the cap are closed at once.
pub async fn serve<H: CtlHandler>(
    listener: TcpListener,
    config: ServerConfig,
    handler: Arc<H>,
    metrics: Arc<CtlMetrics>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let config = Arc::new(config);
    // Tells idle sessions to close when the gateway stops (a request in flight finishes).
    let (stopping_tx, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    CtlMetrics::inc(&metrics.accept_errors);
                    tracing::warn!(error = %e, "ctl gateway: accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            CtlMetrics::inc(&metrics.over_capacity);
            tracing::warn!(%peer, "ctl gateway: too many connections; closing this one");
            continue;
        };
        CtlMetrics::inc(&metrics.connections);
        let (config, handler, metrics) = (config.clone(), handler.clone(), metrics.clone());
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            connection(stream, peer, &config, handler, &metrics, stopping).await;
            drop(slot);
        });
    }
    let _ = stopping_tx.send(true);
    // Replies in flight (a `sup restart`'s own among them) are finished before the caller
    // goes on; a client that sends nothing is not waited for past the drain limit.
    let all = u32::try_from(config.max_connections.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN, slots.acquire_many(all)).await.is_err() {
        tracing::debug!("ctl gateway: connections still open after {DRAIN:?}; not waiting for them");
    }
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Noise(#[from] NoiseError),
}

/// A Noise session shared by a connection's two halves (their nonces are independent; the lock
/// is held only while one record is sealed or opened, never across an await).
type SharedChannel = Arc<std::sync::Mutex<Channel>>;

fn with_channel<T>(ch: &SharedChannel, f: impl FnOnce(&mut Channel) -> T) -> T {
    let mut guard = ch.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut guard)
}

/// The reading half of a connection, plain or inside a Noise channel.
struct Reader {
    stream: OwnedReadHalf,
    noise: Option<SharedChannel>,
    inbuf: Vec<u8>,
}

impl Reader {
    async fn read_frame(&mut self, max_body: usize) -> Result<Frame, LinkError> {
        loop {
            match parse_frame(&self.inbuf, max_body)? {
                Parsed::Frame(f, n) => {
                    self.inbuf.drain(..n);
                    return Ok(f);
                }
                Parsed::Need(n) => self.fill(n).await?,
            }
        }
    }

    /// Reads toward `need` buffered bytes: plainly exactly that many, or one more record.
    async fn fill(&mut self, need: usize) -> Result<(), LinkError> {
        match &self.noise {
            None => {
                let have = self.inbuf.len();
                self.inbuf.resize(need, 0);
                self.stream.read_exact(&mut self.inbuf[have..]).await?;
            }
            Some(ch) => {
                let len = self.stream.read_u16().await? as usize;
                let mut record = vec![0u8; len];
                self.stream.read_exact(&mut record).await?;
                let plain = with_channel(ch, |c| c.open(&record))?;
                self.inbuf.extend_from_slice(&plain);
            }
        }
        Ok(())
    }
}

/// The writing half.
struct Writer {
    stream: OwnedWriteHalf,
    noise: Option<SharedChannel>,
}

impl Writer {
    async fn write_frame(&mut self, f: &Frame) -> Result<(), LinkError> {
        let bytes = f.encode()?;
        match &self.noise {
            None => self.stream.write_all(&bytes).await?,
            Some(ch) => {
                let sealed = with_channel(ch, |c| c.seal(&bytes))?;
                self.stream.write_all(&sealed).await?;
            }
        }
        Ok(())
    }
}

/// A connection's byte stream, plain or inside a Noise channel.
struct Link {
    r: Reader,
    w: Writer,
}

impl Link {
    fn new(stream: TcpStream) -> Link {
        let (rd, wr) = stream.into_split();
        Link {
            r: Reader { stream: rd, noise: None, inbuf: Vec::new() },
            w: Writer { stream: wr, noise: None },
        }
    }

    fn set_channel(&mut self, channel: Channel) {
        let shared = Arc::new(std::sync::Mutex::new(channel));
        self.r.noise = Some(shared.clone());
        self.w.noise = Some(shared);
    }

    async fn read_frame(&mut self, max_body: usize) -> Result<Frame, LinkError> {
        self.r.read_frame(max_body).await
    }

    async fn write_frame(&mut self, f: &Frame) -> Result<(), LinkError> {
        self.w.write_frame(f).await
    }

    /// Sends a final `NetErr` and closes (best effort: the peer may be gone).
    async fn refuse(&mut self, txn: Option<Txn>, err: NetErr) {
        let frame = Frame::new(&err, Some(txn.unwrap_or(Txn::request(0)).reply(true)));
        let _ = self.write_frame(&frame).await;
        let _ = self.w.stream.shutdown().await;
    }
}

fn is_loopback(peer: &SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// How a peer authenticated, which decides whether its connection is a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Authenticated {
    Noise,
    Plaintext,
}

/// Authenticates the peer. `Ok(None)`: refused (already answered, counted and logged).
async fn handshake(
    link: &mut Link,
    peer: SocketAddr,
    config: &ServerConfig,
    metrics: &CtlMetrics,
) -> Result<Option<Authenticated>, LinkError> {
    let first = link.read_frame(HANDSHAKE_MAX_BODY).await?;
    let secret = config.secret.borrow().clone();
    // Logged with the peer and the reason, never with what the peer sent.
    let unauthorized = |why: &str| {
        CtlMetrics::inc(&metrics.auth_failures);
        tracing::warn!(%peer, "ctl gateway: handshake refused: {why}");
    };
    if first.is::<proto::NoiseHandshake>() {
        let msg = first.decode::<proto::NoiseHandshake>()?.message.unwrap_or_default();
        let Some(secret) = secret else {
            unauthorized("this supervisor has no ctl secret");
            link.refuse(first.txn, NetErr::new(ErrCode::Unauthorized, "the supervisor has no ctl secret"))
                .await;
            return Ok(None);
        };
        match noise::respond(&secret, &msg) {
            Ok((channel, reply)) => {
                let txn = first.txn.unwrap_or(Txn::request(0)).reply(true);
                link.write_frame(&Frame::new(&proto::NoiseHandshake { message: Some(reply) }, Some(txn)))
                    .await?;
                link.set_channel(channel);
                CtlMetrics::inc(&metrics.noise_handshakes);
                Ok(Some(Authenticated::Noise))
            }
            Err(NoiseError::Handshake) => {
                unauthorized("wrong secret (noise)");
                link.refuse(first.txn, NetErr::new(ErrCode::Unauthorized, "secret key mismatch")).await;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    } else if first.is::<proto::Handshake>() {
        let allowed = match config.plaintext {
            PlaintextPolicy::Allow => true,
            PlaintextPolicy::Loopback => is_loopback(&peer),
            PlaintextPolicy::Deny => false,
        };
        if !allowed {
            CtlMetrics::inc(&metrics.plaintext_refused);
            tracing::warn!(%peer, policy = ?config.plaintext, "ctl gateway: plaintext handshake refused");
            let msg = "plaintext handshakes are not accepted from this address (ctl_plaintext); use warren's client";
            link.refuse(first.txn, NetErr::new(ErrCode::Unauthorized, msg)).await;
            return Ok(None);
        }
        if first.txn.is_none() {
            return Err(FrameError::Unexpected { want: "a transactional Handshake", got: first.name }.into());
        }
        let given = first.decode::<proto::Handshake>()?.secret_key.unwrap_or_default();
        let given = zeroize::Zeroizing::new(given);
        match secret {
            Some(s) if s.matches(&given) => {
                link.write_frame(&Frame::new(&proto::NetOk {}, first.txn.map(|t| t.reply(true)))).await?;
                CtlMetrics::inc(&metrics.plaintext_handshakes);
                Ok(Some(Authenticated::Plaintext))
            }
            _ => {
                unauthorized("wrong secret (plaintext)");
                link.refuse(first.txn, NetErr::new(ErrCode::Unauthorized, "secret key mismatch")).await;
                Ok(None)
            }
        }
    } else {
        Err(FrameError::Unexpected { want: "Handshake or NoiseHandshake", got: first.name }.into())
    }
}

async fn connection<H: CtlHandler>(
    stream: TcpStream,
    peer: SocketAddr,
    config: &ServerConfig,
    handler: Arc<H>,
    metrics: &CtlMetrics,
    mut stopping: watch::Receiver<bool>,
) {
    let mut link = Link::new(stream);
    let limit = config.handshake_timeout;
    let mut secret = config.secret.clone();
    secret.borrow_and_update();
    let bad = |what: &str, e: &LinkError| {
        if let LinkError::Io(io) = e
            && io.kind() == std::io::ErrorKind::UnexpectedEof
        {
            tracing::debug!(%peer, "ctl gateway: the client closed during the {what}");
            return;
        }
        CtlMetrics::inc(&metrics.bad_frames);
        tracing::warn!(%peer, error = %e, "ctl gateway: bad {what}; closing");
    };
    let kind = match tokio::time::timeout(limit, handshake(&mut link, peer, config, metrics)).await {
        Err(_) => {
            CtlMetrics::inc(&metrics.timeouts);
            tracing::warn!(%peer, "ctl gateway: no handshake within {limit:?}; closing");
            return;
        }
        Ok(Err(e)) => {
            bad("handshake", &e);
            if !matches!(e, LinkError::Io(_)) {
                link.refuse(None, NetErr::new(ErrCode::BadPayload, format!("bad handshake: {e}"))).await;
            }
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(kind))) => kind,
    };
    let mut last_txn = 0;
    for served in 0u64.. {
        let next = link.read_frame(config.max_body.min(MAX_BODY_LEN));
        let rotated = async {
            match secret.changed().await {
                Ok(()) => (),
                // The secret can no longer change.
                Err(_) => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            // A retired secret wins over a request that arrived with it.
            biased;
            // The secret it authenticated with is retired: no further request on it.
            () = rotated => {
                tracing::debug!(%peer, "ctl gateway: the ctl secret changed; closing the session");
                return;
            }
            // Only a session waiting for its next request is cut short by a stop.
            _ = stopping.wait_for(|s| *s), if served > 0 => return,
            r = tokio::time::timeout(limit, next) => r,
        };
        let frame = match read {
            Err(_) if served > 0 => {
                tracing::debug!(%peer, served, "ctl gateway: session idle for {limit:?}; closing");
                return;
            }
            Err(_) => {
                CtlMetrics::inc(&metrics.timeouts);
                tracing::warn!(%peer, "ctl gateway: no request within {limit:?}; closing");
                return;
            }
            Ok(Err(LinkError::Io(e))) if served > 0 && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::debug!(%peer, served, "ctl gateway: session ended by the client");
                return;
            }
            Ok(Err(e)) => {
                bad("request", &e);
                if matches!(e, LinkError::Frame(_)) {
                    let code = if matches!(e, LinkError::Frame(FrameError::BodyTooLarge { .. })) {
                        ErrCode::EntityTooLarge
                    } else {
                        ErrCode::BadPayload
                    };
                    link.refuse(Some(Txn::request(last_txn + 1)), NetErr::new(code, e.to_string())).await;
                }
                return;
            }
            Ok(Ok(f)) => f,
        };
        let txn = frame.txn.unwrap_or(Txn::request(0));
        last_txn = txn.id;
        let req = match CtlRequest::decode(&frame) {
            Ok(r) => r,
            Err(e) => {
                CtlMetrics::inc(&metrics.request_errors);
                tracing::warn!(%peer, error = %e, "ctl gateway: refused request");
                link.refuse(Some(txn), e).await;
                return;
            }
        };
        CtlMetrics::inc(&metrics.requests);
        tracing::debug!(%peer, request = req.name(), "ctl request");
        if let Some(declared) = req.upload_len() {
            // An upload's unread remainder makes the stream's next frame unknowable: it ends
            // the session.
            return run_upload(link, req, txn, declared, handler.clone(), config, metrics).await;
        }
        if !run_handler(&mut link.w, req, txn, handler.clone(), metrics).await
            || kind == Authenticated::Plaintext
        {
            let _ = link.w.stream.shutdown().await;
            return;
        }
    }
}

/// The final frame of a handler's result.
fn final_frame(result: Result<Reply, NetErr>, txn: Txn, metrics: &CtlMetrics) -> Frame {
    let last = match result {
        Ok(r) if r.body.len() <= MAX_BODY_LEN => Frame { name: r.name.into(), txn: None, body: r.body },
        Ok(r) => {
            CtlMetrics::inc(&metrics.request_errors);
            let msg = format!("the {} reply is too large to send", r.name);
            Frame::new(&NetErr::new(ErrCode::EntityTooLarge, msg), None)
        }
        Err(e) => {
            CtlMetrics::inc(&metrics.request_errors);
            Frame::new(&e, None)
        }
    };
    Frame { txn: Some(txn.reply(true)), ..last }
}

/// Writes replies as they come until the complete one; returns whether it was written.
async fn write_replies(writer: &mut Writer, mut rx: mpsc::Receiver<Frame>) -> bool {
    while let Some(f) = rx.recv().await {
        let done = f.is_complete();
        if let Err(e) = writer.write_frame(&f).await {
            tracing::debug!(error = %e, "ctl gateway: reply not delivered");
            return false;
        }
        if done {
            return true;
        }
    }
    false
}

/// Reads an upload's chunk frames into `tx` until `declared` bytes have arrived, the client
/// stalls or misbehaves (the error goes to the handler), or the handler stops listening.
async fn pump_upload(
    reader: &mut Reader,
    txn: Txn,
    declared: u64,
    limit: Duration,
    grace: Duration,
    tx: mpsc::Sender<Result<Vec<u8>, UploadError>>,
) -> u64 {
    let mut got = 0u64;
    // Room for a chunk and its framing; anything larger is refused from its header.
    let max_body = MAX_UPLOAD_CHUNK + 64;
    let overall = grace + Duration::from_secs(declared / MIN_UPLOAD_RATE);
    let deadline = tokio::time::Instant::now() + overall;
    while got < declared {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let read = tokio::select! {
            r = tokio::time::timeout(limit.min(left), reader.read_frame(max_body)) => r,
            _ = tx.closed() => return got,
        };
        let result = match read {
            Err(_) if left <= limit => Err(UploadError::TooSlow(overall)),
            Err(_) => Err(UploadError::Timeout(limit)),
            Ok(Err(LinkError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(UploadError::Closed { received: got, declared })
            }
            Ok(Err(LinkError::Io(_))) => Err(UploadError::Closed { received: got, declared }),
            Ok(Err(e)) => Err(UploadError::Protocol(e.to_string())),
            Ok(Ok(f)) if f.txn.map(|t| t.id) != Some(txn.id) => {
                Err(UploadError::Protocol(format!("a {} frame outside the request's transaction", f.name)))
            }
            Ok(Ok(f)) => match f.decode::<proto::PkgChunk>() {
                Err(e) => Err(UploadError::Protocol(e.to_string())),
                Ok(c) => match c.data {
                    Some(d) if !d.is_empty() && d.len() <= MAX_UPLOAD_CHUNK => {
                        got += d.len() as u64;
                        if got > declared { Err(UploadError::TooLong { declared }) } else { Ok(d) }
                    }
                    Some(d) if !d.is_empty() => Err(UploadError::Protocol(format!(
                        "a chunk of {} bytes (at most {MAX_UPLOAD_CHUNK})",
                        d.len()
                    ))),
                    _ => Err(UploadError::Protocol("an empty chunk".into())),
                },
            },
        };
        let failed = result.is_err();
        if tx.send(result).await.is_err() || failed {
            return got;
        }
    }
    got
}

/// Runs an upload handler: chunks are read while replies are written. If the handler answers
/// before the whole body arrived, what the client still sends is read and dropped for a
/// while after the answer, so closing does not reset the connection before the client reads it.
async fn run_upload<H: CtlHandler>(
    link: Link,
    req: CtlRequest,
    txn: Txn,
    declared: u64,
    handler: Arc<H>,
    config: &ServerConfig,
    metrics: &CtlMetrics,
) {
    let Link { r: mut reader, w: mut writer } = link;
    let limit = config.handshake_timeout;
    let (tx, rx) = mpsc::channel::<Frame>(32);
    let sink = ReplySink { tx: tx.clone(), txn };
    let (chunk_tx, chunk_rx) = mpsc::channel(4);
    let upload = Upload { rx: chunk_rx, declared, received: 0 };
    let run = async move {
        let result = handler.handle_upload(req, upload, sink).await;
        let _ = tx.send(final_frame(result, txn, metrics)).await;
    };
    let pump = pump_upload(&mut reader, txn, declared, limit, config.upload_grace, chunk_tx);
    let ((), _, got) = tokio::join!(run, write_replies(&mut writer, rx), pump);
    let _ = writer.stream.shutdown().await;
    if got < declared {
        let drain = async {
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(reader.stream.read(&mut buf).await, Ok(n) if n > 0) {}
        };
        let _ = tokio::time::timeout(limit, drain).await;
    }
}

/// Runs the handler while writing its replies as they come; the last one is `complete`.
/// Returns whether that last one was delivered (the connection can serve another request).
async fn run_handler<H: CtlHandler>(
    writer: &mut Writer,
    req: CtlRequest,
    txn: Txn,
    handler: Arc<H>,
    metrics: &CtlMetrics,
) -> bool {
    let (tx, rx) = mpsc::channel::<Frame>(32);
    let sink = ReplySink { tx: tx.clone(), txn };
    let run = async move {
        let result = handler.handle(req, sink).await;
        let _ = tx.send(final_frame(result, txn, metrics)).await;
    };
    let ((), delivered) = tokio::join!(run, write_replies(writer, rx));
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_means_loopback_in_both_families() {
        for ok in ["127.0.0.1:1", "127.9.9.9:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            assert!(is_loopback(&ok.parse().unwrap()), "{ok}");
        }
        for no in ["10.0.0.1:1", "[::ffff:10.0.0.1]:1", "[fe80::1]:1", "0.0.0.0:1"] {
            assert!(!is_loopback(&no.parse().unwrap()), "{no}");
        }
        assert_eq!("deny".parse::<PlaintextPolicy>(), Ok(PlaintextPolicy::Deny));
        assert!("Deny".parse::<PlaintextPolicy>().is_err());
    }
}
