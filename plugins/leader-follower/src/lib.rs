//! One leader, the other alive members follow.
//!
//! * `election-needed` is true when there is no current leader or it is not an alive member.
//! * Roles are given for every member, in input order: the current leader is `leader` when it is
//!   alive; other alive members are `follower`; dead members (and a dead leader) are `none`.
//!   While an election is needed the alive members stay `follower` until the new leader is known.

wit_bindgen::generate!({ path: "../../wit", world: "topology-policy" });
warren_plugin_guest::manifest!();

use exports::warren::plugin::topology::{Decision, Guest, Member, Role};

struct LeaderFollower;

fn decide(members: Vec<Member>, current_leader: Option<String>) -> Decision {
    let leader_alive =
        current_leader.as_deref().is_some_and(|l| members.iter().any(|m| m.alive && m.id == l));
    let roles = members
        .into_iter()
        .map(|m| {
            let role = if !m.alive {
                Role::None
            } else if current_leader.as_deref() == Some(m.id.as_str()) {
                Role::Leader
            } else {
                Role::Follower
            };
            (m.id, role)
        })
        .collect();
    Decision { election_needed: !leader_alive, roles }
}

impl Guest for LeaderFollower {
    fn name() -> String {
        "leader-follower".to_string()
    }

    fn decide(_group: String, members: Vec<Member>, current_leader: Option<String>) -> Decision {
        decide(members, current_leader)
    }
}

export!(LeaderFollower);

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, alive: bool) -> Member {
        Member { id: id.into(), alive, suitability: 0 }
    }

    #[test]
    fn alive_leader() {
        let d = decide(vec![m("a", true), m("b", true), m("c", false)], Some("a".into()));
        assert!(!d.election_needed);
        assert_eq!(
            d.roles,
            vec![("a".into(), Role::Leader), ("b".into(), Role::Follower), ("c".into(), Role::None)]
        );
    }

    #[test]
    fn no_or_dead_leader() {
        let d = decide(vec![m("a", false), m("b", true)], Some("a".into()));
        assert!(d.election_needed);
        assert_eq!(d.roles, vec![("a".into(), Role::None), ("b".into(), Role::Follower)]);
        let d = decide(vec![m("a", true)], None);
        assert!(d.election_needed);
        let d = decide(vec![m("a", true)], Some("zz".into()));
        assert!(d.election_needed);
    }
}
