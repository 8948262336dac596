//! `warren bench ctl`: `ctl ping` round trips (connect, handshake, request, reply, close: the
//! gateway's one-request-per-connection model) over loopback, with the Noise channel and with
//! Habitat's plaintext handshake, against a plain TCP echo of the same payload per connection,
//! sequential and with concurrent clients. Figures are printed, never asserted.

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

/// A length-prefixed echo, one per connection.
async fn echo(listener: tokio::net::TcpListener) {
    while let Ok((mut s, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let Ok(n) = s.read_u32().await else { return };
            let mut buf = vec![0u8; (n as usize).min(1 << 20)];
            if s.read_exact(&mut buf).await.is_ok() {
                let _ = s.write_u32(n).await;
                let _ = s.write_all(&buf).await;
            }
            let _ = s.shutdown().await;
        });
    }
}

fn echo_once(addr: &str, payload: &[u8]) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.write_all(&(payload.len() as u32).to_be_bytes())?;
    s.write_all(payload)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut back = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut back)?;
    anyhow::ensure!(back == payload, "echo mismatch");
    Ok(())
}

struct Figures {
    p50: Duration,
    p99: Duration,
    per_sec: f64,
}

fn measure(
    requests: usize,
    clients: usize,
    one: &(dyn Fn() -> anyhow::Result<()> + Sync),
) -> anyhow::Result<Figures> {
    let start = Instant::now();
    let per_client = requests.div_ceil(clients.max(1));
    let mut lat: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients.max(1))
            .map(|_| {
                scope.spawn(move || -> anyhow::Result<Vec<Duration>> {
                    let mut v = Vec::with_capacity(per_client);
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
    let ping = |c: &CtlClient| -> anyhow::Result<()> {
        let pong: proto::CtlPong = c.call_for(&req, |_| {})?;
        anyhow::ensure!(pong.payload.as_deref() == Some(&payload[..]), "pong mismatch");
        Ok(())
    };
    let cases: [(&str, &(dyn Fn() -> anyhow::Result<()> + Sync)); 3] = [
        ("tcp echo", &|| echo_once(&echo_addr, &payload)),
        ("ctl ping, plaintext", &|| ping(&plaintext)),
        ("ctl ping, noise", &|| ping(&noise)),
    ];
    // Warm up every path once (first connections, lazy statics).
    for (_, f) in &cases {
        f()?;
    }
    outln!(
        "{} round trips per row, {}-byte payload, one connection per round trip, loopback",
        args.requests,
        args.payload
    )?;
    outln!("{:<22} {:>9} {:>9} {:>10} {:>9} {:>10}", "", "p50 ms", "p99 ms", "req/s", "clients", "req/s")?;
    let mut rows = Vec::new();
    for (name, f) in &cases {
        let seq = measure(args.requests, 1, *f)?;
        let par = measure(args.requests, args.clients, *f)?;
        outln!(
            "{name:<22} {:>9.3} {:>9.3} {:>10.0} {:>9} {:>10.0}",
            ms(seq.p50),
            ms(seq.p99),
            seq.per_sec,
            args.clients,
            par.per_sec
        )?;
        rows.push((seq, par));
    }
    let (base, noise_row) = (&rows[0], &rows[2]);
    outln!(
        "noise / tcp echo: p50 {:.2}x, sequential throughput {:.2}x, {} clients {:.2}x",
        ms(noise_row.0.p50) / ms(base.0.p50).max(1e-9),
        noise_row.0.per_sec / base.0.per_sec.max(1e-9),
        args.clients,
        noise_row.1.per_sec / base.1.per_sec.max(1e-9)
    )?;
    Ok(())
}
