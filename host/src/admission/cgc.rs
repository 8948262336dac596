//! The certificate-granting certificate (CGC): proof that the keyserver admitted a node with
//! these public keys. It grants nothing by itself (what a node may fetch is server policy), and
//! it is useless without the node's SIG secret key, which never leaves the node.
//!
//! Text form, in the style of a `.hart` header:
//! ```text
//! WARREN-CGC-1
//! <issuer key name-rev>
//! <base64 ed25519 signature>
//!
//! cluster=...
//! ...sorted key=value lines...
//! ```
//! The signature is a detached ed25519 signature (made with the keyserver's admission SIG
//! key, a Habitat SIG-SEC-1 key) over BLAKE2b-256 of everything but the signature line, so the
//! format version and the issuer are signed too.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::join::TokenId;
use crate::crypto::keys::{BoxPublicKey, KeyId, SigPublicKey, SigSecretKey};
use crate::crypto::sodium::{self, SIGNATURE_LEN};

pub const CGC_FORMAT: &str = "WARREN-CGC-1";
/// Far above any real CGC (about 600 bytes) and small enough to refuse garbage early.
pub const MAX_CGC_LEN: usize = 8 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgc {
    /// 128 random bits.
    pub serial: [u8; 16],
    pub cluster: String,
    pub node: String,
    pub node_sig: SigPublicKey,
    pub node_box: BoxPublicKey,
    pub groups: Vec<String>,
    /// Unix seconds.
    pub issued: u64,
    pub not_before: u64,
    pub not_after: u64,
    /// The token it was claimed with (audit).
    pub token_id: TokenId,
    /// The keyserver's state epoch (bumped when a backup is restored).
    pub epoch: u64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CgcError {
    #[error("a CGC is at most {MAX_CGC_LEN} bytes, this one has {0}")]
    TooLarge(usize),
    #[error("not a warren CGC (expected {CGC_FORMAT} on line 1)")]
    NotACgc,
    #[error("malformed CGC: {0}")]
    Malformed(String),
    #[error("the CGC is signed by {got}, not by this keyserver's admission key {expected}")]
    WrongIssuer { expected: String, got: String },
    #[error("the CGC's signature does not verify")]
    BadSignature,
    #[error("the CGC of {node} is not valid yet (from {not_before})")]
    NotYetValid { node: String, not_before: u64 },
    #[error("the CGC of {node} expired at {not_after}")]
    Expired { node: String, not_after: u64 },
}

fn malformed(why: impl Into<String>) -> CgcError {
    CgcError::Malformed(why.into())
}

impl Cgc {
    pub fn serial_hex(&self) -> String {
        hex::encode(self.serial)
    }

    fn body(&self) -> String {
        let mut fields = BTreeMap::new();
        fields.insert("cluster", self.cluster.clone());
        fields.insert("epoch", self.epoch.to_string());
        fields.insert("groups", self.groups.join(","));
        fields.insert("issued", self.issued.to_string());
        fields.insert("node", self.node.clone());
        fields.insert("node_box", format!("{} {}", self.node_box.id, B64.encode(self.node_box.key)));
        fields.insert("node_sig", format!("{} {}", self.node_sig.id, B64.encode(self.node_sig.key)));
        fields.insert("not_after", self.not_after.to_string());
        fields.insert("not_before", self.not_before.to_string());
        fields.insert("serial", self.serial_hex());
        fields.insert("token_id", self.token_id.to_string());
        let mut out = String::new();
        for (k, v) in fields {
            let _ = writeln!(out, "{k}={v}");
        }
        out
    }

    /// The signed text form.
    pub fn sign(&self, issuer: &SigSecretKey) -> String {
        let unsigned = format!("{CGC_FORMAT}\n{}\n\n{}", issuer.id, self.body());
        let sig = sodium::sign_detached(&sodium::blake2b_256(unsigned.as_bytes()), &issuer.key);
        format!("{CGC_FORMAT}\n{}\n{}\n\n{}", issuer.id, B64.encode(sig), self.body())
    }

    /// Parses and verifies `text` against the keyserver's admission public key. Validity in
    /// time is a separate check ([`Cgc::check_time`]).
    pub fn verify(text: &str, issuer: &SigPublicKey) -> Result<Cgc, CgcError> {
        if text.len() > MAX_CGC_LEN {
            return Err(CgcError::TooLarge(text.len()));
        }
        let mut lines = text.splitn(5, '\n');
        if lines.next() != Some(CGC_FORMAT) {
            return Err(CgcError::NotACgc);
        }
        let issuer_line = lines.next().ok_or_else(|| malformed("missing the issuer line"))?;
        let got: KeyId = issuer_line.parse().map_err(|_| malformed("the issuer is not NAME-REVISION"))?;
        if got != issuer.id {
            return Err(CgcError::WrongIssuer { expected: issuer.id.to_string(), got: got.to_string() });
        }
        let sig_line = lines.next().ok_or_else(|| malformed("missing the signature line"))?;
        let sig: [u8; SIGNATURE_LEN] = B64
            .decode(sig_line)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| malformed("the signature is not 64 bytes of base64"))?;
        if lines.next() != Some("") {
            return Err(malformed("line 4 must be blank"));
        }
        let body = lines.next().ok_or_else(|| malformed("missing the body"))?;
        let unsigned = format!("{CGC_FORMAT}\n{issuer_line}\n\n{body}");
        if !sodium::verify_detached(&sig, &sodium::blake2b_256(unsigned.as_bytes()), &issuer.key) {
            return Err(CgcError::BadSignature);
        }
        let cgc = parse_body(body)?;
        // Only the canonical form is accepted, so one CGC has one text (and one digest).
        if cgc.body() != body {
            return Err(malformed("the body is not in canonical form"));
        }
        Ok(cgc)
    }

    pub fn check_time(&self, now: u64) -> Result<(), CgcError> {
        if now < self.not_before {
            return Err(CgcError::NotYetValid { node: self.node.clone(), not_before: self.not_before });
        }
        if now >= self.not_after {
            return Err(CgcError::Expired { node: self.node.clone(), not_after: self.not_after });
        }
        Ok(())
    }
}

fn parse_body(body: &str) -> Result<Cgc, CgcError> {
    let mut fields = BTreeMap::new();
    for line in body.lines() {
        let (k, v) = line.split_once('=').ok_or_else(|| malformed("a body line is not key=value"))?;
        if fields.insert(k, v).is_some() {
            return Err(malformed(format!("duplicate field {k:?}")));
        }
    }
    let mut take = |k: &str| fields.remove(k).ok_or_else(|| malformed(format!("missing field {k:?}")));
    let num = |v: &str, k: &str| v.parse::<u64>().map_err(|_| malformed(format!("{k} is not a number")));
    let serial_hex = take("serial")?;
    let serial: [u8; 16] = hex::decode(serial_hex)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| malformed("serial is not 32 hex digits"))?;
    let cluster = take("cluster")?.to_string();
    let node = take("node")?.to_string();
    let (sig_id, sig_key) = key_field(take("node_sig")?, "node_sig")?;
    let (box_id, box_key) = key_field(take("node_box")?, "node_box")?;
    let groups_text = take("groups")?;
    let groups = if groups_text.is_empty() {
        Vec::new()
    } else {
        groups_text.split(',').map(str::to_string).collect()
    };
    let issued = num(take("issued")?, "issued")?;
    let not_before = num(take("not_before")?, "not_before")?;
    let not_after = num(take("not_after")?, "not_after")?;
    let token_id = take("token_id")?.parse().map_err(|_| malformed("token_id is not a token id"))?;
    let epoch = num(take("epoch")?, "epoch")?;
    if let Some(k) = fields.keys().next() {
        return Err(malformed(format!("unknown field {k:?}")));
    }
    Ok(Cgc {
        serial,
        cluster,
        node,
        node_sig: SigPublicKey { id: sig_id, key: sig_key },
        node_box: BoxPublicKey { id: box_id, key: box_key },
        groups,
        issued,
        not_before,
        not_after,
        token_id,
        epoch,
    })
}

fn key_field(v: &str, what: &str) -> Result<(KeyId, [u8; 32]), CgcError> {
    let bad = || malformed(format!("{what} is not \"NAME-REVISION BASE64\""));
    let (id, key) = v.split_once(' ').ok_or_else(bad)?;
    let id: KeyId = id.parse().map_err(|_| bad())?;
    let key: [u8; 32] = B64.decode(key).ok().and_then(|k| k.try_into().ok()).ok_or_else(bad)?;
    Ok((id, key))
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::crypto::keys::BoxSecretKeyFile;

    pub fn sample() -> (Cgc, SigSecretKey) {
        let (_, issuer) = SigSecretKey::generate("acme-admission").unwrap();
        let (_, node_sig) = SigSecretKey::generate("node1").unwrap();
        let (node_box, _) = BoxSecretKeyFile::generate("node1").unwrap();
        let cgc = Cgc {
            serial: [7; 16],
            cluster: "acme".into(),
            node: "node1".into(),
            node_sig: node_sig.public(),
            node_box,
            groups: vec!["web".into(), "admin".into()],
            issued: 1000,
            not_before: 1000,
            not_after: 2000,
            token_id: TokenId([1, 2, 3, 4, 5]),
            epoch: 1,
        };
        (cgc, issuer)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::sample;
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let (cgc, issuer) = sample();
        let text = cgc.sign(&issuer);
        assert!(text.starts_with("WARREN-CGC-1\nacme-admission-"));
        assert_eq!(Cgc::verify(&text, &issuer.public()).unwrap(), cgc);
        let no_groups = Cgc { groups: vec![], ..cgc };
        assert_eq!(Cgc::verify(&no_groups.sign(&issuer), &issuer.public()).unwrap(), no_groups);
    }

    #[test]
    fn tampering_and_wrong_issuer_are_refused() {
        let (cgc, issuer) = sample();
        let text = cgc.sign(&issuer);
        let tampered = text.replace("node=node1", "node=node2");
        assert_eq!(Cgc::verify(&tampered, &issuer.public()), Err(CgcError::BadSignature));
        let tampered = text.replace("not_after=2000", "not_after=9999");
        assert_eq!(Cgc::verify(&tampered, &issuer.public()), Err(CgcError::BadSignature));
        // Same name and revision, other key: the signature does not verify.
        let other = SigPublicKey { id: issuer.id.clone(), key: SigSecretKey::generate("x").unwrap().0.key };
        assert_eq!(Cgc::verify(&text, &other), Err(CgcError::BadSignature));
        let (other_pub, _) = SigSecretKey::generate("other").unwrap();
        assert!(matches!(Cgc::verify(&text, &other_pub), Err(CgcError::WrongIssuer { .. })));
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        let (cgc, issuer) = sample();
        let pk = issuer.public();
        let text = cgc.sign(&issuer);
        for bad in ["", "WARREN-CGC-1", "WARREN-CGC-1\nx\n", "hello\n\n", "WARREN-CGC-1\n\u{0}\n\n\n"] {
            assert!(Cgc::verify(bad, &pk).is_err(), "{bad:?}");
        }
        assert!(matches!(Cgc::verify(&"A".repeat(MAX_CGC_LEN + 1), &pk), Err(CgcError::TooLarge(_))));
        // Every truncation of a valid CGC is refused.
        for n in 0..text.len() {
            assert!(Cgc::verify(&text[..n], &pk).is_err(), "truncated at {n}");
        }
    }

    #[test]
    fn time_window() {
        let (cgc, _) = sample();
        assert!(matches!(cgc.check_time(999), Err(CgcError::NotYetValid { .. })));
        cgc.check_time(1000).unwrap();
        cgc.check_time(1999).unwrap();
        assert!(matches!(cgc.check_time(2000), Err(CgcError::Expired { .. })));
    }
}

#[cfg(test)]
mod mutation_tests {
    use super::tests_support::sample;
    use super::*;

    /// Random byte edits of a signed CGC: never a panic, never a different CGC accepted.
    #[test]
    fn mutated_cgcs_never_verify() {
        let (cgc, issuer) = sample();
        let pk = issuer.public();
        let text = cgc.sign(&issuer).into_bytes();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut b = text.clone();
            for _ in 0..=(next() % 4) {
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            let s = String::from_utf8_lossy(&b);
            if s.as_bytes() == text.as_slice() {
                continue;
            }
            assert!(Cgc::verify(&s, &pk).is_err(), "a modified CGC verified");
        }
    }
}
