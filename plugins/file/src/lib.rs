//! `FILE:/abs/path` → the file's content with one trailing newline removed; the path is returned
//! as a watch path. The host preopens each granted directory read-only at its own path, so a
//! reference is opened relative to the longest granted directory that contains it.
//!
//! This plugin talks to `wasi:filesystem` directly instead of through `std::fs`: there, an open,
//! a stat and a read cost eight host calls and three `statx` (wasi-libc asks for the stat and an
//! inode hash, and reads through a stream that must be dropped too); here they cost four host
//! calls and one `statx`: open-at, a read, the read that sees the end of the file, the close.
//! `warren bench plugins` measures it.

wit_bindgen::generate!({ path: "../../wit", world: "credential-source" });
warren_plugin_guest::manifest!();

use std::borrow::Cow;

use exports::warren::plugin::credentials::Guest;
use warren::plugin::types::{Credential, CredentialError};
use wasi::filesystem::preopens::get_directories;
use wasi::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

/// Secrets are small; refuse to read anything bigger.
const MAX_BYTES: usize = 1 << 20;
/// One read: big enough for a token or a certificate, small enough that the host's zeroed
/// buffer is cheap.
const CHUNK: u64 = 4096;

/// A directory the operator granted, preopened by the host at its own path.
struct Grant {
    dir: Descriptor,
    names: Vec<String>,
}

thread_local! {
    /// The granted directories are fixed for an instance's life: ask for them once.
    static GRANTS: Vec<Grant> = get_directories()
        .into_iter()
        .map(|(dir, at)| Grant { names: names(&at).map(String::from).collect(), dir })
        .collect();
}

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

/// A path's names without the empty and `.` ones (`/a//./b` → `a`, `b`).
fn names(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|n| !n.is_empty() && *n != ".")
}

/// Checks the reference; returns its path and the path's names.
fn parse(reference: &str) -> Result<(&str, Vec<&str>), CredentialError> {
    let rest = warren_plugin_guest::split_reference(reference, "FILE")
        .map_err(|e| CredentialError::InvalidReference(e.to_string()))?;
    if !rest.starts_with('/') {
        return Err(CredentialError::InvalidReference(format!(
            "FILE reference needs an absolute path, got {rest:?}"
        )));
    }
    let mut path = Vec::with_capacity(8);
    for name in names(rest) {
        if name == ".." {
            return Err(CredentialError::InvalidReference(format!(
                "FILE reference must not contain '..': {rest:?}"
            )));
        }
        path.push(name);
    }
    Ok((rest, path))
}

/// Opens the path inside the longest granted directory containing it. `Ok(None)`: no grant
/// contains it.
fn open_granted(path: &[&str]) -> Result<Option<Descriptor>, ErrorCode> {
    GRANTS.with(|grants| {
        let inside =
            |g: &&Grant| g.names.len() <= path.len() && g.names.iter().zip(path).all(|(a, b)| a == b);
        let Some(grant) = grants.iter().filter(inside).max_by_key(|g| g.names.len()) else {
            return Ok(None);
        };
        let relative = match &path[grant.names.len()..] {
            [] => Cow::Borrowed("."),
            [name] => Cow::Borrowed(*name),
            names => Cow::Owned(names.join("/")),
        };
        grant
            .dir
            .open_at(PathFlags::SYMLINK_FOLLOW, &relative, OpenFlags::empty(), DescriptorFlags::READ)
            .map(Some)
    })
}

/// Reads to the end, at most `MAX_BYTES`.
fn read_all(file: &Descriptor, rest: &str) -> Result<Vec<u8>, CredentialError> {
    let mut bytes = Vec::new();
    let mut want = CHUNK;
    loop {
        let (chunk, end) = file.read(want, bytes.len() as u64).map_err(|e| match e {
            // Opening a directory succeeds; reading it is where it shows.
            ErrorCode::IsDirectory | ErrorCode::BadDescriptor => {
                CredentialError::NotFound(format!("{rest}: is a directory"))
            }
            e => CredentialError::Unavailable(format!("{rest}: {}", e.message())),
        })?;
        let got = chunk.len() as u64;
        if bytes.is_empty() {
            bytes = chunk; // the usual single chunk: no copy
        } else {
            bytes.extend_from_slice(&chunk);
        }
        if bytes.len() > MAX_BYTES {
            return Err(CredentialError::Unavailable(format!("{rest}: larger than {MAX_BYTES} bytes")));
        }
        if end || got == 0 {
            return Ok(bytes);
        }
        // A short read is almost always the end of the file, but not always (FUSE, /proc): make
        // sure with a one-byte read, which costs the host no big zeroed buffer.
        want = if got < want { 1 } else { CHUNK };
    }
}

impl Guest for File {
    fn schemes() -> Vec<String> {
        vec!["FILE".to_string()]
    }

    fn resolve(reference: String) -> Result<Credential, CredentialError> {
        let (rest, path) = parse(&reference)?;
        let denied =
            || CredentialError::Denied(format!("{rest}: not inside a directory granted to this plugin"));
        let file = match open_granted(&path) {
            Ok(Some(file)) => file,
            Ok(None) => return Err(denied()),
            Err(ErrorCode::NoEntry) => {
                return Err(CredentialError::NotFound(format!("{rest}: no such file")));
            }
            Err(e @ (ErrorCode::NotDirectory | ErrorCode::Loop | ErrorCode::NameTooLong)) => {
                return Err(CredentialError::NotFound(format!("{rest}: {}", e.message())));
            }
            // The host refuses a symlink that leads out of the granted directory with this code.
            Err(ErrorCode::NotPermitted) => {
                return Err(CredentialError::Denied(format!(
                    "{rest}: leads outside the granted directory, or not permitted"
                )));
            }
            Err(ErrorCode::Access) => {
                return Err(CredentialError::Denied(format!("{rest}: permission denied")));
            }
            Err(e) => return Err(CredentialError::Unavailable(format!("{rest}: {}", e.message()))),
        };
        let bytes = read_all(&file, rest)?;
        drop(file);
        let text = String::from_utf8(bytes)
            .map_err(|_| CredentialError::Unavailable(format!("{rest}: not valid UTF-8")))?;
        Ok(Credential {
            value: trim_one_newline(text),
            ttl_seconds: None,
            watch_paths: vec![rest.to_string()],
        })
    }
}

export!(File);
