//! `warren bench svc`: warren's service supervision against Debian's `supervisor`
//! (supervisord) and `s6` (s6-svscan + one s6-supervise per service), in one run, on the same
//! service: a shell run script that writes its pid to a marker file, then `exec sleep 100000`.
//!
//! - **First restart**: a service that ran a while is `kill -9`ed; time until its new process
//!   has written its pid (each sample kills another service, so each is a first restart).
//! - **Load → running**: the load request (warren: `SvcLoad` with `no_wait` over the ctl
//!   gateway; supervisord: XML-RPC `reloadConfig` + `addProcessGroup` after writing the
//!   program's file; s6: the service directory renamed into the scan directory +
//!   `s6-svscanctl -a`) until the new run script has written its pid.
//! - **Memory**: PSS (`/proc/PID/smaps_rollup`) of the supervisor's processes with every
//!   service running; **idle CPU**: their utime + stime and context switches over a quiet spell.
//!
//! Marker files are watched with inotify (each check is triggered by an event, with a 50 ms
//! fallback), so a sample is timed to the moment the new process wrote its pid. Everything
//! runs in a temporary directory; every process the bench starts has its working directory
//! there, and the teardown (also on Ctrl-C / SIGTERM) kills whatever still does.

use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;

use super::bench_ring::{listening, pss_kib};

#[derive(Args, Debug)]
pub struct SvcBenchArgs {
    /// Services loaded into each supervisor (all running while memory and CPU are measured).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub services: u32,
    /// kill -9 samples per supervisor, each on another service (at most --services).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub samples: u32,
    /// Seconds of the idle-CPU measurement.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub idle_secs: u64,
    /// One JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Measure supervisord and s6 only if already installed (n/a otherwise); by default the
    /// bench installs Debian's packages with apt-get when it runs as root.
    #[arg(long)]
    pub no_install: bool,
    /// Where to make the temporary directory (removed afterwards) [default: the system's].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

const SLEEP_ARG: &str = "100000";
/// How long one service may take to start or restart before the bench gives up on it.
const START_LIMIT: Duration = Duration::from_secs(30);

fn name(i: usize) -> String {
    format!("svc{i:04}")
}

/// The run script every supervisor runs: its pid into the marker file, then the service.
fn run_script(marks: &Path, i: usize) -> String {
    format!("#!/bin/sh\necho $$ > {}\nexec sleep {SLEEP_ARG}\n", marks.join(name(i)).display())
}

fn write_exec(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Marker files, watched with inotify.

struct Marks {
    dir: PathBuf,
    inotify: std::os::fd::OwnedFd,
}

impl Marks {
    fn new(dir: PathBuf) -> anyhow::Result<Marks> {
        use std::os::fd::FromRawFd as _;
        std::fs::create_dir_all(&dir)?;
        // SAFETY: plain syscalls; the fd is owned by the OwnedFd from here on.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("inotify_init1");
        }
        let inotify = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
        let mask = libc::IN_CLOSE_WRITE | libc::IN_MODIFY | libc::IN_MOVED_TO | libc::IN_CREATE;
        // SAFETY: a valid fd and a NUL-terminated path.
        if unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) } < 0 {
            return Err(std::io::Error::last_os_error()).context("inotify_add_watch");
        }
        Ok(Marks { dir, inotify })
    }

    /// The pid service `i` last wrote, if it is a live process.
    fn pid(&self, i: usize) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.dir.join(name(i))).ok()?.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// Waits until service `i` has written a live pid other than `old`; returns it and when it
    /// was seen.
    fn wait_new(&self, i: usize, old: Option<u32>, limit: Duration) -> Option<(u32, Instant)> {
        use std::os::fd::AsRawFd as _;
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(pid) = self.pid(i).filter(|p| Some(*p) != old) {
                return Some((pid, Instant::now()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || interrupted() {
                return None;
            }
            let mut poll = libc::pollfd { fd: self.inotify.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = left.min(Duration::from_millis(50)).as_millis() as i32;
            // SAFETY: one pollfd we own; then drain the events into our buffer.
            unsafe {
                libc::poll(&mut poll, 1, ms.max(1));
                while libc::read(self.inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) > 0 {}
            }
        }
    }
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().next() != Some("Z")))
        .unwrap_or(false)
}

/// Fields of /proc/PID/stat after the command name (index 0 = field 3, state).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// utime + stime of the whole process (every thread), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    stat_fields(pid)
        .map(|f| {
            f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Context switches (voluntary + not) of every thread of `pid`: how often it woke up.
fn switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|s| {
            s.lines()
                .filter(|l| {
                    l.starts_with("voluntary_ctxt_switches:") || l.starts_with("nonvoluntary_ctxt_switches:")
                })
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

// ---------------------------------------------------------------------------------------------
// Teardown, shared by the normal path and the Ctrl-C / SIGTERM handler.

/// What must not outlive the bench.
#[derive(Clone, Debug)]
struct Live {
    /// The supervisor we started (leader of its own process group).
    pid: u32,
    /// Our temporary directory: every process started for the bench has its cwd in it.
    root: PathBuf,
}

static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

fn register(l: Live) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).push(l);
}

fn unregister(pid: u32) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).retain(|l| l.pid != pid);
}

/// Processes (other than us) whose working directory is under `root`.
fn processes_in(root: &Path) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| *p != me)
        .filter(|p| std::fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|c| c.starts_with(root)))
        .collect()
}

fn kill(pid: u32, sig: i32) {
    if let Ok(p) = i32::try_from(pid) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(p, sig) };
    }
}

/// Stops the supervisor gracefully (SIGTERM: each stops its services), then SIGKILLs its
/// process group and anything left with a working directory in the bench's directory.
fn teardown(l: &Live, grace: Duration) {
    kill(l.pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while alive(l.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Ok(p) = i32::try_from(l.pid) {
        // SAFETY: as kill.
        unsafe { libc::kill(-p, libc::SIGKILL) };
    }
    for _ in 0..50 {
        let left: Vec<u32> = processes_in(&l.root).into_iter().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            break;
        }
        for p in left {
            kill(p, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// On SIGINT / SIGTERM / SIGHUP: tear down whatever runs, remove the directories, exit 130.
fn install_signal_handler(roots: Vec<PathBuf>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
            eprintln!("bench svc: interrupted; stopping what it started");
            let live = LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for l in &live {
                teardown(l, Duration::from_secs(5));
            }
            for r in &roots {
                let _ = std::fs::remove_dir_all(r);
            }
            std::process::exit(130);
        });
    });
}

/// A supervisor process we started, in a process group of its own (so a Ctrl-C reaches the
/// bench only, which stops it in order), with its cwd in the bench's directory.
struct Started {
    child: Child,
    live: Live,
}

impl Started {
    fn spawn(mut cmd: Command, root: &Path, log: &Path) -> anyhow::Result<Started> {
        let log = std::fs::File::create(log)?;
        let child = cmd
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let live = Live { pid: child.id(), root: root.to_path_buf() };
        register(live.clone());
        Ok(Started { child, live })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        teardown(&self.live, Duration::from_secs(20));
        let _ = self.child.kill();
        let _ = self.child.wait();
        unregister(self.live.pid);
    }
}

// ---------------------------------------------------------------------------------------------
// The three supervisors.

trait Subject {
    /// Starts service `i` (returns once the request was accepted).
    fn load(&mut self, i: usize) -> anyhow::Result<()>;
    /// The supervisor's processes, to measure.
    fn pids(&self) -> Vec<u32>;
    /// Fails when the supervisor died.
    fn check(&mut self) -> anyhow::Result<()>;
}

struct Warren {
    sup: Started,
    client: crate::ctl::CtlClient,
}

impl Warren {
    fn start(root: &Path, marks: &Path, n: usize) -> anyhow::Result<Warren> {
        // A copy of the binary: its text pages would otherwise be shared with (and their PSS
        // split with) this bench process and any other warren on the machine.
        let exe = root.join("warren");
        std::fs::copy(std::env::current_exe().context("locating the warren binary")?, &exe)
            .context("copying the warren binary")?;
        let data = root.join("data");
        let user = if crate::services::users::is_root() {
            "root".to_string()
        } else {
            crate::services::users::current().map(|u| u.name).unwrap_or_else(|| "nobody".into())
        };
        for i in 0..n {
            let pkg = data.join(format!("pkgs/bench/{}/1.0.0/20260101000000", name(i)));
            std::fs::create_dir_all(pkg.join("hooks"))?;
            std::fs::write(pkg.join("IDENT"), format!("bench/{}/1.0.0/20260101000000", name(i)))?;
            std::fs::write(pkg.join("SVC_USER"), &user)?;
            write_exec(&pkg.join("hooks/run"), &run_script(marks, i))?;
        }
        let mut cmd = Command::new(&exe);
        cmd.args(["sup", "run", "--listen-gossip", "127.0.0.1:0", "--listen-http", "127.0.0.1:0"])
            .args(["--listen-ctl", "127.0.0.1:0", "--data-path"])
            .arg(&data)
            .arg("--cache-key-path")
            .arg(data.join("keys"))
            .env("WARREN_LOG", "warn")
            .env_remove("WARREN_GATEWAY_AUTH_TOKEN");
        let mut sup = Started::spawn(cmd, root, &root.join("warren.log"))?;
        let Some((_, _, ctl)) = listening(&data, sup.pid(), START_LIMIT) else {
            let log = std::fs::read_to_string(root.join("warren.log")).unwrap_or_default();
            sup.check_alive(&log)?;
            bail!("warren sup run did not listen within {START_LIMIT:?}: {log}");
        };
        let secret = crate::ctl::secret::read_or_create(&data)?;
        Ok(Warren { sup, client: crate::ctl::CtlClient::new(&ctl, secret) })
    }
}

impl Started {
    fn check_alive(&mut self, log: &str) -> anyhow::Result<()> {
        if self.exited() {
            bail!("it exited: {}", log.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
        }
        Ok(())
    }
}

impl Subject for Warren {
    fn load(&mut self, i: usize) -> anyhow::Result<()> {
        use crate::ctl::proto;
        let req = proto::SvcLoad {
            ident: Some(proto::PackageIdent {
                origin: "bench".into(),
                name: name(i),
                version: None,
                release: None,
            }),
            no_wait: Some(true),
            ..Default::default()
        };
        self.client
            .call(&crate::ctl::CtlRequest::SvcLoad(req), |_| {})
            .context("svc load over the ctl gateway")?;
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        vec![self.sup.pid()]
    }

    fn check(&mut self) -> anyhow::Result<()> {
        self.sup.check_alive("warren sup run died")
    }
}

struct Supervisord {
    sup: Started,
    dir: PathBuf,
    socket: PathBuf,
    marks: PathBuf,
}

impl Supervisord {
    fn start(root: &Path, marks: &Path) -> anyhow::Result<Supervisord> {
        let dir = root.to_path_buf();
        for d in ["conf.d", "logs", "services"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let socket = dir.join("supervisor.sock");
        let conf = dir.join("supervisord.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "[unix_http_server]\nfile={}\n\n[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\n\
                 pidfile={d}/supervisord.pid\nchildlogdir={d}/logs\nloglevel=warn\n\n\
                 [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
                 [include]\nfiles = {d}/conf.d/*.conf\n",
                socket.display()
            ),
        )?;
        let mut cmd = Command::new("supervisord");
        cmd.arg("-c").arg(&conf);
        let mut sup = Started::spawn(cmd, root, &dir.join("supervisord.out"))?;
        let mut s = None;
        let deadline = Instant::now() + START_LIMIT;
        while Instant::now() < deadline && s.is_none() {
            sup.check_alive(&std::fs::read_to_string(dir.join("supervisord.out")).unwrap_or_default())?;
            if xmlrpc(&socket, "supervisor.getState", &[]).is_ok() {
                s = Some(());
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if s.is_none() {
            bail!("supervisord did not answer on {} within {START_LIMIT:?}", socket.display());
        }
        Ok(Supervisord { sup, dir, socket, marks: marks.to_path_buf() })
    }
}

/// One XML-RPC call over supervisord's unix socket (HTTP/1.0, string parameters); the reply
/// body, or an error for a fault.
fn xmlrpc(socket: &Path, method: &str, params: &[&str]) -> anyhow::Result<String> {
    let params: String =
        params.iter().map(|p| format!("<param><value><string>{p}</string></value></param>")).collect();
    let body = format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{params}</params></methodCall>"
    );
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("supervisord: {}", head.lines().next().unwrap_or(""));
    }
    if body.contains("<fault>") {
        bail!("supervisord: {method} failed: {body}");
    }
    Ok(body.to_string())
}

impl Subject for Supervisord {
    fn load(&mut self, i: usize) -> anyhow::Result<()> {
        let n = name(i);
        let svc = self.dir.join("services").join(&n);
        std::fs::create_dir_all(&svc)?;
        write_exec(&svc.join("run"), &run_script(&self.marks, i))?;
        std::fs::write(
            self.dir.join("conf.d").join(format!("{n}.conf")),
            format!(
                "[program:{n}]\ncommand={}\ndirectory={}\nautorestart=true\n",
                svc.join("run").display(),
                svc.display()
            ),
        )?;
        // `supervisorctl update NAME`, without the Python client's own start-up.
        xmlrpc(&self.socket, "supervisor.reloadConfig", &[])?;
        xmlrpc(&self.socket, "supervisor.addProcessGroup", &[&n])?;
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        vec![self.sup.pid()]
    }

    fn check(&mut self) -> anyhow::Result<()> {
        self.sup.check_alive("supervisord died")
    }
}

struct S6 {
    sup: Started,
    scan: PathBuf,
    staging: PathBuf,
    marks: PathBuf,
}

impl S6 {
    fn start(root: &Path, marks: &Path) -> anyhow::Result<S6> {
        let scan = root.join("scan");
        let staging = root.join("staging");
        std::fs::create_dir_all(&scan)?;
        std::fs::create_dir_all(&staging)?;
        let mut cmd = Command::new("s6-svscan");
        cmd.arg(&scan);
        let mut sup = Started::spawn(cmd, root, &root.join("s6-svscan.out"))?;
        let control = scan.join(".s6-svscan/control");
        let deadline = Instant::now() + START_LIMIT;
        while !control.exists() {
            sup.check_alive(&std::fs::read_to_string(root.join("s6-svscan.out")).unwrap_or_default())?;
            if Instant::now() > deadline {
                bail!("s6-svscan did not create {} within {START_LIMIT:?}", control.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(S6 { sup, scan, staging, marks: marks.to_path_buf() })
    }
}

impl Subject for S6 {
    fn load(&mut self, i: usize) -> anyhow::Result<()> {
        let n = name(i);
        let svc = self.staging.join(&n);
        std::fs::create_dir_all(&svc)?;
        write_exec(&svc.join("run"), &run_script(&self.marks, i))?;
        std::fs::rename(&svc, self.scan.join(&n))?;
        let st = Command::new("s6-svscanctl").arg("-a").arg(&self.scan).status().context("s6-svscanctl")?;
        if !st.success() {
            bail!("s6-svscanctl -a: {st}");
        }
        Ok(())
    }

    /// s6-svscan and every s6-supervise it started.
    fn pids(&self) -> Vec<u32> {
        let scan = self.sup.pid().to_string();
        let mut pids = vec![self.sup.pid()];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            pids.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|p| stat_fields(*p).is_some_and(|f| f.get(1) == Some(&scan)))
                    .filter(|p| {
                        std::fs::read_to_string(format!("/proc/{p}/comm"))
                            .is_ok_and(|c| c.trim() == "s6-supervise")
                    }),
            );
        }
        pids
    }

    fn check(&mut self) -> anyhow::Result<()> {
        self.sup.check_alive("s6-svscan died")
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring.

#[derive(Debug, Clone, Default)]
struct Figures {
    restart_ms: Vec<f64>,
    load_ms: Vec<f64>,
    pss_kib: u64,
    processes: usize,
    idle_cpu_ms: f64,
    idle_switches: u64,
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn p50(v: &[f64]) -> f64 {
    let s = sorted(v);
    if s.is_empty() { f64::NAN } else { s[(s.len() - 1) / 2] }
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn measure(label: &str, s: &mut dyn Subject, marks: &Marks, args: &SvcBenchArgs) -> anyhow::Result<Figures> {
    let n = args.services as usize;
    let mut f = Figures::default();
    eprintln!("bench svc: {label}: loading {n} services");
    for i in 0..n {
        let t0 = Instant::now();
        s.load(i).with_context(|| format!("loading {}", name(i)))?;
        let (_, seen) = marks
            .wait_new(i, None, START_LIMIT)
            .with_context(|| format!("{} did not start within {START_LIMIT:?}", name(i)))?;
        f.load_ms.push(ms(seen - t0));
    }
    // Every service has run for a while (supervisord's startsecs and s6's throttle are 1 s).
    std::thread::sleep(Duration::from_secs(2));
    s.check()?;
    let pids = s.pids();
    f.processes = pids.len();
    f.pss_kib = pids.iter().filter_map(|p| pss_kib(*p)).sum();
    eprintln!("bench svc: {label}: idle for {} s", args.idle_secs);
    let (t0, w0): (u64, u64) =
        (pids.iter().map(|p| cpu_ticks(*p)).sum(), pids.iter().map(|p| switches(*p)).sum());
    std::thread::sleep(Duration::from_secs(args.idle_secs));
    let (t1, w1): (u64, u64) =
        (pids.iter().map(|p| cpu_ticks(*p)).sum(), pids.iter().map(|p| switches(*p)).sum());
    f.idle_cpu_ms = t1.saturating_sub(t0) as f64 * 1000.0 / clock_ticks_per_sec();
    f.idle_switches = w1.saturating_sub(w0);
    let samples = (args.samples as usize).min(n);
    eprintln!("bench svc: {label}: {samples} kill -9 samples");
    for i in 0..samples {
        let old = marks.pid(i).with_context(|| format!("{} is not running", name(i)))?;
        let t0 = Instant::now();
        kill(old, libc::SIGKILL);
        let (_, seen) = marks
            .wait_new(i, Some(old), START_LIMIT)
            .with_context(|| format!("{} was not restarted within {START_LIMIT:?}", name(i)))?;
        f.restart_ms.push(ms(seen - t0));
        std::thread::sleep(Duration::from_millis(100));
    }
    s.check()?;
    Ok(f)
}

/// Runs one supervisor's measurements in `root` and tears it down.
fn run_one(
    label: &str,
    root: &Path,
    args: &SvcBenchArgs,
    start: impl FnOnce(&Path, &Path) -> anyhow::Result<Box<dyn Subject>>,
) -> anyhow::Result<Figures> {
    std::fs::create_dir_all(root)?;
    let marks = Marks::new(root.join("marks"))?;
    let result = (|| {
        let mut s = start(root, &marks.dir)?;
        let f = measure(label, s.as_mut(), &marks, args);
        eprintln!("bench svc: {label}: stopping");
        drop(s);
        f
    })();
    let _ = std::fs::remove_dir_all(root);
    result
}

/// Finds `bin` on PATH.
fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm))
        .collect()
}

/// Makes sure `bin` (from Debian's `package`) is installed: apt-get as root when missing.
/// Err = why it cannot be measured. A supervisord the package's scripts may have started
/// meanwhile is stopped again.
fn ensure_installed(bin: &str, package: &str, daemon: Option<&str>, install: bool) -> Result<(), String> {
    if on_path(bin) {
        return Ok(());
    }
    if !install {
        return Err(format!("{bin} is not installed (--no-install; apt-get install {package})"));
    }
    if !crate::services::users::is_root() {
        return Err(format!("{bin} is not installed and installing {package} needs root"));
    }
    if !on_path("apt-get") {
        return Err(format!("{bin} is not installed and there is no apt-get to install {package}"));
    }
    eprintln!("bench svc: installing {package} (apt-get install -y {package})");
    let before = daemon.map(pids_named).unwrap_or_default();
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = install()
        || (Command::new("apt-get")
            .arg("update")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && install());
    if let Some(d) = daemon {
        for p in pids_named(d).into_iter().filter(|p| !before.contains(p)) {
            eprintln!("bench svc: stopping the {d} (pid {p}) that installing {package} started");
            kill(p, libc::SIGTERM);
        }
    }
    if ok && on_path(bin) { Ok(()) } else { Err(format!("apt-get install {package} failed")) }
}

type Outcome = Result<Figures, String>;

pub fn run(args: SvcBenchArgs) -> anyhow::Result<()> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let root = base.join(format!(
        "warren-bench-svc-{}-{}",
        std::process::id(),
        hex::encode(crate::crypto::sodium::random_array::<4>())
    ));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    install_signal_handler(vec![root.clone()]);
    let result = run_in(&args, &root);
    let _ = std::fs::remove_dir_all(&root);
    let (warren, supervisord, s6) = result?;
    report(&args, &warren, &supervisord, &s6)
}

fn run_in(args: &SvcBenchArgs, root: &Path) -> anyhow::Result<(Figures, Outcome, Outcome)> {
    let n = args.services as usize;
    let warren = run_one("warren", &root.join("warren"), args, |r, m| Ok(Box::new(Warren::start(r, m, n)?)))
        .context("measuring warren")?;
    let supervisord = ensure_installed("supervisord", "supervisor", Some("supervisord"), !args.no_install)
        .and_then(|()| {
            run_one("supervisord", &root.join("supervisord"), args, |r, m| {
                Ok(Box::new(Supervisord::start(r, m)?))
            })
            .map_err(|e| format!("measurement failed: {e:#}"))
        });
    if interrupted() {
        bail!("interrupted");
    }
    let s6 = ensure_installed("s6-svscan", "s6", None, !args.no_install).and_then(|()| {
        run_one("s6", &root.join("s6"), args, |r, m| Ok(Box::new(S6::start(r, m)?)))
            .map_err(|e| format!("measurement failed: {e:#}"))
    });
    Ok((warren, supervisord, s6))
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) { "debug" } else { "release" }
}

fn figures_json(f: &Figures, idle_secs: u64) -> serde_json::Value {
    serde_json::json!({
        "first_restart_ms": {"p50": p50(&f.restart_ms), "max": max(&f.restart_ms), "samples": f.restart_ms},
        "load_to_running_ms": {"p50": p50(&f.load_ms), "max": max(&f.load_ms), "samples": f.load_ms.len()},
        "pss_mib": f.pss_kib as f64 / 1024.0,
        "processes": f.processes,
        "idle_cpu_ms": f.idle_cpu_ms,
        "idle_cpu_percent": f.idle_cpu_ms / (idle_secs as f64 * 10.0),
        "idle_context_switches": f.idle_switches,
    })
}

fn report(args: &SvcBenchArgs, w: &Figures, sd: &Outcome, s6: &Outcome) -> anyhow::Result<()> {
    let n = args.services;
    let ratio = |get: fn(&Figures) -> f64, other: &Outcome| -> Option<f64> {
        other.as_ref().ok().map(|o| get(w) / get(o)).filter(|r| r.is_finite())
    };
    let restart = |f: &Figures| p50(&f.restart_ms);
    let load = |f: &Figures| p50(&f.load_ms);
    let pss = |f: &Figures| f.pss_kib as f64;
    if args.json {
        let other = |o: &Outcome| match o {
            Ok(f) => figures_json(f, args.idle_secs),
            Err(e) => serde_json::json!({"na": e}),
        };
        let ratios = |o: &Outcome| {
            serde_json::json!({
                "first_restart_p50": ratio(restart, o),
                "load_to_running_p50": ratio(load, o),
                "pss": ratio(pss, o),
            })
        };
        let doc = serde_json::json!({
            "services": n,
            "samples": (args.samples).min(n),
            "idle_secs": args.idle_secs,
            "profile": profile(),
            "warren": figures_json(w, args.idle_secs),
            "supervisord": other(sd),
            "s6": other(s6),
            "ratios": {"warren/supervisord": ratios(sd), "warren/s6": ratios(s6)},
        });
        outln!("{doc}")?;
        return Ok(());
    }
    outln!(
        "warren bench svc: {n} services (sh run script → exec sleep {SLEEP_ARG}), {} kill -9 samples, {} build",
        args.samples.min(n),
        profile()
    )?;
    let cols = [("warren", Ok(w.clone())), ("supervisord", sd.clone()), ("s6", s6.clone())];
    let row = |label: &str, get: &dyn Fn(&Figures) -> String| -> std::io::Result<()> {
        let cells: Vec<String> = cols.iter().map(|(_, f)| f.as_ref().map_or("n/a".into(), get)).collect();
        outln!("{label:<34} {:>12} {:>12} {:>12}", cells[0], cells[1], cells[2])
    };
    outln!("{:<34} {:>12} {:>12} {:>12}", "", "warren", "supervisord", "s6")?;
    row("first restart (kill -9) p50 ms", &|f| format!("{:.1}", p50(&f.restart_ms)))?;
    row("first restart (kill -9) max ms", &|f| format!("{:.1}", max(&f.restart_ms)))?;
    row("load → running p50 ms", &|f| format!("{:.1}", p50(&f.load_ms)))?;
    row("load → running max ms", &|f| format!("{:.1}", max(&f.load_ms)))?;
    row(&format!("PSS with {n} services MiB"), &|f| format!("{:.1}", f.pss_kib as f64 / 1024.0))?;
    row("  (processes measured)", &|f| f.processes.to_string())?;
    row(&format!("idle CPU over {} s ms", args.idle_secs), &|f| format!("{:.0}", f.idle_cpu_ms))?;
    row(&format!("idle context switches over {} s", args.idle_secs), &|f| f.idle_switches.to_string())?;
    for (name, o) in [("supervisord", sd), ("s6", s6)] {
        if let Err(e) = o {
            outln!("{name}: n/a ({e})")?;
        }
    }
    let fmt = |r: Option<f64>| r.map_or("n/a".to_string(), |r| format!("{r:.3}x"));
    for (name, o) in [("supervisord", sd), ("s6", s6)] {
        outln!(
            "warren / {name:<12} first restart {}, load → running {}, PSS {}",
            fmt(ratio(restart, o)),
            fmt(ratio(load, o)),
            fmt(ratio(pss, o))
        )?;
    }
    let restart_ok = restart(w) <= 50.0
        && [sd, s6].iter().all(|o| o.as_ref().map_or(true, |o| restart(o) >= 20.0 * restart(w)));
    let pss_ok = s6.as_ref().ok().map(|o| w.pss_kib <= o.pss_kib);
    outln!(
        "targets: first restart ≤ 50 ms and ≥ 20x faster: {}; load → running p50 ≤ 50 ms: {}; PSS ≤ s6's: {}; idle CPU ~0: {:.2}% of a core",
        if restart_ok { "met" } else { "NOT met" },
        if load(w) <= 50.0 { "met" } else { "NOT met" },
        match pss_ok {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "n/a",
        },
        w.idle_cpu_ms / (args.idle_secs as f64 * 10.0)
    )?;
    Ok(())
}
