//! Optional bearer token in front of the gateway, compared in constant time. The token can
//! come from a credential reference (`auth_token = "FILE:..."`), so it is read from a watch
//! channel on every request and rotates without a restart.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::crypto::sodium::ct_eq;

/// The gateway's bearer token. Debug output never shows it.
#[derive(Clone)]
pub struct AuthToken(Arc<Zeroizing<String>>);

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

impl AuthToken {
    /// None for an empty or blank token: callers decide what that means (the supervisor
    /// refuses one from the config or the environment, and fails closed on a credential).
    pub fn new(token: &str) -> Option<Self> {
        let t = token.trim();
        (!t.is_empty()).then(|| AuthToken(Arc::new(Zeroizing::new(t.to_string()))))
    }

    pub fn matches(&self, presented: &str) -> bool {
        ct_eq(self.0.as_bytes(), presented.as_bytes())
    }
}

/// What the gateway demands right now.
#[derive(Clone, Debug)]
pub enum GatewayAuth {
    /// No token configured: every request is served.
    Open,
    Token(AuthToken),
    /// A token is configured but its reference has not resolved yet: fail closed.
    Unavailable,
}

/// The gateway's current auth requirement; senders update it when a credential rotates.
pub type AuthState = watch::Receiver<GatewayAuth>;

/// A requirement that never changes (a token from the environment, or none).
pub fn fixed(token: Option<AuthToken>) -> AuthState {
    watch::channel(token.map_or(GatewayAuth::Open, GatewayAuth::Token)).1
}

pub async fn require_token(State(auth): State<AuthState>, req: Request, next: Next) -> Response {
    let current = auth.borrow().clone();
    if let GatewayAuth::Unavailable = current {
        return (StatusCode::SERVICE_UNAVAILABLE, "the gateway's auth token is not available yet\n")
            .into_response();
    }
    if let GatewayAuth::Token(token) = current {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !token.matches(presented) {
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "unauthorized\n")
                .into_response();
        }
    }
    next.run(req).await
}
