//! `warren admit node list|revoke`: the keyserver's admitted nodes.

use super::admit::{NodeCommand, rfc3339};
use crate::ctl::{CtlRequest, proto};

pub fn node(cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::List { keyserver } => {
            let list: proto::AdmitNodes =
                keyserver.call_for(&CtlRequest::AdmitNodeList(proto::AdmitNodeList {}))?;
            outln!(
                "{:<20}  {:<8}  {:<20}  {:<20}  {:<21}  GROUPS",
                "NODE",
                "STATUS",
                "CGC UNTIL",
                "LAST SEEN",
                "GOSSIP"
            )?;
            for n in list.nodes {
                outln!(
                    "{:<20}  {:<8}  {:<20}  {:<20}  {:<21}  {}",
                    n.node,
                    if n.revoked { "revoked" } else { "active" },
                    rfc3339(n.not_after),
                    n.seen.map(rfc3339).unwrap_or_else(|| "-".into()),
                    n.gossip.as_deref().unwrap_or("-"),
                    if n.groups.is_empty() { "-".to_string() } else { n.groups.join(",") }
                )?;
            }
        }
        NodeCommand::Revoke { keyserver, node } => {
            let req = CtlRequest::AdmitNodeRevoke(proto::AdmitNodeRevoke { node: Some(node.clone()) });
            let made: proto::AdmitKeyMade = keyserver.call_for(&req)?;
            outln!(
                "Node {node} revoked; new ring key {} goes to the other nodes, the old one is removed once they all have it",
                made.id
            )?;
            if !made.rotated.is_empty() {
                outln!(
                    "Also replaced, for the remaining members at their next fetch: {}",
                    made.rotated.join(", ")
                )?;
            }
        }
    }
    Ok(())
}
