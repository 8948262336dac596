//! Habitat-compatible key files: `"{HEADER}\n{name}-{rev}\n\n{base64}"`.
//!
//! Parsing is strict about structure and lenient about trailing whitespace (Habitat's fixtures
//! have both). Secret bytes live in `Secret` values and are never printed.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use super::CryptoError;
use super::sodium::{self, BoxSecretKey, Secret, SecretboxKey, SignSecretKey};

/// The five key file kinds, with their headers, file extensions and sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    SigPublic,
    SigSecret,
    BoxPublic,
    BoxSecret,
    SymSecret,
}

impl KeyKind {
    pub const ALL: [KeyKind; 5] =
        [KeyKind::SigPublic, KeyKind::SigSecret, KeyKind::BoxPublic, KeyKind::BoxSecret, KeyKind::SymSecret];

    pub fn header(self) -> &'static str {
        match self {
            KeyKind::SigPublic => "SIG-PUB-1",
            KeyKind::SigSecret => "SIG-SEC-1",
            KeyKind::BoxPublic => "BOX-PUB-1",
            KeyKind::BoxSecret => "BOX-SEC-1",
            KeyKind::SymSecret => "SYM-SEC-1",
        }
    }

    /// File extension after `{name}-{rev}.`; both public kinds share `.pub`.
    pub fn extension(self) -> &'static str {
        match self {
            KeyKind::SigPublic | KeyKind::BoxPublic => "pub",
            KeyKind::SigSecret => "sig.key",
            KeyKind::BoxSecret => "box.key",
            KeyKind::SymSecret => "sym.key",
        }
    }

    pub fn is_secret(self) -> bool {
        !matches!(self, KeyKind::SigPublic | KeyKind::BoxPublic)
    }

    pub fn key_len(self) -> usize {
        match self {
            KeyKind::SigSecret => sodium::SIGN_SECRET_LEN,
            KeyKind::SigPublic => sodium::SIGN_PUBLIC_LEN,
            KeyKind::BoxPublic => sodium::BOX_PUBLIC_LEN,
            KeyKind::BoxSecret => sodium::BOX_SECRET_LEN,
            KeyKind::SymSecret => sodium::SECRETBOX_KEY_LEN,
        }
    }

    pub fn from_header(header: &str) -> Result<Self, CryptoError> {
        KeyKind::ALL
            .into_iter()
            .find(|k| k.header() == header)
            .ok_or_else(|| CryptoError::UnsupportedKeyVersion(header_for_error(header)))
    }

    pub fn describe(self) -> &'static str {
        match self {
            KeyKind::SigPublic => "public origin signing key",
            KeyKind::SigSecret => "secret origin signing key",
            KeyKind::BoxPublic => "public encryption key",
            KeyKind::BoxSecret => "secret encryption key",
            KeyKind::SymSecret => "ring key",
        }
    }
}

/// A header is echoed only when it looks like one (`NONSENSE-12`): a file holding just a
/// base64 key must not put the key into an error message.
fn header_for_error(header: &str) -> String {
    let looks_like_header = header.len() <= 20
        && header.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
    if looks_like_header { header.to_string() } else { "<not a key file header>".to_string() }
}

fn truncate_for_error(s: &str) -> String {
    s.chars().take(64).collect()
}

/// `{name}-{rev}`: a key name and its UTC `YYYYMMDDhhmmss` revision.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId {
    pub name: String,
    pub rev: String,
}

impl KeyId {
    pub fn new(name: &str, rev: &str) -> Result<Self, CryptoError> {
        validate_name(name)?;
        validate_rev(rev)?;
        Ok(KeyId { name: name.to_string(), rev: rev.to_string() })
    }

    /// A new id for `name` at the current UTC second.
    pub fn now(name: &str) -> Result<Self, CryptoError> {
        KeyId::new(name, &current_revision())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.name, self.rev)
    }
}

impl FromStr for KeyId {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, CryptoError> {
        let bad = || CryptoError::BadNamedRevision(truncate_for_error(s));
        let (name, rev) = s.rsplit_once('-').ok_or_else(bad)?;
        KeyId::new(name, rev).map_err(|_| bad())
    }
}

pub fn current_revision() -> String {
    current_revision_at(time::OffsetDateTime::now_utc())
}

/// `t` as a revision (`YYYYMMDDhhmmss`, UTC): key revisions and package releases.
pub fn current_revision_at(t: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year][month][day][hour][minute][second]");
    t.to_offset(time::UtcOffset::UTC).format(&fmt).expect("formatting a UTC timestamp cannot fail")
}

fn validate_rev(rev: &str) -> Result<(), CryptoError> {
    let fmt = time::macros::format_description!("[year][month][day][hour][minute][second]");
    if rev.len() == 14
        && rev.bytes().all(|b| b.is_ascii_digit())
        && time::PrimitiveDateTime::parse(rev, &fmt).is_ok()
    {
        Ok(())
    } else {
        Err(CryptoError::BadNamedRevision(truncate_for_error(rev)))
    }
}

/// Key names: origins, users, rings (`[a-z0-9_-]`, Habitat also allows upper case in user names)
/// and service groups `svc.group@org`. No path separators, no whitespace, bounded length.
pub fn validate_name(name: &str) -> Result<(), CryptoError> {
    let bad = |why: &str| CryptoError::BadKeyName { name: truncate_for_error(name), why: why.to_string() };
    if name.is_empty() || name.len() > 255 {
        return Err(bad("must be 1 to 255 characters"));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(bad("must start with a letter or digit"));
    }
    if let Some((group, org)) = name.split_once('@') {
        let (svc, grp) = group.split_once('.').ok_or_else(|| bad("a service key is SERVICE.GROUP@ORG"))?;
        for part in [svc, grp, org] {
            if part.is_empty() || !part.bytes().all(is_plain_name_byte) {
                return Err(bad("service, group and org use letters, digits, '_' and '-'"));
            }
        }
        return Ok(());
    }
    if !name.bytes().all(is_plain_name_byte) {
        return Err(bad("use letters, digits, '_' and '-'"));
    }
    Ok(())
}

fn is_plain_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A parsed key file of any kind. Secret material is zeroized on drop and never printed.
#[derive(Clone)]
pub struct KeyFile {
    pub kind: KeyKind,
    pub id: KeyId,
    bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("kind", &self.kind)
            .field("id", &self.id.to_string())
            .finish_non_exhaustive()
    }
}

/// Upper bound on a key file read from anywhere: the largest valid one is well under 200 bytes.
pub const MAX_KEY_FILE_LEN: usize = 4096;

impl KeyFile {
    pub fn new(kind: KeyKind, id: KeyId, bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != kind.key_len() {
            return Err(CryptoError::BadLength {
                what: kind.describe(),
                expected: kind.key_len(),
                got: bytes.len(),
            });
        }
        let file = KeyFile { kind, id, bytes: Zeroizing::new(bytes.to_vec()) };
        file.check_consistency()?;
        Ok(file)
    }

    pub fn parse(text: &[u8]) -> Result<Self, CryptoError> {
        if text.len() > MAX_KEY_FILE_LEN {
            return Err(CryptoError::MalformedKey("the file is too large to be a key".into()));
        }
        let text =
            std::str::from_utf8(text).map_err(|_| CryptoError::MalformedKey("not UTF-8 text".into()))?;
        let mut lines = text.splitn(4, '\n');
        let header = lines.next().unwrap_or_default().trim_end_matches('\r');
        let kind = KeyKind::from_header(header)?;
        let id_line =
            lines.next().ok_or_else(|| CryptoError::MalformedKey("missing the name-revision line".into()))?;
        let id: KeyId = id_line.trim_end_matches('\r').parse()?;
        let blank = lines.next().ok_or_else(|| CryptoError::MalformedKey("missing the blank line".into()))?;
        if !blank.trim().is_empty() {
            return Err(CryptoError::MalformedKey("line 3 must be blank".into()));
        }
        let body =
            lines.next().ok_or_else(|| CryptoError::MalformedKey("missing the key material".into()))?;
        let decoded = Zeroizing::new(
            B64.decode(body.trim())
                .map_err(|_| CryptoError::MalformedKey("the key material is not base64".into()))?,
        );
        KeyFile::new(kind, id, &decoded)
    }

    /// The file contents, in Habitat's layout (no trailing newline, as `hab` writes them).
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{}\n{}\n\n{}", self.kind.header(), self.id, B64.encode(&*self.bytes)))
    }

    pub fn file_name(&self) -> String {
        format!("{}.{}", self.id, self.kind.extension())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Only for `SIG-SEC-1`: the 64-byte secret must end with its own public key.
    fn check_consistency(&self) -> Result<(), CryptoError> {
        if self.kind == KeyKind::SigSecret {
            let sk = SignSecretKey::from_slice(&self.bytes)?;
            if sodium::sign_public_from_secret(&sk)[..] != self.bytes[32..] {
                return Err(CryptoError::MalformedKey("the signing key's halves do not match".into()));
            }
        }
        Ok(())
    }

    fn expect(&self, kind: KeyKind) -> Result<(), CryptoError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(CryptoError::WrongKeyKind { expected: kind.describe(), got: self.kind.describe() })
        }
    }

    fn array<const N: usize>(&self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes);
        out
    }
}

/// Ring (SYM-SEC-1) key: encrypts every gossip packet.
#[derive(Clone, Debug)]
pub struct RingKey {
    pub id: KeyId,
    pub key: SecretboxKey,
}

impl RingKey {
    pub fn generate(name: &str) -> Result<Self, CryptoError> {
        Ok(RingKey { id: KeyId::now(name)?, key: SecretboxKey::random() })
    }

    /// A short public identifier of the key bytes (not of its name), for the wire's key id: it
    /// lets a receiver pick the right installed key without trying them all, and reveals nothing.
    pub fn fingerprint(&self) -> [u8; 8] {
        let mut h = sodium::Blake2b256::new();
        h.update(b"warren ring key id v1");
        h.update(self.key.expose());
        let d = h.finalize();
        let mut out = [0u8; 8];
        out.copy_from_slice(&d[..8]);
        out
    }

    pub fn to_file(&self) -> KeyFile {
        KeyFile::new(KeyKind::SymSecret, self.id.clone(), self.key.expose()).expect("sizes match by type")
    }
}

impl TryFrom<&KeyFile> for RingKey {
    type Error = CryptoError;
    fn try_from(f: &KeyFile) -> Result<Self, CryptoError> {
        f.expect(KeyKind::SymSecret)?;
        Ok(RingKey { id: f.id.clone(), key: Secret::from_slice(f.bytes())? })
    }
}

/// Public origin signing key (SIG-PUB-1): verifies packages and plugins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigPublicKey {
    pub id: KeyId,
    pub key: [u8; sodium::SIGN_PUBLIC_LEN],
}

impl SigPublicKey {
    pub fn to_file(&self) -> KeyFile {
        KeyFile::new(KeyKind::SigPublic, self.id.clone(), &self.key).expect("sizes match by type")
    }
}

impl TryFrom<&KeyFile> for SigPublicKey {
    type Error = CryptoError;
    fn try_from(f: &KeyFile) -> Result<Self, CryptoError> {
        f.expect(KeyKind::SigPublic)?;
        Ok(SigPublicKey { id: f.id.clone(), key: f.array() })
    }
}

/// Secret origin signing key (SIG-SEC-1): signs packages and plugins.
#[derive(Clone, Debug)]
pub struct SigSecretKey {
    pub id: KeyId,
    pub key: SignSecretKey,
}

impl SigSecretKey {
    pub fn generate(origin: &str) -> Result<(SigPublicKey, SigSecretKey), CryptoError> {
        let id = KeyId::now(origin)?;
        let (pk, sk) = sodium::sign_keypair();
        Ok((SigPublicKey { id: id.clone(), key: pk }, SigSecretKey { id, key: sk }))
    }

    pub fn public(&self) -> SigPublicKey {
        SigPublicKey { id: self.id.clone(), key: sodium::sign_public_from_secret(&self.key) }
    }

    pub fn to_file(&self) -> KeyFile {
        KeyFile::new(KeyKind::SigSecret, self.id.clone(), self.key.expose()).expect("sizes match by type")
    }
}

impl TryFrom<&KeyFile> for SigSecretKey {
    type Error = CryptoError;
    fn try_from(f: &KeyFile) -> Result<Self, CryptoError> {
        f.expect(KeyKind::SigSecret)?;
        Ok(SigSecretKey { id: f.id.clone(), key: Secret::from_slice(f.bytes())? })
    }
}

/// Public encryption key (BOX-PUB-1) of a user, a service group or an origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoxPublicKey {
    pub id: KeyId,
    pub key: [u8; sodium::BOX_PUBLIC_LEN],
}

impl BoxPublicKey {
    pub fn to_file(&self) -> KeyFile {
        KeyFile::new(KeyKind::BoxPublic, self.id.clone(), &self.key).expect("sizes match by type")
    }
}

impl TryFrom<&KeyFile> for BoxPublicKey {
    type Error = CryptoError;
    fn try_from(f: &KeyFile) -> Result<Self, CryptoError> {
        f.expect(KeyKind::BoxPublic)?;
        Ok(BoxPublicKey { id: f.id.clone(), key: f.array() })
    }
}

/// Secret encryption key (BOX-SEC-1).
#[derive(Clone, Debug)]
pub struct BoxSecretKeyFile {
    pub id: KeyId,
    pub key: BoxSecretKey,
}

impl BoxSecretKeyFile {
    pub fn generate(name: &str) -> Result<(BoxPublicKey, BoxSecretKeyFile), CryptoError> {
        let id = KeyId::now(name)?;
        let (pk, sk) = sodium::box_keypair();
        Ok((BoxPublicKey { id: id.clone(), key: pk }, BoxSecretKeyFile { id, key: sk }))
    }

    pub fn public(&self) -> BoxPublicKey {
        BoxPublicKey { id: self.id.clone(), key: sodium::box_public_from_secret(&self.key) }
    }

    pub fn to_file(&self) -> KeyFile {
        KeyFile::new(KeyKind::BoxSecret, self.id.clone(), self.key.expose()).expect("sizes match by type")
    }
}

impl TryFrom<&KeyFile> for BoxSecretKeyFile {
    type Error = CryptoError;
    fn try_from(f: &KeyFile) -> Result<Self, CryptoError> {
        f.expect(KeyKind::BoxSecret)?;
        Ok(BoxSecretKeyFile { id: f.id.clone(), key: Secret::from_slice(f.bytes())? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_parse_strictly() {
        let id: KeyId = "service-key-valid.default@acme-20160509181736".parse().unwrap();
        assert_eq!(id.name, "service-key-valid.default@acme");
        assert_eq!(id.rev, "20160509181736");
        for bad in [
            "happyhumans-20160424223347-not-valid-identifier!",
            "nodash",
            "name-2016",
            "name-20161399999999",
            "-20160509181736",
            "a/b-20160509181736",
        ] {
            assert!(matches!(bad.parse::<KeyId>(), Err(CryptoError::BadNamedRevision(_))), "{bad}");
        }
    }

    #[test]
    fn names_are_validated() {
        for ok in ["core", "ring-key-valid", "e2e_test_ring_1", "redis.default@e2e", "Ruby-Rhod"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "-x", "a b", "a/b", "svc@org", "svc.@org", "svc.grp@", "x\n"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_files_round_trip_and_reject_garbage() {
        let ring = RingKey::generate("myring").unwrap();
        let text = ring.to_file().to_text();
        let parsed = KeyFile::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed.kind, KeyKind::SymSecret);
        assert_eq!(RingKey::try_from(&parsed).unwrap().key, ring.key);
        assert!(!format!("{parsed:?}").contains(&text[text.len() - 20..]));
        for bad in [
            &b""[..],
            b"SYM-SEC-1",
            b"SYM-SEC-1\nx-20160504220722\n\n!!!",
            b"SYM-SEC-1\nx-20160504220722\n\nAAAA",
        ] {
            assert!(KeyFile::parse(bad).is_err());
        }
        let truncated = &text.as_bytes()[..text.len() - 5];
        assert!(KeyFile::parse(truncated).is_err());
        assert!(matches!(
            KeyFile::parse(b"NONSENSE-12\nx-20160504220722\n\nAAAA"),
            Err(CryptoError::UnsupportedKeyVersion(_))
        ));
    }

    #[test]
    fn a_bare_base64_key_is_not_echoed_in_errors() {
        let ring = RingKey::generate("r").unwrap();
        let bare = B64.encode(ring.key.expose());
        let err = KeyFile::parse(bare.as_bytes()).unwrap_err().to_string();
        assert!(!err.contains(&bare[..20]), "{err}");
        assert!(
            KeyFile::parse(b"NONSENSE-12\nx-20160504220722\n\nAAAA")
                .unwrap_err()
                .to_string()
                .contains("NONSENSE-12")
        );
    }

    #[test]
    fn wrong_kind_is_refused() {
        let ring = RingKey::generate("r").unwrap().to_file();
        assert!(matches!(SigSecretKey::try_from(&ring), Err(CryptoError::WrongKeyKind { .. })));
    }
}
