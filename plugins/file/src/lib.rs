//! `FILE:/abs/path` → the file's content with one trailing newline removed; the path is returned
//! as a watch path. The host preopens each granted directory read-only at the same path inside
//! the guest, so plain `std::fs` works on host paths.

wit_bindgen::generate!({ path: "../../wit", world: "credential-source" });
warren_plugin_guest::manifest!();

use std::io::{ErrorKind, Read};
use std::path::{Component, Path};

use exports::warren::plugin::credentials::Guest;
use warren::plugin::host::{Level, log};
use warren::plugin::types::{Credential, CredentialError};

/// Secrets are small; refuse to read anything bigger.
const MAX_BYTES: u64 = 1 << 20;

struct File;

fn trim_one_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// Whether some ancestor directory of `path` is visible, i.e. the path lies inside a granted
/// (preopened) directory. Used to tell "missing file" from "not granted".
fn inside_grant(path: &Path) -> bool {
    path.ancestors().skip(1).any(|a| std::fs::metadata(a).is_ok_and(|m| m.is_dir()))
}

impl Guest for File {
    fn schemes() -> Vec<String> {
        vec!["FILE".to_string()]
    }

    fn resolve(reference: String) -> Result<Credential, CredentialError> {
        let rest = warren_plugin_guest::split_reference(&reference, "FILE")
            .map_err(|e| CredentialError::InvalidReference(e.to_string()))?;
        let path = Path::new(rest);
        if !path.is_absolute() {
            return Err(CredentialError::InvalidReference(format!(
                "FILE reference needs an absolute path, got {rest:?}"
            )));
        }
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(CredentialError::InvalidReference(format!(
                "FILE reference must not contain '..': {rest:?}"
            )));
        }
        let fail = |e: std::io::Error| -> CredentialError {
            match e.kind() {
                ErrorKind::PermissionDenied => CredentialError::Denied(format!("{rest}: permission denied")),
                ErrorKind::NotFound if inside_grant(path) => {
                    CredentialError::NotFound(format!("{rest}: no such file"))
                }
                ErrorKind::NotFound => {
                    CredentialError::Denied(format!("{rest}: not inside a directory granted to this plugin"))
                }
                ErrorKind::InvalidData => CredentialError::Unavailable(format!("{rest}: not valid UTF-8")),
                _ if !inside_grant(path) => CredentialError::Denied(format!(
                    "{rest}: not inside a directory granted to this plugin ({e})"
                )),
                _ => CredentialError::Unavailable(format!("{rest}: {e}")),
            }
        };
        // Open once and ask the handle: every path lookup is a sandboxed walk (several syscalls).
        let mut file = std::fs::File::open(path).map_err(fail)?;
        let meta = file.metadata().map_err(fail)?;
        if meta.is_dir() {
            return Err(CredentialError::NotFound(format!("{rest}: is a directory")));
        }
        if meta.len() > MAX_BYTES {
            return Err(CredentialError::Unavailable(format!("{rest}: larger than {MAX_BYTES} bytes")));
        }
        let mut text = String::with_capacity(meta.len() as usize);
        (&mut file).take(MAX_BYTES).read_to_string(&mut text).map_err(fail)?;
        let value = trim_one_newline(text);
        log(Level::Debug, "resolved", &[("path".into(), rest.into())]);
        Ok(Credential { value, ttl_seconds: None, watch_paths: vec![rest.to_string()] })
    }
}

export!(File);
