//! This supervisor's services, told to the ring: one Service rumor per loaded service (its
//! group with the supervisor's org, package, exported config, whether it has initialized, and
//! where it runs), published again whenever one of those changes. The census and binds of
//! every other member are built from these rumors.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ring::proto::{ServiceRumor, SysInfo};
use crate::ring::{RingHandle, Rumor};
use crate::services::{ServiceInfo, Services};

use super::ServiceGroup;

/// How often loaded services are looked at: changes are rare and a second is what a bind
/// waits at most (a poll keeps the manager free of a subscriber list).
const EVERY: Duration = Duration::from_secs(1);

/// The rumor a loaded service is told as (`member_id` and `incarnation` are the ring's).
pub fn service_rumor(info: &ServiceInfo, org: Option<&str>, sys: &SysInfo) -> Option<ServiceRumor> {
    let name = &info.detail.pkg.ident.name;
    let group = ServiceGroup::new(name, &info.spec.group, org).ok()?;
    Some(ServiceRumor {
        member_id: String::new(),
        service_group: group.to_string(),
        incarnation: 0,
        // Habitat's `initialized`: init has run and the service has been up.
        initialized: info.view.up || info.view.restarts > 0,
        package: info.detail.pkg.ident.to_string(),
        cfg: exported(&info.detail.pkg.meta.exports, &info.detail.cfg).into_bytes(),
        sys: Some(sys.clone()),
        unloaded: false,
    })
}

/// The package's EXPORTS (`name=dotted.key`) looked up in its configuration, as TOML: what
/// binds see. Keys the config lacks are left out.
pub fn exported(exports: &BTreeMap<String, String>, cfg: &toml::Table) -> String {
    let mut out = toml::Table::new();
    for (name, path) in exports {
        let mut parts = path.split('.');
        let first = parts.next().and_then(|k| cfg.get(k));
        let value = parts.try_fold(first, |v, k| Some(v?.as_table()?.get(k))).flatten();
        if let Some(v) = value {
            out.insert(name.clone(), v.clone());
        }
    }
    toml::to_string(&out).unwrap_or_default()
}

/// Publishes every loaded service's rumor, and again whenever it changes, until the services
/// subsystem stops. A service that is no longer loaded (unloaded now, or while the supervisor
/// was down) gets a last rumor that says so.
pub fn spawn(ring: RingHandle, services: Services, org: Option<String>, sys: SysInfo) {
    tokio::spawn(async move {
        let mut told: BTreeMap<String, ServiceRumor> = BTreeMap::new();
        let me = ring.status().id.to_string();
        // What this member said before a restart is in the store: what is not loaded any more
        // is withdrawn after the first look at the services.
        let mut before: Vec<ServiceRumor> = ring.with_rumors(|s| {
            s.of_kind(crate::ring::RumorKind::Service)
                .filter_map(|r| match r {
                    Rumor::Service(s) if s.member_id == me && !s.unloaded => Some(s.clone()),
                    _ => None,
                })
                .collect()
        });
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(loaded) = services.status().await else { return };
            let current: Vec<ServiceRumor> =
                loaded.iter().filter_map(|i| service_rumor(i, org.as_deref(), &sys)).collect();
            let gone: Vec<ServiceRumor> = told
                .extract_if(.., |group, _| !current.iter().any(|c| &c.service_group == group))
                .map(|(_, r)| r)
                .chain(
                    before.drain(..).filter(|b| !current.iter().any(|c| c.service_group == b.service_group)),
                )
                .collect();
            for mut last in gone {
                last.unloaded = true;
                let group = last.service_group.clone();
                match ring.inject(Rumor::Service(last)).await {
                    Ok(Ok(_)) => {
                        tracing::info!(group = %group, "service rumor withdrawn: no longer loaded here")
                    }
                    Ok(Err(e)) => tracing::warn!(group = %group, error = %e, "service rumor not withdrawn"),
                    Err(_) => return,
                }
            }
            for info in &loaded {
                let Some(rumor) = service_rumor(info, org.as_deref(), &sys) else { continue };
                if told.get(&rumor.service_group) == Some(&rumor) {
                    continue;
                }
                match ring.inject(Rumor::Service(rumor.clone())).await {
                    Ok(Ok(_)) => {
                        tracing::debug!(group = %rumor.service_group, "service rumor published");
                        told.insert(rumor.service_group.clone(), rumor);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(group = %rumor.service_group, error = %e, "service rumor not published")
                    }
                    Err(_) => return,
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_are_looked_up_by_dotted_key_and_missing_ones_left_out() {
        let cfg: toml::Table = "port = 6379\n[tls]\nmode = \"on\"\n[deep.er]\nx = [1, 2]\n".parse().unwrap();
        let exports: BTreeMap<String, String> = [
            ("port", "port"),
            ("tls-mode", "tls.mode"),
            ("xs", "deep.er.x"),
            ("gone", "nope.nothing"),
            ("notatable", "port.sub"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let out: toml::Table = exported(&exports, &cfg).parse().unwrap();
        assert_eq!(out["port"].as_integer(), Some(6379));
        assert_eq!(out["tls-mode"].as_str(), Some("on"));
        assert_eq!(out["xs"].as_array().map(Vec::len), Some(2));
        assert!(!out.contains_key("gone") && !out.contains_key("notatable"));
    }
}
