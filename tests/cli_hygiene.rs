//! Command-line hygiene through the real `warren` binary: `--data-path` on every command that
//! loads plugins, and the warning for a credential value whose scheme is not upper case.

use std::path::Path;
use std::process::{Command, Output};

/// `warren ARGS` with none of the environment variables these options read.
fn warren(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
    cmd.args(args);
    for var in [
        "WARREN_DATA_PATH",
        "WARREN_PLUGIN_PATH",
        "WARREN_CONFIG",
        "WARREN_CACHE_KEY_PATH",
        "WARREN_GATEWAY_AUTH_TOKEN",
        "WARREN_RING_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("WARREN_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run warren")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn plugin_list_takes_data_path_from_the_flag_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (flag, env, keys) = (dir.path().join("flag"), dir.path().join("env"), dir.path().join("keys"));

    let out = warren(&["plugin", "list", "--data-path", s(&flag), "--cache-key-path", s(&keys)], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(listing.starts_with(&format!("plugin folder {}/plugins ", flag.display())), "{listing}");

    let out = warren(&["plugin", "list", "--cache-key-path", s(&keys)], &[("WARREN_DATA_PATH", &env)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("plugin folder {}/plugins ", env.display())));

    // The flag wins over the environment, as for `sup run`.
    let out = warren(
        &["plugin", "list", "--data-path", s(&flag), "--cache-key-path", s(&keys)],
        &[("WARREN_DATA_PATH", &env)],
    );
    assert!(text(&out.stdout).starts_with(&format!("plugin folder {}/plugins ", flag.display())));

    // And over the config file's data_path.
    let config = dir.path().join("sup.toml");
    std::fs::write(&config, format!("data_path = \"{}\"\n", env.display())).unwrap();
    let out = warren(
        &["plugin", "list", "--config", s(&config), "--data-path", s(&flag), "--cache-key-path", s(&keys)],
        &[],
    );
    assert!(text(&out.stdout).starts_with(&format!("plugin folder {}/plugins ", flag.display())));
}

#[test]
fn credential_resolve_takes_data_path_from_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = dir.path().join("keys");
    let out = warren(
        &["credential", "resolve", "NOPE:x", "--data-path", s(&data), "--cache-key-path", s(&keys)],
        &[],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&format!("no plugin in {}/plugins serves scheme NOPE", data.display())), "{err}");
    // A literal is printed back without loading anything.
    let out = warren(&["credential", "resolve", "plain-value", "--data-path", s(&data)], &[]);
    assert_eq!(text(&out.stdout), "plain-value\n");
}

const SECRET_PATH: &str = "/run/secrets/s3cret-name";

fn mistyped_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("sup.toml");
    std::fs::write(&config, format!("auth_token = \"file:{SECRET_PATH}\"\nring_key = \"ENV:NO_SUCH_VAR\"\n"))
        .unwrap();
    config
}

fn assert_one_warning(stderr: &str) {
    let hits = stderr.matches("auth_token: the value starts with \"file:\"").count();
    assert_eq!(hits, 1, "one warning per value: {stderr}");
    assert!(stderr.contains("schemes are upper case"), "{stderr}");
    assert!(stderr.contains("FILE:..."), "{stderr}");
    assert!(!stderr.contains("s3cret-name"), "the value is not echoed: {stderr}");
    assert!(!stderr.contains("NO_SUCH_VAR: the value"), "routed references do not warn: {stderr}");
}

#[test]
fn sup_run_warns_about_a_lower_case_scheme_in_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = mistyped_config(dir.path());
    // A ring key that is not in the cache: the supervisor stops right after reading its config.
    let out = warren(
        &[
            "sup",
            "run",
            "--config",
            s(&config),
            "--data-path",
            s(&dir.path().join("data")),
            "--cache-key-path",
            s(&dir.path().join("keys")),
            "--listen-gossip",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
            "--ring",
            "absent",
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_one_warning(&stderr);
    assert!(stderr.contains("error:") && stderr.contains("absent"), "{stderr}");
}

#[test]
fn plugin_commands_warn_once_about_a_lower_case_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let config = mistyped_config(dir.path());
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    let common = ["--config", s(&config), "--data-path", s(&data), "--cache-key-path", s(&keys)];
    let out = warren(&[&["plugin", "list"][..], &common].concat(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_one_warning(&text(&out.stderr));
    // `credential resolve` reads the config once, however many registries it builds.
    let out = warren(&[&["credential", "resolve", "NOPE:x"][..], &common].concat(), &[]);
    assert_one_warning(&text(&out.stderr));
}

#[test]
fn config_values_that_must_stay_private_are_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    let config = dir.path().join("sup.toml");
    let common = ["--config", s(&config), "--data-path", s(&data), "--cache-key-path", s(&keys)];
    let list = [&["plugin", "list"][..], &common].concat();

    // An unquoted secret: refused, and the error shows neither it nor a part of it.
    std::fs::write(&config, "ctl_secret = 86427531\n").unwrap();
    let out = warren(&list, &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("line 1") && stderr.contains("must be a quoted string"), "{stderr}");
    for part in ["8642", "6427", "4275", "2753", "7531"] {
        assert!(!stderr.contains(part), "{part}: {stderr}");
    }

    // A password with a colon warns without its prefix; service URLs do not warn at all.
    std::fs::write(
        &config,
        "auth_token = \"Tr0ub4dor:XYZ\"\n[services.app.config]\n\
         securerandom = \"file:/dev/./urandom\"\nfpm = \"unix:/run/php-fpm.sock\"\n",
    )
    .unwrap();
    let out = warren(&list, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("the value starts with").count(), 1, "{stderr}");
    assert!(stderr.contains("auth_token: the value starts with a scheme-like prefix"), "{stderr}");
    assert!(!stderr.contains("Tr0ub4dor") && !stderr.contains("XYZ"), "{stderr}");
    assert!(!stderr.contains("urandom") && !stderr.contains("php-fpm"), "{stderr}");
}

/// `sup run` with a ring key absent from the cache (so a supervisor that got past its config
/// and gateway token stops there instead of serving).
fn sup_run(dir: &Path, config: Option<&Path>, env: &[(&str, &Path)]) -> (bool, String) {
    let data = dir.join("data");
    let keys = dir.join("keys");
    let mut args = vec!["sup", "run", "--data-path", s(&data), "--cache-key-path", s(&keys)];
    args.extend(["--listen-gossip", "127.0.0.1:0", "--listen-http", "127.0.0.1:0", "--ring", "absent"]);
    if let Some(c) = config {
        args.extend(["--config", s(c)]);
    }
    let out = warren(&args, env);
    (out.status.success(), text(&out.stderr))
}

#[test]
fn sup_run_refuses_unknown_config_keys_and_blank_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sup.toml");

    // A mistyped key would have left the gateway open: refused by name, value not echoed.
    std::fs::write(&config, "auth_tokn = \"s3cret-value\"\n").unwrap();
    let (ok, stderr) = sup_run(dir.path(), Some(&config), &[]);
    assert!(!ok);
    assert!(stderr.contains("unknown field `auth_tokn`") && stderr.contains("`auth_token`"), "{stderr}");
    assert!(!stderr.contains("s3cret") && !stderr.contains("absent"), "{stderr}");

    for blank in ["auth_token = \"\"\n", "auth_token = \" \"\n", "auth_token = \"literal:\"\n"] {
        std::fs::write(&config, blank).unwrap();
        let (ok, stderr) = sup_run(dir.path(), Some(&config), &[]);
        assert!(!ok);
        assert!(stderr.contains("auth_token is empty"), "{blank}: {stderr}");
    }

    // Set but blank in the environment: refused, not taken as "no token".
    for blank in ["", "  "] {
        let (ok, stderr) = sup_run(dir.path(), None, &[("WARREN_GATEWAY_AUTH_TOKEN", Path::new(blank))]);
        assert!(!ok);
        assert!(stderr.contains("WARREN_GATEWAY_AUTH_TOKEN is set but empty"), "{blank:?}: {stderr}");
    }
    // Unset, the supervisor gets past the token (and stops at the absent ring key).
    let (ok, stderr) = sup_run(dir.path(), None, &[]);
    assert!(!ok && stderr.contains("absent") && !stderr.contains("empty"), "{stderr}");
}

/// `--key-fetch-interval` and sup.toml's `key_fetch_interval` read one grammar: a bare `300`
/// on the flag was 300 ms (a fetch, and a keyserver fsync, every 0.3 s) where the file meant
/// 300 s. Now the flag wants its unit, as the file's text form does.
#[test]
fn the_key_fetch_interval_flag_wants_a_unit() {
    let out = warren(&["sup", "run", "--key-fetch-interval", "300"], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--key-fetch-interval") && err.contains("give a unit (ms, s or m)"), "{err}");
    let help = text(&warren(&["sup", "run", "--help"], &[]).stdout);
    assert!(help.contains("with its unit (30s,"), "{help}");
}
