//! A service's configuration, in Habitat's layers, later ones winning key by key (tables merge
//! recursively, anything else is replaced): the package's `default.toml`, then sup.toml's
//! `[services.NAME.config]` (warren's), then the `WARREN_<PKGNAME>` environment variable of the
//! supervisor (TOML or JSON; Habitat's `HAB_<PKGNAME>`), then `{data_path}/user/NAME/user.toml`
//! (watched), then the service group's gossiped config (in memory only, its strings escaped:
//! see `manager/gossip.rs`). Strings of the other layers may be credential references
//! ([`references`], [`resolve`]).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("${var}: neither TOML nor JSON ({message})")]
    Env { var: String, message: String },
}

/// warren's own variables: never a package's config layer, whatever the package is called.
pub const RESERVED_ENV: &[&str] = &[
    "WARREN_RING_KEY",
    "WARREN_CTL_SECRET",
    "WARREN_GATEWAY_AUTH_TOKEN",
    "WARREN_DATA_PATH",
    "WARREN_CACHE_KEY_PATH",
    "WARREN_CLI_CONFIG",
    "WARREN_REMOTE_SUP",
    "WARREN_LOG",
    "WARREN_WATCH",
    "WARREN_WATCH_POLL_INTERVAL",
    "WARREN_INTEROP_DIR",
];

/// `WARREN_<PKGNAME>`: the name upper-cased, `-` as `_`.
pub fn env_var(pkg_name: &str) -> String {
    format!("WARREN_{}", pkg_name.to_ascii_uppercase().replace('-', "_"))
}

/// `{data_path}/user/NAME/user.toml`.
pub fn user_toml(data_path: &Path, name: &str) -> PathBuf {
    data_path.join("user").join(name).join("user.toml")
}

/// Merges `over` into `base`: tables recursively, other values replaced.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn read_toml(path: &Path) -> Result<Option<toml::Table>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .map_err(|e| ConfigError::File { path: path.to_path_buf(), message: e.message().to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError::File { path: path.to_path_buf(), message: e.to_string() }),
    }
}

/// JSON values as TOML ones (TOML has no null: a null is left out).
fn json_to_toml(v: serde_json::Value) -> Option<toml::Value> {
    Some(match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => toml::Value::Boolean(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        serde_json::Value::String(s) => toml::Value::String(s),
        serde_json::Value::Array(a) => toml::Value::Array(a.into_iter().filter_map(json_to_toml).collect()),
        serde_json::Value::Object(o) => {
            toml::Value::Table(o.into_iter().filter_map(|(k, v)| Some((k, json_to_toml(v)?))).collect())
        }
    })
}

fn parse_env(var: &str, text: &str) -> Result<toml::Table, ConfigError> {
    match toml::from_str::<toml::Table>(text) {
        Ok(t) => Ok(t),
        Err(toml_err) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v @ serde_json::Value::Object(_)) => match json_to_toml(v) {
                Some(toml::Value::Table(t)) => Ok(t),
                _ => Ok(toml::Table::new()),
            },
            _ => Err(ConfigError::Env { var: var.to_string(), message: toml_err.message().to_string() }),
        },
    }
}

/// The service's configuration from its layers. `sup` is sup.toml's `[services.NAME.config]`;
/// `env` is the supervisor's value of [`env_var`] (read once by the caller).
pub fn layered(
    pkg_dir: &Path,
    sup: Option<&toml::Table>,
    env: Option<(&str, &str)>,
    user_toml: &Path,
) -> Result<toml::Table, ConfigError> {
    let mut cfg = read_toml(&pkg_dir.join("default.toml"))?.unwrap_or_default();
    if let Some(sup) = sup {
        merge(&mut cfg, sup.clone());
    }
    if let Some((var, text)) = env {
        merge(&mut cfg, parse_env(var, text)?);
    }
    if let Some(user) = read_toml(user_toml)? {
        merge(&mut cfg, user);
    }
    Ok(cfg)
}

/// The credential references among `cfg`'s strings (arrays and tables included), as
/// (label, reference): `SCHEME:rest` where `routed(SCHEME)` (a scheme `[credentials]` assigns to
/// a plugin). Other strings are values: a service's `HTTP:80` or `Note: x` stays as written.
/// Labels are `{prefix}.path.to.key` (`[i]` for array items), never the value.
pub fn references(cfg: &toml::Table, prefix: &str, routed: &dyn Fn(&str) -> bool) -> Vec<(String, String)> {
    fn walk(v: &toml::Value, label: String, routed: &dyn Fn(&str) -> bool, out: &mut Vec<(String, String)>) {
        match v {
            toml::Value::String(s) => {
                if let Some((scheme, _)) = s.split_once(':')
                    && crate::credentials::reference::is_scheme(scheme)
                    && routed(scheme)
                {
                    out.push((label, s.clone()));
                }
            }
            toml::Value::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    walk(item, format!("{label}[{i}]"), routed, out);
                }
            }
            toml::Value::Table(t) => {
                for (k, item) in t {
                    walk(item, format!("{label}.{k}"), routed, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (k, v) in cfg {
        walk(v, format!("{prefix}.{k}"), routed, &mut out);
    }
    out
}

/// `cfg` with every reference [`references`] finds replaced by `lookup(reference)`, and the
/// `literal:` escape taken off the strings that carry it. Err: the first reference `lookup`
/// has no value for (not resolved yet, or failing).
pub fn resolve(
    cfg: &toml::Table,
    routed: &dyn Fn(&str) -> bool,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<toml::Table, String> {
    fn walk(
        v: &mut toml::Value,
        routed: &dyn Fn(&str) -> bool,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        match v {
            toml::Value::String(s) => {
                if let Some(literal) = s.strip_prefix(crate::credentials::reference::LITERAL_PREFIX) {
                    *s = literal.to_string();
                } else if let Some((scheme, _)) = s.split_once(':')
                    && crate::credentials::reference::is_scheme(scheme)
                    && routed(scheme)
                {
                    *s = lookup(s).ok_or_else(|| s.clone())?;
                }
            }
            toml::Value::Array(a) => {
                for item in a {
                    walk(item, routed, lookup)?;
                }
            }
            toml::Value::Table(t) => {
                for (_, item) in t.iter_mut() {
                    walk(item, routed, lookup)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    let mut v = toml::Value::Table(cfg.clone());
    walk(&mut v, routed, lookup)?;
    match v {
        toml::Value::Table(t) => Ok(t),
        _ => unreachable!("a table stays a table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_in_any_layer_resolve_and_other_strings_stay_as_written() {
        let cfg: toml::Table = toml::from_str(
            r#"
            password = "FILE:/run/secrets/pw"
            listen = "HTTP:80"
            note = "Note: x"
            escaped = "literal:FILE:/not/a/reference"
            [db]
            hosts = ["a", "ENV:DB_HOST"]
            [db.tls]
            key = "VAULT:secret/data/db#key"
            "#,
        )
        .unwrap();
        let routed = |s: &str| matches!(s, "FILE" | "ENV" | "VAULT");
        let refs = references(&cfg, "services.web.config", &routed);
        assert_eq!(
            refs,
            [
                ("services.web.config.db.hosts[1]".to_string(), "ENV:DB_HOST".to_string()),
                ("services.web.config.db.tls.key".into(), "VAULT:secret/data/db#key".into()),
                ("services.web.config.password".into(), "FILE:/run/secrets/pw".into()),
            ]
        );
        let values = |r: &str| match r {
            "FILE:/run/secrets/pw" => Some("hunter2".to_string()),
            "ENV:DB_HOST" => Some("db.internal".into()),
            "VAULT:secret/data/db#key" => Some("KEY".into()),
            _ => None,
        };
        let out = resolve(&cfg, &routed, &values).unwrap();
        assert_eq!(out["password"].as_str(), Some("hunter2"));
        assert_eq!(out["db"]["hosts"][1].as_str(), Some("db.internal"));
        assert_eq!(out["db"]["tls"]["key"].as_str(), Some("KEY"));
        assert_eq!(out["listen"].as_str(), Some("HTTP:80"), "not a routed scheme");
        assert_eq!(out["note"].as_str(), Some("Note: x"));
        assert_eq!(out["escaped"].as_str(), Some("FILE:/not/a/reference"), "the escape is taken off");
        // A reference without a value yet is named, and nothing is half-resolved.
        let missing = resolve(&cfg, &routed, &|r: &str| (r != "ENV:DB_HOST").then(|| values(r)).flatten());
        assert_eq!(missing.unwrap_err(), "ENV:DB_HOST");
    }

    #[test]
    fn layers_merge_in_habitats_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("default.toml"),
            "message = \"default\"\nkeep = 1\n[http]\nport = 80\nlisten = \"0.0.0.0\"\n",
        )
        .unwrap();
        let user = dir.path().join("user.toml");
        std::fs::write(&user, "[http]\nport = 8081\n").unwrap();
        let env =
            Some(("WARREN_WEB", r#"{"message": "from env", "http": {"listen": "127.0.0.1"}, "gone": null}"#));
        let sup: toml::Table = toml::from_str("keep = 2\nfrom_sup = true\n[http]\nport = 81\n").unwrap();
        let cfg = layered(dir.path(), Some(&sup), env, &user).unwrap();
        assert_eq!(cfg["message"].as_str(), Some("from env"));
        assert_eq!(cfg["keep"].as_integer(), Some(2), "sup.toml over default.toml");
        assert_eq!(cfg["from_sup"].as_bool(), Some(true));
        assert_eq!(cfg["http"]["port"].as_integer(), Some(8081), "user.toml wins");
        assert_eq!(cfg["http"]["listen"].as_str(), Some("127.0.0.1"), "tables merge key by key");
        assert!(!cfg.contains_key("gone"));
        let toml_env =
            layered(dir.path(), None, Some(("WARREN_WEB", "message = \"t\"")), &dir.path().join("none"))
                .unwrap();
        assert_eq!(toml_env["message"].as_str(), Some("t"));
        assert_eq!(env_var("hello-http"), "WARREN_HELLO_HTTP");
    }

    #[test]
    fn bad_layers_are_errors_that_name_their_source() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("default.toml"), "a = [").unwrap();
        let e = layered(dir.path(), None, None, &dir.path().join("u")).unwrap_err().to_string();
        assert!(e.contains("default.toml"), "{e}");
        std::fs::write(dir.path().join("default.toml"), "a = 1").unwrap();
        let e =
            layered(dir.path(), None, Some(("WARREN_X", "not = [valid")), &dir.path().join("u")).unwrap_err();
        assert!(e.to_string().contains("$WARREN_X"), "{e}");
    }
}
