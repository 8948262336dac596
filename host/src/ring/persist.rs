//! What a supervisor keeps across restarts under `--data-path`: its member id, its SWIM
//! generation and incarnation (so a restart always comes back higher), the primary ring key
//! and every rumor. Every write is atomic (temp file, fsync, rename); folders are created
//! 0700 and files 0600 (never the umask's mode: rumors may hold encrypted configs, and the
//! member id is an identity). One supervisor at a time holds a data path (`DataDir::lock`).

use std::fs;
use std::path::{Path, PathBuf};

use super::identity::MemberId;
use crate::fsutil::{self, Existing};

pub const MEMBER_ID_FILE: &str = "MEMBER_ID";
pub const STATE_FILE: &str = "ring-state.json";
pub const RUMORS_FILE: &str = "rumors.pb";
pub const LOCK_FILE: &str = "LOCK";
/// Mode of every folder and file the supervisor creates under its data path.
pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;
/// Refuse absurd files rather than reading them whole.
const MAX_STATE_FILE: u64 = 64 * 1024;
const MAX_RUMORS_FILE: u64 = 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {why}")]
    Corrupt { path: String, why: String },
    #[error("{path} is in use by another supervisor{holder} (each supervisor needs its own --data-path)")]
    Locked { path: String, holder: String },
}

/// Holds the data path's lock for as long as it lives (the kernel drops it if we die).
#[derive(Debug)]
pub struct DataLock {
    _file: fs::File,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RingState {
    pub generation: u32,
    pub incarnation: u32,
    #[serde(default)]
    pub primary_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DataDir {
    dir: PathBuf,
}

fn io(path: &Path, source: std::io::Error) -> PersistError {
    PersistError::Io { path: path.display().to_string(), source }
}

/// Creates `dir` and its missing parents 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), PersistError> {
    fsutil::create_private_dir(dir).map_err(|e| io(dir, e))
}

/// Writes `bytes` to `path` atomically (creating its folder 0700), as a 0600 file.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    create_private_dir(&fsutil::parent_dir(path))?;
    fsutil::write_atomic(path, bytes, FILE_MODE, Existing::Replace).map_err(|e| io(path, e))
}

fn read_limited(path: &Path, max: u64) -> Result<Option<Vec<u8>>, PersistError> {
    match fs::metadata(path) {
        Ok(m) if m.len() > max => {
            Err(PersistError::Corrupt { path: path.display().to_string(), why: "file is too large".into() })
        }
        Ok(_) => fs::read(path).map(Some).map_err(|e| io(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

impl DataDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DataDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Takes the data path for this process: a second supervisor on the same path fails
    /// here, before it could share our member id. The lock file names the holder's pid.
    pub fn lock(&self) -> Result<DataLock, PersistError> {
        use std::io::{Read as _, Seek as _, Write as _};
        use std::os::unix::fs::OpenOptionsExt as _;
        create_private_dir(&self.dir)?;
        // A data path made earlier with the umask's mode (by hand, or an older warren) is
        // tightened: it holds the member id, rumors and secrets.
        {
            use std::os::unix::fs::PermissionsExt as _;
            let meta = fs::metadata(&self.dir).map_err(|e| io(&self.dir, e))?;
            if meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(&self.dir, fs::Permissions::from_mode(DIR_MODE))
                    .map_err(|e| io(&self.dir, e))?;
                tracing::info!(path = %self.dir.display(), "data path made private (0700)");
            }
        }
        let path = self.dir.join(LOCK_FILE);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        if let Err(e) = rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut text = String::new();
                let _ = (&file).take(64).read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!(" (pid {pid})"),
                    Err(_) => String::new(),
                };
                return Err(PersistError::Locked { path: self.dir.display().to_string(), holder });
            }
            return Err(io(&path, e.into()));
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(DataLock { _file: file })
    }

    /// The persisted member id, created (random) on first start.
    pub fn member_id(&self) -> Result<MemberId, PersistError> {
        let path = self.dir.join(MEMBER_ID_FILE);
        if let Some(bytes) = read_limited(&path, MAX_STATE_FILE)? {
            let text = String::from_utf8_lossy(&bytes);
            return text
                .trim()
                .parse()
                .map_err(|why| PersistError::Corrupt { path: path.display().to_string(), why });
        }
        let id = MemberId::random();
        atomic_write(&path, format!("{id}\n").as_bytes())?;
        Ok(id)
    }

    pub fn load_state(&self) -> Result<RingState, PersistError> {
        let path = self.dir.join(STATE_FILE);
        match read_limited(&path, MAX_STATE_FILE)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| PersistError::Corrupt { path: path.display().to_string(), why: e.to_string() }),
            None => Ok(RingState::default()),
        }
    }

    pub fn save_state(&self, state: &RingState) -> Result<(), PersistError> {
        let text = serde_json::to_vec_pretty(state).unwrap_or_default();
        atomic_write(&self.dir.join(STATE_FILE), &text)
    }

    pub fn load_rumors(&self) -> Result<Option<Vec<u8>>, PersistError> {
        read_limited(&self.dir.join(RUMORS_FILE), MAX_RUMORS_FILE)
    }

    pub fn save_rumors(&self, snapshot: &[u8]) -> Result<(), PersistError> {
        atomic_write(&self.dir.join(RUMORS_FILE), snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_id_is_created_once_and_state_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::new(tmp.path().join("data"));
        let id = d.member_id().unwrap();
        assert_eq!(d.member_id().unwrap(), id);
        assert_eq!(d.load_state().unwrap(), RingState::default());
        let s = RingState { generation: 3, incarnation: 2, primary_key: Some("r-20200101000000".into()) };
        d.save_state(&s).unwrap();
        assert_eq!(d.load_state().unwrap(), s);
        assert!(d.load_rumors().unwrap().is_none());
        d.save_rumors(b"abc").unwrap();
        assert_eq!(d.load_rumors().unwrap().unwrap(), b"abc");
        fs::write(tmp.path().join("data").join(MEMBER_ID_FILE), "nothex").unwrap();
        assert!(d.member_id().is_err());
    }

    #[test]
    fn data_path_is_private_and_locked_once() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::new(tmp.path().join("data"));
        let lock = d.lock().unwrap();
        let again = DataDir::new(tmp.path().join("data")).lock().unwrap_err();
        let msg = again.to_string();
        assert!(
            msg.contains("in use by another supervisor")
                && msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        d.member_id().unwrap();
        d.save_rumors(b"x").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(d.path()), DIR_MODE);
        assert_eq!(mode(&d.path().join(MEMBER_ID_FILE)), FILE_MODE);
        assert_eq!(mode(&d.path().join(RUMORS_FILE)), FILE_MODE);
        drop(lock);
        d.lock().expect("free again once the holder is gone");
    }
}
