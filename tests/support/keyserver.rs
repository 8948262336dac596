//! A real `warren keyserver run` process on 127.0.0.1 (port chosen by the kernel, read back
//! from `{data}/listen.json`), and `warren admit ...` runs against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::cli::{self, Run};
use super::wait::wait_for;

pub struct Keyserver {
    pub child: Option<Child>,
    pub data: PathBuf,
    pub log: PathBuf,
    pub ring: String,
    /// The bound admin address, once started.
    pub addr: String,
    /// The bound join port (`admit join --keyserver`).
    pub join: String,
}

impl Keyserver {
    pub fn start(dir: &Path, ring: &str) -> Keyserver {
        let mut ks = Keyserver {
            child: None,
            data: dir.join("keyserver"),
            log: dir.join("keyserver.log"),
            ring: ring.to_string(),
            addr: String::new(),
            join: String::new(),
        };
        ks.spawn();
        ks
    }

    /// Starts (or restarts) the process and waits for it to listen.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = cli::command();
        cmd.args(["keyserver", "run", "--listen", "127.0.0.1:0", "--listen-join", "127.0.0.1:0"])
            .args(["--ring", &self.ring, "--data-path"])
            .arg(&self.data)
            .env("WARREN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().expect("spawning the keyserver");
        let pid = child.id();
        self.child = Some(child);
        let listen = self.data.join("listen.json");
        let addr = wait_for(Duration::from_secs(30), || {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&listen).ok()?).ok()?;
            let addrs = (v["listen"].as_str()?.to_string(), v["join"].as_str()?.to_string());
            (v["pid"].as_u64() == Some(u64::from(pid))).then_some(addrs)
        });
        (self.addr, self.join) =
            addr.unwrap_or_else(|| panic!("the keyserver did not start: {}", self.log_text()));
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn admin_secret(&self) -> String {
        std::fs::read_to_string(self.data.join("ADMIN_SECRET")).unwrap()
    }

    /// `warren admit ARGS --keyserver ADDR` with the admin secret in the environment.
    pub fn admit(&self, args: &[&str]) -> Run {
        self.admit_env(args, &[("WARREN_KEYSERVER_SECRET", &self.admin_secret())])
    }

    /// `warren admit ARGS --keyserver ADDR` with only the given environment.
    pub fn admit_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = cli::command();
        cmd.arg("admit").args(args).args(["--keyserver", &self.addr]).env("WARREN_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cli::run(&mut cmd, None)
    }
}

/// `warren admit join --node NODE --keyserver JOIN_ADDR` with the join string in WARREN_JOIN
/// (a secret: never on the command line) and the node's own key cache and data path under
/// `node_dir`.
pub fn join(join_addr: &str, join: &str, node: &str, node_dir: &Path) -> Run {
    let mut cmd = join_cmd(join_addr, node, node_dir);
    cmd.env("WARREN_JOIN", join);
    cli::run(&mut cmd, None)
}

/// `warren admit join --node NODE --keyserver JOIN_ADDR` for the node under `node_dir`, without
/// a join string yet (add a FILE or `-` argument, or WARREN_JOIN).
pub fn join_cmd(join_addr: &str, node: &str, node_dir: &Path) -> std::process::Command {
    let mut cmd = cli::command();
    cmd.args(["admit", "join", "--node", node, "--keyserver", join_addr])
        .arg("--cache-key-path")
        .arg(node_dir.join("keys"))
        .arg("--data-path")
        .arg(node_dir.join("data"))
        .env("WARREN_LOG", "warn");
    cmd
}

impl Drop for Keyserver {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `warren admit renew|fetch ARGS` for the node under `node_dir` (as [`join`] made it).
pub fn node_cmd(node_dir: &Path, args: &[&str]) -> Run {
    let mut cmd = cli::command();
    cmd.arg("admit")
        .args(args)
        .arg("--cache-key-path")
        .arg(node_dir.join("keys"))
        .arg("--data-path")
        .arg(node_dir.join("data"))
        .env("WARREN_LOG", "warn");
    cli::run(&mut cmd, None)
}
