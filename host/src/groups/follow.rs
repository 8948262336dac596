//! The census's shell: one task owns the [`Census`], applies every ring event to it as it
//! comes, and publishes a snapshot after each batch (groups are shared between snapshots until
//! they change, so a snapshot costs one map of pointers).

use std::sync::Arc;

use tokio::sync::watch;

use super::census::Census;
use crate::ring::RingHandle;
use crate::ring::shell::RingGone;

/// Starts following the ring; the receiver always holds the latest census.
pub async fn spawn(ring: RingHandle) -> Result<watch::Receiver<Arc<Census>>, RingGone> {
    // Subscribe first, then read the store: an event in between is applied twice, which
    // changes nothing (a rumor replaces itself), rather than lost.
    let mut events = ring.subscribe().await?;
    let status = ring.status();
    let mut census = ring.with_rumors(|s| Census::from_ring(&status.id.to_string(), &status.members, s));
    let (tx, rx) = watch::channel(Arc::new(census.clone()));
    tokio::spawn(async move {
        while let Some(first) = events.recv().await {
            census.apply(&first);
            while let Ok(next) = events.try_recv() {
                census.apply(&next);
            }
            tx.send_replace(Arc::new(census.clone()));
        }
    });
    Ok(rx)
}
