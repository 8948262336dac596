//! Service specs: what `svc load` asked for, persisted as `{data_path}/specs/NAME.spec` in
//! Habitat's TOML keys (one spec per package name), written atomically, so a restarted
//! supervisor brings every service back to its desired state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::state::Desired;
use crate::fsutil::{self, Existing};

/// `topology`: Habitat's `standalone` (the default; no plugin needed) and `leader` (the
/// `leader-follower` policy), or the `name()` of any topology-policy plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(from = "String", into = "String")]
pub enum Topology {
    #[default]
    Standalone,
    Leader,
    Policy(String),
}

impl Topology {
    /// As `svc load --topology` and the spec file write it.
    pub fn as_str(&self) -> &str {
        match self {
            Topology::Standalone => "standalone",
            Topology::Leader => "leader",
            Topology::Policy(p) => p,
        }
    }
}

impl From<String> for Topology {
    fn from(s: String) -> Topology {
        match s.as_str() {
            "standalone" => Topology::Standalone,
            "leader" => Topology::Leader,
            _ => Topology::Policy(s),
        }
    }
}

impl From<Topology> for String {
    fn from(t: Topology) -> String {
        t.as_str().to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BindingMode {
    #[default]
    Strict,
    Relaxed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Up,
    Down,
}

impl From<DesiredState> for Desired {
    fn from(d: DesiredState) -> Desired {
        match d {
            DesiredState::Up => Desired::Up,
            DesiredState::Down => Desired::Down,
        }
    }
}

/// Habitat's `[health_check_interval]` table (it must come last in the file: #6469).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub secs: u64,
    #[serde(default)]
    pub nanos: u32,
}

impl From<Duration> for Interval {
    fn from(d: Duration) -> Interval {
        Interval { secs: d.as_secs(), nanos: d.subsec_nanos() }
    }
}

/// One spec. Field order is the file's order; Habitat's keys, plus warren's `hooks_plugin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// ORIGIN/NAME/VERSION/RELEASE of the installed package.
    pub ident: String,
    pub group: String,
    #[serde(default)]
    pub topology: Topology,
    #[serde(default)]
    pub binds: Vec<String>,
    #[serde(default)]
    pub binding_mode: BindingMode,
    pub desired_state: DesiredState,
    /// Seconds; unset = the package's, else 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks_plugin: Option<String>,
    // Habitat's spec also carries bldr_url, channel, update_strategy, update_condition and
    // config_from; warren installs packages itself and reads them when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bldr_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svc_encrypted_password: Option<String>,
    pub health_check_interval: Interval,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid spec: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: the spec is for {found:?}, not {expected:?}")]
    Mismatch { path: PathBuf, expected: String, found: String },
}

impl ServiceSpec {
    /// A spec with Habitat's defaults: standalone, strict binds, desired up, nothing else set.
    pub fn new(ident: String, group: String, health_check_interval: Duration) -> ServiceSpec {
        ServiceSpec {
            ident,
            group,
            topology: Topology::Standalone,
            binds: Vec::new(),
            binding_mode: BindingMode::Strict,
            desired_state: DesiredState::Up,
            shutdown_timeout: None,
            hooks_plugin: None,
            bldr_url: None,
            channel: None,
            update_strategy: None,
            update_condition: None,
            config_from: None,
            svc_encrypted_password: None,
            health_check_interval: health_check_interval.into(),
        }
    }

    /// The package name: the spec's file name and the service's name.
    pub fn name(&self) -> &str {
        self.ident.split('/').nth(1).unwrap_or(&self.ident)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a spec serializes")
    }

    pub fn parse(text: &str, path: &Path) -> Result<ServiceSpec, SpecError> {
        toml::from_str(text)
            .map_err(|e| SpecError::Parse { path: path.to_path_buf(), message: e.message().into() })
    }
}

/// `{data_path}/specs`.
pub struct SpecDir {
    dir: PathBuf,
}

impl SpecDir {
    pub fn new(data_path: &Path) -> SpecDir {
        SpecDir { dir: data_path.join("specs") }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.spec"))
    }

    pub fn save(&self, spec: &ServiceSpec) -> Result<(), SpecError> {
        let path = self.path(spec.name());
        let io = |source| SpecError::Io { path: path.clone(), source };
        fsutil::create_private_dir(&self.dir).map_err(io)?;
        fsutil::write_atomic(&path, spec.to_toml().as_bytes(), 0o600, Existing::Replace).map_err(io)
    }

    pub fn remove(&self, name: &str) -> Result<(), SpecError> {
        let path = self.path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SpecError::Io { path, source }),
        }
    }

    /// Every spec on disk; a bad one is reported and skipped, never fatal for the others.
    pub fn load_all(&self) -> Vec<Result<ServiceSpec, SpecError>> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "spec"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| SpecError::Io { path: path.clone(), source })?;
                let spec = ServiceSpec::parse(&text, &path)?;
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                if spec.name() != stem {
                    return Err(SpecError::Mismatch { path, expected: stem, found: spec.name().into() });
                }
                Ok(spec)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            binds: vec!["db:postgres.default".into()],
            binding_mode: BindingMode::Relaxed,
            shutdown_timeout: Some(3),
            ..ServiceSpec::new(
                "acme/web/1.0.0/20261202120000".into(),
                "default".into(),
                Duration::from_secs(30),
            )
        }
    }

    #[test]
    fn specs_round_trip_with_the_interval_table_last() {
        let dir = tempfile::tempdir().unwrap();
        let specs = SpecDir::new(dir.path());
        specs.save(&spec()).unwrap();
        let text = std::fs::read_to_string(specs.path("web")).unwrap();
        assert!(text.trim_end().ends_with("[health_check_interval]\nsecs = 30\nnanos = 0"), "{text}");
        assert!(text.contains("desired_state = \"up\"") && text.contains("binding_mode = \"relaxed\""));
        let loaded: Vec<_> = specs.load_all().into_iter().map(Result::unwrap).collect();
        assert_eq!(loaded, vec![spec()]);
    }

    #[test]
    fn habitats_own_spec_keys_parse() {
        let text = "ident = \"core/redis\"\ngroup = \"default\"\nbldr_url = \"https://bldr.habitat.sh\"\n\
                    channel = \"stable\"\ntopology = \"standalone\"\nupdate_strategy = \"none\"\n\
                    update_condition = \"latest\"\nbinds = []\nbinding_mode = \"strict\"\n\
                    desired_state = \"down\"\n\n[health_check_interval]\nsecs = 30\nnanos = 0\n";
        let s = ServiceSpec::parse(text, Path::new("redis.spec")).unwrap();
        assert_eq!((s.name(), s.desired_state), ("redis", DesiredState::Down));
    }

    #[test]
    fn a_corrupt_or_misnamed_spec_is_an_error_and_the_others_load() {
        let dir = tempfile::tempdir().unwrap();
        let specs = SpecDir::new(dir.path());
        specs.save(&spec()).unwrap();
        std::fs::write(dir.path().join("specs/bad.spec"), "ident = [\n").unwrap();
        std::fs::write(dir.path().join("specs/other.spec"), spec().to_toml()).unwrap();
        std::fs::write(dir.path().join("specs/typo.spec"), spec().to_toml().replace("group", "grop"))
            .unwrap();
        let all = specs.load_all();
        assert_eq!(all.len(), 4);
        assert_eq!(all.iter().filter(|r| r.is_ok()).count(), 1);
        let errors: Vec<String> =
            all.iter().filter_map(|r| r.as_ref().err().map(|e| e.to_string())).collect();
        assert!(errors.iter().any(|e| e.contains("bad.spec")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("not \"other\"")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("grop")), "{errors:?}");
    }
}
