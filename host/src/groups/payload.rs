//! What a service group's config or file may be, checked the same way by the CLI (before
//! anything is sent), the ctl gateway (before anything is gossiped) and every receiving
//! supervisor: at most 64 KiB (Habitat's limit), config is TOML, a file name is a basename,
//! and an encrypted payload is BOX-1 addressed to the group itself.

use crate::crypto::boxes::BoxMessage;

use super::ServiceGroup;

/// Habitat's `hab config apply` / `hab file upload` limit, on the plaintext.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The BOX-1 text of a `MAX_PAYLOAD` plaintext: base64 of it and its MAC, plus the header
/// lines (two key names of at most ~150 bytes and a nonce).
pub const MAX_SEALED: usize = (MAX_PAYLOAD + 16).div_ceil(3) * 4 + 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("{what} is {len} bytes, over the {MAX_PAYLOAD} byte limit (64 KiB)")]
    TooLarge { what: &'static str, len: usize },
    #[error("the configuration is not UTF-8 text")]
    NotText,
    #[error("the configuration is not valid TOML: {0}")]
    NotToml(String),
    #[error("file name {0:?}: use a plain file name (no '/', no '..', no NUL)")]
    BadFileName(String),
    #[error("the encrypted payload is not a BOX-1 message: {0}")]
    NotBox(String),
    #[error(
        "the payload is encrypted to {receiver:?}, not to the group {group}: encrypt it to the \
         group's service key (--user USER does that)"
    )]
    WrongReceiver { receiver: String, group: String },
    #[error("the payload is encrypted anonymously: a group accepts BOX-1 from a user key only")]
    NoSender,
}

/// Refuses a payload over [`MAX_PAYLOAD`].
pub fn check_size(what: &'static str, bytes: &[u8]) -> Result<(), PayloadError> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(PayloadError::TooLarge { what, len: bytes.len() });
    }
    Ok(())
}

/// A plaintext configuration: UTF-8 TOML of at most [`MAX_PAYLOAD`] bytes. The parse error
/// names a line, never the content, so a secret in a broken file is not echoed.
pub fn check_config(bytes: &[u8]) -> Result<toml::Table, PayloadError> {
    check_size("the configuration", bytes)?;
    let text = std::str::from_utf8(bytes).map_err(|_| PayloadError::NotText)?;
    text.parse::<toml::Table>().map_err(|e| PayloadError::NotToml(toml_error_place(text, &e)))
}

/// Where a TOML error is, without quoting the text around it.
fn toml_error_place(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else { return e.message().to_string() };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    format!("line {line}: {}", e.message())
}

/// A name for `svc/NAME/files/`: one path component, nothing that walks out of the folder.
pub fn check_file_name(name: &str) -> Result<(), PayloadError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.len() > 255
        || name.chars().any(char::is_control);
    if bad {
        return Err(PayloadError::BadFileName(name.chars().take(64).collect()));
    }
    Ok(())
}

/// An encrypted payload: BOX-1 from a sender's key to a revision of exactly `group`'s key.
pub fn check_sealed(bytes: &[u8], group: &ServiceGroup) -> Result<BoxMessage, PayloadError> {
    if bytes.len() > MAX_SEALED {
        return Err(PayloadError::TooLarge { what: "the encrypted payload", len: bytes.len() });
    }
    let message = BoxMessage::parse(bytes).map_err(|e| PayloadError::NotBox(e.to_string()))?;
    if message.sender().is_none() {
        return Err(PayloadError::NoSender);
    }
    let receiver = message.receiver();
    if receiver.name != group.to_string() {
        return Err(PayloadError::WrongReceiver { receiver: receiver.to_string(), group: group.to_string() });
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{BoxSecretKeyFile, boxes};

    #[test]
    fn config_is_toml_within_the_limit_and_errors_never_quote_it() {
        assert_eq!(check_config(b"x = 1\n[a]\nb = \"c\"").unwrap()["x"].as_integer(), Some(1));
        let e = check_config(b"ok = 1\npassword = \"hunter2").unwrap_err().to_string();
        assert!(e.contains("line 2") && !e.contains("hunter2"), "{e}");
        assert_eq!(check_config(&[0xff, 0xfe]), Err(PayloadError::NotText));
        let big = format!("x = \"{}\"", "a".repeat(MAX_PAYLOAD));
        assert!(matches!(check_config(big.as_bytes()), Err(PayloadError::TooLarge { .. })));
        let exact = format!("x = \"{}\"", "a".repeat(MAX_PAYLOAD - 6));
        assert_eq!(exact.len(), MAX_PAYLOAD);
        assert!(check_config(exact.as_bytes()).is_ok(), "64 KiB itself is allowed");
    }

    #[test]
    fn file_names_are_basenames() {
        for ok in ["app.conf", "cert.pem", "..hidden", "a..b"] {
            assert_eq!(check_file_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", "../escape", "a/b", "/etc/passwd", "a\0b", "a\\b", "line\nbreak"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_file_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn sealed_payloads_must_come_from_a_user_and_be_addressed_to_the_group() {
        let group: ServiceGroup = "redis.default@acme".parse().unwrap();
        let (_, user) = BoxSecretKeyFile::generate("ops").unwrap();
        let (service, _) = BoxSecretKeyFile::generate("redis.default@acme").unwrap();
        let (other, _) = BoxSecretKeyFile::generate("redis.other@acme").unwrap();
        let to_group = boxes::encrypt(b"x = 1", &user, &service).unwrap().to_text();
        assert!(check_sealed(to_group.as_bytes(), &group).is_ok());
        let to_other = boxes::encrypt(b"x = 1", &user, &other).unwrap().to_text();
        assert!(matches!(check_sealed(to_other.as_bytes(), &group), Err(PayloadError::WrongReceiver { .. })));
        let anonymous = boxes::encrypt_anonymous(b"x = 1", &service).unwrap().to_text();
        assert_eq!(check_sealed(anonymous.as_bytes(), &group).unwrap_err(), PayloadError::NoSender);
        assert!(matches!(check_sealed(b"x = 1", &group), Err(PayloadError::NotBox(_))));
    }
}
