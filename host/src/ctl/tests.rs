//! The server and client together, in one process, over loopback TCP.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::proto::{self, ErrCode, NetErr};
use super::*;

#[derive(Default)]
struct Echo {
    calls: AtomicUsize,
}

impl CtlHandler for Echo {
    async fn handle(&self, req: CtlRequest, out: ReplySink) -> Result<Reply, NetErr> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match req {
            CtlRequest::Ping(p) => {
                out.line("pinging").await.map_err(|e| NetErr::new(ErrCode::Io, e.to_string()))?;
                out.progress(2, 1).await.map_err(|e| NetErr::new(ErrCode::Io, e.to_string()))?;
                Ok(Reply::new(&proto::CtlPong { payload: p.payload }))
            }
            _ => Err(NetErr::new(ErrCode::NotSupported, "not here")),
        }
    }

    /// Hashes the upload; a file name "refuse" is refused before any chunk is read.
    async fn handle_upload(
        &self,
        req: CtlRequest,
        mut upload: Upload,
        out: ReplySink,
    ) -> Result<Reply, NetErr> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let CtlRequest::PkgInstall(p) = req else { return Err(NetErr::new(ErrCode::NotSupported, "no")) };
        if p.file_name.as_deref() == Some("refuse") {
            return Err(NetErr::new(ErrCode::Conflict, "refused early"));
        }
        let mut h = crate::crypto::sodium::Blake2b256::new();
        while let Some(chunk) =
            upload.next_chunk().await.map_err(|e| NetErr::new(ErrCode::Io, e.to_string()))?
        {
            h.update(&chunk);
            out.try_progress(upload.declared_len(), upload.received());
        }
        Ok(Reply::new(&proto::CtlPong { payload: Some(h.finalize().to_vec()) }))
    }
}

struct Server {
    addr: String,
    handler: Arc<Echo>,
    metrics: Arc<CtlMetrics>,
    secret_tx: watch::Sender<Option<CtlSecret>>,
    _rt: std::thread::JoinHandle<()>,
}

fn start(plaintext: PlaintextPolicy) -> Server {
    start_with(plaintext, MAX_CONNECTIONS_FOR_TESTS)
}

const MAX_CONNECTIONS_FOR_TESTS: usize = 64;

fn start_with(plaintext: PlaintextPolicy, max_connections: usize) -> Server {
    let (secret_tx, secret_rx) = watch::channel(CtlSecret::new("right"));
    let handler = Arc::new(Echo::default());
    let metrics = Arc::new(CtlMetrics::default());
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (h, m) = (handler.clone(), metrics.clone());
    let rt = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(l.local_addr().unwrap().to_string()).unwrap();
            let mut config = ServerConfig::new(secret_rx);
            config.plaintext = plaintext;
            config.handshake_timeout = Duration::from_secs(2);
            config.upload_grace = Duration::from_secs(1);
            config.max_connections = max_connections;
            serve(l, config, h, m, std::future::pending()).await;
        });
    });
    Server { addr: addr_rx.recv().unwrap(), handler, metrics, secret_tx, _rt: rt }
}

fn ping(payload: &[u8]) -> CtlRequest {
    CtlRequest::Ping(proto::CtlPing { payload: Some(payload.to_vec()) })
}

#[test]
fn noise_and_plaintext_pings_stream_their_replies() {
    let s = start(PlaintextPolicy::Loopback);
    for kind in [HandshakeKind::Noise, HandshakeKind::Plaintext] {
        let client = CtlClient::new(&s.addr, CtlSecret::new("right").unwrap()).with_handshake(kind);
        let mut partial = Vec::new();
        let pong: proto::CtlPong = client.call_for(&ping(b"hi"), |f| partial.push(f.name.clone())).unwrap();
        assert_eq!(pong.payload.as_deref(), Some(&b"hi"[..]));
        assert_eq!(partial, ["ConsoleLine", "NetProgress"], "{kind:?}");
    }
    let big = vec![7u8; 300_000];
    let client = CtlClient::new(&s.addr, CtlSecret::new("right").unwrap());
    let pong: proto::CtlPong = client.call_for(&ping(&big), |_| {}).unwrap();
    assert_eq!(pong.payload.unwrap(), big, "a frame larger than one Noise record");
    assert_eq!(CtlMetrics::get(&s.metrics.noise_handshakes), 2);
    assert_eq!(CtlMetrics::get(&s.metrics.plaintext_handshakes), 1);
    let e = client.call(&CtlRequest::SupRestart(proto::SupRestart {}), |_| {}).unwrap_err();
    assert_eq!(e.net_err().unwrap().err_code(), ErrCode::NotSupported);
}

#[test]
fn a_wrong_secret_is_refused_and_nothing_runs() {
    let s = start(PlaintextPolicy::Allow);
    for kind in [HandshakeKind::Noise, HandshakeKind::Plaintext] {
        let client = CtlClient::new(&s.addr, CtlSecret::new("wrong").unwrap()).with_handshake(kind);
        let e = client.call(&ping(b"x"), |_| {}).unwrap_err();
        assert!(matches!(e, ClientError::Refused { .. }), "{kind:?}: {e}");
        assert_eq!(e.net_err().unwrap().err_code(), ErrCode::Unauthorized);
    }
    assert_eq!(s.handler.calls.load(Ordering::SeqCst), 0);
    assert_eq!(CtlMetrics::get(&s.metrics.auth_failures), 2);
    // Rotation: the next connection uses the new secret.
    s.secret_tx.send(CtlSecret::new("wrong")).unwrap();
    let client = CtlClient::new(&s.addr, CtlSecret::new("wrong").unwrap());
    client.call(&ping(b"x"), |_| {}).unwrap();
    let old = CtlClient::new(&s.addr, CtlSecret::new("right").unwrap());
    assert!(old.call(&ping(b"x"), |_| {}).is_err());
}

#[test]
fn deny_refuses_plaintext_even_with_the_right_secret() {
    let s = start(PlaintextPolicy::Deny);
    let client =
        CtlClient::new(&s.addr, CtlSecret::new("right").unwrap()).with_handshake(HandshakeKind::Plaintext);
    let e = client.call(&ping(b"x"), |_| {}).unwrap_err();
    assert_eq!(e.net_err().unwrap().err_code(), ErrCode::Unauthorized);
    assert_eq!(CtlMetrics::get(&s.metrics.plaintext_refused), 1);
    assert_eq!(s.handler.calls.load(Ordering::SeqCst), 0);
    assert!(s.metrics.render().contains("warren_ctl_plaintext_refused_total 1\n"));
}

fn read_all(s: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read as _;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn connections_over_the_cap_are_closed_at_once() {
    let s = start_with(PlaintextPolicy::Loopback, 1);
    let _idle = std::net::TcpStream::connect(&s.addr).unwrap();
    // Wait until the idle connection holds the only slot (accept is asynchronous).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while CtlMetrics::get(&s.metrics.connections) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut second = std::net::TcpStream::connect(&s.addr).unwrap();
    assert!(read_all(&mut second).is_empty(), "closed without a reply");
    assert_eq!(CtlMetrics::get(&s.metrics.over_capacity), 1);
}

/// A Noise handshake done by hand: the connection, the open channel and the client's bytes.
fn session(addr: &str, secret: &CtlSecret) -> (std::net::TcpStream, noise::Channel, Vec<u8>) {
    use std::io::{Read as _, Write as _};
    let (init, m1) = noise::Initiator::start(secret).unwrap();
    let hello =
        Frame::new(&proto::NoiseHandshake { message: Some(m1) }, Some(Txn::request(0))).encode().unwrap();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.write_all(&hello).unwrap();
    let mut buf = Vec::new();
    let reply = loop {
        let mut chunk = [0u8; 256];
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0, "closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
        if let protocol::Parsed::Frame(f, _) = protocol::parse_frame(&buf, 4096).unwrap() {
            break f;
        }
    };
    let channel = init.finish(&reply.decode::<proto::NoiseHandshake>().unwrap().message.unwrap()).unwrap();
    (conn, channel, hello)
}

#[test]
fn replayed_and_altered_noise_records_execute_nothing() {
    use std::io::Write as _;
    let s = start(PlaintextPolicy::Deny);
    let secret = CtlSecret::new("right").unwrap();
    let (mut conn, mut channel, hello) = session(&s.addr, &secret);
    let request = channel.seal(&ping(b"once").to_frame(Txn::request(1)).encode().unwrap()).unwrap();
    conn.write_all(&request).unwrap();
    assert!(!read_all(&mut conn).is_empty());
    assert_eq!(s.handler.calls.load(Ordering::SeqCst), 1);
    // The same bytes again: the handshake is answered with fresh keys, the request no longer
    // decrypts, and the connection ends with the handler not run.
    let mut replay = std::net::TcpStream::connect(&s.addr).unwrap();
    replay.write_all(&[hello, request].concat()).unwrap();
    let got = read_all(&mut replay);
    let only_handshake = matches!(protocol::parse_frame(&got, 4096).unwrap(),
        protocol::Parsed::Frame(f, n) if f.name == "NoiseHandshake" && n == got.len());
    assert!(only_handshake, "the replay got nothing but a handshake reply");
    // One bit flipped in a genuine session's request record.
    let (mut conn, mut channel, _) = session(&s.addr, &secret);
    let mut flipped = channel.seal(&ping(b"twice").to_frame(Txn::request(1)).encode().unwrap()).unwrap();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    conn.write_all(&flipped).unwrap();
    assert!(read_all(&mut conn).is_empty(), "closed without a reply");
    assert_eq!(s.handler.calls.load(Ordering::SeqCst), 1, "neither the replay nor the altered record ran");
    assert_eq!(CtlMetrics::get(&s.metrics.bad_frames), 2);
}

fn upload_req(size: u64, name: &str) -> CtlRequest {
    CtlRequest::PkgInstall(proto::PkgInstall { size: Some(size), file_name: Some(name.into()) })
}

#[test]
fn an_upload_streams_in_chunks_both_ways_and_an_early_refusal_arrives() {
    let s = start(PlaintextPolicy::Deny);
    let client = CtlClient::new(&s.addr, CtlSecret::new("right").unwrap());
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut progress = 0u64;
    let mut sent = 0u64;
    let reply = client
        .upload(
            &upload_req(data.len() as u64, "x"),
            client::UploadBody {
                body: &mut data.as_slice(),
                len: data.len() as u64,
                on_sent: &mut |n| sent = n,
            },
            |f| {
                if let Ok(p) = f.decode::<proto::NetProgress>() {
                    progress = progress.max(p.position);
                }
            },
        )
        .unwrap();
    let pong: proto::CtlPong = reply.decode().unwrap();
    assert_eq!(pong.payload.unwrap(), crate::crypto::sodium::blake2b_256(&data).to_vec());
    assert_eq!(sent, data.len() as u64);
    assert_eq!(progress, data.len() as u64, "progress streamed back while sending");

    // Refused before the first chunk is read: the client stops and reports the answer.
    let big = 64 * 1024 * 1024u64;
    let mut zeros = std::io::repeat(0);
    let mut sent = 0;
    let e = client
        .upload(
            &upload_req(big, "refuse"),
            client::UploadBody { body: &mut zeros, len: big, on_sent: &mut |n| sent = n },
            |_| {},
        )
        .unwrap_err();
    assert_eq!(e.net_err().map(|n| n.err_code()), Some(ErrCode::Conflict), "{e}");
    assert!(sent < big, "the client stopped sending once refused");

    // A handler without upload support refuses uploads of other kinds; a chunk is no request.
    let chunk = Frame::new(&proto::PkgChunk { data: Some(vec![1]) }, Some(Txn::request(1)));
    assert!(CtlRequest::decode(&chunk).is_err());
}

#[test]
fn a_noise_session_serves_request_after_request_on_one_connection() {
    let s = start(PlaintextPolicy::Loopback);
    let client = CtlClient::new(&s.addr, CtlSecret::new("right").unwrap());
    let mut session = client.session().unwrap();
    for i in 0..5u8 {
        let mut partial = 0;
        let pong: proto::CtlPong = session.call_for(&ping(&[i; 3]), |_| partial += 1).unwrap();
        assert_eq!(pong.payload.as_deref(), Some(&[i; 3][..]));
        assert_eq!(partial, 2, "each request streams its own partial replies");
    }
    // An error reply does not end the session.
    let e = session.call(&CtlRequest::SupRestart(proto::SupRestart {}), |_| {}).unwrap_err();
    assert_eq!(e.net_err().unwrap().err_code(), ErrCode::NotSupported);
    session.call_for::<proto::CtlPong>(&ping(b"after"), |_| {}).unwrap();
    assert_eq!(CtlMetrics::get(&s.metrics.connections), 1);
    assert_eq!(CtlMetrics::get(&s.metrics.noise_handshakes), 1);
    assert_eq!(CtlMetrics::get(&s.metrics.requests), 7);
    assert_eq!(s.handler.calls.load(Ordering::SeqCst), 7);
}

#[test]
fn a_plaintext_connection_serves_one_request_and_closes() {
    let s = start(PlaintextPolicy::Loopback);
    let client =
        CtlClient::new(&s.addr, CtlSecret::new("right").unwrap()).with_handshake(HandshakeKind::Plaintext);
    assert!(matches!(client.session(), Err(ClientError::NoSession { .. })));
    // By hand: a second request on the same plaintext connection is never read.
    let mut tcp = std::net::TcpStream::connect(&s.addr).unwrap();
    let hs = proto::Handshake { secret_key: Some("right".into()) };
    let mut bytes = Frame::new(&hs, Some(Txn::request(0))).encode().unwrap();
    bytes.extend(ping(b"one").to_frame(Txn::request(1)).encode().unwrap());
    bytes.extend(ping(b"two").to_frame(Txn::request(2)).encode().unwrap());
    std::io::Write::write_all(&mut tcp, &bytes).unwrap();
    let got = read_all(&mut tcp);
    let (mut frames, mut at) = (Vec::new(), 0);
    while let Ok(protocol::Parsed::Frame(f, n)) = protocol::parse_frame(&got[at..], protocol::MAX_BODY_LEN) {
        frames.push(f);
        at += n;
    }
    let pongs: Vec<_> = frames.iter().filter_map(|f| f.decode::<proto::CtlPong>().ok()).collect();
    assert_eq!(pongs.len(), 1, "{:?}", frames.iter().map(|f| &f.name).collect::<Vec<_>>());
    assert_eq!(pongs[0].payload.as_deref(), Some(&b"one"[..]));
    assert_eq!(s.handler.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn an_idle_session_is_closed_after_the_timeout() {
    let s = start(PlaintextPolicy::Loopback);
    let client = CtlClient::new(&s.addr, CtlSecret::new("right").unwrap());
    let mut session = client.session().unwrap();
    session.call_for::<proto::CtlPong>(&ping(b"a"), |_| {}).unwrap();
    // The test server's timeout is 2 s; the margin is wide for a loaded machine.
    std::thread::sleep(Duration::from_millis(4000));
    let e = session.call(&ping(b"b"), |_| {}).unwrap_err();
    assert!(matches!(e, ClientError::Closed { .. } | ClientError::Io { .. }), "{e}");
    assert_eq!(s.handler.calls.load(Ordering::SeqCst), 1);
    // Idling after a request is not a slow client.
    assert_eq!(CtlMetrics::get(&s.metrics.timeouts), 0);
}

/// One byte per read, slowly: each chunk within the gateway's timeout, the whole far too slow.
struct Trickle;

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(200));
        buf[0] = 1;
        Ok(1)
    }
}

#[test]
fn an_upload_slower_than_the_minimum_rate_is_abandoned() {
    let s = start(PlaintextPolicy::Deny);
    let client = CtlClient::new(&s.addr, CtlSecret::new("right").unwrap());
    // 1000 bytes may take the test server's 1 s grace (1000 / 64 KiB/s adds nothing).
    let e = client
        .upload(
            &upload_req(1000, "x"),
            client::UploadBody { body: &mut Trickle, len: 1000, on_sent: &mut |_| {} },
            |_| {},
        )
        .unwrap_err();
    let msg = e.net_err().map(|n| n.msg.clone()).unwrap_or_default();
    assert!(msg.contains("took longer than 1s"), "{e}");
    // Each chunk came within the 2 s timeout: this is not a stalled client.
    assert!(!msg.contains("sent nothing"), "{e}");
}

#[test]
fn a_session_ends_when_the_ctl_secret_changes() {
    let s = start(PlaintextPolicy::Loopback);
    let client = CtlClient::new(&s.addr, CtlSecret::new("right").unwrap());
    let mut session = client.session().unwrap();
    session.call_for::<proto::CtlPong>(&ping(b"before"), |_| {}).unwrap();
    s.secret_tx.send_replace(CtlSecret::new("rotated"));
    let e = session.call(&ping(b"after"), |_| {}).unwrap_err();
    assert!(matches!(e, ClientError::Closed { .. } | ClientError::Io { .. }), "{e}");
    assert_eq!(s.handler.calls.load(Ordering::SeqCst), 1, "nothing served on the retired secret");
    let fresh = CtlClient::new(&s.addr, CtlSecret::new("rotated").unwrap());
    fresh.call_for::<proto::CtlPong>(&ping(b"new"), |_| {}).unwrap();
}
