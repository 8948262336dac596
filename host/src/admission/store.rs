//! The keyserver's state on disk, all 0600: `state.json`, a snapshot replaced atomically now
//! and then; `journal.bin`, every change since that snapshot, one record per commit, fsynced
//! before the reply that depends on it, one fsync serving all the commits in flight (framing in
//! [`super::journal`]); and `audit.jsonl`,
//! append-only, one event a line, no secrets. Loading replays the journal over the snapshot; a
//! crash leaves the last commit either whole or torn (and dropped), never half applied.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::change::Change;
use super::journal;
use super::keyserver::{AuditEvent, Keyserver, Rng, STATE_VERSION, State};
use crate::fsutil::{self, Existing};

pub const STATE_FILE: &str = "state.json";
pub const JOURNAL_FILE: &str = "journal.bin";
pub const AUDIT_FILE: &str = "audit.jsonl";
/// A state with many thousands of tokens fits; anything larger is not ours.
const MAX_STATE_LEN: u64 = 64 * 1024 * 1024;
/// The journal is folded into a new snapshot once it is larger than this and than the last
/// snapshot: compaction costs a whole state write, so it happens once per that many bytes.
const COMPACT_AFTER: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a keyserver state file ({why}); refusing to start rather than lose it")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path} belongs to cluster {found:?}, not {wanted:?}")]
    OtherCluster { path: PathBuf, found: String, wanted: String },
    #[error("{path}: an append failed and could not be taken back; restart the keyserver")]
    Broken { path: PathBuf },
    #[error("{path}: another keyserver runs on this data path (its lock is held)")]
    Locked { path: PathBuf },
}

/// The lock file in the keyserver's data path.
pub const LOCK_FILE: &str = "keyserver.lock";

pub struct Store {
    dir: PathBuf,
    /// Held for the store's life: a second keyserver on the same folder would compact the
    /// journal under this one's appends.
    _lock: std::fs::File,
    journal: Mutex<Journal>,
    /// The last [`Ticket`] known durable; held while fsyncing, so one fsync serves every
    /// commit written before it (group commit).
    synced: Mutex<u64>,
    compact_after: u64,
}

/// A commit's place in the journal: the reply that depends on it waits for
/// [`Store::wait_durable`] of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "wait until the commit is durable before replying"]
pub struct Ticket(u64);

#[derive(Default)]
struct Journal {
    file: Option<Arc<fs::File>>,
    /// Commits written (journal records or audit events), durable or not.
    seq: u64,
    /// Audit events of written commits, appended once their journal records are durable.
    audit: Vec<AuditEvent>,
    /// Bytes of whole records (anything beyond is a torn tail, cut before the next append);
    /// `None` until the file was scanned.
    len: Option<u64>,
    snapshot_len: u64,
    /// An append failed and its bytes could not be removed: nothing more is written.
    broken: bool,
}

impl Store {
    /// Opens (creating it 0700 if needed) the keyserver's data directory.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fsutil::create_private_dir(dir)
            .map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&lock_path)
                .map_err(|source| StoreError::Io { path: lock_path.clone(), source })?
        };
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(StoreError::Locked { path: dir.to_path_buf() }),
            Err(e) => return Err(StoreError::Io { path: lock_path, source: e.into() }),
        }
        // Only the lock's holder may tidy the folder.
        fsutil::sweep_leftovers(dir);
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
            journal: Mutex::new(Journal::default()),
            synced: Mutex::new(0),
            compact_after: COMPACT_AFTER,
        })
    }

    /// The same store, compacting once its journal is larger than `bytes` (and the snapshot).
    pub fn compacting_after(self, bytes: u64) -> Store {
        Store { compact_after: bytes, ..self }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.join(AUDIT_FILE)
    }

    /// The stored state (the snapshot with the journal replayed over it), or a fresh one for
    /// `cluster` when there is none yet.
    pub fn load(&self, cluster: &str) -> Result<State, StoreError> {
        let mut state = match self.load_snapshot(cluster)? {
            Some(s) => s,
            None => State::new(cluster),
        };
        let path = self.journal_path();
        let bytes = read_limited(&path)?.unwrap_or_default();
        let scanned = scan(&path, &bytes)?;
        for (i, record) in scanned.records.iter().enumerate() {
            let change: Change = serde_json::from_slice(record).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                why: format!("record {}: {e}", i + 1),
            })?;
            change.apply(&mut state);
        }
        let torn = scanned.torn_bytes(bytes.len());
        if torn > 0 {
            tracing::warn!(journal = %path.display(), bytes = torn, "dropped the torn tail of an interrupted commit (it was never acknowledged)");
        }
        let mut j = self.lock();
        j.len = Some(scanned.valid_len as u64);
        Ok(state)
    }

    fn load_snapshot(&self, cluster: &str) -> Result<Option<State>, StoreError> {
        let path = self.state_path();
        let Some(bytes) = read_limited(&path)? else { return Ok(None) };
        self.lock().snapshot_len = bytes.len() as u64;
        let state: State = serde_json::from_slice(&bytes)
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
        Ok(Some(state))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `change` as one journal record (not yet fsynced); `state` is the state with it
    /// applied, snapshotted when the journal has grown large.
    fn write_change(&self, j: &mut Journal, change: &Change, state: &State) -> Result<(), StoreError> {
        let path = self.journal_path();
        let io = |source| StoreError::Io { path: path.clone(), source };
        if j.broken {
            return Err(StoreError::Broken { path });
        }
        let len = self.open_journal(j)?;
        let record = journal::encode(&serde_json::to_vec(change).expect("a change serialises"));
        let file = j.file.as_deref().expect("opened above");
        if let Err(e) = (&*file).write_all(&record) {
            // Take the bytes back: an unacknowledged change must not come back at a restart.
            if file.set_len(len).and_then(|()| file.sync_data()).is_err() {
                j.broken = true;
            }
            return Err(io(e));
        }
        let len = len + record.len() as u64;
        j.len = Some(len);
        if len > self.compact_after.max(j.snapshot_len)
            && let Err(e) = self.compact_locked(j, state)
        {
            // The change is in the journal; the snapshot is retried at the next commit.
            tracing::warn!(error = %e, "cannot compact the keyserver journal");
        }
        Ok(())
    }

    /// The journal, open for appending and cut to its whole records; returns its length.
    fn open_journal(&self, j: &mut Journal) -> Result<u64, StoreError> {
        let path = self.journal_path();
        let io = |source| StoreError::Io { path: path.clone(), source };
        if j.file.is_none() {
            let existed = path.exists();
            let f = fs::OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            if !existed {
                fsutil::sync_dir(&self.dir).map_err(io)?;
            }
            j.file = Some(Arc::new(f));
        }
        let valid = match j.len {
            Some(n) => n,
            None => {
                let bytes = read_limited(&path)?.unwrap_or_default();
                scan(&path, &bytes)?.valid_len as u64
            }
        };
        let f = j.file.as_deref().expect("opened above");
        if f.metadata().map_err(io)?.len() != valid {
            f.set_len(valid).and_then(|()| f.sync_data()).map_err(io)?;
        }
        j.len = Some(valid);
        Ok(valid)
    }

    /// Writes `state` as the new snapshot and empties the journal it now contains. A crash
    /// between the two replays the journal over the new snapshot: harmless, as each record
    /// holds absolute values.
    pub fn compact(&self, state: &State) -> Result<(), StoreError> {
        let mut j = self.lock();
        self.compact_locked(&mut j, state)
    }

    fn compact_locked(&self, j: &mut Journal, state: &State) -> Result<(), StoreError> {
        let path = self.state_path();
        let mut text = serde_json::to_vec(state).expect("the state serialises");
        text.push(b'\n');
        fsutil::write_atomic(&path, &text, 0o600, Existing::Replace)
            .map_err(|source| StoreError::Io { path, source })?;
        j.snapshot_len = text.len() as u64;
        let path = self.journal_path();
        let io = |source| StoreError::Io { path: path.clone(), source };
        let truncate = |f: &fs::File| f.set_len(0).and_then(|()| f.sync_data()).map_err(io);
        match j.file.as_deref() {
            Some(f) => truncate(f)?,
            None => match fs::OpenOptions::new().write(true).open(&path) {
                Ok(f) => truncate(&f)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            },
        }
        j.len = Some(0);
        Ok(())
    }

    /// What the shell does after every request, under the lock of `ks`: the change (if any)
    /// written to the journal, or undone when it cannot be, and the audit queued. Then, with
    /// the lock released, [`Store::wait_durable`] of the ticket before replying. The ticket also
    /// covers every commit before it, so a reply that only read the state waits for what it read.
    pub fn commit<R: Rng>(&self, ks: &mut Keyserver<R>) -> Result<Ticket, StoreError> {
        let mut j = self.lock();
        if let Some(change) = ks.change() {
            if let Err(e) = self.write_change(&mut j, &change, ks.state()) {
                ks.undo();
                return Err(e);
            }
            j.seq += 1;
        }
        ks.settle();
        let events = ks.take_audit();
        if !events.is_empty() {
            j.audit.extend(events);
            j.seq += 1;
        }
        Ok(Ticket(j.seq))
    }

    /// Returns once the commit of `ticket` (and every one before it) is durable: one fsync of
    /// the journal for all the commits written meanwhile, then their audit events appended.
    /// A failed fsync leaves the state in memory ahead of the disk: the store then refuses
    /// every later commit (restart the keyserver, which replays what is durable).
    pub fn wait_durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        if *synced >= ticket.0 {
            return Ok(());
        }
        let (file, target, events) = {
            let mut j = self.lock();
            if j.broken {
                return Err(StoreError::Broken { path: self.journal_path() });
            }
            (j.file.clone(), j.seq, std::mem::take(&mut j.audit))
        };
        if let Some(f) = file
            && let Err(source) = f.sync_data()
        {
            self.lock().broken = true;
            return Err(StoreError::Io { path: self.journal_path(), source });
        }
        // After the journal: the audit may lag the state (a crash now), it never describes a
        // change that did not happen.
        if let Err(e) = self.append_audit(&events) {
            tracing::error!(error = %e, events = events.len(), "cannot append to the audit log");
        }
        *synced = target;
        Ok(())
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

/// The whole file, or `None` when there is none; refused beyond [`MAX_STATE_LEN`].
fn read_limited(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let io = |source| StoreError::Io { path: path.to_path_buf(), source };
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let len = f.metadata().map_err(io)?.len();
    if len > MAX_STATE_LEN {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            why: format!("{len} bytes is too large"),
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(MAX_STATE_LEN).read_to_end(&mut bytes).map_err(io)?;
    Ok(Some(bytes))
}

fn scan<'a>(path: &Path, bytes: &'a [u8]) -> Result<journal::Scanned<'a>, StoreError> {
    journal::scan(bytes).map_err(|e| StoreError::Corrupt { path: path.to_path_buf(), why: e.to_string() })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::admission::keyserver::nodes::Authorized;
    use crate::admission::keyserver::{Claim, Keyserver, OsRng, TokenRequest};
    use crate::admission::request::{Op, RequestBody};
    use crate::admission::{AdmitError, JoinString, Pin, TokenId};
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

    fn commit(store: &Store, ks: &mut Keyserver<OsRng>) {
        let ticket = store.commit(ks).unwrap();
        store.wait_durable(ticket).unwrap();
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
        let mode = fs::metadata(store.journal_path()).unwrap().permissions().mode() & 0o777;
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
        let journal = String::from_utf8_lossy(&fs::read(store.journal_path()).unwrap()).to_string();
        assert!(journal.contains(&j.id.to_string()), "the claims are in the journal");
        store.compact(ks2.state()).unwrap();
        assert_eq!(fs::metadata(store.journal_path()).unwrap().len(), 0, "compacted");
        assert_eq!(fs::metadata(store.state_path()).unwrap().permissions().mode() & 0o777, 0o600);
        let state = fs::read_to_string(store.state_path()).unwrap();
        for text in [&audit, &state, &journal] {
            assert!(!text.contains(&secret_b32) && !text.contains(&hex::encode(&j.secret[..])));
        }
    }

    fn token(ks: &mut Keyserver<OsRng>, node: &str) -> JoinString {
        ks.create_token(T0, TokenRequest { node: node.into(), groups: vec![], ttl: None, from: None })
            .unwrap()
    }

    /// A signed `keys` request with `nonce`, opened as the transport would, then authorized.
    fn keys_request(
        ks: &mut Keyserver<OsRng>,
        sig: &SigSecretKey,
        cgc: &str,
        nonce: &str,
    ) -> Result<Authorized, AdmitError> {
        let (tp, t) = BoxSecretKeyFile::generate("acme-keyserver").unwrap();
        let body = RequestBody {
            op: Op::Keys,
            cgc: cgc.into(),
            time: T0 + 5,
            nonce: nonce.into(),
            gossip: None,
            have: vec![],
        };
        let (body, signed) = RequestBody::open(&body.seal(sig, &tp), &tp.key, &t.key).unwrap();
        ks.authorize(T0 + 5, &body, &signed, None)
    }

    #[test]
    fn a_restart_replays_tokens_claims_and_nonces_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (_, admission) = SigSecretKey::generate("acme-admission").unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut ks = Keyserver::new(store.load("acme").unwrap(), admission.clone(), OsRng);
        let j1 = token(&mut ks, "n1");
        commit(&store, &mut ks);
        let unused = token(&mut ks, "n2");
        commit(&store, &mut ks);
        let (_, sig) = SigSecretKey::generate("n1").unwrap();
        let (boxk, _) = BoxSecretKeyFile::generate("n1").unwrap();
        let pin = ks.pin();
        let c = Claim {
            pop: sodium::sign_detached(
                &Claim::pop_digest(&j1.id, "n1", &sig.public(), &boxk, &pin),
                &sig.key,
            ),
            token_id: j1.id,
            secret: j1.secret.clone(),
            node: "n1".into(),
            node_sig: sig.public(),
            node_box: boxk,
            peer: None,
        };
        let cgc = ks.claim(T0 + 1, &c).unwrap().cgc;
        commit(&store, &mut ks);
        keys_request(&mut ks, &sig, &cgc, &"aa".repeat(24)).unwrap();
        commit(&store, &mut ks);
        assert!(!store.state_path().exists(), "every change so far is in the journal only");
        drop(store);

        // Twice: from the journal alone, then from the snapshot it was compacted into.
        for round in ["journal", "snapshot"] {
            let store = Store::open(dir.path()).unwrap();
            let loaded = store.load("acme").unwrap();
            assert_eq!(&loaded, ks.state(), "{round}");
            let mut again = Keyserver::new(loaded, admission.clone(), OsRng);
            let retry = again.claim(T0 + 6, &c).unwrap();
            assert_eq!((retry.cgc.as_str(), retry.retry), (cgc.as_str(), true), "{round}");
            let status = |ks: &Keyserver<OsRng>, id: &TokenId| {
                ks.list().into_iter().find(|t| t.id == id.to_string()).map(|t| t.status)
            };
            assert_eq!(status(&again, &unused.id), Some("unused"), "{round}");
            assert_eq!(
                keys_request(&mut again, &sig, &cgc, &"aa".repeat(24)).unwrap_err(),
                AdmitError::Replay,
                "{round}"
            );
            keys_request(&mut again, &sig, &cgc, &"bb".repeat(24)).unwrap();
            store.compact(ks.state()).unwrap();
        }
    }

    #[test]
    fn a_torn_journal_tail_is_dropped_and_the_next_commit_follows_the_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let (_, admission) = SigSecretKey::generate("acme-admission").unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut ks = Keyserver::new(store.load("acme").unwrap(), admission.clone(), OsRng);
        token(&mut ks, "n1");
        commit(&store, &mut ks);
        token(&mut ks, "n2");
        commit(&store, &mut ks);
        let two = ks.state().clone();
        let whole_two = fs::metadata(store.journal_path()).unwrap().len() as usize;
        token(&mut ks, "n3");
        commit(&store, &mut ks);
        let bytes = fs::read(store.journal_path()).unwrap();
        assert!(bytes.len() > whole_two + journal::HEADER_LEN);

        for cut in [whole_two + 1, whole_two + journal::HEADER_LEN, bytes.len() - 1] {
            let d = tempfile::tempdir().unwrap();
            let torn = Store::open(d.path()).unwrap();
            fs::write(torn.journal_path(), &bytes[..cut]).unwrap();
            let loaded = torn.load("acme").unwrap();
            assert_eq!(loaded, two, "cut at {cut}: the torn third commit is gone, the first two stay");
            let mut next = Keyserver::new(loaded, admission.clone(), OsRng);
            token(&mut next, "n4");
            commit(&torn, &mut next);
            drop(torn);
            let nodes: Vec<String> = Store::open(d.path())
                .unwrap()
                .load("acme")
                .unwrap()
                .tokens
                .into_values()
                .map(|t| t.node)
                .collect();
            assert_eq!(nodes.iter().filter(|n| *n != "n4").count(), 2, "cut at {cut}: {nodes:?}");
            assert!(nodes.contains(&"n4".to_string()) && !nodes.contains(&"n3".to_string()), "{nodes:?}");
        }

        // Damage before the last record is not a torn append: refused, and the file kept.
        let mut damaged = bytes.clone();
        damaged[journal::HEADER_LEN + 3] ^= 0x20;
        let journal_path = store.journal_path();
        drop(store);
        fs::write(&journal_path, &damaged).unwrap();
        let err = Store::open(dir.path()).unwrap().load("acme").unwrap_err().to_string();
        assert!(err.contains("damaged record at byte 0"), "{err}");
        assert_eq!(fs::read(&journal_path).unwrap(), damaged);
    }

    /// What the shell does: commit under the state machine's lock, wait outside it.
    #[test]
    fn concurrent_commits_are_all_durable_and_audited_once_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let (_, admission) = SigSecretKey::generate("acme-admission").unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ks = std::sync::Mutex::new(Keyserver::new(store.load("acme").unwrap(), admission, OsRng));
        std::thread::scope(|s| {
            for t in 0..8 {
                let (ks, store) = (&ks, &store);
                s.spawn(move || {
                    for i in 0..20 {
                        let mut k = ks.lock().unwrap();
                        token(&mut k, &format!("n{t}-{i}"));
                        let ticket = store.commit(&mut k).unwrap();
                        drop(k);
                        store.wait_durable(ticket).unwrap();
                    }
                });
            }
        });
        let mut ks = ks.into_inner().unwrap();
        // A refusal changes nothing but is audited all the same.
        let stray = JoinString { id: TokenId([7; 5]), ..token(&mut ks, "m") };
        commit(&store, &mut ks);
        assert!(ks.claim(T0, &claim(&stray, &ks.pin())).is_err());
        assert!(ks.change().is_none());
        commit(&store, &mut ks);
        let audit_path = store.audit_path();
        drop(store);

        assert_eq!(&Store::open(dir.path()).unwrap().load("acme").unwrap(), ks.state());
        assert_eq!(ks.state().tokens.len(), 161);
        let audit = fs::read_to_string(audit_path).unwrap();
        assert_eq!(audit.matches("\"token_created\"").count(), 161);
        assert!(audit.lines().last().unwrap().contains("\"claim_refused\""), "{audit}");
    }

    /// A second keyserver on the same folder would compact the journal under the first's appends.
    #[test]
    fn one_store_per_folder() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).err().expect("the folder is taken").to_string();
        assert!(err.contains("another keyserver runs on this data path"), "{err}");
        drop(first);
        Store::open(dir.path()).expect("free again once the first is gone");
    }

    #[test]
    fn a_large_journal_is_compacted_into_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (_, admission) = SigSecretKey::generate("acme-admission").unwrap();
        let store = Store::open(dir.path()).unwrap().compacting_after(2000);
        let mut ks = Keyserver::new(store.load("acme").unwrap(), admission, OsRng);
        let mut appended = 0;
        for i in 0..40 {
            token(&mut ks, &format!("n{i}"));
            appended += serde_json::to_vec(&ks.change().unwrap()).unwrap().len() + journal::HEADER_LEN;
            commit(&store, &mut ks);
        }
        assert!(store.state_path().exists(), "compacted at least once");
        let journal = fs::metadata(store.journal_path()).unwrap().len() as usize;
        assert!(journal < appended, "{journal} of {appended} bytes");
        drop(store);
        assert_eq!(&Store::open(dir.path()).unwrap().load("acme").unwrap(), ks.state());
    }

    #[test]
    fn a_damaged_or_foreign_state_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(store.state_path(), b"{\"version\": 1, \"trunc").unwrap();
        let err = store.load("acme").unwrap_err().to_string();
        assert!(err.contains("not a keyserver state file"), "{err}");
        assert_eq!(fs::read(store.state_path()).unwrap(), b"{\"version\": 1, \"trunc");
        store.compact(&State::new("other")).unwrap();
        assert!(matches!(store.load("acme"), Err(StoreError::OtherCluster { .. })));
        let mut v2 = State::new("acme");
        v2.version = 2;
        store.compact(&v2).unwrap();
        assert!(matches!(store.load("acme"), Err(StoreError::Corrupt { .. })));
    }
}
