//! `warren svc load|unload|start|stop|status` (Habitat's requests over the ctl gateway), and
//! `warren svc key generate`: encryption (BOX) key pairs for service groups.

use anyhow::bail;
use clap::{Args, Subcommand};

use super::ctl::RemoteSup;
use super::keys::{CacheArgs, generate_box_pair};
use crate::ctl::CtlRequest;
use crate::ctl::proto;
use crate::sup::ctl_svc::ident_to_proto;

#[derive(Subcommand, Debug)]
pub enum SvcCommand {
    /// Load a service from an installed package and start it; waits until it is up (or says
    /// why not), unlike Habitat. The spec persists: a restarted supervisor brings it back.
    Load(LoadArgs),
    /// Stop a service and forget it (its spec is removed); waits until it is down.
    Unload(StopArgs),
    /// Start a loaded service that was stopped; waits until it is up.
    Start(IdentArgs),
    /// Stop a loaded service (shutdown signal, then SIGKILL after its timeout); waits.
    Stop(StopArgs),
    /// Show loaded services: package, type, desired, state, elapsed (s), pid, group.
    Status(StatusArgs),
    /// Manage service group encryption keys.
    #[command(subcommand)]
    Key(SvcKeyCommand),
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// ORIGIN/NAME[/VERSION[/RELEASE]] of an installed package (the newest match is used), or
    /// a .hart file, installed first (as `warren pkg install`).
    #[arg(value_name = "IDENT|FILE.hart")]
    pub ident: String,
    /// The service group.
    #[arg(long, default_value = "default")]
    pub group: String,
    /// standalone (the default: no coordination), leader (a leader-follower group: the
    /// `leader-follower` topology-policy plugin and the native election), or the name() of any
    /// loaded topology-policy plugin. A policy that is not loaded fails the load.
    #[arg(long, default_value = "standalone", value_name = "NAME")]
    pub topology: String,
    /// NAME:SERVICE.GROUP[@ORG] (repeatable): the group's members in templates as
    /// `bind.NAME.members` / `bind.NAME.first`; a change renders again.
    #[arg(long = "bind", value_name = "NAME:SERVICE.GROUP[@ORG]")]
    pub binds: Vec<String>,
    /// strict: wait until every bind has an alive member before starting; relaxed: start anyway.
    #[arg(long, default_value = "strict", value_parser = ["strict", "relaxed"])]
    pub binding_mode: String,
    /// Seconds between health checks.
    #[arg(long, default_value_t = 30)]
    pub health_check_interval: u64,
    /// Seconds between the shutdown signal and SIGKILL [default: the package's, else 8].
    #[arg(long)]
    pub shutdown_timeout: Option<u32>,
    /// A loaded lifecycle-hook plugin that serves the service's init, health-check,
    /// reconfigure, suitability, file-updated and post-stop hooks instead of the package's
    /// scripts (run and post-run stay scripts).
    #[arg(long, value_name = "NAME")]
    pub hooks_plugin: Option<String>,
    /// Replace the service if it is already loaded.
    #[arg(long)]
    pub force: bool,
    /// Reply once the spec is written, without waiting for the service to be up.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub remote: RemoteSup,
}

#[derive(Args, Debug)]
pub struct IdentArgs {
    /// ORIGIN/NAME[/VERSION[/RELEASE]] of a loaded service.
    pub ident: String,
    /// Do not wait for the state to be reached.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub remote: RemoteSup,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    #[command(flatten)]
    pub target: IdentArgs,
    /// Seconds between the shutdown signal and SIGKILL for this stop [default: the spec's,
    /// else the package's, else 8].
    #[arg(long, visible_alias = "timeout", value_name = "SECONDS")]
    pub shutdown_timeout: Option<u32>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this service (ORIGIN/NAME[/VERSION[/RELEASE]]).
    pub ident: Option<String>,
    /// One JSON object per service (with warren's phase, failures and last failure).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteSup,
}

fn ident(text: &str) -> anyhow::Result<proto::PackageIdent> {
    let parsed: crate::services::package::PackageIdent = text.parse()?;
    Ok(ident_to_proto(&parsed.to_string()))
}

fn bind(text: &str) -> anyhow::Result<proto::ServiceBind> {
    let (name, group) = crate::services::binds::parse(text).map_err(|e| anyhow::anyhow!("--{e}"))?;
    Ok(proto::ServiceBind { name, service_group: crate::sup::ctl_cfg::group_to_proto(&group) })
}

fn load(a: LoadArgs) -> anyhow::Result<()> {
    let hart = std::path::Path::new(&a.ident);
    let target = if a.ident.ends_with(".hart") && hart.is_file() {
        super::pkg::install_hart(hart, &a.remote)?
    } else {
        a.ident.clone()
    };
    let req = proto::SvcLoad {
        ident: Some(ident(&target)?),
        binds: Some(proto::ServiceBindList {
            binds: a.binds.iter().map(|b| bind(b)).collect::<Result<_, _>>()?,
        }),
        binding_mode: Some(if a.binding_mode == "relaxed" {
            proto::BindingMode::Relaxed
        } else {
            proto::BindingMode::Strict
        } as i32),
        force: Some(a.force),
        group: Some(a.group),
        topology: Some(if a.topology == "leader" {
            proto::Topology::Leader
        } else {
            proto::Topology::Standalone
        } as i32),
        topology_policy: (a.topology != "leader" && a.topology != "standalone").then(|| a.topology.clone()),
        health_check_interval: Some(proto::HealthCheckInterval { seconds: a.health_check_interval }),
        shutdown_timeout: a.shutdown_timeout,
        hooks_plugin: a.hooks_plugin,
        no_wait: Some(a.no_wait),
        ..Default::default()
    };
    a.remote.call(&CtlRequest::SvcLoad(req), false)?;
    Ok(())
}

fn status(a: StatusArgs) -> anyhow::Result<()> {
    let req = CtlRequest::SvcStatus(proto::SvcStatus { ident: a.ident.as_deref().map(ident).transpose()? });
    let client = a.remote.client()?;
    let mut rows: Vec<proto::ServiceStatus> = Vec::new();
    let last = client.call(&req, |f| {
        if let Ok(s) = f.decode::<proto::ServiceStatus>() {
            rows.push(s);
        }
    })?;
    if let Ok(s) = last.decode::<proto::ServiceStatus>() {
        rows.push(s);
    }
    if a.json {
        for r in &rows {
            outln!("{}", status_json(r))?;
        }
        return Ok(());
    }
    if rows.is_empty() {
        outln!("No services loaded.")?;
        return Ok(());
    }
    // Habitat's columns; with a topology policy loaded, warren's role and election too.
    let roles = rows.iter().any(|r| r.role.is_some());
    let mut header = vec!["package", "type", "desired", "state", "elapsed (s)", "pid", "group"];
    if roles {
        header.extend(["role", "election"]);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = row(r);
            if roles {
                cells.extend(role_cells(r));
            }
            cells
        })
        .collect();
    super::status::table(&header, table)?;
    for r in rows.iter().filter(|r| r.failures.unwrap_or(0) > 0) {
        eprintln!(
            "{}.{}: {} failure(s) in a row; last: {}",
            r.service_group.service,
            r.service_group.group,
            r.failures.unwrap_or(0),
            r.last_failure.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

fn ident_text(i: &proto::PackageIdent) -> String {
    let mut t = format!("{}/{}", i.origin, i.name);
    for p in [&i.version, &i.release].into_iter().flatten() {
        t.push('/');
        t.push_str(p);
    }
    t
}

fn desired_text(d: Option<i32>) -> &'static str {
    match d.map(proto::DesiredState::try_from) {
        Some(Ok(proto::DesiredState::DesiredUp)) => "up",
        Some(Ok(proto::DesiredState::DesiredDown)) => "down",
        _ => "<none>",
    }
}

/// Habitat's row: package, type (always "standalone"), desired, state, elapsed, pid, group.
pub fn row(s: &proto::ServiceStatus) -> Vec<String> {
    let group = format!("{}.{}", s.service_group.service, s.service_group.group);
    let (state, elapsed, pid) = match &s.process {
        Some(p) => (
            if p.state == proto::ProcessState::Up as i32 { "up" } else { "down" },
            p.elapsed.map_or("<none>".into(), |e| e.to_string()),
            p.pid.map_or("<none>".into(), |p| p.to_string()),
        ),
        None => ("down", "<none>".into(), "<none>".into()),
    };
    vec![
        ident_text(&s.ident),
        "standalone".into(),
        desired_text(s.desired_state).into(),
        state.into(),
        elapsed,
        pid,
        group,
    ]
}

/// Role and election for a policy service: `leader`, `finished, term 3, leader 4741333…`
/// (`-` for a standalone one in the same table).
fn role_cells(s: &proto::ServiceStatus) -> [String; 2] {
    let Some(role) = &s.role else { return ["-".into(), "-".into()] };
    let election = match (&s.election_status, s.election_term) {
        (Some(st), Some(t)) => {
            let leader = s
                .leader_id
                .as_deref()
                .map(|l| format!(", leader {}…", l.chars().take(8).collect::<String>()));
            format!("{st}, term {t}{}", leader.unwrap_or_default())
        }
        _ => "-".into(),
    };
    [role.clone(), election]
}

pub fn status_json(s: &proto::ServiceStatus) -> serde_json::Value {
    let p = s.process.as_ref();
    serde_json::json!({
        "package": ident_text(&s.ident),
        "service_group": format!("{}.{}", s.service_group.service, s.service_group.group),
        "desired": desired_text(s.desired_state),
        "state": if p.is_some_and(|p| p.state == proto::ProcessState::Up as i32) { "up" } else { "down" },
        "elapsed": p.and_then(|p| p.elapsed),
        "pid": p.and_then(|p| p.pid),
        "phase": s.phase,
        "failures": s.failures,
        "restarts": s.restarts,
        "last_failure": s.last_failure,
        "health": s.health,
        "topology": s.topology,
        "role": s.role,
        "election_status": s.election_status,
        "election_term": s.election_term,
        "leader_id": s.leader_id,
    })
}

#[derive(Subcommand, Debug)]
pub enum SvcKeyCommand {
    /// Generate a service group encryption key pair named SERVICE.GROUP@ORG.
    Generate {
        /// Service group, e.g. `redis.default`.
        #[arg(value_name = "SERVICE.GROUP")]
        service_group: String,
        /// Organization, e.g. `acme`.
        org: String,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

impl SvcCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            SvcCommand::Load(a) => load(a),
            SvcCommand::Unload(StopArgs { target: a, shutdown_timeout }) => {
                let req = proto::SvcUnload {
                    ident: Some(ident(&a.ident)?),
                    timeout_in_seconds: shutdown_timeout,
                    no_wait: Some(a.no_wait),
                };
                a.remote.call(&CtlRequest::SvcUnload(req), false).map(drop)
            }
            SvcCommand::Start(a) => {
                let req = proto::SvcStart { ident: Some(ident(&a.ident)?), no_wait: Some(a.no_wait) };
                a.remote.call(&CtlRequest::SvcStart(req), false).map(drop)
            }
            SvcCommand::Stop(StopArgs { target: a, shutdown_timeout }) => {
                let req = proto::SvcStop {
                    ident: Some(ident(&a.ident)?),
                    timeout_in_seconds: shutdown_timeout,
                    no_wait: Some(a.no_wait),
                };
                a.remote.call(&CtlRequest::SvcStop(req), false).map(drop)
            }
            SvcCommand::Status(a) => status(a),
            SvcCommand::Key(SvcKeyCommand::Generate { service_group, org, cache }) => {
                if service_group.matches('.').count() != 1 || service_group.contains('@') {
                    bail!(
                        "invalid service group {service_group:?}: expected SERVICE.GROUP, e.g. redis.default"
                    );
                }
                if org.contains('@') || org.contains('.') {
                    bail!("invalid org {org:?}: use letters, digits, '_' and '-'");
                }
                generate_box_pair("service key pair", &format!("{service_group}@{org}"), &cache)
            }
        }
    }
}
