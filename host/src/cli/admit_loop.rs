//! The admitted supervisor's keyserver loop: a thin tokio task over
//! [`crate::admission::schedule`] and the blocking requests of [`super::admit_node`]. It renews
//! the CGC at about 2/3 of its life and re-fetches keys every interval; while the keyserver is
//! unreachable (or refuses) it logs once, keeps the keys it has and retries with backoff.

use crate::clock::unix_now;
use std::path::PathBuf;
use std::time::Duration;

use super::admit_node::{self, NodeIdentity};
use super::join_source::JOIN_ENV;
use crate::admission::request::Op;
use crate::admission::schedule;
use crate::crypto::KeyCache;

pub const DEFAULT_FETCH_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct LoopConfig {
    pub data_path: PathBuf,
    pub cache: KeyCache,
    /// This supervisor's gossip address, reported for the other nodes' peer lists.
    pub gossip: Option<String>,
    pub fetch_every: Duration,
}

/// A jitter in [-1, 1] for this run of the supervisor.
fn jitter() -> f64 {
    let b = crate::crypto::sodium::random_array::<2>();
    f64::from(u16::from_be_bytes(b)) / f64::from(u16::MAX) * 2.0 - 1.0
}

/// The gossip address to report: the configured one, else (port 0, or listening on every
/// address) what this supervisor wrote to its listen.json. A listen.json of another pid is a
/// dead supervisor's (kill -9 leaves it behind) and names a port that is no longer ours.
fn gossip(cfg: &LoopConfig) -> Option<String> {
    if let Some(g) = cfg.gossip.as_ref().filter(|g| !g.ends_with(":0")) {
        return Some(g.clone());
    }
    let text = std::fs::read(cfg.data_path.join(crate::sup::LISTEN_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    if v["pid"].as_u64() != Some(u64::from(std::process::id())) {
        return None;
    }
    v["gossip"].as_str().filter(|g| !g.ends_with(":0")).map(str::to_string)
}

/// What one [`step`] did.
pub struct Stepped {
    pub renewed: bool,
    /// Whether it told the keyserver this supervisor's gossip address (unknown until the
    /// ring has bound its port).
    pub reported_gossip: bool,
}

/// One step: renew when due, else fetch keys.
pub fn step(cfg: &LoopConfig, jitter: f64) -> anyhow::Result<Stepped> {
    let id = NodeIdentity::load(&cfg.data_path, &cfg.cache)?;
    let op = if unix_now() >= schedule::renew_at(&id.cgc, jitter) { Op::Renew } else { Op::Keys };
    let have = admit_node::ring_have(&cfg.cache, &id.cgc.cluster);
    let gossip = gossip(cfg);
    let reported_gossip = gossip.is_some();
    let resp = id.request(op, gossip, have)?;
    let a = admit_node::apply(&resp, &cfg.data_path, &cfg.cache, &id)?;
    if let Some(serial) = &a.renewed {
        tracing::info!(%serial, "CGC renewed");
    }
    if !a.ring_added.is_empty() || !a.ring_removed.is_empty() {
        tracing::info!(added = ?a.ring_added, removed = ?a.ring_removed, "ring keys changed at the keyserver");
    }
    Ok(Stepped { renewed: op == Op::Renew, reported_gossip })
}

pub async fn run(cfg: LoopConfig) {
    let jitter = jitter();
    let mut failures = 0u32;
    loop {
        let c = cfg.clone();
        let r = tokio::task::spawn_blocking(move || step(&c, jitter)).await;
        let wait = match r {
            Ok(Ok(done)) => {
                if failures > 0 {
                    tracing::info!("the keyserver answers again");
                }
                failures = 0;
                // A renewal is followed at once by a key fetch with the new CGC; until the
                // gossip address has been reported (the ring binds after the first fetch)
                // retry soon.
                if done.renewed {
                    Duration::from_millis(100)
                } else if !done.reported_gossip {
                    cfg.fetch_every.min(Duration::from_secs(1))
                } else {
                    cfg.fetch_every
                }
            }
            Ok(Err(e)) => {
                if failures == 0 {
                    tracing::warn!(error = %format!("{e:#}"), "keyserver request failed; running on the keys this node has, retrying with backoff");
                }
                failures = failures.saturating_add(1);
                schedule::backoff(failures, cfg.fetch_every)
            }
            Err(e) => {
                tracing::error!(error = %e, "the keyserver request task failed");
                cfg.fetch_every
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// What `sup run` needs from an admitted node.
pub struct Admitted {
    /// The ring (the keyserver's cluster) to encrypt with, from the key cache.
    pub ring: String,
    /// Peers the keyserver listed.
    pub peers: Vec<String>,
    pub task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

/// `sup run --join FILE|- --keyserver K` (or `WARREN_JOIN`) admits first; a node admitted
/// before needs neither, and its join string is not read again (a one-time secret: the file
/// may be gone, stdin read already by the first start). Then one fetch (best effort: a
/// keyserver that is down does not stop a supervisor that has keys) and the loop for the
/// supervisor's life. `None` when this node is not admitted. The caller holds the data path's
/// lock: two supervisors on one data path never both claim a token or write its keys.
pub fn prepare(
    join: Option<&str>,
    keyserver: Option<&str>,
    node: &str,
    cfg: LoopConfig,
) -> anyhow::Result<Option<Admitted>> {
    use anyhow::Context as _;
    super::join_source::refuse_on_argv("--join", join)?;
    let admitted_before = admit_node::admission_dir(&cfg.data_path).join(admit_node::CGC_FILE).exists();
    if admitted_before {
        if join.is_some() || std::env::var_os(JOIN_ENV).is_some() {
            tracing::info!(
                "this node was admitted before: the join string is not read (neither --join nor {JOIN_ENV} is needed)"
            );
        }
        if let Some(keyserver) = keyserver
            && let Some(mut info) = admit_node::load_info(&cfg.data_path)?
        {
            // A keyserver that moved: remember its new address.
            info.join = super::admit_join::join_addr(keyserver);
            admit_node::save_info(&cfg.data_path, &info)?;
        }
    } else if let Some(text) = super::join_source::read("--join", join)? {
        let keyserver = keyserver.with_context(|| {
            format!("a join string (--join or {JOIN_ENV}) needs --keyserver HOST[:PORT] (its join port)")
        })?;
        let a = super::admit_join::admit(text.trim(), node, keyserver, &cfg.cache, &cfg.data_path)?;
        tracing::info!("{}", a.summary);
    }
    if admit_node::load_info(&cfg.data_path)?.is_none() {
        if keyserver.is_some() {
            anyhow::bail!("--keyserver without --join: this node was never admitted (give it a join string)");
        }
        return Ok(None);
    }
    let id = NodeIdentity::load(&cfg.data_path, &cfg.cache)?;
    if let Err(e) = step(&cfg, 0.0) {
        tracing::warn!(error = %format!("{e:#}"), "the keyserver did not answer at start; using the keys this node has");
    }
    Ok(Some(Admitted {
        ring: id.cgc.cluster.clone(),
        peers: admit_node::peers(&cfg.data_path),
        task: Box::pin(run(cfg)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_supervisors_listen_file_is_not_our_gossip_address() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LoopConfig {
            data_path: dir.path().to_path_buf(),
            cache: KeyCache::new(dir.path().join("keys")),
            gossip: Some("0.0.0.0:0".into()),
            fetch_every: DEFAULT_FETCH_INTERVAL,
        };
        let listen = |pid: u32| {
            let text = serde_json::json!({"pid": pid, "gossip": "10.0.0.1:41000"}).to_string();
            std::fs::write(dir.path().join(crate::sup::LISTEN_FILE), text).unwrap();
        };
        assert_eq!(gossip(&cfg), None, "no listen.json yet");
        listen(std::process::id().wrapping_add(1));
        assert_eq!(gossip(&cfg), None, "another pid's file names a port that is not ours");
        listen(std::process::id());
        assert_eq!(gossip(&cfg).as_deref(), Some("10.0.0.1:41000"));
        let fixed = LoopConfig { gossip: Some("10.0.0.2:9638".into()), ..cfg };
        assert_eq!(gossip(&fixed).as_deref(), Some("10.0.0.2:9638"), "a configured address wins");
    }
}
