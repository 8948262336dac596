//! `ENV:NAME` → the value of environment variable NAME as the host granted it through WASI.
//! Written against the guest SDK (`warren_plugin_guest`): the whole plugin is the trait below.

use warren_plugin_guest::{Credential, CredentialSource, Error, Reference, log};

warren_plugin_guest::manifest!();
warren_plugin_guest::credential_source!(Env, wit = "../../wit");

struct Env;

impl CredentialSource for Env {
    const SCHEMES: &'static [&'static str] = &["ENV"];

    fn resolve(r: Reference<'_>) -> Result<Credential, Error> {
        let name = r.rest;
        if name.contains('=') || name.contains('\0') {
            return Err(Error::invalid(format!("not an environment variable name: {name:?}")));
        }
        match std::env::var(name) {
            Ok(value) => {
                log::debug("resolved", &[("var", name)]);
                Ok(Credential::new(value))
            }
            Err(std::env::VarError::NotPresent) => Err(Error::not_found(format!(
                "environment variable {name} is not set or not granted to this plugin"
            ))),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::unavailable(format!("environment variable {name} is not valid UTF-8")))
            }
        }
    }
}
