//! Replays every kept fuzz input (`fuzz/corpus/NAME/*`, plus `fuzz/artifacts/NAME/*` when a
//! local fuzzing run left crash files there) through the same `warren::fuzzing` entry points
//! the fuzz targets call, so a regression shows in plain `cargo test`, without the fuzzer.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` rewrites the `seed-*` files
//! from real sources (ring traffic between two cores, Habitat's fixtures, the shipped
//! manifests and the README's sup.toml); a fuzzing run's `-merge=1` adds the rest.

mod support;

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message as _;
use warren::crypto::hart::HartHeader;
use warren::crypto::{KeyFile, boxes::BoxMessage};
use warren::fuzzing::{self, PACKET_SEPARATOR, TARGETS};
use warren::plugins::Manifest;
use warren::plugins::wasm::{COMPONENT_HEADER, encode_custom_section};
use warren::ring::wire::{MAX_DATAGRAM, MAX_FRAME};
use warren::ring::{Keyring, MemberId, Output, RingCore, Rumor, proto};

fn fuzz_dir() -> PathBuf {
    support::fixtures::repo_root().join("fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_corpus_and_crash_file_replays_without_a_panic() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, run) in TARGETS {
        let corpus = files_in(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} holds seeds");
        for file in corpus.iter().chain(&files_in(&fuzz_dir().join("artifacts").join(name))) {
            let data = fs::read(file).unwrap();
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failures.push(file.display().to_string());
            }
            replayed += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {replayed} inputs panicked: {failures:?}", failures.len());
}

#[test]
fn every_target_has_a_fuzz_binary_and_nothing_else_has_a_corpus() {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        assert!(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")).is_file(), "{name}.rs");
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{name} is a [[bin]] of fuzz/");
    }
    for dir in fs::read_dir(fuzz_dir().join("corpus")).unwrap() {
        let name = dir.unwrap().file_name().into_string().unwrap();
        assert!(TARGETS.iter().any(|(n, _)| *n == name), "fuzz/corpus/{name} belongs to no target");
    }
}

/// The `seed-*` files are real inputs that the parsers accept, so the fuzzer starts deep.
#[test]
fn the_seeds_are_accepted_inputs() {
    let keyring = Keyring::with_primary(fuzzing::ring_key());
    let seeds = |name: &str| -> Vec<Vec<u8>> {
        let all = files_in(&fuzz_dir().join("corpus").join(name));
        let seeds: Vec<Vec<u8>> = all
            .iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seed-"))
            .map(|p| fs::read(p).unwrap())
            .collect();
        assert!(!seeds.is_empty(), "{name} has seed-* files");
        seeds
    };
    let first_packet = |s: &[u8]| -> Vec<u8> {
        let end = s.windows(PACKET_SEPARATOR.len()).position(|w| w == PACKET_SEPARATOR).unwrap_or(s.len());
        s[..end].to_vec()
    };
    for s in seeds("ring_wire") {
        keyring.open(&first_packet(&s), MAX_FRAME).expect("ring_wire seeds are sealed with the fuzz key");
    }
    for s in seeds("ring_datagram") {
        proto::SwimHeader::decode_length_delimited(first_packet(&s).as_slice()).expect("a SWIM packet");
    }
    for s in seeds("ring_pushpull") {
        let frame = proto::PushPull::decode(first_packet(&s).as_slice()).expect("a push-pull frame");
        assert!(frame.from.is_some());
    }
    for s in seeds("rumor") {
        assert!(Rumor::from_proto(Rumor::decode(&s).unwrap()).unwrap().is_some());
    }
    let mut keys_ok = 0;
    for s in seeds("key_file") {
        keys_ok += usize::from(KeyFile::parse(&s).is_ok());
    }
    assert!(keys_ok >= 5, "one valid key file of every kind ({keys_ok})");
    for s in seeds("box_message") {
        BoxMessage::parse(&s).expect("a box");
    }
    let (tp, t) = warren::crypto::BoxSecretKeyFile::generate("seed-keyserver").unwrap();
    let requests = seeds("join_request")
        .iter()
        .map(|s| warren::crypto::sodium::sealed_box_seal(s, &tp.key).unwrap())
        .filter(|b| warren::admission::request::RequestBody::open(b, &tp.key, &t.key).is_ok())
        .count();
    assert!(requests >= 1, "a join_request seed is a well-formed request");
    let mut harts_ok = 0;
    for s in seeds("hart_header") {
        harts_ok += usize::from(HartHeader::read(&mut s.as_slice()).is_ok());
    }
    assert!(harts_ok >= 2, "the signed packages' headers read ({harts_ok})");
    for s in seeds("plugin_manifest") {
        let m = if s.starts_with(b"\0asm") { Manifest::from_component(&s) } else { Manifest::parse(&s) };
        m.expect("a shipped manifest");
    }
    for s in seeds("sup_config") {
        warren::config::SupConfig::parse(std::str::from_utf8(&s).unwrap(), "seed").expect("a sup.toml");
    }
}

/// What two cores sealed with the fuzz key sent each other, and the rumors held at the end.
struct Traffic {
    datagrams: Vec<Vec<u8>>,
    frames: Vec<Vec<u8>>,
    rumors: Vec<Vec<u8>>,
}

/// Two cores with the fuzz key talk for a while, with rumors of every kind injected.
// The `..Default::default()` updates keep this building while the ring's messages grow fields.
#[allow(clippy::needless_update)]
fn ring_traffic() -> Traffic {
    let keyring = Keyring::with_primary(fuzzing::ring_key());
    let mut a = fuzzing::ring_core(&keyring);
    let mut b = RingCore::new(warren::ring::CoreParams {
        id: MemberId([2; 16]),
        addr: fuzzing::member_addr(2),
        generation: 1,
        persistent: false,
        config: Default::default(),
        keyring: keyring.clone(),
        peers: vec![fuzzing::member_addr(1)],
        seed: 2,
        http_port: 0,
        restored: None,
    });
    b.start(Duration::ZERO);
    let group = "redis.default".to_string();
    let b_id = MemberId([2; 16]).to_string();
    let rumors = [
        Rumor::Service(proto::ServiceRumor {
            member_id: b_id.clone(),
            service_group: group.clone(),
            incarnation: 1,
            package: "core/redis/7.0.0/20260101000000".into(),
            ..Default::default()
        }),
        Rumor::ServiceConfig(proto::ServiceConfigRumor {
            from_id: b_id.clone(),
            service_group: group.clone(),
            incarnation: 1,
            config: b"port = 6379\n".to_vec(),
            ..Default::default()
        }),
        Rumor::ServiceFile(proto::ServiceFileRumor {
            from_id: b_id.clone(),
            service_group: group.clone(),
            incarnation: 1,
            filename: "users.acl".into(),
            body: b"user default on\n".to_vec(),
            ..Default::default()
        }),
        Rumor::Election(proto::ElectionRumor {
            from_id: b_id.clone(),
            member_id: b_id.clone(),
            service_group: group.clone(),
            term: 1,
            suitability: 5,
            votes: vec![b_id.clone()],
            ..Default::default()
        }),
        Rumor::Departure(proto::DepartureRumor {
            member_id: MemberId([9; 16]).to_string(),
            ..Default::default()
        }),
    ];
    for r in rumors {
        b.inject(r).unwrap();
    }
    let (mut datagrams, mut frames) = (Vec::new(), Vec::new());
    let mut now = Duration::from_millis(2);
    while now < Duration::from_secs(4) {
        now += Duration::from_millis(20);
        a.tick(now);
        b.tick(now);
        for from_a in [true, false] {
            let outs = if from_a { a.take_outputs() } else { b.take_outputs() };
            let (dst, src) = if from_a { (&mut b, &mut a) } else { (&mut a, &mut b) };
            for o in outs {
                match o {
                    Output::Datagram { bytes, .. } => {
                        dst.handle_datagram(now, &bytes);
                        datagrams.push(bytes);
                    }
                    Output::PushPull { .. } => {
                        for req in src.pushpull_sealed() {
                            let _ = dst.handle_pushpull(now, &req);
                            frames.push(req);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let rumors = a.with_store(|s| s.iter().map(Rumor::encode).collect());
    Traffic { datagrams, frames, rumors }
}

fn write(name: &str, file: &str, data: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("seed-{file}")), data).unwrap();
}

#[test]
#[ignore = "rewrites fuzz/corpus/*/seed-*; run by hand"]
fn write_seed_corpus() {
    let keyring = Keyring::with_primary(fuzzing::ring_key());
    let Traffic { datagrams, frames, rumors: held } = ring_traffic();
    // One sample of each SWIM message kind is enough for the fuzzer to start from.
    let mut kinds = std::collections::BTreeMap::new();
    for d in &datagrams {
        let plain = keyring.open(d, MAX_DATAGRAM).unwrap();
        let header = proto::SwimHeader::decode_length_delimited(plain.as_slice()).unwrap();
        kinds.entry(header.kind).or_insert((d.clone(), plain));
    }
    assert!(kinds.len() >= 3, "pings, acks and more were captured: {:?}", kinds.keys());
    for (kind, (sealed, plain)) in &kinds {
        write("ring_wire", &format!("swim-kind-{kind}"), sealed);
        write("ring_datagram", &format!("swim-kind-{kind}"), plain);
    }
    let plains: Vec<Vec<u8>> = kinds.values().map(|(_, p)| p.clone()).collect();
    write("ring_datagram", "sequence", &plains.join(PACKET_SEPARATOR));
    let frame = frames.last().expect("push-pull happened");
    write("ring_wire", "pushpull", frame);
    write("ring_pushpull", "full-state", &keyring.open(frame, MAX_FRAME).unwrap());
    for (i, r) in held.iter().enumerate() {
        write("rumor", &format!("{i}"), r);
    }

    let habitat = support::fixtures::interop_dir();
    let fixtures = habitat.join("components/core/tests/fixtures");
    for f in [
        "keys/ring-key-valid-20160504220722.sym.key",
        "keys/origin-key-valid-20160509190508.pub",
        "keys/origin-key-valid-20160509190508.sig.key",
        "keys/ruby-rhod-20200813204159.pub",
        "keys/ruby-rhod-20200813204159.box.key",
        "keys/origin-key-invalid-version-20160518021451.pub",
    ] {
        let p = fixtures.join(f);
        write("key_file", p.file_name().unwrap().to_str().unwrap(), &fs::read(&p).unwrap());
    }
    // The BOX vectors, each the lines after its "## N." heading up to the next blank line.
    let vectors = fs::read_to_string(habitat.join("derived-vectors/box-and-sign-vectors.txt")).unwrap();
    let mut n = 0;
    let mut lines = vectors.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "BOX-1" || line == "ANONYMOUS-BOX-1" {
            let mut msg = vec![line];
            while let Some(next) = lines.next_if(|l| !l.is_empty() && !l.starts_with('#')) {
                msg.push(next);
            }
            n += 1;
            write("box_message", &format!("vector-{n}"), msg.join("\n").as_bytes());
        }
    }
    assert!(n >= 4, "the BOX-1 and ANONYMOUS-BOX-1 vectors ({n})");
    for f in [
        "happyhumans-possums-8.1.4-20160427165340-x86_64-linux.hart",
        "unhappyhumans-possums-8.1.4-20160427165340-x86_64-linux.hart",
        "bogus_and_corrupt.hart",
    ] {
        write("hart_header", f, &fs::read(fixtures.join(f)).unwrap());
    }

    let plugins = support::fixtures::repo_root().join("plugins");
    for p in ["file", "vault-kv", "leader-follower"] {
        let toml = fs::read(plugins.join(p).join("plugin.toml")).unwrap();
        write("plugin_manifest", &format!("{p}.toml"), &toml);
        if p == "file" {
            let mut component = COMPONENT_HEADER.to_vec();
            component.extend(encode_custom_section(warren::plugins::manifest::MANIFEST_SECTION, &toml));
            write("plugin_manifest", "file-component.wasm", &component);
        }
    }
    let readme = fs::read_to_string(support::fixtures::repo_root().join("README.md")).unwrap();
    let example =
        readme.split("```toml\n").nth(1).and_then(|s| s.split("```").next()).expect("README's sup.toml");
    write("sup_config", "readme.toml", example.as_bytes());
    write(
        "sup_config",
        "demo.toml",
        b"auth_token = \"FILE:/tmp/demo/secrets/gateway-token\"\n\n[plugins.file]\nread_paths = [\"/tmp/demo/secrets\"]\n",
    );
}
