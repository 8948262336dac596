//! What service groups gossip to their services: the config layer above user.toml (kept in
//! memory only), and files written to `{svc}/files/` for the `file-updated` hook.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use zeroize::Zeroizing;

use super::Manager;
use crate::groups::inbox::{Decision, Payload};
use crate::groups::payload::check_file_name;
use crate::services::spec::ServiceSpec;
use crate::services::supervisor::Command;
use crate::services::{config, users};

/// Gossiped files by name, their bytes as decrypted.
type Files = Vec<(String, Zeroizing<Vec<u8>>)>;

/// Per group (`SVC.GROUP[@ORG]`), the latest config it was gossiped.
#[derive(Default)]
pub struct GossipLayers {
    configs: BTreeMap<String, toml::Table>,
    /// Files known when the supervisor started, written when their service is prepared
    /// (before it first renders or starts).
    pending_files: BTreeMap<String, Files>,
}

impl GossipLayers {
    pub fn set_config(&mut self, group: &str, table: toml::Table) {
        self.configs.insert(group.to_string(), table);
    }

    pub fn add_pending_file(&mut self, group: &str, name: String, bytes: Zeroizing<Vec<u8>>) {
        let files = self.pending_files.entry(group.to_string()).or_default();
        files.retain(|(n, _)| *n != name);
        files.push((name, bytes));
    }

    pub fn pending_files(&self, group: &str) -> &[(String, Zeroizing<Vec<u8>>)] {
        self.pending_files.get(group).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn clear_pending(&mut self) {
        self.pending_files.clear();
    }

    pub fn forget(&mut self, group: &str) {
        self.configs.remove(group);
        self.pending_files.remove(group);
    }

    /// The group's layer as gossiped.
    pub fn raw(&self, group: &str) -> Option<toml::Table> {
        self.configs.get(group).cloned()
    }

    /// The group's layer with every string escaped: a gossiped value is never read as a
    /// credential reference (`FILE:/etc/shadow` from the ring stays that text).
    pub fn layer(&self, group: &str) -> Option<toml::Table> {
        self.configs.get(group).map(|t| escaped(t.clone()))
    }
}

/// Every string of `t` prefixed with `literal:`, which rendering takes off again.
pub fn escaped(t: toml::Table) -> toml::Table {
    fn walk(v: toml::Value) -> toml::Value {
        match v {
            toml::Value::String(s) => {
                toml::Value::String(format!("{}{s}", crate::credentials::reference::LITERAL_PREFIX))
            }
            toml::Value::Array(a) => toml::Value::Array(a.into_iter().map(walk).collect()),
            toml::Value::Table(t) => toml::Value::Table(t.into_iter().map(|(k, v)| (k, walk(v))).collect()),
            other => other,
        }
    }
    t.into_iter().map(|(k, v)| (k, walk(v))).collect()
}

/// The merged config with the gossip layer on top.
pub fn with_layer(mut cfg: toml::Table, layer: Option<toml::Table>) -> toml::Table {
    if let Some(layer) = layer {
        config::merge(&mut cfg, layer);
    }
    cfg
}

/// Writes a gossiped file into `files_dir` atomically (temp + rename), mode 0640, owned like
/// `files_dir` when running as root. Returns false when the file already held these bytes.
pub fn write_file(files_dir: &Path, name: &str, bytes: &[u8], as_root: bool) -> std::io::Result<bool> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    if check_file_name(name).is_err() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a plain file name"));
    }
    let dest = files_dir.join(name);
    // Not following a link the service may have put there.
    if let Ok(meta) = std::fs::symlink_metadata(&dest)
        && meta.is_file()
        && meta.len() == bytes.len() as u64
        && std::fs::read(&dest).is_ok_and(|old| Zeroizing::new(old).as_slice() == bytes)
    {
        return Ok(false);
    }
    let dir = std::fs::symlink_metadata(files_dir)?;
    if !dir.is_dir() {
        return Err(std::io::Error::other(format!("{} is not a directory", files_dir.display())));
    }
    let mut f = crate::fsutil::AtomicFile::create(&dest, 0o640, crate::fsutil::Existing::Replace)?;
    f.file().set_permissions(std::fs::Permissions::from_mode(0o640))?;
    if as_root {
        std::os::unix::fs::fchown(f.file(), Some(dir.uid()), Some(dir.gid()))?;
    }
    f.file().write_all(bytes)?;
    f.commit()?;
    Ok(true)
}

impl Manager {
    /// The services of a group.
    fn in_group(&self, group: &str) -> Vec<String> {
        self.services
            .iter()
            .filter(|(n, e)| self.group_of(n, &e.spec) == group)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A group's new gossiped config re-renders its services as a user.toml change does; a new
    /// file is written into each one's `files/` and its file-updated hook runs.
    pub(super) async fn gossiped(&mut self, decision: Decision) {
        let names = self.in_group(&decision.group);
        match decision.payload {
            Payload::Config(table) => {
                self.gossip.set_config(&decision.group, table);
                for name in names {
                    tracing::info!(service = %name, group = %decision.group, incarnation = decision.incarnation, "gossiped configuration");
                    self.rerender(&name).await;
                }
            }
            Payload::File { name: file, bytes } => {
                for name in names {
                    let dir = self.options.data_path.join("svc").join(&name).join("files");
                    match write_file(&dir, &file, &bytes, users::is_root()) {
                        Ok(false) => {}
                        Ok(true) => {
                            tracing::info!(service = %name, file = %file, incarnation = decision.incarnation, "gossiped file written; running file-updated");
                            match self
                                .ask_task(&name, |done| Command::FileUpdated { file: file.clone(), done })
                                .await
                            {
                                // The hook's outcome is logged by the service's task.
                                Ok(rx) => drop(tokio::spawn(rx)),
                                Err(e) => tracing::warn!(service = %name, error = %e, "file-updated not run"),
                            }
                        }
                        Err(e) => {
                            tracing::error!(service = %name, file = %file, error = %e, "cannot write the gossiped file")
                        }
                    }
                }
            }
        }
    }

    /// The files the ring held at start, into a service being prepared (no hook: it starts
    /// with them).
    pub(super) fn write_pending_files(&self, name: &str, spec: &ServiceSpec, dir: &Path) {
        for (file, bytes) in self.gossip.pending_files(&self.group_of(name, spec)) {
            if let Err(e) = write_file(dir, file, bytes, users::is_root()) {
                tracing::error!(service = %name, file = %file, error = %e, "cannot write the gossiped file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn gossiped_strings_are_never_references() {
        let mut g = GossipLayers::default();
        let t: toml::Table =
            toml::from_str("pw = 'FILE:/etc/shadow'\nn = 3\n[db]\nhosts = ['ENV:X']\n").unwrap();
        g.set_config("redis.default@e2e", t);
        let layer = g.layer("redis.default@e2e").unwrap();
        let routed = |_: &str| true;
        assert!(config::references(&layer, "x", &routed).is_empty());
        let out = config::resolve(&layer, &routed, &|_| Some("LEAKED".into())).unwrap();
        assert_eq!(out["pw"].as_str(), Some("FILE:/etc/shadow"));
        assert_eq!(out["db"]["hosts"][0].as_str(), Some("ENV:X"));
        assert_eq!(out["n"].as_integer(), Some(3));
        let base: toml::Table = toml::from_str("pw = 'user'\nkeep = 1\n").unwrap();
        let merged = with_layer(base, Some(layer));
        assert_eq!(merged["keep"].as_integer(), Some(1));
        assert!(g.layer("other.default").is_none());
        g.forget("redis.default@e2e");
        assert!(g.layer("redis.default@e2e").is_none());
    }

    #[test]
    fn files_are_written_atomically_once_and_only_by_plain_names() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_file(dir.path(), "app.conf", b"one", false).unwrap());
        let path = dir.path().join("app.conf");
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(!write_file(dir.path(), "app.conf", b"one", false).unwrap(), "unchanged");
        assert!(write_file(dir.path(), "app.conf", b"two", false).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        for bad in ["../escape", "a/b", "", ".."] {
            assert!(write_file(dir.path(), bad, b"x", false).is_err(), "{bad:?}");
        }
        assert!(!dir.path().parent().unwrap().join("escape").exists());
        // A link planted in its place is replaced, never followed.
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("linked")).unwrap();
        assert!(write_file(dir.path(), "linked", b"new", false).unwrap());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 3, "no temp files left: {names:?}");
    }
}
