//! `warren keyserver run`: the admission keyserver (issue #13). It owns the cluster's admission
//! SIG key, its transport BOX key, the ring key and the token state, and serves admin requests
//! (`warren admit token ...`) on the ctl gateway's Noise channel, keyed by its ADMIN_SECRET.
//!
//! Every request is handled under one lock: the state machine decides and its change is
//! appended to the journal (0600; folded into state.json now and then). Outside the lock the
//! request waits until the journal is fsynced up to its change (one fsync serves all the
//! requests in flight: group commit), the audit follows, and only then does the reply go out.
//! A write that fails undoes the request; a failed fsync stops all writes until a restart.

use crate::clock::unix_now;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::admission::cidr::Cidr;
use crate::admission::keyserver::{Keyserver, OsRng, TokenRequest};
use crate::admission::store::{Store, StoreError};
use crate::admission::{AdmitError, TokenId, wire};
use crate::crypto::keys::{BoxSecretKeyFile, KeyKind, RingKey, SigSecretKey};
use crate::crypto::{CryptoError, KeyCache};
use crate::ctl::proto::{self, ErrCode, NetErr};
use crate::ctl::{CtlHandler, CtlMetrics, CtlRequest, PlaintextPolicy, Reply, ReplySink, ServerConfig};

pub const DEFAULT_KEYSERVER_PORT: u16 = 9637;
/// Where nodes claim their tokens (`warren admit join`).
pub const DEFAULT_JOIN_PORT: u16 = 9636;
pub const ADMIN_SECRET_FILE: &str = "ADMIN_SECRET";
pub const LISTEN_FILE: &str = "listen.json";
pub const KEYS_DIR: &str = "keys";

#[derive(Subcommand, Debug)]
pub enum KeyserverCommand {
    /// Runs the admission keyserver. On first start it creates, under --data-path, its
    /// admission signing key (RING-admission, SIG-SEC-1), its transport key (RING-keyserver,
    /// BOX-SEC-1) and a first ring key named RING in DIR/keys, and DIR/ADMIN_SECRET (0600) for
    /// the admin commands. Tokens live in DIR/state.json and DIR/journal.bin (the changes since
    /// that snapshot), events in DIR/audit.jsonl; unexpired
    /// tokens survive a restart. Configuration files for nodes: DIR/files/all/NAME goes to
    /// every node, DIR/files/GROUP/NAME to nodes in GROUP (it wins over all's NAME); plain
    /// names (letters, digits, -, _, .), at most 64 KiB each, read at every key fetch. A node
    /// writes them into DATA/admission/ and removes the ones no longer sent; a sup.toml there
    /// is a layer under the supervisor's own config at its next start.
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Where admin requests are served (the Noise channel of the ctl gateway).
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_KEYSERVER_PORT)), value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Where nodes claim tokens (`warren admit join`): a signed descriptor, then a claim sealed
    /// to the transport key.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_JOIN_PORT)), value_name = "ADDR")]
    pub listen_join: SocketAddr,
    /// The keyserver's own folder (keys, secret, state, audit log); created 0700.
    #[arg(long, value_name = "DIR")]
    pub data_path: PathBuf,
    /// The ring (and cluster) this keyserver admits nodes to; also names its keys.
    #[arg(long, value_name = "NAME")]
    pub ring: String,
}

pub fn run(cmd: KeyserverCommand) -> anyhow::Result<()> {
    match cmd {
        KeyserverCommand::Run(args) => run_keyserver(args),
    }
}

/// The latest key `name` of `kind` in `cache`, created by `make` when there is none.
fn key_or_create(
    cache: &KeyCache,
    kind: KeyKind,
    name: &str,
    make: impl FnOnce() -> Result<Vec<crate::crypto::KeyFile>, CryptoError>,
) -> anyhow::Result<crate::crypto::KeyFile> {
    match cache.latest(kind, name) {
        Ok(k) => Ok(k),
        Err(CryptoError::KeyNotFound { .. }) => {
            let files = make()?;
            for f in &files {
                cache.write(f)?;
            }
            tracing::info!(key = %files[0].id, kind = kind.describe(), "created a key");
            Ok(cache.latest(kind, name)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates whatever is missing under `dir` and returns the admission and transport keys.
fn provision(dir: &Path, ring: &str) -> anyhow::Result<(SigSecretKey, BoxSecretKeyFile)> {
    let cache = KeyCache::new(dir.join(KEYS_DIR));
    let admission_name = format!("{ring}-admission");
    let admission = key_or_create(&cache, KeyKind::SigSecret, &admission_name, || {
        let (p, s) = SigSecretKey::generate(&admission_name)?;
        Ok(vec![s.to_file(), p.to_file()])
    })?;
    let transport_name = format!("{ring}-keyserver");
    let transport = key_or_create(&cache, KeyKind::BoxSecret, &transport_name, || {
        let (p, s) = BoxSecretKeyFile::generate(&transport_name)?;
        Ok(vec![s.to_file(), p.to_file()])
    })?;
    key_or_create(&cache, KeyKind::SymSecret, ring, || Ok(vec![RingKey::generate(ring)?.to_file()]))?;
    crate::ctl::secret::read_or_create_file(&dir.join(ADMIN_SECRET_FILE))?;
    crate::ctl::secret::read_or_create_file(&dir.join(nodes::CLUSTER_CTL_SECRET_FILE))?;
    Ok((SigSecretKey::try_from(&admission)?, BoxSecretKeyFile::try_from(&transport)?))
}

fn run_keyserver(args: RunArgs) -> anyhow::Result<()> {
    crate::crypto::keys::validate_name(&args.ring).context("--ring")?;
    crate::admission::validate_plain_name("ring name", &args.ring)?;
    let store = Store::open(&args.data_path)?;
    let (admission, transport) = provision(&args.data_path, &args.ring)?;
    let secret = crate::ctl::secret::read_or_create_file(&args.data_path.join(ADMIN_SECRET_FILE))?;
    let state = store.load(&args.ring)?;
    let mut ks = Keyserver::new(state, admission.clone(), OsRng);
    ks.purge(unix_now());
    let ticket = store.commit(&mut ks).context("writing the keyserver state")?;
    store.wait_durable(ticket).context("writing the keyserver state")?;
    // The journal replayed at load is folded into a fresh snapshot (which also cuts a torn tail).
    store.compact(ks.state()).context("writing the keyserver state")?;
    let pin = ks.pin();
    let admission_id = ks.admission_public().id;
    let handler = Arc::new(KeyserverCtl {
        ks: Mutex::new(ks),
        store,
        admission,
        transport,
        keys: KeyCache::new(args.data_path.join(KEYS_DIR)),
        ring: args.ring.clone(),
        data_path: args.data_path.clone(),
        limit: Mutex::new(crate::admission::ratelimit::FailureLimit::new(
            crate::admission::ratelimit::DEFAULT_BURST,
            crate::admission::ratelimit::DEFAULT_REFILL,
        )),
    });

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let join_listener = tokio::net::TcpListener::bind(args.listen_join)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen_join))?;
        let join_addr = join_listener.local_addr()?;
        tokio::spawn(serve_join(join_listener, handler.clone()));
        let json = serde_json::json!({
            "pid": std::process::id(),
            "listen": addr.to_string(),
            "join": join_addr.to_string(),
        });
        crate::fsutil::write_atomic(
            &args.data_path.join(LISTEN_FILE),
            format!("{json}\n").as_bytes(),
            0o644,
            crate::fsutil::Existing::Replace,
        )
        .context("writing listen.json")?;
        tracing::info!(listen = %addr, join = %join_addr, ring = %args.ring, admission_key = %admission_id, %pin, "keyserver started");
        let (_tx, rx) = tokio::sync::watch::channel(Some(secret));
        let mut config = ServerConfig::new(rx);
        // The admin secret never travels in the clear.
        config.plaintext = PlaintextPolicy::Deny;
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        crate::ctl::serve(listener, config, handler, Arc::new(CtlMetrics::default()), shutdown).await;
        tracing::info!("keyserver stopped");
        anyhow::Ok(())
    })
}

/// Writes what changed (undone if that fails, audit queued: see [`Store::commit`]), releases
/// the lock, and waits until the write is durable, with the commits in flight beside it: a
/// reply goes out only after. A failure is logged; the caller answers [`CANNOT_WRITE`].
pub(super) fn commit_durably(
    store: &Store,
    mut ks: std::sync::MutexGuard<'_, Keyserver<OsRng>>,
) -> Result<(), StoreError> {
    let ticket = store.commit(&mut ks);
    drop(ks);
    let done = ticket.and_then(|t| store.wait_durable(t));
    if let Err(e) = &done {
        tracing::error!(error = %e, "cannot persist the keyserver state; request not acknowledged");
    }
    done
}

/// What a request whose state could not be written gets back.
const CANNOT_WRITE: &str = "the keyserver cannot write its state; try again";

struct KeyserverCtl {
    ks: Mutex<Keyserver<OsRng>>,
    store: Store,
    admission: SigSecretKey,
    transport: BoxSecretKeyFile,
    keys: KeyCache,
    ring: String,
    data_path: PathBuf,
    limit: Mutex<crate::admission::ratelimit::FailureLimit>,
}

#[path = "keyserver_nodes.rs"]
mod nodes;

#[path = "keyserver_files.rs"]
mod files;

/// Serves the join port: each connection may ask for the descriptor, then claim once.
async fn serve_join(listener: tokio::net::TcpListener, h: Arc<KeyserverCtl>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(crate::ctl::server::MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "join port: accept failed; backing off");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "join port: too many connections; closing this one");
            continue;
        };
        let h = h.clone();
        tokio::spawn(async move {
            join_connection(h, stream, peer).await;
            drop(slot);
        });
    }
}

async fn read_msg(s: &mut tokio::net::TcpStream) -> anyhow::Result<(wire::Kind, Vec<u8>)> {
    use tokio::io::AsyncReadExt as _;
    let mut header = [0u8; wire::HEADER_LEN];
    s.read_exact(&mut header).await?;
    let (kind, len) = wire::parse_header(&header)?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok((kind, body))
}

async fn join_connection(h: Arc<KeyserverCtl>, mut s: tokio::net::TcpStream, peer: SocketAddr) {
    use tokio::io::AsyncWriteExt as _;
    for _ in 0..2 {
        let msg = tokio::time::timeout(crate::ctl::server::HANDSHAKE_TIMEOUT, read_msg(&mut s)).await;
        let (kind, body) = match msg {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "join port: bad or closed connection");
                return;
            }
            Err(_) => return,
        };
        let (reply, last) = match kind {
            wire::Kind::DescriptorRequest => (wire::frame(wire::Kind::Descriptor, &h.descriptor()), false),
            wire::Kind::Claim => {
                let ip = peer.ip().to_canonical();
                // Checked before the sealed box is even opened: guessing costs the guesser.
                if let Err(wait) = h.limit_check(ip) {
                    tracing::debug!(%peer, "join port: failure budget spent; claim refused unopened");
                    let msg = format!("too many failed attempts from {ip}; retry in {wait} s");
                    let _ = s.write_all(&wire::frame(wire::Kind::Error, msg.as_bytes())).await;
                    return;
                }
                let (reply, delay) = tokio::task::block_in_place(|| h.claim(&body, ip));
                if reply.first() == Some(&(wire::Kind::Error as u8)) {
                    h.limit_failed(ip);
                }
                if delay > 0 {
                    tokio::time::sleep(std::time::Duration::from_secs(delay)).await;
                }
                (reply, true)
            }
            // Signed by a node key: nothing to guess, so no failure budget (a revoked node
            // behind a shared address must not block its neighbours).
            wire::Kind::Request => {
                (tokio::task::block_in_place(|| h.request(&body, peer.ip().to_canonical())), true)
            }
            _ => (wire::frame(wire::Kind::Error, b"unexpected message"), true),
        };
        if s.write_all(&reply).await.is_err() || last {
            return;
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl KeyserverCtl {
    fn limit_check(&self, ip: std::net::IpAddr) -> Result<(), u64> {
        self.limit.lock().unwrap_or_else(|p| p.into_inner()).check(ip, now_ms())
    }

    fn limit_failed(&self, ip: std::net::IpAddr) {
        let mut l = self.limit.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        l.failed(ip, now);
        if l.check(ip, now).is_err() {
            tracing::warn!(%ip, "join port: this address spent its failure budget; its attempts are refused for a while");
        }
    }

    fn descriptor(&self) -> Vec<u8> {
        wire::Descriptor {
            cluster: self.ring.clone(),
            admission: self.admission.public(),
            transport: self.transport.public(),
            not_after: unix_now() + 24 * 3600,
        }
        .sign(&self.admission)
    }

    /// A claim: the reply frame and how long to wait before sending it.
    fn claim(&self, sealed: &[u8], peer: std::net::IpAddr) -> (Vec<u8>, u64) {
        let error = |msg: String| wire::frame(wire::Kind::Error, msg.as_bytes());
        let tpub = self.transport.public().key;
        let (claim, nonce) = match wire::ClaimBody::open(sealed, &tpub, &self.transport.key, Some(peer)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "join port: undecodable claim");
                return (error(format!("refused: {e}")), 0);
            }
        };
        let mut ks = self.ks.lock().unwrap_or_else(|p| p.into_inner());
        let now = unix_now();
        let result = ks.claim(now, &claim);
        let primary = result.is_ok().then(|| self.ring_primary(&mut ks, now)).flatten();
        // Read under the lock, as for a key fetch: a revocation in the fsync window below
        // must not reach the node it revokes.
        let ring_keys = if result.is_ok() { self.ring_texts() } else { Vec::new() };
        if commit_durably(&self.store, ks).is_err() {
            return (error(CANNOT_WRITE.into()), 0);
        }
        match result {
            Ok(claimed) => {
                tracing::info!(token = %claim.token_id, node = %claim.node, %peer, retry = claimed.retry, "node admitted");
                let body = wire::ClaimedBody { nonce, cgc: claimed.cgc, ring_keys, primary };
                (wire::frame(wire::Kind::Claimed, &body.seal(&self.admission, &claim.node_box)), 0)
            }
            Err(e) => {
                tracing::warn!(token = %claim.token_id, node = %claim.node, %peer, "claim refused: {e}");
                let delay = match e {
                    AdmitError::WrongSecret { retry_after, .. } => retry_after,
                    _ => 0,
                };
                (error(e.to_string()), delay)
            }
        }
    }
}

fn net_err(code: ErrCode, e: impl std::fmt::Display) -> NetErr {
    NetErr::new(code, e.to_string())
}

fn admit_err(e: AdmitError) -> NetErr {
    let code = match e {
        AdmitError::UnknownToken(_) | AdmitError::UnknownNode(_) => ErrCode::NotFound,
        AdmitError::BadName { .. } | AdmitError::BadTtl { .. } => ErrCode::InvalidPayload,
        _ => ErrCode::Unauthorized,
    };
    net_err(code, e)
}

impl KeyserverCtl {
    fn handle_now(&self, req: CtlRequest, now: u64) -> Result<Reply, NetErr> {
        if matches!(
            req,
            CtlRequest::AdmitNodeList(_)
                | CtlRequest::AdmitNodeRevoke(_)
                | CtlRequest::AdmitRingRotate(_)
                | CtlRequest::AdmitGroupKeyGen(_)
        ) {
            return self.handle_nodes(req, now);
        }
        let mut ks = self.ks.lock().unwrap_or_else(|p| p.into_inner());
        let reply = match req {
            CtlRequest::Ping(p) => return Ok(Reply::new(&proto::CtlPong { payload: p.payload })),
            CtlRequest::AdmitTokenCreate(r) => {
                let from = match r.from.as_deref() {
                    Some(f) => Some(f.parse::<Cidr>().map_err(|e| net_err(ErrCode::InvalidPayload, e))?),
                    None => None,
                };
                let node = r.node.unwrap_or_default();
                let req = TokenRequest { node: node.clone(), groups: r.groups, ttl: r.ttl_secs, from };
                let join = ks.create_token(now, req).map_err(admit_err)?;
                let id = join.id.to_string();
                let expires_at = ks.list().iter().find(|t| t.id == id).map(|t| t.expires_at).unwrap_or(now);
                tracing::info!(token = %id, %node, expires_at, "token created");
                Reply::new(&proto::AdmitTokenCreated { id, join: join.encode().to_string(), expires_at })
            }
            CtlRequest::AdmitTokenList(_) => {
                ks.purge(now);
                let tokens = ks
                    .list()
                    .into_iter()
                    .map(|t| proto::AdmitTokenInfo {
                        id: t.id,
                        node: t.node,
                        groups: t.groups,
                        from: t.from,
                        expires_at: t.expires_at,
                        status: t.status.to_string(),
                        failures: t.failures,
                    })
                    .collect();
                Reply::new(&proto::AdmitTokens { tokens })
            }
            CtlRequest::AdmitTokenRevoke(r) => {
                let text = r.id.unwrap_or_default();
                let id: TokenId =
                    text.parse().map_err(|e| net_err(ErrCode::InvalidPayload, format!("token id: {e}")))?;
                ks.revoke(now, &id).map_err(admit_err)?;
                tracing::info!(token = %id, "token revoked");
                Reply::ok()
            }
            other => {
                return Err(net_err(
                    ErrCode::NotSupported,
                    format!("{} is not served by a keyserver", other.name()),
                ));
            }
        };
        if commit_durably(&self.store, ks).is_err() {
            return Err(net_err(ErrCode::Io, CANNOT_WRITE));
        }
        Ok(reply)
    }
}

impl CtlHandler for KeyserverCtl {
    fn handle(
        &self,
        req: CtlRequest,
        _out: ReplySink,
    ) -> impl std::future::Future<Output = Result<Reply, NetErr>> + Send {
        // Synchronous on purpose: the state machine and its fsync'd commit take well under a
        // millisecond on a local disk and must not interleave.
        let r = tokio::task::block_in_place(|| self.handle_now(req, unix_now()));
        async move { r }
    }
}
