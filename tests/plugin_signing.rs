//! Signing with `warren plugin sign`, inspecting with `warren plugin inspect`, and the trust
//! policy: unsigned, unknown-signer and tampered plugins are refused before they compile.

mod support;

use std::path::Path;

use support::cli::{Run, warren_with};
use support::keys::origin_keys;
use support::plugins::{install, registry_with, wasm};
use warren::plugins::{Grant, PluginError, PluginState, TrustMode};

/// `warren ARGS` with the key cache `keys` (and a data path beside it).
fn warren(args: &[&str], keys: &Path) -> Run {
    warren_with(args, None, &[("WARREN_CACHE_KEY_PATH", keys), ("WARREN_DATA_PATH", &keys.join("data"))])
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(run.ok()).unwrap()
}

#[test]
fn sign_inspect_and_strict_trust() {
    let keys = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let signer = origin_keys(keys.path(), "acme").id.to_string();
    let file = plugins.path().join("env.wasm");
    std::fs::copy(wasm("env"), &file).unwrap();
    let unsigned_len = std::fs::metadata(&file).unwrap().len();

    // Unsigned: strict refuses it before compiling.
    let reg = registry_with(plugins.path(), Default::default(), TrustMode::Strict, keys.path());
    assert!(matches!(reg.load_file(&file), Err(PluginError::Untrusted(_))));

    warren(&["plugin", "sign", "--origin", "acme", file.to_str().unwrap()], keys.path()).ok();
    let j = json(&warren(&["plugin", "inspect", "--json", file.to_str().unwrap()], keys.path()));
    assert_eq!(j["name"], "env");
    assert_eq!(j["world"], "credential-source");
    assert_eq!(j["signature"]["status"], "valid");
    assert_eq!(j["signer"], signer.as_str());
    assert_eq!(j["blake2b"].as_str().unwrap().len(), 64);
    assert!(j["size"].as_u64().unwrap() > unsigned_len);

    // Re-signing replaces the signature instead of stacking another.
    let len1 = std::fs::metadata(&file).unwrap().len();
    warren(&["plugin", "sign", "--origin", "acme", file.to_str().unwrap()], keys.path()).ok();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), len1);

    // Trusted, but sup.toml names env (ENV is its scheme) without saying who must sign it.
    let strict = |signers: &[&str]| {
        let grant = Grant { signers: signers.iter().map(|s| s.to_string()).collect(), ..Grant::default() };
        let grants =
            if signers.is_empty() { Default::default() } else { [("env".to_string(), grant)].into() };
        registry_with(plugins.path(), grants, TrustMode::Strict, keys.path())
    };
    match strict(&[]).load_file(&file) {
        Err(PluginError::Untrusted(why)) => {
            assert!(why.contains("lists no signer") && why.contains("origin acme"), "{why}")
        }
        other => panic!("no signer listed, yet loaded: {:?}", other.map(|p| p.info.name.clone())),
    }
    // Signed by a trusted origin that [plugins.env] does not accept: refused, naming both.
    match strict(&["beta", "gamma"]).load_file(&file) {
        Err(PluginError::Untrusted(why)) => {
            assert!(why.contains("origin acme") && why.contains("beta, gamma"), "{why}")
        }
        other => panic!("wrong signer, yet loaded: {:?}", other.map(|p| p.info.name.clone())),
    }
    let reg = strict(&["beta", "acme"]);
    let p = reg.load_file(&file).unwrap();
    assert_eq!(p.info.signature.signer(), Some(signer.as_str()));
    assert_eq!(reg.status()[0].signer.as_deref(), Some(signer.as_str()));

    // Tampered (one byte of the code flipped): refused.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let bad = plugins.path().join("tampered.wasm");
    std::fs::write(&bad, &bytes).unwrap();
    match reg.load_file(&bad) {
        Err(PluginError::Untrusted(why)) => assert!(why.contains("bad signature"), "{why}"),
        other => panic!("tampered plugin not refused: {:?}", other.map(|p| p.info.name.clone())),
    }
    let out = warren(&["plugin", "inspect", bad.to_str().unwrap()], keys.path());
    assert!(out.stdout.contains("bad signature"), "{out:?}");

    // Signed by an origin whose public key is not trusted here: refused under strict.
    let other_keys = tempfile::tempdir().unwrap();
    origin_keys(other_keys.path(), "mallory");
    let foreign = plugins.path().join("foreign.wasm");
    std::fs::copy(wasm("env"), &foreign).unwrap();
    warren(&["plugin", "sign", "--origin", "mallory", foreign.to_str().unwrap()], other_keys.path()).ok();
    assert!(matches!(reg.load_file(&foreign), Err(PluginError::Untrusted(_))));
}

#[test]
fn default_trust_is_strict_once_an_origin_key_is_trusted() {
    let keys = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    install(plugins.path(), &["env"]);
    let list = |keys: &Path| {
        json(&warren(&["plugin", "list", "--json", "--plugin-path", plugins.path().to_str().unwrap()], keys))
    };
    // No keys: warn, the unsigned plugin loads.
    let j = list(keys.path());
    assert_eq!(j["trust"], "warn");
    assert_eq!(j["plugins"][0]["state"], "loaded");
    // A trusted origin key appears: strict, the unsigned plugin is refused.
    origin_keys(keys.path(), "acme");
    let j = list(keys.path());
    assert_eq!(j["trust"], "strict");
    assert_eq!(j["plugins"][0]["state"], "failed");
    assert!(j["plugins"][0]["last_error"].as_str().unwrap().contains("unsigned"));
    assert_eq!(j["plugins"][0]["name"], "env", "a refused file still shows what it claims to be");
    // --plugin-trust warn overrides.
    let j = json(&warren(
        &[
            "plugin",
            "list",
            "--json",
            "--plugin-trust",
            "warn",
            "--plugin-path",
            plugins.path().to_str().unwrap(),
        ],
        keys.path(),
    ));
    assert_eq!(j["plugins"][0]["state"], "loaded");
}

#[test]
fn warn_mode_loads_unsigned_and_records_it() {
    let plugins = tempfile::tempdir().unwrap();
    install(plugins.path(), &["standalone"]);
    let reg = registry_with(plugins.path(), Default::default(), TrustMode::Warn, &plugins.path().join("k"));
    reg.load_dir().unwrap();
    let st = reg.status();
    assert_eq!(st[0].state, PluginState::Loaded);
    assert_eq!(st[0].signer, None);
}

/// `warren plugin inspect` reads a topology policy of either contract version without running
/// it; `warren plugin list` loads it and shows the name `svc load --topology` selects it by.
#[test]
fn topology_policies_inspect_and_list() {
    let keys = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    install(plugins.path(), &["leader-follower", "topo-v0-1"]);
    for name in ["leader-follower", "topo-v0-1"] {
        let file = plugins.path().join(format!("{name}.wasm"));
        let j = json(&warren(&["plugin", "inspect", "--json", file.to_str().unwrap()], keys.path()));
        assert_eq!(
            (&j["name"], &j["world"]),
            (&serde_json::json!(name), &serde_json::json!("topology-policy"))
        );
        assert_eq!(j["manifest_error"], serde_json::Value::Null);
        let text = warren(&["plugin", "inspect", file.to_str().unwrap()], keys.path());
        assert!(text.ok().contains("world:     topology-policy"), "{text:?}");
    }
    let dir = plugins.path().to_str().unwrap();
    let j = json(&warren(&["plugin", "list", "--json", "--plugin-path", dir], keys.path()));
    let policies: Vec<(&str, &str, &str)> = j["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["name"].as_str().unwrap(), p["wit"].as_str().unwrap(), p["topology_name"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        policies,
        vec![("leader-follower", "0.2.0", "leader-follower"), ("topo-v0-1", "0.1.0", "old-policy")]
    );
    let text = warren(&["plugin", "list", "--plugin-path", dir], keys.path());
    assert!(text.ok().contains("policy old-policy"), "{text:?}");
}
