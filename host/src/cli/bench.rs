//! `warren bench verify`: how close package verification gets to raw BLAKE2b speed, and
//! whether its memory stays flat as packages grow. Figures are printed, never asserted.

use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Subcommand;

use super::keys::CacheArgs;
use crate::crypto::{KeyCache, SigSecretKey, hart, sodium};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Build a large package of random bytes, then time raw BLAKE2b-256 of its payload against
    /// `pkg verify` on the same file, and measure the peak memory of a verifying process.
    Verify {
        /// Payload size in MiB.
        #[arg(long, default_value_t = 256)]
        size_mb: u64,
        /// Timed rounds of each measurement; the best round counts.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Where to build the package (a temporary directory inside it is removed afterwards).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Rumor spread, kill -9 → confirmed-by-all and memory per agent across N local
    /// supervisors, at default and Serf-like timings (Serf itself measured too when on PATH).
    Ring(super::bench_ring::RingBenchArgs),
    /// Warm `resolve` on the file plugin vs spawning `cat FILE` per call (the kubelet
    /// credential-provider model), and loading from the compile cache vs a cold compile.
    Plugins {
        /// The file plugin component.
        #[arg(long, default_value = "target/plugins/file.wasm")]
        plugin: PathBuf,
        /// Warm plugin calls to time.
        #[arg(long, default_value_t = 20_000)]
        calls: usize,
        /// Process spawns to time.
        #[arg(long, default_value_t = 300)]
        spawns: usize,
    },
    /// `ctl ping` round trips with the Noise channel and with Habitat's plaintext handshake
    /// against a plain TCP echo of the same payload, sequential and with concurrent clients.
    Ctl(super::bench_ctl::CtlBenchArgs),
    /// Encrypted `config apply` at one of N supervisors → the reconfigure hook run on all,
    /// against a HashiCorp Serf user event → its handler run on all, in the same run.
    Config(super::bench_config::ConfigBenchArgs),
    /// kill -9 of the leader of a 5-member leader-follower group → every survivor names the
    /// same new leader, against the ring's own detection of the dead leader in the same run.
    Election(super::bench_election::ElectionBenchArgs),
    /// warren's service supervision against Debian's supervisord and s6 (installed with apt
    /// when missing): kill -9 → new process, load → running, PSS and idle CPU with N services.
    Svc(super::bench_svc::SvcBenchArgs),
    /// Token → admitted supervisor alive in the ring (`sup run --join`), p50 over rounds, and
    /// the claims per second a keyserver sustains with many nodes claiming at once.
    Admit(super::bench_admit::AdmitBenchArgs),
    /// (internal) Verify FILE and print this process's peak memory; used by `bench verify`.
    #[command(hide = true)]
    VerifyChild {
        file: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

impl BenchCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            BenchCommand::Verify { size_mb, rounds, dir } => bench_verify(size_mb, rounds.max(1), dir),
            BenchCommand::Ring(args) => super::bench_ring::bench_ring(args),
            BenchCommand::Ctl(args) => super::bench_ctl::run(args),
            BenchCommand::Config(args) => super::bench_config::run(args),
            BenchCommand::Admit(args) => super::bench_admit::run(args),
            BenchCommand::Svc(args) => super::bench_svc::run(args),
            BenchCommand::Election(args) => super::bench_election::run(args),
            BenchCommand::Plugins { plugin, calls, spawns } => {
                super::bench_plugins::run(&plugin, calls, spawns)
            }
            BenchCommand::VerifyChild { file, cache } => {
                let v = hart::verify_file(&file, &cache.cache(), &mut |_| ())?;
                outln!("verified {} bytes", v.payload_len)?;
                outln!("VmHWM_kB={}", peak_rss_kb().context("reading /proc/self/status")?)?;
                Ok(())
            }
        }
    }
}

/// Peak resident set size of this process, from /proc/self/status.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const MIB: u64 = 1024 * 1024;

/// Writes a package whose payload is `size` random bytes, in 1 MiB chunks.
fn build_package(path: &Path, key: &SigSecretKey, size: u64) -> anyhow::Result<hart::Verified> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let (file, v) = hart::write_signed(file, key, |out| {
        let mut chunk = vec![0u8; MIB as usize];
        let mut left = size;
        while left > 0 {
            let n = left.min(MIB) as usize;
            sodium::random_bytes(&mut chunk[..n]);
            out.write_all(&chunk[..n]).map_err(hart::io_err("writing the payload"))?;
            left -= n as u64;
        }
        Ok(())
    })?;
    file.sync_all()?;
    Ok(v)
}

/// Raw BLAKE2b-256 of the payload bytes, read from the file with the same chunk size verify uses.
fn raw_hash(path: &Path, offset: u64) -> anyhow::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut r = BufReader::with_capacity(hart::CHUNK, f);
    Ok(hart::hash_stream(&mut r, &mut |_| ())?.0)
}

fn timed<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(Duration, T)> {
    let t = Instant::now();
    let out = f()?;
    Ok((t.elapsed(), out))
}

fn child_peak_kb(file: &Path, cache: &Path) -> anyhow::Result<u64> {
    let exe = std::env::current_exe().context("locating the warren binary")?;
    let out = Process::new(exe)
        .args(["bench", "verify-child", "--cache-key-path"])
        .arg(cache)
        .arg(file)
        .output()
        .context("running the verify child")?;
    if !out.status.success() {
        bail!("verify child failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM_kB="))
        .and_then(|v| v.trim().parse().ok())
        .context("the verify child printed no peak memory")
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64().max(1e-9)
}

fn bench_verify(size_mb: u64, rounds: u32, dir: Option<PathBuf>) -> anyhow::Result<()> {
    ensure!(size_mb >= 1, "--size-mb must be at least 1");
    let base = dir.unwrap_or_else(std::env::temp_dir);
    let tmp = TempDir(base.join(format!(
        "warren-bench-{}-{}",
        std::process::id(),
        hex::encode(sodium::random_array::<4>())
    )));
    std::fs::create_dir_all(&tmp.0).with_context(|| format!("creating {}", tmp.0.display()))?;
    let cache = KeyCache::new(tmp.0.join("keys"));
    let (pk, sk) = SigSecretKey::generate("bench")?;
    cache.write(&pk.to_file())?;

    let size = size_mb * MIB;
    let big = tmp.0.join("bench-big.hart");
    let small = tmp.0.join("bench-small.hart");
    outln!("building a {size_mb} MiB package of random bytes in {}", tmp.0.display())?;
    let built = build_package(&big, &sk, size)?;
    build_package(&small, &sk, MIB)?;

    // Warm the page cache so both measurements read the same way.
    let digest = raw_hash(&big, built.header_len)?;
    ensure!(digest == built.digest, "raw hash disagrees with the signed digest");

    let mut raw_total = Duration::ZERO;
    let mut ver_total = Duration::ZERO;
    let mut raw_best = Duration::MAX;
    let mut ver_best = Duration::MAX;
    // Interleave the rounds so drift (other load on the machine) hits both alike.
    for _ in 0..rounds {
        let (d, h) = timed(|| raw_hash(&big, built.header_len))?;
        ensure!(h == built.digest, "raw hash changed");
        raw_total += d;
        raw_best = raw_best.min(d);
        let (d, v) = timed(|| Ok(hart::verify_file(&big, &cache, &mut |_| ())?))?;
        ensure!(v.digest == built.digest, "verify returned another digest");
        ver_total += d;
        ver_best = ver_best.min(d);
    }
    let raw_tp = mib_per_s(size, raw_best);
    let ver_tp = mib_per_s(size, ver_best);
    let ratio = ver_tp / raw_tp;

    let peak_big = child_peak_kb(&big, cache.dir())?;
    let peak_small = child_peak_kb(&small, cache.dir())?;

    outln!("payload:            {size_mb} MiB ({size} bytes), {rounds} rounds each, best round shown")?;
    outln!(
        "raw BLAKE2b-256:    {raw_tp:8.1} MiB/s  (best {:.3}s, mean {:.3}s)",
        raw_best.as_secs_f64(),
        raw_total.as_secs_f64() / f64::from(rounds)
    )?;
    outln!(
        "pkg verify:         {ver_tp:8.1} MiB/s  (best {:.3}s, mean {:.3}s)",
        ver_best.as_secs_f64(),
        ver_total.as_secs_f64() / f64::from(rounds)
    )?;
    outln!("ratio verify/raw:   {ratio:.3} (target >= 0.9)")?;
    outln!(
        "peak memory (VmHWM) of a verifying process: {:.1} MiB for the {size_mb} MiB package, {:.1} MiB for a 1 MiB package",
        peak_big as f64 / 1024.0,
        peak_small as f64 / 1024.0
    )?;
    if let Some(own) = peak_rss_kb() {
        outln!("peak memory of this bench process: {:.1} MiB", own as f64 / 1024.0)?;
    }
    Ok(())
}
