//! HashiCorp Serf agents on 127.0.0.100 and up: the baseline the ring benches measure against
//! in the same run. Timings come from event handlers that append `date +%s.%N` to a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Running agents, killed when dropped.
pub struct Serf {
    agents: Vec<Child>,
    rpc: u16,
    dir: PathBuf,
}

impl Drop for Serf {
    fn drop(&mut self) {
        for c in self.agents.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Serf {
    /// Starts `n` encrypted agents (LAN profile) and waits until each sees all alive.
    pub fn start(n: usize, dir: &Path) -> anyhow::Result<Serf> {
        use base64::Engine as _;
        let bind = free_port()?;
        let rpc = free_port()?;
        let key =
            base64::engine::general_purpose::STANDARD.encode(crate::crypto::sodium::random_array::<32>());
        let mut serf = Serf { agents: Vec::new(), rpc, dir: dir.to_path_buf() };
        for i in 0..n {
            let child = Command::new("serf")
                .arg("agent")
                .arg(format!("-node=n{i}"))
                .arg(format!("-bind={}:{bind}", ip(i)))
                .arg(format!("-rpc-addr={}:{rpc}", ip(i)))
                .arg(format!("-encrypt={key}"))
                .arg(format!("-join={}:{bind}", ip(0)))
                .arg(format!("-event-handler=user:bench=date +%s.%N >> {}", serf.event_file(i).display()))
                .arg(format!("-event-handler=member-failed=date +%s.%N >> {}", serf.fail_file(i).display()))
                .arg("-log-level=err")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting serf")?;
            serf.agents.push(child);
            std::thread::sleep(Duration::from_millis(50));
        }
        let alive = |i: usize| -> usize {
            Command::new("serf")
                .args(["members", "-status=alive", &format!("-rpc-addr={}:{rpc}", ip(i))])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
                .unwrap_or(0)
        };
        let start = Instant::now();
        while (0..n).any(|i| alive(i) != n) {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("serf agents did not converge");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // Let join-time gossip settle before measuring.
        std::thread::sleep(Duration::from_secs(2));
        Ok(serf)
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    fn event_file(&self, i: usize) -> PathBuf {
        self.dir.join(format!("serf-ev-{i}"))
    }

    fn fail_file(&self, i: usize) -> PathBuf {
        self.dir.join(format!("serf-fail-{i}"))
    }

    /// A user event sent at agent `origin`: seconds until its handler ran on every agent.
    pub fn event(&self, origin: usize) -> anyhow::Result<f64> {
        let files: Vec<_> = (0..self.len()).map(|i| self.event_file(i)).collect();
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        let t0 = epoch();
        Command::new("serf")
            .args([
                "event",
                "-coalesce=false",
                &format!("-rpc-addr={}:{}", ip(origin), self.rpc),
                "bench",
                "x",
            ])
            .output()
            .context("serf event")?;
        let last =
            wait_files(&files, Duration::from_secs(30)).context("a serf event did not reach every agent")?;
        Ok(last - t0)
    }

    /// Kills the last live agent (index `victim`, all above it already dead): seconds until
    /// every agent below it ran its member-failed handler.
    pub fn kill(&mut self, victim: usize) -> anyhow::Result<f64> {
        let files: Vec<_> = (0..victim).map(|i| self.fail_file(i)).collect();
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        let t0 = epoch();
        let _ = self.agents[victim].kill();
        let _ = self.agents[victim].wait();
        let last = wait_files(&files, Duration::from_secs(120))
            .context("serf did not mark the killed agent failed")?;
        Ok(last - t0)
    }

    /// Mean proportional set size per agent, MiB.
    pub fn pss_mib(&self) -> f64 {
        let pss: Vec<u64> = self.agents.iter().filter_map(|c| super::bench_ring::pss_kib(c.id())).collect();
        pss.iter().sum::<u64>() as f64 / pss.len().max(1) as f64 / 1024.0
    }
}

fn ip(i: usize) -> String {
    format!("127.0.0.{}", 100 + i)
}

/// Seconds since the epoch, as `date +%s.%N` writes them.
pub fn epoch() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Waits until every file exists and returns the latest timestamp written in them.
pub fn wait_files(paths: &[PathBuf], limit: Duration) -> Option<f64> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let stamps: Vec<Option<f64>> = paths
            .iter()
            .map(|p| std::fs::read_to_string(p).ok().and_then(|t| t.lines().next()?.trim().parse().ok()))
            .collect();
        if stamps.iter().all(Option::is_some) {
            return stamps.into_iter().flatten().reduce(f64::max);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// A port free for TCP and UDP on 127.0.0.100 right now, for Serf, which cannot report the port
/// it bound. Another process may take it before Serf starts; the bench then fails clearly.
fn free_port() -> anyhow::Result<u16> {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.100:0")?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.100", port)).is_ok() {
            return Ok(port);
        }
    }
}

/// Serf is the baseline: install Debian's package when it is missing and we may (root with
/// apt-get), as the README's commands install what they need. False when it cannot be had.
pub fn installed() -> anyhow::Result<bool> {
    let have = || Command::new("serf").arg("version").output().is_ok_and(|o| o.status.success());
    if have() {
        return Ok(true);
    }
    let root = rustix::process::geteuid().is_root();
    if root && Command::new("apt-get").arg("--version").output().is_ok() {
        outln!("  installing serf (Debian's package) for the baseline...")?;
        let quiet = |c: &mut Command| c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        let installed = quiet(Command::new("apt-get").args(["install", "-y", "serf"]))
            .is_ok_and(|s| s.success())
            || (quiet(Command::new("apt-get").arg("update")).is_ok_and(|s| s.success())
                && quiet(Command::new("apt-get").args(["install", "-y", "serf"])).is_ok_and(|s| s.success()));
        if installed && have() {
            return Ok(true);
        }
    }
    outln!("  serf is not installed and could not be installed (apt-get install serf)")?;
    Ok(false)
}
