//! How this member sees the ring: one entry per member id, in Habitat's health terms.

use std::collections::{HashMap, HashSet};

use foca::State;

use super::RingCore;
use crate::ring::identity::{Ident, MemberId};
use crate::ring::rumor::{Rumor, RumorKind};

/// A member's health as Habitat names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Health {
    Alive,
    Suspect,
    Confirmed,
    Departed,
    /// Left gracefully (warren's own state; Habitat's views show it as Confirmed).
    Left,
}

impl Health {
    pub const ALL: [Health; 5] =
        [Health::Alive, Health::Suspect, Health::Confirmed, Health::Departed, Health::Left];
    pub fn label(self) -> &'static str {
        match self {
            Health::Alive => "alive",
            Health::Suspect => "suspect",
            Health::Confirmed => "confirmed",
            Health::Departed => "departed",
            Health::Left => "left",
        }
    }
}

/// One member as this supervisor sees it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub ident: Ident,
    /// generation + SWIM incarnation: grows on every refutation and every restart.
    pub incarnation: u64,
    pub health: Health,
}

impl RingCore {
    /// Every known member (latest generation of each id), ourselves included.
    pub fn members(&self) -> Vec<MemberView> {
        let mut by_id: HashMap<MemberId, MemberView> = HashMap::new();
        let (departed, left): (HashSet<String>, HashSet<String>) = self.with_store(|s| {
            let departed = s
                .of_kind(RumorKind::Departure)
                .filter_map(|r| match r {
                    Rumor::Departure(d) => Some(d.member_id.clone()),
                    _ => None,
                })
                .collect();
            let left = s
                .of_kind(RumorKind::Member)
                .filter_map(|r| match r {
                    Rumor::Member(m) if m.left => Some(m.id.clone()),
                    _ => None,
                })
                .collect();
            (departed, left)
        });
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            let health = if departed.contains(&id.id.to_string()) {
                Health::Departed
            } else {
                match m.state() {
                    State::Alive => Health::Alive,
                    State::Suspect => Health::Suspect,
                    State::Down if left.contains(&id.id.to_string()) => Health::Left,
                    State::Down => Health::Confirmed,
                }
            };
            let view = MemberView {
                ident: id.clone(),
                incarnation: u64::from(id.generation) + u64::from(m.incarnation()),
                health,
            };
            match by_id.get(&id.id) {
                Some(old) if old.ident.generation > id.generation => {}
                _ => {
                    by_id.insert(id.id, view);
                }
            }
        }
        by_id.insert(
            self.me.id,
            MemberView {
                ident: self.me.clone(),
                incarnation: self.incarnation(),
                health: if self.departed {
                    Health::Departed
                } else if self.left {
                    Health::Left
                } else {
                    Health::Alive
                },
            },
        );
        let mut v: Vec<MemberView> = by_id.into_values().collect();
        v.sort_by_key(|m| m.ident.id);
        v
    }
}

impl RingCore {
    /// Emits the changes foca does not notify: a suspect that refuted (alive again at a higher
    /// incarnation) and a member renamed to a new generation in another state. Without this the
    /// census kept such a member `suspect` until its next join or death (seen after healed
    /// partitions, where members renew their identities). It also fingerprints the whole
    /// membership, so the shell republishes its views when anything in it changed, events or
    /// not. Called from `tick`: one pass over the members per timer round, not per datagram.
    pub(super) fn notice_membership_changes(&mut self) {
        use std::hash::{Hash as _, Hasher as _};
        let mut latest: HashMap<MemberId, (u32, State)> = HashMap::new();
        let mut fingerprint = 0u64;
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            // Order-independent: foca reorders its list as members come and go.
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (id.id, id.addr, id.generation, m.incarnation(), m.state() as u8).hash(&mut h);
            fingerprint = fingerprint.wrapping_add(h.finish());
            match latest.get(&id.id) {
                Some((generation, _)) if *generation > id.generation => {}
                _ => {
                    latest.insert(id.id, (id.generation, m.state()));
                }
            }
        }
        self.membership_fingerprint = fingerprint;
        for (id, (_, state)) in latest {
            // Deaths are always notified (and told apart from leaving there); foca may still
            // list an old identity of our own.
            if state == State::Down || id == self.me.id || self.reported.get(&id) == Some(&state) {
                continue;
            }
            self.reported.insert(id, state);
            if state == State::Alive {
                tracing::info!(member = %id, "member alive (refuted its suspicion or rejoined renamed)");
                self.emit(super::Event::MemberUp(id));
            } else {
                tracing::debug!(member = %id, "member suspect (by gossip)");
                self.emit(super::Event::MemberSuspect(id));
            }
        }
    }

    /// Changes whenever any member's identity, incarnation or state does (as of the last tick):
    /// the shell republishes its views on a change.
    pub fn membership_fingerprint(&self) -> u64 {
        self.membership_fingerprint
    }
}
