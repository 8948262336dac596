//! Anti-entropy: a periodic TCP push-pull of the full membership and rumor state, so large
//! rumors and members that joined late always converge. The state travels in chunks
//! (`PUSHPULL_CHUNK` bytes of rumors a frame), each frame decoded only after its member and
//! rumor counts were checked against the caps, so no frame needs a large allocation.

use std::net::SocketAddr;
use std::time::Duration;

use foca::{Member, State};
use prost::Message as _;
use rand::RngExt;

use super::merge::Origin;
use super::{Event, Output, RingCore};
use crate::ring::codec::{member_from_proto, member_to_proto};
use crate::ring::identity::Ident;
use crate::ring::metrics::Metrics;
use crate::ring::proto;
use crate::ring::rumor::Rumor;
use crate::ring::wire::{MAX_FRAME, Reject};

/// Rumor bytes per push-pull frame (a single larger rumor gets a frame of its own).
pub const PUSHPULL_CHUNK: usize = 1024 * 1024;
/// Most members one frame may carry.
pub const MAX_FRAME_MEMBERS: usize = 16_384;
/// Most rumors one frame may carry (the sender puts at most a quarter of this in a frame).
pub const MAX_FRAME_RUMORS: usize = 32_768;

/// Counts the top-level `members` (2) and `rumors` (3) fields of an encoded `PushPull`
/// without decoding it: a frame of millions of empty entries is refused before prost
/// allocates a struct for each.
fn count_entries(mut buf: &[u8]) -> Option<(usize, usize)> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let (mut members, mut rumors) = (0usize, 0usize);
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).ok()?;
        match wire {
            WireType::Varint => {
                decode_varint(&mut buf).ok()?;
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                if len > buf.len() {
                    return None;
                }
                buf = &buf[len..];
                match tag {
                    2 => members += 1,
                    3 => rumors += 1,
                    _ => {}
                }
            }
            WireType::SixtyFourBit if buf.len() >= 8 => buf = &buf[8..],
            WireType::ThirtyTwoBit if buf.len() >= 4 => buf = &buf[4..],
            _ => return None,
        }
    }
    Some((members, rumors))
}

/// Decodes one opened push-pull frame, refusing it before decoding when it is over the caps.
pub fn decode_pushpull(payload: &[u8]) -> Result<proto::PushPull, Reject> {
    let (members, rumors) = count_entries(payload).ok_or(Reject::Decode)?;
    if members > MAX_FRAME_MEMBERS || rumors > MAX_FRAME_RUMORS {
        return Err(Reject::TooLarge);
    }
    proto::PushPull::decode(payload).map_err(|_| Reject::Decode)
}

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

    /// Our full state as push-pull frames (unsealed): members in the first, rumors chunked.
    pub fn pushpull_frames(&self) -> Vec<proto::PushPull> {
        let from = Some(self.me.to_proto());
        let mut frames = vec![proto::PushPull {
            from: from.clone(),
            members: self.foca.iter_membership_state().map(member_to_proto).collect(),
            rumors: Vec::new(),
            more: false,
        }];
        let mut bytes = 0;
        self.with_store(|s| {
            for r in s.iter() {
                let p = r.to_proto();
                let len = p.encoded_len();
                let last = frames.last_mut().expect("one frame at least");
                if !last.rumors.is_empty()
                    && (bytes + len > PUSHPULL_CHUNK || last.rumors.len() >= MAX_FRAME_RUMORS / 4)
                {
                    frames.push(proto::PushPull {
                        from: from.clone(),
                        members: Vec::new(),
                        rumors: Vec::new(),
                        more: false,
                    });
                    bytes = 0;
                }
                bytes += len;
                frames.last_mut().expect("one frame at least").rumors.push(p);
            }
        });
        let n = frames.len();
        for (i, f) in frames.iter_mut().enumerate() {
            f.more = i + 1 < n;
        }
        frames
    }

    /// Our full state, each frame encoded and sealed with the primary key.
    pub fn pushpull_sealed(&self) -> Vec<Vec<u8>> {
        self.pushpull_frames().iter().map(|f| self.keyring.seal(&f.encode_to_vec())).collect()
    }

    /// Opens, decodes and merges one sealed frame of a peer's push-pull (tests and fuzzing;
    /// the shell opens frames off the ring thread and calls `apply_pushpull`).
    pub fn handle_pushpull(&mut self, now: Duration, bytes: &[u8]) -> Result<(), Reject> {
        let payload = self.keyring.open(bytes, MAX_FRAME).inspect_err(|r| self.reject(*r))?;
        let msg = decode_pushpull(&payload).inspect_err(|r| self.reject(*r))?;
        self.apply_pushpull(now, msg)
    }

    /// Merges one decoded frame of a peer's push-pull.
    pub fn apply_pushpull(&mut self, now: Duration, msg: proto::PushPull) -> Result<(), Reject> {
        self.now = now;
        if self.departed || self.left {
            return Ok(());
        }
        if msg.members.len() > MAX_FRAME_MEMBERS || msg.rumors.len() > MAX_FRAME_RUMORS {
            self.reject(Reject::TooLarge);
            return Err(Reject::TooLarge);
        }
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
            if let Err(e) = self.merge_rumor(rumor, Origin::PushPull) {
                tracing::debug!(error = %e, "refused a pulled rumor");
            }
        }
        if !msg.more {
            Metrics::inc(&self.metrics.pushpull_ok, 1);
            self.emit(Event::Synced);
        }
        crate::ring::handler::lock(&self.shared).fresh = true;
        self.forward_news();
        self.drain();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_of_empty_entries_is_refused_before_decoding() {
        // 2 bytes per empty rumor (tag, length 0): 100k of them in 200 KB.
        let mut frame = Vec::new();
        for _ in 0..100_000 {
            frame.extend_from_slice(&[0x1a, 0x00]);
        }
        assert_eq!(decode_pushpull(&frame), Err(Reject::TooLarge));
        let mut members = Vec::new();
        for _ in 0..(MAX_FRAME_MEMBERS + 1) {
            members.extend_from_slice(&[0x12, 0x00]);
        }
        assert_eq!(decode_pushpull(&members), Err(Reject::TooLarge));
        assert_eq!(decode_pushpull(&[0x1a, 0x05, 0x00]), Err(Reject::Decode), "truncated");
        let ok = proto::PushPull { rumors: vec![proto::Rumor::default(); 3], ..Default::default() };
        assert_eq!(decode_pushpull(&ok.encode_to_vec()).unwrap().rumors.len(), 3);
    }
}
