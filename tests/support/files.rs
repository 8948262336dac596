//! Small file helpers.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Replaces a file the way deployment tools and secret managers do: write aside, then rename.
pub fn write_atomic(path: &Path, bytes: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The names in `dir`, sorted (the folder must exist).
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// This process's umask (children such as `warren` inherit it), from /proc.
pub fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:")).expect("a Umask line");
    u32::from_str_radix(line.trim(), 8).unwrap()
}

/// A pid that was just used and is gone: a child that has exited and been reaped.
pub fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    pid
}

/// A file named like warren's temporary file for `stem` written by `pid`
/// (`.{stem}.tmp-{pid}-{12 hex}`), last modified an hour ago.
pub fn plant_temp_file(dir: &Path, stem: &str, pid: u32) -> PathBuf {
    let p = dir.join(format!(".{stem}.tmp-{pid}-0123456789ab"));
    std::fs::write(&p, b"leftover").unwrap();
    let file = std::fs::File::options().write(true).open(&p).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600)).unwrap();
    p
}
