//! The host's side of the topology-policy contract, pure: the native types a `group-view` is
//! made of, and the checks a policy's answers must pass before the host uses them.

use std::collections::BTreeSet;

use super::bindings::{Decision, ElectionStatus, GroupView, TopologyHealth};
use crate::election::ElectionStatus as NativeStatus;
use crate::ring::Health;

/// Longest policy name accepted from `name()`.
pub const MAX_POLICY_NAME: usize = 64;
/// Longest piece of a plugin-chosen string quoted in an error.
const QUOTE: usize = 64;

impl From<Health> for TopologyHealth {
    fn from(h: Health) -> Self {
        match h {
            Health::Alive => TopologyHealth::Alive,
            Health::Suspect => TopologyHealth::Suspect,
            Health::Confirmed => TopologyHealth::Confirmed,
            Health::Departed => TopologyHealth::Departed,
            Health::Left => TopologyHealth::Left,
        }
    }
}

impl From<NativeStatus> for ElectionStatus {
    fn from(s: NativeStatus) -> Self {
        match s {
            NativeStatus::None => ElectionStatus::None,
            NativeStatus::ElectionInProgress => ElectionStatus::InProgress,
            NativeStatus::ElectionNoQuorum => ElectionStatus::NoQuorum,
            NativeStatus::ElectionFinished => ElectionStatus::Finished,
        }
    }
}

/// `s` cut to [`QUOTE`] characters, for an error message (a plugin chooses these strings).
fn quote(s: &str) -> String {
    match s.char_indices().nth(QUOTE) {
        Some((at, _)) => format!("{:?}…", &s[..at]),
        None => format!("{s:?}"),
    }
}

/// `name()` must be 1-64 characters of `[A-Za-z0-9._-]`: it is what `--topology` names and
/// what logs and errors show.
pub fn check_policy_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_POLICY_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        return Ok(());
    }
    Err(format!("name() must be 1-{MAX_POLICY_NAME} characters of [A-Za-z0-9._-], got {}", quote(name)))
}

/// A decision may give roles only to members of the view, each at most once.
pub fn check_decision(view: &GroupView, decision: &Decision) -> Result<(), String> {
    let members: BTreeSet<&str> = view.members.iter().map(|m| m.id.as_str()).collect();
    let mut seen = BTreeSet::new();
    for (id, _) in &decision.roles {
        if !members.contains(id.as_str()) {
            return Err(format!("a role for {}, which is not a member of group {}", quote(id), view.group));
        }
        if !seen.insert(id.as_str()) {
            return Err(format!("two roles for member {}", quote(id)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::bindings::{Member, Role};
    use super::*;

    fn view(ids: &[&str]) -> GroupView {
        GroupView {
            group: "redis.default".into(),
            self_id: ids[0].into(),
            members: ids
                .iter()
                .map(|id| Member { id: id.to_string(), health: TopologyHealth::Alive, suitability: 0 })
                .collect(),
            leader: None,
            term: 0,
            status: ElectionStatus::None,
            quorum: true,
            alive: ids.len() as u32,
            population: ids.len() as u32,
        }
    }

    fn roles(ids: &[&str]) -> Decision {
        Decision {
            election_needed: false,
            roles: ids.iter().map(|id| (id.to_string(), Role::None)).collect(),
        }
    }

    #[test]
    fn native_health_and_status_map_case_by_case() {
        let healths: Vec<TopologyHealth> = Health::ALL.into_iter().map(Into::into).collect();
        assert_eq!(
            healths,
            vec![
                TopologyHealth::Alive,
                TopologyHealth::Suspect,
                TopologyHealth::Confirmed,
                TopologyHealth::Departed,
                TopologyHealth::Left,
            ]
        );
        for (native, wit) in [
            (NativeStatus::None, ElectionStatus::None),
            (NativeStatus::ElectionInProgress, ElectionStatus::InProgress),
            (NativeStatus::ElectionNoQuorum, ElectionStatus::NoQuorum),
            (NativeStatus::ElectionFinished, ElectionStatus::Finished),
        ] {
            assert_eq!(ElectionStatus::from(native), wit);
        }
    }

    #[test]
    fn policy_names_are_short_plain_words() {
        assert!(check_policy_name("leader-follower").is_ok());
        assert!(check_policy_name("v2.policy_x").is_ok());
        assert!(check_policy_name("").is_err());
        assert!(check_policy_name("has space").is_err());
        assert!(check_policy_name("line\nbreak").is_err());
        let long = "x".repeat(MAX_POLICY_NAME + 1);
        let e = check_policy_name(&long).unwrap_err();
        assert!(e.len() < 200, "the error quotes a bounded piece: {e}");
    }

    #[test]
    fn roles_only_for_members_and_once_each() {
        let v = view(&["a", "b"]);
        assert!(check_decision(&v, &roles(&[])).is_ok());
        assert!(check_decision(&v, &roles(&["b", "a"])).is_ok());
        let e = check_decision(&v, &roles(&["a", "zz"])).unwrap_err();
        assert!(e.contains("\"zz\"") && e.contains("redis.default"), "{e}");
        let e = check_decision(&v, &roles(&["a", "a"])).unwrap_err();
        assert!(e.contains("two roles"), "{e}");
        let huge = "é".repeat(10_000);
        let e = check_decision(&v, &roles(&[huge.as_str()])).unwrap_err();
        assert!(e.len() < 400, "{}", e.len());
    }
}
