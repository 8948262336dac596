//! One leader, the other alive members follow; the host's native election picks the leader.
//!
//! * `election-needed` is always true: the host runs the group's election (and keeps it running
//!   until the service unloads, so the leader's death starts a new term). The policy never
//!   picks a leader itself.
//! * Roles, for every member in input order, only once the election has produced a leader this
//!   member can trust: `status` is `finished`, this member's view has `quorum`, and the leader
//!   is alive (`alive` or `suspect`: the ring has not confirmed it dead). Then the leader is
//!   `leader`, the other alive (or suspect) members are `follower`, and confirmed, departed and
//!   left members are `none`.
//! * Otherwise (no election finished yet, no quorum, or the leader is gone) every member is
//!   `none`: no service acts as the follower of an unknown leader, and leader-topology hooks
//!   wait for a finished election (Habitat's gate, from its #1742).

wit_bindgen::generate!({ path: "../../wit", world: "topology-policy" });
warren_plugin_guest::manifest!();

use exports::warren::plugin::topology::{Decision, ElectionStatus, GroupView, Guest, MemberHealth, Role};

struct LeaderFollower;

/// Not confirmed dead, departed or left.
fn is_alive(health: MemberHealth) -> bool {
    matches!(health, MemberHealth::Alive | MemberHealth::Suspect)
}

fn decide(view: GroupView) -> Decision {
    let trusted_leader = match (&view.leader, view.status, view.quorum) {
        (Some(l), ElectionStatus::Finished, true)
            if view.members.iter().any(|m| &m.id == l && is_alive(m.health)) =>
        {
            Some(l.clone())
        }
        _ => None,
    };
    let roles = view
        .members
        .into_iter()
        .map(|m| {
            let role = match &trusted_leader {
                None => Role::None,
                Some(l) if *l == m.id => Role::Leader,
                Some(_) if is_alive(m.health) => Role::Follower,
                Some(_) => Role::None,
            };
            (m.id, role)
        })
        .collect();
    Decision { election_needed: true, roles }
}

impl Guest for LeaderFollower {
    fn name() -> String {
        "leader-follower".to_string()
    }

    fn decide(view: GroupView) -> Decision {
        decide(view)
    }
}

export!(LeaderFollower);

#[cfg(test)]
mod tests {
    use super::exports::warren::plugin::topology::Member;
    use super::*;

    fn m(id: &str, health: MemberHealth) -> Member {
        Member { id: id.into(), health, suitability: 0 }
    }

    fn view(leader: Option<&str>, status: ElectionStatus, quorum: bool) -> GroupView {
        GroupView {
            group: "redis.default".into(),
            self_id: "b".into(),
            members: vec![
                m("a", MemberHealth::Alive),
                m("b", MemberHealth::Suspect),
                m("c", MemberHealth::Confirmed),
                m("d", MemberHealth::Departed),
                m("e", MemberHealth::Left),
            ],
            leader: leader.map(Into::into),
            term: 3,
            status,
            quorum,
            alive: 2,
            population: 3,
        }
    }

    fn roles(d: &Decision) -> Vec<(&str, Role)> {
        d.roles.iter().map(|(id, r)| (id.as_str(), *r)).collect()
    }

    fn all_none(d: &Decision) -> bool {
        d.roles.len() == 5 && d.roles.iter().all(|(_, r)| *r == Role::None)
    }

    #[test]
    fn a_finished_election_with_quorum_and_a_live_leader_gives_roles() {
        let d = decide(view(Some("a"), ElectionStatus::Finished, true));
        assert!(d.election_needed);
        assert_eq!(
            roles(&d),
            vec![
                ("a", Role::Leader),
                ("b", Role::Follower),
                ("c", Role::None),
                ("d", Role::None),
                ("e", Role::None),
            ]
        );
        // A suspect leader is still the leader: the ring has not confirmed it dead.
        let d = decide(view(Some("b"), ElectionStatus::Finished, true));
        assert_eq!(roles(&d)[..2], [("a", Role::Follower), ("b", Role::Leader)]);
    }

    #[test]
    fn no_roles_until_an_election_finished_with_quorum() {
        for status in [ElectionStatus::None, ElectionStatus::InProgress, ElectionStatus::NoQuorum] {
            let d = decide(view(Some("a"), status, true));
            assert!(d.election_needed);
            assert!(all_none(&d), "{status:?}: {:?}", roles(&d));
        }
        assert!(all_none(&decide(view(None, ElectionStatus::None, true))));
        assert!(all_none(&decide(view(Some("a"), ElectionStatus::Finished, false))));
        assert!(all_none(&decide(view(None, ElectionStatus::Finished, true))));
    }

    #[test]
    fn a_gone_or_unknown_leader_gives_nobody_a_role() {
        for gone in ["c", "d", "e", "zz"] {
            let d = decide(view(Some(gone), ElectionStatus::Finished, true));
            assert!(d.election_needed);
            assert!(all_none(&d), "leader {gone}: {:?}", roles(&d));
        }
    }

    #[test]
    fn the_name_is_what_svc_load_topology_selects() {
        assert_eq!(<LeaderFollower as Guest>::name(), "leader-follower");
    }
}
