//! `warren pkg build`: a package source directory (plan.toml, hooks/, config/, default.toml and
//! any other files) into a signed `ORIGIN-NAME-VERSION-RELEASE-x86_64-linux.hart` whose payload
//! has Habitat's layout.
//!
//! The payload is an xz tarball of `hab/pkgs/ORIGIN/NAME/VERSION/RELEASE/` holding the source
//! files and the metadata files Habitat's plan-build writes, in its formats (each value on a
//! line of its own; key/value files as `key=value` lines, sorted here): IDENT, TARGET, MANIFEST,
//! SVC_USER and SVC_GROUP (every warren package is a service), EXPORTS, EXPOSES (the exposed
//! ports, space separated), BINDS, BINDS_OPTIONAL (`name=key1 key2`), SHUTDOWN_SIGNAL and
//! SHUTDOWN_TIMEOUT (when the plan sets them). A file is written only when it has content, as
//! Habitat does. A plan's `run` entry becomes an executable `run` file at the package's root.
//!
//! Left out of the package: plan.toml itself (its text is in MANIFEST), names starting with `.`
//! at the top of the directory (`.git`, editor files) and `*.hart` files anywhere (earlier
//! builds). Entries are owned by root, dated at the release, sorted, and have mode 0755 (dirs
//! and anything executable) or 0644: a hook that is executable in the source stays executable.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::Digest as _;

use super::package::{PackageIdent, TARGET, metafile};
use super::plan::{HOOKS, Plan, PlanError};
use crate::crypto::hart::{self, HartError, Verified};
use crate::crypto::{SigSecretKey, archive};

/// plan.toml and default.toml are read whole; nothing like them is this large.
const MAX_TEXT_FILE: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{0} has no plan.toml")]
    NoPlan(String),
    #[error("default.toml is not valid TOML: {0}")]
    DefaultToml(String),
    #[error(
        "the package has no hooks/run and plan.toml has no run entry: add hooks/run (a script), or run = \"COMMAND\" to plan.toml"
    )]
    NoRun,
    #[error("the package has both hooks/run and a run entry in plan.toml; keep one")]
    TwoRuns,
    #[error("hooks/{name} is not a hook; hooks are {}", HOOKS.join(", "))]
    UnknownHook { name: String },
    #[error("{0}")]
    Source(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error(transparent)]
    Hart(#[from] HartError),
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> BuildError {
    move |source| BuildError::Io { what: what.to_string(), source }
}

/// A built package.
#[derive(Debug, Clone)]
pub struct Built {
    pub ident: PackageIdent,
    pub path: PathBuf,
    pub verified: Verified,
    /// Entries in the payload under the package's own directory.
    pub files: usize,
}

/// One payload entry below the package's directory.
enum Content {
    Dir,
    File(PathBuf),
    Memory(Vec<u8>),
    Link(PathBuf),
}

struct Entry {
    rel: PathBuf,
    content: Content,
    executable: bool,
}

fn read_text(path: &Path, what: &str) -> Result<String, BuildError> {
    let mut buf = Vec::new();
    fs::File::open(path)
        .map_err(io_err(path.display()))?
        .take(MAX_TEXT_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(path.display()))?;
    if buf.len() as u64 > MAX_TEXT_FILE {
        return Err(BuildError::Source(format!("{what} is larger than 4 MiB")));
    }
    String::from_utf8(buf).map_err(|_| BuildError::Source(format!("{what} is not UTF-8")))
}

/// The metadata files warren writes itself; a source file of the same name is refused.
const GENERATED: &[&str] = &[
    metafile::IDENT,
    metafile::TARGET,
    metafile::MANIFEST,
    metafile::SVC_USER,
    metafile::SVC_GROUP,
    metafile::EXPOSES,
    metafile::EXPORTS,
    metafile::BINDS,
    metafile::BINDS_OPTIONAL,
    metafile::SHUTDOWN_SIGNAL,
    metafile::SHUTDOWN_TIMEOUT,
    metafile::DEPS,
    metafile::TDEPS,
    "FILES",
];

/// Builds the package in `src` signed by `key` (its origin is the key's name) into `out_dir`.
pub fn build(src: &Path, key: &SigSecretKey, out_dir: &Path) -> Result<Built, BuildError> {
    let meta = fs::metadata(src).map_err(io_err(src.display()))?;
    if !meta.is_dir() {
        return Err(BuildError::Source(format!("{} is not a directory", src.display())));
    }
    let plan_path = src.join("plan.toml");
    if !plan_path.is_file() {
        return Err(BuildError::NoPlan(src.display().to_string()));
    }
    let plan_text = read_text(&plan_path, "plan.toml")?;
    let plan = Plan::parse(&plan_text)?;

    let default_path = src.join(metafile::DEFAULT_TOML);
    let defaults = if default_path.exists() {
        let text = read_text(&default_path, "default.toml")?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            BuildError::DefaultToml(e.to_string().trim().replace('\n', " ").replace("  ", " "))
        })?;
        Some(table)
    } else {
        None
    };
    let ports = plan.exposed_ports(defaults.as_ref())?;
    check_hooks(src, &plan)?;

    let now = time::OffsetDateTime::now_utc();
    let release = crate::crypto::keys::current_revision_at(now);
    let ident = PackageIdent::new(&key.id.name, &plan.name, &plan.version, &release)
        .map_err(|e| BuildError::Source(e.to_string()))?;

    let mut entries = Vec::new();
    collect(src, Path::new(""), &plan, &mut entries)?;
    for (name, bytes) in metadata_files(&ident, &plan, &ports) {
        entries.push(Entry { rel: PathBuf::from(name), content: Content::Memory(bytes), executable: false });
    }
    if let Some(run) = &plan.run {
        let script = format!(
            "#!/bin/sh\n# Written by warren pkg build from plan.toml's run entry.\nexec {run} 2>&1\n"
        );
        entries.push(Entry {
            rel: PathBuf::from("run"),
            content: Content::Memory(script.into_bytes()),
            executable: true,
        });
    }
    let manifest = manifest(&ident, &plan, &plan_text, &entries)?;
    entries.push(Entry {
        rel: PathBuf::from(metafile::MANIFEST),
        content: Content::Memory(manifest),
        executable: false,
    });
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));

    fs::create_dir_all(out_dir).map_err(io_err(format!("creating {}", out_dir.display())))?;
    let dest = out_dir.join(ident.archive_name().map_err(|e| BuildError::Source(e.to_string()))?);
    let mtime = now.unix_timestamp().max(0) as u64;
    let files = entries.len();
    let verified = hart::sign_to_path(&dest, key, |out| write_payload(out, &ident, &entries, mtime))?;
    Ok(Built { ident, path: dest, verified, files })
}

fn check_hooks(src: &Path, plan: &Plan) -> Result<(), BuildError> {
    let hooks = src.join("hooks");
    let mut has_run = false;
    match fs::symlink_metadata(&hooks) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(hooks.display())(e)),
        Ok(m) if !m.is_dir() => return Err(BuildError::Source("hooks is not a directory".into())),
        Ok(_) => {
            for e in fs::read_dir(&hooks).map_err(io_err(hooks.display()))? {
                let e = e.map_err(io_err(hooks.display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !HOOKS.contains(&name.as_str()) {
                    return Err(BuildError::UnknownHook { name });
                }
                if !e.file_type().map_err(io_err(e.path().display()))?.is_file() {
                    return Err(BuildError::Source(format!("hooks/{name} is not a regular file")));
                }
                has_run |= name == "run";
            }
        }
    }
    match (has_run, plan.run.is_some()) {
        (false, false) => Err(BuildError::NoRun),
        (true, true) => Err(BuildError::TwoRuns),
        _ => Ok(()),
    }
}

/// Walks `src/rel`, sorted, into `entries`.
fn collect(src: &Path, rel: &Path, plan: &Plan, entries: &mut Vec<Entry>) -> Result<(), BuildError> {
    let dir = src.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(io_err(dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir.display()))?;
    names.sort();
    let top = rel.as_os_str().is_empty();
    for name in names {
        let text = name.to_string_lossy();
        if top && (text == "plan.toml" || text.starts_with('.')) {
            continue;
        }
        if text.ends_with(".hart") {
            continue;
        }
        if top && (GENERATED.contains(&text.as_ref()) || (plan.run.is_some() && text == "run")) {
            return Err(BuildError::Source(format!(
                "{text} is written by warren pkg build; remove it from the source directory"
            )));
        }
        let child = rel.join(&name);
        let path = src.join(&child);
        let meta = fs::symlink_metadata(&path).map_err(io_err(path.display()))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(io_err(path.display()))?;
            if !link_stays_inside(&child, &target) {
                return Err(BuildError::Source(format!(
                    "{} is a symlink to {}, outside the package",
                    child.display(),
                    target.display()
                )));
            }
            entries.push(Entry { rel: child, content: Content::Link(target), executable: false });
        } else if ft.is_dir() {
            entries.push(Entry { rel: child.clone(), content: Content::Dir, executable: true });
            collect(src, &child, plan, entries)?;
        } else if ft.is_file() {
            let executable = meta.permissions().mode() & 0o111 != 0;
            entries.push(Entry { rel: child, content: Content::File(path), executable });
        } else {
            return Err(BuildError::Source(format!(
                "{} is not a regular file, directory or symlink; packages cannot carry it",
                child.display()
            )));
        }
    }
    Ok(())
}

/// A relative target that does not climb above the package's root from where the link sits.
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    let mut depth = link.components().count().saturating_sub(1) as i64;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    !target.as_os_str().is_empty()
}

fn line(value: impl std::fmt::Display) -> Vec<u8> {
    format!("{value}\n").into_bytes()
}

fn key_value_lines<V: std::fmt::Display>(map: impl IntoIterator<Item = (String, V)>) -> Vec<u8> {
    map.into_iter().map(|(k, v)| format!("{k}={v}\n")).collect::<String>().into_bytes()
}

/// The metadata files, by name (only those with content).
fn metadata_files(ident: &PackageIdent, plan: &Plan, ports: &[u16]) -> BTreeMap<&'static str, Vec<u8>> {
    use metafile as f;
    let mut m = BTreeMap::new();
    m.insert(f::IDENT, line(ident));
    m.insert(f::TARGET, line(TARGET));
    m.insert(f::SVC_USER, line(plan.svc_user()));
    m.insert(f::SVC_GROUP, line(plan.svc_group()));
    if !ports.is_empty() {
        m.insert(f::EXPOSES, line(ports.iter().map(u16::to_string).collect::<Vec<_>>().join(" ")));
    }
    if !plan.exports.is_empty() {
        m.insert(f::EXPORTS, key_value_lines(plan.exports.clone()));
    }
    for (name, binds) in [(f::BINDS, &plan.binds), (f::BINDS_OPTIONAL, &plan.binds_optional)] {
        if !binds.is_empty() {
            m.insert(name, key_value_lines(binds.iter().map(|(k, v)| (k.clone(), v.join(" ")))));
        }
    }
    if let Some(sig) = &plan.shutdown_signal {
        m.insert(f::SHUTDOWN_SIGNAL, line(sig));
    }
    if let Some(t) = plan.shutdown_timeout {
        m.insert(f::SHUTDOWN_TIMEOUT, line(t));
    }
    m
}

/// Habitat's MANIFEST: a markdown summary, the plan's text, and the SHA-256 of every file.
fn manifest(
    ident: &PackageIdent,
    plan: &Plan,
    plan_text: &str,
    entries: &[Entry],
) -> Result<Vec<u8>, BuildError> {
    let prefix = format!("/hab/pkgs/{ident}");
    let title = format!("{} {}", ident.origin, ident.name);
    let mut s = String::new();
    s.push_str(&format!("{title}\n{}\n\n", "=".repeat(25.max(title.len()))));
    if let Some(d) = &plan.description {
        s.push_str(&format!("{}\n\n", d.trim()));
    }
    s.push_str(&format!("Maintainer: {}\n", plan.maintainer.as_deref().unwrap_or("")));
    s.push_str(&format!("Version: {}\n", plan.version));
    s.push_str(&format!("Release: {}\n", ident.release.as_deref().unwrap_or("")));
    s.push_str("Architecture: x86_64\nSystem: linux\n");
    s.push_str(&format!("Target: {TARGET}\n"));
    s.push_str(&format!("License: {}\n", plan.license.join(" ")));
    s.push_str(&format!("Source: {}\n", plan.upstream_url.as_deref().unwrap_or("")));
    s.push_str("SHA: \n");
    s.push_str(&format!("Path: {prefix}\n"));
    s.push_str("Build Dependencies: \nDependencies: \nInterpreters: \n\n");
    s.push_str("Plan\n========\n\n```toml\n");
    s.push_str(plan_text.trim_end());
    s.push_str("\n```\n\nFiles\n-----\n");
    let mut files = Vec::new();
    for e in entries {
        let digest = match &e.content {
            Content::File(p) => {
                let mut f = fs::File::open(p).map_err(io_err(p.display()))?;
                let mut h = sha2::Sha256::new();
                io::copy(&mut f, &mut h).map_err(io_err(p.display()))?;
                h.finalize()
            }
            Content::Memory(bytes) => sha2::Sha256::digest(bytes),
            Content::Dir | Content::Link(_) => continue,
        };
        files.push(format!("{}  {prefix}/{}\n", hex::encode(digest), e.rel.display()));
    }
    files.sort_by(|a, b| a[66..].cmp(&b[66..]));
    s.push_str(&files.concat());
    Ok(s.into_bytes())
}

fn header(kind: tar::EntryType, executable: bool, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(match kind {
        tar::EntryType::Symlink => 0o777,
        _ if executable => 0o755,
        _ => 0o644,
    });
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

fn write_payload(
    out: &mut dyn Write,
    ident: &PackageIdent,
    entries: &[Entry],
    mtime: u64,
) -> Result<(), HartError> {
    let tar_err = |what: String| move |e: io::Error| HartError::Io { context: what, source: e };
    let xz = xz2::write::XzEncoder::new(out, archive::XZ_LEVEL);
    let mut tar = tar::Builder::new(xz);
    // hab/, hab/pkgs/, ... down to the release directory, as Habitat's own packages have them.
    let root = PathBuf::from(super::package::PAYLOAD_PREFIX).join(ident.rel_path());
    let mut dir = PathBuf::new();
    for c in root.components() {
        dir.push(c);
        let mut h = header(tar::EntryType::Directory, true, 0, mtime);
        tar.append_data(&mut h, &dir, io::empty()).map_err(tar_err(format!("adding {}", dir.display())))?;
    }
    for e in entries {
        let path = root.join(&e.rel);
        let what = format!("adding {}", e.rel.display());
        match &e.content {
            Content::Dir => {
                let mut h = header(tar::EntryType::Directory, true, 0, mtime);
                tar.append_data(&mut h, &path, io::empty()).map_err(tar_err(what))?;
            }
            Content::File(src) => {
                let f = fs::File::open(src).map_err(tar_err(format!("reading {}", src.display())))?;
                let len = f.metadata().map_err(tar_err(format!("reading {}", src.display())))?.len();
                let mut h = header(tar::EntryType::Regular, e.executable, len, mtime);
                // take(len): a file that grows while it is packed cannot overrun its header.
                tar.append_data(&mut h, &path, f.take(len)).map_err(tar_err(what))?;
            }
            Content::Memory(bytes) => {
                let mut h = header(tar::EntryType::Regular, e.executable, bytes.len() as u64, mtime);
                tar.append_data(&mut h, &path, bytes.as_slice()).map_err(tar_err(what))?;
            }
            Content::Link(target) => {
                let mut h = header(tar::EntryType::Symlink, false, 0, mtime);
                tar.append_link(&mut h, &path, target).map_err(tar_err(what))?;
            }
        }
    }
    let xz = tar.into_inner().map_err(tar_err("finishing the tarball".into()))?;
    xz.finish().map_err(tar_err("finishing the xz stream".into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_must_stay_inside_the_package() {
        assert!(link_stays_inside(Path::new("a/l"), Path::new("../b")));
        assert!(link_stays_inside(Path::new("l"), Path::new("hooks/run")));
        assert!(!link_stays_inside(Path::new("a/l"), Path::new("../../b")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("/etc/passwd")));
        assert!(!link_stays_inside(Path::new("l"), Path::new("")));
    }

    #[test]
    fn metadata_files_use_habitats_formats() {
        let plan = Plan::parse(
            "name = \"w\"\nversion = \"1\"\nsvc_user = \"nobody\"\nexports = { port = \"http.port\", b = \"x.y\" }\n\
             exposes = [\"port\"]\nshutdown_timeout = 3\n[binds]\ndb = [\"port\", \"host\"]\n",
        )
        .unwrap();
        let ident = PackageIdent::new("acme", "w", "1", "20240101000000").unwrap();
        let m = metadata_files(&ident, &plan, &[8080]);
        let text = |k: &str| String::from_utf8(m[k].clone()).unwrap();
        assert_eq!(text("IDENT"), "acme/w/1/20240101000000\n");
        assert_eq!(text("TARGET"), "x86_64-linux\n");
        assert_eq!(text("SVC_USER"), "nobody\n");
        assert_eq!(text("SVC_GROUP"), "hab\n");
        assert_eq!(text("EXPOSES"), "8080\n");
        assert_eq!(text("EXPORTS"), "b=x.y\nport=http.port\n");
        assert_eq!(text("BINDS"), "db=port host\n");
        assert_eq!(text("SHUTDOWN_TIMEOUT"), "3\n");
        assert!(!m.contains_key("BINDS_OPTIONAL") && !m.contains_key("SHUTDOWN_SIGNAL"));
    }
}
