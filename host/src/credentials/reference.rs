//! Credential references.
//!
//! The rule (documented for operators):
//! * `literal:VALUE` is always the literal `VALUE` (the escape for values that look routed);
//! * `SCHEME:rest`, where SCHEME is 1-32 of `[A-Z0-9_]` starting with an upper-case letter and
//!   the text before the *first* colon, is routed to the plugin serving SCHEME (pending, with an
//!   error shown, until such a plugin is loaded: a typo never silently becomes a literal secret);
//! * anything else is a literal: `hunter2`, `abc:def`, `http://x`, base64 values.
//!
//! Schemes are upper case, so `file:/run/secrets/x` is the literal string `file:/run/secrets/x`.
//! That is often a typo, so [`mistyped_scheme`] spots such literals and config loading warns
//! about them: eagerly for the secret keys, sparingly in service configs, where `file:` and
//! `unix:` URLs are ordinary values (the rule is on [`ValueKind`]). A warning never shows the
//! value, and names its prefix only when that is a well-known scheme.

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    Literal(String),
    Routed { scheme: String, full: String },
}

impl std::fmt::Debug for Reference {
    // Literals are secrets: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Literal(_) => f.write_str("Literal(<redacted>)"),
            Reference::Routed { full, .. } => write!(f, "Routed({full})"),
        }
    }
}

pub const LITERAL_PREFIX: &str = "literal:";

pub fn is_scheme(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.as_bytes()[0].is_ascii_uppercase()
        && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Scheme names common enough to be named in a warning, in any case (`vault:secret/x`). Any
/// other prefix is never quoted: it may be the first half of a password (`Tr0ub4dor:XYZ`).
const WELL_KNOWN_SCHEMES: &[&str] = &["file", "env", "vault", "literal"];

/// The well-known schemes that warn in a service's config. Not `file`: `file:` is a real URL
/// scheme there (`file:/dev/./urandom` for Java's `securerandom.source`).
const SERVICE_CONFIG_SCHEMES: &[&str] = &["env", "vault", "literal"];

/// Where a config value sits, which decides how eagerly a prefix that is not upper case is
/// taken for a mistyped scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// `auth_token`, `ring_key`, `ctl_secret`: a secret or a reference, nothing else. Warn for
    /// a well-known scheme in any case (`file:x`, `Env:X`), and for any scheme-shaped prefix
    /// followed by a path (`myplugin:/x`, not a URL's `//`) or an environment-variable-like
    /// NAME (`custom:SOME_NAME`).
    Secret,
    /// `services.NAME.config.*`: ordinary service settings, where `file:/dev/./urandom` and
    /// `unix:/run/php-fpm.sock` are legitimate values that `FILE:`/`UNIX:` would break. Warn
    /// only for `env:`, `vault:` and `literal:` in a case other than the right one: those are
    /// no service's own syntax. A lower-case `file:` there is not caught; a mistyped one hands
    /// the service the string `file:...`, which fails visibly rather than leaking anything.
    ServiceConfig,
}

fn is_well_known(prefix: &str, schemes: &[&str]) -> bool {
    schemes.iter().any(|s| prefix.eq_ignore_ascii_case(s))
}

/// The scheme-like prefix of a literal that looks like a mistyped reference (`file:/x`,
/// `Env:HAB_TOKEN`, `vault:secret/data/x#f`), by the rule of `kind` (see [`ValueKind`]). The
/// prefix has a scheme's shape in any case (`[A-Za-z][A-Za-z0-9_]*`, at most 32) but is not
/// upper case. `abc:def`, `http://x`, `user:Passw0rd`, `literal:...` and routed references give
/// None. The prefix may be part of a secret: see [`mistyped_scheme_warning`] before showing it.
pub fn mistyped_scheme(text: &str, kind: ValueKind) -> Option<&str> {
    let (prefix, rest) = text.split_once(':')?;
    let shaped = prefix.len() <= 32
        && prefix.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !shaped || is_scheme(prefix) || text.starts_with(LITERAL_PREFIX) {
        return None;
    }
    let looks_routed = match kind {
        ValueKind::ServiceConfig => is_well_known(prefix, SERVICE_CONFIG_SCHEMES),
        ValueKind::Secret => {
            let path = rest.starts_with('/') && !rest.starts_with("//");
            let env_name = rest.as_bytes().first().is_some_and(u8::is_ascii_uppercase)
                && rest.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            is_well_known(prefix, WELL_KNOWN_SCHEMES) || path || env_name
        }
    };
    looks_routed.then_some(prefix)
}

/// The warning for a config value (`label`, e.g. "auth_token") that is a literal but looks
/// like a mistyped reference. It quotes the prefix only when it is a well-known scheme
/// (`file`, `env`, `vault`, `literal`, any case), never the rest of the value, and it says how
/// to keep the value as it is (`literal:`), which also silences the warning.
pub fn mistyped_scheme_warning(label: &str, text: &str, kind: ValueKind) -> Option<String> {
    let prefix = mistyped_scheme(text, kind)?;
    let what = "which is not a credential scheme (schemes are upper case), so the value is used as it is";
    if prefix.eq_ignore_ascii_case("literal") {
        return Some(format!(
            "{label}: the value starts with \"{prefix}:\", {what}, prefix included; write \"literal:\" in lower case to mark a literal"
        ));
    }
    if !is_well_known(prefix, WELL_KNOWN_SCHEMES) {
        return Some(format!(
            "{label}: the value starts with a scheme-like prefix that is not upper case, {what}; write the scheme in upper case to resolve it through the plugin serving it, or prefix the value with \"literal:\" to keep it as it is"
        ));
    }
    let upper = prefix.to_ascii_uppercase();
    Some(format!(
        "{label}: the value starts with \"{prefix}:\", {what}; write \"{upper}:...\" to resolve it through the plugin serving {upper}, or \"literal:{prefix}:...\" to keep it as it is"
    ))
}

impl Reference {
    pub fn parse(text: &str) -> Reference {
        if let Some(v) = text.strip_prefix(LITERAL_PREFIX) {
            return Reference::Literal(v.to_string());
        }
        match text.split_once(':') {
            Some((scheme, _)) if is_scheme(scheme) => {
                Reference::Routed { scheme: scheme.to_string(), full: text.to_string() }
            }
            _ => Reference::Literal(text.to_string()),
        }
    }

    /// What may be shown about the reference (never a literal's value).
    pub fn display(&self) -> &str {
        match self {
            Reference::Literal(_) => "literal",
            Reference::Routed { full, .. } => full,
        }
    }

    pub fn scheme(&self) -> Option<&str> {
        match self {
            Reference::Routed { scheme, .. } => Some(scheme),
            Reference::Literal(_) => None,
        }
    }

    /// The part after `SCHEME:`.
    pub fn rest(&self) -> Option<&str> {
        match self {
            Reference::Routed { scheme, full } => Some(&full[scheme.len() + 1..]),
            Reference::Literal(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_rule() {
        assert_eq!(
            Reference::parse("FILE:/run/secrets/a:b"),
            Reference::Routed { scheme: "FILE".into(), full: "FILE:/run/secrets/a:b".into() }
        );
        assert_eq!(Reference::parse("FILE:/x").rest(), Some("/x"));
        assert_eq!(Reference::parse("VAULT_KV2:p#f").scheme(), Some("VAULT_KV2"));
        for lit in ["hunter2", "abc:def", "http://x:1", "File:/x", "1ENV:x", ":x", "A B:c", "", "dGVzdA=="] {
            assert_eq!(Reference::parse(lit), Reference::Literal(lit.into()), "{lit}");
        }
        assert_eq!(Reference::parse("literal:ENV:HOME"), Reference::Literal("ENV:HOME".into()));
        assert_eq!(Reference::parse("literal:"), Reference::Literal(String::new()));
        assert_eq!(format!("{:?}", Reference::parse("hunter2")), "Literal(<redacted>)");
        assert_eq!(Reference::parse("hunter2").display(), "literal");
        assert!(!is_scheme(&"A".repeat(33)));
    }

    use ValueKind::{Secret, ServiceConfig};

    #[test]
    fn lower_case_schemes_are_spotted() {
        for (text, prefix) in [
            ("file:/run/x", "file"),
            ("File:/run/secrets/token", "File"),
            ("env:HAB_AUTH_TOKEN", "env"),
            ("Env:X", "Env"),
            ("vault:secret/data/redis#password", "vault"),
            ("Vault_KV2:/p", "Vault_KV2"),
            ("myplugin:/some/path", "myplugin"),
            ("custom:SOME_NAME_2", "custom"),
            ("Literal:abc", "Literal"),
        ] {
            assert_eq!(Reference::parse(text), Reference::Literal(text.into()), "{text} stays a literal");
            assert_eq!(mistyped_scheme(text, Secret), Some(prefix), "{text}");
        }
        for text in [
            "FILE:/run/x",        // a real reference
            "literal:file:/x",    // explicitly a literal
            "hunter2",            // no colon
            "abc:def",            // no path, no NAME
            "user:Passw0rd",      // mixed case after the colon
            "http://example.com", // a URL
            "https://a/b",        // a URL
            "1file:/x",           // not a scheme shape
            "my-plugin:/x",       // not a scheme shape
            ":/x",                // empty prefix
            "dGVzdA==",           // base64
            "a b:/x",             // space
        ] {
            assert_eq!(mistyped_scheme(text, Secret), None, "{text}");
            assert_eq!(mistyped_scheme(text, ServiceConfig), None, "{text}");
        }
        assert_eq!(mistyped_scheme(&format!("{}:/x", "a".repeat(33)), Secret), None);
    }

    #[test]
    fn service_config_values_warn_only_for_env_vault_and_literal() {
        for (text, prefix) in [
            ("env:REDIS_PASSWORD", "env"),
            ("Env:X", "Env"),
            ("vault:secret/data/redis#password", "vault"),
            ("VAULT:x", "VAULT"), // routed, so None below
            ("Literal:abc", "Literal"),
        ] {
            let expected = (!is_scheme(prefix)).then_some(prefix);
            assert_eq!(mistyped_scheme(text, ServiceConfig), expected, "{text}");
        }
        // Ordinary service values (Java's securerandom.source, a php-fpm socket, URLs, paths)
        // and prefixes the secret keys would warn about.
        for text in [
            "file:/dev/./urandom",
            "file:///etc/app/conf.xml",
            "File:/run/secrets/x",
            "unix:/run/php-fpm.sock",
            "jdbc:postgresql://db:5432/app",
            "redis://127.0.0.1:6379/0",
            "myplugin:/some/path",
            "custom:SOME_NAME_2",
            "user:PASSWORD",
        ] {
            assert_eq!(mistyped_scheme(text, ServiceConfig), None, "{text}");
            assert_eq!(mistyped_scheme_warning("services.app.config.x", text, ServiceConfig), None, "{text}");
        }
        assert_eq!(
            mistyped_scheme("file:/dev/./urandom", Secret),
            Some("file"),
            "the secret keys stay eager"
        );
    }

    #[test]
    fn the_warning_names_the_prefix_but_not_the_value() {
        let w = mistyped_scheme_warning("auth_token", "file:/run/s3cret-path", Secret).unwrap();
        assert!(w.starts_with("auth_token: the value starts with \"file:\""), "{w}");
        assert!(w.contains("FILE:...") && w.contains("\"literal:file:...\" to keep it as it is"), "{w}");
        assert!(!w.contains("s3cret"), "{w}");
        let w = mistyped_scheme_warning("services.a.config.pw", "env:TOP_SECRET", ServiceConfig).unwrap();
        assert!(w.contains("\"env:\"") && w.contains("ENV:...") && !w.contains("TOP_SECRET"), "{w}");
        let w = mistyped_scheme_warning("x", "Literal:v", Secret).unwrap();
        assert!(w.contains("\"literal:\" in lower case"), "{w}");
        assert_eq!(mistyped_scheme_warning("x", "ENV:HOME", Secret), None);
        assert_eq!(mistyped_scheme_warning("x", "literal:env:HOME", ServiceConfig), None);
    }

    #[test]
    fn a_password_shaped_like_a_reference_is_not_quoted() {
        // Passwords with a colon: the part before it matches the path or NAME heuristic.
        for (text, secret_parts) in [
            ("Tr0ub4dor:XYZ", &["Tr0ub4dor", "XYZ"][..]),
            ("user:PASSWORD", &["user:", "PASSWORD"]),
            ("s3cr3tPrefix:/half/of/it", &["s3cr3tPrefix", "half"]),
        ] {
            assert_eq!(mistyped_scheme_warning("services.a.config.pw", text, ServiceConfig), None, "{text}");
            let w = mistyped_scheme_warning("auth_token", text, Secret).expect("the secret keys warn");
            for part in secret_parts {
                assert!(!w.contains(part), "{text}: the warning shows {part:?}: {w}");
            }
            assert!(w.contains("a scheme-like prefix that is not upper case"), "{w}");
            assert!(w.contains("\"literal:\" to keep it as it is"), "{w}");
        }
    }
}
