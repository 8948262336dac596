//! What to apply of the config and files gossiped to service groups: a pure state machine (no
//! I/O, no clock; time comes in as an `Instant`, keys through [`Keys`]).
//!
//! Per (group, kind, file name) it remembers the incarnation applied, the one dropped and the
//! one waiting for a key, so each incarnation is applied, refused or counted at most once.
//! Rules: a newer incarnation than the one applied, never 0 (Habitat's services start at 0);
//! plaintext is refused for a group of this supervisor's org; an encrypted payload must be
//! BOX-1 from a user key to exactly a revision of the group's service key; a missing key
//! waits (retried 1 s, 2 s, 4 s ... up to 60 s); anything malformed is dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::ServiceGroup;
use super::payload::{self, PayloadError};
use crate::crypto::{BoxPublicKey, BoxSecretKeyFile, KeyId};

pub const FIRST_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// The keys a BOX-1 message needs, by exact revision; None when the cache has none (or only
/// an unreadable file).
pub trait Keys {
    fn service_secret(&self, id: &KeyId) -> Option<BoxSecretKeyFile>;
    fn user_public(&self, id: &KeyId) -> Option<BoxPublicKey>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Config,
    File,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Config, Kind::File];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::File => "file",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    PlaintextRefused,
    WaitingKey,
    Undecryptable,
    Invalid,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Applied,
        Outcome::PlaintextRefused,
        Outcome::WaitingKey,
        Outcome::Undecryptable,
        Outcome::Invalid,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::PlaintextRefused => "plaintext_refused",
            Outcome::WaitingKey => "waiting_key",
            Outcome::Undecryptable => "undecryptable",
            Outcome::Invalid => "invalid",
        }
    }
}

/// One gossiped config or file, as the rumor carries it.
#[derive(Clone, Copy)]
pub struct Offer<'a> {
    pub group: &'a str,
    pub kind: Kind,
    /// Empty for a config.
    pub filename: &'a str,
    pub incarnation: u64,
    pub encrypted: bool,
    pub payload: &'a [u8],
}

/// What to hand to the services.
#[derive(Clone)]
pub enum Payload {
    Config(toml::Table),
    File { name: String, bytes: Zeroizing<Vec<u8>> },
}

#[derive(Clone)]
pub struct Decision {
    pub group: String,
    pub incarnation: u64,
    pub payload: Payload,
}

// Never the contents: a decision may carry decrypted secrets.
impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.payload {
            Payload::Config(t) => format!("config ({} keys)", t.len()),
            Payload::File { name, bytes } => format!("file {name:?} ({} bytes)", bytes.len()),
        };
        write!(f, "Decision({} #{}: {what})", self.group, self.incarnation)
    }
}

/// What an offer led to; each but `Apply` is reported once per incarnation, for the log.
/// Reasons never include payload bytes.
#[derive(Debug)]
pub enum Verdict {
    Apply(Decision),
    Dropped { outcome: Outcome, why: String },
    Waiting { missing: String, retry_at: Instant },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    group: String,
    kind: Kind,
    filename: String,
}

#[derive(Debug, Clone, Copy)]
struct Wait {
    incarnation: u64,
    delay: Duration,
    next: Instant,
}

#[derive(Debug, Default)]
struct SlotState {
    applied: u64,
    dropped: Option<u64>,
    wait: Option<Wait>,
}

/// Counters by kind and outcome.
pub type Counters = [[u64; 5]; 2];

pub struct Inbox {
    org: Option<String>,
    slots: BTreeMap<Slot, SlotState>,
    counters: Counters,
}

enum Failure {
    Drop(Outcome, String),
    Missing(String),
}

fn refuse(outcome: Outcome, why: impl Into<String>) -> Failure {
    Failure::Drop(outcome, why.into())
}

/// Habitat's user keys are bare names; service keys are `SVC.GROUP@ORG`, origin keys are
/// origins (no `.` or `@` either, but never the sender of a config).
fn is_user_key(id: &KeyId) -> bool {
    !id.name.contains(['.', '@'])
}

impl Inbox {
    /// `org`: this supervisor's `--org`.
    pub fn new(org: Option<String>) -> Self {
        Inbox { org, slots: BTreeMap::new(), counters: [[0; 5]; 2] }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn count(&self, kind: Kind, outcome: Outcome) -> u64 {
        self.counters[kind as usize][outcome as usize]
    }

    fn bump(&mut self, kind: Kind, outcome: Outcome) {
        self.counters[kind as usize][outcome as usize] += 1;
    }

    /// When the earliest waiting offer should be tried again.
    pub fn retry_at(&self) -> Option<Instant> {
        self.slots.values().filter_map(|s| s.wait.map(|w| w.next)).min()
    }

    /// The key cache changed: every waiting offer may be tried at once.
    pub fn keys_changed(&mut self, now: Instant) {
        for w in self.slots.values_mut().filter_map(|s| s.wait.as_mut()) {
            w.next = w.next.min(now);
        }
    }

    /// Forgets the groups no service here is in any more: a service loaded again later gets
    /// the current config and files again.
    pub fn retain_groups(&mut self, keep: impl Fn(&str) -> bool) {
        self.slots.retain(|slot, _| keep(&slot.group));
    }

    /// Considers the latest rumor of a slot.
    pub fn offer(&mut self, o: Offer<'_>, keys: &dyn Keys, now: Instant) -> Option<Verdict> {
        if o.incarnation == 0 {
            return None;
        }
        let slot = Slot {
            group: o.group.to_string(),
            kind: o.kind,
            filename: if o.kind == Kind::File { o.filename.to_string() } else { String::new() },
        };
        let state = self.slots.entry(slot.clone()).or_default();
        if o.incarnation <= state.applied || state.dropped == Some(o.incarnation) {
            return None;
        }
        let wait = state.wait.filter(|w| w.incarnation == o.incarnation);
        if wait.is_some_and(|w| now < w.next) {
            return None;
        }
        let result = self.evaluate(&o, keys);
        let state = self.slots.get_mut(&slot)?;
        match result {
            Ok(payload) => {
                state.applied = o.incarnation;
                state.wait = None;
                state.dropped = None;
                self.bump(o.kind, Outcome::Applied);
                Some(Verdict::Apply(Decision {
                    group: o.group.to_string(),
                    incarnation: o.incarnation,
                    payload,
                }))
            }
            Err(Failure::Drop(outcome, why)) => {
                state.dropped = Some(o.incarnation);
                state.wait = None;
                self.bump(o.kind, outcome);
                Some(Verdict::Dropped { outcome, why })
            }
            Err(Failure::Missing(missing)) => match wait {
                Some(w) => {
                    let delay = (w.delay * 2).min(MAX_RETRY);
                    state.wait = Some(Wait { incarnation: o.incarnation, delay, next: now + delay });
                    None
                }
                None => {
                    let retry_at = now + FIRST_RETRY;
                    state.wait =
                        Some(Wait { incarnation: o.incarnation, delay: FIRST_RETRY, next: retry_at });
                    self.bump(o.kind, Outcome::WaitingKey);
                    Some(Verdict::Waiting { missing, retry_at })
                }
            },
        }
    }

    // The checks are the ones the CLI and the ctl gateway make (`payload`): a rumor from a
    // member that skipped them meets them here.
    fn evaluate(&self, o: &Offer<'_>, keys: &dyn Keys) -> Result<Payload, Failure> {
        let group: ServiceGroup = o.group.parse().map_err(|e| refuse(Outcome::Invalid, format!("{e}")))?;
        if o.kind == Kind::File {
            payload::check_file_name(o.filename).map_err(|e| refuse(Outcome::Invalid, e.to_string()))?;
        }
        let plain: Zeroizing<Vec<u8>> = if o.encrypted {
            self.decrypt(&group, o.payload, keys)?
        } else {
            if group.org.is_some() && group.org == self.org {
                return Err(refuse(
                    Outcome::PlaintextRefused,
                    "plaintext for a group of this supervisor's org",
                ));
            }
            Zeroizing::new(o.payload.to_vec())
        };
        // Their errors never quote the payload.
        let invalid = |e: PayloadError| refuse(Outcome::Invalid, e.to_string());
        match o.kind {
            Kind::Config => Ok(Payload::Config(payload::check_config(&plain).map_err(invalid)?)),
            Kind::File => {
                payload::check_size("the file", &plain).map_err(invalid)?;
                Ok(Payload::File { name: o.filename.to_string(), bytes: plain })
            }
        }
    }

    fn decrypt(
        &self,
        group: &ServiceGroup,
        sealed: &[u8],
        keys: &dyn Keys,
    ) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let msg = payload::check_sealed(sealed, group).map_err(|e| match e {
            e @ PayloadError::TooLarge { .. } => refuse(Outcome::Invalid, e.to_string()),
            // Not the parser's message: it quotes the first line, which may be plaintext sent
            // as if it were encrypted.
            PayloadError::NotBox(_) => refuse(Outcome::Undecryptable, "not a well-formed BOX-1 message"),
            e => refuse(Outcome::Undecryptable, e.to_string()),
        })?;
        let (Some(sender), receiver) = (msg.sender(), msg.receiver()) else {
            return Err(refuse(Outcome::Undecryptable, "an anonymous box: no sender to trust"));
        };
        if !is_user_key(sender) {
            return Err(refuse(Outcome::Undecryptable, format!("sent by {sender}, which is not a user key")));
        }
        let secret = keys.service_secret(receiver).ok_or_else(|| Failure::Missing(receiver.to_string()))?;
        let public = keys.user_public(sender).ok_or_else(|| Failure::Missing(sender.to_string()))?;
        msg.decrypt(Some(&public), &secret).map_err(|e| refuse(Outcome::Undecryptable, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::boxes::{self, BoxMessage};
    use crate::groups::payload::{MAX_PAYLOAD, MAX_SEALED};
    use std::cell::RefCell;

    #[derive(Default)]
    struct Cache {
        secrets: Vec<BoxSecretKeyFile>,
        publics: Vec<BoxPublicKey>,
        asked: RefCell<usize>,
    }

    impl Keys for Cache {
        fn service_secret(&self, id: &KeyId) -> Option<BoxSecretKeyFile> {
            *self.asked.borrow_mut() += 1;
            self.secrets.iter().find(|k| k.id == *id).cloned()
        }
        fn user_public(&self, id: &KeyId) -> Option<BoxPublicKey> {
            self.publics.iter().find(|k| k.id == *id).cloned()
        }
    }

    struct World {
        user: BoxSecretKeyFile,
        svc_pk: BoxPublicKey,
        cache: Cache,
    }

    fn world() -> World {
        let (_, user) = BoxSecretKeyFile::generate("ruby").unwrap();
        let (svc_pk, svc_sk) = BoxSecretKeyFile::generate("redis.default@acme").unwrap();
        let cache = Cache { secrets: vec![svc_sk], publics: vec![user.public()], ..Cache::default() };
        World { user, svc_pk, cache }
    }

    fn boxed(w: &World, text: &[u8]) -> Vec<u8> {
        boxes::encrypt(text, &w.user, &w.svc_pk).unwrap().to_text().into_bytes()
    }

    fn config<'a>(group: &'a str, inc: u64, encrypted: bool, payload: &'a [u8]) -> Offer<'a> {
        Offer { group, kind: Kind::Config, filename: "", incarnation: inc, encrypted, payload }
    }

    fn file<'a>(name: &'a str, inc: u64, payload: &'a [u8]) -> Offer<'a> {
        Offer {
            group: "redis.default@acme",
            kind: Kind::File,
            filename: name,
            incarnation: inc,
            encrypted: true,
            payload,
        }
    }

    fn applied(v: Option<Verdict>) -> Decision {
        match v {
            Some(Verdict::Apply(d)) => d,
            other => panic!("not applied: {other:?}"),
        }
    }

    fn dropped(v: Option<Verdict>) -> Outcome {
        match v {
            Some(Verdict::Dropped { outcome, .. }) => outcome,
            other => panic!("not dropped: {other:?}"),
        }
    }

    #[test]
    fn newer_incarnations_apply_once_and_zero_never() {
        let w = world();
        let mut inbox = Inbox::new(Some("acme".into()));
        let now = Instant::now();
        let g = "redis.default@acme";
        let one = boxed(&w, b"port = 1");
        assert!(
            inbox.offer(config(g, 0, true, &one), &w.cache, now).is_none(),
            "incarnation 0 is never applied"
        );
        let d = applied(inbox.offer(config(g, 2, true, &one), &w.cache, now));
        assert_eq!((d.group.as_str(), d.incarnation), (g, 2));
        let Payload::Config(t) = d.payload else { panic!() };
        assert_eq!(t["port"].as_integer(), Some(1));
        // The same or an older incarnation again: nothing, and the keys are not even read.
        let asked = *w.cache.asked.borrow();
        assert!(inbox.offer(config(g, 2, true, &one), &w.cache, now).is_none());
        assert!(inbox.offer(config(g, 1, true, &one), &w.cache, now).is_none());
        assert_eq!(*w.cache.asked.borrow(), asked);
        applied(inbox.offer(config(g, 3, true, &boxed(&w, b"port = 3")), &w.cache, now));
        assert_eq!(inbox.count(Kind::Config, Outcome::Applied), 2);
        // Plaintext for a group outside this org is a config like any other.
        let d = applied(inbox.offer(config("web.default", 1, false, b"x = 'y'"), &w.cache, now));
        assert_eq!(d.group, "web.default");
        let d = applied(inbox.offer(config("web.default@other", 1, false, b"x = 'y'"), &w.cache, now));
        assert!(format!("{d:?}").contains("1 keys"), "{d:?}");
    }

    #[test]
    fn plaintext_for_this_org_is_refused_and_counted_once() {
        let w = world();
        let mut inbox = Inbox::new(Some("acme".into()));
        let now = Instant::now();
        let o = config("redis.default@acme", 5, false, b"port = 1");
        assert_eq!(dropped(inbox.offer(o, &w.cache, now)), Outcome::PlaintextRefused);
        assert!(inbox.offer(o, &w.cache, now).is_none(), "counted and logged once");
        assert_eq!(inbox.count(Kind::Config, Outcome::PlaintextRefused), 1);
        // A later encrypted incarnation still applies.
        applied(inbox.offer(config("redis.default@acme", 6, true, &boxed(&w, b"a = 1")), &w.cache, now));
        // Without an org of its own, a supervisor takes plaintext for any group.
        let mut open = Inbox::new(None);
        applied(open.offer(o, &w.cache, now));
    }

    #[test]
    fn tampered_wrong_recipient_and_non_user_senders_are_undecryptable() {
        let w = world();
        let mut inbox = Inbox::new(Some("acme".into()));
        let now = Instant::now();
        let g = "redis.default@acme";
        let mut msg = boxes::encrypt(b"port = 1", &w.user, &w.svc_pk).unwrap();
        if let BoxMessage::Signed { ciphertext, .. } = &mut msg {
            ciphertext[3] ^= 1;
        }
        let tampered = msg.to_text().into_bytes();
        assert_eq!(
            dropped(inbox.offer(config(g, 1, true, &tampered), &w.cache, now)),
            Outcome::Undecryptable
        );
        assert!(inbox.offer(config(g, 1, true, &tampered), &w.cache, now).is_none());
        // To another group's key (whose secret this cache even holds).
        let (other_pk, other_sk) = BoxSecretKeyFile::generate("redis.other@acme").unwrap();
        let mut cache = world().cache;
        cache.secrets.push(other_sk);
        cache.publics = vec![w.user.public()];
        let wrong = boxes::encrypt(b"a = 1", &w.user, &other_pk).unwrap().to_text().into_bytes();
        assert_eq!(dropped(inbox.offer(config(g, 2, true, &wrong), &cache, now)), Outcome::Undecryptable);
        // From a service key, not a user's.
        let (_, svc_sender) = BoxSecretKeyFile::generate("web.default@acme").unwrap();
        cache.publics.push(svc_sender.public());
        let from_svc = boxes::encrypt(b"a = 1", &svc_sender, &w.svc_pk).unwrap().to_text().into_bytes();
        assert_eq!(
            dropped(inbox.offer(config(g, 3, true, &from_svc), &w.cache, now)),
            Outcome::Undecryptable
        );
        // Anonymous boxes have no sender to trust; garbage is no box at all.
        let anon = boxes::encrypt_anonymous(b"a = 1", &w.svc_pk).unwrap().to_text().into_bytes();
        assert_eq!(dropped(inbox.offer(config(g, 4, true, &anon), &w.cache, now)), Outcome::Undecryptable);
        assert_eq!(
            dropped(inbox.offer(config(g, 5, true, b"\xff\x00BOX"), &w.cache, now)),
            Outcome::Undecryptable
        );
        assert_eq!(inbox.count(Kind::Config, Outcome::Undecryptable), 5);
    }

    #[test]
    fn bad_payloads_and_names_are_invalid_never_a_panic() {
        let w = world();
        let mut inbox = Inbox::new(Some("acme".into()));
        let now = Instant::now();
        let g = "redis.default@acme";
        let mut inc = 0;
        let mut next = || {
            inc += 1;
            inc
        };
        for bad in [&b"not = [toml"[..], b"\xff\xfe"] {
            let text = boxed(&w, bad);
            let o = config(g, next(), true, &text);
            assert_eq!(dropped(inbox.offer(o, &w.cache, now)), Outcome::Invalid);
        }
        let big = vec![b'a'; MAX_PAYLOAD + 1];
        assert_eq!(
            dropped(inbox.offer(file("big", next(), &boxed(&w, &big)), &w.cache, now)),
            Outcome::Invalid
        );
        let huge = vec![b'A'; MAX_SEALED + 1];
        assert_eq!(dropped(inbox.offer(file("big", next(), &huge), &w.cache, now)), Outcome::Invalid);
        let body = boxed(&w, b"hello");
        for name in ["../escape", "a/b", "", ".", "..", "nul\0", "a\\b"] {
            assert_eq!(
                dropped(inbox.offer(file(name, 1, &body), &w.cache, now)),
                Outcome::Invalid,
                "{name:?}"
            );
            assert!(inbox.offer(file(name, 1, &body), &w.cache, now).is_none(), "once: {name:?}");
        }
        let bad_group = config("not a group", 1, false, b"a = 1");
        assert_eq!(dropped(inbox.offer(bad_group, &w.cache, now)), Outcome::Invalid);
        assert_eq!(inbox.count(Kind::File, Outcome::Invalid), 9);
        assert_eq!(inbox.count(Kind::Config, Outcome::Invalid), 3);
        // The largest file allowed goes through, bytes intact.
        let max = vec![7u8; MAX_PAYLOAD];
        let d = applied(inbox.offer(file("max.bin", 1, &boxed(&w, &max)), &w.cache, now));
        let Payload::File { name, bytes } = d.payload else { panic!() };
        assert_eq!((name.as_str(), bytes.len()), ("max.bin", MAX_PAYLOAD));
        // Files have a slot each.
        applied(inbox.offer(file("other.bin", 1, &body), &w.cache, now));
    }

    #[test]
    fn a_missing_key_waits_with_doubling_backoff_until_it_appears() {
        let w = world();
        let mut cache = Cache { secrets: w.cache.secrets.clone(), ..Cache::default() };
        let mut inbox = Inbox::new(Some("acme".into()));
        let t0 = Instant::now();
        let text = boxed(&w, b"port = 9");
        let o = config("redis.default@acme", 1, true, &text);
        match inbox.offer(o, &cache, t0) {
            Some(Verdict::Waiting { missing, retry_at }) => {
                assert_eq!(missing, w.user.id.to_string());
                assert_eq!(retry_at, t0 + Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(inbox.retry_at(), Some(t0 + Duration::from_secs(1)));
        // Before the retry time nothing is tried.
        let asked = *cache.asked.borrow();
        assert!(inbox.offer(o, &cache, t0 + Duration::from_millis(500)).is_none());
        assert_eq!(*cache.asked.borrow(), asked);
        // Each miss doubles the wait, up to 60 s; the wait is counted once.
        let mut t = t0 + Duration::from_secs(1);
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(inbox.offer(o, &cache, t).is_none());
            let next = inbox.retry_at().unwrap();
            waits.push((next - t).as_secs());
            t = next;
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(inbox.count(Kind::Config, Outcome::WaitingKey), 1);
        // The key arrives: a cache change makes the retry due at once.
        cache.publics.push(w.user.public());
        let now = t - Duration::from_secs(59);
        assert!(inbox.offer(o, &cache, now).is_none(), "not due yet");
        inbox.keys_changed(now);
        assert_eq!(inbox.retry_at(), Some(now));
        applied(inbox.offer(o, &cache, now));
        assert_eq!(inbox.retry_at(), None);
        // A missing service key waits the same way.
        let mut inbox = Inbox::new(Some("acme".into()));
        match inbox.offer(o, &Cache::default(), t0) {
            Some(Verdict::Waiting { missing, .. }) => {
                assert!(missing.starts_with("redis.default@acme-"), "{missing}")
            }
            other => panic!("{other:?}"),
        }
        // A newer incarnation waits afresh (and counts again).
        let newer = config("redis.default@acme", 2, true, &text);
        assert!(matches!(inbox.offer(newer, &Cache::default(), t0), Some(Verdict::Waiting { .. })));
        assert_eq!(inbox.count(Kind::Config, Outcome::WaitingKey), 2);
    }

    #[test]
    fn forgotten_groups_are_applied_again() {
        let w = world();
        let mut inbox = Inbox::new(None);
        let now = Instant::now();
        let text = boxed(&w, b"a = 1");
        let o = config("redis.default@acme", 1, true, &text);
        applied(inbox.offer(o, &w.cache, now));
        assert!(inbox.offer(o, &w.cache, now).is_none());
        inbox.retain_groups(|g| g != "redis.default@acme");
        applied(inbox.offer(o, &w.cache, now));
    }
}
