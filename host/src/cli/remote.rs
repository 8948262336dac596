//! `--remote-http` / `--auth-token`: how the CLI reaches a running supervisor's HTTP gateway.

use std::time::Duration;

use anyhow::bail;
use clap::Args;

use crate::http::{AUTH_TOKEN_ENV, client};
use crate::secret::SecretString;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// The supervisor's HTTP gateway, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9631")]
    pub remote_http: String,
    /// The gateway's bearer token.
    #[arg(long, env = AUTH_TOKEN_ENV, hide_env_values = true)]
    pub auth_token: Option<SecretString>,
}

impl Remote {
    /// One request; a non-2xx reply becomes an error carrying the gateway's `{"error": ...}`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> anyhow::Result<serde_json::Value> {
        let resp = client::request(
            &self.remote_http,
            method,
            path,
            self.auth_token.as_ref().map(SecretString::expose),
            body,
            TIMEOUT,
        )?;
        check(resp, &format!("{method} {path} on {}", self.remote_http))
    }
}

/// Checks a gateway reply, turning its `{"error": ...}` into a message.
pub fn check(resp: client::Response, what: &str) -> anyhow::Result<serde_json::Value> {
    let json = resp.json().unwrap_or(serde_json::Value::Null);
    if !resp.is_success() {
        let msg =
            json.get("error").and_then(|e| e.as_str()).map(str::to_string).unwrap_or_else(|| resp.text());
        bail!("{what}: HTTP {}: {}", resp.status, msg.trim());
    }
    Ok(json)
}
