//! The sealed envelope around every datagram and TCP frame, and the keyring that seals it.
//!
//! With a ring key, `Wire{key_id, nonce, payload}` carries secretbox(payload) under a fresh
//! random nonce; `key_id` is the sealing key's fingerprint so a receiver holding several keys
//! (during a rotation) picks the right one without trial decryption.

use prost::Message as _;

use super::proto;
use crate::crypto::sodium::{self, SECRETBOX_NONCE_LEN};
use crate::crypto::{KeyId, RingKey};

/// Largest datagram read from the socket (anything bigger is truncated, hence rejected).
pub const MAX_DATAGRAM: usize = 64 * 1024;
/// Largest TCP push-pull frame: one chunk, or one rumor of the largest size with the member
/// list (state travels in ~1 MiB chunks; see `core::antientropy`).
pub const MAX_FRAME: usize = 6 * 1024 * 1024;

/// Why an incoming packet or frame was dropped. Labels are the /metrics `reason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    #[error("too large")]
    TooLarge,
    #[error("not a wire envelope")]
    Malformed,
    #[error("unencrypted packet on an encrypted ring")]
    Unencrypted,
    #[error("encrypted packet on a ring without a key")]
    NoKey,
    #[error("sealed with a key that is not installed")]
    UnknownKey,
    #[error("decryption failed")]
    Decrypt,
    #[error("payload does not decode")]
    Decode,
    #[error("sender has departed")]
    Departed,
}

impl Reject {
    pub const ALL: [Reject; 8] = [
        Reject::TooLarge,
        Reject::Malformed,
        Reject::Unencrypted,
        Reject::NoKey,
        Reject::UnknownKey,
        Reject::Decrypt,
        Reject::Decode,
        Reject::Departed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reject::TooLarge => "too_large",
            Reject::Malformed => "malformed",
            Reject::Unencrypted => "unencrypted",
            Reject::NoKey => "no_key",
            Reject::UnknownKey => "unknown_key",
            Reject::Decrypt => "decrypt",
            Reject::Decode => "decode",
            Reject::Departed => "departed",
        }
    }

    pub fn index(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("ring key {0} is not installed")]
    NotInstalled(String),
    #[error("ring key {0} is the primary key; `use` another key before removing it")]
    RemovePrimary(String),
    #[error("this ring is unencrypted (started without a ring key); it cannot be given keys at run time")]
    Unencrypted,
}

/// One line of `ring key list`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub fingerprint: String,
    pub primary: bool,
}

/// The installed ring keys: seal with the primary, open with any.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<Installed>,
    primary: Option<usize>,
}

/// A key with its fingerprint, hashed once at install instead of on every packet in and out.
#[derive(Clone, Debug)]
struct Installed {
    key: RingKey,
    fingerprint: [u8; 8],
}

impl From<RingKey> for Installed {
    fn from(key: RingKey) -> Self {
        Installed { fingerprint: key.fingerprint(), key }
    }
}

impl Keyring {
    /// An unencrypted ring.
    pub fn none() -> Self {
        Keyring::default()
    }

    /// A keyring whose primary is `key`.
    pub fn with_primary(key: RingKey) -> Self {
        Keyring { keys: vec![key.into()], primary: Some(0) }
    }

    pub fn is_encrypted(&self) -> bool {
        self.primary.is_some()
    }

    pub fn primary_id(&self) -> Option<&KeyId> {
        self.primary.map(|i| &self.keys[i].key.id)
    }

    fn position(&self, id: &KeyId) -> Option<usize> {
        self.keys.iter().position(|k| k.key.id == *id)
    }

    /// Adds a key (accepted for receiving at once). Returns false if it was already installed.
    pub fn install(&mut self, key: RingKey) -> Result<bool, KeyringError> {
        if !self.is_encrypted() {
            return Err(KeyringError::Unencrypted);
        }
        if self.position(&key.id).is_some() {
            return Ok(false);
        }
        self.keys.push(key.into());
        Ok(true)
    }

    /// Makes an installed key the one used for sending.
    pub fn use_key(&mut self, id: &KeyId) -> Result<(), KeyringError> {
        let i = self.position(id).ok_or_else(|| KeyringError::NotInstalled(id.to_string()))?;
        self.primary = Some(i);
        Ok(())
    }

    /// Stops accepting a key. The primary cannot be removed.
    pub fn remove(&mut self, id: &KeyId) -> Result<RingKey, KeyringError> {
        let i = self.position(id).ok_or_else(|| KeyringError::NotInstalled(id.to_string()))?;
        if self.primary == Some(i) {
            return Err(KeyringError::RemovePrimary(id.to_string()));
        }
        let primary_id = self.primary_id().cloned();
        let removed = self.keys.remove(i).key;
        self.primary = primary_id.and_then(|p| self.position(&p));
        Ok(removed)
    }

    /// Replaces the accepted set (a key cache reload), keeping the primary when it survives;
    /// otherwise the newest key becomes primary. Returns whether anything changed.
    pub fn replace_all(&mut self, mut keys: Vec<RingKey>) -> bool {
        if keys.is_empty() || !self.is_encrypted() {
            return false;
        }
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        let keys: Vec<Installed> = keys.into_iter().map(Installed::from).collect();
        let old: Vec<(KeyId, [u8; 8])> =
            self.keys.iter().map(|k| (k.key.id.clone(), k.fingerprint)).collect();
        let new: Vec<(KeyId, [u8; 8])> = keys.iter().map(|k| (k.key.id.clone(), k.fingerprint)).collect();
        let primary_id = self.primary_id().cloned();
        self.keys = keys;
        self.primary = primary_id.and_then(|p| self.position(&p)).or(Some(self.keys.len() - 1));
        let mut old_sorted = old;
        old_sorted.sort();
        old_sorted != new
    }

    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| KeyInfo {
                id: k.key.id.to_string(),
                fingerprint: hex::encode(k.fingerprint),
                primary: self.primary == Some(i),
            })
            .collect()
    }

    /// Wraps `payload` in a `Wire`, sealed with the primary key if there is one.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let wire = match self.primary {
            Some(i) => {
                let Installed { key, fingerprint } = &self.keys[i];
                let nonce: [u8; SECRETBOX_NONCE_LEN] = sodium::random_array();
                proto::Wire {
                    key_id: fingerprint.to_vec(),
                    nonce: nonce.to_vec(),
                    payload: sodium::secretbox_seal(&key.key, &nonce, payload),
                }
            }
            None => proto::Wire { key_id: Vec::new(), nonce: Vec::new(), payload: payload.to_vec() },
        };
        wire.encode_to_vec()
    }

    /// Unwraps a `Wire`, opening it with whichever installed key sealed it.
    pub fn open(&self, bytes: &[u8], max: usize) -> Result<Vec<u8>, Reject> {
        if bytes.len() > max {
            return Err(Reject::TooLarge);
        }
        let wire = proto::Wire::decode(bytes).map_err(|_| Reject::Malformed)?;
        match (wire.key_id.is_empty(), self.is_encrypted()) {
            (true, true) => Err(Reject::Unencrypted),
            (true, false) => {
                if wire.nonce.is_empty() {
                    Ok(wire.payload)
                } else {
                    Err(Reject::Malformed)
                }
            }
            (false, false) => Err(Reject::NoKey),
            (false, true) => {
                let nonce: [u8; SECRETBOX_NONCE_LEN] =
                    wire.nonce.as_slice().try_into().map_err(|_| Reject::Malformed)?;
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.fingerprint.as_slice() == wire.key_id.as_slice())
                    .ok_or(Reject::UnknownKey)?;
                sodium::secretbox_open(&key.key.key, &nonce, &wire.payload).map_err(|_| Reject::Decrypt)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_with_primary_and_opens_with_any_installed_key() {
        let k1 = RingKey::generate("r").unwrap();
        let mut k2 = RingKey::generate("r").unwrap();
        k2.id = KeyId::new("r", "29990101000000").unwrap();
        let mut a = Keyring::with_primary(k1.clone());
        let mut b = Keyring::with_primary(k1.clone());
        assert!(b.install(k2.clone()).unwrap());
        assert!(!b.install(k2.clone()).unwrap());
        b.use_key(&k2.id).unwrap();
        let sealed = b.seal(b"hello");
        assert_eq!(a.open(&sealed, MAX_DATAGRAM), Err(Reject::UnknownKey));
        a.install(k2.clone()).unwrap();
        assert_eq!(a.open(&sealed, MAX_DATAGRAM).unwrap(), b"hello");
        assert_eq!(b.open(&a.seal(b"x"), MAX_DATAGRAM).unwrap(), b"x");
        assert!(matches!(b.remove(&k2.id), Err(KeyringError::RemovePrimary(_))));
        b.remove(&k1.id).unwrap();
        assert_eq!(b.list().len(), 1);
        assert!(b.list()[0].primary);
        assert_eq!(b.open(&Keyring::with_primary(k1).seal(b"x"), MAX_DATAGRAM), Err(Reject::UnknownKey));
    }

    #[test]
    fn plaintext_and_keyed_rings_refuse_each_other() {
        let keyed = Keyring::with_primary(RingKey::generate("r").unwrap());
        let plain = Keyring::none();
        assert_eq!(keyed.open(&plain.seal(b"x"), MAX_DATAGRAM), Err(Reject::Unencrypted));
        assert_eq!(plain.open(&keyed.seal(b"x"), MAX_DATAGRAM), Err(Reject::NoKey));
        assert_eq!(plain.open(&plain.seal(b"x"), MAX_DATAGRAM).unwrap(), b"x");
        assert_eq!(plain.open(&[0xff; 10], MAX_DATAGRAM), Err(Reject::Malformed));
        assert_eq!(plain.open(&[0; 11], 10), Err(Reject::TooLarge));
    }

    #[test]
    fn tampered_ciphertext_is_rejected() {
        let keyed = Keyring::with_primary(RingKey::generate("r").unwrap());
        let mut sealed = keyed.seal(b"some payload");
        let n = sealed.len();
        sealed[n - 1] ^= 1;
        assert_eq!(keyed.open(&sealed, MAX_DATAGRAM), Err(Reject::Decrypt));
    }
}
