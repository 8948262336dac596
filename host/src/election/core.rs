//! The per-group state machine: events in, rumors to publish and view changes out. No I/O,
//! no clock: time is the count of `tick` calls.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::quorum::{MemberHealth, Quorum, count};
use super::types::{DeadMemberRule, ElectionConfig, ElectionStatus, ElectionView, Reason, Vote};
use crate::ring::proto::{ElectionRumor, ElectionStatus as WireStatus};
use crate::ring::{Health, Rumor};

/// Longest member id and most votes a received rumor may carry; beyond them it is rejected.
const MAX_ID_LEN: usize = 128;
const MAX_VOTES: usize = 4096;
/// Highest term accepted from others: far beyond any real group (terms only grow by one).
pub const MAX_TERM: u64 = u64::MAX >> 1;

/// What one event produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outputs {
    /// Rumors to hand to the ring (as `Rumor::Election` or `Rumor::ElectionUpdate`).
    pub rumors: Vec<ElectionRumor>,
    /// The new view, when it changed (status, term, leader or reason).
    pub changed: Option<ElectionView>,
}

/// Why a received rumor was refused (counted; never a panic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RumorRejected {
    #[error("election rumor for group {0:?}, not this group")]
    OtherGroup(String),
    #[error("election rumor has no or an oversize candidate id")]
    BadCandidate,
    #[error("election rumor has an empty, oversize or too many votes")]
    BadVotes,
    #[error("election rumor has unknown status {0}")]
    BadStatus(i32),
    #[error("election rumor has term {0}, over the {MAX_TERM} limit")]
    BadTerm(u64),
}

/// One service group's election on one member.
pub struct GroupElection {
    me: String,
    group: String,
    cfg: ElectionConfig,
    suitability: u64,
    now: u64,
    members: BTreeMap<String, MemberHealth>,
    /// The group's rumor as the ring store holds it (same merge rules).
    cur: Option<Arc<ElectionRumor>>,
    vote: Option<Vote>,
    /// Without a restored vote record: no vote in a term up to this one (seen while settling).
    floor: Option<u64>,
    restored: bool,
    /// Suitabilities seen in rumors, to rank members for starting a term.
    suits: BTreeMap<String, u64>,
    /// Highest term this member saw finished.
    finished_term: Option<u64>,
    progress_at: u64,
    need_since: Option<u64>,
    /// The term in which this member was leader and stepped down for lack of quorum.
    stepped_down: Option<u64>,
    view: ElectionView,
    rejected: u64,
    /// Bumped on every health change; with `now` it keys the cached count.
    members_version: u64,
    counted: Option<(u64, u64, Quorum)>,
}

impl GroupElection {
    /// `restored`: the vote record the shell persisted before a restart, if any.
    pub fn new(me: &str, group: &str, suitability: u64, cfg: ElectionConfig, restored: Option<Vote>) -> Self {
        GroupElection {
            me: me.to_string(),
            group: group.to_string(),
            cfg,
            suitability,
            now: 0,
            members: BTreeMap::new(),
            cur: None,
            restored: restored.is_some(),
            vote: restored,
            floor: None,
            suits: BTreeMap::new(),
            finished_term: None,
            progress_at: 0,
            need_since: None,
            stepped_down: None,
            view: ElectionView::initial(),
            rejected: 0,
            members_version: 0,
            counted: None,
        }
    }

    pub fn view(&self) -> &ElectionView {
        &self.view
    }

    /// The vote to persist before the published rumors leave this member.
    pub fn vote(&self) -> Option<&Vote> {
        self.vote.as_ref()
    }

    /// The group's rumor as this member holds it.
    pub fn rumor(&self) -> Option<&ElectionRumor> {
        self.cur.as_deref()
    }

    /// Received rumors refused so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// The ring's health of a member that runs this group (Departed and Left stop counting).
    pub fn member_health(&mut self, id: &str, health: Health) -> Outputs {
        self.set_health(id, health);
        self.step()
    }

    /// Several changes the ring saw at once, applied before deciding: a member that learns of
    /// a departure and of a join in one push-pull must not count the group in between.
    pub fn members_changed<'a>(&mut self, changes: impl IntoIterator<Item = (&'a str, Health)>) -> Outputs {
        for (id, health) in changes {
            self.set_health(id, health);
        }
        self.step()
    }

    fn set_health(&mut self, id: &str, health: Health) {
        if id != self.me {
            let now = self.now;
            let entry = self.members.entry(id.to_string()).or_insert(MemberHealth { health, since: now });
            if entry.health != health {
                *entry = MemberHealth { health, since: now };
            }
            self.members_version += 1;
        }
    }

    /// The member no longer runs this group (its service rumor is gone).
    pub fn member_removed(&mut self, id: &str) -> Outputs {
        self.members.remove(id);
        self.members_version += 1;
        self.step()
    }

    /// Used for the next candidacy this member starts (Habitat reads it at election start).
    pub fn set_suitability(&mut self, suitability: u64) -> Outputs {
        self.suitability = suitability;
        self.step()
    }

    pub fn tick(&mut self) -> Outputs {
        self.now += 1;
        self.step()
    }

    /// A rumor for this group arrived (from the ring, after or instead of its store merge).
    pub fn rumor_received(&mut self, r: &ElectionRumor) -> Result<Outputs, RumorRejected> {
        if let Err(e) = self.validate(r) {
            self.rejected += 1;
            return Err(e);
        }
        if !self.restored && self.settling() {
            self.floor = Some(self.floor.map_or(r.term, |f| f.max(r.term)));
        }
        // Only current rumors say what a member's suitability is now (old terms linger in gossip).
        let current = self.cur.as_ref().is_none_or(|c| r.term >= c.term);
        if current && self.suits.get(&r.member_id) != Some(&r.suitability) {
            self.suits.insert(r.member_id.clone(), r.suitability);
        }
        self.absorb(r);
        Ok(self.step())
    }

    fn validate(&self, r: &ElectionRumor) -> Result<(), RumorRejected> {
        if r.service_group != self.group {
            return Err(RumorRejected::OtherGroup(r.service_group.chars().take(MAX_ID_LEN).collect()));
        }
        if r.term > MAX_TERM {
            return Err(RumorRejected::BadTerm(r.term));
        }
        if r.member_id.is_empty() || r.member_id.len() > MAX_ID_LEN {
            return Err(RumorRejected::BadCandidate);
        }
        if r.votes.len() > MAX_VOTES || r.votes.iter().any(|v| v.is_empty() || v.len() > MAX_ID_LEN) {
            return Err(RumorRejected::BadVotes);
        }
        WireStatus::try_from(r.status).map_err(|_| RumorRejected::BadStatus(r.status)).map(|_| ())
    }

    /// Merges by the ring's own rules, so this copy matches the ring store's.
    fn absorb(&mut self, r: &ElectionRumor) -> bool {
        let merged = match self.cur.as_deref() {
            None => Some(r.clone()),
            // Most gossip is an older term or a copy of what we hold (the same candidate, no
            // new vote, no newer status): skip the merge, which would only clone to say so.
            Some(old)
                if r.term < old.term
                    || (r.term == old.term
                        && r.member_id == old.member_id
                        && r.status <= old.status
                        && r.votes.iter().all(|v| old.votes.contains(v))) =>
            {
                None
            }
            Some(old) => match Rumor::Election(r.clone()).merge_into(&Rumor::Election(old.clone())) {
                Some(Rumor::Election(m)) => Some(m),
                _ => None,
            },
        };
        let Some(m) = merged else { return false };
        if self.cur.as_ref().map(|c| c.term) != Some(m.term) {
            self.need_since = None;
        }
        if m.status == WireStatus::ElectionFinished as i32 {
            self.finished_term = Some(self.finished_term.map_or(m.term, |t| t.max(m.term)));
        }
        self.cur = Some(Arc::new(m));
        self.progress_at = self.now;
        true
    }

    fn publish(&mut self, r: ElectionRumor, out: &mut Outputs) {
        self.absorb(&r);
        out.rumors.push(r);
    }

    fn settling(&self) -> bool {
        self.now < self.cfg.settle_ticks
    }

    fn can_vote(&self, term: u64) -> bool {
        (self.restored || !self.settling())
            && self.vote.as_ref().is_none_or(|v| v.term < term)
            && self.floor.is_none_or(|f| term > f)
    }

    /// 0 for the best alive member (suitability as last seen in its rumors, then id).
    fn rank(&self, q: &Quorum) -> usize {
        let key = |id: &String| {
            let s = if *id == self.me { self.suitability } else { self.suits.get(id).copied().unwrap_or(0) };
            (s, id.clone())
        };
        let mine = key(&self.me);
        q.alive.iter().filter(|id| key(id) > mine).count()
    }

    /// 0..stagger_ticks, from the member id and the term (FNV-1a: stable across builds).
    fn jitter(&self, term: u64) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.me.bytes().chain(term.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h % self.cfg.stagger_ticks.max(1)
    }

    fn step(&mut self) -> Outputs {
        let mut out = Outputs::default();
        let q = match self.counted.take() {
            // Only the grace rule depends on the clock.
            Some((v, now, q))
                if v == self.members_version
                    && (now == self.now || self.cfg.dead_rule == DeadMemberRule::CountUntilDeparted) =>
            {
                q
            }
            _ => count(&self.me, &self.members, self.cfg.dead_rule, self.now),
        };
        let cur = self.cur.clone();
        let (status, term, leader_id, reason) = match cur.as_deref() {
            None => self.no_election(&q, &mut out),
            Some(c) if c.status == WireStatus::ElectionFinished as i32 => self.finished(c, &q, &mut out),
            Some(c) => self.running(c, &q, &mut out),
        };
        let view = ElectionView {
            status,
            term,
            leader_id,
            reason,
            warning: q.warning(),
            alive: q.alive.len(),
            population: q.population.len(),
        };
        self.counted = Some((self.members_version, self.now, q));
        if view != self.view {
            self.view = view.clone();
            out.changed = Some(view);
        }
        out
    }

    fn no_quorum(q: &Quorum) -> Reason {
        Reason::NoQuorum {
            alive: q.alive.len(),
            population: q.population.len(),
            counted_dead: q.counted_dead.clone(),
        }
    }

    /// No rumor known: after settling, the best-ranked member starts term 0 first.
    fn no_election(
        &mut self,
        q: &Quorum,
        out: &mut Outputs,
    ) -> (ElectionStatus, u64, Option<String>, Reason) {
        let wait = self.cfg.settle_ticks + self.rank(q) as u64 * self.cfg.stagger_ticks;
        if self.now < wait {
            return (ElectionStatus::None, 0, None, Reason::Settling);
        }
        let members = q.population.len();
        if members < self.cfg.min_members {
            return (ElectionStatus::None, 0, None, Reason::TooFew { members, need: self.cfg.min_members });
        }
        self.new_term(0, Reason::Started, out)
    }

    fn finished(
        &mut self,
        c: &ElectionRumor,
        q: &Quorum,
        out: &mut Outputs,
    ) -> (ElectionStatus, u64, Option<String>, Reason) {
        let t = c.term;
        if c.member_id == self.me {
            if !q.has() {
                self.stepped_down = Some(t);
                let reason = Reason::LostQuorum { alive: q.alive.len(), population: q.population.len() };
                return (ElectionStatus::ElectionNoQuorum, t, None, reason);
            }
            if self.stepped_down == Some(t) {
                // Others may have moved on while this side had no majority: start afresh.
                return self.new_term(t.saturating_add(1), Reason::RegainedQuorum, out);
            }
            return (
                ElectionStatus::ElectionFinished,
                t,
                Some(c.member_id.clone()),
                Reason::Elected { leader: c.member_id.clone() },
            );
        }
        let health = self.members.get(&c.member_id).map(|m| m.health);
        match health {
            Some(Health::Alive | Health::Suspect) if q.has() => {
                self.need_since = None;
                (
                    ElectionStatus::ElectionFinished,
                    t,
                    Some(c.member_id.clone()),
                    Reason::Elected { leader: c.member_id.clone() },
                )
            }
            Some(Health::Alive | Health::Suspect) => {
                (ElectionStatus::ElectionNoQuorum, t, None, Self::no_quorum(q))
            }
            // A joiner may hear the election before the ring tells it who the leader is.
            None if self.settling() => (ElectionStatus::ElectionInProgress, t, None, Reason::Settling),
            // Confirmed, departed, left, or unknown to the ring (Habitat: unknown = departed).
            _ => self.need_new_term(t, q, Reason::LeaderGone { leader: c.member_id.clone(), health }, out),
        }
    }

    fn running(
        &mut self,
        c: &ElectionRumor,
        q: &Quorum,
        out: &mut Outputs,
    ) -> (ElectionStatus, u64, Option<String>, Reason) {
        let t = c.term;
        let stalled = self.now.saturating_sub(self.progress_at);
        // A same-term rumor that replaced a finished one can never finish (its voters are spent).
        if self.finished_term.is_some_and(|f| f >= t) {
            return self.need_new_term(t, q, Reason::Stuck { ticks: stalled }, out);
        }
        let waiting = if c.member_id == self.me {
            let missing: Vec<String> = q.alive.iter().filter(|id| !c.votes.contains(id)).cloned().collect();
            if q.has() && missing.is_empty() {
                let mut done = c.clone();
                done.status = WireStatus::ElectionFinished as i32;
                done.from_id = self.me.clone();
                self.publish(done, out);
                self.need_since = None;
                return (
                    ElectionStatus::ElectionFinished,
                    t,
                    Some(self.me.clone()),
                    Reason::Elected { leader: self.me.clone() },
                );
            }
            if !q.has() && c.status == WireStatus::ElectionRunning as i32 {
                let mut nq = c.clone();
                nq.status = WireStatus::ElectionNoQuorum as i32;
                nq.from_id = self.me.clone();
                self.publish(nq, out);
            }
            Reason::WaitingForVotes { missing }
        } else {
            let health = self.members.get(&c.member_id).map(|m| m.health);
            if matches!(health, Some(Health::Confirmed | Health::Departed | Health::Left)) {
                return self.need_new_term(
                    t,
                    q,
                    Reason::CandidateGone { candidate: c.member_id.clone() },
                    out,
                );
            }
            if self.can_vote(t) {
                let mut v = c.clone();
                v.votes.push(self.me.clone());
                v.votes.sort();
                v.votes.dedup();
                v.from_id = self.me.clone();
                self.vote = Some(Vote { term: t, candidate: c.member_id.clone() });
                self.publish(v, out);
                Reason::Voted { candidate: c.member_id.clone() }
            } else if self.vote.as_ref().is_some_and(|v| v.term == t && v.candidate == c.member_id) {
                Reason::Voted { candidate: c.member_id.clone() }
            } else {
                Reason::VotedOther { candidate: c.member_id.clone() }
            }
        };
        if !q.has() {
            return (ElectionStatus::ElectionNoQuorum, t, None, Self::no_quorum(q));
        }
        let stalled = self.now.saturating_sub(self.progress_at);
        if stalled >= self.cfg.stuck_ticks {
            return self.need_new_term(t, q, Reason::Stuck { ticks: stalled }, out);
        }
        (ElectionStatus::ElectionInProgress, t, None, waiting)
    }

    /// A term after `t` is needed: only a side with quorum starts one (a minority would only
    /// inflate terms), and lower-ranked members wait their turn.
    fn need_new_term(
        &mut self,
        t: u64,
        q: &Quorum,
        why: Reason,
        out: &mut Outputs,
    ) -> (ElectionStatus, u64, Option<String>, Reason) {
        if !q.has() {
            return (ElectionStatus::ElectionNoQuorum, t, None, Self::no_quorum(q));
        }
        let since = *self.need_since.get_or_insert(self.now);
        let rank = self.rank(q);
        // Plus a per-member, per-term offset: two members that rank alike (views differ for a
        // moment) do not fire together term after term.
        let wait = rank as u64 * self.cfg.stagger_ticks + self.jitter(t);
        let waited = self.now - since;
        if waited < wait {
            return (
                ElectionStatus::ElectionInProgress,
                t,
                None,
                Reason::Deferring { rank, ticks_left: wait - waited },
            );
        }
        self.new_term(t.saturating_add(1), why, out)
    }

    /// Starts a candidacy at the first term >= `min` this member may vote in.
    fn new_term(
        &mut self,
        min: u64,
        why: Reason,
        out: &mut Outputs,
    ) -> (ElectionStatus, u64, Option<String>, Reason) {
        let mut term = min;
        if let Some(v) = &self.vote {
            term = term.max(v.term.saturating_add(1));
        }
        if let Some(f) = self.floor {
            term = term.max(f.saturating_add(1));
        }
        self.vote = Some(Vote { term, candidate: self.me.clone() });
        self.need_since = None;
        let r = ElectionRumor {
            from_id: self.me.clone(),
            member_id: self.me.clone(),
            service_group: self.group.clone(),
            term,
            suitability: self.suitability,
            status: WireStatus::ElectionRunning as i32,
            votes: vec![self.me.clone()],
        };
        self.publish(r, out);
        (ElectionStatus::ElectionInProgress, term, None, why)
    }
}
