//! The real guest components (built once by scripts/build-plugins.sh, under a file lock, when
//! missing or stale), one shared engine per test binary, registries over temp folders.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use warren::crypto::KeyCache;
use warren::plugins::{
    EngineOptions, Grant, Limits, PluginEngine, PluginRegistry, RegistrySettings, TrustMode,
};

use super::fixtures::repo_root;

const PLUGINS: [&str; 6] = ["env", "file", "vault-kv", "standalone", "leader-follower", "hook-example"];
const FIXTURES: [&str; 11] = [
    "spin",
    "hog",
    "panicker",
    "snoop",
    "snoop-http",
    "impostor",
    "hook-v0-1",
    "hook-faulty",
    "cred-v0-1",
    "topo-v0-1",
    "topo-faulty",
];

fn newest_source(dir: &Path, newest: &mut SystemTime) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if p.is_dir() {
            newest_source(&p, newest);
        } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
            *newest = (*newest).max(m);
        }
    }
}

fn all_paths() -> impl Iterator<Item = PathBuf> {
    PLUGINS.iter().map(|n| plugin_path(n)).chain(FIXTURES.iter().map(|n| fixture_path(n)))
}

fn all_built_and_fresh() -> bool {
    let root = repo_root();
    let mut newest = SystemTime::UNIX_EPOCH;
    newest_source(&root.join("plugins"), &mut newest);
    newest_source(&root.join("wit"), &mut newest);
    // The build script leaves unchanged outputs untouched, so a successful build also stamps.
    let stamp = std::fs::metadata(stamp_path()).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    all_paths()
        .all(|p| std::fs::metadata(&p).and_then(|m| m.modified()).is_ok_and(|t| t.max(stamp) >= newest))
}

fn stamp_path() -> PathBuf {
    repo_root().join("target/plugins/.tests-built-stamp")
}

/// Builds the guest plugins once if any is missing or older than its sources. Never skips:
/// a failed build fails the test.
pub fn ensure_plugins_built() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if all_built_and_fresh() {
            return;
        }
        let root = repo_root();
        std::fs::create_dir_all(root.join("target")).unwrap();
        let lock = std::fs::File::create(root.join("target/build-plugins.lock")).unwrap();
        lock.lock().unwrap(); // another test binary may be building: wait for it
        if !all_built_and_fresh() {
            let status = std::process::Command::new(root.join("scripts/build-plugins.sh"))
                .current_dir(&root)
                .status()
                .expect("cannot run scripts/build-plugins.sh");
            assert!(
                status.success(),
                "scripts/build-plugins.sh failed; the plugin tests need the real components"
            );
            std::fs::write(stamp_path(), b"").unwrap();
        }
        assert!(all_built_and_fresh(), "plugins still missing after scripts/build-plugins.sh");
    });
}

fn plugin_path(name: &str) -> PathBuf {
    repo_root().join("target/plugins").join(format!("{name}.wasm"))
}

fn fixture_path(name: &str) -> PathBuf {
    repo_root().join("target/plugins/fixtures").join(format!("{name}.wasm"))
}

/// target/plugins/NAME.wasm (or fixtures/NAME.wasm), built if needed.
pub fn wasm(name: &str) -> PathBuf {
    ensure_plugins_built();
    if FIXTURES.contains(&name) { fixture_path(name) } else { plugin_path(name) }
}

/// `sup run` arguments for a supervisor in `dir` with the file plugin (`dir/plugins/file.wasm`)
/// granted `dir/secrets` (created; put the secret files there), its sup.toml being that grant
/// followed by `more_toml`.
pub fn with_file_plugin(dir: &std::path::Path, more_toml: &str) -> Vec<String> {
    let (plugins, secrets) = (dir.join("plugins"), dir.join("secrets"));
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::copy(wasm("file"), plugins.join("file.wasm")).unwrap();
    let config = dir.join("sup.toml");
    let grant = format!("plugin_trust = \"off\"\n[plugins.file]\nread_paths = [\"{}\"]\n", secrets.display());
    std::fs::write(&config, grant + more_toml).unwrap();
    ["--config", config.to_str().unwrap(), "--plugin-path", plugins.to_str().unwrap()]
        .map(String::from)
        .to_vec()
}

pub fn wasm_bytes(name: &str) -> Vec<u8> {
    std::fs::read(wasm(name)).unwrap()
}

/// The compile cache of the shared engine: kept under target/tmp on purpose, so repeated runs
/// skip compiling the guest components (entries are keyed by the wasm's BLAKE2b and the
/// engine's fingerprint, so a rebuilt plugin or a changed engine never reuses a stale entry).
/// Entries for wasm that is no longer built are removed when the engine starts, so the folder
/// holds about one compiled copy of each current guest. Tests that check the cache itself use
/// a private one.
pub fn compile_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-compile-cache")
}

fn prune_compile_cache(dir: &Path) {
    let current: BTreeSet<String> = all_paths()
        .map(|p| hex::encode(warren::crypto::sodium::blake2b_256(&std::fs::read(p).unwrap())))
        .collect();
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let digest = name.split('-').next().unwrap_or_default();
        // Only finished entries: a `.tmp` file may be another test process mid-write.
        if name.ends_with(".cwasm") && !current.contains(digest) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// One engine per test binary (as in the supervisor), with the persistent compile cache.
pub fn engine() -> Arc<PluginEngine> {
    static ENGINE: OnceLock<Arc<PluginEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            ensure_plugins_built();
            let dir = compile_cache_dir();
            prune_compile_cache(&dir);
            PluginEngine::new(EngineOptions { cache_dir: Some(dir), ..EngineOptions::default() }).unwrap()
        })
        .clone()
}

/// `[credentials]` of the test registries: the defaults, and each test fixture serving the
/// scheme it declares (as an operator would assign them).
pub fn test_credentials() -> BTreeMap<String, String> {
    let fixtures = [
        ("PANIC", "panicker"),
        ("HOG", "hog"),
        ("SPIN", "spin"),
        ("SNOOP", "snoop"),
        ("SNOOPHTTP", "snoop-http"),
        ("IMPOSTOR", "impostor"),
        ("OLDCRED", "cred-v0-1"),
    ];
    let extra = fixtures.iter().map(|(s, n)| (s.to_string(), n.to_string())).collect();
    warren::plugins::registry::credentials_with_defaults(&extra)
}

pub fn registry_with(
    dir: &Path,
    grants: BTreeMap<String, Grant>,
    trust: TrustMode,
    keys: &Path,
) -> Arc<PluginRegistry> {
    let settings = RegistrySettings {
        plugin_dir: dir.to_path_buf(),
        trust,
        grants,
        credentials: test_credentials(),
        limits: Limits::default(),
    };
    PluginRegistry::new(engine(), settings, Arc::new(KeyCache::new(keys)))
}

/// A registry over `dir` with trust off and the given grants.
pub fn registry(dir: &Path, grants: &[(&str, Grant)]) -> Arc<PluginRegistry> {
    let grants = grants.iter().map(|(n, g)| (n.to_string(), g.clone())).collect();
    registry_with(dir, grants, TrustMode::Off, &dir.join("no-keys"))
}

/// Copies real plugins into `dir` (as NAME.wasm).
pub fn install(dir: &Path, names: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for n in names {
        std::fs::copy(wasm(n), dir.join(format!("{n}.wasm"))).unwrap();
    }
}

/// Resident set size of this process in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
