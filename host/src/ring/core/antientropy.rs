//! Anti-entropy: a periodic TCP push-pull of the full membership and rumor state, so large
//! rumors and members that joined late always converge.

use std::net::SocketAddr;
use std::time::Duration;

use foca::{Member, State};
use prost::Message as _;
use rand::RngExt;

use super::{Output, PIGGYBACK_MAX, RingCore};
use crate::ring::codec::{member_from_proto, member_to_proto};
use crate::ring::handler::{Inbound, lock};
use crate::ring::identity::Ident;
use crate::ring::metrics::Metrics;
use crate::ring::proto;
use crate::ring::rumor::Rumor;
use crate::ring::wire::{MAX_FRAME, Reject};

impl RingCore {
    pub(super) fn request_pushpull(&mut self) {
        let members: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        if !members.is_empty() {
            let to = members[self.rng.random_range(0..members.len())];
            self.out.push(Output::PushPull { to });
        } else if let Some(p) = self.peers.iter().find(|p| **p != self.me.addr) {
            self.out.push(Output::PushPull { to: *p });
        }
    }

    /// Our full state, sealed, for a push-pull exchange.
    pub fn pushpull_message(&self) -> Vec<u8> {
        let msg = proto::PushPull {
            from: Some(self.me.to_proto()),
            members: self.foca.iter_membership_state().map(member_to_proto).collect(),
            rumors: self.with_store(|s| s.iter().map(Rumor::to_proto).collect()),
        };
        self.keyring.seal(&msg.encode_to_vec())
    }

    /// Merges a peer's push-pull frame.
    pub fn handle_pushpull(&mut self, now: Duration, bytes: &[u8]) -> Result<(), Reject> {
        self.now = now;
        if self.departed {
            return Ok(());
        }
        let payload = self.keyring.open(bytes, MAX_FRAME).inspect_err(|r| self.reject(*r))?;
        let msg = proto::PushPull::decode(payload.as_slice())
            .map_err(|_| Reject::Decode)
            .inspect_err(|r| self.reject(*r))?;
        let from = msg
            .from
            .as_ref()
            .and_then(Ident::from_proto)
            .ok_or(Reject::Decode)
            .inspect_err(|r| self.reject(*r))?;
        if self.is_departed_id(&from.id) {
            self.reject(Reject::Departed);
            return Err(Reject::Departed);
        }
        let mut updates = Vec::with_capacity(msg.members.len() + 1);
        updates.push(Member::new(from, 0, State::Alive));
        for m in &msg.members {
            match member_from_proto(m) {
                Ok(m) if !self.is_departed_id(&m.id().id) => updates.push(m),
                Ok(_) => {}
                Err(_) => {
                    self.reject(Reject::Decode);
                    return Err(Reject::Decode);
                }
            }
        }
        if let Err(e) = self.foca.apply_many(updates.into_iter(), true, &mut self.acc) {
            Metrics::inc(&self.metrics.foca_errors, 1);
            tracing::trace!(error = %e, "push-pull membership");
        }
        for p in msg.rumors {
            let Ok(Some(rumor)) = Rumor::from_proto(p) else { continue };
            let merged = lock(&self.shared).store.merge(rumor, false);
            if let Ok(Some(stored)) = merged {
                if let Rumor::Departure(d) = &stored {
                    lock(&self.shared).inbox.push(Inbound::Departure(d.member_id.clone()));
                }
                if stored.encode().len() <= PIGGYBACK_MAX {
                    let _ = self.foca.add_broadcast(&stored.encode());
                }
            }
        }
        Metrics::inc(&self.metrics.pushpull_ok, 1);
        lock(&self.shared).fresh = true;
        self.forward_news();
        self.drain();
        Ok(())
    }
}
