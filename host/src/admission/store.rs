//! The keyserver's state on disk: `state.json` (0600), replaced atomically after every change
//! and before the reply that depends on it, and `audit.jsonl` (0600), append-only, one event a
//! line, no secrets. A crash leaves either the old or the new state, never half of one.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::keyserver::{AuditEvent, STATE_VERSION, State};
use crate::fsutil::{self, Existing};

pub const STATE_FILE: &str = "state.json";
pub const AUDIT_FILE: &str = "audit.jsonl";
/// A state with many thousands of tokens fits; anything larger is not ours.
const MAX_STATE_LEN: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a keyserver state file ({why}); refusing to start rather than lose it")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path} belongs to cluster {found:?}, not {wanted:?}")]
    OtherCluster { path: PathBuf, found: String, wanted: String },
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating it 0700 if needed) the keyserver's data directory.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fsutil::create_private_dir(dir)
            .map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        fsutil::sweep_leftovers(dir);
        Ok(Store { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.join(AUDIT_FILE)
    }

    /// The stored state, or a fresh one for `cluster` when there is none yet.
    pub fn load(&self, cluster: &str) -> Result<State, StoreError> {
        let path = self.state_path();
        let io = |source| StoreError::Io { path: path.clone(), source };
        let f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::new(cluster)),
            Err(e) => return Err(io(e)),
        };
        let len = f.metadata().map_err(io)?.len();
        if len > MAX_STATE_LEN {
            return Err(StoreError::Corrupt { path, why: format!("{len} bytes is too large") });
        }
        let state: State = serde_json::from_reader(io::BufReader::new(f))
            .map_err(|e| StoreError::Corrupt { path: path.clone(), why: e.to_string() })?;
        if state.version != STATE_VERSION {
            return Err(StoreError::Corrupt {
                path,
                why: format!("version {} is not {STATE_VERSION}", state.version),
            });
        }
        if state.cluster != cluster {
            return Err(StoreError::OtherCluster { path, found: state.cluster, wanted: cluster.to_string() });
        }
        Ok(state)
    }

    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let path = self.state_path();
        // Compact: it is rewritten (and fsynced) before every reply, so its size is the cost.
        let mut text = serde_json::to_vec(state).expect("the state serialises");
        text.push(b'\n');
        fsutil::write_atomic(&path, &text, 0o600, Existing::Replace)
            .map_err(|source| StoreError::Io { path, source })
    }

    /// Appends events and syncs them, so the log is at least as new as the state it explains.
    pub fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let path = self.audit_path();
        let io = |source| StoreError::Io { path: path.clone(), source };
        let mut buf = Vec::new();
        for e in events {
            serde_json::to_writer(&mut buf, e).expect("an audit event serialises");
            buf.push(b'\n');
        }
        let mut f = fs::OpenOptions::new().append(true).create(true).mode(0o600).open(&path).map_err(io)?;
        f.write_all(&buf).map_err(io)?;
        f.sync_data().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::admission::keyserver::{Claim, Keyserver, OsRng, TokenRequest};
    use crate::admission::{JoinString, Pin};
    use crate::crypto::keys::{BoxSecretKeyFile, SigSecretKey};
    use crate::crypto::sodium;

    const T0: u64 = 1_700_000_000;

    fn claim(j: &JoinString, pin: &Pin) -> Claim {
        let (_, sig) = SigSecretKey::generate("n1").unwrap();
        let (boxk, _) = BoxSecretKeyFile::generate("n1").unwrap();
        let d = Claim::pop_digest(&j.id, "n1", &sig.public(), &boxk, pin);
        Claim {
            token_id: j.id,
            secret: j.secret.clone(),
            node: "n1".into(),
            node_sig: sig.public(),
            node_box: boxk,
            pop: sodium::sign_detached(&d, &sig.key),
            peer: None,
        }
    }

    /// What the shell does after every request.
    fn commit(store: &Store, ks: &mut Keyserver<OsRng>) {
        if ks.take_changed() {
            store.save(ks.state()).unwrap();
        }
        store.append_audit(&ks.take_audit()).unwrap();
    }

    #[test]
    fn unexpired_tokens_survive_a_restart_and_stay_single_use() {
        let dir = tempfile::tempdir().unwrap();
        let (_, admission) = SigSecretKey::generate("acme-admission").unwrap();
        let store = Store::open(&dir.path().join("ks")).unwrap();
        let mut ks = Keyserver::new(store.load("acme").unwrap(), admission.clone(), OsRng);
        let j = ks
            .create_token(T0, TokenRequest { node: "n1".into(), groups: vec![], ttl: None, from: None })
            .unwrap();
        let short = ks
            .create_token(T0, TokenRequest { node: "n2".into(), groups: vec![], ttl: Some(60), from: None })
            .unwrap();
        commit(&store, &mut ks);
        let mode = fs::metadata(store.state_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::metadata(store.audit_path()).unwrap().permissions().mode() & 0o777, 0o600);

        // "Restart": a new state machine from the file, purging what expired meanwhile.
        let mut ks = Keyserver::new(store.load("acme").unwrap(), admission.clone(), OsRng);
        assert_eq!(ks.purge(T0 + 61), 1);
        assert!(ks.list().iter().all(|t| t.id != short.id.to_string()));
        let c = claim(&j, &ks.pin());
        ks.claim(T0 + 62, &c).unwrap();
        commit(&store, &mut ks);

        // Another restart: the claim is remembered, a retry gets the same CGC, a thief nothing.
        let mut ks2 = Keyserver::new(store.load("acme").unwrap(), admission, OsRng);
        let first = ks.claim(T0 + 63, &c).unwrap();
        assert_eq!(ks2.claim(T0 + 63, &c).unwrap().cgc, first.cgc);
        assert!(ks2.claim(T0 + 63, &claim(&j, &ks2.pin())).is_err());
        commit(&store, &mut ks2);

        let audit = fs::read_to_string(store.audit_path()).unwrap();
        let events: Vec<AuditEvent> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            names,
            [
                "token_created",
                "token_created",
                "tokens_purged",
                "token_claimed",
                "claim_retried",
                "suspected_theft"
            ]
        );
        let secret_b32 = j.encode().split('-').nth(2).unwrap().to_string();
        let state = fs::read_to_string(store.state_path()).unwrap();
        assert!(!audit.contains(&secret_b32) && !state.contains(&secret_b32));
        assert!(!audit.contains(&hex::encode(&j.secret[..])) && !state.contains(&hex::encode(&j.secret[..])));
    }

    #[test]
    fn a_damaged_or_foreign_state_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(store.state_path(), b"{\"version\": 1, \"trunc").unwrap();
        let err = store.load("acme").unwrap_err().to_string();
        assert!(err.contains("not a keyserver state file"), "{err}");
        assert_eq!(fs::read(store.state_path()).unwrap(), b"{\"version\": 1, \"trunc");
        store.save(&State::new("other")).unwrap();
        assert!(matches!(store.load("acme"), Err(StoreError::OtherCluster { .. })));
        let mut v2 = State::new("acme");
        v2.version = 2;
        store.save(&v2).unwrap();
        assert!(matches!(store.load("acme"), Err(StoreError::Corrupt { .. })));
    }
}
