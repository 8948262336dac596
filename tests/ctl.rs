//! The ctl gateway against real `warren sup run` processes: authentication, the plaintext
//! policy, slow and hostile clients, what crosses the wire, and Habitat's own .proto files.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::cli::{self, Run};
use support::fixtures::interop_dir;
use support::ring::{args, fast_timings, start_ring};
use support::rng::Rng;
use support::sup::Sup;
use support::wait::{wait_for, wait_until};
use warren::ctl::proto::{self, ErrCode};
use warren::ctl::{CtlClient, CtlRequest, CtlSecret, Frame, HandshakeKind, Txn};

/// `warren ARGS --remote-sup ADDR` with only the given environment (no data path secret, no
/// cli.toml unless `env` sets them).
fn ctl_cli(dir: &std::path::Path, a: &[&str], remote: &str, env: &[(&str, &str)]) -> Run {
    let mut cmd = cli::command();
    cmd.args(a)
        .args(["--remote-sup", remote])
        .env("WARREN_DATA_PATH", dir.join("client-data"))
        .env("WARREN_CLI_CONFIG", dir.join("client-cli.toml"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cli::run(&mut cmd, None)
}

fn ping() -> CtlRequest {
    CtlRequest::Ping(proto::CtlPing { payload: Some(b"ping".to_vec()) })
}

fn client(sup: &Sup, kind: HandshakeKind) -> CtlClient {
    CtlClient::new(&sup.ctl, CtlSecret::new(&sup.ctl_secret()).unwrap()).with_handshake(kind)
}

#[test]
fn the_right_secret_is_served_and_a_wrong_missing_or_empty_one_executes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sups = start_ring(dir.path(), 91, 2, &fast_timings(), &[]);
    let target = sups[1].member_id();
    wait_until(Duration::from_secs(30), "both alive", || {
        sups[0].health().get(&target).map(String::as_str) == Some("Alive")
    });
    let secret = sups[0].ctl_secret();
    assert_eq!(secret.len(), 88, "64 random bytes, base64");
    let remote = sups[0].ctl.clone();
    let remote = remote.as_str();

    let out = ctl_cli(dir.path(), &["ctl", "ping"], remote, &[("WARREN_CTL_SECRET", &secret)]);
    assert!(out.ok().starts_with("pong from "), "{}", out.stdout);
    // --count: one session (one connection, one handshake) for every ping.
    let (conns, handshakes) =
        (sups[0].metric("warren_ctl_connections_total"), sups[0].metric("warren_ctl_noise_handshakes_total"));
    let pings = ["ctl", "ping", "--count", "3", "--interval-ms", "10", "--json"];
    let out = ctl_cli(dir.path(), &pings, remote, &[("WARREN_CTL_SECRET", &secret)]);
    let seqs: Vec<u64> = out
        .ok()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3], "{}", out.stdout);
    assert_eq!(sups[0].metric("warren_ctl_connections_total"), conns + 1);
    assert_eq!(sups[0].metric("warren_ctl_noise_handshakes_total"), handshakes + 1);
    let out =
        ctl_cli(dir.path(), &["ring", "key", "list", "--json"], remote, &[("WARREN_CTL_SECRET", &secret)]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(out.ok()).unwrap(), serde_json::json!([]));

    // Wrong: refused at the handshake.
    let depart = ["sup", "depart", target.as_str()];
    let err = ctl_cli(dir.path(), &depart, remote, &[("WARREN_CTL_SECRET", "guess-QX7")]).fails().to_string();
    assert!(err.contains("secret key mismatch"), "{err}");
    // Missing, and empty (env and cli.toml): a clear error naming where the client looked.
    std::fs::write(dir.path().join("client-cli.toml"), "ctl_secret = \"\"\n").unwrap();
    for env in [&[][..], &[("WARREN_CTL_SECRET", "")][..]] {
        let err = ctl_cli(dir.path(), &depart, remote, env).fails().to_string();
        assert!(err.contains("no ctl secret for"), "{err}");
        assert!(
            err.contains("WARREN_CTL_SECRET")
                && err.contains("client-cli.toml")
                && err.contains("CTL_SECRET"),
            "{err}"
        );
    }
    // Nothing was departed: a later request is served and the member is still alive and running.
    ctl_cli(dir.path(), &["ctl", "ping"], remote, &[("WARREN_CTL_SECRET", &secret)]).ok();
    assert_eq!(sups[0].health().get(&target).map(String::as_str), Some("Alive"));
    assert!(!sups[1].exited());
    let log = std::fs::read_to_string(&sups[0].log).unwrap();
    assert!(
        log.contains("handshake refused") && !log.contains("guess-QX7"),
        "refusals logged, never what was sent"
    );
    assert!(!log.contains(&secret), "the secret is never logged");
    assert_eq!(
        sups[0].metric("warren_ctl_auth_failures_total"),
        1,
        "only the wrong secret reached the server"
    );

    // The right secret from a per-supervisor cli.toml table: the depart is done.
    std::fs::write(
        dir.path().join("client-cli.toml"),
        format!("ctl_secret = \"wrong\"\n[remote.\"{remote}\"]\nctl_secret = \"{secret}\"\n"),
    )
    .unwrap();
    let out = ctl_cli(dir.path(), &depart, remote, &[]);
    assert!(out.ok().contains("announced to the ring"), "{}", out.stdout);
    wait_until(Duration::from_secs(30), "the departed member exits", || sups[1].exited());
}

#[test]
fn plaintext_handshakes_follow_ctl_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 93, vec![], vec![]);
    // Default (loopback): an unmodified Habitat client on this host is served.
    let pong: proto::CtlPong = client(&sup, HandshakeKind::Plaintext).call_for(&ping(), |_| {}).unwrap();
    assert_eq!(pong.payload.as_deref(), Some(&b"ping"[..]));
    let wrong =
        CtlClient::new(&sup.ctl, CtlSecret::new("nope").unwrap()).with_handshake(HandshakeKind::Plaintext);
    let e = wrong.call(&ping(), |_| {}).unwrap_err();
    assert_eq!(e.net_err().map(|n| n.err_code()), Some(ErrCode::Unauthorized), "{e}");
    drop(sup);

    let config = dir.path().join("sup.toml");
    std::fs::write(&config, "ctl_plaintext = \"deny\"\n").unwrap();
    let sup = Sup::start(dir.path(), 94, args(&["--config", config.to_str().unwrap()]), vec![]);
    let e = client(&sup, HandshakeKind::Plaintext).call(&ping(), |_| {}).unwrap_err();
    assert_eq!(e.net_err().map(|n| n.err_code()), Some(ErrCode::Unauthorized), "{e}");
    assert!(e.to_string().contains("ctl_plaintext"), "{e}");
    // warren's own handshake is unaffected.
    client(&sup, HandshakeKind::Noise).call_for::<proto::CtlPong>(&ping(), |_| {}).unwrap();
}

/// This host's address on its default route: a peer address that is not loopback.
fn non_loopback_ip() -> String {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // connect() on UDP only picks the route; nothing is sent.
    s.connect("203.0.113.1:9").expect("this test needs a non-loopback address with a route");
    let ip = s.local_addr().unwrap().ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "no non-loopback address: {ip}");
    ip.to_string()
}

#[test]
fn plaintext_is_refused_from_a_non_loopback_peer_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = non_loopback_ip();
    let at = |sup: &Sup, host: &str| format!("{host}:{}", sup.ctl.rsplit_once(':').unwrap().1);
    let with = |sup: &Sup, host: &str, kind| {
        CtlClient::new(&at(sup, host), CtlSecret::new(&sup.ctl_secret()).unwrap()).with_handshake(kind)
    };
    // Listening on every address, default policy (loopback).
    let sup = Sup::start_on(dir.path(), "any", "0.0.0.0:0", "127.0.0.1:0", vec![], vec![]);
    let e = with(&sup, &outside, HandshakeKind::Plaintext).call(&ping(), |_| {}).unwrap_err();
    assert_eq!(e.net_err().map(|n| n.err_code()), Some(ErrCode::Unauthorized), "{e}");
    assert_eq!(sup.metric("warren_ctl_plaintext_refused_total"), 1);
    with(&sup, "127.0.0.1", HandshakeKind::Plaintext).call_for::<proto::CtlPong>(&ping(), |_| {}).unwrap();
    with(&sup, &outside, HandshakeKind::Noise).call_for::<proto::CtlPong>(&ping(), |_| {}).unwrap();
    drop(sup);
    // "allow": served from anywhere.
    let config = dir.path().join("allow.toml");
    std::fs::write(&config, "ctl_plaintext = \"allow\"\n").unwrap();
    let a = args(&["--config", config.to_str().unwrap()]);
    let sup = Sup::start_on(dir.path(), "allow", "0.0.0.0:0", "127.0.0.1:0", a, vec![]);
    with(&sup, &outside, HandshakeKind::Plaintext).call_for::<proto::CtlPong>(&ping(), |_| {}).unwrap();
}

#[test]
fn a_ctl_secret_in_sup_toml_overrides_the_file_and_rotates_through_a_file_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (plugins, secrets) = (dir.path().join("plugins"), dir.path().join("secrets"));
    std::fs::create_dir_all(&secrets).unwrap();
    support::plugins::install(&plugins, &["file"]);
    let secret_file = secrets.join("ctl");
    support::files::write_atomic(&secret_file, "first-secret\n");
    let config = dir.path().join("sup.toml");
    std::fs::write(
        &config,
        format!(
            "ctl_secret = \"FILE:{}\"\nplugin_trust = \"off\"\n[plugins.file]\nread_paths = [\"{}\"]\n",
            secret_file.display(),
            secrets.display()
        ),
    )
    .unwrap();
    let a = args(&["--config", config.to_str().unwrap(), "--plugin-path", plugins.to_str().unwrap()]);
    let sup = Sup::start(dir.path(), 95, a, vec![]);
    let with = |s: &str| CtlClient::new(&sup.ctl, CtlSecret::new(s).unwrap());
    wait_until(Duration::from_secs(20), "the first secret works", || {
        with("first-secret").call(&ping(), |_| {}).is_ok()
    });
    assert!(!sup.data.join("CTL_SECRET").exists(), "no file secret when sup.toml names one");
    support::files::write_atomic(&secret_file, "second-secret\n");
    wait_until(Duration::from_secs(30), "the rotated secret works", || {
        with("second-secret").call(&ping(), |_| {}).is_ok()
    });
    assert!(with("first-secret").call(&ping(), |_| {}).is_err(), "the old secret is refused");
}

#[test]
fn a_replaced_ctl_secret_file_is_used_without_a_restart_and_an_empty_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut sup = Sup::start(dir.path(), 96, args(&[]), vec![]);
    let addr = sup.ctl.clone();
    let with = |s: &str| CtlClient::new(&addr, CtlSecret::new(s).unwrap());
    let old = wait_for(Duration::from_secs(20), || {
        let old = std::fs::read_to_string(sup.data.join("CTL_SECRET")).ok()?;
        with(&old).call(&ping(), |_| {}).is_ok().then_some(old)
    })
    .expect("the file's secret works");
    let file = sup.data.join("CTL_SECRET");

    // An empty file (a botched write) keeps the current secret.
    support::files::write_atomic(&file, "");
    wait_until(Duration::from_secs(30), "the empty file is reported", || {
        std::fs::read_to_string(&sup.log).unwrap().contains("cannot read the ctl secret file")
    });
    assert!(with(&old).call(&ping(), |_| {}).is_ok(), "the current secret still works");

    // Replaced the way a key fetch does it (a new file renamed over the old one).
    let new = warren::ctl::secret::generate().to_string();
    support::files::write_atomic(&file, &new);
    wait_until(Duration::from_secs(30), "the new secret works", || with(&new).call(&ping(), |_| {}).is_ok());
    let err = with(&old).call(&ping(), |_| {}).unwrap_err().to_string();
    assert!(err.contains("secret key mismatch"), "the old secret is refused: {err}");
    assert!(!sup.exited(), "served without a restart");
    let log = std::fs::read_to_string(&sup.log).unwrap();
    assert!(log.contains("ctl secret rotated"), "the rotation is logged");
    assert!(!log.contains(&old) && !log.contains(&new), "neither secret is logged");
}

#[test]
fn a_slow_client_is_cut_off_at_the_handshake_timeout_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 96, args(&["--ctl-handshake-timeout", "1s"]), vec![]);
    let mut slow = TcpStream::connect(&sup.ctl).unwrap();
    slow.write_all(&[0x80, 0x90]).unwrap(); // half a header, then nothing
    // Meanwhile another client is served.
    client(&sup, HandshakeKind::Noise).call_for::<proto::CtlPong>(&ping(), |_| {}).unwrap();
    // The slow one is closed by the server (EOF), not left hanging until our own timeout.
    slow.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(slow.read(&mut buf).unwrap(), 0, "the server closed the slow connection");
    let log = std::fs::read_to_string(&sup.log).unwrap();
    assert!(log.contains("no handshake within"), "{log}");
    assert_eq!(sup.metric("warren_ctl_timeouts_total"), 1);
}

/// Valid frames of every kind, for the fuzzer to mutate.
fn seeds(secret: &str) -> Vec<Vec<u8>> {
    let t0 = Some(Txn::request(0));
    let frames = [
        Frame::new(&proto::Handshake { secret_key: Some(secret.into()) }, t0),
        Frame::new(&proto::NoiseHandshake { message: Some(vec![7; 48]) }, t0),
        ping().to_frame(Txn::request(1)),
        CtlRequest::SupDepart(proto::SupDepart { member_id: Some("0".repeat(32)) }).to_frame(Txn::request(1)),
        CtlRequest::RingKeyInstall(proto::RingKeyInstall {
            key_file: Some(b"SYM-SEC-1\nx-1\n\nAAAA".to_vec()),
        })
        .to_frame(Txn::request(1)),
    ];
    frames.iter().map(|f| f.encode().unwrap()).collect()
}

/// Sends `bytes`, closes the write side and reads whatever comes back until EOF.
fn exchange(addr: &str, prefix: &[u8], bytes: &[u8]) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect(addr) else { return vec![] };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(prefix);
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn fuzzed_frames_never_panic_and_the_supervisor_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 97, vec![], vec![]);
    let secret = sup.ctl_secret();
    let seeds = seeds(&secret);
    let handshake = seeds[0].clone();
    let mut rng = Rng::new(0x0C71_5EED);
    let mut replies = 0;
    for i in 0..3000 {
        let seed = &seeds[rng.below(seeds.len())];
        let input = if rng.chance(0.1) {
            let n = rng.below(64);
            rng.bytes(n)
        } else {
            rng.mutate(seed, 4)
        };
        // Half the cases pass the (plaintext, loopback) handshake first, to reach the request decoder.
        let prefix: &[u8] = if i % 2 == 0 { &handshake } else { &[] };
        if !exchange(&sup.ctl, prefix, &input).is_empty() {
            replies += 1;
        }
    }
    assert!(replies > 0, "some fuzzed frames got an answer");
    client(&sup, HandshakeKind::Noise).call_for::<proto::CtlPong>(&ping(), |_| {}).unwrap();
    let mut sup = sup;
    assert!(!sup.exited());
    let log = std::fs::read_to_string(&sup.log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    assert!(sup.metric("warren_ctl_bad_frames_total") > 0);
}

/// A TCP proxy that records both directions of every connection.
fn recording_proxy(upstream: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(down) = conn else { return };
            let up = TcpStream::connect(&upstream).unwrap();
            for (mut from, mut to) in [(down.try_clone().unwrap(), up.try_clone().unwrap()), (up, down)] {
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        }
    });
    (addr, seen)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_secret_never_crosses_the_wire_in_a_noise_session() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 98, vec![], vec![]);
    let secret = sup.ctl_secret();
    let (proxy, seen) = recording_proxy(sup.ctl.clone());
    let env = [("WARREN_CTL_SECRET", secret.as_str())];
    ctl_cli(dir.path(), &["ctl", "ping"], &proxy, &env).ok();
    ctl_cli(dir.path(), &["ring", "key", "list"], &proxy, &env).ok();
    let raw = base64::engine::general_purpose::STANDARD.decode(&secret).unwrap();
    let psk = warren::crypto::sodium::blake2b_256(secret.as_bytes());
    let wire = seen.lock().unwrap().clone();
    assert!(contains(&wire, b"NoiseHandshake"), "the proxy saw the sessions");
    for needle in [secret.as_bytes(), &raw[..16], &psk[..16], b"CtlPing", b"RingKeyList", b"RingKeys"] {
        assert!(!contains(&wire, needle), "{:?} crossed the wire", String::from_utf8_lossy(needle));
    }
    // The check can fail: Habitat's plaintext handshake does send the secret.
    seen.lock().unwrap().clear();
    let plain =
        CtlClient::new(&proxy, CtlSecret::new(&secret).unwrap()).with_handshake(HandshakeKind::Plaintext);
    plain.call(&ping(), |_| {}).unwrap();
    assert!(contains(&seen.lock().unwrap(), secret.as_bytes()));
}

// ---- Habitat's .proto files ----

fn pools() -> (prost_reflect::DescriptorPool, prost_reflect::DescriptorPool) {
    let hab_dir = interop_dir().join("components/sup-protocol/protocols");
    let hab = protox::compile(["ctl.proto", "net.proto", "types.proto"], [&hab_dir]).unwrap();
    let ours_dir = support::fixtures::repo_root().join("host/proto");
    let ours = protox::compile(["ctl.proto"], [&ours_dir]).unwrap();
    (
        prost_reflect::DescriptorPool::from_file_descriptor_set(hab).unwrap(),
        prost_reflect::DescriptorPool::from_file_descriptor_set(ours).unwrap(),
    )
}

fn kind_name(k: &prost_reflect::Kind) -> String {
    match k {
        prost_reflect::Kind::Message(m) => format!("message {}", m.name()),
        prost_reflect::Kind::Enum(e) => format!("enum {}", e.name()),
        other => format!("{other:?}"),
    }
}

#[test]
fn shared_messages_have_habitats_names_numbers_types_and_labels() {
    let (hab, ours) = pools();
    let shared = [
        "Handshake",
        "NetOk",
        "NetErr",
        "NetProgress",
        "ConsoleLine",
        "SupDepart",
        "SupRestart",
        "SvcStatus",
        "SvcStart",
        "SvcStop",
        "SvcUnload",
        "SvcSetCfg",
        "SvcValidateCfg",
        "SvcFilePut",
        "SvcLoad",
        "ServiceStatus",
        "ServiceCfg",
        "ServiceBind",
        "ServiceBindList",
        "HealthCheckInterval",
        "PackageIdent",
        "ServiceGroup",
        "ProcessStatus",
    ];
    let by_name = |pool: &prost_reflect::DescriptorPool, name: &str| {
        pool.all_messages().find(|m| m.name() == name).unwrap_or_else(|| panic!("no message {name}"))
    };
    for name in shared {
        let (h, o) = (by_name(&hab, name), by_name(&ours, name));
        // Fields from 1000 up are warren's extensions (optional, skipped by Habitat's decoder).
        for f in o.fields().filter(|f| f.number() >= 1000) {
            assert_eq!(f.cardinality(), prost_reflect::Cardinality::Optional, "{name}.{}", f.name());
        }
        let describe = |m: &prost_reflect::MessageDescriptor| -> Vec<String> {
            m.fields()
                .filter(|f| f.number() < 1000)
                .map(|f| {
                    format!("{} {} {:?} {}", f.number(), f.name(), f.cardinality(), kind_name(&f.kind()))
                })
                .collect()
        };
        assert_eq!(describe(&o), describe(&h), "{name}");
    }
    let codes = |pool: &prost_reflect::DescriptorPool| -> Vec<(String, i32)> {
        let e = pool.all_enums().find(|e| e.name() == "ErrCode").unwrap();
        e.values().map(|v| (v.name().to_string(), v.number())).collect()
    };
    assert_eq!(codes(&ours), codes(&hab));
    let values = |pool: &prost_reflect::DescriptorPool, name: &str| -> Vec<(String, i32)> {
        let e = pool.all_enums().find(|e| e.name() == name).unwrap_or_else(|| panic!("no enum {name}"));
        e.values().map(|v| (v.name().to_string(), v.number())).collect()
    };
    for e in ["Topology", "UpdateStrategy", "UpdateCondition", "BindingMode", "ProcessState", "DesiredState"]
    {
        assert_eq!(values(&ours, e), values(&hab, e), "{e}");
    }
}

#[test]
fn habitats_definitions_decode_a_real_supervisors_frames_and_the_reverse() {
    use prost::Message as _;
    use prost_reflect::{DynamicMessage, Value};
    let (hab, _) = pools();
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 99, vec![], vec![]);
    // Habitat's handshake, encoded with Habitat's definitions, with a wrong secret.
    let mut hs = DynamicMessage::new(hab.get_message_by_name("sup.ctl.Handshake").unwrap());
    hs.set_field_by_name("secret_key", Value::String("not-it".into()));
    let frame = Frame { name: "Handshake".into(), txn: Some(Txn::request(0)), body: hs.encode_to_vec() };
    let reply = exchange(&sup.ctl, &frame.encode().unwrap(), &[]);
    let warren::ctl::protocol::Parsed::Frame(f, _) =
        warren::ctl::protocol::parse_frame(&reply, warren::ctl::protocol::MAX_BODY_LEN).unwrap()
    else {
        panic!("no whole frame in {reply:?}")
    };
    assert_eq!(f.name, "NetErr");
    assert_eq!(f.txn, Some(Txn { id: 0, response: true, complete: true }));
    let err = DynamicMessage::decode(hab.get_message_by_name("sup.net.NetErr").unwrap(), f.body.as_slice())
        .unwrap();
    assert_eq!(err.get_field_by_name("code").unwrap().as_enum_number(), Some(4));
    assert_eq!(err.get_field_by_name("msg").unwrap().as_str(), Some("secret key mismatch"));

    // Streamed replies: warren's encoding through Habitat's definitions, field by field.
    let line = proto::ConsoleLine { line: "hello\n".into(), color: Some("Red".into()), bold: true };
    let d = DynamicMessage::decode(
        hab.get_message_by_name("sup.ctl.ConsoleLine").unwrap(),
        &line.encode_to_vec()[..],
    )
    .unwrap();
    assert_eq!(d.get_field_by_name("line").unwrap().as_str(), Some("hello\n"));
    assert_eq!(d.get_field_by_name("color").unwrap().as_str(), Some("Red"));
    assert_eq!(d.get_field_by_name("bold").unwrap().as_bool(), Some(true));
    // And Habitat's encoding of a status through warren's types.
    let mut st = DynamicMessage::new(hab.get_message_by_name("sup.types.ServiceStatus").unwrap());
    let mut ident = DynamicMessage::new(hab.get_message_by_name("sup.types.PackageIdent").unwrap());
    ident.set_field_by_name("origin", Value::String("core".into()));
    ident.set_field_by_name("name", Value::String("redis".into()));
    let mut group = DynamicMessage::new(hab.get_message_by_name("sup.types.ServiceGroup").unwrap());
    group.set_field_by_name("service", Value::String("redis".into()));
    group.set_field_by_name("group", Value::String("default".into()));
    st.set_field_by_name("ident", Value::Message(ident));
    st.set_field_by_name("service_group", Value::Message(group));
    st.set_field_by_name("desired_state", Value::EnumNumber(1));
    let ours = proto::ServiceStatus::decode(&st.encode_to_vec()[..]).unwrap();
    assert_eq!((ours.ident.origin.as_str(), ours.ident.name.as_str()), ("core", "redis"));
    assert_eq!(ours.service_group.group, "default");
    assert_eq!(ours.desired_state, Some(proto::DesiredState::DesiredUp as i32));
}

/// `sup status --json` over the ctl gateway (None while the supervisor does not answer).
fn status_json(sup: &Sup) -> Option<serde_json::Value> {
    let run = sup.cli(&["sup", "status", "--json"]);
    (run.code == 0).then(|| serde_json::from_str(&run.stdout).expect("sup status --json prints JSON"))
}

#[test]
fn sup_status_over_the_ctl_gateway_shows_members_plugins_and_this_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let sups = start_ring(dir.path(), 203, 2, &fast_timings(), &[]);
    let (a, b) = (&sups[0], &sups[1]);
    wait_until(Duration::from_secs(20), "both members alive", || {
        status_json(a).is_some_and(|s| {
            s["members"].as_array().is_some_and(|m| {
                m.iter().filter(|m| m["health"] == "alive").count() == 2
                    && m.iter().any(|m| m["member_id"] == b.member_id())
            })
        })
    });
    let s = status_json(a).unwrap();
    assert_eq!(s["member_id"], a.member_id());
    assert!(s["version"].as_str().is_some_and(|v| !v.is_empty()), "{s}");
    assert!(s["generation"].as_u64().is_some_and(|g| g > 0), "{s}");
    assert_eq!(s["encrypted"], false);
    assert!(s["plugins"]["plugins"].is_array(), "the plugin runtime's document: {s}");
    assert!(s["credentials"]["credentials"].is_array(), "{s}");
    // The table form names the gateway it asked and both members.
    let run = a.cli(&["sup", "status"]);
    let text = run.ok();
    assert!(
        text.contains(&a.ctl) && text.contains(&a.member_id()) && text.contains(&b.member_id()),
        "{text}"
    );
    assert!(text.contains("NOT encrypted"), "{text}");
    // A wrong secret shows nothing.
    let refused = ctl_cli(dir.path(), &["sup", "status"], &a.ctl, &[("WARREN_CTL_SECRET", "wrong")]);
    assert_ne!(refused.code, 0);
    assert!(!refused.stdout.contains(&b.member_id()), "{}", refused.stdout);
}

#[test]
fn sup_restart_re_executes_in_place_and_rejoins_with_a_higher_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    // Fixed ports (on an address of this test's own): a restart binds the same ones again.
    let mut a =
        Sup::start_on(dir.path(), "201", "127.0.0.201:9638", "127.0.0.201:9631", fast_timings(), vec![]);
    let mut b_args = fast_timings();
    b_args.extend(args(&["--peer", &a.gossip]));
    let b = Sup::start(dir.path(), 202, b_args, vec![]);
    let (a_id, pid) = (a.member_id(), a.pid());
    wait_until(Duration::from_secs(20), "b sees a alive", || {
        b.health().get(&a_id).is_some_and(|h| h == "Alive")
    });
    let before = status_json(&a).unwrap();
    let incarnation_before = b.incarnation_of(&a_id).unwrap();

    let run = a.cli(&["sup", "restart"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Restarting the supervisor"), "{run:?}");
    wait_until(Duration::from_secs(30), "a answers again with a new generation", || {
        status_json(&a).is_some_and(|s| s["generation"].as_u64() > before["generation"].as_u64())
    });
    assert!(!a.exited(), "the supervisor exited instead of restarting:\n{}", a.log_tail());
    assert_eq!(a.pid(), pid, "the same process (exec in place, not a new child)");
    assert_eq!(a.member_id(), a_id);
    // On a loaded machine the restart may outlast b's suspicion of a: b then finds a again by
    // re-announcing to down members, which takes longer than a plain rejoin.
    let rejoined = wait_for(Duration::from_secs(60), || {
        (b.health().get(&a_id).is_some_and(|h| h == "Alive")
            && b.incarnation_of(&a_id).is_some_and(|i| i > incarnation_before))
        .then_some(())
    });
    assert!(
        rejoined.is_some(),
        "b does not see a alive at a higher incarnation (b sees {:?} at {:?})\na:\n{}\nb:\n{}",
        b.health().get(&a_id),
        b.incarnation_of(&a_id),
        a.log_tail(),
        b.log_tail()
    );
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(log.contains("restarting: stopping without leaving the ring"), "{}", a.log_tail());
    assert_eq!(log.matches("supervisor started").count(), 2, "{}", a.log_tail());
    // The data-path lock was released by the old image and taken by the new one.
    let second = cli::run(
        cli::command()
            .args(["sup", "run", "--listen-gossip", "127.0.0.201:0", "--listen-http", "127.0.0.201:0"])
            .args(["--listen-ctl", "127.0.0.201:0", "--data-path"])
            .arg(&a.data),
        None,
    );
    assert_ne!(second.code, 0);
    assert!(second.stderr.contains(&pid.to_string()), "the lock names the running pid: {}", second.stderr);
    assert!(a.term(), "a stops cleanly after its restart");
}

/// A client's environment with nothing but the given cli.toml: no local CTL_SECRET, no
/// WARREN_CTL_SECRET, no WARREN_REMOTE_SUP.
fn bare_client(dir: &std::path::Path, cli_toml: &std::path::Path) -> std::process::Command {
    let mut cmd = cli::command();
    cmd.env("WARREN_DATA_PATH", dir.join("empty-data")).env("WARREN_CLI_CONFIG", cli_toml);
    cmd
}

#[test]
fn cli_setup_writes_a_private_cli_toml_that_later_commands_use() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let sups = start_ring(dir.path(), 205, 2, &fast_timings(), &[]);
    let (a, b) = (&sups[0], &sups[1]);
    let cli_toml = dir.path().join("conf/cli.toml");
    let secret_file = a.data.join("CTL_SECRET");

    // Nothing to ask on a pipe and nothing given: a clear refusal, no file.
    let nothing = cli::run(bare_client(dir.path(), &cli_toml).args(["cli", "setup"]), None);
    assert_ne!(nothing.code, 0);
    assert!(nothing.stderr.contains("--remote-sup"), "{}", nothing.stderr);
    assert!(!cli_toml.exists());

    let set = cli::run(
        bare_client(dir.path(), &cli_toml)
            .args(["cli", "setup", "--remote-sup", &a.ctl])
            .arg(format!("--ctl-secret=FILE:{}", secret_file.display())),
        None,
    );
    assert_eq!(set.code, 0, "{set:?}");
    assert_eq!(std::fs::metadata(&cli_toml).unwrap().permissions().mode() & 0o777, 0o600);
    let ping = cli::run(bare_client(dir.path(), &cli_toml).args(["ctl", "ping", "--json"]), None);
    assert_eq!(ping.code, 0, "no flag, no env: cli.toml's remote_sup and secret: {ping:?}");
    assert!(ping.stdout.contains(&a.ctl), "{}", ping.stdout);

    // Another supervisor with its own secret, in a [remote."HOST:PORT"] table.
    let b_secret = b.ctl_secret();
    let per = cli::run(
        bare_client(dir.path(), &cli_toml)
            .args(["cli", "setup", "--for", &b.ctl])
            .arg(format!("--ctl-secret={b_secret}")),
        None,
    );
    assert_eq!(per.code, 0, "{per:?}");
    assert!(!per.stdout.contains(&b_secret) && !per.stderr.contains(&b_secret));
    for remote in [&a.ctl, &b.ctl] {
        let ping =
            cli::run(bare_client(dir.path(), &cli_toml).args(["ctl", "ping", "--remote-sup", remote]), None);
        assert_eq!(ping.code, 0, "{remote}: {ping:?}");
    }
    let text = std::fs::read_to_string(&cli_toml).unwrap();
    assert!(text.contains(&format!("remote_sup = \"{}\"", a.ctl)), "{text}");

    // A FILE: that does not exist is refused and the file stays as it was.
    let bad = cli::run(
        bare_client(dir.path(), &cli_toml).args(["cli", "setup", "--ctl-secret", "FILE:/nonexistent/secret"]),
        None,
    );
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("/nonexistent/secret"), "{}", bad.stderr);
    assert_eq!(std::fs::read_to_string(&cli_toml).unwrap(), text);
}

/// A pseudo-terminal: (master, slave) file descriptors.
fn openpty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd as _;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors we then own.
    let rc = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) }
}

/// Reads the terminal until `want` shows (or the deadline passes); returns what was read.
fn read_until(master: &mut std::fs::File, seen: &mut String, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 512];
    while !seen.contains(want) {
        assert!(std::time::Instant::now() < deadline, "no {want:?} on the terminal; saw {seen:?}");
        match master.read(&mut buf) {
            Ok(0) | Err(_) => std::thread::sleep(Duration::from_millis(20)),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

#[test]
fn cli_setup_asks_on_a_terminal_without_echoing_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 207, fast_timings(), vec![]);
    let cli_toml = dir.path().join("cli.toml");
    let secret = sup.ctl_secret();
    let (mut master, slave) = openpty();
    let child = bare_client(dir.path(), &cli_toml)
        .args(["cli", "setup"])
        .stdin(slave.try_clone().unwrap())
        .stderr(slave)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    read_until(&mut master, &mut seen, "HOST[:PORT] [127.0.0.1:9632]: ");
    master.write_all(format!("{}\n", sup.ctl).as_bytes()).unwrap();
    read_until(&mut master, &mut seen, "FILE:/path [");
    read_until(&mut master, &mut seen, "]: ");
    master.write_all(format!("{secret}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // Whatever the terminal showed after the question (echo off), never the secret.
    std::thread::sleep(Duration::from_millis(100));
    let mut rest = [0u8; 4096];
    // SAFETY: a non-blocking read of what is left on the master side.
    unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&master), libc::F_SETFL, libc::O_NONBLOCK) };
    if let Ok(n) = master.read(&mut rest) {
        seen.push_str(&String::from_utf8_lossy(&rest[..n]));
    }
    assert!(!seen.contains(&secret[..16]), "the secret was echoed: {seen:?}");
    assert!(seen.contains(&sup.ctl), "the address was echoed as typed: {seen:?}");
    let ping = cli::run(bare_client(dir.path(), &cli_toml).args(["ctl", "ping"]), None);
    assert_eq!(ping.code, 0, "{ping:?}");
}

#[test]
fn ctrl_c_at_the_secret_prompt_leaves_the_terminal_echoing() {
    let dir = tempfile::tempdir().unwrap();
    let cli_toml = dir.path().join("cli.toml");
    let (mut master, slave) = openpty();
    let echoing = |f: &std::fs::File| {
        // SAFETY: tcgetattr into a termios we own.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::tcgetattr(std::os::fd::AsRawFd::as_raw_fd(f), &mut t) }, 0);
        t.c_lflag & libc::ECHO != 0
    };
    assert!(echoing(&slave));
    let child = bare_client(dir.path(), &cli_toml)
        .args(["cli", "setup"])
        .stdin(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    read_until(&mut master, &mut seen, "HOST[:PORT] [127.0.0.1:9632]: ");
    master.write_all(b"127.0.0.1:1\n").unwrap();
    read_until(&mut master, &mut seen, "FILE:/path [");
    let mut secret_prompt = seen.rsplit("FILE:/path [").next().unwrap_or_default().to_string();
    read_until(&mut master, &mut secret_prompt, "]: ");
    let off_at_prompt = !echoing(&slave);
    // What Ctrl-C on a controlling terminal delivers (before any assertion, so a failing one
    // leaves no client behind).
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    assert!(off_at_prompt, "echo is off at the secret prompt");
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "it dies of the signal: {out:?}");
    assert!(echoing(&slave), "echo is back on");
    assert!(!cli_toml.exists(), "nothing was written");
}
