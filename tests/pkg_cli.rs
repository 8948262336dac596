//! Packages through the real `warren` binary: sign a directory or tarball, verify, header,
//! extract to the same files; tampering anywhere is caught; truncations never panic.

mod support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::cli::{warren, warren_with};
use support::files::path_str;
use support::fixtures::core_fixture;
use support::keys::origin_keys;
use support::rng::Rng;
use warren::crypto::hart::{self, HartError};
use warren::crypto::{KeyCache, archive};

/// A key cache with a fresh `acme` origin pair.
fn origin_cache() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    origin_keys(dir.path(), "acme");
    dir
}

/// A small tree with nested dirs, an executable, an empty file, a 3 MiB binary file (several
/// read chunks) and internal symlinks.
fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("share/doc/deep")).unwrap();
    fs::write(root.join("bin/run"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("share/empty"), "").unwrap();
    fs::write(root.join("share/doc/deep/README"), "deep\n").unwrap();
    let mut rng = Rng::new(42);
    let blob: Vec<u8> = (0..3 * 1024 * 1024).map(|_| rng.next() as u8).collect();
    fs::write(root.join("share/blob.bin"), blob).unwrap();
    std::os::unix::fs::symlink("bin/run", root.join("run-link")).unwrap();
    std::os::unix::fs::symlink("../../blob.bin", root.join("share/doc/deep/blob-link")).unwrap();
}

/// Relative path -> (kind, mode, contents or link target) for every entry under `root`.
fn snapshot(root: &Path) -> Vec<(PathBuf, String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String, u32, Vec<u8>)>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let meta = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let mode = meta.permissions().mode() & 0o777;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&p).unwrap();
                out.push((rel, "link".into(), 0, target.to_string_lossy().as_bytes().to_vec()));
            } else if meta.is_dir() {
                out.push((rel, "dir".into(), mode, Vec::new()));
                walk(root, &p, out);
            } else {
                out.push((rel, "file".into(), mode, fs::read(&p).unwrap()));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// `warren pkg sign --origin acme SRC DEST` with the given key cache; must succeed.
fn sign_pkg(src: &std::path::Path, dest: &std::path::Path, keys: &std::path::Path) {
    warren(&[
        "pkg",
        "sign",
        "--origin",
        "acme",
        path_str(src),
        path_str(dest),
        "--cache-key-path",
        path_str(keys),
    ])
    .ok();
}

#[test]
fn sign_a_directory_verify_header_extract_gives_the_same_files() {
    let keys = origin_cache();
    let c = path_str(keys.path());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    sample_tree(&src);
    let hart_path = work.path().join("acme-app-1.0.0.hart");
    let signed = warren(&[
        "pkg",
        "sign",
        "--origin",
        "acme",
        path_str(&src),
        path_str(&hart_path),
        "--cache-key-path",
        c,
    ]);
    assert!(signed.ok().contains("with acme-"));
    assert_eq!(
        fs::read_dir(work.path()).unwrap().count(),
        2,
        "only src and the package: no temp files left beside DEST"
    );

    let verified = warren(&["pkg", "verify", path_str(&hart_path), "--cache-key-path", c]);
    assert!(verified.ok().contains("signed by acme-"));
    let header = warren(&["pkg", "header", path_str(&hart_path)]);
    let text = header.ok();
    assert!(text.contains("Format Version: HART-1") && text.contains("Key Name: acme-"), "{text}");
    assert!(text.contains("Hash Type: BLAKE2b") && text.contains("Raw Signature: "), "{text}");

    let dest = work.path().join("out/nested");
    let extracted = warren(&["pkg", "extract", path_str(&hart_path), path_str(&dest), "--cache-key-path", c]);
    extracted.ok();
    assert_eq!(snapshot(&dest), snapshot(&src));
    assert_eq!(fs::symlink_metadata(&dest).unwrap().permissions().mode() & 0o777, 0o755);

    // Extracting again into the same place refuses (no file is ever replaced) and changes nothing.
    let before = snapshot(&dest);
    let again = warren(&["pkg", "extract", path_str(&hart_path), path_str(&dest), "--cache-key-path", c]);
    assert!(again.fails().contains("already exists"));
    assert_eq!(snapshot(&dest), before);
    assert_eq!(fs::read_dir(work.path().join("out")).unwrap().count(), 1, "no staging dir left");

    // Merging into an existing directory with other content works.
    let merged = work.path().join("merged");
    fs::create_dir_all(merged.join("share")).unwrap();
    fs::write(merged.join("share/mine"), "keep").unwrap();
    warren(&["pkg", "extract", path_str(&hart_path), path_str(&merged), "--cache-key-path", c]).ok();
    assert_eq!(fs::read_to_string(merged.join("share/mine")).unwrap(), "keep");
    assert_eq!(
        fs::read(merged.join("share/blob.bin")).unwrap(),
        fs::read(src.join("share/blob.bin")).unwrap()
    );

    // A destination given as a symlink to a directory is followed; a file is refused.
    fs::create_dir(work.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real", work.path().join("via-link")).unwrap();
    let via = work.path().join("via-link");
    warren(&["pkg", "extract", path_str(&hart_path), path_str(&via), "--cache-key-path", c]).ok();
    assert_eq!(snapshot(&work.path().join("real")), snapshot(&src));
    let file_dest = src.join("bin/run");
    let stderr =
        warren(&["pkg", "extract", path_str(&hart_path), path_str(&file_dest), "--cache-key-path", c])
            .fails()
            .to_string();
    assert!(stderr.contains("is not a directory"), "{stderr}");
}

#[test]
fn sign_an_xz_tarball_and_refuse_other_files() {
    let keys = origin_cache();
    let c = path_str(keys.path());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    sample_tree(&src);
    let tarball = work.path().join("payload.tar.xz");
    let mut f = fs::File::create(&tarball).unwrap();
    archive::pack_dir(&src, &mut f).unwrap();
    drop(f);
    let hart_path = work.path().join("p.hart");
    warren(&[
        "pkg",
        "sign",
        "--origin",
        "acme",
        path_str(&tarball),
        path_str(&hart_path),
        "--cache-key-path",
        c,
    ])
    .ok();
    // The payload is the tarball, byte for byte.
    let hart_bytes = fs::read(&hart_path).unwrap();
    let tar_bytes = fs::read(&tarball).unwrap();
    assert!(hart_bytes.ends_with(&tar_bytes));
    let dest = work.path().join("out");
    warren(&["pkg", "extract", path_str(&hart_path), path_str(&dest), "--cache-key-path", c]).ok();
    assert_eq!(snapshot(&dest), snapshot(&src));

    let text_file = work.path().join("notes.txt");
    fs::write(&text_file, "not xz").unwrap();
    let out = warren(&[
        "pkg",
        "sign",
        "--origin",
        "acme",
        path_str(&text_file),
        path_str(&work.path().join("x.hart")),
        "--cache-key-path",
        c,
    ]);
    assert!(out.fails().contains("not an xz file"));
    assert!(!work.path().join("x.hart").exists());
    let out = warren(&[
        "pkg",
        "sign",
        "--origin",
        "nobody",
        path_str(&tarball),
        path_str(&work.path().join("y.hart")),
        "--cache-key-path",
        c,
    ]);
    assert!(out.fails().contains("\"nobody\""));
}

#[test]
fn verification_needs_the_signer_key_by_exact_revision() {
    let keys = origin_cache();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    let hart_path = work.path().join("p.hart");
    sign_pkg(&src, &hart_path, keys.path());

    let empty = tempfile::tempdir().unwrap();
    let out = warren(&["pkg", "verify", path_str(&hart_path), "--cache-key-path", path_str(empty.path())]);
    assert!(out.fails().contains("no public origin signing key named \"acme-"), "{}", out.stderr);

    // Import just the public key into another cache: now it verifies there.
    let exported = warren(&["origin", "key", "export", "acme", "--cache-key-path", path_str(keys.path())]);
    warren_with(
        &["origin", "key", "import", "--cache-key-path", path_str(empty.path())],
        Some(exported.ok().as_bytes()),
        &[],
    )
    .ok();
    warren(&["pkg", "verify", path_str(&hart_path), "--cache-key-path", path_str(empty.path())]).ok();

    // A newer key of the same origin does not verify an older package by accident.
    let fresh = origin_cache();
    let out = warren(&["pkg", "verify", path_str(&hart_path), "--cache-key-path", path_str(fresh.path())]);
    out.fails();
}

/// Byte positions across every header line and the payload.
fn sample_positions(bytes: &[u8], header_len: usize) -> Vec<usize> {
    let mut pos: Vec<usize> = (0..header_len).collect();
    let payload = bytes.len() - header_len;
    for k in 0..64 {
        pos.push(header_len + k * payload / 64);
    }
    pos.push(bytes.len() - 1);
    pos
}

#[test]
fn one_flipped_byte_anywhere_is_rejected() {
    let fixtures = KeyCache::new(core_fixture(""));
    let happy = fs::read(core_fixture("happyhumans-possums-8.1.4-20160427165340-x86_64-linux.hart")).unwrap();
    let header_len = hart::verify_reader(&happy[..], &fixtures, &mut |_| ()).unwrap().header_len as usize;
    for i in sample_positions(&happy, header_len) {
        for bit in [0x01u8, 0x10, 0x80] {
            let mut bad = happy.clone();
            bad[i] ^= bit;
            let err = hart::verify_reader(&bad[..], &fixtures, &mut |_| ());
            assert!(err.is_err(), "flip at {i} (bit {bit:#x}) accepted");
            if i >= header_len {
                assert!(matches!(err, Err(HartError::HashMismatch { .. })), "payload flip at {i}");
            }
        }
    }

    // A few through the CLI, on a package warren made: header lines and payload.
    let keys = origin_cache();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    sample_tree(&src);
    let hart_path = work.path().join("p.hart");
    sign_pkg(&src, &hart_path, keys.path());
    let good = fs::read(&hart_path).unwrap();
    let header_len = hart::read_header(&hart_path).unwrap().to_bytes().len();
    let len = good.len();
    for i in [
        0,
        3,
        8,
        12,
        30,
        header_len - 100,
        header_len - 2,
        header_len - 1,
        header_len,
        header_len + 7,
        len / 2,
        len - 1,
    ] {
        let mut bad = good.clone();
        bad[i] ^= 0x04;
        let path = work.path().join(format!("bad-{i}.hart"));
        fs::write(&path, &bad).unwrap();
        let out = warren(&["pkg", "verify", path_str(&path), "--cache-key-path", path_str(keys.path())]);
        out.fails();
        let dest = work.path().join(format!("out-{i}"));
        warren(&[
            "pkg",
            "extract",
            path_str(&path),
            path_str(&dest),
            "--cache-key-path",
            path_str(keys.path()),
        ])
        .fails();
        assert!(!dest.exists());
    }
    let leftovers: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn truncated_and_mutated_packages_fail_cleanly() {
    let fixtures = KeyCache::new(core_fixture(""));
    let mut rng = Rng::new(7);
    for name in [
        "happyhumans-possums-8.1.4-20160427165340-x86_64-linux.hart",
        "unhappyhumans-possums-8.1.4-20160427165340-x86_64-linux.hart",
        "bogus_and_corrupt.hart",
    ] {
        let bytes = fs::read(core_fixture(name)).unwrap();
        for cut in 0..bytes.len() {
            assert!(hart::verify_reader(&bytes[..cut], &fixtures, &mut |_| ()).is_err(), "{name} cut {cut}");
        }
        for _ in 0..3000 {
            let m = rng.mutate(&bytes, 4);
            if m == bytes {
                continue; // a replacement by the same byte
            }
            let res = hart::verify_reader(&m[..], &fixtures, &mut |_| ());
            assert!(res.is_err(), "{name}: mutation accepted (len {} vs {})", m.len(), bytes.len());
        }
    }
    // Garbage of every small size, and a long header line.
    for n in 0..64 {
        let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        assert!(hart::verify_reader(&junk[..], &fixtures, &mut |_| ()).is_err());
    }
    let work = tempfile::tempdir().unwrap();
    let junk = work.path().join("junk.hart");
    fs::write(&junk, [b"HART-1\n".as_slice(), &vec![b'x'; 1 << 20]].concat()).unwrap();
    let stderr = warren(&["pkg", "verify", path_str(&junk), "--cache-key-path", path_str(&core_fixture(""))])
        .fails()
        .to_string();
    assert!(stderr.contains("too long"), "{stderr}");
    let stderr = warren(&["pkg", "header", path_str(&work.path().join("missing.hart"))]).fails().to_string();
    assert!(stderr.contains("missing.hart"), "{stderr}");
}

#[test]
fn bench_verify_runs_and_reports_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = warren(&["bench", "verify", "--size-mb", "2", "--rounds", "1", "--dir", path_str(dir.path())]);
    let text = out.ok();
    for needle in ["raw BLAKE2b-256:", "pkg verify:", "ratio verify/raw:", "peak memory (VmHWM)"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "the bench cleans up after itself");
}

#[test]
fn progress_output_stays_off_a_pipe() {
    // stderr is a pipe here: no progress bar escape codes, even for a large package.
    let keys = origin_cache();
    let work = tempfile::tempdir().unwrap();
    let payload = work.path().join("big.tar.xz");
    let mut f = fs::File::create(&payload).unwrap();
    f.write_all(&hart::XZ_MAGIC).unwrap();
    f.write_all(&vec![0u8; 20 * 1024 * 1024]).unwrap();
    drop(f);
    let hart_path = work.path().join("big.hart");
    let c = path_str(keys.path());
    let s = warren(&[
        "pkg",
        "sign",
        "--origin",
        "acme",
        path_str(&payload),
        path_str(&hart_path),
        "--cache-key-path",
        c,
    ]);
    s.ok();
    let v = warren(&["pkg", "verify", path_str(&hart_path), "--cache-key-path", c]);
    v.ok();
    assert!(s.stderr.is_empty() && v.stderr.is_empty(), "{}{}", s.stderr, v.stderr);
}
