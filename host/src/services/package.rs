//! Package identifiers and the supervisor's package store.
//!
//! An ident is Habitat's `ORIGIN/NAME[/VERSION[/RELEASE]]`; a fully qualified one names exactly
//! one build. The store keeps each installed package at `{data_path}/pkgs/ORIGIN/NAME/VERSION/
//! RELEASE/`, holding what the package's payload has under `hab/pkgs/ORIGIN/NAME/VERSION/
//! RELEASE/`: the metadata files (IDENT, TARGET, MANIFEST, SVC_USER, EXPORTS, BINDS, ...),
//! `hooks/`, `config/`, `default.toml` and the rest of the package's files.
//!
//! Installing is all or nothing: a package is unpacked (by the safe extractor of
//! [`crate::crypto::archive`]) into a staging directory under the store, checked, and moved into
//! place with one `rename` that never replaces anything. Names starting with `.` in the store
//! are staging directories, never packages; [`PackageStore::sweep`] removes the ones a killed
//! supervisor left behind.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::crypto::{KeyCache, archive, hart};

/// The only target warren builds for and accepts (Habitat's name for it).
pub const TARGET: &str = "x86_64-linux";
/// The largest package `pkg install` accepts over the control gateway.
pub const MAX_PACKAGE_SIZE: u64 = 1024 * 1024 * 1024;
/// No metadata file is read beyond this (TDEPS of a big package is a few tens of KiB).
const MAX_METAFILE_LEN: u64 = 1024 * 1024;
/// The prefix of every entry of a package's payload.
pub const PAYLOAD_PREFIX: &str = "hab/pkgs";

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("invalid package identifier {ident:?}: {why}")]
    BadIdent { ident: String, why: String },
    #[error("{ident} is not fully qualified (expected ORIGIN/NAME/VERSION/RELEASE)")]
    NotFullyQualified { ident: String },
    #[error("malformed metadata file {file} of {ident}: {why}")]
    BadMetadata { ident: String, file: &'static str, why: String },
    #[error("the package is not laid out as Habitat's: {0}")]
    BadLayout(String),
    #[error(
        "the package is signed by {signer}, but its origin is {origin:?}: only that origin's keys may sign it"
    )]
    WrongSigner { signer: String, origin: String },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error(transparent)]
    Hart(#[from] hart::HartError),
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> PackageError {
    move |source| PackageError::Io { what: what.to_string(), source }
}

/// `ORIGIN/NAME[/VERSION[/RELEASE]]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageIdent {
    pub origin: String,
    pub name: String,
    pub version: Option<String>,
    pub release: Option<String>,
}

/// Origins and names: Habitat's characters (letters, digits, `_`, `-`), not starting with `-`.
pub fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if s.len() > 255 {
        return Err(format!("the {what} is longer than 255 bytes"));
    }
    if s.starts_with('-') {
        return Err(format!("the {what} starts with '-'"));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(format!("the {what} {s:?} has {c:?}; use letters, digits, '_' and '-'"));
    }
    Ok(())
}

/// Versions: letters, digits and `. _ - + ~`, not `.` or `..`, not starting with `.` or `-`.
pub fn check_version(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("the version is empty".into());
    }
    if s.len() > 255 {
        return Err("the version is longer than 255 bytes".into());
    }
    if s.starts_with('.') || s.starts_with('-') {
        return Err(format!("the version {s:?} starts with {:?}", &s[..1]));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-+~".contains(*c))) {
        return Err(format!("the version {s:?} has {c:?}; use letters, digits and . _ - + ~"));
    }
    Ok(())
}

/// Releases: Habitat's UTC timestamp, `YYYYMMDDhhmmss`.
pub fn check_release(s: &str) -> Result<(), String> {
    if s.len() == 14 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!(
            "the release {:?} is not a timestamp YYYYMMDDhhmmss",
            s.chars().take(40).collect::<String>()
        ))
    }
}

impl PackageIdent {
    /// A fully qualified ident, checked.
    pub fn new(origin: &str, name: &str, version: &str, release: &str) -> Result<Self, PackageError> {
        let ident = PackageIdent {
            origin: origin.into(),
            name: name.into(),
            version: Some(version.into()),
            release: Some(release.into()),
        };
        ident.check().map_err(|why| PackageError::BadIdent { ident: ident.to_string(), why })?;
        Ok(ident)
    }

    fn check(&self) -> Result<(), String> {
        check_name("origin", &self.origin)?;
        check_name("name", &self.name)?;
        if let Some(v) = &self.version {
            check_version(v)?;
        }
        if let Some(r) = &self.release {
            check_release(r)?;
        }
        Ok(())
    }

    pub fn is_fully_qualified(&self) -> bool {
        self.version.is_some() && self.release.is_some()
    }

    /// `Ok(self)` if fully qualified.
    pub fn fully_qualified(&self) -> Result<&Self, PackageError> {
        if self.is_fully_qualified() {
            Ok(self)
        } else {
            Err(PackageError::NotFullyQualified { ident: self.to_string() })
        }
    }

    /// Whether `other` (a fully qualified ident) is what `self` asks for: same origin and name,
    /// and the same version and release where `self` gives them.
    pub fn satisfied_by(&self, other: &PackageIdent) -> bool {
        self.origin == other.origin
            && self.name == other.name
            && self.version.as_ref().is_none_or(|v| other.version.as_ref() == Some(v))
            && self.release.as_ref().is_none_or(|r| other.release.as_ref() == Some(r))
    }

    /// The path of this ident below a `pkgs` root: `ORIGIN/NAME[/VERSION[/RELEASE]]`.
    pub fn rel_path(&self) -> PathBuf {
        let mut p = PathBuf::from(&self.origin);
        p.push(&self.name);
        if let Some(v) = &self.version {
            p.push(v);
            if let Some(r) = &self.release {
                p.push(r);
            }
        }
        p
    }

    /// `ORIGIN-NAME-VERSION-RELEASE-x86_64-linux.hart`, Habitat's artifact name.
    pub fn archive_name(&self) -> Result<String, PackageError> {
        self.fully_qualified()?;
        Ok(format!(
            "{}-{}-{}-{}-{TARGET}.hart",
            self.origin,
            self.name,
            self.version.as_deref().unwrap_or_default(),
            self.release.as_deref().unwrap_or_default()
        ))
    }

    /// Newest first is `b.cmp_version(a)`: by version (numeric parts numerically), then release.
    pub fn cmp_version(&self, other: &PackageIdent) -> Ordering {
        let v =
            compare_versions(self.version.as_deref().unwrap_or(""), other.version.as_deref().unwrap_or(""));
        v.then_with(|| self.release.cmp(&other.release))
    }
}

/// Compares dotted versions part by part: numbers numerically, anything else as text, a number
/// above text; a version with more parts is newer when the shared parts are equal.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut pa = a.split(['.', '-', '+', '_', '~']);
    let mut pb = b.split(['.', '-', '+', '_', '~']);
    loop {
        match (pa.next(), pb.next()) {
            (None, None) => return a.cmp(b),
            (Some(_), None) => return Ordering::Greater,
            (None, Some(_)) => return Ordering::Less,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Greater,
                    (Err(_), Ok(_)) => Ordering::Less,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

impl std::fmt::Display for PackageIdent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.origin, self.name)?;
        if let Some(v) = &self.version {
            write!(f, "/{v}")?;
            if let Some(r) = &self.release {
                write!(f, "/{r}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for PackageIdent {
    type Err = PackageError;
    fn from_str(s: &str) -> Result<Self, PackageError> {
        let bad = |why: String| PackageError::BadIdent { ident: s.chars().take(200).collect(), why };
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=4).contains(&parts.len()) {
            return Err(bad("expected ORIGIN/NAME[/VERSION[/RELEASE]]".into()));
        }
        let ident = PackageIdent {
            origin: parts[0].to_string(),
            name: parts[1].to_string(),
            version: parts.get(2).map(|v| v.to_string()),
            release: parts.get(3).map(|r| r.to_string()),
        };
        ident.check().map_err(bad)?;
        Ok(ident)
    }
}

/// Habitat's metadata files, by their names in a package.
pub mod metafile {
    pub const IDENT: &str = "IDENT";
    pub const TARGET: &str = "TARGET";
    pub const MANIFEST: &str = "MANIFEST";
    pub const SVC_USER: &str = "SVC_USER";
    pub const SVC_GROUP: &str = "SVC_GROUP";
    pub const EXPOSES: &str = "EXPOSES";
    pub const EXPORTS: &str = "EXPORTS";
    pub const BINDS: &str = "BINDS";
    pub const BINDS_OPTIONAL: &str = "BINDS_OPTIONAL";
    pub const SHUTDOWN_SIGNAL: &str = "SHUTDOWN_SIGNAL";
    pub const SHUTDOWN_TIMEOUT: &str = "SHUTDOWN_TIMEOUT";
    pub const DEPS: &str = "DEPS";
    pub const TDEPS: &str = "TDEPS";
    pub const DEFAULT_TOML: &str = "default.toml";
}

/// What a package's metadata files say, read back from an installed package.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackageMeta {
    pub ident: Option<PackageIdent>,
    pub target: Option<String>,
    pub svc_user: Option<String>,
    pub svc_group: Option<String>,
    /// Ports (EXPOSES: space separated).
    pub exposes: Vec<u16>,
    /// Export name → config key (EXPORTS: `name=key` lines).
    pub exports: BTreeMap<String, String>,
    /// Bind name → the exported keys it needs (BINDS: `name=key1 key2` lines).
    pub binds: BTreeMap<String, Vec<String>>,
    pub binds_optional: BTreeMap<String, Vec<String>>,
    pub shutdown_signal: Option<String>,
    pub shutdown_timeout: Option<u32>,
    pub deps: Vec<PackageIdent>,
    pub tdeps: Vec<PackageIdent>,
}

/// Reads the trimmed contents of metadata file `name` in `dir`; None when it does not exist.
pub fn read_metafile(dir: &Path, name: &'static str) -> Result<Option<String>, PackageError> {
    use std::io::Read as _;
    let path = dir.join(name);
    let file = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path.display())(e)),
    };
    let mut buf = Vec::new();
    file.take(MAX_METAFILE_LEN + 1).read_to_end(&mut buf).map_err(io_err(path.display()))?;
    let bad = |why: &str| PackageError::BadMetadata {
        ident: dir.display().to_string(),
        file: name,
        why: why.to_string(),
    };
    if buf.len() as u64 > MAX_METAFILE_LEN {
        return Err(bad("larger than 1 MiB"));
    }
    let text = String::from_utf8(buf).map_err(|_| bad("not UTF-8"))?;
    Ok(Some(text.trim().to_string()))
}

fn key_values(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').ok_or_else(|| format!("line {line:?} is not KEY=VALUE"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

fn binds(text: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    Ok(key_values(text)?
        .into_iter()
        .map(|(k, v)| (k, v.split_whitespace().map(str::to_string).collect()))
        .collect())
}

fn idents(text: &str) -> Result<Vec<PackageIdent>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.parse::<PackageIdent>().map_err(|e| e.to_string()))
        .collect()
}

impl PackageMeta {
    /// Reads every metadata file of the package in `dir` (missing files are empty values).
    pub fn read(dir: &Path) -> Result<PackageMeta, PackageError> {
        use metafile as f;
        let bad = |file: &'static str| {
            move |why: String| PackageError::BadMetadata { ident: dir.display().to_string(), file, why }
        };
        let mut m = PackageMeta::default();
        if let Some(text) = read_metafile(dir, f::IDENT)? {
            m.ident = Some(text.parse().map_err(|e: PackageError| bad(f::IDENT)(e.to_string()))?);
        }
        m.target = read_metafile(dir, f::TARGET)?;
        m.svc_user = read_metafile(dir, f::SVC_USER)?.filter(|s| !s.is_empty());
        m.svc_group = read_metafile(dir, f::SVC_GROUP)?.filter(|s| !s.is_empty());
        if let Some(text) = read_metafile(dir, f::EXPOSES)? {
            m.exposes = text
                .split_whitespace()
                .map(|p| p.parse::<u16>().map_err(|_| format!("{p:?} is not a port")))
                .collect::<Result<_, _>>()
                .map_err(bad(f::EXPOSES))?;
        }
        if let Some(text) = read_metafile(dir, f::EXPORTS)? {
            m.exports = key_values(&text).map_err(bad(f::EXPORTS))?;
        }
        if let Some(text) = read_metafile(dir, f::BINDS)? {
            m.binds = binds(&text).map_err(bad(f::BINDS))?;
        }
        if let Some(text) = read_metafile(dir, f::BINDS_OPTIONAL)? {
            m.binds_optional = binds(&text).map_err(bad(f::BINDS_OPTIONAL))?;
        }
        m.shutdown_signal = read_metafile(dir, f::SHUTDOWN_SIGNAL)?.filter(|s| !s.is_empty());
        if let Some(text) = read_metafile(dir, f::SHUTDOWN_TIMEOUT)? {
            m.shutdown_timeout = Some(
                text.parse()
                    .map_err(|_| bad(f::SHUTDOWN_TIMEOUT)(format!("{text:?} is not a number of seconds")))?,
            );
        }
        if let Some(text) = read_metafile(dir, f::DEPS)? {
            m.deps = idents(&text).map_err(bad(f::DEPS))?;
        }
        if let Some(text) = read_metafile(dir, f::TDEPS)? {
            m.tdeps = idents(&text).map_err(bad(f::TDEPS))?;
        }
        Ok(m)
    }
}

/// One installed package.
#[derive(Clone, Debug)]
pub struct InstalledPackage {
    pub ident: PackageIdent,
    pub path: PathBuf,
}

impl InstalledPackage {
    pub fn meta(&self) -> Result<PackageMeta, PackageError> {
        PackageMeta::read(&self.path)
    }

    /// `hooks/NAME` if the package has that hook.
    pub fn hook(&self, name: &str) -> Option<PathBuf> {
        let p = self.path.join("hooks").join(name);
        p.is_file().then_some(p)
    }

    /// The package's `run` hook, else its `run` file (a plan's `run` entry).
    pub fn run_script(&self) -> Option<PathBuf> {
        self.hook("run").or_else(|| Some(self.path.join("run")).filter(|p| p.is_file()))
    }

    pub fn default_toml(&self) -> PathBuf {
        self.path.join(metafile::DEFAULT_TOML)
    }

    pub fn config_dir(&self) -> PathBuf {
        self.path.join("config")
    }
}

/// What [`PackageStore::install_verified`] did.
#[derive(Clone, Debug)]
pub struct Installed {
    pub package: InstalledPackage,
    pub signer: String,
    /// The same ident was already installed; nothing was changed.
    pub already: bool,
}

/// `{data_path}/pkgs`.
#[derive(Clone, Debug)]
pub struct PackageStore {
    root: PathBuf,
}

impl PackageStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PackageStore { root: root.into() }
    }

    /// The store of the supervisor whose data path is `data_path`.
    pub fn under(data_path: &Path) -> Self {
        PackageStore::new(data_path.join("pkgs"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a fully qualified ident lives (whether or not it is installed).
    pub fn path(&self, ident: &PackageIdent) -> Result<PathBuf, PackageError> {
        Ok(self.root.join(ident.fully_qualified()?.rel_path()))
    }

    pub fn is_installed(&self, ident: &PackageIdent) -> bool {
        self.path(ident).is_ok_and(|p| p.is_dir())
    }

    /// Every installed package, sorted by ident (oldest version first within a name).
    pub fn list(&self) -> Result<Vec<InstalledPackage>, PackageError> {
        let mut out = Vec::new();
        for origin in self.subdirs(&self.root)? {
            for name in self.subdirs(&self.root.join(&origin))? {
                let name_dir = self.root.join(&origin).join(&name);
                for version in self.subdirs(&name_dir)? {
                    for release in self.subdirs(&name_dir.join(&version))? {
                        // A folder that is not a valid ident is not a package of this store.
                        if let Ok(ident) = PackageIdent::new(&origin, &name, &version, &release) {
                            let path = self.root.join(ident.rel_path());
                            out.push(InstalledPackage { ident, path });
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| {
            (&a.ident.origin, &a.ident.name)
                .cmp(&(&b.ident.origin, &b.ident.name))
                .then_with(|| a.ident.cmp_version(&b.ident))
        });
        Ok(out)
    }

    /// The newest installed package that `ident` (partial or not) asks for.
    pub fn latest(&self, ident: &PackageIdent) -> Result<Option<InstalledPackage>, PackageError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|p| ident.satisfied_by(&p.ident))
            .max_by(|a, b| a.ident.cmp_version(&b.ident)))
    }

    /// The installed package with exactly this fully qualified ident.
    pub fn get(&self, ident: &PackageIdent) -> Result<Option<InstalledPackage>, PackageError> {
        let path = self.path(ident)?;
        Ok(path.is_dir().then(|| InstalledPackage { ident: ident.clone(), path }))
    }

    /// Names of the real subdirectories of `dir` (none when it does not exist), skipping the
    /// store's own staging names (`.…`).
    fn subdirs(&self, dir: &Path) -> Result<Vec<String>, PackageError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(dir.display())(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(dir.display()))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    /// Removes staging directories (`.staging-*`) left by a supervisor that was killed while
    /// installing. Call it once at start, before any install runs.
    pub fn sweep(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.root) else { return 0 };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(STAGING_PREFIX) {
                make_writable(&entry.path());
                if fs::remove_dir_all(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Verifies the package at `hart_path` against `keys`, unpacks it into a staging directory
    /// under the store, checks that its payload is exactly one package laid out as Habitat's
    /// (`hab/pkgs/ORIGIN/NAME/VERSION/RELEASE/`, an IDENT that agrees, the target), that it was
    /// signed by a key of its own origin, and moves it into place. A failure leaves the store as
    /// it was; an ident already installed is left alone and reported as such.
    pub fn install_verified(&self, hart_path: &Path, keys: &KeyCache) -> Result<Installed, PackageError> {
        crate::fsutil::create_private_dir(&self.root).map_err(io_err(self.root.display()))?;
        use std::os::unix::fs::PermissionsExt as _;
        // The store itself is readable (services will read their own packages); the data path
        // above it decides who can reach it.
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o755))
            .map_err(io_err(self.root.display()))?;
        let staging = Staging::create(&self.root)?;
        let unpacked = staging.path.join("payload");
        let extracted = archive::extract_verified(hart_path, &unpacked, keys, &mut |_| ())?;
        let (ident, from) = payload_package(&unpacked)?;
        let signer = extracted.verified.signer.clone();
        if signer.name != ident.origin {
            return Err(PackageError::WrongSigner {
                signer: signer.to_string(),
                origin: ident.origin.clone(),
            });
        }
        let meta = PackageMeta::read(&from)?;
        match &meta.ident {
            Some(i) if *i == ident => {}
            Some(i) => {
                return Err(PackageError::BadLayout(format!(
                    "its IDENT says {i}, but its files are under {ident}"
                )));
            }
            None => return Err(PackageError::BadLayout(format!("{ident} has no IDENT file"))),
        }
        if let Some(t) = &meta.target
            && t != TARGET
        {
            return Err(PackageError::BadLayout(format!(
                "its target is {t:?}; this supervisor runs {TARGET} packages"
            )));
        }
        let dest = self.root.join(ident.rel_path());
        let package = InstalledPackage { ident: ident.clone(), path: dest.clone() };
        if dest.exists() {
            return Ok(Installed { package, signer: signer.to_string(), already: true });
        }
        let created = create_missing_parents(&self.root, &dest)?;
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &from,
            rustix::fs::CWD,
            &dest,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            // Another install of the same ident won the race.
            Err(e) if e == rustix::io::Errno::EXIST => {
                return Ok(Installed { package, signer: signer.to_string(), already: true });
            }
            Err(e) => {
                for dir in created.iter().rev() {
                    let _ = fs::remove_dir(dir);
                }
                return Err(io_err(format!("moving the package into {}", dest.display()))(e.into()));
            }
        }
        let _ = crate::fsutil::sync_dir(&crate::fsutil::parent_dir(&dest));
        Ok(Installed { package, signer: signer.to_string(), already: false })
    }
}

const STAGING_PREFIX: &str = ".staging-";

/// A private directory under the store, removed with everything in it unless emptied.
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn create(root: &Path) -> Result<Staging, PackageError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let path =
            root.join(format!("{STAGING_PREFIX}{}-{}", std::process::id(), crate::fsutil::random_hex()));
        fs::DirBuilder::new().mode(0o700).create(&path).map_err(io_err(path.display()))?;
        Ok(Staging { path })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        make_writable(&self.path);
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A package may carry read-only directories; restore owner write so cleanup can remove them.
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = fs::symlink_metadata(dir)
        && meta.is_dir()
    {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(meta.permissions().mode() | 0o700));
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

/// Creates the missing directories between `root` and `dest`'s parent (0755); returns them,
/// outermost first.
fn create_missing_parents(root: &Path, dest: &Path) -> Result<Vec<PathBuf>, PackageError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let parent = crate::fsutil::parent_dir(dest);
    let rel = parent
        .strip_prefix(root)
        .map_err(|_| PackageError::BadLayout("destination outside the store".into()))?;
    let mut created = Vec::new();
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(PackageError::BadLayout(format!("{} is in the way", cur.display()))),
            Err(_) => {
                fs::DirBuilder::new().mode(0o755).create(&cur).map_err(io_err(cur.display()))?;
                created.push(cur.clone());
            }
        }
    }
    Ok(created)
}

/// The one package in an unpacked payload: everything must sit under
/// `hab/pkgs/ORIGIN/NAME/VERSION/RELEASE/`. Returns its ident and directory.
pub fn payload_package(unpacked: &Path) -> Result<(PackageIdent, PathBuf), PackageError> {
    let layout = |why: String| PackageError::BadLayout(why);
    let only_dir = |dir: &Path, what: &str| -> Result<String, PackageError> {
        let mut names = Vec::new();
        for e in fs::read_dir(dir).map_err(io_err(dir.display()))? {
            let e = e.map_err(io_err(dir.display()))?;
            names.push((
                e.file_name().to_string_lossy().into_owned(),
                e.file_type().map_err(io_err(dir.display()))?,
            ));
        }
        match names.as_slice() {
            [(name, t)] if t.is_dir() => Ok(name.clone()),
            [] => Err(layout(format!("no {what} under {}", rel_of(unpacked, dir)))),
            _ => Err(layout(format!(
                "expected one {what} under {}, found {}",
                rel_of(unpacked, dir),
                names.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    };
    if !unpacked.is_dir() {
        return Err(layout("the payload is empty".into()));
    }
    let mut dir = unpacked.to_path_buf();
    for expected in PAYLOAD_PREFIX.split('/') {
        let got = only_dir(&dir, &format!("{expected:?} folder"))?;
        if got != expected {
            return Err(layout(format!("found {got:?} where {PAYLOAD_PREFIX} was expected")));
        }
        dir.push(got);
    }
    let mut parts = Vec::new();
    for what in ["origin", "name", "version", "release"] {
        let got = only_dir(&dir, what)?;
        dir.push(&got);
        parts.push(got);
    }
    let ident =
        PackageIdent::new(&parts[0], &parts[1], &parts[2], &parts[3]).map_err(|e| layout(e.to_string()))?;
    Ok((ident, dir))
}

fn rel_of(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(p) if p.as_os_str().is_empty() => "the payload's root".into(),
        Ok(p) => p.display().to_string(),
        Err(_) => dir.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idents_parse_print_and_refuse_what_could_escape_a_path() {
        let i: PackageIdent = "core/redis/7.2.4/20240101120000".parse().unwrap();
        assert_eq!(i.to_string(), "core/redis/7.2.4/20240101120000");
        assert!(i.is_fully_qualified());
        assert_eq!(i.rel_path(), PathBuf::from("core/redis/7.2.4/20240101120000"));
        assert_eq!(i.archive_name().unwrap(), "core-redis-7.2.4-20240101120000-x86_64-linux.hart");
        let partial: PackageIdent = "core/redis".parse().unwrap();
        assert!(!partial.is_fully_qualified());
        assert!(partial.satisfied_by(&i));
        assert!("core/redis/7.2.4".parse::<PackageIdent>().unwrap().satisfied_by(&i));
        assert!(!"core/redis/7.2.5".parse::<PackageIdent>().unwrap().satisfied_by(&i));
        assert!(!"core/redi".parse::<PackageIdent>().unwrap().satisfied_by(&i));
        assert!(matches!(partial.archive_name(), Err(PackageError::NotFullyQualified { .. })));
        for bad in [
            "core",
            "core/",
            "/redis",
            "core/redis/1/2/3",
            "core/../1/20240101120000",
            "core/redis/../20240101120000",
            "core/redis/.hidden/20240101120000",
            "core/redis/1.0/2024",
            "core/redis/1.0/2024010112000x",
            "co re/redis",
            "core/re\ndis",
            "-core/redis",
            "core/redis/1 0",
        ] {
            assert!(bad.parse::<PackageIdent>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn versions_compare_numerically_then_by_release() {
        assert_eq!(compare_versions("1.10.0", "1.9.9"), Ordering::Greater);
        assert_eq!(compare_versions("1.0", "1.0.1"), Ordering::Less);
        assert_eq!(compare_versions("2.0.0", "2.0.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.0.0", "1.0.0-rc1"), Ordering::Less, "more parts is newer");
        let a: PackageIdent = "o/n/1.0/20200101000000".parse().unwrap();
        let b: PackageIdent = "o/n/1.0/20210101000000".parse().unwrap();
        assert_eq!(a.cmp_version(&b), Ordering::Less);
    }

    fn fake_package(store: &Path, ident: &str, files: &[(&str, &str)]) -> PathBuf {
        let i: PackageIdent = ident.parse().unwrap();
        let dir = store.join(i.rel_path());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("IDENT"), format!("{ident}\n")).unwrap();
        for (name, text) in files {
            let p = dir.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn the_store_lists_finds_the_latest_and_skips_what_is_not_a_package() {
        let d = tempfile::tempdir().unwrap();
        let store = PackageStore::new(d.path().join("pkgs"));
        assert!(store.list().unwrap().is_empty(), "a missing store is empty");
        fake_package(store.root(), "acme/web/1.9.0/20200101000000", &[]);
        fake_package(store.root(), "acme/web/1.10.0/20190101000000", &[]);
        fake_package(store.root(), "acme/web/1.10.0/20190202000000", &[]);
        fake_package(store.root(), "acme/db/0.1/20200101000000", &[]);
        // Not packages: staging dirs, bad names, files.
        fs::create_dir_all(store.root().join(".staging-1-abc/acme/web/9/20990101000000")).unwrap();
        fs::create_dir_all(store.root().join("acme/web/2.0/not-a-release")).unwrap();
        fs::write(store.root().join("acme/web/README"), "x").unwrap();
        let names: Vec<String> = store.list().unwrap().iter().map(|p| p.ident.to_string()).collect();
        assert_eq!(
            names,
            [
                "acme/db/0.1/20200101000000",
                "acme/web/1.9.0/20200101000000",
                "acme/web/1.10.0/20190101000000",
                "acme/web/1.10.0/20190202000000",
            ]
        );
        let latest = store.latest(&"acme/web".parse().unwrap()).unwrap().unwrap();
        assert_eq!(latest.ident.to_string(), "acme/web/1.10.0/20190202000000");
        let exact = store.latest(&"acme/web/1.9.0".parse().unwrap()).unwrap().unwrap();
        assert_eq!(exact.ident.to_string(), "acme/web/1.9.0/20200101000000");
        assert!(store.latest(&"acme/nope".parse().unwrap()).unwrap().is_none());
        let id: PackageIdent = "acme/db/0.1/20200101000000".parse().unwrap();
        assert!(store.is_installed(&id));
        assert_eq!(store.path(&id).unwrap(), d.path().join("pkgs/acme/db/0.1/20200101000000"));
        assert!(store.path(&"acme/db".parse().unwrap()).is_err());
        assert_eq!(store.sweep(), 1);
        assert!(!store.root().join(".staging-1-abc").exists());
    }

    #[test]
    fn metadata_files_read_back_in_habitats_formats() {
        let d = tempfile::tempdir().unwrap();
        let dir = fake_package(
            d.path(),
            "acme/web/1.0.0/20240101000000",
            &[
                ("TARGET", "x86_64-linux\n"),
                ("SVC_USER", "nobody\n"),
                ("SVC_GROUP", "nogroup\n"),
                ("EXPOSES", "8080 9090\n"),
                ("EXPORTS", "port=http.port\nhost=http.host\n"),
                ("BINDS", "database=port host\n"),
                ("BINDS_OPTIONAL", "cache=port\n"),
                ("SHUTDOWN_SIGNAL", "INT\n"),
                ("SHUTDOWN_TIMEOUT", "12\n"),
                ("TDEPS", "core/glibc/2.22/20160612063629\ncore/glibc/2.22/20160612063629\n"),
                ("hooks/run", "#!/bin/sh\n"),
            ],
        );
        let m = PackageMeta::read(&dir).unwrap();
        assert_eq!(m.ident.unwrap().to_string(), "acme/web/1.0.0/20240101000000");
        assert_eq!(m.target.as_deref(), Some("x86_64-linux"));
        assert_eq!((m.svc_user.as_deref(), m.svc_group.as_deref()), (Some("nobody"), Some("nogroup")));
        assert_eq!(m.exposes, [8080, 9090]);
        assert_eq!(m.exports["port"], "http.port");
        assert_eq!(m.binds["database"], ["port", "host"]);
        assert_eq!(m.binds_optional["cache"], ["port"]);
        assert_eq!(m.shutdown_signal.as_deref(), Some("INT"));
        assert_eq!(m.shutdown_timeout, Some(12));
        assert_eq!(m.tdeps.len(), 2);
        let pkg =
            InstalledPackage { ident: "acme/web/1.0.0/20240101000000".parse().unwrap(), path: dir.clone() };
        assert_eq!(pkg.run_script(), Some(dir.join("hooks/run")));
        assert_eq!(pkg.hook("init"), None);

        fs::write(dir.join("EXPOSES"), "80 http\n").unwrap();
        let err = PackageMeta::read(&dir).unwrap_err().to_string();
        assert!(err.contains("EXPOSES") && err.contains("\"http\" is not a port"), "{err}");
        fs::write(dir.join("EXPOSES"), "").unwrap();
        fs::write(dir.join("EXPORTS"), "no equals sign\n").unwrap();
        assert!(PackageMeta::read(&dir).unwrap_err().to_string().contains("EXPORTS"));
    }

    #[test]
    fn a_payload_must_hold_exactly_one_package_under_hab_pkgs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("hab/pkgs/acme/web/1.0/20240101000000/hooks")).unwrap();
        let (ident, dir) = payload_package(root).unwrap();
        assert_eq!(ident.to_string(), "acme/web/1.0/20240101000000");
        assert_eq!(dir, root.join("hab/pkgs/acme/web/1.0/20240101000000"));
        fs::create_dir_all(root.join("hab/pkgs/acme/web/1.1/20240101000000")).unwrap();
        let err = payload_package(root).unwrap_err().to_string();
        assert!(err.contains("expected one version"), "{err}");
        fs::remove_dir_all(root.join("hab/pkgs/acme/web/1.1")).unwrap();
        fs::write(root.join("hab/extra"), "x").unwrap();
        assert!(payload_package(root).unwrap_err().to_string().contains("\"pkgs\" folder"));
        fs::remove_file(root.join("hab/extra")).unwrap();
        fs::rename(
            root.join("hab/pkgs/acme/web/1.0/20240101000000"),
            root.join("hab/pkgs/acme/web/1.0/latest"),
        )
        .unwrap();
        assert!(payload_package(root).unwrap_err().to_string().contains("release"));
    }
}
