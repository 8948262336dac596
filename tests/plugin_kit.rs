//! The vendor kit end to end: `warren plugin new` scaffolds a crate of each world outside the
//! repository, `warren plugin build --sign` makes signed components of them, and a running
//! supervisor that finds them in its plugin folder puts each to work: the credential source
//! resolves the gateway's token, the topology policy decides the service's role, the hook
//! plugin runs its hooks.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::cli::warren_with;
use support::files::path_str;
use support::fixtures::repo_root;
use support::keys::origin_keys;
use support::plugins::ensure_plugins_built;
use support::ring::args;
use support::services::{install, status};
use support::sup::Sup;
use support::wait::wait_until;
use warren::crypto::KeyCache;
use warren::http::client;

const VENDOR: &str = "vendor";
const TOKEN: &str = "token-from-the-vendors-plugin";

/// `plugin new` then `plugin build --sign`, into `dir/NAME`; the build shares the compiled
/// dependencies of the repository's own plugins (their target dir), as a vendor's second
/// build shares its first's.
fn new_and_build(dir: &Path, keys: &Path, name: &str, world: &str) -> Vec<u8> {
    let crate_dir = dir.join(name);
    let made =
        warren_with(&["plugin", "new", name, "--world", world, "--dir", path_str(&crate_dir)], None, &[]);
    assert!(made.ok().contains(&format!("{world} plugin {name}")), "{}", made.stdout);
    let target = repo_root().join("plugins/target");
    let built = warren_with(
        &["plugin", "build", path_str(&crate_dir), "--sign", VENDOR],
        None,
        &[("WARREN_CACHE_KEY_PATH", keys), ("CARGO_TARGET_DIR", &target)],
    );
    assert!(built.ok().contains(&format!("{world} plugin {name}")), "{}", built.stdout);
    assert!(built.stdout.contains(&format!("signed by {VENDOR}")), "{}", built.stdout);
    let wasm = crate_dir.join(format!("{name}.wasm"));
    let shown =
        warren_with(&["plugin", "inspect", path_str(&wasm)], None, &[("WARREN_CACHE_KEY_PATH", keys)]);
    assert!(shown.ok().contains(&format!("world:     {world}")), "{}", shown.stdout);
    assert!(shown.stdout.contains("signed by vendor"), "{}", shown.stdout);
    std::fs::read(wasm).unwrap()
}

/// Writes a plugin into the folder the way an operator's `cp` + `mv` would: whole, at once.
fn drop_in(plugins: &Path, name: &str, bytes: &[u8]) {
    let tmp = plugins.join(format!(".{name}.part"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, plugins.join(format!("{name}.wasm"))).unwrap();
}

fn gateway_status(sup: &Sup, token: &str) -> u16 {
    client::request(&sup.http, "GET", "/services", Some(token), None, Duration::from_secs(2))
        .map_or(0, |r| r.status)
}

#[test]
fn scaffolded_plugins_of_every_world_build_sign_and_serve_a_running_supervisor() {
    ensure_plugins_built();
    let dir = tempfile::tempdir().unwrap();
    assert!(!dir.path().starts_with(repo_root()), "the crates are made outside the repository");
    let keys = dir.path().join("vendor-keys");
    let author = origin_keys(&keys, VENDOR);

    // A supervisor that trusts the vendor (strict: only signed plugins load), whose gateway
    // token is a reference only the vendor's plugin serves; its plugin folder starts empty.
    let data = dir.path().join("data-61");
    KeyCache::new(data.join("keys")).write(&author.public().to_file()).unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let config = dir.path().join("sup.toml");
    std::fs::write(
        &config,
        "auth_token = \"VENDOR_SECRETS:GW_TOKEN\"\n\n[credentials]\nVENDOR_SECRETS = \"vendor-secrets\"\n\n\
         [plugins.vendor-secrets]\nenv = [\"GW_TOKEN\"]\nsigner = \"vendor\"\n",
    )
    .unwrap();
    let extra = args(&["--config", path_str(&config), "--plugin-path", path_str(&plugins)]);
    let sup = Sup::start(dir.path(), 61, extra, vec![("GW_TOKEN".into(), TOKEN.into())]);
    assert_ne!(gateway_status(&sup, TOKEN), 200, "no plugin serves the token yet:\n{}", sup.log_tail());

    // The vendor's inner loop, timed: new -> build -> signed -> dropped in -> serving.
    let started = Instant::now();
    let secrets = new_and_build(dir.path(), &keys, "vendor-secrets", "credential-source");
    let built_in = started.elapsed();
    drop_in(&plugins, "vendor-secrets", &secrets);
    wait_until(Duration::from_secs(30), "the gateway takes the token the vendor's plugin resolved", || {
        gateway_status(&sup, TOKEN) == 200
    });
    eprintln!(
        "credential source: new -> build -> signed in {built_in:?}, serving after {:?}",
        started.elapsed()
    );
    assert_eq!(gateway_status(&sup, "wrong"), 401);

    // The policy and the hooks: a service loaded with both starts with the role the policy
    // gave it (one member: standalone) and its init hook runs in the plugin.
    let policy = new_and_build(dir.path(), &keys, "vendor-policy", "topology-policy");
    let hooks = new_and_build(dir.path(), &keys, "vendor-hooks", "lifecycle-hook");
    drop_in(&plugins, "vendor-policy", &policy);
    drop_in(&plugins, "vendor-hooks", &hooks);
    install(&sup, "sleeper", &[("run", "#!/bin/sh\nexec sleep 1000\n")], &[]);
    wait_until(Duration::from_secs(30), "the service loads with the vendor's policy and hooks", || {
        sup.cli(&[
            "svc",
            "load",
            "acme/sleeper",
            "--topology",
            "vendor-policy",
            "--hooks-plugin",
            "vendor-hooks",
        ])
        .code
            == 0
    });
    wait_until(Duration::from_secs(30), "the service runs with the policy's role", || {
        status(&sup, "sleeper").is_some_and(|s| s["state"] == "up" && s["role"] == "standalone")
    });
    wait_until(Duration::from_secs(30), "the vendor's init hook ran", || {
        std::fs::read_to_string(&sup.log).is_ok_and(|l| l.contains("init sleeper.default"))
    });
}
