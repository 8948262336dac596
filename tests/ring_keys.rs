//! Ring key rotation on a live ring through `warren ring key install|use|remove|list`.

mod ring_support;

use std::collections::BTreeSet;
use std::time::Duration;

use ring_support::*;

#[test]
fn rotate_the_key_of_a_live_five_member_ring_without_suspicion() {
    let dir = tempfile::tempdir().unwrap();
    let caches: Vec<std::path::PathBuf> = (0..5).map(|i| dir.path().join(format!("keys-{i}"))).collect();
    let old = ring_key("prod", "20240101000000");
    let new = ring_key("prod", "20250101000000");
    for c in &caches {
        write_key(c, &old);
    }
    let token = ("WARREN_GATEWAY_AUTH_TOKEN".to_string(), "tok".to_string());
    let gossip = free_port();
    let http = free_port();
    let seed = format!("127.0.0.60:{gossip}");
    let sups: Vec<Sup> = (0..5u8)
        .map(|i| {
            let mut a = relaxed_timings();
            a.extend(args(&["--ring", "prod", "--peer", &seed, "--cache-key-path"]));
            a.push(caches[usize::from(i)].display().to_string());
            Sup::start(dir.path(), 60 + i, gossip, http, a, vec![token.clone()])
        })
        .collect();
    let ids: Vec<String> = sups.iter().map(Sup::member_id).collect();
    let refs: Vec<&Sup> = sups.iter().collect();
    wait_until(Duration::from_secs(30), "5 alive", || all_see_alive(&refs, &ids));
    let incarnations: Vec<u64> = ids.iter().map(|id| sups[0].incarnation_of(id).unwrap()).collect();

    // Every health any member reports during the rotation.
    let mut seen = BTreeSet::new();
    let observe = |seen: &mut BTreeSet<String>| {
        for s in &sups {
            seen.extend(s.health().into_values());
        }
    };
    let new_file = dir.path().join("new.sym.key");
    std::fs::write(&new_file, new.to_file().to_text().as_bytes()).unwrap();
    for s in &sups {
        let out = s.cli(&["ring", "key", "install", new_file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        observe(&mut seen);
    }
    for s in &sups {
        let out = s.cli(&["ring", "key", "use", &new.id.to_string()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        observe(&mut seen);
    }
    // Traffic flows under the new key before the old one goes.
    let before = sups[0].metric("warren_ring_packets_received_total");
    wait_until(Duration::from_secs(10), "packets under the new key", || {
        sups[0].metric("warren_ring_packets_received_total") > before + 10
    });
    for s in &sups {
        let out = s.cli(&["ring", "key", "remove", &old.id.to_string()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        observe(&mut seen);
    }
    // A few more probe rounds under the new key only.
    let before = sups[4].metric("warren_ring_packets_received_total");
    wait_until(Duration::from_secs(10), "packets after removal", || {
        observe(&mut seen);
        sups[4].metric("warren_ring_packets_received_total") > before + 20
    });
    observe(&mut seen);
    assert_eq!(seen, BTreeSet::from(["Alive".to_string()]), "no member ever went suspect or worse");
    assert!(all_see_alive(&refs, &ids));
    for (id, inc) in ids.iter().zip(&incarnations) {
        assert_eq!(sups[0].incarnation_of(id), Some(*inc), "no refutation happened for {id}");
    }
    for s in &sups {
        let out = s.cli(&["ring", "key", "list"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains(&new.id.to_string()) && text.contains("primary"), "{text}");
        assert!(!text.contains(&old.id.to_string()), "{text}");
        assert_eq!(s.metric("warren_ring_packets_rejected_total{reason=\"unknown_key\"}"), 0);
    }
    for c in &caches {
        assert!(!c.join(format!("{}.sym.key", old.id)).exists(), "old key file removed from the cache");
        assert!(c.join(format!("{}.sym.key", new.id)).exists());
    }
    // Guard rails: the primary cannot be removed; an unknown key cannot be used; no token, no entry.
    assert!(!sups[0].cli(&["ring", "key", "remove", &new.id.to_string()]).status.success());
    assert!(!sups[0].cli(&["ring", "key", "use", "prod-20990101000000"]).status.success());
    let out = std::process::Command::new(BIN)
        .args(["ring", "key", "list", "--remote-http", &sups[0].http])
        .env_remove("WARREN_GATEWAY_AUTH_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[test]
fn key_cache_changes_reload_the_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("keys");
    let k1 = ring_key("lab", "20240101000000");
    write_key(&cache, &k1);
    let mut a = fast_timings();
    a.extend(args(&["--ring", "lab", "--cache-key-path", cache.to_str().unwrap()]));
    let sups = start_ring(dir.path(), 70, 1, &a, &[]);
    let list = |s: &Sup| s.get("/ring/keys").unwrap().json().unwrap();
    assert_eq!(list(&sups[0]).as_array().unwrap().len(), 1);
    let k2 = ring_key("lab", "20250101000000");
    write_key(&cache, &k2);
    wait_until(Duration::from_secs(10), "new cache key is accepted", || {
        list(&sups[0]).as_array().unwrap().len() == 2
    });
    // Adding a key does not switch the primary: only `ring key use` does.
    let keys = list(&sups[0]);
    let primary: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["primary"] == true)
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert_eq!(primary, vec![k1.id.to_string().as_str()]);
    std::fs::remove_file(cache.join(format!("{}.sym.key", k2.id))).unwrap();
    wait_until(Duration::from_secs(10), "removed cache key is dropped", || {
        list(&sups[0]).as_array().unwrap().len() == 1
    });
}
