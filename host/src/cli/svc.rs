//! `warren svc key generate`: encryption (BOX) key pairs for service groups, the receivers of
//! encrypted configuration. Service commands (load, status, ...) join here later.

use anyhow::bail;
use clap::Subcommand;

use super::keys::{CacheArgs, generate_box_pair};

#[derive(Subcommand, Debug)]
pub enum SvcCommand {
    /// Manage service group encryption keys.
    #[command(subcommand)]
    Key(SvcKeyCommand),
}

#[derive(Subcommand, Debug)]
pub enum SvcKeyCommand {
    /// Generate a service group encryption key pair named SERVICE.GROUP@ORG.
    Generate {
        /// Service group, e.g. `redis.default`.
        #[arg(value_name = "SERVICE.GROUP")]
        service_group: String,
        /// Organization, e.g. `acme`.
        org: String,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

impl SvcCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            SvcCommand::Key(SvcKeyCommand::Generate { service_group, org, cache }) => {
                if service_group.matches('.').count() != 1 || service_group.contains('@') {
                    bail!(
                        "invalid service group {service_group:?}: expected SERVICE.GROUP, e.g. redis.default"
                    );
                }
                if org.contains('@') || org.contains('.') {
                    bail!("invalid org {org:?}: use letters, digits, '_' and '-'");
                }
                generate_box_pair("service key pair", &format!("{service_group}@{org}"), &cache)
            }
        }
    }
}
