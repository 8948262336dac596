//! `ENV:NAME` → the value of environment variable NAME as the host granted it through WASI.

wit_bindgen::generate!({ path: "../../wit", world: "credential-source" });
warren_plugin_guest::manifest!();

use exports::warren::plugin::credentials::Guest;
use warren::plugin::host::{Level, log};
use warren::plugin::types::{Credential, CredentialError};

struct Env;

impl Guest for Env {
    fn schemes() -> Vec<String> {
        vec!["ENV".to_string()]
    }

    fn resolve(reference: String) -> Result<Credential, CredentialError> {
        let name = warren_plugin_guest::split_reference(&reference, "ENV")
            .map_err(|e| CredentialError::InvalidReference(e.to_string()))?;
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(CredentialError::InvalidReference(format!(
                "not an environment variable name: {name:?}"
            )));
        }
        match std::env::var(name) {
            Ok(value) => {
                log(Level::Debug, "resolved", &[("var".into(), name.into())]);
                Ok(Credential { value, ttl_seconds: None, watch_paths: Vec::new() })
            }
            Err(std::env::VarError::NotPresent) => Err(CredentialError::NotFound(format!(
                "environment variable {name} is not set or not granted to this plugin"
            ))),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(CredentialError::Unavailable(format!("environment variable {name} is not valid UTF-8")))
            }
        }
    }
}

export!(Env);
