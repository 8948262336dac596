//! The plugin vendor kit: `warren plugin new` scaffolds a standalone plugin crate, `warren
//! plugin build` compiles it to a checked (and optionally signed) component.

pub mod scaffold;
pub mod toolchain;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use super::keys::CacheArgs;
use crate::config::SupConfig;
use crate::plugins::{EngineOptions, PluginEngine, PluginRegistry, TrustMode, World};

#[derive(ValueEnum, Clone, Copy, Debug)]
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

#[derive(Args, Debug)]
pub struct NewArgs {
    /// The plugin's name: lower-case letters, digits and '-' (its file is NAME.wasm; a
    /// credential source serves the scheme NAME in upper case, '-' as '_').
    pub name: String,
    /// The world it implements.
    #[arg(long)]
    pub world: WorldArg,
    /// Where to write the crate [default: ./NAME]; must not exist or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The plugin crate (with Cargo.toml and plugin.toml) [default: .].
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Sign the result with the latest secret SIG key of ORIGIN from the key cache.
    #[arg(long, value_name = "ORIGIN")]
    pub sign: Option<String>,
    /// Where to write the component [default: DIR/NAME.wasm].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Cargo's target dir [default: $CARGO_TARGET_DIR, else DIR/target].
    #[arg(long)]
    pub target_dir: Option<PathBuf>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

pub fn new(a: NewArgs) -> anyhow::Result<()> {
    scaffold::check_name(&a.name)?;
    let world = World::from(a.world);
    let dir = a.dir.unwrap_or_else(|| PathBuf::from(&a.name));
    scaffold::write(&dir, &a.name, world)?;
    outln!("created {} ({world} plugin {}, contract {})", dir.display(), a.name, scaffold::CONTRACT)?;
    outln!("next: cd {} && cargo test && warren plugin build --sign ORIGIN", dir.display())?;
    outln!("{}", scaffold::usage(&a.name, world))?;
    Ok(())
}

/// What `plugin.toml` and `Cargo.toml` say: the plugin's name and world, the crate's name.
struct Crate {
    name: String,
    world: World,
    package: String,
}

fn read_crate(dir: &Path) -> anyhow::Result<Crate> {
    let read = |f: &str| -> anyhow::Result<toml::Table> {
        let p = dir.join(f);
        let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", p.display()))
    };
    let manifest = crate::plugins::Manifest::parse(
        std::fs::read(dir.join("plugin.toml"))
            .with_context(|| {
                format!("cannot read {} (is it a plugin crate?)", dir.join("plugin.toml").display())
            })?
            .as_slice(),
    )
    .with_context(|| format!("{}", dir.join("plugin.toml").display()))?;
    let cargo = read("Cargo.toml")?;
    let package = cargo
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .with_context(|| format!("{} has no [package] name", dir.join("Cargo.toml").display()))?
        .to_string();
    Ok(Crate { name: manifest.name, world: manifest.world, package })
}

pub fn build(a: BuildArgs) -> anyhow::Result<()> {
    let c = read_crate(&a.dir)?;
    let route = toolchain::find()?;
    let target_dir = match (&a.target_dir, std::env::var_os("CARGO_TARGET_DIR")) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => PathBuf::from(t),
        (None, None) => a.dir.join("target"),
    };
    let (mut cmd, dir) = route.cargo_build(&a.dir.join("Cargo.toml"), &target_dir);
    eprintln!("warren: building {} ({}, route {}) ...", c.name, c.world, route.label());
    let started = std::time::Instant::now();
    let status = cmd.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build failed for {} ({status})", a.dir.display());
    }
    let built =
        dir.join(toolchain::TARGET).join("release").join(format!("{}.wasm", c.package.replace('-', "_")));
    let bytes = std::fs::read(&built).with_context(|| format!("cargo built no {}", built.display()))?;
    check(&c, &bytes, &dir.join("warren-plugin-check"))?;
    let out = a.out.unwrap_or_else(|| a.dir.join(format!("{}.wasm", c.name)));
    let bytes = match &a.sign {
        Some(origin) => super::plugin::sign_bytes(&a.cache.cache(), origin, &bytes)?.0,
        None => bytes,
    };
    crate::fsutil::write_atomic(&out, &bytes, crate::fsutil::DEFAULT_MODE, crate::fsutil::Existing::Replace)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let signed = a.sign.as_deref().map(|o| format!(", signed by {o}")).unwrap_or_default();
    outln!(
        "built {} ({} plugin {}, {} bytes{signed}) in {:.1} s",
        out.display(),
        c.world,
        c.name,
        bytes.len(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// The component must carry the crate's manifest and implement its world: it is compiled and
/// instantiated as the supervisor would (no grants, signature not checked yet).
/// `scratch` is a folder of cargo's target dir: the registry wants a file named NAME.wasm.
fn check(c: &Crate, bytes: &[u8], scratch: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let file = scratch.join(format!("{}.wasm", c.name));
    std::fs::write(&file, bytes).with_context(|| format!("cannot write {}", file.display()))?;
    let settings =
        SupConfig::default().registry_settings(Some(scratch), Some(TrustMode::Off), TrustMode::Off);
    let engine = PluginEngine::new(EngineOptions { cache_dir: None, ..EngineOptions::default() })?;
    let no_keys = crate::crypto::KeyCache::new(scratch.join("no-keys"));
    let registry = PluginRegistry::new(engine, settings, Arc::new(no_keys));
    // The manifest names the world; building for it fails when the exports do not match.
    registry
        .prepare(&file)
        .with_context(|| format!("the built component does not load as a {} plugin", c.world))?;
    Ok(())
}
