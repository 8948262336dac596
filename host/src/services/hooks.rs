//! Package hooks as scripts (Habitat's set and exit-code meanings). Each short hook runs in a
//! session of its own with a deadline (then its group is killed), its output appended to
//! `logs/{hook}.stdout.log` and `logs/{hook}.stderr.log` as Habitat names them.

use std::path::PathBuf;
use std::time::Duration;

use super::process::{self, SpawnSpec};
use super::state::ExitStatus;

/// Habitat's service hooks (the `reload` hook is gone from Habitat; `install` is a package
/// hook, not a service one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Init,
    Run,
    PostRun,
    HealthCheck,
    Reconfigure,
    Suitability,
    FileUpdated,
    PostStop,
}

impl Hook {
    pub const ALL: [Hook; 8] = [
        Hook::Init,
        Hook::Run,
        Hook::PostRun,
        Hook::HealthCheck,
        Hook::Reconfigure,
        Hook::Suitability,
        Hook::FileUpdated,
        Hook::PostStop,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            Hook::Init => "init",
            Hook::Run => "run",
            Hook::PostRun => "post-run",
            Hook::HealthCheck => "health-check",
            Hook::Reconfigure => "reconfigure",
            Hook::Suitability => "suitability",
            Hook::FileUpdated => "file-updated",
            Hook::PostStop => "post-stop",
        }
    }

    /// How long a short hook may run before its process group is killed.
    pub fn deadline(self) -> Duration {
        match self {
            Hook::Init => Duration::from_secs(300),
            Hook::HealthCheck | Hook::Suitability => Duration::from_secs(30),
            _ => Duration::from_secs(60),
        }
    }
}

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Exited(ExitStatus),
    TimedOut(Duration),
    /// It could not be started (missing interpreter, not executable, ...).
    Failed(String),
}

impl HookOutcome {
    pub fn ok(&self) -> bool {
        *self == HookOutcome::Exited(ExitStatus::Code(0))
    }
}

impl std::fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookOutcome::Exited(s) => write!(f, "{s}"),
            HookOutcome::TimedOut(d) => write!(f, "timed out after {d:?} (its process group was killed)"),
            HookOutcome::Failed(e) => write!(f, "could not start: {e}"),
        }
    }
}

/// Where a service's hooks run: its rendered hooks, its directories, its environment.
#[derive(Debug, Clone)]
pub struct HookContext {
    pub hooks_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub cwd: PathBuf,
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    pub ids: Option<(u32, u32)>,
}

impl HookContext {
    pub fn path(&self, hook: Hook) -> PathBuf {
        self.hooks_dir.join(hook.file_name())
    }

    pub fn has(&self, hook: Hook) -> bool {
        self.path(hook).is_file()
    }

    /// `logs/{hook}.{stream}.log`, `stream` being `stdout` or `stderr`.
    pub fn log_path(&self, hook: Hook, stream: &str) -> PathBuf {
        self.logs_dir.join(format!("{}.{stream}.log", hook.file_name()))
    }

    fn log(&self, hook: Hook, stream: &str) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(self.log_path(hook, stream))?;
        Ok(f.into())
    }

    pub fn spawn_spec(
        &self,
        hook: Hook,
        stdout: std::os::fd::OwnedFd,
        stderr: std::os::fd::OwnedFd,
    ) -> SpawnSpec {
        SpawnSpec {
            program: self.path(hook),
            args: Vec::new(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            ids: self.ids,
            stdout,
            stderr,
        }
    }

    /// Runs a short hook to its end or its deadline.
    pub async fn run(&self, hook: Hook) -> HookOutcome {
        let spec = match (self.log(hook, "stdout"), self.log(hook, "stderr")) {
            (Ok(out), Ok(err)) => self.spawn_spec(hook, out, err),
            (Err(e), _) | (_, Err(e)) => {
                return HookOutcome::Failed(format!("its log in {}: {e}", self.logs_dir.display()));
            }
        };
        let proc = match process::spawn(spec) {
            Ok(p) => p,
            Err(e) => return HookOutcome::Failed(e.to_string()),
        };
        let limit = hook.deadline();
        match tokio::time::timeout(limit, proc.wait()).await {
            Ok(status) => HookOutcome::Exited(status),
            Err(_) => {
                let _ = proc.signal_group(libc::SIGKILL);
                let _ = proc.wait().await;
                HookOutcome::TimedOut(limit)
            }
        }
    }
}

/// What one run of a hook wrote. Habitat's gateway shows a health check's latest output (its
/// hook logs hold only the latest run); warren's logs keep every run, so this is the part the
/// run appended, the last [`OUTPUT_CAP`] bytes of each stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookOutput {
    pub stdout: String,
    pub stderr: String,
}

/// Bytes kept of each stream of a run's output (the end: a check's verdict comes last).
pub const OUTPUT_CAP: u64 = 16 * 1024;

impl HookContext {
    /// Runs a short hook (as [`HookContext::run`]) and returns what this run wrote.
    pub async fn run_capturing(&self, hook: Hook) -> (HookOutcome, HookOutput) {
        let (out, err) = (self.log_path(hook, "stdout"), self.log_path(hook, "stderr"));
        let (out_mark, err_mark) = (log_len(&out), log_len(&err));
        let outcome = self.run(hook).await;
        let output = HookOutput {
            stdout: appended(&out, out_mark, OUTPUT_CAP),
            stderr: appended(&err, err_mark, OUTPUT_CAP),
        };
        (outcome, output)
    }
}

fn log_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// What `path` gained past `mark`: its last `cap` bytes at most, never a broken character. A
/// log that shrank meanwhile (rotated by hand) is read from its start.
fn appended(path: &std::path::Path, mark: u64, cap: u64) -> String {
    use std::io::{Read as _, Seek as _};
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let base = if len < mark { 0 } else { mark };
    let from = base.max(len.saturating_sub(cap));
    let mut buf = Vec::new();
    if f.seek(std::io::SeekFrom::Start(from)).is_err() || f.take(cap).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    // Cut at a character's start when the cap cut into one.
    let start = if from > base { buf.iter().position(|b| b & 0xC0 != 0x80).unwrap_or(buf.len()) } else { 0 };
    String::from_utf8_lossy(&buf[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_output_is_what_came_after_the_mark_capped_at_a_character() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("health-check.stdout.log");
        std::fs::write(&log, "old run\n").unwrap();
        let mark = log_len(&log);
        std::fs::write(&log, "old run\nnew run\n").unwrap();
        assert_eq!(appended(&log, mark, OUTPUT_CAP), "new run\n");
        assert_eq!(appended(&log, log_len(&log), OUTPUT_CAP), "", "a silent run");
        // Over the cap: the end is kept, from a whole character on (é is two bytes).
        std::fs::write(&log, "ééé\n").unwrap();
        assert_eq!(appended(&log, 0, 4), "é\n", "a cut é is dropped, not mangled");
        // A log rotated meanwhile is read from its start; a missing one is empty.
        std::fs::write(&log, "fresh\n").unwrap();
        assert_eq!(appended(&log, 1000, OUTPUT_CAP), "fresh\n");
        assert_eq!(appended(&dir.path().join("none.log"), 0, OUTPUT_CAP), "");
    }
}
