//! `warren credential resolve REF`: resolve one reference through the plugin folder, once.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;

use super::plugin::PluginArgs;
use crate::credentials::{Reference, resolve_once};
use crate::plugins::Grant;
use crate::secret::SecretString;

#[derive(Subcommand, Debug)]
pub enum CredentialCommand {
    /// Resolve REF once and print its value (for operators testing a plugin). The serving
    /// plugin is granted exactly what the reference names: the env var of ENV:NAME or the
    /// parent directory of FILE:/path, on top of the config's grants.
    Resolve {
        /// `SCHEME:rest`, or a literal (printed back as is).
        #[arg(value_parser = reference_arg)]
        reference: SecretString,
        #[command(flatten)]
        args: PluginArgs,
    },
}

/// The argument may be a literal secret: its `Debug` shows the scheme only.
fn reference_arg(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::reference(s))
}

/// What a reference itself names, for the one-shot CLI grant.
pub fn grant_for(reference: &Reference) -> Grant {
    let mut g = Grant::default();
    match (reference.scheme(), reference.rest()) {
        (Some("ENV"), Some(name)) => g.env.push(name.to_string()),
        (Some("FILE"), Some(path)) => {
            if let Some(parent) = PathBuf::from(path).parent().filter(|p| p.is_absolute()) {
                g.read_paths.push(parent.to_path_buf());
            }
        }
        _ => {}
    }
    g
}

pub fn run(cmd: CredentialCommand) -> anyhow::Result<()> {
    match cmd {
        CredentialCommand::Resolve { reference, args } => {
            let parsed = Reference::parse(reference.expose());
            let Some(scheme) = parsed.scheme().map(str::to_string) else {
                outln!(
                    "{}",
                    match parsed {
                        Reference::Literal(v) => v,
                        Reference::Routed { .. } => unreachable!("no scheme"),
                    }
                )?;
                return Ok(());
            };
            // First find which plugin serves the scheme, then load it with the grant.
            let config = args.config()?;
            let probe = args.registry(&config, &[])?;
            probe.load_dir()?;
            let Some(source) = probe.get_credential_source(&scheme) else {
                let errors: Vec<String> = probe
                    .status()
                    .into_iter()
                    .filter_map(|s| s.last_error.map(|e| format!("{}: {e}", s.file.display())))
                    .collect();
                bail!(
                    "no plugin in {} serves scheme {scheme}{}",
                    probe.settings().plugin_dir.display(),
                    if errors.is_empty() {
                        String::new()
                    } else {
                        format!(" (load errors: {})", errors.join("; "))
                    }
                );
            };
            let name = source.plugin().name().to_string();
            let file = source.plugin().info.file.clone();
            drop(source);
            drop(probe);
            let registry = args.registry(&config, &[(name, grant_for(&parsed))])?;
            registry.load_file(&file).with_context(|| format!("cannot load {}", file.display()))?;
            let resolved = resolve_once(&registry, reference.expose())?;
            outln!("{}", resolved.value.as_str())?;
            Ok(())
        }
    }
}
