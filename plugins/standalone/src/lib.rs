//! Every member runs standalone; no election is ever needed.

wit_bindgen::generate!({ path: "../../wit", world: "topology-policy" });
warren_plugin_guest::manifest!();

use exports::warren::plugin::topology::{Decision, Guest, Member, Role};

struct Standalone;

impl Guest for Standalone {
    fn name() -> String {
        "standalone".to_string()
    }

    fn decide(_group: String, members: Vec<Member>, _current_leader: Option<String>) -> Decision {
        Decision {
            election_needed: false,
            roles: members.into_iter().map(|m| (m.id, Role::Standalone)).collect(),
        }
    }
}

export!(Standalone);
