//! The HTTP gateway's `/services` endpoints under a real supervisor: a package built with
//! `pkg build`, loaded over the ctl gateway, its `/services` body validated against Habitat's
//! http_gateway_services_schema.json; health codes from a real health-check hook; the bearer
//! token in front of it all. Also the tests of the schema validator those checks use.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::ring::fast_timings;
use support::schema::Validator;
use support::services::{install, pid_of, svc_dir};
use support::sup::Sup;
use support::wait::{wait_for, wait_until};
use warren::http::client;

const SCHEMA: &str = "http_gateway_services_schema.json";

fn get_json(sup: &Sup, path: &str) -> (u16, Value) {
    let r = sup.get(path).unwrap_or_else(|| panic!("GET {path}: no answer\n{}", sup.log_tail()));
    (r.status, r.json().unwrap_or(Value::Null))
}

fn assert_valid(doc: &Value) {
    let errors = Validator::habitat().errors(SCHEMA, doc);
    assert!(errors.is_empty(), "not valid against {SCHEMA}:\n{}\n{doc:#}", errors.join("\n"));
}

#[test]
fn services_of_a_real_supervisor_follow_habitats_schema_behind_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let secret = support::keys::origin_keys(&keys, "acme");
    let hart = support::packages::build_hello_http(&keys, "acme", dir.path()).display().to_string();
    let token = "services-token-70";
    let envs = vec![("WARREN_GATEWAY_AUTH_TOKEN".to_string(), token.to_string())];
    let sup = Sup::start(dir.path(), 70, fast_timings(), envs);
    warren::crypto::KeyCache::new(sup.data.join("keys")).write(&secret.public().to_file()).unwrap();
    let user = sup.data.join("user/hello-http/user.toml");
    std::fs::create_dir_all(user.parent().unwrap()).unwrap();
    std::fs::write(&user, "message = \"from user.toml\"\n[http]\nlisten = \"127.0.0.70\"\nport = 8070\n")
        .unwrap();

    let (code, empty) = get_json(&sup, "/services");
    assert_eq!((code, &empty), (200, &json!([])), "nothing loaded yet");
    let load = sup.cli(&["svc", "load", &hart]);
    assert_eq!(load.code, 0, "{load:?}\n{}", sup.log_tail());
    let pid = pid_of(&sup, "hello-http").expect("up once load returned");
    wait_until(Duration::from_secs(40), "its health check says OK on /services", || {
        get_json(&sup, "/services").1[0]["health_check"] == "Ok"
    });

    let (code, list) = get_json(&sup, "/services");
    assert_eq!(code, 200);
    assert_valid(&list);
    let s = &list[0];
    let ident = s["pkg"]["ident"].as_str().unwrap().to_string();
    assert!(ident.starts_with("acme/hello-http/0.1.0/"), "{ident}");
    assert_eq!(s["spec_identifier"], ident.as_str());
    assert_eq!(s["pkg"]["release"], ident.rsplit('/').next().unwrap());
    assert_eq!(s["service_group"], "hello-http.default");
    assert_eq!(s["process"]["pid"], pid);
    assert_eq!(s["process"]["state"], "up");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let entered = s["process"]["state_entered"].as_i64().unwrap();
    assert!((now - 120..=now).contains(&entered), "state_entered {entered} is seconds since the epoch");
    assert_eq!((&s["desired_state"], &s["topology"]), (&json!("Up"), &json!("standalone")));
    assert_eq!(s["sys"]["member_id"], sup.member_id());
    assert_eq!(s["sys"]["ctl_gateway_port"], sup.ctl.rsplit_once(':').unwrap().1.parse::<u16>().unwrap());
    assert_eq!(s["sys"]["http_gateway_port"], sup.http.rsplit_once(':').unwrap().1.parse::<u16>().unwrap());
    assert_eq!(s["pkg"]["exports"], json!({"port": "http.port"}));
    assert_eq!(s["pkg"]["shutdown_signal"], "TERM");
    assert_eq!(s["pkg"]["shutdown_timeout"], 5);
    assert_eq!(s["cfg"]["http"]["port"], 8070, "the merged config: user.toml over default.toml");
    assert_eq!(s["cfg"]["message"], "from user.toml");
    let run = svc_dir(&sup, "hello-http").join("hooks/run");
    assert_eq!(s["hooks"]["run"]["render_pair"], run.display().to_string());
    assert!(s["hooks"]["health_check"].is_object() && s["hooks"]["reconfigure"].is_object());
    assert_eq!(s["hooks"]["init"], Value::Null, "hello-http has no init hook");
    assert_eq!(s["manager_fs_cfg"]["specs_path"], sup.data.join("specs").display().to_string());
    assert!(std::path::Path::new(s["spec_file"].as_str().unwrap()).is_file(), "{}", s["spec_file"]);
    assert_eq!(s["last_process_state"], Value::Null, "never failed");

    // The ring hears of it: a Service rumor with its exported config, in /census and
    // /butterfly, both valid against Habitat's schemas.
    wait_until(Duration::from_secs(20), "the service in /census", || {
        get_json(&sup, "/census").1["census_groups"]["hello-http.default"]["population"][sup.member_id()]
            .is_object()
    });
    let (code, census) = get_json(&sup, "/census");
    assert_eq!(code, 200);
    let errors = Validator::habitat().errors("http_gateway_census_schema.json", &census);
    assert!(errors.is_empty(), "/census: {}\n{census:#}", errors.join("\n"));
    let group = &census["census_groups"]["hello-http.default"];
    let me = &group["population"][sup.member_id()];
    assert_eq!(me["package"], ident.as_str());
    assert_eq!(me["cfg"], json!({"port": 8070}), "only what EXPORTS names, from the merged config");
    assert_eq!(
        (&me["alive"], &me["service"], &me["group"]),
        (&json!(true), &json!("hello-http"), &json!("default"))
    );
    assert_eq!(me["sys"]["ip"], "127.0.0.70");
    assert!(me["pkg_incarnation"].as_u64().is_some_and(|i| i >= 1), "{me}");
    assert_eq!(group["election_status"], "None");
    let (_, butterfly) = get_json(&sup, "/butterfly");
    let errors = Validator::habitat().errors("http_gateway_butterfly_schema.json", &butterfly);
    assert!(errors.is_empty(), "/butterfly: {}\n{butterfly:#}", errors.join("\n"));

    // One service: the same item, in the list schema's item shape.
    let (code, one) = get_json(&sup, "/services/hello-http/default");
    assert_eq!(code, 200);
    assert_valid(&json!([one.clone()]));
    assert_eq!(one["pkg"], s["pkg"]);
    // Its config: the merged layers as JSON.
    let (code, cfg) = get_json(&sup, "/services/hello-http/default/config");
    assert_eq!(code, 200);
    assert_eq!(cfg, json!({"message": "from user.toml", "http": {"listen": "127.0.0.70", "port": 8070}}));
    // Its health: OK, and hello-http's check prints nothing.
    let (code, health) = get_json(&sup, "/services/hello-http/default/health");
    assert_eq!((code, health), (200, json!({"status": "OK", "stdout": "", "stderr": ""})));

    // Not loaded, an org it was not loaded with, a malformed name.
    for path in [
        "/services/nothing/default",
        "/services/nothing/default/config",
        "/services/nothing/default/health",
        "/services/hello-http/default/acme",
        "/services/hello-http/default/acme/health",
        "/services/hello-http/other",
    ] {
        assert_eq!(sup.get(path).unwrap().status, 404, "{path}");
    }
    assert_eq!(sup.get("/services/hello.http/default").unwrap().status, 400);

    // Behind the gateway's token: nothing without it, nothing with a wrong one.
    for path in ["/services", "/services/hello-http/default", "/services/hello-http/default/health"] {
        for presented in [None, Some("wrong")] {
            let r = client::request(&sup.http, "GET", path, presented, None, Duration::from_secs(2)).unwrap();
            assert_eq!(r.status, 401, "{path} with {presented:?}");
            assert!(!r.text().contains("hello-http"), "{}", r.text());
        }
    }
    assert_eq!(sup.cli(&["svc", "unload", "acme/hello-http"]).code, 0);
    assert_eq!(get_json(&sup, "/services"), (200, json!([])));
}

#[test]
fn health_answers_habitats_codes_with_the_last_checks_output() {
    let dir = tempfile::tempdir().unwrap();
    // Its config names a secret (a FILE: reference in sup.toml's layer for it): the gateway
    // shows the reference as written, never the value.
    let secrets = dir.path().join("secrets");
    let reference = format!("FILE:{}/pw", secrets.display());
    let mut extra = fast_timings();
    extra.extend(support::plugins::with_file_plugin(
        dir.path(),
        &format!("[services.checked.config]\npassword = \"{reference}\"\n"),
    ));
    support::files::write_atomic(&secrets.join("pw"), "secret-Hq72");
    let sup = Sup::start(dir.path(), 71, extra, vec![]);
    // Each run says which run it is, on both streams, and exits with the code in data/health.
    let check = "#!/bin/sh\nd=\"$WARREN_SVC_PATH/data\"\nn=$(( $(cat \"$d/runs\" 2>/dev/null || echo 0) + 1 ))\necho $n > \"$d/runs\"\ncode=$(cat \"$d/health\" 2>/dev/null || echo 0)\necho \"run $n exits $code\"\necho \"stderr of run $n\" >&2\nexit $code\n";
    let run = "#!/bin/sh\nexec sleep 1000\n";
    install(&sup, "checked", &[("run", run), ("health-check", check)], &[]);
    let load = sup.cli(&["svc", "load", "acme/checked", "--health-check-interval", "1"]);
    assert_eq!(load.code, 0, "{load:?}");
    let data = svc_dir(&sup, "checked").join("data");
    for (code, want, status) in
        [("0", "OK", 200), ("2", "CRITICAL", 503), ("3", "UNKNOWN", 500), ("1", "WARNING", 200)]
    {
        std::fs::write(data.join("health"), code).unwrap();
        let body = wait_for(Duration::from_secs(15), || {
            let r = sup.get("/services/checked/default/health")?;
            let body = r.json().ok()?;
            (r.status == status
                && body["status"] == want
                && body["stdout"].as_str()?.contains(&format!("exits {code}")))
            .then_some(body)
        })
        .unwrap_or_else(|| {
            panic!(
                "no {status} {want}: {:?}\n{}",
                sup.get("/services/checked/default/health"),
                sup.log_tail()
            )
        });
        // Only the latest run's output, though the hook's logs keep every run.
        let out = body["stdout"].as_str().unwrap();
        let n = out.trim().strip_prefix("run ").and_then(|r| r.split(' ').next()).unwrap();
        assert_eq!(out, format!("run {n} exits {code}\n"), "one run's stdout");
        assert_eq!(body["stderr"], format!("stderr of run {n}\n"));
    }
    let log = std::fs::read_to_string(svc_dir(&sup, "checked").join("logs/health-check.stdout.log")).unwrap();
    assert!(log.lines().count() >= 4, "the log keeps every run: {log}");
    let (code, list) = get_json(&sup, "/services");
    assert_eq!(code, 200);
    assert_valid(&list);
    assert_eq!(list[0]["health_check"], "Warning");
    assert_eq!(list[0]["health_check_interval"], json!({"secs": 1, "nanos": 0}));
    assert_eq!(list[0]["cfg"], json!({"password": reference}));
    assert_eq!(get_json(&sup, "/services/checked/default/config"), (200, json!({"password": reference})));
    assert!(!list.to_string().contains("secret-Hq72"), "a credential's value never reaches the gateway");

    // A crash: the failure is the previous process's state, with its pid and time.
    let pid = pid_of(&sup, "checked").unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until(Duration::from_secs(15), "restarted", || pid_of(&sup, "checked").is_some_and(|p| p != pid));
    let (_, list) = get_json(&sup, "/services");
    assert_valid(&list);
    let last = &list[0]["last_process_state"];
    assert_eq!(
        (&last["pid"], &last["termination_reason"]),
        (&json!(pid), &json!("run_hook_failed")),
        "{last}"
    );
    assert!(list[0]["restart_count"].as_u64().unwrap() >= 1);

    // Stopped: no health any more (Habitat has none to show: 404), the process is down.
    assert_eq!(sup.cli(&["svc", "stop", "acme/checked"]).code, 0);
    assert_eq!(sup.get("/services/checked/default/health").unwrap().status, 404);
    let (_, list) = get_json(&sup, "/services");
    assert_valid(&list);
    assert_eq!((&list[0]["process"]["state"], &list[0]["process"]["pid"]), (&json!("down"), &Value::Null));
    assert_eq!((&list[0]["desired_state"], &list[0]["health_check"]), (&json!("Down"), &json!("Unknown")));
}

// The validator the tests above rely on: Habitat's own samples pass, and wrong documents fail.

#[test]
fn schema_validator_accepts_habitats_samples_and_rejects_wrong_documents() {
    let v = Validator::habitat();
    let dir = support::fixtures::interop_dir().join("components/sup/tests/fixtures/http-gateway");
    let sample: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("sample-services-with-cfg-output.json")).unwrap(),
    )
    .unwrap();
    for name in ["sample-services-with-cfg-output.json", "sample-services-without-cfg-output.json"] {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap();
        assert_eq!(v.errors(SCHEMA, &doc), Vec::<String>::new(), "{name}");
    }
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut doc = sample.clone();
        f(&mut doc[0]);
        v.errors(SCHEMA, &doc)
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("required", broken(&|s| drop(s.as_object_mut().unwrap().remove("pkg")))),
        ("type", broken(&|s| s["restart_count"] = json!("1"))),
        ("integer", broken(&|s| s["process"]["state_entered"] = json!(1.5))),
        ("enum", broken(&|s| s["desired_state"] = json!("up"))),
        ("additionalProperties", broken(&|s| s["lulz"] = json!(true))),
        ("nested additionalProperties", broken(&|s| s["sys"]["extra"] = json!(1))),
        ("items", broken(&|s| s["binds"] = json!([1]))),
        ("oneOf", broken(&|s| s["hooks"]["run"] = json!({"render_pair": 1}))),
        ("$ref into a sibling file", broken(&|s| s["pkg"]["deps"][0]["version"] = json!(2))),
        ("$ref resolved by fallback", broken(&|s| s["spec_ident"] = json!({"origin": "core"}))),
        ("additionalProperties schema", broken(&|s| s["pkg"]["env"]["PATH"] = json!(1))),
        ("type list", broken(&|s| s["config_from"] = json!(3))),
    ];
    for (what, errors) in cases {
        assert!(!errors.is_empty(), "{what}: a wrong document passed");
    }
    assert!(!v.errors(SCHEMA, &json!({"not": "a list"})).is_empty());
    assert!(!v.errors(SCHEMA, &json!([{"lulz": true}])).is_empty(), "Habitat's own trivial failure");
    // A keyword it does not implement is an error, not a silent pass.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.json"), r#"{"type": "string", "pattern": "^a"}"#).unwrap();
    let errors = Validator::load(dir.path()).errors("s.json", &json!("b"));
    assert!(errors.iter().any(|e| e.contains("unsupported schema keyword \"pattern\"")), "{errors:?}");
}
