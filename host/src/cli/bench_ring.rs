//! `warren bench ring`: starts N local encrypted supervisors (this binary) and measures
//! rumor spread, kill -9 → confirmed-by-all, and memory per agent, at warren's default
//! timings and at Serf-like timings. Prints the figures next to HashiCorp Serf's reference.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::crypto::{KeyCache, RingKey};
use crate::http::client;

#[derive(Args, Debug)]
pub struct RingBenchArgs {
    /// Supervisors to start (on 127.0.0.100 and up).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(3..=100))]
    pub members: u8,
    /// Rumor injections per configuration (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Members killed (one after another) per configuration.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub kills: u8,
    /// Skip measuring HashiCorp Serf (`serf` on PATH) as the baseline in the same run.
    #[arg(long)]
    pub no_serf: bool,
}

struct Agent {
    child: Child,
    http: String,
    ctl: String,
    data: std::path::PathBuf,
    id: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ports the operating system picked for a supervisor started on port 0, once it listens
/// (`{data_path}/listen.json` carrying that child's pid).
pub(crate) fn listening(
    data: &std::path::Path,
    pid: u32,
    limit: Duration,
) -> Option<(String, String, String)> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(data.join(crate::sup::LISTEN_FILE))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && v["pid"].as_u64() == Some(u64::from(pid))
            && let (Some(g), Some(h), Some(c)) = (v["gossip"].as_str(), v["http"].as_str(), v["ctl"].as_str())
        {
            return Some((g.to_string(), h.to_string(), c.to_string()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn get_json(http: &str, path: &str) -> Option<serde_json::Value> {
    client::request(http, "GET", path, None, None, Duration::from_secs(2))
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| r.json().ok())
}

/// A process's proportional set size (KiB): its private pages plus its share of pages it
/// shares (the binary's text, mapped by every agent of a run). RSS would count a 16-agent
/// run's shared binary 16 times, and a debug build's text is most of a supervisor's RSS.
pub(crate) fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Waits until `pred` holds for every agent; returns the time the last one took, or None.
fn time_all(
    agents: &[&Agent],
    start: Instant,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool + Sync,
) -> Option<Duration> {
    let failed = Arc::new(AtomicBool::new(false));
    let times: Vec<Option<Duration>> = std::thread::scope(|s| {
        let handles: Vec<_> = agents
            .iter()
            .map(|a| {
                let pred = &pred;
                let failed = failed.clone();
                s.spawn(move || {
                    while start.elapsed() < limit && !failed.load(Ordering::Relaxed) {
                        if get_json(&a.http, "/butterfly").is_some_and(|b| pred(&b)) {
                            return Some(start.elapsed());
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    failed.store(true, Ordering::Relaxed);
                    None
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().ok().flatten()).collect()
    });
    times.into_iter().collect::<Option<Vec<_>>>().and_then(|v| v.into_iter().max())
}

struct Figures {
    event: f64,
    detect: f64,
    pss_mib: f64,
}

fn bench_config(
    name: &str,
    flags: &[&str],
    args: &RingBenchArgs,
    dir: &std::path::Path,
) -> anyhow::Result<Figures> {
    let exe = std::env::current_exe().context("locating the warren binary")?;
    let cache = dir.join("keys");
    KeyCache::new(&cache).write(&RingKey::generate("bench")?.to_file())?;
    let n = args.members;
    let mut agents = Vec::new();
    let mut seed = String::new();
    for i in 0..n {
        let ip = format!("127.0.0.{}", 100 + u32::from(i));
        let data = dir.join(format!("{name}-data-{i}"));
        // Port 0: each supervisor binds free ports and records them in listen.json.
        let mut cmd = Command::new(&exe);
        cmd.args(["sup", "run", "--listen-gossip", &format!("{ip}:0"), "--listen-http", &format!("{ip}:0")])
            .args(["--listen-ctl", &format!("{ip}:0")]);
        if !seed.is_empty() {
            cmd.args(["--peer", &seed]);
        }
        let child = cmd
            .args(["--ring", "bench", "--cache-key-path"])
            .arg(&cache)
            .arg("--data-path")
            .arg(&data)
            .args(flags)
            .env("WARREN_LOG", "warn")
            .env_remove("WARREN_GATEWAY_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a supervisor")?;
        let pid = child.id();
        let mut agent =
            Agent { child, http: String::new(), ctl: String::new(), data: data.clone(), id: String::new() };
        let (gossip, http_addr, ctl_addr) = listening(&data, pid, Duration::from_secs(20))
            .with_context(|| format!("supervisor {i} did not start"))?;
        if seed.is_empty() {
            seed = gossip;
        }
        agent.http = http_addr.clone();
        agent.ctl = ctl_addr;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && agent.id.is_empty() {
            if let Ok(id) = std::fs::read_to_string(data.join("MEMBER_ID"))
                && client::request(&http_addr, "GET", "/", None, None, Duration::from_secs(1))
                    .is_ok_and(|r| r.status == 200)
            {
                agent.id = id.trim().to_string();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if agent.id.is_empty() {
            bail!("supervisor {i} did not start");
        }
        agents.push(agent);
    }
    let refs: Vec<&Agent> = agents.iter().collect();
    let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    let all_alive = |b: &serde_json::Value| ids.iter().all(|id| b["member"]["health"][id] == "Alive");
    time_all(&refs, Instant::now(), Duration::from_secs(60), all_alive)
        .context("the ring did not converge")?;
    // Let join-time gossip settle before measuring.
    std::thread::sleep(Duration::from_secs(2));

    let mut events = Vec::new();
    for round in 0..args.rounds {
        // The ring numbers the rumor: one above what it holds, so round N is incarnation N + 1.
        let inc = 1 + u64::from(round);
        let body = serde_json::json!({"type": "service_config", "service_group": "bench.default",
                                      "config": format!("x = {round}")})
        .to_string();
        let origin = &agents[(round as usize) % agents.len()];
        let secret = crate::ctl::secret::read_or_create(&origin.data)?;
        let ctl = crate::ctl::CtlClient::new(&origin.ctl, secret);
        let req = crate::ctl::CtlRequest::RumorInject(crate::ctl::proto::RumorInject { json: Some(body) });
        let start = Instant::now();
        ctl.call(&req, |_| {}).context("injecting the rumor over the ctl gateway")?;
        let reached = time_all(&refs, start, Duration::from_secs(30), |b| {
            b["service_config"]["list"]["bench.default"]["service_config"]["incarnation"].as_u64()
                >= Some(inc)
        })
        .context("a rumor did not reach every member")?;
        events.push(reached.as_secs_f64());
        std::thread::sleep(Duration::from_millis(500));
    }
    events.sort_by(f64::total_cmp);
    let event = events[events.len() / 2];

    let rss: Vec<u64> = agents.iter().filter_map(|a| pss_kib(a.child.id())).collect();
    let pss_mib = rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64 / 1024.0;

    let mut detects = Vec::new();
    for k in 0..args.kills.min(n - 2) {
        let victim = usize::from(n - 1 - k);
        let vid = agents[victim].id.clone();
        let _ = agents[victim].child.kill();
        let _ = agents[victim].child.wait();
        let start = Instant::now();
        let live: Vec<&Agent> = agents.iter().take(victim).collect();
        let t =
            time_all(&live, start, Duration::from_secs(120), |b| b["member"]["health"][&vid] == "Confirmed")
                .context("a killed member was not confirmed by all")?;
        detects.push(t.as_secs_f64());
        std::thread::sleep(Duration::from_secs(1));
    }
    detects.sort_by(f64::total_cmp);
    let detect = detects[detects.len() / 2];
    outln!(
        "  {name:<8} rumor→all median {event:.3}s (runs: {}), kill -9→confirmed-by-all {detect:.2}s (runs: {}), PSS {pss_mib:.1} MiB/agent",
        events.iter().map(|e| format!("{e:.3}")).collect::<Vec<_>>().join(" "),
        detects.iter().map(|e| format!("{e:.2}")).collect::<Vec<_>>().join(" "),
    )?;
    Ok(Figures { event, detect, pss_mib })
}

/// Seconds since the epoch, as `date +%s.%N` writes them.
fn epoch() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Waits until every file exists and returns the latest timestamp written in them.
fn wait_files(paths: &[std::path::PathBuf], limit: Duration) -> Option<f64> {
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

struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for c in self.0.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The same measurements on HashiCorp Serf agents (encrypted, LAN profile), timed by event
/// handlers that write a timestamp when a user event or a member failure reaches them.
fn bench_serf(args: &RingBenchArgs, dir: &std::path::Path) -> anyhow::Result<Figures> {
    use base64::Engine as _;
    let bind = free_port()?;
    let rpc = free_port()?;
    let n = usize::from(args.members);
    let key = base64::engine::general_purpose::STANDARD.encode(crate::crypto::sodium::random_array::<32>());
    let mut agents = Agents(Vec::new());
    for i in 0..n {
        let ip = format!("127.0.0.{}", 100 + i);
        let ev = dir.join(format!("serf-ev-{i}"));
        let fail = dir.join(format!("serf-fail-{i}"));
        let child = Command::new("serf")
            .arg("agent")
            .arg(format!("-node=n{i}"))
            .arg(format!("-bind={ip}:{bind}"))
            .arg(format!("-rpc-addr={ip}:{rpc}"))
            .arg(format!("-encrypt={key}"))
            .arg(format!("-join=127.0.0.100:{bind}"))
            .arg(format!("-event-handler=user:bench=date +%s.%N >> {}", ev.display()))
            .arg(format!("-event-handler=member-failed=date +%s.%N >> {}", fail.display()))
            .arg("-log-level=err")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting serf")?;
        agents.0.push(child);
        std::thread::sleep(Duration::from_millis(50));
    }
    let alive = |i: usize| -> usize {
        Command::new("serf")
            .args(["members", "-status=alive", &format!("-rpc-addr=127.0.0.{}:{rpc}", 100 + i)])
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
    std::thread::sleep(Duration::from_secs(2));
    let mut events = Vec::new();
    for round in 0..args.rounds {
        let files: Vec<_> = (0..n).map(|i| dir.join(format!("serf-ev-{i}"))).collect();
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        let origin = 100 + (round as usize % n);
        let t0 = epoch();
        Command::new("serf")
            .args(["event", "-coalesce=false", &format!("-rpc-addr=127.0.0.{origin}:{rpc}"), "bench", "x"])
            .output()?;
        let last =
            wait_files(&files, Duration::from_secs(30)).context("a serf event did not reach every agent")?;
        events.push(last - t0);
        std::thread::sleep(Duration::from_millis(500));
    }
    events.sort_by(f64::total_cmp);
    let rss: Vec<u64> = agents.0.iter().filter_map(|c| pss_kib(c.id())).collect();
    let pss_mib = rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64 / 1024.0;
    let mut detects = Vec::new();
    for k in 0..usize::from(args.kills).min(n - 2) {
        let victim = n - 1 - k;
        let files: Vec<_> = (0..victim).map(|i| dir.join(format!("serf-fail-{i}"))).collect();
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        let t0 = epoch();
        let _ = agents.0[victim].kill();
        let _ = agents.0[victim].wait();
        let last = wait_files(&files, Duration::from_secs(120))
            .context("serf did not mark the killed agent failed")?;
        detects.push(last - t0);
        std::thread::sleep(Duration::from_secs(1));
    }
    detects.sort_by(f64::total_cmp);
    let f = Figures { event: events[events.len() / 2], detect: detects[detects.len() / 2], pss_mib };
    outln!(
        "  {:<8} event→all median {:.3}s (runs: {}), kill -9→failed-by-all {:.2}s (runs: {}), PSS {:.1} MiB/agent",
        "serf-agt",
        f.event,
        events.iter().map(|e| format!("{e:.3}")).collect::<Vec<_>>().join(" "),
        f.detect,
        detects.iter().map(|e| format!("{e:.2}")).collect::<Vec<_>>().join(" "),
        f.pss_mib
    )?;
    Ok(f)
}

pub fn bench_ring(args: RingBenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("warren-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    outln!("warren bench ring: {} encrypted supervisors on 127.0.0.100+ (this binary)", args.members)?;
    let result = (|| {
        let defaults = bench_config("default", &[], &args, &dir)?;
        let serf = bench_config(
            "serf",
            &[
                "--probe-interval",
                "1s",
                "--ping-timeout",
                "500ms",
                "--suspicion-mult",
                "4",
                "--gossip-interval",
                "200ms",
            ],
            &args,
            &dir,
        )?;
        let measured = if args.no_serf || !serf_installed()? {
            None
        } else {
            match bench_serf(&args, &dir) {
                Ok(f) => Some(f),
                Err(e) => {
                    outln!("  (serf baseline failed: {e:#})")?;
                    None
                }
            }
        };
        // Ratios only against a baseline measured here and now: never against remembered figures.
        let Some(base) = measured else {
            outln!("ratios against HashiCorp Serf: n/a (no Serf baseline measured in this run)")?;
            return Ok(());
        };
        outln!("ratios against HashiCorp Serf measured in this run:")?;
        for (name, f) in [("default", &defaults), ("serf", &serf)] {
            outln!(
                "  {name:<8} event {:.2}x (target ≤ 0.5x), detection {:.2}x (target ≤ 0.7x), memory {:.2}x (target ≤ 1x)",
                f.event / base.event,
                f.detect / base.detect,
                f.pss_mib / base.pss_mib
            )?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Serf is the baseline: install Debian's package when it is missing and we may (root with
/// apt-get), as the README's commands install what they need. False when it cannot be had.
fn serf_installed() -> anyhow::Result<bool> {
    let have = || Command::new("serf").arg("version").output().is_ok_and(|o| o.status.success());
    if have() {
        return Ok(true);
    }
    let root = rustix::process::geteuid().is_root();
    if root && Command::new("apt-get").arg("--version").output().is_ok() {
        outln!("  installing serf (Debian's package) for the baseline...")?;
        let quiet = |c: &mut Command| {
            c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status()
        };
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
