//! `warren bench election`: N local supervisors (default 5) run the kv-leader example with
//! `--topology leader` (the leader-follower policy plugin, signed by the bench's own origin).
//! Each round kills the leader with -9 and measures, from the same instant, (a) detection:
//! until every survivor's `/butterfly` shows the old leader confirmed dead (the ring's own
//! failure detection, the baseline of this run), and (b) election: until every survivor's
//! `/census` names one and the same new leader. The killed member is restarted (same data
//! path, same addresses, so the same member id) before the next round.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;

use super::bench_ring::{Agent, Listen, get_json, start_agent, start_ring, time_all_at, wait_converged};
use crate::crypto::{KeyCache, RingKey, SigSecretKey};
use crate::ctl::{CtlClient, CtlRequest, proto};
use crate::services::PackageStore;

#[derive(Args, Debug)]
pub struct ElectionBenchArgs {
    /// Supervisors in the group (on 127.0.0.100 and up); at least 3, as an election needs.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(3..=15))]
    pub members: u8,
    /// Leader kills measured, one per round; the medians are reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// The leader-follower topology-policy plugin (built by scripts/build-plugins.sh).
    #[arg(long, value_name = "FILE", default_value = "target/plugins/leader-follower.wasm")]
    pub plugin: PathBuf,
}

const ORIGIN: &str = "bench";
const SERVICE: &str = "kv-leader";
const GROUP: &str = "kv-leader.default";
/// A member that must come up, converge or elect takes at most this long, or the bench fails.
const LIMIT: Duration = Duration::from_secs(120);

/// The kv-leader example, compiled in, so the bench builds the same package the examples and
/// tests use with the real builder.
const KV_LEADER: &[(&str, &str, bool)] = &[
    ("plan.toml", include_str!("../../../examples/packages/kv-leader/plan.toml"), false),
    ("default.toml", include_str!("../../../examples/packages/kv-leader/default.toml"), false),
    ("config/role.toml", include_str!("../../../examples/packages/kv-leader/config/role.toml"), false),
    ("config/server.conf", include_str!("../../../examples/packages/kv-leader/config/server.conf"), false),
    ("hooks/run", include_str!("../../../examples/packages/kv-leader/hooks/run"), true),
    ("hooks/reconfigure", include_str!("../../../examples/packages/kv-leader/hooks/reconfigure"), true),
    ("bin/server.pl", include_str!("../../../examples/packages/kv-leader/bin/server.pl"), true),
];

/// Writes the kv-leader source into `src` and builds it signed by `key` into `out`.
fn build_package(src: &Path, out: &Path, key: &SigSecretKey) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    for (rel, text, exec) in KV_LEADER {
        let path = src.join(rel);
        std::fs::create_dir_all(path.parent().unwrap_or(src))?;
        std::fs::write(&path, text)?;
        let mode = if *exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    std::fs::create_dir_all(out)?;
    let built = crate::services::build::build(src, key, out).context("building kv-leader")?;
    Ok(built.path)
}

/// Copies the policy plugin into `dir`, signed by `key` (whose origin the members trust, so
/// they load it under strict trust).
fn sign_plugin(plugin: &Path, dir: &Path, key: &SigSecretKey) -> anyhow::Result<PathBuf> {
    let bytes = std::fs::read(plugin)
        .with_context(|| format!("reading {} (run ./scripts/build-plugins.sh first)", plugin.display()))?;
    let signed = crate::plugins::signing::sign(&bytes, key).context("signing the plugin")?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("leader-follower.wasm"), signed)?;
    Ok(dir.to_path_buf())
}

fn client(agent: &Agent) -> anyhow::Result<CtlClient> {
    Ok(CtlClient::new(&agent.ctl, crate::ctl::secret::read_or_create(&agent.data)?))
}

/// Waits until `agent` has loaded the policy plugin.
fn wait_policy(agent: &Agent) -> anyhow::Result<()> {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        let loaded = get_json(&agent.http, "/plugins").and_then(|j| j["plugins"].as_array().cloned());
        if loaded
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "leader-follower" && p["state"] == "loaded"))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("supervisor {} did not load the leader-follower plugin", agent.id)
}

/// Loads kv-leader with `--topology leader` on `agent` (not waiting: it starts once elected).
fn load(agent: &Agent) -> anyhow::Result<()> {
    let req = proto::SvcLoad {
        ident: Some(proto::PackageIdent {
            origin: ORIGIN.into(),
            name: SERVICE.into(),
            version: None,
            release: None,
        }),
        topology: Some(proto::Topology::Leader as i32),
        no_wait: Some(true),
        ..Default::default()
    };
    client(agent)?.call(&CtlRequest::SvcLoad(req), |_| {}).context("svc load over the ctl gateway")?;
    Ok(())
}

/// The leader `agent`'s `/census` names for the group once its election finished.
fn census_leader(agent: &Agent) -> Option<String> {
    let census = get_json(&agent.http, "/census")?;
    let g = census["census_groups"].get(GROUP)?;
    (g["election_status"] == "ElectionFinished")
        .then(|| g["leader_id"].as_str().map(str::to_string))
        .flatten()
}

/// One member's election of the group as its `/census` shows it, for error messages.
fn census_view(agent: &Agent) -> String {
    let Some(census) = get_json(&agent.http, "/census") else { return "no /census answer".into() };
    let g = &census["census_groups"][GROUP];
    let members = g["population"].as_object().map_or(0, |m| m.len());
    format!(
        "{}, leader {} ({members} members in its census)",
        g["election_status"].as_str().unwrap_or("-"),
        g["leader_id"].as_str().unwrap_or("-"),
    )
}

/// Polls every agent until all name the same leader other than `not`; returns it and the time
/// since `start`.
fn wait_agreed(agents: &[&Agent], not: Option<&str>, start: Instant) -> anyhow::Result<(String, Duration)> {
    while start.elapsed() < LIMIT {
        let leaders: Vec<Option<String>> = agents.iter().map(|a| census_leader(a)).collect();
        if let Some(Some(first)) = leaders.first()
            && Some(first.as_str()) != not
            && leaders.iter().all(|l| l.as_ref() == Some(first))
        {
            return Ok((first.clone(), start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let views: Vec<String> = agents.iter().map(|a| format!("  {}: {}", a.id, census_view(a))).collect();
    bail!(
        "the members did not agree on a leader within {LIMIT:?}; their views of {GROUP}:\n{}",
        views.join("\n")
    )
}

/// Service processes outlive a supervisor killed with -9 (by design); this ends the ones
/// the bench's members recorded, once the bench is over.
struct Services(Vec<PathBuf>);

impl Drop for Services {
    fn drop(&mut self) {
        use crate::services::process::{self, Process, ProcessRecord};
        for data in &self.0 {
            let Ok(records) = std::fs::read_dir(data.join("proc")) else { continue };
            for r in records.flatten().filter(|r| r.path().extension().is_some_and(|e| e == "json")) {
                let Some(rec) = std::fs::read(r.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<ProcessRecord>(&b).ok())
                else {
                    continue;
                };
                // Only the recorded process itself, never a reused pid.
                if rec.boot_id == process::boot_id()
                    && process::starttime(rec.pid).ok() == Some(rec.starttime)
                {
                    Process::kill_leftovers(rec.pid);
                }
            }
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn runs(v: &[f64]) -> String {
    v.iter().map(|e| format!("{e:.3}")).collect::<Vec<_>>().join(" ")
}

pub fn run(args: ElectionBenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("warren-bench-election-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&args, &dir);
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        // What each member saw and logged is what explains a failure: keep it.
        Err(_) => eprintln!(
            "warren bench election: kept the members' data paths and logs ({}) in {}",
            super::bench_ring::AGENT_LOG,
            dir.display()
        ),
    }
    result
}

fn run_in(args: &ElectionBenchArgs, dir: &Path) -> anyhow::Result<()> {
    let n = usize::from(args.members);
    outln!(
        "warren bench election: kill -9 of the leader of a {n}-member leader-follower group ({SERVICE}, --topology leader), {} round(s)",
        args.rounds
    )?;
    let cache_dir = dir.join("keys");
    let cache = KeyCache::new(&cache_dir);
    cache.write(&RingKey::generate("bench")?.to_file())?;
    let (public, secret) = SigSecretKey::generate(ORIGIN)?;
    cache.write(&public.to_file())?;
    let hart = build_package(&dir.join("src"), &dir.join("out"), &secret)?;
    let plugins = sign_plugin(&args.plugin, &dir.join("plugins"), &secret)?;
    let data = |i: usize| dir.join(format!("data-{i}"));
    for i in 0..n {
        PackageStore::under(&data(i)).install_verified(&hart, &cache).context("installing kv-leader")?;
    }
    let _services = Services((0..n).map(data).collect());
    let plugin_path = plugins.to_str().context("the temp folder's path is not UTF-8")?;
    let flags = ["--plugin-path", plugin_path];
    let mut agents = start_ring(n, &cache_dir, data, &flags)?;
    wait_converged(&agents)?;
    for a in &agents {
        wait_policy(a)?;
        load(a)?;
    }
    let (mut leader, took) = wait_agreed(&agents.iter().collect::<Vec<_>>(), None, Instant::now())?;
    outln!("  first election: every member names {leader} ({:.3}s after the last load)", took.as_secs_f64())?;

    let (mut detection, mut election) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let idx = agents
            .iter()
            .position(|a| a.id == leader)
            .context("the leader is not one of the bench's members")?;
        let start = Instant::now();
        agents[idx].child.kill().context("kill -9 of the leader")?;
        let survivors: Vec<&Agent> =
            agents.iter().enumerate().filter(|(i, _)| *i != idx).map(|(_, a)| a).collect();
        let old = leader.clone();
        let dead = |b: &serde_json::Value| {
            matches!(b["member"]["health"][&old].as_str(), Some("Confirmed" | "Departed"))
        };
        let (detected, elected) = std::thread::scope(|s| {
            let d = s.spawn(|| time_all_at(&survivors, "/butterfly", start, LIMIT, dead));
            let e = wait_agreed(&survivors, Some(&old), start);
            (d.join().ok().flatten(), e)
        });
        let detected = detected.context("the survivors did not confirm the killed leader")?;
        let (new, elected) = elected?;
        let (d, e) = (detected.as_secs_f64(), elected.as_secs_f64());
        outln!(
            "  round {round}: leader {old} killed; detection {d:.3}s, election {e:.3}s (new leader {new})"
        )?;
        detection.push(d);
        election.push(e);
        leader = new;

        // Back as the same member: same data path, same addresses, a survivor as its seed.
        let _ = agents[idx].child.wait();
        let listen = Listen {
            gossip: agents[idx].gossip.clone(),
            http: agents[idx].http.clone(),
            ctl: agents[idx].ctl.clone(),
        };
        let seed = agents[(idx + 1) % n].gossip.clone();
        agents[idx] = start_agent(&listen, Some(&seed), &cache_dir, &agents[idx].data.clone(), &flags)
            .context("restarting the killed member")?;
        ensure!(agents[idx].id == old, "the restarted member has another id");
        wait_converged(&agents)?;
        let (after, _) = wait_agreed(&agents.iter().collect::<Vec<_>>(), None, Instant::now())?;
        ensure!(after == leader, "the leader changed from {leader} to {after} when {old} rejoined");
    }
    let added: Vec<f64> = election.iter().zip(&detection).map(|(e, d)| e - d).collect();
    outln!(
        "  detection (every survivor confirms the old leader): median {:.3}s (runs: {})",
        median(detection.clone()),
        runs(&detection)
    )?;
    outln!(
        "  election  (every survivor names the new leader):    median {:.3}s (runs: {})",
        median(election.clone()),
        runs(&election)
    )?;
    // Against the detection measured in this run, round by round: never remembered figures.
    outln!(
        "election adds {:.3} s to detection (median of the rounds' differences: {}; target <= 1 s)",
        median(added.clone()),
        runs(&added)
    )?;
    Ok(())
}
