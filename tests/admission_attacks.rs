//! Attacks on a real keyserver's join port (issue #13): a stolen CGC without the node key, a
//! replayed request, a request outside the time window, brute force from one address,
//! oversized and garbage requests, and kill -9 of the keyserver during claims.

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::fd::FromRawFd as _;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use support::keyserver::{self, Keyserver};
use warren::admission::request::{Op, RequestBody};
use warren::admission::wire::{self, ClaimBody, Descriptor, Kind};
use warren::admission::{Cgc, JoinString, Pin, base32};
use warren::crypto::keys::{BoxSecretKeyFile, KeyFile, KeyKind, SigPublicKey, SigSecretKey};
use warren::crypto::{KeyCache, sodium};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn create(ks: &Keyserver, node: &str) -> String {
    let out = ks.admit(&["token", "create", "--node", node]).ok().to_string();
    out.lines().last().unwrap().to_string()
}

/// A TCP connection to `target` from the loopback address `src` (so one test can be several
/// clients to the per-address limits).
fn connect_from(src: [u8; 4], target: &str) -> TcpStream {
    let target: std::net::SocketAddrV4 = target.parse().unwrap();
    // SAFETY: plain BSD socket calls on a descriptor this function owns until it is wrapped.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let addr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip) },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = addr(src, 0);
        assert_eq!(libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len), 0, "bind {src:?}");
        let remote = addr(target.ip().octets(), target.port());
        assert_eq!(libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len), 0, "connect");
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }
}

fn exchange(s: &mut TcpStream, kind: Kind, body: &[u8]) -> Option<(Kind, Vec<u8>)> {
    s.write_all(&wire::frame(kind, body)).ok()?;
    let mut h = [0u8; wire::HEADER_LEN];
    s.read_exact(&mut h).ok()?;
    let (kind, len) = wire::parse_header(&h).ok()?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((kind, body))
}

/// Connects from `src`, fetches the descriptor (checked against `pin`), sends `make(transport)`
/// as `kind`, and returns the reply.
fn send_sealed(
    ks: &Keyserver,
    src: [u8; 4],
    pin: &Pin,
    kind: Kind,
    make: impl FnOnce(&Descriptor) -> Vec<u8>,
) -> (Kind, Vec<u8>) {
    let mut s = connect_from(src, &ks.join);
    let (k, d) = exchange(&mut s, Kind::DescriptorRequest, &[]).expect("a descriptor");
    assert_eq!(k, Kind::Descriptor);
    let d = Descriptor::verify(&d, pin, now()).unwrap();
    exchange(&mut s, kind, &make(&d)).expect("a reply")
}

/// Makes a sealed body for a descriptor's transport key.
type SealFn<'a> = Box<dyn Fn(&Descriptor) -> Vec<u8> + 'a>;

fn error_text(reply: &(Kind, Vec<u8>)) -> String {
    assert_eq!(reply.0, Kind::Error, "expected a refusal");
    String::from_utf8_lossy(&reply.1).to_string()
}

/// An admitted node as the tests see it: its CGC, its keys, the keyserver's admission key.
struct Node {
    cgc: String,
    sig: SigSecretKey,
    admission: SigPublicKey,
}

fn admitted(ks: &Keyserver, dir: &Path, name: &str) -> Node {
    let join = create(ks, name);
    keyserver::join(&ks.join, &join, name, dir).ok();
    let cache = KeyCache::new(dir.join("keys"));
    let admission_name = format!("{}-admission", ks.ring);
    let admission =
        SigPublicKey::try_from(&cache.latest(KeyKind::SigPublic, &admission_name).unwrap()).unwrap();
    let cgc = std::fs::read_to_string(dir.join("data/admission/cgc")).unwrap();
    let parsed = Cgc::verify(&cgc, &admission).unwrap();
    let sig = SigSecretKey::try_from(&cache.get(KeyKind::SigSecret, &parsed.node_sig.id).unwrap()).unwrap();
    Node { cgc, sig, admission }
}

#[test]
fn a_stolen_cgc_without_the_node_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let node_dir = dir.path().join("n1");
    let node = admitted(&ks, &node_dir, "n1");
    // The thief has the CGC, the keyserver's address and public key, and keys of its own
    // under the very same names.
    let thief = dir.path().join("thief");
    std::fs::create_dir_all(thief.join("data/admission")).unwrap();
    for f in ["cgc", "keyserver.json"] {
        std::fs::copy(node_dir.join("data/admission").join(f), thief.join("data/admission").join(f)).unwrap();
    }
    let cache = KeyCache::new(thief.join("keys"));
    cache.write(&node.admission.to_file()).unwrap();
    let cgc = Cgc::verify(&node.cgc, &node.admission).unwrap();
    let (_, sig) = SigSecretKey::generate("n1").unwrap();
    let (_, boxk) = BoxSecretKeyFile::generate("n1-box").unwrap();
    cache
        .write(&KeyFile::new(KeyKind::SigSecret, cgc.node_sig.id.clone(), sig.to_file().bytes()).unwrap())
        .unwrap();
    cache
        .write(&KeyFile::new(KeyKind::BoxSecret, cgc.node_box.id.clone(), boxk.to_file().bytes()).unwrap())
        .unwrap();
    for op in ["fetch", "renew"] {
        let err = keyserver::node_cmd(&thief, &[op]).fails().to_string();
        assert!(err.contains("not signed by the key in its CGC"), "{op}: {err}");
    }
    assert!(
        KeyCache::new(thief.join("keys")).latest(KeyKind::SymSecret, "acme").is_err(),
        "the thief got no ring key"
    );
    keyserver::node_cmd(&node_dir, &["fetch"]).ok();
    let audit = std::fs::read_to_string(ks.data.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"request_refused\""), "{audit}");
}

#[test]
fn replayed_and_out_of_window_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let node = admitted(&ks, &dir.path().join("n1"), "n1");
    let pin = Pin::of(&node.admission.key);
    let (sig, cgc) = (&node.sig, node.cgc.clone());
    let sealed = |time: u64, nonce: &str| {
        let body = RequestBody {
            op: Op::Renew,
            cgc: cgc.clone(),
            time,
            nonce: nonce.into(),
            gossip: None,
            have: vec![],
        };
        move |d: &Descriptor| body.seal(sig, &d.transport)
    };
    let nonce = hex::encode(sodium::random_array::<24>());
    // One captured request, sent again byte for byte: the copy is refused.
    let captured = std::cell::RefCell::new(Vec::new());
    let first = send_sealed(&ks, [127, 0, 0, 1], &pin, Kind::Request, |d| {
        let bytes = sealed(now(), &nonce)(d);
        *captured.borrow_mut() = bytes.clone();
        bytes
    });
    assert_eq!(first.0, Kind::Response, "{}", String::from_utf8_lossy(&first.1));
    let replay = send_sealed(&ks, [127, 0, 0, 1], &pin, Kind::Request, |_| captured.borrow().clone());
    assert!(error_text(&replay).contains("replayed"), "{}", error_text(&replay));
    // Also after a restart of the keyserver: the nonce window is in its state.
    let mut ks = ks;
    ks.kill9();
    ks.spawn();
    let replay = send_sealed(&ks, [127, 0, 0, 1], &pin, Kind::Request, |_| captured.borrow().clone());
    assert!(error_text(&replay).contains("replayed"), "{}", error_text(&replay));
    for skewed in [now() - 400, now() + 400] {
        let fresh = hex::encode(sodium::random_array::<24>());
        let r = send_sealed(&ks, [127, 0, 0, 1], &pin, Kind::Request, sealed(skewed, &fresh));
        assert!(error_text(&r).contains("away from the keyserver's clock"), "{}", error_text(&r));
    }
}

/// Wrong secrets from one address spend its budget and are then refused unopened; a correct
/// claim from another address still succeeds (no lockout of the token).
#[test]
fn brute_force_is_limited_per_address_without_locking_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let join = create(&ks, "n1");
    let j = JoinString::parse(&join).unwrap();
    let (_, sig) = SigSecretKey::generate("n1").unwrap();
    let (boxp, _) = BoxSecretKeyFile::generate("n1-box").unwrap();
    let mut replies = Vec::new();
    for _ in 0..9 {
        let r = send_sealed(&ks, [127, 0, 0, 2], &j.pin, Kind::Claim, |d| {
            ClaimBody {
                token: j.id.to_string(),
                secret: base32::encode(&sodium::random_array::<20>()),
                node: "n1".into(),
                node_sig: wire::key_text(&sig.id, &sig.public().key),
                node_box: wire::key_text(&boxp.id, &boxp.key),
                pop: base64::engine::general_purpose::STANDARD.encode([0u8; 64]),
                nonce: "ab".repeat(24),
            }
            .seal(&d.transport)
        });
        replies.push(error_text(&r));
    }
    let wrong = replies.iter().filter(|r| r.contains("wrong secret")).count();
    let limited = replies.iter().filter(|r| r.contains("too many failed attempts from 127.0.0.2")).count();
    assert_eq!((wrong, limited), (5, 4), "{replies:?}");
    // The real node, from another address, is admitted at once.
    let out = keyserver::join(&ks.join, &join, "n1", &dir.path().join("n1")).ok().to_string();
    assert!(out.contains("Admitted n1"), "{out}");
    let list = ks.admit(&["token", "list"]).ok().to_string();
    assert!(list.lines().any(|l| l.contains("claimed") && l.contains(" 5 ")), "{list}");
    assert!(ks.log_text().contains("spent its failure budget"));
}

#[test]
fn oversized_and_garbage_requests_are_refused_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let node_dir = dir.path().join("n1");
    let node = admitted(&ks, &node_dir, "n1");
    let pin = Pin::of(&node.admission.key);
    let mut rng = support::rng::Rng::new(1313);
    // Each from its own address, so the failure budget does not hide what is behind it.
    for (i, n) in [0usize, 1, 48, 300, 5000, 64 * 1024].into_iter().enumerate() {
        let mut s = connect_from([127, 0, 1, i as u8 + 1], &ks.join);
        let r = exchange(&mut s, Kind::Request, &rng.bytes(n));
        assert!(r.is_none_or(|(k, _)| k == Kind::Error), "garbage of {n} bytes");
    }
    let mut s = connect_from([127, 0, 2, 1], &ks.join);
    let _ = s.write_all(&[6, 0xff, 0xff, 0xff, 0xff]);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "an oversized header gets the connection closed");
    // Well sealed but not a request: junk JSON, a wrong domain, a huge CGC, a bad nonce.
    let junk: Vec<SealFn> = vec![
        Box::new(|d| sodium::sealed_box_seal(b"{\"op\": 1}", &d.transport.key).unwrap()),
        Box::new(|d| {
            sodium::sealed_box_seal(
                &sodium::sign_combined(b"warren-admit-v1/claim\n{}", &node.sig.key),
                &d.transport.key,
            )
            .unwrap()
        }),
        Box::new(|d| {
            let body = RequestBody {
                op: Op::Keys,
                cgc: "x".repeat(60_000),
                time: now(),
                nonce: "ab".repeat(24),
                gossip: None,
                have: vec![],
            };
            body.seal(&node.sig, &d.transport)
        }),
        Box::new(|d| {
            let body = RequestBody {
                op: Op::Keys,
                cgc: node.cgc.clone(),
                time: now(),
                nonce: "zz".into(),
                gossip: None,
                have: vec![],
            };
            body.seal(&node.sig, &d.transport)
        }),
        Box::new(|d| {
            let have = (0..1000).map(|i| format!("acme-{i}")).collect();
            let body = RequestBody {
                op: Op::Keys,
                cgc: node.cgc.clone(),
                time: now(),
                nonce: "cd".repeat(24),
                gossip: None,
                have,
            };
            body.seal(&node.sig, &d.transport)
        }),
    ];
    for (i, make) in junk.iter().enumerate() {
        let r = send_sealed(&ks, [127, 0, 3, i as u8 + 1], &pin, Kind::Request, make);
        let text = error_text(&r);
        assert!(text.contains("refused") || text.contains("not valid"), "{i}: {text}");
    }
    keyserver::node_cmd(&node_dir, &["fetch"]).ok();
    assert!(!ks.log_text().contains("panicked"));
}

/// A node of the kill -9 test: its join string and keys, kept across the keyserver's restart.
struct Claimer {
    name: String,
    join: JoinString,
    sig: SigSecretKey,
    boxk: BoxSecretKeyFile,
}

/// What one claim came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The CGC the keyserver delivered.
    Admitted(String),
    /// Sent, then the connection died before a reply: the kill hit this claim.
    Unanswered,
    /// The keyserver was not there to send it to.
    NotSent,
}

/// One claim over the real join port; `in_flight` counts claims sent and not yet answered.
fn claim(join_addr: &str, c: &Claimer, in_flight: &std::sync::atomic::AtomicUsize) -> Outcome {
    use std::sync::atomic::Ordering::SeqCst;
    let Ok(mut s) = TcpStream::connect(join_addr) else { return Outcome::NotSent };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let Some((Kind::Descriptor, d)) = exchange(&mut s, Kind::DescriptorRequest, &[]) else {
        return Outcome::NotSent;
    };
    let d = Descriptor::verify(&d, &c.join.pin, now()).unwrap();
    let nonce = hex::encode(sodium::random_array::<24>());
    let digest = warren::admission::Claim::pop_digest(
        &c.join.id,
        &c.name,
        &c.sig.public(),
        &c.boxk.public(),
        &c.join.pin,
    );
    let body = ClaimBody {
        token: c.join.id.to_string(),
        secret: base32::encode(&c.join.secret[..]),
        node: c.name.clone(),
        node_sig: wire::key_text(&c.sig.id, &c.sig.public().key),
        node_box: wire::key_text(&c.boxk.id, &c.boxk.public().key),
        pop: base64::engine::general_purpose::STANDARD.encode(sodium::sign_detached(&digest, &c.sig.key)),
        nonce: nonce.clone(),
    };
    if s.write_all(&wire::frame(Kind::Claim, &body.seal(&d.transport))).is_err() {
        return Outcome::NotSent;
    }
    in_flight.fetch_add(1, SeqCst);
    let mut h = [0u8; wire::HEADER_LEN];
    let reply = s.read_exact(&mut h).ok().and_then(|()| {
        let (kind, len) = wire::parse_header(&h).ok()?;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).ok()?;
        Some((kind, body))
    });
    in_flight.fetch_sub(1, SeqCst);
    match reply {
        None => Outcome::Unanswered,
        Some((Kind::Claimed, body)) => {
            let r = warren::admission::wire::ClaimedBody::open(
                &body,
                &c.boxk.public().key,
                &c.boxk.key,
                &d.admission,
                &nonce,
            )
            .unwrap();
            Outcome::Admitted(r.cgc)
        }
        Some((kind, body)) => panic!("{}: {kind:?} {}", c.name, String::from_utf8_lossy(&body)),
    }
}

/// Every claimer through `claim`, `threads` at a time; outcomes by index.
fn claim_all(
    join_addr: &str,
    claimers: &[Claimer],
    threads: usize,
    in_flight: &std::sync::atomic::AtomicUsize,
) -> Vec<Outcome> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(vec![Outcome::NotSent; claimers.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(c) = claimers.get(i) else { return };
                    let o = claim(join_addr, c, in_flight);
                    out.lock().unwrap()[i] = o;
                }
            });
        }
    });
    out.into_inner().unwrap()
}

/// kill -9 of the keyserver while many claims are in flight (sent, not answered): its state
/// file and audit log are whole, and after the restart every node's retry with the same keys
/// is admitted; a node that had its CGC gets the very same one back.
#[test]
fn keyserver_kill_9_during_claims_leaves_nothing_half_written() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let dir = tempfile::tempdir().unwrap();
    let mut ks = Keyserver::start(dir.path(), "acme");
    let claimers: Vec<Claimer> = (0..48)
        .map(|i| {
            let name = format!("n{i}");
            let join = JoinString::parse(&create(&ks, &name)).unwrap();
            let (_, sig) = SigSecretKey::generate(&name).unwrap();
            let (_, boxk) = BoxSecretKeyFile::generate(&format!("{name}-box")).unwrap();
            Claimer { name, join, sig, boxk }
        })
        .collect();
    let in_flight = AtomicUsize::new(0);
    let join_addr = ks.join.clone();
    let outcomes = std::thread::scope(|s| {
        let run = s.spawn(|| claim_all(&join_addr, &claimers, 16, &in_flight));
        // Kill once claims are being answered and several are waiting for their reply.
        let ks_log = dir.path().join("keyserver.log");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let admitted =
                std::fs::read_to_string(&ks_log).unwrap_or_default().matches("node admitted").count();
            if admitted >= 4 && in_flight.load(SeqCst) >= 4 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "claims never got going");
            assert!(!run.is_finished(), "every claim was answered before the kill: use more");
            std::thread::sleep(Duration::from_millis(1));
        }
        ks.kill9();
        run.join().unwrap()
    });
    let unanswered = outcomes.iter().filter(|o| **o == Outcome::Unanswered).count();
    let admitted_before = outcomes.iter().filter(|o| matches!(o, Outcome::Admitted(_))).count();
    assert!(unanswered >= 1, "the kill hit claims in flight: {outcomes:?}");
    assert!(admitted_before >= 1, "{outcomes:?}");

    let state = std::fs::read(ks.data.join("state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&state).expect("state.json is whole");
    assert_eq!(v["cluster"], "acme");
    let audit = std::fs::read_to_string(ks.data.join("audit.jsonl")).unwrap();
    for line in audit.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("{e}: half a line {line:?}"));
    }

    ks.spawn();
    let retried = claim_all(&ks.join, &claimers, 4, &in_flight);
    for (i, (before, after)) in outcomes.iter().zip(&retried).enumerate() {
        let Outcome::Admitted(cgc) = after else {
            panic!("{}: the retry was not admitted: {after:?}", claimers[i].name)
        };
        if let Outcome::Admitted(first) = before {
            assert_eq!(first, cgc, "{}: a retry gets the same CGC", claimers[i].name);
        }
        let parsed = Cgc::verify(cgc, &admission_key(&ks)).unwrap();
        assert_eq!(parsed.node_sig, claimers[i].sig.public());
    }
    let list = ks.admit(&["node", "list"]).ok().to_string();
    assert_eq!(list.lines().filter(|l| l.contains("active")).count(), claimers.len(), "{list}");
}

/// The keyserver's admission public key, from its own key cache.
fn admission_key(ks: &Keyserver) -> SigPublicKey {
    let cache = KeyCache::new(ks.data.join("keys"));
    SigPublicKey::try_from(&cache.latest(KeyKind::SigPublic, &format!("{}-admission", ks.ring)).unwrap())
        .unwrap()
}
