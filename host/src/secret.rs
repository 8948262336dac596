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

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use zeroize::Zeroizing;

use crate::credentials::reference::{LITERAL_PREFIX, is_scheme};

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
        // Borrowed checks only (no `Reference::parse`): Debug never copies the value into a
        // String that would not be zeroized.
        if self.may_be_reference
            && !self.value.starts_with(LITERAL_PREFIX)
            && let Some((scheme, _)) = self.value.split_once(':')
            && is_scheme(scheme)
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
        // `deserialize_any`, not `String::deserialize`: serde's own type errors quote the value
        // ("invalid type: integer `12345678`, expected a string"), and so would a buffered
        // (`#[serde(flatten)]`) deserializer's `deserialize_string`. Every non-string lands in
        // one of the visitor's methods below, which never echo it.
        d.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

const NOT_A_STRING: &str = "a secret or credential reference must be a quoted string (value not shown)";

/// The error for a value that is not a string; it never includes the value.
fn not_a_string<E: de::Error>() -> E {
    E::custom(NOT_A_STRING)
}

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = SecretString;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a quoted string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretString, E> {
        Ok(SecretString::reference(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<SecretString, E> {
        Ok(SecretString::reference(v))
    }

    // Every other shape: serde's defaults would quote the value in the error.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretString, E> {
        Err(not_a_string())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretString, E> {
        Err(not_a_string())
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<SecretString, E> {
        Err(not_a_string())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretString, E> {
        Err(not_a_string())
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<SecretString, E> {
        Err(not_a_string())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretString, E> {
        Err(not_a_string())
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<SecretString, E> {
        Err(not_a_string())
    }

    fn visit_none<E: de::Error>(self) -> Result<SecretString, E> {
        Err(not_a_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<SecretString, E> {
        Err(not_a_string())
    }

    fn visit_some<D: Deserializer<'de>>(self, _: D) -> Result<SecretString, D::Error> {
        Err(not_a_string())
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, _: D) -> Result<SecretString, D::Error> {
        Err(not_a_string())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<SecretString, A::Error> {
        Err(not_a_string())
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<SecretString, A::Error> {
        Err(not_a_string())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<SecretString, A::Error> {
        Err(not_a_string())
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

        let cli =
            Cli::try_parse_from(["warren", "sup", "status", "--remote-http", "h:1", "--auth-token", SECRET])
                .unwrap();
        assert_hidden("Cli(sup status --auth-token)", format!("{cli:?}"));
        let cli = Cli::try_parse_from(["warren", "cli", "setup", "--ctl-secret", SECRET]).unwrap();
        assert_hidden("Cli(cli setup --ctl-secret)", format!("{cli:?}"));
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
             [services.redis.config]\npassword = \"{SECRET}\"\n[services.redis.config.tls]\nkey = \"{SECRET}\"\n"
        );
        let config = SupConfig::parse(&toml, "sup.toml").unwrap();
        assert_eq!(config.auth_token.as_ref().map(SecretString::expose), Some(SECRET));
        assert_hidden("SupConfig", format!("{config:?}"));
        assert_hidden("SupConfig (pretty)", format!("{config:#?}"));
        let debug = format!("{config:?}");
        assert!(debug.contains("\"password\"") && debug.contains("\"tls\""), "keys stay: {debug}");
        // Unknown keys are refused, and the error does not show their values either.
        for unknown in
            [format!("some_future_key = \"{SECRET}\"\n"), format!("[services.redis]\nextra = \"{SECRET}\"\n")]
        {
            let err = SupConfig::parse(&unknown, "sup.toml").unwrap_err();
            assert_hidden("unknown-key error", format!("{err} {err:?}"));
        }

        let refs = SupConfig::parse("auth_token = \"FILE:/run/secrets/token\"\n", "t").unwrap();
        assert!(format!("{refs:?}").contains("auth_token: Some(FILE:<…>)"), "{refs:?}");

        let source = crate::sup::RingKeySource::Inline(SecretString::new(SECRET));
        assert_hidden("RingKeySource::Inline", format!("{source:?}"));
    }

    /// No 4-character window of any secret fragment may appear in an error about it.
    fn assert_no_part_of(fragments: &[&str], text: &str) {
        for fragment in fragments {
            let chars: Vec<char> = fragment.chars().collect();
            for w in chars.windows(4.min(chars.len())) {
                let part: String = w.iter().collect();
                assert!(!text.contains(&part), "the error shows {part:?} of {fragment:?}: {text}");
            }
        }
    }

    /// Values of every TOML type but string, each with the parts that must not be shown.
    const NOT_STRINGS: &[(&str, &[&str])] = &[
        ("12345678", &["12345678"]),
        ("-9876543210", &["9876543210"]),
        ("170141183460469231731687303715884105727", &["170141183460469231731687303715884105727"]),
        ("31415.92653", &["31415", "92653"]),
        ("6.02214076e23", &["02214076"]),
        ("true", &["true"]),
        ("false", &["false"]),
        ("[\"s3cr3t-elem\", 24681357]", &["s3cr3t-elem", "24681357"]),
        ("{ user = \"adm1n\", password = \"s3cr3t-tbl\" }", &["adm1n", "s3cr3t-tbl"]),
        ("1979-05-27T07:32:00Z", &["1979", "05-27", "07:32"]),
    ];

    #[test]
    fn a_non_string_secret_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        for (value, fragments) in NOT_STRINGS {
            for key in ["auth_token", "ring_key", "ctl_secret"] {
                let path = dir.path().join("sup.toml");
                std::fs::write(&path, format!("plugin_trust = \"warn\"\n{key} = {value}\n")).unwrap();
                let err = SupConfig::load(&path).unwrap_err().to_string();
                assert!(err.contains(NOT_A_STRING), "{key} = {value}: {err}");
                assert!(err.contains("line 2"), "{key} = {value}: {err}");
                assert_no_part_of(fragments, &err);
            }
        }
        // Without `#[serde(flatten)]` in the way, too (toml's own deserializer; its Display
        // quotes the line, hence `message()`, which is what `describe_toml_error` keeps).
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Direct {
            secret: SecretString,
        }
        for (value, fragments) in NOT_STRINGS {
            let err = toml::from_str::<Direct>(&format!("secret = {value}\n")).unwrap_err();
            let err = err.message();
            assert!(err.contains(NOT_A_STRING), "{value}: {err}");
            assert_no_part_of(fragments, err);
        }
        // Strings still load, quoted either way.
        let ok = SupConfig::parse("auth_token = 'ABC:x'\nctl_secret = \"12345678\"\n", "t").unwrap();
        assert_eq!(ok.ctl_secret.as_ref().map(SecretString::expose), Some("12345678"));
        assert_eq!(format!("{:?}", ok.auth_token), "Some(ABC:<…>)");
    }
}
