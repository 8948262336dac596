//! Credentials: references (`literal` or `SCHEME:rest`) resolved through credential-source
//! plugins, cached with TTLs, re-resolved when watched paths change, and published to consumers
//! (tokio watch channels) without a restart.

pub mod reference;
pub mod resolver;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

pub use reference::Reference;
pub use resolver::CredentialResolver;
pub use store::{CredentialStatus, CredentialStore, CredentialValue, Failure, Resolved};

use crate::plugins::{CredentialError as GuestError, PluginError, PluginRegistry};

/// Why a reference could not be resolved. Messages never contain the value.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "no loaded plugin serves scheme {scheme} (prefix the value with \"literal:\" if it is a literal)"
    )]
    NoPlugin { scheme: String },
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("denied: {0}")]
    Denied(String),
    #[error("invalid reference: {0}")]
    InvalidReference(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("credential watcher: {0}")]
    Watch(String),
}

/// Resolves a reference once through the registry (no caching).
pub fn resolve_once(registry: &PluginRegistry, reference: &str) -> Result<Resolved, ResolveError> {
    match Reference::parse(reference) {
        Reference::Literal(v) => Ok(Resolved { value: v.into(), ttl: None, watch_paths: Vec::new() }),
        Reference::Routed { scheme, full } => {
            let source = registry.get_credential_source(&scheme).ok_or(ResolveError::NoPlugin { scheme })?;
            match source.resolve(&full)? {
                Ok(c) => Ok(Resolved {
                    value: c.value.into(),
                    ttl: c.ttl_seconds.map(|s| Duration::from_secs(u64::from(s))),
                    // Only absolute paths can be watched; a plugin cannot make us watch "."
                    watch_paths: c
                        .watch_paths
                        .into_iter()
                        .map(PathBuf::from)
                        .filter(|p| p.is_absolute())
                        .take(16)
                        .collect(),
                }),
                Err(GuestError::NotFound(m)) => Err(ResolveError::NotFound(m)),
                Err(GuestError::Denied(m)) => Err(ResolveError::Denied(m)),
                Err(GuestError::InvalidReference(m)) => Err(ResolveError::InvalidReference(m)),
                Err(GuestError::Unavailable(m)) => Err(ResolveError::Unavailable(m)),
            }
        }
    }
}
