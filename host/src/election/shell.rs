//! The elections' shell: one task owns [`LocalElections`]. It feeds it every census snapshot
//! and a tick per gossip round, persists the votes before the rumors that carry them leave,
//! hands the rumors to the ring, logs each transition with its reason, and publishes the views
//! (services, `/census`, `/metrics` and `svc status` read them).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::local::{LocalElections, Step};
use super::metrics::ElectionMetrics;
use super::types::{ElectionConfig, ElectionView, Vote};
use crate::groups::census::Census;
use crate::ring::{RingHandle, Rumor};

/// Where the votes are kept, under the data path.
pub const VOTES_FILE: &str = "elections.json";
/// How long a supervisor that knows of other members waits for a peer's state before it
/// elects with what it has (its restored store may be long out of date).
const JOIN_WAIT: Duration = Duration::from_secs(10);
/// Largest votes file read back.
const MAX_VOTES_FILE: u64 = 1 << 20;

/// This member's election views, by group.
pub type Views = BTreeMap<String, ElectionView>;

pub struct ElectionsOptions {
    pub me: String,
    pub data_path: PathBuf,
    /// One tick per gossip round.
    pub tick: Duration,
    pub config: ElectionConfig,
    /// Started with `--peer`: wait for a peer's state (or [`JOIN_WAIT`]) before electing.
    pub has_peers: bool,
}

/// The handle: which groups to elect in, and what each election looks like now.
#[derive(Clone)]
pub struct Elections {
    wants: Arc<watch::Sender<BTreeMap<String, u64>>>,
    views: watch::Receiver<Arc<Views>>,
    metrics: Arc<ElectionMetrics>,
}

impl Elections {
    /// Views only, for a supervisor that elects nothing (tests, tools).
    pub fn none() -> Elections {
        let (wants, _) = watch::channel(BTreeMap::new());
        let (_, views) = watch::channel(Arc::new(Views::new()));
        Elections { wants: Arc::new(wants), views, metrics: Arc::default() }
    }

    pub fn spawn(
        ring: RingHandle,
        census: watch::Receiver<Arc<Census>>,
        opts: ElectionsOptions,
    ) -> Elections {
        let (wants_tx, wants_rx) = watch::channel(BTreeMap::new());
        let (views_tx, views_rx) = watch::channel(Arc::new(Views::new()));
        let metrics = Arc::new(ElectionMetrics::default());
        let shell = Shell {
            votes_path: opts.data_path.join(VOTES_FILE),
            local: LocalElections::new(&opts.me, opts.config, load_votes(&opts.data_path.join(VOTES_FILE))),
            opts,
            ring,
            census,
            wants: wants_rx,
            views: views_tx,
            metrics: metrics.clone(),
            logged_warnings: BTreeMap::new(),
        };
        tokio::spawn(shell.run());
        Elections { wants: Arc::new(wants_tx), views: views_rx, metrics }
    }

    /// Elect in `group` with this suitability (None: stop, the service left the group).
    pub fn set(&self, group: &str, suitability: Option<u64>) {
        self.wants.send_if_modified(|w| match suitability {
            Some(s) => w.insert(group.to_string(), s) != Some(s),
            None => w.remove(group).is_some(),
        });
    }

    /// A new suitability for a group this member elects in (ignored for any other).
    pub fn update_suitability(&self, group: &str, suitability: u64) {
        self.wants.send_if_modified(|w| match w.get_mut(group) {
            Some(s) if *s != suitability => {
                *s = suitability;
                true
            }
            _ => false,
        });
    }

    pub fn views(&self) -> watch::Receiver<Arc<Views>> {
        self.views.clone()
    }

    pub fn metrics(&self) -> Arc<ElectionMetrics> {
        self.metrics.clone()
    }
}

struct Shell {
    opts: ElectionsOptions,
    votes_path: PathBuf,
    local: LocalElections,
    ring: RingHandle,
    census: watch::Receiver<Arc<Census>>,
    wants: watch::Receiver<BTreeMap<String, u64>>,
    views: watch::Sender<Arc<Views>>,
    metrics: Arc<ElectionMetrics>,
    logged_warnings: BTreeMap<String, String>,
}

impl Shell {
    async fn run(mut self) {
        let started = tokio::time::Instant::now();
        // A member that knows of others (started with peers, or restarted with a restored
        // member list) elects only once a peer's state reached it, or JOIN_WAIT passed.
        {
            let census = self.census.borrow();
            if (self.opts.has_peers || census.knows_others()) && !census.synced() {
                self.local.hold();
            }
        }
        let mut warned = false;
        let mut tick = tokio::time::interval(self.opts.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                r = self.census.changed() => {
                    if r.is_err() { return; }
                    let census = self.census.borrow_and_update().clone();
                    if self.local.is_held() && census.synced() {
                        self.local.release(&census)
                    } else {
                        self.local.census(&census)
                    }
                }
                r = self.wants.changed() => {
                    if r.is_err() { return; }
                    self.sync_wants()
                }
                _ = tick.tick() => {
                    if self.local.is_held() && started.elapsed() >= JOIN_WAIT {
                        let census = self.census.borrow().clone();
                        self.join_wait_over(&census, &mut warned)
                    } else {
                        self.local.tick()
                    }
                }
            };
            self.handle(step).await;
        }
    }

    /// Still held after [`JOIN_WAIT`]. Alone, this member may elect with what it has: members
    /// it restored but the ring does not know count as dead, so it cannot name itself leader.
    /// With others alive it waits on for their state, which push-pull brings every few
    /// seconds; electing from a stale store is what splits a group.
    fn join_wait_over(&mut self, census: &Census, warned: &mut bool) -> Step {
        let alive = census.others_alive();
        if alive == 0 {
            tracing::info!(
                "election: no peer answered within {JOIN_WAIT:?}; electing with what this member has"
            );
            return self.local.release(census);
        }
        if !std::mem::replace(warned, true) {
            tracing::warn!(
                "election: {alive} member(s) alive but none of their state reached this member within {JOIN_WAIT:?} \
                 (is TCP to their gossip ports blocked? push-pull uses it); not electing until it does"
            );
        }
        Step::default()
    }

    fn sync_wants(&mut self) -> Step {
        let wants = self.wants.borrow_and_update().clone();
        let census = self.census.borrow().clone();
        let mut step = Step::default();
        let running: Vec<String> = self.local.views().into_keys().collect();
        for g in running.iter().filter(|g| !wants.contains_key(*g)) {
            step.merge(self.local.unwant(g));
        }
        for (g, s) in &wants {
            step.merge(self.local.want(g, *s, &census));
        }
        step
    }

    async fn handle(&mut self, step: Step) {
        for (group, why) in &step.rejected {
            self.metrics.rejected();
            tracing::debug!(group = %group, error = %why, "election rumor refused");
        }
        if step.votes_changed {
            // Before the rumors leave: a restarted member must never vote twice in a term.
            let votes = self.local.votes();
            if let Err(e) = save_votes(&self.votes_path, &votes) {
                tracing::error!(error = %e, "cannot persist this member's election votes; holding its rumors back");
                return;
            }
        }
        for r in step.rumors {
            self.metrics.published();
            if self.ring.inject(Rumor::Election(r)).await.is_err() {
                return;
            }
        }
        if step.changed.is_empty() {
            return;
        }
        for (group, view) in &step.changed {
            match view {
                Some(v) => {
                    self.metrics.transition();
                    tracing::info!(
                        group = %group,
                        status = status_label(v),
                        term = v.term,
                        leader = v.leader_id.as_deref().unwrap_or("none"),
                        alive = v.alive,
                        population = v.population,
                        "election: {}", v.reason
                    );
                    let warning = v.warning.map(|w| w.to_string()).unwrap_or_default();
                    if self.logged_warnings.get(group) != Some(&warning) {
                        if !warning.is_empty() {
                            tracing::warn!(group = %group, "election: {warning}");
                        }
                        self.logged_warnings.insert(group.clone(), warning);
                    }
                }
                None => {
                    self.logged_warnings.remove(group);
                    tracing::info!(group = %group, "election: this member left the group");
                }
            }
        }
        let views = Arc::new(self.local.views());
        self.metrics.set_views(&views);
        self.views.send_replace(views);
    }
}

/// Habitat's census names, lower-case for logs: none, in-progress, no-quorum, finished.
pub fn status_label(v: &ElectionView) -> &'static str {
    use super::types::ElectionStatus::*;
    match v.status {
        None => "none",
        ElectionInProgress => "in-progress",
        ElectionNoQuorum => "no-quorum",
        ElectionFinished => "finished",
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct VoteRecord {
    term: u64,
    candidate: String,
}

fn load_votes(path: &std::path::Path) -> BTreeMap<String, Vote> {
    let read = || -> Result<BTreeMap<String, Vote>, String> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(e.to_string()),
        };
        if meta.len() > MAX_VOTES_FILE {
            return Err("file is too large".into());
        }
        let text = std::fs::read(path).map_err(|e| e.to_string())?;
        let records: BTreeMap<String, VoteRecord> =
            serde_json::from_slice(&text).map_err(|e| e.to_string())?;
        Ok(records.into_iter().map(|(g, r)| (g, Vote { term: r.term, candidate: r.candidate })).collect())
    };
    read().unwrap_or_else(|e| {
        // Without its record a member still never votes twice: it sits out the terms it
        // sees while settling (see the election module).
        tracing::warn!(path = %path.display(), error = %e, "election votes unreadable; starting without them");
        BTreeMap::new()
    })
}

fn save_votes(path: &std::path::Path, votes: &BTreeMap<String, Vote>) -> Result<(), String> {
    let records: BTreeMap<&String, VoteRecord> =
        votes.iter().map(|(g, v)| (g, VoteRecord { term: v.term, candidate: v.candidate.clone() })).collect();
    let bytes = serde_json::to_vec_pretty(&records).map_err(|e| e.to_string())?;
    crate::ring::persist::atomic_write(path, &bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_round_trip_and_bad_files_start_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(VOTES_FILE);
        assert!(load_votes(&path).is_empty(), "no file: no votes");
        let mut votes = BTreeMap::new();
        votes.insert("db.default".to_string(), Vote { term: 7, candidate: "abc".into() });
        save_votes(&path, &votes).unwrap();
        assert_eq!(load_votes(&path), votes);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load_votes(&path).is_empty(), "garbage is refused, not a panic");
    }
}
