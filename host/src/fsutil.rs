//! Atomic file writes: the one place warren writes a file that readers (a restarted supervisor,
//! a plugin watcher, another process) must see either whole or not at all.
//!
//! The bytes go to a uniquely named temporary file beside the destination, created with its
//! final mode (so a secret is never readable by others, not even briefly), fsynced, moved into
//! place, and the directory is fsynced so the new name survives a crash. Moving into place is a
//! `rename` (replaces an existing file) or, for [`Existing::Refuse`], a hard link, which fails
//! with `AlreadyExists` instead of replacing whatever a racing writer put there.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::crypto::sodium;

/// What to do when the destination already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replace it atomically (`rename`).
    Replace,
    /// Leave it alone and fail with `io::ErrorKind::AlreadyExists` (the key cache: a key file
    /// is never overwritten).
    Refuse,
}

/// The mode `File::create` uses: the umask decides.
pub const DEFAULT_MODE: u32 = 0o666;

/// A file written under a temporary name beside `dest` and moved into place only by
/// [`AtomicFile::commit`]; dropped uncommitted, the temporary file is removed.
pub struct AtomicFile {
    file: fs::File,
    tmp: PathBuf,
    dest: PathBuf,
    existing: Existing,
    done: bool,
}

impl AtomicFile {
    /// Creates the temporary file with `mode` (filtered by the umask, like any `open(2)`).
    /// The parent directory must exist.
    pub fn create(dest: &Path, mode: u32, existing: Existing) -> io::Result<Self> {
        let name = dest.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a file path", dest.display()))
        })?;
        // Keep well under NAME_MAX whatever the destination's name length.
        let short: String = name.to_string_lossy().chars().take(128).collect();
        let tmp = parent_dir(dest).join(format!(".{short}.tmp-{}-{}", std::process::id(), random_hex()));
        let file = fs::OpenOptions::new().read(true).write(true).create_new(true).mode(mode).open(&tmp)?;
        Ok(AtomicFile { file, tmp, dest: dest.to_path_buf(), existing, done: false })
    }

    pub fn file(&mut self) -> &mut fs::File {
        &mut self.file
    }

    /// The temporary file's path (for error messages).
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Fsyncs the file, moves it into place and fsyncs the directory. Returns the destination.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        self.file.sync_all()?;
        match self.existing {
            Existing::Replace => fs::rename(&self.tmp, &self.dest)?,
            Existing::Refuse => {
                fs::hard_link(&self.tmp, &self.dest)?;
                // The destination is in place; a leftover hidden temp name is harmless.
                let _ = fs::remove_file(&self.tmp);
            }
        }
        self.done = true;
        sync_dir(&parent_dir(&self.dest))?;
        Ok(self.dest.clone())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `dest` atomically with `mode` from creation (see the module docs).
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32, existing: Existing) -> io::Result<()> {
    let mut f = AtomicFile::create(dest, mode, existing)?;
    f.write_all(bytes)?;
    f.commit().map(drop)
}

/// Fsyncs a directory so a rename or link in it is durable. Filesystems that cannot sync a
/// directory say so with EINVAL; that is not an error worth failing a write for.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    match fs::File::open(dir)?.sync_all() {
        Err(e) if e.kind() == io::ErrorKind::InvalidInput || e.kind() == io::ErrorKind::Unsupported => Ok(()),
        other => other,
    }
}

/// The directory holding `path` ("." for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// 12 random hex digits, for temporary names nobody else will pick.
pub fn random_hex() -> String {
    hex::encode(sodium::random_array::<6>())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_with_the_mode_from_creation_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        for (name, mode) in [("secret", 0o400), ("public", 0o444), ("private", 0o600)] {
            let p = d.path().join(name);
            write_atomic(&p, name.as_bytes(), mode, Existing::Refuse).unwrap();
            assert_eq!(fs::read(&p).unwrap(), name.as_bytes());
            assert_eq!(mode_of(&p), mode, "{name}");
        }
        assert_eq!(entries(d.path()), ["private", "public", "secret"]);
    }

    #[test]
    fn the_temp_file_is_never_more_open_than_the_final_mode() {
        let d = tempfile::tempdir().unwrap();
        let f = AtomicFile::create(&d.path().join("k"), 0o400, Existing::Refuse).unwrap();
        assert_eq!(mode_of(f.tmp_path()), 0o400);
        assert!(f.tmp_path().file_name().unwrap().to_string_lossy().starts_with(".k.tmp-"));
        assert_eq!(f.tmp_path().parent(), Some(d.path()));
    }

    #[test]
    fn replace_overwrites_and_refuse_keeps_the_existing_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one", 0o644, Existing::Replace).unwrap();
        write_atomic(&p, b"two", 0o600, Existing::Replace).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(mode_of(&p), 0o600, "the replacement brings its own mode");
        let err = write_atomic(&p, b"three", 0o600, Existing::Refuse).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(entries(d.path()), ["f"], "the refused temp file is cleaned up");
    }

    #[test]
    fn dropped_uncommitted_removes_the_temp_file_and_keeps_the_old_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&p, 0o600, Existing::Replace).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(entries(d.path()), ["f"]);
    }

    #[test]
    fn temp_names_are_unique_within_one_process() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let a = AtomicFile::create(&p, 0o600, Existing::Replace).unwrap();
        let b = AtomicFile::create(&p, 0o600, Existing::Replace).unwrap();
        assert_ne!(a.tmp_path(), b.tmp_path());
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("no/such/dir/f");
        assert_eq!(
            write_atomic(&missing, b"x", 0o600, Existing::Replace).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(write_atomic(Path::new("/"), b"x", 0o600, Existing::Replace).is_err());
        // A bare file name lands in the current directory's parent, ".".
        assert_eq!(parent_dir(Path::new("f")), PathBuf::from("."));
    }
}
