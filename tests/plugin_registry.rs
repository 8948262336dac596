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
fn duplicate_names_and_schemes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["env"]);
    std::fs::write(dir.path().join("env-copy.wasm"), variant("env", b"x")).unwrap();
    let reg = registry(dir.path(), &[]);
    reg.load_dir().unwrap();
    let st = reg.status();
    assert_eq!(st.iter().filter(|s| s.state == PluginState::Loaded).count(), 1);
    let failed = st.iter().find(|s| s.state == PluginState::Failed).unwrap();
    assert!(failed.last_error.as_deref().unwrap().contains("already provided"));
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
fn upgrade_by_new_file_name_then_removing_the_old_one_keeps_serving() {
    let (dir, old, reg) = env_loaded_as("env-1.wasm");
    let new = dir.path().join("env-2.wasm");
    let _watcher = reg.watch(&FileWatch::start().unwrap()).unwrap();
    assert_eq!(env_served_by(&reg), Some((old.clone(), "warren".into())));

    // The new version arrives under a new name: refused while env-1 still provides "env".
    write_atomic(&new, variant("env", b"2"));
    let refused =
        wait_for(WAIT, || reg.status().into_iter().find(|s| s.file == new && s.state == PluginState::Failed))
            .expect("the duplicate is shown as failed");
    assert!(refused.last_error.as_deref().unwrap().contains("already provided"), "{refused:?}");
    assert_eq!(env_served_by(&reg).map(|s| s.0), Some(old.clone()), "the old file keeps serving");
    // The old file goes: the refused one is retried and takes over without a rescan.
    std::fs::remove_file(&old).unwrap();
    let served = wait_for(WAIT, || env_served_by(&reg).filter(|s| s.0 == new)).expect("env-2 serves ENV");
    assert_eq!(served.1, "warren");
    let st = reg.status();
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!((st[0].file.as_path(), st[0].state), (new.as_path(), PluginState::Loaded));
    assert_eq!(st[0].last_error, None);
}

#[test]
fn renaming_a_plugin_to_an_earlier_name_keeps_serving() {
    let (dir, old, reg) = env_loaded_as("env.wasm");
    let renamed = dir.path().join("a-env.wasm"); // sorts before env.wasm
    let _watcher = reg.watch(&FileWatch::start().unwrap()).unwrap();
    assert_eq!(env_served_by(&reg), Some((old.clone(), "warren".into())));

    std::fs::rename(&old, &renamed).unwrap();
    let served =
        wait_for(WAIT, || env_served_by(&reg).filter(|s| s.0 == renamed)).expect("a-env.wasm serves ENV");
    assert_eq!(served.1, "warren");
    let st = wait_for(WAIT, || Some(reg.status()).filter(|st| st.len() == 1)).expect("env.wasm forgotten");
    assert_eq!((st[0].file.as_path(), st[0].state), (renamed.as_path(), PluginState::Loaded));
}

#[test]
fn one_batch_applies_removals_before_additions() {
    // No watcher: the batch a rename produces, handed over in path order (new name first).
    let (dir, old, reg) = env_loaded_as("env.wasm");
    let renamed = dir.path().join("a-env.wasm");
    std::fs::rename(&old, &renamed).unwrap();
    reg.refresh_paths([renamed.as_path(), old.as_path()]);
    assert_eq!(env_served_by(&reg), Some((renamed.clone(), "warren".into())));
    let st = reg.status();
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(st[0].state, PluginState::Loaded);
}

#[test]
fn a_duplicate_is_retried_when_the_original_is_unloaded() {
    // No watcher: the two events arrive in separate batches, addition first.
    let (dir, old, reg) = env_loaded_as("env-1.wasm");
    let new = dir.path().join("env-2.wasm");
    std::fs::write(&new, variant("env", b"2")).unwrap();
    reg.refresh_path(&new);
    assert!(matches!(reg.load_file(&new), Err(PluginError::DuplicateName { .. })));
    std::fs::remove_file(&old).unwrap();
    reg.refresh_path(&old);
    assert_eq!(env_served_by(&reg), Some((new.clone(), "warren".into())));
    assert_eq!(reg.status().iter().filter(|s| s.state == PluginState::Loaded).count(), 1);
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
