//! A copy of the rumor store kept from the ring's events, off the ring's thread: the HTTP
//! gateway reads it, and it is what gets persisted (encoded and fsynced on a blocking thread,
//! at most once a second), so neither views nor a slow disk hold up gossip.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;

use super::core::{Event, RingCore};
use super::persist::{DataDir, RingState};
use super::rumor::{RumorLimits, RumorStore};
use super::shell::ToMirror;

const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Where the mirror persists rumors and ring state.
#[derive(Clone)]
pub struct Persist {
    pub data: DataDir,
}

pub struct Mirror {
    store: Arc<RwLock<RumorStore>>,
    persist: Option<Persist>,
}

impl Mirror {
    /// Starts from the core's store as it is before the ring loop runs.
    pub fn new(core: &RingCore, persist: Option<Persist>) -> Self {
        // The mirror only copies what the core accepted: it must never refuse it.
        let mut store =
            RumorStore::with_limits(RumorLimits { max_rumors: usize::MAX, max_bytes: usize::MAX });
        let _ = store.restore(&core.with_store(|s| s.snapshot()));
        Mirror { store: Arc::new(RwLock::new(store)), persist }
    }

    pub fn store(&self) -> Arc<RwLock<RumorStore>> {
        self.store.clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RumorStore> {
        self.store.write().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<ToMirror>) {
        let mut dirty = false;
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(ToMirror::Event(e)) => match *e {
                        Event::RumorChanged { rumor, .. } => {
                            let _ = self.write().put(rumor);
                            dirty = true;
                        }
                        Event::RumorRemoved { key } => {
                            self.write().remove(&key);
                            dirty = true;
                        }
                        _ => {}
                    },
                    Some(ToMirror::State { generation, incarnation, primary_key }) => {
                        self.save_state(RingState { generation, incarnation, primary_key }).await;
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if dirty {
                        dirty = false;
                        self.save_rumors().await;
                    }
                }
            }
        }
        if dirty {
            self.save_rumors().await;
        }
    }

    async fn save_state(&self, state: RingState) {
        let Some(p) = self.persist.clone() else { return };
        let r = tokio::task::spawn_blocking(move || p.data.save_state(&state)).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "could not save ring state");
        }
    }

    async fn save_rumors(&self) {
        let Some(p) = self.persist.clone() else { return };
        let store = self.store.clone();
        let r = tokio::task::spawn_blocking(move || {
            let bytes = store.read().unwrap_or_else(|p| p.into_inner()).snapshot();
            p.data.save_rumors(&bytes)
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "could not save rumors");
        }
    }
}
