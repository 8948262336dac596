//! Typed rumors and the store that merges them (higher incarnation / term wins).

use std::collections::BTreeMap;

use prost::Message as _;

use super::proto;

/// Largest encoded rumor accepted from anywhere.
pub const MAX_RUMOR_LEN: usize = 4 * 1024 * 1024;
/// Most rumors a store holds; beyond it new keys are refused (existing ones still update).
pub const MAX_RUMORS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RumorKind {
    Member,
    Service,
    ServiceConfig,
    ServiceFile,
    Election,
    ElectionUpdate,
    Departure,
}

impl RumorKind {
    pub const ALL: [RumorKind; 7] = [
        RumorKind::Member,
        RumorKind::Service,
        RumorKind::ServiceConfig,
        RumorKind::ServiceFile,
        RumorKind::Election,
        RumorKind::ElectionUpdate,
        RumorKind::Departure,
    ];

    /// Habitat's name for the kind (the /butterfly keys and the /metrics label).
    pub fn label(self) -> &'static str {
        match self {
            RumorKind::Member => "member",
            RumorKind::Service => "service",
            RumorKind::ServiceConfig => "service_config",
            RumorKind::ServiceFile => "service_file",
            RumorKind::Election => "election",
            RumorKind::ElectionUpdate => "election_update",
            RumorKind::Departure => "departure",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A rumor: one piece of replicated state.
#[derive(Debug, Clone, PartialEq)]
pub enum Rumor {
    Member(proto::MemberRumor),
    Service(proto::ServiceRumor),
    ServiceConfig(proto::ServiceConfigRumor),
    ServiceFile(proto::ServiceFileRumor),
    Election(proto::ElectionRumor),
    ElectionUpdate(proto::ElectionRumor),
    Departure(proto::DepartureRumor),
}

/// What a rumor is about: a newer rumor with the same key replaces the older one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RumorKey {
    pub kind: RumorKind,
    pub a: String,
    pub b: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RumorError {
    #[error("rumor is {0} bytes, over the {MAX_RUMOR_LEN} byte limit")]
    TooLarge(usize),
    #[error("rumor does not decode")]
    Decode,
    #[error("rumor has no body")]
    Empty,
    #[error("member rumors and departures are said by the ring itself, not injected")]
    NotInjectable,
    #[error("rumor store is full")]
    Full,
    #[error("rumor store is over its {0} byte budget")]
    OverBudget(usize),
    #[error("rumor names member {0:?}, which is not a member id (32 hex digits)")]
    BadMemberId(String),
    #[error("version 0 is never applied (Habitat's services start at 0); use 1 or more")]
    VersionZero,
    #[error("version {offered} is not newer than the current version {current}; use {} or more", current + 1)]
    StaleVersion { offered: u64, current: u64 },
    #[error("only service config and service file rumors carry a version")]
    NotVersioned,
}

impl Rumor {
    pub fn kind(&self) -> RumorKind {
        match self {
            Rumor::Member(_) => RumorKind::Member,
            Rumor::Service(_) => RumorKind::Service,
            Rumor::ServiceConfig(_) => RumorKind::ServiceConfig,
            Rumor::ServiceFile(_) => RumorKind::ServiceFile,
            Rumor::Election(_) => RumorKind::Election,
            Rumor::ElectionUpdate(_) => RumorKind::ElectionUpdate,
            Rumor::Departure(_) => RumorKind::Departure,
        }
    }

    pub fn key(&self) -> RumorKey {
        let (a, b) = match self {
            Rumor::Member(m) => (m.id.clone(), String::new()),
            Rumor::Service(s) => (s.service_group.clone(), s.member_id.clone()),
            Rumor::ServiceConfig(c) => (c.service_group.clone(), String::new()),
            Rumor::ServiceFile(f) => (f.service_group.clone(), f.filename.clone()),
            Rumor::Election(e) | Rumor::ElectionUpdate(e) => (e.service_group.clone(), String::new()),
            Rumor::Departure(d) => (d.member_id.clone(), String::new()),
        };
        RumorKey { kind: self.kind(), a, b }
    }

    pub fn to_proto(&self) -> proto::Rumor {
        use proto::rumor::Body;
        let body = match self.clone() {
            Rumor::Member(m) => Body::Member(m),
            Rumor::Service(s) => Body::Service(s),
            Rumor::ServiceConfig(c) => Body::ServiceConfig(c),
            Rumor::ServiceFile(f) => Body::ServiceFile(f),
            Rumor::Election(e) => Body::Election(e),
            Rumor::ElectionUpdate(e) => Body::ElectionUpdate(e),
            Rumor::Departure(d) => Body::Departure(d),
        };
        proto::Rumor { body: Some(body) }
    }

    /// `Ok(None)` for the internal suspicion rumor, which the store never holds.
    pub fn from_proto(p: proto::Rumor) -> Result<Option<Rumor>, RumorError> {
        use proto::rumor::Body;
        Ok(Some(match p.body.ok_or(RumorError::Empty)? {
            Body::Member(m) => Rumor::Member(m),
            Body::Service(s) => Rumor::Service(s),
            Body::ServiceConfig(c) => Rumor::ServiceConfig(c),
            Body::ServiceFile(f) => Rumor::ServiceFile(f),
            Body::Election(e) => Rumor::Election(e),
            Body::ElectionUpdate(e) => Rumor::ElectionUpdate(e),
            Body::Departure(d) => Rumor::Departure(d),
            Body::Suspicion(_) => return Ok(None),
        }))
    }

    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// The incarnation of the kinds a newer incarnation replaces (elections go by term,
    /// departures are final).
    pub fn incarnation(&self) -> Option<u64> {
        match self {
            Rumor::Member(m) => Some(m.incarnation),
            Rumor::Service(s) => Some(s.incarnation),
            Rumor::ServiceConfig(c) => Some(c.incarnation),
            Rumor::ServiceFile(f) => Some(f.incarnation),
            Rumor::Election(_) | Rumor::ElectionUpdate(_) | Rumor::Departure(_) => None,
        }
    }

    pub fn incarnation_mut(&mut self) -> Option<&mut u64> {
        match self {
            Rumor::Member(m) => Some(&mut m.incarnation),
            Rumor::Service(s) => Some(&mut s.incarnation),
            Rumor::ServiceConfig(c) => Some(&mut c.incarnation),
            Rumor::ServiceFile(f) => Some(&mut f.incarnation),
            Rumor::Election(_) | Rumor::ElectionUpdate(_) | Rumor::Departure(_) => None,
        }
    }

    pub fn encoded_len(&self) -> usize {
        self.to_proto().encoded_len()
    }

    /// Member ids in canonical form (32 lowercase hex digits), so a departure typed in upper
    /// case or with spaces matches the member on every later check and after a restart.
    pub fn normalized(self) -> Result<Rumor, RumorError> {
        let canon = |id: &str| {
            id.parse::<super::MemberId>()
                .map(|m| m.to_string())
                .map_err(|_| RumorError::BadMemberId(id.into()))
        };
        Ok(match self {
            Rumor::Departure(mut d) => {
                d.member_id = canon(&d.member_id)?;
                Rumor::Departure(d)
            }
            Rumor::Member(mut m) => {
                m.id = canon(&m.id)?;
                Rumor::Member(m)
            }
            other => other,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<proto::Rumor, RumorError> {
        if bytes.len() > MAX_RUMOR_LEN {
            return Err(RumorError::TooLarge(bytes.len()));
        }
        proto::Rumor::decode(bytes).map_err(|_| RumorError::Decode)
    }

    /// Merges `self` (incoming) into `old`: `Some(merged)` when it adds information.
    pub fn merge_into(&self, old: &Rumor) -> Option<Rumor> {
        match (self, old) {
            (Rumor::Member(_), Rumor::Member(_))
            | (Rumor::Service(_), Rumor::Service(_))
            | (Rumor::ServiceConfig(_), Rumor::ServiceConfig(_))
            | (Rumor::ServiceFile(_), Rumor::ServiceFile(_)) => {
                (self.incarnation() > old.incarnation()).then(|| self.clone())
            }
            (Rumor::Election(n), Rumor::Election(o)) => merge_election(n, o).map(Rumor::Election),
            (Rumor::ElectionUpdate(n), Rumor::ElectionUpdate(o)) => {
                merge_election(n, o).map(Rumor::ElectionUpdate)
            }
            // A departure is forever.
            _ => None,
        }
    }
}

/// Higher term wins; in one term the better candidate (suitability, then id) wins; the same
/// candidate's votes are unioned and its status only moves forward.
fn merge_election(n: &proto::ElectionRumor, o: &proto::ElectionRumor) -> Option<proto::ElectionRumor> {
    use std::cmp::Ordering::*;
    match n.term.cmp(&o.term) {
        Greater => return Some(n.clone()),
        Less => return None,
        Equal => {}
    }
    if n.member_id != o.member_id {
        let better = (n.suitability, &n.member_id) > (o.suitability, &o.member_id);
        return better.then(|| n.clone());
    }
    let mut merged = o.clone();
    for v in &n.votes {
        if !merged.votes.contains(v) {
            merged.votes.push(v.clone());
        }
    }
    merged.votes.sort();
    merged.status = merged.status.max(n.status);
    let mut old_sorted = o.votes.clone();
    old_sorted.sort();
    (merged.votes != old_sorted || merged.status != o.status).then_some(merged)
}

/// How big a store may grow: a count cap and a byte budget (encoded size), so a few large
/// rumors cannot grow push-pull or the snapshot without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RumorLimits {
    pub max_rumors: usize,
    pub max_bytes: usize,
}

impl Default for RumorLimits {
    fn default() -> Self {
        RumorLimits { max_rumors: MAX_RUMORS, max_bytes: DEFAULT_BUDGET_BYTES }
    }
}

/// Default byte budget of a store (encoded rumors).
pub const DEFAULT_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Every rumor this member knows, with per-kind update counters (Habitat's `update_counter`).
/// Keys sort by kind, then group (or member id), so a kind or one group's rumors are a range.
/// Pure: changes are reported by return values, never through channels.
#[derive(Default)]
pub struct RumorStore {
    rumors: BTreeMap<RumorKey, (Rumor, usize)>,
    counters: [u64; 7],
    counts: [usize; 7],
    bytes: usize,
    limits: RumorLimits,
}

impl RumorStore {
    pub fn new() -> Self {
        RumorStore::with_limits(RumorLimits::default())
    }

    pub fn with_limits(limits: RumorLimits) -> Self {
        RumorStore { limits, ..RumorStore::empty() }
    }

    fn empty() -> Self {
        RumorStore {
            rumors: BTreeMap::new(),
            counters: [0; 7],
            counts: [0; 7],
            bytes: 0,
            limits: RumorLimits::default(),
        }
    }

    pub fn limits(&self) -> RumorLimits {
        self.limits
    }

    /// Merges a rumor. Returns the stored value when it changed the store.
    pub fn merge(&mut self, rumor: Rumor) -> Result<Option<Rumor>, RumorError> {
        let rumor = rumor.normalized()?;
        let key = rumor.key();
        let stored = match self.rumors.get(&key) {
            Some((old, _)) => match rumor.merge_into(old) {
                Some(merged) => merged,
                None => return Ok(None),
            },
            None => rumor,
        };
        self.put(stored.clone())?;
        Ok(Some(stored))
    }

    /// Stores `rumor` as is (replacing its key), within the limits.
    pub fn put(&mut self, rumor: Rumor) -> Result<(), RumorError> {
        let key = rumor.key();
        let size = rumor.encoded_len();
        let old = self.rumors.get(&key).map(|(_, s)| *s);
        if old.is_none() && self.rumors.len() >= self.limits.max_rumors {
            return Err(RumorError::Full);
        }
        if self.bytes - old.unwrap_or(0) + size > self.limits.max_bytes {
            return Err(RumorError::OverBudget(self.limits.max_bytes));
        }
        let k = key.kind.index();
        self.counters[k] += 1;
        if old.is_none() {
            self.counts[k] += 1;
        }
        self.bytes = self.bytes - old.unwrap_or(0) + size;
        self.rumors.insert(key, (rumor, size));
        Ok(())
    }

    pub fn remove(&mut self, key: &RumorKey) -> Option<Rumor> {
        let (rumor, size) = self.rumors.remove(key)?;
        self.bytes -= size;
        self.counts[key.kind.index()] -= 1;
        self.counters[key.kind.index()] += 1;
        Some(rumor)
    }

    /// Would this rumor change the store?
    pub fn is_news(&self, rumor: &Rumor) -> bool {
        match self.rumors.get(&rumor.key()) {
            Some((old, _)) => rumor.merge_into(old).is_some(),
            None => true,
        }
    }

    pub fn get(&self, key: &RumorKey) -> Option<&Rumor> {
        self.rumors.get(key).map(|(r, _)| r)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rumor> {
        self.rumors.values().map(|(r, _)| r)
    }

    /// Rumors of one kind, in key order (a range, not a scan).
    pub fn of_kind(&self, kind: RumorKind) -> impl Iterator<Item = &Rumor> {
        let from = RumorKey { kind, a: String::new(), b: String::new() };
        self.rumors.range(from..).take_while(move |(k, _)| k.kind == kind).map(|(_, (r, _))| r)
    }

    /// Rumors of one kind about one group (or member id, for member-keyed kinds).
    pub fn of_group<'a>(&'a self, kind: RumorKind, group: &str) -> impl Iterator<Item = &'a Rumor> + 'a {
        let from = RumorKey { kind, a: group.to_string(), b: String::new() };
        // "group\0" is the smallest key after every `a == group`.
        let to = RumorKey { kind, a: format!("{group}\0"), b: String::new() };
        self.rumors.range(from..to).map(|(_, (r, _))| r)
    }

    pub fn count(&self, kind: RumorKind) -> usize {
        self.counts[kind.index()]
    }

    pub fn len(&self) -> usize {
        self.rumors.len()
    }

    /// Encoded size of every rumor held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.rumors.is_empty()
    }

    pub fn counter(&self, kind: RumorKind) -> u64 {
        self.counters[kind.index()]
    }

    pub fn departure(&self, member_id: &str) -> Option<&proto::DepartureRumor> {
        let key = RumorKey { kind: RumorKind::Departure, a: member_id.to_string(), b: String::new() };
        match self.get(&key) {
            Some(Rumor::Departure(d)) => Some(d),
            _ => None,
        }
    }

    pub fn is_departed(&self, member_id: &str) -> bool {
        self.departure(member_id).is_some()
    }

    /// The keys to drop at unix time `now`: departures older than `retention`, with every
    /// rumor of those members (their member rumor and their service rumors).
    pub fn expired(&self, now_unix: u64, retention: u64) -> Vec<RumorKey> {
        let mut keys = Vec::new();
        for r in self.of_kind(RumorKind::Departure) {
            let Rumor::Departure(d) = r else { continue };
            if d.departed_at == 0 || d.departed_at.saturating_add(retention) > now_unix {
                continue;
            }
            keys.push(r.key());
            keys.push(RumorKey { kind: RumorKind::Member, a: d.member_id.clone(), b: String::new() });
        }
        let gone: std::collections::HashSet<String> =
            keys.iter().filter(|k| k.kind == RumorKind::Departure).map(|k| k.a.clone()).collect();
        if !gone.is_empty() {
            for r in self.of_kind(RumorKind::Service) {
                if let Rumor::Service(s) = r
                    && gone.contains(s.member_id.as_str())
                {
                    keys.push(r.key());
                }
            }
        }
        keys.retain(|k| self.rumors.contains_key(k));
        keys
    }

    pub fn snapshot(&self) -> Vec<u8> {
        proto::RumorSnapshot { rumors: self.iter().map(Rumor::to_proto).collect() }.encode_to_vec()
    }

    /// Loads a saved snapshot, skipping entries that do not decode or fit.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<usize, RumorError> {
        let snap = proto::RumorSnapshot::decode(bytes).map_err(|_| RumorError::Decode)?;
        let mut n = 0;
        for p in snap.rumors {
            if let Ok(Some(r)) = Rumor::from_proto(p)
                && self.merge(r).ok().flatten().is_some()
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M1: &str = "0123456789abcdef0123456789abcdef";

    fn svc(inc: u64) -> Rumor {
        Rumor::Service(proto::ServiceRumor {
            member_id: M1.into(),
            service_group: "redis.default".into(),
            incarnation: inc,
            ..Default::default()
        })
    }

    fn election(term: u64, cand: &str, suit: u64, votes: &[&str]) -> Rumor {
        Rumor::Election(proto::ElectionRumor {
            member_id: cand.into(),
            service_group: "g.default".into(),
            term,
            suitability: suit,
            votes: votes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    }

    fn departure(id: &str, at: u64) -> Rumor {
        Rumor::Departure(proto::DepartureRumor { member_id: id.into(), departed_at: at })
    }

    #[test]
    fn higher_incarnation_wins_and_stale_is_ignored() {
        let mut s = RumorStore::new();
        assert!(s.merge(svc(2)).unwrap().is_some());
        assert!(s.merge(svc(1)).unwrap().is_none());
        assert!(s.merge(svc(2)).unwrap().is_none());
        assert!(!s.is_news(&svc(2)));
        assert!(s.is_news(&svc(3)));
        assert!(s.merge(svc(3)).unwrap().is_some());
        assert_eq!(s.counter(RumorKind::Service), 2);
        assert_eq!(s.len(), 1);
        assert_eq!(s.count(RumorKind::Service), 1);
        assert_eq!(s.bytes(), svc(3).encoded_len());
    }

    #[test]
    fn election_merge_rules() {
        let mut s = RumorStore::new();
        s.merge(election(1, "a", 5, &["a"])).unwrap();
        // Same term, worse candidate: ignored; better candidate: wins.
        assert!(s.merge(election(1, "b", 1, &["b"])).unwrap().is_none());
        assert!(s.merge(election(1, "c", 9, &["c"])).unwrap().is_some());
        // Same candidate: votes are unioned.
        let merged = s.merge(election(1, "c", 9, &["a"])).unwrap().unwrap();
        match merged {
            Rumor::Election(e) => assert_eq!(e.votes, vec!["a".to_string(), "c".to_string()]),
            _ => panic!("wrong kind"),
        }
        assert!(s.merge(election(1, "c", 9, &["c"])).unwrap().is_none());
        // Lower term never wins, higher always does.
        assert!(s.merge(election(0, "z", 99, &[])).unwrap().is_none());
        assert!(s.merge(election(2, "a", 0, &[])).unwrap().is_some());
    }

    #[test]
    fn departure_ids_are_normalized_and_bad_ones_refused() {
        let mut s = RumorStore::new();
        let shouted = format!("  {}  ", M1.to_uppercase());
        let stored = s.merge(departure(&shouted, 5)).unwrap().unwrap();
        assert_eq!(stored.key().a, M1);
        assert!(s.is_departed(M1), "found by its canonical id");
        assert!(s.merge(departure(M1, 6)).unwrap().is_none(), "a departure is not news twice");
        assert_eq!(s.merge(departure("not an id", 1)), Err(RumorError::BadMemberId("not an id".into())));
    }

    #[test]
    fn byte_budget_and_count_cap_refuse_new_rumors_but_not_shrinking_updates() {
        let one = svc(1).encoded_len();
        let mut s = RumorStore::with_limits(RumorLimits { max_rumors: 10, max_bytes: one * 2 + 100 });
        let big = |inc: u64, len: usize| {
            Rumor::Service(proto::ServiceRumor {
                member_id: M1.into(),
                service_group: "big.default".into(),
                incarnation: inc,
                cfg: vec![b'x'; len],
                ..Default::default()
            })
        };
        s.merge(svc(1)).unwrap();
        assert_eq!(s.merge(big(1, one * 3)), Err(RumorError::OverBudget(one * 2 + 100)));
        assert_eq!(s.len(), 1, "nothing half-stored");
        s.merge(big(1, 10)).unwrap();
        assert_eq!(s.merge(big(2, one * 3)), Err(RumorError::OverBudget(one * 2 + 100)));
        s.merge(big(3, 1)).unwrap();
        assert_eq!(s.bytes(), svc(1).encoded_len() + big(3, 1).encoded_len());
        let mut capped = RumorStore::with_limits(RumorLimits { max_rumors: 1, max_bytes: 1 << 20 });
        capped.merge(svc(1)).unwrap();
        assert_eq!(capped.merge(big(1, 1)), Err(RumorError::Full));
        assert!(capped.merge(svc(2)).unwrap().is_some(), "an existing key still updates");
    }

    #[test]
    fn kinds_and_groups_are_ranges() {
        let mut s = RumorStore::new();
        for g in ["a.default", "a.default2", "b.default"] {
            for m in 0..3u8 {
                s.merge(Rumor::Service(proto::ServiceRumor {
                    member_id: format!("{m:032x}"),
                    service_group: g.into(),
                    incarnation: 1,
                    ..Default::default()
                }))
                .unwrap();
            }
        }
        s.merge(departure(M1, 1)).unwrap();
        assert_eq!(s.of_kind(RumorKind::Service).count(), 9);
        assert_eq!(s.count(RumorKind::Service), 9);
        assert_eq!(s.of_group(RumorKind::Service, "a.default").count(), 3, "not a.default2");
        assert_eq!(s.of_kind(RumorKind::Departure).count(), 1);
        assert_eq!(s.of_kind(RumorKind::Election).count(), 0);
    }

    #[test]
    fn expired_departures_take_their_member_rumors_with_them() {
        let mut s = RumorStore::new();
        s.merge(svc(1)).unwrap();
        s.merge(Rumor::Member(proto::MemberRumor { id: M1.into(), incarnation: 1, ..Default::default() }))
            .unwrap();
        s.merge(departure(M1, 1000)).unwrap();
        assert!(s.expired(1000 + 59, 60).is_empty(), "still within retention");
        let keys = s.expired(1000 + 60, 60);
        assert_eq!(keys.len(), 3, "departure, member and service rumor: {keys:?}");
        for k in &keys {
            s.remove(k).unwrap();
        }
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn snapshot_round_trips() {
        let mut s = RumorStore::new();
        s.merge(departure(M1, 3)).unwrap();
        s.merge(svc(4)).unwrap();
        let snap = s.snapshot();
        let mut t = RumorStore::new();
        assert_eq!(t.restore(&snap).unwrap(), 2);
        assert!(t.is_departed(M1));
        assert!(t.restore(&[0xff, 0xff]).is_err());
    }
}
