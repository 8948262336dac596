//! Host bindings generated from `wit/` (warren:plugin@0.2.0, the current contract) and from
//! `wit/v0.1.0/` (warren:plugin@0.1.0, kept so plugins built against it keep loading). Within a
//! version the three worlds share one `host` interface, so the store implements each version's
//! `Host` trait once. Callers only see the 0.2.0 types: [`compat`] converts at the boundary.

/// warren:plugin@0.2.0.
pub mod v0_2 {
    pub mod credential_source {
        wasmtime::component::bindgen!({ path: "../wit", world: "credential-source" });
    }

    pub mod topology_policy {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "topology-policy",
            with: { "warren:plugin/host": super::credential_source::warren::plugin::host },
            // So the host can tell a changed decision (or view) from the last one.
            additional_derives: [PartialEq, Eq],
        });
    }

    pub mod lifecycle_hook {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "lifecycle-hook",
            with: { "warren:plugin/host": super::credential_source::warren::plugin::host },
        });
    }
}

/// warren:plugin@0.1.0, frozen.
pub mod v0_1 {
    pub mod credential_source {
        wasmtime::component::bindgen!({ path: "../wit/v0.1.0", world: "credential-source" });
    }

    pub mod topology_policy {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1.0",
            world: "topology-policy",
            with: { "warren:plugin/host": super::credential_source::warren::plugin::host },
        });
    }

    pub mod lifecycle_hook {
        wasmtime::component::bindgen!({
            path: "../wit/v0.1.0",
            world: "lifecycle-hook",
            with: { "warren:plugin/host": super::credential_source::warren::plugin::host },
        });
    }
}

pub use v0_2::credential_source::warren::plugin::host::Level;
pub use v0_2::credential_source::warren::plugin::types::{Credential, CredentialError};
pub use v0_2::lifecycle_hook::exports::warren::plugin::lifecycle::{
    Health, PackageIdent, ServiceContext, ServicePaths,
};
pub use v0_2::topology_policy::exports::warren::plugin::topology::{
    Decision, ElectionStatus, GroupView, Member, MemberHealth as TopologyHealth, Role,
};

/// The contract version a component was built against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum WitVersion {
    #[serde(rename = "0.2.0")]
    V0_2,
    #[serde(rename = "0.1.0")]
    V0_1,
}

impl WitVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            WitVersion::V0_2 => "0.2.0",
            WitVersion::V0_1 => "0.1.0",
        }
    }
}

impl std::fmt::Display for WitVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "warren:plugin@{}", self.as_str())
    }
}

/// Conversions between the 0.1.0 and 0.2.0 types, so the rest of the host knows only 0.2.0.
/// Arguments go down (0.2.0 → 0.1.0, dropping what 0.1.0 lacks), answers come up.
pub mod compat {
    use super::v0_1::credential_source::warren::plugin::{host as host1, types as types1};
    use super::v0_1::lifecycle_hook::exports::warren::plugin::lifecycle as lifecycle1;
    use super::v0_1::topology_policy::exports::warren::plugin::topology as topology1;
    use super::{
        Credential, CredentialError, Decision, GroupView, Health, Level, Member, Role, ServiceContext,
        TopologyHealth,
    };

    /// `From` between two enums whose cases have the same names and payloads.
    macro_rules! same_cases {
        ($from:path => $to:path { $($case:ident $(($x:ident))?),* $(,)? }) => {
            impl From<$from> for $to {
                fn from(value: $from) -> Self {
                    use $from as A;
                    use $to as B;
                    match value {
                        $(A::$case $(($x))? => B::$case $(($x.into()))?),*
                    }
                }
            }
        };
    }

    same_cases!(host1::Level => Level { Trace, Debug, Info, Warn, Error });
    same_cases!(types1::CredentialError => CredentialError {
        NotFound(m), Denied(m), InvalidReference(m), Unavailable(m),
    });
    same_cases!(topology1::Role => Role { Standalone, Leader, Follower, None });
    same_cases!(lifecycle1::Health => Health { Ok, Warning, Critical, Unknown });

    impl From<types1::Credential> for Credential {
        fn from(c: types1::Credential) -> Self {
            Credential { value: c.value, ttl_seconds: c.ttl_seconds, watch_paths: c.watch_paths }
        }
    }

    impl From<topology1::Decision> for Decision {
        fn from(d: topology1::Decision) -> Self {
            Decision {
                election_needed: d.election_needed,
                roles: d.roles.into_iter().map(|(id, role)| (id, role.into())).collect(),
            }
        }
    }

    /// 0.1.0 knows only alive or not: a suspect is still alive (the ring has not confirmed it
    /// dead, and the election still counts it), confirmed, departed and left are not.
    impl From<&Member> for topology1::Member {
        fn from(m: &Member) -> Self {
            let alive = matches!(m.health, TopologyHealth::Alive | TopologyHealth::Suspect);
            topology1::Member { id: m.id.clone(), alive, suitability: m.suitability }
        }
    }

    /// 0.1.0's `decide(group, members, current-leader)` arguments from a 0.2.0 view: its
    /// group, its members (health down to `alive`) and its leader. Self id, term, status and
    /// the quorum counts have no 0.1.0 counterpart and are dropped.
    pub fn decide_args(view: &GroupView) -> (&str, Vec<topology1::Member>, Option<&str>) {
        (view.group.as_str(), view.members.iter().map(Into::into).collect(), view.leader.as_deref())
    }

    /// 0.1.0 hooks get the context they were built for: no ident, member id or paths.
    impl From<&ServiceContext> for lifecycle1::ServiceContext {
        fn from(c: &ServiceContext) -> Self {
            lifecycle1::ServiceContext {
                service: c.service.clone(),
                group: c.group.clone(),
                config_toml: c.config_toml.clone(),
            }
        }
    }

    /// A 0.1.0 resolve's answer as 0.2.0's.
    pub fn resolved(
        r: Result<types1::Credential, types1::CredentialError>,
    ) -> Result<Credential, CredentialError> {
        r.map(Into::into).map_err(Into::into)
    }

    #[cfg(test)]
    mod tests {
        use super::super::{PackageIdent, ServicePaths};
        use super::*;

        #[test]
        fn enums_map_case_by_case() {
            assert_eq!(Level::from(host1::Level::Trace), Level::Trace);
            assert_eq!(Level::from(host1::Level::Error), Level::Error);
            assert_eq!(Level::from(host1::Level::Warn), Level::Warn);
            for (old, new) in [
                (lifecycle1::Health::Ok, Health::Ok),
                (lifecycle1::Health::Warning, Health::Warning),
                (lifecycle1::Health::Critical, Health::Critical),
                (lifecycle1::Health::Unknown, Health::Unknown),
            ] {
                assert_eq!(Health::from(old), new);
            }
            for (old, new) in [
                (topology1::Role::Standalone, Role::Standalone),
                (topology1::Role::Leader, Role::Leader),
                (topology1::Role::Follower, Role::Follower),
                (topology1::Role::None, Role::None),
            ] {
                assert_eq!(Role::from(old), new);
            }
        }

        #[test]
        fn credentials_and_their_errors_keep_every_field() {
            let old = types1::Credential {
                value: "v".into(),
                ttl_seconds: Some(7),
                watch_paths: vec!["/run/secrets/x".into()],
            };
            let new = resolved(Ok(old)).unwrap();
            assert_eq!((new.value.as_str(), new.ttl_seconds), ("v", Some(7)));
            assert_eq!(new.watch_paths, vec!["/run/secrets/x".to_string()]);
            let e = |old| resolved(Err(old)).unwrap_err();
            assert!(
                matches!(e(types1::CredentialError::NotFound("a".into())), CredentialError::NotFound(m) if m == "a")
            );
            assert!(
                matches!(e(types1::CredentialError::Denied("b".into())), CredentialError::Denied(m) if m == "b")
            );
            assert!(matches!(
                e(types1::CredentialError::InvalidReference("c".into())),
                CredentialError::InvalidReference(m) if m == "c"
            ));
            assert!(matches!(
                e(types1::CredentialError::Unavailable("d".into())),
                CredentialError::Unavailable(m) if m == "d"
            ));
        }

        #[test]
        fn topology_views_go_down_and_decisions_come_up() {
            let m = |id: &str, health| Member { id: id.into(), health, suitability: 9 };
            let view = GroupView {
                group: "redis.default".into(),
                self_id: "m1".into(),
                members: vec![
                    m("m1", TopologyHealth::Alive),
                    m("m2", TopologyHealth::Suspect),
                    m("m3", TopologyHealth::Confirmed),
                    m("m4", TopologyHealth::Departed),
                    m("m5", TopologyHealth::Left),
                ],
                leader: Some("m2".into()),
                term: 4,
                status: super::super::ElectionStatus::Finished,
                quorum: true,
                alive: 2,
                population: 3,
            };
            let (group, members, leader) = decide_args(&view);
            assert_eq!((group, leader), ("redis.default", Some("m2")));
            let seen: Vec<_> = members.iter().map(|m| (m.id.as_str(), m.alive, m.suitability)).collect();
            assert_eq!(
                seen,
                vec![("m1", true, 9), ("m2", true, 9), ("m3", false, 9), ("m4", false, 9), ("m5", false, 9)]
            );
            let none = GroupView { leader: None, ..view };
            assert_eq!(decide_args(&none).2, None);
            let d = Decision::from(topology1::Decision {
                election_needed: true,
                roles: vec![("m1".into(), topology1::Role::Leader), ("m2".into(), topology1::Role::None)],
            });
            assert!(d.election_needed);
            assert_eq!(d.roles, vec![("m1".into(), Role::Leader), ("m2".into(), Role::None)]);
        }

        #[test]
        fn a_0_1_hook_gets_the_old_smaller_context() {
            let ctx = ServiceContext {
                service: "redis".into(),
                group: "prod".into(),
                config_toml: "port = 6379\n".into(),
                ident: PackageIdent {
                    origin: "acme".into(),
                    name: "redis".into(),
                    version: "7.0.0".into(),
                    release: "20260101000000".into(),
                },
                member_id: "abc".into(),
                paths: ServicePaths {
                    svc: "/d/svc/redis".into(),
                    config: "/d/svc/redis/config".into(),
                    data: "/d/svc/redis/data".into(),
                    files: "/d/svc/redis/files".into(),
                    var: "/d/svc/redis/var".into(),
                    logs: "/d/svc/redis/logs".into(),
                },
            };
            let old = lifecycle1::ServiceContext::from(&ctx);
            assert_eq!(
                (old.service.as_str(), old.group.as_str(), old.config_toml.as_str()),
                ("redis", "prod", "port = 6379\n")
            );
        }
    }
}
