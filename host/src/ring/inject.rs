//! The JSON form of a rumor a client asks the ring to spread (`warren ring rumor inject`, over
//! the ctl gateway). `from_id` and incarnations are the ring's to set, not the client's.

use serde::{Deserialize, Serialize};

use super::proto;
use super::{MemberId, Rumor};

/// The JSON accepted by `RumorInject`: `{"type": "service_config", ...}`. Text fields
/// (`cfg`, `config`, `body`) are UTF-8; `from_id` is set to the receiving member.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RumorRequest {
    Service {
        service_group: String,
        #[serde(default)]
        member_id: Option<String>,
        /// Ignored: the supervisor numbers its own rumors.
        #[serde(default)]
        incarnation: u64,
        #[serde(default)]
        package: String,
        #[serde(default)]
        cfg: String,
        #[serde(default)]
        initialized: bool,
    },
    ServiceConfig {
        service_group: String,
        /// Ignored: the supervisor numbers its own rumors.
        #[serde(default)]
        incarnation: u64,
        config: String,
        #[serde(default)]
        encrypted: bool,
    },
    ServiceFile {
        service_group: String,
        filename: String,
        /// Ignored: the supervisor numbers its own rumors.
        #[serde(default)]
        incarnation: u64,
        body: String,
        #[serde(default)]
        encrypted: bool,
    },
    Election(ElectionRequest),
    ElectionUpdate(ElectionRequest),
    Departure {
        member_id: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElectionRequest {
    pub service_group: String,
    pub member_id: String,
    pub term: u64,
    #[serde(default)]
    pub suitability: u64,
    /// "running", "no_quorum" or "finished".
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub votes: Vec<String>,
}

impl ElectionRequest {
    fn to_proto(&self, from: &str) -> Result<proto::ElectionRumor, String> {
        let status = match self.status.as_deref().unwrap_or("running") {
            "running" => proto::ElectionStatus::ElectionRunning,
            "no_quorum" => proto::ElectionStatus::ElectionNoQuorum,
            "finished" => proto::ElectionStatus::ElectionFinished,
            other => return Err(format!("unknown election status {other:?}")),
        };
        Ok(proto::ElectionRumor {
            from_id: from.to_string(),
            member_id: self.member_id.clone(),
            service_group: self.service_group.clone(),
            term: self.term,
            suitability: self.suitability,
            status: status as i32,
            votes: self.votes.clone(),
        })
    }
}

impl RumorRequest {
    /// Builds the rumor as member `from` says it.
    pub fn into_rumor(self, from: &str) -> Result<Rumor, String> {
        Ok(match self {
            RumorRequest::Service { service_group, member_id, incarnation, package, cfg, initialized } => {
                Rumor::Service(proto::ServiceRumor {
                    member_id: member_id.unwrap_or_else(|| from.to_string()),
                    service_group,
                    incarnation,
                    initialized,
                    package,
                    cfg: cfg.into_bytes(),
                    sys: None,
                    unloaded: false,
                })
            }
            RumorRequest::ServiceConfig { service_group, incarnation, config, encrypted } => {
                Rumor::ServiceConfig(proto::ServiceConfigRumor {
                    from_id: from.to_string(),
                    service_group,
                    incarnation,
                    encrypted,
                    config: config.into_bytes(),
                })
            }
            RumorRequest::ServiceFile { service_group, filename, incarnation, body, encrypted } => {
                Rumor::ServiceFile(proto::ServiceFileRumor {
                    from_id: from.to_string(),
                    service_group,
                    incarnation,
                    encrypted,
                    filename,
                    body: body.into_bytes(),
                })
            }
            RumorRequest::Election(e) => Rumor::Election(e.to_proto(from)?),
            RumorRequest::ElectionUpdate(e) => Rumor::ElectionUpdate(e.to_proto(from)?),
            RumorRequest::Departure { member_id } => {
                member_id.parse::<MemberId>()?;
                Rumor::Departure(proto::DepartureRumor { member_id, departed_at: 0 })
            }
        })
    }
}
