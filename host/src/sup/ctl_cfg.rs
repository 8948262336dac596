//! The service-group requests of the ctl gateway (Habitat's SvcValidateCfg, SvcSetCfg,
//! SvcFilePut): checked here before anything is gossiped, then spread by the ring at the
//! version the client chose. Unlike Habitat, the reply says what happened: an old version is a
//! `Conflict` naming the current one (#3009), and success means the rumor is in the ring.

use crate::ctl::proto::{self, ErrCode, NetErr};
use crate::ctl::{Reply, ReplySink};
use crate::groups::ServiceGroup;
use crate::groups::payload::{self, PayloadError};
use crate::ring::proto as ring_proto;
use crate::ring::rumor::RumorError;
use crate::ring::{RingHandle, Rumor};

fn err(code: ErrCode, msg: impl std::fmt::Display) -> NetErr {
    NetErr::new(code, msg.to_string())
}

fn required<T>(v: Option<T>, field: &str) -> Result<T, NetErr> {
    v.ok_or_else(|| err(ErrCode::UpdateClient, format!("client out of date: {field} is missing")))
}

fn bad(e: PayloadError) -> NetErr {
    err(ErrCode::InvalidPayload, e)
}

/// The group of a request, checked as Habitat names groups.
pub fn group_of(g: Option<proto::ServiceGroup>) -> Result<ServiceGroup, NetErr> {
    let g = required(g, "service_group")?;
    ServiceGroup::new(&g.service, &g.group, g.organization.as_deref().filter(|o| !o.is_empty()))
        .map_err(|e| err(ErrCode::InvalidPayload, e))
}

pub fn group_to_proto(g: &ServiceGroup) -> proto::ServiceGroup {
    proto::ServiceGroup { service: g.service.clone(), group: g.group.clone(), organization: g.org.clone() }
}

/// The group-payload requests, answered for one supervisor.
pub struct GroupCtl<'a> {
    pub ring: &'a RingHandle,
    /// `sup run --org`: this supervisor (like every other of its org) refuses plaintext for
    /// its org's groups, so the gateway says so rather than gossip what all will drop.
    pub org: Option<&'a str>,
}

impl GroupCtl<'_> {
    /// `SvcValidateCfg`: TOML within the limit (only TOML exists in Habitat's protocol).
    pub fn validate(&self, r: proto::SvcValidateCfg) -> Result<Reply, NetErr> {
        group_of(r.service_group)?;
        payload::check_config(&required(r.cfg, "cfg")?).map_err(bad)?;
        Ok(Reply::ok())
    }

    pub async fn set_cfg(&self, r: proto::SvcSetCfg, out: &ReplySink) -> Result<Reply, NetErr> {
        let group = group_of(r.service_group)?;
        let version = required(r.version, "version")?;
        let cfg = required(r.cfg, "cfg")?;
        let encrypted = r.is_encrypted.unwrap_or(false);
        self.check(&group, &cfg, encrypted, |b| payload::check_config(b).map(drop))?;
        let rumor = Rumor::ServiceConfig(ring_proto::ServiceConfigRumor {
            from_id: String::new(),
            service_group: group.to_string(),
            incarnation: version,
            encrypted,
            config: cfg,
        });
        self.publish(rumor, &group, version).await?;
        let how = if encrypted { "encrypted" } else { "plaintext" };
        let _ = out
            .line(format!("Applied {how} configuration version {version} to {group}: it is spreading"))
            .await;
        Ok(Reply::ok())
    }

    pub async fn file_put(&self, r: proto::SvcFilePut, out: &ReplySink) -> Result<Reply, NetErr> {
        let group = group_of(r.service_group)?;
        let version = required(r.version, "version")?;
        let filename = required(r.filename, "filename")?;
        payload::check_file_name(&filename).map_err(bad)?;
        let body = required(r.content, "content")?;
        let encrypted = r.is_encrypted.unwrap_or(false);
        self.check(&group, &body, encrypted, |b| payload::check_size("the file", b))?;
        let rumor = Rumor::ServiceFile(ring_proto::ServiceFileRumor {
            from_id: String::new(),
            service_group: group.to_string(),
            incarnation: version,
            encrypted,
            filename: filename.clone(),
            body,
        });
        self.publish(rumor, &group, version).await?;
        let how = if encrypted { "encrypted" } else { "plaintext" };
        let _ = out
            .line(format!("Uploaded {how} file {filename} version {version} to {group}: it is spreading"))
            .await;
        Ok(Reply::ok())
    }

    /// An encrypted payload must be BOX-1 to the group; a plaintext one passes `plain` and is
    /// refused for a group of this supervisor's own org.
    fn check(
        &self,
        group: &ServiceGroup,
        bytes: &[u8],
        encrypted: bool,
        plain: impl Fn(&[u8]) -> Result<(), PayloadError>,
    ) -> Result<(), NetErr> {
        if encrypted {
            payload::check_sealed(bytes, group).map_err(bad)?;
            return Ok(());
        }
        if crate::crypto::boxes::BoxMessage::is_encrypted(bytes) {
            return Err(err(
                ErrCode::InvalidPayload,
                "the payload is a BOX-1 message but was sent as plaintext",
            ));
        }
        plain(bytes).map_err(bad)?;
        if let (Some(mine), Some(theirs)) = (self.org, group.org.as_deref())
            && mine == theirs
        {
            return Err(err(
                ErrCode::InvalidPayload,
                format!(
                    "{group} belongs to org {mine}: its supervisors accept only encrypted payloads \
                     (add --user USER, with USER's secret key and {group}'s public key in the key cache)"
                ),
            ));
        }
        Ok(())
    }

    async fn publish(&self, rumor: Rumor, group: &ServiceGroup, version: u64) -> Result<(), NetErr> {
        let published = self
            .ring
            .publish(rumor)
            .await
            .map_err(|_| err(ErrCode::Internal, "the supervisor is shutting down"))?;
        match published {
            Ok(_) => {
                tracing::info!(group = %group, version, "service group payload published");
                Ok(())
            }
            Err(e @ (RumorError::StaleVersion { .. } | RumorError::VersionZero)) => {
                Err(err(ErrCode::Conflict, format!("{group}: {e}")))
            }
            Err(e) => Err(err(ErrCode::InvalidPayload, format!("{group}: {e}"))),
        }
    }
}
