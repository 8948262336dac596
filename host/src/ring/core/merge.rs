//! The one merge path: every rumor that reaches the store (injected here, gossiped on SWIM
//! packets, pulled by push-pull, advertised by the core itself) goes through `merge_rumor`,
//! which checks it, stores it, reacts to departures, spreads it and emits the event.

use super::{Event, Output, PIGGYBACK_MAX, RingCore};
use crate::ring::handler::{Inbound, lock};
use crate::ring::proto;
use crate::ring::rumor::{MAX_RUMOR_LEN, Rumor, RumorError};

/// Where a rumor came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Said by this member (injected, advertised, a departure it was asked to spread).
    Local,
    /// Piggybacked on a SWIM packet: foca already holds it for rebroadcast.
    Gossip,
    /// Pulled in a push-pull exchange.
    PushPull,
}

impl RingCore {
    pub(crate) fn merge_rumor(&mut self, rumor: Rumor, origin: Origin) -> Result<Option<Rumor>, RumorError> {
        let len = rumor.encoded_len();
        if len > MAX_RUMOR_LEN {
            return Err(RumorError::TooLarge(len));
        }
        if let Rumor::Departure(d) = &rumor
            && self.departure_expired(d)
        {
            // A lagging member still gossips a tombstone everyone else dropped: do not revive it.
            return Ok(None);
        }
        let merged = lock(&self.shared).store.merge(rumor)?;
        let Some(stored) = merged else { return Ok(None) };
        if let Rumor::Departure(d) = &stored {
            lock(&self.shared).inbox.push(Inbound::Departure(d.member_id.clone()));
        }
        match origin {
            Origin::Gossip => {}
            Origin::Local => self.piggyback(&stored),
            Origin::PushPull => {
                let bytes = stored.encode();
                if bytes.len() <= PIGGYBACK_MAX {
                    let _ = self.foca.add_broadcast(&bytes);
                }
            }
        }
        self.emit(Event::RumorChanged { rumor: stored.clone(), origin });
        Ok(Some(stored))
    }

    fn departure_expired(&self, d: &proto::DepartureRumor) -> bool {
        let retention = self.cfg.departed_retention.as_secs();
        self.wall > 0 && d.departed_at > 0 && d.departed_at.saturating_add(retention) <= self.wall
    }

    /// Rumors ride on SWIM packets while small; bigger ones are pushed by push-pull now.
    pub(super) fn piggyback(&mut self, rumor: &Rumor) {
        let bytes = rumor.encode();
        if bytes.len() <= PIGGYBACK_MAX {
            let _ = self.foca.add_broadcast(&bytes);
            lock(&self.shared).fresh = true;
            self.forward_news();
        } else {
            self.request_pushpull();
        }
    }

    /// Makes a client's rumor this member's own: its member id as author, and the next
    /// incarnation for the key. Member rumors and departures have their own paths.
    pub(super) fn own_rumor(&self, mut rumor: Rumor) -> Result<Rumor, RumorError> {
        let me = self.me.id.to_string();
        match &mut rumor {
            Rumor::Service(s) => s.member_id = me,
            Rumor::ServiceConfig(c) => c.from_id = me,
            Rumor::ServiceFile(f) => f.from_id = me,
            Rumor::Election(e) | Rumor::ElectionUpdate(e) => e.from_id = me,
            Rumor::Member(_) | Rumor::Departure(_) => return Err(RumorError::NotInjectable),
        }
        // The key depends on the author (a service rumor is keyed by its member), so look up
        // the stored incarnation only now.
        let held = self.with_store(|s| s.get(&rumor.key()).and_then(Rumor::incarnation));
        if let Some(inc) = rumor.incarnation_mut() {
            *inc = held.map_or(1, |h| h.saturating_add(1));
        }
        Ok(rumor)
    }

    /// Makes a versioned rumor this member's own, keeping its version: 0 and anything not
    /// above what the ring holds for the key are refused.
    pub(super) fn own_versioned(&self, mut rumor: Rumor) -> Result<Rumor, RumorError> {
        let me = self.me.id.to_string();
        match &mut rumor {
            Rumor::ServiceConfig(c) => c.from_id = me,
            Rumor::ServiceFile(f) => f.from_id = me,
            _ => return Err(RumorError::NotVersioned),
        }
        let offered = rumor.incarnation().unwrap_or(0);
        if offered == 0 {
            return Err(RumorError::VersionZero);
        }
        let held = self.with_store(|s| s.get(&rumor.key()).and_then(Rumor::incarnation));
        match held {
            Some(current) if current >= offered => Err(RumorError::StaleVersion { offered, current }),
            _ => Ok(rumor),
        }
    }

    /// Drops departed members' tombstones and rumors once `departed_retention` has passed.
    pub(super) fn expire_departed(&mut self) {
        if self.wall == 0 {
            return;
        }
        let retention = self.cfg.departed_retention.as_secs();
        let keys = self.with_store(|s| s.expired(self.wall, retention));
        for key in keys {
            if lock(&self.shared).store.remove(&key).is_some() {
                tracing::info!(kind = key.kind.label(), id = %key.a, "dropped an expired departed member's rumor");
                self.out.push(Output::Event(Event::RumorRemoved { key }));
            }
        }
    }
}
