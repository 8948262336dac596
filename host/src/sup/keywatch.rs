//! Reloads the keyring when ring keys are added to or removed from the key cache.

use std::time::Duration;

use crate::crypto::{KeyCache, KeyKind, RingKey};
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
            match ring.replace_keys(keys).await {
                Ok(true) => {
                    let ids: Vec<String> = ring.status().keys.iter().map(|k| k.id.clone()).collect();
                    tracing::info!(keys = ?ids, "ring keys reloaded from the key cache");
                }
                Ok(false) => {}
                Err(_) => break,
            }
        }
    });
    Some(subscriber)
}
