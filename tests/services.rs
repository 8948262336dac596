//! Services under real supervisors: `svc load|start|stop|unload|status` over the ctl gateway,
//! real processes and signals, restarts with backoff, and exactly-once after a `kill -9` of
//! the supervisor.

mod support;

use std::path::Path;
use std::time::Duration;

use support::ring::fast_timings;
use support::services::{RELEASE, install, pid_of, status, svc_dir};
use support::sup::Sup;
use support::wait::{wait_for, wait_until};

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn alive(pid: u32) -> bool {
    // A zombie is not alive; /proc/PID/stat's state field says so.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().next() != Some("Z")))
        .unwrap_or(false)
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    rest.split_whitespace().nth(n - 3).map(str::to_string)
}

/// Processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| alive(*p) && stat_field(*p, 5).as_deref() == Some(&pgid.to_string()))
        .collect()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

const SLEEPER: &str =
    "#!/bin/sh\necho \"started $$\"\necho \"$$\" >> \"$WARREN_SVC_PATH/data/starts\"\nexec sleep 1000\n";

#[test]
fn a_loaded_service_runs_restarts_after_a_crash_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 50, fast_timings(), vec![]);
    install(
        &sup,
        "sleeper",
        &[
            ("run", SLEEPER),
            ("init", "#!/bin/sh\necho init >> \"$WARREN_SVC_PATH/data/init\"\n"),
            ("post-stop", "#!/bin/sh\necho stopped >> \"$WARREN_SVC_PATH/data/post-stop\"\n"),
        ],
        &[],
    );
    let load = sup.cli(&["svc", "load", "acme/sleeper"]);
    assert_eq!(load.code, 0, "{load:?}\n{}", sup.log_tail());
    assert!(load.stdout.contains("successfully loaded") && load.stdout.contains("up, pid"), "{load:?}");
    let pid = pid_of(&sup, "sleeper").expect("up once load returned");
    assert!(alive(pid));
    // Its own session and process group; its environment is not the supervisor's.
    assert_eq!(stat_field(pid, 6).as_deref(), Some(pid.to_string().as_str()), "a session leader");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains("WARREN_SERVICE_GROUP=sleeper.default"), "{environ}");
    assert!(!environ.contains("WARREN_CACHE_KEY_PATH") && !environ.contains("WARREN_LOG="), "{environ}");
    let sig_blocked = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        sig_blocked.lines().any(|l| l == "SigBlk:\t0000000000000000"),
        "no signal blocked: {sig_blocked}"
    );
    assert_eq!(lines(&svc_dir(&sup, "sleeper").join("data/init")), 1);
    wait_until(Duration::from_secs(10), "its output in the supervisor's log", || {
        std::fs::read_to_string(&sup.log).unwrap().contains(&format!("sleeper.default(O): started {pid}"))
    });
    assert!(
        std::fs::read_to_string(svc_dir(&sup, "sleeper").join("logs/run.stdout.log"))
            .unwrap()
            .contains("started")
    );
    let sup_status = sup.cli(&["sup", "status", "--json"]).ok().to_string();
    let sup_status: serde_json::Value = serde_json::from_str(&sup_status).unwrap();
    assert_eq!(sup_status["services"][0]["pid"].as_u64(), Some(u64::from(pid)), "sup status shows services");
    let text = sup.cli(&["svc", "status"]).ok().to_string();
    assert!(text.starts_with("package") && text.contains(&format!("acme/sleeper/1.0.0/{RELEASE}")), "{text}");
    assert!(
        text.contains("standalone") && text.contains(&pid.to_string()) && text.contains("sleeper.default")
    );

    // A crash: restarted at once (the first failure after a good run waits for nothing).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let second = wait_for(Duration::from_secs(10), || pid_of(&sup, "sleeper").filter(|p| *p != pid))
        .unwrap_or_else(|| panic!("not restarted:\n{}", sup.log_tail()));
    let s = status(&sup, "sleeper").unwrap();
    assert_eq!((s["restarts"].as_u64(), s["failures"].as_u64()), (Some(1), Some(1)), "{s}");
    assert!(s["last_failure"].as_str().unwrap().contains("signal 9"), "{s}");
    assert_eq!(lines(&svc_dir(&sup, "sleeper").join("data/post-stop")), 1, "post-stop ran after the crash");
    assert_eq!(lines(&svc_dir(&sup, "sleeper").join("data/init")), 2, "init runs once per start");

    // Stop: the shutdown signal, then post-stop; the process group is empty.
    let stop = sup.cli(&["svc", "stop", "acme/sleeper"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert!(stop.stdout.contains("sleeper.default: down"), "{stop:?}");
    assert!(!alive(second) && group_members(second).is_empty());
    assert_eq!(status(&sup, "sleeper").unwrap()["desired"], "down");
    assert_eq!(lines(&svc_dir(&sup, "sleeper").join("data/post-stop")), 2);
    assert!(
        std::fs::read_to_string(sup.data.join("specs/sleeper.spec"))
            .unwrap()
            .contains("desired_state = \"down\"")
    );

    let start = sup.cli(&["svc", "start", "acme/sleeper"]);
    assert_eq!(start.code, 0, "{start:?}");
    let third = pid_of(&sup, "sleeper").unwrap();
    assert!(alive(third) && third != second);

    let unload = sup.cli(&["svc", "unload", "acme/sleeper"]);
    assert_eq!(unload.code, 0, "{unload:?}");
    assert!(!alive(third));
    assert!(!sup.data.join("specs/sleeper.spec").exists());
    let none = sup.cli(&["svc", "status"]);
    assert_eq!(none.ok().trim(), "No services loaded.");
    let missing = sup.cli(&["svc", "status", "acme/sleeper"]);
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("not loaded"), "{missing:?}");
}

#[test]
fn a_crash_loop_backs_off_is_reported_and_the_other_services_run_on() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 51, fast_timings(), vec![]);
    install(&sup, "steady", &[("run", SLEEPER)], &[]);
    install(&sup, "crasher", &[("run", "#!/bin/sh\necho oops >&2\nexit 3\n")], &[]);
    assert_eq!(sup.cli(&["svc", "load", "acme/steady"]).code, 0);
    let steady = pid_of(&sup, "steady").unwrap();
    let load = sup.cli(&["svc", "load", "acme/crasher"]);
    assert_ne!(load.code, 0, "a service that cannot stay up fails its load: {load:?}");
    assert!(load.stderr.contains("failing") && load.stderr.contains("exit code 3"), "{load:?}");
    let s = status(&sup, "crasher").unwrap();
    assert!(s["failures"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(s["desired"], "up", "it keeps trying: {s}");
    // Backed off, not spinning: the restarts stay few while it waits.
    std::thread::sleep(Duration::from_secs(2));
    let restarts = status(&sup, "crasher").unwrap()["restarts"].as_u64().unwrap();
    assert!(restarts < 30, "a crash loop must back off: {restarts} restarts");
    let text = sup.cli(&["svc", "status"]);
    assert!(text.stderr.contains("crasher.default") && text.stderr.contains("in a row"), "{text:?}");
    assert!(std::fs::read_to_string(&sup.log).unwrap().contains("crasher.default(E): oops"));
    assert_eq!(pid_of(&sup, "steady"), Some(steady), "the other service is untouched");
    assert_eq!(sup.cli(&["svc", "stop", "acme/crasher"]).code, 0, "a failing service can be stopped");
    assert_eq!(status(&sup, "crasher").unwrap()["state"], "down");
}

#[test]
fn a_service_that_ignores_its_signal_is_killed_with_its_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 52, fast_timings(), vec![]);
    // TERM is ignored by the shell and (inherited) by its child. The package's own timeout is
    // longer than any wait of the CLI: each stop below ends only through its --shutdown-timeout.
    let stubborn = "#!/bin/sh\ntrap '' TERM\nsleep 1000 &\nwhile true; do sleep 1; done\n";
    install(&sup, "stubborn", &[("run", stubborn)], &[("SHUTDOWN_TIMEOUT", "3600")]);
    assert_eq!(sup.cli(&["svc", "load", "acme/stubborn"]).code, 0);
    let pid = pid_of(&sup, "stubborn").unwrap();
    wait_until(Duration::from_secs(10), "the background child runs", || group_members(pid).len() >= 2);
    let stop = sup.cli(&["svc", "stop", "acme/stubborn", "--shutdown-timeout", "1"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert!(group_members(pid).is_empty(), "the whole group is gone: {:?}", group_members(pid));
    assert!(std::fs::read_to_string(&sup.log).unwrap().contains("killing its process group"));
    // Once more through unload (and its alias --timeout).
    assert_eq!(sup.cli(&["svc", "start", "acme/stubborn"]).code, 0);
    let pid = pid_of(&sup, "stubborn").unwrap();
    wait_until(Duration::from_secs(10), "the background child runs", || group_members(pid).len() >= 2);
    let unload = sup.cli(&["svc", "unload", "acme/stubborn", "--timeout", "1"]);
    assert_eq!(unload.code, 0, "{unload:?}");
    assert!(unload.stdout.contains("stopped and unloaded"), "{unload:?}");
    assert!(group_members(pid).is_empty(), "the whole group is gone: {:?}", group_members(pid));
}

#[test]
fn a_failing_post_run_hook_is_retried_with_backoff_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 59, fast_timings(), vec![]);
    // Fails twice, then succeeds; each attempt is counted in data/post-run.
    let post_run = "#!/bin/sh\nd=\"$WARREN_SVC_PATH/data\"\necho try >> \"$d/post-run\"\n\
                    [ \"$(wc -l < \"$d/post-run\")\" -ge 3 ] || exit 1\necho ok > \"$d/post-run-ok\"\n";
    install(&sup, "after", &[("run", SLEEPER), ("post-run", post_run)], &[]);
    assert_eq!(sup.cli(&["svc", "load", "acme/after"]).code, 0);
    let data = svc_dir(&sup, "after").join("data");
    wait_until(Duration::from_secs(20), "post-run to succeed", || data.join("post-run-ok").is_file());
    let log = std::fs::read_to_string(&sup.log).unwrap();
    let attempts = log.lines().filter(|l| l.contains("post-run") && l.contains("attempt")).count();
    assert_eq!(attempts, 3, "two failures and the success:\n{log}");
    // It is not run again while the service stays up; the service itself never restarted.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(&data.join("post-run")), 3);
    assert_eq!(lines(&data.join("starts")), 1);
}

#[test]
fn after_kill_9_of_the_supervisor_each_service_runs_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut sup = Sup::start(dir.path(), 53, fast_timings(), vec![]);
    install(&sup, "sleeper", &[("run", SLEEPER)], &[]);
    install(&sup, "victim", &[("run", SLEEPER)], &[]);
    assert_eq!(sup.cli(&["svc", "load", "acme/sleeper"]).code, 0);
    assert_eq!(sup.cli(&["svc", "load", "acme/victim"]).code, 0);
    let (pid, victim) = (pid_of(&sup, "sleeper").unwrap(), pid_of(&sup, "victim").unwrap());
    sup.kill9();
    assert!(alive(pid) && alive(victim), "services outlive a killed supervisor");
    // One dies while no supervisor watches.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    wait_until(Duration::from_secs(5), "the victim is gone", || !alive(victim));
    sup.spawn();
    wait_until(Duration::from_secs(20), "both services up again", || {
        pid_of(&sup, "sleeper").is_some() && pid_of(&sup, "victim").is_some()
    });
    assert_eq!(pid_of(&sup, "sleeper"), Some(pid), "reattached, not restarted");
    let new_victim = pid_of(&sup, "victim").unwrap();
    assert_ne!(new_victim, victim, "restarted");
    assert_eq!(lines(&svc_dir(&sup, "sleeper").join("data/starts")), 1, "sleeper started exactly once");
    assert_eq!(lines(&svc_dir(&sup, "victim").join("data/starts")), 2, "victim: once, then once more");
    assert!(std::fs::read_to_string(&sup.log).unwrap().contains("reattached to the running service"));
    // The reattached process is watched: its end is seen and it is restarted.
    kill_and_see_restarted(&sup, "sleeper", pid);
    // A graceful stop of the supervisor stops its services.
    let last = pid_of(&sup, "sleeper").unwrap();
    assert!(sup.term());
    assert!(!alive(last) && !alive(new_victim), "SIGTERM stops the services");
}

#[test]
fn specs_bring_services_back_in_their_desired_state_and_bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut sup = Sup::start(dir.path(), 54, fast_timings(), vec![]);
    install(&sup, "up", &[("run", SLEEPER)], &[]);
    install(&sup, "down", &[("run", SLEEPER)], &[]);
    install(&sup, "norun", &[("init", "#!/bin/sh\ntrue\n")], &[]);
    assert_eq!(sup.cli(&["svc", "load", "acme/up"]).code, 0);
    assert_eq!(sup.cli(&["svc", "load", "acme/down"]).code, 0);
    assert_eq!(sup.cli(&["svc", "stop", "acme/down"]).code, 0);

    let unknown = sup.cli(&["svc", "load", "acme/nothing"]);
    assert_ne!(unknown.code, 0);
    assert!(unknown.stderr.contains("no installed package matches acme/nothing"), "{unknown:?}");
    let norun = sup.cli(&["svc", "load", "acme/norun"]);
    assert_ne!(norun.code, 0);
    assert!(norun.stderr.contains("has no run hook"), "{norun:?}");
    let again = sup.cli(&["svc", "load", "acme/up"]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already loaded"), "{again:?}");
    let bad_ident = sup.cli(&["svc", "load", "acme/../etc"]);
    assert_ne!(bad_ident.code, 0);

    assert!(sup.term());
    // A corrupt spec on disk is reported and skipped; the others come back as they were.
    std::fs::write(sup.data.join("specs/broken.spec"), "ident = [\n").unwrap();
    sup.spawn();
    wait_until(Duration::from_secs(20), "up is up again", || pid_of(&sup, "up").is_some());
    assert_eq!(status(&sup, "down").unwrap()["state"], "down", "a stopped service stays stopped");
    let log = std::fs::read_to_string(&sup.log).unwrap();
    assert!(log.contains("broken.spec"), "the bad spec is named: {}", sup.log_tail());
    assert_eq!(lines(&svc_dir(&sup, "up").join("data/starts")), 2);
}

#[test]
fn a_service_runs_without_the_supervisors_privileges_or_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 55, fast_timings(), vec![]);
    let secret = sup.data.join("CTL_SECRET");
    let probe = format!(
        "#!/bin/sh\nid -u > \"$WARREN_SVC_PATH/data/uid\"\nif cat {} >/dev/null 2>&1; then echo readable; else echo refused; fi > \"$WARREN_SVC_PATH/data/secret\"\nexec sleep 1000\n",
        secret.display()
    );
    install(&sup, "probe", &[("run", &probe)], &[]);
    let load = sup.cli(&["svc", "load", "acme/probe"]);
    assert_eq!(load.code, 0, "{load:?}\n{}", sup.log_tail());
    let data = svc_dir(&sup, "probe").join("data");
    wait_until(Duration::from_secs(10), "the probe wrote", || data.join("secret").exists());
    let uid: u32 = std::fs::read_to_string(data.join("uid")).unwrap().trim().parse().unwrap();
    let seen = std::fs::read_to_string(data.join("secret")).unwrap();
    if is_root() {
        // Root supervisor: the package's svc_user, which cannot read the ctl secret.
        let nobody = std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("nobody:x:").and_then(|r| r.split(':').next()?.parse::<u32>().ok()))
            .expect("a nobody user");
        assert_eq!(uid, nobody);
        assert_eq!(seen.trim(), "refused");
    } else {
        // A non-root supervisor runs services as itself: it cannot switch users.
        assert_eq!(uid, unsafe { libc::geteuid() });
        assert_eq!(seen.trim(), "readable", "same user: the file mode is the only fence");
    }
}

/// GET / on `addr` (None while nothing answers).
fn get(addr: &str) -> Option<String> {
    let r = warren::http::client::request(addr, "GET", "/", None, None, Duration::from_secs(2)).ok()?;
    (r.status == 200).then(|| r.text())
}

#[test]
fn the_example_package_builds_installs_loads_answers_from_its_config_and_follows_user_toml() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let secret = support::keys::origin_keys(&keys, "acme");
    let hart = support::packages::build_hello_http(&keys, "acme", dir.path()).display().to_string();
    let sup = Sup::start(dir.path(), 56, fast_timings(), vec![]);
    warren::crypto::KeyCache::new(sup.data.join("keys")).write(&secret.public().to_file()).unwrap();
    // Its own address and port, set where an operator would: user.toml.
    let addr = "127.0.0.56:8080";
    let user = sup.data.join("user/hello-http/user.toml");
    std::fs::create_dir_all(user.parent().unwrap()).unwrap();
    std::fs::write(&user, "[http]\nlisten = \"127.0.0.56\"\nport = 8080\n").unwrap();

    let load = sup.cli(&["svc", "load", &hart]);
    assert_eq!(load.code, 0, "{load:?}\n{}", sup.log_tail());
    assert!(load.stdout.contains("Installed acme/hello-http/0.1.0/"), "installed first: {load:?}");
    assert!(load.stdout.contains("hello-http.default: up"), "{load:?}");
    let body = wait_for(Duration::from_secs(20), || get(addr))
        .unwrap_or_else(|| panic!("nothing answers on {addr}:\n{}", sup.log_tail()));
    assert_eq!(body.trim(), "Hello from hello-http", "the response comes from default.toml via config/");
    let rendered = std::fs::read_to_string(svc_dir(&sup, "hello-http").join("config/server.conf")).unwrap();
    assert!(rendered.contains("port = 8080") && rendered.contains("listen = 127.0.0.56"), "{rendered}");
    let hook = std::fs::read_to_string(svc_dir(&sup, "hello-http").join("hooks/run")).unwrap();
    assert!(!hook.contains("{{") && hook.contains("/bin/server.pl"), "the run hook is rendered: {hook}");
    let pid = pid_of(&sup, "hello-http").unwrap();
    wait_until(Duration::from_secs(40), "its health-check hook says OK", || {
        status(&sup, "hello-http").is_some_and(|s| s["health"] == "OK")
    });

    // A new message in user.toml: re-rendered, reconfigure runs, the same process answers it.
    std::fs::write(
        &user,
        "message = \"changed by user.toml\"\n[http]\nlisten = \"127.0.0.56\"\nport = 8080\n",
    )
    .unwrap();
    wait_until(Duration::from_secs(20), "the new message is served", || {
        get(addr).is_some_and(|b| b.trim() == "changed by user.toml")
    });
    assert_eq!(pid_of(&sup, "hello-http"), Some(pid), "reconfigured, not restarted");
    let hook_log = svc_dir(&sup, "hello-http").join("logs/reconfigure.stdout.log");
    let ran = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&hook_log).ok()?.contains("hello-http: config re-rendered").then_some(())
    });
    assert!(ran.is_some(), "the reconfigure hook's output is in its log:\n{}", sup.log_tail());

    // A crash: restarted, and it answers again with the current config.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until(Duration::from_secs(20), "restarted and answering", || {
        pid_of(&sup, "hello-http").is_some_and(|p| p != pid)
            && get(addr).is_some_and(|b| b.contains("changed"))
    });
    assert_eq!(sup.cli(&["svc", "unload", "acme/hello-http"]).code, 0);
    assert!(get(addr).is_none(), "stopped");
}

#[test]
fn a_data_path_the_service_user_cannot_reach_is_named_at_load() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let sup = Sup::start(&private, 57, fast_timings(), vec![]);
    install(&sup, "sleeper", &[("run", SLEEPER)], &[]);
    let load = sup.cli(&["svc", "load", "acme/sleeper"]);
    if is_root() {
        // The service would run as nobody, who cannot pass through `private`.
        assert_ne!(load.code, 0, "{load:?}");
        assert!(load.stderr.contains("cannot pass through") && load.stderr.contains("private"), "{load:?}");
        assert!(status(&sup, "sleeper").is_none(), "nothing was loaded");
        assert!(!sup.data.join("specs/sleeper.spec").exists(), "no spec was written");
    } else {
        // A non-root supervisor runs the service as itself: its own folders are reachable.
        assert_eq!(load.code, 0, "{load:?}");
    }
}

#[test]
fn health_checks_follow_the_hooks_exit_code_and_up_is_ok_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 58, fast_timings(), vec![]);
    let check = "#!/bin/sh\nexit \"$(cat \"$WARREN_SVC_PATH/data/health\" 2>/dev/null || echo 0)\"\n";
    install(&sup, "checked", &[("run", SLEEPER), ("health-check", check)], &[]);
    install(&sup, "plain", &[("run", SLEEPER)], &[]);
    for name in ["checked", "plain"] {
        let load = sup.cli(&["svc", "load", &format!("acme/{name}"), "--health-check-interval", "1"]);
        assert_eq!(load.code, 0, "{load:?}");
    }
    let health = |name: &str| status(&sup, name).and_then(|s| s["health"].as_str().map(str::to_string));
    wait_until(Duration::from_secs(10), "both OK", || {
        health("checked").as_deref() == Some("OK") && health("plain").as_deref() == Some("OK")
    });
    let data = svc_dir(&sup, "checked").join("data/health");
    for (code, want) in [("2", "CRITICAL"), ("1", "WARNING"), ("7", "UNKNOWN"), ("0", "OK")] {
        std::fs::write(&data, code).unwrap();
        wait_until(Duration::from_secs(10), want, || health("checked").as_deref() == Some(want));
    }
    assert_eq!(sup.cli(&["svc", "stop", "acme/checked"]).code, 0);
    assert_eq!(health("checked"), None, "no health while down");
}

#[test]
fn a_helper_that_outlives_its_leader_is_killed_with_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 59, fast_timings(), vec![]);
    // The leader dies on TERM at once; its helper ignores TERM and would linger.
    let run = "#!/bin/sh\n(trap '' TERM; exec sleep 1000) &\necho \"$!\" > \"$WARREN_SVC_PATH/data/helper\"\nexec sleep 1000\n";
    install(&sup, "leader", &[("run", run)], &[("SHUTDOWN_TIMEOUT", "30")]);
    assert_eq!(sup.cli(&["svc", "load", "acme/leader"]).code, 0);
    let pid = pid_of(&sup, "leader").unwrap();
    let helper_file = svc_dir(&sup, "leader").join("data/helper");
    let helper: u32 =
        wait_for(Duration::from_secs(10), || std::fs::read_to_string(&helper_file).ok()?.trim().parse().ok())
            .expect("the helper started");
    assert!(alive(helper));
    let stop = sup.cli(&["svc", "stop", "acme/leader"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    wait_until(Duration::from_secs(5), "the helper is gone too", || !alive(helper));
    assert!(group_members(pid).is_empty());
    // A crash of the leader takes its helpers along before the restart.
    assert_eq!(sup.cli(&["svc", "start", "acme/leader"]).code, 0);
    let pid = pid_of(&sup, "leader").unwrap();
    let helper: u32 = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&helper_file).ok()?.trim().parse().ok().filter(|h| *h != helper)
    })
    .unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until(Duration::from_secs(5), "the crashed leader's helper is gone", || !alive(helper));
}

/// Children of `pid` that are zombies (exited, never reaped).
fn zombie_children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            stat_field(*p, 4).as_deref() == Some(&pid.to_string())
                && stat_field(*p, 3).as_deref() == Some("Z")
        })
        .collect()
}

#[test]
fn services_survive_sup_restart_and_are_still_reaped_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start_on(dir.path(), "60", "127.0.0.60:9638", "127.0.0.60:9631", fast_timings(), vec![]);
    install(&sup, "sleeper", &[("run", SLEEPER)], &[]);
    assert_eq!(sup.cli(&["svc", "load", "acme/sleeper"]).code, 0);
    let pid = pid_of(&sup, "sleeper").unwrap();
    let sup_pid = sup.pid();
    assert_eq!(sup.cli(&["sup", "restart"]).code, 0);
    wait_until(Duration::from_secs(30), "the supervisor answers again", || {
        std::fs::read_to_string(&sup.log).unwrap().matches("supervisor started").count() == 2
            && status(&sup, "sleeper").is_some()
    });
    assert_eq!(pid_of(&sup, "sleeper"), Some(pid), "the service kept running through the restart");
    kill_and_see_restarted(&sup, "sleeper", pid);
    let s = status(&sup, "sleeper").unwrap();
    assert!(
        s["last_failure"].as_str().unwrap().contains("signal 9"),
        "its exit status is known (reaped): {s}"
    );
    assert!(zombie_children(sup_pid).is_empty(), "no zombies: {:?}", zombie_children(sup_pid));
}

#[test]
fn a_service_cannot_touch_what_the_supervisor_writes_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 61, fast_timings(), vec![]);
    let probe = "#!/bin/sh\ncd \"$WARREN_SVC_PATH\"\nfor d in hooks config logs; do\n  if ln -s /etc \"$d/evil\" 2>/dev/null || touch \"$d/x\" 2>/dev/null; then echo \"$d writable\"; else echo \"$d refused\"; fi\ndone > data/probe\nexec sleep 1000\n";
    install(&sup, "probe", &[("run", probe)], &[]);
    assert_eq!(sup.cli(&["svc", "load", "acme/probe"]).code, 0);
    let out = svc_dir(&sup, "probe").join("data/probe");
    wait_until(Duration::from_secs(10), "the probe wrote", || lines(&out) == 3);
    let seen = std::fs::read_to_string(&out).unwrap();
    if is_root() {
        assert_eq!(seen, "hooks refused\nconfig refused\nlogs refused\n");
        let mode = |p: &Path| {
            use std::os::unix::fs::MetadataExt as _;
            let m = std::fs::symlink_metadata(p).unwrap();
            (m.uid(), m.mode() & 0o777)
        };
        assert_eq!(mode(&svc_dir(&sup, "probe")), (0, 0o750));
        assert_ne!(mode(&svc_dir(&sup, "probe").join("data")).0, 0, "data/ is the service's");
    } else {
        // Without root everything is the supervisor's user, the service's too.
        assert!(seen.contains("hooks writable"), "{seen}");
    }
}

/// Processes whose working directory is under `dir` (the bench starts every process there).
fn processes_in(dir: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| std::fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|c| c.starts_with(dir)))
        .filter(|p| alive(*p))
        .collect()
}

#[test]
fn bench_svc_reports_figures_for_warren_and_figures_or_na_for_supervisord_and_s6() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = ["bench", "svc", "--services", "5", "--samples", "2", "--idle-secs", "1", "--no-install"];
    let run = support::cli::warren(&[&args[..], &["--json", "--dir", d]].concat());
    let doc: serde_json::Value =
        serde_json::from_str(run.ok().trim()).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    assert_eq!(doc["services"], 5);
    let w = &doc["warren"];
    assert_eq!(w["first_restart_ms"]["samples"].as_array().map(Vec::len), Some(2), "{doc}");
    for figure in [
        &w["first_restart_ms"]["p50"],
        &w["first_restart_ms"]["max"],
        &w["load_to_running_ms"]["p50"],
        &w["pss_mib"],
        &w["idle_cpu_ms"],
    ] {
        assert!(figure.as_f64().is_some_and(|f| f >= 0.0), "{figure} in {doc}");
    }
    assert!(w["pss_mib"].as_f64().unwrap() > 0.0, "{doc}");
    assert_eq!(w["processes"], 1);
    for other in ["supervisord", "s6"] {
        let o = &doc[other];
        let measured = o["first_restart_ms"]["p50"].as_f64().is_some() && o["pss_mib"].as_f64().is_some();
        let na = o["na"].as_str().is_some_and(|r| !r.is_empty());
        assert!(measured != na, "{other}: figures or an explicit n/a with its reason: {doc}");
        let ratio = &doc["ratios"][format!("warren/{other}")]["first_restart_p50"];
        assert_eq!(ratio.is_number(), measured, "a ratio only against a measured baseline: {doc}");
    }
    assert!(run.stderr.contains("bench svc: warren: loading 5 services"), "progress on stderr: {run:?}");
    // Nothing left behind: no process, no file.
    assert!(processes_in(dir.path()).is_empty(), "left running: {:?}", processes_in(dir.path()));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the bench removes its directory");

    // The table names every figure, with n/a where a baseline is missing.
    let text = support::cli::warren(&[&args[..], &["--dir", d]].concat());
    let out = text.ok();
    for needle in
        ["first restart (kill -9) p50 ms", "load → running p50 ms", "PSS with 5 services MiB", "warren / s6"]
    {
        assert!(out.contains(needle), "{needle} missing from:\n{out}");
    }
    assert!(processes_in(dir.path()).is_empty());
}

/// What each thread of `pid` is doing (for a failure message): name, state, kernel stack.
fn threads_of(pid: u32) -> String {
    let mut out = String::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let p = t.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        let state =
            stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().next().unwrap_or("?").to_string());
        let wchan = std::fs::read_to_string(p.join("wchan")).unwrap_or_default();
        let stack = std::fs::read_to_string(p.join("stack")).unwrap_or_default();
        out.push_str(&format!("{} {:?} {wchan}\n{stack}\n", comm.trim(), state));
    }
    if let Ok(o) = std::process::Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-ex", "thread apply all bt 25"])
        .output()
    {
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    out
}

/// `kill -9` of a service's process; waits for its restart, or fails showing what the
/// supervisor was doing.
fn kill_and_see_restarted(sup: &Sup, name: &str, pid: u32) -> u32 {
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let restarted = wait_for(Duration::from_secs(20), || pid_of(sup, name).filter(|p| *p != pid));
    restarted.unwrap_or_else(|| {
        panic!(
            "{name} not restarted: {:?}\n{}\n{}",
            sup.cli(&["svc", "status", &format!("acme/{name}"), "--json"]),
            sup.log_tail(),
            threads_of(sup.pid())
        )
    })
}

#[test]
fn credential_references_in_a_services_config_resolve_rotate_and_never_reach_the_log() {
    use support::files::write_atomic;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    // The reference sits in sup.toml's layer for the service; a later one comes from user.toml.
    let services = format!(
        "[services.vaulted.config]\npassword = \"FILE:{s}/pw\"\nport = \"HTTP:80\"\n",
        s = secrets.display()
    );
    let mut extra = fast_timings();
    extra.extend(support::plugins::with_file_plugin(dir.path(), &services));
    write_atomic(&secrets.join("pw"), "first-Zq81");
    let mut sup = Sup::start(dir.path(), 60, extra, vec![]);
    let pkg = install(
        &sup,
        "vaulted",
        &[("run", SLEEPER), ("reconfigure", "#!/bin/sh\necho r >> \"$WARREN_SVC_PATH/data/reconfigured\"\n")],
        &[],
    );
    std::fs::create_dir_all(pkg.join("config")).unwrap();
    std::fs::write(
        pkg.join("config/app.conf"),
        "password={{cfg.password}} port={{cfg.port}} extra={{cfg.extra}}\n",
    )
    .unwrap();
    let load = sup.cli(&["svc", "load", "acme/vaulted"]);
    assert_eq!(load.code, 0, "{load:?}\n{}", sup.log_tail());
    let conf = svc_dir(&sup, "vaulted").join("config/app.conf");
    let read = || std::fs::read_to_string(&conf).unwrap_or_default();
    assert_eq!(
        read(),
        "password=first-Zq81 port=HTTP:80 extra=\n",
        "a scheme no plugin serves stays a value"
    );
    let pid = pid_of(&sup, "vaulted").unwrap();

    // Rotation: rendered again, reconfigure runs, the process stays.
    write_atomic(&secrets.join("pw"), "second-Yx27");
    wait_until(Duration::from_secs(20), "the rotated value rendered", || read().contains("second-Yx27"));
    let data = svc_dir(&sup, "vaulted").join("data");
    wait_until(Duration::from_secs(10), "reconfigure ran", || lines(&data.join("reconfigured")) >= 1);
    assert_eq!(pid_of(&sup, "vaulted"), Some(pid));

    // user.toml adds a reference that does not resolve: logged, the old config stays; once the
    // file exists, it is followed and rendered.
    let user = sup.data.join("user/vaulted/user.toml");
    std::fs::create_dir_all(user.parent().unwrap()).unwrap();
    std::fs::write(&user, format!("extra = \"FILE:{}/later\"\n", secrets.display())).unwrap();
    wait_until(Duration::from_secs(30), "the unresolved reference logged", || {
        std::fs::read_to_string(&sup.log).unwrap().contains("does not resolve")
    });
    assert!(read().contains("second-Yx27") && read().contains("extra=\n"), "{}", read());
    write_atomic(&secrets.join("later"), "third-Wv55");
    wait_until(Duration::from_secs(20), "the late value rendered", || read().contains("extra=third-Wv55"));

    // A load whose reference cannot resolve fails with the key and reference, not a value.
    install(&sup, "lacking", &[("run", SLEEPER)], &[]);
    std::fs::create_dir_all(sup.data.join("user/lacking")).unwrap();
    std::fs::write(
        sup.data.join("user/lacking/user.toml"),
        format!("pw = \"FILE:{}/absent\"\n", secrets.display()),
    )
    .unwrap();
    let err = sup.cli(&["svc", "load", "acme/lacking"]);
    assert_ne!(err.code, 0);
    assert!(err.stderr.contains("services.lacking.config.pw") && err.stderr.contains("/absent"), "{err:?}");
    assert_eq!(pid_of(&sup, "vaulted"), Some(pid), "the other service runs on");

    let log = std::fs::read_to_string(&sup.log).unwrap();
    for secret in ["first-Zq81", "second-Yx27", "third-Wv55"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }

    // A supervisor that comes back while a credential does not resolve leaves the running
    // process alone and reattaches it once the value is there.
    sup.kill9();
    std::fs::remove_file(secrets.join("pw")).unwrap();
    sup.spawn();
    wait_until(Duration::from_secs(30), "waiting for its credentials", || {
        std::fs::read_to_string(&sup.log).unwrap().contains("waiting for its credentials")
    });
    assert!(alive(pid), "not stopped while its credential is missing");
    write_atomic(&secrets.join("pw"), "fourth-Uu13");
    wait_until(Duration::from_secs(30), "reattached", || pid_of(&sup, "vaulted") == Some(pid));
    assert!(read().contains("fourth-Uu13"), "{}", read());
}

#[test]
fn a_failed_replacement_brings_the_old_service_back_and_an_unsupervisable_leftover_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut sup = Sup::start(dir.path(), 61, fast_timings(), vec![]);
    let good = install(&sup, "swapped", &[("run", SLEEPER)], &[]);
    assert_eq!(sup.cli(&["svc", "load", "acme/swapped"]).code, 0);
    let first = pid_of(&sup, "swapped").unwrap();
    // A newer release whose config template does not render.
    let newer = good.with_file_name("20261203000000");
    std::fs::create_dir_all(newer.join("config")).unwrap();
    std::fs::create_dir_all(newer.join("hooks")).unwrap();
    std::fs::copy(good.join("hooks/run"), newer.join("hooks/run")).unwrap();
    std::fs::copy(good.join("SVC_USER"), newer.join("SVC_USER")).unwrap();
    std::fs::write(newer.join("IDENT"), "acme/swapped/1.0.0/20261203000000").unwrap();
    std::fs::write(newer.join("config/broken.conf"), "{{#if}}\n").unwrap();
    let forced = sup.cli(&["svc", "load", "acme/swapped/1.0.0/20261203000000", "--force"]);
    assert_ne!(forced.code, 0);
    assert!(forced.stderr.contains("broken.conf"), "{forced:?}");
    wait_until(Duration::from_secs(20), "the old release up again", || {
        status(&sup, "swapped")
            .is_some_and(|s| s["state"] == "up" && s["package"] == format!("acme/swapped/1.0.0/{RELEASE}"))
    });
    assert!(!alive(first), "it was stopped for the replacement");

    // Killed supervisor; meanwhile the package loses its run hook, so the spec cannot be
    // launched again: the process left running is stopped, not left unwatched.
    let running = pid_of(&sup, "swapped").unwrap();
    sup.kill9();
    assert!(alive(running));
    std::fs::remove_file(good.join("hooks/run")).unwrap();
    sup.spawn();
    wait_until(Duration::from_secs(20), "the leftover stopped", || !alive(running));
    let log = std::fs::read_to_string(&sup.log).unwrap();
    assert!(log.contains("cannot be supervised"), "{}", sup.log_tail());
}

#[test]
fn a_post_run_hook_still_running_when_the_service_ends_is_killed_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Sup::start(dir.path(), 62, fast_timings(), vec![]);
    let post_run = "#!/bin/sh\necho $$ > \"$WARREN_SVC_PATH/data/post-run-pid\"\nexec sleep 1000\n";
    install(&sup, "lingering", &[("run", SLEEPER), ("post-run", post_run)], &[]);
    assert_eq!(sup.cli(&["svc", "load", "acme/lingering"]).code, 0);
    let file = svc_dir(&sup, "lingering").join("data/post-run-pid");
    let hook =
        wait_for(Duration::from_secs(20), || std::fs::read_to_string(&file).ok()?.trim().parse::<u32>().ok())
            .expect("the post-run hook started");
    assert!(alive(hook));
    assert_eq!(sup.cli(&["svc", "stop", "acme/lingering"]).code, 0);
    wait_until(Duration::from_secs(20), "the abandoned post-run hook gone", || !alive(hook));
}

/// The lines of a file, or nothing while it is missing.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn an_app_bound_to_a_db_group_waits_for_it_then_follows_its_members() {
    use support::keys::{ring_key, ring_key_env};
    use support::ring::{all_see_alive, member_ids, start_ring};
    let dir = tempfile::tempdir().unwrap();
    let env = ring_key_env(&ring_key("ring", "20240101000000"));
    let mut sups = start_ring(dir.path(), 90, 3, &fast_timings(), std::slice::from_ref(&env));
    let ids = member_ids(&sups);
    {
        let refs: Vec<&Sup> = sups.iter().collect();
        wait_until(Duration::from_secs(30), "3 alive", || all_see_alive(&refs, &ids));
    }
    let run = [("run", "#!/bin/sh\nexec sleep 100000\n")];
    for (i, port) in [(0, 5432), (1, 5433)] {
        let pkg = install(&sups[i], "db", &run, &[("EXPORTS", "port=port\n")]);
        std::fs::write(pkg.join("default.toml"), format!("port = {port}\nsecret = \"not-exported\"\n"))
            .unwrap();
    }
    // Hooks run as the service's user (nobody, as root): it writes where it owns.
    let reconfigure = "#!/bin/sh\necho x >> {{pkg.svc_var_path}}/reconfigured\n";
    let app = install(&sups[2], "app", &[run[0], ("reconfigure", reconfigure)], &[]);
    let marker = svc_dir(&sups[2], "app").join("var/reconfigured");
    std::fs::create_dir_all(app.join("config")).unwrap();
    std::fs::write(
        app.join("config/db.conf"),
        "{{#eachAlive bind.database.members as |m|}}{{m.sys.ip}}:{{m.cfg.port}}{{m.cfg.secret}} {{/eachAlive}}\nfirst {{bind.database.first.cfg.port}}\n",
    )
    .unwrap();
    let conf = svc_dir(&sups[2], "app").join("config/db.conf");

    // Strict (the default): loaded, but it waits, and says for what.
    let load = sups[2].cli(&["svc", "load", "acme/app", "--bind", "database:db.default"]);
    assert_eq!(load.code, 0, "{load:?}");
    assert!(
        load.stdout.contains("waits for its binds: database (db.default has no member)"),
        "{}",
        load.stdout
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(pid_of(&sups[2], "app").is_none() && !conf.exists(), "it must not start before its bind is met");

    // The first db member: the app starts, its template sees that member's exported port.
    assert_eq!(sups[0].cli(&["svc", "load", "acme/db"]).code, 0);
    wait_until(Duration::from_secs(30), "the app up with one db member", || {
        pid_of(&sups[2], "app").is_some() && read(&conf).contains("127.0.0.90:5432 ")
    });
    assert!(read(&conf).contains("first 5432"), "{}", read(&conf));
    assert!(!read(&conf).contains("not-exported"), "only EXPORTS travel: {}", read(&conf));

    // A second member joins the group: rendered again, reconfigure runs, no restart.
    let pid = pid_of(&sups[2], "app").unwrap();
    assert_eq!(sups[1].cli(&["svc", "load", "acme/db"]).code, 0);
    wait_until(Duration::from_secs(30), "both db members in the app's config", || {
        let c = read(&conf);
        c.contains("127.0.0.90:5432 ") && c.contains("127.0.0.91:5433 ")
    });
    wait_until(Duration::from_secs(20), "reconfigure ran", || lines(&marker) >= 1);
    assert_eq!(pid_of(&sups[2], "app"), Some(pid), "a bind change reconfigures, it does not restart");

    // One db member's supervisor dies: it drops out of eachAlive once the ring confirms it.
    sups[1].kill9();
    wait_until(Duration::from_secs(40), "the dead member gone from the app's config", || {
        let c = read(&conf);
        c.contains("127.0.0.90:5432 ") && !c.contains("127.0.0.91")
    });
    // The other unloads db: its supervisor runs on, but it is no db member any more.
    assert_eq!(sups[0].cli(&["svc", "unload", "acme/db"]).code, 0);
    wait_until(Duration::from_secs(30), "no db member left in the app's config", || {
        let c = read(&conf);
        c.contains("first \n") && !c.contains("127.0.0.90")
    });
}
