//! The frame format of Habitat's ctl gateway ("SrvProtocol"), and the requests warren serves.
//!
//! A frame, all integers big-endian:
//! - header u32: bit 31 `is_txn`, bits 30–26 reserved (sent as 0, ignored on receipt), bits
//!   25–20 the message name's length (≤ 63), bits 19–0 the body's length (≤ 0xF_FFFF);
//! - txn u32, only when `is_txn`: bit 31 `is_response`, bit 30 `is_complete`, bits 29–0 the id;
//! - the message name (UTF-8, e.g. `NetErr`), then the protobuf body.
//!
//! Unlike Habitat's codec, nothing here asserts: a length that does not fit is an error, and a
//! body longer than the reader's cap is refused from its header, before anything is allocated.

use prost::Message as _;

use super::proto::{self, CtlMessage, ErrCode, NetErr};

pub const BODY_LEN_MASK: u32 = 0xF_FFFF;
/// The largest body a header can describe (1 MiB − 1).
pub const MAX_BODY_LEN: usize = BODY_LEN_MASK as usize;
pub const MESSAGE_ID_MASK: u32 = 0x3F;
pub const MESSAGE_ID_OFFSET: u32 = 20;
const TXN_BIT: u32 = 1 << 31;
const RESPONSE_BIT: u32 = 1 << 31;
const COMPLETE_BIT: u32 = 1 << 30;
pub const TXN_ID_MASK: u32 = 0x3FFF_FFFF;

/// The transaction word of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Txn {
    pub id: u32,
    pub response: bool,
    pub complete: bool,
}

impl Txn {
    pub fn request(id: u32) -> Txn {
        Txn { id: id & TXN_ID_MASK, response: false, complete: false }
    }

    /// A reply to `self`; `complete` on the last one.
    pub fn reply(self, complete: bool) -> Txn {
        Txn { id: self.id, response: true, complete }
    }

    fn word(self) -> u32 {
        (self.id & TXN_ID_MASK)
            | if self.response { RESPONSE_BIT } else { 0 }
            | if self.complete { COMPLETE_BIT } else { 0 }
    }

    fn from_word(w: u32) -> Txn {
        Txn { id: w & TXN_ID_MASK, response: w & RESPONSE_BIT != 0, complete: w & COMPLETE_BIT != 0 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("message name {0:?}… is longer than 63 bytes")]
    NameTooLong(String),
    #[error("frame body of {len} bytes is over the limit of {max}")]
    BodyTooLarge { len: usize, max: usize },
    #[error("the message name is not UTF-8")]
    BadName,
    #[error("expected {want}, got {got}")]
    Unexpected { want: &'static str, got: String },
    #[error("{name}: undecodable body: {source}")]
    Decode { name: String, source: prost::DecodeError },
}

/// One frame. `Debug` shows the name and txn only: a body may hold a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub name: String,
    pub txn: Option<Txn>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("name", &self.name)
            .field("txn", &self.txn)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// What [`parse_frame`] found in a buffer.
#[derive(Debug)]
pub enum Parsed {
    /// A whole frame, and how many bytes of the buffer it took.
    Frame(Frame, usize),
    /// The buffer must hold at least this many bytes before a frame can be read.
    Need(usize),
}

impl Frame {
    pub fn new<M: CtlMessage>(msg: &M, txn: Option<Txn>) -> Frame {
        Frame { name: M::NAME.to_string(), txn, body: msg.encode_to_vec() }
    }

    /// A frame without a txn word counts as complete (as in Habitat).
    pub fn is_complete(&self) -> bool {
        self.txn.is_none_or(|t| t.complete)
    }

    pub fn is<M: CtlMessage>(&self) -> bool {
        self.name == M::NAME
    }

    /// The body as `M`; a frame of another name is an error.
    pub fn decode<M: CtlMessage>(&self) -> Result<M, FrameError> {
        if !self.is::<M>() {
            return Err(FrameError::Unexpected { want: M::NAME, got: self.name.clone() });
        }
        M::decode(self.body.as_slice())
            .map_err(|source| FrameError::Decode { name: self.name.clone(), source })
    }

    /// The frame's bytes. Fails (never panics) when the name or body does not fit the header.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let name = self.name.as_bytes();
        if name.len() > MESSAGE_ID_MASK as usize {
            return Err(FrameError::NameTooLong(self.name.chars().take(63).collect()));
        }
        if self.body.len() > MAX_BODY_LEN {
            return Err(FrameError::BodyTooLarge { len: self.body.len(), max: MAX_BODY_LEN });
        }
        let mut header = ((name.len() as u32) << MESSAGE_ID_OFFSET) | self.body.len() as u32;
        if self.txn.is_some() {
            header |= TXN_BIT;
        }
        let mut out = Vec::with_capacity(8 + name.len() + self.body.len());
        out.extend_from_slice(&header.to_be_bytes());
        if let Some(t) = self.txn {
            out.extend_from_slice(&t.word().to_be_bytes());
        }
        out.extend_from_slice(name);
        out.extend_from_slice(&self.body);
        Ok(out)
    }
}

/// Reads one frame from the start of `buf`, refusing a body over `max_body` from its header.
pub fn parse_frame(buf: &[u8], max_body: usize) -> Result<Parsed, FrameError> {
    let Some(head) = buf.get(..4) else { return Ok(Parsed::Need(4)) };
    let header = u32::from_be_bytes(head.try_into().expect("4 bytes"));
    let is_txn = header & TXN_BIT != 0;
    let name_len = ((header >> MESSAGE_ID_OFFSET) & MESSAGE_ID_MASK) as usize;
    let body_len = (header & BODY_LEN_MASK) as usize;
    if body_len > max_body {
        return Err(FrameError::BodyTooLarge { len: body_len, max: max_body });
    }
    let txn_len = if is_txn { 4 } else { 0 };
    let total = 4 + txn_len + name_len + body_len;
    if buf.len() < total {
        return Ok(Parsed::Need(total));
    }
    let txn = is_txn.then(|| Txn::from_word(u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"))));
    let name_start = 4 + txn_len;
    let name =
        std::str::from_utf8(&buf[name_start..name_start + name_len]).map_err(|_| FrameError::BadName)?;
    let body = buf[name_start + name_len..total].to_vec();
    Ok(Parsed::Frame(Frame { name: name.to_string(), txn, body }, total))
}

macro_rules! requests {
    ($($variant:ident($msg:ident)),* $(,)?) => {
        /// A request the gateway serves, decoded from the one request frame of a connection.
        /// `Debug` shows the request's name only (a ring key file is a secret).
        /// One per connection, never stored in bulk: the size of its largest variant (SvcLoad)
        /// does not matter, and boxing it would only complicate the match arms.
        #[derive(Clone, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum CtlRequest {
            $($variant(proto::$msg),)*
        }

        impl CtlRequest {
            /// The message name the request travels under.
            pub fn name(&self) -> &'static str {
                match self {
                    $(CtlRequest::$variant(_) => <proto::$msg as CtlMessage>::NAME,)*
                }
            }

            /// The request frame (`txn` is 1 after a handshake, as Habitat's client sends).
            pub fn to_frame(&self, txn: Txn) -> Frame {
                match self {
                    $(CtlRequest::$variant(m) => Frame::new(m, Some(txn)),)*
                }
            }

            /// An unknown name gets `NetErr{NotSupported}`, an undecodable body
            /// `NetErr{BadPayload}` (Habitat closes silently; a reply says why).
            pub fn decode(frame: &Frame) -> Result<CtlRequest, NetErr> {
                let bad = |e: prost::DecodeError| {
                    NetErr::new(ErrCode::BadPayload, format!("{}: undecodable body: {e}", frame.name))
                };
                match frame.name.as_str() {
                    $(<proto::$msg as CtlMessage>::NAME => {
                        proto::$msg::decode(frame.body.as_slice()).map(CtlRequest::$variant).map_err(bad)
                    })*
                    other => Err(NetErr::new(
                        ErrCode::NotSupported,
                        format!("unknown request {:?}", other.chars().take(63).collect::<String>()),
                    )),
                }
            }
        }
    };
}

requests!(
    Ping(CtlPing),
    SupStatus(SupStatus),
    SupDepart(SupDepart),
    SupRestart(SupRestart),
    RingKeyList(RingKeyList),
    RingKeyInstall(RingKeyInstall),
    RingKeyUse(RingKeyUse),
    RingKeyRemove(RingKeyRemove),
    RumorInject(RumorInject),
    SvcLoad(SvcLoad),
    SvcStatus(SvcStatus),
    SvcStart(SvcStart),
    SvcStop(SvcStop),
    SvcUnload(SvcUnload),
    SvcSetCfg(SvcSetCfg),
    SvcValidateCfg(SvcValidateCfg),
    SvcFilePut(SvcFilePut),
    PkgInstall(PkgInstall),
    AdmitTokenCreate(AdmitTokenCreate),
    AdmitTokenList(AdmitTokenList),
    AdmitTokenRevoke(AdmitTokenRevoke),
    AdmitGroupKeyGen(AdmitGroupKeyGen),
    AdmitNodeList(AdmitNodeList),
    AdmitNodeRevoke(AdmitNodeRevoke),
    AdmitRingRotate(AdmitRingRotate),
);

impl CtlRequest {
    /// For a request whose body follows it in chunk frames (`PkgInstall`), the byte count the
    /// client announced.
    pub fn upload_len(&self) -> Option<u64> {
        match self {
            CtlRequest::PkgInstall(p) => Some(p.size.unwrap_or(0)),
            _ => None,
        }
    }
}

impl std::fmt::Debug for CtlRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CtlRequest({})", self.name())
    }
}

impl std::fmt::Debug for proto::Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl std::fmt::Debug for proto::RingKeyInstall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingKeyInstall")
            .field("key_file", &self.key_file.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl std::fmt::Debug for proto::AdmitTokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmitTokenCreated")
            .field("id", &self.id)
            .field("join", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The final reply of a request: a message of any type, sent `complete`.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    pub name: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new<M: CtlMessage>(msg: &M) -> Reply {
        Reply { name: M::NAME, body: msg.encode_to_vec() }
    }

    pub fn ok() -> Reply {
        Reply::new(&proto::NetOk {})
    }

    pub fn into_frame(self, txn: Option<Txn>) -> Frame {
        Frame { name: self.name.to_string(), txn, body: self.body }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reply({}, {} bytes)", self.name, self.body.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::proto::{Handshake, NetOk, SvcStatus};

    fn parse(bytes: &[u8]) -> Frame {
        match parse_frame(bytes, MAX_BODY_LEN).unwrap() {
            Parsed::Frame(f, n) => {
                assert_eq!(n, bytes.len());
                f
            }
            Parsed::Need(n) => panic!("needs {n}"),
        }
    }

    /// The worked bytes of the Habitat notes (§a), computed from Habitat's rules.
    #[test]
    fn frames_match_habitats_bytes() {
        let hs = Frame::new(&Handshake { secret_key: Some("abc".into()) }, Some(Txn::request(0)));
        let mut want = hex::decode("80900005").unwrap();
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(b"Handshake");
        want.extend_from_slice(&[0x0a, 0x03, b'a', b'b', b'c']);
        assert_eq!(hs.encode().unwrap(), want);
        assert_eq!(parse(&want), hs);

        let ok = Frame::new(&NetOk {}, Some(Txn::request(0).reply(true)));
        assert_eq!(ok.encode().unwrap(), [&hex::decode("80500000c0000000").unwrap()[..], b"NetOk"].concat());

        let err = Frame::new(
            &NetErr::new(ErrCode::Unauthorized, "secret key mismatch"),
            Some(Txn::request(0).reply(true)),
        );
        let mut want = hex::decode("80600017c0000000").unwrap();
        want.extend_from_slice(b"NetErr");
        want.extend_from_slice(&[0x08, 0x04, 0x12, 0x13]);
        want.extend_from_slice(b"secret key mismatch");
        assert_eq!(err.encode().unwrap(), want);

        let st = Frame::new(&SvcStatus { ident: None }, Some(Txn::request(1)));
        assert_eq!(
            st.encode().unwrap(),
            [&hex::decode("8090000000000001").unwrap()[..], b"SvcStatus"].concat()
        );
    }

    #[test]
    fn partial_input_asks_for_more_and_oversize_is_refused_from_the_header() {
        let f = Frame::new(&Handshake { secret_key: Some("abc".into()) }, Some(Txn::request(0)));
        let bytes = f.encode().unwrap();
        for cut in 0..bytes.len() {
            match parse_frame(&bytes[..cut], MAX_BODY_LEN).unwrap() {
                Parsed::Need(n) => assert!(n > cut),
                Parsed::Frame(..) => panic!("a frame from {cut} bytes"),
            }
        }
        // A header announcing 1 MiB is refused with only its 4 bytes read.
        let huge = (TXN_BIT | (9 << MESSAGE_ID_OFFSET) | BODY_LEN_MASK).to_be_bytes();
        assert!(matches!(
            parse_frame(&huge, 4096),
            Err(FrameError::BodyTooLarge { len: MAX_BODY_LEN, max: 4096 })
        ));
        // Names that do not fit the header are an error, not a panic.
        let long = Frame { name: "x".repeat(64), txn: None, body: vec![] };
        assert!(matches!(long.encode(), Err(FrameError::NameTooLong(_))));
        let big = Frame { name: "x".into(), txn: None, body: vec![0; MAX_BODY_LEN + 1] };
        assert!(matches!(big.encode(), Err(FrameError::BodyTooLarge { .. })));
        let bad_name = [&(2u32 << MESSAGE_ID_OFFSET).to_be_bytes()[..], &[0xff, 0xfe]].concat();
        assert!(matches!(parse_frame(&bad_name, 10), Err(FrameError::BadName)));
    }

    #[test]
    fn unknown_and_undecodable_requests_get_net_errs() {
        let unknown = Frame { name: "Nope".into(), txn: Some(Txn::request(1)), body: vec![] };
        assert_eq!(CtlRequest::decode(&unknown).unwrap_err().err_code(), ErrCode::NotSupported);
        let garbage = Frame { name: "SupDepart".into(), txn: Some(Txn::request(1)), body: vec![0x0a, 0x50] };
        assert_eq!(CtlRequest::decode(&garbage).unwrap_err().err_code(), ErrCode::BadPayload);
        let hs = Frame::new(&Handshake { secret_key: Some("x".into()) }, Some(Txn::request(1)));
        assert!(CtlRequest::decode(&hs).is_err(), "a handshake is not a request");
        let req = CtlRequest::RingKeyInstall(proto::RingKeyInstall {
            key_file: Some(b"SYM-SEC-1 secret".to_vec()),
        });
        assert_eq!(CtlRequest::decode(&req.to_frame(Txn::request(1))).unwrap(), req);
        assert!(!format!("{req:?}").contains("secret"));
    }
}
