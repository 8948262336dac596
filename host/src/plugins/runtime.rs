//! The supervisor's plugin runtime in one value: the engine, the registry over the plugin
//! folder (loaded and watched), and the credential resolver with every reference of sup.toml
//! subscribed. This is what `sup run` holds and what the HTTP gateway asks for JSON.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use super::{EngineOptions, PluginError, PluginRegistry, PluginWatcher, TrustMode};
use crate::config::SupConfig;
use crate::credentials::{CredentialResolver, CredentialValue, ResolveError};
use crate::crypto::KeyCache;
use crate::watch::FileWatch;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Credentials(#[from] ResolveError),
}

pub struct PluginRuntime {
    pub registry: Arc<PluginRegistry>,
    pub resolver: CredentialResolver,
    _watcher: PluginWatcher,
}

impl PluginRuntime {
    /// Loads the plugin folder (`plugin_path_cli` = `--plugin-path`/`WARREN_PLUGIN_PATH`, else
    /// the config, else `{data_path}/plugins`), starts watching it, and subscribes every
    /// credential reference of the config. `trust_cli` is `--plugin-trust`; `keys` is the key
    /// cache whose public SIG keys are trusted; `files` is the supervisor's file-watch
    /// service (the folder and the credentials' watch hints are followed through it).
    /// Blocking: call it before entering async code or from `spawn_blocking`.
    pub fn start(
        config: &SupConfig,
        plugin_path_cli: Option<&Path>,
        trust_cli: Option<TrustMode>,
        keys: KeyCache,
        files: &FileWatch,
    ) -> Result<Self, RuntimeError> {
        let default_trust = TrustMode::default_for(&keys);
        let settings = config.registry_settings(plugin_path_cli, trust_cli, default_trust);
        // The engine starts with the first plugin file, so an empty folder costs nothing.
        let engine = EngineOptions { cache_dir: Some(config.plugin_cache_dir()), ..EngineOptions::default() };
        let registry = PluginRegistry::new_lazy(engine, settings, Arc::new(keys));
        registry.load_dir()?;
        let watcher = registry.watch(files)?;
        let resolver = CredentialResolver::start(registry.clone(), files)?;
        for (label, reference) in config.references() {
            resolver.subscribe(&label, &reference);
        }
        Ok(PluginRuntime { registry, resolver, _watcher: watcher })
    }

    /// A config key's reference (e.g. "auth_token") as a watch channel of its value.
    pub fn subscribe(&self, label: &str, reference: &str) -> watch::Receiver<Option<CredentialValue>> {
        self.resolver.subscribe(label, reference)
    }

    /// `GET /plugins`.
    pub fn plugins_json(&self) -> serde_json::Value {
        self.registry.plugins_json()
    }

    /// `GET /credentials`.
    pub fn credentials_json(&self) -> serde_json::Value {
        self.resolver.credentials_json()
    }
}
