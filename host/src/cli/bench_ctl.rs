//! `warren bench ctl`: `ctl ping` round trips over loopback against a plain TCP echo of the
//! same payload, sequential and with concurrent clients, two ways: a connection per round trip
//! (connect, handshake, request, reply, close: what one CLI command costs), with the Noise
//! channel and with Habitat's plaintext handshake; and round trips on a connection kept open (a
//! Noise session against a kept-open echo). Figures are printed, never asserted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ctl::proto::{self, ErrCode, NetErr};
use crate::ctl::{
    CtlClient, CtlHandler, CtlMetrics, CtlRequest, CtlSecret, HandshakeKind, PlaintextPolicy, Reply,
    ReplySink, ServerConfig,
};

#[derive(Args, Debug)]
pub struct CtlBenchArgs {
    /// Round trips per measurement.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Concurrent clients in the parallel measurement.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Ping payload in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
}

struct Pong;

impl CtlHandler for Pong {
    async fn handle(&self, req: CtlRequest, _out: ReplySink) -> Result<Reply, NetErr> {
        match req {
            CtlRequest::Ping(p) => Ok(Reply::new(&proto::CtlPong { payload: p.payload })),
            _ => Err(NetErr::new(ErrCode::NotSupported, "bench")),
        }
    }
}

/// A length-prefixed echo: every message of a connection until it closes.
async fn echo(listener: tokio::net::TcpListener) {
    while let Ok((mut s, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            while let Ok(n) = s.read_u32().await {
                let mut buf = vec![0u8; (n as usize).min(1 << 20)];
                if s.read_exact(&mut buf).await.is_err()
                    || s.write_u32(n).await.is_err()
                    || s.write_all(&buf).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

fn echo_on(s: &mut TcpStream, payload: &[u8]) -> anyhow::Result<()> {
    s.write_all(&(payload.len() as u32).to_be_bytes())?;
    s.write_all(payload)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut back = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut back)?;
    anyhow::ensure!(back == payload, "echo mismatch");
    Ok(())
}

fn echo_connect(addr: &str) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One client's round trips: called once per round trip, holding whatever the client keeps
/// open between them.
type RoundTrip<'a> = Box<dyn FnMut() -> anyhow::Result<()> + 'a>;
/// Makes a client (on its own thread).
type NewClient<'a> = &'a (dyn Fn() -> anyhow::Result<RoundTrip<'a>> + Sync);

struct Figures {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

fn measure(requests: usize, clients: usize, new_client: NewClient<'_>) -> anyhow::Result<Figures> {
    let start = Instant::now();
    let per_client = requests.div_ceil(clients.max(1));
    let mut lat: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients.max(1))
            .map(|_| {
                scope.spawn(move || -> anyhow::Result<Vec<Duration>> {
                    let mut v = Vec::with_capacity(per_client);
                    let mut one = new_client()?;
                    for _ in 0..per_client {
                        let t = Instant::now();
                        one()?;
                        v.push(t.elapsed());
                    }
                    Ok(v)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| anyhow::anyhow!("a bench client panicked"))??);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let total = start.elapsed();
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    Ok(Figures { p50: at(0.5), p99: at(0.99), per_sec: lat.len() as f64 / total.as_secs_f64() })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn run(args: CtlBenchArgs) -> anyhow::Result<()> {
    let secret = CtlSecret::new(&crate::ctl::secret::generate()).context("a generated secret")?;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let server_secret = secret.clone();
    // The servers run on two worker threads of their own, as a supervisor's runtime would.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        let Ok(rt) = rt else { return };
        rt.block_on(async move {
            let ctl = tokio::net::TcpListener::bind("127.0.0.1:0").await;
            let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await;
            let (Ok(ctl), Ok(plain)) = (ctl, plain) else { return };
            let addrs = (ctl.local_addr().map(|a| a.to_string()), plain.local_addr().map(|a| a.to_string()));
            let _ = addr_tx.send(addrs);
            let (_, rx) = tokio::sync::watch::channel(Some(server_secret));
            let mut config = ServerConfig::new(rx);
            config.plaintext = PlaintextPolicy::Loopback;
            config.max_connections = 1024;
            tokio::spawn(echo(plain));
            crate::ctl::serve(
                ctl,
                config,
                Arc::new(Pong),
                Arc::new(CtlMetrics::default()),
                std::future::pending(),
            )
            .await;
        });
    });
    let (ctl_addr, echo_addr) = addr_rx.recv().context("starting the bench servers")?;
    let (ctl_addr, echo_addr) = (ctl_addr?, echo_addr?);
    let payload = vec![0x5a; args.payload];
    let req = CtlRequest::Ping(proto::CtlPing { payload: Some(payload.clone()) });
    let noise = CtlClient::new(&ctl_addr, secret.clone());
    let plaintext = CtlClient::new(&ctl_addr, secret).with_handshake(HandshakeKind::Plaintext);
    // Borrowed, so that each client's closure can take them along.
    let (payload, req, echo_addr) = (&payload[..], &req, echo_addr.as_str());
    let check = |pong: proto::CtlPong| -> anyhow::Result<()> {
        anyhow::ensure!(pong.payload.as_deref() == Some(payload), "pong mismatch");
        Ok(())
    };
    let ping = |c: &CtlClient| check(c.call_for(req, |_| {})?);
    // A connection per round trip: the client keeps nothing.
    let tcp_each: NewClient<'_> = &|| Ok(Box::new(|| echo_on(&mut echo_connect(echo_addr)?, payload)));
    let plain_each: NewClient<'_> = &|| Ok(Box::new(|| ping(&plaintext)));
    let noise_each: NewClient<'_> = &|| Ok(Box::new(|| ping(&noise)));
    // A connection per client, kept open.
    let tcp_kept: NewClient<'_> = &|| {
        let mut s = echo_connect(echo_addr)?;
        Ok(Box::new(move || echo_on(&mut s, payload)))
    };
    let noise_session: NewClient<'_> = &|| {
        let mut s = noise.session()?;
        Ok(Box::new(move || check(s.call_for(req, |_| {})?)))
    };
    // Each section's first row is the baseline of its ratios, its last the Noise row.
    let sections: Vec<(&str, Vec<(&str, NewClient<'_>)>)> = vec![
        (
            "a connection per round trip",
            vec![
                ("tcp echo", tcp_each),
                ("ctl ping, plaintext", plain_each),
                ("ctl ping, noise", noise_each),
            ],
        ),
        (
            "a connection per client, kept open",
            vec![("tcp echo", tcp_kept), ("ctl ping, noise session", noise_session)],
        ),
    ];
    outln!(
        "{} round trips per row, {}-byte payload, loopback, {} clients in the parallel column",
        args.requests,
        args.payload,
        args.clients
    )?;
    for (title, cases) in sections {
        // Warm up every path once (first connections, lazy statics).
        for (_, f) in &cases {
            f()?()?;
        }
        outln!("\n{title}")?;
        outln!("{:<26} {:>9} {:>9} {:>10} {:>12}", "", "p50 ms", "p99 ms", "req/s", "parallel req/s")?;
        let mut rows = Vec::new();
        for (name, f) in &cases {
            let seq = measure(args.requests, 1, *f)?;
            let par = measure(args.requests, args.clients, *f)?;
            outln!(
                "{name:<26} {:>9.3} {:>9.3} {:>10.0} {:>12.0}",
                ms(seq.p50),
                ms(seq.p99),
                seq.per_sec,
                par.per_sec
            )?;
            rows.push((seq, par));
        }
        let (base, noise_row) = (&rows[0], &rows[rows.len() - 1]);
        outln!(
            "noise / tcp echo: p50 {:.2}x, sequential throughput {:.2}x, {} clients {:.2}x",
            ms(noise_row.0.p50) / ms(base.0.p50).max(1e-9),
            noise_row.0.per_sec / base.0.per_sec.max(1e-9),
            args.clients,
            noise_row.1.per_sec / base.1.per_sec.max(1e-9)
        )?;
    }
    Ok(())
}
