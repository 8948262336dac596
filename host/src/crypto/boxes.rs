//! Encrypted messages in Habitat's text formats, plus the ring-key secretbox helper.
//!
//! - `BOX-1\n{sender}\n{receiver}\n{b64 nonce}\n{b64 ciphertext}`: crypto_box from a user (or any
//!   BOX key) to a service group key. Both sides are named by exact `name-rev`.
//! - `ANONYMOUS-BOX-1\n{receiver}\n{b64 sealed box}`: crypto_box_seal to a BOX key; no sender.
//!
//! Parsing is separate from decryption so a caller (config apply) can ask a message which keys it
//! needs, look them up, and report precisely which one is missing.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use super::CryptoError;
use super::cache::KeyCache;
use super::keys::{BoxPublicKey, BoxSecretKeyFile, KeyFile, KeyId, KeyKind, RingKey};
use super::sodium::{self, BOX_MAC_LEN, BOX_NONCE_LEN, SEALED_BOX_OVERHEAD, SECRETBOX_NONCE_LEN};

pub const BOX_HEADER: &str = "BOX-1";
pub const ANONYMOUS_BOX_HEADER: &str = "ANONYMOUS-BOX-1";

/// Largest plaintext warren encrypts or accepts (service configs and files, not bulk data).
pub const MAX_PLAINTEXT_LEN: usize = 8 * 1024 * 1024;
/// Largest message text accepted: base64 of the largest ciphertext plus the header lines.
pub const MAX_MESSAGE_LEN: usize = (MAX_PLAINTEXT_LEN + SEALED_BOX_OVERHEAD).div_ceil(3) * 4 + 1024;

#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    #[error("malformed {format} message: {why}")]
    Malformed { format: &'static str, why: String },
    #[error("the message is for {wanted}, but the key given is {given}")]
    WrongKey { wanted: String, given: String },
    #[error("the message is {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

fn malformed(format: &'static str, why: impl Into<String>) -> BoxError {
    BoxError::Malformed { format, why: why.into() }
}

/// A parsed BOX-1 or ANONYMOUS-BOX-1 message (ciphertext only; nothing secret in it).
#[derive(Clone, PartialEq, Eq)]
pub enum BoxMessage {
    Signed { sender: KeyId, receiver: KeyId, nonce: [u8; BOX_NONCE_LEN], ciphertext: Vec<u8> },
    Anonymous { receiver: KeyId, ciphertext: Vec<u8> },
}

impl fmt::Debug for BoxMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoxMessage::Signed { sender, receiver, ciphertext, .. } => f
                .debug_struct("BoxMessage::Signed")
                .field("sender", &sender.to_string())
                .field("receiver", &receiver.to_string())
                .field("ciphertext_len", &ciphertext.len())
                .finish(),
            BoxMessage::Anonymous { receiver, ciphertext } => f
                .debug_struct("BoxMessage::Anonymous")
                .field("receiver", &receiver.to_string())
                .field("ciphertext_len", &ciphertext.len())
                .finish(),
        }
    }
}

/// One key a message needs to be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeededKey {
    pub kind: KeyKind,
    pub id: KeyId,
}

impl BoxMessage {
    /// True when `bytes` looks like either format (a cheap check to tell ciphertext from plain text).
    pub fn is_encrypted(bytes: &[u8]) -> bool {
        bytes.starts_with(b"BOX-1\n") || bytes.starts_with(b"ANONYMOUS-BOX-1\n")
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, BoxError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(BoxError::TooLarge { len: bytes.len(), max: MAX_MESSAGE_LEN });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| malformed("BOX-1", "not UTF-8 text"))?;
        // Habitat writes no trailing newline; tolerate one (files edited by hand usually have it).
        let text = text.strip_suffix('\n').unwrap_or(text);
        let lines: Vec<&str> = text.split('\n').collect();
        match lines[0] {
            BOX_HEADER => {
                let f = BOX_HEADER;
                if lines.len() != 5 {
                    return Err(malformed(f, format!("expected 5 lines, found {}", lines.len())));
                }
                let sender = parse_id(f, "sender", lines[1])?;
                let receiver = parse_id(f, "receiver", lines[2])?;
                let nonce_bytes = decode(f, "nonce", lines[3])?;
                let nonce: [u8; BOX_NONCE_LEN] = nonce_bytes.as_slice().try_into().map_err(|_| {
                    malformed(
                        f,
                        format!("the nonce must be {BOX_NONCE_LEN} bytes, got {}", nonce_bytes.len()),
                    )
                })?;
                let ciphertext = decode(f, "ciphertext", lines[4])?;
                if ciphertext.len() < BOX_MAC_LEN {
                    return Err(malformed(f, "the ciphertext is shorter than its authenticator"));
                }
                Ok(BoxMessage::Signed { sender, receiver, nonce, ciphertext })
            }
            ANONYMOUS_BOX_HEADER => {
                let f = ANONYMOUS_BOX_HEADER;
                if lines.len() != 3 {
                    return Err(malformed(f, format!("expected 3 lines, found {}", lines.len())));
                }
                let receiver = parse_id(f, "receiver", lines[1])?;
                let ciphertext = decode(f, "ciphertext", lines[2])?;
                if ciphertext.len() < SEALED_BOX_OVERHEAD {
                    return Err(malformed(f, "the sealed box is shorter than its overhead"));
                }
                Ok(BoxMessage::Anonymous { receiver, ciphertext })
            }
            other => Err(malformed(
                "BOX-1",
                format!(
                    "unknown header {:?} (expected {BOX_HEADER} or {ANONYMOUS_BOX_HEADER})",
                    other.chars().take(32).collect::<String>()
                ),
            )),
        }
    }

    /// The message in its text form, without a trailing newline (as Habitat writes it).
    pub fn to_text(&self) -> String {
        match self {
            BoxMessage::Signed { sender, receiver, nonce, ciphertext } => format!(
                "{BOX_HEADER}\n{sender}\n{receiver}\n{}\n{}",
                B64.encode(nonce),
                B64.encode(ciphertext)
            ),
            BoxMessage::Anonymous { receiver, ciphertext } => {
                format!("{ANONYMOUS_BOX_HEADER}\n{receiver}\n{}", B64.encode(ciphertext))
            }
        }
    }

    pub fn receiver(&self) -> &KeyId {
        match self {
            BoxMessage::Signed { receiver, .. } | BoxMessage::Anonymous { receiver, .. } => receiver,
        }
    }

    pub fn sender(&self) -> Option<&KeyId> {
        match self {
            BoxMessage::Signed { sender, .. } => Some(sender),
            BoxMessage::Anonymous { .. } => None,
        }
    }

    /// The keys needed to open this message: the receiver's secret key and, for BOX-1, the
    /// sender's public key (which may also be derived from the sender's secret key, if held).
    pub fn needed_keys(&self) -> Vec<NeededKey> {
        let mut keys = vec![NeededKey { kind: KeyKind::BoxSecret, id: self.receiver().clone() }];
        if let Some(sender) = self.sender() {
            keys.push(NeededKey { kind: KeyKind::BoxPublic, id: sender.clone() });
        }
        keys
    }

    /// Opens the message. `sender` is required for BOX-1 and ignored for ANONYMOUS-BOX-1.
    pub fn decrypt(
        &self,
        sender: Option<&BoxPublicKey>,
        receiver: &BoxSecretKeyFile,
    ) -> Result<Zeroizing<Vec<u8>>, BoxError> {
        if receiver.id != *self.receiver() {
            return Err(BoxError::WrongKey {
                wanted: self.receiver().to_string(),
                given: receiver.id.to_string(),
            });
        }
        let plain = match self {
            BoxMessage::Signed { sender: wanted, nonce, ciphertext, .. } => {
                let sender = sender.ok_or_else(|| BoxError::WrongKey {
                    wanted: wanted.to_string(),
                    given: "no sender key".into(),
                })?;
                if sender.id != *wanted {
                    return Err(BoxError::WrongKey {
                        wanted: wanted.to_string(),
                        given: sender.id.to_string(),
                    });
                }
                sodium::box_open(ciphertext, nonce, &sender.key, &receiver.key)?
            }
            BoxMessage::Anonymous { ciphertext, .. } => {
                let public = sodium::box_public_from_secret(&receiver.key);
                sodium::sealed_box_open(ciphertext, &public, &receiver.key)?
            }
        };
        Ok(Zeroizing::new(plain))
    }

    /// Opens the message with keys from the cache, by exact name-revision.
    pub fn decrypt_with_cache(&self, cache: &KeyCache) -> Result<Zeroizing<Vec<u8>>, BoxError> {
        let receiver = BoxSecretKeyFile::try_from(&cache_get(cache, KeyKind::BoxSecret, self.receiver())?)?;
        let sender = match self.sender() {
            None => None,
            Some(id) if *id == receiver.id => Some(receiver.public()),
            Some(id) => Some(box_public_from_cache(cache, id)?),
        };
        self.decrypt(sender.as_ref(), &receiver)
    }
}

/// BOX-1: encrypts `plaintext` from `sender` (secret) to `receiver` (public) with a fresh nonce.
pub fn encrypt(
    plaintext: &[u8],
    sender: &BoxSecretKeyFile,
    receiver: &BoxPublicKey,
) -> Result<BoxMessage, BoxError> {
    check_plaintext(plaintext)?;
    let nonce: [u8; BOX_NONCE_LEN] = sodium::random_array();
    let ciphertext = sodium::box_seal(plaintext, &nonce, &receiver.key, &sender.key)?;
    Ok(BoxMessage::Signed { sender: sender.id.clone(), receiver: receiver.id.clone(), nonce, ciphertext })
}

/// ANONYMOUS-BOX-1: seals `plaintext` to `receiver`; only its secret key can open it.
pub fn encrypt_anonymous(plaintext: &[u8], receiver: &BoxPublicKey) -> Result<BoxMessage, BoxError> {
    check_plaintext(plaintext)?;
    let ciphertext = sodium::sealed_box_seal(plaintext, &receiver.key)?;
    Ok(BoxMessage::Anonymous { receiver: receiver.id.clone(), ciphertext })
}

/// Parses and opens a message with keys from the cache.
pub fn decrypt_with_cache(message: &[u8], cache: &KeyCache) -> Result<Zeroizing<Vec<u8>>, BoxError> {
    BoxMessage::parse(message)?.decrypt_with_cache(cache)
}

fn check_plaintext(plaintext: &[u8]) -> Result<(), BoxError> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(BoxError::TooLarge { len: plaintext.len(), max: MAX_PLAINTEXT_LEN });
    }
    Ok(())
}

/// Exactly this revision; a missing file is reported as a missing key, not an I/O error.
fn cache_get(cache: &KeyCache, kind: KeyKind, id: &KeyId) -> Result<KeyFile, CryptoError> {
    match cache.get(kind, id) {
        Err(CryptoError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(CryptoError::KeyNotFound {
                kind: kind.describe(),
                name: id.to_string(),
                cache: cache.dir().display().to_string(),
            })
        }
        other => other,
    }
}

/// A public BOX key by exact revision, or derived from the secret key when only that is held.
pub fn box_public_from_cache(cache: &KeyCache, id: &KeyId) -> Result<BoxPublicKey, CryptoError> {
    match cache_get(cache, KeyKind::BoxPublic, id) {
        Ok(file) => BoxPublicKey::try_from(&file),
        Err(e @ CryptoError::KeyNotFound { .. }) => match cache_get(cache, KeyKind::BoxSecret, id) {
            Ok(secret) => Ok(BoxSecretKeyFile::try_from(&secret)?.public()),
            Err(_) => Err(e),
        },
        Err(e) => Err(e),
    }
}

fn parse_id(format: &'static str, what: &str, line: &str) -> Result<KeyId, BoxError> {
    line.parse().map_err(|e| malformed(format, format!("bad {what} key name: {e}")))
}

fn decode(format: &'static str, what: &str, line: &str) -> Result<Vec<u8>, BoxError> {
    B64.decode(line.trim_end_matches('\r'))
        .map_err(|_| malformed(format, format!("the {what} is not base64")))
}

// ---- ring key secretbox (gossip packets) ----

/// Seals `msg` with a ring key: `nonce (24 bytes) || secretbox ciphertext`, fresh random nonce.
pub fn ring_seal(key: &RingKey, msg: &[u8]) -> Vec<u8> {
    let nonce: [u8; SECRETBOX_NONCE_LEN] = sodium::random_array();
    let ct = sodium::secretbox_seal(&key.key, &nonce, msg);
    let mut out = Vec::with_capacity(SECRETBOX_NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens `nonce || ciphertext` made by [`ring_seal`] (or by Habitat, with its nonce prepended).
pub fn ring_open(key: &RingKey, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < SECRETBOX_NONCE_LEN {
        return Err(CryptoError::Decrypt);
    }
    let (nonce, ct) = sealed.split_at(SECRETBOX_NONCE_LEN);
    let nonce: [u8; SECRETBOX_NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Decrypt)?;
    sodium::secretbox_open(&key.key, &nonce, ct)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (BoxPublicKey, BoxSecretKeyFile) {
        BoxSecretKeyFile::generate(name).unwrap()
    }

    #[test]
    fn signed_box_round_trip_through_text() {
        let (_, user) = pair("ruby");
        let (svc_pk, svc_sk) = pair("redis.default@acme");
        let msg = encrypt(b"port = 6379", &user, &svc_pk).unwrap();
        let text = msg.to_text();
        assert!(BoxMessage::is_encrypted(text.as_bytes()));
        let parsed = BoxMessage::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed, msg);
        assert_eq!(
            parsed.needed_keys(),
            vec![
                NeededKey { kind: KeyKind::BoxSecret, id: svc_sk.id.clone() },
                NeededKey { kind: KeyKind::BoxPublic, id: user.id.clone() },
            ]
        );
        let plain = parsed.decrypt(Some(&user.public()), &svc_sk).unwrap();
        assert_eq!(&plain[..], b"port = 6379");
        // A trailing newline is tolerated.
        assert_eq!(BoxMessage::parse(format!("{text}\n").as_bytes()).unwrap(), msg);
    }

    #[test]
    fn wrong_keys_are_named() {
        let (_, user) = pair("ruby");
        let (svc_pk, _) = pair("redis.default@acme");
        let (_, other) = pair("other.default@acme");
        let msg = encrypt(b"x", &user, &svc_pk).unwrap();
        match msg.decrypt(Some(&user.public()), &other) {
            Err(BoxError::WrongKey { wanted, .. }) => assert_eq!(wanted, svc_pk.id.to_string()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn anonymous_box_round_trip_and_tamper() {
        let (pk, sk) = pair("fhloston");
        let msg = encrypt_anonymous(b"meat popsicle", &pk).unwrap();
        assert_eq!(msg.sender(), None);
        assert_eq!(&msg.decrypt(None, &sk).unwrap()[..], b"meat popsicle");
        let BoxMessage::Anonymous { receiver, mut ciphertext } = msg else { unreachable!() };
        ciphertext[50] ^= 1;
        let bad = BoxMessage::Anonymous { receiver, ciphertext };
        assert!(matches!(bad.decrypt(None, &sk), Err(BoxError::Crypto(CryptoError::Decrypt))));
    }

    #[test]
    fn decrypts_with_a_cache_and_names_missing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KeyCache::new(dir.path());
        let (_, user) = pair("ruby");
        let (svc_pk, svc_sk) = pair("redis.default@acme");
        cache.write(&svc_sk.to_file()).unwrap();
        let text = encrypt(b"secret", &user, &svc_pk).unwrap().to_text();
        match decrypt_with_cache(text.as_bytes(), &cache) {
            Err(BoxError::Crypto(CryptoError::KeyNotFound { name, .. })) => {
                assert_eq!(name, user.id.to_string())
            }
            other => panic!("unexpected {other:?}"),
        }
        cache.write(&user.public().to_file()).unwrap();
        assert_eq!(&decrypt_with_cache(text.as_bytes(), &cache).unwrap()[..], b"secret");
    }

    #[test]
    fn garbage_never_panics() {
        let (_, user) = pair("ruby");
        let (svc_pk, _) = pair("redis.default@acme");
        let text = encrypt(b"some config", &user, &svc_pk).unwrap().to_text().into_bytes();
        let anon = encrypt_anonymous(b"x", &svc_pk).unwrap().to_text().into_bytes();
        for base in [&text, &anon] {
            for cut in 0..base.len() {
                let _ = BoxMessage::parse(&base[..cut]);
            }
            for i in 0..base.len() {
                let mut m = base.clone();
                m[i] ^= 0x41;
                let _ = BoxMessage::parse(&m);
            }
        }
        for bad in [&b""[..], b"BOX-1", b"BOX-1\n\n\n\n", b"ANONYMOUS-BOX-1\na-20200101000000\n", b"\xff\xfe"]
        {
            assert!(BoxMessage::parse(bad).is_err());
        }
        let huge = vec![b'A'; MAX_MESSAGE_LEN + 1];
        assert!(matches!(BoxMessage::parse(&huge), Err(BoxError::TooLarge { .. })));
    }

    #[test]
    fn ring_seal_round_trip() {
        let key = RingKey::generate("ring").unwrap();
        let sealed = ring_seal(&key, b"gossip");
        assert_eq!(ring_open(&key, &sealed).unwrap(), b"gossip");
        assert_ne!(ring_seal(&key, b"gossip"), sealed, "fresh nonce each time");
        let other = RingKey::generate("ring").unwrap();
        assert!(ring_open(&other, &sealed).is_err());
        assert!(ring_open(&key, &sealed[..10]).is_err());
    }
}
