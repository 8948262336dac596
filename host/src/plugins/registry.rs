//! The plugin registry: the loaded plugins of the plugin folder, keyed by file. Loading a file
//! verifies the signature, reads the manifest, checks that the file is named after the plugin
//! (and, under strict trust, that a plugin sup.toml names is signed by an origin it lists),
//! intersects the grants, compiles and
//! pre-instantiates; only then is the new plugin swapped in (an `Arc` swap: calls in flight
//! finish on the old one). A broken replacement leaves the old plugin serving and records the
//! error. Schemes are routed by `[credentials]` (scheme → plugin name), never by what a plugin
//! declares or which loaded first.

use crate::clock::unix_now;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use super::loaded::{CredentialSourceHandle, HookHandle, LoadedPlugin, TopologyHandle};
use super::manifest::Manifest;
use super::policy::{self, Grant, Limits};
use super::signing::{self, SignatureStatus, TrustMode, TrustedKeys};
use super::{EngineOptions, PluginEngine, PluginError, WitVersion, World, wasm};
use crate::crypto::sodium::blake2b_256;

/// Largest plugin file accepted (componentize-py plugins are ~18 MB).
pub const MAX_PLUGIN_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct RegistrySettings {
    pub plugin_dir: PathBuf,
    pub trust: TrustMode,
    /// `[plugins.NAME]` grants, by plugin name.
    pub grants: BTreeMap<String, Grant>,
    /// `[credentials]`: the one plugin (by name) that serves each scheme. A scheme not listed
    /// is served by no plugin, whatever the plugins declare.
    pub credentials: BTreeMap<String, String>,
    pub limits: Limits,
}

/// The schemes of the example plugins, served by them unless `[credentials]` says otherwise.
pub const DEFAULT_CREDENTIALS: [(&str, &str); 3] = [("FILE", "file"), ("ENV", "env"), ("VAULT", "vault-kv")];

/// [`DEFAULT_CREDENTIALS`] with `overrides` (the `[credentials]` table) on top.
pub fn credentials_with_defaults(overrides: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut all: BTreeMap<String, String> =
        DEFAULT_CREDENTIALS.iter().map(|(s, n)| (s.to_string(), n.to_string())).collect();
    all.extend(overrides.iter().map(|(s, n)| (s.clone(), n.clone())));
    all
}

/// A plugin's name is its file's name: `[plugins.NAME]` and `[credentials]` name files the
/// operator put there, never whatever a manifest claims.
fn check_file_name(path: &Path, name: &str) -> Result<(), PluginError> {
    if path.file_stem().is_some_and(|stem| stem == name) {
        return Ok(());
    }
    Err(PluginError::NameMismatch {
        file: path
            .file_name()
            .map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned()),
        name: name.to_string(),
    })
}

/// With `plugin_trust = strict`, a plugin sup.toml names (grants or a scheme) must be signed by
/// an origin its `[plugins.NAME]` lists: a key trusted for one plugin does not vouch for all.
fn check_signer(name: &str, signature: &SignatureStatus, grant: Option<&Grant>) -> Result<(), PluginError> {
    let signer = signature.signer().unwrap_or("nobody");
    let origin =
        signer.parse::<crate::crypto::KeyId>().map(|k| k.name).unwrap_or_else(|_| signer.to_string());
    let allowed: Vec<&str> = grant.map(|g| g.allowed_signers().collect()).unwrap_or_default();
    if allowed.contains(&origin.as_str()) {
        return Ok(());
    }
    let why = if allowed.is_empty() {
        format!(
            "plugin {name} is named in sup.toml ([plugins.{name}] or [credentials]) but [plugins.{name}] \
             lists no signer; it is signed by origin {origin} (add signer = \"ORIGIN\" to accept an origin)"
        )
    } else {
        format!(
            "plugin {name} is signed by origin {origin}, not by one [plugins.{name}] accepts ({})",
            allowed.join(", ")
        )
    };
    Err(PluginError::Untrusted(why))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginState {
    /// Loaded and serving.
    Loaded,
    /// Serving the previous version: the replacement in the file failed to load.
    Stale,
    /// Not serving: the file failed to load.
    Failed,
}

/// One plugin file as `GET /plugins` and `warren plugin inspect` show it.
#[derive(Clone, Debug, Serialize)]
pub struct PluginStatus {
    pub file: PathBuf,
    pub name: Option<String>,
    pub world: Option<World>,
    /// The contract version it was built against (known once it loaded).
    pub wit: Option<WitVersion>,
    pub version: Option<String>,
    pub signer: Option<String>,
    pub signature: Option<SignatureStatus>,
    pub state: PluginState,
    pub last_error: Option<String>,
    /// Seconds since the Unix epoch of the last error.
    pub last_error_at: Option<u64>,
    pub blake2b: Option<String>,
    pub size: Option<u64>,
    pub schemes: Vec<String>,
    /// Schemes the plugin declares but `[credentials]` does not assign to it.
    pub unassigned_schemes: Vec<String>,
    /// What a topology policy's `name()` answered (what `svc load --topology` selects).
    pub topology_name: Option<String>,
    pub calls: u64,
    pub faults: u64,
}

#[derive(Default)]
struct Entry {
    plugin: Option<Arc<LoadedPlugin>>,
    last_error: Option<String>,
    last_error_at: Option<u64>,
    /// What the last failed file claimed to be (for status when nothing serves).
    failed: Option<(Manifest, Option<SignatureStatus>, String, u64)>,
    /// The last error was a name or scheme conflict with another file: retried when some
    /// plugin stops serving (its file removed or replaced), since that may free the name.
    conflict: bool,
}

/// Best-effort facts about a file that failed to load, without compiling it.
fn describe_failed(
    path: &Path,
    keys: &dyn TrustedKeys,
) -> Option<(Manifest, Option<SignatureStatus>, String, u64)> {
    let bytes = read_plugin_file(path).ok()?;
    let manifest = Manifest::from_component(&bytes).ok()?;
    let sig = signing::check(&bytes, keys).ok();
    Some((manifest, sig, hex::encode(blake2b_256(&bytes)), bytes.len() as u64))
}

/// The engine, or how to make it: a supervisor with an empty plugin folder starts no epoch
/// ticker and reserves no instance pool until the first plugin file shows up.
enum EngineSlot {
    Ready(Arc<PluginEngine>),
    Lazy(EngineOptions),
}

pub struct PluginRegistry {
    engine: Mutex<EngineSlot>,
    settings: RegistrySettings,
    keys: Arc<dyn TrustedKeys>,
    entries: RwLock<BTreeMap<PathBuf, Entry>>,
    /// Serializes loads (watcher thread and explicit calls) so checks and swaps do not interleave.
    load_lock: Mutex<()>,
    changes: tokio::sync::watch::Sender<u64>,
}

fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
        && path.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.'))
}

/// Reads a plugin file with a size bound. The bound holds on the read itself: a file that
/// grows after its size was checked is still refused, never read whole.
pub fn read_plugin_file(path: &Path) -> Result<Vec<u8>, PluginError> {
    let io = |e: std::io::Error| PluginError::Io { path: path.display().to_string(), source: e };
    let not_regular = || PluginError::NotAComponent(format!("{} is not a regular file", path.display()));
    let too_large =
        || PluginError::NotAComponent(format!("{} is larger than {MAX_PLUGIN_BYTES} bytes", path.display()));
    // Checked before opening too: opening a FIFO would block until a writer appears.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    if meta.len() > MAX_PLUGIN_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_PLUGIN_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_PLUGIN_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The topology policy name for a `--topology` flag: Habitat's `leader` is the bundled
/// `leader-follower` policy; any other value (`standalone`, a custom policy) names itself.
pub fn policy_for(topology_flag: &str) -> &str {
    match topology_flag {
        "leader" => "leader-follower",
        other => other,
    }
}

/// Which of the loaded policies, given as (plugin name, `name()`), `name` selects: the only one
/// whose `name()` it is, or among several the one installed as `name.wasm`.
fn choose_policy(name: &str, policies: &[(&str, Option<&str>)], dir: &str) -> Result<usize, PluginError> {
    let matching: Vec<usize> = (0..policies.len()).filter(|&i| policies[i].1 == Some(name)).collect();
    match matching.as_slice() {
        [one] => Ok(*one),
        [] => Err(PluginError::NoTopology {
            name: name.to_string(),
            dir: dir.to_string(),
            loaded: policies.iter().map(|&(plugin, policy)| describe_policy(plugin, policy)).collect(),
        }),
        many => many.iter().copied().find(|&i| policies[i].0 == name).ok_or_else(|| {
            PluginError::AmbiguousTopology {
                name: name.to_string(),
                plugins: many.iter().map(|&i| policies[i].0.to_string()).collect(),
            }
        }),
    }
}

/// A policy as an error lists it: its `name()`, and its plugin name when that differs.
fn describe_policy(plugin: &str, policy: Option<&str>) -> String {
    match policy {
        Some(n) if n == plugin => n.to_string(),
        Some(n) => format!("{n} (plugin {plugin})"),
        None => format!("? (plugin {plugin})"),
    }
}

/// What one load did to the set of serving plugins.
struct LoadOutcome {
    result: Result<Arc<LoadedPlugin>, PluginError>,
    /// A previous plugin of the file was replaced by one with another name or other schemes,
    /// so a file refused as a duplicate of it may load now.
    freed: bool,
}

impl PluginRegistry {
    pub fn new(
        engine: Arc<PluginEngine>,
        settings: RegistrySettings,
        keys: Arc<dyn TrustedKeys>,
    ) -> Arc<Self> {
        Self::with_slot(EngineSlot::Ready(engine), settings, keys)
    }

    /// A registry that creates its engine from `opts` when it first loads a plugin.
    pub fn new_lazy(
        opts: EngineOptions,
        settings: RegistrySettings,
        keys: Arc<dyn TrustedKeys>,
    ) -> Arc<Self> {
        Self::with_slot(EngineSlot::Lazy(opts), settings, keys)
    }

    fn with_slot(engine: EngineSlot, settings: RegistrySettings, keys: Arc<dyn TrustedKeys>) -> Arc<Self> {
        Arc::new(PluginRegistry {
            engine: Mutex::new(engine),
            settings,
            keys,
            entries: RwLock::new(BTreeMap::new()),
            load_lock: Mutex::new(()),
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// The engine, created now if this registry was made with `new_lazy`.
    pub fn engine(&self) -> Result<Arc<PluginEngine>, PluginError> {
        let mut slot = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        let engine = match &*slot {
            EngineSlot::Ready(engine) => return Ok(engine.clone()),
            EngineSlot::Lazy(opts) => PluginEngine::new(opts.clone())?,
        };
        tracing::info!("plugin engine started");
        *slot = EngineSlot::Ready(engine.clone());
        Ok(engine)
    }

    /// Whether the engine exists yet (always, unless made with `new_lazy`).
    pub fn engine_started(&self) -> bool {
        matches!(*self.engine.lock().unwrap_or_else(|p| p.into_inner()), EngineSlot::Ready(_))
    }

    /// A counter bumped whenever the set of serving plugins changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self) {
        self.changes.send_modify(|g| *g += 1);
    }

    /// Verifies, reads the manifest, grants and builds a plugin without registering it.
    pub fn prepare(&self, path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let bytes = read_plugin_file(path)?;
        wasm::check_component_header(&bytes)?;
        // Signature first: nothing of an untrusted file is compiled.
        let signature = if self.settings.trust == TrustMode::Off {
            signing::check(&bytes, self.keys.as_ref()).unwrap_or(SignatureStatus::Unsigned)
        } else {
            signing::check(&bytes, self.keys.as_ref())?
        };
        self.settings.trust.admit(&signature)?;
        let manifest = Manifest::from_component(&bytes)?;
        check_file_name(path, &manifest.name)?;
        let name = manifest.name.as_str();
        let grant = self.settings.grants.get(name);
        let named_for_a_scheme = self.settings.credentials.values().any(|n| n == name);
        if self.settings.trust == TrustMode::Strict && (grant.is_some() || named_for_a_scheme) {
            check_signer(name, &signature, grant)?;
        } else if self.settings.trust == TrustMode::Warn
            && grant.is_some_and(|g| g.allowed_signers().next().is_some())
            && let Err(e) = check_signer(name, &signature, grant)
        {
            tracing::warn!(file = %path.display(), "loading anyway (plugin_trust = warn): {e}");
        }
        let effective =
            policy::intersect(&manifest.requests, &grant.cloned().unwrap_or_default(), &self.settings.limits);
        let owns_scheme = |scheme: &str| self.settings.credentials.get(scheme).is_some_and(|n| n == name);
        let digest = blake2b_256(&bytes);
        LoadedPlugin::build(
            self.engine()?,
            path.to_path_buf(),
            &bytes,
            digest,
            &manifest,
            signature,
            effective,
            &owns_scheme,
        )
    }

    /// Loads (or reloads) one file and registers it. On failure the previous plugin of that
    /// file, if any, keeps serving and the error is recorded in its status.
    pub fn load_file(&self, path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let outcome = self.load_one(path);
        if outcome.freed {
            self.retry_conflicts();
        }
        outcome.result
    }

    fn load_one(&self, path: &Path) -> LoadOutcome {
        let _serial = self.load_lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = path.to_path_buf();
        // Unchanged content (a touch, a duplicate event): keep the plugin as is.
        if let (Ok(bytes), Some(current)) = (read_plugin_file(&path), self.loaded_at(&path))
            && hex::encode(blake2b_256(&bytes)) == current.info.blake2b
        {
            return LoadOutcome { result: Ok(current), freed: false };
        }
        let result = self.prepare(&path).and_then(|plugin| {
            self.check_conflicts(&path, &plugin)?;
            Ok(plugin)
        });
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let entry = entries.entry(path.clone()).or_default();
        match result {
            Ok(plugin) => {
                let previous = entry.plugin.replace(plugin.clone());
                let replaced = previous.is_some();
                let freed = previous.is_some_and(|old| old.name() != plugin.name());
                entry.last_error = None;
                entry.last_error_at = None;
                entry.failed = None;
                entry.conflict = false;
                drop(entries);
                tracing::info!(plugin = %plugin.name(), world = %plugin.info.world, file = %path.display(), replaced, "plugin loaded");
                for scheme in &plugin.info.unassigned_schemes {
                    let owner = self.settings.credentials.get(scheme).map_or("no plugin", String::as_str);
                    tracing::warn!(plugin = %plugin.name(), scheme = %scheme, "the plugin declares scheme {scheme}, which [credentials] in sup.toml assigns to {owner}: it gets no {scheme}: references");
                }
                self.bump();
                LoadOutcome { result: Ok(plugin), freed }
            }
            Err(e) => {
                entry.last_error = Some(e.to_string());
                entry.last_error_at = Some(unix_now());
                entry.failed = describe_failed(&path, self.keys.as_ref());
                entry.conflict = matches!(e, PluginError::DuplicateName { .. });
                let serving = entry.plugin.is_some();
                drop(entries);
                tracing::error!(file = %path.display(), error = %e, keeps_previous = serving, "plugin failed to load");
                LoadOutcome { result: Err(e), freed: false }
            }
        }
    }

    /// Retries the files last refused as duplicates, in file order: the plugin they clashed
    /// with may be gone. Repeats while a retry itself frees a name (bounded by the file count).
    fn retry_conflicts(&self) {
        let conflicted = |entries: &BTreeMap<PathBuf, Entry>| -> Vec<PathBuf> {
            entries.iter().filter(|(_, e)| e.conflict).map(|(f, _)| f.clone()).collect()
        };
        let mut pending = conflicted(&self.entries.read().unwrap_or_else(|p| p.into_inner()));
        let mut rounds = pending.len();
        while !pending.is_empty() && rounds > 0 {
            rounds -= 1;
            let mut freed = false;
            for file in &pending {
                let outcome = self.load_one(file);
                if outcome.result.is_ok() {
                    tracing::info!(file = %file.display(), "plugin refused as a duplicate loaded after the conflict went away");
                }
                freed |= outcome.freed;
            }
            if !freed {
                break;
            }
            pending = conflicted(&self.entries.read().unwrap_or_else(|p| p.into_inner()));
        }
    }

    fn loaded_at(&self, path: &Path) -> Option<Arc<LoadedPlugin>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).get(path).and_then(|e| e.plugin.clone())
    }

    fn check_conflicts(&self, path: &Path, new: &LoadedPlugin) -> Result<(), PluginError> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        for (file, entry) in entries.iter().filter(|(f, _)| f.as_path() != path) {
            let Some(other) = &entry.plugin else { continue };
            if other.name() == new.name() {
                return Err(PluginError::DuplicateName {
                    name: new.name().to_string(),
                    other: file.display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Unregisters the plugin of a removed file, then retries files refused as its duplicates.
    pub fn unload_file(&self, path: &Path) -> bool {
        let (known, had_plugin) = self.unload_one(path);
        if had_plugin {
            self.retry_conflicts();
        }
        known
    }

    /// Forgets a file; returns whether it was known and whether it was serving a plugin.
    fn unload_one(&self, path: &Path) -> (bool, bool) {
        let _serial = self.load_lock.lock().unwrap_or_else(|p| p.into_inner());
        let removed = self.entries.write().unwrap_or_else(|p| p.into_inner()).remove(path);
        let had_plugin = removed.as_ref().is_some_and(|e| e.plugin.is_some());
        if had_plugin {
            tracing::info!(file = %path.display(), "plugin unloaded (file removed)");
            self.bump();
        }
        (removed.is_some(), had_plugin)
    }

    /// Loads every `*.wasm` in the plugin folder and forgets files that disappeared.
    /// Individual failures are recorded in `status()`, not returned.
    pub fn load_dir(&self) -> Result<Vec<PluginStatus>, PluginError> {
        let dir = &self.settings.plugin_dir;
        let mut files = Vec::new();
        match std::fs::read_dir(dir) {
            Ok(rd) => {
                for e in rd.flatten() {
                    let p = e.path();
                    if is_plugin_file(&p) {
                        files.push(p);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(dir = %dir.display(), "plugin folder does not exist; no plugins loaded");
            }
            Err(e) => return Err(PluginError::Io { path: dir.display().to_string(), source: e }),
        }
        files.sort();
        // Fail here, not per file, when there are plugins and no engine can be made for them.
        if !files.is_empty() {
            self.engine()?;
        }
        let known: Vec<PathBuf> =
            self.entries.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        // Removals first, so a file that takes over a removed one's name is not refused.
        for gone in known.iter().filter(|k| k.starts_with(dir) && !files.contains(k)) {
            self.unload_one(gone);
        }
        let mut freed = false;
        for f in &files {
            freed |= self.load_one(f).freed;
        }
        if freed {
            self.retry_conflicts();
        }
        Ok(self.status())
    }

    /// Handles a change notification for a path in the plugin folder.
    pub fn refresh_path(&self, path: &Path) {
        self.refresh_paths([path]);
    }

    /// Handles one batch of change notifications: removals before additions (an upgrade by a
    /// new file name, or a rename, must not be refused as a duplicate of the file it
    /// replaces), then files refused as duplicates are retried if anything stopped serving.
    pub fn refresh_paths<'a>(&self, paths: impl IntoIterator<Item = &'a Path>) {
        let (present, gone): (Vec<&Path>, Vec<&Path>) =
            paths.into_iter().filter(|p| is_plugin_file(p)).partition(|p| p.exists());
        let mut freed = false;
        for p in gone {
            freed |= self.unload_one(p).1;
        }
        for p in present {
            freed |= self.load_one(p).freed;
        }
        if freed {
            self.retry_conflicts();
        }
    }

    fn serving(&self) -> Vec<Arc<LoadedPlugin>> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|e| e.plugin.clone())
            .collect()
    }

    /// Any serving plugin by name.
    pub fn plugin(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.serving().into_iter().find(|p| p.name() == name)
    }

    /// The credential source serving `scheme` (upper case, without the colon): the plugin
    /// `[credentials]` assigns it to, if that one is serving.
    pub fn get_credential_source(&self, scheme: &str) -> Option<CredentialSourceHandle> {
        let owner = self.settings.credentials.get(scheme)?;
        self.serving()
            .into_iter()
            .find(|p| {
                p.name() == owner
                    && p.info.world == World::CredentialSource
                    && p.info.schemes.iter().any(|s| s == scheme)
            })
            .and_then(|p| CredentialSourceHandle::new(p).ok())
    }

    /// Every scheme some loaded plugin serves.
    pub fn schemes(&self) -> Vec<String> {
        self.serving().iter().flat_map(|p| p.info.schemes.clone()).collect()
    }

    /// The topology policy by plugin (file) name.
    pub fn topology(&self, name: &str) -> Result<TopologyHandle, PluginError> {
        TopologyHandle::new(self.plugin(name).ok_or_else(|| PluginError::NotFound(name.to_string()))?)
    }

    /// The serving topology policy whose `name()` (asked when it loaded) is `name`: what
    /// `svc load --topology` selects (map Habitat's flag with [`policy_for`] first). When two
    /// answer the same name, the one installed as `name.wasm` wins; otherwise that is an error.
    /// None: the error lists the policies that are loaded.
    pub fn topology_named(&self, name: &str) -> Result<TopologyHandle, PluginError> {
        let policies: Vec<Arc<LoadedPlugin>> =
            self.serving().into_iter().filter(|p| p.info.world == World::TopologyPolicy).collect();
        let pairs: Vec<(&str, Option<&str>)> =
            policies.iter().map(|p| (p.name(), p.info.topology_name.as_deref())).collect();
        let dir = self.settings.plugin_dir.display().to_string();
        let at = choose_policy(name, &pairs, &dir)?;
        TopologyHandle::new(policies[at].clone())
    }

    pub fn hook(&self, name: &str) -> Result<HookHandle, PluginError> {
        HookHandle::new(self.plugin(name).ok_or_else(|| PluginError::NotFound(name.to_string()))?)
    }

    pub fn status(&self) -> Vec<PluginStatus> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .map(|(file, e)| {
                let state = match (&e.plugin, &e.last_error) {
                    (Some(_), None) => PluginState::Loaded,
                    (Some(_), Some(_)) => PluginState::Stale,
                    (None, _) => PluginState::Failed,
                };
                if let Some(p) = e.plugin.as_ref() {
                    return PluginStatus {
                        file: file.clone(),
                        name: Some(p.info.name.clone()),
                        world: Some(p.info.world),
                        wit: Some(p.info.wit),
                        version: Some(p.info.version.clone()),
                        signer: p.info.signature.signer().map(str::to_string),
                        signature: Some(p.info.signature.clone()),
                        state,
                        last_error: e.last_error.clone(),
                        last_error_at: e.last_error_at,
                        blake2b: Some(p.info.blake2b.clone()),
                        size: Some(p.info.size),
                        schemes: p.info.schemes.clone(),
                        unassigned_schemes: p.info.unassigned_schemes.clone(),
                        topology_name: p.info.topology_name.clone(),
                        calls: p.calls(),
                        faults: p.faults(),
                    };
                }
                let f = e.failed.as_ref();
                PluginStatus {
                    file: file.clone(),
                    name: f.map(|f| f.0.name.clone()),
                    world: f.map(|f| f.0.world),
                    wit: None,
                    version: f.map(|f| f.0.version.clone()),
                    signer: f.and_then(|f| f.1.as_ref()).and_then(|s| s.signer().map(str::to_string)),
                    signature: f.and_then(|f| f.1.clone()),
                    state,
                    last_error: e.last_error.clone(),
                    last_error_at: e.last_error_at,
                    blake2b: f.map(|f| f.2.clone()),
                    size: f.map(|f| f.3),
                    schemes: Vec::new(),
                    unassigned_schemes: Vec::new(),
                    topology_name: None,
                    calls: 0,
                    faults: 0,
                }
            })
            .collect()
    }

    /// The body of `GET /plugins`.
    pub fn plugins_json(&self) -> serde_json::Value {
        serde_json::json!({
            "plugin_path": self.settings.plugin_dir,
            "trust": self.settings.trust.to_string(),
            "plugins": self.status(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn habitat_leader_flag_maps_to_the_leader_follower_policy() {
        assert_eq!(policy_for("leader"), "leader-follower");
        assert_eq!(policy_for("standalone"), "standalone");
        assert_eq!(policy_for("my-raft"), "my-raft");
        assert_eq!(policy_for(""), "");
    }

    #[test]
    fn a_policy_is_chosen_by_name_and_a_tie_by_its_file() {
        let loaded =
            [("leader-follower", Some("leader-follower")), ("mine", Some("raft")), ("x", Some("raft"))];
        assert_eq!(choose_policy("leader-follower", &loaded, "/p").unwrap(), 0);
        let e = choose_policy("raft", &loaded, "/p").unwrap_err();
        assert!(matches!(e, PluginError::AmbiguousTopology { .. }), "{e}");
        assert!(e.to_string().contains("plugins mine, x all answer name() = \"raft\""), "{e}");
        let tie = [("raft", Some("raft")), ("copycat", Some("raft"))];
        assert_eq!(choose_policy("raft", &tie, "/p").unwrap(), 0);
        // The plugin (file) name alone selects nothing.
        let e = choose_policy("mine", &loaded, "/p").unwrap_err();
        assert!(e.to_string().ends_with("leader-follower, raft (plugin mine), raft (plugin x)"), "{e}");
        assert!(matches!(choose_policy("raft", &[], "/p"), Err(PluginError::NoTopology { .. })));
    }

    #[test]
    fn no_policy_error_lists_the_loaded_ones() {
        let e = PluginError::NoTopology {
            name: "raft".into(),
            dir: "/hab/plugins".into(),
            loaded: vec!["leader-follower".into(), "solo (plugin standalone)".into()],
        };
        assert_eq!(
            e.to_string(),
            "no topology-policy plugin whose name() is \"raft\" is loaded from /hab/plugins; \
             loaded topology policies: leader-follower, solo (plugin standalone)"
        );
        let none = PluginError::NoTopology { name: "raft".into(), dir: "/p".into(), loaded: vec![] };
        assert!(none.to_string().ends_with("no topology policy is loaded"), "{none}");
    }
}
