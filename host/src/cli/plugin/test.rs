//! `warren plugin test FILE.wasm`: load one plugin under exactly the grants given on the command
//! line, make one call, and print its result and the host calls it made. A capability it was not
//! granted shows up as what the plugin got back (absent, refused), never as a crash of this tool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::Value;

use super::capture::{Event, capture};
use crate::crypto::KeyCache;
use crate::plugins::bindings::{
    Credential, CredentialError, ElectionStatus, GroupView, Health, Member, PackageIdent, Role,
    ServiceContext, ServicePaths, TopologyHealth,
};
use crate::plugins::registry::credentials_with_defaults;
use crate::plugins::{
    EngineOptions, Grant, Limits, Manifest, PluginEngine, PluginRegistry, PluginState, RegistrySettings,
    TrustMode,
};

/// The one call to make.
pub enum Call {
    Resolve(String),
    Decide(String),
    Hook(String),
}

/// The hook events `--hook` takes.
pub const HOOK_EVENTS: [&str; 6] =
    ["init", "health-check", "reconfigure", "suitability", "file-updated", "post-stop"];

fn registry(
    dir: &Path,
    cache: &Path,
    name: &str,
    grant: &Grant,
    credentials: BTreeMap<String, String>,
) -> anyhow::Result<Arc<PluginRegistry>> {
    let engine = PluginEngine::new(EngineOptions {
        cache_dir: Some(cache.to_path_buf()),
        ..EngineOptions::default()
    })?;
    let settings = RegistrySettings {
        plugin_dir: dir.to_path_buf(),
        trust: TrustMode::Off,
        grants: BTreeMap::from([(name.to_string(), grant.clone())]),
        credentials: credentials_with_defaults(&credentials),
        limits: Limits::default(),
    };
    Ok(PluginRegistry::new(engine, settings, Arc::new(KeyCache::new(dir.join("no-keys")))))
}

/// Runs the call; returns the lines to print.
pub fn run(file: &Path, grant: &Grant, call: &Call, show_value: bool) -> anyhow::Result<Vec<String>> {
    grant.validate().map_err(|e| anyhow::anyhow!("bad grant: {e}"))?;
    let bytes = crate::plugins::registry::read_plugin_file(file)?;
    let manifest = Manifest::from_component(&bytes).with_context(|| format!("{}", file.display()))?;
    let scratch = super::build::ScratchDir::new()?;
    let plugins = scratch.0.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::write(plugins.join(format!("{}.wasm", manifest.name)), &bytes)?;
    let cache = scratch.0.join("cache");
    // First load: learn its schemes; then assign them to it (a second load, from the compile cache).
    let first = registry(&plugins, &cache, &manifest.name, grant, BTreeMap::new())?;
    let status = first.load_dir()?.into_iter().next().context("the plugin did not show in its folder")?;
    if status.state != PluginState::Loaded {
        bail!("{} does not load: {}", file.display(), status.last_error.unwrap_or_default());
    }
    let schemes: BTreeMap<String, String> =
        status.unassigned_schemes.iter().map(|s| (s.clone(), manifest.name.clone())).collect();
    let reg = registry(&plugins, &cache, &manifest.name, grant, schemes)?;
    reg.load_dir()?;
    let mut out = vec![format!(
        "plugin {} {} ({}) granted env={:?} read_paths={:?} http_hosts={:?}",
        manifest.name, manifest.version, manifest.world, grant.env, grant.read_paths, grant.http_hosts
    )];
    let (result, events) = capture(|| call_once(&reg, &manifest, call, show_value));
    out.extend(events.iter().map(describe));
    out.push(result?);
    Ok(out)
}

fn describe(e: &Event) -> String {
    let fields = if e.fields.is_empty() { String::new() } else { format!(" [{}]", e.fields) };
    format!("{} {:<5} {}{fields}", e.source, e.level, e.message)
}

fn call_once(
    reg: &PluginRegistry,
    manifest: &Manifest,
    call: &Call,
    show_value: bool,
) -> anyhow::Result<String> {
    Ok(match call {
        Call::Resolve(reference) => {
            let scheme = reference.split_once(':').map(|(s, _)| s.to_ascii_uppercase()).unwrap_or_default();
            let source = reg
                .get_credential_source(&scheme)
                .with_context(|| format!("{} does not serve the scheme of {reference:?}", manifest.name))?;
            match source.resolve(reference)? {
                Ok(c) => credential_line(&c, show_value),
                Err(e) => format!("result: error {}", error_line(&e)),
            }
        }
        Call::Decide(json) => {
            let view = group_view(json)?;
            let d = reg.topology(&manifest.name)?.decide(&view)?;
            let roles: Vec<String> = d.roles.iter().map(|(id, r)| format!("{id}={}", role(*r))).collect();
            format!("result: election_needed={} roles: {}", d.election_needed, roles.join(" "))
        }
        Call::Hook(event) => {
            let hook = reg.hook(&manifest.name)?;
            let ctx = service_context();
            let unit = |r: Result<(), String>| {
                r.map_or_else(|e| format!("result: err {e:?}"), |()| "result: ok".into())
            };
            match event.as_str() {
                "init" => unit(hook.init(&ctx)?),
                "health-check" => format!("result: {}", health(hook.health_check(&ctx)?)),
                "reconfigure" => unit(hook.reconfigure(&ctx)?),
                "suitability" => format!("result: {}", hook.suitability(&ctx)?),
                "file-updated" => unit(hook.file_updated(&ctx, "app.conf")?),
                "post-stop" => unit(hook.post_stop(&ctx)?),
                other => bail!("unknown hook event {other:?} (one of {})", HOOK_EVENTS.join(", ")),
            }
        }
    })
}

fn credential_line(c: &Credential, show_value: bool) -> String {
    let value = if show_value {
        format!("{:?}", c.value)
    } else {
        format!("[{} bytes; --show-value prints it]", c.value.len())
    };
    format!("result: credential {value} ttl_seconds={:?} watch_paths={:?}", c.ttl_seconds, c.watch_paths)
}

fn error_line(e: &CredentialError) -> String {
    match e {
        CredentialError::NotFound(m) => format!("not-found: {m}"),
        CredentialError::Denied(m) => format!("denied: {m}"),
        CredentialError::InvalidReference(m) => format!("invalid-reference: {m}"),
        CredentialError::Unavailable(m) => format!("unavailable: {m}"),
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Standalone => "standalone",
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::None => "none",
    }
}

fn health(h: Health) -> &'static str {
    match h {
        Health::Ok => "ok",
        Health::Warning => "warning",
        Health::Critical => "critical",
        Health::Unknown => "unknown",
    }
}

/// `{"members": [{"id": "a", "health": "alive", "suitability": 0}], "leader": "a", ...}`; the
/// counts, quorum and self_id (the first member) are derived when not given.
pub fn group_view(json: &str) -> anyhow::Result<GroupView> {
    let v: Value = serde_json::from_str(json).context("--decide takes a JSON object")?;
    let mut members = Vec::new();
    for m in v["members"].as_array().context("--decide: \"members\" must be a list")? {
        let id = m["id"].as_str().context("--decide: every member needs an \"id\"")?.to_string();
        let health = match m["health"].as_str().unwrap_or("alive") {
            "alive" => TopologyHealth::Alive,
            "suspect" => TopologyHealth::Suspect,
            "confirmed" => TopologyHealth::Confirmed,
            "departed" => TopologyHealth::Departed,
            "left" => TopologyHealth::Left,
            other => bail!("--decide: unknown health {other:?}"),
        };
        members.push(Member { id, health, suitability: m["suitability"].as_u64().unwrap_or(0) });
    }
    let first = members.first().context("--decide: at least one member")?.id.clone();
    let counted =
        members.iter().filter(|m| !matches!(m.health, TopologyHealth::Departed | TopologyHealth::Left));
    let population = v["population"].as_u64().unwrap_or(counted.clone().count() as u64) as u32;
    let alive =
        v["alive"].as_u64().unwrap_or(counted.filter(|m| m.health == TopologyHealth::Alive).count() as u64)
            as u32;
    let leader = v["leader"].as_str().map(str::to_string);
    let status = match v["status"].as_str() {
        Some("in-progress") => ElectionStatus::InProgress,
        Some("no-quorum") => ElectionStatus::NoQuorum,
        Some("finished") => ElectionStatus::Finished,
        Some("none") => ElectionStatus::None,
        None if leader.is_some() => ElectionStatus::Finished,
        None => ElectionStatus::None,
        Some(other) => bail!("--decide: unknown status {other:?}"),
    };
    Ok(GroupView {
        group: v["group"].as_str().unwrap_or("app.default").to_string(),
        self_id: v["self_id"].as_str().map_or(first, str::to_string),
        members,
        leader,
        term: v["term"].as_u64().unwrap_or(0),
        status,
        quorum: v["quorum"].as_bool().unwrap_or(alive * 2 > population),
        alive,
        population,
    })
}

/// A made-up service for `--hook`: app.default running acme/app, under /hab/svc/app.
fn service_context() -> ServiceContext {
    let svc = PathBuf::from("/hab/svc/app");
    let p = |s: &str| svc.join(s).display().to_string();
    ServiceContext {
        service: "app".into(),
        group: "default".into(),
        config_toml: "port = 8080\n".into(),
        ident: PackageIdent {
            origin: "acme".into(),
            name: "app".into(),
            version: "0.1.0".into(),
            release: "20260101000000".into(),
        },
        member_id: "0123456789abcdef0123456789abcdef".into(),
        paths: ServicePaths {
            svc: svc.display().to_string(),
            config: p("config"),
            data: p("data"),
            files: p("files"),
            var: p("var"),
            logs: p("logs"),
        },
    }
}
