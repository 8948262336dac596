//! `warren sup status`: a running supervisor's ring members, plugins and credentials, read
//! over its ctl gateway (`--remote-sup`, the default) or, with `--remote-http`, from its HTTP
//! gateway (`/butterfly`, `/plugins`, `/credentials`). Values are never shown: credentials
//! appear as version + fingerprint.

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};

use super::ctl::RemoteSup;
use super::remote::Remote;
use crate::ctl::CtlRequest;
use crate::ctl::proto::{SupStatus, SupStatusReply};
use crate::http::AUTH_TOKEN_ENV;
use crate::secret::SecretString;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub remote: RemoteSup,
    /// Read the HTTP gateway at HOST:PORT instead of the ctl gateway (needs only the
    /// gateway's token, if it has one).
    #[arg(long, value_name = "HOST:PORT")]
    pub remote_http: Option<String>,
    /// The HTTP gateway's bearer token (with --remote-http).
    #[arg(long, env = AUTH_TOKEN_ENV, hide_env_values = true, requires = "remote_http")]
    pub auth_token: Option<SecretString>,
    /// Print one JSON document: {member_id, members: [...], plugins, credentials, ...}.
    #[arg(long)]
    pub json: bool,
}

/// What both gateways tell, in one shape (`--json` prints it).
fn from_ctl(r: SupStatusReply) -> anyhow::Result<Value> {
    let doc = |text: Option<String>, what: &str| -> anyhow::Result<Value> {
        text.map(|t| serde_json::from_str(&t).with_context(|| format!("the supervisor's {what} document")))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    Ok(json!({
        "member_id": r.member_id,
        "version": r.version,
        "ring": r.ring,
        "generation": r.generation,
        "encrypted": r.encrypted,
        "members": r.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "address": m.address,
            "health": m.health,
            "incarnation": m.incarnation,
            "persistent": m.persistent,
        })).collect::<Vec<_>>(),
        "services": r.services.iter().map(super::svc::status_json).collect::<Vec<_>>(),
        "plugins": doc(r.plugins_json, "plugins")?,
        "credentials": doc(r.credentials_json, "credentials")?,
    }))
}

fn from_http(remote: &Remote) -> anyhow::Result<Value> {
    let butterfly = remote.call("GET", "/butterfly", None)?;
    let members = &butterfly["member"]["members"];
    let rows: Vec<Value> = butterfly["member"]["health"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(id, health)| {
            let m = &members[id];
            json!({
                "member_id": id,
                "address": format!("{}:{}", s(&m["address"]), s(&m["gossip_port"])),
                "health": health,
                "incarnation": m["incarnation"],
                "persistent": m["persistent"],
            })
        })
        .collect();
    Ok(json!({
        "member_id": remote.call("GET", "/census", None)?["local_member_id"],
        "members": rows,
        "plugins": remote.call("GET", "/plugins", None)?,
        "credentials": remote.call("GET", "/credentials", None)?,
    }))
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    outln!("{}", line(header.iter().map(|h| h.to_string()).collect()))?;
    for r in rows {
        outln!("{}", line(r))?;
    }
    Ok(())
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let (status, seen_by) = match &args.remote_http {
        Some(http) => {
            let remote = Remote { remote_http: http.clone(), auth_token: args.auth_token.clone() };
            (from_http(&remote)?, http.clone())
        }
        None => {
            let req = CtlRequest::SupStatus(SupStatus {});
            let reply: SupStatusReply = args.remote.call_for(&req, args.json)?;
            (from_ctl(reply)?, args.remote.target()?)
        }
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&status)?)?;
        return Ok(());
    }
    print(&status, &seen_by)
}

fn print(status: &Value, seen_by: &str) -> anyhow::Result<()> {
    let mut rows: Vec<Vec<String>> = status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| vec![s(&m["member_id"]), s(&m["address"]), s(&m["health"]), s(&m["incarnation"])])
        .collect();
    rows.sort_by(|a, b| a[1].cmp(&b[1]));
    let mut about = vec![format!("member {}", s(&status["member_id"]))];
    if let Some(v) = status["version"].as_str() {
        about.push(format!("warren {v}"));
    }
    match (&status["ring"], &status["encrypted"]) {
        (Value::String(r), _) => about.push(format!("ring {r} (encrypted)")),
        (_, Value::Bool(false)) => about.push("ring NOT encrypted".into()),
        _ => {}
    }
    if let Some(g) = status["generation"].as_u64() {
        about.push(format!("generation {g}"));
    }
    outln!("{} ({})", seen_by, about.join(", "))?;
    outln!("\nring members:")?;
    table(&["MEMBER", "GOSSIP", "HEALTH", "INCARNATION"], rows)?;

    if let Some(services) = status["services"].as_array() {
        let rows: Vec<Vec<String>> = services
            .iter()
            .map(|v| {
                vec![
                    s(&v["package"]),
                    s(&v["desired"]),
                    s(&v["state"]),
                    s(&v["pid"]),
                    s(&v["health"]),
                    s(&v["service_group"]),
                ]
            })
            .collect();
        outln!("\nservices:")?;
        table(&["PACKAGE", "DESIRED", "STATE", "PID", "HEALTH", "GROUP"], rows)?;
    }

    let plugins = &status["plugins"];
    let rows = plugins["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                s(&p["name"]),
                s(&p["world"]),
                s(&p["version"]),
                s(&p["state"]),
                s(&p["signer"]),
                p["last_error"].as_str().map(|e| e.chars().take(60).collect()).unwrap_or_default(),
            ]
        })
        .collect();
    outln!("\nplugins ({}, trust {}):", s(&plugins["plugin_path"]), s(&plugins["trust"]))?;
    table(&["NAME", "WORLD", "VERSION", "STATE", "SIGNER", "LAST ERROR"], rows)?;

    let rows = status["credentials"]["credentials"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let used_by = c["used_by"].as_array().into_iter().flatten().map(s).collect::<Vec<_>>().join(",");
            vec![
                used_by,
                s(&c["reference"]),
                s(&c["version"]),
                s(&c["fingerprint"]),
                c["last_error"].as_str().map(|e| e.chars().take(60).collect()).unwrap_or_default(),
            ]
        })
        .collect();
    outln!("\ncredentials:")?;
    table(&["USED BY", "REFERENCE", "VERSION", "FINGERPRINT", "LAST ERROR"], rows)
}
