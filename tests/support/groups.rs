//! Service groups under real supervisors: Habitat's e2e keys (the user mctesterson and the
//! service group redis.default@e2e), a small `redis` package, and the one place configs and
//! files are sent to a group (`config apply` / `file upload`, or a forged rumor).

use std::path::{Path, PathBuf};

use warren::crypto::boxes;
use warren::crypto::cache::read_key_file;
use warren::crypto::{BoxPublicKey, BoxSecretKeyFile};

use super::fixtures::e2e_fixture;
use super::sup::Sup;

pub const GROUP: &str = "redis.default@e2e";
pub const USER_KEY: &str = "mctesterson-20200811182846";
pub const SERVICE_KEY: &str = "redis.default@e2e-20200811182943";

/// `cache_keys` (user and service pairs) or `cache_keys_no_user` (the service pair only).
pub fn fixture_cache(which: &str) -> PathBuf {
    e2e_fixture(&format!("with_user_and_service_encryption/{which}"))
}

/// Copies a fixture cache into `cache` (a supervisor's `data/keys`).
pub fn copy_cache(which: &str, cache: &Path) {
    std::fs::create_dir_all(cache).unwrap();
    for entry in std::fs::read_dir(fixture_cache(which)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), cache.join(entry.file_name())).unwrap();
    }
}

fn user_secret() -> BoxSecretKeyFile {
    let path = fixture_cache("cache_keys").join(format!("{USER_KEY}.box.key"));
    BoxSecretKeyFile::try_from(&read_key_file(&path).unwrap()).unwrap()
}

fn service_public() -> BoxPublicKey {
    let path = fixture_cache("cache_keys").join(format!("{SERVICE_KEY}.pub"));
    BoxPublicKey::try_from(&read_key_file(&path).unwrap()).unwrap()
}

/// BOX-1 from mctesterson to redis.default@e2e, as `config apply -u mctesterson` makes it.
pub fn boxed(plain: &[u8]) -> boxes::BoxMessage {
    boxes::encrypt(plain, &user_secret(), &service_public()).unwrap()
}

/// What to send.
pub enum Body<'a> {
    /// As a user does: `config apply` / `file upload --user mctesterson`, which encrypt it to
    /// the group's service key.
    Encrypted(&'a str),
    /// Plaintext, injected as a rumor (the ctl gateway refuses it for its own org; a rogue
    /// member would not).
    Plain(&'a str),
    /// Sent as is, flagged encrypted, injected (a tampered or misaddressed message).
    Raw(&'a str),
}

fn inject(sup: &Sup, mut rumor: serde_json::Value, body: &Body<'_>, field: &str) {
    let (text, encrypted) = match body {
        Body::Plain(t) => (t.to_string(), false),
        Body::Raw(t) => (t.to_string(), true),
        Body::Encrypted(t) => (boxed(t.as_bytes()).to_text(), true),
    };
    rumor[field] = text.into();
    rumor["encrypted"] = encrypted.into();
    assert_eq!(sup.inject(&rumor), Ok(true), "{rumor}");
}

/// `config apply` / `file upload` of `path` as mctesterson, with the fixture cache.
fn apply(sup: &Sup, what: &[&str], group: &str, version: u64, path: &Path) {
    let cache = fixture_cache("cache_keys");
    let version = version.to_string();
    let mut a = what.to_vec();
    a.extend([group, &version, path.to_str().unwrap(), "--user", "mctesterson"]);
    a.extend(["--cache-key-path", cache.to_str().unwrap()]);
    let run = sup.cli(&a);
    assert_eq!(run.code, 0, "{run:?}");
}

/// Applies a config to `group` through `sup` at `version` (`tmp`: a folder for the file).
pub fn send_config(sup: &Sup, tmp: &Path, group: &str, version: u64, body: Body<'_>) {
    if let Body::Encrypted(text) = body {
        let path = tmp.join(format!("config-{version}.toml"));
        std::fs::write(&path, text).unwrap();
        return apply(sup, &["config", "apply"], group, version, &path);
    }
    let rumor = serde_json::json!({"type": "service_config", "service_group": group, "incarnation": version});
    inject(sup, rumor, &body, "config");
}

/// Uploads a file to `group` through `sup` at `version` (`tmp`: a folder for the file).
pub fn send_file(sup: &Sup, tmp: &Path, group: &str, version: u64, filename: &str, body: Body<'_>) {
    if let Body::Encrypted(text) = body {
        let dir = tmp.join(format!("upload-{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(filename), text).unwrap();
        return apply(sup, &["file", "upload"], group, version, &dir.join(filename));
    }
    let rumor = serde_json::json!({
        "type": "service_file", "service_group": group, "incarnation": version, "filename": filename,
    });
    inject(sup, rumor, &body, "body");
}

/// `warren_service_group_rumors_total{kind=KIND,outcome=OUTCOME}` of a supervisor.
pub fn counted(sup: &Sup, kind: &str, outcome: &str) -> u64 {
    sup.metric(&format!("warren_service_group_rumors_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}"))
}

/// The source of `redis`: renders `{{cfg.x}}` into config/value.txt and exports `port`; its
/// reconfigure and file-updated hooks append a line to data/reconfigured and data/file-updated.
pub fn redis_src(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let src = dir.join("redis-src");
    std::fs::create_dir_all(src.join("hooks")).unwrap();
    std::fs::create_dir_all(src.join("config")).unwrap();
    std::fs::write(
        src.join("plan.toml"),
        "name = \"redis\"\nversion = \"0.1.0\"\nsvc_user = \"nobody\"\nsvc_group = \"nogroup\"\nexports = { port = \"port\" }\n",
    )
    .unwrap();
    std::fs::write(src.join("default.toml"), "x = \"initial\"\nport = 6379\n").unwrap();
    std::fs::write(src.join("config/value.txt"), "{{cfg.x}}").unwrap();
    let hooks = [
        ("run", "#!/bin/sh\nexec sleep 1000\n"),
        ("reconfigure", "#!/bin/sh\necho reconfigured >> \"{{pkg.svc_data_path}}/reconfigured\"\n"),
        ("file-updated", "#!/bin/sh\necho updated >> \"{{pkg.svc_data_path}}/file-updated\"\n"),
    ];
    for (name, text) in hooks {
        let path = src.join("hooks").join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    src
}

/// Builds `redis` signed by a fresh origin `e2e` key in `keys`; returns the .hart.
pub fn build_redis(dir: &Path, keys: &Path) -> PathBuf {
    super::keys::origin_keys(keys, "e2e");
    let run = super::packages::pkg_build(&redis_src(dir), "e2e", keys, dir);
    PathBuf::from(run.ok().lines().last().unwrap())
}

/// The lines of a marker file under the service's data/ (0 if absent).
pub fn marks(sup: &Sup, file: &str) -> usize {
    std::fs::read_to_string(sup.data.join("svc/redis/data").join(file))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// The rendered config/value.txt.
pub fn rendered(sup: &Sup) -> Option<String> {
    std::fs::read_to_string(sup.data.join("svc/redis/config/value.txt")).ok()
}

/// Copies the public keys of `keys` (the origin's) into a supervisor's cache, so it trusts
/// packages they signed.
pub fn trust_origins(keys: &Path, cache: &Path) {
    std::fs::create_dir_all(cache).unwrap();
    for entry in std::fs::read_dir(keys).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pub") {
            std::fs::copy(&path, cache.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// `svc load HART` on a supervisor; panics with its log if it fails.
pub fn load_redis(sup: &Sup, hart: &Path) {
    let run = sup.cli(&["svc", "load", hart.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}\n{}", sup.log_tail());
}
