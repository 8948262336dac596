//! Real-process ring tests: convergence, encryption, failure detection, restart, gateway auth.

mod ring_support;

use std::time::Duration;

use ring_support::*;

fn key_env(key: &warren::crypto::RingKey) -> (String, String) {
    ("WARREN_RING_KEY".to_string(), key.to_file().to_text().to_string())
}

#[test]
fn five_converge_and_outsiders_without_the_key_never_join() {
    let dir = tempfile::tempdir().unwrap();
    let key = ring_key("ring", "20240101000000");
    let sups = start_ring(dir.path(), 10, 5, &fast_timings(), &[key_env(&key)]);
    let ids: Vec<String> = sups.iter().map(Sup::member_id).collect();
    let refs: Vec<&Sup> = sups.iter().collect();
    wait_until(Duration::from_secs(30), "5 members alive everywhere", || all_see_alive(&refs, &ids));
    for s in &sups {
        assert_eq!(s.health().len(), 5, "{} sees exactly 5 members", s.http);
    }

    // A 6th with another key of the same name, and a 7th with no key at all.
    let seed = sups[0].gossip.clone();
    let port = |a: &str| a.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
    let mut wrong_args = fast_timings();
    wrong_args.extend(args(&["--peer", &seed]));
    let wrong = ring_key("ring", "20240101000001");
    let intruder = Sup::start(
        dir.path(),
        16,
        port(&sups[0].gossip),
        port(&sups[0].http),
        wrong_args.clone(),
        vec![key_env(&wrong)],
    );
    let plain = Sup::start(dir.path(), 17, port(&sups[0].gossip), port(&sups[0].http), wrong_args, vec![]);
    let outsiders = [intruder.member_id(), plain.member_id()];

    wait_until(Duration::from_secs(20), "the seed counts rejected packets of both kinds", || {
        sups[0].metric("warren_ring_packets_rejected_total{reason=\"unknown_key\"}") >= 3
            && sups[0].metric("warren_ring_packets_rejected_total{reason=\"unencrypted\"}") >= 3
    });
    // Give them several more announce rounds, then check nobody ever listed them.
    let before = sups[0].metric("warren_ring_packets_rejected_total{reason=\"unknown_key\"}");
    wait_until(Duration::from_secs(20), "more announces rejected", || {
        sups[0].metric("warren_ring_packets_rejected_total{reason=\"unknown_key\"}") >= before + 3
    });
    for s in &sups {
        let h = s.health();
        for o in &outsiders {
            assert!(!h.contains_key(o), "{} lists outsider {o}", s.http);
        }
        assert_eq!(h.len(), 5);
    }
    assert_eq!(intruder.health().len(), 1, "the intruder only knows itself");
    assert_eq!(plain.health().len(), 1, "the keyless member only knows itself");
    assert!(plain.metric("warren_ring_packets_sent_total") > 0, "the keyless member did try");
    assert_eq!(plain.metric("warren_ring_packets_received_total"), 0);
}

#[test]
fn kill9_is_confirmed_by_all_and_restart_comes_back_with_higher_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let key = ring_key("ring", "20240101000000");
    let mut sups = start_ring(dir.path(), 20, 5, &fast_timings(), &[key_env(&key)]);
    let ids: Vec<String> = sups.iter().map(Sup::member_id).collect();
    {
        let refs: Vec<&Sup> = sups.iter().collect();
        wait_until(Duration::from_secs(30), "5 alive", || all_see_alive(&refs, &ids));
    }
    let victim = ids[3].clone();
    let before = sups[0].incarnation_of(&victim).unwrap();
    sups[3].kill9();

    // Bound from the configured timings (see RingConfig::detection_bound), plus slack for a
    // loaded machine. Timing itself is never asserted, only the outcome.
    let cfg = warren::ring::RingConfig {
        probe_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(100),
        gossip_interval: Duration::from_millis(50),
        pushpull_interval: Duration::from_secs(1),
        ..Default::default()
    };
    let bound = cfg.detection_bound(5) + Duration::from_secs(10);
    wait_until(bound, "every live member confirms the killed one", || {
        sups.iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .all(|(_, s)| s.health().get(&victim).map(String::as_str) == Some("Confirmed"))
    });
    for (i, s) in sups.iter().enumerate() {
        if i != 3 {
            let h = s.health();
            let condemned: Vec<_> = h.iter().filter(|(id, v)| **id != victim && *v == "Confirmed").collect();
            assert!(condemned.is_empty(), "{} wrongly confirmed {condemned:?}", s.http);
            assert_eq!(h.len(), 5);
        }
    }

    sups[3].spawn();
    assert_eq!(sups[3].member_id(), victim, "the member id is persisted");
    wait_until(Duration::from_secs(30), "the restarted member is alive everywhere again", || {
        sups.iter().all(|s| s.health().get(&victim).map(String::as_str) == Some("Alive"))
    });
    for s in &sups {
        let now = s.incarnation_of(&victim).unwrap();
        assert!(now > before, "{} sees incarnation {now} > {before}", s.http);
    }
}

#[test]
fn gateway_token_guards_everything_but_liveness() {
    let dir = tempfile::tempdir().unwrap();
    let token = ("WARREN_GATEWAY_AUTH_TOKEN".to_string(), "s3cret-token".to_string());
    let sups = start_ring(dir.path(), 30, 1, &fast_timings(), &[token]);
    let http = &sups[0].http;
    let get = |path: &str, tok: Option<&str>| {
        warren::http::client::request(http, "GET", path, tok, None, Duration::from_secs(2)).unwrap().status
    };
    assert_eq!(get("/", None), 200);
    for path in ["/butterfly", "/census", "/metrics", "/ring/keys"] {
        assert_eq!(get(path, None), 401, "{path} without a token");
        assert_eq!(get(path, Some("wrong")), 401, "{path} with a wrong token");
        assert_eq!(get(path, Some("s3cret-token")), 200, "{path} with the token");
    }
    let census = sups[0].get("/census").unwrap().json().unwrap();
    assert_eq!(census["local_member_id"], sups[0].member_id());
    for k in ["census_groups", "changed", "last_membership_counter", "last_service_counter"] {
        assert!(census.get(k).is_some(), "/census has {k}");
    }
    let b = sups[0].butterfly().unwrap();
    for k in
        ["departure", "election", "election_update", "member", "service", "service_config", "service_file"]
    {
        assert!(b.get(k).is_some(), "/butterfly has {k}");
    }
    let me = &b["member"]["members"][sups[0].member_id()];
    for k in ["address", "departed", "gossip_port", "id", "incarnation", "persistent", "swim_port"] {
        assert!(me.get(k).is_some(), "member has {k}");
    }
}

#[test]
fn sigterm_stops_cleanly_and_depart_removes_a_member_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let mut sups = start_ring(dir.path(), 40, 3, &fast_timings(), &[]);
    let ids: Vec<String> = sups.iter().map(Sup::member_id).collect();
    {
        let refs: Vec<&Sup> = sups.iter().collect();
        wait_until(Duration::from_secs(30), "3 alive", || all_see_alive(&refs, &ids));
    }
    // A clean stop announces no departure: the others only see it fail.
    assert!(sups[1].term(), "SIGTERM exits with success");
    wait_until(Duration::from_secs(30), "stopped member is confirmed, not departed", || {
        sups[0].health().get(&ids[1]).map(String::as_str) == Some("Confirmed")
    });
    sups[1].spawn();
    wait_until(Duration::from_secs(30), "it rejoins", || {
        sups[0].health().get(&ids[1]).map(String::as_str) == Some("Alive")
    });

    let out = sups[0].cli(&["sup", "depart", &ids[2]]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until(Duration::from_secs(30), "departed member exits and is shown departed", || {
        sups[2].exited()
            && [0, 1].iter().all(|i| sups[*i].health().get(&ids[2]).map(String::as_str) == Some("Departed"))
    });
    // It saved its own departure and refuses to start again with the same data path.
    let mut again = std::process::Command::new(BIN)
        .args(["sup", "run", "--listen-gossip", &sups[2].gossip, "--listen-http", &sups[2].http])
        .arg("--data-path")
        .arg(&sups[2].data)
        .env_remove("WARREN_RING_KEY")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let refused = poll_for(Duration::from_secs(10), || matches!(again.try_wait(), Ok(Some(_))));
    if refused.is_none() {
        let _ = again.kill();
    }
    let out = again.wait_with_output().unwrap();
    assert!(refused.is_some() && !out.status.success(), "a departed member must not start again");
    assert!(String::from_utf8_lossy(&out.stderr).contains("departed"));
    assert_eq!(sups[0].health().get(&ids[2]).map(String::as_str), Some("Departed"));
}

/// Listening on every address, a member advertises what `--advertise` says, so members on
/// other hosts can reach it (without it, a lone seed could only offer loopback).
#[test]
fn advertise_sets_the_address_others_see() {
    let dir = tempfile::tempdir().unwrap();
    let (gossip, http) = (free_port(), free_port());
    let mut child = std::process::Command::new(BIN)
        .args(["sup", "run", "--listen-gossip", &format!("0.0.0.0:{gossip}")])
        .args(["--listen-http", &format!("127.0.0.1:{http}")])
        .args(["--advertise", &format!("127.0.0.45:{gossip}")])
        .arg("--data-path")
        .arg(dir.path().join("data"))
        .env("WARREN_CACHE_KEY_PATH", dir.path().join("keys"))
        .env_remove("WARREN_RING_KEY")
        .env_remove("WARREN_GATEWAY_AUTH_TOKEN")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let gateway = format!("127.0.0.1:{http}");
    let mut seen = None;
    let found = poll_for(Duration::from_secs(20), || {
        let json =
            warren::http::client::request(&gateway, "GET", "/butterfly", None, None, Duration::from_secs(1))
                .ok()
                .and_then(|r| r.json().ok());
        seen = json.and_then(|j: serde_json::Value| {
            j["member"]["members"].as_object().and_then(|m| m.values().next().cloned())
        });
        seen.is_some()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(found.is_some(), "no member in /butterfly");
    let me = seen.unwrap();
    assert_eq!(me["address"], "127.0.0.45", "{me}");
    assert_eq!(me["gossip_port"], gossip, "{me}");
}
