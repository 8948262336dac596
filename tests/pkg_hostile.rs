//! Hostile (but validly signed) packages: path traversal, absolute paths, escaping symlinks and
//! hard links, devices. `warren pkg extract` must refuse each one and leave nothing behind.

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use support::cli::{Run, warren};
use support::files::{file_names as names, path_str};
use support::keys::origin_keys;
use warren::crypto::{SigSecretKey, hart};

#[derive(Clone, Copy)]
enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str),
    Fifo(&'a str),
}

/// A tarball written header by header, so names the `tar` builder would refuse get through.
fn raw_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (name, link, data, ty): (&str, Option<&str>, &[u8], tar::EntryType) = match *e {
            E::File(n, d) => (n, None, d, tar::EntryType::Regular),
            E::Dir(n) => (n, None, b"", tar::EntryType::Directory),
            E::Symlink(n, t) => (n, Some(t), b"", tar::EntryType::Symlink),
            E::Hard(n, t) => (n, Some(t), b"", tar::EntryType::Link),
            E::Char(n) => (n, None, b"", tar::EntryType::Char),
            E::Fifo(n) => (n, None, b"", tar::EntryType::Fifo),
        };
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(t) = link {
                gnu.linkname[..t.len()].copy_from_slice(t.as_bytes());
            }
        }
        h.set_entry_type(ty);
        h.set_mode(if ty == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut enc = xz2::write::XzEncoder::new(Vec::new(), 0);
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

struct Setup {
    keys: tempfile::TempDir,
    key: SigSecretKey,
}

fn setup() -> Setup {
    let keys = tempfile::tempdir().unwrap();
    let key = origin_keys(keys.path(), "acme");
    Setup { keys, key }
}

impl Setup {
    fn sign(&self, entries: &[E], dest: &Path) {
        let payload = xz(&raw_tar(entries));
        hart::sign_to_path(dest, &self.key, |w| {
            w.write_all(&payload).map_err(hart::io_err("test"))?;
            Ok(())
        })
        .unwrap();
    }

    fn extract(&self, hart_path: &Path, dest: &Path) -> Run {
        warren(&[
            "pkg",
            "extract",
            path_str(hart_path),
            path_str(dest),
            "--cache-key-path",
            path_str(self.keys.path()),
        ])
    }
}

#[test]
fn hostile_packages_are_refused_and_leave_nothing_behind() {
    let s = setup();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let abs_file = format!("{}/abs-evil", w.display());
    let abs_target = format!("{}/victim", w.display());
    fs::write(w.join("victim"), "original").unwrap();
    let ok = E::File("ok.txt", b"harmless");
    let cases: Vec<(&str, Vec<E>)> = vec![
        ("parent-dir file", vec![ok, E::File("../evil", b"x")]),
        ("nested parent-dir file", vec![ok, E::Dir("a"), E::File("a/../../evil", b"x")]),
        ("absolute file", vec![ok, E::File(&abs_file, b"x")]),
        ("symlink up and out", vec![ok, E::Symlink("link", "../../evil")]),
        ("absolute symlink", vec![ok, E::Symlink("link", &abs_target)]),
        (
            "write through an inner symlink",
            vec![ok, E::Dir("sub"), E::Symlink("d", "sub"), E::File("d/x", b"x")],
        ),
        (
            "write through an escaping symlink chain",
            vec![
                ok,
                E::Dir("sub"),
                E::Symlink("sub/up", ".."),
                E::Symlink("esc", "sub/up/.."),
                E::File("esc/evil", b"x"),
            ],
        ),
        (
            "symlink chain escaping",
            vec![ok, E::Dir("sub"), E::Symlink("sub/up", ".."), E::Symlink("esc", "sub/up/..")],
        ),
        ("hard link out", vec![ok, E::Hard("h", "../victim")]),
        ("absolute hard link", vec![ok, E::Hard("h", &abs_target)]),
        ("hard link to a symlink", vec![ok, E::Symlink("l", "ok.txt"), E::Hard("h", "l")]),
        ("character device", vec![ok, E::Char("dev")]),
        ("fifo", vec![ok, E::Fifo("fifo")]),
    ];
    for (i, (what, entries)) in cases.iter().enumerate() {
        let hart_path = w.join(format!("case-{i}.hart"));
        s.sign(entries, &hart_path);
        // A new destination whose parents do not exist yet: none of it may remain.
        let dest = w.join(format!("new-{i}/deeper/out"));
        let stderr = s.extract(&hart_path, &dest).fails().to_string();
        assert!(stderr.contains("refusing to extract"), "{what}: {stderr}");
        assert!(!w.join(format!("new-{i}")).exists(), "{what}: created parents were left behind");
        // An existing directory: untouched.
        let existing = w.join("existing");
        fs::create_dir_all(&existing).unwrap();
        fs::write(existing.join("keep"), "mine").unwrap();
        s.extract(&hart_path, &existing).fails();
        assert_eq!(names(&existing), ["keep"], "{what}");
        assert_eq!(fs::read_to_string(existing.join("keep")).unwrap(), "mine");
        // Nothing escaped, nothing staged is left, the victim is intact.
        for escaped in ["evil", "abs-evil", "link", "h", "esc", "dev", "fifo", "ok.txt"] {
            assert!(
                fs::symlink_metadata(w.join(escaped)).is_err(),
                "{what}: {escaped} appeared in {}",
                w.display()
            );
        }
        assert_eq!(fs::read_to_string(w.join("victim")).unwrap(), "original", "{what}");
        let hidden: Vec<_> = names(w).into_iter().filter(|n| n.starts_with('.')).collect();
        assert!(hidden.is_empty(), "{what}: staging left behind: {hidden:?}");
    }
}

#[test]
fn benign_links_and_dot_prefixed_names_extract() {
    let s = setup();
    let work = tempfile::tempdir().unwrap();
    let hart_path = work.path().join("fine.hart");
    s.sign(
        &[
            E::Dir("./"),
            E::Dir("./bin"),
            E::File("./bin/tool", b"#!/bin/sh\n"),
            E::Dir("./lib"),
            E::Symlink("./lib/tool-link", "../bin/tool"),
            E::Hard("./bin/tool-hard", "bin/tool"),
            E::Symlink("./dangling", "not/yet/there"),
            E::File("./bin/replaced", b"first"),
            E::File("./bin/replaced", b"second"),
        ],
        &hart_path,
    );
    let dest = work.path().join("out");
    let out = s.extract(&hart_path, &dest);
    assert!(out.ok().contains("Extracted"));
    assert_eq!(fs::read(dest.join("lib/tool-link")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(fs::read(dest.join("bin/tool-hard")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(fs::read_link(dest.join("dangling")).unwrap(), PathBuf::from("not/yet/there"));
    assert_eq!(fs::read(dest.join("bin/replaced")).unwrap(), b"second");
}

#[test]
fn a_package_swapped_between_verify_and_unpack_cannot_slip_through() {
    // The digest is checked again while unpacking; here the payload is simply not xz after a
    // valid signature, which must fail after verification without leaving anything.
    let s = setup();
    let work = tempfile::tempdir().unwrap();
    let hart_path = work.path().join("notxz.hart");
    hart::sign_to_path(&hart_path, &s.key, |w| {
        w.write_all(b"this is not an xz stream").map_err(hart::io_err("test"))?;
        Ok(())
    })
    .unwrap();
    warren(&["pkg", "verify", path_str(&hart_path), "--cache-key-path", path_str(s.keys.path())]).ok();
    let dest = work.path().join("out");
    s.extract(&hart_path, &dest).fails();
    assert_eq!(names(work.path()), ["notxz.hart"]);
}
