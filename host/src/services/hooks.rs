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

    fn log(&self, hook: Hook, stream: &str) -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(self.logs_dir.join(format!("{}.{stream}.log", hook.file_name())))?;
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
