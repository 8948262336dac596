//! The key commands through the real `warren` binary: help everywhere, generate → export →
//! import into another cache, quick repeated generation, clean failures on bad input.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use clap::CommandFactory;
use support::cli::{self, warren, warren_with};
use support::files::{file_names as files_in, path_str, umask};
use support::fixtures::core_fixture;
use support::rng::Rng;
use warren::crypto::keys::KeyFile;
use warren::crypto::{BoxPublicKey, BoxSecretKeyFile, KeyCache, KeyKind, SigSecretKey};

fn cache_arg(dir: &Path) -> [&str; 2] {
    ["--cache-key-path", path_str(dir)]
}

/// Every command path in the clap tree, e.g. ["origin", "key", "generate"].
fn command_paths(cmd: &clap::Command, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let mut path = prefix.clone();
        path.push(sub.get_name().to_string());
        out.push(path.clone());
        command_paths(sub, path, out);
    }
}

#[test]
fn every_command_has_help_and_key_commands_document_the_cache() {
    let mut paths = Vec::new();
    command_paths(&warren::cli::Cli::command(), Vec::new(), &mut paths);
    for expected in [
        "origin key generate",
        "origin key export",
        "origin key import",
        "ring key generate",
        "ring key export",
        "ring key import",
        "user key generate",
        "svc key generate",
        "sup secret generate",
        "pkg sign",
        "pkg verify",
        "pkg header",
        "pkg extract",
        "bench verify",
        "completions",
    ] {
        assert!(paths.iter().any(|p| p.join(" ") == expected), "missing command: {expected}");
    }
    let top = warren(&["--help"]);
    assert!(top.ok().contains("Usage"));
    for path in &paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = warren(&args);
        let text = out.ok();
        assert!(text.contains("Usage"), "{path:?}: {text}");
        let leaf = warren::cli::Cli::command();
        let mut node = &leaf;
        for name in path {
            node = node.find_subcommand(name).unwrap();
        }
        if node.get_arguments().any(|a| a.get_id() == "cache_key_path") {
            assert!(
                text.contains("--cache-key-path") && text.contains("WARREN_CACHE_KEY_PATH"),
                "{path:?}: {text}"
            );
            assert!(text.contains("[default: "), "{path:?} documents the default cache: {text}");
        }
    }
    // No subcommand: usage error, exit 2, not a panic.
    let bare = warren(&["origin"]);
    assert_eq!(bare.code, 2);
    assert!(!bare.stderr.contains("panicked"));
}

#[test]
fn origin_keys_generate_export_import_into_another_cache() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let out = warren(&[&["origin", "key", "generate", "acme"][..], &cache_arg(a.path())].concat());
    assert!(out.ok().contains("Generated origin signing key pair acme-"));
    let names = files_in(a.path());
    assert_eq!(names.len(), 2, "{names:?}");
    let secret_name = names.iter().find(|n| n.ends_with(".sig.key")).unwrap();
    let public_name = names.iter().find(|n| n.ends_with(".pub")).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The umask (inherited by warren) applies to the modes given at creation.
    assert_eq!(mode(&a.path().join(secret_name)), 0o400 & !umask());
    assert_eq!(mode(&a.path().join(public_name)), 0o444 & !umask());

    for (ty, file) in [("public", public_name), ("secret", secret_name)] {
        let exported =
            warren(&[&["origin", "key", "export", "acme", "--type", ty][..], &cache_arg(a.path())].concat());
        let text = exported.ok().to_string();
        let original = KeyFile::parse(&fs::read(a.path().join(file)).unwrap()).unwrap();
        assert_eq!(KeyFile::parse(text.as_bytes()).unwrap().bytes(), original.bytes(), "{ty}");
        let imported = warren_with(
            &[&["origin", "key", "import"][..], &cache_arg(b.path())].concat(),
            Some(text.as_bytes()),
            &[],
        );
        assert!(imported.ok().contains(&original.id.to_string()));
        assert_eq!(fs::read(b.path().join(file)).unwrap(), fs::read(a.path().join(file)).unwrap());
    }
    // Default export type is public.
    let default = warren(&[&["origin", "key", "export", "acme"][..], &cache_arg(a.path())].concat());
    assert!(default.ok().starts_with("SIG-PUB-1\n"));
    // The imported pair is usable: the secret key signs, the public key matches it.
    let cache = KeyCache::new(b.path());
    let sk = SigSecretKey::try_from(&cache.latest(KeyKind::SigSecret, "acme").unwrap()).unwrap();
    assert_eq!(sk.public().to_file().bytes(), cache.latest(KeyKind::SigPublic, "acme").unwrap().bytes());
    // Importing the same key again is fine; a different key under the same id is refused.
    let again = fs::read(a.path().join(public_name)).unwrap();
    warren_with(&[&["origin", "key", "import"][..], &cache_arg(b.path())].concat(), Some(&again), &[]).ok();
    let other = SigSecretKey { id: sk.id.clone(), key: warren::crypto::sodium::sign_keypair().1 };
    let stderr = warren_with(
        &[&["origin", "key", "import"][..], &cache_arg(b.path())].concat(),
        Some(other.to_file().to_text().as_bytes()),
        &[],
    )
    .fails()
    .to_string();
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
}

#[test]
fn ring_keys_generate_export_import() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    warren(&[&["ring", "key", "generate", "prod-ring"][..], &cache_arg(a.path())].concat()).ok();
    let exported = warren(&[&["ring", "key", "export", "prod-ring"][..], &cache_arg(a.path())].concat());
    let text = exported.ok().to_string();
    assert!(text.starts_with("SYM-SEC-1\nprod-ring-"));
    warren_with(&[&["ring", "key", "import"][..], &cache_arg(b.path())].concat(), Some(text.as_bytes()), &[])
        .ok();
    assert_eq!(files_in(a.path()), files_in(b.path()));
    // A ring import refuses other kinds; an origin import takes any kind.
    let pubkey = fs::read(core_fixture("happyhumans-20160424223347.pub")).unwrap();
    let stderr =
        warren_with(&[&["ring", "key", "import"][..], &cache_arg(b.path())].concat(), Some(&pubkey), &[])
            .fails()
            .to_string();
    assert!(stderr.contains("SYM-SEC-1"), "{stderr}");
    let missing = warren(&[&["ring", "key", "export", "nope"][..], &cache_arg(b.path())].concat());
    assert!(missing.fails().contains("\"nope\""));
}

#[test]
fn quick_repeated_generation_gives_distinct_revisions() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        warren(&[&["origin", "key", "generate", "fast"][..], &cache_arg(dir.path())].concat()).ok();
    }
    for _ in 0..2 {
        warren(&[&["ring", "key", "generate", "fast"][..], &cache_arg(dir.path())].concat()).ok();
    }
    let cache = KeyCache::new(dir.path());
    assert_eq!(cache.revisions(KeyKind::SigSecret, "fast").unwrap().len(), 3);
    assert_eq!(cache.revisions(KeyKind::SymSecret, "fast").unwrap().len(), 2);
    // Each SIG revision has its public half, and nothing half-written is left.
    assert_eq!(files_in(dir.path()).len(), 3 * 2 + 2, "{:?}", files_in(dir.path()));
    // A user key of the same name in the same cache neither clashes nor confuses the lookup.
    warren(&[&["user", "key", "generate", "fast"][..], &cache_arg(dir.path())].concat()).ok();
    assert!(cache.latest(KeyKind::BoxPublic, "fast").is_ok());
    assert!(cache.latest(KeyKind::SigPublic, "fast").is_ok());
}

#[test]
fn user_and_service_keys_are_box_pairs() {
    let dir = tempfile::tempdir().unwrap();
    warren(&[&["user", "key", "generate", "ruby-rhod"][..], &cache_arg(dir.path())].concat()).ok();
    let out =
        warren(&[&["svc", "key", "generate", "redis.default", "acme"][..], &cache_arg(dir.path())].concat());
    assert!(out.ok().contains("redis.default@acme-"));
    let cache = KeyCache::new(dir.path());
    for name in ["ruby-rhod", "redis.default@acme"] {
        let sk = BoxSecretKeyFile::try_from(&cache.latest(KeyKind::BoxSecret, name).unwrap()).unwrap();
        let pk = BoxPublicKey::try_from(&cache.latest(KeyKind::BoxPublic, name).unwrap()).unwrap();
        assert_eq!(sk.public(), pk, "{name}");
    }
    for bad in
        [&["redis", "acme"][..], &["a.b.c", "acme"], &["redis.default", "ac@me"], &["redis.default", "a/b"]]
    {
        let args = [&["svc", "key", "generate"][..], bad, &cache_arg(dir.path())].concat();
        warren(&args).fails();
    }
    warren(&[&["user", "key", "generate", "a.b"][..], &cache_arg(dir.path())].concat()).fails();
    warren(&[&["user", "key", "generate", "../x"][..], &cache_arg(dir.path())].concat()).fails();
    assert!(!dir.path().parent().unwrap().join("x").exists());
}

#[test]
fn box_messages_round_trip_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let c = cache_arg(dir.path());
    warren(&[&["user", "key", "generate", "ops"][..], &c].concat()).ok();
    warren(&[&["svc", "key", "generate", "web.prod", "acme"][..], &c].concat()).ok();
    let plain = b"[db]\npassword = \"s3cret\"\n";
    let signed = warren_with(
        &[&["box", "encrypt", "--from", "ops", "--to", "web.prod@acme"][..], &c].concat(),
        Some(plain),
        &[],
    );
    assert!(signed.ok().starts_with("BOX-1\nops-"));
    let anon =
        warren_with(&[&["box", "encrypt", "--to", "web.prod@acme"][..], &c].concat(), Some(plain), &[]);
    assert!(anon.ok().starts_with("ANONYMOUS-BOX-1\nweb.prod@acme-"));
    for msg in [&signed.stdout, &anon.stdout] {
        let out = warren_with(&[&["box", "decrypt"][..], &c].concat(), Some(msg.as_bytes()), &[]);
        assert_eq!(out.ok().as_bytes(), plain);
    }
    // Without the service's secret key nothing decrypts.
    let other = tempfile::tempdir().unwrap();
    let stderr = warren_with(
        &[&["box", "decrypt"][..], &cache_arg(other.path())].concat(),
        Some(signed.stdout.as_bytes()),
        &[],
    )
    .fails()
    .to_string();
    assert!(stderr.contains("web.prod@acme-"), "{stderr}");
    let garbage = warren_with(&[&["box", "decrypt"][..], &c].concat(), Some(b"BOX-1\nnope\n"), &[]);
    assert!(garbage.fails().contains("malformed"));
}

#[test]
fn the_cache_path_comes_from_the_environment_when_not_given() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        warren_with(&["ring", "key", "generate", "envring"], None, &[("WARREN_CACHE_KEY_PATH", dir.path())]);
    out.ok();
    assert_eq!(files_in(dir.path()).len(), 1);
    assert!(files_in(dir.path())[0].starts_with("envring-"));
    // The flag wins over the environment.
    let flag = tempfile::tempdir().unwrap();
    warren_with(
        &[&["ring", "key", "generate", "flagring"][..], &cache_arg(flag.path())].concat(),
        None,
        &[("WARREN_CACHE_KEY_PATH", dir.path())],
    )
    .ok();
    assert_eq!(files_in(dir.path()).len(), 1);
    assert_eq!(files_in(flag.path()).len(), 1);
}

#[test]
fn truncated_and_garbage_keys_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let good = fs::read(core_fixture("keys/ruby-rhod-20200813204159.box.key")).unwrap();
    let trimmed_len = good.iter().rposition(|b| !b.is_ascii_whitespace()).unwrap() + 1;
    // A few through the CLI (processes are slow)...
    for cut in [0, 5, 10, 30, 36, trimmed_len - 1] {
        let out = warren_with(
            &[&["origin", "key", "import"][..], &cache_arg(dir.path())].concat(),
            Some(&good[..cut]),
            &[],
        );
        out.fails();
    }
    let big = vec![b'A'; 100_000];
    warren_with(&[&["origin", "key", "import"][..], &cache_arg(dir.path())].concat(), Some(&big), &[])
        .fails();
    warren_with(
        &[&["origin", "key", "import"][..], &cache_arg(dir.path())].concat(),
        Some(b"\xff\xfe\x00"),
        &[],
    )
    .fails();
    assert!(files_in(dir.path()).is_empty(), "nothing imported: {:?}", files_in(dir.path()));

    // ...and every truncation and many mutations through the parser the CLI uses.
    let mut rng = Rng::new(0x5eed);
    for path in [
        core_fixture("keys/ruby-rhod-20200813204159.box.key"),
        core_fixture("happyhumans-20160424223347.sig.key"),
        core_fixture("keys/origin-key-valid-20160509190508.pub"),
        core_fixture("keys/ring-key-valid-20160504220722.sym.key"),
    ] {
        let text = fs::read(&path).unwrap();
        let content_len = text.iter().rposition(|b| !b.is_ascii_whitespace()).unwrap() + 1;
        for cut in 0..content_len {
            assert!(KeyFile::parse(&text[..cut]).is_err(), "{} cut at {cut}", path.display());
        }
        for _ in 0..2000 {
            let m = rng.mutate(&text, 3);
            // Must not panic; a mutation may still be a valid key (a changed base64 digit).
            if let Ok(k) = KeyFile::parse(&m) {
                assert_eq!(k.bytes().len(), k.kind.key_len());
            }
        }
    }
}

#[test]
fn a_closed_stdout_ends_quietly_instead_of_panicking() {
    use std::process::Stdio;
    for args in [&["completions", "bash"][..], &["bench", "verify", "--size-mb", "1", "--rounds", "1"]] {
        let mut child =
            cli::command().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take()); // the reader goes away before warren writes
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
    }
}
