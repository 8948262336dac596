//! The ring's routes: /butterfly, /census, /metrics, POST /rumors, POST /departures and the
//! /ring/keys API behind `warren ring key install|use|remove|list`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};

use crate::crypto::{KeyCache, KeyFile, KeyId, KeyKind, RingKey};
use crate::ring::proto;
use crate::ring::{MemberId, RingHandle, Rumor};

/// What the ring routes need.
#[derive(Clone)]
pub struct RingApi {
    pub ring: RingHandle,
    /// Where `ring key install|remove` write, when the ring was started from the key cache.
    pub cache: Option<KeyCache>,
    /// The ctl gateway's counters, appended to `/metrics`.
    pub ctl_metrics: Option<std::sync::Arc<crate::ctl::CtlMetrics>>,
}

pub fn routes(api: RingApi) -> Router {
    Router::new()
        .route("/butterfly", get(butterfly))
        .route("/census", get(census))
        .route("/metrics", get(metrics))
        .route("/rumors", post(inject))
        .route("/departures", post(depart))
        .route("/ring/keys", get(list_keys).post(install_key))
        .route("/ring/keys/primary", post(use_key))
        .route("/ring/keys/{id}", delete(remove_key))
        .with_state(api)
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, axum::Json(serde_json::json!({ "error": msg.to_string() }))).into_response()
}

async fn butterfly(State(api): State<RingApi>) -> Response {
    axum::Json(api.ring.with_core(|c| super::views::butterfly(c))).into_response()
}

async fn census(State(api): State<RingApi>) -> Response {
    axum::Json(api.ring.with_core(|c| super::views::census(c))).into_response()
}

async fn metrics(State(api): State<RingApi>) -> Response {
    let mut body = api.ring.with_core(|c| super::views::metrics(c));
    if let Some(ctl) = &api.ctl_metrics {
        body.push_str(&ctl.render());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// The JSON accepted by `POST /rumors`: `{"type": "service_config", ...}`. Text fields
/// (`cfg`, `config`, `body`) are UTF-8; `from_id` is set to the receiving member.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RumorRequest {
    Service {
        service_group: String,
        #[serde(default)]
        member_id: Option<String>,
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
        incarnation: u64,
        config: String,
        #[serde(default)]
        encrypted: bool,
    },
    ServiceFile {
        service_group: String,
        filename: String,
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
                Rumor::Departure(proto::DepartureRumor { member_id })
            }
        })
    }
}

async fn inject(State(api): State<RingApi>, body: axum::body::Bytes) -> Response {
    let req: RumorRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let me = api.ring.with_core(|c| c.identity().id.to_string());
    let rumor = match req.into_rumor(&me) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match api.ring.inject(rumor) {
        Ok(news) => axum::Json(serde_json::json!({ "news": news })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
struct DepartRequest {
    member_id: String,
}

async fn depart(State(api): State<RingApi>, axum::Json(req): axum::Json<DepartRequest>) -> Response {
    let id: MemberId = match req.member_id.parse() {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match api.ring.with_core(|c| c.depart(id)) {
        Ok(news) => axum::Json(serde_json::json!({ "news": news })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn list_keys(State(api): State<RingApi>) -> Response {
    axum::Json(api.ring.with_core(|c| c.keyring().list())).into_response()
}

/// Body: the text of a SYM-SEC-1 key file.
async fn install_key(State(api): State<RingApi>, body: axum::body::Bytes) -> Response {
    let file = match KeyFile::parse(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let key = match RingKey::try_from(&file) {
        Ok(k) => k,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let primary_name = api.ring.with_core(|c| c.keyring().primary_id().map(|k| k.name.clone()));
    match primary_name {
        None => return error(StatusCode::CONFLICT, crate::ring::wire::KeyringError::Unencrypted),
        Some(name) if name != key.id.name => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("this ring's keys are named {name:?}; refusing a key named {:?}", key.id.name),
            );
        }
        Some(_) => {}
    }
    if let Some(cache) = &api.cache
        && let Err(e) = cache.write(&file)
    {
        return error(StatusCode::CONFLICT, e);
    }
    let id = key.id.to_string();
    match api.ring.with_core(|c| c.keyring_mut().install(key)) {
        Ok(added) => {
            tracing::info!(key = %id, "ring key installed");
            axum::Json(serde_json::json!({ "id": id, "added": added })).into_response()
        }
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

#[derive(Deserialize, Serialize)]
pub struct UseKey {
    pub id: String,
}

async fn use_key(State(api): State<RingApi>, axum::Json(req): axum::Json<UseKey>) -> Response {
    let id: KeyId = match req.id.parse() {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match api.ring.with_core(|c| c.keyring_mut().use_key(&id)) {
        Ok(()) => {
            api.ring.save_state();
            tracing::info!(key = %id, "ring key is now primary");
            axum::Json(serde_json::json!({ "primary": id.to_string() })).into_response()
        }
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

async fn remove_key(State(api): State<RingApi>, Path(id): Path<String>) -> Response {
    let id: KeyId = match id.parse() {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match api.ring.with_core(|c| c.keyring_mut().remove(&id)) {
        Ok(_) => {}
        Err(e @ crate::ring::wire::KeyringError::NotInstalled(_)) => return error(StatusCode::NOT_FOUND, e),
        Err(e) => return error(StatusCode::CONFLICT, e),
    }
    if let Some(cache) = &api.cache {
        let path = cache.dir().join(format!("{id}.{}", KeyKind::SymSecret.extension()));
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{}: {e}", path.display()));
        }
    }
    tracing::info!(key = %id, "ring key removed");
    axum::Json(serde_json::json!({ "removed": id.to_string() })).into_response()
}
