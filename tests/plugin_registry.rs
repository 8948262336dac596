//! The plugin folder: drop in, replace (atomic swap, in-flight handles keep working), broken
//! replacement (old one stays, error shown), removal; and 10,000 faulty calls.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use support::files::write_atomic;
use support::plugins::{install, registry, rss_kib, wasm, wasm_bytes};
use support::wait::wait_for;
use warren::plugins::{Grant, PluginError, PluginRegistry, PluginState};
use warren::watch::FileWatch;

const WAIT: Duration = Duration::from_secs(20);

/// The same plugin with different bytes (an extra custom section), i.e. a new version.
fn variant(name: &str, tag: &[u8]) -> Vec<u8> {
    let mut b = wasm_bytes(name);
    b.extend_from_slice(&warren::plugins::wasm::encode_custom_section("test-variant", tag));
    b
}

#[test]
fn hot_reload_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("t"), "v").unwrap();
    let reg = registry(
        dir.path(),
        &[("file", Grant { read_paths: vec![secrets.path().into()], ..Grant::default() })],
    );
    reg.load_dir().unwrap();
    let _watcher = reg.watch(&FileWatch::start().unwrap()).unwrap();
    let path = dir.path().join("file.wasm");
    let reference = format!("FILE:{}/t", secrets.path().display());

    // Drop in: registered.
    write_atomic(&path, wasm_bytes("file"));
    let src = wait_for(WAIT, || reg.get_credential_source("FILE")).expect("dropped-in plugin registered");
    assert_eq!(src.resolve(&reference).unwrap().unwrap().value, "v");
    let v1 = src.plugin().info.blake2b.clone();

    // Replace: swapped; the handle taken before the swap keeps working on the old plugin.
    write_atomic(&path, variant("file", b"2"));
    let src2 = wait_for(WAIT, || reg.get_credential_source("FILE").filter(|s| s.plugin().info.blake2b != v1))
        .expect("swapped");
    assert_eq!(src2.resolve(&reference).unwrap().unwrap().value, "v");
    assert_eq!(src.resolve(&reference).unwrap().unwrap().value, "v", "old handle still serves");
    let v2 = src2.plugin().info.blake2b.clone();

    // Broken replacement: the old one stays, the error is shown.
    write_atomic(&path, b"\0asm\x0d\0\x01\0garbage");
    let st = wait_for(WAIT, || reg.status().into_iter().find(|s| s.state == PluginState::Stale))
        .expect("stale state shown");
    assert!(st.last_error.as_deref().unwrap().contains("malformed"), "{:?}", st.last_error);
    assert_eq!(st.blake2b.as_deref(), Some(v2.as_str()));
    let still = reg.get_credential_source("FILE").expect("old plugin still serving");
    assert_eq!(still.plugin().info.blake2b, v2);
    assert_eq!(still.resolve(&reference).unwrap().unwrap().value, "v");
    assert_eq!(reg.plugins_json()["plugins"][0]["state"], "stale");

    // Fixed again: loaded, error cleared.
    write_atomic(&path, variant("file", b"3"));
    wait_for(WAIT, || {
        reg.status()
            .into_iter()
            .find(|s| s.state == PluginState::Loaded && s.blake2b.as_deref() != Some(v2.as_str()))
    })
    .expect("recovered");

    // Removed: unregistered.
    std::fs::remove_file(&path).unwrap();
    wait_for(WAIT, || reg.get_credential_source("FILE").is_none().then_some(())).expect("unregistered");
    assert!(reg.status().is_empty());
    assert_eq!(src2.resolve(&reference).unwrap().unwrap().value, "v", "a handle outlives removal");
}

#[test]
fn a_plugin_is_named_by_its_file_not_by_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["env"]);
    // A copy under another name, and vault-kv's component posing as evil.wasm: both claim a name
    // whose [plugins.NAME] grants they must not get.
    std::fs::write(dir.path().join("env-copy.wasm"), variant("env", b"x")).unwrap();
    std::fs::copy(wasm("vault-kv"), dir.path().join("evil.wasm")).unwrap();
    let vault_grant = Grant { env: vec!["VAULT_TOKEN".into()], ..Grant::default() };
    let reg = registry(dir.path(), &[env_grant()[0].clone(), ("vault-kv", vault_grant)]);
    reg.load_dir().unwrap();
    let st = reg.status();
    let loaded: Vec<_> =
        st.iter().filter(|s| s.state == PluginState::Loaded).map(|s| s.file.clone()).collect();
    assert_eq!(loaded, vec![dir.path().join("env.wasm")], "{st:?}");
    for (file, name) in [("env-copy.wasm", "env"), ("evil.wasm", "vault-kv")] {
        let f = st.iter().find(|s| s.file == dir.path().join(file)).unwrap();
        assert_eq!(f.state, PluginState::Failed);
        let err = f.last_error.as_deref().unwrap();
        assert!(err.contains(file) && err.contains(&format!("{name:?}")), "names both: {err}");
    }
    assert!(reg.plugin("vault-kv").is_none() && reg.get_credential_source("VAULT").is_none());
    assert!(matches!(
        reg.load_file(&dir.path().join("evil.wasm")),
        Err(PluginError::NameMismatch { name, .. }) if name == "vault-kv"
    ));
}

#[test]
fn schemes_go_to_the_plugin_credentials_names_not_the_first_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("ring"), "the-real-value").unwrap();
    // impostor.wasm sorts (and loads) before file.wasm and env.wasm, and declares FILE and ENV.
    install(dir.path(), &["impostor", "file", "env"]);
    let reg = registry(
        dir.path(),
        &[
            ("file", Grant { read_paths: vec![secrets.path().into()], ..Grant::default() }),
            env_grant()[0].clone(),
        ],
    );
    reg.load_dir().unwrap();
    let st = reg.status();
    assert!(st.iter().all(|s| s.state == PluginState::Loaded), "{st:?}");
    let reference = format!("FILE:{}/ring", secrets.path().display());
    let file = reg.get_credential_source("FILE").unwrap();
    assert_eq!(file.plugin().name(), "file");
    assert_eq!(file.resolve(&reference).unwrap().unwrap().value, "the-real-value");
    assert_eq!(env_served_by(&reg).unwrap().1, "warren");
    let via = |r: &str| warren::credentials::resolve_once(&reg, r).map(|v| v.value.as_str().to_string());
    assert_eq!(via(&reference).unwrap(), "the-real-value");
    assert_eq!(via("IMPOSTOR:x").unwrap(), "impostor-chosen-value", "its assigned scheme works");
    // Shown in /plugins: what it serves and what it declared in vain.
    let imp = st.iter().find(|s| s.name.as_deref() == Some("impostor")).unwrap();
    assert_eq!(imp.schemes, vec!["IMPOSTOR"]);
    assert_eq!(imp.unassigned_schemes, vec!["FILE", "ENV"]);
    let j = reg.plugins_json();
    let imp = j["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "impostor").unwrap();
    assert_eq!(imp["unassigned_schemes"], serde_json::json!(["FILE", "ENV"]));
    // Without file.wasm, FILE is served by nobody rather than by the impostor.
    std::fs::remove_file(dir.path().join("file.wasm")).unwrap();
    reg.load_dir().unwrap();
    assert!(reg.get_credential_source("FILE").is_none());
    assert!(matches!(via(&reference), Err(warren::credentials::ResolveError::NoPlugin { .. })));
}

#[test]
fn ten_thousand_faulty_calls() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["panicker", "env", "hog"]);
    let reg =
        registry(dir.path(), &[("env", Grant { env: vec!["CARGO_PKG_NAME".into()], ..Grant::default() })]);
    reg.load_dir().unwrap();
    let panicker = reg.get_credential_source("PANIC").unwrap();
    let hog = reg.get_credential_source("HOG").unwrap();
    let env = reg.get_credential_source("ENV").unwrap();
    // Warm up so allocator pools and caches reach their steady state before measuring.
    for _ in 0..500 {
        assert!(panicker.resolve("PANIC:x").is_err());
    }
    let before = rss_kib();
    for i in 0..10_000 {
        assert!(matches!(panicker.resolve("PANIC:x"), Err(PluginError::Trap { .. })));
        if i % 1000 == 0 {
            assert!(matches!(hog.resolve("HOG:x"), Err(PluginError::MemoryExhausted { .. })));
            assert_eq!(env.resolve("ENV:CARGO_PKG_NAME").unwrap().unwrap().value, "warren");
        }
    }
    let after = rss_kib();
    eprintln!("RSS before {before} KiB, after 10,000 faulty calls {after} KiB");
    assert!(after < before + 64 * 1024, "RSS grew from {before} KiB to {after} KiB");
    assert_eq!(env.resolve("ENV:CARGO_PKG_NAME").unwrap().unwrap().value, "warren", "still serving");
    assert!(reg.plugin("panicker").unwrap().faults() >= 10_500);
}

/// The file currently serving scheme ENV, with the value it resolves (the grant allows
/// CARGO_PKG_NAME, which cargo sets to "warren" for this test binary).
fn env_served_by(reg: &PluginRegistry) -> Option<(PathBuf, String)> {
    let src = reg.get_credential_source("ENV")?;
    let value = src.resolve("ENV:CARGO_PKG_NAME").ok()?.ok()?.value;
    Some((src.plugin().info.file.clone(), value))
}

fn env_grant() -> [(&'static str, Grant); 1] {
    [("env", Grant { env: vec!["CARGO_PKG_NAME".into()], ..Grant::default() })]
}

/// A registry over a fresh folder holding the env plugin as `file`, loaded.
fn env_loaded_as(file: &str) -> (tempfile::TempDir, PathBuf, Arc<PluginRegistry>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    std::fs::copy(wasm("env"), &path).unwrap();
    let reg = registry(dir.path(), &env_grant());
    reg.load_dir().unwrap();
    (dir, path, reg)
}

#[test]
fn a_renamed_plugin_file_stops_serving_until_named_back() {
    let (dir, old, reg) = env_loaded_as("env.wasm");
    let renamed = dir.path().join("env-2.wasm");
    let _watcher = reg.watch(&FileWatch::start().unwrap()).unwrap();
    assert_eq!(env_served_by(&reg), Some((old.clone(), "warren".into())));

    std::fs::rename(&old, &renamed).unwrap();
    let refused = wait_for(WAIT, || {
        reg.status().into_iter().find(|s| s.file == renamed && s.state == PluginState::Failed)
    })
    .expect("the renamed file is refused");
    assert!(refused.last_error.as_deref().unwrap().contains("must be named after"), "{refused:?}");
    wait_for(WAIT, || env_served_by(&reg).is_none().then_some(())).expect("ENV no longer served");

    std::fs::rename(&renamed, &old).unwrap();
    let served = wait_for(WAIT, || env_served_by(&reg)).expect("env.wasm serves ENV again");
    assert_eq!(served, (old.clone(), "warren".into()));
    let st = wait_for(WAIT, || Some(reg.status()).filter(|st| st.len() == 1)).expect("env-2.wasm forgotten");
    assert_eq!((st[0].file.as_path(), st[0].state), (old.as_path(), PluginState::Loaded));
}

#[test]
fn oversized_plugin_file_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    // Sparse: no disk or memory is spent on it unless someone reads it whole.
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(warren::plugins::registry::MAX_PLUGIN_BYTES + 1).unwrap();
    drop(f);
    let reg = registry(dir.path(), &[]);
    match reg.load_file(&big) {
        Err(PluginError::NotAComponent(m)) => assert!(m.contains("larger than"), "{m}"),
        other => panic!("expected a size refusal, got {:?}", other.map(|p| p.info.file.clone())),
    }
    let exact = dir.path().join("exact.wasm");
    let f = std::fs::File::create(&exact).unwrap();
    f.set_len(warren::plugins::registry::MAX_PLUGIN_BYTES).unwrap();
    drop(f);
    // Exactly at the limit the file is read whole.
    let bytes = warren::plugins::registry::read_plugin_file(&exact).unwrap();
    assert_eq!(bytes.len() as u64, warren::plugins::registry::MAX_PLUGIN_BYTES);
}

#[test]
fn engine_starts_with_the_first_plugin_file() {
    let dir = tempfile::tempdir().unwrap();
    let settings = warren::plugins::RegistrySettings {
        plugin_dir: dir.path().to_path_buf(),
        trust: warren::plugins::TrustMode::Off,
        grants: env_grant().into_iter().map(|(n, g)| (n.to_string(), g)).collect(),
        credentials: support::plugins::test_credentials(),
        limits: warren::plugins::Limits::default(),
    };
    // A small pool: this test binary already holds the shared engine.
    let opts = warren::plugins::EngineOptions {
        cache_dir: Some(dir.path().join("cache")),
        pool_instances: 4,
        max_memory_mb: 64,
        ..Default::default()
    };
    let keys = std::sync::Arc::new(warren::crypto::KeyCache::new(dir.path().join("no-keys")));
    let reg = warren::plugins::PluginRegistry::new_lazy(opts, settings, keys);
    reg.load_dir().unwrap();
    let _watcher = reg.watch(&FileWatch::start().unwrap()).unwrap();
    assert!(!reg.engine_started(), "an empty plugin folder starts no engine");
    assert!(!dir.path().join("cache").exists(), "nor its compile cache");

    write_atomic(&dir.path().join("env.wasm"), wasm_bytes("env"));
    let served = wait_for(WAIT, || env_served_by(&reg)).expect("the dropped-in plugin serves");
    assert_eq!(served.1, "warren");
    assert!(reg.engine_started());
    assert!(dir.path().join("cache").is_dir());
}
