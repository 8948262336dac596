//! Every member runs standalone; no election is ever needed, whatever the view says.

wit_bindgen::generate!({ path: "../../wit", world: "topology-policy" });
warren_plugin_guest::manifest!();

use exports::warren::plugin::topology::{Decision, GroupView, Guest, Role};

struct Standalone;

fn decide(view: GroupView) -> Decision {
    Decision {
        election_needed: false,
        roles: view.members.into_iter().map(|m| (m.id, Role::Standalone)).collect(),
    }
}

impl Guest for Standalone {
    fn name() -> String {
        "standalone".to_string()
    }

    fn decide(view: GroupView) -> Decision {
        decide(view)
    }
}

export!(Standalone);

#[cfg(test)]
mod tests {
    use super::exports::warren::plugin::topology::{ElectionStatus, Member, MemberHealth};
    use super::*;

    #[test]
    fn everyone_standalone_and_never_an_election() {
        let m = |id: &str, health| Member { id: id.into(), health, suitability: 5 };
        let view = GroupView {
            group: "web.default".into(),
            self_id: "a".into(),
            members: vec![m("a", MemberHealth::Alive), m("b", MemberHealth::Confirmed)],
            leader: Some("b".into()),
            term: 9,
            status: ElectionStatus::Finished,
            quorum: false,
            alive: 1,
            population: 2,
        };
        let d = decide(view);
        assert!(!d.election_needed);
        assert_eq!(d.roles, vec![("a".to_string(), Role::Standalone), ("b".to_string(), Role::Standalone)]);
        assert_eq!(<Standalone as Guest>::name(), "standalone");
    }
}
