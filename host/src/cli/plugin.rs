//! `warren plugin ...`: inspect, sign and list WebAssembly plugins.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::keys::CacheArgs;
use crate::config::{CONFIG_ENV, PLUGIN_PATH_ENV, SupConfig};
use crate::crypto::{KeyCache, KeyKind, SigSecretKey};
use crate::plugins::signing::{self, TrustedKeys};
use crate::plugins::{EngineOptions, Grant, PluginEngine, PluginRegistry, TrustMode, inspect};

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Show a plugin file's manifest, world, signature status, size and BLAKE2b.
    Inspect {
        file: PathBuf,
        /// Print JSON (the same fields as GET /plugins).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Sign a plugin with the latest secret SIG key of ORIGIN (re-signing replaces the old
    /// signature). The signature travels inside the .wasm file.
    Sign {
        #[arg(long)]
        origin: String,
        file: PathBuf,
        /// Write the signed plugin here instead of replacing FILE.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Load the plugin folder and print every plugin's status (what GET /plugins shows).
    List {
        #[command(flatten)]
        args: PluginArgs,
        #[arg(long)]
        json: bool,
    },
}

/// Options shared by every command that loads plugins.
#[derive(Args, Debug, Clone)]
pub struct PluginArgs {
    /// The plugin folder (default: plugin_path in the config, else {data_path}/plugins).
    #[arg(long, env = PLUGIN_PATH_ENV)]
    pub plugin_path: Option<PathBuf>,
    /// Supervisor config file (sup.toml): plugin grants, plugin_path, plugin_trust.
    #[arg(long, env = CONFIG_ENV)]
    pub config: Option<PathBuf>,
    /// Signature policy (default: strict once any origin public key is in the key cache).
    #[arg(long, value_enum)]
    pub plugin_trust: Option<TrustMode>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

impl PluginArgs {
    pub fn config(&self) -> anyhow::Result<SupConfig> {
        match &self.config {
            Some(p) => Ok(SupConfig::load(p)?),
            None => Ok(SupConfig::default()),
        }
    }

    pub fn key_cache(&self) -> KeyCache {
        self.cache.cache()
    }

    /// A registry over the plugin folder with the config's grants plus `extra` grants, and
    /// the compile cache in {data_path}/plugin-cache. Nothing is loaded yet.
    pub fn registry(&self, extra: &[(String, Grant)]) -> anyhow::Result<Arc<PluginRegistry>> {
        let config = self.config()?;
        let keys = self.key_cache();
        let default_trust = TrustMode::default_for(&keys);
        let mut settings =
            config.registry_settings(self.plugin_path.as_deref(), self.plugin_trust, default_trust);
        for (name, g) in extra {
            let e = settings.grants.entry(name.clone()).or_default();
            e.env.extend(g.env.iter().cloned());
            e.read_paths.extend(g.read_paths.iter().cloned());
            e.http_hosts.extend(g.http_hosts.iter().cloned());
        }
        let engine = PluginEngine::new(EngineOptions {
            cache_dir: Some(config.plugin_cache_dir()),
            ..EngineOptions::default()
        })?;
        Ok(PluginRegistry::new(engine, settings, Arc::new(keys)))
    }
}

pub fn run(cmd: PluginCommand) -> anyhow::Result<()> {
    match cmd {
        PluginCommand::Inspect { file, json, cache } => {
            let keys = cache.cache();
            let i = inspect::inspect_file(&file, &keys)
                .with_context(|| format!("cannot inspect {}", file.display()))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&i)?)?;
                return Ok(());
            }
            let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
            outln!("file:      {}", i.file.display())?;
            outln!("name:      {}", opt(&i.name))?;
            outln!("version:   {}", opt(&i.version))?;
            outln!("world:     {}", i.world.map_or("-".into(), |w| w.to_string()))?;
            outln!("signature: {}", i.signature.describe())?;
            outln!("size:      {} bytes", i.size)?;
            outln!("blake2b:   {}", i.blake2b)?;
            if let Some(m) = &i.manifest {
                let r = &m.requests;
                outln!(
                    "requests:  env={:?} read_paths={:?} http_hosts={:?} memory_mb={} timeout_ms={}",
                    r.env,
                    r.read_paths,
                    r.http_hosts,
                    r.memory_mb.map_or("-".into(), |v| v.to_string()),
                    r.timeout_ms.map_or("-".into(), |v| v.to_string())
                )?;
            }
            if let Some(e) = &i.manifest_error {
                outln!("manifest:  ERROR {e}")?;
            }
            Ok(())
        }
        PluginCommand::Sign { origin, file, out, cache } => {
            let cache = cache.cache();
            let key_file = cache.latest(KeyKind::SigSecret, &origin)?;
            let key = SigSecretKey::try_from(&key_file)?;
            let bytes = crate::plugins::registry::read_plugin_file(&file)?;
            let signed = signing::sign(&bytes, &key)?;
            let dest = out.unwrap_or_else(|| file.clone());
            write_atomic(&dest, &signed)?;
            let status = signing::check(&signed, &cache)?;
            outln!("signed {} with {} ({})", dest.display(), key.id, status.describe())?;
            Ok(())
        }
        PluginCommand::List { args, json } => {
            let registry = args.registry(&[])?;
            let status = registry.load_dir()?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&registry.plugins_json())?)?;
                return Ok(());
            }
            outln!(
                "plugin folder {} (trust: {})",
                registry.settings().plugin_dir.display(),
                registry.settings().trust
            )?;
            for s in status {
                outln!(
                    "{:<18} {:<18} {:<8} {:<7} {}{}",
                    s.name.as_deref().unwrap_or("?"),
                    s.world.map_or("?".into(), |w| w.to_string()),
                    s.version.as_deref().unwrap_or("?"),
                    format!("{:?}", s.state).to_lowercase(),
                    s.file.display(),
                    s.last_error.map(|e| format!("\n    error: {e}")).unwrap_or_default()
                )?;
            }
            Ok(())
        }
    }
}

/// Writes next to the destination and renames, so a watcher never sees half a plugin.
fn write_atomic(dest: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = dest.file_name().context("destination has no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dest).with_context(|| format!("cannot replace {}", dest.display()))?;
    Ok(())
}

/// Whether any origin public key is trusted (the strict default).
pub fn any_trusted(keys: &KeyCache) -> bool {
    !TrustedKeys::is_empty(keys)
}
