//! The HTTP gateway (default 0.0.0.0:9631): Habitat's /butterfly, /census and /services, plus
//! /metrics, ring keys, /plugins and /credentials.
//!
//! The router is built from parts so other subsystems can add theirs:
//! `http::build(auth, vec![ring_api::routes(state), plugins_routes, ...])`. Every route except
//! `/` (liveness) sits behind the optional bearer token.

pub mod auth;
pub mod client;
pub mod plugins_api;
pub mod ring_api;
pub mod services_api;
pub mod services_view;
pub mod views;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

pub use auth::{AuthState, AuthToken, GatewayAuth};

/// Environment variable holding the gateway's bearer token.
pub const AUTH_TOKEN_ENV: &str = "WARREN_GATEWAY_AUTH_TOKEN";

/// The gateway's limits, in one place.
pub mod limits {
    use std::time::Duration;
    /// A client must send its request head within this.
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// A connection lives at most this long (a slow body, or an idle keep-alive).
    pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
    /// Largest request body (the gateway only reads, so bodies are tiny or absent).
    pub const MAX_BODY: usize = 64 * 1024;
    /// Connections served at once; more are closed on accept.
    pub const MAX_CONNECTIONS: usize = 256;
    /// After an accept error (out of descriptors), wait before accepting again.
    pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
}

/// Merges route parts, puts them behind the token, and adds the public liveness route.
pub fn build(auth: AuthState, parts: Vec<Router>) -> Router {
    let mut protected = Router::new();
    for p in parts {
        protected = protected.merge(p);
    }
    let protected = protected.layer(axum::middleware::from_fn_with_state(auth, auth::require_token));
    Router::new()
        .route("/", get(|| async { "warren ok\n" }))
        .merge(protected)
        .layer(axum::extract::DefaultBodyLimit::max(limits::MAX_BODY))
}

/// An open gateway (no token) reachable from other hosts shows the ring to anyone who can
/// reach it: say so at start, as the unencrypted ring does.
pub fn warn_if_open(auth: &AuthState, addr: std::net::SocketAddr) {
    if matches!(*auth.borrow(), GatewayAuth::Open) && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the HTTP gateway has no auth token and listens beyond loopback: anyone who can reach it \
             reads the ring's members, services and rumors (set auth_token, or --listen-http 127.0.0.1:9631)"
        );
    }
}

/// Serves `router` until `shutdown` resolves: HTTP/1.1 with a header timeout, a deadline per
/// connection and a cap on connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use std::sync::Arc;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits::MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            c = listener.accept() => match c {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(limits::ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!("HTTP gateway at its connection cap; closing a new connection");
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits::HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(limits::CONNECTION_DEADLINE, conn).await;
            drop(permit);
        });
    }
}
