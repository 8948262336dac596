//! The key cache: a folder of key files named `{name}-{rev}.{ext}`.
//!
//! Writes are atomic (temp file + fsync + rename) with the final permissions set at creation
//! (secret 0400, public 0444, less what the umask removes); a different key is never written
//! over an existing file. Each write first removes the temporary files of writers that died.
//! Lookups match the name exactly and pick the latest revision.

use std::fs;
use std::path::{Path, PathBuf};

use super::CryptoError;
use super::keys::{KeyFile, KeyId, KeyKind, MAX_KEY_FILE_LEN};
use crate::fsutil::{self, Existing};

/// Environment variable naming the key cache, like `--cache-key-path`.
pub const CACHE_KEY_PATH_ENV: &str = "WARREN_CACHE_KEY_PATH";

#[derive(Clone, Debug)]
pub struct KeyCache {
    dir: PathBuf,
}

/// `/var/lib/warren/keys` for root, `$HOME/.warren/keys` for everyone else.
pub fn default_cache_path() -> PathBuf {
    let is_root = std::env::var_os("USER").is_some_and(|u| u == "root") || running_as_root();
    match std::env::var_os("HOME") {
        Some(home) if !is_root => Path::new(&home).join(".warren/keys"),
        _ => PathBuf::from("/var/lib/warren/keys"),
    }
}

fn running_as_root() -> bool {
    // /proc/self is owned by the effective uid; avoids an unsafe geteuid() call.
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

impl KeyCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        KeyCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, path: &Path, source: std::io::Error) -> CryptoError {
        CryptoError::Io { path: path.display().to_string(), source }
    }

    /// Writes a key file atomically and returns its path. Writing the same key again is a no-op.
    pub fn write(&self, key: &KeyFile) -> Result<PathBuf, CryptoError> {
        fsutil::create_private_dir(&self.dir).map_err(|e| self.io(&self.dir, e))?;
        // Second names of secret keys that a crashed writer left behind go first.
        fsutil::sweep_leftovers(&self.dir);
        let path = self.dir.join(key.file_name());
        let text = key.to_text();
        if path.exists() {
            let existing = fs::read(&path).map_err(|e| self.io(&path, e))?;
            return match KeyFile::parse(&existing) {
                Ok(old) if old.kind == key.kind && old.bytes() == key.bytes() => Ok(path),
                _ => Err(CryptoError::KeyConflict(path.display().to_string())),
            };
        }
        let mode = if key.kind.is_secret() { 0o400 } else { 0o444 };
        // Refuse: a racing writer's key is never clobbered.
        match fsutil::write_atomic(&path, text.as_bytes(), mode, Existing::Refuse) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(CryptoError::KeyConflict(path.display().to_string()));
            }
            Err(e) => return Err(self.io(&path, e)),
            Ok(()) => {}
        }
        Ok(path)
    }

    /// Every key id of `kind` in the cache, by file name (the contents are read on demand).
    pub fn list(&self, kind: KeyKind) -> Result<Vec<KeyId>, CryptoError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(&self.dir, e)),
        };
        let suffix = format!(".{}", kind.extension());
        let mut ids: Vec<KeyId> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .filter_map(|n| n.strip_suffix(&suffix).and_then(|stem| stem.parse::<KeyId>().ok()))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Every revision of the exact `name`, oldest first.
    pub fn revisions(&self, kind: KeyKind, name: &str) -> Result<Vec<KeyId>, CryptoError> {
        Ok(self.list(kind)?.into_iter().filter(|id| id.name == name).collect())
    }

    /// The latest revision of exactly `name` (never `name-suffix`).
    pub fn latest(&self, kind: KeyKind, name: &str) -> Result<KeyFile, CryptoError> {
        // `.pub` is shared by SIG-PUB-1 and BOX-PUB-1: try newest first until the header matches.
        for id in self.revisions(kind, name)?.into_iter().rev() {
            match self.get(kind, &id) {
                Ok(key) => return Ok(key),
                Err(CryptoError::WrongKeyKind { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(CryptoError::KeyNotFound {
            kind: kind.describe(),
            name: name.to_string(),
            cache: self.dir.display().to_string(),
        })
    }

    /// Deletes exactly this revision's file; one already gone is no error. Returns whether it
    /// was there. (`.pub` is shared by SIG-PUB-1 and BOX-PUB-1: the file of that name goes.)
    pub fn remove(&self, kind: KeyKind, id: &KeyId) -> Result<bool, CryptoError> {
        let path = self.dir.join(format!("{id}.{}", kind.extension()));
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io(&path, e)),
        }
    }

    /// Exactly this revision.
    pub fn get(&self, kind: KeyKind, id: &KeyId) -> Result<KeyFile, CryptoError> {
        let path = self.dir.join(format!("{id}.{}", kind.extension()));
        let key = read_key_file(&path)?;
        if key.kind != kind {
            return Err(CryptoError::WrongKeyKind { expected: kind.describe(), got: key.kind.describe() });
        }
        if key.id != *id {
            return Err(CryptoError::MalformedKey(format!("{} names {} inside", path.display(), key.id)));
        }
        Ok(key)
    }
}

/// Reads and parses one key file, refusing anything larger than a key could be.
pub fn read_key_file(path: &Path) -> Result<KeyFile, CryptoError> {
    use std::io::Read;
    let io = |e| CryptoError::Io { path: path.display().to_string(), source: e };
    let mut buf = Vec::new();
    fs::File::open(path).map_err(io)?.take(MAX_KEY_FILE_LEN as u64 + 1).read_to_end(&mut buf).map_err(io)?;
    let key = KeyFile::parse(&buf);
    zeroize::Zeroize::zeroize(&mut buf);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::{RingKey, SigSecretKey};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_write_sweeps_the_temp_files_of_dead_writers_only() {
        use crate::fsutil::tests::{dead_pid, plant};
        let dir = tempfile::tempdir().unwrap();
        let hour = std::time::Duration::from_secs(3600);
        // A crash between the hard link and the unlink leaves a second name for a secret key.
        let stale = plant(dir.path(), "r-20200101000000.sym.key", dead_pid(), hour);
        let live = plant(dir.path(), "r-20200101000000.sym.key", std::process::id(), hour);
        let cache = KeyCache::new(dir.path());
        cache.write(&RingKey::generate("r").unwrap().to_file()).unwrap();
        assert!(!stale.exists(), "the dead writer's file is swept");
        assert!(live.exists(), "a live writer's file is left alone");
        assert_eq!(cache.list(KeyKind::SymSecret).unwrap().len(), 1, "temp files are not keys");
    }

    #[test]
    fn writes_atomically_with_permissions_and_refuses_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KeyCache::new(dir.path());
        let (pk, sk) = SigSecretKey::generate("acme").unwrap();
        let sp = cache.write(&sk.to_file()).unwrap();
        let pp = cache.write(&pk.to_file()).unwrap();
        // The umask applies to the mode given at creation (0o444 is 0o440 under umask 027).
        let umask = crate::fsutil::tests::umask();
        assert_eq!(fs::metadata(&sp).unwrap().permissions().mode() & 0o777, 0o400 & !umask);
        assert_eq!(fs::metadata(&pp).unwrap().permissions().mode() & 0o777, 0o444 & !umask);
        // Same key again: fine. Another key under the same id: refused.
        cache.write(&sk.to_file()).unwrap();
        let other = SigSecretKey { id: sk.id.clone(), key: crate::crypto::sodium::sign_keypair().1 };
        assert!(matches!(cache.write(&other.to_file()), Err(CryptoError::KeyConflict(_))));
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temp files left behind: {names:?}");
    }

    #[test]
    fn latest_matches_the_exact_name() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KeyCache::new(dir.path());
        let mk = |name: &str, rev: &str| RingKey {
            id: KeyId::new(name, rev).unwrap(),
            key: crate::crypto::sodium::Secret::random(),
        };
        let old = mk("foo", "20200101000000");
        let new = mk("foo", "20210101000000");
        let other = mk("foo-bar", "20300101000000");
        for k in [&old, &new, &other] {
            cache.write(&k.to_file()).unwrap();
        }
        assert_eq!(cache.latest(KeyKind::SymSecret, "foo").unwrap().id, new.id);
        assert_eq!(cache.latest(KeyKind::SymSecret, "foo-bar").unwrap().id, other.id);
        assert!(matches!(cache.latest(KeyKind::SymSecret, "fo"), Err(CryptoError::KeyNotFound { .. })));
        assert_eq!(cache.revisions(KeyKind::SymSecret, "foo").unwrap().len(), 2);
    }

    #[test]
    fn pub_files_are_told_apart_by_header() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KeyCache::new(dir.path());
        let (sig_pk, _) = SigSecretKey::generate("dual").unwrap();
        cache.write(&sig_pk.to_file()).unwrap();
        assert!(cache.latest(KeyKind::SigPublic, "dual").is_ok());
        assert!(cache.latest(KeyKind::BoxPublic, "dual").is_err());
    }
}
