//! A node's requests after admission (`renew`, `keys`) and the keyserver's answers, sans-io.
//!
//! Request: the JSON [`RequestBody`] under a domain string, signed (combined ed25519) by the
//! node's SIG key, then sealed to the keyserver's transport key. It carries the node's CGC
//! (which names the key that must have signed), the time and a fresh nonce, so a stolen CGC is
//! useless without the node key and a captured request cannot be replayed.
//! Answer: [`ResponseBody`] signed by the admission key and sealed to the node's BOX key from
//! its CGC, echoing the nonce (as the claim's reply does).

use serde::{Deserialize, Serialize};

use super::wire::{WireError, check_nonce, open_reply, seal_reply};
use crate::crypto::keys::{BoxPublicKey, SigPublicKey, SigSecretKey};
use crate::crypto::sodium::{self, SIGNATURE_LEN};

const REQUEST_DOMAIN: &[u8] = b"warren-admit-v1/request\n";
const RESPONSE_DOMAIN: &[u8] = b"warren-admit-v1/response\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A fresh CGC for the same keys.
    Renew,
    /// Every key and config file the policy gives the node.
    Keys,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    pub op: Op,
    /// The node's current CGC text.
    pub cgc: String,
    /// Unix seconds on the node's clock.
    pub time: u64,
    /// 24 random bytes, hex.
    pub nonce: String,
    /// The node's gossip address, for the other nodes' peer lists (keys requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip: Option<String>,
    /// The ring key revisions the node holds (NAME-REV): its acknowledgement of a rotation.
    #[serde(default)]
    pub have: Vec<String>,
}

/// More ring key revisions than any node holds.
pub const MAX_HAVE: usize = 64;

pub fn valid_nonce(n: &str) -> bool {
    n.len() == 48 && n.bytes().all(|c| c.is_ascii_hexdigit())
}

impl RequestBody {
    /// Sign with the node key, then seal to the keyserver.
    pub fn seal(&self, node: &SigSecretKey, transport: &BoxPublicKey) -> Vec<u8> {
        let mut msg = REQUEST_DOMAIN.to_vec();
        msg.extend_from_slice(&serde_json::to_vec(self).expect("serialises"));
        let signed = sodium::sign_combined(&msg, &node.key);
        sodium::sealed_box_seal(&signed, &transport.key).expect("a 32-byte public key")
    }

    /// Opens the sealed box and parses the body. The signature is *not* checked here: the key
    /// is in the CGC, which only the keyserver's state machine may trust
    /// ([`RequestBody::verify_signature`]).
    pub fn open(
        sealed: &[u8],
        transport_pub: &[u8; 32],
        transport: &sodium::BoxSecretKey,
    ) -> Result<(RequestBody, Vec<u8>), WireError> {
        let signed = sodium::sealed_box_open(sealed, transport_pub, transport)
            .map_err(|_| WireError::Malformed("request"))?;
        let msg = signed.get(SIGNATURE_LEN..).ok_or(WireError::Malformed("request"))?;
        let json = msg.strip_prefix(REQUEST_DOMAIN).ok_or(WireError::Malformed("request"))?;
        let body: RequestBody = serde_json::from_slice(json).map_err(|_| WireError::Malformed("request"))?;
        if !valid_nonce(&body.nonce) {
            return Err(WireError::Malformed("request nonce"));
        }
        if body.have.len() > MAX_HAVE || body.have.iter().any(|h| h.len() > 128) {
            return Err(WireError::Malformed("request key list"));
        }
        if body.gossip.as_ref().is_some_and(|g| g.len() > 256) {
            return Err(WireError::Malformed("request gossip address"));
        }
        Ok((body, signed))
    }

    /// Whether `signed` (from [`RequestBody::open`]) was signed by `key`.
    pub fn verify_signature(signed: &[u8], key: &SigPublicKey) -> bool {
        sodium::sign_open(signed, &key.key).is_ok()
    }
}

/// What the keyserver answers to a request.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseBody {
    pub nonce: String,
    /// A renewed CGC (renew).
    #[serde(default)]
    pub cgc: Option<String>,
    /// SYM-SEC-1 texts, every installed revision of the ring key.
    #[serde(default)]
    pub ring_keys: Vec<String>,
    /// The primary ring key's NAME-REV.
    #[serde(default)]
    pub primary: Option<String>,
    /// BOX-SEC-1 texts of the service-group keys the policy gives this node.
    #[serde(default)]
    pub group_keys: Vec<String>,
    /// The cluster's ctl secret, for nodes in the `admin` group only.
    #[serde(default)]
    pub ctl_secret: Option<String>,
    /// Config files by name (`peers`: other nodes' gossip addresses, one a line).
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("cgc", &self.cgc.is_some())
            .field("ring_keys", &self.ring_keys.len())
            .field("primary", &self.primary)
            .field("group_keys", &self.group_keys.len())
            .field("ctl_secret", &self.ctl_secret.as_ref().map(|_| "<redacted>"))
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for k in self.ring_keys.iter_mut().chain(self.group_keys.iter_mut()) {
            k.zeroize();
        }
        if let Some(s) = self.ctl_secret.as_mut() {
            s.zeroize();
        }
    }
}

impl ResponseBody {
    pub fn seal(&self, admission: &SigSecretKey, node_box: &BoxPublicKey) -> Vec<u8> {
        seal_reply(RESPONSE_DOMAIN, self, admission, node_box)
    }

    pub fn open(
        sealed: &[u8],
        node_box_pub: &[u8; 32],
        node_box: &sodium::BoxSecretKey,
        admission: &SigPublicKey,
        nonce: &str,
    ) -> Result<ResponseBody, WireError> {
        let body: ResponseBody =
            open_reply(RESPONSE_DOMAIN, "response", sealed, (node_box_pub, node_box), admission)?;
        check_nonce(&body.nonce, nonce)?;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::BoxSecretKeyFile;

    #[test]
    fn requests_are_sealed_and_signed_by_the_node_and_responses_bound_to_the_nonce() {
        let (tp, t) = BoxSecretKeyFile::generate("acme-keyserver").unwrap();
        let (_, node) = SigSecretKey::generate("n1").unwrap();
        let (_, other) = SigSecretKey::generate("n1").unwrap();
        let nonce = "ab".repeat(24);
        let req = RequestBody {
            op: Op::Keys,
            cgc: "c".into(),
            time: 5,
            nonce: nonce.clone(),
            gossip: None,
            have: vec![],
        };
        let sealed = req.seal(&node, &tp);
        let (got, signed) = RequestBody::open(&sealed, &tp.key, &t.key).unwrap();
        assert_eq!(got, req);
        assert!(RequestBody::verify_signature(&signed, &node.public()));
        assert!(!RequestBody::verify_signature(&signed, &other.public()));
        for n in [0, 10, sealed.len() - 1] {
            assert!(RequestBody::open(&sealed[..n], &tp.key, &t.key).is_err());
        }
        let bad = RequestBody { nonce: "xyz".into(), ..req.clone() };
        assert!(RequestBody::open(&bad.seal(&node, &tp), &tp.key, &t.key).is_err());

        let (_, admission) = SigSecretKey::generate("acme-admission").unwrap();
        let (np, nb) = BoxSecretKeyFile::generate("n1-box").unwrap();
        let mut resp = ResponseBody::default();
        resp.nonce = nonce.clone();
        resp.ctl_secret = Some("s".into());
        let sealed = resp.seal(&admission, &np);
        assert_eq!(ResponseBody::open(&sealed, &np.key, &nb.key, &admission.public(), &nonce).unwrap(), resp);
        assert_eq!(
            ResponseBody::open(&sealed, &np.key, &nb.key, &admission.public(), &"cd".repeat(24)),
            Err(WireError::WrongNonce)
        );
        assert!(!format!("{resp:?}").contains("\"s\""), "the ctl secret is not in Debug output");
    }
}
