//! The ring's routes, all read-only (as Habitat's gateway is): /butterfly, /census, /metrics
//! and GET /ring/keys. Every change (rumors, departures, ring keys) goes through the ctl
//! gateway, which authenticates with CTL_SECRET over an encrypted channel.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ring::RingHandle;

/// What the ring routes need.
#[derive(Clone)]
pub struct RingApi {
    pub ring: RingHandle,
    /// The ctl gateway's counters, appended to `/metrics`.
    pub ctl_metrics: Option<std::sync::Arc<crate::ctl::CtlMetrics>>,
    /// The census, kept current from ring events by its own task.
    pub census: tokio::sync::watch::Receiver<std::sync::Arc<crate::groups::census::Census>>,
    /// The service groups' gossiped config and file counters, appended to `/metrics`.
    pub group_metrics: Option<std::sync::Arc<crate::groups::metrics::GroupMetrics>>,
    /// This member's elections: their views override the store's rumors in `/census`.
    pub elections: crate::election::Elections,
}

pub fn routes(api: RingApi) -> Router {
    Router::new()
        .route("/butterfly", get(butterfly))
        .route("/census", get(census))
        .route("/metrics", get(metrics))
        .route("/ring/keys", get(list_keys))
        .with_state(api)
}

// Views are built from the ring's published status and the mirror of its rumors, on the
// gateway's threads: a request never waits for (or holds up) the ring's loop.
async fn butterfly(State(api): State<RingApi>) -> Response {
    let status = api.ring.status();
    axum::Json(api.ring.with_rumors(|s| super::views::butterfly_from(&status.members, s))).into_response()
}

async fn census(State(api): State<RingApi>) -> Response {
    let census = api.census.borrow().clone();
    let views = api.elections.views().borrow().clone();
    axum::Json(census.to_json_with(&views)).into_response()
}

async fn metrics(State(api): State<RingApi>) -> Response {
    let status = api.ring.status();
    let m = api.ring.metrics();
    let mut body = api.ring.with_rumors(|s| super::views::metrics(&status, s, &m));
    if let Some(ctl) = &api.ctl_metrics {
        body.push_str(&ctl.render());
    }
    if let Some(groups) = &api.group_metrics {
        body.push_str(&groups.render());
    }
    body.push_str(&api.elections.metrics().render());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn list_keys(State(api): State<RingApi>) -> Response {
    axum::Json(api.ring.status().keys.clone()).into_response()
}
