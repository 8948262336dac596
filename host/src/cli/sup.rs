//! `warren sup run`, `warren sup depart`, `warren sup restart` and `warren sup secret generate`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::ctl::RemoteSup;
use super::plugin::PluginArgs;
use crate::credentials::Reference;
use crate::ctl::{CtlRequest, CtlSecret, PlaintextPolicy};
use crate::http::{AUTH_TOKEN_ENV, AuthToken};
use crate::plugins::PluginRuntime;
use crate::ring::RingConfig;
use crate::secret::SecretString;
use crate::sup::ctl::{CtlOptions, CtlSecretSource};
use crate::sup::{self, GatewayToken, RING_KEY_ENV, RingKeySource, SupOptions};
use crate::watch::FileWatch;

#[derive(Subcommand, Debug)]
pub enum SupCommand {
    /// Run a supervisor: join the ring and serve the HTTP gateway.
    Run(Box<RunArgs>),
    /// Depart a member from the ring for good (through a running supervisor's ctl gateway).
    Depart(DepartArgs),
    /// Show a running supervisor's ring members, plugins and credentials (never their values).
    Status(super::status::StatusArgs),
    /// Restart a running supervisor in place (through its ctl gateway): it stops without
    /// leaving the ring and starts again from its own binary with the same arguments, the same
    /// process id and member id, and a higher incarnation. Use it after replacing the binary.
    Restart(RestartArgs),
    /// Manage the secret that authenticates clients of the supervisor's ctl gateway.
    #[command(subcommand)]
    Secret(SupSecretCommand),
}

#[derive(Subcommand, Debug)]
pub enum SupSecretCommand {
    /// Print a new ctl secret: base64 of 64 random bytes (88 characters).
    Generate,
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
    /// Control gateway address (`warren ctl|sup|ring key ...` with --remote-sup).
    #[arg(long, default_value = "127.0.0.1:9632")]
    pub listen_ctl: SocketAddr,
    /// How long a ctl client may take to finish its handshake, and then to send its request.
    #[arg(long, value_parser = parse_millis, default_value = "10s", hide = true)]
    pub ctl_handshake_timeout: Duration,
    /// The gossip address other members reach this one at (needed behind NAT, or when
    /// listening on 0.0.0.0 without --peer) [default: the listen address, or a guess].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<SocketAddr>,
    /// A peer to join through, HOST[:PORT] (repeatable). Re-announced to while unreachable.
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// The org of this supervisor's service groups (SERVICE.GROUP@ORG): plaintext `config
    /// apply` and `file upload` for them are refused, encrypted ones need the group's key
    /// [default: `org` in the config file, else none].
    #[arg(long, value_name = "ORG")]
    pub org: Option<String>,
    /// Mark this supervisor a permanent peer: others keep probing it even once confirmed dead.
    #[arg(long)]
    pub permanent_peer: bool,
    /// Encrypt the ring with the latest ring key of this name in the key cache.
    #[arg(long, conflicts_with = "ring_key")]
    pub ring: Option<String>,
    /// Admit this node first with the join string from `warren admit token create`, read
    /// from FILE, from stdin (`-`) or from WARREN_JOIN (never given on the command line: it is
    /// a secret); needs --keyserver. A node admitted before needs neither: it renews its CGC
    /// and fetches its keys (ring, service groups, peers) from the same keyserver.
    #[arg(long, value_name = "FILE|-", conflicts_with = "ring_key")]
    pub join: Option<String>,
    /// The keyserver's join port, HOST[:PORT] (9636 by default).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub keyserver: Option<String>,
    /// This node's name, as given to `admit token create --node` [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// How often an admitted node re-fetches its keys from the keyserver, with its unit (30s,
    /// 5m) [default: `key_fetch_interval` in the config file, else 300s].
    #[arg(long = "key-fetch-interval", value_name = "DURATION", value_parser = crate::config::parse_interval)]
    pub key_fetch_interval_flag: Option<Duration>,
    /// The flag, else the config file, else the default (set once the config is read).
    #[arg(skip = super::admit_loop::DEFAULT_FETCH_INTERVAL)]
    pub key_fetch_interval: Duration,
    /// A ring key file's contents (instead of --ring).
    #[arg(long = "ring-key", env = RING_KEY_ENV, hide_env_values = true, hide = true)]
    pub ring_key: Option<SecretString>,
    // --config, --data-path, --plugin-path, --plugin-trust, --cache-key-path: shared with
    // `plugin list` and `credential resolve`.
    #[command(flatten)]
    pub plugins: PluginArgs,
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
    /// Byte budget of the rumor store (encoded rumors, MiB): beyond it new rumors are refused,
    /// so push-pull and the snapshot on disk stay bounded.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub rumor_budget_mb: u32,
    /// How long a departed member's tombstone and rumors are kept (hours); after that they are
    /// dropped ring-wide and the member id may rejoin.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=87_600))]
    pub departed_retention_hours: u32,
    /// How many times each update is piggybacked (at least 12).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u8).range(12..))]
    pub max_transmissions: u8,
    /// Shortest wait before restarting a service that keeps failing (seconds, as Habitat's
    /// flag, or e.g. 250ms). The first failure after a good run restarts at once.
    #[arg(long, value_parser = parse_period, default_value = "100ms")]
    pub service_min_backoff_period: Duration,
    /// Longest wait between restarts of a failing service (decorrelated jitter up to this).
    #[arg(long, value_parser = parse_period, default_value = "30")]
    pub service_max_backoff_period: Duration,
    /// A service that stays up this long has its failure history forgotten.
    #[arg(long, value_parser = parse_period, default_value = "300")]
    pub service_restart_cooldown_period: Duration,
}

/// Seconds (Habitat's unit) or a number with `ms` / `s`; zero allowed.
fn parse_period(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = match t.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (t.strip_suffix('s').unwrap_or(t), 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a period (e.g. 5, 250ms, 1.5s)"))?;
    if !(0.0..=86_400.0).contains(&(v * scale)) {
        return Err(format!("{s:?} is out of range (0 to 86400 s)"));
    }
    Ok(Duration::from_secs_f64(v * scale))
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
            rumor_limits: crate::ring::RumorLimits {
                max_bytes: self.rumor_budget_mb as usize * 1024 * 1024,
                ..crate::ring::RumorLimits::default()
            },
            departed_retention: Duration::from_secs(u64::from(self.departed_retention_hours) * 3600),
            ..RingConfig::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct DepartArgs {
    /// The member id to depart (32 hex digits).
    pub member_id: String,
    #[command(flatten)]
    pub remote: RemoteSup,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    #[command(flatten)]
    pub remote: RemoteSup,
}

pub fn run(cmd: SupCommand) -> anyhow::Result<()> {
    match cmd {
        SupCommand::Run(args) => run_sup(*args),
        SupCommand::Depart(args) => depart(args),
        SupCommand::Restart(args) => {
            // The supervisor streams "Restarting the supervisor ...".
            args.remote.call(&CtlRequest::SupRestart(crate::ctl::proto::SupRestart {}), false)?;
            Ok(())
        }
        SupCommand::Status(args) => super::status::run(args),
        SupCommand::Secret(SupSecretCommand::Generate) => {
            outln!("{}", &*crate::ctl::secret::generate())?;
            Ok(())
        }
    }
}

fn run_sup(args: RunArgs) -> anyhow::Result<()> {
    if args.ping_timeout >= args.probe_interval {
        bail!("--ping-timeout must be shorter than --probe-interval");
    }
    // Found now: once the binary is replaced on disk, /proc/self/exe names the old one.
    let exe = std::env::current_exe().context("cannot find this program's path (needed by sup restart)")?;
    let config = args.plugins.config()?;
    let key_fetch_interval =
        args.key_fetch_interval_flag.or(config.key_fetch_interval).unwrap_or(args.key_fetch_interval);
    let args = RunArgs { key_fetch_interval, ..args };
    // The data path first: admission below claims a token and writes keys, which a second
    // supervisor on the same path must never do.
    let data_lock = sup::take_data_path(&config.data_path()).context("supervisor failed")?;
    let cache_key_path = args.plugins.cache.cache_key_path.clone();
    // One file-watch service (one inotify instance) for the plugin folder, the credentials
    // and the key cache.
    let files = FileWatch::start().context("starting the file watch service")?;
    let plugins = Arc::new(
        PluginRuntime::start(
            &config,
            args.plugins.plugin_path.as_deref(),
            args.plugins.plugin_trust,
            args.plugins.key_cache(),
            &files,
        )
        .context("starting the plugin runtime")?,
    );

    // An admitted node (or one admitted now with --join) gets its ring and peers from the
    // keyserver, and keeps them fresh for as long as it runs.
    let node = args.node.clone().unwrap_or_else(crate::sup::hostname);
    let gossip = args.advertise.or((!args.listen_gossip.ip().is_unspecified()).then_some(args.listen_gossip));
    let admitted = super::admit_loop::prepare(
        args.join.as_deref(),
        args.keyserver.as_deref(),
        &node,
        super::admit_loop::LoopConfig {
            data_path: config.data_path(),
            cache: args.plugins.key_cache(),
            gossip: gossip.map(|g| g.to_string()),
            fetch_every: args.key_fetch_interval,
        },
    )?;
    let mut args = args;
    let mut background = Vec::new();
    if let Some(a) = admitted {
        if args.ring.is_none() && args.ring_key.is_none() {
            args.ring = Some(a.ring);
        }
        if args.peers.is_empty() {
            args.peers = a.peers;
        }
        background.push(a.task);
    }
    // Flags and environment win over the config file; a config value may be a reference.
    let ring_key = match (&args.ring, &args.ring_key, &config.ring_key) {
        (Some(name), _, _) => RingKeySource::Cache { name: name.clone() },
        (None, Some(text), _) if !text.expose().trim().is_empty() => RingKeySource::Inline(text.clone()),
        (None, _, Some(reference)) => credential_or_literal(
            &plugins,
            "ring_key",
            reference.expose(),
            |v| RingKeySource::Inline(SecretString::new(v)),
            RingKeySource::Credential,
        ),
        _ => RingKeySource::None,
    };
    if matches!(ring_key, RingKeySource::None) {
        tracing::warn!(
            "no ring key (--ring, {RING_KEY_ENV} or ring_key in the config): gossip is NOT encrypted"
        );
    }
    let gateway_token = match (env_auth_token()?, &config.auth_token) {
        (Some(t), _) => GatewayToken::Fixed(t),
        (None, Some(reference)) => credential_or_literal(
            &plugins,
            "auth_token",
            reference.expose(),
            |v| AuthToken::new(v).map(GatewayToken::Fixed),
            |rx| Some(GatewayToken::Credential(rx)),
        )
        // The config refuses a blank auth_token already; never fall back to an open gateway.
        .context("auth_token in the config is empty")?,
        (None, None) => GatewayToken::None,
    };
    let ctl = ctl_options(&config, &plugins, args.ctl_handshake_timeout)?;
    let org = args.org.clone().or_else(|| config.org.clone());
    if let Some(o) = org.as_deref().filter(|o| !crate::groups::name::is_name(o)) {
        bail!("org {o:?}: use 1 to 64 letters, digits, '-' and '_'");
    }
    let opts = SupOptions {
        listen_gossip: args.listen_gossip,
        listen_http: args.listen_http,
        listen_ctl: args.listen_ctl,
        advertise: args.advertise,
        peers: args.peers.clone(),
        permanent_peer: args.permanent_peer,
        ring_key,
        cache_key_path,
        data_path: config.data_path(),
        ring: args.ring_config(),
        gateway_token,
        plugins: Some(plugins),
        extra_routes: Vec::new(),
        files,
        ctl,
        service_backoff: crate::services::backoff::BackoffPolicy {
            min: args.service_min_backoff_period,
            max: args.service_max_backoff_period,
            cooldown: args.service_restart_cooldown_period,
        },
        service_config: config.services.iter().map(|(name, s)| (name.clone(), s.config.clone())).collect(),
        org,
        background,
        data_lock,
    };
    match sup::run(opts).context("supervisor failed")? {
        sup::Exit::Stopped | sup::Exit::Departed => Ok(()),
        sup::Exit::Restart => {
            use std::os::unix::process::CommandExt as _;
            // Same arguments and environment; every descriptor of ours is close-on-exec, so
            // the data-path lock and the sockets are released for the new image.
            let err = std::process::Command::new(&exe).args(std::env::args_os().skip(1)).exec();
            Err(anyhow::anyhow!("restart: cannot execute {}: {err}", exe.display()))
        }
    }
}

/// `WARREN_GATEWAY_AUTH_TOKEN`: unset is "no token from the environment"; set but blank is an
/// error (an unset variable in a unit file would otherwise open the gateway).
fn env_auth_token() -> anyhow::Result<Option<AuthToken>> {
    match std::env::var(AUTH_TOKEN_ENV) {
        Ok(t) => AuthToken::new(&t).map(Some).with_context(|| {
            format!(
                "{AUTH_TOKEN_ENV} is set but empty: unset it to use auth_token from the config \
                 (or no gateway authentication), or set it to a token"
            )
        }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{AUTH_TOKEN_ENV} is not valid UTF-8"),
    }
}

/// `ctl_secret` (a literal or a reference; else `{data_path}/CTL_SECRET`) and `ctl_plaintext`.
fn ctl_options(
    config: &crate::config::SupConfig,
    plugins: &PluginRuntime,
    handshake_timeout: Duration,
) -> anyhow::Result<CtlOptions> {
    let secret = match &config.ctl_secret {
        None => CtlSecretSource::DataFile,
        Some(reference) => credential_or_literal(
            plugins,
            "ctl_secret",
            reference.expose(),
            |v| CtlSecret::new(v).map_or(CtlSecretSource::DataFile, CtlSecretSource::Fixed),
            CtlSecretSource::Credential,
        ),
    };
    let plaintext = match config.ctl_plaintext.as_deref() {
        None => PlaintextPolicy::default(),
        Some(s) => s.parse().map_err(anyhow::Error::msg)?,
    };
    Ok(CtlOptions { secret, plaintext, handshake_timeout })
}

/// A config value that is a literal is used as is; a `SCHEME:rest` reference is followed
/// through the credential resolver (it shows in `GET /credentials` either way).
fn credential_or_literal<T>(
    plugins: &PluginRuntime,
    label: &str,
    value: &str,
    literal: impl FnOnce(&str) -> T,
    credential: impl FnOnce(tokio::sync::watch::Receiver<Option<crate::credentials::CredentialValue>>) -> T,
) -> T {
    match Reference::parse(value) {
        Reference::Literal(v) => literal(&v),
        Reference::Routed { .. } => credential(plugins.subscribe(label, value)),
    }
}

fn depart(args: DepartArgs) -> anyhow::Result<()> {
    let req = CtlRequest::SupDepart(crate::ctl::proto::SupDepart { member_id: Some(args.member_id.clone()) });
    // The supervisor streams its own line ("Departure of ... announced to the ring").
    args.remote.call(&req, false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{Args as _, CommandFactory as _, Parser as _};

    use super::*;
    use crate::cli::{Cli, Command};

    /// The plugin options every plugin-loading command takes, as users see them.
    const SHARED: [(&str, &str, &str); 5] = [
        ("config", "config", "WARREN_CONFIG"),
        ("data_path", "data-path", "WARREN_DATA_PATH"),
        ("plugin_path", "plugin-path", "WARREN_PLUGIN_PATH"),
        ("plugin_trust", "plugin-trust", ""),
        ("cache_key_path", "cache-key-path", "WARREN_CACHE_KEY_PATH"),
    ];

    fn describe(a: &clap::Arg) -> String {
        format!(
            "--{:?} env={:?} default={:?} values={:?} help={:?}",
            a.get_long(),
            a.get_env(),
            a.get_default_values(),
            a.get_possible_values().iter().map(|v| v.get_name().to_string()).collect::<Vec<_>>(),
            a.get_help().map(ToString::to_string),
        )
    }

    #[test]
    fn plugin_options_have_one_definition() {
        let shared = PluginArgs::augment_args(clap::Command::new("shared"));
        let cli = Cli::command();
        let sub = |path: &[&str]| {
            let mut c = &cli;
            for p in path {
                c = c.find_subcommand(p).unwrap_or_else(|| panic!("no subcommand {p}"));
            }
            c.clone()
        };
        for path in [["sup", "run"], ["plugin", "list"], ["credential", "resolve"]] {
            let cmd = sub(&path);
            for (id, long, env) in SHARED {
                let want = shared.get_arguments().find(|a| a.get_id() == id).unwrap();
                assert_eq!(want.get_long(), Some(long));
                assert_eq!(want.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default(), env);
                let got = cmd
                    .get_arguments()
                    .find(|a| a.get_id() == id)
                    .unwrap_or_else(|| panic!("{path:?} has no --{long}"));
                assert_eq!(describe(got), describe(want), "{path:?} --{long}");
            }
        }
    }

    #[test]
    fn sup_run_parses_the_shared_plugin_options() {
        let cli = Cli::try_parse_from([
            "warren",
            "sup",
            "run",
            "--config",
            "/c/sup.toml",
            "--data-path",
            "/d",
            "--plugin-path",
            "/p",
            "--plugin-trust",
            "strict",
            "--cache-key-path",
            "/k",
        ])
        .unwrap();
        let Command::Sup(SupCommand::Run(run)) = cli.command else { panic!("not sup run") };
        let p = &run.plugins;
        assert_eq!(p.config.as_deref(), Some(std::path::Path::new("/c/sup.toml")));
        assert_eq!(p.data_path.as_deref(), Some(std::path::Path::new("/d")));
        assert_eq!(p.plugin_path.as_deref(), Some(std::path::Path::new("/p")));
        assert_eq!(p.plugin_trust, Some(crate::plugins::TrustMode::Strict));
        assert_eq!(p.cache.cache_key_path, std::path::PathBuf::from("/k"));
        assert!(Cli::try_parse_from(["warren", "sup", "run", "--plugin-trust", "maybe"]).is_err());
    }
}
