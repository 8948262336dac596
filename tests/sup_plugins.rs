//! A real `warren sup run` with a real plugin folder and a sup.toml whose gateway token is a
//! `FILE:` credential: plugins show on the gateway, drop-ins load live, and the token rotates
//! without a restart (and survives its file being deleted).

mod support;

use std::time::{Duration, Instant};

use support::files::write_atomic;
use support::keys::ring_key;
use support::plugins::wasm;
use support::ring::{all_see_alive, args, fast_timings};
use support::sup::Sup;
use support::wait::{wait_for, wait_until};
use warren::http::client;

fn get(sup: &Sup, path: &str, token: Option<&str>) -> Option<client::Response> {
    client::request(&sup.http, "GET", path, token, None, Duration::from_secs(2)).ok()
}

fn status(sup: &Sup, path: &str, token: Option<&str>) -> u16 {
    get(sup, path, token).map_or(0, |r| r.status)
}

fn auth_credential(sup: &Sup, token: &str) -> Option<serde_json::Value> {
    let json = get(sup, "/credentials", Some(token)).filter(|r| r.status == 200)?.json().ok()?;
    json["credentials"]
        .as_array()?
        .iter()
        .find(|c| c["used_by"].as_array().is_some_and(|u| u.iter().any(|l| l == "auth_token")))
        .cloned()
}

fn plugin_names(sup: &Sup, token: &str) -> Vec<String> {
    get(sup, "/plugins", Some(token))
        .filter(|r| r.status == 200)
        .and_then(|r| r.json().ok())
        .and_then(|j: serde_json::Value| {
            j["plugins"].as_array().map(|a| {
                a.iter()
                    .filter(|p| p["state"] == "loaded")
                    .filter_map(|p| p["name"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// A temp dir with `plugins/` (holding file.wasm), `secrets/` holding `secret_name` = `secret`,
/// and a sup.toml whose `config_key` is `FILE:` that secret, granting the file plugin `secrets/`.
/// Returns the dir, the `sup run` args that use it, and the secret's path.
fn setup(
    config_key: &str,
    secret_name: &str,
    secret: &str,
) -> (tempfile::TempDir, Vec<String>, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::copy(wasm("file"), plugins.join("file.wasm")).unwrap();
    let secret_file = secrets.join(secret_name);
    write_atomic(&secret_file, secret);
    let config = dir.path().join("sup.toml");
    std::fs::write(
        &config,
        format!(
            "{config_key} = \"FILE:{file}\"\nplugin_trust = \"off\"\n\n[plugins.file]\nread_paths = [\"{secrets}\"]\n",
            file = secret_file.display(),
            secrets = secrets.display()
        ),
    )
    .unwrap();
    let extra = args(&["--config", config.to_str().unwrap(), "--plugin-path", plugins.to_str().unwrap()]);
    (dir, extra, secret_file)
}

#[test]
fn gateway_token_rotates_from_a_file_credential_and_plugins_load_live() {
    let (dir, extra, token_file) = setup("auth_token", "token", "first-token\n");
    let plugins = dir.path().join("plugins");
    let sup = Sup::start(dir.path(), 41, extra, vec![]);

    // The token comes from the file through the file plugin; without it the gateway refuses.
    wait_until(Duration::from_secs(20), "first token accepted", || {
        status(&sup, "/plugins", Some("first-token")) == 200
    });
    assert_eq!(status(&sup, "/plugins", None), 401, "{}", sup.log_tail());
    assert_eq!(status(&sup, "/plugins", Some("wrong")), 401);
    assert_eq!(status(&sup, "/", None), 200, "liveness stays public");
    assert_eq!(plugin_names(&sup, "first-token"), vec!["file".to_string()]);
    let first = auth_credential(&sup, "first-token").expect("auth_token in /credentials");
    let first_fp = first["fingerprint"].as_str().expect("a fingerprint").to_string();
    assert!(first["version"].as_u64().unwrap() >= 1);
    let body = get(&sup, "/credentials", Some("first-token")).unwrap().text();
    assert!(!body.contains("first-token"), "/credentials must never show a value: {body}");

    // Rotate: the new token works and the old one stops working, without a restart.
    let pid = sup.pid();
    let written = Instant::now();
    write_atomic(&token_file, "second-token\n");
    let rotated = wait_for(Duration::from_secs(20), || {
        (status(&sup, "/plugins", Some("second-token")) == 200
            && status(&sup, "/plugins", Some("first-token")) == 401)
            .then_some(())
    });
    assert!(rotated.is_some(), "token did not rotate: {}", sup.log_tail());
    eprintln!("gateway token rotated in {:?}", written.elapsed());
    let second = auth_credential(&sup, "second-token").unwrap();
    assert_ne!(second["fingerprint"].as_str().unwrap(), first_fp);
    assert!(second["version"].as_u64().unwrap() > first["version"].as_u64().unwrap());
    assert_eq!(sup.pid(), pid, "same process");

    // `warren sup status` shows members, plugins and the credential, never its value.
    let out = sup.cli(&["sup", "status", "--auth-token", "second-token"]);
    let text = out.ok();
    assert!(text.contains(&sup.member_id()) && text.contains("Alive"), "{text}");
    assert!(text.contains("credential-source") && text.contains("loaded"), "{text}");
    assert!(text.contains("auth_token") && text.contains(second["fingerprint"].as_str().unwrap()), "{text}");
    assert!(!text.contains("second-token\n") && !text.contains("first-token"), "{text}");
    let refused = sup.cli(&["sup", "status", "--auth-token", "first-token"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);

    // Delete the file: the last good token stays in force and the error is shown.
    std::fs::remove_file(&token_file).unwrap();
    wait_until(Duration::from_secs(10), "the deletion shows as an error", || {
        auth_credential(&sup, "second-token").is_some_and(|c| c["last_error"].is_string())
    });
    assert_eq!(status(&sup, "/plugins", Some("second-token")), 200);
    assert_eq!(auth_credential(&sup, "second-token").unwrap()["fingerprint"], second["fingerprint"]);

    // Drop a plugin in: it loads without a restart; remove it: it is gone.
    write_atomic(&plugins.join("env.wasm"), std::fs::read(wasm("env")).unwrap());
    wait_until(Duration::from_secs(20), "env plugin loaded", || {
        plugin_names(&sup, "second-token").contains(&"env".to_string())
    });
    std::fs::remove_file(plugins.join("env.wasm")).unwrap();
    wait_until(Duration::from_secs(20), "env plugin unloaded", || {
        !plugin_names(&sup, "second-token").contains(&"env".to_string())
    });
    assert!(plugin_names(&sup, "second-token").contains(&"file".to_string()));
}

/// A plugin that declares FILE (and loads first) does not get the gateway token's reference nor
/// choose its value: [credentials] (by default FILE = "file") decides who serves a scheme.
#[test]
fn an_impostor_plugin_does_not_choose_the_gateway_token() {
    let (dir, extra, _) = setup("auth_token", "token", "real-token\n");
    std::fs::copy(wasm("impostor"), dir.path().join("plugins/impostor.wasm")).unwrap();
    let sup = Sup::start(dir.path(), 42, extra, vec![]);
    wait_until(Duration::from_secs(20), "the real token accepted", || {
        status(&sup, "/plugins", Some("real-token")) == 200
    });
    assert_eq!(status(&sup, "/plugins", Some("impostor-chosen-value")), 401, "{}", sup.log_tail());
    let names = plugin_names(&sup, "real-token");
    assert!(names.contains(&"file".to_string()) && names.contains(&"impostor".to_string()), "{names:?}");
    let json: serde_json::Value = get(&sup, "/plugins", Some("real-token")).unwrap().json().unwrap();
    let impostor = json["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "impostor").unwrap();
    // This sup.toml has no [credentials] table: only the defaults (FILE, ENV, VAULT) are served.
    assert_eq!(impostor["schemes"], serde_json::json!([]));
    assert_eq!(impostor["unassigned_schemes"], serde_json::json!(["FILE", "ENV", "IMPOSTOR"]));
    assert!(sup.log_tail().contains("assigns to file: it gets no FILE: references"), "{}", sup.log_tail());
}

#[test]
fn a_ring_key_reference_encrypts_the_ring() {
    let key = ring_key("refring", "20250101000000");
    let (dir, extra, key_file) = setup("ring_key", "ring.sym.key", &key.to_file().to_text());
    let mut extra = [fast_timings(), extra].concat();
    let sup = Sup::start(dir.path(), 42, extra.clone(), vec![]);
    wait_until(Duration::from_secs(10), "encrypted", || {
        get(&sup, "/ring/keys", None).and_then(|r| r.json().ok()).is_some_and(|k: serde_json::Value| {
            k.as_array().is_some_and(|a| a.iter().any(|x| x["id"] == "refring-20250101000000"))
        })
    });
    // A second member with the same reference joins.
    extra.extend(args(&["--peer", &sup.gossip]));
    let peer = Sup::start(dir.path(), 43, extra, vec![]);
    let ids = [sup.member_id(), peer.member_id()];
    wait_until(Duration::from_secs(20), "both alive", || all_see_alive(&[&sup, &peer], &ids));

    // Rotate the referenced key: both install it and send with it, and stay alive.
    let next = ring_key("refring", "20260101000000");
    write_atomic(&key_file, next.to_file().to_text());
    wait_until(Duration::from_secs(10), "both rotated", || {
        [&sup, &peer].iter().all(|s| {
            get(s, "/ring/keys", None).and_then(|r| r.json().ok()).is_some_and(|k: serde_json::Value| {
                k.as_array().is_some_and(|a| {
                    a.iter().any(|x| x["id"] == "refring-20260101000000" && x["primary"] == true)
                })
            })
        })
    });
    wait_until(Duration::from_secs(10), "both alive after the rotation", || {
        all_see_alive(&[&sup, &peer], &ids)
    });
    // Each member accepts the new key at once and sends with it 3 s later
    // (RING_KEY_SWITCH_DELAY), so no packet is lost as long as both notice the file change
    // within 3 s of each other; they watch the same file and typically do so within
    // milliseconds. That 3 s is the design's slack, not a speed claim.
    for s in [&sup, &peer] {
        let lost = s.metric("warren_ring_packets_rejected_total{reason=\"unknown_key\"}");
        assert_eq!(lost, 0, "{}", s.log_tail());
    }
}
