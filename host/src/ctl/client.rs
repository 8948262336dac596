//! The ctl gateway's client (blocking: the CLI makes a call or two per process). A Noise
//! connection can carry several requests ([`CtlClient::session`]); Habitat's plaintext one
//! serves one.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::noise::{Channel, Initiator, NoiseError};
use super::proto::{self, CtlMessage, NetErr};
use super::protocol::{CtlRequest, Frame, FrameError, MAX_BODY_LEN, Parsed, Txn, parse_frame};
use super::secret::CtlSecret;

pub const DEFAULT_PORT: u16 = 9632;
pub const REMOTE_SUP_ENV: &str = "WARREN_REMOTE_SUP";
/// Habitat's client waits this long for the handshake's answer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two replies of a request (a handler may stream for long, but not stay silent).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// `HOST[:PORT]` → `HOST:PORT`, with the ctl port when none is given (`[::1]` too).
pub fn remote_addr(remote: &str) -> String {
    let r = remote.trim();
    let has_port = if let Some(rest) = r.strip_prefix('[') {
        rest.split_once(']').is_some_and(|(_, p)| p.starts_with(':'))
    } else {
        r.matches(':').count() == 1
    };
    if has_port {
        r.to_string()
    } else if r.contains(':') && !r.starts_with('[') {
        format!("[{r}]:{DEFAULT_PORT}")
    } else {
        format!("{r}:{DEFAULT_PORT}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the ctl gateway at {remote}: {source}")]
    Connect { remote: String, source: std::io::Error },
    #[error("{remote}: {source}")]
    Io { remote: String, source: std::io::Error },
    #[error("{remote}: {source}")]
    Frame { remote: String, source: FrameError },
    #[error("{remote}: {source}")]
    Noise { remote: String, source: NoiseError },
    #[error("{remote} refused the handshake: {err}")]
    Refused { remote: String, err: NetErr },
    #[error("{remote}: {err}")]
    Remote { remote: String, err: NetErr },
    #[error("{remote}: unexpected reply {got}")]
    Unexpected { remote: String, got: String },
    #[error("{remote}: the connection closed before the last reply")]
    Closed { remote: String },
    #[error(
        "{remote}: a plaintext handshake serves one request per connection; sessions need warren's Noise handshake"
    )]
    NoSession { remote: String },
}

impl ClientError {
    /// The supervisor's `NetErr`, when that is what failed.
    pub fn net_err(&self) -> Option<&NetErr> {
        match self {
            ClientError::Refused { err, .. } | ClientError::Remote { err, .. } => Some(err),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeKind {
    /// warren's Noise channel (the default).
    Noise,
    /// Habitat's plaintext `Handshake{secret_key}` (what an unmodified `hab` sends).
    Plaintext,
}

#[derive(Clone, Debug)]
pub struct CtlClient {
    remote: String,
    secret: CtlSecret,
    kind: HandshakeKind,
    reply_timeout: Duration,
}

/// A Noise session shared by the writing thread and the reading one of an upload.
type SharedChannel = Arc<Mutex<Channel>>;

fn with_channel<T>(ch: &SharedChannel, f: impl FnOnce(&mut Channel) -> T) -> T {
    let mut guard = ch.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut guard)
}

struct Conn<'a> {
    remote: &'a str,
    stream: TcpStream,
    noise: Option<SharedChannel>,
    inbuf: Vec<u8>,
}

impl<'a> Conn<'a> {
    fn io(&self) -> impl Fn(std::io::Error) -> ClientError + '_ {
        |source| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                ClientError::Closed { remote: self.remote.to_string() }
            } else {
                ClientError::Io { remote: self.remote.to_string(), source }
            }
        }
    }

    fn noise_err(&self, source: NoiseError) -> ClientError {
        ClientError::Noise { remote: self.remote.to_string(), source }
    }

    fn write_frame(&mut self, f: &Frame) -> Result<(), ClientError> {
        let bytes =
            f.encode().map_err(|source| ClientError::Frame { remote: self.remote.to_string(), source })?;
        let bytes = match &self.noise {
            None => bytes,
            Some(ch) => with_channel(ch, |c| c.seal(&bytes)).map_err(|e| self.noise_err(e))?,
        };
        self.stream.write_all(&bytes).map_err(self.io())
    }

    fn read_frame(&mut self) -> Result<Frame, ClientError> {
        loop {
            let parsed = parse_frame(&self.inbuf, MAX_BODY_LEN)
                .map_err(|source| ClientError::Frame { remote: self.remote.to_string(), source })?;
            let need = match parsed {
                Parsed::Frame(f, n) => {
                    self.inbuf.drain(..n);
                    return Ok(f);
                }
                Parsed::Need(n) => n,
            };
            match self.noise.clone() {
                None => {
                    let have = self.inbuf.len();
                    self.inbuf.resize(need, 0);
                    let mut buf = std::mem::take(&mut self.inbuf);
                    let r = self.stream.read_exact(&mut buf[have..]);
                    self.inbuf = buf;
                    r.map_err(self.io())?;
                }
                Some(ch) => {
                    let mut len = [0u8; 2];
                    self.stream.read_exact(&mut len).map_err(self.io())?;
                    let mut record = vec![0u8; u16::from_be_bytes(len) as usize];
                    self.stream.read_exact(&mut record).map_err(self.io())?;
                    let plain = with_channel(&ch, |c| c.open(&record)).map_err(|e| self.noise_err(e))?;
                    self.inbuf.extend_from_slice(&plain);
                }
            }
        }
    }

    /// A second handle on the same connection for another thread to read from.
    fn reading_half(&mut self) -> Result<Conn<'a>, ClientError> {
        let stream = self.stream.try_clone().map_err(self.io())?;
        Ok(Conn {
            remote: self.remote,
            stream,
            noise: self.noise.clone(),
            inbuf: std::mem::take(&mut self.inbuf),
        })
    }
}

/// What [`CtlClient::upload`] streams: `len` bytes from `body`, with `on_sent` told the count
/// sent so far after each chunk.
pub struct UploadBody<'a> {
    pub body: &'a mut dyn Read,
    pub len: u64,
    pub on_sent: &'a mut dyn FnMut(u64),
}

impl CtlClient {
    /// A client of the gateway at `remote` (HOST[:PORT]) using warren's Noise handshake.
    pub fn new(remote: &str, secret: CtlSecret) -> CtlClient {
        CtlClient {
            remote: remote_addr(remote),
            secret,
            kind: HandshakeKind::Noise,
            reply_timeout: REPLY_TIMEOUT,
        }
    }

    pub fn with_handshake(mut self, kind: HandshakeKind) -> CtlClient {
        self.kind = kind;
        self
    }

    pub fn remote(&self) -> &str {
        &self.remote
    }

    fn connect(&self) -> Result<Conn<'_>, ClientError> {
        let remote = self.remote.as_str();
        let connect_err = |source| ClientError::Connect { remote: remote.to_string(), source };
        let addrs: Vec<_> = remote.to_socket_addrs().map_err(connect_err)?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, HANDSHAKE_TIMEOUT) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(connect_err)?;
                    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(connect_err)?;
                    return Ok(Conn { remote, stream, noise: None, inbuf: Vec::new() });
                }
                Err(e) => last = e,
            }
        }
        Err(connect_err(last))
    }

    fn handshake(&self, conn: &mut Conn<'_>) -> Result<(), ClientError> {
        let txn = Some(Txn::request(0));
        let refused = |f: &Frame| match f.decode::<NetErr>() {
            Ok(err) => ClientError::Refused { remote: self.remote.clone(), err },
            Err(_) => ClientError::Unexpected { remote: self.remote.clone(), got: f.name.clone() },
        };
        match self.kind {
            HandshakeKind::Noise => {
                let (init, first) = Initiator::start(&self.secret).map_err(|e| conn.noise_err(e))?;
                conn.write_frame(&Frame::new(&proto::NoiseHandshake { message: Some(first) }, txn))?;
                let reply = conn.read_frame()?;
                let Ok(hs) = reply.decode::<proto::NoiseHandshake>() else { return Err(refused(&reply)) };
                let channel = init.finish(&hs.message.unwrap_or_default()).map_err(|e| conn.noise_err(e))?;
                conn.noise = Some(Arc::new(Mutex::new(channel)));
            }
            HandshakeKind::Plaintext => {
                let hs = proto::Handshake { secret_key: Some(self.secret.expose().to_string()) };
                conn.write_frame(&Frame::new(&hs, txn))?;
                let reply = conn.read_frame()?;
                if !reply.is::<proto::NetOk>() {
                    return Err(refused(&reply));
                }
            }
        }
        Ok(())
    }

    fn open(&self) -> Result<Conn<'_>, ClientError> {
        let mut conn = self.connect()?;
        self.handshake(&mut conn)?;
        Ok(conn)
    }

    /// A connection that carries one request after another (Noise only), for a caller that
    /// asks often: the key exchange is paid once.
    pub fn session(&self) -> Result<Session<'_>, ClientError> {
        if self.kind == HandshakeKind::Plaintext {
            return Err(ClientError::NoSession { remote: self.remote.clone() });
        }
        Ok(Session { client: self, conn: self.open()?, txn: 0 })
    }

    /// Sends `req` on a connection of its own and returns its complete reply; partial replies
    /// (console lines, progress) go to `on_partial` as they arrive. A `NetErr` reply is an error.
    pub fn call(&self, req: &CtlRequest, on_partial: impl FnMut(&Frame)) -> Result<Frame, ClientError> {
        Session { client: self, conn: self.open()?, txn: 0 }.call(req, on_partial)
    }

    /// Sends `req` (an upload request such as `PkgInstall`, announcing `body.len` bytes), then
    /// the body in `PkgChunk` frames, while a second thread reads the replies: partial ones go
    /// to `on_partial` between chunks, and an early final reply (a refusal) stops the upload.
    /// Returns the complete reply; a `NetErr` is an error.
    pub fn upload(
        &self,
        req: &CtlRequest,
        body: UploadBody<'_>,
        mut on_partial: impl FnMut(&Frame),
    ) -> Result<Frame, ClientError> {
        use std::sync::mpsc::{TryRecvError, channel};
        let mut conn = self.open()?;
        conn.write_frame(&req.to_frame(Txn::request(1)))?;
        let mut reader = conn.reading_half()?;
        let _ = reader.stream.set_read_timeout(Some(self.reply_timeout));
        let (tx, rx) = channel::<Result<Frame, ClientError>>();
        let remote = self.remote.clone();
        let UploadBody { body, len, on_sent } = body;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                loop {
                    let r = reader.read_frame();
                    let last = r.as_ref().map_or(true, Frame::is_complete);
                    if tx.send(r).is_err() || last {
                        break;
                    }
                }
            });
            let mut sent = 0u64;
            let mut buf = vec![0u8; super::server::MAX_UPLOAD_CHUNK];
            let mut early = None;
            // A local failure (the file), or a failed write (the supervisor may have answered
            // and closed: its answer says why).
            let mut failed: Option<(ClientError, bool)> = None;
            'send: while sent < len {
                loop {
                    match rx.try_recv() {
                        Ok(Ok(f)) if !f.is_complete() => on_partial(&f),
                        Ok(r) => {
                            early = Some(r);
                            break 'send;
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => break 'send,
                    }
                }
                let want = (len - sent).min(buf.len() as u64) as usize;
                let n = match read_some(body, &mut buf[..want]) {
                    Ok(0) => {
                        let source = std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("the file ended after {sent} of {len} bytes"),
                        );
                        failed = Some((ClientError::Io { remote: remote.clone(), source }, false));
                        break;
                    }
                    Ok(n) => n,
                    Err(source) => {
                        failed = Some((ClientError::Io { remote: remote.clone(), source }, false));
                        break;
                    }
                };
                let chunk = proto::PkgChunk { data: Some(buf[..n].to_vec()) };
                if let Err(e) = conn.write_frame(&Frame::new(&chunk, Some(Txn::request(1)))) {
                    failed = Some((e, true));
                    break;
                }
                sent += n as u64;
                on_sent(sent);
            }
            if let Some((e, wait)) = failed.take() {
                // The supervisor's answer, if it sent one (it ends the upload first).
                let answer = if wait {
                    rx.recv_timeout(Duration::from_secs(2)).ok()
                } else {
                    let _ = conn.stream.shutdown(std::net::Shutdown::Write);
                    rx.try_iter().find(|r| r.as_ref().is_ok_and(Frame::is_complete))
                };
                let _ = conn.stream.shutdown(std::net::Shutdown::Both);
                return match answer.and_then(Result::ok) {
                    Some(f) if f.is::<NetErr>() => Err(self.remote_err(&f)),
                    _ => Err(e),
                };
            }
            let last = match early {
                Some(r) => r,
                None => loop {
                    match rx.recv() {
                        Ok(Ok(f)) if !f.is_complete() => on_partial(&f),
                        Ok(r) => break r,
                        Err(_) => break Err(ClientError::Closed { remote: remote.clone() }),
                    }
                },
            };
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            let f = last?;
            if f.is::<NetErr>() {
                return Err(self.remote_err(&f));
            }
            Ok(f)
        })
    }

    fn remote_err(&self, f: &Frame) -> ClientError {
        match f.decode::<NetErr>() {
            Ok(err) => ClientError::Remote { remote: self.remote.clone(), err },
            Err(source) => ClientError::Frame { remote: self.remote.clone(), source },
        }
    }

    /// [`CtlClient::call`] whose final reply must be an `M`.
    pub fn call_for<M: CtlMessage>(
        &self,
        req: &CtlRequest,
        on_partial: impl FnMut(&Frame),
    ) -> Result<M, ClientError> {
        let f = self.call(req, on_partial)?;
        self.expect(f)
    }

    fn expect<M: CtlMessage>(&self, f: Frame) -> Result<M, ClientError> {
        f.decode::<M>()
            .map_err(|_| ClientError::Unexpected { remote: self.remote.clone(), got: f.name.clone() })
    }
}

/// An authenticated connection to one supervisor; requests go one after another.
pub struct Session<'a> {
    client: &'a CtlClient,
    conn: Conn<'a>,
    /// The last request's transaction id (the handshake's is 0).
    txn: u32,
}

impl Session<'_> {
    /// Sends `req` and returns its complete reply, as [`CtlClient::call`] does.
    pub fn call(
        &mut self,
        req: &CtlRequest,
        mut on_partial: impl FnMut(&Frame),
    ) -> Result<Frame, ClientError> {
        let remote = || self.client.remote.clone();
        self.txn += 1;
        self.conn.write_frame(&req.to_frame(Txn::request(self.txn)))?;
        let _ = self.conn.stream.set_read_timeout(Some(self.client.reply_timeout));
        loop {
            let f = self.conn.read_frame()?;
            if f.txn.map(|t| t.id) != Some(self.txn) {
                return Err(ClientError::Unexpected {
                    remote: remote(),
                    got: format!("{} of another request", f.name),
                });
            }
            if !f.is_complete() {
                on_partial(&f);
                continue;
            }
            if f.is::<NetErr>() {
                return Err(self.client.remote_err(&f));
            }
            return Ok(f);
        }
    }

    /// [`Session::call`] whose final reply must be an `M`.
    pub fn call_for<M: CtlMessage>(
        &mut self,
        req: &CtlRequest,
        on_partial: impl FnMut(&Frame),
    ) -> Result<M, ClientError> {
        let f = self.call(req, on_partial)?;
        self.client.expect(f)
    }
}

/// One `read`, retried on EINTR.
fn read_some(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::remote_addr;

    #[test]
    fn remote_addresses_get_the_ctl_port() {
        assert_eq!(remote_addr("10.0.0.1"), "10.0.0.1:9632");
        assert_eq!(remote_addr("10.0.0.1:1"), "10.0.0.1:1");
        assert_eq!(remote_addr("host.example"), "host.example:9632");
        assert_eq!(remote_addr("[::1]:7"), "[::1]:7");
        assert_eq!(remote_addr("[::1]"), "[::1]:9632");
        assert_eq!(remote_addr("::1"), "[::1]:9632");
    }
}
