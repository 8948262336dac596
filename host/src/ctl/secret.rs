//! The ctl secret: the supervisor's `{data_path}/CTL_SECRET` (created at first start, as
//! Habitat does: 64 random bytes, standard base64, no newline, mode 0600 from creation), and
//! where the client looks for it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use super::cli_toml;
use crate::crypto::sodium;
use crate::fsutil::{self, Existing};

pub const CTL_SECRET_FILE: &str = "CTL_SECRET";
/// Bytes of randomness in a generated secret (Habitat: 64, base64 → 88 characters).
pub const CTL_SECRET_LEN: usize = 64;
pub const CTL_SECRET_ENV: &str = "WARREN_CTL_SECRET";

/// A non-empty ctl secret. `Debug` never shows it.
#[derive(Clone)]
pub struct CtlSecret(Zeroizing<String>);

impl std::fmt::Debug for CtlSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CtlSecret(<redacted>)")
    }
}

impl CtlSecret {
    /// Trailing whitespace is trimmed (a file written by `echo`); empty is no secret.
    pub fn new(text: &str) -> Option<CtlSecret> {
        let t = text.trim_end();
        (!t.is_empty()).then(|| CtlSecret(Zeroizing::new(t.to_string())))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with what a plaintext `Handshake` carried.
    pub fn matches(&self, candidate: &str) -> bool {
        sodium::ct_eq(self.0.as_bytes(), candidate.trim_end().as_bytes())
    }

    /// The Noise PSK: BLAKE2b-256 of the secret's text.
    pub fn psk(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(sodium::blake2b_256(self.0.as_bytes()))
    }
}

/// A fresh secret in its text form.
pub fn generate() -> Zeroizing<String> {
    let bytes = Zeroizing::new(sodium::random_array::<CTL_SECRET_LEN>());
    Zeroizing::new(B64.encode(&bytes[..]))
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}: the file is empty")]
    Empty(PathBuf),
    #[error(
        "no ctl secret for {remote}: looked in ${CTL_SECRET_ENV}, {cli_toml} (ctl_secret, \
         [remote.\"{remote}\"] ctl_secret) and {local}; set one of them (`warren sup secret generate` makes one)"
    )]
    NotFound { remote: String, cli_toml: String, local: String },
    #[error("{path}: {message}")]
    CliToml { path: PathBuf, message: String },
}

/// Reads a secret file; `Ok(None)` when it does not exist.
pub fn read_file(path: &Path) -> Result<Option<CtlSecret>, SecretError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let text = String::from_utf8_lossy(&bytes);
            CtlSecret::new(&text).map(Some).ok_or_else(|| SecretError::Empty(path.to_path_buf()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecretError::Io { path: path.to_path_buf(), source }),
    }
}

/// The supervisor's secret: `{data_path}/CTL_SECRET`, created when missing. Two supervisors
/// racing on one data path both end with the file that won (the loser reads it back).
pub fn read_or_create(data_path: &Path) -> Result<CtlSecret, SecretError> {
    read_or_create_file(&data_path.join(CTL_SECRET_FILE))
}

/// A secret file at `path` (the keyserver's `ADMIN_SECRET` too), created 0600 with a fresh
/// secret when missing, never replacing one a racing writer made.
pub fn read_or_create_file(path: &Path) -> Result<CtlSecret, SecretError> {
    let path = path.to_path_buf();
    if let Some(s) = read_file(&path)? {
        return Ok(s);
    }
    let io = |source| SecretError::Io { path: path.clone(), source };
    std::fs::create_dir_all(fsutil::parent_dir(&path)).map_err(io)?;
    let text = generate();
    let mut f = fsutil::AtomicFile::create(&path, 0o600, Existing::Refuse).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    match f.commit() {
        Ok(_) => {
            tracing::info!(path = %path.display(), "created a new secret");
            Ok(CtlSecret::new(&text).expect("a generated secret is not empty"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_file(&path)?.ok_or_else(|| SecretError::Empty(path.clone()))
        }
        Err(e) => Err(io(e)),
    }
}

/// The client's secret for `remote` (HOST:PORT): `WARREN_CTL_SECRET`, then cli.toml, then
/// `{local_data_path}/CTL_SECRET`. None of them → an error naming all three.
pub fn client_secret(remote: &str, local_data_path: &Path) -> Result<CtlSecret, SecretError> {
    if let Ok(v) = std::env::var(CTL_SECRET_ENV)
        && let Some(s) = CtlSecret::new(&v)
    {
        return Ok(s);
    }
    let cli_toml = cli_toml::path();
    if let Some(s) = cli_toml::ctl_secret(&cli_toml, remote)? {
        return Ok(s);
    }
    let local = local_data_path.join(CTL_SECRET_FILE);
    match read_file(&local) {
        Ok(Some(s)) => return Ok(s),
        Ok(None) | Err(SecretError::Empty(_)) => {}
        Err(e) => return Err(e),
    }
    Err(SecretError::NotFound {
        remote: remote.to_string(),
        cli_toml: cli_toml.display().to_string(),
        local: local.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn created_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = read_or_create(dir.path()).unwrap();
        let path = dir.path().join(CTL_SECRET_FILE);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 88, "64 bytes of base64, no newline");
        assert_eq!(B64.decode(&text).unwrap().len(), 64);
        let b = read_or_create(dir.path()).unwrap();
        assert_eq!(a.expose(), b.expose());
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn trimmed_and_compared() {
        let s = CtlSecret::new("abc\n").unwrap();
        assert!(s.matches("abc") && s.matches("abc\r\n") && !s.matches("abd") && !s.matches(""));
        assert!(CtlSecret::new(" \n").is_none());
        assert_ne!(*s.psk(), *CtlSecret::new("abd").unwrap().psk());
    }
}
