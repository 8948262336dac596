//! `--remote-sup`: how the CLI reaches a supervisor's ctl gateway, and `warren ctl ping`.

use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::ctl::cli_toml;
use crate::ctl::client::{self, REMOTE_SUP_ENV};
use crate::ctl::proto::{self, ConsoleLine, CtlMessage, NetProgress};
use crate::ctl::{CtlClient, CtlRequest, Frame};

/// Where commands go when neither --remote-sup nor cli.toml names a supervisor.
pub const DEFAULT_REMOTE: &str = "127.0.0.1:9632";

#[derive(Args, Debug, Clone)]
pub struct RemoteSup {
    /// The supervisor's ctl gateway, HOST[:PORT] (port 9632 by default) [default: remote_sup
    /// in cli.toml, else 127.0.0.1:9632]. The secret comes from WARREN_CTL_SECRET, else
    /// cli.toml (ctl_secret, [remote."HOST:PORT"] ctl_secret), else the local
    /// {data_path}/CTL_SECRET.
    #[arg(long, env = REMOTE_SUP_ENV, value_name = "HOST[:PORT]")]
    pub remote_sup: Option<String>,
}

impl RemoteSup {
    /// HOST:PORT of the supervisor: the flag (or its variable), else cli.toml's `remote_sup`.
    pub fn target(&self) -> anyhow::Result<String> {
        let given = match &self.remote_sup {
            Some(r) => r.clone(),
            None => cli_toml::remote_sup(&cli_toml::path())?.unwrap_or_else(|| DEFAULT_REMOTE.to_string()),
        };
        Ok(client::remote_addr(&given))
    }

    pub fn client(&self) -> anyhow::Result<CtlClient> {
        let remote = self.target()?;
        let secret = crate::ctl::secret::client_secret(&remote, &crate::config::default_data_path())?;
        Ok(CtlClient::new(&remote, secret))
    }

    /// Sends `req`, printing console lines (stderr under `--json`, so stdout stays JSON) and
    /// progress as they stream; returns the final reply.
    pub fn call(&self, req: &CtlRequest, json: bool) -> anyhow::Result<Frame> {
        let client = self.client()?;
        let mut failed: Option<std::io::Error> = None;
        let reply = client.call(req, |f| {
            if let Err(e) = print_partial(f, json) {
                failed.get_or_insert(e);
            }
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        // The client's error names the supervisor already.
        reply.with_context(|| req.name().to_string())
    }

    /// [`RemoteSup::call`] whose final reply is an `M`.
    pub fn call_for<M: CtlMessage>(&self, req: &CtlRequest, json: bool) -> anyhow::Result<M> {
        let f = self.call(req, json)?;
        f.decode::<M>().with_context(|| format!("{} on {}", req.name(), self.target().unwrap_or_default()))
    }
}

fn print_partial(f: &Frame, json: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Ok(line) = f.decode::<ConsoleLine>() {
        if json {
            eprint!("{}", line.line);
        } else {
            write!(std::io::stdout().lock(), "{}", line.line)?;
        }
    } else if let Ok(p) = f.decode::<NetProgress>() {
        eprintln!("{}/{}", p.position, p.total);
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Round trips through a supervisor's ctl gateway: one handshake, then `--count` pings on
    /// the same session (the first one's time includes the handshake).
    Ping {
        #[command(flatten)]
        remote: RemoteSup,
        /// How many pings to send.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// Pause between pings, in milliseconds (from 5000 on, each ping opens a connection of
        /// its own: the gateway closes a session idle for 10 s).
        #[arg(long, default_value_t = 1000, value_name = "MS")]
        interval_ms: u64,
        /// Print one {"remote": ..., "seq": ..., "ms": ...} line per ping.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: CtlCommand) -> anyhow::Result<()> {
    match cmd {
        CtlCommand::Ping { remote, count, interval_ms, json } => {
            let addr = remote.target()?;
            let client = remote.client()?;
            let start = Instant::now();
            let mut session = client.session().with_context(|| format!("ctl ping {addr}"))?;
            let mut times = Vec::with_capacity(count as usize);
            // The gateway closes a session idle for its handshake timeout (10 s): slower pings
            // get a connection each.
            let pause = std::time::Duration::from_millis(interval_ms);
            let reuse = pause < crate::ctl::server::HANDSHAKE_TIMEOUT / 2;
            for seq in 1..=count {
                if seq > 1 {
                    std::thread::sleep(pause);
                }
                let t = if seq == 1 { start } else { Instant::now() };
                if seq > 1 && !reuse {
                    session = client.session().with_context(|| format!("ctl ping {addr}"))?;
                }
                let payload = crate::crypto::sodium::random_array::<16>().to_vec();
                let ping = CtlRequest::Ping(proto::CtlPing { payload: Some(payload.clone()) });
                let pong: proto::CtlPong = session.call_for(&ping, |_| {}).context("ctl ping")?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                anyhow::ensure!(
                    pong.payload.as_deref() == Some(&payload[..]),
                    "the reply did not echo the ping"
                );
                if json {
                    outln!("{}", serde_json::json!({ "remote": addr, "seq": seq, "ms": ms }))?;
                } else {
                    outln!("pong from {addr} in {ms:.2} ms")?;
                }
                times.push(ms);
            }
            if count > 1 && !json {
                let (min, max) = times.iter().fold((f64::MAX, 0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
                let avg = times.iter().sum::<f64>() / times.len() as f64;
                let how = if reuse { "on one session" } else { "a connection each" };
                outln!("{count} pings {how}: min {min:.2} / avg {avg:.2} / max {max:.2} ms")?;
            }
            Ok(())
        }
    }
}
