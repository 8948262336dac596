//! The typed side of a credential source: a value that never prints, a builder for what
//! `resolve` returns, errors that carry messages only, and the trait a vendor implements.

use std::fmt;

/// A secret value. `Debug` and `Display` print `[redacted]`, so formatting one into an error
/// or a log field by mistake leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: only for handing it to the host.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What `resolve` returns: `Credential::new(value).ttl(300).watch("/etc/app/token")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    value: Secret,
    ttl_seconds: Option<u32>,
    watch_paths: Vec<String>,
}

impl Credential {
    /// No ttl and no watch paths: the host caches the value until the service reloads.
    pub fn new(value: impl Into<Secret>) -> Credential {
        Credential { value: value.into(), ttl_seconds: None, watch_paths: Vec::new() }
    }

    /// The host may cache the value this long before resolving again.
    pub fn ttl(mut self, seconds: u32) -> Credential {
        self.ttl_seconds = Some(seconds);
        self
    }

    /// A change of this host path means "resolve again".
    pub fn watch(mut self, path: impl Into<String>) -> Credential {
        self.watch_paths.push(path.into());
        self
    }

    pub fn value(&self) -> &Secret {
        &self.value
    }

    pub fn ttl_seconds(&self) -> Option<u32> {
        self.ttl_seconds
    }

    pub fn watch_paths(&self) -> &[String] {
        &self.watch_paths
    }

    /// (value, ttl, watch paths), for the generated bindings.
    pub fn into_parts(self) -> (String, Option<u32>, Vec<String>) {
        (self.value.0, self.ttl_seconds, self.watch_paths)
    }
}

/// The four outcomes the contract's `credential-error` distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Well formed but names nothing.
    NotFound,
    /// Not allowed (not granted, permission denied, HTTP 403).
    Denied,
    /// Malformed, or a scheme this plugin does not serve.
    InvalidReference,
    /// Transient: the host retries and keeps the last good value.
    Unavailable,
}

/// Why a reference could not be resolved. It holds a message only, never a [`Secret`] (whose
/// formatting is redacted anyway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> Error {
        Error { kind, message: message.to_string() }
    }

    pub fn not_found(message: impl fmt::Display) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }

    pub fn denied(message: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Denied, message)
    }

    pub fn invalid(message: impl fmt::Display) -> Error {
        Error::new(ErrorKind::InvalidReference, message)
    }

    pub fn unavailable(message: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Unavailable, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

/// A reference split at its first colon; `scheme` is one of the plugin's `SCHEMES`, as
/// declared (the reference may spell it in any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference<'a> {
    pub scheme: &'static str,
    /// What follows the colon; never empty.
    pub rest: &'a str,
    /// The whole reference, scheme included.
    pub full: &'a str,
}

/// What a vendor implements; `credential_source!(Type)` exports it as the plugin.
pub trait CredentialSource {
    /// The schemes served, upper case without the colon, e.g. `&["ACME"]`.
    const SCHEMES: &'static [&'static str];

    /// Resolve one reference whose scheme is one of `SCHEMES`.
    fn resolve(reference: Reference<'_>) -> Result<Credential, Error>;
}

/// Parses `reference` against `T::SCHEMES` and calls `T::resolve`: a reference without a
/// scheme, with another scheme or with nothing after the colon never reaches the vendor code.
pub fn resolve_with<T: CredentialSource>(reference: &str) -> Result<Credential, Error> {
    let Some((scheme, rest)) = reference.split_once(':') else {
        return Err(Error::invalid("reference has no scheme (expected SCHEME:rest)"));
    };
    let Some(declared) = T::SCHEMES.iter().find(|s| s.eq_ignore_ascii_case(scheme)) else {
        return Err(Error::invalid(format!("this plugin does not serve the scheme {scheme:?}")));
    };
    if rest.is_empty() {
        return Err(Error::invalid(format!("{declared}: reference is empty after the colon")));
    }
    T::resolve(Reference { scheme: declared, rest, full: reference })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Demo;
    impl CredentialSource for Demo {
        const SCHEMES: &'static [&'static str] = &["DEMO"];
        fn resolve(r: Reference<'_>) -> Result<Credential, Error> {
            match r.rest {
                "x" => Ok(Credential::new("s3cret").ttl(5).watch("/a")),
                other => Err(Error::not_found(format!("no {other}"))),
            }
        }
    }

    #[test]
    fn builder_and_dispatch() {
        let c = resolve_with::<Demo>("demo:x").unwrap();
        assert_eq!(c.ttl_seconds(), Some(5));
        assert_eq!(c.watch_paths(), ["/a".to_string()]);
        assert_eq!(c.clone().into_parts().0, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"), "Debug must redact the value");
        assert_eq!(resolve_with::<Demo>("DEMO:y").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(resolve_with::<Demo>("nothing").unwrap_err().kind(), ErrorKind::InvalidReference);
        assert_eq!(resolve_with::<Demo>("OTHER:x").unwrap_err().kind(), ErrorKind::InvalidReference);
        assert_eq!(resolve_with::<Demo>("DEMO:").unwrap_err().kind(), ErrorKind::InvalidReference);
    }

    #[test]
    fn secrets_never_format() {
        let s = Secret::new("hunter2");
        let e = Error::denied(format!("cannot use {s} / {s:?}"));
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(s.expose(), "hunter2");
    }
}
