//! Gateway routes: `GET /plugins` and `GET /credentials`, for `http::build(auth, parts)`.
//! Both only read registry/resolver state (no plugin call), so they never block.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::PluginRuntime;

pub fn routes(runtime: Arc<PluginRuntime>) -> Router {
    Router::new()
        .route("/plugins", get(|State(rt): State<Arc<PluginRuntime>>| async move { Json(rt.plugins_json()) }))
        .route(
            "/credentials",
            get(|State(rt): State<Arc<PluginRuntime>>| async move { Json(rt.credentials_json()) }),
        )
        .with_state(runtime)
}
