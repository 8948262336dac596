//! `warren ring ...`: the gossip ring. For now its keys (SYM-SEC-1): generate, export, import.
//! The ring owner adds further variants here (key install/use/remove/list, ...).

use clap::Subcommand;

use super::keys::{CacheArgs, export, generate_and_write, import_from_stdin, print_generated};
use crate::crypto::{KeyKind, RingKey};

#[derive(Subcommand, Debug)]
pub enum RingCommand {
    /// Manage ring keys (they encrypt all gossip between supervisors).
    #[command(subcommand)]
    Key(RingKeyCommand),
}

#[derive(Subcommand, Debug)]
pub enum RingKeyCommand {
    /// Generate a ring key (SYM-SEC-1) in the key cache.
    Generate {
        /// Ring name.
        ring: String,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Print the latest revision of a ring key on stdout (it is a secret: handle with care).
    Export {
        /// Ring name.
        ring: String,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Read a ring key file (SYM-SEC-1) from stdin, check it and add it to the key cache.
    Import {
        #[command(flatten)]
        cache: CacheArgs,
    },
}

impl RingCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            RingCommand::Key(cmd) => cmd.run(),
        }
    }
}

impl RingKeyCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            RingKeyCommand::Generate { ring, cache } => {
                let written =
                    generate_and_write(&cache.cache(), || Ok(vec![RingKey::generate(&ring)?.to_file()]))?;
                print_generated("ring key", &written)?;
                Ok(())
            }
            RingKeyCommand::Export { ring, cache } => export(&cache.cache(), KeyKind::SymSecret, &ring),
            RingKeyCommand::Import { cache } => {
                import_from_stdin(&cache.cache(), Some(&[KeyKind::SymSecret]))
            }
        }
    }
}
