//! The WebAssembly plugin runtime: one wasmtime engine, signed components with an embedded
//! manifest, a sandbox per store granted the intersection of the manifest and the operator's
//! policy, a compile cache, a hot-reloading registry of the plugin folder.
//!
//! Calls are synchronous and may block up to the plugin's deadline: from async code run them in
//! `tokio::task::spawn_blocking` (WASI's sync bindings drive their own tokio runtime and must not
//! run on an async worker thread).

pub mod bindings;
pub mod engine;
pub mod inspect;
pub mod loaded;
pub mod manifest;
pub mod policy;
pub mod registry;
pub mod runtime;
pub mod sandbox;
pub mod signing;
pub mod topology;
pub mod wasm;
pub mod watcher;

use serde::{Deserialize, Serialize};

pub use bindings::{
    Credential, CredentialError, Decision, ElectionStatus, GroupView, Health, Member, PackageIdent, Role,
    ServiceContext, ServicePaths, TopologyHealth, WitVersion,
};
pub use engine::{CacheOutcome, EngineOptions, PluginEngine};
pub use loaded::{CredentialSourceHandle, HookHandle, LoadedPlugin, TopologyHandle};
pub use manifest::Manifest;
pub use policy::{Effective, Grant, Limits};
pub use registry::{PluginRegistry, PluginState, PluginStatus, RegistrySettings, policy_for};
pub use runtime::{PluginRuntime, RuntimeError};
pub use signing::{SignatureStatus, TrustMode};
pub use watcher::PluginWatcher;

/// The three plugin worlds of warren:plugin (0.2.0, and 0.1.0 before it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    CredentialSource,
    TopologyPolicy,
    LifecycleHook,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::CredentialSource => "credential-source",
            World::TopologyPolicy => "topology-policy",
            World::LifecycleHook => "lifecycle-hook",
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every way loading or calling a plugin fails. Plugin faults are values, never panics.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("not a plugin: {0}")]
    NotAComponent(String),
    #[error("malformed component: {0}")]
    Malformed(String),
    #[error("the component has no warren-manifest custom section")]
    NoManifest,
    #[error("invalid warren-manifest: {0}")]
    BadManifest(String),
    #[error("refused by plugin_trust = strict: {0}")]
    Untrusted(String),
    #[error("cannot sign: {0}")]
    Sign(String),
    #[error("plugin engine: {0}")]
    Engine(String),
    #[error("compile failed: {0}")]
    Compile(String),
    #[error("the component does not implement world {expected} its manifest declares: {detail}")]
    WrongWorld { expected: World, detail: String },
    #[error("plugin {plugin} is a {actual} plugin, not a {expected}")]
    NotThisWorld { plugin: String, expected: World, actual: World },
    #[error("plugin {plugin} imports something the host does not provide: {detail}")]
    Link { plugin: String, detail: String },
    #[error("plugin {plugin} could not be instantiated: {detail}")]
    Instantiate { plugin: String, detail: String },
    #[error("plugin {plugin} ran past its {timeout_ms} ms deadline and was stopped")]
    Deadline { plugin: String, timeout_ms: u32 },
    #[error("plugin {plugin} hit its {memory_mb} MiB memory cap and was stopped")]
    MemoryExhausted { plugin: String, memory_mb: u32 },
    #[error("plugin {plugin} trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("plugin {plugin} returned an invalid answer: {detail}")]
    BadAnswer { plugin: String, detail: String },
    #[error("no plugin named {0:?}")]
    NotFound(String),
    #[error("no topology-policy plugin whose name() is {name:?} is loaded from {dir}; {}", loaded_policies(.loaded))]
    NoTopology { name: String, dir: String, loaded: Vec<String> },
    #[error("topology policy {name:?} is ambiguous: plugins {} all answer name() = {name:?}, and none is {name}.wasm", .plugins.join(", "))]
    AmbiguousTopology { name: String, plugins: Vec<String> },
    #[error("plugin name {name:?} is already provided by {other}")]
    DuplicateName { name: String, other: String },
    #[error(
        "{file} holds plugin {name:?}: a plugin file must be named after its plugin ({name}.wasm), \
         so that sup.toml's [plugins.NAME] and [credentials] name files the operator installed"
    )]
    NameMismatch { file: String, name: String },
    #[error("plugin folder watcher: {0}")]
    Watch(String),
}

/// "loaded topology policies: a, b" or that there is none.
fn loaded_policies(loaded: &[String]) -> String {
    if loaded.is_empty() {
        "no topology policy is loaded".to_string()
    } else {
        format!("loaded topology policies: {}", loaded.join(", "))
    }
}

impl PluginError {
    /// Whether this is a fault of a running plugin (as opposed to a load-time refusal).
    pub fn is_runtime_fault(&self) -> bool {
        matches!(
            self,
            PluginError::Deadline { .. }
                | PluginError::MemoryExhausted { .. }
                | PluginError::Trap { .. }
                | PluginError::BadAnswer { .. }
        )
    }
}
