//! Cryptography: the libsodium wrapper, Habitat-compatible key files and the key cache,
//! BOX-1 messages, HART-1 packages.

pub mod archive;
pub mod boxes;
pub mod cache;
pub mod hart;
pub mod keys;
pub mod sodium;

pub use cache::KeyCache;
pub use keys::{
    BoxPublicKey, BoxSecretKeyFile, KeyFile, KeyId, KeyKind, RingKey, SigPublicKey, SigSecretKey,
};

/// Every way a crypto operation or key file can fail. Messages never include secret material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("Unsupported key version: {0:?}")]
    UnsupportedKeyVersion(String),
    #[error("Cannot parse named revision {0:?} (expected NAME-YYYYMMDDhhmmss)")]
    BadNamedRevision(String),
    #[error("invalid key name {name:?}: {why}")]
    BadKeyName { name: String, why: String },
    #[error("malformed key file: {0}")]
    MalformedKey(String),
    #[error("{what} must be {expected} bytes, got {got}")]
    BadLength { what: &'static str, expected: usize, got: usize },
    #[error("expected a {expected}, got a {got}")]
    WrongKeyKind { expected: &'static str, got: &'static str },
    #[error("decryption failed (wrong key, or the message was tampered with)")]
    Decrypt,
    #[error("signature verification failed")]
    BadSignature,
    #[error("the public key is unusable")]
    BadPublicKey,
    #[error("no {kind} named {name:?} in the key cache {cache}")]
    KeyNotFound { kind: &'static str, name: String, cache: String },
    #[error("a different key already exists at {0}; refusing to overwrite it")]
    KeyConflict(String),
    #[error("key cache {path}: {source}")]
    Io { path: String, source: std::io::Error },
}
