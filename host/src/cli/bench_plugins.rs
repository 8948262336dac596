//! `warren bench plugins`: plugin calls against a process per call, and the compile cache
//! against cold compiles, printed as ratios measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::crypto::sodium::blake2b_256;
use crate::plugins::{
    EngineOptions, Grant, Limits, PluginEngine, PluginRegistry, RegistrySettings, TrustMode,
};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

/// `warren bench plugins`.
pub fn run(plugin: &std::path::Path, calls: usize, spawns: usize) -> anyhow::Result<()> {
    let plugin_path = plugin.to_path_buf();
    let wasm = std::fs::read(plugin)
        .with_context(|| format!("cannot read {} (run scripts/build-plugins.sh)", plugin.display()))?;
    let work = std::env::temp_dir().join(format!("warren-bench-{}", std::process::id()));
    let secrets = work.join("secrets");
    let plugins = work.join("plugins");
    std::fs::create_dir_all(&secrets)?;
    std::fs::create_dir_all(&plugins)?;
    let result = bench(&plugin_path, &wasm, &work, &secrets, &plugins, calls.max(100), spawns.max(20));
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn bench(
    plugin_path: &std::path::Path,
    wasm: &[u8],
    work: &std::path::Path,
    secrets: &std::path::Path,
    plugins: &std::path::Path,
    calls: usize,
    spawns: usize,
) -> anyhow::Result<()> {
    let token = secrets.join("token");
    std::fs::write(&token, "s3cr3t-token-value\n")?;
    std::fs::write(plugins.join("file.wasm"), wasm)?;
    let reference = format!("FILE:{}", token.display());

    // --- compile: cold vs from the cache (a fresh engine each so nothing is shared in memory)
    let cache_dir = work.join("cache");
    let engine =
        PluginEngine::new(EngineOptions { cache_dir: Some(cache_dir.clone()), ..EngineOptions::default() })?;
    let digest = blake2b_256(wasm);
    let mut cold = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        engine.compile_uncached(wasm)?;
        cold.push(t.elapsed());
    }
    engine.compile(wasm, &digest)?; // fills the cache
    let mut cached = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let (_, outcome) = engine.compile(wasm, &digest)?;
        cached.push(t.elapsed());
        if outcome != crate::plugins::CacheOutcome::Hit {
            bail!("expected a compile-cache hit");
        }
    }

    // --- warm resolve through the registry
    let settings = RegistrySettings {
        plugin_dir: plugins.to_path_buf(),
        trust: TrustMode::Off,
        grants: [("file".to_string(), Grant { read_paths: vec![secrets.to_path_buf()], ..Grant::default() })]
            .into(),
        credentials: crate::plugins::registry::credentials_with_defaults(&Default::default()),
        limits: Limits::default(),
    };
    let registry = PluginRegistry::new(
        engine.clone(),
        settings,
        Arc::new(crate::crypto::KeyCache::new(work.join("keys"))),
    );
    let t = Instant::now();
    registry.load_file(&plugins.join("file.wasm"))?;
    let load_cached = t.elapsed();
    let source = registry.get_credential_source("FILE").context("file plugin did not register FILE")?;
    let check = source.resolve(&reference)?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if check.value != "s3cr3t-token-value" {
        bail!("the plugin returned an unexpected value");
    }
    for _ in 0..200 {
        let _ = source.resolve(&reference)?;
    }
    let mut warm = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let r = source.resolve(&reference)?;
        warm.push(t.elapsed());
        std::hint::black_box(r.ok());
    }

    // --- baseline: one native process per resolution
    let mut native = Vec::with_capacity(spawns);
    for _ in 0..spawns {
        let t = Instant::now();
        let out = std::process::Command::new("cat").arg(&token).output()?;
        native.push(t.elapsed());
        if !out.status.success() {
            bail!("cat failed");
        }
    }

    // The floor: the same read done natively in this process (no sandbox, no process).
    let mut direct = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let meta = std::fs::metadata(&token)?;
        let v = std::fs::read_to_string(&token)?;
        direct.push(t.elapsed());
        std::hint::black_box((meta.len(), v));
    }

    // `openat2` may be missing (old kernels) or filtered (seccomp); wasmtime-wasi then falls back.
    let sandbox_floor = sandbox_syscalls(secrets, "token", calls);

    // The env plugin does no file I/O: its median is the cost of a warm call itself.
    let env_wasm = plugin_path.with_file_name("env.wasm");
    let env_median = match std::fs::read(&env_wasm) {
        Ok(bytes) => {
            std::fs::write(plugins.join("env.wasm"), bytes)?;
            registry.load_file(&plugins.join("env.wasm"))?;
            let env = registry.get_credential_source("ENV").context("env plugin did not register ENV")?;
            let mut t_env = Vec::with_capacity(calls);
            for i in 0..calls + 200 {
                let t = Instant::now();
                let r = env.resolve("ENV:WARREN_BENCH_UNSET")?;
                if i >= 200 {
                    t_env.push(t.elapsed());
                }
                std::hint::black_box(r.is_ok());
            }
            Some(median(t_env))
        }
        Err(_) => None,
    };
    let (wm, wp99, nm) = (median(warm.clone()), pct(warm, 0.99), median(native));
    let (cm, km) = (median(cold), median(cached));
    outln!("warren bench plugins ({} warm calls, {} spawns)", calls, spawns)?;
    outln!("  resolve, warm file plugin      median {:>12}   p99 {}", us(wm), us(wp99))?;
    outln!("  resolve, spawn `cat FILE`      median {:>12}", us(nm))?;
    outln!("  => plugin is {:.0}x faster than a process per call", nm.as_secs_f64() / wm.as_secs_f64())?;
    outln!("  same read in-process, native (std::fs)      median {}", us(median(direct)))?;
    match sandbox_floor {
        Ok(times) => {
            let floor = median(times);
            outln!("  the sandbox's syscalls, native (openat2, statx, 2 pread, close) median {}", us(floor))?;
            outln!("  => the sandbox itself adds about {} per resolve", us(wm.saturating_sub(floor)))?;
        }
        Err(e) => outln!("  the sandbox's syscalls, native: n/a ({e:#})")?,
    }
    if let Some(e) = env_median {
        outln!("  resolve, warm env plugin (no file I/O: the call itself) median {}", us(e))?;
    }
    outln!("  compile, cold                  median {:>12}", us(cm))?;
    outln!("  compile, from the disk cache   median {:>12}", us(km))?;
    outln!("  => cache load is {:.0}x faster than a cold compile", cm.as_secs_f64() / km.as_secs_f64())?;
    outln!("  registry load_file (cache hit, verify+link+first instance) {}", us(load_cached))?;
    Ok(())
}

/// The syscalls one `FILE:` resolve makes through the sandbox, made natively: wasmtime-wasi's
/// `openat2` beneath the granted directory and the `statx` it does to tell files from
/// directories, the plugin's read and its one-byte end-of-file read, the close. What the plugin
/// costs above this is the sandbox's own overhead.
fn sandbox_syscalls(dir: &std::path::Path, name: &str, calls: usize) -> anyhow::Result<Vec<Duration>> {
    use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags, open, openat2, statx};
    let dir = open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    let mut buf = vec![0u8; 4096];
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let file = openat2(
            &dir,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )?;
        let stat = statx(&file, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)?;
        let n = rustix::io::pread(&file, &mut buf, 0)?;
        let end = rustix::io::pread(&file, &mut buf[..1], n as u64)?;
        drop(file);
        times.push(t.elapsed());
        std::hint::black_box((stat.stx_mode, n, end));
    }
    Ok(times)
}
