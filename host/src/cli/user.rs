//! `warren user key generate`: encryption (BOX) key pairs for users, the senders of encrypted
//! configuration.

use anyhow::bail;
use clap::Subcommand;

use super::keys::{CacheArgs, generate_box_pair};

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Manage user encryption keys.
    #[command(subcommand)]
    Key(UserKeyCommand),
}

#[derive(Subcommand, Debug)]
pub enum UserKeyCommand {
    /// Generate a user encryption key pair (BOX-PUB-1 + BOX-SEC-1) in the key cache.
    Generate {
        /// User name.
        user: String,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

impl UserCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            UserCommand::Key(UserKeyCommand::Generate { user, cache }) => {
                if user.contains('@') || user.contains('.') {
                    bail!("invalid user name {user:?}: use letters, digits, '_' and '-'");
                }
                generate_box_pair("user encryption key pair", &user, &cache)
            }
        }
    }
}
