//! `warren bench config`: `config apply` at one of N supervisors → the service's `reconfigure`
//! hook has run on all N, against HashiCorp Serf's user event → its handler has run on all N,
//! measured in the same run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::bench_ring::{Agent, start_ring, wait_converged};
use super::serf::{self, Serf, epoch, wait_files};
use crate::crypto::boxes;
use crate::crypto::{BoxSecretKeyFile, KeyCache, RingKey};
use crate::ctl::{CtlClient, CtlRequest, proto};

#[derive(Args, Debug)]
pub struct ConfigBenchArgs {
    /// Supervisors to start (on 127.0.0.100 and up), each running the bench service.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(2..=100))]
    pub members: u8,
    /// Config applies (and Serf events) measured; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Skip measuring HashiCorp Serf (`serf` on PATH) as the baseline in the same run.
    #[arg(long)]
    pub no_serf: bool,
}

const ORG: &str = "bench";
const SERVICE: &str = "cfg";
const USER: &str = "bench-operator";

/// The bench service: runs idle; its reconfigure hook stamps the time it ran into `mark`.
/// `{{cfg.x}}` in its config makes every applied version a changed render.
fn write_package(data: &Path, mark: &Path) -> anyhow::Result<()> {
    let user = if crate::services::users::is_root() {
        "root".to_string()
    } else {
        crate::services::users::current().map(|u| u.name).unwrap_or_else(|| "nobody".into())
    };
    let pkg = data.join(format!("pkgs/{ORG}/{SERVICE}/1.0.0/20260101000000"));
    std::fs::create_dir_all(pkg.join("hooks"))?;
    std::fs::create_dir_all(pkg.join("config"))?;
    std::fs::write(pkg.join("IDENT"), format!("{ORG}/{SERVICE}/1.0.0/20260101000000"))?;
    std::fs::write(pkg.join("SVC_USER"), &user)?;
    std::fs::write(pkg.join("default.toml"), "x = 0\n")?;
    std::fs::write(pkg.join("config/app.conf"), "x = {{cfg.x}}\n")?;
    let exec = |p: PathBuf, text: String| -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&p, text)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    };
    exec(pkg.join("hooks/run"), "#!/bin/sh\nexec sleep 1000000\n".into())?;
    exec(pkg.join("hooks/reconfigure"), format!("#!/bin/sh\ndate +%s.%N >> {}\n", mark.display()))?;
    Ok(())
}

fn client(agent: &Agent) -> anyhow::Result<CtlClient> {
    Ok(CtlClient::new(&agent.ctl, crate::ctl::secret::read_or_create(&agent.data)?))
}

/// Loads the bench service on every supervisor and waits until each runs it.
fn load_all(agents: &[Agent]) -> anyhow::Result<()> {
    for a in agents {
        let req = proto::SvcLoad {
            ident: Some(proto::PackageIdent {
                origin: ORG.into(),
                name: SERVICE.into(),
                version: None,
                release: None,
            }),
            ..Default::default()
        };
        client(a)?.call(&CtlRequest::SvcLoad(req), |_| {}).context("svc load over the ctl gateway")?;
    }
    Ok(())
}

/// `config apply` of version `version`, encrypted from the bench user to the group's key, at
/// `origin`; returns seconds until the reconfigure hook ran on every member.
fn apply(
    origin: &Agent,
    marks: &[PathBuf],
    version: u64,
    user: &BoxSecretKeyFile,
    service: &crate::crypto::BoxPublicKey,
) -> anyhow::Result<f64> {
    for m in marks {
        let _ = std::fs::remove_file(m);
    }
    let payload = format!("x = {version}\n");
    let t0 = epoch();
    let sealed = boxes::encrypt(payload.as_bytes(), user, service)?.to_text();
    let req = proto::SvcSetCfg {
        service_group: Some(proto::ServiceGroup {
            service: SERVICE.into(),
            group: "default".into(),
            organization: Some(ORG.into()),
        }),
        cfg: Some(sealed.into_bytes()),
        version: Some(version),
        is_encrypted: Some(true),
    };
    client(origin)?.call(&CtlRequest::SvcSetCfg(req), |_| {}).context("config apply over the ctl gateway")?;
    let last = wait_files(marks, Duration::from_secs(60))
        .context("the reconfigure hook did not run on every member within 60 s")?;
    Ok(last - t0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn runs(v: &[f64]) -> String {
    v.iter().map(|e| format!("{e:.3}")).collect::<Vec<_>>().join(" ")
}

pub fn run(args: ConfigBenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("warren-bench-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(args: &ConfigBenchArgs, dir: &Path) -> anyhow::Result<()> {
    let n = usize::from(args.members);
    outln!(
        "warren bench config: encrypted config apply at one of {n} supervisors (--org {ORG}) → reconfigure hook run on all"
    )?;
    let cache_dir = dir.join("keys");
    let cache = KeyCache::new(&cache_dir);
    cache.write(&RingKey::generate("bench")?.to_file())?;
    let (user_pk, user_sk) = BoxSecretKeyFile::generate(USER)?;
    let (svc_pk, svc_sk) = BoxSecretKeyFile::generate(&format!("{SERVICE}.default@{ORG}"))?;
    for k in [user_pk.to_file(), user_sk.to_file(), svc_pk.to_file(), svc_sk.to_file()] {
        cache.write(&k)?;
    }
    let marks: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("reconfigured-{i}"))).collect();
    let data = |i: usize| dir.join(format!("data-{i}"));
    for (i, mark) in marks.iter().enumerate() {
        write_package(&data(i), mark)?;
    }
    let agents = start_ring(n, &cache_dir, data, &["--org", ORG])?;
    wait_converged(&agents)?;
    load_all(&agents)?;
    // Every member must know every other's service before the first apply counts.
    std::thread::sleep(Duration::from_secs(2));
    let mut warren = Vec::new();
    for round in 0..args.rounds {
        let origin = &agents[round as usize % n];
        warren.push(apply(origin, &marks, u64::from(round) + 1, &user_sk, &svc_pk)?);
        std::thread::sleep(Duration::from_millis(500));
    }
    outln!(
        "  warren   config apply → reconfigure on all: median {:.3}s (runs: {})",
        median(warren.clone()),
        runs(&warren)
    )?;
    drop(agents);

    let serf = if args.no_serf || !serf::installed()? {
        None
    } else {
        let measured = Serf::start(n, dir).and_then(|serf| {
            (0..args.rounds)
                .map(|round| {
                    let t = serf.event(round as usize % n);
                    std::thread::sleep(Duration::from_millis(500));
                    t
                })
                .collect::<anyhow::Result<Vec<f64>>>()
        });
        match measured {
            Ok(v) => {
                outln!(
                    "  serf     user event → handler on all:   median {:.3}s (runs: {})",
                    median(v.clone()),
                    runs(&v)
                )?;
                Some(median(v))
            }
            Err(e) => {
                outln!("  (serf baseline failed: {e:#})")?;
                None
            }
        }
    };
    // Ratios only against a baseline measured here and now: never against remembered figures.
    match serf {
        Some(base) => outln!(
            "ratio against HashiCorp Serf measured in this run: {:.2}x (target ≤ 0.5x)",
            median(warren) / base
        )?,
        None => outln!("ratio against HashiCorp Serf: n/a (no Serf baseline measured in this run)")?,
    }
    Ok(())
}
