//! The services subsystem: one task owns the loaded services (their specs and tasks) and is
//! reached through [`Services`] commands: load, unload, start, stop, status. Specs persist in
//! `{data_path}/specs`; at start every spec comes back to its desired state, reattaching to
//! processes that outlived an earlier supervisor process.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

mod gossip;
mod roles;

use super::backoff::BackoffPolicy;
use super::hooks::{Hook, HookContext, HookOutcome, HookRunner, PluginHooks, Suitability};
use super::package::{PackageError, PackageIdent, PackageMeta, PackageStore};
use super::spec::{BindingMode, DesiredState, ServiceSpec, SpecDir, Topology};
use super::state::Desired;
use super::supervisor::{self, Command, ServiceConfig, ServiceTask, ServiceView};
use super::users;
use super::{config, template};
use crate::groups::ServiceGroup;
use crate::groups::census::Census;
use crate::groups::inbox::{Decision, Payload};
use crate::plugins::Role;
use gossip::GossipLayers;
use roles::{ServiceRole, role_label};

/// Habitat's default when neither the request, the spec nor the package says.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(8);
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SvcError {
    #[error("service {0} is not loaded")]
    NotLoaded(String),
    #[error("service {0} is already loaded; unload it first, or load with --force")]
    AlreadyLoaded(String),
    #[error("no installed package matches {0} (install it with `warren pkg install FILE.hart`)")]
    NotInstalled(String),
    #[error("{0}")]
    Package(#[from] PackageError),
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("the services subsystem has stopped")]
    Stopped,
    /// A credential reference of the config has no value (yet).
    #[error("{0}")]
    Unresolved(String),
    /// Loaded with strict binds that have no alive member yet: it starts once they do.
    #[error("{name} waits for its binds: {}; it starts once each has an alive member", waiting.join(", "))]
    WaitingForBinds { name: String, waiting: Vec<String> },
    /// Loaded with a topology policy that gives this member no role yet: it starts once the
    /// group's election does (Habitat's gate).
    #[error("{name} waits for the election of {group} to give it a role ({why}); it starts then")]
    WaitingForElection { name: String, group: String, why: String },
}

/// `svc load`'s request, after the client's flags are read.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    pub ident: PackageIdent,
    pub group: String,
    pub topology: Topology,
    pub binds: Vec<String>,
    pub binding_mode: BindingMode,
    pub shutdown_timeout: Option<u64>,
    pub health_check_interval: Duration,
    pub hooks_plugin: Option<String>,
    pub force: bool,
}

/// Where `svc start` / `svc stop` send a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Up,
    /// Down, within this shutdown timeout instead of the package's.
    Down(Option<Duration>),
}

impl Want {
    pub fn desired(self) -> Desired {
        match self {
            Want::Up => Desired::Up,
            Want::Down(_) => Desired::Down,
        }
    }
}

/// One loaded service as `svc status` shows it.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub spec: ServiceSpec,
    pub view: ServiceView,
    pub detail: Arc<ServiceDetail>,
    /// With a topology policy: its role and its group's election here.
    pub role: Option<RoleInfo>,
}

/// A policy service's role as its templates last rendered it (kept while an election runs),
/// and its group's election as this member sees it (None: the group elects nothing).
#[derive(Debug, Clone)]
pub struct RoleInfo {
    pub role: &'static str,
    pub leader: Option<String>,
    pub election: Option<crate::election::ElectionView>,
}

/// What a loaded service is made of beyond its spec and its task's view, as the gateway's
/// `/services` shows it: its package, folders, user, environment and the configuration last
/// rendered.
#[derive(Debug, Clone)]
pub struct ServiceDetail {
    pub pkg: Pkg,
    /// `{data_path}/svc/NAME`.
    pub svc_dir: PathBuf,
    /// Who its hooks run as (names; None when the system has none for the ids).
    pub user: Option<String>,
    pub group: Option<String>,
    /// The environment its hooks get.
    pub env: Vec<(String, String)>,
    pub shutdown_timeout: Duration,
    /// `{data_path}/proc/NAME.json`: the running process (pid and start time), for a reattach.
    pub record: PathBuf,
    /// The merged configuration last rendered, credential references as written (never their
    /// values), the group's gossiped layer included; a layer that stops parsing keeps the old
    /// one.
    pub cfg: toml::Table,
}

/// A reply that is itself a receiver: the service's task answers on it, not the manager.
type Answer<T> = oneshot::Sender<Result<oneshot::Receiver<T>, SvcError>>;

enum Request {
    Load(Box<LoadRequest>, oneshot::Sender<Result<watch::Receiver<ServiceView>, SvcError>>),
    Unload(String, Option<Duration>, oneshot::Sender<Result<oneshot::Receiver<()>, SvcError>>),
    Want(String, Want, oneshot::Sender<Result<watch::Receiver<ServiceView>, SvcError>>),
    Status(oneshot::Sender<Vec<ServiceInfo>>),
    Suitability(String, Answer<Suitability>),
    FileUpdated(String, String, Answer<Option<HookOutcome>>),
    /// A service group's gossiped config or file, decided on by the group inbox.
    Gossip(Decision),
    /// `stop`: stop every service (supervisor shutdown); else leave them for a reattach.
    Exit {
        stop: bool,
        done: oneshot::Sender<()>,
    },
}

/// A handle on the services subsystem.
#[derive(Clone)]
pub struct Services {
    tx: mpsc::Sender<Request>,
    groups: watch::Receiver<BTreeSet<String>>,
}

/// Where services live and how they restart.
#[derive(Clone)]
pub struct ServicesOptions {
    pub data_path: PathBuf,
    pub policy: BackoffPolicy,
    /// Templates' `sys`: this host and supervisor (ip, hostname, member_id, ports).
    pub sys: serde_json::Value,
    /// Follows `{data_path}/user/NAME/user.toml`.
    pub files: Option<crate::watch::FileWatch>,
    /// Resolves the credential references among a service's config values (and follows
    /// their rotation). None: config strings are used as written.
    pub plugins: Option<std::sync::Arc<crate::plugins::PluginRuntime>>,
    /// sup.toml's `[services.NAME.config]`: a layer above the package's default.toml.
    pub sup_config: BTreeMap<String, toml::Table>,
    /// Where `--hooks-plugin NAME` is looked up, at load and at each hook (`sup run`: the
    /// plugin runtime's registry). None: no plugin can be bound.
    pub hook_plugins: Option<std::sync::Arc<crate::plugins::PluginRegistry>>,
    /// This supervisor's member id (a hook plugin's context names it).
    pub member_id: String,
    /// `sup run --org`: a service's group is `NAME.GROUP@ORG` across the ring.
    pub org: Option<String>,
    /// The ring's census, for binds (None: no bind is ever satisfied).
    pub census: Option<watch::Receiver<Arc<Census>>>,
    /// The gossiped configs and files the ring held at start, in place before any restored
    /// service first renders.
    pub initial_gossip: Vec<Decision>,
    /// This member's elections: services whose topology policy asks for one take part, and
    /// their roles follow its views (None: no election ever runs).
    pub elections: Option<crate::election::Elections>,
}

impl Services {
    /// Starts the subsystem and brings back every service whose spec is on disk.
    pub fn start(options: ServicesOptions) -> Services {
        let (tx, rx) = mpsc::channel(32);
        let (rotated_tx, rotated) = mpsc::channel(64);
        let (groups_tx, groups) = watch::channel(BTreeSet::new());
        let mut options = options;
        let mut layers = GossipLayers::default();
        for d in std::mem::take(&mut options.initial_gossip) {
            match d.payload {
                Payload::Config(t) => layers.set_config(&d.group, t),
                Payload::File { name, bytes } => layers.add_pending_file(&d.group, name, bytes),
            }
        }
        let manager = Manager {
            options,
            services: BTreeMap::new(),
            epoch: Instant::now(),
            followed: BTreeMap::new(),
            rotated_tx,
            waiting: BTreeMap::new(),
            bound: BTreeMap::new(),
            roles: BTreeMap::new(),
            gossip: layers,
            groups: groups_tx,
        };
        tokio::spawn(manager.run(rx, rotated));
        Services { tx, groups }
    }

    /// The groups (`SVC.GROUP[@ORG]`) of the loaded services, as they change.
    pub fn loaded(&self) -> watch::Receiver<BTreeSet<String>> {
        self.groups.clone()
    }

    /// Hands a group's gossiped config or file to its services (without waiting for them).
    pub async fn gossip(&self, decision: Decision) -> Result<(), SvcError> {
        self.tx.send(Request::Gossip(decision)).await.map_err(|_| SvcError::Stopped)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, SvcError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| SvcError::Stopped)?;
        rx.await.map_err(|_| SvcError::Stopped)
    }

    pub async fn load(&self, req: LoadRequest) -> Result<watch::Receiver<ServiceView>, SvcError> {
        self.ask(|r| Request::Load(Box::new(req), r)).await?
    }

    /// Stops the service (within `timeout`, else the package's shutdown timeout) and forgets
    /// it; the receiver resolves once it is down.
    pub async fn unload(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<oneshot::Receiver<()>, SvcError> {
        self.ask(|r| Request::Unload(name.to_string(), timeout, r)).await?
    }

    pub async fn want(&self, name: &str, want: Want) -> Result<watch::Receiver<ServiceView>, SvcError> {
        self.ask(|r| Request::Want(name.to_string(), want, r)).await?
    }

    pub async fn status(&self) -> Result<Vec<ServiceInfo>, SvcError> {
        self.ask(Request::Status).await
    }

    /// The service's suitability for leadership, from its suitability hook (script or bound
    /// plugin); `Ok(None)`: it has none. For elections.
    pub async fn suitability(&self, name: &str) -> Result<Suitability, SvcError> {
        let answer = self.ask(|r| Request::Suitability(name.to_string(), r)).await??;
        answer.await.map_err(|_| SvcError::NotLoaded(name.to_string()))
    }

    /// Runs the service's file-updated hook (script or bound plugin) for `file`, a file it
    /// consumes that an upload changed; `Ok(None)`: it has none. For config-file uploads.
    pub async fn file_updated(&self, name: &str, file: &str) -> Result<Option<HookOutcome>, SvcError> {
        let answer = self.ask(|r| Request::FileUpdated(name.to_string(), file.to_string(), r)).await??;
        answer.await.map_err(|_| SvcError::NotLoaded(name.to_string()))
    }

    /// Ends the subsystem: `stop` stops every service first; otherwise they keep running.
    pub async fn exit(&self, stop: bool) {
        let _ = self.ask(|done| Request::Exit { stop, done }).await;
    }
}

struct Entry {
    spec: ServiceSpec,
    task: ServiceTask,
    detail: Arc<ServiceDetail>,
    /// The merged config as TOML (credentials resolved), as a bound hook plugin sees it.
    config: watch::Sender<String>,
}

/// What a render changed (paths relative to `hooks/` and `config/`), the configuration it
/// rendered (references unresolved), and the merged config as TOML (references resolved: what
/// a bound hook plugin gets).
struct Rendered {
    hooks: Vec<PathBuf>,
    config: Vec<PathBuf>,
    cfg: toml::Table,
    toml: String,
}

/// A service ready to start: its task's config, what the gateway shows of it, and the sender
/// of its config TOML.
struct Prepared {
    config: ServiceConfig,
    detail: ServiceDetail,
    toml: watch::Sender<String>,
}

struct Manager {
    options: ServicesOptions,
    services: BTreeMap<String, Entry>,
    epoch: Instant,
    /// Per service, the credential references its config uses, each followed by a task that
    /// sends the service's name to `rotated_tx` when the value changes.
    followed: BTreeMap<String, BTreeMap<String, tokio::task::JoinHandle<()>>>,
    rotated_tx: mpsc::Sender<String>,
    /// Services with strict binds not satisfied yet: started once the census satisfies them.
    waiting: BTreeMap<String, ServiceSpec>,
    /// What each running service's templates last saw of its binds.
    bound: BTreeMap<String, serde_json::Value>,
    /// The services loaded with a topology policy: its last decision and the role applied.
    roles: BTreeMap<String, ServiceRole>,
    /// The gossip layer of each group and the files known at start.
    gossip: GossipLayers,
    /// Publishes the loaded services' groups (the group inbox follows them).
    groups: watch::Sender<BTreeSet<String>>,
}

/// How long a load waits for the credentials its config references to resolve.
const CREDENTIAL_WAIT: Duration = Duration::from_secs(10);

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SvcError {
    let what = what.into();
    move |source| SvcError::Io { what, source }
}

impl Manager {
    fn specs(&self) -> SpecDir {
        SpecDir::new(&self.options.data_path)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Request>, mut rotated: mpsc::Receiver<String>) {
        let user_dir = self.options.data_path.join("user");
        let (_subscriber, mut changes) = match &self.options.files {
            Some(files) => {
                let (sub, changes) = files.subscribe_tokio(crate::watch::Spec {
                    name: "services (user.toml)",
                    debounce: Duration::from_millis(100),
                    max_delay: Duration::from_secs(1),
                    ignore_reads: true,
                });
                let watched =
                    crate::fsutil::create_private_dir(&user_dir).map_err(|e| e.to_string()).and_then(|()| {
                        sub.watch(&user_dir, crate::watch::RecursiveMode::Recursive)
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = watched {
                    tracing::warn!(dir = %user_dir.display(), error = %e, "user.toml files are not followed");
                }
                (Some(sub), Some(changes))
            }
            None => (None, None),
        };
        self.restore().await;
        let mut census = self.options.census.clone();
        let mut views = self.options.elections.as_ref().map(|e| e.views());
        // Files known at start were written as their services were prepared.
        self.gossip.clear_pending();
        self.publish_groups();
        loop {
            tokio::select! {
                Some(name) = rotated.recv() => self.credential_changed(&name).await,
                Some(()) = census_changed(&mut census) => {
                    self.binds_changed().await;
                    self.roles_changed().await;
                }
                Some(()) = census_changed(&mut views) => self.roles_changed().await,
                req = rx.recv() => match req {
                    Some(req) => {
                        if !self.request(req).await {
                            return;
                        }
                    }
                    None => return,
                },
                Some(batch) = next_batch(&mut changes) => {
                    let names: std::collections::BTreeSet<String> = if batch.rescan {
                        self.services.keys().cloned().collect()
                    } else {
                        batch
                            .paths
                            .iter()
                            .filter_map(|p| p.strip_prefix(&user_dir).ok()?.components().next())
                            .map(|c| c.as_os_str().to_string_lossy().into_owned())
                            .collect()
                    };
                    for name in names {
                        self.rerender(&name).await;
                    }
                }
            }
        }
    }

    /// One request; false once the subsystem is to end.
    async fn request(&mut self, req: Request) -> bool {
        match req {
            Request::Load(r, reply) => {
                let _ = reply.send(self.load(*r).await);
            }
            Request::Unload(name, timeout, reply) => {
                let _ = reply.send(self.unload(&name, timeout).await);
            }
            Request::Want(name, want, reply) => {
                let _ = reply.send(self.want(&name, want).await);
            }
            Request::Suitability(name, reply) => {
                let _ = reply.send(self.ask_task(&name, Command::Suitability).await);
            }
            Request::FileUpdated(name, file, reply) => {
                let _ = reply.send(self.ask_task(&name, |done| Command::FileUpdated { file, done }).await);
            }
            Request::Gossip(decision) => self.gossiped(decision).await,
            Request::Status(reply) => {
                let views =
                    self.options.elections.as_ref().map(|e| e.views().borrow().clone()).unwrap_or_default();
                let all = self
                    .services
                    .iter()
                    .map(|(name, e)| ServiceInfo {
                        spec: e.spec.clone(),
                        view: e.task.view.borrow().clone(),
                        detail: e.detail.clone(),
                        role: self.roles.get(name).map(|r| RoleInfo {
                            role: role_label(r.applied.as_ref().map_or(Role::None, |a| a.0)),
                            leader: r.applied.as_ref().and_then(|a| a.1.clone()),
                            election: views.get(&r.group).cloned(),
                        }),
                    })
                    .collect();
                let _ = reply.send(all);
            }
            Request::Exit { stop, done } => {
                let mut waits = Vec::new();
                for (_, e) in std::mem::take(&mut self.services) {
                    let (tx, rx) = oneshot::channel();
                    if e.task.commands.send(Command::Exit { stop, done: tx }).await.is_ok() {
                        waits.push(rx);
                    }
                }
                for w in waits {
                    let _ = w.await;
                }
                self.publish_groups();
                let _ = done.send(());
                return false;
            }
        }
        true
    }

    /// Every spec on disk: started (or reattached) towards its desired state. A bad spec is
    /// logged and skipped; the others run.
    async fn restore(&mut self) {
        // One wait for every service's credentials, not one after another.
        let deadline = tokio::time::Instant::now() + CREDENTIAL_WAIT;
        for spec in self.specs().load_all() {
            match spec {
                Ok(spec) => {
                    let name = spec.name().to_string();
                    if let Some(waiting) = self.unsatisfied(&spec) {
                        tracing::warn!(service = %name, waiting = ?waiting, "waiting for its binds to start");
                        self.waiting.insert(name, spec);
                        continue;
                    }
                    match self.launch(spec, deadline).await {
                        Ok(_) => {}
                        // It starts (or reattaches what still runs) once they resolve.
                        Err(e @ SvcError::Unresolved(_)) => {
                            tracing::warn!(service = %name, error = %e, "waiting for its credentials to start the service")
                        }
                        Err(e) => {
                            tracing::error!(service = %name, error = %e, "cannot start the service from its spec");
                            self.stop_unsupervised(&name);
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "skipping a spec"),
            }
        }
    }

    async fn load(&mut self, req: LoadRequest) -> Result<watch::Receiver<ServiceView>, SvcError> {
        validate_group(&req.group)?;
        let installed = Pkg::find(&self.options.data_path, &req.ident)?;
        let name = installed.ident.name.clone();
        if self.services.contains_key(&name) && !req.force {
            return Err(SvcError::AlreadyLoaded(name));
        }
        if let Some(plugin) = &req.hooks_plugin {
            self.check_hooks_plugin(plugin)?;
        }
        let spec = ServiceSpec {
            topology: req.topology,
            binds: req.binds,
            binding_mode: req.binding_mode,
            shutdown_timeout: req.shutdown_timeout,
            hooks_plugin: req.hooks_plugin,
            ..ServiceSpec::new(installed.ident.to_string(), req.group, req.health_check_interval)
        };
        for bind in &spec.binds {
            super::binds::parse(bind).map_err(SvcError::Invalid)?;
        }
        let policy = self.topology_policy(&spec)?;
        if !self.services.contains_key(&name)
            && let Some(waiting) = self.unsatisfied(&spec)
        {
            // Habitat's strict mode: the spec stays, the service starts once its binds can be met.
            self.specs().save(&spec).map_err(|e| SvcError::Invalid(e.to_string()))?;
            tracing::info!(service = %name, waiting = ?waiting, "loaded; waiting for its binds");
            self.waiting.insert(name.clone(), spec);
            return Err(SvcError::WaitingForBinds { name, waiting });
        }
        self.waiting.remove(&name);
        // Its credentials first, while a service it replaces still runs.
        let wait = tokio::time::Instant::now() + CREDENTIAL_WAIT;
        let credentials = self.await_credentials(&installed, wait).await;
        if let Err(e) = credentials {
            if !self.services.contains_key(&name) {
                // Nothing else follows them: a failed load is not retried.
                self.unfollow(&name);
            }
            return Err(e);
        }
        // A forced load replaces the running one, once it has stopped.
        let replaced = match self.services.remove(&name) {
            Some(old) => {
                let (tx, rx) = oneshot::channel();
                if old.task.commands.send(Command::Exit { stop: true, done: tx }).await.is_ok() {
                    let _ = rx.await;
                }
                Some(old.spec)
            }
            None => None,
        };
        // Nothing is written for a service that cannot be prepared (bad template, user, a
        // credential that does not resolve...); a service it was to replace comes back.
        self.set_policy(&name, &spec, policy);
        let prepared = self.prepare(&installed, &spec).and_then(|p| {
            self.specs().save(&spec).map_err(|e| SvcError::Invalid(e.to_string()))?;
            Ok(p)
        });
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                if let Some(old) = replaced {
                    match self.launch(old, tokio::time::Instant::now() + CREDENTIAL_WAIT).await {
                        Ok(_) => {
                            tracing::info!(service = %name, "the replacement failed; the loaded service runs again")
                        }
                        Err(e) => {
                            tracing::error!(service = %name, error = %e, "the replacement failed and the loaded service cannot start again")
                        }
                    }
                }
                return Err(e);
            }
        };
        let view = self.start_task(spec, prepared, &installed);
        tracing::info!(service = %name, "loaded");
        if let Some(r) = self.roles.get(&name).filter(|r| r.gated) {
            let views = self.options.elections.as_ref().map(|e| e.views().borrow().clone());
            let why = match views.as_ref().and_then(|v| v.get(&r.group)) {
                Some(v) => v.reason.to_string(),
                None => "the election has not started yet".to_string(),
            };
            return Err(SvcError::WaitingForElection { name, group: r.group.clone(), why });
        }
        Ok(view)
    }

    /// `--hooks-plugin NAME` must name a loaded lifecycle-hook plugin.
    fn check_hooks_plugin(&self, name: &str) -> Result<(), SvcError> {
        let bad = |why: String| SvcError::Invalid(format!("--hooks-plugin {name}: {why}"));
        let Some(registry) = &self.options.hook_plugins else {
            return Err(bad("this supervisor runs without plugins".into()));
        };
        match registry.hook(name) {
            Ok(_) => Ok(()),
            Err(crate::plugins::PluginError::NotFound(_)) => {
                let loaded: Vec<String> = registry
                    .status()
                    .into_iter()
                    .filter(|s| s.state != crate::plugins::PluginState::Failed)
                    .filter(|s| s.world == Some(crate::plugins::World::LifecycleHook))
                    .filter_map(|s| s.name)
                    .collect();
                let loaded = if loaded.is_empty() { "none".to_string() } else { loaded.join(", ") };
                Err(bad(format!(
                    "no lifecycle-hook plugin of that name is loaded (loaded lifecycle-hook plugins: {loaded}; \
                     plugin folder {})",
                    registry.settings().plugin_dir.display()
                )))
            }
            Err(e) => Err(bad(e.to_string())),
        }
    }

    /// Sends a command carrying a reply channel to a service's task; the receiver is the answer.
    async fn ask_task<T>(
        &self,
        name: &str,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<oneshot::Receiver<T>, SvcError> {
        let entry = self.services.get(name).ok_or_else(|| SvcError::NotLoaded(name.to_string()))?;
        let (tx, rx) = oneshot::channel();
        entry.task.commands.send(make(tx)).await.map_err(|_| SvcError::NotLoaded(name.to_string()))?;
        Ok(rx)
    }

    /// A process an earlier supervisor left running for a spec that cannot be launched now
    /// would run unwatched: stop it (TERM to its group, KILL after the default timeout).
    fn stop_unsupervised(&self, name: &str) {
        let record = self.options.data_path.join("proc").join(format!("{name}.json"));
        let Some(p) = supervisor::find_running(&record) else { return };
        tracing::warn!(service = %name, pid = p.pid, "stopping the process an earlier supervisor left running: it cannot be supervised");
        tokio::spawn(async move {
            let _ = p.signal_group(libc::SIGTERM);
            let _ = p.signal_group(libc::SIGCONT);
            if tokio::time::timeout(DEFAULT_SHUTDOWN_TIMEOUT, p.wait()).await.is_err() {
                let _ = p.signal_group(libc::SIGKILL);
                let _ = p.wait().await;
            }
            super::process::Process::kill_leftovers(p.pid);
            let _ = std::fs::remove_file(&record);
        });
    }

    /// Prepares the service's directories and hooks and starts its task.
    async fn launch(
        &mut self,
        spec: ServiceSpec,
        credentials_by: tokio::time::Instant,
    ) -> Result<watch::Receiver<ServiceView>, SvcError> {
        let ident: PackageIdent = spec.ident.parse().map_err(SvcError::Package)?;
        let installed = Pkg::find(&self.options.data_path, &ident)?;
        self.await_credentials(&installed, credentials_by).await?;
        let policy = self.topology_policy(&spec)?;
        self.set_policy(&installed.ident.name, &spec, policy);
        let prepared = self.prepare(&installed, &spec)?;
        Ok(self.start_task(spec, prepared, &installed))
    }

    fn start_task(
        &mut self,
        spec: ServiceSpec,
        prepared: Prepared,
        installed: &Pkg,
    ) -> watch::Receiver<ServiceView> {
        let Prepared { config, detail, toml } = prepared;
        let name = installed.ident.name.clone();
        let record = config.record.clone();
        let running = supervisor::find_running(&record);
        // Habitat's gate: a service with a policy starts once the policy gives it a role. One
        // an earlier supervisor left running keeps running: its role comes with the election.
        if running.is_some()
            && let Some(r) = self.roles.get_mut(&name)
        {
            r.gated = false;
        }
        let desired = match self.roles.get(&name) {
            Some(r) if r.gated => {
                tracing::info!(service = %name, group = %r.group, "waiting for the group's election to give this member a role");
                Desired::Down
            }
            _ => spec.desired_state.into(),
        };
        let task = supervisor::start(config, desired, running, self.epoch);
        let view = task.view.clone();
        self.services.insert(name, Entry { spec, task, detail: Arc::new(detail), config: toml });
        self.publish_groups();
        view
    }

    fn prepare(&self, pkg: &Pkg, spec: &ServiceSpec) -> Result<Prepared, SvcError> {
        let name = &pkg.ident.name;
        let svc_dir = self.options.data_path.join("svc").join(name);
        let (user, ids) = service_user(pkg)?;
        if ids.is_some() {
            // The service's user must reach its own directory: the data path and `svc/` become
            // passable (0711) but not listable; everything of the supervisor's inside stays
            // 0600 / 0700 and root's.
            for dir in [self.options.data_path.clone(), self.options.data_path.join("svc")] {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
                    .map_err(io(format!("chmod {}", dir.display())))?;
            }
        }
        if let Some((uid, gid)) = ids {
            passable(&self.options.data_path, uid, gid, &pkg.svc_user())?;
        }
        // What the supervisor writes (the service folder, rendered hooks and config, logs)
        // stays the supervisor's, readable by the service's group: root never writes where the
        // service could plant a link. Only data/, files/ and var/ belong to the service.
        for sub in ["", "config", "hooks", "logs", "data", "files", "var"] {
            let dir = if sub.is_empty() { svc_dir.clone() } else { svc_dir.join(sub) };
            crate::fsutil::create_private_dir(&dir).map_err(io(format!("creating {}", dir.display())))?;
            let meta = std::fs::symlink_metadata(&dir).map_err(io(format!("reading {}", dir.display())))?;
            if !meta.is_dir() {
                return Err(SvcError::Invalid(format!("{} is not a directory (a link?)", dir.display())));
            }
            let Some((uid, gid)) = ids else { continue };
            let owned = matches!(sub, "data" | "files" | "var");
            let (owner, mode) = if owned { (uid, 0o700) } else { (0, 0o750) };
            std::os::unix::fs::lchown(&dir, Some(owner), Some(gid))
                .map_err(io(format!("chown {}", dir.display())))?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                .map_err(io(format!("chmod {}", dir.display())))?;
        }
        self.write_pending_files(name, spec, &svc_dir.join("files"));
        let run = pkg.run_source();
        if !run.is_file() {
            return Err(SvcError::Invalid(format!(
                "package {} has no run hook ({})",
                pkg.ident,
                run.display()
            )));
        }
        let rendered = self.render(pkg, spec, user.as_ref())?;
        let group = format!("{name}.{}", spec.group);
        let scripts = HookContext {
            hooks_dir: svc_dir.join("hooks"),
            logs_dir: svc_dir.join("logs"),
            cwd: svc_dir.clone(),
            env: environment(pkg, &svc_dir, &group, user.as_ref()),
            ids,
        };
        let (toml, toml_rx) = watch::channel(rendered.toml);
        let plugin = spec.hooks_plugin.as_ref().map(|plugin| PluginHooks {
            name: plugin.clone(),
            registry: self.options.hook_plugins.clone(),
            context: self.hook_context(pkg, spec, &svc_dir),
            config: toml_rx,
        });
        let hooks = HookRunner { scripts, plugin };
        let proc_dir = self.options.data_path.join("proc");
        crate::fsutil::create_private_dir(&proc_dir)
            .map_err(io(format!("creating {}", proc_dir.display())))?;
        let config = ServiceConfig {
            name: name.clone(),
            group,
            ident: pkg.ident.to_string(),
            hooks,
            record: proc_dir.join(format!("{name}.json")),
            fifo_base: proc_dir.join(name),
            shutdown_signal: pkg.shutdown_signal(),
            shutdown_timeout: spec
                .shutdown_timeout
                .map(Duration::from_secs)
                .or(pkg.shutdown_timeout())
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            policy: self.options.policy,
            health_interval: Duration::new(spec.health_check_interval.secs, spec.health_check_interval.nanos)
                .max(Duration::from_secs(1)),
        };
        let gid = ids.map(|(_, gid)| gid).or(user.as_ref().map(|u| u.gid));
        let lossy = |s: &std::ffi::OsString| s.to_string_lossy().into_owned();
        let detail = ServiceDetail {
            pkg: pkg.clone(),
            svc_dir,
            user: user.map(|u| u.name),
            group: gid.and_then(users::group_name),
            env: config.hooks.scripts.env.iter().map(|(k, v)| (lossy(k), lossy(v))).collect(),
            shutdown_timeout: config.shutdown_timeout,
            record: config.record.clone(),
            cfg: rendered.cfg,
        };
        Ok(Prepared { config, detail, toml })
    }

    /// What a bound hook plugin is told about the service, but its config.
    fn hook_context(&self, pkg: &Pkg, spec: &ServiceSpec, svc_dir: &Path) -> crate::plugins::ServiceContext {
        let id = &pkg.ident;
        let path = |sub: &str| svc_dir.join(sub).display().to_string();
        crate::plugins::ServiceContext {
            service: id.name.clone(),
            group: spec.group.clone(),
            config_toml: String::new(),
            ident: crate::plugins::PackageIdent {
                origin: id.origin.clone(),
                name: id.name.clone(),
                version: id.version.clone().unwrap_or_default(),
                release: id.release.clone().unwrap_or_default(),
            },
            member_id: self.options.member_id.clone(),
            paths: crate::plugins::ServicePaths {
                svc: svc_dir.display().to_string(),
                config: path("config"),
                data: path("data"),
                files: path("files"),
                var: path("var"),
                logs: path("logs"),
            },
        }
    }

    /// Renders the package's hooks and `config/` into the service's directory from its
    /// layered configuration; returns what changed.
    fn render(
        &self,
        pkg: &Pkg,
        spec: &ServiceSpec,
        user: Option<&users::User>,
    ) -> Result<Rendered, SvcError> {
        let name = &pkg.ident.name;
        let svc_dir = self.options.data_path.join("svc").join(name);
        // What the gateway shows is the config as written: a credential reference, never its
        // value.
        let group = self.group_of(name, spec);
        let layers = self.layers(pkg)?;
        let cfg =
            self.with_credentials(name, gossip::with_layer(layers.clone(), self.gossip.layer(&group)))?;
        // The gossip layer's values as they are (Habitat's /services and exported keys show
        // them); its escape is only for rendering.
        let written = gossip::with_layer(layers, self.gossip.raw(&group));
        let toml =
            toml::to_string(&cfg).map_err(|e| SvcError::Invalid(format!("services.{name}.config: {e}")))?;
        let data = self.template_data(pkg, spec, &svc_dir, cfg, user);
        let hb = template::registry();
        let invalid = |e: template::TemplateError| SvcError::Invalid(e.to_string());
        let mut extra = Vec::new();
        if !pkg.dir.join("hooks/run").is_file() {
            // Habitat's `run` at the package root (pkg_svc_run).
            extra.push((pkg.dir.join("run"), PathBuf::from("run")));
        }
        let hooks =
            template::render_dir(&hb, &pkg.dir.join("hooks"), &svc_dir.join("hooks"), &data, 0o755, &extra)
                .map_err(invalid)?;
        let config =
            template::render_dir(&hb, &pkg.dir.join("config"), &svc_dir.join("config"), &data, 0o640, &[])
                .map_err(invalid)?;
        Ok(Rendered { hooks, config, cfg: written, toml })
    }

    /// The service's configuration layers merged, credential references as written.
    fn layers(&self, pkg: &Pkg) -> Result<toml::Table, SvcError> {
        let name = &pkg.ident.name;
        let var = config::env_var(name);
        // A package named like one of warren's own settings (ring-key → WARREN_RING_KEY) must
        // not read that secret into its config.
        let env = if config::RESERVED_ENV.contains(&var.as_str()) {
            tracing::warn!(service = %name, var = %var, "not read as a config layer: it is one of warren's own settings");
            None
        } else {
            std::env::var(&var).ok()
        };
        config::layered(
            &pkg.dir,
            self.options.sup_config.get(name),
            env.as_deref().map(|v| (var.as_str(), v)),
            &config::user_toml(&self.options.data_path, name),
        )
        .map_err(|e| SvcError::Invalid(e.to_string()))
    }

    /// Whether `scheme` is one `[credentials]` routes to a plugin (only those make a config
    /// string a reference).
    fn routed(&self) -> impl Fn(&str) -> bool + '_ {
        move |scheme: &str| {
            self.options
                .plugins
                .as_ref()
                .is_some_and(|p| p.registry.settings().credentials.contains_key(scheme))
        }
    }

    /// Follows every credential reference of the service's config (a change re-renders it, or
    /// starts a spec that could not start for want of a value) and waits, until `deadline`,
    /// until each has a value. The manager waits meanwhile: only references that do not
    /// resolve make that long.
    async fn await_credentials(&mut self, pkg: &Pkg, deadline: tokio::time::Instant) -> Result<(), SvcError> {
        let Some(plugins) = self.options.plugins.clone() else { return Ok(()) };
        let name = pkg.ident.name.clone();
        let refs = config::references(&self.layers(pkg)?, &format!("services.{name}.config"), &self.routed());
        let followed = self.followed.entry(name.clone()).or_default();
        for (label, reference) in &refs {
            if followed.contains_key(reference) {
                continue;
            }
            let mut rx = plugins.subscribe(label, reference);
            rx.borrow_and_update();
            let (tx, service) = (self.rotated_tx.clone(), name.clone());
            let task = tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    if tx.send(service.clone()).await.is_err() {
                        return;
                    }
                }
            });
            followed.insert(reference.clone(), task);
        }
        for (label, reference) in refs {
            let mut rx = plugins.subscribe(&label, &reference);
            let got = tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await;
            if !matches!(got, Ok(Ok(_))) {
                let why = plugins
                    .resolver
                    .status()
                    .into_iter()
                    .find(|s| s.reference == reference)
                    .and_then(|s| s.last_error)
                    .unwrap_or_else(|| format!("no value within {CREDENTIAL_WAIT:?}"));
                return Err(SvcError::Unresolved(format!("{label}: {reference} does not resolve ({why})")));
            }
        }
        Ok(())
    }

    /// `cfg` with its credential references replaced by their current values.
    fn with_credentials(&self, name: &str, cfg: toml::Table) -> Result<toml::Table, SvcError> {
        // Without plugins nothing is routed, but the `literal:` escape still comes off.
        let current = |r: &str| {
            let plugins = self.options.plugins.as_ref()?;
            plugins.resolver.current(r).map(|v| v.expose().to_string())
        };
        config::resolve(&cfg, &self.routed(), &current).map_err(|reference| {
            SvcError::Unresolved(format!("services.{name}.config: {reference} has no value yet"))
        })
    }

    /// Stops following the service's credential references.
    fn unfollow(&mut self, name: &str) {
        for (_, task) in self.followed.remove(name).unwrap_or_default() {
            task.abort();
        }
    }

    /// A credential the service's config references has a new value: render again (the
    /// reconfigure hook or a restart follows), or start a service whose spec could not start
    /// for want of a value (when the supervisor started).
    async fn credential_changed(&mut self, name: &str) {
        if self.services.contains_key(name) {
            tracing::info!(service = %name, "a credential of its config changed; rendering again");
            self.rerender(name).await;
            return;
        }
        let spec = self.specs().load_all().into_iter().flatten().find(|s| s.name() == name);
        if let Some(spec) = spec {
            match self.launch(spec, tokio::time::Instant::now() + CREDENTIAL_WAIT).await {
                Ok(_) => tracing::info!(service = %name, "its credentials resolve now; started"),
                Err(e) => tracing::warn!(service = %name, error = %e, "still cannot start"),
            }
        }
    }

    fn template_data(
        &self,
        pkg: &Pkg,
        spec: &ServiceSpec,
        svc_dir: &Path,
        cfg: toml::Table,
        user: Option<&users::User>,
    ) -> serde_json::Value {
        let id = &pkg.ident;
        let path = |sub: &str| svc_dir.join(sub).display().to_string();
        serde_json::json!({
            "cfg": serde_json::to_value(&cfg).unwrap_or_default(),
            "pkg": {
                "ident": id.to_string(),
                "origin": id.origin,
                "name": id.name,
                "version": id.version,
                "release": id.release,
                "path": pkg.dir.display().to_string(),
                "svc_path": svc_dir.display().to_string(),
                "svc_config_path": path("config"),
                "svc_data_path": path("data"),
                "svc_files_path": path("files"),
                "svc_var_path": path("var"),
                "svc_user": user.map(|u| u.name.clone()),
                "svc_group": pkg.svc_group(),
            },
            "svc": self.svc_data(&id.name, spec),
            "sys": self.options.sys,
            "bind": self.bind_data(spec).0,
        })
    }

    /// `user.toml` of a service changed: render again; a changed run or init hook restarts the
    /// service, a changed config runs its reconfigure hook (or restarts it when it has none).
    async fn rerender(&mut self, name: &str) {
        self.rerender_for(name, Rerender::Changed).await
    }

    async fn rerender_for(&mut self, name: &str, why: Rerender) {
        let Some(spec) = self.services.get(name).map(|e| e.spec.clone()) else { return };
        let Ok(pkg) = spec
            .ident
            .parse()
            .map_err(SvcError::Package)
            .and_then(|i| Pkg::find(&self.options.data_path, &i))
        else {
            return;
        };
        // New references (a user.toml naming a secret) are followed, and waited for.
        if let Err(e) = self.await_credentials(&pkg, tokio::time::Instant::now() + CREDENTIAL_WAIT).await {
            tracing::error!(service = %name, error = %e, "the new configuration does not resolve; keeping the old one");
            return;
        }
        let user = service_user(&pkg).ok().and_then(|(u, _)| u);
        let rendered = match self.render(&pkg, &spec, user.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(service = %name, error = %e, "the new configuration does not render; keeping the old one");
                return;
            }
        };
        let restart_hooks = rendered.hooks.iter().any(|h| h == Path::new("run") || h == Path::new("init"));
        let Some(entry) = self.services.get_mut(name) else { return };
        Arc::make_mut(&mut entry.detail).cfg = rendered.cfg;
        // A bound plugin reads the config itself: a changed config is news to it even when no
        // rendered file changed, and it serves reconfigure whatever the package has.
        let plugin = spec.hooks_plugin.is_some();
        let toml_changed = entry.config.send_if_modified(|t| {
            let changed = *t != rendered.toml;
            if changed {
                t.clone_from(&rendered.toml);
            }
            changed
        });
        let reconfigures = plugin || pkg.dir.join("hooks/reconfigure").is_file();
        let command = if why == Rerender::Quiet {
            // Rendered before the service first starts: nothing runs yet to tell.
            None
        } else if restart_hooks {
            Some(Command::Restart)
        } else if !rendered.config.is_empty() || !rendered.hooks.is_empty() {
            Some(if plugin || pkg.dir.join("hooks/reconfigure").is_file() {
                Command::Reconfigure
            } else {
                Command::Restart
            })
        } else if (plugin && toml_changed) || (why == Rerender::Role && reconfigures) {
            // A new role is news to the service even when no rendered file uses it.
            Some(Command::Reconfigure)
        } else {
            None
        };
        if let Some(c) = command {
            tracing::info!(service = %name, changed = ?rendered.config, hooks = ?rendered.hooks, "configuration changed: {}", if matches!(c, Command::Restart) { "restarting" } else { "running reconfigure" });
            // Never block the manager on a busy service: a full queue already holds a restart
            // or a reconfigure, which will render what is current.
            if let Some(entry) = self.services.get(name) {
                let _ = entry.task.commands.try_send(c);
            }
        }
    }

    /// `--topology`: the topology-policy plugin it names. `standalone` without such a plugin
    /// is the built-in standalone (None); any other policy must be loaded.
    fn topology_policy(
        &self,
        spec: &ServiceSpec,
    ) -> Result<Option<crate::plugins::TopologyHandle>, SvcError> {
        let flag = spec.topology.as_str();
        if !crate::groups::name::is_name(flag) {
            return Err(SvcError::Invalid(format!("--topology {flag:?}: not a policy name")));
        }
        let policy = crate::plugins::policy_for(flag);
        match (&spec.topology, &self.options.hook_plugins) {
            (Topology::Standalone, None) => Ok(None),
            (Topology::Standalone, Some(r)) => Ok(r.topology_named(policy).ok()),
            (_, None) => Err(SvcError::Invalid(format!(
                "--topology {flag}: needs the topology-policy plugin {policy:?}, and this supervisor runs without plugins"
            ))),
            (_, Some(r)) => r
                .topology_named(policy)
                .map(Some)
                .map_err(|e| SvcError::Invalid(format!("--topology {flag}: {e}"))),
        }
    }

    /// Records the service's policy and asks it once, so the first render knows the role.
    fn set_policy(&mut self, name: &str, spec: &ServiceSpec, policy: Option<crate::plugins::TopologyHandle>) {
        let Some(policy) = policy else {
            self.roles.remove(name);
            return;
        };
        let group = self.group_of(name, spec);
        let mut role = ServiceRole::new(group, policy);
        if let Some(old) = self.roles.remove(name) {
            role.applied = old.applied;
            role.elect = old.elect;
            role.suitability = old.suitability;
        }
        self.decide(&mut role);
        let now = (role.role(&self.options.member_id), role.leader());
        role.gated = now.0 == Role::None && role.applied.is_none();
        if now.0 != Role::None {
            role.applied = Some(now);
        }
        self.roles.insert(name.to_string(), role);
    }

    /// Asks a service's policy about the group as this member sees it now, and joins the
    /// election when it says so.
    fn decide(&self, role: &mut ServiceRole) {
        let census = self.options.census.as_ref().map(|c| c.borrow().clone()).unwrap_or_default();
        let views = self.options.elections.as_ref().map(|e| e.views().borrow().clone()).unwrap_or_default();
        let view = roles::group_view(
            &census,
            &role.group,
            &self.options.member_id,
            views.get(&role.group),
            role.suitability,
        );
        role.decide(&view);
        if role.elect
            && let Some(e) = &self.options.elections
        {
            e.set(&role.group, Some(role.suitability));
        }
    }

    /// The census or an election changed: ask each policy again. A new role (with a new
    /// leader) renders again and runs reconfigure; a gated service starts with its first role.
    /// No role (an election in progress, no quorum) changes nothing: hooks are held.
    async fn roles_changed(&mut self) {
        let names: Vec<String> = self.roles.keys().cloned().collect();
        for name in names {
            let Some(mut role) = self.roles.remove(&name) else { continue };
            self.decide(&mut role);
            let now = (role.role(&self.options.member_id), role.leader());
            let apply = now.0 != Role::None && role.applied.as_ref() != Some(&now);
            let was_gated = role.gated;
            if apply {
                tracing::info!(
                    service = %name,
                    group = %role.group,
                    leader = now.1.as_deref().unwrap_or("none"),
                    "role: {}", role_label(now.0)
                );
                role.applied = Some(now);
                role.gated = false;
            }
            let group = role.group.clone();
            self.roles.insert(name.clone(), role);
            if !apply {
                continue;
            }
            if was_gated {
                self.rerender_for(&name, Rerender::Quiet).await;
                let Some(entry) = self.services.get(&name) else { continue };
                let _ = entry.task.commands.send(Command::Want(entry.spec.desired_state.into())).await;
                tracing::info!(service = %name, "its group's election gave it a role; started");
                self.ask_suitability(&name, group);
            } else {
                self.rerender_for(&name, Rerender::Role).await;
            }
        }
    }

    /// The suitability hook's answer goes to the election (for the next term it starts).
    fn ask_suitability(&self, name: &str, group: String) {
        let (Some(entry), Some(elections)) = (self.services.get(name), self.options.elections.clone()) else {
            return;
        };
        let commands = entry.task.commands.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::Suitability(tx)).await.is_err() {
                return;
            }
            match rx.await {
                Ok(Some(Ok(s))) => elections.update_suitability(&group, s),
                Ok(Some(Err(e))) => tracing::warn!(service = %name, error = %e, "no suitability; 0 is used"),
                _ => {}
            }
        });
    }

    /// Templates' `svc`: Habitat's names, with the group's members, leader and this member's role.
    fn svc_data(&self, name: &str, spec: &ServiceSpec) -> serde_json::Value {
        let group = self.group_of(name, spec);
        let census = self.options.census.as_ref().map(|c| c.borrow().clone());
        let views = self.options.elections.as_ref().map(|e| e.views().borrow().clone());
        let standalone = (Role::Standalone, None);
        let applied = match self.roles.get(name) {
            Some(r) => r.applied.as_ref(),
            None => Some(&standalone),
        };
        let mut svc = roles::svc_data(
            census.as_deref(),
            &group,
            &self.options.member_id,
            applied,
            views.as_ref().and_then(|v| v.get(&group)),
        );
        svc.insert("service".into(), name.into());
        svc.insert("group".into(), spec.group.clone().into());
        svc.insert("service_group".into(), format!("{name}.{}", spec.group).into());
        serde_json::Value::Object(svc)
    }

    /// The service's binds as templates see them, and those not satisfied.
    fn bind_data(&self, spec: &ServiceSpec) -> (serde_json::Value, Vec<String>) {
        let census = self.options.census.as_ref().map(|c| c.borrow().clone());
        super::binds::data(&spec.binds, census.as_deref())
    }

    /// Strict binds that no alive member satisfies yet (None: it may start).
    fn unsatisfied(&self, spec: &ServiceSpec) -> Option<Vec<String>> {
        if spec.binding_mode != BindingMode::Strict || spec.binds.is_empty() {
            return None;
        }
        let (_, waiting) = self.bind_data(spec);
        (!waiting.is_empty()).then_some(waiting)
    }

    /// The census changed: start services whose binds are now satisfied, and render again
    /// those whose binds look different.
    async fn binds_changed(&mut self) {
        let ready: Vec<String> = self
            .waiting
            .iter()
            .filter(|(_, spec)| self.unsatisfied(spec).is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for name in ready {
            let Some(spec) = self.waiting.remove(&name) else { continue };
            match self.launch(spec, tokio::time::Instant::now() + CREDENTIAL_WAIT).await {
                Ok(_) => tracing::info!(service = %name, "its binds are satisfied; started"),
                Err(e) => {
                    tracing::error!(service = %name, error = %e, "its binds are satisfied but it cannot start")
                }
            }
        }
        let mut changed = Vec::new();
        for (name, entry) in &self.services {
            if entry.spec.binds.is_empty() {
                continue;
            }
            let (now, _) = self.bind_data(&entry.spec);
            if self.bound.get(name) != Some(&now) {
                changed.push((name.clone(), now));
            }
        }
        for (name, now) in changed {
            let first = self.bound.insert(name.clone(), now).is_none();
            if !first {
                tracing::info!(service = %name, "its binds changed; rendering again");
            }
            self.rerender(&name).await;
        }
    }

    /// The service's group across the ring: `NAME.GROUP@ORG` (`NAME.GROUP` without `--org`).
    fn group_of(&self, name: &str, spec: &ServiceSpec) -> String {
        ServiceGroup::new(name, &spec.group, self.options.org.as_deref())
            .map(|g| g.to_string())
            .unwrap_or_else(|_| format!("{name}.{}", spec.group))
    }

    fn publish_groups(&self) {
        let groups: BTreeSet<String> = self.services.iter().map(|(n, e)| self.group_of(n, &e.spec)).collect();
        self.groups.send_if_modified(|g| {
            let changed = *g != groups;
            *g = groups;
            changed
        });
    }

    async fn unload(
        &mut self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<oneshot::Receiver<()>, SvcError> {
        if self.waiting.remove(name).is_some() {
            // Never started: nothing to stop.
            self.specs().remove(name).map_err(|e| SvcError::Invalid(e.to_string()))?;
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(());
            tracing::info!(service = %name, "unloaded (it was waiting for its binds)");
            return Ok(rx);
        }
        self.bound.remove(name);
        let entry = self.services.remove(name).ok_or_else(|| SvcError::NotLoaded(name.to_string()))?;
        if let Some(r) = self.roles.remove(name)
            && let Some(e) = &self.options.elections
        {
            e.set(&r.group, None);
        }
        self.specs().remove(name).map_err(|e| SvcError::Invalid(e.to_string()))?;
        self.unfollow(name);
        let group = self.group_of(name, &entry.spec);
        self.publish_groups();
        if !self.services.iter().any(|(n, e)| self.group_of(n, &e.spec) == group) {
            self.gossip.forget(&group);
        }
        let (tx, rx) = oneshot::channel();
        if let Some(within) = timeout {
            // The stop begins with the short timeout; the exit then waits for it.
            let _ = entry.task.commands.send(Command::StopWithin(within)).await;
        }
        let _ = entry.task.commands.send(Command::Exit { stop: true, done: tx }).await;
        tracing::info!(service = %name, "unloaded");
        Ok(rx)
    }

    async fn want(&mut self, name: &str, want: Want) -> Result<watch::Receiver<ServiceView>, SvcError> {
        let specs = self.specs();
        let entry = self.services.get_mut(name).ok_or_else(|| SvcError::NotLoaded(name.to_string()))?;
        entry.spec.desired_state = match want {
            Want::Up => DesiredState::Up,
            Want::Down(_) => DesiredState::Down,
        };
        specs.save(&entry.spec).map_err(|e| SvcError::Invalid(e.to_string()))?;
        let command = match want {
            Want::Down(Some(within)) => Command::StopWithin(within),
            other => Command::Want(other.desired()),
        };
        let _ = entry.task.commands.send(command).await;
        Ok(entry.task.view.clone())
    }
}

/// Why a service renders again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rerender {
    /// Its config, binds or credentials changed.
    Changed,
    /// Its role or its group's leader changed: reconfigure runs even if no file changed.
    Role,
    /// Before its first start: no hook runs.
    Quiet,
}

/// Habitat's group names: letters, digits, `-` and `_`.
fn validate_group(group: &str) -> Result<(), SvcError> {
    let ok = !group.is_empty()
        && group.len() <= 64
        && group.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok { Ok(()) } else { Err(SvcError::Invalid(format!("group {group:?}: use letters, digits, - and _"))) }
}

/// The user the service runs as: the package's `SVC_USER` when the supervisor is root (it
/// must exist), else the supervisor's own user.
/// Who a service runs as, and the (uid, gid) to switch to (None: no switch).
type RunAs = (Option<users::User>, Option<(u32, u32)>);

fn service_user(pkg: &Pkg) -> Result<RunAs, SvcError> {
    if !users::is_root() {
        return Ok((users::current(), None));
    }
    let name = pkg.svc_user();
    let user = users::lookup(&name).ok_or_else(|| {
        SvcError::Invalid(format!(
            "{}: its svc_user {name:?} does not exist on this host (create it, or set svc_user in plan.toml)",
            pkg.ident
        ))
    })?;
    let gid = match pkg.svc_group() {
        Some(g) => users::group_id(&g)
            .ok_or_else(|| SvcError::Invalid(format!("{}: its svc_group {g:?} does not exist", pkg.ident)))?,
        None => user.gid,
    };
    let ids = Some((user.uid, gid));
    Ok((Some(user), ids))
}

/// Every folder above `dir` must let the service's user through, or its hooks cannot even
/// start ("Permission denied"): say which one, and how to fix it.
fn passable(dir: &Path, uid: u32, gid: u32, user: &str) -> Result<(), SvcError> {
    use std::os::unix::fs::MetadataExt as _;
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else { continue };
        let mode = meta.mode();
        let through = if meta.uid() == uid {
            mode & 0o100 != 0
        } else if meta.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !through {
            return Err(SvcError::Invalid(format!(
                "the service's user {user} cannot pass through {} (mode {:o}); services live under \
                 {}: let others through it (chmod o+x) or use a --data-path they can reach",
                ancestor.display(),
                mode & 0o7777,
                dir.display()
            )));
        }
    }
    Ok(())
}

/// A clean environment: nothing of the supervisor's own (secrets, WARREN_* settings).
fn environment(
    pkg: &Pkg,
    svc_dir: &Path,
    group: &str,
    user: Option<&users::User>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut set = |k: &str, v: OsString| env.push((k.into(), v));
    let mut path = OsString::new();
    if pkg.dir.join("bin").is_dir() {
        path.push(pkg.dir.join("bin"));
        path.push(":");
    }
    path.push("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    set("PATH", path);
    if let Some(u) = user {
        set("HOME", u.home.clone().into());
        set("USER", u.name.clone().into());
        set("LOGNAME", u.name.clone().into());
        set("SHELL", u.shell.clone().into());
    }
    for k in ["LANG", "LC_ALL", "TZ"] {
        if let Some(v) = std::env::var_os(k) {
            set(k, v);
        }
    }
    set("WARREN_SERVICE_GROUP", group.into());
    set("WARREN_PKG_IDENT", pkg.ident.to_string().into());
    set("WARREN_PKG_PATH", pkg.dir.clone().into());
    set("WARREN_SVC_PATH", svc_dir.into());
    env
}

async fn census_changed<T>(rx: &mut Option<watch::Receiver<T>>) -> Option<()> {
    match rx {
        Some(rx) => rx.changed().await.ok(),
        None => std::future::pending().await,
    }
}

async fn next_batch(
    rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<crate::watch::Batch>>,
) -> Option<crate::watch::Batch> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// An installed package as services use it: where it is and what its metadata says.
#[derive(Debug, Clone)]
pub struct Pkg {
    pub ident: PackageIdent,
    pub dir: PathBuf,
    pub meta: PackageMeta,
}

impl Pkg {
    /// The newest installed package satisfying `ident`.
    pub fn find(data_path: &Path, ident: &PackageIdent) -> Result<Pkg, SvcError> {
        let found = PackageStore::under(data_path)
            .latest(ident)?
            .ok_or_else(|| SvcError::NotInstalled(ident.to_string()))?;
        let meta = found.meta()?;
        Ok(Pkg { ident: found.ident, dir: found.path, meta })
    }

    /// `SVC_USER` (Habitat's default: hab).
    pub fn svc_user(&self) -> String {
        self.meta.svc_user.clone().unwrap_or_else(|| "hab".into())
    }

    pub fn svc_group(&self) -> Option<String> {
        self.meta.svc_group.clone()
    }

    /// `SHUTDOWN_SIGNAL` as a number; TERM when unset or unknown.
    pub fn shutdown_signal(&self) -> i32 {
        self.meta.shutdown_signal.as_deref().and_then(signal_number).unwrap_or(libc::SIGTERM)
    }

    pub fn shutdown_timeout(&self) -> Option<Duration> {
        self.meta.shutdown_timeout.map(|s| Duration::from_secs(u64::from(s)))
    }

    /// `hooks/run`, else the `run` file at the package root (a plan's `run` entry).
    pub fn run_source(&self) -> PathBuf {
        let hook = self.dir.join("hooks").join(Hook::Run.file_name());
        if hook.is_file() { hook } else { self.dir.join("run") }
    }
}

/// A signal by name (`TERM`, `SIGINT`) or number.
pub fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.trim().parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(signal_number("TERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("sigint"), Some(libc::SIGINT));
        assert_eq!(signal_number("10"), Some(10));
        assert_eq!(signal_number("BOGUS"), None);
        assert_eq!(signal_number("0"), None);
    }

    #[test]
    fn the_newest_matching_install_wins() {
        let dir = tempfile::tempdir().unwrap();
        for (v, r) in
            [("1.9.2", "20260101000000"), ("1.10.0", "20250101000000"), ("1.10.0", "20250102000000")]
        {
            std::fs::create_dir_all(dir.path().join(format!("pkgs/acme/web/{v}/{r}"))).unwrap();
        }
        let find = |s: &str| Pkg::find(dir.path(), &s.parse().unwrap()).map(|p| p.ident.to_string());
        assert_eq!(find("acme/web").unwrap(), "acme/web/1.10.0/20250102000000");
        assert_eq!(find("acme/web/1.9.2").unwrap(), "acme/web/1.9.2/20260101000000");
        assert!(matches!(find("acme/web/2.0"), Err(SvcError::NotInstalled(_))));
        assert!(find("acme/other").is_err());
    }
}
