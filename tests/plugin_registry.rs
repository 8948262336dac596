//! The plugin folder: drop in, replace (atomic swap, in-flight handles keep working), broken
//! replacement (old one stays, error shown), removal; and 10,000 faulty calls.

mod plugin_support;

use std::time::Duration;

use plugin_support::*;
use warren::plugins::{Grant, PluginError, PluginState};

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
    let _watcher = reg.watch().unwrap();
    let path = dir.path().join("file.wasm");
    let reference = format!("FILE:{}/t", secrets.path().display());

    // Drop in: registered.
    write_atomic(&path, &wasm_bytes("file"));
    let src = wait_for(WAIT, || reg.get_credential_source("FILE")).expect("dropped-in plugin registered");
    assert_eq!(src.resolve(&reference).unwrap().unwrap().value, "v");
    let v1 = src.plugin().info.blake2b.clone();

    // Replace: swapped; the handle taken before the swap keeps working on the old plugin.
    write_atomic(&path, &variant("file", b"2"));
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
    write_atomic(&path, &variant("file", b"3"));
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
