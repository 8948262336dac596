//! Real partitions: supervisors in network namespaces of their own on a bridge (root only, as
//! CI runs; without root or `ip` these fail, never skip). The ring alone here; the harness is
//! `support::netns`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use support::netns::{self, Net};
use support::ring::*;
use support::sup::Sup;
use support::wait::{wait_for, wait_until};

/// Generous: only decides when a broken build is reported, never what passes.
const CONVERGE: Duration = Duration::from_secs(60);

/// Whether every supervisor in `sups` sees each of `ids` with `health`.
fn all_see(sups: &[&Sup], ids: &[&String], health: &str) -> bool {
    sups.iter().all(|s| {
        let h = s.health();
        ids.iter().all(|id| h.get(*id).map(String::as_str) == Some(health))
    })
}

/// Who sees what, for a failure message.
fn views(sups: &[Sup]) -> Vec<BTreeMap<String, String>> {
    sups.iter().map(Sup::health).collect()
}

#[test]
fn a_three_two_partition_splits_the_ring_and_heals_and_a_cut_member_is_alone() {
    // Declared before the supervisors, so they are dropped (killed) first.
    let net = Net::new(5);
    let dir = tempfile::tempdir().unwrap();
    let cfg = fast();
    let sups = net.start_ring(dir.path(), &timing_args(&cfg), &[]);
    for (i, s) in sups.iter().enumerate() {
        assert!(
            s.gossip.starts_with(&format!("{}:", net.addr(i))),
            "{} gossips on {}",
            s.gossip,
            net.addr(i)
        );
        assert!(
            netns::pids(&net.ns(i)).contains(&s.pid().to_string()),
            "supervisor {i} runs in its namespace"
        );
    }
    let ids = member_ids(&sups);
    let every: Vec<&Sup> = sups.iter().collect();
    wait_until(CONVERGE, "5 alive everywhere", || all_see_alive(&every, &ids));

    // 3/2: the minority still reaches itself, only the bridge between the sides is gone.
    net.partition(&[3, 4]);
    let (major, minor) = (&every[..3], &every[3..]);
    let (major_ids, minor_ids): (Vec<&String>, Vec<&String>) =
        (ids[..3].iter().collect(), ids[3..].iter().collect());
    let verdict = cfg.detection_bound(5) + CONVERGE;
    wait_until(verdict, "each side confirms the other and keeps its own alive", || {
        all_see(major, &minor_ids, "Confirmed")
            && all_see(minor, &major_ids, "Confirmed")
            && all_see(major, &major_ids, "Alive")
            && all_see(minor, &minor_ids, "Alive")
    });
    for s in &sups {
        assert_eq!(s.health().len(), 5, "{} still lists all 5: {:?}", s.http, views(&sups));
    }
    // The CLI runs inside the namespace too: the minority's ctl gateway answers while cut off.
    let status: serde_json::Value =
        serde_json::from_str(sups[4].cli(&["sup", "status", "--json"]).ok()).unwrap();
    assert_eq!(status["member_id"], ids[4]);

    net.rejoin();
    wait_until(CONVERGE, "5 alive everywhere after the heal", || all_see_alive(&every, &ids));

    // One member cut off alone: it confirms everyone, everyone confirms it; then back.
    net.cut(4);
    let others: Vec<&String> = ids[..4].iter().collect();
    wait_until(verdict, "the cut member and the rest confirm each other", || {
        all_see(&every[..4], &[&ids[4]], "Confirmed") && all_see(&every[4..], &others, "Confirmed")
    });
    net.heal(4);
    // Once seen to take a whole minute in a fresh-clone CI run (never alone): say who saw whom.
    let healed = wait_for(CONVERGE, || all_see_alive(&every, &ids).then_some(()));
    assert!(
        healed.is_some(),
        "5 alive everywhere after healing the cut: not within {CONVERGE:?}\nviews: {:#?}\ncut member's log:\n{}",
        views(&sups),
        sups[4].log_tail()
    );
}

#[test]
fn cut_drops_traffic_both_ways_and_partition_keeps_each_side_connected() {
    let net = Net::new(3);
    // `cut`, `heal`, `partition` and `rejoin` already wait for the whole matrix; these are the
    // few pairs a reader expects, checked once more.
    assert!(net.reachable(0, 1) && net.reachable(1, 0));
    net.cut(1);
    assert!(!net.reachable(0, 1), "0 reaches the cut 1");
    assert!(!net.reachable(1, 0), "the cut 1 reaches 0");
    assert!(!net.reachable(1, 2), "the cut 1 reaches 2");
    assert!(net.reachable(0, 2) && net.reachable(2, 0), "0 and 2 are not cut");
    net.heal(1);
    assert!(net.reachable(0, 1) && net.reachable(1, 0));

    net.partition(&[1, 2]);
    assert!(net.reachable(1, 2) && net.reachable(2, 1), "a side reaches itself");
    assert!(!net.reachable(0, 1) && !net.reachable(2, 0), "the sides reach each other");
    net.rejoin();
    assert!(net.reachable(0, 2) && net.reachable(2, 0));
}

/// A process that is killed when the test ends, however it ends.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn drop_removes_everything_and_a_dead_runs_leftovers_are_swept() {
    let names = {
        let net = Net::new(2);
        let names = net.names();
        let present = netns::existing();
        for n in &names {
            assert!(present.contains(n), "{n} was made");
        }
        names
    };
    let present = netns::existing();
    for n in &names {
        assert!(!present.contains(n), "{n} is still there after drop");
    }

    // A run killed with -9: its pid is gone, its namespaces and bridges stay, something still
    // runs inside (its supervisors would).
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    assert!(!Path::new(&format!("/proc/{}", gone.id())).exists());
    let left = netns::Net::abandon(gone.id(), 2);
    let ns = &left[0];
    let mut stray =
        Reap(Command::new(netns::ip_path()).args(["netns", "exec", ns, "sleep", "600"]).spawn().unwrap());
    let stray_pid = stray.0.id().to_string();
    wait_until(CONVERGE, "the stray runs in the leftover namespace", || netns::pids(ns).contains(&stray_pid));

    let _next = Net::new(1);
    let present = netns::existing();
    for n in &left {
        assert!(!present.contains(n), "leftover {n} was not swept");
    }
    wait_until(CONVERGE, "the sweep killed the stray", || stray.0.try_wait().unwrap().is_some());
}
