//! A service's process, as the kernel sees it: spawned in a session of its own, watched through
//! a pidfd (so a reused pid is never signalled), its output written to a FIFO that outlives the
//! supervisor, and recorded (pid, start time, boot id) so a supervisor restarted after a
//! `kill -9` reattaches to it instead of starting a second copy.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use super::state::ExitStatus;

/// What to run and how.
pub struct SpawnSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// The whole environment (nothing of the supervisor's own is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// Run as this user and group (only when the supervisor is root).
    pub ids: Option<(u32, u32)>,
    /// stdout and stderr (the service's FIFO twice, or a hook's two log files).
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// A running (or exited, unreaped) process we supervise.
pub struct Process {
    pub pid: u32,
    /// Process start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub starttime: u64,
    pidfd: AsyncFd<OwnedFd>,
    /// Our child (we reap it and get its status) or reattached (we only see it end).
    child: bool,
}

/// What is written to disk for a running service, before the supervisor can die.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    pub starttime: u64,
    pub boot_id: String,
}

fn pid_of(pid: u32) -> io::Result<Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no such pid {pid}")))
}

/// `/proc/sys/kernel/random/boot_id`: start times are only comparable within one boot.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of `/proc/PID/stat`, read after the last `)` (the command name may hold any byte).
pub fn starttime(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat"))?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat is not as expected"));
    let close = stat.iter().rposition(|b| *b == b')').ok_or_else(bad)?;
    let rest = std::str::from_utf8(&stat[close + 1..]).map_err(|_| bad())?;
    // After ")": field 3 (state) is the first; starttime is field 22.
    rest.split_whitespace().nth(19).and_then(|f| f.parse().ok()).ok_or_else(bad)
}

/// Field 4 of `/proc/PID/stat`: the parent's pid.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|b| *b == b')')?;
    std::str::from_utf8(&stat[close + 1..]).ok()?.split_whitespace().nth(1)?.parse().ok()
}

/// Starts `spec` in a new session (its own process group, no terminal), with every signal
/// unblocked and every disposition at its default, as a fresh process expects.
pub fn spawn(spec: SpawnSpec) -> io::Result<Process> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(spec.stdout))
        .stderr(Stdio::from(spec.stderr));
    if let Some((uid, gid)) = spec.ids {
        // std drops supplementary groups (setgroups(0)) before setgid/setuid.
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: only async-signal-safe calls (setsid, sigprocmask, signal) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            // Ignored signals stay ignored across exec; a service expects the defaults.
            for sig in 1..32 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    // Nobody else reaps our children (no SIGCHLD handler, no waitpid(-1)), so the pid is
    // still this child's when the pidfd is opened.
    let watched = pid_of(pid)
        .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::NONBLOCK).map_err(io::Error::from))
        .and_then(watch);
    let pidfd = match watched {
        Ok(fd) => fd,
        Err(e) => {
            // Unwatchable (out of descriptors): never leave it running unsupervised.
            let _ = rustix::process::kill_process_group(pid_of(pid)?, Signal::KILL);
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    drop(child); // std's Child neither waits nor kills on drop; the pidfd reaps it.
    let starttime = starttime(pid).unwrap_or(0);
    Ok(Process { pid, starttime, pidfd, child: true })
}

/// The process `record` names, if it is still that process (same boot, same start time).
pub fn reattach(record: &ProcessRecord) -> Option<Process> {
    if record.boot_id != boot_id() {
        return None;
    }
    let fd = rustix::process::pidfd_open(pid_of(record.pid).ok()?, PidfdFlags::NONBLOCK).ok()?;
    // Read the start time while the pidfd holds the process, then check it is still alive:
    // what was read belongs to the process the pidfd names.
    let started = starttime(record.pid).ok()?;
    if started != record.starttime || !alive(&fd) {
        return None;
    }
    // After `sup restart` (exec in place) the service is still our child, and ours to reap;
    // after a crash of the supervisor it was adopted by another process.
    let child = parent_of(record.pid) == Some(std::process::id());
    Some(Process { pid: record.pid, starttime: started, pidfd: watch(fd).ok()?, child })
}

/// Registers a pidfd with the reactor (readable once the process exits).
fn watch(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for its
    // whole life.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))
}

/// True while the process behind `fd` has not exited (a pidfd turns readable at exit).
fn alive(fd: &OwnedFd) -> bool {
    let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd we own, zero timeout.
    let n = unsafe { libc::poll(&mut poll, 1, 0) };
    n == 0
}

impl Process {
    pub fn record(&self) -> ProcessRecord {
        ProcessRecord { pid: self.pid, starttime: self.starttime, boot_id: boot_id() }
    }

    pub fn is_child(&self) -> bool {
        self.child
    }

    /// Waits for the process to end; reaps it when it is our child.
    pub async fn wait(&self) -> ExitStatus {
        loop {
            match self.pidfd.readable().await {
                Ok(mut guard) => {
                    guard.clear_ready();
                    if !self.child {
                        if !alive(self.pidfd.get_ref()) {
                            return ExitStatus::Unknown;
                        }
                        continue;
                    }
                    let id = WaitId::PidFd(self.pidfd.get_ref().as_fd());
                    match rustix::process::waitid(id, WaitIdOptions::EXITED | WaitIdOptions::NOHANG) {
                        Ok(Some(status)) => {
                            return match (status.exit_status(), status.terminating_signal()) {
                                (Some(code), _) => ExitStatus::Code(code),
                                (None, Some(sig)) => ExitStatus::Signal(sig),
                                _ => ExitStatus::Unknown,
                            };
                        }
                        Ok(None) => continue,
                        Err(_) => return ExitStatus::Unknown,
                    }
                }
                Err(_) => return ExitStatus::Unknown,
            }
        }
    }

    /// SIGKILL to what is left of the process group once its leader has exited: a service's
    /// helpers never outlive it (the group's number cannot be reused while any member lives).
    pub fn kill_leftovers(pid: u32) {
        if let Ok(p) = pid_of(pid) {
            let _ = rustix::process::kill_process_group(p, Signal::KILL);
        }
    }

    /// `signal` to the whole process group (the service called setsid, so its pgid is its
    /// pid). While the leader is unreaped, the group's number cannot be reused.
    pub fn signal_group(&self, signal: i32) -> io::Result<()> {
        let sig = Signal::from_named_raw(signal)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no signal {signal}")))?;
        match rustix::process::kill_process_group(pid_of(self.pid)?, sig) {
            Ok(()) => Ok(()),
            // The group is gone (or only the leader is left, unreaped): signal the leader.
            Err(_) => rustix::process::pidfd_send_signal(self.pidfd.get_ref(), sig).map_err(io::Error::from),
        }
    }
}

/// The service's output FIFO: created once (0600), opened read-write for the service so a
/// write never meets a missing reader (no SIGPIPE while the supervisor restarts), and
/// read-only non-blocking by the supervisor, by path, after every restart of its own.
pub struct OutputFifo {
    pub path: PathBuf,
}

impl OutputFifo {
    pub fn create(path: &Path) -> io::Result<OutputFifo> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the FIFO's path"))?;
        // SAFETY: a NUL-terminated path we own.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
        }
        Ok(OutputFifo { path: path.to_path_buf() })
    }

    /// The service's end: O_RDWR, blocking.
    pub fn writer(&self) -> io::Result<OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)?;
        Ok(f.into())
    }

    /// The supervisor's end, read-only. Open it while a writer exists (the service's, or ours
    /// until the service has its copy): with none, a FIFO reads as ended at once.
    pub fn reader(&self) -> io::Result<tokio::net::unix::pipe::Receiver> {
        tokio::net::unix::pipe::OpenOptions::new().open_receiver(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_start_time_and_boot_id_are_readable() {
        let me = std::process::id();
        let t = starttime(me).unwrap();
        assert!(t > 0);
        assert_eq!(starttime(me).unwrap(), t);
        assert_eq!(boot_id().len(), 36, "a UUID");
        assert!(starttime(u32::MAX).is_err());
    }
}
