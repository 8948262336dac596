//! Binds: `--bind NAME:SVC.GROUP[@ORG]` gives a service's templates the bound group's members
//! from the census (`bind.NAME.members`, `bind.NAME.first`, `eachAlive`). In `strict` mode a
//! service waits until every bind has an alive member; `relaxed` starts anyway.

use serde_json::{Map, Value, json};

use crate::groups::ServiceGroup;
use crate::groups::census::Census;

/// `NAME:SVC.GROUP[@ORG]`, checked.
pub fn parse(bind: &str) -> Result<(String, ServiceGroup), String> {
    let bad = || format!("bind {bind:?}: expected NAME:SERVICE.GROUP[@ORG]");
    let (name, group) = bind.split_once(':').ok_or_else(bad)?;
    if !crate::groups::name::is_name(name) {
        return Err(bad());
    }
    let group: ServiceGroup = group.parse().map_err(|e| format!("bind {bind:?}: {e}"))?;
    Ok((name.to_string(), group))
}

/// What templates see as `bind`, and the binds that have no alive member (in the order
/// given; empty once every bind is satisfied).
pub fn data(binds: &[String], census: Option<&Census>) -> (Value, Vec<String>) {
    let mut out = Map::new();
    let mut waiting = Vec::new();
    for bind in binds {
        let Ok((name, group)) = parse(bind) else {
            waiting.push(format!("{bind} (not a bind)"));
            continue;
        };
        let group_name = group.to_string();
        let found = census.and_then(|c| Some((c, c.group(&group_name)?)));
        let members: Vec<Value> = match found {
            Some((c, g)) => g
                .members
                .values()
                .filter(|s| {
                    !c.member(&s.member_id).is_some_and(|m| m.health == crate::ring::Health::Departed)
                })
                .map(|s| c.member_json(g, s))
                .collect(),
            None => Vec::new(),
        };
        // Habitat's `first`: the leader when there is one, else the first alive member.
        let alive = || members.iter().filter(|m| m["alive"] == true);
        let first = alive().find(|m| m["leader"] == true).or_else(|| alive().next()).cloned();
        if first.is_none() {
            let why = if members.is_empty() { "no member" } else { "no alive member" };
            waiting.push(format!("{name} ({group_name} has {why})"));
        }
        out.insert(name, json!({ "first": first, "members": members }));
    }
    (Value::Object(out), waiting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::core::Origin;
    use crate::ring::proto;
    use crate::ring::{Event, MemberId, Rumor};

    #[test]
    fn binds_list_members_first_alive_and_say_which_wait() {
        let mut c = Census::new("local");
        for i in 1..=2u8 {
            c.apply(&Event::MemberUp(MemberId([i; 16])));
            c.apply(&Event::RumorChanged {
                rumor: Rumor::Service(proto::ServiceRumor {
                    member_id: MemberId([i; 16]).to_string(),
                    service_group: "db.default@acme".into(),
                    incarnation: 1,
                    cfg: format!("port = {i}").into_bytes(),
                    ..Default::default()
                }),
                origin: Origin::Gossip,
            });
        }
        let binds = vec!["database:db.default@acme".to_string(), "cache:redis.default".to_string()];
        let (v, waiting) = data(&binds, Some(&c));
        assert_eq!(v["database"]["members"].as_array().unwrap().len(), 2);
        assert_eq!(v["database"]["first"]["cfg"]["port"], 1);
        assert_eq!(waiting, vec!["cache (redis.default has no member)"]);
        c.apply(&Event::MemberDown(MemberId([1; 16])));
        let (v, _) = data(&binds, Some(&c));
        assert_eq!(v["database"]["first"]["cfg"]["port"], 2, "the first alive one");
        assert_eq!(
            v["database"]["members"][0]["alive"], false,
            "dead members stay listed (eachAlive skips them)"
        );
        c.apply(&Event::MemberDown(MemberId([2; 16])));
        let (_, waiting) = data(&binds[..1], Some(&c));
        assert_eq!(waiting, vec!["database (db.default@acme has no alive member)"]);
        assert!(parse("nocolon").is_err() && parse("a:b").is_err() && parse("a b:c.d").is_err());
    }
}
