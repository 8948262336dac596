//! Topology policies and roles. A service loaded with `--topology NAME` has a policy plugin
//! that decides, from one member's view of the group (the census and this member's election),
//! whether the group needs the native election and which role each member plays. Pure: the
//! manager feeds census and election views in and applies what comes out.
//!
//! Habitat's gate (#1742): a service with a policy starts only once the policy gives this
//! member a role, and while the group's election is not finished its hooks are held, so no
//! reconfigure ever runs in an interim state; the role of the last finished election stays in
//! its templates until the next one finishes.

use serde_json::{Value, json};

use crate::election::{ElectionStatus, ElectionView};
use crate::groups::census::Census;
use crate::plugins::{
    Decision, ElectionStatus as PolicyStatus, GroupView, Member, Role, TopologyHandle, TopologyHealth,
};
use crate::ring::Health;

/// One service's policy and what it last decided.
pub struct ServiceRole {
    /// The group across the ring (`NAME.GROUP[@ORG]`).
    pub group: String,
    pub policy: TopologyHandle,
    /// The latest decision the policy gave (kept when a later call fails).
    pub decision: Option<Decision>,
    /// Whether a decision ever asked for the election (it then runs until the unload).
    pub elect: bool,
    /// Started down, waiting for a role.
    pub gated: bool,
    /// The role and leader the templates last rendered with.
    pub applied: Option<(Role, Option<String>)>,
    /// This member's suitability (its suitability hook's answer; 0 until it runs).
    pub suitability: u64,
    /// The policy's last call failed (reported once per failure streak).
    pub failing: bool,
}

impl ServiceRole {
    pub fn new(group: String, policy: TopologyHandle) -> ServiceRole {
        ServiceRole {
            group,
            policy,
            decision: None,
            elect: false,
            gated: false,
            applied: None,
            suitability: 0,
            failing: false,
        }
    }

    /// This member's role in the latest decision (`None` when not listed).
    pub fn role(&self, me: &str) -> Role {
        role_of(self.decision.as_ref(), me)
    }

    /// The member the latest decision made leader.
    pub fn leader(&self) -> Option<String> {
        leader_of(self.decision.as_ref())
    }

    /// Asks the policy again. A failure keeps the last decision; it is logged once per streak
    /// (the plugin registry counts every fault).
    pub fn decide(&mut self, view: &GroupView) {
        match self.policy.decide(view) {
            Ok(d) => {
                if self.failing {
                    tracing::info!(group = %self.group, policy = self.policy.loaded_name(), "topology policy answers again");
                }
                self.failing = false;
                self.elect |= d.election_needed;
                self.decision = Some(d);
            }
            Err(e) => {
                if !self.failing {
                    tracing::error!(group = %self.group, policy = self.policy.loaded_name(), error = %e, "topology policy failed; keeping its last decision");
                }
                self.failing = true;
            }
        }
    }
}

fn role_of(d: Option<&Decision>, me: &str) -> Role {
    d.and_then(|d| d.roles.iter().find(|(id, _)| id == me).map(|(_, r)| *r)).unwrap_or(Role::None)
}

fn leader_of(d: Option<&Decision>) -> Option<String> {
    d.and_then(|d| d.roles.iter().find(|(_, r)| *r == Role::Leader).map(|(id, _)| id.clone()))
}

/// The group as this member sees it, for the policy: the census's members (this one always
/// included, alive), and this member's election when it runs one.
pub fn group_view(
    census: &Census,
    group: &str,
    me: &str,
    election: Option<&ElectionView>,
    suitability: u64,
) -> GroupView {
    let rumor = census.group(group).and_then(|g| g.election.as_ref());
    let mut members: Vec<Member> = census
        .group(group)
        .map(|g| {
            g.members
                .keys()
                .filter(|id| id.as_str() != me)
                .map(|id| Member {
                    id: id.clone(),
                    // Unknown to the ring (a restored member list): dead until it says otherwise.
                    health: census.member(id).map_or(Health::Confirmed, |m| m.health).into(),
                    suitability: rumor.filter(|r| r.member_id == *id).map_or(0, |r| r.suitability),
                })
                .collect()
        })
        .unwrap_or_default();
    members.push(Member { id: me.to_string(), health: TopologyHealth::Alive, suitability });
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let counted = |m: &&Member| !matches!(m.health, TopologyHealth::Departed | TopologyHealth::Left);
    let (status, term, leader, alive, population) = match election {
        Some(v) => (v.status.into(), v.term, v.leader_id.clone(), v.alive, v.population),
        None => (
            PolicyStatus::None,
            0,
            None,
            members.iter().filter(counted).filter(|m| m.health == TopologyHealth::Alive).count(),
            members.iter().filter(counted).count(),
        ),
    };
    GroupView {
        group: group.to_string(),
        self_id: me.to_string(),
        members,
        leader,
        term,
        status,
        quorum: alive > population / 2,
        alive: u32::try_from(alive).unwrap_or(u32::MAX),
        population: u32::try_from(population).unwrap_or(u32::MAX),
    }
}

/// What templates see of the group beside Habitat's `svc.service` / `svc.group`: `svc.me`
/// (with `leader` / `follower` from this member's role), `svc.leader`, `svc.members`,
/// `svc.role` and `svc.election_is_running` / `_no_quorum` / `_finished`.
pub fn svc_data(
    census: Option<&Census>,
    group: &str,
    me: &str,
    applied: Option<&(Role, Option<String>)>,
    election: Option<&ElectionView>,
) -> serde_json::Map<String, Value> {
    let (role, leader) = applied.cloned().unwrap_or((Role::None, None));
    let grp = census.and_then(|c| Some((c, c.group(group)?)));
    let member = |id: &str| -> Option<Value> {
        let (c, g) = grp?;
        let s = g.members.get(id)?;
        let mut m = c.member_json(g, s);
        m["leader"] = json!(leader.as_deref() == Some(id));
        m["follower"] = json!(leader.is_some() && leader.as_deref() != Some(id) && m["alive"] == true);
        Some(m)
    };
    let mut me_json = member(me).unwrap_or_else(|| json!({ "member_id": me }));
    me_json["leader"] = json!(role == Role::Leader);
    me_json["follower"] = json!(role == Role::Follower);
    let members: Vec<Value> =
        grp.map(|(_, g)| g.members.keys().filter_map(|id| member(id)).collect()).unwrap_or_default();
    let status = election.map(|v| v.status);
    let mut out = serde_json::Map::new();
    // The leader's own Service rumor may not be in the census yet (it is told once a second):
    // its id is known all the same.
    let leader_json = leader.as_deref().map(|l| match member(l) {
        Some(m) => m,
        None if l == me => me_json.clone(),
        None => json!({ "member_id": l, "leader": true }),
    });
    out.insert("leader".into(), leader_json.unwrap_or(Value::Null));
    out.insert("me".into(), me_json);
    out.insert("members".into(), Value::Array(members));
    out.insert("role".into(), json!(role_label(role)));
    out.insert("election_is_running".into(), json!(status == Some(ElectionStatus::ElectionInProgress)));
    out.insert("election_is_no_quorum".into(), json!(status == Some(ElectionStatus::ElectionNoQuorum)));
    out.insert("election_is_finished".into(), json!(status == Some(ElectionStatus::ElectionFinished)));
    out
}

/// As templates (`svc.role`), logs and `svc status` name it.
pub fn role_label(r: Role) -> &'static str {
    match r {
        Role::Standalone => "standalone",
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::core::Origin;
    use crate::ring::proto;
    use crate::ring::{Event, MemberId, Rumor};

    fn id(i: u8) -> String {
        MemberId([i; 16]).to_string()
    }

    fn census() -> Census {
        let mut c = Census::new(&id(1));
        for i in 1..=3u8 {
            c.apply(&Event::MemberUp(MemberId([i; 16])));
            c.apply(&Event::RumorChanged {
                rumor: Rumor::Service(proto::ServiceRumor {
                    member_id: id(i),
                    service_group: "db.default".into(),
                    incarnation: 1,
                    cfg: format!("port = {i}").into_bytes(),
                    ..Default::default()
                }),
                origin: Origin::Gossip,
            });
        }
        c.apply(&Event::MemberDown(MemberId([3; 16])));
        c
    }

    #[test]
    fn the_view_lists_members_with_their_health_and_the_election() {
        let c = census();
        let v = group_view(&c, "db.default", &id(1), None, 7);
        let seen: Vec<(String, TopologyHealth, u64)> =
            v.members.iter().map(|m| (m.id.clone(), m.health, m.suitability)).collect();
        assert_eq!(
            seen,
            vec![
                (id(1), TopologyHealth::Alive, 7),
                (id(2), TopologyHealth::Alive, 0),
                (id(3), TopologyHealth::Confirmed, 0)
            ]
        );
        assert_eq!((v.alive, v.population, v.quorum, v.status), (2, 3, true, PolicyStatus::None));
        let e = ElectionView {
            status: ElectionStatus::ElectionFinished,
            term: 2,
            leader_id: Some(id(2)),
            reason: crate::election::Reason::Elected { leader: id(2) },
            warning: None,
            alive: 2,
            population: 3,
        };
        let v = group_view(&c, "db.default", &id(1), Some(&e), 7);
        assert_eq!((v.term, v.leader.clone(), v.status), (2, Some(id(2)), PolicyStatus::Finished));
    }

    #[test]
    fn templates_see_the_applied_role_and_the_leader() {
        let c = census();
        let applied = (Role::Follower, Some(id(2)));
        let svc = svc_data(Some(&c), "db.default", &id(1), Some(&applied), None);
        assert_eq!(svc["me"]["follower"], true);
        assert_eq!(svc["me"]["leader"], false);
        assert_eq!(svc["leader"]["member_id"], id(2));
        assert_eq!(svc["leader"]["cfg"]["port"], 2);
        assert_eq!(svc["role"], "follower");
        assert_eq!(svc["members"].as_array().unwrap().len(), 3);
        assert_eq!(svc["members"][2]["follower"], false, "a dead member follows nobody");
        let none = svc_data(Some(&c), "db.default", &id(1), None, None);
        assert_eq!((none["me"]["leader"].clone(), none["leader"].clone()), (json!(false), Value::Null));
        assert_eq!(role_of(None, &id(1)), Role::None);
    }
}
