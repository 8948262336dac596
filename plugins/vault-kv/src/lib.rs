//! `VAULT:secret/data/myapp#password` → field `password` of the KV v2 secret at
//! `GET {VAULT_ADDR}/v1/secret/data/myapp`, authenticated with `X-Vault-Token: {VAULT_TOKEN}`.
//!
//! `VAULT_ADDR` is `host:port` (default `127.0.0.1:8200`); an `http://` or `https://` prefix
//! is accepted. The response's `lease_duration` (when positive) becomes the TTL, otherwise
//! [`DEFAULT_TTL_SECONDS`]: KV secrets have no watch path, so the host re-resolves on expiry.

wit_bindgen::generate!({ path: "../../wit", world: "credential-source" });
warren_plugin_guest::manifest!();

use exports::warren::plugin::credentials::Guest;
use warren::plugin::host::{Level, log};
use warren::plugin::types::{Credential, CredentialError};
use warren_plugin_guest_http as http;

const DEFAULT_ADDR: &str = "127.0.0.1:8200";
const DEFAULT_TTL_SECONDS: u32 = 300;
const HTTP_TIMEOUT_MS: u64 = 4000;
const MAX_BODY: usize = 1 << 20;

struct VaultKv;

/// Split `VAULT_ADDR` into (https, authority).
fn parse_addr(addr: &str) -> Result<(bool, &str), CredentialError> {
    let (https, rest) = if let Some(r) = addr.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = addr.strip_prefix("http://") {
        (false, r)
    } else {
        (false, addr)
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(CredentialError::Unavailable(format!("VAULT_ADDR must be host:port, got {addr:?}")));
    }
    Ok((https, authority))
}

/// Characters allowed unescaped in a Vault path: keep it simple and refuse the rest.
fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'@'))
}

/// Pull `field` out of a KV v2 (`data.data.field`) or KV v1 (`data.field`) response.
fn extract(body: &[u8], field: &str, path: &str) -> Result<(String, Option<u64>), CredentialError> {
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| CredentialError::Unavailable(format!("Vault response for {path} is not JSON: {e}")))?;
    let data = doc
        .get("data")
        .ok_or_else(|| CredentialError::Unavailable(format!("Vault response for {path} has no data")))?;
    let fields = match data.get("data") {
        Some(inner) if inner.is_object() => inner,
        Some(serde_json::Value::Null) => {
            return Err(CredentialError::NotFound(format!("{path}: secret version deleted")));
        }
        _ => data,
    };
    let value = match fields.get(field) {
        None => {
            return Err(CredentialError::NotFound(format!("{path}: no field {field:?}")));
        }
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let lease = doc.get("lease_duration").and_then(serde_json::Value::as_u64);
    Ok((value, lease))
}

impl Guest for VaultKv {
    fn schemes() -> Vec<String> {
        vec!["VAULT".to_string()]
    }

    fn resolve(reference: String) -> Result<Credential, CredentialError> {
        let rest = warren_plugin_guest::split_reference(&reference, "VAULT")
            .map_err(|e| CredentialError::InvalidReference(e.to_string()))?;
        let Some((path, field)) = rest.split_once('#') else {
            return Err(CredentialError::InvalidReference(
                "expected VAULT:mount/data/path#field".to_string(),
            ));
        };
        if !valid_path(path) || field.is_empty() {
            return Err(CredentialError::InvalidReference(format!(
                "expected VAULT:mount/data/path#field, got {rest:?}"
            )));
        }
        let addr = std::env::var("VAULT_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_string());
        let (https, authority) = parse_addr(&addr)?;
        let token = std::env::var("VAULT_TOKEN").map_err(|_| {
            CredentialError::Denied("VAULT_TOKEN is not set or not granted to this plugin".into())
        })?;
        let url_path = format!("/v1/{path}");
        let response = http::get(&http::Request {
            https,
            authority,
            path_with_query: &url_path,
            headers: &[("x-vault-token", token.as_bytes()), ("accept", b"application/json")],
            timeout_ms: HTTP_TIMEOUT_MS,
            max_body: MAX_BODY,
        })
        .map_err(|e| match e {
            http::Error::Denied(m) => {
                CredentialError::Denied(format!("{authority}: {m} (not in granted http_hosts?)"))
            }
            http::Error::Invalid(m) => CredentialError::InvalidReference(m),
            http::Error::Transport(m) => CredentialError::Unavailable(format!("{authority}: {m}")),
        })?;
        log(
            Level::Debug,
            "vault response",
            &[("path".into(), path.into()), ("status".into(), response.status.to_string())],
        );
        match response.status {
            200 => {}
            404 => return Err(CredentialError::NotFound(format!("{path}: no such secret"))),
            401 | 403 => {
                return Err(CredentialError::Denied(format!(
                    "{path}: Vault answered {} (token lacks access)",
                    response.status
                )));
            }
            s => {
                return Err(CredentialError::Unavailable(format!("{path}: Vault answered {s}")));
            }
        }
        let (value, lease) = extract(&response.body, field, path)?;
        let ttl =
            lease.filter(|&l| l > 0).map_or(DEFAULT_TTL_SECONDS, |l| u32::try_from(l).unwrap_or(u32::MAX));
        Ok(Credential { value, ttl_seconds: Some(ttl), watch_paths: Vec::new() })
    }
}

export!(VaultKv);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv2_and_kv1() {
        let v2 = br#"{"lease_duration":0,"data":{"data":{"password":"s3cr3t","n":5},"metadata":{}}}"#;
        assert_eq!(extract(v2, "password", "p").unwrap(), ("s3cr3t".to_string(), Some(0)));
        assert_eq!(extract(v2, "n", "p").unwrap().0, "5");
        assert!(matches!(extract(v2, "nope", "p"), Err(CredentialError::NotFound(_))));
        let v1 = br#"{"lease_duration":60,"data":{"password":"x"}}"#;
        assert_eq!(extract(v1, "password", "p").unwrap(), ("x".to_string(), Some(60)));
        assert!(matches!(extract(b"nope", "password", "p"), Err(CredentialError::Unavailable(_))));
    }

    #[test]
    fn paths_and_addrs() {
        assert!(valid_path("secret/data/myapp"));
        assert!(!valid_path("/secret"));
        assert!(!valid_path("secret/../sys"));
        assert!(!valid_path("secret/a?b"));
        assert_eq!(parse_addr("http://v:8200/").unwrap(), (false, "v:8200"));
        assert_eq!(parse_addr("https://v:8200").unwrap(), (true, "v:8200"));
        assert_eq!(parse_addr("127.0.0.1:8200").unwrap(), (false, "127.0.0.1:8200"));
    }
}
