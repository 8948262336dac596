//! The credential cache as a pure state machine: references in, resolution outcomes and path
//! changes in (with the clock passed explicitly), value updates and "resolve these now" out.
//! No threads, no files: the resolver shell drives it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use zeroize::Zeroizing;

use super::reference::Reference;
use crate::crypto::sodium::Blake2b256;

/// Shortest TTL honoured (a plugin answering 0 must not make the host spin).
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Retry backoff after a failed resolution: doubles from the first to the last.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// A resolved value as consumers see it. Debug never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialValue {
    value: Arc<Zeroizing<String>>,
    pub version: u64,
    pub fingerprint: String,
}

impl CredentialValue {
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for CredentialValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CredentialValue(v{} {})", self.version, self.fingerprint)
    }
}

/// A failed resolution. `retry: false` (a malformed reference) waits for a plugin or file
/// change instead of retrying on a timer.
#[derive(Clone, Debug)]
pub struct Failure {
    pub message: String,
    pub retry: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { message, retry: true }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure { message: message.to_string(), retry: true }
    }
}

/// A successful resolution, as the plugin returned it.
#[derive(Clone)]
pub struct Resolved {
    pub value: Zeroizing<String>,
    pub ttl: Option<Duration>,
    pub watch_paths: Vec<PathBuf>,
}

#[derive(Clone, Debug)]
struct Entry {
    reference: Reference,
    labels: BTreeSet<String>,
    current: Option<CredentialValue>,
    last_error: Option<String>,
    last_error_at: Option<u64>,
    failures: u32,
    /// Resolve at the next opportunity.
    dirty: bool,
    /// Resolve again at this time (TTL expiry or retry).
    refresh_at: Option<Instant>,
    watch_paths: Vec<PathBuf>,
    resolutions: u64,
}

/// A change consumers must hear about. `reference` may be a literal (a secret): Debug hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Update {
    pub reference: String,
    pub value: CredentialValue,
}

impl std::fmt::Debug for Update {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Update({} {:?})", Reference::parse(&self.reference).display(), self.value)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CredentialStatus {
    /// The reference (`"literal"` for literal values, which are secrets).
    pub reference: String,
    /// The config keys that use it.
    pub used_by: Vec<String>,
    /// Bumped each time the value changes; 0 = never resolved.
    pub version: u64,
    /// Short keyed BLAKE2b of the value (stable within this process), never the value.
    pub fingerprint: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    pub watch_paths: Vec<PathBuf>,
    pub resolutions: u64,
}

fn keyed_fingerprint(key: &[u8; 32], value: &str) -> String {
    // BLAKE2b is safe to key by prefixing (no length extension).
    let mut h = Blake2b256::new();
    h.update(key);
    h.update(value.as_bytes());
    hex::encode(&h.finalize()[..8])
}

pub struct CredentialStore {
    entries: BTreeMap<String, Entry>,
    fingerprint_key: [u8; 32],
}

impl CredentialStore {
    /// `fingerprint_key` keys the fingerprints so a short fingerprint of a weak secret cannot be
    /// brute-forced offline by whoever can read `GET /credentials`.
    pub fn new(fingerprint_key: [u8; 32]) -> Self {
        CredentialStore { entries: BTreeMap::new(), fingerprint_key }
    }

    pub fn fingerprint(&self, value: &str) -> String {
        keyed_fingerprint(&self.fingerprint_key, value)
    }

    /// Registers a reference used by `label`. Literals get their value at once.
    pub fn add(&mut self, reference: &str, label: &str, now: Instant) -> Option<Update> {
        if let Some(e) = self.entries.get_mut(reference) {
            e.labels.insert(label.to_string());
            return None;
        }
        let parsed = Reference::parse(reference);
        let literal = match &parsed {
            Reference::Literal(v) => Some(Zeroizing::new(v.clone())),
            Reference::Routed { .. } => None,
        };
        self.entries.insert(
            reference.to_string(),
            Entry {
                reference: parsed,
                labels: [label.to_string()].into(),
                current: None,
                last_error: None,
                last_error_at: None,
                failures: 0,
                dirty: literal.is_none(),
                refresh_at: None,
                watch_paths: Vec::new(),
                resolutions: 0,
            },
        );
        let value = literal?;
        self.apply(reference, Ok(Resolved { value, ttl: None, watch_paths: Vec::new() }), now, 0)
    }

    pub fn reference(&self, reference: &str) -> Option<&Reference> {
        self.entries.get(reference).map(|e| &e.reference)
    }

    pub fn current(&self, reference: &str) -> Option<CredentialValue> {
        self.entries.get(reference).and_then(|e| e.current.clone())
    }

    /// References to resolve now.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e.reference, Reference::Routed { .. }))
            .filter(|(_, e)| e.dirty || e.refresh_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// When the shell should wake up next for TTLs or retries.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.values().filter_map(|e| e.refresh_at).min()
    }

    /// Records an outcome; returns the update to publish if the value changed.
    /// On failure the last good value stays and the error is kept for display.
    pub fn apply(
        &mut self,
        reference: &str,
        outcome: Result<Resolved, Failure>,
        now: Instant,
        unix_now: u64,
    ) -> Option<Update> {
        let key = self.fingerprint_key;
        let e = self.entries.get_mut(reference)?;
        e.dirty = false;
        e.resolutions += 1;
        match outcome {
            Ok(r) => {
                e.last_error = None;
                e.last_error_at = None;
                e.failures = 0;
                e.refresh_at = r.ttl.map(|t| now + t.max(MIN_TTL));
                e.watch_paths = r.watch_paths;
                let fingerprint = keyed_fingerprint(&key, &r.value);
                if e.current.as_ref().is_some_and(|c| c.expose() == r.value.as_str()) {
                    return None;
                }
                let value = CredentialValue {
                    value: Arc::new(r.value),
                    version: e.current.as_ref().map_or(1, |c| c.version + 1),
                    fingerprint,
                };
                e.current = Some(value.clone());
                Some(Update { reference: reference.to_string(), value })
            }
            Err(failure) => {
                e.last_error = Some(failure.message);
                e.last_error_at = Some(unix_now);
                e.failures = e.failures.saturating_add(1);
                let backoff =
                    RETRY_FIRST.saturating_mul(1 << e.failures.min(6).saturating_sub(1)).min(RETRY_MAX);
                e.refresh_at = failure.retry.then(|| now + backoff);
                None
            }
        }
    }

    /// A watched path (or something in its directory) changed: those references are due.
    pub fn path_changed(&mut self, path: &Path) -> bool {
        let mut any = false;
        for e in self.entries.values_mut() {
            if e.watch_paths
                .iter()
                .any(|w| w == path || w.parent() == Some(path) || w.parent() == path.parent())
            {
                e.dirty = true;
                any = true;
            }
        }
        any
    }

    /// Plugins changed: references not currently served well get another try now.
    pub fn plugins_changed(&mut self) {
        for e in self.entries.values_mut() {
            if e.last_error.is_some()
                || (e.current.is_none() && matches!(e.reference, Reference::Routed { .. }))
            {
                e.dirty = true;
            }
        }
    }

    /// Directories to watch: the parents of every watch path (files are often replaced by
    /// rename, which a watch on the file itself would miss).
    pub fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        self.entries
            .values()
            .flat_map(|e| e.watch_paths.iter().filter_map(|p| p.parent().map(Path::to_path_buf)))
            .collect()
    }

    pub fn status(&self) -> Vec<CredentialStatus> {
        self.entries
            .values()
            .map(|e| CredentialStatus {
                reference: e.reference.display().to_string(),
                used_by: e.labels.iter().cloned().collect(),
                version: e.current.as_ref().map_or(0, |c| c.version),
                fingerprint: e.current.as_ref().map(|c| c.fingerprint.clone()),
                last_error: e.last_error.clone(),
                last_error_at: e.last_error_at,
                watch_paths: e.watch_paths.clone(),
                resolutions: e.resolutions,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: &str, ttl: Option<u64>, watch: &[&str]) -> Result<Resolved, Failure> {
        Ok(Resolved {
            value: Zeroizing::new(v.to_string()),
            ttl: ttl.map(Duration::from_secs),
            watch_paths: watch.iter().map(PathBuf::from).collect(),
        })
    }

    #[test]
    fn literal_is_immediate_and_redacted() {
        let mut s = CredentialStore::new([7; 32]);
        let t = Instant::now();
        let u = s.add("hunter2", "auth_token", t).unwrap();
        assert_eq!(u.value.expose(), "hunter2");
        assert_eq!(u.value.version, 1);
        assert!(s.due(t).is_empty());
        let st = s.status();
        assert_eq!(st[0].reference, "literal");
        assert!(!serde_json::to_string(&st).unwrap().contains("hunter2"));
        assert!(!format!("{:?}", u).contains("hunter2"));
    }

    #[test]
    fn versions_errors_and_watch_paths() {
        let mut s = CredentialStore::new([1; 32]);
        let t = Instant::now();
        assert!(s.add("FILE:/run/s/token", "auth_token", t).is_none());
        assert!(s.add("FILE:/run/s/token", "services.a.config.tok", t).is_none());
        assert_eq!(s.due(t), vec!["FILE:/run/s/token"]);
        let u = s.apply("FILE:/run/s/token", ok("one", None, &["/run/s/token"]), t, 1).unwrap();
        assert_eq!(u.value.version, 1);
        assert!(s.due(t + Duration::from_secs(3600)).is_empty(), "no TTL, no watch change: cached");
        assert_eq!(s.watch_dirs(), [PathBuf::from("/run/s")].into());
        // Same value again: no update, no version bump.
        assert!(s.path_changed(Path::new("/run/s/token")));
        assert!(s.apply("FILE:/run/s/token", ok("one", None, &["/run/s/token"]), t, 1).is_none());
        // New value.
        assert!(s.path_changed(Path::new("/run/s/..data")), "a sibling change (k8s symlink swap) counts");
        let u2 = s.apply("FILE:/run/s/token", ok("two", None, &["/run/s/token"]), t, 1).unwrap();
        assert_eq!(u2.value.version, 2);
        assert_ne!(u2.value.fingerprint, u.value.fingerprint);
        // Deleted: last good value kept, error shown, retry scheduled, watch kept.
        let v = s.apply("FILE:/run/s/token", Err("no such file".into()), t, 9);
        assert!(v.is_none());
        assert_eq!(s.current("FILE:/run/s/token").unwrap().expose(), "two");
        let st = &s.status()[0];
        assert_eq!((st.version, st.last_error.as_deref(), st.used_by.len()), (2, Some("no such file"), 2));
        assert_eq!(s.next_deadline(), Some(t + RETRY_FIRST));
        assert!(s.due(t + RETRY_FIRST).len() == 1);
        assert!(!s.watch_dirs().is_empty());
    }

    #[test]
    fn ttl_and_backoff() {
        let mut s = CredentialStore::new([0; 32]);
        let t = Instant::now();
        s.add("VAULT:a#b", "x", t);
        s.apply("VAULT:a#b", ok("v", Some(0), &[]), t, 0);
        assert!(s.due(t).is_empty(), "a zero TTL is clamped");
        assert_eq!(s.due(t + MIN_TTL).len(), 1);
        for _ in 0..10 {
            s.apply("VAULT:a#b", Err("down".into()), t, 0);
        }
        assert_eq!(s.next_deadline(), Some(t + RETRY_MAX));
        s.plugins_changed();
        assert_eq!(s.due(t).len(), 1);
        // A malformed reference is not retried on a timer.
        s.apply("VAULT:a#b", Err(Failure { message: "bad".into(), retry: false }), t, 0);
        assert!(s.due(t + RETRY_MAX * 10).is_empty());
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn fingerprints_are_keyed() {
        let a = CredentialStore::new([1; 32]).fingerprint("x");
        let b = CredentialStore::new([2; 32]).fingerprint("x");
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }
}
