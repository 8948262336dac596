//! The plugin manifest: TOML in the custom section `warren-manifest`, naming what the plugin
//! asks for. The operator's grant (see `policy`) decides what it gets.

use serde::{Deserialize, Serialize};

use super::{PluginError, World, wasm};

pub const MANIFEST_SECTION: &str = "warren-manifest";
/// Manifests are a few hundred bytes; refuse absurd ones before parsing.
const MAX_MANIFEST_LEN: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub world: World,
    #[serde(default)]
    pub requests: Requests,
}

/// What a plugin asks for. `"*"` in a list means "whatever the operator grants".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requests {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub read_paths: Vec<String>,
    #[serde(default)]
    pub http_hosts: Vec<String>,
    #[serde(default)]
    pub memory_mb: Option<u32>,
    #[serde(default)]
    pub timeout_ms: Option<u32>,
}

impl Manifest {
    pub fn parse(text: &[u8]) -> Result<Self, PluginError> {
        if text.len() > MAX_MANIFEST_LEN {
            return Err(PluginError::BadManifest(format!("larger than {MAX_MANIFEST_LEN} bytes")));
        }
        let text = std::str::from_utf8(text).map_err(|_| PluginError::BadManifest("not UTF-8".into()))?;
        let m: Manifest =
            toml::from_str(text).map_err(|e| PluginError::BadManifest(e.message().to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Finds the manifest at the top level of the component or inside a nested core module
    /// (where `#[link_section]` statics end up). Exactly one must exist.
    pub fn from_component(bytes: &[u8]) -> Result<Self, PluginError> {
        let found = wasm::find_custom_sections(bytes, MANIFEST_SECTION)?;
        match found.as_slice() {
            [] => Err(PluginError::NoManifest),
            [one] => Manifest::parse(one),
            more => Err(PluginError::BadManifest(format!(
                "{} warren-manifest sections; expected one",
                more.len()
            ))),
        }
    }

    fn validate(&self) -> Result<(), PluginError> {
        let bad = |why: String| Err(PluginError::BadManifest(why));
        if !valid_plugin_name(&self.name) {
            return bad(format!(
                "name {:?} must be 1-64 of [a-z0-9_-], starting with a letter or digit",
                self.name
            ));
        }
        if self.version.is_empty() || self.version.len() > 64 {
            return bad("version must be 1-64 characters".into());
        }
        for e in &self.requests.env {
            if e != "*" && (e.is_empty() || e.contains('=') || e.contains('\0')) {
                return bad(format!("env request {e:?} is not a variable name"));
            }
        }
        for p in &self.requests.read_paths {
            if p != "*" && !super::policy::is_plain_absolute(std::path::Path::new(p)) {
                return bad(format!(
                    "read_paths entry {p:?} must be an absolute path without . or .., or \"*\""
                ));
            }
        }
        for h in &self.requests.http_hosts {
            if h != "*" && (h.is_empty() || h.contains('/')) {
                return bad(format!("http_hosts entry {h:?} must be host:port or \"*\""));
            }
        }
        Ok(())
    }
}

pub fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_guest_format() {
        let m = Manifest::parse(
            b"name = \"file\"\nversion = \"0.1.0\"\nworld = \"credential-source\"\n[requests]\nenv = []\nread_paths = [\"*\"]\nhttp_hosts = []\nmemory_mb = 16\ntimeout_ms = 1000\n",
        )
        .unwrap();
        assert_eq!(m.name, "file");
        assert_eq!(m.world, World::CredentialSource);
        assert_eq!(m.requests.read_paths, vec!["*"]);
        assert_eq!(m.requests.memory_mb, Some(16));
    }

    #[test]
    fn refuses_bad_manifests() {
        for bad in [
            &b"name = \"x\"\nversion = \"1\"\nworld = \"nope\"\n"[..],
            b"name = \"X Y\"\nversion = \"1\"\nworld = \"lifecycle-hook\"\n",
            b"name = \"x\"\nversion = \"1\"\nworld = \"lifecycle-hook\"\n[requests]\nread_paths = [\"relative\"]\n",
            b"name = \"x\"\nversion = \"1\"\nworld = \"lifecycle-hook\"\nextra = 1\n",
            b"\xff\xfe",
        ] {
            assert!(matches!(Manifest::parse(bad), Err(PluginError::BadManifest(_))), "{bad:?}");
        }
    }
}
