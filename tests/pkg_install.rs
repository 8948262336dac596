//! `warren pkg install --remote-sup` into real `warren sup run` processes: the package streams
//! over the ctl gateway (Noise), is verified against the supervisor's key cache, and lands in
//! `{data_path}/pkgs/ORIGIN/NAME/VERSION/RELEASE` whole, or not at all.

mod support;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::cli::warren;
use support::files::{file_names, path_str};
use support::fixtures::{core_fixture, repo_root};
use support::keys::origin_keys;
use support::sup::Sup;
use support::wait::wait_until;
use warren::crypto::{KeyCache, KeyFile, SigSecretKey};
use warren::ctl::client::UploadBody;
use warren::ctl::proto::{self, ErrCode};
use warren::ctl::{ClientError, CtlClient, CtlRequest, CtlSecret};
use warren::services::{PackageIdent, PackageStore};

/// A supervisor whose ctl gateway gives each chunk 1 s (so a stalled client is dropped fast).
fn sup(dir: &Path, host: u8) -> Sup {
    Sup::start(dir, host, vec!["--ctl-handshake-timeout".into(), "1s".into()], vec![])
}

/// The supervisor's key cache (`sup run` gets WARREN_CACHE_KEY_PATH={data}/keys).
fn sup_keys(s: &Sup) -> KeyCache {
    KeyCache::new(s.data.join("keys"))
}

fn trust(s: &Sup, public_key_file: &Path) {
    let key = KeyFile::parse(&fs::read(public_key_file).unwrap()).unwrap();
    sup_keys(s).write(&key).unwrap();
}

fn trust_key(s: &Sup, key: &SigSecretKey) {
    sup_keys(s).write(&key.public().to_file()).unwrap();
}

/// Builds the example package with `origin`'s key from `keys`; returns the .hart.
fn build_example(keys: &Path, origin: &str, out: &Path) -> PathBuf {
    support::packages::build_hello_http(keys, origin, out)
}

/// Relative path → (is_dir, mode, contents) of everything under `root`.
fn tree(root: &Path) -> Vec<(String, bool, u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, bool, u32, Vec<u8>)>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if m.is_dir() {
                out.push((rel, true, m.permissions().mode() & 0o777, vec![]));
                walk(root, &p, out);
            } else {
                out.push((rel, false, m.permissions().mode() & 0o777, fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

/// Nothing half-done anywhere: no staging directory in the store, no spool file.
fn assert_no_leftovers(s: &Sup) {
    let pkgs = s.data.join("pkgs");
    if pkgs.exists() {
        let hidden: Vec<String> = file_names(&pkgs).into_iter().filter(|n| n.starts_with('.')).collect();
        assert!(hidden.is_empty(), "staging left in the store: {hidden:?}");
    }
    let tmp = s.data.join("tmp");
    if tmp.exists() {
        assert!(file_names(&tmp).is_empty(), "spool files left: {:?}", file_names(&tmp));
    }
}

fn installed(s: &Sup) -> Vec<String> {
    PackageStore::under(&s.data).list().unwrap().into_iter().map(|p| p.ident.to_string()).collect()
}

#[test]
fn a_built_package_installs_over_the_ctl_gateway_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = sup(dir.path(), 141);
    let keys = dir.path().join("author-keys");
    let author = origin_keys(&keys, "acme");
    let hart = build_example(&keys, "acme", dir.path());
    let name = hart.file_name().unwrap().to_string_lossy().into_owned();
    let rel =
        name.trim_start_matches("acme-hello-http-0.1.0-").trim_end_matches("-x86_64-linux.hart").to_string();
    let ident = format!("acme/hello-http/0.1.0/{rel}");

    // Unknown to the supervisor until its public key is imported there.
    let err = s.cli(&["pkg", "install", path_str(&hart)]).fails().to_string();
    assert!(err.contains(&format!("{}", author.id)) && err.contains("unknown here"), "{err}");
    assert!(installed(&s).is_empty());
    assert_no_leftovers(&s);

    trust_key(&s, &author);
    let run = s.cli(&["pkg", "install", path_str(&hart)]);
    let out = run.ok();
    assert!(out.contains(&format!("Installed {ident} on {}", s.ctl)), "{out}");
    assert!(out.contains("Verified ") && out.contains(&format!("signed by {}", author.id)), "{out}");
    assert_eq!(installed(&s), std::slice::from_ref(&ident));

    // The store holds exactly the payload's package directory, as `pkg extract` unpacks it.
    let extracted = dir.path().join("extracted");
    warren(&["pkg", "extract", path_str(&hart), path_str(&extracted), "--cache-key-path", path_str(&keys)])
        .ok();
    let in_store = s.data.join("pkgs").join(&ident);
    assert_eq!(tree(&in_store), tree(&extracted.join("hab/pkgs").join(&ident)));
    assert_eq!(fs::metadata(in_store.join("hooks/run")).unwrap().permissions().mode() & 0o777, 0o755);
    let store = PackageStore::under(&s.data);
    let pkg = store.get(&ident.parse::<PackageIdent>().unwrap()).unwrap().unwrap();
    let meta = pkg.meta().unwrap();
    assert_eq!(meta.ident.unwrap().to_string(), ident);
    assert_eq!((meta.exposes.as_slice(), meta.svc_user.as_deref()), (&[8080u16][..], Some("nobody")));
    assert_eq!(pkg.run_script(), Some(in_store.join("hooks/run")));
    assert_no_leftovers(&s);

    // Twice: idempotent, and says so.
    let before = tree(&s.data.join("pkgs"));
    let again = s.cli(&["pkg", "install", path_str(&hart)]);
    assert!(again.ok().contains(&format!("{ident} is already installed")), "{}", again.stdout);
    assert_eq!(tree(&s.data.join("pkgs")), before);
    assert_no_leftovers(&s);
    assert!(!s.log_tail().contains("panicked"));
}

#[test]
fn habitats_own_package_installs_and_bad_ones_are_refused_leaving_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = sup(dir.path(), 142);
    trust(&s, &core_fixture("happyhumans-20160424223347.pub"));
    let happy = core_fixture("happyhumans-possums-8.1.4-20160427165340-x86_64-linux.hart");
    let out = s.cli(&["pkg", "install", path_str(&happy)]);
    assert!(out.ok().contains("Installed happyhumans/possums/8.1.4/20160427165340"), "{}", out.stdout);
    let root = s.data.join("pkgs/happyhumans/possums/8.1.4/20160427165340");
    assert_eq!(file_names(&root), ["IDENT", "MANIFEST", "TARGET", "share"]);
    assert_eq!(fs::read(root.join("share/signme.dat")).unwrap(), b"foo\n");
    assert_eq!(
        fs::read(root.join("share/signme.dat")).unwrap(),
        fs::read(core_fixture("signme.dat")).unwrap()
    );
    let before = tree(&s.data.join("pkgs"));
    let unchanged = |what: &str| {
        assert_eq!(tree(&s.data.join("pkgs")), before, "{what}: the store changed");
        assert_no_leftovers(&s);
    };

    // Signed digest does not match the payload.
    let unhappy = core_fixture("unhappyhumans-possums-8.1.4-20160427165340-x86_64-linux.hart");
    let err = s.cli(&["pkg", "install", path_str(&unhappy)]).fails().to_string();
    assert!(err.contains("hashes don't match"), "{err}");
    unchanged("unhappyhumans");

    // An origin the supervisor has no key for.
    let keys = dir.path().join("author-keys");
    origin_keys(&keys, "beta");
    let beta = build_example(&keys, "beta", dir.path());
    let err = s.cli(&["pkg", "install", path_str(&beta)]).fails().to_string();
    assert!(err.contains("beta-") && err.contains("unknown here"), "{err}");
    unchanged("unknown origin");

    // Tampered: one payload byte flipped in a package of a trusted origin.
    let acme = origin_keys(&keys, "acme");
    trust_key(&s, &acme);
    let good = build_example(&keys, "acme", dir.path());
    let mut bytes = fs::read(&good).unwrap();
    let at = bytes.len() * 2 / 3;
    bytes[at] ^= 0x10;
    let tampered = dir.path().join("tampered.hart");
    fs::write(&tampered, &bytes).unwrap();
    let err = s.cli(&["pkg", "install", path_str(&tampered)]).fails().to_string();
    assert!(err.contains("hashes don't match"), "{err}");
    unchanged("tampered");

    // Signed by a trusted origin's key, but claiming another origin's name.
    let forged = dir.path().join("forged");
    let pkg = forged.join("hab/pkgs/acme/evil/1.0.0/20240101000000");
    fs::create_dir_all(&pkg).unwrap();
    fs::write(pkg.join("IDENT"), "acme/evil/1.0.0/20240101000000\n").unwrap();
    let forged_hart = dir.path().join("forged.hart");
    let hh_secret = core_fixture("happyhumans-20160424223347.sig.key");
    let hh_cache = dir.path().join("hh-keys");
    KeyCache::new(&hh_cache).write(&KeyFile::parse(&fs::read(hh_secret).unwrap()).unwrap()).unwrap();
    warren(&[
        "pkg",
        "sign",
        "--origin",
        "happyhumans",
        path_str(&forged),
        path_str(&forged_hart),
        "--cache-key-path",
        path_str(&hh_cache),
    ])
    .ok();
    let err = s.cli(&["pkg", "install", path_str(&forged_hart)]).fails().to_string();
    assert!(err.contains("its origin is \"acme\""), "{err}");
    unchanged("wrong origin");

    // Verified, but not laid out as a package.
    let plain = dir.path().join("plain");
    fs::create_dir_all(plain.join("bin")).unwrap();
    fs::write(plain.join("bin/tool"), "x").unwrap();
    let plain_hart = dir.path().join("plain.hart");
    warren(&[
        "pkg",
        "sign",
        "--origin",
        "acme",
        path_str(&plain),
        path_str(&plain_hart),
        "--cache-key-path",
        path_str(&keys),
    ])
    .ok();
    let err = s.cli(&["pkg", "install", path_str(&plain_hart)]).fails().to_string();
    assert!(err.contains("not laid out as Habitat's"), "{err}");
    unchanged("no layout");

    // Not a package at all.
    let junk = dir.path().join("junk.hart");
    fs::write(&junk, "hello\nthis is not a package\n").unwrap();
    let err = s.cli(&["pkg", "install", path_str(&junk)]).fails().to_string();
    assert!(err.contains("HART-1") || err.contains("header"), "{err}");
    unchanged("junk");
    assert!(!s.log_tail().contains("panicked"));
}

fn client(s: &Sup) -> CtlClient {
    CtlClient::new(&s.ctl, CtlSecret::new(&s.ctl_secret()).unwrap())
}

fn install_req(size: u64) -> CtlRequest {
    CtlRequest::PkgInstall(proto::PkgInstall { size: Some(size), file_name: Some("test.hart".into()) })
}

/// Gives `cut` bytes of `data`, then waits `stall` and fails (a client that stops sending).
struct Stalling {
    data: Vec<u8>,
    pos: usize,
    cut: usize,
    stall: Duration,
}

impl Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.cut {
            std::thread::sleep(self.stall);
            return Err(std::io::Error::other("the client stopped sending"));
        }
        let n = buf.len().min(self.cut - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A package big enough to take several chunks: the example plus 3 MiB of incompressible data.
fn big_package(dir: &Path, keys: &Path) -> PathBuf {
    let src = dir.join("big-src");
    let example = repo_root().join("examples/packages/hello-http");
    fs::create_dir_all(src.join("hooks")).unwrap();
    fs::copy(example.join("plan.toml"), src.join("plan.toml")).unwrap();
    fs::copy(example.join("default.toml"), src.join("default.toml")).unwrap();
    fs::copy(example.join("hooks/run"), src.join("hooks/run")).unwrap();
    let mut rng = support::rng::Rng::new(7);
    let blob: Vec<u8> = (0..3 * 1024 * 1024).map(|_| rng.next() as u8).collect();
    fs::write(src.join("blob.bin"), blob).unwrap();
    let out = dir.join("big-out");
    let run = warren(&[
        "pkg",
        "build",
        path_str(&src),
        "--origin",
        "acme",
        "--out",
        path_str(&out),
        "--cache-key-path",
        path_str(keys),
    ]);
    PathBuf::from(run.ok().lines().last().unwrap())
}

#[test]
fn an_interrupted_or_oversized_upload_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = sup(dir.path(), 143);
    let keys = dir.path().join("author-keys");
    let acme = origin_keys(&keys, "acme");
    trust_key(&s, &acme);
    let hart = big_package(dir.path(), &keys);
    let data = fs::read(&hart).unwrap();
    let len = data.len() as u64;
    assert!(len > 2 * 1024 * 1024, "several chunks: {len}");

    // 1. Stops sending halfway and stays silent: the gateway gives up after its 1 s timeout,
    //    while the client is still connected. The spool file existed, and is gone.
    let c = client(&s);
    let spool = s.data.join("tmp");
    let stalled = std::thread::scope(|scope| {
        let upload = scope.spawn(|| {
            let mut body =
                Stalling { data: data.clone(), pos: 0, cut: data.len() / 2, stall: Duration::from_secs(4) };
            c.upload(&install_req(len), UploadBody { body: &mut body, len, on_sent: &mut |_| () }, |_| ())
        });
        wait_until(Duration::from_secs(20), "an upload being spooled", || {
            spool.exists() && !file_names(&spool).is_empty()
        });
        upload.join().unwrap()
    });
    let err = stalled.unwrap_err();
    let net = err.net_err().unwrap_or_else(|| panic!("expected the supervisor's answer, got {err}"));
    assert_eq!(net.err_code(), ErrCode::Io, "{net}");
    assert!(net.msg.contains("sent nothing for 1s"), "{net}");
    assert!(installed(&s).is_empty());
    assert_no_leftovers(&s);

    // 2. Goes away halfway (the connection closes): also nothing kept.
    let mut body = Stalling { data: data.clone(), pos: 0, cut: data.len() / 3, stall: Duration::ZERO };
    let gone = c.upload(&install_req(len), UploadBody { body: &mut body, len, on_sent: &mut |_| () }, |_| ());
    // The client reports its own failure (or, if it already arrived, the supervisor's answer).
    let went_away = |e: &ClientError| e.net_err().is_some_and(|n| n.msg.contains("went away after"));
    assert!(matches!(&gone, Err(e) if matches!(e, ClientError::Io { .. }) || went_away(e)), "{gone:?}");
    wait_until(Duration::from_secs(20), "the supervisor noticing the client left", || {
        fs::read_to_string(&s.log).unwrap_or_default().contains("went away after")
    });
    assert!(installed(&s).is_empty());
    assert_no_leftovers(&s);

    // 3. More than 1 GiB announced: refused before a byte is read.
    let mut zeros = std::io::repeat(0);
    let huge = 1024 * 1024 * 1024 + 1;
    let err = c
        .upload(&install_req(huge), UploadBody { body: &mut zeros, len: huge, on_sent: &mut |_| () }, |_| ())
        .unwrap_err();
    let net = err.net_err().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(net.err_code(), ErrCode::EntityTooLarge, "{net}");
    assert!(net.msg.contains("at most 1073741824 bytes"), "{net}");
    assert_no_leftovers(&s);

    // 4. A chunk stream longer than announced is refused.
    let short = len - 10;
    let mut whole = std::io::Cursor::new(data.clone());
    // The client sends exactly `len` bytes of the request; announce fewer with a raw request.
    let err = c
        .upload(&install_req(short), UploadBody { body: &mut whole, len, on_sent: &mut |_| () }, |_| ())
        .unwrap_err();
    let net = err.net_err().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(net.err_code(), ErrCode::EntityTooLarge, "{net}");
    assert_no_leftovers(&s);

    // And after all that, the same package still installs, whole.
    let mut f = fs::File::open(&hart).unwrap();
    let mut sent = 0;
    let mut progress = Vec::new();
    let reply = c
        .upload(&install_req(len), UploadBody { body: &mut f, len, on_sent: &mut |n| sent = n }, |f| {
            if let Ok(p) = f.decode::<proto::NetProgress>() {
                progress.push((p.position, p.total));
            }
        })
        .unwrap();
    assert_eq!(sent, len);
    let done: proto::PkgInstalled = reply.decode().unwrap();
    assert!(!done.already_installed);
    assert_eq!(progress.last(), Some(&(len, len)), "NetProgress ends at the full size: {progress:?}");
    assert_eq!(installed(&s).len(), 1);
    assert_no_leftovers(&s);
    assert!(!s.log_tail().contains("panicked"));
}
