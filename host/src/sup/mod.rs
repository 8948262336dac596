//! The supervisor runtime (`warren sup run`): owns the ring and the HTTP gateway, follows the
//! key cache and credential-backed secrets, and on Ctrl-C or SIGTERM leaves the ring
//! gracefully (others see "left" at once, not after a suspicion timeout).

pub mod ctl;
pub mod ctl_cfg;
mod ctl_secret_watch;
pub mod ctl_svc;
pub mod keywatch;
pub mod pkg_install;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::credentials::CredentialValue;
use crate::crypto::{CryptoError, KeyCache, KeyFile, KeyKind, RingKey};
use crate::http::{self, AuthState, AuthToken, GatewayAuth, plugins_api, ring_api};
use crate::plugins::PluginRuntime;
use crate::ring::mirror::Persist;
use crate::ring::persist::{DataDir, DataLock, PersistError};
use crate::ring::shell::{self, Stopped};
use crate::ring::{CoreParams, Keyring, RingConfig, RingCore, RingHandle};
use crate::secret::SecretString;

pub const DEFAULT_GOSSIP_PORT: u16 = 9638;
pub const DEFAULT_HTTP_PORT: u16 = 9631;
/// Environment variable holding a ring key file's contents (instead of `--ring NAME`).
pub const RING_KEY_ENV: &str = "WARREN_RING_KEY";

/// Where the ring key comes from.
#[derive(Debug, Clone)]
pub enum RingKeySource {
    /// An unencrypted ring.
    None,
    /// The latest revision of this name in the key cache (all revisions are accepted); the
    /// cache is watched for added and removed revisions.
    Cache { name: String },
    /// The contents of a key file (`WARREN_RING_KEY`). Debug shows `<redacted>`.
    Inline(SecretString),
    /// A credential reference (`ring_key = "FILE:..."` in sup.toml): each new value is
    /// installed and becomes the primary key; earlier keys stay accepted.
    Credential(watch::Receiver<Option<CredentialValue>>),
}

/// Where the gateway's bearer token comes from.
pub enum GatewayToken {
    None,
    Fixed(AuthToken),
    /// A credential reference (`auth_token = "FILE:..."`): rotates without a restart.
    Credential(watch::Receiver<Option<CredentialValue>>),
}

/// How long a supervisor waits at start for a ring key given as a credential reference.
const RING_KEY_WAIT: Duration = Duration::from_secs(10);

/// Everything `warren sup run` was asked to do.
pub struct SupOptions {
    pub listen_gossip: SocketAddr,
    pub listen_http: SocketAddr,
    pub listen_ctl: SocketAddr,
    /// The gossip address other members should use (`--advertise`); guessed when None.
    pub advertise: Option<SocketAddr>,
    pub peers: Vec<String>,
    pub permanent_peer: bool,
    pub ring_key: RingKeySource,
    pub cache_key_path: PathBuf,
    pub data_path: PathBuf,
    pub ring: RingConfig,
    pub gateway_token: GatewayToken,
    /// The plugin runtime: `/plugins` and `/credentials` on the gateway.
    pub plugins: Option<Arc<PluginRuntime>>,
    /// Extra gateway routes, merged behind the same token.
    pub extra_routes: Vec<Router>,
    /// The file-watch service every watcher of this supervisor shares (one inotify instance).
    pub files: crate::watch::FileWatch,
    /// The ctl gateway on `listen_ctl`: its secret and plaintext policy.
    pub ctl: ctl::CtlOptions,
    /// How services restart (`--service-min-backoff-period` and friends).
    pub service_backoff: crate::services::backoff::BackoffPolicy,
    /// sup.toml's `[services.NAME.config]` tables: a config layer of each service.
    pub service_config: std::collections::BTreeMap<String, toml::Table>,
    /// `--org`: the org of this supervisor's service groups.
    pub org: Option<String>,
    /// Tasks that run as long as the supervisor (the admitted node's keyserver loop).
    pub background: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    /// The data path's lock, from [`take_data_path`]: taken before admission, held to the end.
    pub data_lock: DataLock,
}

/// Takes `data_path` for this process before anything is written there (admission claims a
/// token and writes keys): a second supervisor on the same path fails here. Whatever
/// listen.json is left belongs to a supervisor that died holding the lock; it goes, so the
/// ports found there later are ours.
pub fn take_data_path(data_path: &std::path::Path) -> Result<DataLock, SupError> {
    let lock = DataDir::new(data_path).lock()?;
    match std::fs::remove_file(data_path.join(LISTEN_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(SupError::Data(PersistError::Io { path: LISTEN_FILE.into(), source: e }));
        }
        _ => {}
    }
    Ok(lock)
}

#[derive(Debug, thiserror::Error)]
pub enum SupError {
    #[error("ring key: {0}")]
    Key(#[from] CryptoError),
    #[error("data path: {0}")]
    Data(#[from] PersistError),
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("peer {0:?} is not an address (HOST or HOST:PORT)")]
    BadPeer(String),
    #[error("this supervisor ({0}) was departed from the ring and cannot rejoin it; use a new --data-path")]
    Departed(String),
    #[error("{0}")]
    Runtime(std::io::Error),
    #[error("ring key reference did not resolve within {0:?} (see GET /credentials or the log)")]
    RingKeyUnavailable(Duration),
    #[error("ctl secret: {0}")]
    CtlSecret(String),
}

/// Resolves `HOST[:PORT]` (default port 9638).
pub fn resolve_peer(peer: &str) -> Result<SocketAddr, SupError> {
    let with_port = if peer.parse::<SocketAddr>().is_ok()
        || peer.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        peer.to_string()
    } else {
        format!("{peer}:{DEFAULT_GOSSIP_PORT}")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| SupError::BadPeer(peer.to_string()))
}

/// Loads the keyring the supervisor starts with.
pub fn load_keyring(
    source: &RingKeySource,
    cache: &KeyCache,
    preferred_primary: Option<&str>,
) -> Result<Keyring, CryptoError> {
    match source {
        RingKeySource::None => Ok(Keyring::none()),
        RingKeySource::Inline(text) => Ok(Keyring::with_primary(parse_ring_key(text.expose())?)),
        RingKeySource::Credential(rx) => match rx.borrow().as_ref() {
            Some(value) => Ok(Keyring::with_primary(parse_ring_key(value.expose())?)),
            None => Err(CryptoError::MalformedKey("the ring key reference has no value".into())),
        },
        RingKeySource::Cache { name } => {
            let latest = RingKey::try_from(&cache.latest(KeyKind::SymSecret, name)?)?;
            let mut ring = Keyring::with_primary(latest);
            ring.replace_all(keywatch::cache_keys(cache, name));
            // The keyserver's mark wins over the primary this supervisor used last.
            let marked = keywatch::primary_mark(cache, name);
            if let Some(p) = marked.or_else(|| preferred_primary.and_then(|p| p.parse().ok())) {
                let _ = ring.use_key(&p);
            }
            Ok(ring)
        }
    }
}

fn parse_ring_key(text: &str) -> Result<RingKey, CryptoError> {
    RingKey::try_from(&KeyFile::parse(text.as_bytes())?)
}

/// Follows a credential-backed secret: `apply` gets each new value, in order, for as long as
/// the reference is followed. The one way the gateway token, the ring key and the ctl secret
/// rotate without a restart.
pub fn follow_secret<F, Fut>(
    mut rx: watch::Receiver<Option<CredentialValue>>,
    label: &'static str,
    mut apply: F,
) where
    F: FnMut(CredentialValue) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let Some(value) = rx.borrow_and_update().clone() else { continue };
            tracing::debug!(secret = label, "new value from its reference");
            apply(value).await;
        }
    });
}

/// The gateway's auth state; a credential-backed token is followed.
fn gateway_auth(token: GatewayToken) -> AuthState {
    match token {
        GatewayToken::None => http::auth::fixed(None),
        GatewayToken::Fixed(t) => http::auth::fixed(Some(t)),
        GatewayToken::Credential(rx) => {
            let current = |v: Option<&CredentialValue>| {
                v.and_then(|c| AuthToken::new(c.expose()))
                    .map_or(GatewayAuth::Unavailable, GatewayAuth::Token)
            };
            let (tx, auth) = watch::channel(current(rx.borrow().as_ref()));
            follow_secret(rx, "auth_token", move |value| {
                let _ = tx.send(current(Some(&value)));
                tracing::info!("gateway auth token rotated");
                std::future::ready(())
            });
            auth
        }
    }
}

/// Between accepting a new ring key and sending with it: every member's file is usually
/// rewritten at about the same time, so by then the others accept the new key too.
const RING_KEY_SWITCH_DELAY: Duration = Duration::from_secs(3);

/// Installs each new value of a credential-backed ring key at once (accepted), and makes it
/// the primary (sent with) after `RING_KEY_SWITCH_DELAY`. Keys of another ring name are refused.
fn follow_ring_key(ring: RingHandle, rx: watch::Receiver<Option<CredentialValue>>) {
    let ring_name = ring.status().ring_name.clone();
    follow_secret(rx, "ring_key", move |value| {
        let ring = ring.clone();
        let ring_name = ring_name.clone();
        async move {
            let key = match parse_ring_key(value.expose()) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(error = %e, "the ring key reference gave an unusable key; keeping the current one");
                    return;
                }
            };
            let id = key.id.clone();
            if ring_name.as_ref().is_some_and(|n| *n != id.name) {
                tracing::warn!(key = %id, "the ring key reference names another ring; ignoring it");
                return;
            }
            match ring.install_key(key).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return tracing::warn!(key = %id, error = %e, "could not install the new ring key");
                }
                Err(_) => return,
            }
            tracing::info!(key = %id, "new ring key accepted; sending with it in {RING_KEY_SWITCH_DELAY:?}");
            tokio::time::sleep(RING_KEY_SWITCH_DELAY).await;
            match ring.use_key(id.clone()).await {
                Ok(Ok(())) => tracing::info!(key = %id, "ring key rotated from its reference"),
                Ok(Err(e)) => tracing::warn!(key = %id, error = %e, "could not rotate to the new ring key"),
                Err(_) => {}
            }
        }
    });
}

/// The address others reach us at: `--advertise`, else the listen address, else (listening on
/// 0.0.0.0) the local address of the route to the first peer. A member with neither would
/// advertise loopback, which only works on one host: say so.
fn advertised(listen: SocketAddr, advertise: Option<SocketAddr>, peers: &[SocketAddr]) -> SocketAddr {
    if let Some(a) = advertise {
        return a;
    }
    if !listen.ip().is_unspecified() {
        return listen;
    }
    let guess = peers.first().and_then(|p| {
        // connect() on UDP only picks the route; nothing is sent.
        let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        s.connect(p).ok()?;
        s.local_addr().ok().map(|a| a.ip())
    });
    let ip = guess.unwrap_or_else(|| {
        tracing::warn!(
            "listening on {listen} with no --peer and no --advertise: advertising 127.0.0.1, which \
             members on other hosts cannot reach (pass --advertise HOST:PORT)"
        );
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    });
    SocketAddr::new(ip, listen.port())
}

/// Worker threads of the supervisor's general runtime (HTTP, ctl, push-pull, persistence,
/// credential followers); the ring's loop has a thread of its own.
const WORKER_THREADS: usize = 2;

/// Runs a supervisor until Ctrl-C / SIGTERM, until it is departed, or until a restart.
pub fn run(opts: SupOptions) -> Result<Exit, SupError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("warren-worker")
        .enable_all()
        .build()
        .map_err(SupError::Runtime)?;
    rt.block_on(Supervisor::run(opts))
}

/// The running supervisor: the ring (its own loop, reached through `RingHandle` commands),
/// the HTTP gateway (read-only views), and the followers of keys and secrets.
pub struct Supervisor;

impl Supervisor {
    async fn run(mut opts: SupOptions) -> Result<Exit, SupError> {
        let data = DataDir::new(&opts.data_path);
        let id = data.member_id()?;
        let mut state = data.load_state()?;
        let cache = KeyCache::new(&opts.cache_key_path);
        if let RingKeySource::Credential(rx) = &opts.ring_key {
            let mut rx = rx.clone();
            if tokio::time::timeout(RING_KEY_WAIT, rx.wait_for(Option::is_some)).await.is_err() {
                return Err(SupError::RingKeyUnavailable(RING_KEY_WAIT));
            }
        }
        let keyring = load_keyring(&opts.ring_key, &cache, state.primary_key.as_deref())?;
        let peers = opts.peers.iter().map(|p| resolve_peer(p)).collect::<Result<Vec<_>, _>>()?;

        let (udp, tcp) = bind_gossip(opts.listen_gossip)?;
        let http_listener = TcpListener::bind(opts.listen_http).await.map_err(|source| SupError::Bind {
            what: "HTTP gateway",
            addr: opts.listen_http,
            source,
        })?;
        let gossip_addr = udp.local_addr().map_err(SupError::Runtime)?;
        let http_addr = http_listener.local_addr().map_err(SupError::Runtime)?;

        // Every start is a new generation above anything this member ever said before; +2
        // because a graceful leave advertised one incarnation above the last.
        let generation = state.generation.saturating_add(state.incarnation).saturating_add(2);
        state.generation = generation;
        state.incarnation = 0;
        state.primary_key = keyring.primary_id().map(|k| k.to_string());
        data.save_state(&state)?;

        let core = RingCore::new(CoreParams {
            id,
            addr: advertised(gossip_addr, opts.advertise, &peers),
            generation,
            persistent: opts.permanent_peer,
            config: opts.ring.clone(),
            keyring,
            peers,
            seed: u64::from_le_bytes(crate::crypto::sodium::random_array()),
            http_port: http_addr.port(),
            restored: data.load_rumors()?,
        });
        if core.with_store(|s| s.is_departed(&id.to_string())) {
            return Err(SupError::Departed(id.to_string()));
        }
        let encrypted = core.keyring().is_encrypted();

        let (stop_tx, stop_rx) = watch::channel(false);
        let running = shell::start(
            core,
            shell::Sockets { udp, tcp },
            Some(Persist { data: data.clone() }),
            tokio::runtime::Handle::current(),
            stop_rx.clone(),
        )
        .map_err(SupError::Runtime)?;
        let ring = running.handle.clone();
        let background: Vec<_> = std::mem::take(&mut opts.background).into_iter().map(tokio::spawn).collect();

        let _watcher = match &opts.ring_key {
            RingKeySource::Cache { name } => {
                keywatch::spawn(ring.clone(), cache.clone(), name.clone(), &opts.files)
            }
            RingKeySource::Credential(rx) => {
                follow_ring_key(ring.clone(), rx.clone());
                None
            }
            _ => None,
        };
        let ctl_metrics = Arc::new(crate::ctl::CtlMetrics::default());
        let group_metrics = Arc::new(crate::groups::metrics::GroupMetrics::default());
        let census = crate::groups::follow::spawn(ring.clone())
            .await
            .map_err(|e| SupError::Runtime(std::io::Error::other(e.to_string())))?;
        let elections = crate::election::Elections::spawn(
            ring.clone(),
            census.clone(),
            crate::election::ElectionsOptions {
                me: id.to_string(),
                data_path: opts.data_path.clone(),
                tick: (opts.ring.gossip_interval * 2).max(std::time::Duration::from_millis(100)),
                config: crate::election::ElectionConfig::default(),
                has_peers: !opts.peers.is_empty(),
            },
        );
        let api = ring_api::RingApi {
            ring: ring.clone(),
            ctl_metrics: Some(ctl_metrics.clone()),
            census: census.clone(),
            group_metrics: Some(group_metrics.clone()),
            elections: elections.clone(),
        };
        let mut parts = vec![ring_api::routes(api)];
        if let Some(plugins) = &opts.plugins {
            parts.push(plugins_api::routes(plugins.clone()));
        }
        parts.extend(opts.extra_routes);
        let store = crate::services::PackageStore::under(&opts.data_path);
        let spool_dir = opts.data_path.join("tmp");
        let swept = store.sweep() + pkg_install::sweep_spool(&spool_dir);
        if swept > 0 {
            tracing::info!("removed {swept} unfinished package install(s) left by an earlier run");
        }
        let advertised_addr = ring.status().members.iter().find(|m| m.ident.id == id).map(|m| m.ident.addr);
        let sys_ip = advertised_addr.map(|a| a.ip()).unwrap_or(gossip_addr.ip());
        let sys = serde_json::json!({
            "ip": sys_ip.to_string(),
            "hostname": hostname(),
            "member_id": id.to_string(),
            "gossip_ip": gossip_addr.ip().to_string(),
            "gossip_port": gossip_addr.port(),
            "http_gateway_ip": http_addr.ip().to_string(),
            "http_gateway_port": http_addr.port(),
        });
        // What the ring holds for the groups of the services about to be restored: their
        // gossip layers are in place before they first render.
        let mut inbox = crate::groups::inbox::Inbox::new(opts.org.clone());
        let spec_groups = restored_groups(&opts.data_path, opts.org.as_deref());
        let initial_gossip =
            crate::groups::apply::initial(&mut inbox, &ring, &spec_groups, &cache, &group_metrics);
        let services = crate::services::Services::start(crate::services::ServicesOptions {
            data_path: opts.data_path.clone(),
            policy: opts.service_backoff,
            sys: sys.clone(),
            files: Some(opts.files.clone()),
            plugins: opts.plugins.clone(),
            sup_config: opts.service_config.clone(),
            hook_plugins: opts.plugins.as_ref().map(|p| p.registry.clone()),
            member_id: id.to_string(),
            org: opts.org.clone(),
            census: Some(census.clone()),
            initial_gossip,
            elections: Some(elections.clone()),
        });
        let _group_apply = crate::groups::apply::GroupApply {
            inbox,
            ring: ring.clone(),
            services: services.clone(),
            cache: cache.clone(),
            files: opts.files.clone(),
            metrics: group_metrics,
            initial_groups: spec_groups,
        }
        .spawn();
        let (restart_tx, mut restart_rx) = tokio::sync::mpsc::channel(1);
        let ctl_handler = ctl::SupCtl {
            ring: ring.clone(),
            cache: matches!(opts.ring_key, RingKeySource::Cache { .. }).then(|| cache.clone()),
            plugins: opts.plugins.clone(),
            restart: restart_tx,
            services: services.clone(),
            org: opts.org.clone(),
            installer: pkg_install::Installer {
                keys: cache.clone(),
                store,
                spool_dir,
                slots: Arc::new(tokio::sync::Semaphore::new(pkg_install::MAX_CONCURRENT_INSTALLS)),
            },
        };
        let ctl = ctl::start(
            opts.listen_ctl,
            opts.ctl,
            &opts.data_path,
            &opts.files,
            ctl_handler,
            ctl_metrics,
            stop_rx.clone(),
        )
        .await?;

        // The gateway starts last: `/services` shows the ctl gateway's bound address.
        let mut service_sys = sys;
        service_sys["ctl_gateway_ip"] = ctl.addr.ip().to_string().into();
        service_sys["ctl_gateway_port"] = ctl.addr.port().into();
        service_sys["permanent"] = opts.permanent_peer.into();
        service_sys["version"] = env!("CARGO_PKG_VERSION").into();
        crate::groups::publish::spawn(
            ring.clone(),
            services.clone(),
            opts.org.clone(),
            sys_info(&service_sys),
        );
        parts.push(http::services_api::routes(http::services_api::ServicesApi {
            services: services.clone(),
            data_path: opts.data_path.clone(),
            sys: service_sys,
            policy: opts.service_backoff,
        }));
        let auth = gateway_auth(opts.gateway_token);
        http::warn_if_open(&auth, http_addr);
        let router = http::build(auth, parts);
        let mut http_stop = stop_rx.clone();
        let http_task = tokio::spawn(http::serve(http_listener, router, async move {
            let _ = http_stop.wait_for(|s| *s).await;
        }));

        write_listen_file(&opts.data_path, gossip_addr, http_addr, ctl.addr);
        tracing::info!(
            member_id = %id,
            gossip = %gossip_addr,
            http = %http_addr,
            ctl = %ctl.addr,
            generation,
            encrypted,
            "supervisor started"
        );

        let mut thread = Some(running.thread);
        let signal = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        // The ring thread ends on shutdown, or by itself when this member is departed.
        let ring_done = async {
            let t = thread.take();
            tokio::task::spawn_blocking(move || t.map(|t| t.join().unwrap_or(Stopped::Shutdown)))
                .await
                .ok()
                .flatten()
                .unwrap_or(Stopped::Shutdown)
        };
        tokio::pin!(ring_done);
        let stopped = tokio::select! {
            _ = signal => {
                tracing::info!("shutting down: leaving the ring");
                let _ = stop_tx.send(true);
                ring_done.await
            }
            Some(()) = restart_rx.recv() => {
                tracing::info!("restarting: stopping without leaving the ring");
                match ring.stop_for_restart().await {
                    Ok(()) => ring_done.await,
                    Err(_) => Stopped::Shutdown,
                }
            }
            r = &mut ring_done => r,
        };
        // A restart leaves the services running for the next image to reattach; any other end
        // stops them (as Habitat's does), each within its shutdown timeout.
        services.exit(stopped != Stopped::Restart).await;
        let _ = stop_tx.send(true);
        for t in &background {
            t.abort();
        }
        let _ = http_task.await;
        let _ = ctl.task.await;
        let _ = std::fs::remove_file(opts.data_path.join(LISTEN_FILE));
        Ok(match stopped {
            Stopped::Departed => {
                tracing::warn!(member_id = %id, "departed from the ring; exiting");
                Exit::Departed
            }
            Stopped::Restart => {
                tracing::info!("stopped; starting again");
                Exit::Restart
            }
            Stopped::Shutdown => {
                tracing::info!("stopped");
                Exit::Stopped
            }
        })
    }
}

/// The groups (`SVC.GROUP[@ORG]`) of the services whose specs are on disk.
fn restored_groups(data_path: &std::path::Path, org: Option<&str>) -> std::collections::BTreeSet<String> {
    crate::services::spec::SpecDir::new(data_path)
        .load_all()
        .into_iter()
        .flatten()
        .filter_map(|s| crate::groups::ServiceGroup::new(s.name(), &s.group, org).ok())
        .map(|g| g.to_string())
        .collect()
}

/// How a supervisor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Ctrl-C or SIGTERM: it left the ring.
    Stopped,
    /// Departed from the ring by someone.
    Departed,
    /// `sup restart`: everything is stopped and released; the caller starts it again (the
    /// CLI re-executes its own binary, so a replaced binary is picked up).
    Restart,
}

/// Binds the gossip port for UDP and TCP. Port 0 takes a free UDP port from the kernel and the
/// same port for TCP, trying another if TCP already has that one.
fn bind_gossip(addr: SocketAddr) -> Result<(std::net::UdpSocket, std::net::TcpListener), SupError> {
    let mut tries = 0;
    loop {
        let udp = std::net::UdpSocket::bind(addr).map_err(|source| SupError::Bind {
            what: "gossip (UDP)",
            addr,
            source,
        })?;
        let bound = udp.local_addr().map_err(SupError::Runtime)?;
        match std::net::TcpListener::bind(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse && tries < 16 => {
                tries += 1;
            }
            Err(source) => return Err(SupError::Bind { what: "gossip (TCP)", addr: bound, source }),
        }
    }
}

/// `{data_path}/listen.json`: the addresses actually bound (port 0 picks free ports) and this
/// process's id, so scripts and tests can find a running supervisor without guessing ports.
pub const LISTEN_FILE: &str = "listen.json";

fn write_listen_file(data_path: &std::path::Path, gossip: SocketAddr, http: SocketAddr, ctl: SocketAddr) {
    let json = serde_json::json!({
        "pid": std::process::id(),
        "gossip": gossip.to_string(),
        "http": http.to_string(),
        "ctl": ctl.to_string(),
    });
    let path = data_path.join(LISTEN_FILE);
    if let Err(e) = crate::ring::persist::atomic_write(&path, format!("{json}\n").as_bytes()) {
        tracing::warn!(error = %e, "cannot record the listen addresses");
    }
}

/// This host's name (`sys.hostname` in templates).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// Where this supervisor's services run, as Service rumors tell it (Habitat's SysInfo).
fn sys_info(sys: &serde_json::Value) -> crate::ring::proto::SysInfo {
    let text = |k: &str| sys[k].as_str().unwrap_or_default().to_string();
    let port = |k: &str| sys[k].as_u64().and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
    crate::ring::proto::SysInfo {
        ip: text("ip"),
        hostname: text("hostname"),
        gossip_ip: text("gossip_ip"),
        gossip_port: port("gossip_port"),
        http_gateway_ip: text("http_gateway_ip"),
        http_gateway_port: port("http_gateway_port"),
        ctl_gateway_ip: text("ctl_gateway_ip"),
        ctl_gateway_port: port("ctl_gateway_port"),
    }
}
