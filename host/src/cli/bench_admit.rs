//! `warren bench admit`: token → admitted supervisor seen alive in the ring (`sup run --join`),
//! and how many claims a second the keyserver sustains with many nodes claiming at once.
//! Figures are printed, never asserted.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;

use super::bench_ring::{get_json, listening};
use crate::crypto::KeyCache;
use crate::ctl::{CtlClient, CtlRequest, proto};

#[derive(Args, Debug)]
pub struct AdmitBenchArgs {
    /// Supervisors admitted one after the other (token → alive in the ring); the p50 counts.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,
    /// Tokens claimed for the claims/s figure.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub claims: u32,
    /// Nodes claiming at the same time.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
}

struct Kill(Child);

/// The bench's folder, removed on every way out (after the processes in it: locals drop in
/// reverse order, so this guard is made first).
struct Owned(std::path::PathBuf);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(exe: &Path, args: &[&str], log: &Path) -> anyhow::Result<Kill> {
    let log = std::fs::File::create(log)?;
    let child = Command::new(exe)
        .args(args)
        .env("WARREN_LOG", std::env::var("WARREN_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .env_remove("WARREN_GATEWAY_AUTH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(Kill(child))
}

fn token(admin: &CtlClient, node: &str) -> anyhow::Result<String> {
    let req = CtlRequest::AdmitTokenCreate(proto::AdmitTokenCreate {
        node: Some(node.into()),
        groups: vec![],
        ttl_secs: None,
        from: None,
    });
    let made: proto::AdmitTokenCreated = admin.call_for(&req, |_| {}).context("token create")?;
    Ok(made.join)
}

/// Members the supervisor at `http` sees alive.
fn alive(http: &str) -> usize {
    get_json(http, "/butterfly")
        .and_then(|b| b["member"]["health"].as_object().map(|m| m.values().filter(|v| *v == "Alive").count()))
        .unwrap_or(0)
}

/// Starts `sup run --join` for `node` and returns it with its HTTP address once it listens.
fn admitted_sup(
    exe: &Path,
    dir: &Path,
    i: u32,
    join: &str,
    keyserver: &str,
    seed: Option<&str>,
) -> anyhow::Result<(Kill, String, String)> {
    let node = format!("node{i}");
    let data = dir.join(&node);
    std::fs::create_dir_all(&data)?;
    // A join string is a secret: handed over in a 0600 file, never on the command line.
    let join_file = dir.join(format!("{node}.join"));
    crate::fsutil::write_atomic(&join_file, join.as_bytes(), 0o600, crate::fsutil::Existing::Replace)?;
    let join_s = join_file.to_string_lossy().to_string();
    let ip = format!("127.0.1.{}", 10 + i);
    let (g, h, c) = (format!("{ip}:0"), format!("{ip}:0"), format!("{ip}:0"));
    let (data_s, keys_s) =
        (data.to_string_lossy().to_string(), data.join("keys").to_string_lossy().to_string());
    let mut args = vec!["sup", "run", "--listen-gossip", &g, "--listen-http", &h, "--listen-ctl", &c];
    args.extend(["--join", &join_s, "--keyserver", keyserver, "--node", &node]);
    args.extend(["--data-path", &data_s, "--cache-key-path", &keys_s]);
    args.extend(["--probe-interval", "200ms", "--ping-timeout", "100ms", "--gossip-interval", "50ms"]);
    if let Some(seed) = seed {
        args.extend(["--peer", seed]);
    }
    let log = dir.join(format!("{node}.log"));
    let mut child = spawn(exe, &args, &log)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (gossip, http, _) = loop {
        if let Some(bound) = listening(&data, child.0.id(), Duration::from_millis(100)) {
            break bound;
        }
        exited(&mut child, &node, &log)?;
        if Instant::now() > deadline {
            bail!("{node} did not start within 30 s");
        }
    };
    Ok((child, gossip, http))
}

/// An error once `child` has exited, with the end of its log (the folder goes with the error).
fn exited(child: &mut Kill, what: &str, log: &Path) -> anyhow::Result<()> {
    let Some(status) = child.0.try_wait()? else { return Ok(()) };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    bail!("{what} exited ({status}); its log ends:\n{}", lines[lines.len().saturating_sub(10)..].join("\n"))
}

pub fn run(args: AdmitBenchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the warren binary")?;
    let owned = Owned(std::env::temp_dir().join(format!("warren-bench-admit-{}", std::process::id())));
    std::fs::create_dir_all(&owned.0)?;
    let dir = owned.0.as_path();
    let ks_data = dir.join("keyserver");
    let mut ks = spawn(
        &exe,
        &[
            "keyserver",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--listen-join",
            "127.0.0.1:0",
            "--ring",
            "bench",
            "--data-path",
            &ks_data.to_string_lossy(),
        ],
        &dir.join("keyserver.log"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (admin_addr, join_addr) = loop {
        let v: Option<serde_json::Value> = std::fs::read(ks_data.join(super::keyserver::LISTEN_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(v) = v.filter(|v| v["pid"].as_u64() == Some(u64::from(ks.0.id())))
            && let (Some(a), Some(j)) = (v["listen"].as_str(), v["join"].as_str())
        {
            break (a.to_string(), j.to_string());
        }
        exited(&mut ks, "the keyserver", &dir.join("keyserver.log"))?;
        if Instant::now() > deadline {
            bail!("the keyserver did not start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let secret = crate::ctl::secret::read_file(&ks_data.join(super::keyserver::ADMIN_SECRET_FILE))?
        .context("no ADMIN_SECRET")?;
    let admin = CtlClient::new(&admin_addr, secret);

    // 1. token → admitted supervisor alive in the seed's census.
    let join = token(&admin, "node0")?;
    let (_seed, seed_gossip, seed_http) = admitted_sup(&exe, dir, 0, &join, &join_addr, None)?;
    let mut sups = Vec::new();
    let mut times = Vec::new();
    for i in 1..=args.rounds {
        let start = Instant::now();
        let join = token(&admin, &format!("node{i}"))?;
        let (s, _, _) = admitted_sup(&exe, dir, i, &join, &join_addr, Some(&seed_gossip))?;
        let want = i as usize + 1;
        while alive(&seed_http) < want {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("node{i} was not seen alive within 60 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        times.push(start.elapsed());
        sups.push(s);
    }
    drop(sups);
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;

    // 2. claims/s: tokens made first, then claimed by `concurrency` nodes at once.
    let mut joins = Vec::new();
    for i in 0..args.claims {
        joins.push((format!("c{i}"), token(&admin, &format!("c{i}"))?));
    }
    let queue = std::sync::Mutex::new(joins);
    let failures = std::sync::atomic::AtomicU32::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..args.concurrency {
            s.spawn(|| {
                loop {
                    let Some((node, join)) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                        return;
                    };
                    let nd = dir.join("claims").join(&node);
                    let cache = KeyCache::new(nd.join("keys"));
                    if super::admit_join::admit(&join, &node, &join_addr, &cache, &nd).is_err() {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let failed = failures.load(std::sync::atomic::Ordering::Relaxed);
    let rate = f64::from(args.claims - failed) / elapsed.as_secs_f64();

    outln!(
        "warren bench admit ({} rounds, {} claims, {} at once)",
        args.rounds,
        args.claims,
        args.concurrency
    )?;
    outln!(
        "token -> admitted node alive in the ring: p50 {:.1} ms (min {:.1}, max {:.1}; target <= 200 ms)",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    )?;
    outln!(
        "claims/s the keyserver sustains: {rate:.0} ({} claimed in {:.2} s, {failed} failed; target >= 200)",
        args.claims - failed,
        elapsed.as_secs_f64()
    )?;
    Ok(())
}
