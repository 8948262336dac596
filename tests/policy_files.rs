//! Configuration files by policy (#13): a real keyserver serves DATA/files/all and
//! DATA/files/GROUP to admitted nodes at each key fetch; nodes write them into their admission
//! folder and drop the ones no longer sent; a sup.toml among them lies under the operator's.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use support::keyserver::{self, Keyserver};
use support::ring::{args, fast_timings};
use support::sup::Sup;
use support::wait::wait_until;
use warren::http::client;

/// A join string for `node` in `groups`.
fn token(ks: &Keyserver, node: &str, groups: &[&str]) -> String {
    let mut a = vec!["token", "create", "--node", node];
    for g in groups {
        a.extend(["--group", g]);
    }
    ks.admit(&a).ok().lines().last().unwrap().to_string()
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn put(ks: &Keyserver, folder: &str, name: &str, text: &str) {
    let dir = ks.data.join("files").join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn nodes_get_exactly_the_files_their_groups_give() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    put(&ks, "all", "x.conf", "x = 1\n");
    put(&ks, "all", "shared.txt", "for all\n");
    put(&ks, "web", "shared.txt", "for web\n");
    put(&ks, "web", "sup.toml", "org = \"acme\"\n");
    put(&ks, "all", "peers", "10.0.0.1:9638\n");
    put(&ks, "all", "bad name", "skipped\n");
    put(&ks, "all", ".hidden", "skipped\n");
    put(&ks, "all", "huge.conf", &"x".repeat(64 * 1024 + 1));
    let (web, plain) = (dir.path().join("web1"), dir.path().join("plain"));
    keyserver::join(&ks.join, &token(&ks, "web1", &["web"]), "web1", &web).ok();
    keyserver::join(&ks.join, &token(&ks, "plain", &[]), "plain", &plain).ok();
    let own = names(&web.join("data/admission"));
    keyserver::node_cmd(&web, &["fetch"]).ok();
    keyserver::node_cmd(&plain, &["fetch"]).ok();

    let adm = |node: &Path| node.join("data/admission");
    let with = |extra: &[&str]| own.iter().cloned().chain(set(&["peers"])).chain(set(extra)).collect();
    assert_eq!(names(&adm(&web)), with(&["x.conf", "shared.txt", "sup.toml"]));
    assert_eq!(names(&adm(&plain)), with(&["x.conf", "shared.txt"]));
    let read = |node: &Path, name: &str| std::fs::read_to_string(adm(node).join(name)).unwrap();
    assert_eq!(read(&web, "shared.txt"), "for web\n", "the group's file wins over all's");
    assert_eq!(read(&plain, "shared.txt"), "for all\n");
    assert_eq!(read(&web, "x.conf"), "x = 1\n");
    assert!(!read(&web, "peers").contains("10.0.0.1"), "peers stays the keyserver's own");
    let log = ks.log_text();
    assert!(log.contains("bad name") && log.contains("huge.conf"), "skipped files are warned about: {log}");

    // An edit arrives at the next fetch; a removed file goes.
    put(&ks, "all", "x.conf", "x = 2\n");
    std::fs::remove_file(ks.data.join("files/web/sup.toml")).unwrap();
    keyserver::node_cmd(&web, &["fetch"]).ok();
    keyserver::node_cmd(&plain, &["fetch"]).ok();
    assert_eq!(read(&web, "x.conf"), "x = 2\n");
    assert_eq!(read(&plain, "x.conf"), "x = 2\n");
    assert_eq!(names(&adm(&web)), with(&["x.conf", "shared.txt"]));
    // A renewal carries no files and removes none.
    keyserver::node_cmd(&web, &["renew"]).ok();
    assert_eq!(names(&adm(&web)), with(&["x.conf", "shared.txt"]));
}

fn gateway_status(s: &Sup, token: &str) -> u16 {
    client::request(&s.http, "GET", "/plugins", Some(token), None, Duration::from_secs(2))
        .map_or(0, |r| r.status)
}

/// The fragment's auth_token guards the gateway after a restart; the operator's own sup.toml
/// wins when it sets the same key; a fragment that does not parse is a warning and ignored.
#[test]
fn a_sup_toml_fragment_lies_under_the_operators_config() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Keyserver::start(dir.path(), "acme");
    put(&ks, "web", "sup.toml", "auth_token = \"fragment-token\"\n");
    let join_file = dir.path().join("web1.join");
    std::fs::write(&join_file, format!("{}\n", token(&ks, "web1", &["web"]))).unwrap();
    let mut a = fast_timings();
    a.extend(args(&["--join", join_file.to_str().unwrap(), "--keyserver", &ks.join, "--node", "web1"]));
    let mut s = Sup::start(dir.path(), 131, a, vec![]);
    let fragment = s.data.join("admission/sup.toml");
    wait_until(Duration::from_secs(30), "the fragment arrived", || fragment.exists());
    assert_eq!(gateway_status(&s, "any"), 200, "the fragment takes effect at the next start, not now");

    assert!(s.term());
    s.spawn();
    assert_eq!(gateway_status(&s, "fragment-token"), 200);
    assert_eq!(gateway_status(&s, "other"), 401, "the fragment's auth_token guards the gateway");

    let operator = dir.path().join("operator.toml");
    std::fs::write(&operator, "auth_token = \"operator-token\"\n").unwrap();
    assert!(s.term());
    s.args.extend(args(&["--config", operator.to_str().unwrap()]));
    s.spawn();
    assert_eq!(gateway_status(&s, "operator-token"), 200);
    assert_eq!(gateway_status(&s, "fragment-token"), 401, "the operator's value wins");

    // A broken fragment: named in a warning, ignored (the operator's config alone applies).
    std::fs::write(&fragment, "auth_token = \n").unwrap();
    assert!(s.term());
    s.spawn();
    assert_eq!(gateway_status(&s, "operator-token"), 200);
    let log = std::fs::read_to_string(&s.log).unwrap();
    assert!(log.contains("admission/sup.toml: ignoring the keyserver's sup.toml fragment"), "{log}");
}
