//! One loaded plugin: its compiled component, pre-instantiated against the shared linker, and a
//! small pool of warm instances reused across calls. Every call runs under an epoch deadline and
//! the store's memory cap; a faulted instance is dropped, never reused.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::{
    Credential, CredentialError, Decision, GroupView, Health, ServiceContext, WitVersion, compat, v0_1, v0_2,
};
use super::engine::{CacheOutcome, PluginEngine};
use super::manifest::Manifest;
use super::policy::Effective;
use super::sandbox::StoreState;
use super::signing::SignatureStatus;
use super::{PluginError, World, topology};

/// Idle instances kept per plugin; more concurrent callers get fresh ones.
const MAX_IDLE: usize = 4;
/// Longest error text kept from a trap (backtraces can be long).
const MAX_TRAP_TEXT: usize = 1000;

/// A pre-instantiated component of one world, at the contract version it was built against
/// (`*1`: warren:plugin@0.1.0).
enum Pre {
    Cred(v0_2::credential_source::CredentialSourcePre<StoreState>),
    Topo(v0_2::topology_policy::TopologyPolicyPre<StoreState>),
    Hook(v0_2::lifecycle_hook::LifecycleHookPre<StoreState>),
    Cred1(v0_1::credential_source::CredentialSourcePre<StoreState>),
    Topo1(v0_1::topology_policy::TopologyPolicyPre<StoreState>),
    Hook1(v0_1::lifecycle_hook::LifecycleHookPre<StoreState>),
}

impl Pre {
    fn wit(&self) -> WitVersion {
        match self {
            Pre::Cred(_) | Pre::Topo(_) | Pre::Hook(_) => WitVersion::V0_2,
            Pre::Cred1(_) | Pre::Topo1(_) | Pre::Hook1(_) => WitVersion::V0_1,
        }
    }
}

/// The current world first, then the 0.1.0 one; if neither fits, the current one's error.
fn either_version(
    pre: InstancePre<StoreState>,
    current: impl FnOnce(InstancePre<StoreState>) -> wasmtime::Result<Pre>,
    previous: impl FnOnce(InstancePre<StoreState>) -> wasmtime::Result<Pre>,
) -> wasmtime::Result<Pre> {
    current(pre.clone())
        .or_else(|e| previous(pre).map_err(|_| e.context(format!("(nor {})", WitVersion::V0_1))))
}

enum Bound {
    Cred(v0_2::credential_source::CredentialSource),
    Topo(v0_2::topology_policy::TopologyPolicy),
    Hook(v0_2::lifecycle_hook::LifecycleHook),
    Cred1(v0_1::credential_source::CredentialSource),
    Topo1(v0_1::topology_policy::TopologyPolicy),
    Hook1(v0_1::lifecycle_hook::LifecycleHook),
}

struct Warm {
    store: Store<StoreState>,
    bound: Bound,
}

/// Facts about a loaded plugin (also what `GET /plugins` shows).
#[derive(Clone, Debug, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub world: World,
    /// The contract version the component was built against.
    pub wit: WitVersion,
    pub file: PathBuf,
    pub size: u64,
    pub blake2b: String,
    pub signature: SignatureStatus,
    pub policy: Effective,
    /// Schemes served (credential sources only): those it declares that `[credentials]`
    /// assigns to it.
    pub schemes: Vec<String>,
    /// Schemes it declares that `[credentials]` assigns to another plugin or to none: it gets
    /// no references of these.
    pub unassigned_schemes: Vec<String>,
    /// What `name()` answered when it loaded (topology policies only): the name
    /// `svc load --topology` selects it by.
    pub topology_name: Option<String>,
    pub compile_cache: CacheOutcome,
}

pub struct LoadedPlugin {
    pub info: PluginInfo,
    engine: Arc<PluginEngine>,
    pre: Pre,
    idle: Mutex<Vec<Warm>>,
    calls: AtomicU64,
    faults: AtomicU64,
}

impl LoadedPlugin {
    /// Compiles (or loads from cache), links and pre-instantiates; then instantiates once to
    /// prove it works and, for credential sources, asks for its schemes (it serves those
    /// `owns_scheme` accepts).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        engine: Arc<PluginEngine>,
        file: PathBuf,
        wasm: &[u8],
        digest: [u8; 32],
        manifest: &Manifest,
        signature: SignatureStatus,
        policy: Effective,
        owns_scheme: &dyn Fn(&str) -> bool,
    ) -> Result<Arc<Self>, PluginError> {
        let (component, cache) = engine.compile(wasm, &digest)?;
        let name = manifest.name.clone();
        let instance_pre = engine
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Link { plugin: name.clone(), detail: format!("{e:#}") })?;
        let wrong = |e: wasmtime::Error| PluginError::WrongWorld {
            expected: manifest.world,
            detail: format!("{e:#}"),
        };
        let pre = match manifest.world {
            World::CredentialSource => either_version(
                instance_pre,
                |p| v0_2::credential_source::CredentialSourcePre::new(p).map(Pre::Cred),
                |p| v0_1::credential_source::CredentialSourcePre::new(p).map(Pre::Cred1),
            ),
            World::TopologyPolicy => either_version(
                instance_pre,
                |p| v0_2::topology_policy::TopologyPolicyPre::new(p).map(Pre::Topo),
                |p| v0_1::topology_policy::TopologyPolicyPre::new(p).map(Pre::Topo1),
            ),
            World::LifecycleHook => either_version(
                instance_pre,
                |p| v0_2::lifecycle_hook::LifecycleHookPre::new(p).map(Pre::Hook),
                |p| v0_1::lifecycle_hook::LifecycleHookPre::new(p).map(Pre::Hook1),
            ),
        }
        .map_err(wrong)?;
        let mut plugin = LoadedPlugin {
            info: PluginInfo {
                name,
                version: manifest.version.clone(),
                world: manifest.world,
                wit: pre.wit(),
                file,
                size: wasm.len() as u64,
                blake2b: hex::encode(digest),
                signature,
                policy,
                schemes: Vec::new(),
                unassigned_schemes: Vec::new(),
                topology_name: None,
                compile_cache: cache,
            },
            engine,
            pre,
            idle: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            faults: AtomicU64::new(0),
        };
        if manifest.world == World::CredentialSource {
            let schemes = plugin.call(|store, bound| match bound {
                Bound::Cred(b) => b.warren_plugin_credentials().call_schemes(store),
                Bound::Cred1(b) => b.warren_plugin_credentials().call_schemes(store),
                _ => unreachable!("world checked above"),
            })?;
            if schemes.is_empty()
                || schemes.len() > 16
                || !schemes.iter().all(|s| crate::credentials::reference::is_scheme(s))
            {
                return Err(PluginError::BadAnswer {
                    plugin: plugin.info.name.clone(),
                    detail: "schemes() must return 1-16 names of [A-Z][A-Z0-9_]*".into(),
                });
            }
            let (owned, unassigned) = schemes.into_iter().partition(|s| owns_scheme(s));
            plugin.info.schemes = owned;
            plugin.info.unassigned_schemes = unassigned;
        } else if manifest.world == World::TopologyPolicy {
            // Asked once: a policy is selected by this name, so one that cannot say it does not load.
            let policy = plugin.call(|store, bound| match bound {
                Bound::Topo(b) => b.warren_plugin_topology().call_name(store),
                Bound::Topo1(b) => b.warren_plugin_topology().call_name(store),
                _ => unreachable!("world checked above"),
            })?;
            topology::check_policy_name(&policy)
                .map_err(|detail| PluginError::BadAnswer { plugin: plugin.info.name.clone(), detail })?;
            plugin.info.topology_name = Some(policy);
        } else {
            let warm = plugin.instantiate()?;
            plugin.idle.lock().unwrap_or_else(|p| p.into_inner()).push(warm);
        }
        Ok(Arc::new(plugin))
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    fn new_store(&self) -> Store<StoreState> {
        let mut store = Store::new(
            self.engine.engine(),
            StoreState::new(self.info.name.as_str().into(), &self.info.policy),
        );
        store.limiter(|s| &mut s.cap);
        store.set_epoch_deadline(self.engine.deadline_ticks(self.info.policy.timeout()));
        store
    }

    fn instantiate(&self) -> Result<Warm, PluginError> {
        let mut store = self.new_store();
        let bound = match &self.pre {
            Pre::Cred(p) => p.instantiate(&mut store).map(Bound::Cred),
            Pre::Topo(p) => p.instantiate(&mut store).map(Bound::Topo),
            Pre::Hook(p) => p.instantiate(&mut store).map(Bound::Hook),
            Pre::Cred1(p) => p.instantiate(&mut store).map(Bound::Cred1),
            Pre::Topo1(p) => p.instantiate(&mut store).map(Bound::Topo1),
            Pre::Hook1(p) => p.instantiate(&mut store).map(Bound::Hook1),
        };
        match bound {
            Ok(bound) => Ok(Warm { store, bound }),
            Err(e) => Err(match self.classify(&store, e) {
                PluginError::Trap { plugin, message } => PluginError::Instantiate { plugin, detail: message },
                other => other,
            }),
        }
    }

    fn classify(&self, store: &Store<StoreState>, e: wasmtime::Error) -> PluginError {
        let plugin = self.info.name.clone();
        if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            return PluginError::Deadline { plugin, timeout_ms: self.info.policy.timeout_ms };
        }
        if store.data().cap.hit {
            return PluginError::MemoryExhausted { plugin, memory_mb: self.info.policy.memory_mb };
        }
        let mut message = format!("{e:#}");
        if message.len() > MAX_TRAP_TEXT {
            let mut cut = MAX_TRAP_TEXT;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        PluginError::Trap { plugin, message }
    }

    /// Runs `f` on a warm instance under the deadline and memory cap.
    fn call<R>(
        &self,
        f: impl FnOnce(&mut Store<StoreState>, &Bound) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let warm = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut warm = match warm {
            Some(w) => w,
            None => self.instantiate().inspect_err(|_| {
                self.faults.fetch_add(1, Ordering::Relaxed);
            })?,
        };
        warm.store.data_mut().begin_call();
        warm.store.set_epoch_deadline(self.engine.deadline_ticks(self.info.policy.timeout()));
        // WASI's host calls each run a future to completion; with no tokio runtime entered they
        // use wasmtime-wasi's fallback runtime and yield once per call. Entering it once for the
        // whole call makes each host call cheaper.
        let result = wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| f(&mut warm.store, &warm.bound));
        match result {
            Ok(r) => {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < MAX_IDLE {
                    idle.push(warm);
                }
                Ok(r)
            }
            Err(e) => {
                self.faults.fetch_add(1, Ordering::Relaxed);
                let err = self.classify(&warm.store, e);
                tracing::warn!(plugin = %self.info.name, error = %err, "plugin call failed; instance discarded");
                Err(err)
            }
        }
    }

    fn world_error(&self, expected: World) -> PluginError {
        PluginError::NotThisWorld { plugin: self.info.name.clone(), expected, actual: self.info.world }
    }
}

/// A credential-source plugin.
#[derive(Clone)]
pub struct CredentialSourceHandle(pub(crate) Arc<LoadedPlugin>);

impl CredentialSourceHandle {
    pub fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, PluginError> {
        if plugin.info.world != World::CredentialSource {
            return Err(plugin.world_error(World::CredentialSource));
        }
        Ok(CredentialSourceHandle(plugin))
    }
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.0
    }
    pub fn schemes(&self) -> &[String] {
        &self.0.info.schemes
    }
    /// Outer error: the plugin faulted. Inner error: the plugin's answer.
    pub fn resolve(&self, reference: &str) -> Result<Result<Credential, CredentialError>, PluginError> {
        self.0.call(|store, bound| match bound {
            Bound::Cred(b) => b.warren_plugin_credentials().call_resolve(store, reference),
            Bound::Cred1(b) => {
                b.warren_plugin_credentials().call_resolve(store, reference).map(compat::resolved)
            }
            _ => unreachable!("checked in new"),
        })
    }
}

/// A topology-policy plugin.
#[derive(Clone)]
pub struct TopologyHandle(pub(crate) Arc<LoadedPlugin>);

impl TopologyHandle {
    pub fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, PluginError> {
        if plugin.info.world != World::TopologyPolicy {
            return Err(plugin.world_error(World::TopologyPolicy));
        }
        Ok(TopologyHandle(plugin))
    }
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.0
    }
    pub fn policy_name(&self) -> Result<String, PluginError> {
        self.0.call(|store, bound| match bound {
            Bound::Topo(b) => b.warren_plugin_topology().call_name(store),
            Bound::Topo1(b) => b.warren_plugin_topology().call_name(store),
            _ => unreachable!("checked in new"),
        })
    }
    /// The name `name()` gave when the plugin loaded.
    pub fn loaded_name(&self) -> &str {
        self.0.info.topology_name.as_deref().unwrap_or(&self.0.info.name)
    }
    /// The policy's decision for `view`. A trap, the deadline, the memory cap or an invalid
    /// answer (a role for a non-member, two roles for one member) is an error, counted as a
    /// fault; a 0.1.0 policy gets the view as 0.1.0's arguments ([`compat::decide_args`]).
    pub fn decide(&self, view: &GroupView) -> Result<Decision, PluginError> {
        let decision = self.0.call(|store, bound| match bound {
            Bound::Topo(b) => b.warren_plugin_topology().call_decide(store, view),
            Bound::Topo1(b) => {
                let (group, members, leader) = compat::decide_args(view);
                b.warren_plugin_topology().call_decide(store, group, &members, leader).map(Into::into)
            }
            _ => unreachable!("checked in new"),
        })?;
        topology::check_decision(view, &decision).map_err(|detail| {
            self.0.faults.fetch_add(1, Ordering::Relaxed);
            let err = PluginError::BadAnswer { plugin: self.0.info.name.clone(), detail };
            tracing::warn!(plugin = %self.0.info.name, group = %view.group, error = %err, "topology decision refused");
            err
        })?;
        Ok(decision)
    }
}

/// A lifecycle-hook plugin.
#[derive(Clone)]
pub struct HookHandle(pub(crate) Arc<LoadedPlugin>);

/// One lifecycle call on either contract version: a 0.1.0 hook gets its smaller context, and
/// its answer comes back as the 0.2.0 type (`From`; the identity for std types).
macro_rules! hook_call {
    ($self:ident, $method:ident, $ctx:expr $(, $arg:expr)*) => {
        $self.0.call(|store, bound| match bound {
            Bound::Hook(b) => b.warren_plugin_lifecycle().$method(store, $ctx $(, $arg)*),
            Bound::Hook1(b) => {
                let old = v0_1::lifecycle_hook::exports::warren::plugin::lifecycle::ServiceContext::from($ctx);
                b.warren_plugin_lifecycle().$method(store, &old $(, $arg)*).map(From::from)
            }
            _ => unreachable!("checked in new"),
        })
    };
}

impl HookHandle {
    pub fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, PluginError> {
        if plugin.info.world != World::LifecycleHook {
            return Err(plugin.world_error(World::LifecycleHook));
        }
        Ok(HookHandle(plugin))
    }
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.0
    }
    pub fn init(&self, ctx: &ServiceContext) -> Result<Result<(), String>, PluginError> {
        hook_call!(self, call_init, ctx)
    }
    pub fn health_check(&self, ctx: &ServiceContext) -> Result<Health, PluginError> {
        hook_call!(self, call_health_check, ctx)
    }
    pub fn reconfigure(&self, ctx: &ServiceContext) -> Result<Result<(), String>, PluginError> {
        hook_call!(self, call_reconfigure, ctx)
    }
    pub fn suitability(&self, ctx: &ServiceContext) -> Result<u64, PluginError> {
        hook_call!(self, call_suitability, ctx)
    }
    pub fn file_updated(
        &self,
        ctx: &ServiceContext,
        file_name: &str,
    ) -> Result<Result<(), String>, PluginError> {
        hook_call!(self, call_file_updated, ctx, file_name)
    }
    pub fn post_stop(&self, ctx: &ServiceContext) -> Result<Result<(), String>, PluginError> {
        hook_call!(self, call_post_stop, ctx)
    }
}
