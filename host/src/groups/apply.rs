//! The task that owns the group inbox: it feeds it the ring's ServiceConfig and ServiceFile
//! rumors for the groups of the loaded services, and hands what it decides to the services.
//!
//! It follows the ring's events, rescans the store when the loaded groups change, when the
//! key cache folder changes (a key dropped in applies at once), when a waiting offer's retry
//! is due, and every couple of seconds as a safety net.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::inbox::{Decision, Inbox, Keys, Kind, Offer, Verdict};
use super::metrics::GroupMetrics;
use crate::crypto::boxes::box_public_from_cache;
use crate::crypto::{BoxPublicKey, BoxSecretKeyFile, KeyCache, KeyId, KeyKind};
use crate::ring::{Event, RingHandle, Rumor, RumorKind, RumorStore};
use crate::services::Services;
use crate::watch::{FileWatch, RecursiveMode, Spec};

const RESCAN_EVERY: Duration = Duration::from_secs(2);

impl Keys for KeyCache {
    fn service_secret(&self, id: &KeyId) -> Option<BoxSecretKeyFile> {
        self.get(KeyKind::BoxSecret, id).ok().and_then(|f| BoxSecretKeyFile::try_from(&f).ok())
    }

    fn user_public(&self, id: &KeyId) -> Option<BoxPublicKey> {
        box_public_from_cache(self, id).ok()
    }
}

fn offer_of(rumor: &Rumor) -> Option<Offer<'_>> {
    match rumor {
        Rumor::ServiceConfig(c) => Some(Offer {
            group: &c.service_group,
            kind: Kind::Config,
            filename: "",
            incarnation: c.incarnation,
            encrypted: c.encrypted,
            payload: &c.config,
        }),
        Rumor::ServiceFile(f) => Some(Offer {
            group: &f.service_group,
            kind: Kind::File,
            filename: &f.filename,
            incarnation: f.incarnation,
            encrypted: f.encrypted,
            payload: &f.body,
        }),
        _ => None,
    }
}

/// The config and file rumors of `groups` in the store.
pub fn rumors_of(store: &RumorStore, groups: &BTreeSet<String>) -> Vec<Rumor> {
    let mut out = Vec::new();
    for group in groups {
        for kind in [RumorKind::ServiceConfig, RumorKind::ServiceFile] {
            out.extend(store.of_group(kind, group).cloned());
        }
    }
    out
}

/// Offers `rumor` to the inbox; logs what is news (once per incarnation) and returns the
/// decision to hand over, if any.
fn consider(inbox: &mut Inbox, rumor: &Rumor, keys: &dyn Keys, now: Instant) -> Option<Decision> {
    let offer = offer_of(rumor)?;
    let (group, kind, file, inc) = (offer.group, offer.kind.label(), offer.filename, offer.incarnation);
    match inbox.offer(offer, keys, now)? {
        Verdict::Apply(d) => return Some(d),
        Verdict::Dropped { outcome, why } => {
            tracing::warn!(group = %group, kind, file, incarnation = inc, outcome = outcome.label(), "gossiped {kind} dropped: {why}")
        }
        Verdict::Waiting { missing, retry_at } => tracing::warn!(
            group = %group, kind, file, incarnation = inc, key = %missing,
            retry_in = ?retry_at.saturating_duration_since(now),
            "gossiped {kind} waits for a key missing from the key cache"
        ),
    }
    None
}

/// What the store holds for `groups`, decided at once: the layers services start with.
pub fn initial(
    inbox: &mut Inbox,
    ring: &RingHandle,
    groups: &BTreeSet<String>,
    cache: &KeyCache,
    metrics: &GroupMetrics,
) -> Vec<Decision> {
    let rumors = ring.with_rumors(|s| rumors_of(s, groups));
    let now = Instant::now();
    let out = rumors.iter().filter_map(|r| consider(inbox, r, cache, now)).collect();
    metrics.publish(&inbox.counters());
    out
}

/// Everything the task needs.
pub struct GroupApply {
    pub inbox: Inbox,
    pub ring: RingHandle,
    pub services: Services,
    pub cache: KeyCache,
    pub files: FileWatch,
    pub metrics: Arc<GroupMetrics>,
    /// The groups [`initial`] was given: followed until the services publish theirs (after
    /// their restore), so what was applied at start is not forgotten and applied again.
    pub initial_groups: BTreeSet<String>,
}

impl GroupApply {
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn hand_over(&self, decisions: Vec<Decision>) -> bool {
        for d in decisions {
            if self.services.gossip(d).await.is_err() {
                return false;
            }
        }
        true
    }

    fn rescan(&mut self, groups: &BTreeSet<String>) -> Vec<Decision> {
        self.inbox.retain_groups(|g| groups.contains(g));
        let rumors = self.ring.with_rumors(|s| rumors_of(s, groups));
        let now = Instant::now();
        let out = rumors.iter().filter_map(|r| consider(&mut self.inbox, r, &self.cache, now)).collect();
        self.metrics.publish(&self.inbox.counters());
        out
    }

    async fn run(mut self) {
        let Ok(sub) = self.ring.subscribe().await else { return };
        let mut events = sub.events;
        let mut groups = std::mem::take(&mut self.initial_groups);
        // What arrived since `initial` read the store and before this subscription (a member
        // that just rejoined pulls the ring's state at once) is in the subscription's own
        // snapshot, taken with the event stream; the mirror may not hold it yet.
        let now = Instant::now();
        let missed: Vec<Decision> = sub
            .rumors
            .iter()
            .filter(|r| groups.contains(group_of(r)))
            .filter_map(|r| consider(&mut self.inbox, r, &self.cache, now))
            .collect();
        self.metrics.publish(&self.inbox.counters());
        if !self.hand_over(missed).await {
            return;
        }
        // Unseen until the services publish their groups after restoring them.
        let mut loaded: watch::Receiver<BTreeSet<String>> = self.services.loaded();
        if let Err(e) = crate::fsutil::create_private_dir(self.cache.dir()) {
            tracing::warn!(error = %e, "cannot create the key cache");
        }
        // Reads are ignored: decrypting reads the cache.
        let spec = Spec {
            name: "key cache (service groups)",
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ignore_reads: true,
        };
        let (subscriber, mut keys) = self.files.subscribe_tokio(spec);
        if let Err(e) = subscriber.watch(self.cache.dir(), RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, "the key cache is not watched; keys added later apply within {RESCAN_EVERY:?}");
        }
        let mut rescan = true;
        let mut next = Instant::now();
        loop {
            if rescan {
                let decisions = self.rescan(&groups);
                if !self.hand_over(decisions).await {
                    return;
                }
                // Kept across events: a busy ring (a rumor every second) must not put the
                // periodic rescan off for ever, as resetting it on every event did.
                next = Instant::now() + RESCAN_EVERY;
            }
            let wake = self.inbox.retry_at().map_or(next, |r| r.min(next));
            rescan = tokio::select! {
                event = events.recv() => match event {
                    // The mirror may not hold it yet: offer the event's own copy.
                    Some(Event::RumorChanged { rumor, .. }) if groups.contains(group_of(&rumor)) => {
                        let decision = consider(&mut self.inbox, &rumor, &self.cache, Instant::now());
                        self.metrics.publish(&self.inbox.counters());
                        if !self.hand_over(decision.into_iter().collect()).await {
                            return;
                        }
                        false
                    }
                    Some(_) => false,
                    None => return,
                },
                changed = loaded.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    groups = loaded.borrow_and_update().clone();
                    true
                }
                Some(_) = keys.recv() => {
                    self.inbox.keys_changed(Instant::now());
                    true
                }
                _ = tokio::time::sleep_until(wake.into()) => true,
            };
        }
    }
}

fn group_of(rumor: &Rumor) -> &str {
    match rumor {
        Rumor::ServiceConfig(c) => &c.service_group,
        Rumor::ServiceFile(f) => &f.service_group,
        _ => "",
    }
}
