//! A real `warren sup run` with a plugin folder, a `FILE:` credential (the gateway token) and
//! a key-cache ring holds exactly one inotify instance, and follows all three; with polling
//! forced (`WARREN_WATCH=poll`) it holds none, says so once, and still follows all three.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::files::write_atomic;
use support::keys::{ring_key, write_key};
use support::plugins::wasm;
use support::ring::args;
use support::sup::Sup;
use support::wait::wait_until;
use warren::http::client;

const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    dir: tempfile::TempDir,
    args: Vec<String>,
    plugins: PathBuf,
    token: PathBuf,
    cache: PathBuf,
}

/// plugins/ holding file.wasm, secrets/token, a key cache with one `watchring` key, and a
/// sup.toml whose gateway token is `FILE:` that token.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let secrets = dir.path().join("secrets");
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::copy(wasm("file"), plugins.join("file.wasm")).unwrap();
    let token = secrets.join("token");
    write_atomic(&token, "first-token\n");
    write_key(&cache, &ring_key("watchring", "20240101000000"));
    let config = dir.path().join("sup.toml");
    std::fs::write(
        &config,
        format!(
            "auth_token = \"FILE:{}\"\nplugin_trust = \"off\"\n\n[plugins.file]\nread_paths = [\"{}\"]\n",
            token.display(),
            secrets.display()
        ),
    )
    .unwrap();
    let args = args(&[
        "--config",
        config.to_str().unwrap(),
        "--plugin-path",
        plugins.to_str().unwrap(),
        "--ring",
        "watchring",
        "--cache-key-path",
        cache.to_str().unwrap(),
    ]);
    Setup { dir, args, plugins, token, cache }
}

/// The inotify instances process `pid` holds.
fn inotify_instances(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == Path::new("anon_inode:inotify"))
        .count()
}

fn get_json(sup: &Sup, path: &str, token: &str) -> Option<serde_json::Value> {
    client::request(&sup.http, "GET", path, Some(token), None, Duration::from_secs(2))
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| r.json().ok())
}

fn status(sup: &Sup, token: &str) -> u16 {
    client::request(&sup.http, "GET", "/plugins", Some(token), None, Duration::from_secs(2))
        .map_or(0, |r| r.status)
}

fn has_plugin(sup: &Sup, token: &str, name: &str) -> bool {
    get_json(sup, "/plugins", token).is_some_and(|j| {
        j["plugins"].as_array().is_some_and(|a| a.iter().any(|p| p["name"] == name && p["state"] == "loaded"))
    })
}

fn ring_keys(sup: &Sup, token: &str) -> Option<usize> {
    get_json(sup, "/ring/keys", token).and_then(|j| j.as_array().map(Vec::len))
}

/// The token rotates, a dropped-in plugin loads and unloads, a key added to and removed from
/// the cache is accepted and dropped: each through the one watch service.
fn follows_credentials_plugins_and_keys(sup: &Sup, s: &Setup) {
    wait_until(WAIT, "first token accepted", || status(sup, "first-token") == 200);

    write_atomic(&s.token, "second-token\n");
    wait_until(WAIT, "token rotated", || {
        status(sup, "second-token") == 200 && status(sup, "first-token") == 401
    });
    let t = "second-token";

    let env = s.plugins.join("env.wasm");
    write_atomic(&env, std::fs::read(wasm("env")).unwrap());
    wait_until(WAIT, "env plugin loaded", || has_plugin(sup, t, "env"));
    std::fs::remove_file(&env).unwrap();
    wait_until(WAIT, "env plugin unloaded", || !has_plugin(sup, t, "env"));
    assert!(has_plugin(sup, t, "file"));

    assert_eq!(ring_keys(sup, t), Some(1));
    let k2 = ring_key("watchring", "20250101000000");
    write_key(&s.cache, &k2);
    wait_until(WAIT, "new cache key accepted", || ring_keys(sup, t) == Some(2));
    std::fs::remove_file(s.cache.join(format!("{}.sym.key", k2.id))).unwrap();
    wait_until(WAIT, "removed cache key dropped", || ring_keys(sup, t) == Some(1));
}

fn resolutions(sup: &Sup, token: &str) -> u64 {
    let j = get_json(sup, "/credentials", token).expect("/credentials");
    j["credentials"].as_array().unwrap().iter().find(|c| c["used_by"][0] == "auth_token").unwrap()["resolutions"]
        .as_u64()
        .unwrap()
}

fn log(sup: &Sup) -> String {
    std::fs::read_to_string(&sup.log).unwrap()
}

#[test]
fn one_inotify_instance_follows_credentials_plugins_and_keys() {
    let s = setup();
    let sup = Sup::start(s.dir.path(), 160, s.args.clone(), vec![]);
    assert_eq!(inotify_instances(sup.pid()), 1, "{}", sup.log_tail());
    follows_credentials_plugins_and_keys(&sup, &s);
    assert_eq!(inotify_instances(sup.pid()), 1, "still one after watching and unwatching");
    // Resolving reads the token file, and a read is an inotify event in its folder: it must
    // not start another resolution (it did: about 25 a second, forever).
    let before = resolutions(&sup, "second-token");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(resolutions(&sup, "second-token"), before, "an idle credential keeps being resolved");
    assert!(!log(&sup).contains("polling"), "no fallback here:\n{}", sup.log_tail());
}

#[test]
fn forced_polling_follows_the_same_changes_and_says_so_once() {
    let s = setup();
    let envs = vec![
        ("WARREN_WATCH".to_string(), "poll".to_string()),
        ("WARREN_WATCH_POLL_INTERVAL".to_string(), "100ms".to_string()),
    ];
    let sup = Sup::start(s.dir.path(), 161, s.args.clone(), envs);
    assert_eq!(inotify_instances(sup.pid()), 0, "{}", sup.log_tail());
    follows_credentials_plugins_and_keys(&sup, &s);
    let text = log(&sup);
    let warnings =
        text.lines().filter(|l| l.contains("WARN") && l.contains("by polling every 100ms")).count();
    assert_eq!(warnings, 1, "one warning names the fallback:\n{text}");
}
