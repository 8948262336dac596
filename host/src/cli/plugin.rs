//! `warren plugin ...`: scaffold, build, inspect, sign and list WebAssembly plugins.

mod build;
mod capture;
mod new;
mod test;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::keys::CacheArgs;
use crate::config::{CONFIG_ENV, DATA_PATH_ENV, PLUGIN_PATH_ENV, SupConfig};
use crate::crypto::{KeyCache, KeyKind, SigSecretKey};
use crate::fsutil::{self, Existing};
use crate::plugins::signing::{self, TrustedKeys};
use crate::plugins::{EngineOptions, Grant, PluginEngine, PluginRegistry, TrustMode, World, inspect};

/// The worlds `plugin new --world` accepts.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum WorldArg {
    CredentialSource,
    TopologyPolicy,
    LifecycleHook,
}

impl From<WorldArg> for World {
    fn from(w: WorldArg) -> World {
        match w {
            WorldArg::CredentialSource => World::CredentialSource,
            WorldArg::TopologyPolicy => World::TopologyPolicy,
            WorldArg::LifecycleHook => World::LifecycleHook,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Write a new plugin crate (Cargo.toml with its own workspace, plugin.toml, an example
    /// implementation with unit tests, README, the WIT contract) that builds outside this tree.
    New {
        /// Plugin name ([a-z0-9-], starting with a letter); the file will be NAME.wasm.
        name: String,
        #[arg(long, value_enum)]
        world: WorldArg,
        /// Where to write the crate [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The guest SDK (warren's plugins/guest) to depend on by path [default: the source
        /// tree this binary was built from, if present; else the SDK is vendored into DIR/sdk].
        #[arg(long)]
        sdk_path: Option<PathBuf>,
        /// Vendor the SDK into the crate even when a source tree is found.
        #[arg(long, conflicts_with = "sdk_path")]
        vendor_sdk: bool,
    },
    /// Build a plugin crate into a wasm32-wasip2 component (finding or installing the target),
    /// check it loads as the world its plugin.toml declares, write NAME.wasm, optionally sign it.
    Build {
        /// The crate [default: the current directory].
        dir: Option<PathBuf>,
        /// Sign the result with the latest secret SIG key of ORIGIN.
        #[arg(long, value_name = "ORIGIN")]
        sign: Option<String>,
        /// Write the component here [default: DIR/NAME.wasm].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Cargo's target dir (share one between plugin crates to compile wit-bindgen once)
        /// [default: DIR/target].
        #[arg(long, env = "WARREN_PLUGIN_TARGET_DIR")]
        target_dir: Option<PathBuf>,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Run a plugin once under exactly the grants given here and print the result and the host
    /// calls it made (its log records, refused requests). Give one of --resolve, --decide, --hook.
    Test {
        file: PathBuf,
        /// Resolve this reference (a credential source).
        #[arg(long, value_name = "REF", conflicts_with_all = ["decide", "hook"])]
        resolve: Option<String>,
        /// Decide for this group view (a topology policy), e.g.
        /// '{"members":[{"id":"a"},{"id":"b"}],"leader":"a"}'.
        #[arg(long, value_name = "JSON", conflicts_with = "hook")]
        decide: Option<String>,
        /// Call this lifecycle event (a hook plugin) with a made-up service app.default.
        #[arg(long, value_name = "EVENT", value_parser = clap::builder::PossibleValuesParser::new(test::HOOK_EVENTS))]
        hook: Option<String>,
        /// Grant an environment variable (repeat for more).
        #[arg(long = "grant-env", value_name = "NAME")]
        grant_env: Vec<String>,
        /// Grant read access to a directory (repeat for more).
        #[arg(long = "grant-path", value_name = "DIR")]
        grant_path: Vec<PathBuf>,
        /// Grant outbound HTTP to host:port (repeat for more).
        #[arg(long = "grant-http", value_name = "HOST:PORT")]
        grant_http: Vec<String>,
        /// Print a resolved credential's value (by default only its length).
        #[arg(long)]
        show_value: bool,
    },
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
        /// Print JSON (what GET /plugins returns).
        #[arg(long)]
        json: bool,
    },
}

/// Options shared by every command that loads plugins (`sup run`, `plugin list`,
/// `credential resolve`): one definition, so their names, environment variables and defaults
/// cannot drift apart.
#[derive(Args, Debug, Clone)]
pub struct PluginArgs {
    /// Supervisor config file (sup.toml): credential references for auth_token, ring_key and
    /// ctl_secret, plugin grants ([plugins.NAME]), data_path, plugin_path, plugin_trust.
    #[arg(long, env = CONFIG_ENV)]
    pub config: Option<PathBuf>,
    /// Where the member id, incarnation, rumors, plugins and compiled plugins are kept
    /// [default: data_path in the config, else /var/lib/warren for root, ~/.warren otherwise].
    #[arg(long, env = DATA_PATH_ENV)]
    pub data_path: Option<PathBuf>,
    /// The plugin folder; `sup run` watches it for drop-in .wasm files [default: plugin_path
    /// in the config, else {data_path}/plugins].
    #[arg(long, env = PLUGIN_PATH_ENV)]
    pub plugin_path: Option<PathBuf>,
    /// Signature policy for plugins [default: plugin_trust in the config, else strict once any
    /// origin public key is in the key cache, else warn].
    #[arg(long, value_enum)]
    pub plugin_trust: Option<TrustMode>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

impl PluginArgs {
    /// The config file (or the defaults), with `--data-path` / `WARREN_DATA_PATH` winning over
    /// its data_path, over the sup.toml fragment the keyserver sent (DATA/admission/sup.toml)
    /// if there is one. Load it once per command: loading logs the file's warnings.
    pub fn config(&self) -> anyhow::Result<SupConfig> {
        let mut config = match &self.config {
            Some(p) => SupConfig::load(p)?,
            None => SupConfig::default(),
        };
        if let Some(d) = &self.data_path {
            config.data_path = Some(d.clone());
        }
        // What the keyserver's policy gives this node lies under the operator's file.
        let fragment = super::admit_node::admission_dir(&config.data_path()).join("sup.toml");
        Ok(config.under_fragment(self.config.as_deref(), &fragment))
    }

    pub fn key_cache(&self) -> KeyCache {
        self.cache.cache()
    }

    /// A registry over the plugin folder with the config's grants plus `extra` grants, and
    /// the compile cache in {data_path}/plugin-cache. Nothing is loaded yet.
    pub fn registry(
        &self,
        config: &SupConfig,
        extra: &[(String, Grant)],
    ) -> anyhow::Result<Arc<PluginRegistry>> {
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
        PluginCommand::New { name, world, dir, sdk_path, vendor_sdk } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = if vendor_sdk { None } else { sdk_path.or_else(new::default_sdk_path) };
            let files = new::scaffold(&name, world.into(), &dir, sdk.as_deref())?;
            let how = sdk.map_or("vendored into sdk/".to_string(), |p| format!("by path {}", p.display()));
            outln!("created {} ({} files; SDK {how})", dir.display(), files.len())?;
            outln!("next: cd {} && warren plugin build", dir.display())?;
            Ok(())
        }
        PluginCommand::Test {
            file,
            resolve,
            decide,
            hook,
            grant_env,
            grant_path,
            grant_http,
            show_value,
        } => {
            let call = match (resolve, decide, hook) {
                (Some(r), _, _) => test::Call::Resolve(r),
                (_, Some(d), _) => test::Call::Decide(d),
                (_, _, Some(h)) => test::Call::Hook(h),
                _ => anyhow::bail!("give one of --resolve REF, --decide JSON or --hook EVENT"),
            };
            let grant =
                Grant { env: grant_env, read_paths: grant_path, http_hosts: grant_http, ..Grant::default() };
            for line in test::run(&file, &grant, &call, show_value)? {
                outln!("{line}")?;
            }
            Ok(())
        }
        PluginCommand::Build { dir, sign, out, target_dir, cache } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            let (bytes, manifest) = build::build(&dir, target_dir.as_deref())?;
            let dest = out.unwrap_or_else(|| dir.join(format!("{}.wasm", manifest.name)));
            let bytes = match &sign {
                Some(origin) => {
                    let keys = cache.cache();
                    let key = SigSecretKey::try_from(&keys.latest(KeyKind::SigSecret, origin)?)?;
                    signing::sign(&bytes, &key)?
                }
                None => bytes,
            };
            let summary = build::check(&bytes, &manifest)?;
            write_atomic(&dest, &bytes)?;
            let signed = sign.map_or("unsigned".to_string(), |o| format!("signed by {o}"));
            outln!("built {}: {summary}, {} bytes, {signed}", dest.display(), bytes.len())?;
            Ok(())
        }
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
            let registry = args.registry(&args.config()?, &[])?;
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
                    "{:<18} {:<18} {:<8} {:<7} {}{}{}",
                    s.name.as_deref().unwrap_or("?"),
                    s.world.map_or("?".into(), |w| w.to_string()),
                    s.version.as_deref().unwrap_or("?"),
                    format!("{:?}", s.state).to_lowercase(),
                    s.file.display(),
                    // What `svc load --topology` names it by.
                    s.topology_name.map(|t| format!("  policy {t}")).unwrap_or_default(),
                    s.last_error.map(|e| format!("\n    error: {e}")).unwrap_or_default()
                )?;
            }
            Ok(())
        }
    }
}

/// Writes next to the destination and renames, so a watcher never sees half a plugin.
fn write_atomic(dest: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fsutil::write_atomic(dest, bytes, fsutil::DEFAULT_MODE, Existing::Replace)
        .with_context(|| format!("cannot write {}", dest.display()))
}

/// Whether any origin public key is trusted (the strict default).
pub fn any_trusted(keys: &KeyCache) -> bool {
    !TrustedKeys::is_empty(keys)
}
