//! JSON bodies of `/services`, `/services/{svc}/{group}[/{org}]` and their `config` and
//! `health` in Habitat's shape (components/sup/doc/http_gateway_services_schema.json and
//! api.yaml). Pure: a loaded service and the supervisor's context in, JSON out; the routes in
//! `services_api` do the reading (the services subsystem, which hooks exist, the clock).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::services::ServiceInfo;
use crate::services::backoff::BackoffPolicy;
use crate::services::hooks::Hook;
use crate::services::package::PackageIdent;
use crate::services::spec::BindingMode;
use crate::services::state::{Desired, FailedHook};
use crate::services::supervisor::Health;

/// Habitat's defaults for spec fields warren does not use (it installs packages itself and has
/// no update strategies): what `hab svc load` writes when they are not given.
const DEFAULT_BLDR_URL: &str = "https://bldr.habitat.sh";
const DEFAULT_CHANNEL: &str = "stable";

/// What every service's body shares: the supervisor's paths, its `sys`, its restart policy,
/// and a clock to turn the services' instants into seconds since the epoch.
#[derive(Debug, Clone)]
pub struct Context {
    /// `--data-path`: Habitat's sup root (warren keeps its data directly there).
    pub data_path: PathBuf,
    /// Habitat's `sys_extended`: ips, ports, hostname, member id, permanent, version.
    pub sys: Value,
    pub policy: BackoffPolicy,
    pub clock: Clock,
}

/// One reading of both clocks.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: Instant,
    /// The wall clock at `now`, since the Unix epoch.
    pub unix: Duration,
}

impl Clock {
    pub fn read() -> Clock {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Clock { now: Instant::now(), unix }
    }

    /// Seconds since the epoch of `t` (before or after `now`).
    pub fn secs(&self, t: Instant) -> i64 {
        let unix =
            if t <= self.now { self.unix.saturating_sub(self.now - t) } else { self.unix + (t - self.now) };
        i64::try_from(unix.as_secs()).unwrap_or(i64::MAX)
    }
}

/// Habitat's JSON name of a hook (the keys of `hooks`).
fn hook_key(h: Hook) -> &'static str {
    match h {
        Hook::Init => "init",
        Hook::Run => "run",
        Hook::PostRun => "post_run",
        Hook::HealthCheck => "health_check",
        Hook::Reconfigure => "reconfigure",
        Hook::Suitability => "suitability",
        Hook::FileUpdated => "file_updated",
        Hook::PostStop => "post_stop",
    }
}

/// `/services`' `health_check`: Habitat's enum names; before the first check, Unknown.
fn health_name(h: Option<Health>) -> &'static str {
    match h {
        Some(Health::Ok) => "Ok",
        Some(Health::Warning) => "Warning",
        Some(Health::Critical) => "Critical",
        Some(Health::Unknown) | None => "Unknown",
    }
}

/// The names Habitat's schema knows for a shutdown signal.
fn signal_name(n: i32) -> Option<&'static str> {
    Some(match n {
        libc::SIGINT => "INT",
        libc::SIGILL => "ILL",
        libc::SIGABRT => "ABRT",
        libc::SIGFPE => "FPE",
        libc::SIGKILL => "KILL",
        libc::SIGSEGV => "SEGV",
        libc::SIGTERM => "TERM",
        libc::SIGHUP => "HUP",
        libc::SIGQUIT => "QUIT",
        libc::SIGALRM => "ALRM",
        libc::SIGUSR1 => "USR1",
        libc::SIGUSR2 => "USR2",
        libc::SIGCHLD => "CHLD",
        _ => return None,
    })
}

fn duration(d: Duration) -> Value {
    json!({ "secs": d.as_secs(), "nanos": d.subsec_nanos() })
}

fn path(p: &Path) -> Value {
    json!(p.display().to_string())
}

/// render_context_schema.json's `package_identifier`: absent parts are null.
fn ident_parts(id: &PackageIdent) -> Value {
    json!({ "origin": id.origin, "name": id.name, "version": id.version, "release": id.release })
}

/// A spec value Habitat's schema allows, else Habitat's default (a hand-edited spec may say
/// anything).
fn known<'a>(value: Option<&'a str>, allowed: &[&'a str]) -> &'a str {
    value.filter(|v| allowed.contains(v)).unwrap_or(allowed[0])
}

/// The service's merged configuration as JSON.
pub fn cfg(info: &ServiceInfo) -> Value {
    serde_json::to_value(&info.detail.cfg).unwrap_or_else(|_| json!({}))
}

/// One item of `/services`. `hooks` are the hooks the service's rendered `hooks/` holds.
pub fn service(info: &ServiceInfo, hooks: &[Hook], ctx: &Context) -> Value {
    let (spec, view, d) = (&info.spec, &info.view, &*info.detail);
    let id = &d.pkg.ident;
    let meta = &d.pkg.meta;
    let svc = |sub: &str| path(&d.svc_dir.join(sub));
    let logs = d.svc_dir.join("logs");
    let mut hook_table = Map::new();
    // Habitat removed its reload hook (6fae18ff3); the schema still allows the key, warren
    // leaves it out.
    for h in Hook::ALL {
        let entry = if hooks.contains(&h) {
            json!({
                "render_pair": path(&d.svc_dir.join("hooks").join(h.file_name())),
                "stdout_log_path": path(&logs.join(format!("{}.stdout.log", h.file_name()))),
                "stderr_log_path": path(&logs.join(format!("{}.stderr.log", h.file_name()))),
            })
        } else {
            Value::Null
        };
        hook_table.insert(hook_key(h).into(), entry);
    }
    let all_binds: Vec<Value> = meta
        .binds
        .iter()
        .chain(&meta.binds_optional)
        .map(|(name, keys)| json!({ "service": name, "exports": keys }))
        .collect();
    let mut pkg = json!({
        "ident": id.to_string(),
        "origin": id.origin,
        "name": id.name,
        "version": id.version.clone().unwrap_or_default(),
        "release": id.release.clone().unwrap_or_default(),
        "deps": meta.deps.iter().map(ident_parts).collect::<Vec<_>>(),
        "dependencies": meta.deps.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "env": d.env.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<String, Value>>(),
        "exports": meta.exports,
        "exposes": meta.exposes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "path": path(&d.pkg.dir),
        "svc_path": path(&d.svc_dir),
        "svc_config_path": svc("config"),
        "svc_data_path": svc("data"),
        "svc_files_path": svc("files"),
        "svc_var_path": svc("var"),
        // Habitat's folder for a package's static files; warren serves none and makes none.
        "svc_static_path": svc("static"),
        // Habitat's PID file; warren records the running process (pid and start time, JSON).
        "svc_pid_file": path(&d.record),
        "svc_run": path(&d.svc_dir.join("hooks").join(Hook::Run.file_name())),
        // Who it runs as: the package's svc_user under a root supervisor, else the
        // supervisor's own user.
        "svc_user": d.user.clone().unwrap_or_default(),
        "svc_group": d.group.clone().unwrap_or_default(),
        "shutdown_timeout": d.shutdown_timeout.as_secs(),
    });
    if let Some(name) = signal_name(d.pkg.shutdown_signal()) {
        pkg["shutdown_signal"] = json!(name);
    }
    let spec_ident = spec.ident.parse::<PackageIdent>().unwrap_or_else(|_| id.clone());
    let last_process_state = match view.failed {
        Some((hook, at)) => {
            let (reason, pid) = match hook {
                FailedHook::Init => ("init_hook_failed", None),
                FailedHook::Run { pid } => ("run_hook_failed", pid),
            };
            json!({ "pid": pid, "termination_reason": reason, "terminated_at": ctx.clock.secs(at) })
        }
        // Only failures are recorded: a restart warren asked for (a changed config or hook)
        // leaves no previous-process record yet.
        None => Value::Null,
    };
    let data = &ctx.data_path;
    json!({
        "all_pkg_binds": all_binds,
        "binding_mode": match spec.binding_mode { BindingMode::Strict => "strict", BindingMode::Relaxed => "relaxed" },
        "binds": spec.binds,
        "bldr_url": spec.bldr_url.as_deref().unwrap_or(DEFAULT_BLDR_URL),
        "cfg": cfg(info),
        "channel": spec.channel.as_deref().unwrap_or(DEFAULT_CHANNEL),
        "config_from": spec.config_from,
        "desired_state": match view.desired { Desired::Up => "Up", Desired::Down => "Down" },
        "health_check": health_name(view.health),
        "health_check_interval": { "secs": spec.health_check_interval.secs, "nanos": spec.health_check_interval.nanos },
        "hooks": hook_table,
        "initialized": view.up,
        // Census-driven: warren's services hold no elections yet, and Habitat says "None" for a
        // group without one.
        "last_election_status": "None",
        "manager_fs_cfg": {
            "data_path": path(data),
            "member_id_file": path(&data.join(crate::ring::persist::MEMBER_ID_FILE)),
            "proc_lock_file": path(&data.join(crate::ring::persist::LOCK_FILE)),
            "specs_path": path(&data.join("specs")),
            "sup_root": path(data),
        },
        "pkg": pkg,
        "process": {
            "pid": view.pid,
            "state": if view.up { "up" } else { "down" },
            "state_entered": ctx.clock.secs(view.since),
        },
        "last_process_state": last_process_state,
        "next_restart_at": view.next_restart.map(|t| ctx.clock.secs(t)),
        "restart_count": view.restarts,
        "restart_config": {
            "min_backoff_period": duration(ctx.policy.min),
            "max_backoff_period": duration(ctx.policy.max),
            "cooldown_period": duration(ctx.policy.cooldown),
        },
        "service_group": view.group,
        "spec_file": path(&data.join("specs").join(format!("{}.spec", spec.name()))),
        "spec_ident": ident_parts(&spec_ident),
        "spec_identifier": spec.ident,
        "svc_encrypted_password": spec.svc_encrypted_password,
        "sys": ctx.sys,
        "topology": spec.topology.as_str(),
        "update_strategy": known(spec.update_strategy.as_deref(), &["none", "at-once", "rolling"]),
        "update_condition": known(spec.update_condition.as_deref(), &["latest", "track-channel"]),
        // warren re-renders as soon as user.toml changes, so no user change is ever pending.
        "user_config_updated": false,
    })
}

/// `…/health`: Habitat's status code (200 for OK and WARNING, 503 for CRITICAL, 500 for
/// UNKNOWN) and body `{status, stdout, stderr}`; None before the first check (Habitat: 404).
pub fn health(info: &ServiceInfo) -> Option<(u16, Value)> {
    let health = info.view.health?;
    let code = match health {
        Health::Ok | Health::Warning => 200,
        Health::Critical => 503,
        Health::Unknown => 500,
    };
    let out = info.view.health_output.as_deref().cloned().unwrap_or_default();
    Some((code, json!({ "status": health.label(), "stdout": out.stdout, "stderr": out.stderr })))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::services::hooks::HookOutput;
    use crate::services::manager::{Pkg, ServiceDetail};
    use crate::services::package::PackageMeta;
    use crate::services::spec::ServiceSpec;
    use crate::services::supervisor::ServiceView;

    const IDENT: &str = "acme/web/1.2.0/20261202000000";

    fn info(clock: &Clock) -> ServiceInfo {
        let ident: PackageIdent = IDENT.parse().unwrap();
        let meta = PackageMeta {
            exposes: vec![8080],
            exports: BTreeMap::from([("port".into(), "http.port".into())]),
            binds: BTreeMap::from([("db".into(), vec!["port".into(), "host".into()])]),
            binds_optional: BTreeMap::from([("cache".into(), vec!["port".into()])]),
            shutdown_signal: Some("INT".into()),
            deps: vec!["core/glibc/2.27/20180608041157".parse().unwrap(), "core/sh".parse().unwrap()],
            ..PackageMeta::default()
        };
        let spec = ServiceSpec {
            binds: vec!["db:postgres.default".into()],
            update_strategy: Some("bogus".into()),
            ..ServiceSpec::new(IDENT.into(), "prod".into(), Duration::from_secs(5))
        };
        let view = ServiceView {
            name: "web".into(),
            group: "web.prod".into(),
            ident: IDENT.into(),
            desired: Desired::Up,
            up: true,
            phase: "up",
            pid: Some(4242),
            since: clock.now - Duration::from_secs(60),
            settled: true,
            failures: 1,
            restarts: 1,
            last_failure: Some("the run hook ended (exit code 1)".into()),
            health: Some(Health::Warning),
            health_output: Some(Arc::new(HookOutput { stdout: "slow\n".into(), stderr: "".into() })),
            next_restart: None,
            failed: Some((FailedHook::Run { pid: Some(4100) }, clock.now - Duration::from_secs(61))),
        };
        let cfg: toml::Table = toml::from_str("message = \"hi\"\n[http]\nport = 8080\n").unwrap();
        let detail = ServiceDetail {
            pkg: Pkg { ident, dir: "/data/pkgs/acme/web/1.2.0/20261202000000".into(), meta },
            svc_dir: "/data/svc/web".into(),
            user: Some("nobody".into()),
            group: Some("nogroup".into()),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            shutdown_timeout: Duration::from_secs(8),
            record: "/data/proc/web.json".into(),
            cfg,
        };
        ServiceInfo { spec, view, detail: Arc::new(detail), role: None }
    }

    fn context(clock: Clock) -> Context {
        Context {
            data_path: "/data".into(),
            sys: json!({ "member_id": "abc" }),
            policy: BackoffPolicy::default(),
            clock,
        }
    }

    #[test]
    fn a_service_in_habitats_shape_from_its_spec_view_and_package() {
        let clock = Clock { now: Instant::now(), unix: Duration::from_secs(1_800_000_000) };
        let s = service(&info(&clock), &[Hook::Run, Hook::HealthCheck], &context(clock));
        assert_eq!(s["service_group"], "web.prod");
        assert_eq!(s["spec_identifier"], IDENT);
        assert_eq!(
            s["spec_ident"],
            json!({"origin": "acme", "name": "web", "version": "1.2.0", "release": "20261202000000"})
        );
        assert_eq!(s["pkg"]["ident"], IDENT);
        assert_eq!((&s["pkg"]["version"], &s["pkg"]["release"]), (&json!("1.2.0"), &json!("20261202000000")));
        assert_eq!(
            s["pkg"]["deps"][1],
            json!({"origin": "core", "name": "sh", "version": null, "release": null})
        );
        assert_eq!(s["pkg"]["dependencies"][0], "core/glibc/2.27/20180608041157");
        assert_eq!(s["pkg"]["exposes"], json!(["8080"]));
        assert_eq!(s["pkg"]["exports"], json!({"port": "http.port"}));
        assert_eq!(s["pkg"]["shutdown_signal"], "INT");
        assert_eq!(s["pkg"]["svc_user"], "nobody");
        assert_eq!(s["pkg"]["env"], json!({"PATH": "/usr/bin:/bin"}));
        assert_eq!(
            s["all_pkg_binds"],
            json!([{"service": "db", "exports": ["port", "host"]}, {"service": "cache", "exports": ["port"]}])
        );
        assert_eq!(s["binds"], json!(["db:postgres.default"]));
        assert_eq!(s["process"], json!({"pid": 4242, "state": "up", "state_entered": 1_800_000_000 - 60}));
        assert_eq!(
            s["last_process_state"],
            json!({"pid": 4100, "termination_reason": "run_hook_failed", "terminated_at": 1_800_000_000 - 61})
        );
        assert_eq!((&s["restart_count"], &s["next_restart_at"]), (&json!(1), &Value::Null));
        assert_eq!(s["health_check"], "Warning");
        assert_eq!(s["health_check_interval"], json!({"secs": 5, "nanos": 0}));
        assert_eq!(s["desired_state"], "Up");
        assert_eq!(s["cfg"], json!({"message": "hi", "http": {"port": 8080}}));
        assert_eq!(s["hooks"]["run"]["render_pair"], "/data/svc/web/hooks/run");
        assert_eq!(
            s["hooks"]["health_check"]["stdout_log_path"],
            "/data/svc/web/logs/health-check.stdout.log"
        );
        assert_eq!((&s["hooks"]["init"], &s["hooks"]["post_stop"]), (&Value::Null, &Value::Null));
        assert_eq!(s["update_strategy"], "none", "an unknown spec value shows Habitat's default");
        assert_eq!((&s["bldr_url"], &s["channel"]), (&json!(DEFAULT_BLDR_URL), &json!("stable")));
        assert_eq!(s["spec_file"], "/data/specs/web.spec");
        assert_eq!(s["manager_fs_cfg"]["member_id_file"], "/data/MEMBER_ID");
        assert_eq!(s["restart_config"]["cooldown_period"], json!({"secs": 300, "nanos": 0}));
        assert_eq!(s["sys"]["member_id"], "abc");
    }

    #[test]
    fn a_stopped_service_in_backoff_and_an_init_failure() {
        let clock = Clock { now: Instant::now(), unix: Duration::from_secs(1_000) };
        let mut i = info(&clock);
        i.view.up = false;
        i.view.pid = None;
        i.view.health = None;
        i.view.next_restart = Some(clock.now + Duration::from_secs(7));
        i.view.failed = Some((FailedHook::Init, clock.now));
        let s = service(&i, &[], &context(clock));
        assert_eq!(s["process"], json!({"pid": null, "state": "down", "state_entered": 940}));
        assert_eq!(s["next_restart_at"], 1_007);
        assert_eq!(s["last_process_state"]["termination_reason"], "init_hook_failed");
        assert_eq!(s["last_process_state"]["pid"], Value::Null);
        assert_eq!(s["health_check"], "Unknown", "Habitat's value before a first check");
        assert_eq!(s["initialized"], false);
        assert!(s["hooks"].as_object().unwrap().values().all(Value::is_null));
        assert!(health(&i).is_none(), "no check yet: Habitat answers 404");
    }

    #[test]
    fn health_maps_to_habitats_codes_with_the_last_output() {
        let clock = Clock::read();
        let mut i = info(&clock);
        for (h, code, label) in [
            (Health::Ok, 200, "OK"),
            (Health::Warning, 200, "WARNING"),
            (Health::Critical, 503, "CRITICAL"),
            (Health::Unknown, 500, "UNKNOWN"),
        ] {
            i.view.health = Some(h);
            let (c, body) = health(&i).unwrap();
            assert_eq!(c, code);
            assert_eq!(body, json!({"status": label, "stdout": "slow\n", "stderr": ""}));
        }
        i.view.health_output = None;
        assert_eq!(health(&i).unwrap().1["stdout"], "", "a check without a hook has no output");
    }

    #[test]
    fn clock_turns_instants_into_epoch_seconds_both_ways() {
        let c = Clock { now: Instant::now(), unix: Duration::from_secs(10) };
        assert_eq!(c.secs(c.now), 10);
        assert_eq!(c.secs(c.now + Duration::from_secs(5)), 15);
        assert_eq!(c.secs(c.now - Duration::from_secs(20)), 0, "never before the epoch");
    }
}
