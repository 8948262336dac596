//! foca's custom-broadcast handler: rumors ride on SWIM packets while they are news.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use super::identity::{Ident, MemberId};
use super::proto;
use super::rumor::{Rumor, RumorError, RumorKey, RumorStore};

/// What the core must react to after a packet was handled.
#[derive(Debug, Clone)]
pub enum Inbound {
    Suspicion(proto::SuspicionRumor),
    Departure(String),
    /// News gossiped on a SWIM packet, for the core's merge path.
    Rumor(Rumor),
}

/// The key foca uses to replace stale broadcasts in its backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BroadcastKey {
    Rumor(RumorKey),
    Suspicion(MemberId, u32, u32, Vec<u8>),
}

impl foca::Invalidates for BroadcastKey {
    fn invalidates(&self, other: &Self) -> bool {
        self == other
    }
}

pub struct Shared {
    pub store: RumorStore,
    pub inbox: Vec<Inbound>,
    /// A packet brought news: forward it at once instead of waiting for the gossip tick.
    pub fresh: bool,
    seen_suspicions: HashSet<(MemberId, u32, u32, Vec<u8>)>,
    seen_order: VecDeque<(MemberId, u32, u32, Vec<u8>)>,
}

const SEEN_SUSPICIONS: usize = 4096;

impl Shared {
    pub fn new(store: RumorStore) -> Self {
        Shared {
            store,
            inbox: Vec::new(),
            fresh: false,
            seen_suspicions: HashSet::new(),
            seen_order: VecDeque::new(),
        }
    }
}

pub struct Handler {
    pub shared: Arc<Mutex<Shared>>,
}

pub fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A panic while holding the lock cannot leave the store half-merged in a way that matters
    // more than stopping the ring: keep going with the data as it is.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl foca::BroadcastHandler<Ident> for Handler {
    type Key = BroadcastKey;
    type Error = RumorError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Ident>,
    ) -> Result<Option<BroadcastKey>, RumorError> {
        let p = Rumor::decode(data)?;
        let mut sh = lock(&self.shared);
        if let Some(proto::rumor::Body::Suspicion(s)) = &p.body {
            let target = s.target.as_ref().and_then(Ident::from_proto).ok_or(RumorError::Decode)?;
            let seen = (target.id, target.generation, s.incarnation, s.from.clone());
            if !sh.seen_suspicions.insert(seen.clone()) {
                return Ok(None);
            }
            sh.seen_order.push_back(seen.clone());
            if sh.seen_order.len() > SEEN_SUSPICIONS
                && let Some(old) = sh.seen_order.pop_front()
            {
                sh.seen_suspicions.remove(&old);
            }
            if sender.is_some() {
                sh.inbox.push(Inbound::Suspicion(s.clone()));
                sh.fresh = true;
            }
            return Ok(Some(BroadcastKey::Suspicion(seen.0, seen.1, seen.2, seen.3)));
        }
        let rumor = Rumor::from_proto(p)?.ok_or(RumorError::Empty)?.normalized()?;
        let key = rumor.key();
        if sender.is_none() {
            // Added locally: the core merged it already.
            return Ok(Some(BroadcastKey::Rumor(key)));
        }
        // foca keeps what we call news for rebroadcast; the core's merge path stores it.
        if !sh.store.is_news(&rumor) {
            return Ok(None);
        }
        sh.fresh = true;
        sh.inbox.push(Inbound::Rumor(rumor));
        Ok(Some(BroadcastKey::Rumor(key)))
    }
}
