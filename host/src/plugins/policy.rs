//! The sandbox policy: the operator grants (`[plugins.NAME]` in sup.toml), intersected with
//! what the plugin's manifest requests. A plugin gets at most what both allow.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::manifest::Requests;

/// An absolute path with no `.` or `..` component (so component-wise nesting is real nesting).
pub fn is_plain_absolute(p: &Path) -> bool {
    p.is_absolute() && !p.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir))
}

/// What the operator grants one plugin (`[plugins.NAME]`). Absent table = nothing granted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub read_paths: Vec<PathBuf>,
    #[serde(default)]
    pub http_hosts: Vec<String>,
    #[serde(default)]
    pub memory_mb: Option<u32>,
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// The origin that must have signed this plugin (`plugin_trust = strict`).
    #[serde(default)]
    pub signer: Option<String>,
    /// Several accepted origins (with or instead of `signer`).
    #[serde(default)]
    pub signers: Vec<String>,
}

impl Grant {
    /// Every origin the operator accepts as this plugin's signer.
    pub fn allowed_signers(&self) -> impl Iterator<Item = &str> {
        self.signer.iter().chain(self.signers.iter()).map(String::as_str)
    }

    /// Grants are explicit: no wildcards, absolute normalized paths.
    pub fn validate(&self) -> Result<(), String> {
        for e in &self.env {
            if e == "*" || e.is_empty() || e.contains('=') || e.contains('\0') {
                return Err(format!("env grant {e:?} must be a variable name (no wildcards)"));
            }
        }
        for p in &self.read_paths {
            if !is_plain_absolute(p) {
                return Err(format!(
                    "read_paths grant {} must be an absolute path without . or ..",
                    p.display()
                ));
            }
        }
        for h in &self.http_hosts {
            if h == "*" || h.is_empty() || h.contains('/') {
                return Err(format!("http_hosts grant {h:?} must be host:port (no wildcards)"));
            }
        }
        if self.memory_mb == Some(0) || self.timeout_ms == Some(0) {
            return Err("memory_mb and timeout_ms must be positive".into());
        }
        for origin in self.allowed_signers() {
            // An origin name, not a key revision: `acme`, never `acme-20200101000000`.
            if crate::crypto::keys::validate_name(origin).is_err()
                || origin.contains('@')
                || origin.parse::<crate::crypto::KeyId>().is_ok()
            {
                return Err(format!("signer {origin:?} must be an origin name (e.g. \"acme\")"));
            }
        }
        Ok(())
    }
}

/// Host-wide ceilings and the defaults used when neither side names a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub default_memory_mb: u32,
    pub max_memory_mb: u32,
    pub default_timeout_ms: u32,
    pub max_timeout_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_memory_mb: 64,
            max_memory_mb: 1024,
            default_timeout_ms: 1000,
            max_timeout_ms: 60_000,
        }
    }
}

/// What one plugin actually gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Effective {
    pub env: Vec<String>,
    pub read_paths: Vec<PathBuf>,
    /// The operator's read grants as written: a read path whose resolution (symlinks at or
    /// above it) leaves all of them is not opened.
    #[serde(skip)]
    pub read_grants: Vec<PathBuf>,
    pub http_hosts: Vec<String>,
    pub memory_mb: u32,
    pub timeout_ms: u32,
}

impl Effective {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
    }
    pub fn memory_bytes(&self) -> usize {
        self.memory_mb as usize * 1024 * 1024
    }
    /// Whether an outbound HTTP authority (`host:port`, exactly as dialled) was granted.
    pub fn allows_http(&self, authority: &str) -> bool {
        self.http_hosts.iter().any(|h| h.eq_ignore_ascii_case(authority))
    }

    /// Where a granted read path really is: its resolution, if that stays inside one of the
    /// operator's grants as written. A symlink at or above the path (`/run/secrets/x -> /`)
    /// that leads elsewhere gives `Err` with the resolved path (or the I/O error).
    pub fn confined_read_path(&self, dir: &Path) -> Result<PathBuf, String> {
        let real = std::fs::canonicalize(dir).map_err(|e| e.to_string())?;
        if self.read_grants.iter().any(|g| dir.starts_with(g) && real.starts_with(g)) {
            Ok(real)
        } else {
            Err(format!("it resolves to {}, outside the grant", real.display()))
        }
    }
}

fn wants_all(list: &[String]) -> bool {
    list.iter().any(|s| s == "*")
}

/// The intersection of a manifest's requests and the operator's grant.
pub fn intersect(req: &Requests, grant: &Grant, limits: &Limits) -> Effective {
    let env = if wants_all(&req.env) {
        grant.env.clone()
    } else {
        grant.env.iter().filter(|g| req.env.contains(g)).cloned().collect()
    };
    let http_hosts = if wants_all(&req.http_hosts) {
        grant.http_hosts.clone()
    } else {
        grant
            .http_hosts
            .iter()
            .filter(|g| req.http_hosts.iter().any(|r| r.eq_ignore_ascii_case(g)))
            .cloned()
            .collect()
    };
    // Paths: the narrower of each (request, grant) pair that nest.
    let mut read_paths: Vec<PathBuf> = Vec::new();
    if wants_all(&req.read_paths) {
        read_paths = grant.read_paths.clone();
    } else {
        for r in &req.read_paths {
            let r = Path::new(r);
            // `starts_with` compares components without resolving `..`: never let one through.
            if !is_plain_absolute(r) {
                continue;
            }
            for g in &grant.read_paths {
                let narrow = if r.starts_with(g) {
                    r
                } else if g.starts_with(r) {
                    g.as_path()
                } else {
                    continue;
                };
                if !read_paths.iter().any(|p| p == narrow) {
                    read_paths.push(narrow.to_path_buf());
                }
            }
        }
    }
    let pick = |req: Option<u32>, grant: Option<u32>, default: u32, max: u32| -> u32 {
        let ceiling = grant.unwrap_or(default).min(max);
        req.map_or(ceiling, |r| r.min(ceiling)).max(1)
    };
    Effective {
        env,
        read_paths,
        read_grants: grant.read_paths.clone(),
        http_hosts,
        memory_mb: pick(req.memory_mb, grant.memory_mb, limits.default_memory_mb, limits.max_memory_mb),
        timeout_ms: pick(req.timeout_ms, grant.timeout_ms, limits.default_timeout_ms, limits.max_timeout_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(env: &[&str], paths: &[&str], hosts: &[&str], mem: Option<u32>, t: Option<u32>) -> Requests {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        Requests { env: v(env), read_paths: v(paths), http_hosts: v(hosts), memory_mb: mem, timeout_ms: t }
    }

    #[test]
    fn star_takes_the_grant_and_lists_intersect() {
        let g = Grant {
            env: vec!["A".into(), "B".into()],
            read_paths: vec!["/run/secrets".into()],
            http_hosts: vec!["127.0.0.1:8200".into()],
            memory_mb: Some(32),
            ..Grant::default()
        };
        let e = intersect(&req(&["*"], &["*"], &["*"], Some(16), Some(5000)), &g, &Limits::default());
        assert_eq!(e.env, vec!["A", "B"]);
        assert_eq!(e.read_paths, vec![PathBuf::from("/run/secrets")]);
        assert_eq!(e.memory_mb, 16);
        assert_eq!(e.timeout_ms, 1000, "the default ceiling caps a larger request");
        let e = intersect(
            &req(&["B", "C"], &["/run/secrets/db", "/etc"], &["vault:8200"], Some(64), None),
            &g,
            &Limits::default(),
        );
        assert_eq!(e.env, vec!["B"]);
        assert_eq!(e.read_paths, vec![PathBuf::from("/run/secrets/db")]);
        assert!(e.http_hosts.is_empty());
        assert_eq!(e.memory_mb, 32);
    }

    #[test]
    fn no_grant_means_nothing() {
        let e = intersect(&req(&["*"], &["/"], &["*"], None, None), &Grant::default(), &Limits::default());
        assert!(e.env.is_empty() && e.read_paths.is_empty() && e.http_hosts.is_empty());
        assert_eq!((e.memory_mb, e.timeout_ms), (64, 1000));
    }

    #[test]
    fn request_root_narrows_to_grant() {
        let g = Grant { read_paths: vec!["/run/secrets".into()], ..Grant::default() };
        let e = intersect(&req(&[], &["/"], &[], None, None), &g, &Limits::default());
        assert_eq!(e.read_paths, vec![PathBuf::from("/run/secrets")]);
    }

    #[test]
    fn dot_dot_requests_never_escape_a_grant() {
        let g = Grant { read_paths: vec!["/run/secrets".into()], ..Grant::default() };
        for sneaky in ["/run/secrets/../../etc", "/run/secrets/./../x", "/run/secrets/.."] {
            let e = intersect(&req(&[], &[sneaky], &[], None, None), &g, &Limits::default());
            assert!(e.read_paths.is_empty(), "{sneaky} escaped to {:?}", e.read_paths);
        }
    }

    #[test]
    fn grants_are_validated() {
        assert!(Grant { env: vec!["*".into()], ..Grant::default() }.validate().is_err());
        assert!(Grant { read_paths: vec!["rel".into()], ..Grant::default() }.validate().is_err());
        assert!(Grant { read_paths: vec!["/a/../b".into()], ..Grant::default() }.validate().is_err());
        assert!(Grant { http_hosts: vec!["*".into()], ..Grant::default() }.validate().is_err());
        assert!(Grant { env: vec!["HAB_AUTH_TOKEN".into()], ..Grant::default() }.validate().is_ok());
    }
}
