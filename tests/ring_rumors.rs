//! Rumors between real supervisors: injection, piggyback and push-pull spread, late joiners,
//! persistence across restarts; `config apply` and `file upload` through the ctl gateway.

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

fn service_file(sup: &Sup, group: &str, name: &str) -> Option<serde_json::Value> {
    sup.butterfly().map(|b| b["service_file"]["list"][group][name].clone()).filter(|v| !v.is_null())
}

/// The bytes of a rumor's `config` / `body` (a JSON array of numbers) as text.
fn text_of(v: &serde_json::Value) -> String {
    let bytes: Vec<u8> = v.as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn config_apply_and_file_upload_spread_at_their_version_and_say_why_when_refused() {
    use support::cli::warren;
    use support::files::path_str;
    use warren::ctl::proto::{ServiceGroup, SvcFilePut, SvcSetCfg};
    use warren::ctl::{CtlClient, CtlRequest, CtlSecret};

    let dir = tempfile::tempdir().unwrap();
    let key = ring_key("ring", "20240101000000");
    let env = ring_key_env(&key);
    let mut extra = fast_timings();
    extra.extend(args(&["--org", "acme"]));
    let sups = start_ring(dir.path(), 70, 3, &extra, std::slice::from_ref(&env));
    let ids = member_ids(&sups);
    let refs: Vec<&Sup> = sups.iter().collect();
    wait_until(Duration::from_secs(30), "3 alive", || all_see_alive(&refs, &ids));

    let keys = dir.path().join("keys");
    let keys = path_str(&keys);
    warren(&["user", "key", "generate", "ops", "--cache-key-path", keys]).ok();
    warren(&["svc", "key", "generate", "redis.default", "acme", "--cache-key-path", keys]).ok();
    warren(&["svc", "key", "generate", "redis.other", "acme", "--cache-key-path", keys]).ok();
    let cfg = dir.path().join("redis.toml");
    std::fs::write(&cfg, "port = 7000\npassword = \"s3cret-value\"\n").unwrap();
    let cfg = path_str(&cfg);
    let apply = |sup: &Sup, version: &str, user: bool| {
        let mut a = vec!["config", "apply", "redis.default@acme", version, cfg, "--cache-key-path", keys];
        if user {
            a.extend(["--user", "ops"]);
        }
        sup.cli(&a)
    };

    // Encrypted, at one member: every member holds it at the version given, as ciphertext.
    let out = apply(&sups[0], "3", true);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Applied encrypted configuration version 3 to redis.default@acme"),
        "{}",
        out.stdout
    );
    for s in &sups {
        wait_until(Duration::from_secs(20), "the config everywhere", || {
            service_config(s, "redis.default@acme").is_some_and(|c| c["incarnation"] == 3)
        });
        let c = service_config(s, "redis.default@acme").unwrap();
        assert_eq!(c["encrypted"], true);
        let text = text_of(&c["config"]);
        assert!(text.starts_with("BOX-1\n") && !text.contains("s3cret"), "{text}");
    }

    // The same version again, at another member: refused with the version to beat (Habitat
    // drops it without a word, #3009). Version 0 is never applied, so it is refused too.
    let again = apply(&sups[1], "3", true);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("current version 3") && again.stderr.contains("use 4"), "{}", again.stderr);
    let zero = apply(&sups[1], "0", true);
    assert_ne!(zero.code, 0);
    assert!(zero.stderr.contains("version 0"), "{}", zero.stderr);

    // Plaintext for the supervisors' own org: the gateway says every member would refuse it.
    let plain = apply(&sups[2], "4", false);
    assert_ne!(plain.code, 0);
    assert!(
        plain.stderr.contains("belongs to org acme") && plain.stderr.contains("--user"),
        "{}",
        plain.stderr
    );
    assert!(!plain.stderr.contains("s3cret"), "{}", plain.stderr);

    // Broken TOML never leaves the client, and its error does not quote the file.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "port = 1\npassword = \"s3cret-value").unwrap();
    let out = sups[0].cli(&[
        "config",
        "apply",
        "redis.default@acme",
        "5",
        path_str(&broken),
        "--user",
        "ops",
        "--cache-key-path",
        keys,
    ]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("line 2") && !out.stderr.contains("s3cret"), "{}", out.stderr);
    let big = dir.path().join("big.toml");
    std::fs::write(&big, format!("x = \"{}\"\n", "a".repeat(70_000))).unwrap();
    let out = sups[0].cli(&[
        "config",
        "apply",
        "redis.default@acme",
        "5",
        path_str(&big),
        "--user",
        "ops",
        "--cache-key-path",
        keys,
    ]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("65536 byte limit"), "{}", out.stderr);
    for s in &sups {
        assert_eq!(
            service_config(s, "redis.default@acme").unwrap()["incarnation"],
            3,
            "nothing refused spread"
        );
    }

    // A file, encrypted, reaches everyone under its own name and version.
    let conf = dir.path().join("app.conf");
    std::fs::write(&conf, "tls = on\n").unwrap();
    let out = sups[1].cli(&[
        "file",
        "upload",
        "redis.default@acme",
        "1",
        path_str(&conf),
        "--user",
        "ops",
        "--cache-key-path",
        keys,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Uploaded encrypted file app.conf version 1"), "{}", out.stdout);
    for s in &sups {
        wait_until(Duration::from_secs(20), "the file everywhere", || {
            service_file(s, "redis.default@acme", "app.conf").is_some_and(|f| f["incarnation"] == 1)
        });
    }

    // What a hostile or broken client could send straight to the gateway.
    let client = CtlClient::new(&sups[0].ctl, CtlSecret::new(&sups[0].ctl_secret()).unwrap());
    let group = || {
        Some(ServiceGroup {
            service: "redis".into(),
            group: "default".into(),
            organization: Some("acme".into()),
        })
    };
    let put = |name: &str, body: &[u8], encrypted: bool| {
        let req = CtlRequest::SvcFilePut(SvcFilePut {
            service_group: group(),
            content: Some(body.to_vec()),
            filename: Some(name.into()),
            version: Some(2),
            is_encrypted: Some(encrypted),
        });
        client.call(&req, |_| {}).map(|_| ()).map_err(|e| e.to_string())
    };
    let seal_to = |to: &str| {
        let args = ["box", "encrypt", "--to", to, "--from", "ops", "--cache-key-path", keys, path_str(&conf)];
        warren(&args).ok().trim().to_string()
    };
    let sealed = seal_to("redis.default@acme");
    let e = put("../escape", sealed.as_bytes(), true).unwrap_err();
    assert!(e.contains("plain file name"), "{e}");
    let to_other = seal_to("redis.other@acme");
    let e = put("app.conf", to_other.as_bytes(), true).unwrap_err();
    assert!(e.contains("not to the group redis.default@acme"), "{e}");
    let e = put("app.conf", b"not a box", true).unwrap_err();
    assert!(e.contains("not a BOX-1 message"), "{e}");
    let e = put("app.conf", sealed.as_bytes(), false).unwrap_err();
    assert!(e.contains("sent as plaintext"), "{e}");
    let set = CtlRequest::SvcSetCfg(SvcSetCfg {
        service_group: group(),
        cfg: None,
        version: Some(9),
        is_encrypted: None,
    });
    let e = client.call(&set, |_| {}).unwrap_err().to_string();
    assert!(e.contains("cfg is missing"), "{e}");
    assert!(service_file(&sups[0], "redis.default@acme", "escape").is_none());
    // Nothing of the plaintext reached a log.
    for s in &sups {
        assert!(!std::fs::read_to_string(&s.log).unwrap().contains("s3cret"));
    }
}
