//! The client's settings file, `cli.toml` (`~/.warren/cli.toml`, `/etc/warren/cli.toml` for
//! root, or `$WARREN_CLI_CONFIG`), as `warren cli setup` writes it:
//!
//! ```toml
//! remote_sup = "10.0.0.2:9632"          # the default for --remote-sup
//! ctl_secret = "FILE:/etc/warren/ctl"   # a literal, or FILE:/path (read when used)
//! [remote."10.0.0.3:9632"]              # a supervisor with a secret of its own
//! ctl_secret = "..."
//! ```
//!
//! The file holds secrets, so it is written 0600 (its folder 0700), atomically, and toml's
//! parse errors are reduced to their reason (they may quote a line holding a secret).

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::secret::{CtlSecret, SecretError, read_file};
use crate::credentials::Reference;
use crate::fsutil::{self, Existing};

/// Points the client at another cli.toml (tests, or a fleet's shared file).
pub const CLI_CONFIG_ENV: &str = "WARREN_CLI_CONFIG";

/// `~/.warren/cli.toml`, or `/etc/warren/cli.toml` for root; `WARREN_CLI_CONFIG` overrides.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os(CLI_CONFIG_ENV) {
        return PathBuf::from(p);
    }
    // The key cache's default already encodes the root / non-root choice.
    let keys = crate::crypto::cache::default_cache_path();
    if keys.starts_with("/var/lib/warren") {
        PathBuf::from("/etc/warren/cli.toml")
    } else {
        keys.parent().map(|p| p.join("cli.toml")).unwrap_or_else(|| PathBuf::from("/etc/warren/cli.toml"))
    }
}

fn bad(path: &Path, message: impl Into<String>) -> SecretError {
    SecretError::CliToml { path: path.to_path_buf(), message: message.into() }
}

/// The file as a table; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<toml::Table>, SecretError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SecretError::Io { path: path.to_path_buf(), source }),
    };
    toml::from_str(&text).map(Some).map_err(|e| bad(path, e.message()))
}

/// A cli.toml value: a literal, `literal:...`, or `FILE:/path` (read here, trimmed).
fn secret_value(value: &str, path: &Path) -> Result<Option<CtlSecret>, SecretError> {
    match Reference::parse(value) {
        Reference::Literal(v) => Ok(CtlSecret::new(&v)),
        Reference::Routed { scheme, full } if scheme == "FILE" => {
            let file = &full["FILE:".len()..];
            match read_file(Path::new(file))? {
                Some(secret) => Ok(Some(secret)),
                None => Err(bad(path, format!("ctl_secret: {file} does not exist"))),
            }
        }
        Reference::Routed { scheme, .. } => Err(bad(
            path,
            format!("ctl_secret: {scheme}: references are not supported here (a literal or FILE:/path)"),
        )),
    }
}

/// `[remote."HOST:PORT"] ctl_secret` for this supervisor, else `ctl_secret`.
pub fn ctl_secret(path: &Path, remote: &str) -> Result<Option<CtlSecret>, SecretError> {
    let Some(table) = load(path)? else { return Ok(None) };
    let per_remote = table.get("remote").and_then(|r| r.get(remote)).and_then(|r| r.get("ctl_secret"));
    for v in [per_remote, table.get("ctl_secret")].into_iter().flatten() {
        let s = v.as_str().ok_or_else(|| bad(path, "ctl_secret must be a string"))?;
        if let Some(secret) = secret_value(s, path)? {
            return Ok(Some(secret));
        }
    }
    Ok(None)
}

/// `remote_sup`: the supervisor a command talks to when `--remote-sup` is not given.
pub fn remote_sup(path: &Path) -> Result<Option<String>, SecretError> {
    let Some(table) = load(path)? else { return Ok(None) };
    match table.get("remote_sup") {
        None => Ok(None),
        Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(_) => Err(bad(path, "remote_sup must be a non-empty string (HOST[:PORT])")),
    }
}

/// What `warren cli setup` changes; `None` leaves a setting as it is.
#[derive(Default)]
pub struct Changes {
    pub remote_sup: Option<String>,
    /// A literal or `FILE:/path`.
    pub ctl_secret: Option<Zeroizing<String>>,
    /// Put `ctl_secret` under `[remote."HOST:PORT"]` instead of at the top.
    pub for_remote: Option<String>,
}

const HEADER: &str =
    "# warren's client settings (`warren cli setup` writes this file; it may hold secrets)\n";

/// Applies `changes` to the file at `path` (creating it and its folder), keeping every other
/// setting, and writes it back 0600 in one rename.
pub fn apply(path: &Path, changes: &Changes) -> Result<(), SecretError> {
    let io = |source| SecretError::Io { path: path.to_path_buf(), source };
    let mut table = load(path)?.unwrap_or_default();
    if let Some(r) = &changes.remote_sup {
        table.insert("remote_sup".into(), toml::Value::String(r.clone()));
    }
    if let Some(secret) = &changes.ctl_secret {
        // A value given must be usable: checked now, not at the first command.
        if secret_value(secret, path)?.is_none() {
            return Err(bad(path, "ctl_secret is empty"));
        }
        let value = toml::Value::String(secret.to_string());
        match &changes.for_remote {
            None => {
                table.insert("ctl_secret".into(), value);
            }
            Some(remote) => {
                let remotes = table
                    .entry("remote")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| bad(path, "remote must be a table of [remote.\"HOST:PORT\"] tables"))?;
                let entry = remotes
                    .entry(remote.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| bad(path, format!("remote.\"{remote}\" must be a table")))?;
                entry.insert("ctl_secret".into(), value);
            }
        }
    }
    let body = Zeroizing::new(toml::to_string(&table).map_err(|e| bad(path, e.to_string()))?);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsutil::create_private_dir(dir).map_err(io)?;
    }
    let text = Zeroizing::new(format!("{HEADER}{}", *body));
    fsutil::write_atomic(path, text.as_bytes(), 0o600, Existing::Replace).map_err(io)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_remote_table_wins_and_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "from-file\n").unwrap();
        let toml_path = dir.path().join("cli.toml");
        std::fs::write(
            &toml_path,
            format!(
                "ctl_secret = \"general\"\n[remote.\"10.0.0.1:9632\"]\nctl_secret = \"FILE:{}\"\n",
                file.display()
            ),
        )
        .unwrap();
        assert_eq!(ctl_secret(&toml_path, "10.0.0.1:9632").unwrap().unwrap().expose(), "from-file");
        assert_eq!(ctl_secret(&toml_path, "10.0.0.2:9632").unwrap().unwrap().expose(), "general");
        assert!(ctl_secret(&dir.path().join("none"), "x").unwrap().is_none());
        std::fs::write(&toml_path, "ctl_secret = \"VAULT:x\"\n").unwrap();
        assert!(ctl_secret(&toml_path, "x").is_err());
    }

    #[test]
    fn apply_keeps_other_settings_and_writes_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cli.toml");
        let set = |c: Changes| apply(&path, &c).unwrap();
        set(Changes { remote_sup: Some("10.0.0.2:9632".into()), ..Default::default() });
        set(Changes { ctl_secret: Some(Zeroizing::new("top".into())), ..Default::default() });
        set(Changes {
            ctl_secret: Some(Zeroizing::new("other".into())),
            for_remote: Some("10.0.0.3:9632".into()),
            ..Default::default()
        });
        assert_eq!(remote_sup(&path).unwrap().as_deref(), Some("10.0.0.2:9632"));
        assert_eq!(ctl_secret(&path, "10.0.0.2:9632").unwrap().unwrap().expose(), "top");
        assert_eq!(ctl_secret(&path, "10.0.0.3:9632").unwrap().unwrap().expose(), "other");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // Refused before anything is written: an empty secret, a FILE: that does not exist.
        let before = std::fs::read(&path).unwrap();
        for v in [" ", "FILE:/nonexistent/secret"] {
            let c = Changes { ctl_secret: Some(Zeroizing::new(v.into())), ..Default::default() };
            assert!(apply(&path, &c).is_err(), "{v:?}");
        }
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
