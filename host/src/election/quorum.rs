//! Population, electorate and quorum of one group as one member sees it.

use std::collections::BTreeMap;

use super::types::{DeadMemberRule, Warning};
use crate::ring::Health;

/// How the ring sees one group member, and since which tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberHealth {
    pub health: Health,
    pub since: u64,
}

/// The result of counting: who counts, who may vote, and whether that is a majority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    /// Members counted in the denominator, this member included (sorted).
    pub population: Vec<String>,
    /// The electorate: counted members the ring sees Alive, this member included (sorted).
    pub alive: Vec<String>,
    /// Confirmed members that still count (the dead-member rule), so the view can name them.
    pub counted_dead: Vec<String>,
}

impl Quorum {
    /// Habitat's rule: alive > population / 2 (integer division).
    pub fn has(&self) -> bool {
        self.alive.len() > self.population.len() / 2
    }

    pub fn warning(&self) -> Option<Warning> {
        match self.population.len() {
            n if n < 3 => Some(Warning::Small(n)),
            n if n % 2 == 0 => Some(Warning::Even(n)),
            _ => None,
        }
    }
}

/// Counts the group: `me` is always alive; departed and left members never count (they said
/// so themselves, or an operator did); suspects count but do not vote; confirmed members per
/// `rule`.
pub fn count(me: &str, members: &BTreeMap<String, MemberHealth>, rule: DeadMemberRule, now: u64) -> Quorum {
    let mut q =
        Quorum { population: vec![me.to_string()], alive: vec![me.to_string()], counted_dead: vec![] };
    for (id, m) in members {
        if id == me {
            continue;
        }
        match m.health {
            Health::Alive => {
                q.population.push(id.clone());
                q.alive.push(id.clone());
            }
            Health::Suspect => q.population.push(id.clone()),
            Health::Confirmed => {
                let counts = match rule {
                    DeadMemberRule::CountUntilDeparted => true,
                    DeadMemberRule::ExcludeAfter { ticks } => now.saturating_sub(m.since) < ticks,
                };
                if counts {
                    q.population.push(id.clone());
                    q.counted_dead.push(id.clone());
                }
            }
            Health::Departed | Health::Left => {}
        }
    }
    q.population.sort();
    q.alive.sort();
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(h: Health, since: u64) -> MemberHealth {
        MemberHealth { health: h, since }
    }

    #[test]
    fn habitat_arithmetic_and_dead_rules() {
        let mut ms = BTreeMap::new();
        ms.insert("b".to_string(), m(Health::Alive, 0));
        ms.insert("c".to_string(), m(Health::Confirmed, 10));
        ms.insert("d".to_string(), m(Health::Confirmed, 10));
        ms.insert("e".to_string(), m(Health::Departed, 0));
        ms.insert("f".to_string(), m(Health::Suspect, 0));
        // a, b alive; c, d, f count: 2 of 5 is no quorum.
        let q = count("a", &ms, DeadMemberRule::CountUntilDeparted, 100);
        assert_eq!(q.population.len(), 5);
        assert_eq!(q.alive, vec!["a", "b"]);
        assert_eq!(q.counted_dead, vec!["c", "d"]);
        assert!(!q.has());
        // After 50 ticks c and d no longer count: 2 of 3.
        let q = count("a", &ms, DeadMemberRule::ExcludeAfter { ticks: 50 }, 59);
        assert!(!q.has());
        let q = count("a", &ms, DeadMemberRule::ExcludeAfter { ticks: 50 }, 60);
        assert_eq!(q.population, vec!["a", "b", "f"]);
        assert!(q.has());
        assert_eq!(q.warning(), None);
    }

    #[test]
    fn small_and_even_groups_warn() {
        let mut ms = BTreeMap::new();
        assert_eq!(count("a", &ms, DeadMemberRule::CountUntilDeparted, 0).warning(), Some(Warning::Small(1)));
        assert!(count("a", &ms, DeadMemberRule::CountUntilDeparted, 0).has());
        ms.insert("b".to_string(), m(Health::Suspect, 0));
        let q = count("a", &ms, DeadMemberRule::CountUntilDeparted, 0);
        assert_eq!(q.warning(), Some(Warning::Small(2)));
        assert!(!q.has(), "1 of 2 is not a majority");
        ms.insert("c".to_string(), m(Health::Alive, 0));
        ms.insert("d".to_string(), m(Health::Alive, 0));
        assert_eq!(count("a", &ms, DeadMemberRule::CountUntilDeparted, 0).warning(), Some(Warning::Even(4)));
    }
}
