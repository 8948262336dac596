//! `GET /services`, `/services/{svc}/{group}[/{org}]` and their `/config` and `/health`, as
//! Habitat's gateway answers them (components/sup/doc/api.yaml): read from the services
//! subsystem at each request, rendered by [`super::services_view`].

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::services_view::{self, Clock, Context};
use crate::services::backoff::BackoffPolicy;
use crate::services::hooks::Hook;
use crate::services::{ServiceInfo, Services};

/// What the services routes need.
#[derive(Clone)]
pub struct ServicesApi {
    pub services: Services,
    pub data_path: PathBuf,
    /// Habitat's `sys` of a service (the supervisor's addresses, member id, version).
    pub sys: Value,
    pub policy: BackoffPolicy,
}

pub fn routes(api: ServicesApi) -> Router {
    // A literal segment wins over a parameter, so `…/config` and `…/health` are never read as
    // an org (as in Habitat, an org named "config" cannot be asked for).
    Router::new()
        .route("/services", get(list))
        .route("/services/{svc}/{group}", get(one))
        .route("/services/{svc}/{group}/config", get(config))
        .route("/services/{svc}/{group}/health", get(health))
        .route("/services/{svc}/{group}/{org}", get(one))
        .route("/services/{svc}/{group}/{org}/config", get(config))
        .route("/services/{svc}/{group}/{org}/health", get(health))
        .with_state(api)
}

/// The path's service group, with or without an org.
#[derive(serde::Deserialize)]
struct Group {
    svc: String,
    group: String,
    org: Option<String>,
}

impl ServicesApi {
    fn context(&self) -> Context {
        Context {
            data_path: self.data_path.clone(),
            sys: self.sys.clone(),
            policy: self.policy,
            clock: Clock::read(),
        }
    }
}

/// Habitat's answer while the supervisor cannot say (api.yaml: 503).
fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "the services subsystem is not running; try again later\n")
        .into_response()
}

/// The hooks the service's rendered `hooks/` holds.
fn hooks_of(info: &ServiceInfo) -> Vec<Hook> {
    let dir = info.detail.svc_dir.join("hooks");
    Hook::ALL.into_iter().filter(|h| dir.join(h.file_name()).is_file()).collect()
}

async fn list(State(api): State<ServicesApi>) -> Response {
    let Ok(all) = api.services.status().await else { return unavailable() };
    let ctx = api.context();
    let body: Vec<Value> = all.iter().map(|i| services_view::service(i, &hooks_of(i), &ctx)).collect();
    Json(body).into_response()
}

fn service_group(svc: &str, group: &str, org: Option<&str>) -> Option<String> {
    crate::groups::ServiceGroup::new(svc, group, org).ok().map(|g| g.to_string())
}

/// The loaded service of that group, or the response that says why there is none: 400 for a
/// malformed name, 404 when it is not loaded (warren's groups have no org, so an org never
/// matches), 503 when the subsystem is gone.
async fn find(api: &ServicesApi, g: &Group) -> Result<ServiceInfo, Response> {
    let Some(sg) = service_group(&g.svc, &g.group, g.org.as_deref()) else {
        return Err((StatusCode::BAD_REQUEST, "not a service group (SERVICE/GROUP[/ORG])\n").into_response());
    };
    let all = api.services.status().await.map_err(|_| unavailable())?;
    all.into_iter()
        .find(|i| i.view.group == sg)
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("service {sg} is not loaded\n")).into_response())
}

async fn one(State(api): State<ServicesApi>, Path(g): Path<Group>) -> Response {
    match find(&api, &g).await {
        Ok(info) => Json(services_view::service(&info, &hooks_of(&info), &api.context())).into_response(),
        Err(r) => r,
    }
}

/// The merged configuration as JSON (Habitat answers its service's `cfg`).
async fn config(State(api): State<ServicesApi>, Path(g): Path<Group>) -> Response {
    match find(&api, &g).await {
        Ok(info) => Json(services_view::cfg(&info)).into_response(),
        Err(r) => r,
    }
}

async fn health(State(api): State<ServicesApi>, Path(g): Path<Group>) -> Response {
    let info = match find(&api, &g).await {
        Ok(info) => info,
        Err(r) => return r,
    };
    match services_view::health(&info) {
        Some((code, body)) => {
            (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Json(body))
                .into_response()
        }
        // Habitat has no health data before the first check (and none while down here): 404.
        None => (StatusCode::NOT_FOUND, "no health check has run yet\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_groups_are_checked_as_habitat_names() {
        assert_eq!(service_group("web", "prod", None).as_deref(), Some("web.prod"));
        assert_eq!(service_group("web", "prod", Some("acme")).as_deref(), Some("web.prod@acme"));
        for (s, g, o) in
            [("", "default", None), ("a.b", "default", None), ("web", "x y", None), ("web", "d", Some(""))]
        {
            assert_eq!(service_group(s, g, o), None, "{s:?} {g:?} {o:?}");
        }
    }
}
