//! Node admission against a real `warren keyserver run`: what it creates on first start, the
//! admin commands over the Noise channel, refusals, and state that survives kill -9.

mod support;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use std::time::Duration;

use support::cli;
use support::keyserver::{self, Keyserver};
use support::ring::{all_see_alive, args, fast_timings, member_ids};
use support::sup::Sup;
use support::wait::{wait_for, wait_until};
use warren::admission::keyserver::{Claim, Keyserver as KsCore, OsRng};
use warren::admission::store::Store;
use warren::admission::{Cgc, JoinString};
use warren::crypto::keys::{BoxSecretKeyFile, KeyKind, SigPublicKey, SigSecretKey};
use warren::crypto::{KeyCache, sodium};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn admission_public(ks: &Keyserver) -> SigPublicKey {
    let cache = KeyCache::new(ks.data.join("keys"));
    SigPublicKey::try_from(&cache.latest(KeyKind::SigPublic, &format!("{}-admission", ks.ring)).unwrap())
        .unwrap()
}

/// The join string: the last line of `token create`.
fn create(ks: &Keyserver, args: &[&str]) -> JoinString {
    let mut a = vec!["token", "create"];
    a.extend_from_slice(args);
    let out = ks.admit(&a).ok().to_string();
    let last = out.lines().last().expect("token create printed nothing");
    JoinString::parse(last).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn first_start_creates_keys_and_secret_once_and_restarts_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = Keyserver::start(dir.path(), "acme");
    let secret = ks.admin_secret();
    assert_eq!(mode(&ks.data.join("ADMIN_SECRET")), 0o600);
    assert_eq!(mode(&ks.data), 0o700);
    let cache = KeyCache::new(ks.data.join("keys"));
    assert_eq!(cache.revisions(KeyKind::SigSecret, "acme-admission").unwrap().len(), 1);
    assert_eq!(cache.revisions(KeyKind::BoxSecret, "acme-keyserver").unwrap().len(), 1);
    assert_eq!(cache.revisions(KeyKind::SymSecret, "acme").unwrap().len(), 1);
    let pin_before = create(&ks, &["--node", "n1"]).pin;
    assert!(pin_before.matches(&admission_public(&ks).key), "the join string pins the admission key");

    ks.kill9();
    ks.spawn();
    assert_eq!(ks.admin_secret(), secret, "ADMIN_SECRET is never replaced");
    assert_eq!(cache.revisions(KeyKind::SigSecret, "acme-admission").unwrap().len(), 1);
    assert_eq!(cache.revisions(KeyKind::SymSecret, "acme").unwrap().len(), 1);
    assert_eq!(create(&ks, &["--node", "n2"]).pin, pin_before);
    let log = ks.log_text();
    assert!(!log.contains(&secret), "the admin secret is not logged");
}

#[test]
fn tokens_are_created_listed_and_revoked_over_the_noise_channel() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let out = ks
        .admit(&[
            "token",
            "create",
            "--node",
            "web1",
            "--group",
            "web",
            "--group",
            "admin",
            "--ttl",
            "30m",
            "--from",
            "10.0.0.0/8",
        ])
        .ok()
        .to_string();
    let join = JoinString::parse(out.lines().last().unwrap()).unwrap();
    let id = join.id.to_string();
    assert!(out.contains(&format!("Token {id} for node web1")), "{out}");

    let list = ks.admit(&["token", "list"]).ok().to_string();
    let row = list.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{list}"));
    for want in ["web1", "unused", "10.0.0.0/8", "admin,web"] {
        assert!(row.contains(want), "{want} missing: {row}");
    }
    let secret_text = join.encode().split('-').nth(2).unwrap().to_string();
    assert!(!list.contains(&secret_text));

    // Lower case is accepted: ids are typed by humans.
    assert!(ks.admit(&["token", "revoke", &id.to_lowercase()]).ok().contains(&format!("Token {id} revoked")));
    let list = ks.admit(&["token", "list"]).ok().to_string();
    assert!(list.lines().any(|l| l.starts_with(&id) && l.contains("revoked")), "{list}");

    let err = ks.admit(&["token", "revoke", "ZZZZZZZZ"]).fails().to_string();
    assert!(err.contains("no token ZZZZZZZZ"), "{err}");
    let err = ks.admit(&["token", "revoke", "ABC"]).fails().to_string();
    assert!(err.contains("token id") && err.contains("8 characters"), "{err}");

    // Nothing secret reached the keyserver's log, state or audit.
    let audit = std::fs::read_to_string(ks.data.join("audit.jsonl")).unwrap();
    let state = std::fs::read_to_string(ks.data.join("state.json")).unwrap();
    for (what, text) in [("log", ks.log_text()), ("audit", audit.clone()), ("state", state)] {
        assert!(!text.contains(&secret_text), "the token secret is in the {what}");
    }
    let events: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["token_created", "token_revoked"]);
    assert_eq!(mode(&ks.data.join("state.json")), 0o600);
    assert_eq!(mode(&ks.data.join("audit.jsonl")), 0o600);
}

#[test]
fn bad_requests_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let err = ks.admit(&["token", "create", "--node", "bad name"]).fails().to_string();
    assert!(err.contains("invalid node name"), "{err}");
    let err = ks.admit(&["token", "create", "--node", "n", "--ttl", "25h"]).fails().to_string();
    assert!(err.contains("24 h"), "{err}");
    // A malformed duration is a usage error (clap's exit code 2), caught before connecting.
    let run = ks.admit(&["token", "create", "--node", "n", "--ttl", "1w"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("the unit must be s, m, h or d"), "{run:?}");
    let err = ks.admit(&["token", "create", "--node", "n", "--from", "10.0.0.0/40"]).fails().to_string();
    assert!(err.contains("not an address range"), "{err}");
    let err = ks.admit(&["token", "create", "--node", "n", "--group", "a,b"]).fails().to_string();
    assert!(err.contains("invalid group"), "{err}");
    // Nothing was minted by any of them.
    let list = ks.admit(&["token", "list"]).ok().to_string();
    assert_eq!(list.lines().count(), 1, "{list}");
}

#[test]
fn a_wrong_or_missing_admin_secret_is_refused_and_not_logged() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let wrong = "not-the-admin-secret-0123456789";
    let err = ks.admit_env(&["token", "list"], &[("WARREN_KEYSERVER_SECRET", wrong)]).fails().to_string();
    assert!(err.contains("refused the handshake"), "{err}");
    let err = ks.admit_env(&["token", "create", "--node", "n"], &[]).fails().to_string();
    assert!(err.contains("WARREN_KEYSERVER_SECRET") && err.contains("--data-path"), "{err}");
    // The keyserver's own folder works on its host.
    let data = ks.data.to_str().unwrap().to_string();
    ks.admit_env(&["token", "list", "--data-path", &data], &[]).ok();
    let missing = dir.path().join("nowhere");
    let err =
        ks.admit_env(&["token", "list", "--data-path", missing.to_str().unwrap()], &[]).fails().to_string();
    assert!(err.contains("ADMIN_SECRET does not exist"), "{err}");
    let log = ks.log_text();
    assert!(log.contains("handshake refused"), "{log}");
    assert!(!log.contains(wrong) && !log.contains(&ks.admin_secret()));
    assert!(!err.contains(&ks.admin_secret()));
}

#[test]
fn garbage_on_the_port_does_not_stop_the_keyserver() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let mut rng = support::rng::Rng::new(13);
    for port in [&ks.addr, &ks.join] {
        for n in [0usize, 1, 7, 100, 5000] {
            let mut s = std::net::TcpStream::connect(port).unwrap();
            let bytes = rng.bytes(n);
            let _ = s.write_all(&bytes);
        }
        // A join-port header announcing 4 GiB, and a claim that is not a sealed box.
        let mut s = std::net::TcpStream::connect(port).unwrap();
        let _ = s.write_all(&[3, 0xff, 0xff, 0xff, 0xff]);
        let mut s = std::net::TcpStream::connect(port).unwrap();
        let _ = s.write_all(&[3, 0, 0, 0, 4, 1, 2, 3, 4]);
    }
    let mut s = std::net::TcpStream::connect(&ks.addr).unwrap();
    let _ = s.write_all(&[0xff; 64 * 1024]);
    drop(s);
    let join = create(&ks, &["--node", "after-garbage"]).encode().to_string();
    keyserver::join(&ks.join, &join, "after-garbage", &dir.path().join("n")).ok();
    assert!(!ks.log_text().contains("panicked"));
}

/// The token a real keyserver minted survives its kill -9: the state file it wrote loads, the
/// token claims once (with this library's state machine: claims over the network are the next
/// slice), and a restarted process still lists it.
#[test]
fn unexpired_tokens_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = Keyserver::start(dir.path(), "acme");
    let join = create(&ks, &["--node", "n1", "--group", "web"]);
    let short = create(&ks, &["--node", "n2", "--ttl", "1s"]);
    ks.kill9();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ks.spawn();
    let list = ks.admit(&["token", "list"]).ok().to_string();
    assert!(list.lines().any(|l| l.starts_with(&join.id.to_string()) && l.contains("unused")), "{list}");
    assert!(!list.contains(&short.id.to_string()), "an expired token is purged at start: {list}");
    ks.kill9();

    let cache = KeyCache::new(ks.data.join("keys"));
    let admission =
        SigSecretKey::try_from(&cache.latest(KeyKind::SigSecret, "acme-admission").unwrap()).unwrap();
    let store = Store::open(&ks.data).unwrap();
    let mut core = KsCore::new(store.load("acme").unwrap(), admission, OsRng);
    let (_, sig) = SigSecretKey::generate("n1").unwrap();
    let (boxk, _) = BoxSecretKeyFile::generate("n1").unwrap();
    let digest = Claim::pop_digest(&join.id, "n1", &sig.public(), &boxk, &join.pin);
    let claim = Claim {
        token_id: join.id,
        secret: join.secret.clone(),
        node: "n1".into(),
        node_sig: sig.public(),
        node_box: boxk,
        pop: sodium::sign_detached(&digest, &sig.key),
        peer: None,
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claimed = core.claim(now, &claim).unwrap();
    let cgc = Cgc::verify(&claimed.cgc, &admission_public(&ks)).unwrap();
    assert_eq!((cgc.node.as_str(), cgc.groups.clone()), ("n1", vec!["web".to_string()]));
}

/// kill -9 in the middle of a burst of claims: every node that was told it is admitted, and
/// every claim the audit had recorded, is still admitted after the restart (the journal was
/// fsynced before either), and every other node's retry succeeds.
#[test]
fn a_kill_9_during_a_burst_of_claims_loses_no_acknowledged_claim() {
    const NODES: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    let mut ks = Keyserver::start(dir.path(), "acme");
    let joins: Vec<String> =
        (0..NODES).map(|i| create(&ks, &["--node", &format!("b{i}")]).encode().to_string()).collect();
    let children: Vec<(String, std::process::Child)> = joins
        .iter()
        .enumerate()
        .map(|(i, join)| {
            let node = format!("b{i}");
            let mut cmd = keyserver::join_cmd(&ks.join, &node, &dir.path().join(&node));
            cmd.env("WARREN_JOIN", join)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null());
            (node, cmd.spawn().unwrap())
        })
        .collect();
    // Killed once some claims are committed (the audit follows the journal), whatever the rest do.
    let audit = ks.data.join("audit.jsonl");
    wait_until(Duration::from_secs(60), "three claims committed", || {
        std::fs::read_to_string(&audit).unwrap_or_default().matches("\"token_claimed\"").count() >= 3
    });
    ks.kill9();
    // The audit is written after the journal's fsync, before the reply.
    let committed: Vec<String> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "token_claimed")
        .map(|e| e["node"].as_str().unwrap().to_string())
        .collect();
    assert!(committed.len() >= 3, "{committed:?}");
    let mut acknowledged = Vec::new();
    let mut others = Vec::new();
    for (node, child) in children {
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && said.contains(&format!("Admitted {node}")) {
            acknowledged.push(node);
        } else {
            others.push(node);
        }
    }

    ks.spawn();
    let list = ks.admit(&["node", "list"]).ok().to_string();
    for node in acknowledged.iter().chain(&committed) {
        assert!(list.lines().any(|l| l.split_whitespace().next() == Some(node)), "{node} was lost: {list}");
    }
    for node in &others {
        let i: usize = node[1..].parse().unwrap();
        let out = keyserver::join(&ks.join, &joins[i], node, &dir.path().join(node)).ok().to_string();
        assert!(out.contains(&format!("Admitted {node}")), "{node}: {out}");
    }
    let list = ks.admit(&["node", "list"]).ok().to_string();
    assert_eq!(list.lines().filter(|l| l.contains("active")).count(), NODES, "{list}");
}

/// Three nodes admitted from tokens form an encrypted ring; nobody copied a key.
#[test]
fn three_nodes_admitted_from_tokens_form_an_encrypted_ring() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let mut sups = Vec::new();
    for (i, name) in ["node-a", "node-b", "node-c"].into_iter().enumerate() {
        let out = ks.admit(&["token", "create", "--node", name, "--group", "web"]).ok().to_string();
        let join = out.lines().last().unwrap().to_string();
        let node_dir = dir.path().join(name);
        let out = keyserver::join(&ks.join, &join, name, &node_dir).ok().to_string();
        assert!(out.contains(&format!("Admitted {name} to acme")), "{out}");
        assert!(out.lines().last().unwrap().contains("warren sup run --ring acme"), "{out}");
        let cgc_text = std::fs::read_to_string(node_dir.join("data/admission/cgc")).unwrap();
        let cgc = Cgc::verify(&cgc_text, &admission_public(&ks)).unwrap();
        assert_eq!((cgc.node.as_str(), cgc.groups.clone()), (name, vec!["web".to_string()]));
        let mut a = fast_timings();
        a.extend(args(&["--ring", "acme", "--cache-key-path", node_dir.join("keys").to_str().unwrap()]));
        if i > 0 {
            a.extend(args(&["--peer", &sups.iter().map(|s: &Sup| s.gossip.clone()).next().unwrap()]));
        }
        sups.push(Sup::start(dir.path(), 90 + i as u8, a, vec![]));
    }
    let ids = member_ids(&sups);
    let refs: Vec<&Sup> = sups.iter().collect();
    wait_until(Duration::from_secs(30), "all admitted members alive", || all_see_alive(&refs, &ids));
    for s in &sups {
        let status: serde_json::Value =
            serde_json::from_str(s.cli(&["sup", "status", "--json"]).ok()).unwrap();
        assert_eq!(status["encrypted"], true, "{status}");
        assert_eq!(status["ring"], "acme", "{status}");
    }
    // The ring key they share is the keyserver's, delivered, not copied.
    let ks_ring = KeyCache::new(ks.data.join("keys")).latest(KeyKind::SymSecret, "acme").unwrap();
    for name in ["node-a", "node-b", "node-c"] {
        let node_ring =
            KeyCache::new(dir.path().join(name).join("keys")).latest(KeyKind::SymSecret, "acme").unwrap();
        assert_eq!(node_ring.bytes(), ks_ring.bytes());
    }
}

/// A lost reply is safe (the same node retries and gets the same CGC); another node with the
/// same join string is refused and audited; a fake keyserver (other admission key) is refused
/// by the node before it sends the secret; a replayed token after revocation gets nothing.
#[test]
fn join_refusals_retry_theft_and_fake_keyserver() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    std::fs::create_dir(dir.path().join("fake")).unwrap();
    let fake = Keyserver::start(&dir.path().join("fake"), "acme");
    let join = ks.admit(&["token", "create", "--node", "n1"]).ok().lines().last().unwrap().to_string();

    let err = keyserver::join(&fake.join, &join, "n1", &dir.path().join("n1")).fails().to_string();
    assert!(err.contains("does not match the pin"), "{err}");
    assert!(fake.log_text().lines().all(|l| !l.contains("claim")), "the fake saw no claim");

    let err = keyserver::join(&ks.join, &join, "other-name", &dir.path().join("n1")).fails().to_string();
    assert!(err.contains("is for node \"n1\""), "{err}");

    let first = keyserver::join(&ks.join, &join, "n1", &dir.path().join("n1")).ok().to_string();
    let again = keyserver::join(&ks.join, &join, "n1", &dir.path().join("n1")).ok().to_string();
    assert_eq!(first, again, "a retry gets the same CGC");

    let err = keyserver::join(&ks.join, &join, "n1", &dir.path().join("thief")).fails().to_string();
    assert!(err.contains("suspected theft"), "{err}");
    let audit = std::fs::read_to_string(ks.data.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"suspected_theft\""), "{audit}");

    // A typo is caught before anything is sent.
    let mut typo = join.clone();
    typo.replace_range(10..11, if &join[10..11] == "A" { "B" } else { "A" });
    let err = keyserver::join(&ks.join, &typo, "n1", &dir.path().join("n1")).fails().to_string();
    assert!(err.contains("typo"), "{err}");

    let id = JoinString::parse(&join).unwrap().id.to_string();
    ks.admit(&["token", "revoke", &id]).ok();
    let err = keyserver::join(&ks.join, &join, "n1", &dir.path().join("n1")).fails().to_string();
    assert!(err.contains("revoked"), "{err}");
    let secret_text = join.split('-').nth(2).unwrap().to_string();
    for text in [ks.log_text(), audit, std::fs::read_to_string(ks.data.join("state.json")).unwrap()] {
        assert!(!text.contains(&secret_text));
    }
}

#[test]
fn new_commands_have_help() {
    for args in [
        &["keyserver", "run", "--help"][..],
        &["admit", "token", "create", "--help"],
        &["admit", "token", "list", "--help"],
        &["admit", "token", "revoke", "--help"],
        &["admit", "join", "--help"],
        &["admit", "renew", "--help"],
        &["admit", "fetch", "--help"],
        &["admit", "node", "list", "--help"],
        &["admit", "node", "revoke", "--help"],
        &["admit", "ring", "rotate", "--help"],
        &["admit", "group", "key-gen", "--help"],
    ] {
        let out = cli::warren(args).ok().to_string();
        assert!(out.contains("--keyserver") || out.contains("--data-path"), "{args:?}: {out}");
    }
    let out = cli::warren(&["keyserver", "run", "--help"]).ok().to_string();
    assert!(out.contains("9637") && out.contains("--ring"), "{out}");
}

/// After admission a node renews its CGC and fetches what policy gives it, signed by its own
/// key: ring keys to all, the service-group key only to its group, the ctl secret only to
/// `admin`, and a peer list of the other nodes.
#[test]
fn admitted_nodes_renew_and_fetch_keys_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let made = ks.admit(&["group", "key-gen", "web.default@acme"]).ok().to_string();
    assert!(made.contains("Service-group key web.default@acme-"), "{made}");
    let err = ks.admit(&["group", "key-gen", "web"]).fails().to_string();
    assert!(err.contains("SERVICE.GROUP"), "{err}");
    let (adm, plain) = (dir.path().join("adm"), dir.path().join("plain"));
    for (name, node_dir, groups) in
        [("adm", &adm, &["--group", "admin", "--group", "web"][..]), ("plain", &plain, &[])]
    {
        let mut a = vec!["--node", name];
        a.extend_from_slice(groups);
        let join = create(&ks, &a).encode().to_string();
        keyserver::join(&ks.join, &join, name, node_dir).ok();
    }
    let out = keyserver::node_cmd(&adm, &["fetch", "--gossip", "127.0.0.1:41001"]).ok().to_string();
    assert!(out.contains("ctl secret written"), "{out}");
    keyserver::node_cmd(&plain, &["fetch", "--gossip", "127.0.0.1:41002"]).ok();

    let group_key = |d: &Path| KeyCache::new(d.join("keys")).latest(KeyKind::BoxSecret, "web.default@acme");
    let key = group_key(&adm).expect("the web node has the web group key");
    let ks_key = KeyCache::new(ks.data.join("keys")).latest(KeyKind::BoxSecret, "web.default@acme").unwrap();
    assert_eq!(key.bytes(), ks_key.bytes());
    assert_eq!(mode(&adm.join("keys").join(key.file_name())), 0o400);
    assert!(group_key(&plain).is_err(), "a node outside the group gets no group key");
    let ctl = std::fs::read_to_string(adm.join("data/CTL_SECRET")).unwrap();
    assert_eq!(ctl, std::fs::read_to_string(ks.data.join("CTL_SECRET")).unwrap());
    assert_eq!(mode(&adm.join("data/CTL_SECRET")), 0o400);
    assert!(!plain.join("data/CTL_SECRET").exists(), "only admin nodes get the ctl secret");
    let peers = std::fs::read_to_string(plain.join("data/admission/peers")).unwrap();
    assert_eq!(peers, "127.0.0.1:41001\n");

    // Renew: a new serial; the new CGC works, and so did the old one until then.
    let serial = |d: &Path| {
        Cgc::verify(&std::fs::read_to_string(d.join("data/admission/cgc")).unwrap(), &admission_public(&ks))
            .unwrap()
            .serial_hex()
    };
    let before = serial(&plain);
    let out = keyserver::node_cmd(&plain, &["renew"]).ok().to_string();
    let after = serial(&plain);
    assert_ne!(before, after);
    assert!(out.contains(&after), "{out}");
    let out = keyserver::node_cmd(&plain, &["fetch"]).ok().to_string();
    assert!(out.contains("Fetched"), "{out}");

    let list = ks.admit(&["node", "list"]).ok().to_string();
    for want in ["adm", "plain", "active", "127.0.0.1:41002", "admin,web"] {
        assert!(list.contains(want), "{want}: {list}");
    }
    let err = keyserver::node_cmd(&dir.path().join("never"), &["fetch"]).fails().to_string();
    assert!(err.contains("was not admitted"), "{err}");

    // The ctl secret went to `adm` twice now (one more fetch, with the keyserver logging at
    // info): neither the keyserver's log of those requests nor the node's output holds it.
    let ctl = ctl.trim();
    assert!(ctl.len() >= 80, "the delivered ctl secret is a real one: {} characters", ctl.len());
    let out = keyserver::node_cmd(&adm, &["fetch"]).ok().to_string();
    assert!(out.contains("Fetched") && out.contains("ctl secret"), "{out}");
    let log = ks.log_text();
    let served = log.lines().filter(|l| l.contains("node request served") && l.contains("node=adm ")).count();
    assert!(served >= 2, "the keyserver logged adm's fetches: {log}");
    assert!(!log.contains(ctl), "the ctl secret is never in the keyserver's log");
    assert!(!out.contains(ctl), "nor in the node's output");

    // Revoking a node replaces every shared key it held: the web group key and, as it was an
    // admin, the ctl secret. The remaining admin/web member gets both at its next fetch; the
    // revoked node gets nothing more.
    let web2 = dir.path().join("web2");
    let join = create(&ks, &["--node", "web2", "--group", "admin", "--group", "web"]).encode().to_string();
    keyserver::join(&ks.join, &join, "web2", &web2).ok();
    keyserver::node_cmd(&web2, &["fetch"]).ok();
    let out = ks.admit(&["node", "revoke", "adm"]).ok().to_string();
    assert!(out.contains("web.default@acme-") && out.contains("ctl secret"), "{out}");
    let ks_cache = KeyCache::new(ks.data.join("keys"));
    assert_eq!(ks_cache.revisions(KeyKind::BoxSecret, "web.default@acme").unwrap().len(), 2);
    let new_key = ks_cache.latest(KeyKind::BoxSecret, "web.default@acme").unwrap();
    assert_ne!(new_key.bytes(), ks_key.bytes());
    let new_ctl = std::fs::read_to_string(ks.data.join("CTL_SECRET")).unwrap();
    assert_ne!(new_ctl, ctl);
    let err = keyserver::node_cmd(&adm, &["fetch"]).fails().to_string();
    assert!(err.contains("revoked"), "{err}");
    let out = keyserver::node_cmd(&web2, &["fetch"]).ok().to_string();
    assert!(out.contains("ctl secret written"), "{out}");
    assert_eq!(group_key(&web2).unwrap().bytes(), new_key.bytes());
    assert_eq!(std::fs::read_to_string(web2.join("data/CTL_SECRET")).unwrap(), new_ctl);
    assert_eq!(group_key(&adm).unwrap().bytes(), ks_key.bytes(), "the revoked node has only the old key");
    let audit = std::fs::read_to_string(ks.data.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"keys_rotated\""), "{audit}");
    // A node without groups held only the ring key.
    let out = ks.admit(&["node", "revoke", "plain"]).ok().to_string();
    assert!(!out.contains("Also replaced"), "{out}");
    assert!(
        !ks.log_text().contains(&new_ctl) && !audit.contains(&new_ctl),
        "the new ctl secret is never logged"
    );
}

fn ring_revisions(keys: &Path) -> Vec<String> {
    KeyCache::new(keys)
        .revisions(KeyKind::SymSecret, "acme")
        .unwrap_or_default()
        .iter()
        .map(|i| i.to_string())
        .collect()
}

/// The ring key revision a supervisor seals with (`/ring/keys`).
fn ring_primary(s: &Sup) -> Option<String> {
    let keys = s.get("/ring/keys")?.json().ok()?;
    keys.as_array()?.iter().find(|k| k["primary"] == true)?["id"].as_str().map(str::to_string)
}

/// The node's gossip address as the keyserver last heard it (`node list`).
fn reported_gossip(ks: &Keyserver, node: &str) -> Option<String> {
    let list = ks.admit(&["node", "list"]).ok().to_string();
    let row = list.lines().find(|l| l.split_whitespace().next() == Some(node))?.to_string();
    row.split_whitespace().find(|w| w.starts_with("127.0.0.") && !w.ends_with(":0")).map(str::to_string)
}

/// `sup run --join` admits and joins the ring with peers from the keyserver; a restart needs
/// neither flag; `admit ring rotate` reaches every node; `admit node revoke` cuts one node
/// off: the others get a new ring key, drop the old ones, and no longer see it alive.
#[test]
fn sup_run_join_rotate_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let names = ["node-a", "node-b", "node-c"];
    let mut sups: Vec<Sup> = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        let join = create(&ks, &["--node", name]).encode().to_string();
        let join_file = dir.path().join(format!("{name}.join"));
        std::fs::write(&join_file, format!("{join}\n")).unwrap();
        let mut a = fast_timings();
        a.extend(args(&["--join", join_file.to_str().unwrap(), "--keyserver", &ks.join, "--node", name]));
        a.extend(args(&["--key-fetch-interval", "300ms"]));
        let s = Sup::start(dir.path(), 110 + i as u8, a, vec![]);
        wait_until(Duration::from_secs(30), &format!("{name} reported its gossip address"), || {
            reported_gossip(&ks, name).is_some()
        });
        sups.push(s);
    }
    let ids = member_ids(&sups);
    let alive = |sups: &[&Sup], ids: &[String], what: &str| {
        wait_until(Duration::from_secs(45), what, || all_see_alive(sups, ids));
    };
    alive(&sups.iter().collect::<Vec<_>>(), &ids, "three nodes admitted by sup run --join alive");
    for s in &sups {
        let status: serde_json::Value =
            serde_json::from_str(s.cli(&["sup", "status", "--json"]).ok()).unwrap();
        assert_eq!(
            (status["encrypted"].as_bool(), status["ring"].as_str()),
            (Some(true), Some("acme")),
            "{status}"
        );
    }

    // A restart needs neither --join nor --keyserver (nor --ring, nor --peer); its fetch
    // interval comes from sup.toml this time (at the default 300 s the rotation below would
    // not reach it in time).
    sups[0].kill9();
    let config = dir.path().join("node-a.toml");
    std::fs::write(&config, "key_fetch_interval = \"300ms\"\n").unwrap();
    sups[0].args = fast_timings();
    sups[0].args.extend(args(&["--config", config.to_str().unwrap()]));
    sups[0].spawn();
    alive(&sups.iter().collect::<Vec<_>>(), &ids, "the restarted node rejoined");

    let first = ring_revisions(&ks.data.join("keys"));
    std::thread::sleep(Duration::from_millis(1100)); // revisions are per second
    let out = ks.admit(&["ring", "rotate"]).ok().to_string();
    let rotated = ring_revisions(&ks.data.join("keys"));
    assert_eq!(rotated.len(), first.len() + 1, "{out}");
    let newest = rotated.last().unwrap().clone();
    assert!(out.contains(&newest), "{out}");
    wait_until(Duration::from_secs(30), "the rotation reached every node", || {
        sups.iter().all(|s| ring_revisions(&s.data.join("keys")) == rotated)
    });
    // Installed everywhere, then used: every node seals with the keyserver's primary.
    wait_until(Duration::from_secs(30), "every node uses the new ring key", || {
        sups.iter().all(|s| ring_primary(s).as_deref() == Some(newest.as_str()))
    });
    alive(&sups.iter().collect::<Vec<_>>(), &ids, "the ring lives on the new key");

    std::thread::sleep(Duration::from_millis(1100));
    let out = ks.admit(&["node", "revoke", "node-c"]).ok().to_string();
    assert!(out.contains("Node node-c revoked"), "{out}");
    let after: Vec<String> = wait_for(Duration::from_secs(30), || {
        let r = ring_revisions(&ks.data.join("keys"));
        (r.len() == 1 && !rotated.contains(&r[0])).then_some(r)
    })
    .expect("the keyserver retires the old ring keys once the others have the new one");
    wait_until(Duration::from_secs(30), "the remaining nodes hold only the new ring key", || {
        sups[..2].iter().all(|s| ring_revisions(&s.data.join("keys")) == after)
    });
    assert_eq!(ring_revisions(&sups[2].data.join("keys")), rotated, "the revoked node never got the new key");
    let (a, b) = (&sups[0], &sups[1]);
    wait_until(Duration::from_secs(60), "node-c is no longer alive for the others", || {
        [a, b].iter().all(|s| s.health().get(&ids[2]).map(String::as_str) != Some("Alive"))
    });
    alive(&[a, b], &ids[..2], "the two remaining nodes keep their ring");
    let list = ks.admit(&["node", "list"]).ok().to_string();
    assert!(list.lines().any(|l| l.starts_with("node-c") && l.contains("revoked")), "{list}");
    let audit = std::fs::read_to_string(ks.data.join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"node_revoked\"") && audit.contains("\"ring_key_retired\""), "{audit}");
    wait_until(Duration::from_secs(30), "the revoked node's requests are refused", || {
        ks.log_text().contains("node node-c was revoked")
    });
}

/// `warren bench admit` with tiny counts prints both of its figures.
#[test]
fn bench_admit_prints_its_figures() {
    let out = cli::warren(&["bench", "admit", "--rounds", "1", "--claims", "5", "--concurrency", "2"])
        .ok()
        .to_string();
    assert!(out.contains("token -> admitted node alive in the ring: p50"), "{out}");
    assert!(out.contains("claims/s the keyserver sustains:") && out.contains("5 claimed"), "{out}");
    assert!(out.contains("0 failed"), "{out}");
}

/// With the keyserver gone an admitted supervisor keeps its ring and keys, says so once in its
/// log, and keeps retrying with backoff.
#[test]
fn an_admitted_supervisor_keeps_running_while_the_keyserver_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut ks = Keyserver::start(dir.path(), "acme");
    let join = create(&ks, &["--node", "solo"]).encode().to_string();
    let mut a = fast_timings();
    a.extend(args(&["--keyserver", &ks.join, "--node", "solo", "--key-fetch-interval", "200ms"]));
    let s = Sup::start(dir.path(), 120, a, vec![("WARREN_JOIN".into(), join)]);
    ks.kill9();
    wait_until(Duration::from_secs(30), "the supervisor noticed", || {
        s.log_tail().contains("keyserver request failed")
    });
    std::thread::sleep(Duration::from_secs(3));
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert_eq!(log.matches("keyserver request failed").count(), 1, "logged once: {log}");
    let status: serde_json::Value = serde_json::from_str(s.cli(&["sup", "status", "--json"]).ok()).unwrap();
    assert_eq!(status["encrypted"], true, "{status}");
    assert!(!log.contains("panicked"));
}

/// The status column of token `id` in `token list`.
fn token_status(ks: &Keyserver, id: &str) -> String {
    let list = ks.admit(&["token", "list"]).ok().to_string();
    let row = list.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("no token {id}: {list}"));
    row.split_whitespace().nth(2).unwrap().to_string()
}

/// A join string is a secret: on argv (`admit join`, `sup run --join`) it is refused before
/// anything is sent, without being echoed; a FILE, `-` (stdin) and WARREN_JOIN work, and a
/// file of garbage is refused without its content in the error.
#[test]
fn a_join_string_is_never_taken_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let j1 = create(&ks, &["--node", "n1"]);
    let (join, id) = (j1.encode().to_string(), j1.id.to_string());
    let secret_text = join.split('-').nth(2).unwrap().to_string();
    let n1 = dir.path().join("n1");

    let mut cmd = keyserver::join_cmd(&ks.join, "n1", &n1);
    let err = support::cli::run(cmd.arg(&join), None).fails().to_string();
    assert!(err.contains("does not belong on the command line") && err.contains("WARREN_JOIN"), "{err}");
    assert!(!err.contains(&secret_text), "the refusal does not echo the secret: {err}");
    let sup_data = dir.path().join("sup-data");
    let sup = |join_arg: &str| {
        cli::warren(&[
            "sup",
            "run",
            "--listen-gossip",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
            "--listen-ctl",
            "127.0.0.1:0",
            "--data-path",
            sup_data.to_str().unwrap(),
            "--cache-key-path",
            sup_data.join("keys").to_str().unwrap(),
            "--join",
            join_arg,
            "--keyserver",
            &ks.join,
            "--node",
            "n1",
        ])
    };
    let err = sup(&join).fails().to_string();
    assert!(err.contains("does not belong on the command line") && !err.contains(&secret_text), "{err}");
    let err = sup(&join.to_lowercase()).fails().to_string();
    assert!(err.contains("does not belong on the command line"), "{err}");
    assert!(!sup_data.join("keys").exists(), "sup run made no keys");
    assert_eq!(token_status(&ks, &id), "unused", "nothing was claimed");

    // A file of garbage: refused, its content not echoed.
    let garbage = dir.path().join("garbage.join");
    std::fs::write(&garbage, "hunter2-not-a-join-string\n").unwrap();
    let mut cmd = keyserver::join_cmd(&ks.join, "n1", &n1);
    let err = support::cli::run(cmd.arg(&garbage), None).fails().to_string();
    assert!(err.contains("join string") && !err.contains("hunter2"), "{err}");
    let err = sup(garbage.to_str().unwrap()).fails().to_string();
    assert!(err.contains("join string") && !err.contains("hunter2"), "{err}");

    // `-`: from stdin.
    let mut cmd = keyserver::join_cmd(&ks.join, "n1", &n1);
    let out = support::cli::run(cmd.arg("-"), Some(format!("{join}\n").as_bytes())).ok().to_string();
    assert!(out.contains("Admitted n1"), "{out}");
    assert_eq!(token_status(&ks, &id), "claimed");
    // FILE.
    let join2 = create(&ks, &["--node", "n2"]).encode().to_string();
    let file = dir.path().join("n2.join");
    std::fs::write(&file, &join2).unwrap();
    let mut cmd = keyserver::join_cmd(&ks.join, "n2", &dir.path().join("n2"));
    assert!(support::cli::run(cmd.arg(&file), None).ok().contains("Admitted n2"));
    // WARREN_JOIN (what keyserver::join uses) and nothing: told where to put it.
    let join3 = create(&ks, &["--node", "n3"]).encode().to_string();
    assert!(keyserver::join(&ks.join, &join3, "n3", &dir.path().join("n3")).ok().contains("Admitted n3"));
    let mut cmd = keyserver::join_cmd(&ks.join, "n4", &dir.path().join("n4"));
    let err = support::cli::run(&mut cmd, None).fails().to_string();
    assert!(err.contains("WARREN_JOIN") && err.contains('-'), "{err}");
}

/// A second `sup run --join` on a data path in use fails on the lock before admission: the
/// token it was given stays unused and no key or admission file of its node is written.
#[test]
fn a_second_supervisor_on_the_same_data_path_claims_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let s = Sup::start(dir.path(), 121, fast_timings(), vec![]);

    let second = create(&ks, &["--node", "second"]);
    let file = dir.path().join("second.join");
    std::fs::write(&file, second.encode().as_bytes()).unwrap();
    let err = cli::warren(&[
        "sup",
        "run",
        "--listen-gossip",
        "127.0.0.1:0",
        "--listen-http",
        "127.0.0.1:0",
        "--listen-ctl",
        "127.0.0.1:0",
        "--data-path",
        s.data.to_str().unwrap(),
        "--cache-key-path",
        s.data.join("keys").to_str().unwrap(),
        "--join",
        file.to_str().unwrap(),
        "--keyserver",
        &ks.join,
        "--node",
        "second",
    ])
    .fails()
    .to_string();
    assert!(err.contains("in use by another supervisor"), "{err}");
    assert_eq!(token_status(&ks, &second.id.to_string()), "unused", "the token is not burnt");
    let cache = KeyCache::new(s.data.join("keys"));
    assert!(cache.revisions(KeyKind::SigSecret, "second").unwrap().is_empty(), "no key written for it");
    assert!(!s.data.join("admission").exists(), "no admission files in the running one's data path");
    let log = ks.log_text();
    assert!(
        log.contains("node=second") && !log.contains("node admitted"),
        "no claim reached the keyserver: {log}"
    );
}

/// After kill -9 a supervisor on port 0 binds a new gossip port; the keyserver (and so the
/// other nodes' peer lists) learns the new one, not the dead process's port in the
/// listen.json it left behind.
#[test]
fn a_restarted_node_reports_its_new_gossip_port_not_the_dead_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    let join = create(&ks, &["--node", "solo"]).encode().to_string();
    let mut a = fast_timings();
    a.extend(args(&["--keyserver", &ks.join, "--node", "solo"]));
    let mut s = Sup::start(dir.path(), 122, a, vec![("WARREN_JOIN".into(), join)]);
    let old = s.gossip.clone();
    wait_until(Duration::from_secs(30), "the first run reported its gossip address", || {
        reported_gossip(&ks, "solo").as_deref() == Some(old.as_str())
    });
    s.kill9();
    assert!(s.data.join("listen.json").exists(), "kill -9 leaves listen.json behind");
    // Port 0 again (the default --key-fetch-interval, 300 s: the first report must be right).
    (s.gossip, s.http, s.ctl) = ("127.0.0.122:0".into(), "127.0.0.122:0".into(), "127.0.0.122:0".into());
    s.spawn();
    assert_ne!(s.gossip, old, "the kernel picked another port");
    wait_until(Duration::from_secs(30), "the keyserver learnt the new gossip port", || {
        reported_gossip(&ks, "solo").as_deref() == Some(s.gossip.as_str())
    });
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(log.contains("admitted before: the join string is not read"), "{log}");

    // Admitted or not, a join string on the command line is refused.
    let join = create(&ks, &["--node", "solo"]).encode().to_string();
    s.kill9();
    let mut cmd = s.command();
    cmd.args(["sup", "run", "--data-path"]).arg(&s.data).args(&s.args).args(["--join", &join]);
    cmd.env("WARREN_CACHE_KEY_PATH", s.data.join("keys"));
    let err = support::cli::run(&mut cmd, None).fails().to_string();
    assert!(err.contains("does not belong on the command line") && !err.contains(&join[13..40]), "{err}");
}

/// Pids of the processes whose command line mentions `needle`.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// `warren bench admit` whose keyserver dies under it fails, and leaves neither its folder
/// nor a process behind.
#[test]
fn bench_admit_cleans_up_when_a_step_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let needle = tmp.path().to_str().unwrap().to_string();
    let mut cmd = support::cli::command();
    cmd.args(["bench", "admit", "--rounds", "50", "--claims", "5"])
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let bench = cmd.spawn().unwrap();
    let keyserver = wait_for(Duration::from_secs(30), || {
        pids_mentioning(&needle).into_iter().find(|p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains("keyserver\0run")
        })
    })
    .expect("the bench started its keyserver");
    let bench_dirs = || std::fs::read_dir(tmp.path()).unwrap().count();
    assert_eq!(bench_dirs(), 1, "the bench made its folder");
    std::process::Command::new("kill").args(["-9", &keyserver.to_string()]).status().unwrap();
    let out = bench.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the bench fails: {stderr}");
    assert!(stderr.contains("error:") && !stderr.contains("panicked"), "{stderr}");
    assert_eq!(bench_dirs(), 0, "the bench's folder is gone: {stderr}");
    assert_eq!(pids_mentioning(&needle), Vec::<u32>::new(), "no process of the bench is left");
}
