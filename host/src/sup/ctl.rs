//! The supervisor's side of the ctl gateway: where its secret comes from, and what each
//! request does to the ring (`ctl ping`, `sup status`, `sup depart`, `sup restart`,
//! `ring key ...`), `pkg install` (see [`super::pkg_install`]), `svc ...` (see
//! [`super::ctl_svc`]) and `config apply` / `file upload` (see [`super::ctl_cfg`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{SupError, ctl_svc};
use crate::credentials::CredentialValue;
use crate::crypto::{KeyCache, KeyFile, KeyId, KeyKind, RingKey};
use crate::ctl::proto::{self, ErrCode, NetErr};
use crate::ctl::{
    self, CtlHandler, CtlMetrics, CtlRequest, CtlSecret, PlaintextPolicy, Reply, ReplySink, ServerConfig,
    Upload,
};
use crate::plugins::PluginRuntime;
use crate::ring::wire::KeyringError;
use crate::ring::{MemberId, RingHandle};
use crate::services::Services;
use crate::watch::FileWatch;

/// Where the ctl secret comes from.
#[derive(Default)]
pub enum CtlSecretSource {
    /// `{data_path}/CTL_SECRET`, created at first start and followed: each new value is used
    /// by new connections (a key fetch rewrites it after a revoke).
    #[default]
    DataFile,
    /// `ctl_secret = "..."` in sup.toml.
    Fixed(CtlSecret),
    /// `ctl_secret = "FILE:..."` (any reference): each new value is used by new connections.
    Credential(watch::Receiver<Option<CredentialValue>>),
}

/// The ctl gateway's settings in `sup run`.
pub struct CtlOptions {
    pub secret: CtlSecretSource,
    /// `ctl_plaintext` in sup.toml.
    pub plaintext: PlaintextPolicy,
    pub handshake_timeout: Duration,
}

impl Default for CtlOptions {
    fn default() -> Self {
        CtlOptions {
            secret: CtlSecretSource::DataFile,
            plaintext: PlaintextPolicy::default(),
            handshake_timeout: ctl::server::HANDSHAKE_TIMEOUT,
        }
    }
}

/// A running gateway.
pub struct CtlGateway {
    pub addr: SocketAddr,
    pub metrics: Arc<CtlMetrics>,
    pub task: JoinHandle<()>,
}

fn secret_channel(
    source: CtlSecretSource,
    data_path: &Path,
    files: &FileWatch,
) -> Result<watch::Receiver<Option<CtlSecret>>, SupError> {
    Ok(match source {
        CtlSecretSource::DataFile => {
            let s = ctl::secret::read_or_create(data_path).map_err(|e| SupError::CtlSecret(e.to_string()))?;
            super::ctl_secret_watch::follow(data_path, s, files)
        }
        CtlSecretSource::Fixed(s) => watch::channel(Some(s)).1,
        CtlSecretSource::Credential(rx) => {
            let first = rx.borrow().as_ref().and_then(|c| CtlSecret::new(c.expose()));
            let (tx, secret) = watch::channel(first);
            super::follow_secret(rx, "ctl_secret", move |value| {
                let next = CtlSecret::new(value.expose());
                tracing::info!(available = next.is_some(), "ctl secret rotated");
                let _ = tx.send(next);
                std::future::ready(())
            });
            secret
        }
    })
}

/// Binds `listen` and serves the gateway until `stop` turns true.
pub async fn start(
    listen: SocketAddr,
    options: CtlOptions,
    data_path: &Path,
    files: &FileWatch,
    handler: SupCtl,
    metrics: Arc<CtlMetrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<CtlGateway, SupError> {
    let secret = secret_channel(options.secret, data_path, files)?;
    let listener = TcpListener::bind(listen).await.map_err(|source| SupError::Bind {
        what: "ctl gateway",
        addr: listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(SupError::Runtime)?;
    let mut config = ServerConfig::new(secret);
    config.plaintext = options.plaintext;
    config.handshake_timeout = options.handshake_timeout;
    let task = tokio::spawn(ctl::serve(listener, config, Arc::new(handler), metrics.clone(), async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    Ok(CtlGateway { addr, metrics, task })
}

/// The requests, served on the ring through [`RingHandle`], and packages into the store.
pub struct SupCtl {
    pub ring: RingHandle,
    /// Where `ring key install|remove` write, when the ring was started from the key cache.
    pub cache: Option<KeyCache>,
    /// `sup status` shows what the plugin runtime loaded and how credentials stand.
    pub plugins: Option<Arc<PluginRuntime>>,
    /// `sup restart` asks the supervisor's main loop to restart in place.
    pub restart: mpsc::Sender<()>,
    /// `svc load|unload|start|stop|status`.
    pub services: Services,
    /// `sup run --org`: `config apply` and `file upload` refuse plaintext for its groups.
    pub org: Option<String>,
    /// `pkg install`: the key cache packages are verified against, and the package store.
    pub installer: super::pkg_install::Installer,
}

/// The ring's loop has stopped (the supervisor is shutting down).
fn gone(e: crate::ring::shell::RingGone) -> NetErr {
    err(ErrCode::Internal, e)
}

fn err(code: ErrCode, msg: impl std::fmt::Display) -> NetErr {
    NetErr::new(code, msg.to_string())
}

/// A required field the client left out: Habitat answers "client out of date".
fn required<T>(v: Option<T>, field: &str) -> Result<T, NetErr> {
    v.ok_or_else(|| err(ErrCode::UpdateClient, format!("client out of date: {field} is missing")))
}

impl CtlHandler for SupCtl {
    async fn handle(&self, req: CtlRequest, out: ReplySink) -> Result<Reply, NetErr> {
        match req {
            CtlRequest::Ping(p) => Ok(Reply::new(&proto::CtlPong { payload: p.payload })),
            CtlRequest::SupStatus(_) => {
                let mut status = self.status();
                status.services =
                    self.services.status().await.unwrap_or_default().iter().map(ctl_svc::status_of).collect();
                Ok(Reply::new(&status))
            }
            CtlRequest::SupDepart(d) => {
                let id: MemberId =
                    required(d.member_id, "member_id")?.parse().map_err(|e| err(ErrCode::BadPayload, e))?;
                let news =
                    self.ring.depart(id).await.map_err(gone)?.map_err(|e| err(ErrCode::BadPayload, e))?;
                tracing::info!(member_id = %id, news, "departure requested through the ctl gateway");
                let _ = out.line(format!("Departure of {id} announced to the ring")).await;
                Ok(Reply::ok())
            }
            CtlRequest::SupRestart(_) => {
                self.restart
                    .try_send(())
                    .or_else(|e| match e {
                        // One restart is already on its way.
                        mpsc::error::TrySendError::Full(()) => Ok(()),
                        closed => Err(closed),
                    })
                    .map_err(|_| err(ErrCode::Internal, "the supervisor is shutting down"))?;
                tracing::info!("restart requested through the ctl gateway");
                let _ = out.line("Restarting the supervisor (same process, same member id)").await;
                Ok(Reply::ok())
            }
            CtlRequest::RingKeyList(_) => {
                let keys = self.ring.status().keys.clone();
                let keys = keys
                    .into_iter()
                    .map(|k| proto::RingKeyInfo { id: k.id, fingerprint: k.fingerprint, primary: k.primary })
                    .collect();
                Ok(Reply::new(&proto::RingKeys { keys }))
            }
            CtlRequest::RingKeyInstall(k) => self.install(&required(k.key_file, "key_file")?).await,
            CtlRequest::RingKeyUse(k) => {
                let id: KeyId = required(k.id, "id")?.parse().map_err(|e| err(ErrCode::BadPayload, e))?;
                self.ring.use_key(id.clone()).await.map_err(gone)?.map_err(|e| err(ErrCode::NotFound, e))?;
                tracing::info!(key = %id, "ring key is now primary");
                Ok(Reply::ok())
            }
            CtlRequest::RingKeyRemove(k) => self.remove(&required(k.id, "id")?).await,
            CtlRequest::RumorInject(r) => {
                let json = required(r.json, "json")?;
                let req: crate::ring::inject::RumorRequest =
                    serde_json::from_str(&json).map_err(|e| err(ErrCode::BadPayload, e))?;
                let me = self.ring.status().id.to_string();
                let rumor = req.into_rumor(&me).map_err(|e| err(ErrCode::InvalidPayload, e))?;
                let news = self
                    .ring
                    .inject(rumor)
                    .await
                    .map_err(gone)?
                    .map_err(|e| err(ErrCode::InvalidPayload, e))?;
                Ok(Reply::new(&proto::RumorInjected { news }))
            }
            CtlRequest::SvcLoad(r) => ctl_svc::load(&self.services, r, &out).await,
            CtlRequest::SvcUnload(r) => ctl_svc::unload(&self.services, r, &out).await,
            CtlRequest::SvcStart(r) => ctl_svc::start(&self.services, r, &out).await,
            CtlRequest::SvcStop(r) => ctl_svc::stop(&self.services, r, &out).await,
            CtlRequest::SvcStatus(r) => ctl_svc::status(&self.services, r, &out).await,
            CtlRequest::SvcValidateCfg(r) => self.groups().validate(r),
            CtlRequest::SvcSetCfg(r) => self.groups().set_cfg(r, &out).await,
            CtlRequest::SvcFilePut(r) => self.groups().file_put(r, &out).await,
            other => Err(err(
                ErrCode::NotSupported,
                format!("{} is not supported by this supervisor yet", other.name()),
            )),
        }
    }

    async fn handle_upload(&self, req: CtlRequest, upload: Upload, out: ReplySink) -> Result<Reply, NetErr> {
        match req {
            CtlRequest::PkgInstall(p) => self.installer.install(p, upload, out).await,
            other => Err(err(ErrCode::NotSupported, format!("{} carries no upload", other.name()))),
        }
    }
}

impl SupCtl {
    fn groups(&self) -> super::ctl_cfg::GroupCtl<'_> {
        super::ctl_cfg::GroupCtl { ring: &self.ring, org: self.org.as_deref() }
    }

    fn status(&self) -> proto::SupStatusReply {
        let c = self.ring.status();
        let json = |v: serde_json::Value| Some(v.to_string());
        proto::SupStatusReply {
            plugins_json: self.plugins.as_ref().and_then(|p| json(p.plugins_json())),
            credentials_json: self.plugins.as_ref().and_then(|p| json(p.credentials_json())),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            ring: c.ring_name.clone(),
            generation: c.members.iter().find(|m| m.ident.id == c.id).map(|m| u64::from(m.ident.generation)),
            services: Vec::new(),
            member_id: c.id.to_string(),
            members: c
                .members
                .iter()
                .map(|m| proto::MemberStatus {
                    member_id: m.ident.id.to_string(),
                    address: m.ident.addr.to_string(),
                    health: m.health.label().to_string(),
                    incarnation: m.incarnation,
                    persistent: Some(m.ident.persistent),
                })
                .collect(),
            encrypted: Some(c.encrypted),
        }
    }

    async fn install(&self, text: &[u8]) -> Result<Reply, NetErr> {
        let file = KeyFile::parse(text).map_err(|e| err(ErrCode::BadPayload, e))?;
        let key = RingKey::try_from(&file).map_err(|e| err(ErrCode::BadPayload, e))?;
        match self.ring.status().ring_name.clone() {
            None => return Err(err(ErrCode::Conflict, KeyringError::Unencrypted)),
            Some(name) if name != key.id.name => {
                return Err(err(
                    ErrCode::InvalidPayload,
                    format!("this ring's keys are named {name:?}; refusing a key named {:?}", key.id.name),
                ));
            }
            Some(_) => {}
        }
        if let Some(cache) = &self.cache {
            cache.write(&file).map_err(|e| err(ErrCode::Conflict, e))?;
        }
        let id = key.id.to_string();
        let added = self.ring.install_key(key).await.map_err(gone)?.map_err(|e| err(ErrCode::Conflict, e))?;
        tracing::info!(key = %id, added, "ring key installed");
        Ok(Reply::new(&proto::RingKeyInstalled { id, added }))
    }

    async fn remove(&self, id: &str) -> Result<Reply, NetErr> {
        let id: KeyId = id.parse().map_err(|e| err(ErrCode::BadPayload, e))?;
        match self.ring.remove_key(id.clone()).await.map_err(gone)? {
            Ok(_) => {}
            Err(e @ KeyringError::NotInstalled(_)) => return Err(err(ErrCode::NotFound, e)),
            Err(e) => return Err(err(ErrCode::Conflict, e)),
        }
        if let Some(cache) = &self.cache {
            cache.remove(KeyKind::SymSecret, &id).map_err(|e| err(ErrCode::Io, e))?;
        }
        tracing::info!(key = %id, "ring key removed");
        Ok(Reply::ok())
    }
}
