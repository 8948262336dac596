//! `warren ring key install|use|remove|list`: manage the keyring of a running supervisor
//! through its HTTP gateway (so a ring key rotates without downtime).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::http::{AUTH_TOKEN_ENV, client};

#[derive(Subcommand, Debug)]
pub enum RingCommand {
    /// Ring keys.
    #[command(subcommand)]
    Key(RingKeyCommand),
}

#[derive(Subcommand, Debug)]
pub enum RingKeyCommand {
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

pub fn run(cmd: RingCommand) -> anyhow::Result<()> {
    match cmd {
        RingCommand::Key(k) => run_key(k),
    }
}

fn run_key(cmd: RingKeyCommand) -> anyhow::Result<()> {
    match cmd {
        RingKeyCommand::Install { file, remote } => {
            let mut text = Vec::new();
            if file.as_os_str() == "-" {
                std::io::stdin().take(8192).read_to_end(&mut text)?;
            } else {
                text = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            }
            let r = remote.call("POST", "/ring/keys", Some(("text/plain", &text)))?;
            let id = r.get("id").and_then(|v| v.as_str()).unwrap_or("?");
            let added = r.get("added").and_then(|v| v.as_bool()).unwrap_or(false);
            println!("{id} {}", if added { "installed" } else { "was already installed" });
        }
        RingKeyCommand::Use { id, remote } => {
            let body = serde_json::json!({ "id": id }).to_string();
            remote.call("POST", "/ring/keys/primary", Some(("application/json", body.as_bytes())))?;
            println!("{id} is now the primary ring key");
        }
        RingKeyCommand::Remove { id, remote } => {
            remote.call("DELETE", &format!("/ring/keys/{id}"), None)?;
            println!("{id} removed");
        }
        RingKeyCommand::List { remote } => {
            let keys = remote.call("GET", "/ring/keys", None)?;
            for k in keys.as_array().into_iter().flatten() {
                println!(
                    "{} {} {}",
                    k.get("id").and_then(|v| v.as_str()).unwrap_or("?"),
                    k.get("fingerprint").and_then(|v| v.as_str()).unwrap_or("?"),
                    if k.get("primary").and_then(|v| v.as_bool()).unwrap_or(false) { "primary" } else { "" }
                );
            }
        }
    }
    Ok(())
}
