//! Rumors between real supervisors: injection, piggyback and push-pull spread, late joiners,
//! persistence across restarts.

mod support;

use std::time::Duration;

use support::keys::{ring_key, ring_key_env};
use support::ring::*;
use support::sup::Sup;
use support::wait::wait_until;

fn service_config(sup: &Sup, group: &str) -> Option<serde_json::Value> {
    sup.butterfly()
        .map(|b| b["service_config"]["list"][group]["service_config"].clone())
        .filter(|v| !v.is_null())
}

#[test]
fn injected_rumors_reach_everyone_including_late_joiners_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let key = ring_key("ring", "20240101000000");
    let env = ring_key_env(&key);
    let mut sups = start_ring(dir.path(), 50, 4, &fast_timings(), std::slice::from_ref(&env));
    let ids = member_ids(&sups);
    {
        let refs: Vec<&Sup> = sups.iter().collect();
        wait_until(Duration::from_secs(30), "4 alive", || all_see_alive(&refs, &ids));
    }

    // A small rumor (piggybacked) and a large one (push-pull only). The client's incarnation
    // is ignored: the ring numbers this member's rumors, so u64::MAX cannot freeze the key.
    let news = sups[1]
        .inject(&serde_json::json!({"type": "service_config", "service_group": "redis.default",
                            "incarnation": u64::MAX, "config": "port = 6379\n"}));
    assert_eq!(news, Ok(true));
    let big = "x".repeat(20_000);
    // No incarnation at all: the ring numbers it.
    let news = sups[2].inject(&serde_json::json!({"type": "service_file", "service_group": "redis.default",
                            "filename": "big.txt", "body": big}));
    assert_eq!(news, Ok(true));
    let has = |s: &Sup, incarnation: u64| {
        let Some(b) = s.butterfly() else { return false };
        b["service_config"]["list"]["redis.default"]["service_config"]["incarnation"] == incarnation
            && b["service_file"]["list"]["redis.default"]["big.txt"]["body"].as_array().map(Vec::len)
                == Some(20_000)
    };
    wait_until(Duration::from_secs(20), "both rumors on all 4", || sups.iter().all(|s| has(s, 1)));
    // A later change from another member is numbered above what the ring holds, and wins.
    let news = sups[3]
        .inject(&serde_json::json!({"type": "service_config", "service_group": "redis.default",
                            "incarnation": 0, "config": "port = 1\n"}));
    assert_eq!(news, Ok(true));
    wait_until(Duration::from_secs(20), "the change on all 4", || sups.iter().all(|s| has(s, 2)));
    let has_both = |s: &Sup| has(s, 2);
    for s in &sups {
        let cfg = service_config(s, "redis.default").unwrap();
        assert_eq!(cfg["from_id"].as_str().unwrap(), sups[3].member_id());
    }
    // Malformed injections are refused with a reason; a member rumor is never a client's.
    let refused = |v: serde_json::Value| sups[0].inject(&v).unwrap_err();
    assert!(refused(serde_json::json!({"type": "nope"})).contains("unknown variant"));
    assert!(refused(serde_json::json!({"type": "departure", "member_id": "zz"})).contains("not hex"));
    // The HTTP gateway is read-only: its old write routes are gone, token or not.
    for (method, path) in [
        ("POST", "/rumors"),
        ("POST", "/departures"),
        ("POST", "/ring/keys"),
        ("POST", "/ring/keys/primary"),
        ("DELETE", "/ring/keys/x"),
    ] {
        let r = warren::http::client::request(
            &sups[0].http,
            method,
            path,
            None,
            Some(("application/json", b"{}")),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(r.status == 404 || r.status == 405, "{method} {path}: {}", r.status);
    }

    // A late joiner gets everything.
    let mut late_args = fast_timings();
    late_args.extend(args(&["--peer", &sups[0].gossip]));
    let late = Sup::start(dir.path(), 58, late_args, vec![env.clone()]);
    wait_until(Duration::from_secs(20), "late joiner has both rumors", || has_both(&late));
    assert!(late.metric("warren_ring_rumors{type=\"member\"}") >= 5, "it learned every member rumor");

    // Persistence: restart member 0 (the seed, started with no --peer) alone, on a gossip port
    // nobody knows: it still knows the rumors, so they came from its data path.
    assert!(sups[0].term());
    assert!(!sups[0].args.contains(&"--peer".to_string()));
    sups[0].gossip = format!("{}:0", sups[0].ip);
    sups[0].spawn();
    assert!(has_both(&sups[0]), "rumors reloaded from the data path");
    assert_eq!(sups[0].health().len(), 1, "it really is alone");
    assert!(std::fs::read_to_string(&sups[0].log).unwrap().contains("restored rumors"));
}
