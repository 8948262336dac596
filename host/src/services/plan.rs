//! `plan.toml`: what `warren pkg build` reads from a package's source directory.
//!
//! The keys are Habitat's `pkg_*` plan settings without the prefix:
//!
//! ```toml
//! name = "hello-http"                 # required
//! version = "0.1.0"                   # required
//! maintainer = "Ops <ops@example.com>"
//! license = ["Apache-2.0"]
//! description = "A tiny HTTP server"
//! upstream_url = "https://example.com"
//! svc_user = "nobody"                 # default hab (Habitat's)
//! svc_group = "nogroup"               # default: hab
//! run = "bin/server --flag"           # only without hooks/run: the package's `run` file execs it
//! exports = { port = "http.port" }    # export name = key in default.toml
//! exposes = ["port"]                  # export names whose default.toml values are ports
//! shutdown_signal = "TERM"            # Habitat's default TERM
//! shutdown_timeout = 8                # seconds; Habitat's default 8
//! [binds]                             # required binds: name = exported keys needed
//! database = ["port", "host"]
//! [binds_optional]
//! cache = ["port"]
//! ```
//!
//! Any other key is refused, naming the key and the known ones.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::package::{check_name, check_version};

/// Habitat's service hooks (and its two package hooks); any other file in `hooks/` is refused.
pub const HOOKS: &[&str] = &[
    "init",
    "run",
    "post-run",
    "health-check",
    "reconfigure",
    "suitability",
    "file-updated",
    "post-stop",
    "install",
    "uninstall",
];

/// Signal names a shutdown signal may be (without `SIG`).
const SIGNALS: &[&str] = &[
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE",
    "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ",
    "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// Habitat's defaults.
pub const DEFAULT_SVC_USER: &str = "hab";
pub const DEFAULT_SVC_GROUP: &str = "hab";
/// The longest shutdown timeout a plan may ask for (a day).
const MAX_SHUTDOWN_TIMEOUT: u32 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("plan.toml: {0}")]
    Toml(String),
    #[error("plan.toml: {0}")]
    Invalid(String),
}

/// The parsed and checked contents of plan.toml.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub maintainer: Option<String>,
    #[serde(default)]
    pub license: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub upstream_url: Option<String>,
    #[serde(default)]
    pub svc_user: Option<String>,
    #[serde(default)]
    pub svc_group: Option<String>,
    #[serde(default)]
    pub run: Option<String>,
    #[serde(default)]
    pub exports: BTreeMap<String, String>,
    #[serde(default)]
    pub exposes: Vec<String>,
    #[serde(default)]
    pub binds: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub binds_optional: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub shutdown_signal: Option<String>,
    #[serde(default)]
    pub shutdown_timeout: Option<u32>,
}

fn invalid(msg: impl Into<String>) -> PlanError {
    PlanError::Invalid(msg.into())
}

/// Unix user and group names: letters, digits, `_ . -`, not starting with `-` (32 bytes max).
fn check_account(what: &str, s: &str) -> Result<(), PlanError> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok { Ok(()) } else { Err(invalid(format!("{what} {s:?} is not a user or group name"))) }
}

/// A TOML key path like `http.port`.
fn check_key_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)))
}

impl Plan {
    /// Parses and checks plan.toml's text (everything that does not need the other files).
    pub fn parse(text: &str) -> Result<Plan, PlanError> {
        let mut plan: Plan = toml::from_str(text).map_err(|e| {
            // The toml crate's message points at the line; keep it on one line.
            PlanError::Toml(e.to_string().trim().replace('\n', " ").replace("  ", " "))
        })?;
        check_name("name", &plan.name).map_err(invalid)?;
        check_version(&plan.version).map_err(invalid)?;
        for (what, v) in [("svc_user", &plan.svc_user), ("svc_group", &plan.svc_group)] {
            if let Some(v) = v {
                check_account(what, v)?;
            }
        }
        if let Some(run) = &plan.run
            && (run.trim().is_empty() || run.contains(['\n', '\r', '\0']))
        {
            return Err(invalid("run must be one non-empty command line"));
        }
        for (name, key) in &plan.exports {
            check_name("export name", name).map_err(invalid)?;
            if !check_key_path(key) {
                return Err(invalid(format!(
                    "export {name} = {key:?}: not a config key such as \"http.port\""
                )));
            }
        }
        for e in &plan.exposes {
            if !plan.exports.contains_key(e) {
                return Err(invalid(format!(
                    "exposes names {e:?}, which is not in exports (exports: {})",
                    list(plan.exports.keys())
                )));
            }
        }
        for (table, binds) in [("binds", &plan.binds), ("binds_optional", &plan.binds_optional)] {
            for (name, keys) in binds {
                check_name("bind name", name).map_err(invalid)?;
                if keys.is_empty() {
                    return Err(invalid(format!("{table}.{name} lists no exported keys")));
                }
                if let Some(k) = keys.iter().find(|k| check_name("key", k).is_err()) {
                    return Err(invalid(format!("{table}.{name}: {k:?} is not an export name")));
                }
            }
        }
        if let Some(dup) = plan.binds.keys().find(|k| plan.binds_optional.contains_key(*k)) {
            return Err(invalid(format!("bind {dup:?} is in both binds and binds_optional")));
        }
        if let Some(sig) = plan.shutdown_signal.take() {
            let upper = sig.to_ascii_uppercase();
            let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
            if !SIGNALS.contains(&bare) {
                return Err(invalid(format!("shutdown_signal {sig:?} is not a signal name such as TERM")));
            }
            plan.shutdown_signal = Some(bare.to_string());
        }
        if let Some(t) = plan.shutdown_timeout
            && t > MAX_SHUTDOWN_TIMEOUT
        {
            return Err(invalid(format!("shutdown_timeout {t} is over {MAX_SHUTDOWN_TIMEOUT} seconds")));
        }
        Ok(plan)
    }

    pub fn svc_user(&self) -> &str {
        self.svc_user.as_deref().unwrap_or(DEFAULT_SVC_USER)
    }

    pub fn svc_group(&self) -> &str {
        self.svc_group.as_deref().unwrap_or(DEFAULT_SVC_GROUP)
    }

    /// The ports of `exposes`, looked up through `exports` in default.toml (Habitat's EXPOSES).
    pub fn exposed_ports(&self, default_toml: Option<&toml::Table>) -> Result<Vec<u16>, PlanError> {
        let mut ports = Vec::new();
        for e in &self.exposes {
            let key = &self.exports[e];
            let Some(table) = default_toml else {
                return Err(invalid(format!("exposes {e:?} needs default.toml to hold {key}")));
            };
            let value = lookup(table, key)
                .ok_or_else(|| invalid(format!("exposes {e:?}: default.toml has no {key}")))?;
            let port = match value {
                toml::Value::Integer(n) => u16::try_from(*n).ok(),
                toml::Value::String(s) => s.parse::<u16>().ok(),
                _ => None,
            }
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                invalid(format!("exposes {e:?}: {key} = {value} in default.toml is not a TCP or UDP port"))
            })?;
            ports.push(port);
        }
        Ok(ports)
    }
}

fn lookup<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let mut cur = table.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_table()?.get(p)?;
    }
    Some(cur)
}

fn list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = items.map(String::as_str).collect();
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name = "hello-http"
version = "0.1.0"
license = ["Apache-2.0"]
svc_user = "nobody"
svc_group = "nogroup"
exports = { port = "http.port", host = "http.host" }
exposes = ["port"]
shutdown_signal = "sigint"
shutdown_timeout = 5
[binds]
database = ["port", "host"]
[binds_optional]
cache = ["port"]
"#;

    #[test]
    fn a_full_plan_parses_and_normalizes() {
        let p = Plan::parse(FULL).unwrap();
        assert_eq!((p.name.as_str(), p.version.as_str()), ("hello-http", "0.1.0"));
        assert_eq!(p.shutdown_signal.as_deref(), Some("INT"));
        assert_eq!(p.binds["database"], ["port", "host"]);
        let defaults: toml::Table = toml::from_str("[http]\nport = 8080\nhost = \"0.0.0.0\"\n").unwrap();
        assert_eq!(p.exposed_ports(Some(&defaults)).unwrap(), [8080]);
        let minimal = Plan::parse("name = \"x\"\nversion = \"1\"\n").unwrap();
        assert_eq!((minimal.svc_user(), minimal.svc_group()), ("hab", "hab"));
    }

    #[test]
    fn unknown_keys_are_named_with_the_known_ones() {
        let err = Plan::parse("name = \"x\"\nversion = \"1\"\npkg_deps = []\n").unwrap_err().to_string();
        assert!(err.contains("pkg_deps"), "{err}");
        assert!(err.contains("svc_user") && err.contains("binds_optional"), "{err}");
    }

    #[test]
    fn bad_plans_are_refused_clearly() {
        for (text, want) in [
            ("version = \"1\"\n", "missing field `name`"),
            ("name = \"x\"\n", "missing field `version`"),
            ("name = \"x/y\"\nversion = \"1\"\n", "the name"),
            ("name = \"x\"\nversion = \"../1\"\n", "the version"),
            ("name = \"x\"\nversion = \"1\"\nsvc_user = \"a b\"\n", "svc_user"),
            ("name = \"x\"\nversion = \"1\"\nexposes = [\"port\"]\n", "not in exports"),
            ("name = \"x\"\nversion = \"1\"\nshutdown_signal = \"NOPE\"\n", "shutdown_signal"),
            ("name = \"x\"\nversion = \"1\"\nshutdown_timeout = 999999\n", "shutdown_timeout"),
            ("name = \"x\"\nversion = \"1\"\nrun = \"a\\nb\"\n", "run must be"),
            ("name = \"x\"\nversion = \"1\"\n[binds]\na = []\n", "lists no exported keys"),
            ("name = \"x\"\nversion = \"1\"\n[binds]\na = [\"k\"]\n[binds_optional]\na = [\"k\"]\n", "both"),
            ("name = \"x\"\nversion = [1]\n", "plan.toml"),
            ("name = \"x\" version", "plan.toml"),
        ] {
            let err = Plan::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let p = Plan::parse(
            "name = \"x\"\nversion = \"1\"\nexports = { port = \"http.port\" }\nexposes = [\"port\"]\n",
        )
        .unwrap();
        assert!(p.exposed_ports(None).is_err());
        let bad: toml::Table = toml::from_str("[http]\nport = 70000\n").unwrap();
        assert!(p.exposed_ports(Some(&bad)).unwrap_err().to_string().contains("not a TCP or UDP port"));
        let missing: toml::Table = toml::from_str("[other]\nport = 1\n").unwrap();
        assert!(p.exposed_ports(Some(&missing)).unwrap_err().to_string().contains("has no http.port"));
    }
}
