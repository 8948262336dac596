//! Service groups across a ring of real supervisors (`--org e2e`), each running a small
//! `redis` package in group `default`, with Habitat's e2e keys: gossiped configs and files
//! reach the members that can open them, and nothing else gets through.

mod support;

use std::path::Path;
use std::time::Duration;

use support::groups::{
    Body, GROUP, USER_KEY, build_redis, copy_cache, counted, fixture_cache, load_redis, marks, rendered,
    send_config, send_file, trust_origins,
};
use support::ring::{all_see_alive, args, fast_timings, member_ids, start_ring_each};
use support::sup::Sup;
use support::wait::wait_until;

const LIMIT: Duration = Duration::from_secs(30);

fn sup_args() -> Vec<String> {
    let mut a = fast_timings();
    a.extend(args(&["--org", "e2e"]));
    a
}

/// `svc status e2e/redis` says up.
fn redis_up(sup: &Sup) -> bool {
    let run = sup.cli(&["svc", "status", "e2e/redis", "--json"]);
    run.code == 0
        && run
            .stdout
            .lines()
            .next()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .is_some_and(|s| s["state"] == "up")
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if meta.is_file()
            && std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn configs_reach_every_member_that_can_open_them_and_nothing_else_applies() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("origin-keys");
    let hart = build_redis(dir.path(), &keys);
    // Members 1 and 2 hold the user's public key; member 3 only the service's pair.
    for (host, which) in [(151u8, "cache_keys"), (152, "cache_keys"), (153, "cache_keys_no_user")] {
        let cache = dir.path().join(format!("data-{host}/keys"));
        copy_cache(which, &cache);
        trust_origins(&keys, &cache);
    }
    let mut sups = start_ring_each(dir.path(), 151, 3, &[], |_| sup_args());
    let ids = member_ids(&sups);
    wait_until(LIMIT, "a ring of 3", || all_see_alive(&sups.iter().collect::<Vec<_>>(), &ids));
    for s in &sups {
        load_redis(s, &hart);
    }
    wait_until(LIMIT, "rendered from default.toml", || {
        sups.iter().all(|s| rendered(s).as_deref() == Some("initial"))
    });

    // Plaintext for the org's own group: refused by all three, nothing rendered.
    send_config(&sups[0], dir.path(), GROUP, 1, Body::Plain("x = \"plain\"\n"));
    wait_until(LIMIT, "plaintext refused everywhere", || {
        sups.iter().all(|s| counted(s, "config", "plaintext_refused") == 1)
    });
    // A tampered BOX-1: dropped where the keys are all there (member 3 lacks the sender's).
    let mut msg = support::groups::boxed(b"x = \"tampered\"\n");
    if let warren::crypto::boxes::BoxMessage::Signed { ciphertext, .. } = &mut msg {
        ciphertext[0] ^= 0x20;
    }
    send_config(&sups[0], dir.path(), GROUP, 2, Body::Raw(&msg.to_text()));
    wait_until(LIMIT, "tampered config dropped", || {
        sups[..2].iter().all(|s| counted(s, "config", "undecryptable") == 1)
    });
    assert!(sups.iter().all(|s| rendered(s).as_deref() == Some("initial")));
    assert!(sups.iter().all(|s| marks(s, "reconfigured") == 0));

    // Member 2 is down while the real config goes out.
    assert!(sups[1].term(), "member 2 stops cleanly");
    let secret = format!("s3cr3t-{}", std::process::id());
    send_config(&sups[0], dir.path(), GROUP, 3, Body::Encrypted(&format!("x = \"{secret}\"\n")));
    wait_until(LIMIT, "member 1 renders the new value", || {
        rendered(&sups[0]).as_deref() == Some(secret.as_str())
    });
    wait_until(LIMIT, "member 1's reconfigure ran", || marks(&sups[0], "reconfigured") == 1);
    assert_eq!(counted(&sups[0], "config", "applied"), 1);
    // Member 3 waits for the user's key...
    wait_until(LIMIT, "member 3 waits for the user key", || counted(&sups[2], "config", "waiting_key") >= 1);
    assert_eq!(rendered(&sups[2]).as_deref(), Some("initial"));
    // ...and applies the config soon after it is dropped into its cache, without a restart.
    let pub_name = format!("{USER_KEY}.pub");
    std::fs::copy(fixture_cache("cache_keys").join(&pub_name), sups[2].data.join("keys").join(&pub_name))
        .unwrap();
    wait_until(Duration::from_secs(10), "member 3 applies once the key is there", || {
        rendered(&sups[2]).as_deref() == Some(secret.as_str())
    });
    assert_eq!(counted(&sups[2], "config", "applied"), 1);
    // Member 2 comes back and catches up: its reconfigure runs once if the new value came
    // after its service's first render, not at all if it came before (checked below, after
    // the pause, so a late second run would show).
    sups[1].spawn();
    wait_until(LIMIT, "member 2 gets it after coming back", || {
        rendered(&sups[1]).as_deref() == Some(secret.as_str())
    });

    // A restarted member starts its service with the gossip layer in place: no render of the
    // old value, so no second reconfigure.
    assert!(sups[0].term());
    sups[0].spawn();
    wait_until(LIMIT, "member 1 runs redis again", || redis_up(&sups[0]));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rendered(&sups[0]).as_deref(), Some(secret.as_str()));
    assert_eq!(marks(&sups[0], "reconfigured"), 1, "the restored service rendered without its gossip layer");
    assert!(marks(&sups[1], "reconfigured") <= 1, "member 2 reconfigured more than once");

    // Refusals are logged once per incarnation, not at every rescan; a wait names the key.
    for s in &sups {
        let log = std::fs::read_to_string(&s.log).unwrap();
        assert_eq!(
            log.matches("plaintext for a group of this supervisor's org").count(),
            1,
            "{}",
            s.log.display()
        );
    }
    let log3 = std::fs::read_to_string(&sups[2].log).unwrap();
    assert!(log3.lines().any(|l| l.contains("waits for a key") && l.contains(USER_KEY)), "{log3}");

    // The decrypted value is in the rendered file and nowhere else: not in a log, not in the
    // persisted rumors or anywhere else under the data paths.
    for s in &sups {
        let log = std::fs::read_to_string(&s.log).unwrap();
        assert!(!log.contains(&secret), "{} logs the secret", s.log.display());
        let found = files_containing(&s.data, secret.as_bytes());
        assert_eq!(found, [s.data.join("svc/redis/config/value.txt").display().to_string()]);
        // ...which only the supervisor and the service's group may read.
        use std::os::unix::fs::MetadataExt as _;
        let file = std::fs::metadata(s.data.join("svc/redis/config/value.txt")).unwrap();
        let dir = std::fs::metadata(s.data.join("svc/redis/config")).unwrap();
        assert_eq!(file.mode() & 0o777, 0o640);
        assert_eq!(file.gid(), dir.gid(), "the file takes its folder's group (the service's)");
    }
}

#[test]
fn files_reach_a_member_that_joins_later_and_bad_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("origin-keys");
    let hart = build_redis(dir.path(), &keys);
    for host in [156u8, 157] {
        let cache = dir.path().join(format!("data-{host}/keys"));
        copy_cache("cache_keys", &cache);
        trust_origins(&keys, &cache);
    }
    let first = Sup::start(dir.path(), 156, sup_args(), vec![]);
    load_redis(&first, &hart);
    let body = "maxmemory 2mb\n";
    send_file(&first, dir.path(), GROUP, 1, "redis.conf", Body::Encrypted(body));
    let path = |s: &Sup| s.data.join("svc/redis/files/redis.conf");
    wait_until(LIMIT, "the file is written", || {
        std::fs::read_to_string(path(&first)).ok().as_deref() == Some(body)
    });
    wait_until(LIMIT, "file-updated ran", || marks(&first, "file-updated") == 1);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path(&first)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
    // A name that climbs out of files/ is refused (and counted), plaintext ones too.
    let forged = support::groups::boxed(b"gotcha").to_text();
    send_file(&first, dir.path(), GROUP, 1, "../escape", Body::Raw(&forged));
    send_file(&first, dir.path(), GROUP, 1, "plain.conf", Body::Plain("gotcha"));
    wait_until(LIMIT, "bad name counted", || counted(&first, "file", "invalid") == 1);
    wait_until(LIMIT, "plaintext counted", || counted(&first, "file", "plaintext_refused") == 1);
    assert!(files_containing(&first.data, b"gotcha").is_empty());
    assert!(!first.data.join("svc/redis/escape").exists());

    // A member that joins later gets the file and runs file-updated.
    let mut a = sup_args();
    a.extend(args(&["--peer", &first.gossip]));
    let later = Sup::start(dir.path(), 157, a, vec![]);
    load_redis(&later, &hart);
    wait_until(LIMIT, "the later member has the file", || {
        std::fs::read_to_string(path(&later)).ok().as_deref() == Some(body)
    });
    wait_until(LIMIT, "its file-updated ran", || marks(&later, "file-updated") == 1);
    assert_eq!(counted(&later, "file", "applied"), 1);
    assert_eq!(counted(&later, "file", "invalid"), 1, "the bad name is refused there too");

    // An exported key set by a gossiped config is what the census (and so binds) sees.
    send_config(&first, dir.path(), GROUP, 1, Body::Encrypted("port = 7000\n"));
    let exported = |s: &Sup, of: &Sup| {
        let census: serde_json::Value = s.get("/census")?.json().ok()?;
        census["census_groups"][GROUP]["population"][of.member_id()]["cfg"]["port"].as_i64()
    };
    wait_until(LIMIT, "the census shows the gossiped port", || {
        exported(&later, &first) == Some(7000) && exported(&first, &later) == Some(7000)
    });
}
