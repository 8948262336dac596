//! `warren ring ...`: the gossip ring's keys. `generate|export|import` work on the key cache;
//! `install|use|remove|list` act on a running supervisor through its ctl gateway
//! (`--remote-sup`), so a ring key rotates without downtime.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::ctl::RemoteSup;
use super::keys::{CacheArgs, export, generate_and_write, import_from_stdin, print_generated};
use crate::crypto::{KeyKind, RingKey};
use crate::ctl::CtlRequest;
use crate::ctl::proto;

#[derive(Subcommand, Debug)]
pub enum RingCommand {
    /// Manage ring keys (they encrypt all gossip between supervisors).
    #[command(subcommand)]
    Key(RingKeyCommand),
    /// Spread rumors through a running supervisor (its ctl gateway).
    #[command(subcommand)]
    Rumor(RingRumorCommand),
}

#[derive(Subcommand, Debug)]
pub enum RingRumorCommand {
    /// Spread one rumor, given as JSON, from a running supervisor. The supervisor numbers its
    /// own rumors (an incarnation in the JSON is ignored). Example:
    /// '{"type": "service_config", "service_group": "redis.default", "config": "port = 6379"}'
    Inject {
        /// The rumor as JSON, or `-` for standard input.
        json: String,
        #[command(flatten)]
        remote: RemoteSup,
        /// Print {"news": BOOL} as JSON.
        #[arg(long)]
        json_output: bool,
    },
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
    /// Install a ring key on a running supervisor (accepted at once; sent with after `use`).
    Install {
        /// A SYM-SEC-1 key file, or `-` for standard input.
        file: PathBuf,
        #[command(flatten)]
        remote: RemoteSup,
    },
    /// Make an installed key the one a running supervisor sends with.
    Use {
        /// Key id, NAME-REVISION.
        id: String,
        #[command(flatten)]
        remote: RemoteSup,
    },
    /// Stop accepting a key (not the one in use).
    Remove {
        /// Key id, NAME-REVISION.
        id: String,
        #[command(flatten)]
        remote: RemoteSup,
    },
    /// List a running supervisor's ring keys.
    List {
        #[command(flatten)]
        remote: RemoteSup,
        /// Print a JSON array of {id, fingerprint, primary}.
        #[arg(long)]
        json: bool,
    },
}

impl RingCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            RingCommand::Key(cmd) => cmd.run(),
            RingCommand::Rumor(RingRumorCommand::Inject { json, remote, json_output }) => {
                inject(&json, &remote, json_output)
            }
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
            RingKeyCommand::Install { file, remote } => install(&file, &remote),
            RingKeyCommand::Use { id, remote } => {
                remote.call(&CtlRequest::RingKeyUse(proto::RingKeyUse { id: Some(id.clone()) }), false)?;
                outln!("{id} is now the primary ring key")?;
                Ok(())
            }
            RingKeyCommand::Remove { id, remote } => {
                remote
                    .call(&CtlRequest::RingKeyRemove(proto::RingKeyRemove { id: Some(id.clone()) }), false)?;
                outln!("{id} removed")?;
                Ok(())
            }
            RingKeyCommand::List { remote, json } => list(&remote, json),
        }
    }
}

fn inject(json: &str, remote: &RemoteSup, json_output: bool) -> anyhow::Result<()> {
    let mut text = json.to_string();
    if json == "-" {
        text.clear();
        std::io::stdin().take(8 * 1024 * 1024).read_to_string(&mut text)?;
    }
    let req = CtlRequest::RumorInject(proto::RumorInject { json: Some(text) });
    let r: proto::RumorInjected = remote.call_for(&req, json_output)?;
    if json_output {
        outln!("{}", serde_json::json!({ "news": r.news }))?;
    } else {
        outln!("{}", if r.news { "rumor spread" } else { "not news: the ring already knows it" })?;
    }
    Ok(())
}

fn install(file: &std::path::Path, remote: &RemoteSup) -> anyhow::Result<()> {
    let mut text = zeroize::Zeroizing::new(Vec::new());
    if file.as_os_str() == "-" {
        std::io::stdin().take(8192).read_to_end(&mut text)?;
    } else {
        *text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    }
    let req = CtlRequest::RingKeyInstall(proto::RingKeyInstall { key_file: Some(text.to_vec()) });
    let r: proto::RingKeyInstalled = remote.call_for(&req, false)?;
    outln!("{} {}", r.id, if r.added { "installed" } else { "was already installed" })?;
    Ok(())
}

fn list(remote: &RemoteSup, json: bool) -> anyhow::Result<()> {
    let keys: proto::RingKeys = remote.call_for(&CtlRequest::RingKeyList(proto::RingKeyList {}), json)?;
    if json {
        let rows: Vec<_> = keys
            .keys
            .iter()
            .map(|k| serde_json::json!({ "id": k.id, "fingerprint": k.fingerprint, "primary": k.primary }))
            .collect();
        outln!("{}", serde_json::Value::Array(rows))?;
        return Ok(());
    }
    for k in &keys.keys {
        outln!("{} {} {}", k.id, k.fingerprint, if k.primary { "primary" } else { "" })?;
    }
    Ok(())
}
