//! The `svc` requests of the ctl gateway (Habitat's SvcLoad, SvcUnload, SvcStart, SvcStop,
//! SvcStatus), served by the services subsystem. Unlike Habitat (#2680), start, stop, load and
//! unload reply once the state is reached (unless the client sends `no_wait`), and say why
//! when it is not.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::ctl::proto::{self, ErrCode, NetErr};
use crate::ctl::{Reply, ReplySink};
use crate::services::manager::Want;
use crate::services::package::PackageIdent;
use crate::services::spec::{BindingMode, Topology};
use crate::services::state::Desired;
use crate::services::supervisor::ServiceView;
use crate::services::{LoadRequest, Services, SvcError};

/// How long a request waits for its service to reach the state asked for.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// How long a started service must stay up before `svc load|start` call it up.
pub const STARTUP_GRACE: Duration = Duration::from_millis(500);
/// A service failing this many times in a row while we wait is reported at once.
const CRASH_LOOP: u32 = 3;

fn err(code: ErrCode, msg: impl std::fmt::Display) -> NetErr {
    NetErr::new(code, msg.to_string())
}

fn svc_err(e: SvcError) -> NetErr {
    let code = match &e {
        SvcError::NotLoaded(_) => ErrCode::NotFound,
        SvcError::AlreadyLoaded(_) => ErrCode::Conflict,
        SvcError::NotInstalled(_) => ErrCode::NotFound,
        SvcError::Package(_) | SvcError::Invalid(_) | SvcError::Unresolved(_) => ErrCode::InvalidPayload,
        SvcError::Io { .. } => ErrCode::Io,
        SvcError::Stopped => ErrCode::Internal,
        SvcError::WaitingForBinds { .. } | SvcError::WaitingForElection { .. } => ErrCode::Conflict,
    };
    err(code, e)
}

fn ident_of(p: Option<proto::PackageIdent>) -> Result<PackageIdent, NetErr> {
    let p = p.ok_or_else(|| err(ErrCode::UpdateClient, "client out of date: ident is missing"))?;
    let mut text = format!("{}/{}", p.origin, p.name);
    for part in [p.version, p.release].into_iter().flatten().filter(|s| !s.is_empty()) {
        text.push('/');
        text.push_str(&part);
    }
    text.parse().map_err(|e| err(ErrCode::InvalidPayload, e))
}

pub fn ident_to_proto(ident: &str) -> proto::PackageIdent {
    let mut parts = ident.split('/').map(str::to_string);
    proto::PackageIdent {
        origin: parts.next().unwrap_or_default(),
        name: parts.next().unwrap_or_default(),
        version: parts.next(),
        release: parts.next(),
    }
}

/// Waits until the service is where it was asked to go, streaming what happens meanwhile.
/// "Up" means up and still up [`STARTUP_GRACE`] later, so a service that dies at once is
/// reported as failing rather than as started.
async fn settle(
    mut view: watch::Receiver<ServiceView>,
    out: &ReplySink,
    want: Desired,
) -> Result<Reply, NetErr> {
    let deadline = Instant::now() + WAIT_LIMIT;
    let mut reported = 0;
    loop {
        let v = view.borrow_and_update().clone();
        let done = match want {
            Desired::Up if v.phase == "up" => {
                // Up since `since`: done once the grace has passed without a change.
                let left = STARTUP_GRACE.saturating_sub(v.since.elapsed());
                match left.is_zero() {
                    true => true,
                    // Something changed within the grace: look again.
                    false if matches!(tokio::time::timeout(left, view.changed()).await, Ok(Ok(()))) => {
                        continue;
                    }
                    false => true,
                }
            }
            Desired::Up => false,
            Desired::Down => v.phase == "down",
        };
        if done {
            let state = if v.up { format!("up, pid {}", v.pid.unwrap_or(0)) } else { "down".into() };
            let _ = out.line(format!("{}: {state}", v.group)).await;
            return Ok(Reply::ok());
        }
        if v.failures > reported {
            reported = v.failures;
            if let Some(f) = &v.last_failure {
                let _ = out.line(format!("{}: {f}", v.group)).await;
            }
            if want == Desired::Up && v.failures >= CRASH_LOOP {
                return Err(err(
                    ErrCode::Internal,
                    format!(
                        "{} is failing ({} times in a row; last: {}); it keeps restarting with backoff",
                        v.group,
                        v.failures,
                        v.last_failure.as_deref().unwrap_or("?")
                    ),
                ));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, view.changed()).await {
            Ok(Ok(())) if !left.is_zero() => {}
            // The service's task ended (unloaded, replaced, or the supervisor is stopping).
            Ok(Err(_)) => {
                return Err(err(
                    ErrCode::Conflict,
                    format!("{} was unloaded or replaced meanwhile", v.group),
                ));
            }
            _ => {
                return Err(err(
                    ErrCode::Internal,
                    format!("{} did not reach {want:?} within {WAIT_LIMIT:?} (it is {})", v.group, v.phase),
                ));
            }
        }
    }
}

pub async fn load(services: &Services, r: proto::SvcLoad, out: &ReplySink) -> Result<Reply, NetErr> {
    let ident = ident_of(r.ident.clone())?;
    let binds = r
        .binds
        .map(|l| l.binds)
        .unwrap_or_default()
        .into_iter()
        .map(|b| {
            let sg = b.service_group;
            let org = sg.organization.map(|o| format!("@{o}")).unwrap_or_default();
            format!("{}:{}.{}{org}", b.name, sg.service, sg.group)
        })
        .collect();
    let req = LoadRequest {
        ident: ident.clone(),
        group: r.group.clone().unwrap_or_else(|| "default".into()),
        topology: match (r.topology_policy.clone(), r.topology.map(proto::Topology::try_from)) {
            (Some(policy), _) => Topology::from(policy),
            (None, Some(Ok(proto::Topology::Leader))) => Topology::Leader,
            _ => Topology::Standalone,
        },
        binds,
        // Habitat's CLI sends strict unless told otherwise.
        binding_mode: match r.binding_mode.map(proto::BindingMode::try_from) {
            Some(Ok(proto::BindingMode::Relaxed)) => BindingMode::Relaxed,
            _ => BindingMode::Strict,
        },
        shutdown_timeout: r.shutdown_timeout.map(u64::from),
        health_check_interval: r
            .health_check_interval
            .map(|h| Duration::from_secs(h.seconds.max(1)))
            .unwrap_or(crate::services::manager::DEFAULT_HEALTH_CHECK_INTERVAL),
        hooks_plugin: r.hooks_plugin.clone().filter(|p| !p.is_empty()),
        force: r.force.unwrap_or(false),
    };
    let view = match services.load(req).await {
        Ok(v) => v,
        // Loaded: it starts by itself once its binds are satisfied (Habitat's strict mode), or
        // once its group's election gives it a role.
        Err(e @ (SvcError::WaitingForBinds { .. } | SvcError::WaitingForElection { .. })) => {
            let _ = out.line(format!("The {ident} service was loaded; {e}")).await;
            return Ok(Reply::ok());
        }
        Err(e) => return Err(svc_err(e)),
    };
    let ident = view.borrow().ident.clone();
    let _ = out.line(format!("The {ident} service was successfully loaded")).await;
    if r.no_wait.unwrap_or(false) {
        return Ok(Reply::ok());
    }
    settle(view, out, Desired::Up).await
}

fn name_of(ident: Option<proto::PackageIdent>) -> Result<String, NetErr> {
    Ok(ident_of(ident)?.name)
}

pub async fn start(services: &Services, r: proto::SvcStart, out: &ReplySink) -> Result<Reply, NetErr> {
    want(services, r.ident, Want::Up, r.no_wait.unwrap_or(false), out).await
}

pub async fn stop(services: &Services, r: proto::SvcStop, out: &ReplySink) -> Result<Reply, NetErr> {
    let within = r.timeout_in_seconds.map(|s| Duration::from_secs(s.into()));
    want(services, r.ident, Want::Down(within), r.no_wait.unwrap_or(false), out).await
}

/// `svc start` / `svc stop`: the new desired state, then (unless `no_wait`) the wait for it.
async fn want(
    services: &Services,
    ident: Option<proto::PackageIdent>,
    want: Want,
    no_wait: bool,
    out: &ReplySink,
) -> Result<Reply, NetErr> {
    let name = name_of(ident)?;
    let view = services.want(&name, want).await.map_err(svc_err)?;
    let verb = if want == Want::Up { "starting" } else { "stopping" };
    let _ = out.line(format!("Supervisor {verb} {name}")).await;
    if no_wait {
        return Ok(Reply::ok());
    }
    settle(view, out, want.desired()).await
}

pub async fn unload(services: &Services, r: proto::SvcUnload, out: &ReplySink) -> Result<Reply, NetErr> {
    let name = name_of(r.ident)?;
    let within = r.timeout_in_seconds.map(|s| Duration::from_secs(s.into()));
    let done = services.unload(&name, within).await.map_err(svc_err)?;
    let _ = out.line(format!("Unloading {name}")).await;
    if !r.no_wait.unwrap_or(false) {
        match tokio::time::timeout(WAIT_LIMIT, done).await {
            Ok(_) => {
                let _ = out.line(format!("{name}: stopped and unloaded")).await;
            }
            Err(_) => {
                return Err(err(ErrCode::Internal, format!("{name} did not stop within {WAIT_LIMIT:?}")));
            }
        }
    }
    Ok(Reply::ok())
}

/// Habitat's ServiceStatus, with warren's phase and failure counts.
pub fn status_of(info: &crate::services::ServiceInfo) -> proto::ServiceStatus {
    let v = &info.view;
    let election = info.role.as_ref().and_then(|r| r.election.as_ref());
    let (service, group) = v.group.split_once('.').unwrap_or((&v.name, "default"));
    proto::ServiceStatus {
        ident: ident_to_proto(&v.ident),
        process: Some(proto::ProcessStatus {
            elapsed: Some(v.since.elapsed().as_secs()),
            pid: v.pid,
            state: if v.up { proto::ProcessState::Up } else { proto::ProcessState::Down } as i32,
        }),
        service_group: proto::ServiceGroup {
            service: service.into(),
            group: group.into(),
            organization: None,
        },
        desired_state: Some(match v.desired {
            Desired::Up => proto::DesiredState::DesiredUp,
            Desired::Down => proto::DesiredState::DesiredDown,
        } as i32),
        phase: Some(v.phase.to_string()),
        failures: Some(v.failures),
        restarts: Some(v.restarts),
        last_failure: v.last_failure.clone(),
        health: v.health.map(|h| h.label().to_string()),
        topology: info.role.as_ref().map(|_| info.spec.topology.as_str().to_string()),
        role: info.role.as_ref().map(|r| r.role.to_string()),
        election_status: election.map(|e| crate::election::status_label(e).to_string()),
        election_term: election.map(|e| e.term),
        leader_id: election.and_then(|e| e.leader_id.clone()),
    }
}

pub async fn status(services: &Services, r: proto::SvcStatus, out: &ReplySink) -> Result<Reply, NetErr> {
    let mut all = services.status().await.map_err(svc_err)?;
    if let Some(p) = r.ident {
        let want = ident_of(Some(p))?;
        all.retain(|i| {
            let have: PackageIdent = match i.view.ident.parse() {
                Ok(h) => h,
                Err(_) => return false,
            };
            have.origin == want.origin
                && have.name == want.name
                && want.version.as_ref().is_none_or(|v| have.version.as_ref() == Some(v))
                && want.release.as_ref().is_none_or(|r| have.release.as_ref() == Some(r))
        });
        if all.is_empty() {
            return Err(err(ErrCode::NotFound, format!("service {want} is not loaded")));
        }
    }
    let Some(last) = all.pop() else { return Ok(Reply::ok()) };
    for info in &all {
        let _ = out.send(&status_of(info)).await;
    }
    Ok(Reply::new(&status_of(&last)))
}
