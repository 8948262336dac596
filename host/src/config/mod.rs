//! `sup.toml`, the supervisor's configuration file (`--config FILE`).
//!
//! ```toml
//! plugin_path = "/var/lib/warren/plugins"   # default {data_path}/plugins
//! plugin_trust = "strict"                   # strict | warn | off
//! auth_token = "FILE:/run/secrets/hab_auth_token"
//! ring_key = "ENV:WARREN_RING_KEY"
//! ctl_secret = "literal:..."
//! key_fetch_interval = "5m"                # admitted nodes: key re-fetch (300s; seconds or "ms"/"s"/"m")
//!
//! [credentials]                 # which plugin serves each scheme (these three are the defaults)
//! FILE = "file"
//! ENV = "env"
//! VAULT = "vault-kv"
//!
//! [plugins.file]                # applies to file.wasm whose manifest name is "file"
//! signer = "acme"               # with plugin_trust = strict: the origin that must sign it
//! read_paths = ["/run/secrets"]
//! [plugins.env]
//! env = ["HAB_AUTH_TOKEN"]
//! [plugins.vault-kv]
//! http_hosts = ["127.0.0.1:8200"]
//! memory_mb = 32
//! timeout_ms = 5000
//!
//! [services.redis.config]
//! password = "VAULT:secret/data/redis#password"
//! ```
//!
//! `auth_token`, `ring_key`, `ctl_secret` and every string under `[services.NAME.config]` are
//! credential references (see `credentials::reference`). Schemes are upper case: a value like
//! `file:/run/x` is a literal, and loading the file logs a warning for it (for the three secret
//! keys; service values warn only for `env:`/`vault:`/`literal:` in the wrong case, since
//! `file:` and `unix:` URLs are ordinary there: see `ValueKind`). An unknown key is an error
//! (a mistyped `auth_token` must not leave the gateway open), and so is a blank secret. The
//! secrets are
//! [`SecretString`]s: `Debug` of a config never shows them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::credentials::Reference;
use crate::credentials::reference::{ValueKind, is_scheme, mistyped_scheme_warning};
use crate::plugins::manifest::valid_plugin_name;
use crate::plugins::registry::credentials_with_defaults;
use crate::plugins::{Grant, Limits, RegistrySettings, TrustMode};
use crate::secret::SecretString;

pub const DATA_PATH_ENV: &str = "WARREN_DATA_PATH";
pub const PLUGIN_PATH_ENV: &str = "WARREN_PLUGIN_PATH";
pub const CONFIG_ENV: &str = "WARREN_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: [plugins.{plugin}]: {message}")]
    Grant { path: String, plugin: String, message: String },
    #[error("{path}: [credentials]: {message}")]
    Credentials { path: String, message: String },
    #[error(
        "{path}: {key} is empty; remove the key to go without it (for auth_token: an open gateway), \
         or give it a value"
    )]
    EmptySecret { path: String, key: &'static str },
}

/// Not `Serialize`: it holds secrets, and its `Debug` shows none (see [`SecretString`]; free-form
/// tables show their keys only).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupConfig {
    #[serde(default)]
    pub data_path: Option<PathBuf>,
    #[serde(default)]
    pub plugin_path: Option<PathBuf>,
    #[serde(default)]
    pub plugin_trust: Option<TrustMode>,
    #[serde(default)]
    pub auth_token: Option<SecretString>,
    #[serde(default)]
    pub ring_key: Option<SecretString>,
    #[serde(default)]
    pub ctl_secret: Option<SecretString>,
    /// Habitat's plaintext ctl handshake: "loopback" (default), "allow" or "deny".
    #[serde(default)]
    pub ctl_plaintext: Option<String>,
    /// Which plugin serves each scheme, on top of [`DEFAULT_CREDENTIALS`].
    #[serde(default)]
    pub credentials: BTreeMap<String, String>,
    /// Operator grants per plugin name.
    #[serde(default)]
    pub plugins: BTreeMap<String, Grant>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSection>,
    /// The org of this supervisor's service groups (`SERVICE.GROUP@ORG`); with one, plaintext
    /// `config apply` and `file upload` for them are refused.
    #[serde(default)]
    pub org: Option<String>,
    /// How often an admitted node re-fetches its keys from the keyserver (`--key-fetch-interval`
    /// wins): whole seconds, or a string with `ms`, `s` or `m`.
    #[serde(default, deserialize_with = "interval")]
    pub key_fetch_interval: Option<std::time::Duration>,
}

/// An interval of 1 ms to 24 h: seconds as an integer, or `"500ms"`, `"30s"`, `"5m"`.
/// A duration with its unit (`500ms`, `30s`, `5m`), from 1 ms to 24 h: the one grammar of
/// sup.toml's intervals and the flags that set them too, so `300` never means seconds in one
/// place and milliseconds in the other.
pub fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        return Err(format!("{t:?}: give a unit (ms, s or m)"));
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("{t:?} is not a duration"))?;
    seconds_in_range(v * scale)
}

fn seconds_in_range(secs: f64) -> Result<std::time::Duration, String> {
    if !(0.001..=86_400.0).contains(&secs) {
        return Err("a duration from 1 ms to 24 h".into());
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn interval<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<std::time::Duration>, D::Error> {
    use serde::de::Error as _;
    let parsed = match toml::Value::deserialize(d)? {
        // A bare integer in TOML: whole seconds (a number, not text, so no unit to forget).
        toml::Value::Integer(n) => seconds_in_range(n as f64),
        toml::Value::String(text) => parse_interval(&text),
        other => return Err(D::Error::custom(format!("a duration, not a {}", other.type_str()))),
    };
    parsed.map(Some).map_err(D::Error::custom)
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Service configuration values (free-form); strings may be credential references.
    #[serde(default)]
    pub config: toml::Table,
}

/// A free-form table in `Debug` output: its keys, never its values (a service's password).
struct KeysOnly<'a>(&'a toml::Table);

impl std::fmt::Debug for KeysOnly<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl std::fmt::Debug for SupConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupConfig")
            .field("data_path", &self.data_path)
            .field("plugin_path", &self.plugin_path)
            .field("plugin_trust", &self.plugin_trust)
            .field("auth_token", &self.auth_token)
            .field("ring_key", &self.ring_key)
            .field("ctl_secret", &self.ctl_secret)
            .field("ctl_plaintext", &self.ctl_plaintext)
            .field("credentials", &self.credentials)
            .field("plugins", &self.plugins)
            .field("services", &self.services)
            .field("org", &self.org)
            .field("key_fetch_interval", &self.key_fetch_interval)
            .finish()
    }
}

impl std::fmt::Debug for ServiceSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSection").field("config", &KeysOnly(&self.config)).finish()
    }
}

/// `/var/lib/warren` for root, `$HOME/.warren` otherwise; `WARREN_DATA_PATH` overrides.
pub fn default_data_path() -> PathBuf {
    if let Some(p) = std::env::var_os(DATA_PATH_ENV) {
        return PathBuf::from(p);
    }
    let keys = crate::crypto::cache::default_cache_path();
    // The key cache default already encodes the root/non-root choice: {data}/keys.
    keys.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/var/lib/warren"))
}

/// toml's own message quotes the offending line, which may hold a secret: keep the line
/// number and the reason only.
/// `over`'s keys replace `base`'s, except that two tables merge key by key.
pub fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_string(),
    }
}

impl SupConfig {
    /// Reads and parses the file, then logs [`SupConfig::warnings`] (once per value: load a
    /// config once per process).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io { path: path.display().to_string(), source: e })?;
        let cfg = Self::parse(&text, &path.display().to_string())?;
        for w in cfg.warnings() {
            tracing::warn!("{}: {w}", path.display());
        }
        Ok(cfg)
    }

    /// `self` (the operator's config, read from `operator` if any) with the fragment at
    /// `fragment` as a layer under it: the operator's keys win, tables merge deeply, and
    /// data_path stays the operator's. A fragment that is absent is nothing; one that does not
    /// parse (or makes the whole invalid) is a warning naming it, and is ignored.
    pub fn under_fragment(self, operator: Option<&Path>, fragment: &Path) -> Self {
        let Ok(text) = std::fs::read_to_string(fragment) else { return self };
        let merged = (|| -> Result<Self, String> {
            let mut base: toml::Table = toml::from_str(&text).map_err(|e| describe_toml_error(&text, &e))?;
            if let Some(op) = operator {
                let op_text = std::fs::read_to_string(op).map_err(|e| format!("{}: {e}", op.display()))?;
                let over: toml::Table = toml::from_str(&op_text).map_err(|e| e.to_string())?;
                merge_tables(&mut base, over);
            }
            let joined = toml::to_string(&base).map_err(|e| e.to_string())?;
            let mut cfg = Self::parse(&joined, &fragment.display().to_string()).map_err(|e| e.to_string())?;
            cfg.data_path = self.data_path.clone();
            Ok(cfg)
        })();
        match merged {
            Ok(cfg) => {
                tracing::info!(fragment = %fragment.display(), "using the keyserver's sup.toml fragment under the operator's config");
                cfg
            }
            Err(e) => {
                tracing::warn!("{}: ignoring the keyserver's sup.toml fragment: {e}", fragment.display());
                self
            }
        }
    }

    /// Mistakes that still parse: a credential value that is a literal only because its
    /// scheme is not upper case (`auth_token = "file:/run/x"`). Service config values follow a
    /// narrower rule, since `file:` and `unix:` URLs are ordinary there (see [`ValueKind`]).
    /// One message per value; none repeats more of the value than a well-known prefix.
    pub fn warnings(&self) -> Vec<String> {
        self.references()
            .iter()
            .filter_map(|(label, value)| {
                // `references` labels service values `services.NAME.config.KEY`, the rest by key.
                let kind =
                    if label.starts_with("services.") { ValueKind::ServiceConfig } else { ValueKind::Secret };
                mistyped_scheme_warning(label, value, kind)
            })
            .collect()
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: SupConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: describe_toml_error(text, &e),
        })?;
        for (name, grant) in &cfg.plugins {
            let err = |message: String| ConfigError::Grant {
                path: origin.to_string(),
                plugin: name.clone(),
                message,
            };
            if !valid_plugin_name(name) {
                return Err(err("not a valid plugin name".into()));
            }
            grant.validate().map_err(err)?;
        }
        for (scheme, plugin) in &cfg.credentials {
            let message = if !is_scheme(scheme) {
                format!("{scheme:?} is not a scheme (upper case: [A-Z][A-Z0-9_]*)")
            } else if !valid_plugin_name(plugin) {
                format!("{scheme} = {plugin:?}: not a valid plugin name")
            } else {
                continue;
            };
            return Err(ConfigError::Credentials { path: origin.to_string(), message });
        }
        // A blank secret is a mistake (an unset variable in a template), not "none": for
        // auth_token it would serve the gateway without authentication.
        for (key, value) in
            [("auth_token", &cfg.auth_token), ("ring_key", &cfg.ring_key), ("ctl_secret", &cfg.ctl_secret)]
        {
            if value.as_ref().is_some_and(|v| is_blank_secret(v.expose())) {
                return Err(ConfigError::EmptySecret { path: origin.to_string(), key });
            }
        }
        Ok(cfg)
    }

    pub fn data_path(&self) -> PathBuf {
        self.data_path.clone().unwrap_or_else(default_data_path)
    }

    /// `--plugin-path` / `WARREN_PLUGIN_PATH` (given as `cli`), else the config, else
    /// `{data_path}/plugins`.
    pub fn plugin_dir(&self, cli: Option<&Path>) -> PathBuf {
        cli.map(Path::to_path_buf)
            .or_else(|| self.plugin_path.clone())
            .unwrap_or_else(|| self.data_path().join("plugins"))
    }

    /// Where compiled plugins are cached: `{data_path}/plugin-cache`.
    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.data_path().join("plugin-cache")
    }

    /// Registry settings; `trust_cli` (`--plugin-trust`) wins over the file, and without
    /// either the default depends on whether any origin key is trusted.
    pub fn registry_settings(
        &self,
        plugin_dir: Option<&Path>,
        trust_cli: Option<TrustMode>,
        default_trust: TrustMode,
    ) -> RegistrySettings {
        RegistrySettings {
            plugin_dir: self.plugin_dir(plugin_dir),
            trust: trust_cli.or(self.plugin_trust).unwrap_or(default_trust),
            grants: self.plugins.clone(),
            credentials: credentials_with_defaults(&self.credentials),
            limits: Limits::default(),
        }
    }

    /// Every credential reference in the file as (config key, reference).
    pub fn references(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (key, v) in
            [("auth_token", &self.auth_token), ("ring_key", &self.ring_key), ("ctl_secret", &self.ctl_secret)]
        {
            if let Some(v) = v {
                out.push((key.to_string(), v.expose().to_string()));
            }
        }
        for (svc, section) in &self.services {
            collect_strings(&format!("services.{svc}.config"), &section.config, &mut out);
        }
        out
    }
}

/// Empty or whitespace, also as `literal:` with nothing after it.
pub fn is_blank_secret(value: &str) -> bool {
    match Reference::parse(value) {
        Reference::Literal(v) => v.trim().is_empty(),
        Reference::Routed { .. } => false,
    }
}

fn collect_strings(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (k, v) in table {
        let key = format!("{prefix}.{k}");
        match v {
            toml::Value::String(s) => out.push((key, s.clone())),
            toml::Value::Table(t) => collect_strings(&key, t, out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SAMPLE: &str = r#"
plugin_path = "/srv/plugins"
plugin_trust = "warn"
auth_token = "FILE:/run/secrets/token"
ctl_secret = "literal:abc"

[credentials]
VAULT = "my-vault"

[plugins.file]
read_paths = ["/run/secrets"]
[plugins.env]
env = ["HAB_AUTH_TOKEN"]
[plugins.vault-kv]
http_hosts = ["127.0.0.1:8200"]
memory_mb = 32
timeout_ms = 5000

[services.redis.config]
password = "VAULT:secret/data/redis#password"
port = 6379
[services.redis.config.tls]
key = "FILE:/run/secrets/redis.key"
"#;

    #[test]
    fn parses_policy_and_references() {
        let c = SupConfig::parse(SAMPLE, "sup.toml").unwrap();
        assert_eq!(c.plugin_dir(None), PathBuf::from("/srv/plugins"));
        assert_eq!(c.plugin_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
        assert_eq!(c.plugin_trust, Some(TrustMode::Warn));
        assert_eq!(c.plugins["vault-kv"].http_hosts, vec!["127.0.0.1:8200"]);
        assert_eq!(c.plugins["file"].read_paths, vec![PathBuf::from("/run/secrets")]);
        let refs = c.references();
        assert!(refs.contains(&("auth_token".into(), "FILE:/run/secrets/token".into())));
        assert!(
            refs.contains(&(
                "services.redis.config.password".into(),
                "VAULT:secret/data/redis#password".into()
            ))
        );
        assert!(
            refs.contains(&("services.redis.config.tls.key".into(), "FILE:/run/secrets/redis.key".into()))
        );
        assert_eq!(refs.len(), 4);
        let s = c.registry_settings(None, Some(TrustMode::Strict), TrustMode::Off);
        assert_eq!(s.trust, TrustMode::Strict);
        // The defaults, with the file's [credentials] on top.
        let want: BTreeMap<String, String> = [("ENV", "env"), ("FILE", "file"), ("VAULT", "my-vault")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(s.credentials, want);
        assert_eq!(
            SupConfig::default().registry_settings(None, None, TrustMode::Off).credentials["VAULT"],
            "vault-kv"
        );
    }

    #[test]
    fn the_key_fetch_interval_takes_seconds_or_a_unit() {
        let got = |text: &str| SupConfig::parse(text, "sup.toml").map(|c| c.key_fetch_interval);
        assert_eq!(got("").unwrap(), None);
        assert_eq!(got("key_fetch_interval = 90\n").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(got("key_fetch_interval = \"5m\"\n").unwrap(), Some(Duration::from_secs(300)));
        assert_eq!(got("key_fetch_interval = \"30s\"\n").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(got("key_fetch_interval = \"250ms\"\n").unwrap(), Some(Duration::from_millis(250)));
        for (text, why) in [
            ("key_fetch_interval = \"300\"\n", "give a unit"),
            ("key_fetch_interval = \"soon\"\n", "give a unit"),
            ("key_fetch_interval = \"xs\"\n", "not a duration"),
            ("key_fetch_interval = 0\n", "1 ms to 24 h"),
            ("key_fetch_interval = \"2000m\"\n", "1 ms to 24 h"),
            ("key_fetch_interval = true\n", "a duration, not a boolean"),
        ] {
            let err = got(text).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("line 1"), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name_without_values() {
        for (text, key, known) in [
            ("auth_tokn = \"s3cret-value\"\n", "auth_tokn", "auth_token"),
            ("[plugins.file]\nread_path = [\"/s3cret-value\"]\n", "read_path", "read_paths"),
            ("[plugins.file]\nsigners = [\"acme\"]\nsignr = \"s3cret-value\"\n", "signr", "signer"),
            ("[services.redis]\ngroup = \"s3cret-value\"\n", "group", "config"),
        ] {
            let err = SupConfig::parse(text, "sup.toml").unwrap_err().to_string();
            assert!(err.contains(&format!("unknown field `{key}`")), "{err}");
            assert!(err.contains(&format!("`{known}`")), "lists the known keys: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
        // Service config values stay free-form.
        assert!(SupConfig::parse("[services.redis.config]\nanything = 1\n", "t").is_ok());
    }

    #[test]
    fn blank_secrets_are_refused() {
        for text in [
            "auth_token = \"\"\n",
            "auth_token = \"   \"\n",
            "auth_token = \"literal:\"\n",
            "auth_token = \"literal: \\t\"\n",
            "ring_key = \"\"\n",
            "ctl_secret = \" \"\n",
        ] {
            match SupConfig::parse(text, "sup.toml") {
                Err(e @ ConfigError::EmptySecret { .. }) => {
                    assert!(e.to_string().contains("is empty"), "{e}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(SupConfig::parse("auth_token = \"FILE:/run/t\"\n", "t").is_ok());
    }

    #[test]
    fn credentials_table_is_validated() {
        assert!(SupConfig::parse("[credentials]\nfile = \"file\"\n", "t").is_err(), "lower-case scheme");
        assert!(SupConfig::parse("[credentials]\nFILE = \"Bad Name\"\n", "t").is_err());
        assert!(
            SupConfig::parse("[plugins.file]\nsigner = \"acme-20200101000000\"\n", "t").is_err(),
            "a key"
        );
        assert!(SupConfig::parse("[plugins.file]\nsigner = \"a@b\"\n", "t").is_err());
        assert!(SupConfig::parse("[plugins.file]\nsigner = \"acme\"\nsigners = [\"beta\"]\n", "t").is_ok());
    }

    #[test]
    fn refuses_bad_grants() {
        for bad in [
            "[plugins.env]\nenv = [\"*\"]\n",
            "[plugins.file]\nread_paths = [\"relative\"]\n",
            "[plugins.\"Bad Name\"]\nenv = []\n",
            "[plugins.env]\nenvv = []\n",
            "plugin_trust = \"maybe\"\n",
        ] {
            assert!(SupConfig::parse(bad, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn warns_once_per_lower_case_scheme() {
        let c = SupConfig::parse(
            "auth_token = \"file:/run/secrets/token\"\nring_key = \"ENV:RING\"\nctl_secret = \"hunter2\"\n\
             [services.redis.config]\npassword = \"vault:secret/data/redis#pw\"\nurl = \"http://x:1/\"\n",
            "sup.toml",
        )
        .unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("auth_token: the value starts with \"file:\""), "{w:?}");
        assert!(
            w[1].starts_with("services.redis.config.password: the value starts with \"vault:\""),
            "{w:?}"
        );
        assert!(!w.concat().contains("/run/secrets/token") && !w.concat().contains("redis#pw"), "{w:?}");
        assert!(SupConfig::parse(SAMPLE, "sup.toml").unwrap().warnings().is_empty());
    }

    #[test]
    fn service_urls_do_not_warn_and_password_prefixes_are_not_quoted() {
        let c = SupConfig::parse(
            "ctl_secret = \"Tr0ub4dor:XYZ\"\n\
             [services.app.config]\nsecurerandom = \"file:/dev/./urandom\"\n\
             fpm = \"unix:/run/php-fpm.sock\"\npassword = \"user:PASSWORD\"\ntoken = \"env:APP_TOKEN\"\n",
            "sup.toml",
        )
        .unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("ctl_secret: the value starts with a scheme-like prefix"), "{w:?}");
        assert!(w[1].starts_with("services.app.config.token: the value starts with \"env:\""), "{w:?}");
        for hidden in ["Tr0ub4dor", "XYZ", "user:", "PASSWORD", "urandom", "unix", "APP_TOKEN"] {
            assert!(!w.concat().contains(hidden), "{hidden}: {w:?}");
        }
    }

    #[test]
    fn parse_errors_do_not_quote_the_line() {
        let err = SupConfig::parse("auth_token = s3cret-value\n", "sup.toml").unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn merge_tables_operator_wins_key_by_key() {
        let mut base: toml::Table = toml::from_str("a = 1\nb = 2\n[t]\nx = 1\ny = 2\n").unwrap();
        let over: toml::Table = toml::from_str("b = 3\n[t]\ny = 4\nz = 5\n").unwrap();
        merge_tables(&mut base, over);
        let want: toml::Table = toml::from_str("a = 1\nb = 3\n[t]\nx = 1\ny = 4\nz = 5\n").unwrap();
        assert_eq!(base, want);
    }
}
