//! The README's main job: `examples/ring-demo.sh` (what `./scripts/demo.sh` runs after building)
//! brings up its ring, rotates the FILE: token, runs a service with its hooks from a plugin,
//! configures a service group, fails a leader-follower group over, and leaves no supervisor
//! running when it ends.

mod support;

use std::process::Command;
use std::time::Duration;

use support::fixtures::repo_root;
use support::plugins::ensure_plugins_built;
use support::wait::wait_for;

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purposes: it is not serving anything.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

#[test]
fn the_demo_rotates_a_file_token_and_leaves_nothing_running() {
    ensure_plugins_built();
    let out = Command::new(repo_root().join("examples/ring-demo.sh"))
        .args(["--for", "1"])
        .env("WARREN", env!("CARGO_BIN_EXE_warren"))
        .env_remove("WARREN_GATEWAY_AUTH_TOKEN")
        .output()
        .expect("cannot run examples/ring-demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all 3 alive"), "{stdout}");
    assert!(stdout.contains("the new token is accepted"), "{stdout}");
    assert!(stdout.contains("pong from 127.0.0.1:9632"), "ctl ping through cli.toml: {stdout}");
    assert!(stdout.contains("supervisor 3 is back") && stdout.contains(", alive)"), "sup restart: {stdout}");
    assert!(!stdout.contains(" failed "), "every plugin loads: {stdout}");
    assert!(stdout.contains("Hello from hello-http"), "the service answers from its config: {stdout}");
    assert!(stdout.contains("Hello again, from user.toml"), "a config change is served: {stdout}");
    assert!(stdout.contains("restarted: pid"), "a crash is restarted: {stdout}");
    assert!(
        stdout.contains(r#"{"status":"OK","stderr":"","stdout":""}"#),
        "its health on the gateway: {stdout}"
    );
    assert!(stdout.contains(r#""service_group":"hello-http.default""#), "/services lists it: {stdout}");
    // The service's hooks come from the hook-example plugin: its health and its log lines.
    assert!(stdout.contains("\"health\":\"OK\""), "health from the plugin: {stdout}");
    assert!(stdout.contains("warren::plugin: init hello-http.default"), "the plugin's init: {stdout}");
    assert!(stdout.contains("health: CRITICAL (from the plugin"), "fail_health is seen: {stdout}");
    // Step 8: one encrypted config apply re-renders all three members; plaintext and an old
    // version are refused with their reasons.
    assert!(stdout.contains("belongs to org demo"), "plaintext refused: {stdout}");
    for port in [18080, 18082, 18083] {
        assert!(
            stdout.contains(&format!("GET http://127.0.0.1:{port}/   Hello from one config apply")),
            "member on {port} re-rendered: {stdout}"
        );
    }
    assert!(stdout.contains("current version 1; use 2"), "an old version is refused: {stdout}");
    assert!(stdout.contains("3 \"alive\":true"), "the census lists the three members: {stdout}");
    // Step 9: a leader-follower group elects, fails over on a kill -9 of its leader's
    // supervisor, and takes the restarted one back as a follower.
    assert!(stdout.contains("elected: supervisor "), "{stdout}");
    assert!(
        stdout.contains("kv-leader.default   leader  finished, term "),
        "svc status shows the role: {stdout}"
    );
    assert!(stdout.contains("failover: supervisor "), "{stdout}");
    assert!(stdout.contains("rejoined: supervisor ") && stdout.contains("(follower)"), "{stdout}");
    assert_eq!(
        stdout.matches(r#"8400/   role = "leader""#).count(),
        2,
        "one leader, before and after: {stdout}"
    );
    assert_eq!(stdout.matches(r#"8400/   role = "follower""#).count(), 4, "{stdout}");
    // Every process started for the demo names its temp folder on its command line; none may
    // be left once the demo has returned.
    let work = stdout
        .lines()
        .find_map(|l| l.strip_prefix("$ cat ")?.strip_suffix("/sup.toml"))
        .unwrap_or_else(|| panic!("the demo did not show its sup.toml:\n{stdout}"))
        .to_string();
    let left = || -> Vec<String> {
        let procs = std::fs::read_dir("/proc").unwrap().filter_map(Result::ok);
        procs
            .filter_map(|p| {
                let pid: u32 = p.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                (cmdline.contains(&work) && alive(pid)).then(|| format!("{pid}: {cmdline}"))
            })
            .collect()
    };
    if wait_for(Duration::from_secs(10), || left().is_empty().then_some(())).is_none() {
        panic!("processes outlived the demo: {:#?}", left());
    }
    // It announced its three supervisors.
    let pids = stdout.lines().filter_map(|l| l.strip_prefix("supervisor ")?.split_once(": pid ")).count();
    assert_eq!(pids, 3, "{stdout}");
}
