//! Real-process ring tests: convergence, encryption, failure detection, restart, gateway auth.

mod support;

use std::time::Duration;

use support::cli;
use support::keys::{ring_key, ring_key_env};
use support::ring::*;
use support::sup::{Sup, listening};
use support::wait::{wait_for, wait_until};

#[test]
fn five_converge_and_outsiders_without_the_key_never_join() {
    let dir = tempfile::tempdir().unwrap();
    let key = ring_key("ring", "20240101000000");
    let sups = start_ring(dir.path(), 10, 5, &fast_timings(), &[ring_key_env(&key)]);
    let ids = member_ids(&sups);
    let refs: Vec<&Sup> = sups.iter().collect();
    wait_until(Duration::from_secs(30), "5 members alive everywhere", || all_see_alive(&refs, &ids));
    for s in &sups {
        assert_eq!(s.health().len(), 5, "{} sees exactly 5 members", s.http);
    }

    // A 6th with another key of the same name, and a 7th with no key at all.
    let mut wrong_args = fast_timings();
    wrong_args.extend(args(&["--peer", &sups[0].gossip]));
    let wrong = ring_key("ring", "20240101000001");
    let intruder = Sup::start(dir.path(), 16, wrong_args.clone(), vec![ring_key_env(&wrong)]);
    let plain = Sup::start(dir.path(), 17, wrong_args, vec![]);
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
    // Patient verdicts: a live member is only confirmed dead if it cannot answer for 3 s (see
    // `patient`), so "nobody else is confirmed" below holds on a loaded machine; transient
    // suspicion is allowed and not what this test is about.
    let cfg = patient();
    let mut sups = start_ring(dir.path(), 20, 5, &timing_args(&cfg), &[ring_key_env(&key)]);
    let ids = member_ids(&sups);
    {
        let refs: Vec<&Sup> = sups.iter().collect();
        wait_until(Duration::from_secs(30), "5 alive", || all_see_alive(&refs, &ids));
    }
    let victim = ids[3].clone();
    let before = sups[0].incarnation_of(&victim).unwrap();
    sups[3].kill9();

    // The deadline is the configured worst case (RingConfig::detection_bound, ~9 s here) with
    // a wide margin: it only decides when a broken detector is reported, never what passes.
    let limit = cfg.detection_bound(5) + Duration::from_secs(30);
    wait_until(limit, "every live member confirms the killed one", || {
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
    let ids = member_ids(&sups);
    {
        let refs: Vec<&Sup> = sups.iter().collect();
        wait_until(Duration::from_secs(30), "3 alive", || all_see_alive(&refs, &ids));
    }
    // A clean stop is a leave, not a departure (Habitat's views show a leave as Confirmed).
    assert!(sups[1].term(), "SIGTERM exits with success");
    wait_until(Duration::from_secs(30), "stopped member is confirmed, not departed", || {
        sups[0].health().get(&ids[1]).map(String::as_str) == Some("Confirmed")
    });
    sups[1].spawn();
    wait_until(Duration::from_secs(30), "it rejoins", || {
        sups[0].health().get(&ids[1]).map(String::as_str) == Some("Alive")
    });

    // Typed in upper case with spaces: normalized where it enters, so it still matches the
    // member's own id after its restart below.
    sups[0].cli(&["sup", "depart", &format!(" {} ", ids[2].to_uppercase())]).ok();
    wait_until(Duration::from_secs(30), "departed member exits and is shown departed", || {
        sups[2].exited()
            && [0, 1].iter().all(|i| sups[*i].health().get(&ids[2]).map(String::as_str) == Some("Departed"))
    });
    // It saved its own departure and refuses to start again with the same data path.
    let ip = &sups[2].ip;
    let mut again = cli::command()
        .args(["sup", "run", "--listen-gossip", &format!("{ip}:0"), "--listen-http", &format!("{ip}:0")])
        .args(["--listen-ctl", &format!("{ip}:0")])
        .arg("--data-path")
        .arg(&sups[2].data)
        .env("WARREN_CACHE_KEY_PATH", sups[2].data.join("keys"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let refused = wait_for(Duration::from_secs(20), || again.try_wait().ok().flatten());
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
    // A port other than the one bound, so the test tells the two apart.
    let advertised = "127.0.0.45:7654";
    let sup = Sup::start_on(
        dir.path(),
        "any",
        "0.0.0.0:0",
        "127.0.0.1:0",
        args(&["--advertise", advertised]),
        vec![],
    );
    let (gossip, _, _) = listening(&sup.data, sup.pid()).expect("listen.json of the running supervisor");
    assert!(
        gossip.starts_with("0.0.0.0:") && !gossip.ends_with(":0") && !gossip.ends_with(":7654"),
        "{gossip}"
    );
    let me = wait_for(Duration::from_secs(20), || {
        sup.butterfly()?["member"]["members"].as_object()?.values().next().cloned()
    })
    .expect("no member in /butterfly");
    assert_eq!(me["address"], "127.0.0.45", "{me}");
    assert_eq!(me["gossip_port"], 7654, "{me}");
}

#[test]
fn sigterm_leaves_gracefully_and_a_restart_rejoins_higher() {
    let dir = tempfile::tempdir().unwrap();
    // Patient verdicts: a member only becomes "confirmed" after >= 3 s of suspicion, so a
    // "left" seen by the others can only come from the leave itself.
    let mut sups = start_ring(dir.path(), 80, 3, &timing_args(&patient()), &[]);
    let ids = member_ids(&sups);
    {
        let refs: Vec<&Sup> = sups.iter().collect();
        wait_until(Duration::from_secs(30), "3 alive", || all_see_alive(&refs, &ids));
    }
    let before = sups[0].incarnation_of(&ids[2]).unwrap();
    assert!(sups[2].term(), "SIGTERM exits cleanly");
    wait_until(Duration::from_secs(20), "both survivors see the member as left", || {
        sups[..2].iter().all(|s| s.metric("warren_ring_members{health=\"left\"}") == 1)
    });
    for s in &sups[..2] {
        assert_eq!(s.metric("warren_ring_members{health=\"confirmed\"}"), 0, "a leave, not a failure");
        // Habitat's views have no "left": it shows as Confirmed there.
        assert_eq!(s.health()[&ids[2]], "Confirmed");
    }
    sups[2].spawn();
    wait_until(Duration::from_secs(30), "it rejoins, alive, with a higher incarnation", || {
        sups[0].health().get(&ids[2]).is_some_and(|h| h == "Alive")
            && sups[0].incarnation_of(&ids[2]).is_some_and(|i| i > before + 1)
    });
    assert_eq!(sups[0].metric("warren_ring_members{health=\"left\"}"), 0);
}

#[test]
fn one_supervisor_per_data_path_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let first = Sup::start(dir.path(), 90, fast_timings(), vec![]);
    let mut second = cli::command();
    second
        .args([
            "sup",
            "run",
            "--listen-gossip",
            "127.0.0.91:0",
            "--listen-http",
            "127.0.0.91:0",
            "--data-path",
        ])
        .arg(&first.data)
        .env("WARREN_CACHE_KEY_PATH", first.data.join("keys"));
    let run = cli::run(&mut second, None);
    let err = run.fails();
    assert!(err.contains("in use by another supervisor"), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "names the holder: {err}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&first.data), 0o700);
    wait_until(Duration::from_secs(10), "rumors persisted", || first.data.join("rumors.pb").exists());
    for f in ["MEMBER_ID", "ring-state.json", "rumors.pb", "LOCK"] {
        assert_eq!(mode(&first.data.join(f)), 0o600, "{f}");
    }
    assert_eq!(first.member_id().len(), 32, "the first keeps its id and runs on");
    assert!(first.get("/").is_some_and(|r| r.status == 200));
}

#[test]
fn the_http_gateway_cuts_off_a_client_that_never_sends_its_request() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 95, fast_timings(), vec![]);
    let mut slow = std::net::TcpStream::connect(&sup.http).unwrap();
    slow.write_all(b"GET /butterfly HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // Others are served meanwhile.
    assert!(sup.get("/butterfly").is_some_and(|r| r.status == 200));
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let n = slow.read(&mut buf).unwrap_or(0);
    // Closed (maybe after a 408) by the header timeout, well before our own 60 s read timeout.
    let reply = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(n == 0 || reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    assert!(started.elapsed() < Duration::from_secs(55), "the server closed it, not our read timeout");
}

/// Sets a running process's soft descriptor limit (the hard one stays, so it can be raised
/// back without privileges); returns the soft limit it had.
fn limit_descriptors(pid: u32, soft: u64) -> u64 {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit on a child of ours, reading into and from rlimits we own.
    let rc = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit { rlim_cur: soft.min(old.rlim_max), rlim_max: old.rlim_max };
    let rc = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

fn open_descriptors(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64
}

#[test]
fn out_of_descriptors_the_ring_keeps_gossiping_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let patient = timing_args(&patient());
    let a = Sup::start(dir.path(), 44, patient.clone(), vec![]);
    let mut b_args = patient;
    b_args.extend(args(&["--peer", &a.gossip]));
    let b = Sup::start(dir.path(), 45, b_args, vec![]);
    let a_id = a.member_id();
    wait_until(Duration::from_secs(20), "b sees a alive", || {
        b.health().get(&a_id).is_some_and(|h| h == "Alive")
    });

    // A few descriptors to spare, then many push-pull connections: accepts fail with EMFILE.
    let soft = limit_descriptors(a.pid(), open_descriptors(a.pid()) + 4);
    let held: Vec<std::net::TcpStream> =
        (0..64).filter_map(|_| std::net::TcpStream::connect(&a.gossip).ok()).collect();
    assert!(held.len() > 8, "connections queue in the backlog even when accept fails");
    // For longer than b's suspicion timeout (at least 3 s), a must keep answering probes: a
    // failing accept loop may not starve the ring's own thread.
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let h = b.health().get(&a_id).cloned().unwrap_or_default();
        assert_ne!(h, "Confirmed", "a was confirmed dead while out of descriptors:\n{}", a.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(held);
    limit_descriptors(a.pid(), soft);
    // Recovered: the gateway answers and counted what failed; push-pull works again.
    wait_until(Duration::from_secs(20), "a's gateway answers again", || a.get("/metrics").is_some());
    assert!(a.metric("warren_ring_pushpull_accept_errors_total") > 0, "{}", a.log_tail());
    assert!(std::fs::read_to_string(&a.log).unwrap().contains("push-pull accept failed; backing off"));
    let before = a.metric("warren_ring_pushpull_total");
    wait_until(Duration::from_secs(20), "a push-pull completes after the recovery", || {
        a.metric("warren_ring_pushpull_total") > before
    });
    assert!(b.health().get(&a_id).is_none_or(|h| h != "Confirmed"));
}
