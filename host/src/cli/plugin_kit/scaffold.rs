//! `warren plugin new`: the files of a standalone plugin crate, from templates embedded in the
//! binary with the WIT contract this warren speaks, so no network is needed beyond crates.io.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::fsutil::{self, Existing};
use crate::plugins::World;

/// The contract written into every scaffold (wit/plugin.wit).
const WIT: &str = include_str!("../../../../wit/plugin.wit");
pub const CONTRACT: &str = "warren:plugin@0.2.0";
/// The guest helper crate, vendored into the scaffold.
const GUEST_LIB: &str = include_str!("../../../../plugins/guest/src/lib.rs");
const GUEST_CARGO: &str = "[package]\nname = \"warren-plugin-guest\"\ndescription = \"Helpers for warren guest plugins (vendored by warren plugin new)\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n";
/// The versions warren's own plugins were tested with (cargo drops what the crate does not use).
const LOCK: &str = include_str!("../../../../plugins/Cargo.lock");

const CARGO_TOML: &str = include_str!("templates/Cargo.toml.in");
const PLUGIN_TOML: &str = include_str!("templates/plugin.toml.in");
const README: &str = include_str!("templates/README.md.in");
const GITIGNORE: &str = include_str!("templates/gitignore.in");
const CREDENTIAL_SOURCE: &str = include_str!("templates/credential-source.rs.in");
const TOPOLOGY_POLICY: &str = include_str!("templates/topology-policy.rs.in");
const LIFECYCLE_HOOK: &str = include_str!("templates/lifecycle-hook.rs.in");

/// A plugin name as the registry wants it: the file is NAME.wasm and the manifest says NAME.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        bail!("plugin name {name:?}: use 1 to 64 lower-case letters, digits and '-', starting with a letter");
    }
    Ok(())
}

/// The credential scheme a source named NAME serves: upper case, '-' as '_' (`my-vault` ->
/// `MY_VAULT`), as references want it.
pub fn scheme_of(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// How an operator puts the plugin to work, for the README and `plugin new`'s output.
pub fn usage(name: &str, world: World) -> String {
    match world {
        World::CredentialSource => format!(
            "In sup.toml, give it its scheme and what it may read, then refer to secrets as \
             `{s}:NAME`:\n\n```toml\n[credentials]\n{s} = \"{name}\"\n\n[plugins.{name}]\nenv = [\"DB_PASSWORD\"]\n\
             signer = \"ORIGIN\"\n```\n\nand e.g. `auth_token = \"{s}:DB_PASSWORD\"`.",
            s = scheme_of(name)
        ),
        World::TopologyPolicy => {
            format!("A service group uses it with `warren svc load ORIGIN/PKG --topology {name}`.")
        }
        World::LifecycleHook => {
            format!("A service runs its hooks here with `warren svc load ORIGIN/PKG --hooks-plugin {name}`.")
        }
    }
}

/// Every file of the scaffold, relative to its folder.
pub fn files(name: &str, world: World) -> Vec<(PathBuf, String)> {
    let vars = [
        ("{{name}}", name.to_string()),
        ("{{crate}}", format!("plugin-{name}")),
        ("{{world}}", world.to_string()),
        ("{{scheme}}", scheme_of(name)),
        ("{{contract}}", CONTRACT.to_string()),
        ("{{usage}}", usage(name, world)),
        // The example source reads the environment: whatever the operator grants it.
        (
            "{{env}}",
            match world {
                World::CredentialSource => r#"["*"]         # any variable the operator grants; or a list, e.g. ["VAULT_TOKEN"]"#,
                _ => r#"[]            # environment variables it may read, e.g. ["VAULT_TOKEN"]; "*" = any granted"#,
            }
            .to_string(),
        ),
    ];
    let fill = |t: &str| vars.iter().fold(t.to_string(), |acc, (k, v)| acc.replace(k, v));
    let lib = match world {
        World::CredentialSource => CREDENTIAL_SOURCE,
        World::TopologyPolicy => TOPOLOGY_POLICY,
        World::LifecycleHook => LIFECYCLE_HOOK,
    };
    [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("Cargo.lock", LOCK.to_string()),
        ("plugin.toml", fill(PLUGIN_TOML)),
        ("README.md", fill(README)),
        (".gitignore", GITIGNORE.to_string()),
        ("src/lib.rs", fill(lib)),
        ("wit/plugin.wit", WIT.to_string()),
        ("warren-plugin-guest/Cargo.toml", GUEST_CARGO.to_string()),
        ("warren-plugin-guest/src/lib.rs", GUEST_LIB.to_string()),
    ]
    .into_iter()
    .map(|(p, c)| (PathBuf::from(p), c))
    .collect()
}

/// Writes the scaffold into `dir`, which must not exist or be empty (nothing is overwritten).
pub fn write(dir: &Path, name: &str, world: World) -> anyhow::Result<()> {
    if dir.exists()
        && std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?.next().is_some()
    {
        bail!("{} exists and is not empty: choose another --dir", dir.display());
    }
    for (rel, text) in files(name, world) {
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fsutil::write_atomic(&path, text.as_bytes(), fsutil::DEFAULT_MODE, Existing::Refuse)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_schemes() {
        assert!(check_name("my-vault").is_ok());
        for bad in ["", "My", "1abc", "a_b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(scheme_of("my-vault2"), "MY_VAULT2");
    }

    #[test]
    fn every_world_fills_every_placeholder_and_writes_once() {
        for world in [World::CredentialSource, World::TopologyPolicy, World::LifecycleHook] {
            let fs = files("acme-x", world);
            for (p, text) in &fs {
                assert!(!text.contains("{{"), "{} keeps a placeholder", p.display());
            }
            let get = |p: &str| &fs.iter().find(|(q, _)| q == Path::new(p)).unwrap().1;
            assert!(get("plugin.toml").contains(&format!("world = \"{world}\"")));
            assert!(get("Cargo.toml").contains("name = \"plugin-acme-x\""));
            assert!(get("wit/plugin.wit").contains("package warren:plugin@0.2.0"));
        }
        assert!(files("acme-x", World::CredentialSource)[5].1.contains("const SCHEME: &str = \"ACME_X\""));
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("p");
        write(&target, "acme-x", World::LifecycleHook).unwrap();
        assert!(target.join("warren-plugin-guest/src/lib.rs").is_file());
        let again = write(&target, "acme-x", World::LifecycleHook).unwrap_err().to_string();
        assert!(again.contains("not empty"), "{again}");
    }
}
