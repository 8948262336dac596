//! Reads the configuration files the keyserver's policy gives a node: `DATA/files/all/NAME`
//! for every node, `DATA/files/GROUP/NAME` for nodes in GROUP (a group's file wins over
//! `all`'s). Read at each key fetch, so an edit reaches nodes at their next fetch. Bad names,
//! oversized or unreadable files are skipped with a warning.

use std::collections::BTreeMap;
use std::path::Path;

use crate::admission::policy_files::{MAX_FILE_BYTES, RESERVED, valid_name};

pub const FILES_DIR: &str = "files";
const ALL: &str = "all";

/// The files for a node in `groups`, by name.
pub fn policy_files(data_path: &Path, groups: &[String]) -> BTreeMap<String, String> {
    let root = data_path.join(FILES_DIR);
    let mut out = BTreeMap::new();
    // Later folders overwrite earlier ones: `all` first, then the node's groups.
    let folders = std::iter::once(ALL).chain(groups.iter().map(String::as_str).filter(|g| *g != ALL));
    for folder in folders {
        read_folder(&root.join(folder), &mut out);
    }
    out
}

fn read_folder(dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            tracing::warn!(path = %path.display(), "policy file skipped: its name is not plain");
            continue;
        };
        if !valid_name(&name) || RESERVED.contains(&name.as_str()) {
            tracing::warn!(path = %path.display(), "policy file skipped: not a plain name, or reserved");
            continue;
        }
        match entry.metadata() {
            Ok(m) if !m.is_file() => {
                tracing::warn!(path = %path.display(), "policy file skipped: not a regular file");
                continue;
            }
            Ok(m) if m.len() > MAX_FILE_BYTES as u64 => {
                tracing::warn!(path = %path.display(), max = MAX_FILE_BYTES, "policy file skipped: too large");
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "policy file skipped");
                continue;
            }
        }
        match std::fs::read(&path).map(String::from_utf8) {
            Ok(Ok(text)) if text.len() <= MAX_FILE_BYTES => {
                out.insert(name, text);
            }
            Ok(Ok(_)) => tracing::warn!(path = %path.display(), "policy file skipped: too large"),
            Ok(Err(_)) => tracing::warn!(path = %path.display(), "policy file skipped: not UTF-8"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "policy file skipped"),
        }
    }
}
