//! HART-1 signed packages: `HART-1\n{signer-name-rev}\nBLAKE2b\n{base64 sig}\n\n` + payload.
//!
//! The payload (an xz tarball) is hashed with unkeyed BLAKE2b-256; the signature is libsodium's
//! combined `crypto_sign` over the lowercase hex digest (64-byte signature || 64 hex chars).
//! Everything streams: the header is read with a bounded reader and the payload is hashed in
//! fixed-size chunks, so memory stays flat whatever the package size.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::CryptoError;
use super::cache::KeyCache;
use super::keys::{KeyId, KeyKind, SigPublicKey, SigSecretKey};
use super::sodium::{self, BLAKE2B_256_LEN, Blake2b256, SIGNATURE_LEN};
use crate::fsutil::{self, AtomicFile, Existing};
pub use crate::fsutil::{parent_dir, random_hex};

pub const HART_FORMAT: &str = "HART-1";
pub const HASH_TYPE: &str = "BLAKE2b";
/// The signed blob: 64-byte ed25519 signature followed by the 64-char hex digest.
pub const SIGNED_DIGEST_LEN: usize = SIGNATURE_LEN + 2 * BLAKE2B_256_LEN;
/// Read buffer for payloads: large enough for full hashing speed, small enough not to matter.
pub const CHUNK: usize = 256 * 1024;
/// No header line may be longer than this (the signature line is 172 characters).
const MAX_HEADER_LINE: usize = 512;

/// Every way reading, verifying, signing or unpacking a package can fail.
#[derive(Debug, thiserror::Error)]
pub enum HartError {
    #[error("Unsupported format version: {0:?} (expected {HART_FORMAT})")]
    UnsupportedFormat(String),
    #[error("Unsupported signature type: {0:?} (expected {HASH_TYPE})")]
    UnsupportedHashType(String),
    #[error("malformed {HART_FORMAT} header: {0}")]
    MalformedHeader(String),
    #[error("Habitat artifact is invalid, signature verification failed (signer {0})")]
    BadSignature(String),
    #[error("Habitat artifact is invalid, hashes don't match (expected: {expected}, computed: {computed})")]
    HashMismatch { expected: String, computed: String },
    #[error("the package changed while it was being unpacked; nothing was extracted")]
    ChangedDuringExtract,
    #[error("refusing to extract {path:?}: {why}")]
    UnsafeEntry { path: String, why: String },
    #[error("{0}")]
    Archive(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Wraps an I/O error with what was being done (for `map_err`).
pub fn io_err(context: impl std::fmt::Display) -> impl FnOnce(io::Error) -> HartError {
    move |source| HartError::Io { context: context.to_string(), source }
}

/// The parsed header of a HART-1 file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HartHeader {
    pub signer: KeyId,
    /// The decoded signed blob (always [`SIGNED_DIGEST_LEN`] bytes).
    pub signed_digest: Vec<u8>,
}

impl HartHeader {
    /// Reads exactly the header from `r`, leaving it positioned at the first payload byte.
    pub fn read<R: BufRead>(r: &mut R) -> Result<Self, HartError> {
        let format = read_line(r, "format version")?;
        if format != HART_FORMAT {
            return Err(HartError::UnsupportedFormat(printable(&format)));
        }
        let signer: KeyId = read_line(r, "key name")?.parse()?;
        let hash = read_line(r, "hash type")?;
        if hash != HASH_TYPE {
            return Err(HartError::UnsupportedHashType(printable(&hash)));
        }
        let sig_line = read_line(r, "signature")?;
        let signed_digest = B64
            .decode(sig_line.as_bytes())
            .map_err(|_| HartError::MalformedHeader("the signature is not base64".into()))?;
        if signed_digest.len() != SIGNED_DIGEST_LEN {
            return Err(HartError::MalformedHeader(format!(
                "the signature must be {SIGNED_DIGEST_LEN} bytes, got {}",
                signed_digest.len()
            )));
        }
        if !read_line(r, "blank line")?.is_empty() {
            return Err(HartError::MalformedHeader("line 5 must be blank".into()));
        }
        Ok(HartHeader { signer, signed_digest })
    }

    pub fn raw_signature(&self) -> String {
        B64.encode(&self.signed_digest)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        format!("{HART_FORMAT}\n{}\n{HASH_TYPE}\n{}\n\n", self.signer, self.raw_signature()).into_bytes()
    }

    /// Header length for a signer: every field but the name has a fixed size.
    pub fn encoded_len(signer: &KeyId) -> usize {
        HART_FORMAT.len()
            + 1
            + signer.to_string().len()
            + 1
            + HASH_TYPE.len()
            + 1
            + SIGNED_DIGEST_LEN.div_ceil(3) * 4
            + 2
    }

    /// Checks the signature with `key` and returns the digest it vouches for.
    pub fn signed_payload_digest(&self, key: &SigPublicKey) -> Result<[u8; BLAKE2B_256_LEN], HartError> {
        if key.id != self.signer {
            return Err(HartError::BadSignature(format!("{} (key given: {})", self.signer, key.id)));
        }
        let hex_digest = sodium::sign_open(&self.signed_digest, &key.key)
            .map_err(|_| HartError::BadSignature(self.signer.to_string()))?;
        // Habitat signs the lowercase hex; anything else was not made by a conforming signer.
        if !hex_digest.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(HartError::MalformedHeader("the signed digest is not lowercase hex".into()));
        }
        let mut digest = [0u8; BLAKE2B_256_LEN];
        hex::decode_to_slice(&hex_digest, &mut digest)
            .map_err(|_| HartError::MalformedHeader("the signed digest has the wrong length".into()))?;
        Ok(digest)
    }
}

/// Reads one `\n`-terminated line of at most [`MAX_HEADER_LINE`] bytes, without the newline.
fn read_line<R: BufRead>(r: &mut R, what: &str) -> Result<String, HartError> {
    let mut buf = Vec::with_capacity(64);
    (&mut *r)
        .take(MAX_HEADER_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .map_err(io_err(format!("reading the {what}")))?;
    if buf.last() != Some(&b'\n') {
        let why = if buf.len() > MAX_HEADER_LINE { "is too long" } else { "is missing (file truncated)" };
        return Err(HartError::MalformedHeader(format!("the {what} line {why}")));
    }
    buf.pop();
    String::from_utf8(buf).map_err(|_| HartError::MalformedHeader(format!("the {what} is not UTF-8")))
}

fn printable(s: &str) -> String {
    s.chars().take(64).collect()
}

/// What a successful verification proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub signer: KeyId,
    pub digest: [u8; BLAKE2B_256_LEN],
    pub header_len: u64,
    pub payload_len: u64,
}

impl Verified {
    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }
}

/// The signer's public key by exact name-revision: the `.pub` file, or derived from the secret
/// key when only that is in the cache (an origin owner signing and verifying on one machine).
pub fn signer_public_key(cache: &KeyCache, id: &KeyId) -> Result<SigPublicKey, CryptoError> {
    let not_found = || CryptoError::KeyNotFound {
        kind: KeyKind::SigPublic.describe(),
        name: id.to_string(),
        cache: cache.dir().display().to_string(),
    };
    let missing = |e: &CryptoError| matches!(e, CryptoError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound);
    match cache.get(KeyKind::SigPublic, id) {
        Ok(file) => SigPublicKey::try_from(&file),
        Err(e) if missing(&e) || matches!(e, CryptoError::WrongKeyKind { .. }) => {
            match cache.get(KeyKind::SigSecret, id) {
                Ok(secret) => Ok(SigSecretKey::try_from(&secret)?.public()),
                Err(e) if missing(&e) => Err(not_found()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Reads just the header of the package at `path`.
pub fn read_header(path: &Path) -> Result<HartHeader, HartError> {
    let file = fs::File::open(path).map_err(io_err(path.display()))?;
    HartHeader::read(&mut BufReader::with_capacity(1024, file))
}

/// Verifies a package from any reader: header, signature (key from `cache`), payload digest.
/// `progress` is called with the number of bytes consumed so far (header included).
pub fn verify_reader<R: Read>(
    reader: R,
    cache: &KeyCache,
    progress: &mut dyn FnMut(u64),
) -> Result<Verified, HartError> {
    let mut r = BufReader::with_capacity(CHUNK, reader);
    let header = HartHeader::read(&mut r)?;
    let key = signer_public_key(cache, &header.signer)?;
    let expected = header.signed_payload_digest(&key)?;
    let header_len = header.to_bytes().len() as u64;
    progress(header_len);
    let (computed, payload_len) = hash_stream(&mut r, &mut |n| progress(header_len + n))?;
    check_digest(&expected, &computed)?;
    Ok(Verified { signer: header.signer, digest: computed, header_len, payload_len })
}

/// Verifies the package at `path`.
pub fn verify_file(
    path: &Path,
    cache: &KeyCache,
    progress: &mut dyn FnMut(u64),
) -> Result<Verified, HartError> {
    let file = fs::File::open(path).map_err(io_err(path.display()))?;
    verify_reader(file, cache, progress).map_err(|e| match e {
        HartError::Io { context, source } => {
            HartError::Io { context: format!("{}: {context}", path.display()), source }
        }
        other => other,
    })
}

pub(crate) fn check_digest(expected: &[u8; 32], computed: &[u8; 32]) -> Result<(), HartError> {
    if sodium::ct_eq(expected, computed) {
        Ok(())
    } else {
        Err(HartError::HashMismatch { expected: hex::encode(expected), computed: hex::encode(computed) })
    }
}

/// Hashes everything left in `r` without copying it out of the reader's buffer.
pub fn hash_stream<R: BufRead>(
    r: &mut R,
    progress: &mut dyn FnMut(u64),
) -> Result<([u8; BLAKE2B_256_LEN], u64), HartError> {
    let mut hasher = Blake2b256::new();
    let mut total = 0u64;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading the payload")(e)),
        };
        if buf.is_empty() {
            break;
        }
        hasher.update(buf);
        let n = buf.len();
        r.consume(n);
        total += n as u64;
        progress(total);
    }
    Ok((hasher.finalize(), total))
}

/// A writer that hashes and counts everything passing through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Blake2b256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Blake2b256::new(), written: 0 }
    }
    pub fn written(&self) -> u64 {
        self.written
    }
    pub fn finish(self) -> (W, [u8; BLAKE2B_256_LEN], u64) {
        (self.inner, self.hasher.finalize(), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The header for a payload digest, signed with `key`.
pub fn sign_digest(key: &SigSecretKey, digest: &[u8; BLAKE2B_256_LEN]) -> HartHeader {
    let hex_digest = hex::encode(digest);
    HartHeader {
        signer: key.id.clone(),
        signed_digest: sodium::sign_combined(hex_digest.as_bytes(), &key.key),
    }
}

/// Writes a signed package to `out` in one pass: `write_payload` streams the payload, which is
/// hashed on the way; then the fixed-size header is written over the placeholder at offset 0.
pub fn write_signed<W, F>(
    mut out: W,
    key: &SigSecretKey,
    write_payload: F,
) -> Result<(W, Verified), HartError>
where
    W: Write + Seek,
    F: FnOnce(&mut dyn Write) -> Result<(), HartError>,
{
    let header_len = HartHeader::encoded_len(&key.id);
    out.seek(SeekFrom::Start(0)).map_err(io_err("seeking the output"))?;
    out.write_all(&vec![b'\n'; header_len]).map_err(io_err("writing the header"))?;
    let mut hashing = HashingWriter::new(io::BufWriter::with_capacity(CHUNK, out));
    write_payload(&mut hashing)?;
    let (buffered, digest, payload_len) = hashing.finish();
    let mut out = buffered.into_inner().map_err(|e| io_err("writing the payload")(e.into_error()))?;
    let header = sign_digest(key, &digest);
    let bytes = header.to_bytes();
    debug_assert_eq!(bytes.len(), header_len);
    out.seek(SeekFrom::Start(0)).map_err(io_err("seeking the output"))?;
    out.write_all(&bytes).map_err(io_err("writing the header"))?;
    out.flush().map_err(io_err("writing the package"))?;
    Ok((out, Verified { signer: key.id.clone(), digest, header_len: header_len as u64, payload_len }))
}

/// Signs the payload produced by `write_payload` into `dest`, atomically.
pub fn sign_to_path<F>(dest: &Path, key: &SigSecretKey, write_payload: F) -> Result<Verified, HartError>
where
    F: FnOnce(&mut dyn Write) -> Result<(), HartError>,
{
    let mut tmp = AtomicFile::create(dest, fsutil::DEFAULT_MODE, Existing::Replace)
        .map_err(io_err(format!("creating a temporary file beside {}", dest.display())))?;
    let (_, verified) = write_signed(tmp.file(), key, write_payload)?;
    // The commit error names its step (fsync, move, or the directory's fsync).
    tmp.commit().map_err(io_err(format!("writing {}", dest.display())))?;
    Ok(verified)
}

/// The xz magic that every real payload starts with.
pub const XZ_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];

/// Signs an existing payload file (an xz tarball) into `dest`.
pub fn sign_payload_file(
    src: &Path,
    dest: &Path,
    key: &SigSecretKey,
    progress: &mut dyn FnMut(u64),
) -> Result<Verified, HartError> {
    let mut input = fs::File::open(src).map_err(io_err(src.display()))?;
    let mut magic = [0u8; 6];
    let got = read_up_to(&mut input, &mut magic).map_err(io_err(src.display()))?;
    if got < magic.len() || magic != XZ_MAGIC {
        return Err(HartError::Archive(format!("{} is not an xz file (nor a directory)", src.display())));
    }
    input.seek(SeekFrom::Start(0)).map_err(io_err(src.display()))?;
    sign_to_path(dest, key, |out| {
        copy_with_progress(&mut input, out, progress).map_err(io_err(src.display()))?;
        Ok(())
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `io::copy` with a fixed buffer and a progress callback.
pub fn copy_with_progress(
    r: &mut dyn Read,
    w: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
        progress(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn setup() -> (tempfile::TempDir, KeyCache, SigSecretKey) {
        let dir = tempfile::tempdir().unwrap();
        let cache = KeyCache::new(dir.path().join("keys"));
        let (pk, sk) = SigSecretKey::generate("acme").unwrap();
        cache.write(&pk.to_file()).unwrap();
        (dir, cache, sk)
    }

    fn signed(sk: &SigSecretKey, payload: &[u8]) -> Vec<u8> {
        let (out, v) = write_signed(Cursor::new(Vec::new()), sk, |w| {
            w.write_all(payload).map_err(io_err("test"))?;
            Ok(())
        })
        .unwrap();
        assert_eq!(v.payload_len, payload.len() as u64);
        out.into_inner()
    }

    #[test]
    fn sign_then_verify_round_trip() {
        let (_d, cache, sk) = setup();
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let hart = signed(&sk, &payload);
        assert!(hart.starts_with(b"HART-1\nacme-"));
        let mut calls = 0;
        let v = verify_reader(Cursor::new(&hart), &cache, &mut |_| calls += 1).unwrap();
        assert_eq!(v.signer, sk.id);
        assert_eq!(v.digest, sodium::blake2b_256(&payload));
        assert_eq!(v.header_len as usize + payload.len(), hart.len());
        assert!(calls > 1);
    }

    #[test]
    fn header_length_is_predicted_exactly() {
        let (_d, _cache, sk) = setup();
        let hart = signed(&sk, b"");
        let header = HartHeader::read(&mut Cursor::new(&hart)).unwrap();
        assert_eq!(header.to_bytes().len(), HartHeader::encoded_len(&sk.id));
        assert_eq!(hart.len(), HartHeader::encoded_len(&sk.id));
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let (_d, cache, sk) = setup();
        let hart = signed(&sk, b"payload bytes for the flip test");
        for i in 0..hart.len() {
            for bit in [0x01, 0x20, 0x80] {
                let mut bad = hart.clone();
                bad[i] ^= bit;
                assert!(
                    verify_reader(Cursor::new(&bad), &cache, &mut |_| ()).is_err(),
                    "byte {i} bit {bit:#x}"
                );
            }
        }
    }

    #[test]
    fn truncations_and_unknown_signers_fail_cleanly() {
        let (_d, cache, sk) = setup();
        let hart = signed(&sk, b"abc");
        for cut in 0..hart.len() {
            assert!(verify_reader(Cursor::new(&hart[..cut]), &cache, &mut |_| ()).is_err(), "cut {cut}");
        }
        let empty = KeyCache::new(cache.dir().join("nothing-here"));
        let err = verify_reader(Cursor::new(&hart), &empty, &mut |_| ()).unwrap_err();
        assert!(matches!(err, HartError::Crypto(CryptoError::KeyNotFound { .. })), "{err}");
        let long_line = [b"HART-1\n".as_slice(), &[b'a'; 4096]].concat();
        assert!(matches!(
            verify_reader(Cursor::new(long_line), &cache, &mut |_| ()),
            Err(HartError::MalformedHeader(_))
        ));
    }

    #[test]
    fn secret_key_alone_is_enough_to_verify() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KeyCache::new(dir.path());
        let (_, sk) = SigSecretKey::generate("solo").unwrap();
        cache.write(&sk.to_file()).unwrap();
        assert_eq!(signer_public_key(&cache, &sk.id).unwrap(), sk.public());
    }

    #[test]
    fn a_failed_write_names_the_step_that_failed() {
        let (d, _cache, sk) = setup();
        // A non-empty directory where the package should go: the rename into place fails.
        let dest = d.path().join("out.hart");
        fs::create_dir_all(dest.join("x")).unwrap();
        let err = sign_to_path(&dest, &sk, |w| w.write_all(b"payload").map_err(io_err("test"))).unwrap_err();
        let text = err.to_string();
        let expected = format!("writing {}: moving the temporary file into place: ", dest.display());
        assert!(text.starts_with(&expected), "{text}");
        let HartError::Io { source, .. } = &err else { panic!("{err:?}") };
        assert_eq!(fsutil::commit_step(source), Some(fsutil::CommitStep::Move));
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2, "keys and the directory, no temp file");
    }
}
