//! `warren origin key generate|export|import`: origin signing keys (SIG-PUB-1 / SIG-SEC-1).

use clap::{Subcommand, ValueEnum};

use super::keys::{CacheArgs, export, generate_and_write, import_from_stdin, print_generated};
use crate::crypto::{KeyKind, SigSecretKey};

#[derive(Subcommand, Debug)]
pub enum OriginCommand {
    /// Manage origin signing keys (they sign packages and plugins).
    #[command(subcommand)]
    Key(OriginKeyCommand),
}

#[derive(Subcommand, Debug)]
pub enum OriginKeyCommand {
    /// Generate an origin signing key pair (SIG-PUB-1 + SIG-SEC-1) in the key cache.
    Generate {
        /// Origin name, e.g. `core`.
        origin: String,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Print the latest revision of an origin key on stdout.
    Export {
        /// Origin name.
        origin: String,
        /// Which half to print.
        #[arg(long = "type", value_enum, default_value_t = KeyType::Public)]
        key_type: KeyType,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Read a key file of any kind (SIG, BOX or SYM; public or secret) from stdin, check it and
    /// add it to the key cache.
    Import {
        #[command(flatten)]
        cache: CacheArgs,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Public,
    Secret,
}

impl OriginCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            OriginCommand::Key(cmd) => cmd.run(),
        }
    }
}

impl OriginKeyCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            OriginKeyCommand::Generate { origin, cache } => {
                let written = generate_and_write(&cache.cache(), || {
                    let (pk, sk) = SigSecretKey::generate(&origin)?;
                    Ok(vec![sk.to_file(), pk.to_file()])
                })?;
                print_generated("origin signing key pair", &written)?;
                Ok(())
            }
            OriginKeyCommand::Export { origin, key_type, cache } => {
                let kind = match key_type {
                    KeyType::Public => KeyKind::SigPublic,
                    KeyType::Secret => KeyKind::SigSecret,
                };
                export(&cache.cache(), kind, &origin)
            }
            OriginKeyCommand::Import { cache } => import_from_stdin(&cache.cache(), None),
        }
    }
}
