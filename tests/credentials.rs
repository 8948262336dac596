//! Credential references through real plugins: rotation without restart, keeping the last good
//! value, config references, `warren credential resolve`, vault-kv against a local HTTP server.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use support::cli::{self, Run};
use support::files::write_atomic;
use support::plugins::{install, registry, wasm_bytes};
use support::wait::wait_for;
use warren::config::SupConfig;
use warren::credentials::{CredentialResolver, ResolveError, resolve_once};
use warren::plugins::{CredentialError, Grant};
use warren::watch::FileWatch;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn file_rotation_without_restart() {
    let plugins = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    install(plugins.path(), &["file"]);
    let config = SupConfig::parse(
        &format!(
            "auth_token = \"FILE:{}\"\n[plugins.file]\nread_paths = [\"{}\"]\n",
            token.display(),
            secrets.path().display()
        ),
        "sup.toml",
    )
    .unwrap();
    let reg = registry(plugins.path(), &[("file", config.plugins["file"].clone())]);
    reg.load_dir().unwrap();
    let resolver = CredentialResolver::start(reg.clone(), &FileWatch::start().unwrap()).unwrap();
    let (label, reference) = config.references().into_iter().next().unwrap();
    assert_eq!(label, "auth_token");
    let mut rx = resolver.subscribe(&label, &reference);

    let v1 = wait_for(WAIT, || rx.borrow_and_update().clone()).expect("first value");
    assert_eq!((v1.expose(), v1.version), ("first-token", 1));

    // Rewrite the file (atomically, as secret managers do): a new value, no restart.
    let t = Instant::now();
    write_atomic(&token, b"second-token\n");
    let v2 =
        wait_for(WAIT, || rx.borrow_and_update().clone().filter(|v| v.version == 2)).expect("rotated value");
    eprintln!("rotation observed after {:?}", t.elapsed());
    assert_eq!(v2.expose(), "second-token");
    assert_ne!(v2.fingerprint, v1.fingerprint);
    let j = resolver.credentials_json();
    assert_eq!(j["credentials"][0]["version"], 2);
    assert_eq!(j["credentials"][0]["fingerprint"], v2.fingerprint.as_str());
    assert!(!j.to_string().contains("second-token"), "the value never appears in /credentials");

    // In-place rewrite too (truncate + write). A reader may catch the file between truncate
    // and write (any in-place writer has that race); the value settles on the new content.
    std::fs::write(&token, "third-token").unwrap();
    let v3 = wait_for(WAIT, || rx.borrow_and_update().clone().filter(|v| v.expose() == "third-token"))
        .expect("in-place rewrite seen");
    assert!(v3.version >= 3);

    // Delete: the last good value is kept and the error is shown.
    std::fs::remove_file(&token).unwrap();
    let err = wait_for(WAIT, || {
        resolver.credentials_json()["credentials"][0]["last_error"].as_str().map(str::to_string)
    })
    .expect("error shown");
    assert!(err.contains("not found"), "{err}");
    assert_eq!(resolver.current(&reference).unwrap().expose(), "third-token");
    assert_eq!(rx.borrow().as_ref().unwrap().version, v3.version);
    assert_eq!(resolver.credentials_json()["credentials"][0]["version"], v3.version);

    // The file comes back: resolved again, error cleared.
    write_atomic(&token, b"fourth-token");
    let v4 = wait_for(WAIT, || rx.borrow_and_update().clone().filter(|v| v.expose() == "fourth-token"))
        .expect("recovered");
    assert_eq!(v4.version, v3.version + 1);
    assert!(resolver.credentials_json()["credentials"][0]["last_error"].is_null());
}

#[test]
fn literals_and_pending_schemes() {
    let plugins = tempfile::tempdir().unwrap();
    let reg = registry(
        plugins.path(),
        &[("env", Grant { env: vec!["CARGO_PKG_NAME".into()], ..Grant::default() })],
    );
    reg.load_dir().unwrap();
    let files = FileWatch::start().unwrap();
    let _watch = reg.watch(&files).unwrap();
    let resolver = CredentialResolver::start(reg.clone(), &files).unwrap();
    let lit = resolver.subscribe("ctl_secret", "literal:ENV:not-routed");
    assert_eq!(lit.borrow().as_ref().unwrap().expose(), "ENV:not-routed");
    let plain = resolver.subscribe("ring_key", "abc:def");
    assert_eq!(plain.borrow().as_ref().unwrap().expose(), "abc:def");
    // ENV is routed but no plugin serves it yet: pending, with the error shown.
    let mut env = resolver.subscribe("auth_token", "ENV:CARGO_PKG_NAME");
    let err = wait_for(WAIT, || {
        resolver.status().into_iter().find(|s| s.reference == "ENV:CARGO_PKG_NAME").and_then(|s| s.last_error)
    })
    .unwrap();
    assert!(err.contains("no loaded plugin serves scheme ENV"), "{err}");
    // Dropping the env plugin into the folder resolves it without a restart.
    install(plugins.path(), &["env"]);
    let v = wait_for(WAIT, || env.borrow_and_update().clone()).expect("resolved once the plugin arrived");
    assert_eq!(v.expose(), "warren");
    let j = resolver.credentials_json().to_string();
    assert!(!j.contains("not-routed") && !j.contains("abc:def"), "literals are never shown: {j}");
}

#[test]
fn cli_credential_resolve_grants_exactly_what_the_reference_names() {
    let plugins = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    install(plugins.path(), &["env", "file"]);
    std::fs::write(secrets.path().join("db"), "db-pass\n").unwrap();
    let run = |reference: &str| -> Run {
        let mut cmd = cli::command();
        cmd.args(["credential", "resolve", reference, "--plugin-trust", "off"])
            .args(["--plugin-path", plugins.path().to_str().unwrap()])
            .env("WARREN_CACHE_KEY_PATH", plugins.path().join("keys"))
            .env("WARREN_DATA_PATH", plugins.path().join("data"))
            .env("WARREN_T_TOKEN", "from-env");
        cli::run(&mut cmd, None)
    };
    assert_eq!(run("ENV:WARREN_T_TOKEN").ok(), "from-env\n");
    assert_eq!(run(&format!("FILE:{}/db", secrets.path().display())).ok(), "db-pass\n");
    assert_eq!(run("literal:x:y").ok(), "x:y\n");
    assert!(run("NOPE:x").fails().contains("serves scheme NOPE"));
    run(&format!("FILE:{}/missing", secrets.path().display())).fails();
}

/// A one-connection-at-a-time HTTP server answering Vault KV v2 reads, on `bind`.
fn fake_vault_on(bind: &str) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener =
        TcpListener::bind(bind).unwrap_or_else(|e| panic!("cannot bind the fake Vault on {bind}: {e}"));
    let addr = listener.local_addr().unwrap().to_string();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut token = String::new();
            let mut content_length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("x-vault-token:") {
                    token = v.trim().to_string();
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; content_length];
            reader.read_exact(&mut body).unwrap();
            let (status, body) = if token != "root-token" {
                ("403 Forbidden", r#"{"errors":["permission denied"]}"#.to_string())
            } else if request_line.starts_with("GET /v1/secret/data/myapp ") {
                ("200 OK", r#"{"lease_duration":0,"data":{"data":{"password":"vault-pass"},"metadata":{"version":3}}}"#.to_string())
            } else {
                ("404 Not Found", r#"{"errors":[]}"#.to_string())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, hits)
}

fn fake_vault() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    fake_vault_on("127.0.0.1:0")
}

#[test]
fn vault_kv_against_a_local_server() {
    // The plugin can only reach hosts its manifest requests: if it names a fixed address
    // (rather than "*" = whatever the operator grants), the fake Vault must listen there.
    let manifest = warren::plugins::Manifest::from_component(&wasm_bytes("vault-kv")).unwrap();
    let requested = &manifest.requests.http_hosts;
    let bind =
        if requested.iter().any(|h| h == "*") { "127.0.0.1:0".to_string() } else { requested[0].clone() };
    let (addr, hits) = fake_vault_on(&bind);
    let plugins = tempfile::tempdir().unwrap();
    install(plugins.path(), &["vault-kv"]);
    // The plugin reads VAULT_ADDR/VAULT_TOKEN from its (granted) env: run it in a child warren
    // so the test process environment stays untouched.
    let run_at = |hosts: &str, vault_addr: &str| {
        let config = plugins.path().join(format!("sup-{}.toml", hosts.len()));
        std::fs::write(
            &config,
            format!("[plugins.vault-kv]\nenv = [\"VAULT_ADDR\", \"VAULT_TOKEN\"]\nhttp_hosts = [{hosts}]\n"),
        )
        .unwrap();
        let mut cmd = cli::command();
        cmd.args(["credential", "resolve", "VAULT:secret/data/myapp#password", "--plugin-trust", "off"])
            .args(["--plugin-path", plugins.path().to_str().unwrap(), "--config", config.to_str().unwrap()])
            .env("WARREN_CACHE_KEY_PATH", plugins.path().join("keys"))
            .env("WARREN_DATA_PATH", plugins.path().join("data"))
            .env("VAULT_ADDR", vault_addr)
            .env("VAULT_TOKEN", "root-token");
        cli::run(&mut cmd, None)
    };
    let run = |hosts: &str| run_at(hosts, &format!("http://{addr}"));
    assert_eq!(run(&format!("\"{addr}\"")).ok(), "vault-pass\n");
    let served = hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(served, 1);

    // Not granted: refused by the host, the server never sees a connection.
    let out = run("\"127.0.0.1:1\"");
    let err = out.fails();
    assert!(err.contains("denied"), "{err}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), served);

    // Userinfo before the granted authority: the gate refuses what it cannot match exactly
    // against what would be dialled (the whole "x@host:port").
    let out = run_at(&format!("\"{addr}\""), &format!("http://x@{addr}"));
    let err = out.fails();
    assert!(err.contains("outbound request denied by the host"), "{err}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), served);
}

#[test]
fn snoop_http_is_refused_without_a_grant() {
    let (addr, hits) = fake_vault();
    let plugins = tempfile::tempdir().unwrap();
    install(plugins.path(), &["snoop-http"]);
    let reg = registry(
        plugins.path(),
        &[("snoop-http", Grant { http_hosts: vec![addr.clone()], ..Grant::default() })],
    );
    reg.load_dir().unwrap();
    // The operator granted the host, but the manifest requested none: still refused.
    match resolve_once(&reg, &format!("SNOOPHTTP:{addr}/v1/secret/data/myapp")) {
        Err(ResolveError::Denied(_)) => {}
        other => panic!("expected denied, got {:?}", other.map(|_| ())),
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let src = reg.get_credential_source("SNOOPHTTP").unwrap();
    assert!(matches!(src.resolve("SNOOPHTTP:example.com:80/"), Ok(Err(CredentialError::Denied(_)))));
}

#[test]
fn plugin_runtime_from_sup_toml() {
    let data = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, "rt-token").unwrap();
    let plugins = data.path().join("plugins");
    install(&plugins, &["file"]);
    let text = format!(
        "data_path = \"{}\"\nplugin_trust = \"off\"\nauth_token = \"FILE:{}\"\nctl_secret = \"literal:c\"\n\
         [plugins.file]\nread_paths = [\"{}\"]\n[services.web.config]\ndb_password = \"FILE:{}\"\n",
        data.path().display(),
        token.display(),
        secrets.path().display(),
        token.display()
    );
    let config = SupConfig::parse(&text, "sup.toml").unwrap();
    let rt = warren::plugins::PluginRuntime::start(
        &config,
        None,
        None,
        warren::crypto::KeyCache::new(data.path().join("keys")),
        &FileWatch::start().unwrap(),
    )
    .unwrap();
    let mut rx = rt.subscribe("auth_token", &format!("FILE:{}", token.display()));
    let v = wait_for(WAIT, || rx.borrow_and_update().clone()).expect("resolved");
    assert_eq!(v.expose(), "rt-token");
    assert_eq!(rt.plugins_json()["plugins"][0]["name"], "file");
    let creds = rt.credentials_json();
    let list = creds["credentials"].as_array().unwrap();
    assert_eq!(list.len(), 2, "the file reference is shared by two keys, plus the literal");
    let file_ref = list.iter().find(|c| c["reference"] != "literal").unwrap();
    assert_eq!(file_ref["used_by"].as_array().unwrap().len(), 2);
    assert!(
        data.path().join("plugin-cache").read_dir().unwrap().count() >= 1,
        "compiled into {{data_path}}/plugin-cache"
    );
    // The same JSON through the HTTP gateway.
    let rt = std::sync::Arc::new(rt);
    let router = warren::http::build(
        warren::http::auth::fixed(None),
        vec![warren::http::plugins_api::routes(rt.clone())],
    );
    let tokio_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = tokio_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio_rt.spawn(async move { axum::serve(listener, router).await });
    let get = |path: &str| -> serde_json::Value {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    };
    assert_eq!(get("/plugins")["plugins"][0]["name"], "file");
    let creds = get("/credentials");
    assert_eq!(creds["credentials"].as_array().unwrap().len(), 2);
    assert!(!creds.to_string().contains("rt-token"));
}
