//! `warren sup run`, `warren sup depart` and `warren sup secret generate`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};

use crate::crypto::cache::{CACHE_KEY_PATH_ENV, default_cache_path};
use crate::crypto::sodium;
use crate::http::{AUTH_TOKEN_ENV, AuthToken, client};
use crate::ring::RingConfig;
use crate::ring::persist::default_data_path;
use crate::sup::{self, RING_KEY_ENV, RingKeySource, SupOptions};

#[derive(Subcommand, Debug)]
pub enum SupCommand {
    /// Run a supervisor: join the ring and serve the HTTP gateway.
    Run(Box<RunArgs>),
    /// Depart a member from the ring for good (through a running supervisor's gateway).
    Depart(DepartArgs),
    /// Manage the secret that authenticates clients of the supervisor's ctl gateway.
    #[command(subcommand)]
    Secret(SupSecretCommand),
}

#[derive(Subcommand, Debug)]
pub enum SupSecretCommand {
    /// Print a new ctl secret: base64 of 64 random bytes (88 characters).
    Generate,
}

/// Bytes of randomness in a ctl secret (Habitat's CTL_SECRET is 64 random bytes, base64).
pub const CTL_SECRET_LEN: usize = 64;

/// A fresh ctl secret in its text form.
pub fn generate_ctl_secret() -> zeroize::Zeroizing<String> {
    let bytes = zeroize::Zeroizing::new(sodium::random_array::<CTL_SECRET_LEN>());
    zeroize::Zeroizing::new(B64.encode(&bytes[..]))
}

fn parse_millis(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 0.001)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 1.5s)"))?;
    if !(0.0..=86_400.0).contains(&(v * scale)) || v * scale <= 0.0 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Gossip address: SWIM over UDP and push-pull over TCP.
    #[arg(long, default_value = "0.0.0.0:9638")]
    pub listen_gossip: SocketAddr,
    /// HTTP gateway address.
    #[arg(long, default_value = "0.0.0.0:9631")]
    pub listen_http: SocketAddr,
    /// Control gateway address (reserved; the control gateway comes later).
    #[arg(long, default_value = "127.0.0.1:9632")]
    pub listen_ctl: SocketAddr,
    /// A peer to join through, HOST[:PORT] (repeatable). Re-announced to while unreachable.
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Mark this supervisor a permanent peer: others keep probing it even once confirmed dead.
    #[arg(long)]
    pub permanent_peer: bool,
    /// Encrypt the ring with the latest ring key of this name in the key cache.
    #[arg(long, conflicts_with = "ring_key")]
    pub ring: Option<String>,
    /// A ring key file's contents (instead of --ring).
    #[arg(long = "ring-key", env = RING_KEY_ENV, hide_env_values = true, hide = true)]
    pub ring_key: Option<String>,
    /// Key cache folder.
    #[arg(long, env = CACHE_KEY_PATH_ENV)]
    pub cache_key_path: Option<PathBuf>,
    /// Where the member id, incarnation and rumors are kept
    /// [default: /var/lib/warren/data for root, ~/.warren/data otherwise].
    #[arg(long, env = "WARREN_DATA_PATH")]
    pub data_path: Option<PathBuf>,
    /// SWIM probe interval (e.g. 1s, 500ms).
    #[arg(long, value_parser = parse_millis, default_value = "500ms")]
    pub probe_interval: Duration,
    /// Direct ping timeout before indirect probes.
    #[arg(long, value_parser = parse_millis, default_value = "200ms")]
    pub ping_timeout: Duration,
    /// Suspicion lasts suspicion-mult × max(1, log10 N) probe intervals once confirmed by others.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub suspicion_mult: u32,
    /// Without independent confirmations, suspicion lasts this many times longer.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub suspicion_max_mult: u32,
    /// How often pending updates and rumors are gossiped.
    #[arg(long, value_parser = parse_millis, default_value = "100ms")]
    pub gossip_interval: Duration,
    /// Members gossiped to each gossip interval.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub gossip_fanout: u16,
    /// How often a full-state TCP push-pull exchange runs with a random member.
    #[arg(long, value_parser = parse_millis, default_value = "5s")]
    pub pushpull_interval: Duration,
    /// How many times each update is piggybacked (at least 12).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u8).range(12..))]
    pub max_transmissions: u8,
}

impl RunArgs {
    pub fn ring_config(&self) -> RingConfig {
        RingConfig {
            probe_interval: self.probe_interval,
            ping_timeout: self.ping_timeout,
            suspicion_mult: self.suspicion_mult,
            suspicion_max_mult: self.suspicion_max_mult,
            gossip_interval: self.gossip_interval,
            gossip_fanout: usize::from(self.gossip_fanout),
            max_transmissions: self.max_transmissions,
            pushpull_interval: self.pushpull_interval,
            ..RingConfig::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct DepartArgs {
    /// The member id to depart (32 hex digits).
    pub member_id: String,
    /// A running supervisor's HTTP gateway.
    #[arg(long, default_value = "127.0.0.1:9631")]
    pub remote_http: String,
    /// The gateway's bearer token.
    #[arg(long, env = AUTH_TOKEN_ENV, hide_env_values = true)]
    pub auth_token: Option<String>,
}

pub fn run(cmd: SupCommand) -> anyhow::Result<()> {
    match cmd {
        SupCommand::Run(args) => run_sup(*args),
        SupCommand::Depart(args) => depart(args),
        SupCommand::Secret(SupSecretCommand::Generate) => {
            outln!("{}", &*generate_ctl_secret())?;
            Ok(())
        }
    }
}

fn run_sup(args: RunArgs) -> anyhow::Result<()> {
    if args.ping_timeout >= args.probe_interval {
        bail!("--ping-timeout must be shorter than --probe-interval");
    }
    let ring_key = match (&args.ring, &args.ring_key) {
        (Some(name), _) => RingKeySource::Cache { name: name.clone() },
        (None, Some(text)) if !text.trim().is_empty() => RingKeySource::Inline(text.clone()),
        _ => RingKeySource::None,
    };
    if matches!(ring_key, RingKeySource::None) {
        tracing::warn!("no ring key (--ring or {RING_KEY_ENV}): gossip is NOT encrypted");
    }
    let opts = SupOptions {
        listen_gossip: args.listen_gossip,
        listen_http: args.listen_http,
        listen_ctl: args.listen_ctl,
        peers: args.peers.clone(),
        permanent_peer: args.permanent_peer,
        ring_key,
        cache_key_path: args.cache_key_path.clone().unwrap_or_else(default_cache_path),
        data_path: args.data_path.clone().unwrap_or_else(default_data_path),
        ring: args.ring_config(),
        auth_token: std::env::var(AUTH_TOKEN_ENV).ok().and_then(|t| AuthToken::new(&t)),
        extra_routes: Vec::new(),
    };
    sup::run(opts).context("supervisor failed")
}

/// Checks a gateway reply, turning its `{"error": ...}` into a message.
pub fn check(resp: client::Response, what: &str) -> anyhow::Result<serde_json::Value> {
    let json = resp.json().unwrap_or(serde_json::Value::Null);
    if !resp.is_success() {
        let msg =
            json.get("error").and_then(|e| e.as_str()).map(str::to_string).unwrap_or_else(|| resp.text());
        bail!("{what}: HTTP {}: {}", resp.status, msg.trim());
    }
    Ok(json)
}

fn depart(args: DepartArgs) -> anyhow::Result<()> {
    let body = serde_json::json!({ "member_id": args.member_id }).to_string();
    let resp = client::request(
        &args.remote_http,
        "POST",
        "/departures",
        args.auth_token.as_deref(),
        Some(("application/json", body.as_bytes())),
        Duration::from_secs(10),
    )?;
    check(resp, "depart")?;
    println!("departure of {} announced to the ring", args.member_id);
    Ok(())
}
