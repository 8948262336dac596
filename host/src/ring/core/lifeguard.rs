//! Lifeguard suspicion around foca: a suspected member is declared down after a timeout
//! that shrinks as other members independently report failed probes of it.

use prost::Message as _;

use super::RingCore;
use crate::ring::handler::lock;
use crate::ring::identity::{Ident, MemberId};
use crate::ring::proto;
use crate::ring::suspicion::{Suspicion, min_timeout};

impl RingCore {
    pub(super) fn start_suspicion(&mut self, member: Ident, incarnation: u16, token: u8) {
        // foca re-submits the timer each time it probes a member that is still suspect: keep
        // the running suspicion (and its start) instead of restarting it.
        if let Some((inc, tok, _)) = self.suspicions.get_mut(&member)
            && *inc == incarnation
        {
            *tok = token;
            return;
        }
        let n = self.active_count();
        let min = min_timeout(self.cfg.suspicion_mult, n, self.cfg.probe_interval);
        let max = min * self.cfg.suspicion_max_mult.max(1);
        // memberlist: k = mult - 2 expected confirmations, none if the cluster is too small.
        let mut k = self.cfg.suspicion_mult.saturating_sub(2);
        if (n as u32).saturating_sub(2) < k {
            k = 0;
        }
        let mut s = Suspicion::new(self.now, min, max, k);
        if let Some(confirmers) = self.confirmations.get(&(member.clone(), incarnation)) {
            for c in confirmers {
                s.confirm(*c);
            }
        }
        // Tell the others we independently suspect it.
        let rumor = proto::Rumor {
            body: Some(proto::rumor::Body::Suspicion(proto::SuspicionRumor {
                target: Some(member.to_proto()),
                incarnation: u32::from(incarnation),
                from: self.me.id.0.to_vec(),
            })),
        };
        let _ = self.foca.add_broadcast(&rumor.encode_to_vec());
        lock(&self.shared).fresh = true;
        self.forward_news();
        self.reported.insert(member.id, foca::State::Suspect);
        self.emit(super::Event::MemberSuspect(member.id));
        self.suspicions.insert(member, (incarnation, token, s));
    }

    pub(super) fn on_suspicion(&mut self, s: proto::SuspicionRumor) {
        let (Some(target), Some(from)) =
            (s.target.as_ref().and_then(Ident::from_proto), MemberId::from_slice(&s.from))
        else {
            return;
        };
        if from == self.me.id || target.id == self.me.id {
            return;
        }
        let Ok(inc) = u16::try_from(s.incarnation) else { return };
        if let Some((i, _, sus)) = self.suspicions.get_mut(&target)
            && *i == inc
        {
            sus.confirm(from);
        }
        if self.confirmations.len() > 10_000 {
            self.confirmations.clear();
        }
        self.confirmations.entry((target, inc)).or_default().insert(from);
    }
}
