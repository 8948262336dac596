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
//! That is almost certainly a typo, so [`mistyped_scheme`] spots such literals and config
//! loading warns about them (naming the prefix only, never the rest of the value).

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

/// Scheme names that are common enough to warn about in any case (`vault:secret/x`).
const WELL_KNOWN_SCHEMES: &[&str] = &["file", "env", "vault", "literal"];

/// The scheme-like prefix of a literal that looks like a mistyped reference: `file:/x`,
/// `Env:HAB_TOKEN`, `vault:secret/data/x#f`. Its prefix has a scheme's shape in any case
/// (`[A-Za-z][A-Za-z0-9_]*`, at most 32) but is not upper case, and either names a well-known
/// scheme or is followed by a path (`/x`, not a URL's `//`) or an environment-variable-like
/// NAME. `abc:def`, `http://x`, `user:Passw0rd` and routed references give None.
pub fn mistyped_scheme(text: &str) -> Option<&str> {
    let (prefix, rest) = text.split_once(':')?;
    let shaped = prefix.len() <= 32
        && prefix.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !shaped || is_scheme(prefix) || text.starts_with(LITERAL_PREFIX) {
        return None;
    }
    let well_known = WELL_KNOWN_SCHEMES.iter().any(|s| prefix.eq_ignore_ascii_case(s));
    let path = rest.starts_with('/') && !rest.starts_with("//");
    let env_name = rest.as_bytes().first().is_some_and(u8::is_ascii_uppercase)
        && rest.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    (well_known || path || env_name).then_some(prefix)
}

/// The warning for a config value (`label`, e.g. "auth_token") that is a literal but looks
/// like a mistyped reference. It names the prefix only: the rest may be a real secret.
pub fn mistyped_scheme_warning(label: &str, text: &str) -> Option<String> {
    let prefix = mistyped_scheme(text)?;
    let upper = prefix.to_ascii_uppercase();
    let fix = if prefix.eq_ignore_ascii_case("literal") {
        "write \"literal:\" in lower case to mark a literal".to_string()
    } else {
        format!(
            "write \"{upper}:...\" to resolve it through the plugin serving {upper}, or \"literal:{prefix}:...\" if it really is a literal"
        )
    };
    Some(format!(
        "{label}: the value starts with \"{prefix}:\", which is not a credential scheme (schemes are upper case), so it is used as a literal; {fix}"
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
            assert_eq!(mistyped_scheme(text), Some(prefix), "{text}");
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
            assert_eq!(mistyped_scheme(text), None, "{text}");
        }
        assert_eq!(mistyped_scheme(&format!("{}:/x", "a".repeat(33))), None);
    }

    #[test]
    fn the_warning_names_the_prefix_but_not_the_value() {
        let w = mistyped_scheme_warning("auth_token", "file:/run/s3cret-path").unwrap();
        assert!(w.starts_with("auth_token: "), "{w}");
        assert!(w.contains("\"file:\"") && w.contains("FILE:...") && w.contains("literal:file:..."), "{w}");
        assert!(!w.contains("s3cret"), "{w}");
        let w = mistyped_scheme_warning("services.a.config.pw", "env:TOP_SECRET").unwrap();
        assert!(!w.contains("TOP_SECRET"), "{w}");
        assert!(mistyped_scheme_warning("x", "Literal:v").unwrap().contains("\"literal:\" in lower case"));
        assert_eq!(mistyped_scheme_warning("x", "ENV:HOME"), None);
    }
}
