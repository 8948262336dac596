//! The HTTP gateway (default 0.0.0.0:9631): Habitat's /butterfly, /census, plus /metrics,
//! rumor injection and ring key management.
//!
//! The router is built from parts so other subsystems can add theirs:
//! `http::build(auth, vec![ring_api::routes(state), plugins_routes, ...])`. Every route except
//! `/` (liveness) sits behind the optional bearer token.

pub mod auth;
pub mod client;
pub mod ring_api;
pub mod views;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

pub use auth::AuthToken;

/// Environment variable holding the gateway's bearer token.
pub const AUTH_TOKEN_ENV: &str = "WARREN_GATEWAY_AUTH_TOKEN";

/// Merges route parts, puts them behind the token, and adds the public liveness route.
pub fn build(auth: Option<AuthToken>, parts: Vec<Router>) -> Router {
    let mut protected = Router::new();
    for p in parts {
        protected = protected.merge(p);
    }
    let protected = protected.layer(axum::middleware::from_fn_with_state(auth, auth::require_token));
    Router::new().route("/", get(|| async { "warren ok\n" })).merge(protected)
}

/// Serves `router` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
