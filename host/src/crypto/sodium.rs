//! The only place in warren that calls libsodium. Everything above this module works with
//! sized arrays, `Secret` values and `Result`s; nothing here panics on hostile input.

use std::fmt;
use std::sync::Once;

use libsodium_sys as ffi;
use zeroize::Zeroize;

use super::CryptoError;

pub const SECRETBOX_KEY_LEN: usize = 32;
pub const SECRETBOX_NONCE_LEN: usize = 24;
pub const SECRETBOX_MAC_LEN: usize = 16;
pub const BOX_PUBLIC_LEN: usize = 32;
pub const BOX_SECRET_LEN: usize = 32;
pub const BOX_NONCE_LEN: usize = 24;
pub const BOX_MAC_LEN: usize = 16;
pub const SEALED_BOX_OVERHEAD: usize = 48;
pub const SIGN_PUBLIC_LEN: usize = 32;
pub const SIGN_SECRET_LEN: usize = 64;
pub const SIGNATURE_LEN: usize = 64;
pub const BLAKE2B_256_LEN: usize = 32;

static INIT: Once = Once::new();

/// Initialises libsodium once per process; every public function calls it first.
fn init() {
    INIT.call_once(|| {
        // SAFETY: sodium_init is thread-safe and idempotent; <0 means no usable RNG.
        let rc = unsafe { ffi::sodium_init() };
        assert!(rc >= 0, "libsodium could not initialise (no random source?)");
    });
}

/// Fixed-size secret material: zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<const N: usize>(Box<[u8; N]>);

impl<const N: usize> Secret<N> {
    pub fn from_array(bytes: [u8; N]) -> Self {
        let mut bytes = bytes;
        let secret = Secret(Box::new(bytes));
        bytes.zeroize();
        secret
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != N {
            return Err(CryptoError::BadLength { what: "secret key", expected: N, got: bytes.len() });
        }
        let mut out = Box::new([0u8; N]);
        out.copy_from_slice(bytes);
        Ok(Secret(out))
    }

    pub fn random() -> Self {
        let mut out = Box::new([0u8; N]);
        random_bytes(&mut out[..]);
        Secret(out)
    }

    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> Drop for Secret<N> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<const N: usize> fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret<{N}>(<redacted>)")
    }
}

pub type SecretboxKey = Secret<SECRETBOX_KEY_LEN>;
pub type BoxSecretKey = Secret<BOX_SECRET_LEN>;
pub type SignSecretKey = Secret<SIGN_SECRET_LEN>;

pub fn random_bytes(buf: &mut [u8]) {
    init();
    // SAFETY: buf is a valid writable region of buf.len() bytes.
    unsafe { ffi::randombytes_buf(buf.as_mut_ptr().cast(), buf.len()) }
}

pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    random_bytes(&mut out);
    out
}

/// Constant-time equality; different lengths are unequal (the length itself is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    init();
    if a.len() != b.len() {
        return false;
    }
    // SAFETY: both regions are a.len() bytes long.
    unsafe { ffi::sodium_memcmp(a.as_ptr().cast(), b.as_ptr().cast(), a.len()) == 0 }
}

fn mlen(len: usize) -> u64 {
    len as u64
}

// ---- secretbox (ring wire) ----

pub fn secretbox_seal(key: &SecretboxKey, nonce: &[u8; SECRETBOX_NONCE_LEN], msg: &[u8]) -> Vec<u8> {
    init();
    let mut out = vec![0u8; msg.len() + SECRETBOX_MAC_LEN];
    // SAFETY: out has room for msg + MAC; key and nonce are the sizes libsodium expects.
    let rc = unsafe {
        ffi::crypto_secretbox_easy(
            out.as_mut_ptr(),
            msg.as_ptr(),
            mlen(msg.len()),
            nonce.as_ptr(),
            key.expose().as_ptr(),
        )
    };
    debug_assert_eq!(rc, 0);
    out
}

pub fn secretbox_open(
    key: &SecretboxKey,
    nonce: &[u8; SECRETBOX_NONCE_LEN],
    ciphertext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    init();
    if ciphertext.len() < SECRETBOX_MAC_LEN {
        return Err(CryptoError::Decrypt);
    }
    let mut out = vec![0u8; ciphertext.len() - SECRETBOX_MAC_LEN];
    // SAFETY: out holds ciphertext minus MAC bytes, as libsodium writes.
    let rc = unsafe {
        ffi::crypto_secretbox_open_easy(
            out.as_mut_ptr(),
            ciphertext.as_ptr(),
            mlen(ciphertext.len()),
            nonce.as_ptr(),
            key.expose().as_ptr(),
        )
    };
    if rc == 0 { Ok(out) } else { Err(CryptoError::Decrypt) }
}

// ---- box (user → service group) and sealed box (anonymous) ----

pub fn box_keypair() -> ([u8; BOX_PUBLIC_LEN], BoxSecretKey) {
    init();
    let mut pk = [0u8; BOX_PUBLIC_LEN];
    let mut sk = Box::new([0u8; BOX_SECRET_LEN]);
    // SAFETY: both buffers are the sizes libsodium writes.
    unsafe { ffi::crypto_box_keypair(pk.as_mut_ptr(), sk.as_mut_ptr()) };
    (pk, Secret(sk))
}

pub fn box_public_from_secret(sk: &BoxSecretKey) -> [u8; BOX_PUBLIC_LEN] {
    init();
    let mut pk = [0u8; BOX_PUBLIC_LEN];
    // SAFETY: 32-byte scalar in, 32-byte point out.
    unsafe { ffi::crypto_scalarmult_base(pk.as_mut_ptr(), sk.expose().as_ptr()) };
    pk
}

pub fn box_seal(
    msg: &[u8],
    nonce: &[u8; BOX_NONCE_LEN],
    their_public: &[u8; BOX_PUBLIC_LEN],
    my_secret: &BoxSecretKey,
) -> Result<Vec<u8>, CryptoError> {
    init();
    let mut out = vec![0u8; msg.len() + BOX_MAC_LEN];
    // SAFETY: out has room for msg + MAC; keys and nonce are sized arrays.
    let rc = unsafe {
        ffi::crypto_box_easy(
            out.as_mut_ptr(),
            msg.as_ptr(),
            mlen(msg.len()),
            nonce.as_ptr(),
            their_public.as_ptr(),
            my_secret.expose().as_ptr(),
        )
    };
    // Fails only for a degenerate (all-zero shared secret) public key.
    if rc == 0 { Ok(out) } else { Err(CryptoError::BadPublicKey) }
}

pub fn box_open(
    ciphertext: &[u8],
    nonce: &[u8; BOX_NONCE_LEN],
    their_public: &[u8; BOX_PUBLIC_LEN],
    my_secret: &BoxSecretKey,
) -> Result<Vec<u8>, CryptoError> {
    init();
    if ciphertext.len() < BOX_MAC_LEN {
        return Err(CryptoError::Decrypt);
    }
    let mut out = vec![0u8; ciphertext.len() - BOX_MAC_LEN];
    // SAFETY: out holds ciphertext minus MAC bytes.
    let rc = unsafe {
        ffi::crypto_box_open_easy(
            out.as_mut_ptr(),
            ciphertext.as_ptr(),
            mlen(ciphertext.len()),
            nonce.as_ptr(),
            their_public.as_ptr(),
            my_secret.expose().as_ptr(),
        )
    };
    if rc == 0 { Ok(out) } else { Err(CryptoError::Decrypt) }
}

pub fn sealed_box_seal(msg: &[u8], their_public: &[u8; BOX_PUBLIC_LEN]) -> Result<Vec<u8>, CryptoError> {
    init();
    let mut out = vec![0u8; msg.len() + SEALED_BOX_OVERHEAD];
    // SAFETY: out has room for msg + ephemeral pk + MAC.
    let rc = unsafe {
        ffi::crypto_box_seal(out.as_mut_ptr(), msg.as_ptr(), mlen(msg.len()), their_public.as_ptr())
    };
    if rc == 0 { Ok(out) } else { Err(CryptoError::BadPublicKey) }
}

pub fn sealed_box_open(
    ciphertext: &[u8],
    my_public: &[u8; BOX_PUBLIC_LEN],
    my_secret: &BoxSecretKey,
) -> Result<Vec<u8>, CryptoError> {
    init();
    if ciphertext.len() < SEALED_BOX_OVERHEAD {
        return Err(CryptoError::Decrypt);
    }
    let mut out = vec![0u8; ciphertext.len() - SEALED_BOX_OVERHEAD];
    // SAFETY: out holds ciphertext minus the sealed-box overhead.
    let rc = unsafe {
        ffi::crypto_box_seal_open(
            out.as_mut_ptr(),
            ciphertext.as_ptr(),
            mlen(ciphertext.len()),
            my_public.as_ptr(),
            my_secret.expose().as_ptr(),
        )
    };
    if rc == 0 { Ok(out) } else { Err(CryptoError::Decrypt) }
}

// ---- ed25519 signatures (origin keys: packages, plugins) ----

pub fn sign_keypair() -> ([u8; SIGN_PUBLIC_LEN], SignSecretKey) {
    init();
    let mut pk = [0u8; SIGN_PUBLIC_LEN];
    let mut sk = Box::new([0u8; SIGN_SECRET_LEN]);
    // SAFETY: both buffers are the sizes libsodium writes.
    unsafe { ffi::crypto_sign_keypair(pk.as_mut_ptr(), sk.as_mut_ptr()) };
    (pk, Secret(sk))
}

/// The public half stored in the last 32 bytes of an ed25519 secret key.
pub fn sign_public_from_secret(sk: &SignSecretKey) -> [u8; SIGN_PUBLIC_LEN] {
    init();
    let mut pk = [0u8; SIGN_PUBLIC_LEN];
    // SAFETY: 64-byte secret in, 32-byte public out.
    unsafe { ffi::crypto_sign_ed25519_sk_to_pk(pk.as_mut_ptr(), sk.expose().as_ptr()) };
    pk
}

/// libsodium "combined" signature: 64-byte signature followed by the message.
pub fn sign_combined(msg: &[u8], sk: &SignSecretKey) -> Vec<u8> {
    init();
    let mut out = vec![0u8; msg.len() + SIGNATURE_LEN];
    let mut out_len: u64 = 0;
    // SAFETY: out has room for signature + message.
    unsafe {
        ffi::crypto_sign(out.as_mut_ptr(), &mut out_len, msg.as_ptr(), mlen(msg.len()), sk.expose().as_ptr())
    };
    out.truncate(out_len as usize);
    out
}

/// Checks a combined signature and returns the signed message.
pub fn sign_open(signed: &[u8], pk: &[u8; SIGN_PUBLIC_LEN]) -> Result<Vec<u8>, CryptoError> {
    init();
    if signed.len() < SIGNATURE_LEN {
        return Err(CryptoError::BadSignature);
    }
    let mut out = vec![0u8; signed.len() - SIGNATURE_LEN];
    let mut out_len: u64 = 0;
    // SAFETY: out holds the message part of the signed blob.
    let rc = unsafe {
        ffi::crypto_sign_open(
            out.as_mut_ptr(),
            &mut out_len,
            signed.as_ptr(),
            mlen(signed.len()),
            pk.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(CryptoError::BadSignature);
    }
    out.truncate(out_len as usize);
    Ok(out)
}

pub fn sign_detached(msg: &[u8], sk: &SignSecretKey) -> [u8; SIGNATURE_LEN] {
    init();
    let mut sig = [0u8; SIGNATURE_LEN];
    // SAFETY: sig is 64 bytes; the length out-pointer may be null.
    unsafe {
        ffi::crypto_sign_detached(
            sig.as_mut_ptr(),
            std::ptr::null_mut(),
            msg.as_ptr(),
            mlen(msg.len()),
            sk.expose().as_ptr(),
        )
    };
    sig
}

pub fn verify_detached(sig: &[u8; SIGNATURE_LEN], msg: &[u8], pk: &[u8; SIGN_PUBLIC_LEN]) -> bool {
    init();
    // SAFETY: all pointers are valid for their stated lengths.
    unsafe { ffi::crypto_sign_verify_detached(sig.as_ptr(), msg.as_ptr(), mlen(msg.len()), pk.as_ptr()) == 0 }
}

// ---- BLAKE2b (unkeyed, 256-bit), streaming ----

/// Streaming unkeyed BLAKE2b-256, as Habitat uses for package digests.
pub struct Blake2b256 {
    state: Box<ffi::crypto_generichash_state>,
}

impl Blake2b256 {
    pub fn new() -> Self {
        init();
        // SAFETY: the state is plain bytes that generichash_init fully initialises.
        let mut state: Box<ffi::crypto_generichash_state> = Box::new(unsafe { std::mem::zeroed() });
        unsafe { ffi::crypto_generichash_init(&mut *state, std::ptr::null(), 0, BLAKE2B_256_LEN) };
        Blake2b256 { state }
    }

    pub fn update(&mut self, data: &[u8]) {
        // SAFETY: state was initialised in new(); data is valid for its length.
        unsafe { ffi::crypto_generichash_update(&mut *self.state, data.as_ptr(), mlen(data.len())) };
    }

    pub fn finalize(mut self) -> [u8; BLAKE2B_256_LEN] {
        let mut out = [0u8; BLAKE2B_256_LEN];
        // SAFETY: out is the output length the state was initialised with.
        unsafe { ffi::crypto_generichash_final(&mut *self.state, out.as_mut_ptr(), BLAKE2B_256_LEN) };
        out
    }
}

impl Default for Blake2b256 {
    fn default() -> Self {
        Self::new()
    }
}

impl std::io::Write for Blake2b256 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn blake2b_256(data: &[u8]) -> [u8; BLAKE2B_256_LEN] {
    let mut h = Blake2b256::new();
    h.update(data);
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake2b_matches_habitat_signme_vector() {
        let digest = blake2b_256(b"foo\n");
        assert_eq!(hex::encode(digest), "20590a52c4f00588c500328b16d466c982a26fabaa5fa4dcc83052dd0a84f233");
    }

    #[test]
    fn streaming_blake2b_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut h = Blake2b256::new();
        for chunk in data.chunks(333) {
            h.update(chunk);
        }
        assert_eq!(h.finalize(), blake2b_256(&data));
    }

    #[test]
    fn secretbox_round_trip_and_tamper() {
        let key = SecretboxKey::random();
        let nonce = random_array();
        let mut ct = secretbox_seal(&key, &nonce, b"hello ring");
        assert_eq!(secretbox_open(&key, &nonce, &ct).unwrap(), b"hello ring");
        ct[3] ^= 1;
        assert!(matches!(secretbox_open(&key, &nonce, &ct), Err(CryptoError::Decrypt)));
        assert!(secretbox_open(&key, &nonce, &[1, 2, 3]).is_err());
    }

    #[test]
    fn box_and_sealed_box_round_trip() {
        let (apk, ask) = box_keypair();
        let (bpk, bsk) = box_keypair();
        assert_eq!(box_public_from_secret(&ask), apk);
        let nonce = random_array();
        let ct = box_seal(b"msg", &nonce, &bpk, &ask).unwrap();
        assert_eq!(box_open(&ct, &nonce, &apk, &bsk).unwrap(), b"msg");
        assert!(box_open(&ct, &nonce, &bpk, &bsk).is_err());
        let sealed = sealed_box_seal(b"anon", &bpk).unwrap();
        assert_eq!(sealed_box_open(&sealed, &bpk, &bsk).unwrap(), b"anon");
        assert!(sealed_box_open(&sealed[..10], &bpk, &bsk).is_err());
    }

    #[test]
    fn signatures_round_trip_and_reject_tampering() {
        let (pk, sk) = sign_keypair();
        assert_eq!(sign_public_from_secret(&sk), pk);
        let signed = sign_combined(b"digest", &sk);
        assert_eq!(signed.len(), 64 + 6);
        assert_eq!(sign_open(&signed, &pk).unwrap(), b"digest");
        let mut bad = signed.clone();
        bad[70 - 1] ^= 1;
        assert!(sign_open(&bad, &pk).is_err());
        assert!(sign_open(&signed[..10], &pk).is_err());
        let sig = sign_detached(b"m", &sk);
        assert!(verify_detached(&sig, b"m", &pk));
        assert!(!verify_detached(&sig, b"n", &pk));
    }

    #[test]
    fn secrets_never_print() {
        let key = SecretboxKey::from_array([7u8; 32]);
        assert_eq!(format!("{key:?}"), "Secret<32>(<redacted>)");
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
