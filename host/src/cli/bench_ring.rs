//! `warren bench ring`: starts N local encrypted supervisors (this binary) and measures
//! rumor spread, kill -9 → confirmed-by-all, and memory per agent, at warren's default
//! timings and at Serf-like timings. Prints the figures next to HashiCorp Serf's reference.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::serf::Serf;
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

pub(crate) struct Agent {
    pub child: Child,
    /// The addresses it bound (a restart binds them again).
    pub gossip: String,
    pub http: String,
    pub ctl: String,
    pub data: std::path::PathBuf,
    pub id: String,
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

pub(crate) fn get_json(http: &str, path: &str) -> Option<serde_json::Value> {
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

/// Waits until `pred` holds for every agent's `/butterfly`; returns the time the last one
/// took, or None.
fn time_all(
    agents: &[&Agent],
    start: Instant,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool + Sync,
) -> Option<Duration> {
    time_all_at(agents, "/butterfly", start, limit, pred)
}

/// Waits until `pred` holds for every agent's gateway `path` (JSON), polled every 5 ms;
/// returns the time since `start` the last one took, or None once `limit` passed.
pub(crate) fn time_all_at(
    agents: &[&Agent],
    path: &str,
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
                        if get_json(&a.http, path).is_some_and(|b| pred(&b)) {
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

/// Starts `n` supervisors of this binary on 127.0.0.100 and up, in one ring encrypted with
/// the ring key `bench` of `cache`, each with `data(i)` as its data path and `flags` added.
pub(crate) fn start_ring(
    n: usize,
    cache: &std::path::Path,
    data: impl Fn(usize) -> std::path::PathBuf,
    flags: &[&str],
) -> anyhow::Result<Vec<Agent>> {
    let mut agents: Vec<Agent> = Vec::new();
    for i in 0..n {
        let ip = format!("127.0.0.{}", 100 + i);
        // Port 0: each supervisor binds free ports and records them in listen.json.
        let listen = Listen { gossip: format!("{ip}:0"), http: format!("{ip}:0"), ctl: format!("{ip}:0") };
        let seed = agents.first().map(|a| a.gossip.clone());
        let agent = start_agent(&listen, seed.as_deref(), cache, &data(i), flags)
            .with_context(|| format!("supervisor {i}"))?;
        agents.push(agent);
    }
    Ok(agents)
}

/// Where a supervisor listens (port 0: the kernel picks).
pub(crate) struct Listen {
    pub gossip: String,
    pub http: String,
    pub ctl: String,
}

/// Each member's stderr, under its data path.
pub(crate) const AGENT_LOG: &str = "sup.log";

/// Starts one supervisor of this binary on `listen`, joining `seed` if given, in the ring of
/// the `bench` key of `cache`, with data path `data` and `flags`; returns once its gateway
/// answers. Started again with the addresses it bound, it is the same member restarted.
pub(crate) fn start_agent(
    listen: &Listen,
    seed: Option<&str>,
    cache: &std::path::Path,
    data: &std::path::Path,
    flags: &[&str],
) -> anyhow::Result<Agent> {
    let exe = std::env::current_exe().context("locating the warren binary")?;
    // Each member's log is kept beside its data (warnings, or WARREN_BENCH_LOG's filter), so
    // a failed run can be read afterwards.
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join(AGENT_LOG))
        .context("opening the member's log")?;
    let filter = std::env::var("WARREN_BENCH_LOG").unwrap_or_else(|_| "warn".to_string());
    let mut cmd = Command::new(&exe);
    cmd.args(["sup", "run", "--listen-gossip", &listen.gossip, "--listen-http", &listen.http])
        .args(["--listen-ctl", &listen.ctl]);
    if let Some(seed) = seed {
        cmd.args(["--peer", seed]);
    }
    let child = cmd
        .args(["--ring", "bench", "--cache-key-path"])
        .arg(cache)
        .arg("--data-path")
        .arg(data)
        .args(flags)
        .env("WARREN_LOG", filter)
        .env_remove("WARREN_GATEWAY_AUTH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting a supervisor")?;
    let pid = child.id();
    let mut agent = Agent {
        child,
        gossip: String::new(),
        http: String::new(),
        ctl: String::new(),
        data: data.to_path_buf(),
        id: String::new(),
    };
    let (gossip, http_addr, ctl_addr) =
        listening(data, pid, Duration::from_secs(20)).context("the supervisor did not start")?;
    agent.gossip = gossip;
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
        bail!("the supervisor's gateway did not answer");
    }
    Ok(agent)
}

/// Waits until every agent sees every other alive, then lets join-time gossip settle.
pub(crate) fn wait_converged(agents: &[Agent]) -> anyhow::Result<()> {
    let refs: Vec<&Agent> = agents.iter().collect();
    let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    let all_alive = |b: &serde_json::Value| ids.iter().all(|id| b["member"]["health"][id] == "Alive");
    time_all(&refs, Instant::now(), Duration::from_secs(60), all_alive)
        .context("the ring did not converge")?;
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
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
    let cache = dir.join("keys");
    KeyCache::new(&cache).write(&RingKey::generate("bench")?.to_file())?;
    let n = args.members;
    let mut agents = start_ring(usize::from(n), &cache, |i| dir.join(format!("{name}-data-{i}")), flags)?;
    wait_converged(&agents)?;
    let refs: Vec<&Agent> = agents.iter().collect();

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

/// The same measurements on HashiCorp Serf agents (encrypted, LAN profile).
fn bench_serf(args: &RingBenchArgs, dir: &std::path::Path) -> anyhow::Result<Figures> {
    let mut serf = Serf::start(usize::from(args.members), dir)?;
    let n = serf.len();
    let mut events = Vec::new();
    for round in 0..args.rounds {
        events.push(serf.event(round as usize % n)?);
        std::thread::sleep(Duration::from_millis(500));
    }
    events.sort_by(f64::total_cmp);
    let pss_mib = serf.pss_mib();
    let mut detects = Vec::new();
    for k in 0..usize::from(args.kills).min(n - 2) {
        detects.push(serf.kill(n - 1 - k)?);
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
        let measured = if args.no_serf || !super::serf::installed()? {
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
