//! Real `warren sup run` processes, polled through their HTTP gateways with deadlines.
//!
//! Ports: a supervisor is started on port 0 and the kernel picks free ones while it binds, so
//! no port is ever probed, released and then raced for by another test or process. The bound
//! addresses are read back from `{data}/listen.json`, which `sup run` writes with its pid once
//! it listens. A restart (`spawn` again) reuses the addresses it had, as a real member would.
//!
//! A supervisor may run in a network namespace (`netns::Net::start_sup`): it is started through
//! `ip netns exec` (which execs in place, so the child's pid is warren's), and its gateways are
//! queried and its CLI runs from inside that namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use warren::http::client;

use super::cli::{self, Run};
use super::netns;
use super::wait::{wait_for, wait_until};

/// How long a start may take on a loaded machine before the test fails.
const START_LIMIT: Duration = Duration::from_secs(30);

/// One supervisor process.
pub struct Sup {
    pub child: Option<Child>,
    /// The host part of the gossip address (e.g. 127.0.0.12).
    pub ip: String,
    /// Before the first start, what to listen on; after it, the addresses actually bound.
    pub gossip: String,
    pub http: String,
    /// The ctl gateway (`--listen-ctl`), on the same host as the gossip address.
    pub ctl: String,
    pub data: PathBuf,
    pub log: PathBuf,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub token: Option<String>,
    /// The network namespace it runs in (None: the test's own); its gateways are reached from
    /// inside it, so a cut namespace stays observable.
    pub netns: Option<String>,
}

impl Sup {
    /// Starts `warren sup run` on 127.0.0.`host` (gossip and gateway on free ports) with extra
    /// args and environment; data in `dir/data-{host}`, log in `dir/sup-{host}.log`.
    pub fn start(dir: &Path, host: u8, extra: Vec<String>, envs: Vec<(String, String)>) -> Sup {
        let ip = format!("127.0.0.{host}");
        Sup::start_on(dir, &host.to_string(), &format!("{ip}:0"), &format!("{ip}:0"), extra, envs)
    }

    /// Starts `warren sup run --listen-gossip GOSSIP --listen-http HTTP`; `name` names its data
    /// folder and log under `dir`.
    pub fn start_on(
        dir: &Path,
        name: &str,
        gossip: &str,
        http: &str,
        extra: Vec<String>,
        envs: Vec<(String, String)>,
    ) -> Sup {
        Sup::start_in(None, dir, name, gossip, http, extra, envs)
    }

    /// `start_on` inside network namespace `netns` (see `netns::Net::start_sup`).
    pub fn start_in(
        netns: Option<&str>,
        dir: &Path,
        name: &str,
        gossip: &str,
        http: &str,
        extra: Vec<String>,
        envs: Vec<(String, String)>,
    ) -> Sup {
        let mut s = Sup {
            child: None,
            ip: gossip.rsplit_once(':').unwrap().0.to_string(),
            gossip: gossip.to_string(),
            http: http.to_string(),
            // A fixed gossip port means fixed ports throughout (`sup restart` rebinds them).
            ctl: match gossip.rsplit_once(':').unwrap() {
                (host, "0") => format!("{host}:0"),
                (host, _) => format!("{host}:9632"),
            },
            data: dir.join(format!("data-{name}")),
            log: dir.join(format!("sup-{name}.log")),
            args: extra,
            token: envs.iter().find(|(k, _)| k == "WARREN_GATEWAY_AUTH_TOKEN").map(|(_, v)| v.clone()),
            envs,
            netns: netns.map(str::to_string),
        };
        s.spawn();
        s
    }

    /// Starts (or restarts) the process and waits until its gateway answers.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = self.command();
        cmd.args(["sup", "run", "--listen-gossip", &self.gossip, "--listen-http", &self.http])
            .args(["--listen-ctl", &self.ctl])
            .arg("--data-path")
            .arg(&self.data)
            .args(&self.args)
            // A cache of its own unless the test says otherwise (flag or env): the machine's
            // default cache must not decide plugin trust or ring keys here.
            .env("WARREN_CACHE_KEY_PATH", self.data.join("keys"))
            // WARREN_TEST_LOG: a finer filter for a run under investigation.
            .env("WARREN_LOG", std::env::var("WARREN_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn warren");
        let pid = child.id();
        self.child = Some(child);
        let (gossip, http, ctl) = wait_for(START_LIMIT, || {
            assert!(!self.exited(), "warren sup run exited at start:\n{}", self.log_tail());
            listening(&self.data, pid)
        })
        .unwrap_or_else(|| panic!("no {} from pid {pid}:\n{}", LISTEN_FILE, self.log_tail()));
        (self.gossip, self.http, self.ctl) = (gossip, http, ctl);
        wait_until(START_LIMIT, &format!("gateway {} up", self.http), || {
            self.get("/").is_some_and(|r| r.status == 200)
        });
    }

    pub fn member_id(&self) -> String {
        std::fs::read_to_string(self.data.join("MEMBER_ID")).unwrap().trim().to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit; true if it exited with success.
    pub fn term(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return false };
        let _ = std::process::Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        match wait_for(Duration::from_secs(15), || c.try_wait().ok().flatten()) {
            Some(status) => status.success(),
            None => {
                let _ = c.kill();
                let _ = c.wait();
                false
            }
        }
    }

    /// True once the process has exited by itself.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// `warren` as this supervisor's neighbour: in its namespace, if it has one.
    pub fn command(&self) -> std::process::Command {
        match &self.netns {
            Some(ns) => cli::command_via(&[netns::ip_path(), "netns", "exec", ns]),
            None => cli::command(),
        }
    }

    /// One request to its HTTP gateway with its token, from inside its namespace.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        timeout: Duration,
    ) -> Result<client::Response, client::ClientError> {
        let send = || client::request(&self.http, method, path, self.token.as_deref(), body, timeout);
        match &self.netns {
            Some(ns) => netns::in_netns(ns, send),
            None => send(),
        }
    }

    /// GET with this supervisor's token (None if the gateway does not answer).
    pub fn get(&self, path: &str) -> Option<client::Response> {
        self.request("GET", path, None, Duration::from_secs(2)).ok()
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> client::Response {
        let text = body.to_string();
        self.request("POST", path, Some(("application/json", text.as_bytes())), Duration::from_secs(5))
            .unwrap()
    }

    pub fn butterfly(&self) -> Option<serde_json::Value> {
        self.get("/butterfly").filter(|r| r.status == 200).and_then(|r| r.json().ok())
    }

    /// member id → health, as this supervisor sees it.
    pub fn health(&self) -> BTreeMap<String, String> {
        self.butterfly()
            .and_then(|b| b["member"]["health"].as_object().cloned())
            .map(|m| m.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or("").to_string())).collect())
            .unwrap_or_default()
    }

    pub fn incarnation_of(&self, id: &str) -> Option<u64> {
        self.butterfly().and_then(|b| b["member"]["members"][id]["incarnation"].as_u64())
    }

    /// A metric's value (exact series name with labels; 0 if absent).
    pub fn metric(&self, series: &str) -> u64 {
        self.get("/metrics")
            .map(|r| r.text())
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs the warren CLI against this supervisor: commands of the ctl gateway (`ctl`,
    /// `sup depart`, `ring key install|use|remove|list`, `pkg install`) with `--remote-sup` and the
    /// supervisor's own `CTL_SECRET` (found as the client's local file), the others with
    /// `--remote-http` and its token, if any.
    pub fn cli(&self, a: &[&str]) -> Run {
        let mut cmd = self.command();
        if is_ctl_command(a) {
            self.ctl_env(&mut cmd);
            cmd.args(a).arg("--remote-sup").arg(&self.ctl);
        } else {
            cmd.args(a).arg("--remote-http").arg(&self.http);
        }
        if let Some(t) = &self.token {
            cmd.env("WARREN_GATEWAY_AUTH_TOKEN", t);
        }
        cli::run(&mut cmd, None)
    }

    /// A ctl client's environment: this supervisor's data path (so its CTL_SECRET is the
    /// client's local one) and no cli.toml of the machine's.
    pub fn ctl_env(&self, cmd: &mut std::process::Command) {
        cmd.env("WARREN_DATA_PATH", &self.data).env("WARREN_CLI_CONFIG", self.data.join("no-cli.toml"));
    }

    /// Spreads a rumor (JSON) from this supervisor over its ctl gateway; Some(news) on success.
    pub fn inject(&self, rumor: &serde_json::Value) -> Result<bool, String> {
        let run = self.cli(&["ring", "rumor", "inject", &rumor.to_string(), "--json-output"]);
        if run.code != 0 {
            return Err(run.stderr.clone());
        }
        let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).map_err(|e| e.to_string())?;
        v["news"].as_bool().ok_or_else(|| run.stdout.clone())
    }

    /// This supervisor's ctl secret (created at its first start).
    pub fn ctl_secret(&self) -> String {
        std::fs::read_to_string(self.data.join("CTL_SECRET")).unwrap()
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        self.kill9();
        // Services outlive a killed supervisor (by design): end the ones it recorded, so a
        // test leaves no process behind.
        let Ok(records) = std::fs::read_dir(self.data.join("proc")) else { return };
        for r in records.flatten().filter(|r| r.path().extension().is_some_and(|e| e == "json")) {
            let pid = std::fs::read(r.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["pid"].as_i64());
            if let Some(pid) = pid.filter(|p| *p > 1) {
                // SAFETY: kill(2) on a process group this test's supervisor started.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
        }
    }
}

/// Written by `warren sup run` under its data path once it listens.
pub const LISTEN_FILE: &str = "listen.json";

/// Whether the CLI command `a` goes through the ctl gateway.
pub fn is_ctl_command(a: &[&str]) -> bool {
    // `sup status` reads the ctl gateway unless it is given the HTTP gateway's token.
    if let ["sup", "status", rest @ ..] = a {
        return !rest.contains(&"--auth-token");
    }
    matches!(
        a,
        ["ctl", ..]
            | ["sup", "depart" | "restart", ..]
            | ["ring", "key", "install" | "use" | "remove" | "list", ..]
            | ["ring", "rumor", ..]
            | ["svc", "load" | "unload" | "start" | "stop" | "status", ..]
            | ["pkg", "install", ..]
            | ["config", "apply", ..]
            | ["file", "upload", ..]
    )
}

/// The (gossip, http, ctl) addresses in `{data}/listen.json` if process `pid` wrote it.
pub fn listening(data: &Path, pid: u32) -> Option<(String, String, String)> {
    let text = std::fs::read_to_string(data.join(LISTEN_FILE)).ok()?;
    let j: serde_json::Value = serde_json::from_str(&text).ok()?;
    if j["pid"].as_u64() != Some(u64::from(pid)) {
        return None; // an earlier run's file: this process has not bound yet
    }
    Some((j["gossip"].as_str()?.to_string(), j["http"].as_str()?.to_string(), j["ctl"].as_str()?.to_string()))
}
