//! The plugin runtime against the real guest components: worlds, grants, containment
//! (deadline, memory cap, traps, denied env/files, wrong world), compile cache.

mod support;

use std::path::PathBuf;

use support::files::{dead_pid, plant_temp_file};
use support::plugins::{install, registry, wasm_bytes};
use warren::plugins::{
    CacheOutcome, CredentialError, Decision, ElectionStatus, Grant, GroupView, Health, Member, PackageIdent,
    PluginError, PluginState, Role, ServiceContext, ServicePaths, TopologyHealth, WitVersion, World,
    policy_for,
};

fn ctx(config: &str) -> ServiceContext {
    let dir = |sub: &str| format!("/data/svc/redis/{sub}");
    ServiceContext {
        service: "redis".into(),
        group: "default".into(),
        config_toml: config.into(),
        ident: PackageIdent {
            origin: "acme".into(),
            name: "redis".into(),
            version: "7.0.0".into(),
            release: "20260101000000".into(),
        },
        member_id: "m-1".into(),
        paths: ServicePaths {
            svc: "/data/svc/redis".into(),
            config: dir("config"),
            data: dir("data"),
            files: dir("files"),
            var: dir("var"),
            logs: dir("logs"),
        },
    }
}

#[test]
fn env_plugin_sees_only_granted_variables() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["env"]);
    // Variables cargo sets for every test process (no set_var: tests run threaded).
    assert!(std::env::var("PATH").is_ok());
    let reg =
        registry(dir.path(), &[("env", Grant { env: vec!["CARGO_PKG_NAME".into()], ..Grant::default() })]);
    reg.load_dir().unwrap();
    let src = reg.get_credential_source("ENV").expect("env plugin serves ENV");
    assert_eq!(src.resolve("ENV:CARGO_PKG_NAME").unwrap().unwrap().value, "warren");
    match src.resolve("ENV:PATH").unwrap() {
        Err(CredentialError::NotFound(_) | CredentialError::Denied(_)) => {}
        other => panic!("an ungranted variable must not resolve: {:?}", other.map(|c| c.value.len())),
    }
}

#[test]
fn file_plugin_reads_granted_dir_only() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("token"), "tok-1\n").unwrap();
    std::fs::write(other.path().join("private"), "nope").unwrap();
    install(dir.path(), &["file"]);
    let reg = registry(
        dir.path(),
        &[("file", Grant { read_paths: vec![secrets.path().into()], ..Grant::default() })],
    );
    reg.load_dir().unwrap();
    let src = reg.get_credential_source("FILE").unwrap();
    let c = src.resolve(&format!("FILE:{}/token", secrets.path().display())).unwrap().unwrap();
    assert_eq!(c.value, "tok-1");
    assert_eq!(c.watch_paths, vec![format!("{}/token", secrets.path().display())]);
    assert!(matches!(
        src.resolve(&format!("FILE:{}/private", other.path().display())).unwrap(),
        Err(CredentialError::Denied(_))
    ));
    assert!(matches!(src.resolve("FILE:/etc/passwd").unwrap(), Err(CredentialError::Denied(_))));
    assert!(matches!(
        src.resolve(&format!("FILE:{}/missing", secrets.path().display())).unwrap(),
        Err(CredentialError::NotFound(_))
    ));
    // Read-only: the plugin cannot have written anything (the grant is a read-only preopen).
    assert_eq!(std::fs::read_dir(secrets.path()).unwrap().count(), 1);
}

/// The file plugin resolves paths against its grants itself: symlinks, odd spellings, nested
/// grants, sizes around its read chunk and its cap.
#[test]
fn file_plugin_paths_links_and_sizes() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let s = secrets.path();
    // Kubernetes secret volumes: `token -> ..data/token`, `..data -> ..2026_11_23/`.
    std::fs::create_dir(s.join("..2026_11_23")).unwrap();
    std::fs::write(s.join("..2026_11_23/token"), "k8s-token\n").unwrap();
    symlink("..2026_11_23", s.join("..data")).unwrap();
    symlink("..data/token", s.join("token")).unwrap();
    std::fs::write(outside.path().join("secret"), "outside").unwrap();
    symlink(outside.path().join("secret"), s.join("escape")).unwrap();
    std::fs::create_dir(s.join("nested")).unwrap();
    std::fs::write(s.join("nested/inner"), "inner\r\n").unwrap();
    let big: String = (0..9000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    std::fs::write(s.join("big"), &big).unwrap();
    std::fs::write(s.join("exactly-4096"), "x".repeat(4096)).unwrap();
    std::fs::write(s.join("too-big"), vec![b'y'; (1 << 20) + 1]).unwrap();
    std::fs::write(s.join("binary"), [0xff, 0xfe, 0x00]).unwrap();
    std::fs::write(s.join("empty"), "").unwrap();
    install(dir.path(), &["file"]);
    // Two grants, one inside the other: the longest one serves.
    let grant = Grant { read_paths: vec![s.into(), s.join("nested")], ..Grant::default() };
    let reg = registry(dir.path(), &[("file", grant)]);
    reg.load_dir().unwrap();
    let src = reg.get_credential_source("FILE").unwrap();
    let at = |rest: &str| src.resolve(&format!("FILE:{}{rest}", s.display())).unwrap();
    let value = |rest: &str| at(rest).map(|c| c.value).map_err(|e| format!("{e:?}"));

    assert_eq!(value("/token"), Ok("k8s-token".into()));
    assert_eq!(value("//./token"), Ok("k8s-token".into()));
    assert_eq!(value("/..data/token"), Ok("k8s-token".into()));
    assert_eq!(value("/nested/inner"), Ok("inner".into()), "\\r\\n is trimmed too");
    assert_eq!(value("/big"), Ok(big), "a value longer than one read chunk");
    assert_eq!(value("/exactly-4096").map(|v| v.len()), Ok(4096));
    assert_eq!(value("/empty"), Ok(String::new()));
    match at("/escape") {
        Err(CredentialError::Denied(m)) => assert!(m.contains("outside the granted directory"), "{m}"),
        other => panic!("a symlink out of the grant must be denied: {:?}", other.map(|c| c.value.len())),
    }
    assert!(matches!(at("/nested/inner/x"), Err(CredentialError::NotFound(_))), "a file used as a directory");
    assert!(matches!(at("/nested"), Err(CredentialError::NotFound(_))), "a directory");
    assert!(matches!(at("/too-big"), Err(CredentialError::Unavailable(_))));
    assert!(matches!(at("/binary"), Err(CredentialError::Unavailable(_))));
    assert!(matches!(at("/../etc/passwd"), Err(CredentialError::InvalidReference(_))));
    assert!(matches!(src.resolve("FILE:relative/path").unwrap(), Err(CredentialError::InvalidReference(_))));
    // A sibling whose name merely starts with the grant's name is not inside it.
    assert!(matches!(
        src.resolve(&format!("FILE:{}x/token", s.display())).unwrap(),
        Err(CredentialError::Denied(_))
    ));
}

/// A granted path that is itself a symlink (`/run/secrets/x -> /`) or sits below one is opened
/// by its resolution, and only when that is still inside a grant as written.
#[test]
fn a_symlink_at_a_granted_path_does_not_widen_the_grant() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let s = secrets.path();
    std::fs::write(outside.path().join("secret"), "outside").unwrap();
    symlink(outside.path(), s.join("x")).unwrap();
    symlink("/", s.join("root")).unwrap();
    std::fs::create_dir(s.join("real")).unwrap();
    std::fs::write(s.join("real/token"), "inside").unwrap();
    symlink(s.join("real"), s.join("alias")).unwrap();
    install(dir.path(), &["file"]);
    let grant = Grant {
        read_paths: vec![s.join("x"), s.join("root"), s.join("alias"), outside.path().join("nested-link")],
        ..Grant::default()
    };
    let reg = registry(dir.path(), &[("file", grant)]);
    reg.load_dir().unwrap();
    let src = reg.get_credential_source("FILE").unwrap();
    let at = |path: String| src.resolve(&format!("FILE:{path}")).unwrap().map(|c| c.value);
    for escape in [format!("{}/x/secret", s.display()), format!("{}/root/etc/hostname", s.display())] {
        match at(escape.clone()) {
            Err(CredentialError::Denied(_)) => {}
            other => panic!("{escape}: a symlinked grant must not be opened: {other:?}"),
        }
    }
    // alias -> real resolves outside the grant `alias` as written: not opened either.
    assert!(matches!(at(format!("{}/alias/token", s.display())), Err(CredentialError::Denied(_))));
    // With the directory it points into granted too, the link resolves inside a grant: opened.
    let grant = Grant { read_paths: vec![s.into(), s.join("alias")], ..Grant::default() };
    let reg = registry(dir.path(), &[("file", grant)]);
    reg.load_dir().unwrap();
    let src = reg.get_credential_source("FILE").unwrap();
    let v = src.resolve(&format!("FILE:{}/alias/token", s.display())).unwrap().map(|c| c.value);
    assert_eq!(v.ok().as_deref(), Some("inside"));
    assert!(matches!(
        src.resolve(&format!("FILE:{}/x/secret", s.display())).unwrap(),
        Err(CredentialError::Denied(_))
    ));
}

#[test]
fn snoop_gets_nothing_it_was_not_granted() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["snoop"]);
    // Even an operator grant cannot give more than the manifest requests (snoop requests none).
    let reg = registry(
        dir.path(),
        &[(
            "snoop",
            Grant { env: vec!["CARGO_PKG_NAME".into()], read_paths: vec!["/etc".into()], ..Grant::default() },
        )],
    );
    reg.load_dir().unwrap();
    let src = reg.get_credential_source("SNOOP").unwrap();
    assert!(matches!(src.resolve("SNOOP:env:CARGO_PKG_NAME").unwrap(), Err(CredentialError::Denied(_))));
    assert!(matches!(src.resolve("SNOOP:env:HOME").unwrap(), Err(CredentialError::Denied(_))));
    assert_eq!(src.resolve("SNOOP:envall:").unwrap().unwrap().value, "", "no variables at all");
    assert!(matches!(src.resolve("SNOOP:file:/etc/hostname").unwrap(), Err(CredentialError::Denied(_))));
    assert!(matches!(src.resolve("SNOOP:list:/").unwrap(), Err(CredentialError::Denied(_))));
    let manifest_dir = env!("CARGO_MANIFEST_DIR");
    assert!(matches!(
        src.resolve(&format!("SNOOP:file:{manifest_dir}/Cargo.toml")).unwrap(),
        Err(CredentialError::Denied(_))
    ));
}

#[test]
fn spin_is_stopped_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["spin", "env"]);
    let reg = registry(dir.path(), &[]);
    reg.load_dir().unwrap();
    let src = reg.get_credential_source("SPIN").unwrap();
    for _ in 0..2 {
        match src.resolve("SPIN:x") {
            Err(PluginError::Deadline { plugin, timeout_ms }) => {
                assert_eq!((plugin.as_str(), timeout_ms), ("spin", 200))
            }
            other => panic!("expected a deadline error, got {:?}", other.map(|r| r.is_ok())),
        }
    }
    assert_eq!(reg.plugin("spin").unwrap().faults(), 2);
    assert!(reg.get_credential_source("ENV").is_some(), "the registry still serves");
}

#[test]
fn hog_is_trapped_at_its_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["hog"]);
    let reg = registry(dir.path(), &[]);
    reg.load_dir().unwrap();
    let src = reg.get_credential_source("HOG").unwrap();
    match src.resolve("HOG:x") {
        Err(PluginError::MemoryExhausted { plugin, memory_mb }) => {
            assert_eq!((plugin.as_str(), memory_mb), ("hog", 8))
        }
        other => panic!("expected memory exhaustion, got {:?}", other.map(|r| r.is_ok())),
    }
}

#[test]
fn a_panic_is_an_error_value() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["panicker"]);
    let reg = registry(dir.path(), &[]);
    reg.load_dir().unwrap();
    let src = reg.get_credential_source("PANIC").unwrap();
    match src.resolve("PANIC:x") {
        Err(PluginError::Trap { plugin, message }) => {
            assert_eq!(plugin, "panicker");
            assert!(!message.is_empty());
        }
        other => panic!("expected a trap, got {:?}", other.map(|r| r.is_ok())),
    }
}

/// standalone.wasm with its manifest's world rewritten in place (same length): the component
/// exports topology but claims lifecycle-hook.
fn wrong_world_component() -> Vec<u8> {
    let mut bytes = wasm_bytes("standalone");
    let from = b"world = \"topology-policy\"";
    let to = b"world = \"lifecycle-hook\" ";
    // Every copy (the text may also sit in the data segment).
    let mut found = 0;
    while let Some(at) = bytes.windows(from.len()).position(|w| w == from) {
        bytes[at..at + from.len()].copy_from_slice(to);
        found += 1;
    }
    assert!(found > 0, "manifest text in standalone.wasm");
    bytes
}

#[test]
fn a_component_of_the_wrong_world_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("standalone.wasm"), wrong_world_component()).unwrap();
    install(dir.path(), &["env"]);
    let reg = registry(dir.path(), &[]);
    let err = reg.load_file(&dir.path().join("standalone.wasm")).err().expect("refused");
    assert!(matches!(err, PluginError::WrongWorld { expected: World::LifecycleHook, .. }), "{err}");
    reg.load_dir().unwrap();
    let st = reg.status();
    let liar = st.iter().find(|s| s.file.ends_with("standalone.wasm")).unwrap();
    assert_eq!(liar.state, PluginState::Failed);
    assert!(liar.last_error.as_deref().unwrap().contains("lifecycle-hook"));
    assert_eq!(liar.name.as_deref(), Some("standalone"));
    assert_eq!(liar.world, Some(World::LifecycleHook));
    // Asking for the wrong world by name is a typed error too.
    assert!(matches!(reg.topology("env"), Err(PluginError::NotThisWorld { .. })));
    assert!(matches!(reg.hook("nope"), Err(PluginError::NotFound(_))));
}

#[test]
fn junk_and_core_modules_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.wasm"), b"not wasm at all").unwrap();
    std::fs::write(dir.path().join("module.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let mut no_manifest = b"\0asm\x0d\0\x01\0".to_vec();
    no_manifest.extend_from_slice(&[0, 4, 3, b'a', b'b', b'c']);
    std::fs::write(dir.path().join("bare.wasm"), no_manifest).unwrap();
    let reg = registry(dir.path(), &[]);
    assert!(matches!(reg.load_file(&dir.path().join("junk.wasm")), Err(PluginError::NotAComponent(_))));
    assert!(matches!(reg.load_file(&dir.path().join("module.wasm")), Err(PluginError::NotAComponent(_))));
    assert!(matches!(reg.load_file(&dir.path().join("bare.wasm")), Err(PluginError::NoManifest)));
    assert!(reg.status().iter().all(|s| s.state == PluginState::Failed));
}

fn member(id: &str, health: TopologyHealth, suitability: u64) -> Member {
    Member { id: id.into(), health, suitability }
}

/// A view of group `group` from member "b": a alive, b suspect, c confirmed, d departed.
fn view(group: &str, leader: Option<&str>, status: ElectionStatus, quorum: bool) -> GroupView {
    GroupView {
        group: group.into(),
        self_id: "b".into(),
        members: vec![
            member("a", TopologyHealth::Alive, 1),
            member("b", TopologyHealth::Suspect, 2),
            member("c", TopologyHealth::Confirmed, 3),
            member("d", TopologyHealth::Departed, 4),
        ],
        leader: leader.map(Into::into),
        term: 2,
        status,
        quorum,
        alive: 2,
        population: 3,
    }
}

fn roles(d: &Decision) -> Vec<(&str, Role)> {
    d.roles.iter().map(|(id, r)| (id.as_str(), *r)).collect()
}

#[test]
fn topology_policies_decide() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["standalone", "leader-follower"]);
    let reg = registry(dir.path(), &[]);
    reg.load_dir().unwrap();
    let lf = reg.topology("leader-follower").unwrap();
    assert_eq!(lf.policy_name().unwrap(), "leader-follower");
    assert_eq!(lf.plugin().info.wit, WitVersion::V0_2);
    let d = lf.decide(&view("redis.default", Some("a"), ElectionStatus::Finished, true)).unwrap();
    assert!(d.election_needed);
    assert_eq!(
        roles(&d),
        vec![("a", Role::Leader), ("b", Role::Follower), ("c", Role::None), ("d", Role::None)]
    );
    // Habitat's gate: no election finished, no quorum, or a dead leader: nobody has a role.
    for (leader, status, quorum) in [
        (None, ElectionStatus::InProgress, true),
        (Some("a"), ElectionStatus::NoQuorum, false),
        (Some("a"), ElectionStatus::Finished, false),
        (Some("c"), ElectionStatus::Finished, true),
    ] {
        let d = lf.decide(&view("redis.default", leader, status, quorum)).unwrap();
        assert!(d.election_needed);
        assert!(d.roles.iter().all(|(_, r)| *r == Role::None), "{leader:?} {status:?} {quorum}: {d:?}");
    }
    let sa = reg.topology("standalone").unwrap();
    let d = sa.decide(&view("web.default", None, ElectionStatus::None, true)).unwrap();
    assert!(!d.election_needed);
    assert_eq!(d.roles.len(), 4);
    assert!(d.roles.iter().all(|(_, r)| *r == Role::Standalone));
    assert_eq!((lf.plugin().faults(), sa.plugin().faults()), (0, 0));
}

/// A 0.1.0 policy gets the 0.2.0 view as its old arguments: suspect is alive, confirmed and
/// departed are not, the leader is the view's leader.
#[test]
fn a_0_1_0_topology_policy_decides_from_the_converted_view() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["topo-v0-1"]);
    let reg = registry(dir.path(), &[]);
    reg.load_dir().unwrap();
    let old = reg.topology("topo-v0-1").unwrap();
    assert_eq!(old.plugin().info.wit, WitVersion::V0_1);
    assert_eq!(old.loaded_name(), "old-policy");
    let d = old.decide(&view("redis.default", Some("c"), ElectionStatus::Finished, true)).unwrap();
    assert!(!d.election_needed, "a leader was passed as current-leader");
    assert_eq!(
        roles(&d),
        vec![("a", Role::Follower), ("b", Role::Follower), ("c", Role::Leader), ("d", Role::None)]
    );
    let mut v = view("redis.default", None, ElectionStatus::InProgress, true);
    v.members[0].suitability = 0; // topo-v0-1 leaves such a member out: suitability arrives too
    let d = old.decide(&v).unwrap();
    assert!(d.election_needed);
    assert_eq!(roles(&d), vec![("b", Role::Follower), ("c", Role::None), ("d", Role::None)]);
    assert_eq!(old.plugin().faults(), 0);
}

#[test]
fn a_faulty_topology_policy_is_an_error_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["topo-faulty"]);
    let reg = registry(dir.path(), &[]);
    reg.load_dir().unwrap();
    let p = reg.topology_named("faulty-policy").unwrap();
    let mut ok = view("fine.default", None, ElectionStatus::InProgress, true);
    ok.members.push(member("term-2", TopologyHealth::Alive, 0));
    let good = |p: &warren::plugins::TopologyHandle| {
        let d = p.decide(&ok).unwrap();
        assert!(d.election_needed);
        assert_eq!(roles(&d).last(), Some(&("term-2", Role::Leader)), "the view's term arrived");
    };
    good(&p);
    match p.decide(&view("panic.default", None, ElectionStatus::None, true)) {
        Err(PluginError::Trap { plugin, message }) => {
            assert_eq!(plugin, "topo-faulty");
            assert!(!message.is_empty());
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    good(&p);
    assert!(matches!(
        p.decide(&view("spin.default", None, ElectionStatus::None, true)),
        Err(PluginError::Deadline { timeout_ms: 200, .. })
    ));
    for (group, says) in [("stranger.default", "not-a-member"), ("twice.default", "two roles")] {
        match p.decide(&view(group, None, ElectionStatus::None, true)) {
            Err(e @ PluginError::BadAnswer { .. }) => assert!(e.to_string().contains(says), "{e}"),
            other => panic!("{group}: expected a refused answer, got {other:?}"),
        }
    }
    good(&p);
    assert_eq!(p.plugin().faults(), 4);
    let st = reg.status();
    assert_eq!((st[0].state, st[0].faults), (PluginState::Loaded, 4));
}

#[test]
fn topology_named_finds_a_policy_by_what_name_answers() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["leader-follower", "standalone", "topo-v0-1", "topo-faulty", "env"]);
    let reg = registry(dir.path(), &[]);
    reg.load_dir().unwrap();
    for (flag, plugin) in [
        ("leader", "leader-follower"),
        ("standalone", "standalone"),
        ("old-policy", "topo-v0-1"),
        ("faulty-policy", "topo-faulty"),
    ] {
        let h = reg.topology_named(policy_for(flag)).unwrap();
        assert_eq!((h.plugin().name(), h.loaded_name()), (plugin, policy_for(flag)));
    }
    let named = |name: &str| reg.status().into_iter().find(|s| s.name.as_deref() == Some(name)).unwrap();
    assert_eq!(named("topo-faulty").topology_name.as_deref(), Some("faulty-policy"));
    assert_eq!(named("env").topology_name, None);
    assert_eq!(reg.plugins_json()["plugins"].as_array().unwrap().len(), 5);
    // By file name, or by a name no policy answers: refused, listing the loaded policies.
    for missing in ["topo-faulty", "raft", "env"] {
        let e = reg.topology_named(missing).err().expect("no such policy");
        assert!(matches!(e, PluginError::NoTopology { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains(&format!("{missing:?}")), "{text}");
        assert!(
            text.contains(
                "loaded topology policies: leader-follower, standalone, faulty-policy (plugin topo-faulty), \
                 old-policy (plugin topo-v0-1)"
            ),
            "{text}"
        );
    }
    let empty = tempfile::tempdir().unwrap();
    let reg = registry(empty.path(), &[]);
    reg.load_dir().unwrap();
    let text = reg.topology_named("leader-follower").err().unwrap().to_string();
    assert!(text.ends_with("no topology policy is loaded"), "{text}");
}

#[test]
fn lifecycle_hooks_run() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["hook-example"]);
    let reg = registry(dir.path(), &[]);
    reg.load_dir().unwrap();
    let h = reg.hook("hook-example").unwrap();
    assert_eq!(h.init(&ctx("")).unwrap(), Ok(()));
    assert!(h.init(&ctx("fail_init = true")).unwrap().is_err());
    assert_eq!(h.health_check(&ctx("")).unwrap(), Health::Ok);
    assert_eq!(h.health_check(&ctx("fail_health = true")).unwrap(), Health::Critical);
    assert_eq!(h.suitability(&ctx("suitability = 42")).unwrap(), 42);
    assert!(h.reconfigure(&ctx("")).unwrap().is_ok());
    assert!(h.file_updated(&ctx(""), "app.conf").unwrap().is_ok());
    assert!(h.post_stop(&ctx("")).unwrap().is_ok());
    assert_eq!(h.plugin().info.wit, WitVersion::V0_2);
}

/// Plugins built against warren:plugin@0.1.0 keep loading and answering: the host links both
/// versions, and a 0.1.0 hook gets its smaller context.
#[test]
fn plugins_built_against_0_1_0_still_load_and_answer() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["hook-v0-1", "cred-v0-1", "hook-example"]);
    let reg = registry(dir.path(), &[]);
    reg.load_dir().unwrap();
    let st = reg.status();
    assert!(st.iter().all(|s| s.state == PluginState::Loaded), "{st:#?}");
    let wit = |name: &str| st.iter().find(|s| s.name.as_deref() == Some(name)).and_then(|s| s.wit);
    assert_eq!(wit("hook-v0-1"), Some(WitVersion::V0_1));
    assert_eq!(wit("cred-v0-1"), Some(WitVersion::V0_1));
    assert_eq!(wit("hook-example"), Some(WitVersion::V0_2));
    assert_eq!(reg.plugins_json()["plugins"][0]["wit"], "0.1.0");

    let h = reg.hook("hook-v0-1").unwrap();
    assert_eq!(h.init(&ctx("")).unwrap(), Ok(()));
    assert_eq!(h.health_check(&ctx("")).unwrap(), Health::Warning);
    assert_eq!(h.suitability(&ctx("")).unwrap(), 7);
    assert!(h.reconfigure(&ctx("")).unwrap().is_ok());
    assert!(h.file_updated(&ctx(""), "app.conf").unwrap().unwrap_err().contains("app.conf"));
    assert!(h.post_stop(&ctx("")).unwrap().is_ok());
    assert_eq!(h.plugin().faults(), 0);

    let src = reg.get_credential_source("OLDCRED").expect("cred-v0-1 serves OLDCRED");
    let c = src.resolve("OLDCRED:x").unwrap().unwrap();
    assert_eq!((c.value.as_str(), c.ttl_seconds), ("old-x", Some(60)));
    assert!(matches!(src.resolve("OLDCRED:").unwrap(), Err(CredentialError::NotFound(_))));
}

#[test]
fn compile_cache_is_keyed_and_reused() {
    // A private engine so the cache state is this test's own.
    let cache = tempfile::tempdir().unwrap();
    let engine = warren::plugins::PluginEngine::new(warren::plugins::EngineOptions {
        cache_dir: Some(cache.path().join("c")),
        ..Default::default()
    })
    .unwrap();
    let bytes = wasm_bytes("standalone");
    let digest = warren::crypto::sodium::blake2b_256(&bytes);
    // Leftovers of a writer that died mid-write are swept when the cache writes; a live
    // writer's (this process's) are not.
    let stale = plant_temp_file(&cache.path().join("c"), "x.cwasm", dead_pid());
    let live = plant_temp_file(&cache.path().join("c"), "x.cwasm", std::process::id());
    assert_eq!(engine.compile(&bytes, &digest).unwrap().1, CacheOutcome::Miss);
    assert!(!stale.exists() && live.exists());
    std::fs::remove_file(&live).unwrap();
    assert_eq!(engine.compile(&bytes, &digest).unwrap().1, CacheOutcome::Hit);
    let files: Vec<PathBuf> =
        std::fs::read_dir(cache.path().join("c")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with(&hex::encode(digest)), "{name}");
    // A file warren did not write (world-writable) is never deserialized.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&files[0], std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(engine.compile(&bytes, &digest).unwrap().1, CacheOutcome::Miss);
    // Garbage under the right name is discarded, not trusted blindly into a crash.
    std::fs::write(&files[0], b"garbage").unwrap();
    std::fs::set_permissions(&files[0], std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(engine.compile(&bytes, &digest).unwrap().1, CacheOutcome::Miss);
    assert_eq!(engine.compile(&bytes, &digest).unwrap().1, CacheOutcome::Hit);
}

#[test]
fn plugins_json_reports_status() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["env", "file"]);
    let reg = registry(dir.path(), &[]);
    reg.load_dir().unwrap();
    let j = reg.plugins_json();
    let list = j["plugins"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let env = list.iter().find(|p| p["name"] == "env").unwrap();
    assert_eq!(env["world"], "credential-source");
    assert_eq!(env["state"], "loaded");
    assert_eq!(env["schemes"][0], "ENV");
    assert_eq!(env["blake2b"].as_str().unwrap().len(), 64);
    assert_eq!(env["signature"]["status"], "unsigned");
}

#[test]
fn calls_from_async_code_go_through_spawn_blocking() {
    // The supervisor is async: plugin calls are blocking and run on tokio's blocking pool.
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &["env"]);
    let reg =
        registry(dir.path(), &[("env", Grant { env: vec!["CARGO_PKG_NAME".into()], ..Grant::default() })]);
    reg.load_dir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let values = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let reg = reg.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                reg.get_credential_source("ENV")
                    .unwrap()
                    .resolve("ENV:CARGO_PKG_NAME")
                    .unwrap()
                    .unwrap()
                    .value
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    assert_eq!(values, vec!["warren".to_string(); 8]);
}
