//! `warren box encrypt|decrypt`: BOX-1 and ANONYMOUS-BOX-1 messages from the command line (the
//! format encrypted service configuration travels in).

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;

use super::keys::CacheArgs;
use crate::crypto::boxes::{self, BoxMessage, MAX_MESSAGE_LEN, MAX_PLAINTEXT_LEN};
use crate::crypto::{BoxPublicKey, BoxSecretKeyFile, KeyKind};

#[derive(Subcommand, Debug)]
pub enum BoxCommand {
    /// Encrypt FILE (or stdin) to the latest public key of TO. With --from USER it is a BOX-1
    /// message signed by that user's latest secret key; without, an ANONYMOUS-BOX-1 sealed box.
    Encrypt {
        /// Receiver: a service group key name (`redis.default@acme`) or any BOX key name.
        #[arg(long, value_name = "KEY_NAME")]
        to: String,
        /// Sender: a user key name whose secret key is in the cache.
        #[arg(long, value_name = "USER")]
        from: Option<String>,
        /// File to encrypt; stdin when absent.
        file: Option<PathBuf>,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Decrypt a BOX-1 or ANONYMOUS-BOX-1 message from FILE (or stdin) with keys from the
    /// cache (found by the exact name-revisions the message names) and print the plaintext.
    Decrypt {
        /// File holding the message; stdin when absent.
        file: Option<PathBuf>,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

fn read_input(file: &Option<PathBuf>, limit: usize) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    let what = file.as_ref().map_or("stdin".to_string(), |p| p.display().to_string());
    match file {
        Some(p) => std::fs::File::open(p)
            .with_context(|| format!("opening {what}"))?
            .take(limit as u64 + 1)
            .read_to_end(&mut buf),
        None => std::io::stdin().lock().take(limit as u64 + 1).read_to_end(&mut buf),
    }
    .with_context(|| format!("reading {what}"))?;
    if buf.len() > limit {
        bail!("{what} is larger than the {limit}-byte limit");
    }
    Ok(buf)
}

impl BoxCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            BoxCommand::Encrypt { to, from, file, cache } => {
                let cache = cache.cache();
                let receiver = BoxPublicKey::try_from(&cache.latest(KeyKind::BoxPublic, &to)?)?;
                let plain = read_input(&file, MAX_PLAINTEXT_LEN)?;
                let msg = match from {
                    Some(user) => {
                        let sender = BoxSecretKeyFile::try_from(&cache.latest(KeyKind::BoxSecret, &user)?)?;
                        boxes::encrypt(&plain, &sender, &receiver)?
                    }
                    None => boxes::encrypt_anonymous(&plain, &receiver)?,
                };
                outln!("{}", msg.to_text())?;
                Ok(())
            }
            BoxCommand::Decrypt { file, cache } => {
                let text = read_input(&file, MAX_MESSAGE_LEN)?;
                let msg = BoxMessage::parse(&text)?;
                let plain = msg.decrypt_with_cache(&cache.cache()).context("decrypting the message")?;
                let mut out = std::io::stdout().lock();
                out.write_all(&plain)?;
                out.flush()?;
                Ok(())
            }
        }
    }
}
