//! The vendor kit end to end, outside the repository: `warren plugin new` scaffolds a plugin of
//! each world into a temp dir, `warren plugin build --sign` builds and signs it (the scaffolds
//! share the guest workspace's target dir, plugins/target, so wit-bindgen is not compiled again),
//! and a running `warren sup run` (strict trust: it trusts the origin) picks each one up from its
//! plugin folder: the credential source serves the gateway's token, the topology policy decides
//! for a service, and the hook plugin's init and health check run for it.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::cli::{Run, warren_with};
use support::files::{path_str, write_atomic};
use support::fixtures::repo_root;
use support::ring::{args, fast_timings};
use support::sup::Sup;
use support::wait::{wait_for, wait_until};
use warren::crypto::KeyCache;
use warren::http::client;

const ORIGIN: &str = "kitco";
const TOKEN: &str = "kit-gateway-token-7f3a";
const SLEEPER: &str = "#!/bin/sh\nexec sleep 1000\n";

/// The scaffolds' cargo target dir: the guest workspace's own. The scaffolds pin the same
/// wit-bindgen and release profile, so cargo reuses what scripts/build-plugins.sh compiled (the
/// test's support builds the bundled plugins first) instead of compiling wit-bindgen again.
fn kit_target() -> PathBuf {
    support::plugins::ensure_plugins_built();
    repo_root().join("plugins/target")
}

fn kit(a: &[&str], keys: &Path) -> Run {
    let target = kit_target();
    warren_with(a, None, &[("WARREN_CACHE_KEY_PATH", keys), ("WARREN_PLUGIN_TARGET_DIR", &target)])
}

/// new + build --sign; returns the signed component.
fn scaffold_and_build(src: &Path, name: &str, world: &str, keys: &Path) -> PathBuf {
    let dir = src.join(name);
    let out = kit(&["plugin", "new", name, "--world", world, "--dir", path_str(&dir)], keys);
    assert!(out.ok().contains("created"), "{out:?}");
    let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("\n[workspace]\n"), "a standalone crate: {cargo}");
    let wit = std::fs::read_to_string(dir.join("wit/plugin.wit")).unwrap();
    assert_eq!(wit, std::fs::read_to_string(repo_root().join("wit/plugin.wit")).unwrap());
    let started = Instant::now();
    let built = kit(&["plugin", "build", path_str(&dir), "--sign", ORIGIN], keys);
    let text = built.ok();
    eprintln!("plugin build {name}: {:?}", started.elapsed());
    assert!(text.contains(&format!("({world}")) && text.contains(&format!("signed by {ORIGIN}")), "{text}");
    // The build's own load check has no sup.toml: its "scheme assigned to no plugin" would mislead.
    assert!(!built.stderr.contains("assigns to no plugin"), "{}", built.stderr);
    let file = dir.join(format!("{name}.wasm"));
    let inspect = kit(&["plugin", "inspect", path_str(&file)], keys);
    assert!(
        inspect.ok().contains(&format!("signed by {ORIGIN}-")) && inspect.ok().contains("(verified)"),
        "{inspect:?}"
    );
    file
}

fn gateway(sup: &Sup, path: &str) -> Option<client::Response> {
    client::request(&sup.http, "GET", path, Some(TOKEN), None, Duration::from_secs(2)).ok()
}

fn loaded(sup: &Sup) -> Vec<serde_json::Value> {
    let json = gateway(sup, "/plugins").filter(|r| r.status == 200).and_then(|r| r.json().ok());
    json.and_then(|j: serde_json::Value| j["plugins"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["state"] == "loaded")
        .collect()
}

fn drop_in(file: &Path, plugins: &Path) {
    write_atomic(&plugins.join(file.file_name().unwrap()), std::fs::read(file).unwrap());
}

#[test]
fn scaffolded_plugins_build_sign_and_serve_in_a_running_supervisor() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    assert!(!dir.path().starts_with(repo_root()), "the scaffolds must build outside the repository");
    let keys = dir.path().join("author-keys");
    let author = support::keys::origin_keys(&keys, ORIGIN);
    let src = dir.path().join("src");
    let cred = scaffold_and_build(&src, "kitcred", "credential-source", &keys);
    let built_cred = started.elapsed();

    // A supervisor whose gateway token is KITCRED:token, trusting the origin, its plugin
    // folder empty: until the plugin drops in, nothing serves the token.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    KeyCache::new(dir.path().join("data-77/keys")).write(&author.public().to_file()).unwrap();
    let config = dir.path().join("sup.toml");
    std::fs::write(
        &config,
        "auth_token = \"KITCRED:token\"\n[credentials]\nKITCRED = \"kitcred\"\n\
         [plugins.kitcred]\nsigner = \"kitco\"\nenv = [\"KITCRED_TOKEN\"]\n",
    )
    .unwrap();
    let mut extra = fast_timings();
    extra.extend(args(&["--config", path_str(&config), "--plugin-path", path_str(&plugins)]));
    let sup = Sup::start(dir.path(), 77, extra, vec![("KITCRED_TOKEN".into(), TOKEN.into())]);
    assert_ne!(gateway(&sup, "/plugins").map(|r| r.status), Some(200), "no token source yet");

    drop_in(&cred, &plugins);
    let served = wait_for(Duration::from_secs(30), || {
        gateway(&sup, "/plugins").filter(|r| r.status == 200).map(|_| ())
    });
    assert!(served.is_some(), "the token was not resolved through kitcred:\n{}", sup.log_tail());
    let serving = started.elapsed();
    let p = loaded(&sup).into_iter().find(|p| p["name"] == "kitcred").expect("kitcred loaded");
    assert!(p["signer"].as_str().is_some_and(|s| s.starts_with(ORIGIN)), "signed and checked: {p}");
    let creds = gateway(&sup, "/credentials").unwrap().text();
    assert!(creds.contains("KITCRED:token") && !creds.contains(TOKEN), "{creds}");
    eprintln!("credential source: built+signed {built_cred:?}, serving {serving:?} after start");

    // The other two worlds, dropped into the same running supervisor.
    let topo = scaffold_and_build(&src, "kittopo", "topology-policy", &keys);
    let hook = scaffold_and_build(&src, "kithook", "lifecycle-hook", &keys);
    drop_in(&topo, &plugins);
    drop_in(&hook, &plugins);
    wait_until(Duration::from_secs(30), "all three loaded", || loaded(&sup).len() == 3);
    let policy = loaded(&sup).into_iter().find(|p| p["name"] == "kittopo").unwrap();
    assert_eq!(policy["topology_name"], "kittopo", "{policy}");

    // A service under both: the policy decides its role (one member: standalone) and the
    // hook plugin serves its init and health check.
    support::services::install(&sup, "kitsvc", &[("run", SLEEPER)], &[]);
    let load = sup.cli(&[
        "svc",
        "load",
        "acme/kitsvc",
        "--topology",
        "kittopo",
        "--hooks-plugin",
        "kithook",
        "--health-check-interval",
        "1",
    ]);
    assert_eq!(load.code, 0, "{load:?}\n{}", sup.log_tail());
    let role = wait_for(Duration::from_secs(30), || {
        let s = support::services::status(&sup, "kitsvc")?;
        s["role"].as_str().filter(|r| !r.is_empty() && *r != "none").map(str::to_string)
    });
    assert_eq!(
        role.as_deref(),
        Some("standalone"),
        "{:?}\n{}",
        support::services::status(&sup, "kitsvc"),
        sup.log_tail()
    );
    let log = || std::fs::read_to_string(&sup.log).unwrap();
    let init = wait_for(Duration::from_secs(30), || {
        log()
            .lines()
            .find(|l| l.contains("kithook") && l.contains("init") && l.contains("kitsvc"))
            .map(String::from)
    });
    assert!(init.is_some(), "the hook plugin's init did not run:\n{}", sup.log_tail());
    wait_until(Duration::from_secs(30), "health from the plugin", || {
        support::services::status(&sup, "kitsvc").is_some_and(|s| s["health"] == "OK")
    });
    eprintln!("plugin kit test: {:?} in all", started.elapsed());
}

/// `warren plugin test`: the bundled plugins under chosen grants; what is not granted shows as
/// what the plugin got back (absent variable, refused request), and its log calls are listed.
#[test]
fn plugin_test_runs_one_call_under_exactly_the_given_grants() {
    let p = |name: &str| support::plugins::wasm(name);
    let run = |a: &[&str], envs: &[(&str, &str)]| {
        let mut cmd = support::cli::command();
        // The defaults a vendor gets.
        cmd.args(a).env_remove("WARREN_LOG").env_remove("RUST_LOG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        support::cli::run(&mut cmd, None)
    };
    let env = p("env");
    let env = path_str(&env);
    let secret = "plugin-test-secret-91";
    let ungranted = run(&["plugin", "test", env, "--resolve", "ENV:KIT_SECRET"], &[("KIT_SECRET", secret)]);
    assert!(ungranted.ok().contains("result: error not-found:"), "{ungranted:?}");
    let granted = run(
        &["plugin", "test", env, "--resolve", "ENV:KIT_SECRET", "--grant-env", "KIT_SECRET"],
        &[("KIT_SECRET", secret)],
    );
    let text = granted.ok();
    assert!(text.contains("log DEBUG resolved") && text.contains("var=KIT_SECRET"), "the log call: {text}");
    assert!(text.contains("result: credential [21 bytes"), "{text}");
    assert!(!text.contains(secret) && !granted.stderr.contains(secret), "value shown without --show-value");
    // The scratch folder's load lines are no business of the vendor's.
    assert!(!granted.stderr.contains("plugin loaded"), "registry noise: {}", granted.stderr);
    let shown = run(
        &["plugin", "test", env, "--resolve", "ENV:KIT_SECRET", "--grant-env", "KIT_SECRET", "--show-value"],
        &[("KIT_SECRET", secret)],
    );
    assert!(shown.ok().contains(secret), "{shown:?}");

    // HTTP not granted: refused by the host, reported by the plugin as denied; no crash.
    let vault = p("vault-kv");
    let denied = run(
        &[
            "plugin",
            "test",
            path_str(&vault),
            "--resolve",
            "VAULT:secret/app#key",
            "--grant-env",
            "VAULT_ADDR",
            "--grant-env",
            "VAULT_TOKEN",
        ],
        &[("VAULT_ADDR", "127.0.0.1:9"), ("VAULT_TOKEN", "t")],
    );
    let text = denied.ok();
    assert!(text.contains("host WARN  refused outbound HTTP") && text.contains("127.0.0.1:9"), "{text}");
    assert!(text.contains("result: error denied:"), "{text}");

    let lf = p("leader-follower");
    let decided = run(
        &["plugin", "test", path_str(&lf), "--decide", r#"{"members":[{"id":"a"},{"id":"b"}],"leader":"b"}"#],
        &[],
    );
    assert!(decided.ok().contains("result: election_needed=true roles: a=follower b=leader"), "{decided:?}");
    let hook = p("hook-example");
    let init = run(&["plugin", "test", path_str(&hook), "--hook", "init"], &[]);
    assert!(init.ok().contains("log INFO  init app.default") && init.ok().contains("result: ok"), "{init:?}");

    // Bad input is a clear error, not a panic.
    let bad = run(&["plugin", "test", path_str(&lf), "--decide", "{\"members\":3}"], &[]);
    assert!(bad.fails().contains("\"members\" must be a list"), "{bad:?}");
    let wrong = run(&["plugin", "test", path_str(&lf), "--resolve", "ENV:X"], &[]);
    assert!(wrong.fails().contains("does not serve"), "{wrong:?}");
}
