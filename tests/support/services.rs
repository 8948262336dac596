//! Services under a test's supervisor: script packages put straight into its package store,
//! and `svc status` read back over the ctl gateway.

use std::path::PathBuf;

use super::sup::Sup;

/// The release of every package [`install`] makes.
pub const RELEASE: &str = "20261202000000";

/// Installs `acme/NAME/1.0.0/RELEASE` into the supervisor's store: `hooks` are (name, script)
/// pairs, `meta` (metadata file, contents) pairs.
pub fn install(sup: &Sup, name: &str, hooks: &[(&str, &str)], meta: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = sup.data.join(format!("pkgs/acme/{name}/1.0.0/{RELEASE}"));
    std::fs::create_dir_all(dir.join("hooks")).unwrap();
    std::fs::write(dir.join("IDENT"), format!("acme/{name}/1.0.0/{RELEASE}")).unwrap();
    // As root the service runs as this user (it must exist); otherwise as the supervisor's.
    std::fs::write(dir.join("SVC_USER"), "nobody").unwrap();
    for (file, text) in meta {
        std::fs::write(dir.join(file), text).unwrap();
    }
    for (hook, script) in hooks {
        let path = dir.join("hooks").join(hook);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// The service's directory under the supervisor (`{data}/svc/NAME`).
pub fn svc_dir(sup: &Sup, name: &str) -> PathBuf {
    sup.data.join("svc").join(name)
}

/// `svc status acme/NAME --json` (None if it fails).
pub fn status(sup: &Sup, name: &str) -> Option<serde_json::Value> {
    let run = sup.cli(&["svc", "status", &format!("acme/{name}"), "--json"]);
    (run.code == 0).then(|| serde_json::from_str(run.stdout.lines().next()?).ok()).flatten()
}

/// The pid of the service while it is up.
pub fn pid_of(sup: &Sup, name: &str) -> Option<u32> {
    status(sup, name).filter(|s| s["state"] == "up").and_then(|s| s["pid"].as_u64()).map(|p| p as u32)
}
