//! JSON bodies of /butterfly and /census in Habitat's shape (components/sup/doc schemas),
//! and the Prometheus text of /metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::ring::core::{Health, MemberView};
use crate::ring::metrics::Metrics;
use crate::ring::proto;
use crate::ring::rumor::{Rumor, RumorKind, RumorStore};
use crate::ring::shell::RingStatus;
use crate::ring::wire::Reject;

fn health_name(h: Health) -> &'static str {
    match h {
        Health::Alive => "Alive",
        Health::Suspect => "Suspect",
        Health::Confirmed => "Confirmed",
        Health::Departed => "Departed",
        // Habitat has no "left": a member that left is down without having been suspected.
        Health::Left => "Confirmed",
    }
}

fn election_status(s: i32) -> &'static str {
    match proto::ElectionStatus::try_from(s) {
        Ok(proto::ElectionStatus::ElectionRunning) => "Running",
        Ok(proto::ElectionStatus::ElectionNoQuorum) => "NoQuorum",
        Ok(proto::ElectionStatus::ElectionFinished) => "Finished",
        Err(_) => "Unknown",
    }
}

use crate::groups::census::{sys_json, toml_to_json};

fn election_json(e: &proto::ElectionRumor) -> Value {
    json!({
        "from_id": e.from_id,
        "member_id": e.member_id,
        "service_group": e.service_group,
        "status": election_status(e.status),
        "suitability": e.suitability,
        "term": e.term,
        "votes": e.votes,
    })
}

fn insert_path(root: &mut Map<String, Value>, path: &[&str], value: Value) {
    let mut cur = root;
    for (i, k) in path.iter().enumerate() {
        if i + 1 == path.len() {
            cur.insert((*k).to_string(), value);
            return;
        }
        let next = cur.entry((*k).to_string()).or_insert_with(|| json!({}));
        match next.as_object_mut() {
            Some(m) => cur = m,
            None => return,
        }
    }
}

pub fn butterfly_from(members: &[MemberView], store: &RumorStore) -> Value {
    let mut member_rumors: BTreeMap<String, proto::MemberRumor> = BTreeMap::new();
    for r in store.of_kind(RumorKind::Member) {
        if let Rumor::Member(m) = r {
            member_rumors.insert(m.id.clone(), m.clone());
        }
    }
    let mut health = Map::new();
    let mut list = Map::new();
    for m in members {
        let id = m.ident.id.to_string();
        health.insert(id.clone(), json!(health_name(m.health)));
        list.insert(
            id.clone(),
            json!({
                "address": m.ident.addr.ip().to_string(),
                "departed": m.health == Health::Departed,
                "gossip_port": m.ident.addr.port(),
                "id": id,
                "incarnation": m.incarnation,
                "persistent": m.ident.persistent,
                "swim_port": m.ident.addr.port(),
            }),
        );
    }
    let mut service = Map::new();
    let mut service_config = Map::new();
    let mut service_file = Map::new();
    let mut election = Map::new();
    let mut election_update = Map::new();
    let mut departure = Map::new();
    for r in store.iter() {
        match r {
            Rumor::Member(_) => {}
            Rumor::Service(s) => insert_path(
                &mut service,
                &[&s.service_group, &s.member_id],
                json!({
                    "cfg": toml_to_json(&s.cfg),
                    "incarnation": s.incarnation,
                    "initialized": s.initialized,
                    "member_id": s.member_id,
                    "package": s.package,
                    "service_group": s.service_group,
                    "sys": sys_json(s.sys.as_ref()),
                }),
            ),
            Rumor::ServiceConfig(c) => insert_path(
                &mut service_config,
                &[&c.service_group, "service_config"],
                json!({
                    "config": c.config,
                    "encrypted": c.encrypted,
                    "from_id": c.from_id,
                    "incarnation": c.incarnation,
                    "service_group": c.service_group,
                }),
            ),
            Rumor::ServiceFile(f) => insert_path(
                &mut service_file,
                &[&f.service_group, &f.filename],
                json!({
                    "body": f.body,
                    "encrypted": f.encrypted,
                    "filename": f.filename,
                    "from_id": f.from_id,
                    "incarnation": f.incarnation,
                    "service_group": f.service_group,
                }),
            ),
            Rumor::Election(e) => {
                insert_path(&mut election, &[&e.service_group, "election"], election_json(e))
            }
            Rumor::ElectionUpdate(e) => {
                insert_path(&mut election_update, &[&e.service_group, "election"], election_json(e))
            }
            Rumor::Departure(d) => {
                insert_path(&mut departure, &["departure", &d.member_id], json!({ "member_id": d.member_id }))
            }
        }
    }
    let section = |list: Map<String, Value>, kind: RumorKind| json!({ "list": Value::Object(list), "update_counter": store.counter(kind) });
    json!({
        "departure": section(departure, RumorKind::Departure),
        "election": section(election, RumorKind::Election),
        "election_update": section(election_update, RumorKind::ElectionUpdate),
        "member": {
            "health": Value::Object(health),
            "members": Value::Object(list),
            "update_counter": store.counter(RumorKind::Member),
        },
        "service": section(service, RumorKind::Service),
        "service_config": section(service_config, RumorKind::ServiceConfig),
        "service_file": section(service_file, RumorKind::ServiceFile),
    })
}

/// `GET /metrics` in Prometheus text format.
pub fn metrics(status: &RingStatus, store: &RumorStore, m: &Metrics) -> String {
    let members = &status.members;
    let mut out = String::new();
    let _ =
        writeln!(out, "# HELP warren_ring_members Members of the ring by health, as this member sees them.");
    let _ = writeln!(out, "# TYPE warren_ring_members gauge");
    for h in Health::ALL {
        let n = members.iter().filter(|v| v.health == h).count();
        let _ = writeln!(out, "warren_ring_members{{health=\"{}\"}} {n}", h.label());
    }
    let counters = [
        ("warren_ring_packets_sent_total", "Datagrams sent.", Metrics::get(&m.packets_sent)),
        ("warren_ring_packets_received_total", "Datagrams accepted.", Metrics::get(&m.packets_received)),
        ("warren_ring_bytes_sent_total", "Datagram bytes sent.", Metrics::get(&m.bytes_sent)),
        ("warren_ring_bytes_received_total", "Datagram bytes accepted.", Metrics::get(&m.bytes_received)),
        ("warren_ring_pushpull_total", "Completed push-pull exchanges.", Metrics::get(&m.pushpull_ok)),
        (
            "warren_ring_pushpull_failed_total",
            "Failed push-pull exchanges.",
            Metrics::get(&m.pushpull_failed),
        ),
        (
            "warren_ring_pushpull_accept_errors_total",
            "Push-pull connections that could not be accepted (e.g. out of descriptors); each backs off.",
            Metrics::get(&m.accept_errors),
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    let _ = writeln!(out, "# HELP warren_ring_packets_rejected_total Packets and frames dropped, by reason.");
    let _ = writeln!(out, "# TYPE warren_ring_packets_rejected_total counter");
    for r in Reject::ALL {
        let _ =
            writeln!(out, "warren_ring_packets_rejected_total{{reason=\"{}\"}} {}", r.label(), m.rejected(r));
    }
    let _ = writeln!(out, "# HELP warren_ring_rumors Rumors held, by type.");
    let _ = writeln!(out, "# TYPE warren_ring_rumors gauge");
    for k in RumorKind::ALL {
        let _ = writeln!(out, "warren_ring_rumors{{type=\"{}\"}} {}", k.label(), store.count(k));
    }
    let _ = writeln!(out, "# HELP warren_ring_rumor_bytes Encoded size of the rumors held.");
    let _ = writeln!(out, "# TYPE warren_ring_rumor_bytes gauge\nwarren_ring_rumor_bytes {}", store.bytes());
    let _ = writeln!(out, "# HELP warren_ring_incarnation This member's incarnation.");
    let _ =
        writeln!(out, "# TYPE warren_ring_incarnation gauge\nwarren_ring_incarnation {}", status.incarnation);
    out
}
