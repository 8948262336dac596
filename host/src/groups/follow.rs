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
    // The subscription starts from the core's own state, not from the mirror or the status
    // watch (both lag): a change made just before it would otherwise never reach the census.
    let sub = ring.subscribe().await?;
    let mut events = sub.events;
    let mut census = Census::from_ring(&sub.status.id.to_string(), &sub.status.members, &sub.rumors);
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
