//! One service's lifecycle as a pure state machine: inputs (what the operator wants, what the
//! process did, timers) in, actions (run init, spawn run, signal, kill, run post-stop, wake me
//! at) out. The shell in `supervisor.rs` carries the actions out and feeds back what happened;
//! it never decides anything itself, so every path here is tested without processes.
//!
//! Habitat's order: init (once per start) → run → (exit → restart with backoff). Stop: the
//! package's shutdown signal to the process group, SIGKILL after the timeout, then post-stop.

use std::time::Duration;

use super::backoff::{Backoff, BackoffPolicy};

/// What the operator asked for (`svc start` / `svc stop`; persisted in the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Up,
    Down,
}

/// How a process ended, as far as we can know (a reattached process gives no status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    Unknown,
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
            ExitStatus::Unknown => f.write_str("exit status unknown (not our child)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not running.
    Down,
    /// The init hook is running.
    Initializing,
    /// `Spawn` was asked for; waiting for the shell to say it ran.
    Starting,
    /// The run hook's process is running.
    Up { pid: u32, started: Duration },
    /// Waiting to restart after a failure.
    Backoff { until: Duration },
    /// The shutdown signal was sent; SIGKILL at `deadline` unless it exits first.
    Stopping { pid: u32, deadline: Duration, killed: bool, restart: bool },
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    RunInit,
    Spawn,
    /// The package's shutdown signal to the process group of `pid`.
    Terminate {
        pid: u32,
    },
    /// SIGKILL to the process group of `pid`.
    Kill {
        pid: u32,
    },
    RunPostStop,
    /// Call [`ServiceState::handle`] with [`Input::Timer`] at this time (or earlier).
    WakeAt(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Want(Desired),
    /// `Want(Down)` with this stop's own shutdown timeout (`svc stop --timeout`); a stop
    /// already under way gets the sooner of its deadline and `now + within`.
    Stop {
        within: Duration,
    },
    /// The run hook or the config changed with no reconfigure hook: restart now.
    Restart,
    /// `error`: why it failed (None: it succeeded).
    InitFinished {
        error: Option<String>,
    },
    Spawned {
        pid: u32,
    },
    SpawnFailed {
        error: String,
    },
    /// A process found running after a supervisor restart, ours by pid and start time.
    Reattached {
        pid: u32,
        started: Duration,
    },
    Exited {
        pid: u32,
        status: ExitStatus,
    },
    Timer,
}

/// The last thing that went wrong, for `svc status` and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub at: Duration,
    pub what: String,
    pub hook: FailedHook,
}

/// Which hook a failure ended (Habitat's `termination_reason`: init_hook_failed or
/// run_hook_failed), with the run hook's process when one ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedHook {
    Init,
    Run { pid: Option<u32> },
}

#[derive(Debug, Clone)]
pub struct ServiceState {
    pub desired: Desired,
    pub phase: Phase,
    /// When `phase` last changed between up and down (Habitat's "elapsed").
    pub since: Duration,
    pub last_failure: Option<Failure>,
    pub restarts: u64,
    backoff: Backoff,
    policy: BackoffPolicy,
    shutdown_timeout: Duration,
    has_init: bool,
    rng: u64,
}

impl ServiceState {
    pub fn new(policy: BackoffPolicy, shutdown_timeout: Duration, has_init: bool, seed: u64) -> Self {
        ServiceState {
            desired: Desired::Down,
            phase: Phase::Down,
            since: Duration::ZERO,
            last_failure: None,
            restarts: 0,
            backoff: Backoff::default(),
            policy,
            shutdown_timeout,
            has_init,
            rng: seed | 1,
        }
    }

    /// The package (hooks) or spec changed: new values from now on.
    pub fn reconfigure(&mut self, policy: BackoffPolicy, shutdown_timeout: Duration, has_init: bool) {
        (self.policy, self.shutdown_timeout, self.has_init) = (policy, shutdown_timeout, has_init);
    }

    /// Habitat's two-valued state: up while a process runs.
    pub fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Up { .. } | Phase::Stopping { .. })
    }

    pub fn pid(&self) -> Option<u32> {
        match self.phase {
            Phase::Up { pid, .. } | Phase::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Consecutive failures (a crash loop shows here).
    pub fn failures(&self) -> u32 {
        self.backoff.failures()
    }

    /// True once the desired state is reached (what `svc start|stop --wait` waits for).
    pub fn settled(&self) -> bool {
        match self.desired {
            Desired::Up => matches!(self.phase, Phase::Up { .. }),
            Desired::Down => self.phase == Phase::Down,
        }
    }

    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn enter(&mut self, now: Duration, phase: Phase) {
        let was_up = self.is_up();
        self.phase = phase;
        if was_up != self.is_up() {
            self.since = now;
        }
    }

    fn begin(&mut self, now: Duration) -> Vec<Action> {
        if self.has_init {
            self.enter(now, Phase::Initializing);
            vec![Action::RunInit]
        } else {
            self.enter(now, Phase::Starting);
            vec![Action::Spawn]
        }
    }

    /// A run failed (init failed, spawn failed, the process exited): back off or restart.
    fn failed(&mut self, now: Duration, uptime: Duration, hook: FailedHook, what: String) -> Vec<Action> {
        self.last_failure = Some(Failure { at: now, what, hook });
        if self.desired == Desired::Down {
            self.enter(now, Phase::Down);
            return vec![];
        }
        let random = self.random();
        let delay = self.backoff.next_delay(&self.policy, uptime, random);
        self.restarts += 1;
        if delay.is_zero() {
            return self.begin(now);
        }
        let until = now + delay;
        self.enter(now, Phase::Backoff { until });
        vec![Action::WakeAt(until)]
    }

    fn stop(&mut self, now: Duration, pid: u32, restart: bool) -> Vec<Action> {
        let deadline = now + self.shutdown_timeout;
        self.enter(now, Phase::Stopping { pid, deadline, killed: false, restart });
        vec![Action::Terminate { pid }, Action::WakeAt(deadline)]
    }

    pub fn handle(&mut self, now: Duration, input: Input) -> Vec<Action> {
        match (self.phase.clone(), input) {
            (Phase::Stopping { pid, deadline, killed, .. }, Input::Stop { within }) => {
                self.desired = Desired::Down;
                let deadline = deadline.min(now + within);
                self.phase = Phase::Stopping { pid, deadline, killed, restart: false };
                vec![Action::WakeAt(deadline)]
            }
            (_, Input::Stop { within }) => {
                let usual = std::mem::replace(&mut self.shutdown_timeout, within);
                let actions = self.handle(now, Input::Want(Desired::Down));
                self.shutdown_timeout = usual;
                actions
            }
            (_, Input::Want(d)) => {
                self.desired = d;
                match (d, self.phase.clone()) {
                    (Desired::Up, Phase::Down) => {
                        self.backoff.reset();
                        // Habitat's restart_count starts again on a wanted start.
                        self.restarts = 0;
                        self.begin(now)
                    }
                    // A wanted start ends the wait.
                    (Desired::Up, Phase::Backoff { .. }) => self.begin(now),
                    // Stopping to restart, now to stay up: let it come back.
                    (Desired::Up, Phase::Stopping { pid, deadline, killed, .. }) => {
                        self.phase = Phase::Stopping { pid, deadline, killed, restart: true };
                        vec![]
                    }
                    (Desired::Down, Phase::Up { pid, .. }) => self.stop(now, pid, false),
                    (Desired::Down, Phase::Backoff { .. }) => {
                        self.enter(now, Phase::Down);
                        vec![]
                    }
                    (Desired::Down, Phase::Stopping { pid, deadline, killed, .. }) => {
                        self.phase = Phase::Stopping { pid, deadline, killed, restart: false };
                        vec![]
                    }
                    // Initializing / Starting: the next step sees `desired` and stops there.
                    _ => vec![],
                }
            }
            (Phase::Up { pid, .. }, Input::Restart) => self.stop(now, pid, true),
            (Phase::Backoff { .. }, Input::Restart) if self.desired == Desired::Up => self.begin(now),
            (_, Input::Restart) => vec![],
            (Phase::Initializing, Input::InitFinished { error }) => {
                if self.desired == Desired::Down {
                    self.enter(now, Phase::Down);
                    vec![]
                } else if let Some(why) = error {
                    self.failed(now, Duration::ZERO, FailedHook::Init, format!("the init hook failed: {why}"))
                } else {
                    self.enter(now, Phase::Starting);
                    vec![Action::Spawn]
                }
            }
            (Phase::Starting, Input::Spawned { pid }) => {
                self.enter(now, Phase::Up { pid, started: now });
                if self.desired == Desired::Down { self.stop(now, pid, false) } else { vec![] }
            }
            (Phase::Starting, Input::SpawnFailed { error }) => {
                let what = format!("the run hook could not start: {error}");
                self.failed(now, Duration::ZERO, FailedHook::Run { pid: None }, what)
            }
            // Up again as found; the desired state (the spec's) is fed next and may stop it.
            (Phase::Down | Phase::Backoff { .. } | Phase::Starting, Input::Reattached { pid, started }) => {
                self.enter(now, Phase::Up { pid, started });
                vec![]
            }
            (Phase::Up { pid, started }, Input::Exited { pid: p, status }) if p == pid => {
                let uptime = now.saturating_sub(started);
                let mut actions = vec![Action::RunPostStop];
                let what = format!("the run hook ended ({status})");
                actions.extend(self.failed(now, uptime, FailedHook::Run { pid: Some(pid) }, what));
                actions
            }
            (Phase::Stopping { pid, restart, .. }, Input::Exited { pid: p, .. }) if p == pid => {
                self.enter(now, Phase::Down);
                let mut actions = vec![Action::RunPostStop];
                if restart && self.desired == Desired::Up {
                    self.backoff.reset();
                    actions.extend(self.begin(now));
                }
                actions
            }
            (Phase::Backoff { until }, Input::Timer) if now >= until => self.begin(now),
            (Phase::Backoff { until }, Input::Timer) => vec![Action::WakeAt(until)],
            (Phase::Stopping { pid, deadline, killed: false, restart }, Input::Timer) if now >= deadline => {
                self.phase = Phase::Stopping { pid, deadline, killed: true, restart };
                vec![Action::Kill { pid }]
            }
            (Phase::Stopping { deadline, killed: false, .. }, Input::Timer) => vec![Action::WakeAt(deadline)],
            // Anything else is stale (an old pid's exit, a timer of a past phase): ignored.
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn svc(has_init: bool) -> ServiceState {
        ServiceState::new(BackoffPolicy::default(), Duration::from_secs(8), has_init, 42)
    }

    #[test]
    fn start_runs_init_then_spawns_and_stop_terminates_then_kills() {
        let mut s = svc(true);
        assert_eq!(s.handle(MS(0), Input::Want(Desired::Up)), vec![Action::RunInit]);
        assert_eq!(s.handle(MS(5), Input::InitFinished { error: None }), vec![Action::Spawn]);
        assert!(!s.settled());
        assert_eq!(s.handle(MS(6), Input::Spawned { pid: 10 }), vec![]);
        assert!(s.settled() && s.is_up() && s.since == MS(6));
        let stop = s.handle(MS(100), Input::Want(Desired::Down));
        assert_eq!(stop, vec![Action::Terminate { pid: 10 }, Action::WakeAt(MS(8100))]);
        assert_eq!(s.handle(MS(5000), Input::Timer), vec![Action::WakeAt(MS(8100))]);
        assert_eq!(s.handle(MS(8100), Input::Timer), vec![Action::Kill { pid: 10 }]);
        assert_eq!(s.handle(MS(8101), Input::Timer), vec![], "killed once");
        let done = s.handle(MS(8102), Input::Exited { pid: 10, status: ExitStatus::Signal(9) });
        assert_eq!(done, vec![Action::RunPostStop]);
        assert!(s.settled() && s.phase == Phase::Down && s.since == MS(8102));
    }

    #[test]
    fn a_stop_with_its_own_timeout_kills_sooner_and_shortens_a_stop_under_way() {
        let mut s = svc(false);
        s.handle(MS(0), Input::Want(Desired::Up));
        s.handle(MS(1), Input::Spawned { pid: 10 });
        let stop = s.handle(MS(100), Input::Stop { within: MS(500) });
        assert_eq!(stop, vec![Action::Terminate { pid: 10 }, Action::WakeAt(MS(600))]);
        assert_eq!(s.desired, Desired::Down);
        assert_eq!(s.handle(MS(600), Input::Timer), vec![Action::Kill { pid: 10 }]);
        s.handle(MS(601), Input::Exited { pid: 10, status: ExitStatus::Signal(9) });
        // The package's timeout is back for the next stop.
        s.handle(MS(700), Input::Want(Desired::Up));
        s.handle(MS(701), Input::Spawned { pid: 11 });
        let stop = s.handle(MS(800), Input::Want(Desired::Down));
        assert_eq!(stop, vec![Action::Terminate { pid: 11 }, Action::WakeAt(MS(8800))]);
        // A shorter stop during it brings the kill forward; a longer one does not delay it.
        assert_eq!(s.handle(MS(900), Input::Stop { within: MS(100) }), vec![Action::WakeAt(MS(1000))]);
        assert_eq!(s.handle(MS(950), Input::Stop { within: MS(60_000) }), vec![Action::WakeAt(MS(1000))]);
        assert_eq!(s.handle(MS(1000), Input::Timer), vec![Action::Kill { pid: 11 }]);
        // Stopping what is down does nothing.
        let mut down = svc(false);
        assert_eq!(down.handle(MS(0), Input::Stop { within: MS(5) }), vec![]);
    }

    #[test]
    fn a_crash_restarts_at_once_then_a_loop_backs_off_and_is_reported() {
        let mut s = svc(false);
        s.handle(MS(0), Input::Want(Desired::Up));
        s.handle(MS(1), Input::Spawned { pid: 1 });
        let a = s.handle(MS(60_000), Input::Exited { pid: 1, status: ExitStatus::Code(1) });
        assert_eq!(a, vec![Action::RunPostStop, Action::Spawn], "first failure: no delay");
        let mut waited = Vec::new();
        for (pid, i) in (2..).zip(0..6) {
            let t = MS(60_010 + i * 100_000);
            s.handle(t, Input::Spawned { pid });
            let a = s.handle(t + MS(5), Input::Exited { pid, status: ExitStatus::Signal(11) });
            let Some(Action::WakeAt(until)) = a.last().cloned() else { panic!("no backoff: {a:?}") };
            assert!(matches!(s.phase, Phase::Backoff { .. }));
            waited.push(until - (t + MS(5)));
            // An early timer waits on; the due one starts again.
            assert_eq!(s.handle(t + MS(6), Input::Timer), vec![Action::WakeAt(until)]);
            assert_eq!(s.handle(until, Input::Timer), vec![Action::Spawn]);
        }
        assert!(waited.iter().all(|w| *w >= MS(100)), "{waited:?}");
        assert_eq!(s.failures(), 7);
        assert_eq!(s.restarts, 7);
        let last = s.last_failure.as_ref().unwrap();
        assert!(last.what.contains("signal 11"));
        assert_eq!(last.hook, FailedHook::Run { pid: Some(7) }, "the last process that ended");
    }

    #[test]
    fn init_failure_backs_off_and_stop_during_init_or_backoff_ends_down() {
        let mut s = svc(true);
        s.handle(MS(0), Input::Want(Desired::Up));
        // First failure restarts at once (init again), the second waits.
        assert_eq!(
            s.handle(MS(1), Input::InitFinished { error: Some("exit code 1".into()) }),
            vec![Action::RunInit]
        );
        let a = s.handle(MS(2), Input::InitFinished { error: Some("exit code 1".into()) });
        assert_eq!(s.last_failure.as_ref().unwrap().what, "the init hook failed: exit code 1", "it says why");
        assert!(matches!(a[..], [Action::WakeAt(_)]), "{a:?}");
        assert_eq!(s.last_failure.as_ref().map(|f| (f.hook, f.at)), Some((FailedHook::Init, MS(2))));
        assert_eq!(s.handle(MS(3), Input::Want(Desired::Down)), vec![]);
        assert!(s.settled() && s.phase == Phase::Down);
        // Stop while init runs: init's end leaves it down, nothing spawned.
        s.handle(MS(10), Input::Want(Desired::Up));
        s.handle(MS(11), Input::Want(Desired::Down));
        assert_eq!(s.handle(MS(12), Input::InitFinished { error: None }), vec![]);
        assert_eq!(s.phase, Phase::Down);
    }

    #[test]
    fn restart_stops_and_starts_and_stale_inputs_are_ignored() {
        let mut s = svc(false);
        s.handle(MS(0), Input::Want(Desired::Up));
        s.handle(MS(1), Input::Spawned { pid: 7 });
        assert_eq!(s.handle(MS(2), Input::Exited { pid: 99, status: ExitStatus::Code(0) }), vec![]);
        assert_eq!(s.handle(MS(3), Input::Spawned { pid: 8 }), vec![], "not starting");
        let r = s.handle(MS(4), Input::Restart);
        assert_eq!(r[0], Action::Terminate { pid: 7 });
        let a = s.handle(MS(5), Input::Exited { pid: 7, status: ExitStatus::Signal(15) });
        assert_eq!(a, vec![Action::RunPostStop, Action::Spawn]);
        assert_eq!(s.failures(), 0, "a deliberate restart is not a failure");
    }

    #[test]
    fn a_reattached_process_is_up_and_its_unknown_exit_restarts_it() {
        let mut s = svc(true);
        s.desired = Desired::Up;
        assert_eq!(s.handle(MS(0), Input::Reattached { pid: 5, started: Duration::ZERO }), vec![]);
        assert!(s.settled() && s.pid() == Some(5));
        assert_eq!(s.handle(MS(1), Input::Want(Desired::Up)), vec![], "already where it should be");
        let a = s.handle(MS(10), Input::Exited { pid: 5, status: ExitStatus::Unknown });
        assert_eq!(a, vec![Action::RunPostStop, Action::RunInit]);
        assert!(s.last_failure.unwrap().what.contains("unknown"));
    }

    #[test]
    fn a_reattached_process_the_spec_wants_down_is_stopped() {
        let mut s = svc(false);
        s.desired = Desired::Down;
        s.handle(MS(0), Input::Reattached { pid: 9, started: Duration::ZERO });
        assert_eq!(s.desired, Desired::Down, "reattaching does not change what the spec wants");
        let a = s.handle(MS(1), Input::Want(Desired::Down));
        assert_eq!(a[0], Action::Terminate { pid: 9 });
    }

    #[test]
    fn a_spawn_failure_is_a_failure_and_start_during_backoff_starts_now() {
        let mut s = svc(false);
        s.handle(MS(0), Input::Want(Desired::Up));
        assert_eq!(s.handle(MS(1), Input::SpawnFailed { error: "ENOENT".into() }), vec![Action::Spawn]);
        let a = s.handle(MS(2), Input::SpawnFailed { error: "ENOENT".into() });
        assert!(matches!(a[..], [Action::WakeAt(_)]));
        assert_eq!(s.last_failure.as_ref().unwrap().hook, FailedHook::Run { pid: None }, "nothing ran");
        assert_eq!(s.handle(MS(3), Input::Want(Desired::Up)), vec![Action::Spawn]);
    }
}
