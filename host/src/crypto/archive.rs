//! Package payloads: packing a directory into an xz tarball, and unpacking a verified package
//! without letting it write outside its destination.
//!
//! Unpacking refuses absolute paths, `..`, device/fifo/sparse entries, hard links that leave the
//! tree and symlinks that resolve outside it (checked again on the finished tree, following
//! links, so chains of relative links cannot escape either). Everything is unpacked into a
//! temporary directory beside the destination and moved in only when all of it was accepted and
//! the payload still hashes to the verified digest: a refusal leaves nothing behind.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::cache::KeyCache;
use super::hart::{self, CHUNK, HartError, HartHeader, Verified, io_err, parent_dir};
use super::sodium::Blake2b256;

/// xz level for packages warren builds itself (xz's default, as Habitat uses).
pub const XZ_LEVEL: u32 = 6;
/// Decompression memory cap: xz -9 needs 65 MiB; anything beyond this is hostile.
const XZ_MEMLIMIT: u64 = 256 * 1024 * 1024;
/// Symlink hops followed when checking where a link finally points (as Linux's MAXSYMLINKS).
const MAX_SYMLINK_HOPS: usize = 40;

/// Tars `dir` (contents at the archive root, sorted, symlinks kept as links) and
/// xz-compresses it into `out`, streaming.
pub fn pack_dir(dir: &Path, out: &mut dyn Write) -> Result<(), HartError> {
    let meta = fs::metadata(dir).map_err(io_err(dir.display()))?;
    if !meta.is_dir() {
        return Err(HartError::Archive(format!("{} is not a directory", dir.display())));
    }
    let xz = xz2::write::XzEncoder::new(out, XZ_LEVEL);
    let mut tar = tar::Builder::new(xz);
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    append_tree(&mut tar, dir, Path::new(""))?;
    let xz = tar.into_inner().map_err(io_err("finishing the tarball"))?;
    xz.finish().map_err(io_err("finishing the xz stream"))?;
    Ok(())
}

fn append_tree<W: Write>(tar: &mut tar::Builder<W>, root: &Path, rel: &Path) -> Result<(), HartError> {
    let here = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&here)
        .map_err(io_err(here.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(here.display()))?;
    names.sort();
    for name in names {
        let rel_child = rel.join(&name);
        let path = root.join(&rel_child);
        let meta = fs::symlink_metadata(&path).map_err(io_err(path.display()))?;
        let ft = meta.file_type();
        if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
            return Err(HartError::Archive(format!(
                "{} is not a regular file, directory or symlink; packages cannot carry it",
                path.display()
            )));
        }
        tar.append_path_with_name(&path, &rel_child).map_err(io_err(format!("adding {}", path.display())))?;
        if ft.is_dir() {
            append_tree(tar, root, &rel_child)?;
        }
    }
    Ok(())
}

/// What an extraction produced.
#[derive(Clone, Debug)]
pub struct Extracted {
    pub verified: Verified,
    pub entries: u64,
}

/// Verifies the package at `hart_path`, then unpacks its payload into `dest` (created if needed;
/// an existing directory is merged into, but no existing file is ever replaced).
/// The file is read twice (verify, then unpack); `progress` gets the bytes read over both
/// passes, so it runs up to twice the file size.
pub fn extract_verified(
    hart_path: &Path,
    dest: &Path,
    cache: &KeyCache,
    progress: &mut dyn FnMut(u64),
) -> Result<Extracted, HartError> {
    let verified = hart::verify_file(hart_path, cache, &mut *progress)?;
    let first_pass = verified.header_len + verified.payload_len;
    let mut progress = move |n: u64| progress(first_pass + verified.header_len + n);
    // A destination the caller named as a symlink to a directory is followed (it is theirs, not
    // the package's); anything else that exists must be a real directory.
    let resolved;
    let dest = match fs::symlink_metadata(dest) {
        Ok(meta) if meta.file_type().is_symlink() && fs::metadata(dest).is_ok_and(|m| m.is_dir()) => {
            resolved = fs::canonicalize(dest).map_err(io_err(dest.display()))?;
            resolved.as_path()
        }
        Ok(meta) if !meta.is_dir() => {
            return Err(HartError::Archive(format!("{} exists and is not a directory", dest.display())));
        }
        _ => dest,
    };

    let created_parents = create_parents(dest)?;
    let staging = Staging::new(dest, created_parents)?;

    let file = fs::File::open(hart_path).map_err(io_err(hart_path.display()))?;
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let header = HartHeader::read(&mut reader)?;
    if header.signer != verified.signer {
        return Err(HartError::ChangedDuringExtract);
    }
    // Hash again while unpacking: if the file changed after verification, nothing is kept.
    let hashing =
        HashingReader { inner: reader, hasher: Blake2b256::new(), read: 0, progress: &mut progress };
    let stream = xz2::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
        .map_err(|e| HartError::Archive(format!("xz: {e}")))?;
    let xz = xz2::read::XzDecoder::new_stream(hashing, stream);
    let mut archive = tar::Archive::new(xz);
    let entries = unpack_into(&mut archive, staging.path())?;
    let mut hashing = archive.into_inner().into_inner();
    io::copy(&mut hashing, &mut io::sink()).map_err(io_err("reading the payload"))?;
    if hashing.hasher.finalize() != verified.digest {
        return Err(HartError::ChangedDuringExtract);
    }
    staging.commit()?;
    Ok(Extracted { verified, entries })
}

struct HashingReader<'p, R> {
    inner: R,
    hasher: Blake2b256,
    read: u64,
    progress: &'p mut dyn FnMut(u64),
}

impl<R: BufRead> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        (self.progress)(self.read);
        Ok(n)
    }
}

/// Creates the missing ancestors of `dest`, returning them (outermost first) for cleanup.
fn create_parents(dest: &Path) -> Result<Vec<PathBuf>, HartError> {
    let mut missing = Vec::new();
    let mut p = parent_dir(dest);
    while fs::symlink_metadata(&p).is_err() {
        missing.push(p.clone());
        match p.parent() {
            Some(up) if !up.as_os_str().is_empty() => p = up.to_path_buf(),
            _ => break,
        }
    }
    missing.reverse();
    for dir in &missing {
        if let Err(e) = fs::create_dir(dir) {
            remove_created(&missing);
            return Err(io_err(format!("creating {}", dir.display()))(e));
        }
    }
    Ok(missing)
}

fn remove_created(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        let _ = fs::remove_dir(dir);
    }
}

/// The temporary directory beside `dest`; removed (with any parents we created) unless committed.
struct Staging {
    tmp: PathBuf,
    dest: PathBuf,
    created_parents: Vec<PathBuf>,
    done: bool,
}

impl Staging {
    fn new(dest: &Path, created_parents: Vec<PathBuf>) -> Result<Self, HartError> {
        let tmp = match crate::fsutil::temp_sibling(dest) {
            Ok(tmp) => tmp,
            Err(e) => {
                remove_created(&created_parents);
                return Err(io_err(format!("extracting into {}", dest.display()))(e));
            }
        };
        if let Err(e) = fs::DirBuilder::new().mode(0o700).create(&tmp) {
            remove_created(&created_parents);
            return Err(io_err(format!("creating {}", tmp.display()))(e));
        }
        Ok(Staging { tmp, dest: dest.to_path_buf(), created_parents, done: false })
    }

    fn path(&self) -> &Path {
        &self.tmp
    }

    /// Moves the staged tree into place: a rename when `dest` is new, else a merge that first
    /// checks every move so a conflict leaves `dest` untouched.
    fn commit(mut self) -> Result<(), HartError> {
        match fs::symlink_metadata(&self.dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The staging dir was private (0700) while it filled up; a new DIR is 0755.
                fs::set_permissions(&self.tmp, fs::Permissions::from_mode(0o755))
                    .map_err(io_err(format!("chmod {}", self.tmp.display())))?;
                fs::rename(&self.tmp, &self.dest)
                    .map_err(io_err(format!("moving into {}", self.dest.display())))?;
            }
            Err(e) => return Err(io_err(self.dest.display())(e)),
            Ok(meta) if !meta.is_dir() => {
                return Err(HartError::Archive(format!(
                    "{} exists and is not a directory",
                    self.dest.display()
                )));
            }
            Ok(_) => {
                let mut moves = Vec::new();
                plan_merge(&self.tmp, &self.dest, &mut moves)?;
                for (from, to) in &moves {
                    fs::rename(from, to).map_err(io_err(format!("moving into {}", to.display())))?;
                }
                let _ = fs::remove_dir_all(&self.tmp);
            }
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            make_removable(&self.tmp);
            let _ = fs::remove_dir_all(&self.tmp);
            remove_created(&self.created_parents);
        }
    }
}

/// Directory modes may have dropped owner write; restore it so cleanup works for non-root users.
fn make_removable(dir: &Path) {
    if let Ok(meta) = fs::symlink_metadata(dir)
        && meta.is_dir()
    {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                make_removable(&e.path());
            }
        }
    }
}

fn plan_merge(from: &Path, to: &Path, moves: &mut Vec<(PathBuf, PathBuf)>) -> Result<(), HartError> {
    for entry in fs::read_dir(from).map_err(io_err(from.display()))? {
        let entry = entry.map_err(io_err(from.display()))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let src_is_dir = entry.file_type().map_err(io_err(src.display()))?.is_dir();
        match fs::symlink_metadata(&dst) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => moves.push((src, dst)),
            Err(e) => return Err(io_err(dst.display())(e)),
            Ok(meta) if meta.is_dir() && src_is_dir => plan_merge(&src, &dst, moves)?,
            Ok(_) => {
                return Err(HartError::Archive(format!(
                    "{} already exists; refusing to replace it (nothing was extracted)",
                    dst.display()
                )));
            }
        }
    }
    Ok(())
}

/// Unpacks every entry of `archive` into `root` (an empty directory we own), refusing anything
/// that could land outside it. Returns the number of entries.
fn unpack_into<R: Read>(archive: &mut tar::Archive<R>, root: &Path) -> Result<u64, HartError> {
    let bad = |path: &str, why: &str| HartError::UnsafeEntry { path: path.to_string(), why: why.to_string() };
    let tar_err = |e: io::Error| HartError::Archive(format!("bad tarball: {e}"));
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    let mut symlinks: Vec<PathBuf> = Vec::new();
    let mut count = 0u64;
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).chars().take(200).collect::<String>();
        let etype = entry.header().entry_type();
        if etype.is_pax_global_extensions() {
            continue;
        }
        let rel = safe_relative(&raw).map_err(|why| bad(&shown, why))?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        count += 1;
        if rel.as_os_str().is_empty() {
            if etype.is_dir() {
                continue; // "./" itself
            }
            return Err(bad(&shown, "an entry without a name"));
        }
        let dst = root.join(&rel);
        match etype {
            tar::EntryType::Directory => {
                ensure_dir(root, &rel).map_err(|why| bad(&shown, &why))?;
                dir_modes.push((dst, mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                prepare_slot(root, &rel).map_err(|why| bad(&shown, &why))?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&dst)
                    .map_err(io_err(format!("creating {shown}")))?;
                io::copy(&mut entry, &mut f).map_err(io_err(format!("unpacking {shown}")))?;
                if let Ok(mtime) = entry.header().mtime() {
                    let _ = f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
                }
                // The umask may have narrowed the mode given at creation.
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err(format!("chmod {shown}")))?;
            }
            tar::EntryType::Symlink => {
                let target =
                    entry.link_name_bytes().ok_or_else(|| bad(&shown, "a symlink without a target"))?;
                let target = bytes_path(&target);
                check_symlink_target(&rel, &target).map_err(|why| bad(&shown, why))?;
                prepare_slot(root, &rel).map_err(|why| bad(&shown, &why))?;
                std::os::unix::fs::symlink(&target, &dst)
                    .map_err(io_err(format!("creating symlink {shown}")))?;
                symlinks.push(rel);
            }
            tar::EntryType::Link => {
                let target =
                    entry.link_name_bytes().ok_or_else(|| bad(&shown, "a hard link without a target"))?;
                let target_rel = safe_relative(&target)
                    .map_err(|why| bad(&shown, &format!("its hard link target {why}")))?;
                check_no_symlinks(root, &target_rel).map_err(|why| bad(&shown, &why))?;
                let src = root.join(&target_rel);
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.is_file() => {}
                    _ => return Err(bad(&shown, "its hard link target is not a file unpacked before it")),
                }
                prepare_slot(root, &rel).map_err(|why| bad(&shown, &why))?;
                fs::hard_link(&src, &dst).map_err(io_err(format!("creating hard link {shown}")))?;
            }
            other => {
                return Err(bad(
                    &shown,
                    &format!("{other:?} entries (devices, fifos, sparse files) are not allowed in packages"),
                ));
            }
        }
    }
    for link in &symlinks {
        resolves_inside(root, link).map_err(|why| bad(&link.to_string_lossy(), why))?;
    }
    // Deepest first, so a read-only parent never blocks a child's chmod.
    dir_modes.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
    for (dir, mode) in dir_modes {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode | 0o700))
            .map_err(io_err(format!("chmod {}", dir.display())))?;
    }
    Ok(count)
}

fn bytes_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

/// An archive path made only of normal components (`.` dropped); refuses `/…`, `..` and NULs.
fn safe_relative(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.contains(&0) {
        return Err("contains a NUL byte");
    }
    let path = bytes_path(raw);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(out)
}

/// Every existing component of `rel` under `root` must be a real directory, never a symlink:
/// nothing is ever written through a link.
fn check_no_symlinks(root: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = root.to_path_buf();
    let mut shown = PathBuf::new();
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        cur.push(c);
        shown.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("{} is a symlink (nothing is written through links)", shown.display()));
            }
            Ok(m) if i + 1 < parts.len() && !m.is_dir() => {
                return Err(format!("{} is not a directory", shown.display()));
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Creates `rel` and its parents as real directories.
fn ensure_dir(root: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = root.to_path_buf();
    let mut shown = PathBuf::new();
    for c in rel.components() {
        cur.push(c);
        shown.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("{} is a symlink (nothing is written through links)", shown.display()));
            }
            Ok(_) => return Err(format!("{} exists and is not a directory", shown.display())),
            Err(_) => fs::DirBuilder::new().mode(0o755).create(&cur).map_err(|e| format!("mkdir: {e}"))?,
        }
    }
    Ok(())
}

/// Makes room for a new file/link at `rel`: real parent directories, and any earlier entry of the
/// same name unlinked (never written through; a directory is never replaced).
fn prepare_slot(root: &Path, rel: &Path) -> Result<(), String> {
    if let Some(parent) = rel.parent() {
        ensure_dir(root, parent)?;
    }
    let dst = root.join(rel);
    match fs::symlink_metadata(&dst) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => Err("it would replace a directory".into()),
        Ok(_) => fs::remove_file(&dst).map_err(|e| format!("replacing an earlier entry: {e}")),
    }
}

/// Lexical check of a symlink's target from where the link sits.
fn check_symlink_target(link: &Path, target: &Path) -> Result<(), &'static str> {
    if target.as_os_str().is_empty() {
        return Err("a symlink with an empty target");
    }
    let mut depth = link.components().count().saturating_sub(1);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth == 0 => {
                return Err("its symlink target points outside the package");
            }
            Component::ParentDir => depth -= 1,
            Component::RootDir | Component::Prefix(_) => {
                return Err("its symlink target is an absolute path");
            }
        }
    }
    Ok(())
}

/// Follows `link` through the finished tree (links within links included) and fails if any
/// step leaves `root`. Missing components are taken literally.
fn resolves_inside(root: &Path, link: &Path) -> Result<(), &'static str> {
    let escape = "its symlink chain points outside the package";
    let mut stack: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> =
        link.components().rev().map(|c| c.as_os_str().to_os_string()).collect();
    let mut hops = 0usize;
    while let Some(part) = pending.pop() {
        match Path::new(&part).components().next() {
            None | Some(Component::CurDir) => continue,
            Some(Component::ParentDir) => {
                stack.pop().ok_or(escape)?;
                continue;
            }
            Some(Component::RootDir) | Some(Component::Prefix(_)) => return Err(escape),
            Some(Component::Normal(_)) => {}
        }
        let mut here = root.to_path_buf();
        here.extend(&stack);
        here.push(&part);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err("a symlink loop (or a chain of more than 40 links)");
                }
                let target = fs::read_link(&here).map_err(|_| "an unreadable symlink")?;
                if target.is_absolute() {
                    return Err(escape);
                }
                pending.extend(target.components().rev().map(|c| c.as_os_str().to_os_string()));
            }
            _ => stack.push(part),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_next_to_a_long_non_ascii_name_fits_name_max() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("é".repeat(125)); // 250 bytes
        let staging = Staging::new(&dest, Vec::new()).unwrap();
        let name = staging.path().file_name().unwrap().len();
        assert!(name <= 255, "staging name is {name} bytes");
        assert_eq!(staging.path().parent(), Some(dir.path()));
    }

    #[test]
    fn relative_paths_are_sanitized() {
        assert_eq!(safe_relative(b"./a/b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(safe_relative(b"./").unwrap(), PathBuf::new());
        assert!(safe_relative(b"../x").is_err());
        assert!(safe_relative(b"a/../../x").is_err());
        assert!(safe_relative(b"/etc/passwd").is_err());
        assert!(safe_relative(b"a\0b").is_err());
    }

    #[test]
    fn symlink_targets_are_checked_lexically() {
        assert!(check_symlink_target(Path::new("a/l"), Path::new("../b")).is_ok());
        assert!(check_symlink_target(Path::new("a/l"), Path::new("../../b")).is_err());
        assert!(check_symlink_target(Path::new("l"), Path::new("/etc")).is_err());
        assert!(check_symlink_target(Path::new("l"), Path::new("x/./y")).is_ok());
    }

    #[test]
    fn link_chains_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        std::os::unix::fs::symlink("..", root.join("d/up")).unwrap(); // -> root: fine
        std::os::unix::fs::symlink("d/up/..", root.join("esc")).unwrap(); // -> root/.. : escapes
        std::os::unix::fs::symlink("d/up/d", root.join("ok")).unwrap();
        std::os::unix::fs::symlink("loop2", root.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", root.join("loop2")).unwrap();
        assert!(resolves_inside(root, Path::new("d/up")).is_ok());
        assert!(resolves_inside(root, Path::new("ok")).is_ok());
        assert!(resolves_inside(root, Path::new("esc")).is_err());
        assert!(resolves_inside(root, Path::new("loop1")).is_err());
        assert!(resolves_inside(root, Path::new("dangling/x")).is_ok());
    }
}
