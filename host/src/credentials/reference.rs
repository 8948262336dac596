//! Credential references.
//!
//! The rule (documented for operators):
//! * `literal:VALUE` is always the literal `VALUE` (the escape for values that look routed);
//! * `SCHEME:rest`, where SCHEME is 1-32 of `[A-Z0-9_]` starting with an upper-case letter and
//!   the text before the *first* colon, is routed to the plugin serving SCHEME (pending, with an
//!   error shown, until such a plugin is loaded: a typo never silently becomes a literal secret);
//! * anything else is a literal: `hunter2`, `abc:def`, `http://x`, base64 values.

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
}
