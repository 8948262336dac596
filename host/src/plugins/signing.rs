//! Plugin signatures: an ed25519 signature (origin SIG key, the same keys as packages) over the
//! BLAKE2b-256 digest of the component without its signature section, stored in a top-level
//! custom section `warren-signature` appended at the end, so one file travels.
//!
//! Section text (like HART-1): `WARREN-SIG-1\n{signer name-rev}\nBLAKE2b\n{base64 signature}\n`,
//! the signature being detached ed25519 over the lowercase hex digest.

use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::{PluginError, wasm};
use crate::crypto::sodium::{self, Blake2b256};
use crate::crypto::{KeyCache, KeyId, KeyKind, SigPublicKey, SigSecretKey};

pub const SIGNATURE_SECTION: &str = "warren-signature";
const SIG_HEADER: &str = "WARREN-SIG-1";

/// The digest that is signed: BLAKE2b-256 of every byte except top-level signature sections.
pub fn signed_digest(bytes: &[u8]) -> Result<[u8; 32], PluginError> {
    let sections = wasm::top_level_sections(bytes)?;
    let mut h = Blake2b256::new();
    let mut pos = 0;
    for s in sections.iter().filter(|s| is_signature(s)) {
        h.update(&bytes[pos..s.start]);
        pos = s.end;
    }
    h.update(&bytes[pos..]);
    Ok(h.finalize())
}

fn is_signature(s: &wasm::TopSection<'_>) -> bool {
    matches!(s.custom, Some((SIGNATURE_SECTION, _)))
}

/// The component with every top-level signature section removed.
pub fn strip_signature(bytes: &[u8]) -> Result<Vec<u8>, PluginError> {
    let sections = wasm::top_level_sections(bytes)?;
    let mut out = Vec::with_capacity(bytes.len());
    let mut pos = 0;
    for s in sections.iter().filter(|s| is_signature(s)) {
        out.extend_from_slice(&bytes[pos..s.start]);
        pos = s.end;
    }
    out.extend_from_slice(&bytes[pos..]);
    Ok(out)
}

/// Signs (or re-signs) a component: strips any old signature and appends a new one.
pub fn sign(bytes: &[u8], key: &SigSecretKey) -> Result<Vec<u8>, PluginError> {
    let mut out = strip_signature(bytes)?;
    let digest = hex::encode(signed_digest(&out)?);
    let sig = sodium::sign_detached(digest.as_bytes(), &key.key);
    let text = format!("{SIG_HEADER}\n{}\nBLAKE2b\n{}\n", key.id, B64.encode(sig));
    out.extend_from_slice(&wasm::encode_custom_section(SIGNATURE_SECTION, text.as_bytes()));
    Ok(out)
}

/// A parsed signature section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureBlock {
    pub signer: KeyId,
    pub signature: [u8; sodium::SIGNATURE_LEN],
}

fn parse_block(data: &[u8]) -> Result<SignatureBlock, String> {
    let text = std::str::from_utf8(data).map_err(|_| "signature section is not UTF-8".to_string())?;
    let mut lines = text.lines();
    if lines.next() != Some(SIG_HEADER) {
        return Err(format!("signature section does not start with {SIG_HEADER}"));
    }
    let signer = lines.next().ok_or("signature section has no signer")?;
    let signer = KeyId::from_str(signer).map_err(|e| e.to_string())?;
    if lines.next() != Some("BLAKE2b") {
        return Err("signature section names an unsupported hash (expected BLAKE2b)".into());
    }
    let sig = B64
        .decode(lines.next().ok_or("signature section has no signature")?.trim())
        .map_err(|_| "signature is not base64".to_string())?;
    let signature = sig.try_into().map_err(|_| "signature must be 64 bytes".to_string())?;
    Ok(SignatureBlock { signer, signature })
}

/// What is known about a file's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SignatureStatus {
    Unsigned,
    /// Verified against a trusted public key.
    Valid {
        signer: String,
    },
    /// Well formed, but the signer's public key is not in the trusted set.
    UnknownSigner {
        signer: String,
    },
    /// Malformed, or the signature does not match the content.
    Invalid {
        signer: Option<String>,
        reason: String,
    },
}

impl SignatureStatus {
    pub fn signer(&self) -> Option<&str> {
        match self {
            SignatureStatus::Valid { signer } | SignatureStatus::UnknownSigner { signer } => Some(signer),
            SignatureStatus::Invalid { signer, .. } => signer.as_deref(),
            SignatureStatus::Unsigned => None,
        }
    }
    pub fn describe(&self) -> String {
        match self {
            SignatureStatus::Unsigned => "unsigned".into(),
            SignatureStatus::Valid { signer } => format!("signed by {signer} (verified)"),
            SignatureStatus::UnknownSigner { signer } => {
                format!("signed by {signer}, whose public key is not trusted here")
            }
            SignatureStatus::Invalid { signer: Some(s), reason } => {
                format!("bad signature from {s}: {reason}")
            }
            SignatureStatus::Invalid { signer: None, reason } => format!("bad signature: {reason}"),
        }
    }
}

/// The trusted origin keys: public SIG keys in a key cache.
pub trait TrustedKeys: Send + Sync {
    fn public_key(&self, id: &KeyId) -> Option<[u8; sodium::SIGN_PUBLIC_LEN]>;
    fn is_empty(&self) -> bool;
}

impl TrustedKeys for KeyCache {
    fn public_key(&self, id: &KeyId) -> Option<[u8; sodium::SIGN_PUBLIC_LEN]> {
        let file = self.get(KeyKind::SigPublic, id).ok()?;
        SigPublicKey::try_from(&file).ok().map(|k| k.key)
    }
    fn is_empty(&self) -> bool {
        self.list(KeyKind::SigPublic).map(|l| l.is_empty()).unwrap_or(true)
    }
}

/// Checks a component's signature against the trusted keys.
pub fn check(bytes: &[u8], keys: &dyn TrustedKeys) -> Result<SignatureStatus, PluginError> {
    let sections = wasm::top_level_sections(bytes)?;
    let blocks: Vec<&[u8]> = sections
        .iter()
        .filter_map(|s| match s.custom {
            Some((SIGNATURE_SECTION, data)) => Some(data),
            _ => None,
        })
        .collect();
    let data = match blocks.as_slice() {
        [] => return Ok(SignatureStatus::Unsigned),
        [one] => *one,
        _ => {
            return Ok(SignatureStatus::Invalid {
                signer: None,
                reason: "more than one signature section".into(),
            });
        }
    };
    let block = match parse_block(data) {
        Ok(b) => b,
        Err(reason) => return Ok(SignatureStatus::Invalid { signer: None, reason }),
    };
    let signer = block.signer.to_string();
    let Some(pk) = keys.public_key(&block.signer) else {
        return Ok(SignatureStatus::UnknownSigner { signer });
    };
    let digest = hex::encode(signed_digest(bytes)?);
    if sodium::verify_detached(&block.signature, digest.as_bytes(), &pk) {
        Ok(SignatureStatus::Valid { signer })
    } else {
        Ok(SignatureStatus::Invalid {
            signer: Some(signer),
            reason: "signature does not match the content".into(),
        })
    }
}

/// `--plugin-trust`: what happens to plugins that are not signed by a trusted key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TrustMode {
    /// Refuse unsigned, unknown-signer and badly signed plugins.
    Strict,
    /// Load them with a warning.
    Warn,
    /// Do not check signatures.
    Off,
}

impl TrustMode {
    /// The default: strict once any origin public key is trusted, else warn.
    pub fn default_for(keys: &dyn TrustedKeys) -> TrustMode {
        if keys.is_empty() { TrustMode::Warn } else { TrustMode::Strict }
    }

    /// Admits or refuses a plugin before it is compiled.
    pub fn admit(self, status: &SignatureStatus) -> Result<(), PluginError> {
        match (self, status) {
            (TrustMode::Off, _) | (_, SignatureStatus::Valid { .. }) => Ok(()),
            (TrustMode::Warn, s) => {
                tracing::warn!(signature = %s.describe(), "loading a plugin that is not signed by a trusted key (plugin_trust = warn)");
                Ok(())
            }
            (TrustMode::Strict, s) => Err(PluginError::Untrusted(s.describe())),
        }
    }
}

impl std::fmt::Display for TrustMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrustMode::Strict => "strict",
            TrustMode::Warn => "warn",
            TrustMode::Off => "off",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Keys(HashMap<KeyId, [u8; 32]>);
    impl TrustedKeys for Keys {
        fn public_key(&self, id: &KeyId) -> Option<[u8; 32]> {
            self.0.get(id).copied()
        }
        fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn component() -> Vec<u8> {
        let mut v = wasm::COMPONENT_HEADER.to_vec();
        v.extend(wasm::encode_custom_section("warren-manifest", b"name = \"x\""));
        v
    }

    #[test]
    fn sign_verify_resign_and_tamper() {
        let (public, secret) = SigSecretKey::generate("acme").unwrap();
        let keys = Keys([(public.id.clone(), public.key)].into());
        let c = component();
        assert_eq!(check(&c, &keys).unwrap(), SignatureStatus::Unsigned);
        let signed = sign(&c, &secret).unwrap();
        assert!(signed.starts_with(&c), "the signature is appended");
        assert_eq!(check(&signed, &keys).unwrap(), SignatureStatus::Valid { signer: public.id.to_string() });
        assert_eq!(signed_digest(&signed).unwrap(), signed_digest(&c).unwrap());
        // Re-signing replaces the section instead of stacking a second one.
        let again = sign(&signed, &secret).unwrap();
        assert_eq!(again.len(), signed.len());
        assert!(matches!(check(&again, &keys).unwrap(), SignatureStatus::Valid { .. }));
        assert_eq!(strip_signature(&again).unwrap(), c);
        // Flip one byte of the manifest: the signature no longer matches.
        let mut tampered = signed.clone();
        tampered[12] ^= 1;
        assert!(matches!(check(&tampered, &keys).unwrap(), SignatureStatus::Invalid { .. }));
        // Unknown signer.
        assert!(matches!(
            check(&signed, &Keys(HashMap::new())).unwrap(),
            SignatureStatus::UnknownSigner { .. }
        ));
        // Two signature sections are refused.
        let mut two = signed.clone();
        two.extend_from_slice(&signed[c.len()..]);
        assert!(matches!(check(&two, &keys).unwrap(), SignatureStatus::Invalid { .. }));
    }

    #[test]
    fn trust_modes() {
        let unsigned = SignatureStatus::Unsigned;
        assert!(TrustMode::Strict.admit(&unsigned).is_err());
        assert!(TrustMode::Warn.admit(&unsigned).is_ok());
        assert!(TrustMode::Off.admit(&SignatureStatus::Invalid { signer: None, reason: "x".into() }).is_ok());
        assert!(
            TrustMode::Strict.admit(&SignatureStatus::Valid { signer: "a-20200101000000".into() }).is_ok()
        );
        assert_eq!(TrustMode::default_for(&Keys(HashMap::new())), TrustMode::Warn);
    }
}
