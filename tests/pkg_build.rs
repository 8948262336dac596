//! `warren pkg build` through the real binary: the example package and hostile plans; the
//! built package verifies and its payload has exactly Habitat's layout and metadata files.
//! Also the example's own server, run for real.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::Digest as _;
use support::cli::{Run, warren};
use support::files::{file_names, path_str};
use support::fixtures::{core_fixture, repo_root};
use support::keys::origin_keys;
use warren::crypto::hart::HartHeader;

fn example() -> PathBuf {
    repo_root().join("examples/packages/hello-http")
}

fn build(src: &Path, origin: &str, keys: &Path, out: &Path) -> Run {
    support::packages::pkg_build(src, origin, keys, out)
}

/// One payload entry: (kind, mode, uid, gid, contents or link target).
type Entries = BTreeMap<String, (char, u32, u64, u64, Vec<u8>)>;

/// Every entry of the package's xz tarball, by path.
fn payload(hart: &Path) -> Entries {
    let mut r = BufReader::new(fs::File::open(hart).unwrap());
    HartHeader::read(&mut r).unwrap();
    let mut tar = tar::Archive::new(xz2::read::XzDecoder::new(r));
    let mut out = BTreeMap::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Regular => 'f',
            tar::EntryType::Symlink => 'l',
            other => panic!("unexpected entry type {other:?} for {path}"),
        };
        let mut body = Vec::new();
        if kind == 'l' {
            body = e.link_name().unwrap().unwrap().to_string_lossy().as_bytes().to_vec();
        } else {
            e.read_to_end(&mut body).unwrap();
        }
        let prev = out.insert(
            path.clone(),
            (kind, h.mode().unwrap() & 0o7777, h.uid().unwrap(), h.gid().unwrap(), body),
        );
        assert!(prev.is_none(), "{path} twice in the payload");
    }
    out
}

/// The release in `acme-hello-http-0.1.0-RELEASE-x86_64-linux.hart`.
fn release_of(path: &Path, prefix: &str) -> String {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let rest = name.strip_prefix(prefix).unwrap_or_else(|| panic!("{name} does not start with {prefix}"));
    let rel = rest.strip_suffix("-x86_64-linux.hart").unwrap_or_else(|| panic!("{name}: no target suffix"));
    assert_eq!(rel.len(), 14, "{name}");
    assert!(rel.bytes().all(|b| b.is_ascii_digit()), "{name}");
    rel.to_string()
}

#[test]
fn the_example_builds_verifies_and_has_habitats_layout_and_metadata() {
    let keys = tempfile::tempdir().unwrap();
    origin_keys(keys.path(), "acme");
    let out = tempfile::tempdir().unwrap();
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let run = build(&example(), "acme", keys.path(), out.path());
    let stdout = run.ok();
    let hart = PathBuf::from(stdout.lines().last().unwrap());
    assert_eq!(hart.parent().unwrap(), out.path(), "written into --out");
    assert_eq!(file_names(out.path()), [hart.file_name().unwrap().to_string_lossy().into_owned()]);
    let rel = release_of(&hart, "acme-hello-http-0.1.0-");
    let fmt = time::macros::format_description!("[year][month][day][hour][minute][second]");
    let at = time::PrimitiveDateTime::parse(&rel, &fmt).unwrap().assume_utc().unix_timestamp();
    assert!(at >= before - 1 && at <= before + 120, "release {rel} is the UTC build time");
    assert!(stdout.contains(&format!("Built acme/hello-http/0.1.0/{rel}")), "{stdout}");

    let verified = warren(&["pkg", "verify", path_str(&hart), "--cache-key-path", path_str(keys.path())]);
    assert!(verified.ok().contains("signed by acme-"), "{}", verified.stdout);

    let entries = payload(&hart);
    let prefix = format!("hab/pkgs/acme/hello-http/0.1.0/{rel}");
    let mut expected_paths: Vec<String> =
        ["hab", "hab/pkgs", "hab/pkgs/acme", "hab/pkgs/acme/hello-http", "hab/pkgs/acme/hello-http/0.1.0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    expected_paths.push(prefix.clone());
    for rel_path in [
        "EXPORTS",
        "EXPOSES",
        "IDENT",
        "MANIFEST",
        "README.md",
        "SHUTDOWN_SIGNAL",
        "SHUTDOWN_TIMEOUT",
        "SVC_GROUP",
        "SVC_USER",
        "TARGET",
        "bin",
        "bin/server.pl",
        "config",
        "config/response.txt",
        "config/server.conf",
        "default.toml",
        "hooks",
        "hooks/health-check",
        "hooks/reconfigure",
        "hooks/run",
    ] {
        expected_paths.push(format!("{prefix}/{rel_path}"));
    }
    expected_paths.sort();
    assert_eq!(entries.keys().cloned().collect::<Vec<_>>(), expected_paths, "exactly Habitat's layout");
    let text = |p: &str| String::from_utf8(entries[&format!("{prefix}/{p}")].4.clone()).unwrap();
    assert_eq!(text("IDENT"), format!("acme/hello-http/0.1.0/{rel}\n"));
    assert_eq!(text("SVC_USER"), "nobody\n");
    assert_eq!(text("SVC_GROUP"), "nogroup\n");
    assert_eq!(text("EXPORTS"), "port=http.port\n");
    assert_eq!(text("EXPOSES"), "8080\n");
    assert_eq!(text("SHUTDOWN_SIGNAL"), "TERM\n");
    assert_eq!(text("SHUTDOWN_TIMEOUT"), "5\n");
    // Byte for byte what Habitat's own package (the happyhumans fixture) has for the same file.
    let fixture = fixture_payload();
    let hh = "hab/pkgs/happyhumans/possums/8.1.4/20160427165340";
    assert_eq!(entries[&format!("{prefix}/TARGET")].4, fixture[&format!("{hh}/TARGET")].4);
    let hh_ident = String::from_utf8(fixture[&format!("{hh}/IDENT")].4.clone()).unwrap();
    assert_eq!(hh_ident, "happyhumans/possums/8.1.4/20160427165340\n", "the same IDENT shape");

    // Sources unchanged, executables stay executable, everything owned by root.
    for (path, (kind, mode, uid, gid, body)) in &entries {
        assert_eq!((*uid, *gid), (0, 0), "{path}");
        let Some(inner) = path.strip_prefix(&format!("{prefix}/")) else { continue };
        let src = example().join(inner);
        if *kind == 'f' && src.exists() {
            assert_eq!(body, &fs::read(&src).unwrap(), "{inner} copied as is");
            let exec = fs::metadata(&src).unwrap().permissions().mode() & 0o111 != 0;
            assert_eq!(*mode, if exec { 0o755 } else { 0o644 }, "{inner}");
        }
        if *kind == 'd' {
            assert_eq!(*mode, 0o755, "{path}");
        }
    }
    assert_eq!(entries[&format!("{prefix}/hooks/run")].1, 0o755);
    assert_eq!(entries[&format!("{prefix}/config/server.conf")].1, 0o644);

    // MANIFEST: Habitat's summary, the plan, and each file's SHA-256 under /hab/pkgs/...
    let manifest = text("MANIFEST");
    assert!(manifest.starts_with("acme hello-http\n=========================\n"), "{manifest}");
    assert!(manifest.contains(&format!("Release: {rel}\n")) && manifest.contains("Target: x86_64-linux\n"));
    assert!(manifest.contains(fs::read_to_string(example().join("plan.toml")).unwrap().trim_end()));
    let files: Vec<&str> = manifest.split("\nFiles\n-----\n").nth(1).unwrap().lines().collect();
    let listed: Vec<String> = entries
        .iter()
        .filter(|(p, e)| e.0 == 'f' && !p.ends_with("/MANIFEST"))
        .map(|(p, e)| format!("{}  /{p}", hex::encode(sha2::Sha256::digest(&e.4))))
        .collect();
    assert_eq!(files, listed, "one line per file, SHA-256 as Habitat's MANIFEST");

    // Extracted, the hooks are executable files on disk.
    let dest = tempfile::tempdir().unwrap();
    warren(&[
        "pkg",
        "extract",
        path_str(&hart),
        path_str(dest.path()),
        "--cache-key-path",
        path_str(keys.path()),
    ])
    .ok();
    let run_hook = dest.path().join(&prefix).join("hooks/run");
    assert_eq!(fs::metadata(&run_hook).unwrap().permissions().mode() & 0o777, 0o755);
}

fn fixture_payload() -> Entries {
    payload(&core_fixture("happyhumans-possums-8.1.4-20160427165340-x86_64-linux.hart"))
}

/// A source directory with `plan.toml` = `plan` and `files` (path, contents, mode).
fn source(plan: &str, files: &[(&str, &str, u32)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("plan.toml"), plan).unwrap();
    for (p, text, mode) in files {
        let path = d.path().join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
    }
    d
}

const RUN: (&str, &str, u32) = ("hooks/run", "#!/bin/sh\nexec sleep 1000\n", 0o755);
const OK_PLAN: &str = "name = \"svc\"\nversion = \"1.0.0\"\n";

#[test]
fn hostile_plans_are_refused_clearly_and_write_nothing() {
    let keys = tempfile::tempdir().unwrap();
    origin_keys(keys.path(), "acme");
    let cases: Vec<(&str, tempfile::TempDir, Vec<&str>)> = vec![
        ("bad TOML", source("name = \"svc\"\nversion = \n", &[RUN]), vec!["plan.toml", "line 2"]),
        (
            "unknown key",
            source("name = \"svc\"\nversion = \"1\"\npkg_deps = [\"core/glibc\"]\n", &[RUN]),
            vec!["unknown field `pkg_deps`", "svc_user", "shutdown_timeout", "binds_optional"],
        ),
        (
            "missing run",
            source(OK_PLAN, &[("default.toml", "a = 1\n", 0o644)]),
            vec!["no hooks/run", "run ="],
        ),
        ("missing name", source("version = \"1\"\n", &[RUN]), vec!["missing field `name`"]),
        ("missing version", source("name = \"svc\"\n", &[RUN]), vec!["missing field `version`"]),
        (
            "bad default.toml",
            source(OK_PLAN, &[RUN, ("default.toml", "[a\n", 0o644)]),
            vec!["default.toml is not valid TOML"],
        ),
        (
            "unknown hook",
            source(OK_PLAN, &[RUN, ("hooks/healthcheck", "#!/bin/sh\n", 0o755)]),
            vec!["hooks/healthcheck is not a hook", "health-check"],
        ),
        (
            "two runs",
            source("name = \"svc\"\nversion = \"1\"\nrun = \"sleep 1\"\n", &[RUN]),
            vec!["both hooks/run and a run entry"],
        ),
        (
            "exposes without a port",
            source(
                "name = \"svc\"\nversion = \"1\"\nexports = { port = \"http.port\" }\nexposes = [\"port\"]\n",
                &[RUN, ("default.toml", "[http]\nport = \"eighty\"\n", 0o644)],
            ),
            vec!["not a TCP or UDP port"],
        ),
        (
            "a generated file in the source",
            source(OK_PLAN, &[RUN, ("IDENT", "evil/x/1/20200101000000\n", 0o644)]),
            vec!["IDENT is written by warren pkg build"],
        ),
        ("bad name", source("name = \"../svc\"\nversion = \"1\"\n", &[RUN]), vec!["the name"]),
    ];
    for (what, src, wants) in &cases {
        let out = tempfile::tempdir().unwrap();
        let err = build(src.path(), "acme", keys.path(), out.path()).fails().to_string();
        for want in wants {
            assert!(err.contains(want), "{what}: {want:?} not in {err}");
        }
        assert!(
            file_names(out.path()).is_empty(),
            "{what}: nothing written, got {:?}",
            file_names(out.path())
        );
    }
    // A symlink leaving the package, and a directory without plan.toml.
    let src = source(OK_PLAN, &[RUN]);
    std::os::unix::fs::symlink("/etc/passwd", src.path().join("passwd")).unwrap();
    let out = tempfile::tempdir().unwrap();
    assert!(build(src.path(), "acme", keys.path(), out.path()).fails().contains("outside the package"));
    let empty = tempfile::tempdir().unwrap();
    assert!(build(empty.path(), "acme", keys.path(), out.path()).fails().contains("has no plan.toml"));
    // An origin without a secret key in the cache.
    assert!(build(&example(), "nobody-here", keys.path(), out.path()).fails().contains("nobody-here"));
    assert!(file_names(out.path()).is_empty());
}

#[test]
fn a_run_entry_binds_and_what_is_left_out() {
    let keys = tempfile::tempdir().unwrap();
    origin_keys(keys.path(), "acme");
    let plan = "name = \"worker\"\nversion = \"2.1\"\nrun = \"sleep 1000\"\nshutdown_signal = \"SIGINT\"\n\
                exports = { port = \"p\" }\n[binds]\ndb = [\"port\", \"host\"]\n[binds_optional]\ncache = [\"port\"]\n";
    let src = source(
        plan,
        &[
            ("data/file.txt", "x\n", 0o600),
            (".git/HEAD", "ref\n", 0o644),
            ("old-build.hart", "not a package\n", 0o644),
            ("data/nested/also.hart", "no\n", 0o644),
        ],
    );
    std::os::unix::fs::symlink("data/file.txt", src.path().join("link")).unwrap();
    let out = tempfile::tempdir().unwrap();
    // The current directory is the default --out.
    let mut cmd = support::cli::command();
    cmd.args([
        "pkg",
        "build",
        path_str(src.path()),
        "--origin",
        "acme",
        "--cache-key-path",
        path_str(keys.path()),
    ])
    .current_dir(out.path());
    let run = support::cli::run(&mut cmd, None);
    let hart = out.path().join(run.ok().lines().last().unwrap());
    assert!(hart.is_file(), "{}", hart.display());
    let rel = release_of(&hart, "acme-worker-2.1-");
    let prefix = format!("hab/pkgs/acme/worker/2.1/{rel}");
    let entries = payload(&hart);
    let names: Vec<&str> = entries.keys().filter_map(|k| k.strip_prefix(&format!("{prefix}/"))).collect();
    assert_eq!(
        names,
        [
            "BINDS",
            "BINDS_OPTIONAL",
            "EXPORTS",
            "IDENT",
            "MANIFEST",
            "SHUTDOWN_SIGNAL",
            "SVC_GROUP",
            "SVC_USER",
            "TARGET",
            "data",
            "data/file.txt",
            "data/nested",
            "link",
            "run",
        ]
    );
    let get = |p: &str| &entries[&format!("{prefix}/{p}")];
    assert_eq!(get("BINDS").4, b"db=port host\n");
    assert_eq!(get("BINDS_OPTIONAL").4, b"cache=port\n");
    assert_eq!(get("SHUTDOWN_SIGNAL").4, b"INT\n");
    assert_eq!(get("SVC_USER").4, b"hab\n", "Habitat's default user");
    assert_eq!(get("run").1, 0o755);
    assert!(String::from_utf8_lossy(&get("run").4).contains("exec sleep 1000 2>&1"));
    assert_eq!((get("link").0, get("link").4.as_slice()), ('l', &b"data/file.txt"[..]));
    assert_eq!(get("data/file.txt").1, 0o644, "not executable: 0644");
}

/// Reads the server's log until it says where it listens.
fn listening_port(child: &mut std::process::Child) -> (u16, BufReader<std::process::ChildStdout>) {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port = line.trim().rsplit_once(':').and_then(|(_, p)| p.parse().ok());
    (port.unwrap_or_else(|| panic!("no port in {line:?}")), out)
}

fn get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn the_example_server_answers_with_its_configured_response() {
    assert!(Path::new("/usr/bin/perl").exists(), "perl-base is Essential on Debian; the example needs it");
    let d = tempfile::tempdir().unwrap();
    let response = d.path().join("response.txt");
    fs::write(&response, "Hello from the test\n").unwrap();
    let conf = d.path().join("server.conf");
    fs::write(&conf, format!("listen = 127.0.0.1\nport = 0\nresponse = {}\n", response.display())).unwrap();
    let mut child = Command::new("perl")
        .arg(example().join("bin/server.pl"))
        .arg(&conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (port, _log) = listening_port(&mut child);
    let reply = get(port, "/");
    assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nHello from the test\n"), "{reply}");
    assert!(reply.contains("Content-Length: 20\r\n"), "{reply}");
    // Read on every request: a re-rendered file shows at once.
    fs::write(&response, "Changed\n").unwrap();
    assert!(get(port, "/").ends_with("\r\n\r\nChanged\n"));
    assert!(get(port, "/other").starts_with("HTTP/1.0 404 "));
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM stops it cleanly: {status:?}");

    // The run hook says clearly when perl is missing.
    let out = Command::new("/bin/sh")
        .arg(example().join("hooks/run"))
        .env_clear()
        .env("PATH", d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("perl is not installed"), "{text}");
}
