//! Reloads the keyring when ring keys are added to or removed from the key cache.

use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use crate::crypto::{KeyCache, KeyKind, RingKey};
use crate::ring::RingHandle;

const DEBOUNCE: Duration = Duration::from_millis(250);

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

/// Watches the cache folder; keep the returned debouncer alive as long as the watch matters.
pub fn spawn(
    ring: RingHandle,
    cache: KeyCache,
    name: String,
) -> Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut debouncer = match new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| {
        if res.is_ok() {
            let _ = tx.send(());
        }
    }) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the key cache; ring keys reload only through the gateway");
            return None;
        }
    };
    if let Err(e) = std::fs::create_dir_all(cache.dir()) {
        tracing::warn!(error = %e, "cannot create the key cache");
    }
    if let Err(e) = debouncer.watch(cache.dir(), RecursiveMode::NonRecursive) {
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
    Some(debouncer)
}
