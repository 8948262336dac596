//! Typed rumors and the store that merges them (higher incarnation / term wins).

use std::collections::BTreeMap;

use prost::Message as _;
use tokio::sync::broadcast;

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
    #[error("rumor store is full")]
    Full,
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

    pub fn decode(bytes: &[u8]) -> Result<proto::Rumor, RumorError> {
        if bytes.len() > MAX_RUMOR_LEN {
            return Err(RumorError::TooLarge(bytes.len()));
        }
        proto::Rumor::decode(bytes).map_err(|_| RumorError::Decode)
    }

    /// Merges `self` (incoming) into `old`: `Some(merged)` when it adds information.
    pub fn merge_into(&self, old: &Rumor) -> Option<Rumor> {
        match (self, old) {
            (Rumor::Member(n), Rumor::Member(o)) => (n.incarnation > o.incarnation).then(|| self.clone()),
            (Rumor::Service(n), Rumor::Service(o)) => (n.incarnation > o.incarnation).then(|| self.clone()),
            (Rumor::ServiceConfig(n), Rumor::ServiceConfig(o)) => {
                (n.incarnation > o.incarnation).then(|| self.clone())
            }
            (Rumor::ServiceFile(n), Rumor::ServiceFile(o)) => {
                (n.incarnation > o.incarnation).then(|| self.clone())
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

/// A rumor that changed the store.
#[derive(Debug, Clone)]
pub struct RumorEvent {
    pub rumor: Rumor,
    /// True when this supervisor injected it.
    pub local: bool,
}

/// Every rumor this member knows, with per-kind update counters (Habitat's `update_counter`).
pub struct RumorStore {
    rumors: BTreeMap<RumorKey, Rumor>,
    counters: [u64; 7],
    dirty: bool,
    events: broadcast::Sender<RumorEvent>,
}

impl Default for RumorStore {
    fn default() -> Self {
        RumorStore::new()
    }
}

impl RumorStore {
    pub fn new() -> Self {
        RumorStore {
            rumors: BTreeMap::new(),
            counters: [0; 7],
            dirty: false,
            events: broadcast::channel(1024).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RumorEvent> {
        self.events.subscribe()
    }

    /// Merges a rumor. Returns the stored value when it changed the store.
    pub fn merge(&mut self, rumor: Rumor, local: bool) -> Result<Option<Rumor>, RumorError> {
        let key = rumor.key();
        let stored = match self.rumors.get(&key) {
            Some(old) => match rumor.merge_into(old) {
                Some(merged) => merged,
                None => return Ok(None),
            },
            None if self.rumors.len() >= MAX_RUMORS => return Err(RumorError::Full),
            None => rumor,
        };
        self.counters[key.kind.index()] += 1;
        self.rumors.insert(key, stored.clone());
        self.dirty = true;
        let _ = self.events.send(RumorEvent { rumor: stored.clone(), local });
        Ok(Some(stored))
    }

    /// Would this rumor change the store?
    pub fn is_news(&self, rumor: &Rumor) -> bool {
        match self.rumors.get(&rumor.key()) {
            Some(old) => rumor.merge_into(old).is_some(),
            None => true,
        }
    }

    pub fn get(&self, key: &RumorKey) -> Option<&Rumor> {
        self.rumors.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rumor> {
        self.rumors.values()
    }

    pub fn of_kind(&self, kind: RumorKind) -> impl Iterator<Item = &Rumor> {
        self.rumors.iter().filter(move |(k, _)| k.kind == kind).map(|(_, v)| v)
    }

    pub fn count(&self, kind: RumorKind) -> usize {
        self.of_kind(kind).count()
    }

    pub fn len(&self) -> usize {
        self.rumors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rumors.is_empty()
    }

    pub fn counter(&self, kind: RumorKind) -> u64 {
        self.counters[kind.index()]
    }

    pub fn is_departed(&self, member_id: &str) -> bool {
        self.rumors.contains_key(&RumorKey {
            kind: RumorKind::Departure,
            a: member_id.to_string(),
            b: String::new(),
        })
    }

    /// Takes the "changed since last save" flag.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn snapshot(&self) -> Vec<u8> {
        proto::RumorSnapshot { rumors: self.rumors.values().map(Rumor::to_proto).collect() }.encode_to_vec()
    }

    /// Loads a saved snapshot, skipping entries that do not decode.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<usize, RumorError> {
        let snap = proto::RumorSnapshot::decode(bytes).map_err(|_| RumorError::Decode)?;
        let mut n = 0;
        for p in snap.rumors {
            if let Ok(Some(r)) = Rumor::from_proto(p)
                && self.merge(r, false).ok().flatten().is_some()
            {
                n += 1;
            }
        }
        self.dirty = false;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(inc: u64) -> Rumor {
        Rumor::Service(proto::ServiceRumor {
            member_id: "m1".into(),
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

    #[test]
    fn higher_incarnation_wins_and_stale_is_ignored() {
        let mut s = RumorStore::new();
        let mut rx = s.subscribe();
        assert!(s.merge(svc(2), true).unwrap().is_some());
        assert!(s.merge(svc(1), false).unwrap().is_none());
        assert!(s.merge(svc(2), false).unwrap().is_none());
        assert!(!s.is_news(&svc(2)));
        assert!(s.is_news(&svc(3)));
        assert!(s.merge(svc(3), false).unwrap().is_some());
        assert_eq!(s.counter(RumorKind::Service), 2);
        assert_eq!(s.len(), 1);
        assert!(rx.try_recv().unwrap().local);
        assert!(!rx.try_recv().unwrap().local);
    }

    #[test]
    fn election_merge_rules() {
        let mut s = RumorStore::new();
        s.merge(election(1, "a", 5, &["a"]), false).unwrap();
        // Same term, worse candidate: ignored; better candidate: wins.
        assert!(s.merge(election(1, "b", 1, &["b"]), false).unwrap().is_none());
        assert!(s.merge(election(1, "c", 9, &["c"]), false).unwrap().is_some());
        // Same candidate: votes are unioned.
        let merged = s.merge(election(1, "c", 9, &["a"]), false).unwrap().unwrap();
        match merged {
            Rumor::Election(e) => assert_eq!(e.votes, vec!["a".to_string(), "c".to_string()]),
            _ => panic!("wrong kind"),
        }
        assert!(s.merge(election(1, "c", 9, &["c"]), false).unwrap().is_none());
        // Lower term never wins, higher always does.
        assert!(s.merge(election(0, "z", 99, &[]), false).unwrap().is_none());
        assert!(s.merge(election(2, "a", 0, &[]), false).unwrap().is_some());
    }

    #[test]
    fn departure_is_permanent_and_snapshot_round_trips() {
        let mut s = RumorStore::new();
        let dep = Rumor::Departure(proto::DepartureRumor { member_id: "x".into() });
        assert!(s.merge(dep.clone(), false).unwrap().is_some());
        assert!(s.merge(dep, false).unwrap().is_none());
        assert!(s.is_departed("x"));
        s.merge(svc(4), false).unwrap();
        assert!(s.take_dirty());
        let snap = s.snapshot();
        let mut t = RumorStore::new();
        assert_eq!(t.restore(&snap).unwrap(), 2);
        assert!(t.is_departed("x"));
        assert!(!t.take_dirty());
        assert!(t.restore(&[0xff, 0xff]).is_err());
    }
}
