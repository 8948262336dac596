//! `warren ring ...`: the gossip ring's keys. `generate|export|import` work on the key cache;
//! `install|use|remove|list` act on a running supervisor through its HTTP gateway, so a ring key
//! rotates without downtime.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::keys::{CacheArgs, export, generate_and_write, import_from_stdin, print_generated};
use crate::crypto::{KeyKind, RingKey};
use crate::http::{AUTH_TOKEN_ENV, client};

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
    /// Install a ring key on a running supervisor (accepted at once; sent with after `use`).
    Install {
        /// A SYM-SEC-1 key file, or `-` for standard input.
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make an installed key the one a running supervisor sends with.
    Use {
        /// Key id, NAME-REVISION.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop accepting a key (not the one in use).
    Remove {
        /// Key id, NAME-REVISION.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List a running supervisor's ring keys.
    List {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// The supervisor's HTTP gateway.
    #[arg(long, default_value = "127.0.0.1:9631")]
    pub remote_http: String,
    /// The gateway's bearer token.
    #[arg(long, env = AUTH_TOKEN_ENV, hide_env_values = true)]
    pub auth_token: Option<String>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl Remote {
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> anyhow::Result<serde_json::Value> {
        let resp =
            client::request(&self.remote_http, method, path, self.auth_token.as_deref(), body, TIMEOUT)?;
        super::sup::check(resp, &format!("{method} {path}"))
    }
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
            RingKeyCommand::Install { file, remote } => install(&file, &remote),
            RingKeyCommand::Use { id, remote } => {
                let body = serde_json::json!({ "id": id }).to_string();
                remote.call("POST", "/ring/keys/primary", Some(("application/json", body.as_bytes())))?;
                outln!("{id} is now the primary ring key")?;
                Ok(())
            }
            RingKeyCommand::Remove { id, remote } => {
                remote.call("DELETE", &format!("/ring/keys/{id}"), None)?;
                outln!("{id} removed")?;
                Ok(())
            }
            RingKeyCommand::List { remote } => list(&remote),
        }
    }
}

fn install(file: &std::path::Path, remote: &Remote) -> anyhow::Result<()> {
    let mut text = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin().take(8192).read_to_end(&mut text)?;
    } else {
        text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    }
    let r = remote.call("POST", "/ring/keys", Some(("text/plain", &text)))?;
    let id = r.get("id").and_then(|v| v.as_str()).unwrap_or("?");
    let added = r.get("added").and_then(|v| v.as_bool()).unwrap_or(false);
    outln!("{id} {}", if added { "installed" } else { "was already installed" })?;
    Ok(())
}

fn list(remote: &Remote) -> anyhow::Result<()> {
    let keys = remote.call("GET", "/ring/keys", None)?;
    for k in keys.as_array().into_iter().flatten() {
        outln!(
            "{} {} {}",
            k.get("id").and_then(|v| v.as_str()).unwrap_or("?"),
            k.get("fingerprint").and_then(|v| v.as_str()).unwrap_or("?"),
            if k.get("primary").and_then(|v| v.as_bool()).unwrap_or(false) { "primary" } else { "" }
        )?;
    }
    Ok(())
}
