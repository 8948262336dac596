//! Leader-follower groups of real supervisors: the kv-leader example built and signed by a
//! test origin, the `leader-follower` topology policy signed by the same origin in a plugin
//! folder every member loads (strict trust: the member's key cache holds the origin's public
//! key, put there before its first start), and what each member says of the election: its
//! `/census` and the role its service rendered on disk.

use std::path::{Path, PathBuf};

use warren::crypto::{KeyCache, SigSecretKey};

use super::cli::warren_with;
use super::files::path_str;
use super::fixtures::repo_root;
use super::keys::origin_keys;
use super::packages::pkg_build;
use super::plugins::wasm;
use super::ring::args;
use super::sup::Sup;

pub const ORIGIN: &str = "acme";
pub const SERVICE: &str = "kv-leader";
/// The group across the ring, as `/census` and the metrics name it.
pub const GROUP: &str = "kv-leader.default";
/// The topology policy's plugin (its `name()`), which `--topology leader` asks for.
pub const POLICY: &str = "leader-follower";

/// The example's source (`examples/packages/kv-leader`).
pub fn kv_leader_src() -> PathBuf {
    repo_root().join("examples/packages/kv-leader")
}

/// The signed package and plugin folder a test's members share.
pub struct Kit {
    pub author: SigSecretKey,
    pub hart: PathBuf,
    /// Holds leader-follower.wasm, signed by the author.
    pub plugins: PathBuf,
}

impl Kit {
    /// Makes the author's keys, builds kv-leader and signs the policy plugin, all under `dir`.
    pub fn new(dir: &Path) -> Kit {
        let keys = dir.join("author-keys");
        let author = origin_keys(&keys, ORIGIN);
        let out = dir.join("harts");
        std::fs::create_dir_all(&out).unwrap();
        let built = pkg_build(&kv_leader_src(), ORIGIN, &keys, &out);
        let hart = PathBuf::from(built.ok().lines().last().unwrap());
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let file = plugins.join(format!("{POLICY}.wasm"));
        std::fs::copy(wasm(POLICY), &file).unwrap();
        warren_with(
            &["plugin", "sign", "--origin", ORIGIN, path_str(&file)],
            None,
            &[("WARREN_CACHE_KEY_PATH", &keys)],
        )
        .ok();
        Kit { author, hart, plugins }
    }

    /// Trusts the author in the key cache of the member whose data folder is `dir/data-{name}`
    /// (the one `Sup` gives it), before it starts: its plugins are then checked strictly.
    pub fn trust(&self, dir: &Path, name: &str) {
        let cache = KeyCache::new(dir.join(format!("data-{name}")).join("keys"));
        cache.write(&self.author.public().to_file()).unwrap();
    }

    /// `sup run` flags that give a member the plugin folder.
    pub fn sup_args(&self) -> Vec<String> {
        args(&["--plugin-path", path_str(&self.plugins)])
    }

    /// Installs kv-leader on `sup` and loads it with `--topology leader` (not waiting: the
    /// service starts only once the group has elected).
    pub fn load(&self, sup: &Sup) {
        sup.cli(&["pkg", "install", path_str(&self.hart)]).ok();
        sup.cli(&["svc", "load", &format!("{ORIGIN}/{SERVICE}"), "--topology", "leader", "--no-wait"]).ok();
    }
}

/// Whether `sup` has loaded the policy plugin (its gateway's `/plugins`).
pub fn policy_loaded(sup: &Sup) -> bool {
    sup.get("/plugins")
        .filter(|r| r.status == 200)
        .and_then(|r| r.json().ok())
        .and_then(|j| j["plugins"].as_array().cloned())
        .is_some_and(|ps| ps.iter().any(|p| p["name"] == POLICY && p["state"] == "loaded"))
}

/// What one member's `/census` says of the group's election: (status, leader_id).
pub fn census_election(sup: &Sup) -> Option<(String, Option<String>)> {
    let census: serde_json::Value = sup.get("/census").filter(|r| r.status == 200)?.json().ok()?;
    let g = census["census_groups"].get(GROUP)?;
    Some((g["election_status"].as_str()?.to_string(), g["leader_id"].as_str().map(str::to_string)))
}

/// The role and leader kv-leader rendered into `{data}/svc/kv-leader/config/role.toml`.
pub fn rendered_role(sup: &Sup) -> Option<(String, String)> {
    let text = std::fs::read_to_string(sup.data.join("svc").join(SERVICE).join("config/role.toml")).ok()?;
    let t: toml::Table = toml::from_str(&text).ok()?;
    Some((t.get("role")?.as_str()?.to_string(), t.get("leader")?.as_str()?.to_string()))
}

/// The lines kv-leader's reconfigure hook wrote (`role=R leader=L`, one per run).
pub fn reconfigures(sup: &Sup) -> Vec<String> {
    let log = sup.data.join("svc").join(SERVICE).join("var/reconfigure.log");
    std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_string).collect()
}

/// The leader every one of `sups` agrees on, if they do: each one's `/census` has the election
/// finished with that leader, and each one's rendered role says so (`leader` on the leader,
/// `follower` on the others, all naming it).
pub fn agreed(sups: &[&Sup]) -> Option<String> {
    let first = census_election(sups.first()?)?.1?;
    sups.iter()
        .all(|s| {
            let id = s.member_id();
            let want = if id == first { "leader" } else { "follower" };
            census_election(s) == Some(("ElectionFinished".into(), Some(first.clone())))
                && rendered_role(s) == Some((want.into(), first.clone()))
        })
        .then_some(first)
}

/// Each member's census and rendered role, and the tail of its log, for a failure message.
/// Under WARREN_TEST_LOG (a run under investigation) each full log is also copied to the
/// system temp dir, as the test's own temp dir goes with the failure.
pub fn report(sups: &[&Sup]) -> String {
    sups.iter()
        .map(|s| {
            if std::env::var_os("WARREN_TEST_LOG").is_some() {
                let keep = std::env::temp_dir().join(format!("warren-report-{}.log", s.member_id()));
                let _ = std::fs::copy(&s.log, &keep);
            }
            format!(
                "== {} ({}): census {:?}, rendered {:?}\n{}\n",
                s.member_id(),
                s.http,
                census_election(s),
                rendered_role(s),
                s.log_tail()
            )
        })
        .collect()
}
