//! Reloads the keyring when ring keys are added to or removed from the key cache.

use std::time::Duration;

use crate::crypto::keys::KeyId;
use crate::crypto::{KeyCache, KeyKind, RingKey};
use crate::fsutil::{self, Existing};
use crate::ring::RingHandle;
use crate::watch::{FileWatch, RecursiveMode, Spec, Subscriber};

const DEBOUNCE: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_millis(2500);

/// Every readable revision of ring key `name` in the cache.
pub fn cache_keys(cache: &KeyCache, name: &str) -> Vec<RingKey> {
    let ids = cache.revisions(KeyKind::SymSecret, name).unwrap_or_default();
    ids.iter()
        .filter_map(|id| match cache.get(KeyKind::SymSecret, id) {
            Ok(f) => RingKey::try_from(&f).ok(),
            Err(e) => {
                tracing::warn!(key = %id, error = %e, "skipping unreadable ring key");
                None
            }
        })
        .collect()
}

/// Where the revision to seal with is marked (by an admitted node, as its keyserver says):
/// `{cache}/{name}.primary`. Not a key file, so the cache's listings ignore it; in the cache
/// folder, so writing it wakes the watcher.
fn primary_path(cache: &KeyCache, name: &str) -> std::path::PathBuf {
    cache.dir().join(format!("{name}.primary"))
}

/// The revision of ring key `name` marked primary, if any.
pub fn primary_mark(cache: &KeyCache, name: &str) -> Option<KeyId> {
    let text = std::fs::read_to_string(primary_path(cache, name)).ok()?;
    text.trim().parse::<KeyId>().ok().filter(|id| id.name == name)
}

/// Marks `id` as the revision to seal with (atomically; nothing is written when it already is).
pub fn mark_primary(cache: &KeyCache, id: &KeyId) -> std::io::Result<bool> {
    if primary_mark(cache, &id.name).as_ref() == Some(id) {
        return Ok(false);
    }
    fsutil::create_private_dir(cache.dir())?;
    let text = format!("{id}\n");
    fsutil::write_atomic(&primary_path(cache, &id.name), text.as_bytes(), 0o644, Existing::Replace)?;
    Ok(true)
}

/// Watches the cache folder through `files`; keep the returned subscriber alive as long as
/// the watch matters. Call from within the tokio runtime.
pub fn spawn(ring: RingHandle, cache: KeyCache, name: String, files: &FileWatch) -> Option<Subscriber> {
    if let Err(e) = crate::fsutil::create_private_dir(cache.dir()) {
        tracing::warn!(error = %e, "cannot create the key cache");
    }
    // Reads are ignored: reloading reads the cache, which must not trigger another reload.
    let spec = Spec { name: "key cache", debounce: DEBOUNCE, max_delay: MAX_DELAY, ignore_reads: true };
    let (subscriber, mut rx) = files.subscribe_tokio(spec);
    if let Err(e) = subscriber.watch(cache.dir(), RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, "cannot watch the key cache; ring keys reload only through the gateway");
        return None;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            let keys = cache_keys(&cache, &name);
            let reloaded = match ring.replace_keys(keys).await {
                Ok(r) => r,
                Err(_) => break,
            };
            // Installed first, used once marked: a rotation's "install, then use" order.
            let mut used = false;
            if let Some(p) = primary_mark(&cache, &name) {
                let current = ring.status().keys.iter().find(|k| k.primary).map(|k| k.id.clone());
                if current.as_deref() != Some(p.to_string().as_str()) {
                    match ring.use_key(p.clone()).await {
                        Ok(Ok(())) => used = true,
                        Ok(Err(e)) => {
                            tracing::debug!(key = %p, error = %e, "the marked primary is not installed yet")
                        }
                        Err(_) => break,
                    }
                }
            }
            if reloaded || used {
                let ids: Vec<String> = ring.status().keys.iter().map(|k| k.id.clone()).collect();
                tracing::info!(keys = ?ids, primary = ?primary_mark(&cache, &name).map(|p| p.to_string()), "ring keys reloaded from the key cache");
            }
        }
    });
    Some(subscriber)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_mark_is_read_back_and_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KeyCache::new(dir.path().join("keys"));
        assert_eq!(primary_mark(&cache, "acme"), None);
        let key = RingKey::generate("acme").unwrap();
        cache.write(&key.to_file()).unwrap();
        assert!(mark_primary(&cache, &key.id).unwrap());
        assert!(!mark_primary(&cache, &key.id).unwrap(), "unchanged: not rewritten");
        assert_eq!(primary_mark(&cache, "acme"), Some(key.id.clone()));
        assert_eq!(cache.revisions(KeyKind::SymSecret, "acme").unwrap(), vec![key.id.clone()]);
        assert_eq!(cache_keys(&cache, "acme").len(), 1);
        // A mark naming another ring's key is no mark for this one.
        std::fs::write(primary_path(&cache, "other"), format!("{}\n", key.id)).unwrap();
        assert_eq!(primary_mark(&cache, "other"), None);
    }
}
