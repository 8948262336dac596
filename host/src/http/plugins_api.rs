//! `GET /plugins` and `GET /credentials`: what the plugin runtime loaded and how each
//! credential reference stands (version, fingerprint, last error — never a value).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::plugins::PluginRuntime;

pub fn routes(runtime: Arc<PluginRuntime>) -> Router {
    Router::new()
        .route("/plugins", get(|State(rt): State<Arc<PluginRuntime>>| async move { Json(rt.plugins_json()) }))
        .route(
            "/credentials",
            get(|State(rt): State<Arc<PluginRuntime>>| async move { Json(rt.credentials_json()) }),
        )
        .with_state(runtime)
}
