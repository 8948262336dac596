//! Every item of shared/interop/habitat/INDEX.md behaves as documented: keys, packages,
//! BOX-1 / ANONYMOUS-BOX-1 / ring vectors, the signing vector, the e2e key caches.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use support::cli::{warren, warren_with};
use support::files::path_str;
use support::fixtures::{core_fixture, e2e_fixture, interop_dir};
use warren::crypto::boxes::{self, BoxError, BoxMessage};
use warren::crypto::hart::{self, HartError};
use warren::crypto::keys::KeyFile;
use warren::crypto::{
    BoxPublicKey, BoxSecretKeyFile, CryptoError, KeyCache, KeyKind, RingKey, SigPublicKey, SigSecretKey,
    archive, sodium,
};

const HAPPY: &str = "happyhumans-possums-8.1.4-20160427165340-x86_64-linux.hart";
const UNHAPPY: &str = "unhappyhumans-possums-8.1.4-20160427165340-x86_64-linux.hart";
const BOGUS: &str = "bogus_and_corrupt.hart";

fn parse_file(path: &Path) -> Result<KeyFile, CryptoError> {
    KeyFile::parse(&fs::read(path).unwrap())
}

/// Every valid key file in the fixtures (core unit-test keys and the e2e caches).
fn valid_key_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [
        core_fixture(""),
        core_fixture("keys"),
        e2e_fixture("with_ring_encryption/cache_keys"),
        e2e_fixture("with_user_and_service_encryption/cache_keys"),
        e2e_fixture("with_user_and_service_encryption/cache_keys_no_user"),
    ] {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let is_key = name.ends_with(".pub") || name.ends_with(".key");
            if is_key && !name.contains("invalid-version") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert_eq!(out.len(), 18, "expected the full fixture set (INDEX.md lists 18 valid key files)");
    out
}

#[test]
fn every_valid_fixture_key_parses_with_the_kind_its_name_says() {
    for path in valid_key_files() {
        let key = parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(key.file_name(), name, "the id inside matches the file name");
        let ext_ok = match key.kind {
            KeyKind::SigPublic | KeyKind::BoxPublic => name.ends_with(".pub"),
            KeyKind::SigSecret => name.ends_with(".sig.key"),
            KeyKind::BoxSecret => name.ends_with(".box.key"),
            KeyKind::SymSecret => name.ends_with(".sym.key"),
        };
        assert!(ext_ok, "{name} holds a {:?}", key.kind);
        // Re-serializing gives the same key back.
        let again = KeyFile::parse(key.to_text().as_bytes()).unwrap();
        assert_eq!(again.bytes(), key.bytes());
    }
}

#[test]
fn box_pairs_derive_their_public_key_and_sig_pairs_embed_it() {
    let mut box_pairs = 0;
    let mut sig_pairs = 0;
    for path in valid_key_files() {
        let key = parse_file(&path).unwrap();
        let pub_path = path.with_file_name(format!("{}.pub", key.id));
        match key.kind {
            KeyKind::BoxSecret => {
                let sk = BoxSecretKeyFile::try_from(&key).unwrap();
                let pk = BoxPublicKey::try_from(&parse_file(&pub_path).unwrap()).unwrap();
                assert_eq!(sk.public(), pk, "{}", path.display());
                box_pairs += 1;
            }
            KeyKind::SigSecret => {
                let pk = SigPublicKey::try_from(&parse_file(&pub_path).unwrap()).unwrap();
                assert_eq!(&key.bytes()[32..], &pk.key[..], "{}", path.display());
                assert_eq!(SigSecretKey::try_from(&key).unwrap().public(), pk);
                sig_pairs += 1;
            }
            _ => {}
        }
    }
    // ruby-rhod, service-key-valid, fhloston, mctesterson, redis x2; happyhumans, origin-key-valid.
    assert_eq!(box_pairs, 6);
    assert_eq!(sig_pairs, 2);
}

#[test]
fn invalid_key_versions_are_refused() {
    for name in [
        "keys/origin-key-invalid-version-20160518021451.pub",
        "keys/origin-key-invalid-version-20160518021451.sig.key",
        "keys/ring-key-invalid-version-20160504221247.sym.key",
    ] {
        let err = parse_file(&core_fixture(name)).unwrap_err();
        assert!(matches!(err, CryptoError::UnsupportedKeyVersion(_)), "{name}: {err}");
        assert!(err.to_string().contains("Unsupported key version"), "{err}");
        // And through the CLI: a clean refusal, nothing imported.
        let cache = tempfile::tempdir().unwrap();
        let stderr = warren_with(
            &["origin", "key", "import", "--cache-key-path", path_str(cache.path())],
            Some(&fs::read(core_fixture(name)).unwrap()),
            &[],
        )
        .fails()
        .to_string();
        assert!(stderr.contains("Unsupported key version"), "{stderr}");
        assert_eq!(fs::read_dir(cache.path()).map(|d| d.count()).unwrap_or(0), 0);
    }
}

#[test]
fn every_valid_fixture_key_imports_through_the_cli() {
    let cache = tempfile::tempdir().unwrap();
    for path in valid_key_files() {
        let out = warren_with(
            &["origin", "key", "import", "--cache-key-path", path_str(cache.path())],
            Some(&fs::read(&path).unwrap()),
            &[],
        );
        let stdout = out.ok();
        let key = parse_file(&path).unwrap();
        assert!(stdout.contains(&key.id.to_string()), "{stdout}");
        assert!(cache.path().join(key.file_name()).is_file());
    }
}

#[test]
fn happyhumans_verifies_and_extracts() {
    let fixtures = KeyCache::new(core_fixture(""));
    let path = core_fixture(HAPPY);
    let whole = sodium::blake2b_256(&fs::read(&path).unwrap());
    let whole_hex = hex::encode(whole);
    assert!(whole_hex.starts_with("74d368d3") && whole_hex.ends_with("9a82"), "{whole_hex}");

    let v = hart::verify_file(&path, &fixtures, &mut |_| ()).unwrap();
    assert_eq!(v.signer.to_string(), "happyhumans-20160424223347");
    assert_eq!(v.digest_hex(), "0f2c5f4de145c7f78601caae9c7b8767098413d05739de913c012922b7eed760");
    let mut payload = fs::read(&path).unwrap();
    payload.drain(..v.header_len as usize);
    assert!(payload.starts_with(&hart::XZ_MAGIC));

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("root");
    let done = archive::extract_verified(&path, &dest, &fixtures, &mut |_| ()).unwrap();
    assert!(done.entries >= 4);
    let pkg = dest.join("hab/pkgs/happyhumans/possums/8.1.4/20160427165340");
    assert_eq!(fs::read_to_string(pkg.join("IDENT")).unwrap(), "happyhumans/possums/8.1.4/20160427165340\n");
    assert_eq!(
        fs::read(pkg.join("share/signme.dat")).unwrap(),
        fs::read(core_fixture("signme.dat")).unwrap()
    );

    let cli = warren(&["pkg", "verify", "--cache-key-path", path_str(&core_fixture("")), path_str(&path)]);
    assert!(cli.ok().contains("signed by happyhumans-20160424223347"), "{}", cli.stdout);
    let header = warren(&["pkg", "header", path_str(&path)]);
    let text = header.ok();
    for line in [
        "Format Version: HART-1",
        "Key Name: happyhumans-20160424223347",
        "Hash Type: BLAKE2b",
        "Raw Signature: U0cp/+npru0ZxhK76zm+PDVSV/707siy",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

#[test]
fn unhappyhumans_fails_on_its_digest() {
    let fixtures = KeyCache::new(core_fixture(""));
    let path = core_fixture(UNHAPPY);
    match hart::verify_file(&path, &fixtures, &mut |_| ()).unwrap_err() {
        HartError::HashMismatch { expected, computed } => {
            assert!(expected.starts_with("8805e557") && expected.ends_with("5d65"), "{expected}");
            assert!(computed.starts_with("813cf424") && computed.ends_with("5363"), "{computed}");
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    let stderr = warren(&["pkg", "verify", "--cache-key-path", path_str(&core_fixture("")), path_str(&path)])
        .fails()
        .to_string();
    assert!(stderr.contains("hashes don't match"), "{stderr}");

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("root");
    let stderr = warren(&[
        "pkg",
        "extract",
        "--cache-key-path",
        path_str(&core_fixture("")),
        path_str(&path),
        path_str(&dest),
    ])
    .fails()
    .to_string();
    assert!(stderr.contains("hashes don't match"), "{stderr}");
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0, "nothing left behind");
}

#[test]
fn bogus_and_corrupt_fails_on_its_signer_name() {
    let fixtures = KeyCache::new(core_fixture(""));
    let path = core_fixture(BOGUS);
    assert_eq!(fs::metadata(&path).unwrap().len(), 237);
    let err = hart::verify_file(&path, &fixtures, &mut |_| ()).unwrap_err();
    assert!(matches!(err, HartError::Crypto(CryptoError::BadNamedRevision(_))), "{err}");
    assert!(err.to_string().contains("Cannot parse named revision"));
    for cmd in ["verify", "header"] {
        let mut args = vec!["pkg", cmd];
        let cache = core_fixture("");
        if cmd == "verify" {
            args.extend(["--cache-key-path", path_str(&cache)]);
        }
        args.push(path_str(&path));
        let stderr = warren(&args).fails().to_string();
        assert!(stderr.contains("Cannot parse named revision"), "{cmd}: {stderr}");
    }
}

/// The sections of derived-vectors/box-and-sign-vectors.txt: number -> (comment lines, data lines).
fn vectors() -> Vec<(u32, Vec<String>, Vec<String>)> {
    let text = fs::read_to_string(interop_dir().join("derived-vectors/box-and-sign-vectors.txt")).unwrap();
    let mut out: Vec<(u32, Vec<String>, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("## ")
            && let Some((num, _)) = rest.split_once(". ")
            && let Ok(n) = num.parse::<u32>()
        {
            out.push((n, vec![line.to_string()], Vec::new()));
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        if line.starts_with('#') {
            cur.1.push(line.to_string());
        } else if !line.trim().is_empty() {
            cur.2.push(line.to_string());
        }
    }
    assert_eq!(out.iter().map(|v| v.0).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    out
}

fn vector(n: u32) -> (Vec<String>, Vec<String>) {
    let (_, c, d) = vectors().into_iter().find(|v| v.0 == n).unwrap();
    (c, d)
}

#[test]
fn box1_vector_decrypts_from_the_fixture_cache() {
    let (_, data) = vector(1);
    assert_eq!(data.len(), 5);
    let text = data.join("\n");
    let keys = KeyCache::new(core_fixture("keys"));
    let msg = BoxMessage::parse(text.as_bytes()).unwrap();
    assert_eq!(msg.sender().unwrap().to_string(), "ruby-rhod-20200813204159");
    assert_eq!(msg.receiver().to_string(), "service-key-valid.default@acme-20160509181736");
    assert_eq!(&msg.decrypt_with_cache(&keys).unwrap()[..], b"HOT, HOT, HAAAAAWWT!");
    assert_eq!(msg.to_text(), text, "re-encoding gives the same bytes");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("msg");
    fs::write(&file, &text).unwrap();
    let out =
        warren(&["box", "decrypt", "--cache-key-path", path_str(&core_fixture("keys")), path_str(&file)]);
    assert_eq!(out.ok(), "HOT, HOT, HAAAAAWWT!");
}

#[test]
fn parse_only_vectors_name_the_keys_they_need() {
    let (_, two) = vector(2);
    let msg = BoxMessage::parse(two.join("\n").as_bytes()).unwrap();
    let needed: Vec<String> = msg.needed_keys().iter().map(|k| format!("{:?} {}", k.kind, k.id)).collect();
    assert_eq!(
        needed,
        ["BoxSecret service-key-valid.default@acme-20160509181736", "BoxPublic ruby-rhod-20200813204159"]
    );
    let (_, four) = vector(4);
    let msg = BoxMessage::parse(four.join("\n").as_bytes()).unwrap();
    assert_eq!(msg.sender(), None);
    let needed: Vec<String> = msg.needed_keys().iter().map(|k| format!("{:?} {}", k.kind, k.id)).collect();
    assert_eq!(needed, ["BoxSecret fhloston-paradise-20200813211603"]);
}

#[test]
fn anonymous_box_vector_decrypts() {
    let (_, data) = vector(3);
    let text = data.join("\n");
    let keys = KeyCache::new(core_fixture("keys"));
    let plain = boxes::decrypt_with_cache(text.as_bytes(), &keys).unwrap();
    assert_eq!(&plain[..], b"Negative, I am a meat popsicle");
}

#[test]
fn builder_self_box_vector_decrypts_with_only_the_secret_key() {
    let (comments, data) = vector(5);
    let key_line = comments.iter().find(|l| l.contains("BOX-SEC-1")).unwrap();
    let quoted = key_line.split('"').nth(1).unwrap().replace("\\n", "\n");
    let key = KeyFile::parse(quoted.as_bytes()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = KeyCache::new(dir.path());
    cache.write(&key).unwrap();
    let plain = boxes::decrypt_with_cache(data.join("\n").as_bytes(), &cache).unwrap();
    assert_eq!(&plain[..], b"Fear is the little-death that brings total obliteration.");
}

#[test]
fn ring_key_vector_and_wire_sample_decrypt() {
    let (_, data) = vector(6);
    let field = |name: &str| {
        let line = data.iter().find(|l| l.starts_with(name)).unwrap();
        line.split_once('=').unwrap().1.trim().trim_matches('"').to_string()
    };
    let nonce = hex::decode(field("nonce_hex")).unwrap();
    let cipher = hex::decode(field("cipher_hex")).unwrap();
    let ring =
        RingKey::try_from(&parse_file(&core_fixture("keys/ring-key-valid-20160504220722.sym.key")).unwrap())
            .unwrap();
    assert_eq!(ring.id.name, "ring-key-valid");
    let nonce_arr: [u8; 24] = nonce.as_slice().try_into().unwrap();
    assert_eq!(
        sodium::secretbox_open(&ring.key, &nonce_arr, &cipher).unwrap(),
        field("plaintext").as_bytes()
    );
    let sealed = [nonce.clone(), cipher.clone()].concat();
    assert_eq!(boxes::ring_open(&ring, &sealed).unwrap(), b"This is a test");

    // The hand-made Wire protobuf: field 1 (encrypted=true), 2 (nonce, 24 B), 3 (payload, 30 B).
    let wire = fs::read(interop_dir().join("derived-vectors/ring-key-valid.wire.bin")).unwrap();
    assert_eq!(wire.len(), 60);
    assert_eq!(&wire[..4], &[0x08, 0x01, 0x12, 0x18]);
    assert_eq!(&wire[4..28], &nonce[..]);
    assert_eq!(&wire[28..30], &[0x1a, 0x1e]);
    assert_eq!(&wire[30..], &cipher[..]);

    let e2e = RingKey::try_from(
        &parse_file(&e2e_fixture("with_ring_encryption/cache_keys/e2e_test_ring_1-20200811160248.sym.key"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(e2e.id.to_string(), "e2e_test_ring_1-20200811160248");
    assert!(boxes::ring_open(&e2e, &sealed).is_err(), "another ring key cannot open it");
}

#[test]
fn signme_signature_matches_the_vector() {
    let (_, data) = vector(7);
    let expected = B64.decode(data[0].trim()).unwrap();
    assert_eq!(expected.len(), 128);
    let signme = fs::read(core_fixture("signme.dat")).unwrap();
    assert_eq!(signme, b"foo\n");
    let digest = hex::encode(sodium::blake2b_256(&signme));
    assert_eq!(digest, "20590a52c4f00588c500328b16d466c982a26fabaa5fa4dcc83052dd0a84f233");
    let sk = SigSecretKey::try_from(
        &parse_file(&core_fixture("keys/origin-key-valid-20160509190508.sig.key")).unwrap(),
    )
    .unwrap();
    // ed25519 is deterministic: signing again gives the vector's exact bytes.
    assert_eq!(sodium::sign_combined(digest.as_bytes(), &sk.key), expected);
    let pk = SigPublicKey::try_from(
        &parse_file(&core_fixture("keys/origin-key-valid-20160509190508.pub")).unwrap(),
    )
    .unwrap();
    assert_eq!(sodium::sign_open(&expected, &pk.key).unwrap(), digest.as_bytes());
    // A package header built from that signature verifies against the signed digest.
    let header = hart::sign_digest(&sk, &sodium::blake2b_256(&signme));
    assert_eq!(header.signed_digest, expected);
    assert_eq!(header.signed_payload_digest(&pk).unwrap(), sodium::blake2b_256(&signme));
}

#[test]
fn ctl_secret_example_has_the_shape_warren_generates() {
    let (_, data) = vector(8);
    let example = data[0].trim();
    assert_eq!(example.len(), 88);
    assert_eq!(B64.decode(example).unwrap().len(), 64);
    let a = warren(&["sup", "secret", "generate"]);
    let b = warren(&["sup", "secret", "generate"]);
    let (a, b) = (a.ok().trim().to_string(), b.ok().trim().to_string());
    assert_eq!(a.len(), 88);
    assert_eq!(B64.decode(&a).unwrap().len(), 64);
    assert_ne!(a, b);
}

#[test]
fn mctesterson_to_redis_decrypts_only_where_the_user_key_is_known() {
    let with_user = KeyCache::new(e2e_fixture("with_user_and_service_encryption/cache_keys"));
    let no_user = KeyCache::new(e2e_fixture("with_user_and_service_encryption/cache_keys_no_user"));
    let user =
        BoxSecretKeyFile::try_from(&with_user.latest(KeyKind::BoxSecret, "mctesterson").unwrap()).unwrap();
    let redis =
        BoxPublicKey::try_from(&with_user.latest(KeyKind::BoxPublic, "redis.default@e2e").unwrap()).unwrap();
    let msg = boxes::encrypt(b"requirepass = \"hunter2\"", &user, &redis).unwrap().to_text();
    assert_eq!(
        &boxes::decrypt_with_cache(msg.as_bytes(), &with_user).unwrap()[..],
        b"requirepass = \"hunter2\""
    );
    match boxes::decrypt_with_cache(msg.as_bytes(), &no_user) {
        Err(BoxError::Crypto(CryptoError::KeyNotFound { name, .. })) => {
            assert_eq!(name, "mctesterson-20200811182846")
        }
        other => panic!("a message from an unknown user must not decrypt: {other:?}"),
    }

    // The same through the CLI.
    let enc = warren(&[
        "box",
        "encrypt",
        "--from",
        "mctesterson",
        "--to",
        "redis.default@e2e",
        "--cache-key-path",
        path_str(with_user.dir()),
    ]);
    let _ = enc.ok();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cfg.box");
    fs::write(&file, &enc.stdout).unwrap();
    let stderr = warren(&["box", "decrypt", "--cache-key-path", path_str(no_user.dir()), path_str(&file)])
        .fails()
        .to_string();
    assert!(stderr.contains("mctesterson-20200811182846"), "{stderr}");
}

#[test]
fn http_gateway_samples_have_their_documented_shape() {
    let dir = interop_dir().join("components/sup/tests/fixtures/http-gateway");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let butterfly = read("sample-butterfly-output.json");
    for key in
        ["departure", "election", "election_update", "member", "service", "service_config", "service_file"]
    {
        assert!(butterfly.get(key).is_some(), "butterfly lacks {key}");
    }
    let census = read("sample-census-output.json");
    for key in ["census_groups", "changed", "local_member_id", "last_membership_counter"] {
        assert!(census.get(key).is_some(), "census lacks {key}");
    }
    for name in ["sample-services-with-cfg-output.json", "sample-services-without-cfg-output.json"] {
        let services = read(name);
        assert!(services.as_array().is_some_and(|a| !a.is_empty()), "{name} is a non-empty list");
    }
    for schema in ["butterfly", "census", "services"] {
        let path = interop_dir().join(format!("components/sup/doc/http_gateway_{schema}_schema.json"));
        let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
        assert!(v.is_object());
    }
    assert!(
        fs::read_to_string(interop_dir().join("components/sup/doc/api.yaml")).unwrap().contains("/census")
    );
}
