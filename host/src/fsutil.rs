//! Atomic file writes: the one place warren writes a file that readers (a restarted supervisor,
//! a plugin watcher, another process) must see either whole or not at all.
//!
//! The bytes go to a uniquely named temporary file beside the destination, created with its
//! final mode (so a secret is never readable by others, not even briefly), fsynced, moved into
//! place, and the directory is fsynced so the new name survives a crash. Moving into place is a
//! `rename` (replaces an existing file) or, for [`Existing::Refuse`], a hard link, which fails
//! with `AlreadyExists` instead of replacing whatever a racing writer put there.
//!
//! Temporary names are `.{name}.tmp-{pid}-{12 hex}`. A writer that dies mid-write (or between
//! the hard link and the unlink, leaving a second name for a secret key) leaves one behind;
//! [`sweep_stale_temp_files`] removes those of processes that are gone.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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
        let tmp = temp_sibling(dest)?;
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
    ///
    /// An error keeps the underlying [`io::ErrorKind`] (`AlreadyExists` for a refused move)
    /// and says which step failed (see [`commit_step`]). A failure to fsync the directory
    /// ([`CommitStep::SyncDir`]) comes after the file is in place: the destination then holds
    /// the new content, only its durability is in doubt, and a retry with
    /// [`Existing::Refuse`] reports `AlreadyExists`.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        let step = |step| move |source| CommitError::wrap(step, source);
        self.file.sync_all().map_err(step(CommitStep::SyncFile))?;
        match self.existing {
            Existing::Replace => fs::rename(&self.tmp, &self.dest).map_err(step(CommitStep::Move))?,
            Existing::Refuse => {
                fs::hard_link(&self.tmp, &self.dest).map_err(step(CommitStep::Move))?;
                // The destination is in place. Should this fail (or the process die first),
                // the second name is removed by a later `sweep_stale_temp_files`.
                let _ = fs::remove_file(&self.tmp);
            }
        }
        self.done = true;
        sync_dir(&parent_dir(&self.dest)).map_err(step(CommitStep::SyncDir))?;
        Ok(self.dest.clone())
    }
}

/// The step of [`AtomicFile::commit`] that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitStep {
    /// Fsyncing the temporary file: the destination is untouched.
    SyncFile,
    /// Renaming or linking it into place: the destination is untouched.
    Move,
    /// Fsyncing the directory: the destination already holds the new file.
    SyncDir,
}

impl std::fmt::Display for CommitStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CommitStep::SyncFile => "fsyncing the temporary file",
            CommitStep::Move => "moving the temporary file into place",
            CommitStep::SyncDir => "fsyncing the directory (the file is already in place)",
        })
    }
}

/// A failed [`AtomicFile::commit`], carried inside an `io::Error` of the same kind.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct CommitError {
    pub step: CommitStep,
    #[source]
    pub source: io::Error,
}

impl CommitError {
    fn wrap(step: CommitStep, source: io::Error) -> io::Error {
        io::Error::new(source.kind(), CommitError { step, source })
    }
}

/// Which step of a commit failed, if `e` came from [`AtomicFile::commit`].
pub fn commit_step(e: &io::Error) -> Option<CommitStep> {
    e.get_ref()?.downcast_ref::<CommitError>().map(|c| c.step)
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

/// A unique temporary path next to `dest` (same directory, so a rename is atomic), named after
/// it and this process: `.{name}.tmp-{pid}-{12 hex}`.
pub fn temp_sibling(dest: &Path) -> io::Result<PathBuf> {
    let name = dest.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a file path", dest.display()))
    })?;
    // Keep well under NAME_MAX (255 bytes) whatever the destination's name length: at most
    // 128 bytes of it, cut on a character boundary, plus 1 + 5 + 10 + 1 + 12 bytes.
    let name = name.to_string_lossy();
    let short = truncate_on_char_boundary(&name, MAX_TEMP_STEM);
    Ok(parent_dir(dest).join(temp_name(short, std::process::id(), &random_hex())))
}

/// At most this many bytes of the destination's name go into a temporary name.
const MAX_TEMP_STEM: usize = 128;

/// A temporary file left this long ago may be swept once its writer is gone; younger ones are
/// spared even then, in case the writer lives in a pid namespace (or behind a `hidepid`
/// `/proc`) this process cannot see.
const STALE_AFTER: Duration = Duration::from_secs(60);

fn temp_name(stem: &str, pid: u32, hex: &str) -> String {
    format!(".{stem}.tmp-{pid}-{hex}")
}

/// The writer's pid in a name [`temp_name`] made, else None.
fn temp_name_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (rest, hex) = rest.rsplit_once('-')?;
    let (rest, pid) = rest.rsplit_once('-')?;
    let stem = rest.strip_suffix(".tmp")?;
    let hex_ok = hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let pid_ok = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    (hex_ok && pid_ok && !stem.is_empty()).then(|| pid.parse().ok()).flatten()
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate_on_char_boundary(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Removes the temporary files in `dir` that [`AtomicFile`] writers left behind when they died
/// (a crash mid-write, or between the hard link and the unlink of [`Existing::Refuse`], which
/// leaves a second name for a secret key file). A file is removed only if its name has the
/// temporary form, it is a regular file, the pid in its name is not a live process (no
/// `/proc/{pid}`: this process and every other live one are spared) and it is older than a
/// minute. Best effort: returns how many were removed; unreadable entries are skipped.
pub fn sweep_stale_temp_files(dir: &Path) -> io::Result<usize> {
    if !Path::new("/proc/self").exists() {
        return Ok(0); // No /proc: liveness cannot be told, so nothing is stale.
    }
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(temp_name_pid) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= STALE_AFTER);
        if meta.file_type().is_file() && old && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// [`sweep_stale_temp_files`] for a writer about to add a file to `dir`: best effort, a
/// failure only logs.
pub fn sweep_leftovers(dir: &Path) {
    match sweep_stale_temp_files(dir) {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(dir = %dir.display(), "removed {n} temporary file(s) left by a process that died")
        }
        Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cannot sweep temporary files"),
    }
}

/// The directory holding `path` ("." for a bare file name).
/// Creates `dir` and any missing parents as 0700: the supervisor's folders (data path, key
/// cache, plugin folder) are never readable by other users from the moment they exist.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

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
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// This process's umask, from /proc (no libc call needed).
    pub(crate) fn umask() -> u32 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:")).expect("a Umask line");
        u32::from_str_radix(line.trim(), 8).unwrap()
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
            // `open(2)` applies the umask to the mode given at creation.
            assert_eq!(mode_of(&p), mode & !umask(), "{name}");
        }
        assert_eq!(entries(d.path()), ["private", "public", "secret"]);
    }

    /// Reruns the tests that check file modes in a child of this test binary whose umask is
    /// 027 rather than the usual 022.
    #[test]
    fn mode_tests_pass_under_a_narrower_umask() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", "umask 027 && exec \"$0\" \"$@\""])
            .arg(&exe)
            .args([
                "--exact",
                "fsutil::tests::writes_with_the_mode_from_creation_and_leaves_no_temp_file",
                "crypto::cache::tests::writes_atomically_with_permissions_and_refuses_conflicts",
                "fsutil::tests::the_umask_is_read_from_proc",
            ])
            .env("WARREN_TEST_EXPECT_UMASK", "027")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("3 passed"), "{stdout}");
    }

    #[test]
    fn the_umask_is_read_from_proc() {
        let expected = std::env::var("WARREN_TEST_EXPECT_UMASK").ok();
        let expected = expected.map_or(umask(), |m| u32::from_str_radix(&m, 8).unwrap());
        assert_eq!(umask(), expected);
        assert_eq!(umask() & !0o777, 0);
    }

    #[test]
    fn a_long_non_ascii_name_keeps_its_temp_name_under_name_max() {
        let d = tempfile::tempdir().unwrap();
        // 250 bytes each: 125 two-byte, 83 three-byte (+1) and 62 four-byte (+2) characters.
        for name in ["é".repeat(125), format!("{}a", "€".repeat(83)), format!("{}ab", "🦀".repeat(62))] {
            assert_eq!(name.len(), 250);
            let p = d.path().join(&name);
            let f = AtomicFile::create(&p, 0o600, Existing::Refuse).unwrap();
            let tmp = f.tmp_path().file_name().unwrap().to_str().unwrap().to_string();
            assert!(tmp.len() <= 255, "{} bytes", tmp.len());
            assert!(
                tmp.starts_with(&format!(".{}", &name[..name.floor_char_boundary(MAX_TEMP_STEM)])),
                "{tmp}"
            );
            drop(f);
            write_atomic(&p, b"x", 0o600, Existing::Refuse).unwrap();
            assert_eq!(fs::read(&p).unwrap(), b"x");
        }
        assert_eq!(truncate_on_char_boundary("aé", 2), "a");
        assert_eq!(truncate_on_char_boundary("aé", 3), "aé");
        assert_eq!(truncate_on_char_boundary("", 3), "");
    }

    #[test]
    fn a_failed_commit_says_which_step_failed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"old").unwrap();
        let err = write_atomic(&p, b"new", 0o600, Existing::Refuse).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "the kind survives");
        assert_eq!(commit_step(&err), Some(CommitStep::Move));
        assert!(err.to_string().starts_with("moving the temporary file into place: "), "{err}");
        // Replacing a non-empty directory fails at the rename too.
        fs::create_dir_all(d.path().join("dir/x")).unwrap();
        let err = write_atomic(&d.path().join("dir"), b"x", 0o600, Existing::Replace).unwrap_err();
        assert_eq!(commit_step(&err), Some(CommitStep::Move), "{err}");
        assert!(CommitStep::SyncDir.to_string().contains("already in place"));
        assert_eq!(commit_step(&io::Error::other("x")), None);
    }

    #[test]
    fn temp_names_round_trip_and_nothing_else_parses() {
        assert_eq!(temp_name_pid(&temp_name("k.sym.key", 4242, "0123456789ab")), Some(4242));
        assert_eq!(temp_name_pid(&temp_name("a-1-b.tmp-2-c", 7, &random_hex())), Some(7));
        for name in [
            "k.sym.key",
            ".k.tmp-42-0123456789a",                    // 11 hex digits
            ".k.tmp-42-0123456789AB",                   // upper case: not ours
            ".k.tmp-+42-0123456789ab",                  // a sign
            ".k.tmp--0123456789ab",                     // no pid
            "k.tmp-42-0123456789ab",                    // no leading dot
            "..tmp-42-0123456789ab",                    // no stem
            ".k.temp-42-0123456789ab",                  // another suffix
            ".k.tmp-99999999999999999999-0123456789ab", // not a pid
        ] {
            assert_eq!(temp_name_pid(name), None, "{name}");
        }
    }

    /// A pid that was just used and is gone: a child that has exited and been reaped.
    pub(crate) fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        pid
    }

    /// A file named like a temporary file of `pid`, last modified `age` ago.
    pub(crate) fn plant(dir: &Path, stem: &str, pid: u32, age: Duration) -> PathBuf {
        let p = dir.join(temp_name(stem, pid, &random_hex()));
        fs::write(&p, b"leftover").unwrap();
        fs::File::options().write(true).open(&p).unwrap().set_modified(SystemTime::now() - age).unwrap();
        p
    }

    #[test]
    fn the_sweep_removes_only_old_temp_files_of_dead_processes() {
        let d = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let dead = dead_pid();
        let stale = plant(d.path(), "k.sym.key", dead, hour);
        let fresh = plant(d.path(), "k.sym.key", dead, Duration::ZERO);
        let ours = plant(d.path(), "k.sym.key", std::process::id(), hour);
        let init = plant(d.path(), "k.sym.key", 1, hour);
        // Not temporary files: another name form, and a directory of the temporary form.
        let other = d.path().join(format!("k.tmp-{dead}-0123456789ab"));
        fs::write(&other, b"x").unwrap();
        let dir = d.path().join(temp_name("sub", dead, "0123456789ab"));
        fs::create_dir(&dir).unwrap();
        assert_eq!(sweep_stale_temp_files(d.path()).unwrap(), 1);
        assert!(!stale.exists());
        for kept in [&fresh, &ours, &init, &other, &dir] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
        assert!(sweep_stale_temp_files(&d.path().join("missing")).is_err());
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
