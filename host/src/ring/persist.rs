//! What a supervisor keeps across restarts under `--data-path`: its member id, its SWIM
//! generation and incarnation (so a restart always comes back higher), the primary ring key
//! and every rumor. Every write is atomic (temp file, fsync, rename).

use std::fs;
use std::path::{Path, PathBuf};

use super::identity::MemberId;
use crate::fsutil::{self, Existing};

pub const MEMBER_ID_FILE: &str = "MEMBER_ID";
pub const STATE_FILE: &str = "ring-state.json";
pub const RUMORS_FILE: &str = "rumors.pb";
/// Refuse absurd files rather than reading them whole.
const MAX_STATE_FILE: u64 = 64 * 1024;
const MAX_RUMORS_FILE: u64 = 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {why}")]
    Corrupt { path: String, why: String },
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

/// Writes `bytes` to `path` atomically (creating its folder), with the umask's default mode.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let dir = fsutil::parent_dir(path);
    fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    fsutil::write_atomic(path, bytes, fsutil::DEFAULT_MODE, Existing::Replace).map_err(|e| io(path, e))
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
}
