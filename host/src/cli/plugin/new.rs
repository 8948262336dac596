//! `warren plugin new NAME --world W`: a standalone plugin crate with the contract (wit/) and, when
//! no warren source tree is around, the guest SDK written into it from this binary, so nothing
//! but crates.io (for wit-bindgen) is needed to build it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::plugins::World;

const CARGO_TOML: &str = include_str!("templates/Cargo.toml.in");
const SDK_CARGO_TOML: &str = include_str!("templates/sdk-Cargo.toml.in");
const PLUGIN_TOML: &str = include_str!("templates/plugin.toml.in");
const README: &str = include_str!("templates/README.md.in");
const CREDENTIAL_RS: &str = include_str!("templates/credential-source.rs.in");
const TOPOLOGY_RS: &str = include_str!("templates/topology-policy.rs.in");
const HOOK_RS: &str = include_str!("templates/lifecycle-hook.rs.in");
/// The contract the scaffold targets, as this binary knows it.
const WIT: &str = include_str!("../../../../wit/plugin.wit");
/// The guests' lock file: the scaffold starts from the versions warren builds its own plugins with.
const CARGO_LOCK: &str = include_str!("../../../../plugins/Cargo.lock");
/// The SDK's source, for vendoring.
const SDK_FILES: [(&str, &str); 4] = [
    ("src/lib.rs", include_str!("../../../../plugins/guest/src/lib.rs")),
    ("src/credential.rs", include_str!("../../../../plugins/guest/src/credential.rs")),
    ("src/export.rs", include_str!("../../../../plugins/guest/src/export.rs")),
    ("src/log.rs", include_str!("../../../../plugins/guest/src/log.rs")),
];

/// The SDK in the source tree this binary was built from, if it is still there.
pub fn default_sdk_path() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/guest");
    p.join("Cargo.toml").is_file().then(|| p.canonicalize().unwrap_or(p))
}

/// Lower case, digits and dashes, starting with a letter: a valid plugin, crate and file name
/// that also upper-cases into a valid credential scheme.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.as_bytes()[0].is_ascii_lowercase()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        bail!("plugin name {name:?} must be 1-32 of [a-z0-9-], starting with a letter");
    }
    Ok(())
}

/// `acme-vault` → `ACME_VAULT`.
pub fn scheme_for(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

/// Writes the crate into `dir` (which must not exist or be empty); returns the files written.
pub fn scaffold(name: &str, world: World, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    check_name(name)?;
    if dir.exists()
        && std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?.next().is_some()
    {
        bail!("{} exists and is not empty; choose another --dir", dir.display());
    }
    let scheme = scheme_for(name);
    let sdk_path = match sdk {
        Some(p) => {
            if !p.join("Cargo.toml").is_file() {
                bail!("--sdk-path {}: no Cargo.toml there (expected warren's plugins/guest)", p.display());
            }
            p.canonicalize().unwrap_or_else(|_| p.to_path_buf()).display().to_string()
        }
        None => "sdk".to_string(),
    };
    let fill = |t: &str| {
        t.replace("{{NAME}}", name)
            .replace("{{SCHEME}}", &scheme)
            .replace("{{WORLD}}", world.as_str())
            .replace("{{SDK_PATH}}", &sdk_path)
            .replace(
                "{{ENV_REQUEST}}",
                &if world == World::CredentialSource { format!("\"{scheme}_TOKEN\"") } else { String::new() },
            )
            .replace("{{WORLD_NOTES}}", &world_notes(world, name, &scheme))
    };
    let code = match world {
        World::CredentialSource => CREDENTIAL_RS,
        World::TopologyPolicy => TOPOLOGY_RS,
        World::LifecycleHook => HOOK_RS,
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        ("Cargo.toml".into(), fill(CARGO_TOML)),
        ("Cargo.lock".into(), CARGO_LOCK.to_string()),
        ("plugin.toml".into(), fill(PLUGIN_TOML)),
        ("README.md".into(), fill(README)),
        ("src/lib.rs".into(), fill(code)),
        ("wit/plugin.wit".into(), WIT.to_string()),
        (".gitignore".into(), "/target\n/*.wasm\n".to_string()),
    ];
    if sdk.is_none() {
        files.push(("sdk/Cargo.toml".into(), SDK_CARGO_TOML.to_string()));
        files.extend(SDK_FILES.iter().map(|(p, s)| (Path::new("sdk").join(p), s.to_string())));
    }
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn world_notes(world: World, name: &str, scheme: &str) -> String {
    match world {
        World::CredentialSource => format!(
            "It serves `{scheme}:KEY` from the environment variable `{scheme}_KEY`. In sup.toml:\n\n    \
             [credentials]\n    {scheme} = \"{name}\"\n\n    [plugins.{name}]\n    signer = \"ORIGIN\"   # the origin you signed it with\n    env = [\"{scheme}_TOKEN\"]\n\n\
             and then e.g. `auth_token = \"{scheme}:token\"`.\n"
        ),
        World::TopologyPolicy => format!("Select it with `warren svc load --topology {name} ...`.\n"),
        World::LifecycleHook => {
            format!("Attach it to a service with `warren svc load --hooks-plugin {name} ...`.\n")
        }
    }
}
