//! The join protocol between a node (`warren admit join`) and the keyserver's join port, sans-io.
//!
//! Frames: 1 byte kind, 4 bytes big-endian length, body (at most [`MAX_BODY`]). One TCP
//! connection carries: `DescriptorRequest` → `Descriptor`, then `Claim` → `Claimed` or `Error`.
//! - The descriptor is signed (combined ed25519) by the admission key and names the keyserver's
//!   transport BOX key; the node accepts it only if the admission key matches the pin of its
//!   join string, so a fake keyserver cannot get the secret.
//! - The claim (with the token secret) is a sealed box to that transport key.
//! - The reply is signed by the admission key, then sealed to the node's new BOX key (sign,
//!   then seal with an ephemeral sender), and echoes the claim's nonce.
//! - Or, from an admitted node: `Request` → `Response` or `Error` ([`super::request`]).
//! - `Error` is plain text without secrets (a forged one can only make the node retry).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::base32;
use super::join::{Pin, SECRET_LEN, TokenId};
use super::keyserver::Claim;
use crate::crypto::keys::{BoxPublicKey, KeyId, SigPublicKey, SigSecretKey};
use crate::crypto::sodium::{self, SIGNATURE_LEN};

pub const MAX_BODY: usize = 64 * 1024;
pub const HEADER_LEN: usize = 5;
const DESCRIPTOR_DOMAIN: &[u8] = b"warren-admit-v1/descriptor\n";
const CLAIMED_DOMAIN: &[u8] = b"warren-admit-v1/claimed\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    DescriptorRequest = 1,
    Descriptor = 2,
    Claim = 3,
    Claimed = 4,
    Error = 5,
    /// A node's signed request after admission ([`super::request`]).
    Request = 6,
    Response = 7,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("a message of {0} bytes is larger than {MAX_BODY}")]
    TooLarge(usize),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error(
        "the keyserver's key does not match the pin in the join string: not the keyserver that made this token"
    )]
    WrongPin,
    #[error("bad signature on the {0}")]
    BadSignature(&'static str),
    #[error("the keyserver's descriptor expired")]
    Expired,
    #[error("the reply is not sealed to this node's key")]
    NotForUs,
    #[error("the reply does not answer this claim (nonce mismatch)")]
    WrongNonce,
}

pub fn frame(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(kind as u8);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<(Kind, usize), WireError> {
    let kind = match h[0] {
        1 => Kind::DescriptorRequest,
        2 => Kind::Descriptor,
        3 => Kind::Claim,
        4 => Kind::Claimed,
        5 => Kind::Error,
        6 => Kind::Request,
        7 => Kind::Response,
        k => return Err(WireError::UnknownKind(k)),
    };
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > MAX_BODY {
        return Err(WireError::TooLarge(len));
    }
    Ok((kind, len))
}

pub fn key_text(id: &KeyId, key: &[u8; 32]) -> String {
    format!("{id} {}", B64.encode(key))
}

pub fn parse_key(text: &str, what: &'static str) -> Result<(KeyId, [u8; 32]), WireError> {
    let (id, key) = text.split_once(' ').ok_or(WireError::Malformed(what))?;
    let id: KeyId = id.parse().map_err(|_| WireError::Malformed(what))?;
    let key = B64.decode(key).ok().and_then(|k| k.try_into().ok()).ok_or(WireError::Malformed(what))?;
    Ok((id, key))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DescriptorBody {
    cluster: String,
    admission: String,
    transport: String,
    not_after: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub cluster: String,
    pub admission: SigPublicKey,
    pub transport: BoxPublicKey,
    pub not_after: u64,
}

impl Descriptor {
    pub fn sign(&self, admission: &SigSecretKey) -> Vec<u8> {
        let body = DescriptorBody {
            cluster: self.cluster.clone(),
            admission: key_text(&self.admission.id, &self.admission.key),
            transport: key_text(&self.transport.id, &self.transport.key),
            not_after: self.not_after,
        };
        let mut msg = DESCRIPTOR_DOMAIN.to_vec();
        msg.extend_from_slice(&serde_json::to_vec(&body).expect("serialises"));
        sodium::sign_combined(&msg, &admission.key)
    }

    /// Checks the pin first (from the key the descriptor names), then the signature with it.
    pub fn verify(signed: &[u8], pin: &Pin, now: u64) -> Result<Descriptor, WireError> {
        let msg = signed.get(SIGNATURE_LEN..).ok_or(WireError::Malformed("descriptor"))?;
        let json = msg.strip_prefix(DESCRIPTOR_DOMAIN).ok_or(WireError::Malformed("descriptor"))?;
        let body: DescriptorBody =
            serde_json::from_slice(json).map_err(|_| WireError::Malformed("descriptor"))?;
        let (aid, akey) = parse_key(&body.admission, "descriptor admission key")?;
        if !pin.matches(&akey) {
            return Err(WireError::WrongPin);
        }
        sodium::sign_open(signed, &akey).map_err(|_| WireError::BadSignature("descriptor"))?;
        if now >= body.not_after {
            return Err(WireError::Expired);
        }
        let (tid, tkey) = parse_key(&body.transport, "descriptor transport key")?;
        Ok(Descriptor {
            cluster: body.cluster,
            admission: SigPublicKey { id: aid, key: akey },
            transport: BoxPublicKey { id: tid, key: tkey },
            not_after: body.not_after,
        })
    }
}

/// The claim as it travels inside the sealed box.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    pub token: String,
    pub secret: String,
    pub node: String,
    pub node_sig: String,
    pub node_box: String,
    pub pop: String,
    pub nonce: String,
}

impl ClaimBody {
    pub fn seal(&self, transport: &BoxPublicKey) -> Vec<u8> {
        let json = Zeroizing::new(serde_json::to_vec(self).expect("serialises"));
        sodium::sealed_box_seal(&json, &transport.key).expect("a 32-byte public key")
    }

    /// Opens and converts to the state machine's [`Claim`] (plus the nonce to echo).
    pub fn open(
        sealed: &[u8],
        transport_pub: &[u8; 32],
        transport: &sodium::BoxSecretKey,
        peer: Option<std::net::IpAddr>,
    ) -> Result<(Claim, String), WireError> {
        let json = Zeroizing::new(
            sodium::sealed_box_open(sealed, transport_pub, transport)
                .map_err(|_| WireError::Malformed("claim"))?,
        );
        let b: ClaimBody = serde_json::from_slice(&json).map_err(|_| WireError::Malformed("claim"))?;
        let token_id: TokenId = b.token.parse().map_err(|_| WireError::Malformed("claim token id"))?;
        let secret = Zeroizing::new(
            base32::decode::<SECRET_LEN>(&b.secret).map_err(|_| WireError::Malformed("claim secret"))?,
        );
        let (sid, skey) = parse_key(&b.node_sig, "claim node_sig")?;
        let (bid, bkey) = parse_key(&b.node_box, "claim node_box")?;
        let pop: [u8; SIGNATURE_LEN] = B64
            .decode(&b.pop)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(WireError::Malformed("claim pop"))?;
        if b.nonce.len() != 48 || !b.nonce.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(WireError::Malformed("claim nonce"));
        }
        let claim = Claim {
            token_id,
            secret,
            node: b.node.clone(),
            node_sig: SigPublicKey { id: sid, key: skey },
            node_box: BoxPublicKey { id: bid, key: bkey },
            pop,
            peer,
        };
        Ok((claim, b.nonce.clone()))
    }
}

impl Drop for ClaimBody {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.secret.zeroize();
    }
}

/// What the keyserver delivers with a CGC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimedBody {
    pub nonce: String,
    pub cgc: String,
    /// SYM-SEC-1 key file texts, every installed revision.
    pub ring_keys: Vec<String>,
    /// The primary revision's NAME-REV.
    pub primary: Option<String>,
}

impl ClaimedBody {
    /// Sign with the admission key, then seal to the node's BOX key.
    pub fn seal(&self, admission: &SigSecretKey, node_box: &BoxPublicKey) -> Vec<u8> {
        seal_reply(CLAIMED_DOMAIN, self, admission, node_box)
    }

    pub fn open(
        sealed: &[u8],
        node_box_pub: &[u8; 32],
        node_box: &sodium::BoxSecretKey,
        admission: &SigPublicKey,
        nonce: &str,
    ) -> Result<ClaimedBody, WireError> {
        let body: ClaimedBody =
            open_reply(CLAIMED_DOMAIN, "reply", sealed, (node_box_pub, node_box), admission)?;
        check_nonce(&body.nonce, nonce)?;
        Ok(body)
    }
}

/// A keyserver reply: `domain` then the body's JSON, signed with the admission key, sealed to
/// the node's BOX key (only that node reads it; only the keyserver could have written it).
pub(crate) fn seal_reply<T: Serialize>(
    domain: &[u8],
    body: &T,
    admission: &SigSecretKey,
    node_box: &BoxPublicKey,
) -> Vec<u8> {
    let mut msg = Zeroizing::new(domain.to_vec());
    msg.extend_from_slice(&Zeroizing::new(serde_json::to_vec(body).expect("serialises")));
    let signed = Zeroizing::new(sodium::sign_combined(&msg, &admission.key));
    sodium::sealed_box_seal(&signed, &node_box.key).expect("a 32-byte public key")
}

/// Opens what [`seal_reply`] made for this node (`node_box`: its public and secret BOX key);
/// `what` names the reply in errors.
pub(crate) fn open_reply<T: serde::de::DeserializeOwned>(
    domain: &[u8],
    what: &'static str,
    sealed: &[u8],
    node_box: (&[u8; 32], &sodium::BoxSecretKey),
    admission: &SigPublicKey,
) -> Result<T, WireError> {
    let signed = Zeroizing::new(
        sodium::sealed_box_open(sealed, node_box.0, node_box.1).map_err(|_| WireError::NotForUs)?,
    );
    let msg = Zeroizing::new(
        sodium::sign_open(&signed, &admission.key).map_err(|_| WireError::BadSignature(what))?,
    );
    let json = msg.strip_prefix(domain).ok_or(WireError::Malformed(what))?;
    serde_json::from_slice(json).map_err(|_| WireError::Malformed(what))
}

/// The reply answers this request: it carries the nonce the node sent.
pub(crate) fn check_nonce(got: &str, sent: &str) -> Result<(), WireError> {
    if sodium::ct_eq(got.as_bytes(), sent.as_bytes()) { Ok(()) } else { Err(WireError::WrongNonce) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::BoxSecretKeyFile;

    fn keys() -> (SigSecretKey, BoxSecretKeyFile) {
        (
            SigSecretKey::generate("acme-admission").unwrap().1,
            BoxSecretKeyFile::generate("acme-keyserver").unwrap().1,
        )
    }

    fn descriptor(a: &SigSecretKey, t: &BoxSecretKeyFile) -> Descriptor {
        Descriptor { cluster: "acme".into(), admission: a.public(), transport: t.public(), not_after: 2000 }
    }

    #[test]
    fn the_descriptor_is_checked_against_the_pin() {
        let (a, t) = keys();
        let signed = descriptor(&a, &t).sign(&a);
        let pin = Pin::of(&a.public().key);
        assert_eq!(Descriptor::verify(&signed, &pin, 1000).unwrap(), descriptor(&a, &t));
        assert_eq!(Descriptor::verify(&signed, &pin, 2000), Err(WireError::Expired));
        // A fake keyserver signs with its own key: the pin does not match.
        let (fake, _) = keys();
        assert_eq!(
            Descriptor::verify(&descriptor(&fake, &t).sign(&fake), &pin, 1000),
            Err(WireError::WrongPin)
        );
        // It names the real admission key but cannot sign for it.
        let forged = descriptor(&a, &keys().1).sign(&fake);
        assert_eq!(Descriptor::verify(&forged, &pin, 1000), Err(WireError::BadSignature("descriptor")));
        for n in 0..signed.len() {
            assert!(Descriptor::verify(&signed[..n], &pin, 1000).is_err());
        }
    }

    #[test]
    fn claims_and_replies_are_sealed_signed_and_bound_to_the_nonce() {
        let (a, t) = keys();
        let (node_pub, node) = BoxSecretKeyFile::generate("n1-box").unwrap();
        let sig = SigSecretKey::generate("n1").unwrap().1;
        let body = ClaimBody {
            token: TokenId([1; 5]).to_string(),
            secret: base32::encode(&[7; SECRET_LEN]),
            node: "n1".into(),
            node_sig: key_text(&sig.id, &sig.public().key),
            node_box: key_text(&node_pub.id, &node_pub.key),
            pop: B64.encode([0u8; 64]),
            nonce: "ab".repeat(24),
        };
        let sealed = body.seal(&t.public());
        let (claim, nonce) = ClaimBody::open(&sealed, &t.public().key, &t.key, None).unwrap();
        assert_eq!(
            (claim.node.as_str(), nonce.as_str(), &claim.secret[..]),
            ("n1", &*"ab".repeat(24), &[7u8; 20][..])
        );
        let other = keys().1;
        assert!(ClaimBody::open(&sealed, &other.public().key, &other.key, None).is_err());
        assert!(ClaimBody::open(b"garbage", &t.public().key, &t.key, None).is_err());
        let junk = sodium::sealed_box_seal(b"{\"token\": 1}", &t.public().key).unwrap();
        assert!(ClaimBody::open(&junk, &t.public().key, &t.key, None).is_err());

        let reply = ClaimedBody { nonce: nonce.clone(), cgc: "x".into(), ring_keys: vec![], primary: None };
        let sealed = reply.seal(&a, &node_pub);
        assert_eq!(ClaimedBody::open(&sealed, &node_pub.key, &node.key, &a.public(), &nonce).unwrap(), reply);
        assert_eq!(
            ClaimedBody::open(&sealed, &node_pub.key, &node.key, &a.public(), &"cd".repeat(24)),
            Err(WireError::WrongNonce)
        );
        let (fake, _) = keys();
        assert_eq!(
            ClaimedBody::open(&reply.seal(&fake, &node_pub), &node_pub.key, &node.key, &a.public(), &nonce),
            Err(WireError::BadSignature("reply"))
        );
        let (p2, n2) = BoxSecretKeyFile::generate("n2-box").unwrap();
        assert_eq!(
            ClaimedBody::open(&sealed, &p2.key, &n2.key, &a.public(), &nonce),
            Err(WireError::NotForUs)
        );
    }

    #[test]
    fn headers_are_bounded() {
        assert_eq!(parse_header(&[3, 0, 0, 0, 9]), Ok((Kind::Claim, 9)));
        assert_eq!(parse_header(&[9, 0, 0, 0, 0]), Err(WireError::UnknownKind(9)));
        assert_eq!(parse_header(&[3, 0xff, 0xff, 0xff, 0xff]), Err(WireError::TooLarge(u32::MAX as usize)));
    }
}
