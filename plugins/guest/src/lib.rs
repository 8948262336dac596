//! Small helpers shared by warren's guest plugins.
//!
//! * [`manifest!`] embeds the crate's `plugin.toml` into the built component as the custom
//!   section `warren-manifest`, so a single `.wasm` file carries its own manifest.
//! * [`split_reference`] parses `SCHEME:rest` credential references.
//! * [`config_value`], [`config_bool`], [`config_u64`] read simple top-level `key = value`
//!   lines from a service's TOML configuration (enough for hooks; not a TOML parser).
//!
//! * The SDK for credential sources: implement [`CredentialSource`] (return a [`Credential`]
//!   built with a ttl and watch paths, or an [`Error`] that holds a message only; the value is a
//!   [`Secret`] that never formats), log with [`log::info`] and friends, and export it with
//!   [`credential_source!`], which generates the bindings in the calling crate.
//!
//! Apart from that macro the helpers do not depend on the contract's generated types; a plugin
//! generates those itself from `wit/` ([`CONTRACT`]), or from `wit/v0.1.0/` to target the
//! previous contract, which the host still loads. The SDK lives in this crate (rather than a new
//! one) so every guest keeps one helper dependency, and `warren plugin new` can vendor one crate.

mod credential;
mod export;
pub mod log;

pub use credential::{Credential, CredentialSource, Error, ErrorKind, Reference, Secret, resolve_with};

/// The WIT package the bundled plugins are built against.
pub const CONTRACT: &str = "warren:plugin@0.2.0";

/// Name of the custom section holding the plugin manifest (TOML bytes).
pub const MANIFEST_SECTION: &str = "warren-manifest";

/// Embed `plugin.toml` (next to the calling crate's `Cargo.toml`) as the custom section
/// `warren-manifest`. Invoke once at the top level of the plugin crate:
///
/// ```text
/// warren_plugin_guest::manifest!();
/// ```
///
/// The static is `#[used]` so neither rustc nor the linker drops it; wasm-ld turns a
/// `link_section` static into a custom section of the core module.
#[macro_export]
macro_rules! manifest {
    () => {
        #[unsafe(link_section = "warren-manifest")]
        #[used]
        static WARREN_MANIFEST: [u8; include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/plugin.toml"))
            .len()] = *include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/plugin.toml"));
    };
}

/// Split `SCHEME:rest` and check the scheme (case-insensitively) against `scheme`.
///
/// Returns the part after the first colon, or `Err` with a message suitable for
/// `credential-error::invalid-reference`.
pub fn split_reference<'a>(reference: &'a str, scheme: &str) -> Result<&'a str, &'static str> {
    let Some((s, rest)) = reference.split_once(':') else {
        return Err("reference has no scheme (expected SCHEME:rest)");
    };
    if !s.eq_ignore_ascii_case(scheme) {
        return Err("reference names a scheme this plugin does not serve");
    }
    Ok(rest)
}

/// The raw value of a top-level `key = value` line of a TOML document (before any `[table]`
/// header), with a trailing `# comment` and surrounding quotes removed.
pub fn config_value<'a>(toml: &'a str, key: &str) -> Option<&'a str> {
    for line in toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            break;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        if k != key {
            continue;
        }
        let v = v.trim();
        let v = if let Some(q) = v.strip_prefix('"') {
            q.split_once('"').map_or(q, |(inner, _)| inner)
        } else {
            v.split_once('#').map_or(v, |(before, _)| before).trim()
        };
        return Some(v);
    }
    None
}

/// `true` when the top-level key is set to `true`.
pub fn config_bool(toml: &str, key: &str) -> bool {
    config_value(toml, key) == Some("true")
}

/// The top-level key as an unsigned integer (`_` separators allowed), if it parses.
pub fn config_u64(toml: &str, key: &str) -> Option<u64> {
    let v = config_value(toml, key)?;
    let mut n: u64 = 0;
    let mut digits = 0;
    for c in v.chars() {
        match c {
            '_' => continue,
            '0'..='9' => {
                n = n.checked_mul(10)?.checked_add(u64::from(c as u8 - b'0'))?;
                digits += 1;
            }
            _ => return None,
        }
    }
    (digits > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(split_reference("ENV:HOME", "ENV"), Ok("HOME"));
        assert_eq!(split_reference("env:HOME", "ENV"), Ok("HOME"));
        assert_eq!(split_reference("FILE:/a:b", "FILE"), Ok("/a:b"));
        assert!(split_reference("HOME", "ENV").is_err());
        assert!(split_reference("FILE:/x", "ENV").is_err());
    }

    #[test]
    fn config() {
        let t = "# c\nfail_health = true\nsuitability = 1_000 # comment\nname = \"a # b\"\n[x]\nfail_init = true\n";
        assert!(config_bool(t, "fail_health"));
        assert!(!config_bool(t, "fail_init"));
        assert_eq!(config_u64(t, "suitability"), Some(1000));
        assert_eq!(config_value(t, "name"), Some("a # b"));
        assert_eq!(config_u64("suitability = -1", "suitability"), None);
        assert_eq!(config_u64("", "suitability"), None);
    }
}
