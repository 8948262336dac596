//! [`SecretString`]: a string that may hold a secret (a token, a key file's text, a password)
//! and so never shows it in `Debug` output.
//!
//! What `Debug` shows:
//! * a plain secret ([`SecretString::new`], e.g. `--auth-token`, `WARREN_RING_KEY`):
//!   `<redacted>`, always;
//! * a config value that may be a credential reference ([`SecretString::reference`], e.g.
//!   `auth_token = ...` in sup.toml): `FILE:<…>` when it routes to a scheme, since which
//!   plugin serves it is useful and not secret (the rest is not shown: a path or vault key is
//!   none of a log's business), and `<redacted>` when it is a literal, `literal:...` included.
//!
//! There is no `Display` and no `Serialize`: reading the value is an explicit
//! [`SecretString::expose`]. The value is zeroized on drop.

use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

use crate::credentials::Reference;

#[derive(Clone)]
pub struct SecretString {
    value: Zeroizing<String>,
    /// A config value: a credential reference's scheme may be shown.
    may_be_reference: bool,
}

impl SecretString {
    /// A value that is always a secret.
    pub fn new(value: impl Into<String>) -> Self {
        SecretString { value: Zeroizing::new(value.into()), may_be_reference: false }
    }

    /// A config value that is a literal secret or a credential reference (`SCHEME:rest`).
    pub fn reference(value: impl Into<String>) -> Self {
        SecretString { value: Zeroizing::new(value.into()), may_be_reference: true }
    }

    /// The value itself. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.may_be_reference
            && let Some(scheme) = Reference::parse(&self.value).scheme()
        {
            return write!(f, "{scheme}:<…>");
        }
        f.write_str("<redacted>")
    }
}

/// Command-line values (clap builds `Option<SecretString>` through this): plain secrets.
impl From<String> for SecretString {
    fn from(value: String) -> Self {
        SecretString::new(value)
    }
}

/// Config-file values: literal or reference.
impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString::reference)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;
    use crate::config::SupConfig;

    const SECRET: &str = "hunter2-Sup3rSecret";

    fn assert_hidden(what: &str, debug: String) {
        assert!(!debug.contains(SECRET), "{what} shows the secret: {debug}");
        assert!(!debug.contains("Sup3r"), "{what} shows part of the secret: {debug}");
    }

    #[test]
    fn debug_never_shows_the_value() {
        assert_eq!(format!("{:?}", SecretString::new(SECRET)), "<redacted>");
        assert_eq!(format!("{:?}", SecretString::reference(SECRET)), "<redacted>");
        assert_eq!(format!("{:?}", SecretString::reference(format!("literal:{SECRET}"))), "<redacted>");
        // A plain secret that happens to look like a reference shows nothing either.
        assert_eq!(format!("{:?}", SecretString::new(format!("ABC:{SECRET}"))), "<redacted>");
        assert_eq!(format!("{:?}", SecretString::reference("FILE:/run/secrets/x")), "FILE:<…>");
        assert_eq!(format!("{:?}", Some(SecretString::reference("VAULT:a/b#c"))), "Some(VAULT:<…>)");
        assert_eq!(SecretString::new(SECRET).expose(), SECRET);
        assert_eq!(SecretString::reference(SECRET).clone().expose(), SECRET);
    }

    #[test]
    fn cli_structures_do_not_debug_print_secrets() {
        // `sup run --ring-key` and `sup status --auth-token` (the `Remote` args) through the parser.
        let ring_key = format!("SYM-SEC-1\nr-20200101000000\n\n{SECRET}");
        let cli = Cli::try_parse_from(["warren", "sup", "run", "--ring-key", &ring_key]).unwrap();
        assert_hidden("Cli(sup run --ring-key)", format!("{cli:?}"));
        let crate::cli::Command::Sup(crate::cli::sup::SupCommand::Run(run)) = &cli.command else {
            panic!("parsed as {cli:?}")
        };
        assert_eq!(run.ring_key.as_ref().map(SecretString::expose), Some(ring_key.as_str()));
        assert_hidden("RunArgs", format!("{run:?}"));

        let cli = Cli::try_parse_from(["warren", "sup", "status", "--auth-token", SECRET]).unwrap();
        assert_hidden("Cli(sup status --auth-token)", format!("{cli:?}"));
        let remote = crate::cli::remote::Remote {
            remote_http: "127.0.0.1:1".into(),
            auth_token: Some(SecretString::new(SECRET)),
        };
        assert_hidden("Remote", format!("{remote:?}"));
        let cli = Cli::try_parse_from(["warren", "credential", "resolve", SECRET]).unwrap();
        assert_hidden("Cli(credential resolve LITERAL)", format!("{cli:?}"));
    }

    #[test]
    fn config_and_ring_key_source_do_not_debug_print_secrets() {
        let toml = format!(
            "auth_token = \"{SECRET}\"\nring_key = \"literal:{SECRET}\"\nctl_secret = \"{SECRET}\"\n\
             some_future_key = \"{SECRET}\"\n\
             [services.redis]\nextra = \"{SECRET}\"\n[services.redis.config]\npassword = \"{SECRET}\"\n"
        );
        let config = SupConfig::parse(&toml, "sup.toml").unwrap();
        assert_eq!(config.auth_token.as_ref().map(SecretString::expose), Some(SECRET));
        assert_hidden("SupConfig", format!("{config:?}"));
        assert_hidden("SupConfig (pretty)", format!("{config:#?}"));
        let debug = format!("{config:?}");
        assert!(
            debug.contains("\"password\"") && debug.contains("\"some_future_key\""),
            "keys stay: {debug}"
        );

        let refs = SupConfig::parse("auth_token = \"FILE:/run/secrets/token\"\n", "t").unwrap();
        assert!(format!("{refs:?}").contains("auth_token: Some(FILE:<…>)"), "{refs:?}");

        let source = crate::sup::RingKeySource::Inline(SecretString::new(SECRET));
        assert_hidden("RingKeySource::Inline", format!("{source:?}"));
    }
}
