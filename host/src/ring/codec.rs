//! foca's codec: headers and membership updates as length-delimited protobuf messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::{Buf, BufMut};
use foca::{Header, Member, Message, State};
use prost::Message as _;

use super::identity::{Ident, MemberId};
use super::proto;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("no room for a {0}-byte message")]
    NoRoom(usize),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Encodes foca's messages with prost. It also watches the incarnation foca puts on our own
/// outgoing headers, so the core can persist refutations across restarts.
pub struct ProtoCodec {
    me: MemberId,
    own_incarnation: Arc<AtomicU32>,
}

impl ProtoCodec {
    pub fn new(me: MemberId, own_incarnation: Arc<AtomicU32>) -> Self {
        ProtoCodec { me, own_incarnation }
    }
}

fn ident(p: Option<&proto::Identity>, what: &'static str) -> Result<Ident, CodecError> {
    p.and_then(Ident::from_proto).ok_or(CodecError::Invalid(what))
}

fn probe_number(n: u32) -> Result<u8, CodecError> {
    u8::try_from(n).map_err(|_| CodecError::Invalid("probe number"))
}

fn incarnation(n: u32) -> Result<u16, CodecError> {
    u16::try_from(n).map_err(|_| CodecError::Invalid("incarnation"))
}

/// Writes `msg` length-delimited into foca's buffer in one piece: foca hands the codec a
/// `bytes` `Limit`, whose bookkeeping on each of prost's many small writes cost more than
/// encoding into a vector and copying it in once. Nothing is written when it does not fit.
fn put_delimited(msg: &impl prost::Message, mut buf: impl BufMut) -> Result<(), CodecError> {
    let bytes = msg.encode_length_delimited_to_vec();
    if bytes.len() > buf.remaining_mut() {
        return Err(CodecError::NoRoom(bytes.len()));
    }
    buf.put_slice(&bytes);
    Ok(())
}

pub fn header_to_proto(header: &Header<Ident>) -> proto::SwimHeader {
    use proto::SwimKind as K;
    let (kind, probe, other) = match &header.message {
        Message::Ping(n) => (K::Ping, *n, None),
        Message::Ack(n) => (K::Ack, *n, None),
        Message::PingReq { target, probe_number } => (K::PingReq, *probe_number, Some(target)),
        Message::IndirectPing { origin, probe_number } => (K::IndirectPing, *probe_number, Some(origin)),
        Message::IndirectAck { target, probe_number } => (K::IndirectAck, *probe_number, Some(target)),
        Message::ForwardedAck { origin, probe_number } => (K::ForwardedAck, *probe_number, Some(origin)),
        Message::Announce => (K::Announce, 0, None),
        Message::Feed => (K::Feed, 0, None),
        Message::Gossip => (K::Gossip, 0, None),
        Message::Broadcast => (K::Broadcast, 0, None),
        Message::TurnUndead => (K::TurnUndead, 0, None),
    };
    proto::SwimHeader {
        src: Some(header.src.to_proto()),
        src_incarnation: u32::from(header.src_incarnation),
        dst: Some(header.dst.to_proto()),
        kind: kind as i32,
        probe_number: u32::from(probe),
        other: other.map(Ident::to_proto),
    }
}

pub fn header_from_proto(p: &proto::SwimHeader) -> Result<Header<Ident>, CodecError> {
    use proto::SwimKind as K;
    let n = probe_number(p.probe_number)?;
    let other = || ident(p.other.as_ref(), "indirect probe identity");
    let kind = K::try_from(p.kind).map_err(|_| CodecError::Invalid("message kind"))?;
    let message = match kind {
        K::Ping => Message::Ping(n),
        K::Ack => Message::Ack(n),
        K::PingReq => Message::PingReq { target: other()?, probe_number: n },
        K::IndirectPing => Message::IndirectPing { origin: other()?, probe_number: n },
        K::IndirectAck => Message::IndirectAck { target: other()?, probe_number: n },
        K::ForwardedAck => Message::ForwardedAck { origin: other()?, probe_number: n },
        K::Announce => Message::Announce,
        K::Feed => Message::Feed,
        K::Gossip => Message::Gossip,
        K::Broadcast => Message::Broadcast,
        K::TurnUndead => Message::TurnUndead,
        K::Unspecified => return Err(CodecError::Invalid("message kind")),
    };
    Ok(Header {
        src: ident(p.src.as_ref(), "source identity")?,
        src_incarnation: incarnation(p.src_incarnation)?,
        dst: ident(p.dst.as_ref(), "destination identity")?,
        message,
    })
}

pub fn member_to_proto(m: &Member<Ident>) -> proto::SwimMember {
    let state = match m.state() {
        State::Alive => proto::Health::Alive,
        State::Suspect => proto::Health::Suspect,
        State::Down => proto::Health::Down,
    };
    proto::SwimMember {
        id: Some(m.id().to_proto()),
        incarnation: u32::from(m.incarnation()),
        state: state as i32,
    }
}

pub fn member_from_proto(p: &proto::SwimMember) -> Result<Member<Ident>, CodecError> {
    let state = match proto::Health::try_from(p.state).map_err(|_| CodecError::Invalid("member state"))? {
        proto::Health::Alive => State::Alive,
        proto::Health::Suspect => State::Suspect,
        proto::Health::Down => State::Down,
    };
    Ok(Member::new(ident(p.id.as_ref(), "member identity")?, incarnation(p.incarnation)?, state))
}

impl foca::Codec<Ident> for ProtoCodec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &Header<Ident>, buf: impl BufMut) -> Result<(), CodecError> {
        if header.src.id == self.me {
            self.own_incarnation.fetch_max(u32::from(header.src_incarnation), Ordering::Relaxed);
        }
        put_delimited(&header_to_proto(header), buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<Ident>, CodecError> {
        header_from_proto(&proto::SwimHeader::decode_length_delimited(buf)?)
    }

    fn encode_member(&mut self, member: &Member<Ident>, buf: impl BufMut) -> Result<(), CodecError> {
        put_delimited(&member_to_proto(member), buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<Ident>, CodecError> {
        member_from_proto(&proto::SwimMember::decode_length_delimited(buf)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_delimited_writes_what_prost_writes_or_nothing() {
        let id = Ident {
            id: MemberId([7; 16]),
            addr: "127.0.0.1:9638".parse().unwrap(),
            generation: 3,
            persistent: true,
        };
        let msg = member_to_proto(&Member::new(id, 5, State::Suspect));
        let expected = msg.encode_length_delimited_to_vec();
        let mut out = Vec::new();
        put_delimited(&msg, (&mut out).limit(expected.len())).unwrap();
        assert_eq!(out, expected);
        let mut short = Vec::new();
        let err = put_delimited(&msg, (&mut short).limit(expected.len() - 1)).unwrap_err();
        assert!(matches!(err, CodecError::NoRoom(n) if n == expected.len()));
        assert!(short.is_empty(), "nothing written when it does not fit");
    }
}
