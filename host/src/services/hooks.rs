//! A service's hooks: package scripts (Habitat's set and exit-code meanings), or for six events
//! a bound lifecycle-hook plugin. [`HookRunner`] is the one place that decides which serves an
//! event. Each short script runs in a session of its own with a deadline (then its group is
//! killed), its output appended to `logs/{hook}.stdout.log` and `logs/{hook}.stderr.log` as
//! Habitat names them. A plugin is called on tokio's blocking pool under its own grants,
//! deadline and memory cap; its faults are failed hooks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::process::{self, SpawnSpec};
use super::state::ExitStatus;
use crate::plugins::{HookHandle, PluginError, PluginRegistry, ServiceContext};

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

    /// The events a bound lifecycle-hook plugin serves (`run` and `post-run` stay scripts).
    pub fn plugin_serves(self) -> bool {
        matches!(
            self,
            Hook::Init
                | Hook::HealthCheck
                | Hook::Reconfigure
                | Hook::Suitability
                | Hook::FileUpdated
                | Hook::PostStop
        )
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
    /// The bound plugin answered: `Err` is the failure it reported.
    Answered {
        plugin: String,
        result: Result<(), String>,
    },
    /// The bound plugin's answer to a health check.
    Health {
        plugin: String,
        health: crate::plugins::Health,
    },
    /// The bound plugin could not answer (trap, deadline, memory cap, not loaded).
    PluginFailed {
        plugin: String,
        error: String,
    },
}

impl HookOutcome {
    pub fn ok(&self) -> bool {
        matches!(
            self,
            HookOutcome::Exited(ExitStatus::Code(0))
                | HookOutcome::Answered { result: Ok(()), .. }
                | HookOutcome::Health { .. }
        )
    }
}

impl std::fmt::Display for HookOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookOutcome::Exited(s) => write!(f, "{s}"),
            HookOutcome::TimedOut(d) => write!(f, "timed out after {d:?} (its process group was killed)"),
            HookOutcome::Failed(e) => write!(f, "could not start: {e}"),
            HookOutcome::Answered { plugin, result: Ok(()) } => write!(f, "plugin {plugin}: ok"),
            HookOutcome::Answered { plugin, result: Err(e) } => write!(f, "plugin {plugin}: {e}"),
            HookOutcome::Health { plugin, health } => {
                let health = match health {
                    crate::plugins::Health::Ok => "ok",
                    crate::plugins::Health::Warning => "warning",
                    crate::plugins::Health::Critical => "critical",
                    crate::plugins::Health::Unknown => "unknown",
                };
                write!(f, "plugin {plugin}: {health}")
            }
            HookOutcome::PluginFailed { error, .. } => write!(f, "{error}"),
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
        let mut running = KillOnDrop(Some(proc));
        let proc = running.0.as_ref().expect("just set");
        let limit = hook.deadline();
        let outcome = match tokio::time::timeout(limit, proc.wait()).await {
            Ok(status) => HookOutcome::Exited(status),
            Err(_) => {
                let _ = proc.signal_group(libc::SIGKILL);
                let _ = proc.wait().await;
                HookOutcome::TimedOut(limit)
            }
        };
        running.0 = None;
        outcome
    }
}

/// A hook process whose run was abandoned (the task waiting for it was cancelled: the service
/// ended, or was unloaded) is killed with its group and reaped, never left behind.
struct KillOnDrop(Option<process::Process>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = p.signal_group(libc::SIGKILL);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = p.wait().await;
                });
            }
        }
    }
}

/// A lifecycle-hook plugin bound to a service (`svc load --hooks-plugin NAME`).
#[derive(Clone)]
pub struct PluginHooks {
    pub name: String,
    /// Looked up by name at each call, so a reloaded plugin serves the next event and a removed
    /// one makes it a failed hook. None: the supervisor runs without plugins.
    pub registry: Option<Arc<PluginRegistry>>,
    /// The service's context without its config (fixed at load).
    pub context: ServiceContext,
    /// The current merged config as TOML: the services manager sends each new one it renders.
    pub config: watch::Receiver<String>,
}

/// Who serves a service's hooks: its package scripts, or, for the events of
/// [`Hook::plugin_serves`], the bound plugin (its package's scripts for those are not run).
#[derive(Clone)]
pub struct HookRunner {
    pub scripts: HookContext,
    pub plugin: Option<PluginHooks>,
}

/// Never the context: it holds the config, and so maybe secrets.
impl std::fmt::Debug for HookRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookRunner")
            .field("hooks_dir", &self.scripts.hooks_dir)
            .field("plugin", &self.plugin.as_ref().map(|p| &p.name))
            .finish()
    }
}

/// A suitability hook's answer: the number, or why there is none; None: no such hook.
pub type Suitability = Option<Result<u64, String>>;

/// What a plugin call gave, or the failed hook it is.
type PluginCall<R> = Result<R, HookOutcome>;

impl HookRunner {
    pub fn scripts_only(scripts: HookContext) -> Self {
        HookRunner { scripts, plugin: None }
    }

    fn plugin_for(&self, hook: Hook) -> Option<&PluginHooks> {
        self.plugin.as_ref().filter(|_| hook.plugin_serves())
    }

    /// Whether the event has a hook (a bound plugin serves its events whatever the package has).
    pub fn has(&self, hook: Hook) -> bool {
        self.plugin_for(hook).is_some() || self.scripts.has(hook)
    }

    /// The run hook always is the package's script.
    pub fn spawn_spec(
        &self,
        hook: Hook,
        stdout: std::os::fd::OwnedFd,
        stderr: std::os::fd::OwnedFd,
    ) -> SpawnSpec {
        self.scripts.spawn_spec(hook, stdout, stderr)
    }

    /// Runs the event's hook: the plugin's entry point, or the script.
    pub async fn run(&self, hook: Hook) -> HookOutcome {
        self.event(hook, "").await
    }

    /// Runs the event's hook and returns what this run wrote: a script's output (as
    /// [`HookContext::run_capturing`]); a plugin writes nothing, so its failure is the stderr.
    pub async fn run_capturing(&self, hook: Hook) -> (HookOutcome, HookOutput) {
        if self.plugin_for(hook).is_none() {
            return self.scripts.run_capturing(hook).await;
        }
        let outcome = self.event(hook, "").await;
        let stderr = if outcome.ok() { String::new() } else { format!("{outcome}\n") };
        (outcome, HookOutput { stdout: String::new(), stderr })
    }

    /// The file-updated event (a config-file upload changed `file`): the plugin gets the file's
    /// name; a script, as Habitat's, gets nothing. None: the service has no such hook.
    pub async fn file_updated(&self, file: &str) -> Option<HookOutcome> {
        match self.has(Hook::FileUpdated) {
            true => Some(self.event(Hook::FileUpdated, file).await),
            false => None,
        }
    }

    async fn event(&self, hook: Hook, file: &str) -> HookOutcome {
        let Some(p) = self.plugin_for(hook) else { return self.scripts.run(hook).await };
        let name = p.name.clone();
        let answered = |result| HookOutcome::Answered { plugin: name.clone(), result };
        let outcome = match hook {
            Hook::Init => call(p, hook, |h, c| h.init(c)).await.map(answered),
            Hook::Reconfigure => call(p, hook, |h, c| h.reconfigure(c)).await.map(answered),
            Hook::PostStop => call(p, hook, |h, c| h.post_stop(c)).await.map(answered),
            Hook::FileUpdated => {
                let file = file.to_string();
                call(p, hook, move |h, c| h.file_updated(c, &file)).await.map(answered)
            }
            Hook::HealthCheck => call(p, hook, |h, c| h.health_check(c))
                .await
                .map(|health| HookOutcome::Health { plugin: name.clone(), health }),
            Hook::Suitability => call(p, hook, |h, c| h.suitability(c)).await.map(|_| answered(Ok(()))),
            Hook::Run | Hook::PostRun => unreachable!("plugin_serves excludes them"),
        };
        outcome.unwrap_or_else(|failed| failed)
    }

    /// This member's suitability for leadership (for elections): the plugin's answer, or the
    /// number the suitability script prints (Habitat's). None: the service has no such hook.
    pub async fn suitability(&self) -> Suitability {
        if let Some(p) = self.plugin_for(Hook::Suitability) {
            return Some(
                call(p, Hook::Suitability, |h, c| h.suitability(c)).await.map_err(|f| f.to_string()),
            );
        }
        if !self.scripts.has(Hook::Suitability) {
            return None;
        }
        let (outcome, output) = self.scripts.run_capturing(Hook::Suitability).await;
        Some(match outcome.ok() {
            true => parse_suitability(&output.stdout),
            false => Err(format!("the suitability hook failed: {outcome}")),
        })
    }
}

/// The last line a suitability script printed, as a number.
fn parse_suitability(output: &str) -> Result<u64, String> {
    let last = output.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
    last.parse().map_err(|_| format!("the suitability hook printed {last:?}, not a number (0 to 2^64-1)"))
}

/// Calls the bound plugin on the blocking pool with the service's current context.
async fn call<R: Send + 'static>(
    p: &PluginHooks,
    hook: Hook,
    f: impl FnOnce(&HookHandle, &ServiceContext) -> Result<R, PluginError> + Send + 'static,
) -> PluginCall<R> {
    let (name, registry) = (p.name.clone(), p.registry.clone());
    let mut context = p.context.clone();
    context.config_toml = p.config.borrow().clone();
    let failed = |name: &str, error: String| HookOutcome::PluginFailed { plugin: name.to_string(), error };
    let task = tokio::task::spawn_blocking(move || {
        let registry =
            registry.ok_or_else(|| format!("plugin {name}: this supervisor runs without plugins"))?;
        let handle = registry.hook(&name).map_err(|e| match e {
            PluginError::NotFound(_) => format!(
                "lifecycle-hook plugin {name} is not loaded (its file was removed, or it failed to load: see GET /plugins)"
            ),
            other => other.to_string(),
        })?;
        f(&handle, &context).map_err(|e| e.to_string())
    });
    // The plugin's own deadline stops it; this bounds a call stuck in a host function.
    match tokio::time::timeout(hook.deadline(), task).await {
        Ok(Ok(Ok(r))) => Ok(r),
        Ok(Ok(Err(error))) => Err(failed(&p.name, error)),
        Ok(Err(join)) => Err(failed(&p.name, format!("plugin {} call ended abnormally: {join}", p.name))),
        Err(_) => {
            Err(failed(&p.name, format!("plugin {} did not return within {:?}", p.name, hook.deadline())))
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
    fn a_bound_plugin_serves_six_events_and_run_and_post_run_stay_scripts() {
        let served: Vec<Hook> = Hook::ALL.into_iter().filter(|h| h.plugin_serves()).collect();
        assert_eq!(
            served,
            [
                Hook::Init,
                Hook::HealthCheck,
                Hook::Reconfigure,
                Hook::Suitability,
                Hook::FileUpdated,
                Hook::PostStop
            ]
        );
    }

    #[test]
    fn suitability_is_the_last_line_printed() {
        assert_eq!(parse_suitability("starting\n42\n\n"), Ok(42));
        assert_eq!(parse_suitability(" 7 "), Ok(7));
        assert!(parse_suitability("").is_err());
        assert!(parse_suitability("-1").unwrap_err().contains("\"-1\""));
        assert!(parse_suitability("lots").is_err());
    }

    #[test]
    fn plugin_outcomes_read_as_hook_outcomes() {
        let ok = HookOutcome::Answered { plugin: "p".into(), result: Ok(()) };
        let refused =
            HookOutcome::Answered { plugin: "p".into(), result: Err("no: fail_init = true".into()) };
        let health = HookOutcome::Health { plugin: "p".into(), health: crate::plugins::Health::Critical };
        let fault = HookOutcome::PluginFailed { plugin: "p".into(), error: "plugin p trapped: x".into() };
        assert!(ok.ok() && health.ok());
        assert!(!refused.ok() && !fault.ok());
        assert_eq!(refused.to_string(), "plugin p: no: fail_init = true");
        assert_eq!(fault.to_string(), "plugin p trapped: x");
    }

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
