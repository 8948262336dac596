//! Helpers for the ring tests: real `warren sup run` processes on 127.0.0.x, polled through
//! their HTTP gateways with deadlines (never fixed sleeps for correctness).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warren::crypto::{KeyCache, KeyId, RingKey};
use warren::http::client;

pub const BIN: &str = env!("CARGO_BIN_EXE_warren");

/// Fast timings so tests finish quickly; `relaxed` for tests that must not see false suspicion.
pub fn fast_timings() -> Vec<String> {
    args(&[
        "--probe-interval",
        "200ms",
        "--ping-timeout",
        "100ms",
        "--suspicion-mult",
        "3",
        "--gossip-interval",
        "50ms",
        "--pushpull-interval",
        "1s",
    ])
}

pub fn relaxed_timings() -> Vec<String> {
    args(&[
        "--probe-interval",
        "500ms",
        "--ping-timeout",
        "300ms",
        "--suspicion-mult",
        "4",
        "--gossip-interval",
        "100ms",
        "--pushpull-interval",
        "1s",
    ])
}

pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// A port free on loopback for both UDP and TCP right now (the kernel hands out distinct
/// ephemeral ports, so parallel tests do not collide).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A ring key with a chosen revision (two keys made in the same second would collide).
pub fn ring_key(name: &str, rev: &str) -> RingKey {
    let mut k = RingKey::generate(name).unwrap();
    k.id = KeyId::new(name, rev).unwrap();
    k
}

pub fn write_key(cache: &Path, key: &RingKey) {
    KeyCache::new(cache).write(&key.to_file()).unwrap();
}

/// One supervisor process.
pub struct Sup {
    pub child: Option<Child>,
    pub ip: String,
    pub gossip: String,
    pub http: String,
    pub data: PathBuf,
    pub log: PathBuf,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub token: Option<String>,
}

impl Sup {
    /// Starts `warren sup run` on 127.0.0.`host` with extra args.
    pub fn start(
        dir: &Path,
        host: u8,
        gossip_port: u16,
        http_port: u16,
        extra: Vec<String>,
        envs: Vec<(String, String)>,
    ) -> Sup {
        let ip = format!("127.0.0.{host}");
        let mut s = Sup {
            child: None,
            gossip: format!("{ip}:{gossip_port}"),
            http: format!("{ip}:{http_port}"),
            data: dir.join(format!("data-{host}")),
            log: dir.join(format!("sup-{host}.log")),
            ip,
            args: extra,
            token: envs.iter().find(|(k, _)| k == "WARREN_GATEWAY_AUTH_TOKEN").map(|(_, v)| v.clone()),
            envs,
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["sup", "run", "--listen-gossip", &self.gossip, "--listen-http", &self.http])
            .arg("--data-path")
            .arg(&self.data)
            .args(&self.args)
            .env_remove("WARREN_RING_KEY")
            .env_remove("WARREN_GATEWAY_AUTH_TOKEN")
            .env_remove("WARREN_CONFIG")
            .env_remove("WARREN_PLUGIN_PATH")
            .env_remove("WARREN_DATA_PATH")
            // A cache of its own unless the test says otherwise (flag or env): the machine's
            // default cache must not decide plugin trust or ring keys here.
            .env("WARREN_CACHE_KEY_PATH", self.data.join("keys"))
            .env("WARREN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn warren"));
        let http = self.http.clone();
        let token = self.token.clone();
        wait_until(Duration::from_secs(20), &format!("gateway {http} up"), || {
            client::request(&http, "GET", "/", token.as_deref(), None, Duration::from_secs(1))
                .is_ok_and(|r| r.status == 200)
        });
    }

    pub fn member_id(&self) -> String {
        std::fs::read_to_string(self.data.join("MEMBER_ID")).unwrap().trim().to_string()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status success.
    pub fn term(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return false };
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True once the process has exited by itself.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    pub fn get(&self, path: &str) -> Option<client::Response> {
        client::request(&self.http, "GET", path, self.token.as_deref(), None, Duration::from_secs(2)).ok()
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> client::Response {
        let text = body.to_string();
        client::request(
            &self.http,
            "POST",
            path,
            self.token.as_deref(),
            Some(("application/json", text.as_bytes())),
            Duration::from_secs(5),
        )
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

    /// A metric's value (exact series name with labels).
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

    /// Runs the warren CLI against this supervisor's gateway.
    pub fn cli(&self, a: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(BIN);
        cmd.args(a).arg("--remote-http").arg(&self.http).env_remove("WARREN_GATEWAY_AUTH_TOKEN");
        if let Some(t) = &self.token {
            cmd.env("WARREN_GATEWAY_AUTH_TOKEN", t);
        }
        cmd.output().unwrap()
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it holds or `limit` passes (then panics with `what`).
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Like `wait_until` but returns how long it took, or None.
pub fn poll_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Starts `n` supervisors on 127.0.0.(first..), all peering with the first.
pub fn start_ring(dir: &Path, first: u8, n: u8, extra: &[String], envs: &[(String, String)]) -> Vec<Sup> {
    let gossip = free_port();
    let http = free_port();
    let seed = format!("127.0.0.{first}:{gossip}");
    (0..n)
        .map(|i| {
            let mut a = extra.to_vec();
            a.extend(args(&["--peer", &seed]));
            Sup::start(dir, first + i, gossip, http, a, envs.to_vec())
        })
        .collect()
}

/// Every supervisor sees exactly `ids` alive.
pub fn all_see_alive(sups: &[&Sup], ids: &[String]) -> bool {
    sups.iter().all(|s| {
        let h = s.health();
        ids.iter().all(|id| h.get(id).map(String::as_str) == Some("Alive"))
    })
}
