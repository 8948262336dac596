//! Keys made with the library (the key commands themselves are tested through the CLI in
//! keys_cli.rs).

use std::path::Path;

use warren::crypto::{KeyCache, KeyId, RingKey, SigSecretKey};

/// A ring key with a chosen revision (two keys made in the same second would collide).
pub fn ring_key(name: &str, rev: &str) -> RingKey {
    let mut k = RingKey::generate(name).unwrap();
    k.id = KeyId::new(name, rev).unwrap();
    k
}

pub fn write_key(cache: &Path, key: &RingKey) {
    KeyCache::new(cache).write(&key.to_file()).unwrap();
}

/// `WARREN_RING_KEY` holding `key`, for a supervisor's environment.
pub fn ring_key_env(key: &RingKey) -> (String, String) {
    ("WARREN_RING_KEY".to_string(), key.to_file().to_text().to_string())
}

/// A fresh `origin` signing pair written into the key cache at `cache`; returns the secret half
/// (its `id` is the pair's revision, e.g. `acme-20250101000000`).
pub fn origin_keys(cache: &Path, origin: &str) -> SigSecretKey {
    let (public, secret) = SigSecretKey::generate(origin).unwrap();
    let keys = KeyCache::new(cache);
    keys.write(&public.to_file()).unwrap();
    keys.write(&secret.to_file()).unwrap();
    secret
}
