//! `warren sup status`: a running supervisor's ring members, plugins and credentials, read
//! from its HTTP gateway (`/butterfly`, `/plugins`, `/credentials`). Values are never shown:
//! credentials appear as version + fingerprint.

use clap::Args;
use serde_json::Value;

use super::remote::Remote;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub remote: Remote,
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> anyhow::Result<()> {
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
    let remote = &args.remote;
    let butterfly = remote.call("GET", "/butterfly", None)?;
    let members = &butterfly["member"]["members"];
    let mut rows: Vec<Vec<String>> = butterfly["member"]["health"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(id, health)| {
            let m = &members[id];
            vec![
                id.clone(),
                format!("{}:{}", s(&m["address"]), s(&m["gossip_port"])),
                s(health),
                s(&m["incarnation"]),
            ]
        })
        .collect();
    rows.sort_by(|a, b| a[1].cmp(&b[1]));
    outln!("ring members (as {} sees them):", remote.remote_http)?;
    table(&["MEMBER", "GOSSIP", "HEALTH", "INCARNATION"], rows)?;

    let plugins = remote.call("GET", "/plugins", None)?;
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

    let creds = remote.call("GET", "/credentials", None)?;
    let rows = creds["credentials"]
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
