//! Entry points for the fuzz targets in `fuzz/` and for `tests/fuzz_corpus.rs`, which replays
//! the kept corpora through the same functions under plain `cargo test`. Each takes arbitrary
//! bytes, feeds them to the real parser (or a real `RingCore`) and panics only when an
//! invariant breaks; a bad input must come back as an error, never a panic.
//!
//! The ring targets seal each input with a fixed ring key before the core sees it, so the
//! fuzzer explores what lies behind the MAC; `ring_wire` hands the bytes over raw to test
//! the envelope itself (its seeds are packets sealed with the same fixed key).

use std::io::{BufReader, Cursor};
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use prost::Message as _;

use crate::config::SupConfig;
use crate::crypto::boxes::BoxMessage;
use crate::crypto::hart::{self, HartHeader};
use crate::crypto::{BoxPublicKey, BoxSecretKeyFile, KeyFile, KeyId, KeyKind, RingKey, SigPublicKey};
use crate::crypto::{SigSecretKey, keys::MAX_KEY_FILE_LEN};
use crate::plugins::Manifest;
use crate::plugins::manifest::valid_plugin_name;
use crate::ring::wire::{MAX_DATAGRAM, MAX_FRAME};
use crate::ring::{
    CoreParams, Ident, Keyring, MemberId, Output, RingConfig, RingCore, Rumor, RumorStore, proto,
};

/// One fuzz target: arbitrary bytes in, a panic only when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its `fuzz/fuzz_targets/NAME.rs` and `fuzz/corpus/NAME/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("ring_wire", ring_wire),
    ("ring_datagram", ring_datagram),
    ("ring_pushpull", ring_pushpull),
    ("rumor", rumor),
    ("key_file", key_file),
    ("box_message", box_message),
    ("hart_header", hart_header),
    ("plugin_manifest", plugin_manifest),
    ("sup_config", sup_config),
    ("join_request", join_request),
];

/// Splits a ring input into several packets, delivered in order with the clock moving on
/// between them (so sequences such as suspect-then-confirm are reachable).
pub const PACKET_SEPARATOR: &[u8] = b"\n~next~\n";
const MAX_PACKETS: usize = 8;

/// The fixed ring key every ring target seals with (and `ring_wire`'s seeds were sealed with).
pub fn ring_key() -> RingKey {
    let id = KeyId::new("fuzz", "20260101000000").expect("a valid name-revision");
    let file = KeyFile::new(KeyKind::SymSecret, id, &[0x5a; 32]).expect("a ring key is 32 bytes");
    RingKey::try_from(&file).expect("a SYM-SEC-1 file")
}

/// The core under test: member 1, which already knows member 2 (the fuzzed packets' likely
/// sender) from one push-pull, so acks, suspicions and rumors about a real peer are in play.
pub fn ring_core(keyring: &Keyring) -> RingCore {
    let mut core = RingCore::new(CoreParams {
        id: MemberId([1; 16]),
        addr: member_addr(1),
        generation: 1,
        persistent: false,
        config: RingConfig::default(),
        keyring: keyring.clone(),
        peers: vec![member_addr(2)],
        seed: 1,
        http_port: 0,
        restored: None,
    });
    core.start(Duration::ZERO);
    let peer = Ident { id: MemberId([2; 16]), addr: member_addr(2), generation: 1, persistent: false };
    let hello = proto::PushPull { from: Some(peer.to_proto()), ..Default::default() };
    let _ = core.handle_pushpull(Duration::from_millis(1), &keyring.seal(&hello.encode_to_vec()));
    check_outputs(&mut core, keyring);
    core
}

pub fn member_addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i], 9638))
}

fn packets(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() + 1 < MAX_PACKETS {
        match rest.windows(PACKET_SEPARATOR.len()).position(|w| w == PACKET_SEPARATOR) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + PACKET_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

/// What the core sends must be ours: sealed with the ring key and within the datagram size.
fn check_outputs(core: &mut RingCore, keyring: &Keyring) {
    for out in core.take_outputs() {
        if let Output::Datagram { bytes, .. } = out {
            assert!(bytes.len() <= MAX_DATAGRAM, "an output datagram of {} bytes", bytes.len());
            keyring.open(&bytes, MAX_DATAGRAM).expect("the core's own datagram opens with its key");
        }
    }
}

/// A keyring of `ring_key()`, built once: it is never changed (each core gets its own clone).
static KEYRING: LazyLock<Keyring> = LazyLock::new(|| Keyring::with_primary(ring_key()));

fn drive(data: &[u8], deliver: impl Fn(&mut RingCore, Duration, &[u8], &Keyring)) {
    let keyring = &*KEYRING;
    let mut core = ring_core(keyring);
    let mut now = Duration::from_millis(2);
    for packet in packets(data) {
        deliver(&mut core, now, packet, keyring);
        check_outputs(&mut core, keyring);
        // Past a probe interval: pending probes time out, suspicions advance.
        now += Duration::from_millis(700);
        core.tick(now);
        check_outputs(&mut core, keyring);
    }
}

/// Raw bytes on the wire of an encrypted ring: the envelope, key lookup and MAC themselves.
pub fn ring_wire(data: &[u8]) {
    let plain = Keyring::none();
    if let Ok(payload) = plain.open(data, MAX_FRAME) {
        assert_eq!(plain.open(&plain.seal(&payload), MAX_FRAME).as_deref(), Ok(&payload[..]));
    }
    drive(data, |core, now, packet, _| {
        core.handle_datagram(now, packet);
        let _ = core.handle_pushpull(now, packet);
    });
}

/// Authenticated SWIM datagrams: each packet is sealed with the ring key first.
pub fn ring_datagram(data: &[u8]) {
    drive(data, |core, now, packet, keyring| core.handle_datagram(now, &keyring.seal(packet)));
}

/// Authenticated push-pull frames (full membership and rumor state).
pub fn ring_pushpull(data: &[u8]) {
    drive(data, |core, now, packet, keyring| {
        let _ = core.handle_pushpull(now, &keyring.seal(packet));
    });
}

/// A rumor payload: decode, convert, merge into a store, and arrive at a core in a push-pull.
pub fn rumor(data: &[u8]) {
    let Ok(p) = Rumor::decode(data) else { return };
    let reencoded = p.encode_to_vec();
    assert_eq!(Rumor::decode(&reencoded).ok().as_ref(), Some(&p), "a decoded rumor re-decodes equal");
    let Ok(Some(r)) = Rumor::from_proto(p.clone()) else { return };
    assert_eq!(r.to_proto(), p, "the store's form converts back unchanged");
    let mut store = RumorStore::new();
    if let Ok(Some(stored)) = store.merge(r.clone()) {
        assert_eq!(store.get(&stored.key()), Some(&stored));
        assert!(!store.is_news(&stored), "the same rumor twice is not news");
    }
    let peer = Ident { id: MemberId([2; 16]), addr: member_addr(2), generation: 1, persistent: false };
    let frame = proto::PushPull { from: Some(peer.to_proto()), rumors: vec![p], ..Default::default() };
    ring_pushpull(&frame.encode_to_vec());
}

/// A key file of any kind, then the typed key it claims to be.
pub fn key_file(data: &[u8]) {
    let Ok(file) = KeyFile::parse(data) else { return };
    assert!(data.len() <= MAX_KEY_FILE_LEN);
    let again = KeyFile::parse(file.to_text().as_bytes()).expect("a parsed key file re-parses");
    assert_eq!((again.kind, &again.id, again.bytes()), (file.kind, &file.id, file.bytes()));
    let typed = match file.kind {
        KeyKind::SymSecret => RingKey::try_from(&file).map(|_| ()),
        KeyKind::SigPublic => SigPublicKey::try_from(&file).map(|_| ()),
        KeyKind::SigSecret => SigSecretKey::try_from(&file).map(|_| ()),
        KeyKind::BoxPublic => BoxPublicKey::try_from(&file).map(|_| ()),
        KeyKind::BoxSecret => BoxSecretKeyFile::try_from(&file).map(|_| ()),
    };
    assert!(typed.is_ok(), "a {:?} file converts to its key type", file.kind);
}

// Habitat's own test keys (components/core/tests/fixtures/keys), so the BOX-1 seeds from its
// unit tests decrypt and mutations reach the opening code.
const BOX_SENDER_PUB: &str =
    "BOX-PUB-1\nruby-rhod-20200813204159\n\njJZxtCxhf92SLWWvMgO8WgN/W0uATXxtzOyaK6Eo4Rg=";
const BOX_RECEIVER_SEC: &str = "BOX-SEC-1\nservice-key-valid.default@acme-20160509181736\n\nmP7GwFX7LmaroUp+8f+1PBqcT4M/U6UDITzzBq5t/D0=";
const ANON_RECEIVER_SEC: &str =
    "BOX-SEC-1\nfhloston-paradise-20200813211603\n\nKOdIzCCQ7QizpyHDm2FonhwIP671t89bMT4lHj943Yc=";
const HART_SIGNER_PUB: &str =
    "SIG-PUB-1\nhappyhumans-20160424223347\n\nYFt55lgI3l/vcTEp/7IFGIXgnrLr5bWMADbIvuHKkoY=";

fn fixture<T: for<'a> TryFrom<&'a KeyFile>>(text: &str) -> T {
    let file = KeyFile::parse(text.as_bytes()).expect("a fixture key parses");
    T::try_from(&file).unwrap_or_else(|_| panic!("fixture key {} has its kind", file.id))
}

/// BOX-1 and ANONYMOUS-BOX-1 messages: parse, print back, open with the fixture keys.
pub fn box_message(data: &[u8]) {
    let Ok(msg) = BoxMessage::parse(data) else { return };
    assert!(BoxMessage::is_encrypted(data), "what parses is recognised as a box");
    let text = msg.to_text();
    assert_eq!(BoxMessage::parse(text.as_bytes()).ok().as_ref(), Some(&msg), "a box re-parses equal");
    assert_eq!(msg.needed_keys().len(), if msg.sender().is_some() { 2 } else { 1 });
    let sender: BoxPublicKey = fixture(BOX_SENDER_PUB);
    let receiver: BoxSecretKeyFile =
        fixture(if msg.sender().is_some() { BOX_RECEIVER_SEC } else { ANON_RECEIVER_SEC });
    let _ = msg.decrypt(Some(&sender), &receiver);
}

/// A HART-1 header, then the signature and payload digest check against the fixture signer.
pub fn hart_header(data: &[u8]) {
    let mut r = BufReader::new(Cursor::new(data));
    let Ok(header) = HartHeader::read(&mut r) else { return };
    let bytes = header.to_bytes();
    assert_eq!(bytes.len(), HartHeader::encoded_len(&header.signer));
    let again = HartHeader::read(&mut Cursor::new(&bytes)).expect("a written header reads back");
    assert_eq!(again, header);
    let key: SigPublicKey = fixture(HART_SIGNER_PUB);
    if let Ok(expected) = header.signed_payload_digest(&key)
        && let Ok((computed, _)) = hart::hash_stream(&mut r, &mut |_| {})
    {
        let _ = hart::check_digest(&expected, &computed);
    }
}

/// A plugin manifest: the TOML itself, or a wasm component carrying it in a custom section.
pub fn plugin_manifest(data: &[u8]) {
    let parsed =
        if data.starts_with(b"\0asm") { Manifest::from_component(data) } else { Manifest::parse(data) };
    if let Ok(m) = parsed {
        assert!(valid_plugin_name(&m.name), "an accepted manifest has a valid name");
    }
}

/// `sup.toml`: parse, then the checks run on every load (warnings, references).
pub fn sup_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = SupConfig::parse(text, "fuzz") else { return };
    let _ = cfg.warnings();
    let _ = cfg.references();
    let _ = cfg.data_path();
}

/// The keyserver's join port behind its sealed box: the input is what a node seals (a signed
/// request, or a claim), sealed here to a fixed transport key so the fuzzer reaches the
/// parsers; a request that parses goes through the state machine's checks.
pub fn join_request(data: &[u8]) {
    use crate::admission::keyserver::{Keyserver, OsRng, State};
    use crate::admission::request::RequestBody;
    use crate::admission::wire::{self, ClaimBody};
    static KEYS: LazyLock<(BoxPublicKey, BoxSecretKeyFile, SigSecretKey)> = LazyLock::new(|| {
        let (p, s) = BoxSecretKeyFile::generate("fuzz-keyserver").expect("a box key");
        let (_, a) = SigSecretKey::generate("fuzz-admission").expect("a sig key");
        (p, s, a)
    });
    let (tp, t, admission) = &*KEYS;
    if let Some(h) = data.get(..wire::HEADER_LEN) {
        let _ = wire::parse_header(h.try_into().expect("5 bytes"));
    }
    let Ok(sealed) = crate::crypto::sodium::sealed_box_seal(data, &tp.key) else { return };
    let _ = ClaimBody::open(&sealed, &tp.key, &t.key, None);
    if let Ok((body, signed)) = RequestBody::open(&sealed, &tp.key, &t.key) {
        let mut ks = Keyserver::new(State::new("fuzz"), admission.clone(), OsRng);
        let r = ks.authorize(body.time, &body, &signed, None);
        assert!(r.is_err(), "no node is admitted, so nothing may pass");
    }
}
