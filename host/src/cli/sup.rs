//! `warren sup ...`: the supervisor. For now `sup secret generate` (the ctl gateway secret);
//! the supervisor owner adds `sup run` and friends here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Subcommand;

use crate::crypto::sodium;

/// Bytes of randomness in a ctl secret (Habitat's CTL_SECRET is 64 random bytes, base64).
pub const CTL_SECRET_LEN: usize = 64;

#[derive(Subcommand, Debug)]
pub enum SupCommand {
    /// Manage the secret that authenticates clients of the supervisor's ctl gateway.
    #[command(subcommand)]
    Secret(SupSecretCommand),
}

#[derive(Subcommand, Debug)]
pub enum SupSecretCommand {
    /// Print a new ctl secret: base64 of 64 random bytes (88 characters).
    Generate,
}

/// A fresh ctl secret in its text form.
pub fn generate_ctl_secret() -> zeroize::Zeroizing<String> {
    let bytes = zeroize::Zeroizing::new(sodium::random_array::<CTL_SECRET_LEN>());
    zeroize::Zeroizing::new(B64.encode(&bytes[..]))
}

impl SupCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            SupCommand::Secret(SupSecretCommand::Generate) => {
                outln!("{}", &*generate_ctl_secret())?;
                Ok(())
            }
        }
    }
}
