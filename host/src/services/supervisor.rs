//! The shell around one service's [`ServiceState`]: one task that owns the state, the process
//! and its timers; it carries out the state machine's actions and feeds back what happened.
//! No polling: it wakes on a command, the process's pidfd, the init hook's end or a timer.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::backoff::BackoffPolicy;
use super::hooks::{Hook, HookOutcome, HookOutput, HookRunner};
use super::output::{self, Stream};
use super::process::{self, OutputFifo, Process, ProcessRecord};
use super::state::{Action, Desired, ExitStatus, FailedHook, Input, Phase, ServiceState};

/// Everything a service's task needs, fixed when it is loaded.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    /// `NAME.GROUP`, the log prefix and Habitat's service group.
    pub group: String,
    pub ident: String,
    pub hooks: HookRunner,
    /// `{data_path}/proc/NAME.json`: the running process, for a reattach after a crash.
    pub record: PathBuf,
    /// `{data_path}/proc/NAME.{out,err}`: the output FIFOs (the supervisor's, 0600).
    pub fifo_base: PathBuf,
    pub shutdown_signal: i32,
    pub shutdown_timeout: Duration,
    pub policy: BackoffPolicy,
    /// How often the health-check hook runs (`--health-check-interval`).
    pub health_interval: Duration,
}

/// Habitat's health: the health-check hook's exit code (0 OK, 1 WARNING, 2 CRITICAL, else
/// UNKNOWN), or a bound plugin's answer (UNKNOWN when it fails); without the hook, up is OK
/// and down is CRITICAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Health {
    pub fn label(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Warning => "WARNING",
            Health::Critical => "CRITICAL",
            Health::Unknown => "UNKNOWN",
        }
    }

    fn of(outcome: &HookOutcome) -> Health {
        match outcome {
            HookOutcome::Exited(ExitStatus::Code(0)) => Health::Ok,
            HookOutcome::Exited(ExitStatus::Code(1)) => Health::Warning,
            HookOutcome::Exited(ExitStatus::Code(2)) => Health::Critical,
            HookOutcome::Health { health, .. } => match health {
                crate::plugins::Health::Ok => Health::Ok,
                crate::plugins::Health::Warning => Health::Warning,
                crate::plugins::Health::Critical => Health::Critical,
                crate::plugins::Health::Unknown => Health::Unknown,
            },
            _ => Health::Unknown,
        }
    }
}

#[derive(Debug)]
pub enum Command {
    Want(Desired),
    /// Stop with this shutdown timeout instead of the package's (`svc stop --timeout`).
    StopWithin(Duration),
    Restart,
    /// The rendered config changed: run the reconfigure hook (while the service is up).
    Reconfigure,
    /// This member's suitability for leadership (the election asks): the suitability hook's
    /// answer, None without one.
    Suitability(oneshot::Sender<super::hooks::Suitability>),
    /// A file the service consumes was updated (a config-file upload): run file-updated.
    FileUpdated {
        file: String,
        done: oneshot::Sender<Option<HookOutcome>>,
    },
    /// Ends the task. `stop`: stop the service first (supervisor shutdown, unload); otherwise
    /// leave it running for the next supervisor process to reattach (`sup restart`).
    Exit {
        stop: bool,
        done: oneshot::Sender<()>,
    },
}

/// What `svc status` shows of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    pub name: String,
    pub group: String,
    pub ident: String,
    pub desired: Desired,
    pub up: bool,
    /// starting, up, backoff, stopping, down.
    pub phase: &'static str,
    pub pid: Option<u32>,
    /// When the state (up or down) was entered, on the supervisor's clock.
    pub since: Instant,
    pub settled: bool,
    pub failures: u32,
    pub restarts: u64,
    pub last_failure: Option<String>,
    /// The last health check's result (None before the first one).
    pub health: Option<Health>,
    /// What the last health check's hook wrote (empty without a hook).
    pub health_output: Option<std::sync::Arc<HookOutput>>,
    /// When a service backing off after a failure starts again.
    pub next_restart: Option<Instant>,
    /// The last failure's hook and time (`last_failure` says what happened).
    pub failed: Option<(FailedHook, Instant)>,
}

/// A running service task.
pub struct ServiceTask {
    pub commands: mpsc::Sender<Command>,
    pub view: watch::Receiver<ServiceView>,
    pub task: JoinHandle<()>,
}

/// Starts the task: it reattaches `running` if given (a process found alive after a restart),
/// then moves towards `desired`.
pub fn start(
    config: ServiceConfig,
    desired: Desired,
    running: Option<Process>,
    epoch: Instant,
) -> ServiceTask {
    let seed = u64::from_le_bytes(crate::crypto::sodium::random_array());
    let mut state =
        ServiceState::new(config.policy, config.shutdown_timeout, config.hooks.has(Hook::Init), seed);
    state.desired = desired;
    let (tx, rx) = mpsc::channel(16);
    let (view_tx, view) = watch::channel(view_of(&config, &state, epoch));
    let shell = Shell {
        config,
        state,
        epoch,
        process: None,
        init: None,
        wake: None,
        view: view_tx,
        health: None,
        health_output: None,
        health_at: None,
        health_check: None,
        post_run: None,
        rng: seed,
    };
    let task = tokio::spawn(shell.run(rx, running));
    ServiceTask { commands: tx, view, task }
}

fn view_of(c: &ServiceConfig, s: &ServiceState, epoch: Instant) -> ServiceView {
    ServiceView {
        name: c.name.clone(),
        group: c.group.clone(),
        ident: c.ident.clone(),
        desired: s.desired,
        up: s.is_up(),
        phase: match s.phase {
            Phase::Down => "down",
            Phase::Initializing | Phase::Starting => "starting",
            Phase::Up { .. } => "up",
            Phase::Backoff { .. } => "backoff",
            Phase::Stopping { .. } => "stopping",
        },
        pid: s.pid(),
        since: epoch + s.since,
        settled: s.settled(),
        failures: s.failures(),
        restarts: s.restarts,
        last_failure: s.last_failure.as_ref().map(|f| f.what.clone()),
        health: None,
        health_output: None,
        next_restart: match s.phase {
            Phase::Backoff { until } => Some(epoch + until),
            _ => None,
        },
        failed: s.last_failure.as_ref().map(|f| (f.hook, epoch + f.at)),
    }
}

struct Shell {
    config: ServiceConfig,
    state: ServiceState,
    epoch: Instant,
    process: Option<Process>,
    init: Option<JoinHandle<HookOutcome>>,
    wake: Option<Duration>,
    health: Option<Health>,
    health_output: Option<std::sync::Arc<HookOutput>>,
    /// When the next health check is due (only while up).
    health_at: Option<Duration>,
    health_check: Option<JoinHandle<(HookOutcome, HookOutput)>>,
    /// The post-run hook and its retries, for the process now running.
    post_run: Option<JoinHandle<()>>,
    rng: u64,
    view: watch::Sender<ServiceView>,
}

impl Shell {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>, running: Option<Process>) {
        // What the spec wants, whatever was found running.
        let desired = self.state.desired;
        if let Some(p) = running {
            tracing::info!(service = %self.config.group, pid = p.pid, "reattached to the running service");
            let pid = p.pid;
            self.pump_output();
            self.process = Some(p);
            self.feed(Input::Reattached { pid, started: self.now() }).await;
        }
        self.feed(Input::Want(desired)).await;
        loop {
            self.schedule_health();
            self.publish();
            let now = self.now();
            let wake_in = self.wake.map(|w| w.saturating_sub(now));
            let input = tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Want(d)) => Input::Want(d),
                    Some(Command::StopWithin(within)) => Input::Stop { within },
                    Some(Command::Restart) => Input::Restart,
                    Some(Command::Reconfigure) => {
                        if self.state.is_up() {
                            let outcome = self.config.hooks.run(Hook::Reconfigure).await;
                            self.log_hook(Hook::Reconfigure, &outcome);
                        }
                        continue;
                    }
                    // On a task of their own: the loop keeps supervising meanwhile.
                    Some(Command::Suitability(reply)) => {
                        let hooks = self.config.hooks.clone();
                        tokio::spawn(async move { let _ = reply.send(hooks.suitability().await); });
                        continue;
                    }
                    Some(Command::FileUpdated { file, done }) => {
                        let (hooks, group) = (self.config.hooks.clone(), self.config.group.clone());
                        tokio::spawn(async move {
                            let outcome = hooks.file_updated(&file).await;
                            if let Some(o) = &outcome {
                                log_hook(&group, Hook::FileUpdated, o);
                            }
                            let _ = done.send(outcome);
                        });
                        continue;
                    }
                    Some(Command::Exit { stop, done }) => {
                        if stop {
                            self.stop_for_exit(&mut commands).await;
                        }
                        self.publish();
                        let _ = done.send(());
                        return;
                    }
                    // The manager is gone without a word: leave the service running.
                    None => return,
                },
                status = wait(&self.process) => self.exited(status),
                outcome = wait_init(&mut self.init) => {
                    self.init = None;
                    self.log_hook(Hook::Init, &outcome);
                    Input::InitFinished { error: (!outcome.ok()).then(|| outcome.to_string()) }
                },
                _ = sleep(wake_in) => {
                    self.wake = None;
                    Input::Timer
                },
                _ = sleep(self.health_at.map(|h| h.saturating_sub(now))) => {
                    self.health_at = None;
                    self.check_health();
                    continue;
                },
                (outcome, output) = wait_check(&mut self.health_check) => {
                    self.health_check = None;
                    self.health_output = Some(std::sync::Arc::new(output));
                    self.health_checked(&outcome);
                    continue;
                },
            };
            self.feed(input).await;
        }
    }

    /// While up, a check is always scheduled or running; while down, none is.
    fn schedule_health(&mut self) {
        if !self.state.is_up() {
            self.health_at = None;
            self.health = None;
            self.health_output = None;
            return;
        }
        if self.health_at.is_none() && self.health_check.is_none() {
            // The first check soon after start, then every interval.
            let first = self.config.health_interval.min(Duration::from_secs(1));
            self.health_at = Some(self.now() + first);
        }
    }

    fn check_health(&mut self) {
        if !self.state.is_up() {
            return;
        }
        if !self.config.hooks.has(Hook::HealthCheck) {
            // No hook: up is OK (Habitat's rule), and there is no output.
            self.health_output = Some(Default::default());
            self.health_checked(&HookOutcome::Exited(ExitStatus::Code(0)));
            return;
        }
        let hooks = self.config.hooks.clone();
        self.health_check = Some(tokio::spawn(async move { hooks.run_capturing(Hook::HealthCheck).await }));
    }

    fn health_checked(&mut self, outcome: &HookOutcome) {
        let health = Health::of(outcome);
        if self.health != Some(health) {
            let h = health.label();
            if health == Health::Ok {
                tracing::info!(service = %self.config.group, health = h, "health check");
            } else {
                tracing::warn!(service = %self.config.group, health = h, "health check: {outcome}");
            }
        }
        self.health = Some(health);
        // Habitat's pacing: after an OK, the interval plus a random splay; after anything
        // else, min(interval, 30 s).
        let interval = self.config.health_interval;
        let next = if health == Health::Ok {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let splay = interval.as_millis().max(1) as u64;
            interval + Duration::from_millis(self.rng % splay) / 4
        } else {
            interval.min(Duration::from_secs(30))
        };
        if self.state.is_up() {
            self.health_at = Some(self.now() + next);
        }
        self.publish();
    }

    /// Stops the service and waits until it is down (its shutdown timeout bounds the wait).
    async fn stop_for_exit(&mut self, commands: &mut mpsc::Receiver<Command>) {
        self.feed(Input::Want(Desired::Down)).await;
        while self.state.phase != Phase::Down {
            self.publish();
            let wake_in = self.wake.map(|w| w.saturating_sub(self.now()));
            let input = tokio::select! {
                status = wait(&self.process) => self.exited(status),
                outcome = wait_init(&mut self.init) => {
                    self.init = None;
                    Input::InitFinished { error: (!outcome.ok()).then(|| outcome.to_string()) }
                },
                _ = sleep(wake_in) => { self.wake = None; Input::Timer },
                // Later commands wait: the supervisor is going away.
                Some(_) = commands.recv() => continue,
            };
            self.feed(input).await;
        }
    }

    fn exited(&mut self, (pid, status): (u32, ExitStatus)) -> Input {
        self.process = None;
        // Retrying post-run for a process that is gone means nothing.
        if let Some(p) = self.post_run.take() {
            p.abort();
        }
        Process::kill_leftovers(pid);
        self.remove_record();
        Input::Exited { pid, status }
    }

    fn publish(&self) {
        let mut view = view_of(&self.config, &self.state, self.epoch);
        view.health = self.health;
        view.health_output = self.health_output.clone();
        self.view.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }

    /// Hands `input` to the state machine and carries out what it says, including the inputs
    /// that carrying it out produces (a spawn's result).
    async fn feed(&mut self, input: Input) {
        let mut queue = vec![input];
        while let Some(input) = queue.pop() {
            let now = self.now();
            let actions = self.state.handle(now, input);
            for action in actions {
                if let Some(next) = self.act(action).await {
                    queue.push(next);
                }
            }
        }
    }

    async fn act(&mut self, action: Action) -> Option<Input> {
        match action {
            Action::RunInit => {
                let hooks = self.config.hooks.clone();
                self.init = Some(tokio::spawn(async move { hooks.run(Hook::Init).await }));
                None
            }
            Action::Spawn => Some(match self.spawn_run() {
                Ok(pid) => {
                    self.start_post_run();
                    Input::Spawned { pid }
                }
                Err(e) => {
                    tracing::warn!(service = %self.config.group, error = %e, "the run hook could not start");
                    Input::SpawnFailed { error: e.to_string() }
                }
            }),
            Action::Terminate { pid } => {
                self.signal(pid, self.config.shutdown_signal);
                self.signal(pid, libc::SIGCONT);
                None
            }
            Action::Kill { pid } => {
                tracing::warn!(service = %self.config.group, pid, "did not stop within its shutdown timeout; killing its process group");
                self.signal(pid, libc::SIGKILL);
                None
            }
            Action::RunPostStop => {
                if self.config.hooks.has(Hook::PostStop) {
                    let outcome = self.config.hooks.run(Hook::PostStop).await;
                    self.log_hook(Hook::PostStop, &outcome);
                }
                None
            }
            Action::WakeAt(t) => {
                self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
                None
            }
        }
    }

    /// Habitat runs post-run once the run hook has started, again at once while it fails (a
    /// tight loop); here a failure is retried with a doubling pause, from the backoff's
    /// minimum up to its maximum, until it succeeds or the process ends.
    fn start_post_run(&mut self) {
        if !self.config.hooks.has(Hook::PostRun) {
            return;
        }
        let (hooks, group, policy) =
            (self.config.hooks.clone(), self.config.group.clone(), self.config.policy);
        self.post_run = Some(tokio::spawn(async move {
            let mut pause = policy.min.max(Duration::from_millis(10));
            for attempt in 1u32.. {
                let outcome = hooks.run(Hook::PostRun).await;
                if outcome.ok() {
                    tracing::info!(service = %group, hook = "post-run", attempt, "hook succeeded");
                    return;
                }
                tracing::warn!(service = %group, hook = "post-run", attempt, "hook failed: {outcome}; again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(policy.max.max(pause));
            }
        }));
    }

    fn signal(&self, pid: u32, signal: i32) {
        if let Some(p) = self.process.as_ref().filter(|p| p.pid == pid)
            && let Err(e) = p.signal_group(signal)
        {
            tracing::debug!(service = %self.config.group, pid, signal, error = %e, "signal not delivered");
        }
    }

    fn log_hook(&self, hook: Hook, outcome: &HookOutcome) {
        log_hook(&self.config.group, hook, outcome);
    }

    fn fifo(&self, stream: Stream) -> std::io::Result<OutputFifo> {
        let mut path = self.config.fifo_base.clone().into_os_string();
        path.push(match stream {
            Stream::Out => ".out",
            Stream::Err => ".err",
        });
        OutputFifo::create(&PathBuf::from(path))
    }

    /// Starts the run hook with its output on the FIFOs, records it, and starts reading.
    fn spawn_run(&mut self) -> std::io::Result<u32> {
        let (out, err) = (self.fifo(Stream::Out)?, self.fifo(Stream::Err)?);
        let spec = self.config.hooks.spawn_spec(Hook::Run, out.writer()?, err.writer()?);
        // Our readers open while our writer copies still exist (a FIFO with no writer reads as
        // ended), then the copies close with `spec` once the child has its own.
        let readers = (out.reader()?, err.reader()?);
        let p = process::spawn(spec)?;
        let pid = p.pid;
        if let Err(e) = self.save_record(&p.record()) {
            tracing::warn!(service = %self.config.group, error = %e, "cannot record the running process");
        }
        tracing::info!(service = %self.config.group, pid, "started the run hook");
        self.start_pumps(readers);
        self.process = Some(p);
        Ok(pid)
    }

    /// A reattached process: read its FIFOs again (it kept writing, or waiting, meanwhile).
    fn pump_output(&mut self) {
        let readers = self.fifo(Stream::Out).and_then(|o| o.reader()).and_then(|o| {
            let e = self.fifo(Stream::Err)?.reader()?;
            Ok((o, e))
        });
        match readers {
            Ok(r) => self.start_pumps(r),
            Err(e) => {
                tracing::warn!(service = %self.config.group, error = %e, "cannot read the service's output")
            }
        }
    }

    fn start_pumps(&self, (out, err): (tokio::net::unix::pipe::Receiver, tokio::net::unix::pipe::Receiver)) {
        for (fifo, stream) in [(out, Stream::Out), (err, Stream::Err)] {
            let (prefix, logs) = (self.config.group.clone(), self.config.hooks.scripts.logs_dir.clone());
            tokio::spawn(async move { output::pump(fifo, prefix, stream, &logs).await });
        }
    }

    fn save_record(&self, r: &ProcessRecord) -> std::io::Result<()> {
        if let Some(dir) = self.config.record.parent() {
            crate::fsutil::create_private_dir(dir)?;
        }
        let json = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(&self.config.record, &json, 0o600, crate::fsutil::Existing::Replace)
    }

    fn remove_record(&self) {
        let _ = std::fs::remove_file(&self.config.record);
    }
}

fn log_hook(group: &str, hook: Hook, outcome: &HookOutcome) {
    if outcome.ok() {
        tracing::info!(service = %group, hook = hook.file_name(), "hook succeeded");
    } else {
        tracing::warn!(service = %group, hook = hook.file_name(), "hook failed: {outcome}");
    }
}

async fn wait(p: &Option<Process>) -> (u32, ExitStatus) {
    match p {
        Some(p) => (p.pid, p.wait().await),
        None => std::future::pending().await,
    }
}

async fn wait_init(h: &mut Option<JoinHandle<HookOutcome>>) -> HookOutcome {
    match h {
        Some(h) => h.await.unwrap_or_else(|e| HookOutcome::Failed(e.to_string())),
        None => std::future::pending().await,
    }
}

async fn wait_check(h: &mut Option<JoinHandle<(HookOutcome, HookOutput)>>) -> (HookOutcome, HookOutput) {
    match h {
        Some(h) => h.await.unwrap_or_else(|e| (HookOutcome::Failed(e.to_string()), HookOutput::default())),
        None => std::future::pending().await,
    }
}

async fn sleep(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// A record left by an earlier supervisor process, and the process it names if that process
/// is still the one recorded (same boot, pid and start time).
pub fn find_running(record: &std::path::Path) -> Option<Process> {
    let text = std::fs::read(record).ok()?;
    let r: ProcessRecord = serde_json::from_slice(&text).ok()?;
    let found = process::reattach(&r);
    if found.is_none() {
        let _ = std::fs::remove_file(record);
    }
    found
}
