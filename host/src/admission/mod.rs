//! Node admission (issue #13): one-time join tokens, the keyserver's state, certificate-granting
//! certificates. Sans-io: everything here is pure; the keyserver process and the CLI live in
//! `crate::cli` and persistence in [`store`].

pub mod base32;
pub mod cgc;
pub mod change;
pub mod cidr;
pub mod join;
pub mod journal;
pub mod keyserver;
pub mod policy_files;
pub mod ratelimit;
pub mod request;
pub mod schedule;
pub mod store;
pub mod wire;

pub use cgc::{Cgc, CgcError};
pub use join::{JoinError, JoinString, Pin, TokenId};
pub use keyserver::{AdmitError, Claim, Keyserver, State, TokenRequest};

/// Node and group names: Habitat's plain key names (letters, digits, `_`, `-`), so a node name
/// can name its keys.
pub fn validate_plain_name(what: &'static str, value: &str) -> Result<(), AdmitError> {
    let bad = |why: &str| AdmitError::BadName {
        what,
        value: value.chars().take(64).collect(),
        why: why.to_string(),
    };
    if value.is_empty() || value.len() > 64 {
        return Err(bad("must be 1 to 64 characters"));
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(bad("must start with a letter or digit"));
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(bad("use letters, digits, '_' and '-'"));
    }
    Ok(())
}
