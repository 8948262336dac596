//! The census: every service group this supervisor has heard of, its members (from their
//! Service rumors) and each member's health, its config, files and election. It is kept up to
//! date event by event from the ring (a rumor changed, a member's health changed), never
//! rebuilt from the whole store, and it is pure: the shell feeds it and publishes snapshots.
//! `/census` renders it in Habitat's shape; binds read their group's alive members from it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::election::{ElectionStatus, ElectionView, Views};
use crate::ring::core::{Event, Health, MemberView};
use crate::ring::proto;
use crate::ring::rumor::{Rumor, RumorKind};

/// One service group as the ring tells it.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// By member id.
    pub members: BTreeMap<String, proto::ServiceRumor>,
    pub config: Option<proto::ServiceConfigRumor>,
    pub files: BTreeMap<String, proto::ServiceFileRumor>,
    pub election: Option<proto::ElectionRumor>,
    pub update: Option<proto::ElectionRumor>,
}

/// A member as a bind or the census sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberState {
    pub health: Health,
    pub persistent: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Census {
    local: String,
    members: BTreeMap<String, MemberState>,
    /// Groups are shared with earlier snapshots until they change.
    groups: BTreeMap<String, Arc<Group>>,
    /// Changes seen per rumor kind (Habitat's `last_*_counter`).
    counters: [u64; RumorKind::ALL.len()],
    /// A peer's full state was merged since this supervisor started: what the census holds
    /// is the ring's, not only what was restored from disk.
    synced: bool,
}

impl Census {
    pub fn new(local: &str) -> Census {
        Census { local: local.to_string(), ..Census::default() }
    }

    /// The starting point: what the ring holds now. Events from then on keep it current.
    pub fn from_ring(local: &str, members: &[MemberView], rumors: &[Rumor]) -> Census {
        let mut c = Census::new(local);
        for m in members {
            c.members.insert(
                m.ident.id.to_string(),
                MemberState { health: m.health, persistent: m.ident.persistent },
            );
        }
        for r in rumors {
            c.rumor(r);
        }
        c
    }

    /// Whether a peer's full state reached this member since it started (see [`Event::Synced`]).
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Another member is known (alive or not): a restarted member's restored list counts.
    pub fn knows_others(&self) -> bool {
        self.members.keys().any(|id| *id != self.local)
    }

    /// Other members the ring sees alive.
    pub fn others_alive(&self) -> usize {
        self.members.iter().filter(|(id, m)| **id != self.local && m.health == Health::Alive).count()
    }

    /// One ring event; returns the groups whose view changed.
    pub fn apply(&mut self, event: &Event) -> Vec<String> {
        let health = match event {
            Event::MemberUp(id) => Some((id, Health::Alive)),
            Event::MemberSuspect(id) => Some((id, Health::Suspect)),
            Event::MemberDown(id) => Some((id, Health::Confirmed)),
            Event::MemberLeft(id) => Some((id, Health::Left)),
            Event::MemberDeparted(id) => Some((id, Health::Departed)),
            Event::RumorChanged { rumor, .. } => return self.rumor(rumor).into_iter().collect(),
            Event::RumorRemoved { key } => {
                self.counters[key.kind.index()] += 1;
                return self.remove(key.kind, &key.a, &key.b).into_iter().collect();
            }
            Event::Synced => {
                self.synced = true;
                return Vec::new();
            }
        };
        let Some((id, health)) = health else { return Vec::new() };
        let id = id.to_string();
        let state = self.members.entry(id.clone()).or_insert(MemberState { health, persistent: false });
        if state.health == health {
            return Vec::new();
        }
        state.health = health;
        self.groups
            .iter()
            .filter(|(_, g)| g.members.contains_key(&id))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn group_mut(&mut self, name: &str) -> &mut Group {
        Arc::make_mut(self.groups.entry(name.to_string()).or_default())
    }

    /// Stores `r`; the group it changed, if any.
    fn rumor(&mut self, r: &Rumor) -> Option<String> {
        self.counters[r.kind().index()] += 1;
        match r {
            Rumor::Member(m) => {
                let s = self
                    .members
                    .entry(m.id.clone())
                    .or_insert(MemberState { health: Health::Alive, persistent: false });
                s.persistent = m.persistent;
                None
            }
            Rumor::Departure(d) => {
                self.members
                    .insert(d.member_id.clone(), MemberState { health: Health::Departed, persistent: false });
                None
            }
            Rumor::Service(s) if s.unloaded => {
                let g = self.groups.get_mut(&s.service_group)?;
                Arc::make_mut(g).members.remove(&s.member_id)?;
                Some(s.service_group.clone())
            }
            Rumor::Service(s) => {
                self.group_mut(&s.service_group).members.insert(s.member_id.clone(), s.clone());
                Some(s.service_group.clone())
            }
            Rumor::ServiceConfig(c) => {
                self.group_mut(&c.service_group).config = Some(c.clone());
                Some(c.service_group.clone())
            }
            Rumor::ServiceFile(f) => {
                self.group_mut(&f.service_group).files.insert(f.filename.clone(), f.clone());
                Some(f.service_group.clone())
            }
            Rumor::Election(e) => {
                self.group_mut(&e.service_group).election = Some(e.clone());
                Some(e.service_group.clone())
            }
            Rumor::ElectionUpdate(e) => {
                self.group_mut(&e.service_group).update = Some(e.clone());
                Some(e.service_group.clone())
            }
        }
    }

    fn remove(&mut self, kind: RumorKind, a: &str, b: &str) -> Option<String> {
        let group = Arc::make_mut(self.groups.get_mut(a)?);
        match kind {
            RumorKind::Service => drop(group.members.remove(b)),
            RumorKind::ServiceConfig => group.config = None,
            RumorKind::ServiceFile => drop(group.files.remove(b)),
            RumorKind::Election => group.election = None,
            RumorKind::ElectionUpdate => group.update = None,
            RumorKind::Member | RumorKind::Departure => return None,
        }
        Some(a.to_string())
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name).map(|g| &**g)
    }

    pub fn member(&self, id: &str) -> Option<MemberState> {
        self.members.get(id).copied()
    }

    /// Habitat's `alive` for a census member: alive or only suspected.
    pub fn is_alive(&self, id: &str) -> bool {
        matches!(self.member(id).map(|m| m.health), Some(Health::Alive | Health::Suspect))
    }

    /// A group's members that are alive, in member-id order (what `bind.NAME.members` lists).
    pub fn alive_members<'a>(&'a self, group: &str) -> Vec<&'a proto::ServiceRumor> {
        self.group(group)
            .map(|g| g.members.values().filter(|s| self.is_alive(&s.member_id)).collect())
            .unwrap_or_default()
    }

    /// One member of a group as templates and `/census` show it (Habitat's census member),
    /// with the group's election as the ring store holds it.
    pub fn member_json(&self, group: &Group, s: &proto::ServiceRumor) -> Value {
        self.member_json_in(&Elected::from_rumor(&group.election), &Elected::from_rumor(&group.update), s)
    }

    fn member_json_in(&self, election: &Elected, update: &Elected, s: &proto::ServiceRumor) -> Value {
        let state = self.member(&s.member_id);
        let h = state.map(|m| m.health);
        let (service, group_part) = s.service_group.split_once('.').unwrap_or((&s.service_group, "default"));
        let (group_name, org) = match group_part.split_once('@') {
            Some((g, o)) => (g, json!(o)),
            None => (group_part, Value::Null),
        };
        let leads = |e: &Elected| e.leader.as_deref() == Some(s.member_id.as_str());
        let finished = |e: &Elected| e.status == "ElectionFinished";
        let pkg: Vec<&str> = s.package.split('/').collect();
        json!({
            "alive": matches!(h, Some(Health::Alive | Health::Suspect)),
            "cfg": toml_to_json(&s.cfg),
            "confirmed": matches!(h, Some(Health::Confirmed | Health::Left)),
            "departed": h == Some(Health::Departed),
            "election_is_finished": finished(election),
            "election_is_no_quorum": election.status == "ElectionNoQuorum",
            "election_is_running": election.status == "ElectionInProgress",
            "follower": finished(election) && !leads(election),
            "group": group_name,
            "leader": leads(election),
            "member_id": s.member_id,
            "org": org,
            "package": s.package,
            "persistent": state.is_some_and(|m| m.persistent),
            "pkg": {
                "origin": pkg.first().copied().unwrap_or(""),
                "name": pkg.get(1).copied().unwrap_or(""),
                "version": pkg.get(2).copied().unwrap_or(""),
                "release": pkg.get(3).copied().unwrap_or(""),
            },
            "pkg_incarnation": s.incarnation,
            "service": service,
            "suspect": h == Some(Health::Suspect),
            "sys": sys_json(s.sys.as_ref()),
            "update_election_is_finished": finished(update),
            "update_election_is_no_quorum": update.status == "ElectionNoQuorum",
            "update_election_is_running": update.status == "ElectionInProgress",
            "update_follower": finished(update) && !leads(update),
            "update_leader": leads(update),
        })
    }

    /// `GET /census` in Habitat's shape, with the elections as the ring store holds them.
    pub fn to_json(&self) -> Value {
        self.to_json_with(&Views::new())
    }

    /// `GET /census` in Habitat's shape. Groups appear once a member has told its service
    /// (a config for a group nobody runs is held, not shown, as in Habitat). A group this
    /// member elects in shows its own election's view: a member without quorum names no
    /// leader even while the store still holds the last finished rumor.
    pub fn to_json_with(&self, local: &Views) -> Value {
        let mut groups = Map::new();
        for (name, g) in self.groups.iter().filter(|(_, g)| !g.members.is_empty()) {
            let election =
                local.get(name).map_or_else(|| Elected::from_rumor(&g.election), Elected::from_view);
            let update = Elected::from_rumor(&g.update);
            let population: Map<String, Value> = g
                .members
                .values()
                .map(|s| (s.member_id.clone(), self.member_json_in(&election, &update, s)))
                .collect();
            let files: Map<String, Value> = g
                .files
                .values()
                .map(|f| {
                    (
                        f.filename.clone(),
                        json!({ "body": f.body, "filename": f.filename, "incarnation": f.incarnation }),
                    )
                })
                .collect();
            let config = g
                .config
                .as_ref()
                .map(|c| json!({ "incarnation": c.incarnation, "value": toml_to_json(&c.config) }));
            let pkg_incarnation = g.members.get(&self.local).map_or(0, |s| s.incarnation);
            groups.insert(
                name.clone(),
                json!({
                    "changed_service_files": [],
                    "election_status": election.status,
                    "leader_id": election.leader,
                    "local_member_id": self.local,
                    "pkg_incarnation": pkg_incarnation,
                    "population": population,
                    "service_config": config.unwrap_or(Value::Null),
                    "service_files": files,
                    "service_group": name,
                    "update_election_status": update.status,
                    "update_leader_id": update.leader,
                }),
            );
        }
        let counter = |k: RumorKind| self.counters[k.index()];
        json!({
            "census_groups": groups,
            "changed": true,
            "last_election_counter": counter(RumorKind::Election),
            "last_election_update_counter": counter(RumorKind::ElectionUpdate),
            "last_membership_counter": counter(RumorKind::Member),
            "last_service_config_counter": counter(RumorKind::ServiceConfig),
            "last_service_counter": counter(RumorKind::Service),
            "last_service_file_counter": counter(RumorKind::ServiceFile),
            "local_member_id": self.local,
        })
    }
}

/// A group's election as the census shows it: Habitat's status name and the leader, set only
/// once finished.
struct Elected {
    status: &'static str,
    leader: Option<String>,
}

impl Elected {
    fn from_rumor(e: &Option<proto::ElectionRumor>) -> Elected {
        let status = match e.as_ref().map(|e| proto::ElectionStatus::try_from(e.status)) {
            None | Some(Err(_)) => "None",
            Some(Ok(proto::ElectionStatus::ElectionRunning)) => "ElectionInProgress",
            Some(Ok(proto::ElectionStatus::ElectionNoQuorum)) => "ElectionNoQuorum",
            Some(Ok(proto::ElectionStatus::ElectionFinished)) => "ElectionFinished",
        };
        let leader = e
            .as_ref()
            .filter(|e| e.status == proto::ElectionStatus::ElectionFinished as i32)
            .map(|e| e.member_id.clone());
        Elected { status, leader }
    }

    fn from_view(v: &ElectionView) -> Elected {
        let status = match v.status {
            ElectionStatus::None => "None",
            ElectionStatus::ElectionInProgress => "ElectionInProgress",
            ElectionStatus::ElectionNoQuorum => "ElectionNoQuorum",
            ElectionStatus::ElectionFinished => "ElectionFinished",
        };
        Elected { status, leader: v.leader_id.clone() }
    }
}

/// A service's TOML config as a JSON object (empty if it does not parse).
pub fn toml_to_json(bytes: &[u8]) -> Value {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| toml::from_str::<toml::Value>(t).ok())
        .and_then(|v| serde_json::to_value(v).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

pub fn sys_json(sys: Option<&proto::SysInfo>) -> Value {
    let s = sys.cloned().unwrap_or_default();
    json!({
        "ctl_gateway_ip": s.ctl_gateway_ip,
        "ctl_gateway_port": s.ctl_gateway_port,
        "gossip_ip": s.gossip_ip,
        "gossip_port": s.gossip_port,
        "hostname": s.hostname,
        "http_gateway_ip": s.http_gateway_ip,
        "http_gateway_port": s.http_gateway_port,
        "ip": s.ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::MemberId;
    use crate::ring::core::Origin;

    fn id(i: u8) -> MemberId {
        MemberId([i; 16])
    }

    fn svc(member: u8, group: &str, inc: u64, cfg: &str) -> Event {
        Event::RumorChanged {
            rumor: Rumor::Service(proto::ServiceRumor {
                member_id: id(member).to_string(),
                service_group: group.into(),
                incarnation: inc,
                package: "core/redis/7.0.0/20260101000000".into(),
                cfg: cfg.as_bytes().to_vec(),
                ..Default::default()
            }),
            origin: Origin::Gossip,
        }
    }

    #[test]
    fn events_move_members_in_and_out_of_a_groups_alive_set() {
        let mut c = Census::new(&id(1).to_string());
        assert_eq!(c.apply(&Event::MemberUp(id(1))), Vec::<String>::new(), "no group yet");
        c.apply(&Event::MemberUp(id(2)));
        assert_eq!(c.apply(&svc(1, "db.default", 1, "port = 1")), vec!["db.default"]);
        c.apply(&svc(2, "db.default", 1, "port = 2"));
        c.apply(&svc(2, "web.default", 1, ""));
        assert_eq!(c.alive_members("db.default").len(), 2);
        // Down: only the groups it is in change, and it leaves the alive set.
        let mut changed = c.apply(&Event::MemberDown(id(2)));
        changed.sort();
        assert_eq!(changed, vec!["db.default", "web.default"]);
        assert_eq!(c.apply(&Event::MemberDown(id(2))), Vec::<String>::new(), "no change, no news");
        let alive: Vec<_> = c.alive_members("db.default").iter().map(|s| s.member_id.clone()).collect();
        assert_eq!(alive, vec![id(1).to_string()]);
        // A newer rumor replaces the member's entry.
        c.apply(&svc(1, "db.default", 2, "port = 9"));
        assert_eq!(c.alive_members("db.default")[0].cfg, b"port = 9");
        c.apply(&Event::MemberUp(id(2)));
        assert_eq!(c.alive_members("db.default").len(), 2);
        c.apply(&Event::RumorRemoved {
            key: crate::ring::RumorKey {
                kind: RumorKind::Service,
                a: "db.default".into(),
                b: id(2).to_string(),
            },
        });
        assert_eq!(c.alive_members("db.default").len(), 1);
        // A member that unloads the service says so last: it leaves the group.
        let Event::RumorChanged { rumor: Rumor::Service(mut last), origin } = svc(1, "db.default", 3, "")
        else {
            unreachable!()
        };
        last.unloaded = true;
        assert_eq!(c.apply(&Event::RumorChanged { rumor: Rumor::Service(last), origin }), vec!["db.default"]);
        assert!(c.alive_members("db.default").is_empty());
        assert!(c.to_json()["census_groups"].get("db.default").is_none(), "an empty group is not shown");
    }

    #[test]
    fn the_census_body_has_habitats_shape_and_election_names() {
        let mut c = Census::new(&id(1).to_string());
        c.apply(&Event::MemberUp(id(1)));
        c.apply(&svc(1, "db.default@acme", 3, "port = 5432"));
        c.apply(&Event::RumorChanged {
            rumor: Rumor::Election(proto::ElectionRumor {
                member_id: id(1).to_string(),
                service_group: "db.default@acme".into(),
                term: 1,
                status: proto::ElectionStatus::ElectionFinished as i32,
                ..Default::default()
            }),
            origin: Origin::Gossip,
        });
        // A config for a group nobody runs is held, not shown.
        c.apply(&Event::RumorChanged {
            rumor: Rumor::ServiceConfig(proto::ServiceConfigRumor {
                service_group: "ghost.default".into(),
                incarnation: 1,
                ..Default::default()
            }),
            origin: Origin::Gossip,
        });
        let j = c.to_json();
        let g = &j["census_groups"]["db.default@acme"];
        assert_eq!(g["election_status"], "ElectionFinished");
        assert_eq!(g["leader_id"], id(1).to_string());
        assert_eq!(g["pkg_incarnation"], 3);
        let m = &g["population"][id(1).to_string()];
        assert_eq!((m["leader"].clone(), m["follower"].clone()), (json!(true), json!(false)));
        assert_eq!(
            (m["service"].clone(), m["group"].clone(), m["org"].clone()),
            (json!("db"), json!("default"), json!("acme"))
        );
        assert_eq!(m["cfg"]["port"], 5432);
        assert_eq!(m["pkg"]["version"], "7.0.0");
        assert!(j["census_groups"].get("ghost.default").is_none());
        assert!(c.group("ghost.default").unwrap().config.is_some());
        assert_eq!(j["last_service_counter"], 1);
    }
}
