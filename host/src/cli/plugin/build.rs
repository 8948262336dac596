//! `warren plugin build [DIR]`: cargo through the wasm32-wasip2 route of scripts/wasm-route.sh
//! (embedded, so it works outside the warren tree), then the result is loaded the way a
//! supervisor loads it (which checks it implements the world its manifest declares).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::crypto::KeyCache;
use crate::plugins::registry::credentials_with_defaults;
use crate::plugins::{
    EngineOptions, Limits, Manifest, PluginEngine, PluginRegistry, PluginState, RegistrySettings, TrustMode,
    World,
};

const WASM_ROUTE: &str = include_str!("../../../../scripts/wasm-route.sh");

/// Where the route may install tools (wasm-component-ld): the source tree's .tools when this
/// binary was built from one that is still there, else a per-user cache.
fn tools_dir() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if repo.join("scripts/wasm-route.sh").is_file() {
        return repo.join(".tools");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("warren/tools")
}

/// The crate's package name (from Cargo.toml) and its manifest (plugin.toml).
fn read_crate(dir: &Path) -> anyhow::Result<(String, Manifest)> {
    let cargo = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&cargo)
        .with_context(|| format!("{}: not a plugin crate (no Cargo.toml)", dir.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}: invalid TOML", cargo.display()))?;
    let package = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .with_context(|| format!("{}: no [package] name", cargo.display()))?
        .to_string();
    let manifest_path = dir.join("plugin.toml");
    let bytes = std::fs::read(&manifest_path).with_context(|| {
        format!("{}: manifest missing (every plugin crate needs plugin.toml)", manifest_path.display())
    })?;
    let manifest =
        Manifest::parse(&bytes).with_context(|| format!("{}: invalid manifest", manifest_path.display()))?;
    Ok((package, manifest))
}

/// Builds the crate in `dir`; returns the component's bytes and its manifest.
pub fn build(dir: &Path, target_dir: Option<&Path>) -> anyhow::Result<(Vec<u8>, Manifest)> {
    let (package, manifest) = read_crate(dir)?;
    let target_base = match target_dir {
        Some(t) => t.to_path_buf(),
        None => dir.join("target"),
    };
    let manifest_path = dir.join("Cargo.toml");
    eprintln!("building {} ({}) with cargo; output follows", manifest.name, manifest.world);
    let out = Command::new("bash")
        .arg("-c")
        .arg(WASM_ROUTE)
        .arg("wasm-route")
        .arg(&target_base)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest_path)
        .env("TOOLS", tools_dir())
        .env("WASM_ROUTE_SAY", "warren plugin build")
        // A host build's settings must not leak into the guest build.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run bash (needed to select the wasm32-wasip2 toolchain)")?;
    if !out.status.success() {
        bail!("building {} failed (see the output above)", dir.display());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let built_in = stdout
        .lines()
        .find_map(|l| l.strip_prefix("target_dir="))
        .context("the toolchain route did not say where it built")?;
    let wasm =
        Path::new(built_in).join("wasm32-wasip2/release").join(format!("{}.wasm", package.replace('-', "_")));
    let bytes = std::fs::read(&wasm).with_context(|| {
        format!("cargo succeeded but {} is missing (is crate-type cdylib?)", wasm.display())
    })?;
    Ok((bytes, manifest))
}

/// Loads the component as a supervisor would, with no grants: its world, schemes or policy
/// name must check out (nothing is written before it does). Returns a one-line summary.
pub fn check(bytes: &[u8], manifest: &Manifest) -> anyhow::Result<String> {
    let dir = ScratchDir::new()?;
    let file = dir.0.join(format!("{}.wasm", manifest.name));
    std::fs::write(&file, bytes).with_context(|| format!("cannot write {}", file.display()))?;
    let engine = PluginEngine::new(EngineOptions::default())?;
    let keys = std::sync::Arc::new(KeyCache::new(dir.0.join("no-keys")));
    let probe = PluginRegistry::new(engine, settings(&dir.0), keys);
    // Muted: the scratch registry has no sup.toml, so its warnings (every scheme "assigned to no
    // plugin") would mislead; whatever matters comes back in the status.
    let loaded =
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || probe.load_dir());
    let status = loaded?.into_iter().next().context("the plugin did not show in its folder")?;
    if status.state != PluginState::Loaded {
        bail!("the built {} does not load: {}", manifest.name, status.last_error.unwrap_or_default());
    }
    if status.world != Some(manifest.world) {
        bail!(
            "the built {} loaded as {:?}, but plugin.toml declares {}",
            manifest.name,
            status.world,
            manifest.world
        );
    }
    let detail = match manifest.world {
        // No [credentials] assigns them here, so its schemes all show as unassigned.
        World::CredentialSource => format!("schemes {}", status.unassigned_schemes.join(", ")),
        World::TopologyPolicy => format!("policy {}", status.topology_name.unwrap_or_default()),
        World::LifecycleHook => "lifecycle hooks".to_string(),
    };
    Ok(format!("{} {} ({}, {})", manifest.name, manifest.version, manifest.world, detail))
}

fn settings(dir: &Path) -> RegistrySettings {
    RegistrySettings {
        plugin_dir: dir.to_path_buf(),
        trust: TrustMode::Off,
        grants: BTreeMap::new(),
        credentials: credentials_with_defaults(&BTreeMap::new()),
        limits: Limits::default(),
    }
}

/// A private folder under the temp dir, removed on drop.
pub(super) struct ScratchDir(pub(super) PathBuf);

impl ScratchDir {
    pub(super) fn new() -> anyhow::Result<ScratchDir> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("warren-plugin-check-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(ScratchDir(p))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
