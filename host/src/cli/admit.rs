//! `warren admit token create|list|revoke`: a keyserver's admin commands, over the ctl
//! gateway's Noise channel keyed by the keyserver's admin secret.

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::keyserver::{ADMIN_SECRET_FILE, DEFAULT_KEYSERVER_PORT};
use crate::admission::request::Op;
use crate::ctl::proto;
use crate::ctl::{CtlClient, CtlRequest, CtlSecret};

pub const KEYSERVER_ENV: &str = "WARREN_KEYSERVER";
pub const KEYSERVER_SECRET_ENV: &str = "WARREN_KEYSERVER_SECRET";

#[derive(Subcommand, Debug)]
pub enum AdmitCommand {
    /// One-time join tokens: create, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Joins this node with a join string: makes the node's keys locally (they never leave
    /// it), checks the keyserver against the pin in the string, claims the token (sealed to
    /// the keyserver), and stores the CGC and the ring keys in the key cache, so that
    /// `warren sup run --ring NAME` joins the encrypted ring. Retrying after a lost reply is
    /// safe: the same keys get the same CGC. The join string is a secret: it is read from a
    /// file, from stdin (`-`) or from WARREN_JOIN, never taken from the command line.
    Join {
        /// A file holding the join string (WJ1-...) from `admit token create`, or `-` for
        /// stdin [default: the WARREN_JOIN environment variable].
        #[arg(value_name = "FILE|-")]
        join: Option<String>,
        /// This node's name, as given to `token create --node`.
        #[arg(long, value_name = "NAME")]
        node: String,
        /// The keyserver's join port, HOST[:PORT] (port 9636 by default).
        #[arg(long, env = KEYSERVER_ENV, value_name = "HOST[:PORT]")]
        keyserver: String,
        #[command(flatten)]
        cache: super::keys::CacheArgs,
        /// Where the CGC is stored ({data_path}/admission/cgc).
        #[arg(long, env = "WARREN_DATA_PATH", value_name = "DIR", default_value_os_t = crate::config::default_data_path())]
        data_path: std::path::PathBuf,
    },
    /// Renews this node's CGC with the keyserver that admitted it (signed by the node key).
    Renew {
        #[command(flatten)]
        node: NodeSide,
    },
    /// Fetches every key and config file the keyserver's policy gives this node: ring key
    /// revisions, service-group keys of its groups, the ctl secret (group admin only) and
    /// its peer list (DIR/admission/peers).
    Fetch {
        #[command(flatten)]
        node: NodeSide,
        /// This node's gossip address, for the other nodes' peer lists.
        #[arg(long, value_name = "ADDR")]
        gossip: Option<String>,
    },
    /// Admitted nodes: list, revoke.
    #[command(subcommand)]
    Node(NodeCommand),
    /// The ring key: rotate.
    #[command(subcommand)]
    Ring(RingCommand),
    /// Service-group keys: key-gen.
    #[command(subcommand)]
    Group(GroupCommand),
}

#[derive(Args, Debug)]
pub struct NodeSide {
    #[command(flatten)]
    pub cache: super::keys::CacheArgs,
    /// The node's data path (its CGC and keyserver address are under DIR/admission).
    #[arg(long, env = "WARREN_DATA_PATH", value_name = "DIR", default_value_os_t = crate::config::default_data_path())]
    pub data_path: std::path::PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Lists the admitted nodes (groups, CGC serial, revoked, last request).
    List {
        #[command(flatten)]
        keyserver: KeyserverTarget,
    },
    /// Refuses the node from now on and rotates the ring key it held: the new key goes to the
    /// other nodes only, and the old one is removed once they all have the new one.
    Revoke {
        #[command(flatten)]
        keyserver: KeyserverTarget,
        /// The node's name.
        node: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RingCommand {
    /// Installs a new ring key revision on the keyserver; nodes fetch it and switch to it.
    Rotate {
        #[command(flatten)]
        keyserver: KeyserverTarget,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Makes a service-group key SERVICE.GROUP[@ORG] on the keyserver; it goes to nodes in
    /// the admission group SERVICE (or SERVICE.GROUP).
    KeyGen {
        #[command(flatten)]
        keyserver: KeyserverTarget,
        #[arg(value_name = "SERVICE.GROUP[@ORG]")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Mints a one-time token for a node and prints its join string as the last line. The
    /// string carries the token's secret: hand it to the node only.
    Create {
        #[command(flatten)]
        keyserver: KeyserverTarget,
        /// The node's name (letters, digits, '_', '-'); the token admits only this name.
        #[arg(long, value_name = "NAME")]
        node: String,
        /// A group the node will belong to (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// How long the token may be claimed: 90s, 30m, 1h (default), up to 24h.
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        ttl: Option<u64>,
        /// Only claims from this address range are accepted (ADDRESS/PREFIX).
        #[arg(long, value_name = "CIDR")]
        from: Option<String>,
    },
    /// Lists the keyserver's tokens (ids, nodes, status; never a secret).
    List {
        #[command(flatten)]
        keyserver: KeyserverTarget,
    },
    /// Revokes a token by its id (the 8 characters after "WJ1-").
    Revoke {
        #[command(flatten)]
        keyserver: KeyserverTarget,
        /// The token id.
        id: String,
    },
}

#[derive(Args, Debug, Clone)]
pub struct KeyserverTarget {
    /// The keyserver, HOST[:PORT] (port 9637 by default).
    #[arg(long, env = KEYSERVER_ENV, value_name = "HOST[:PORT]", default_value = "127.0.0.1")]
    pub keyserver: String,
    /// The keyserver's data path, to read DIR/ADMIN_SECRET when WARREN_KEYSERVER_SECRET is not
    /// set (on the keyserver's own host).
    #[arg(long, value_name = "DIR")]
    pub data_path: Option<std::path::PathBuf>,
}

/// `HOST[:PORT]` → `HOST:PORT` with the keyserver's port when none is given.
pub fn keyserver_addr(given: &str) -> String {
    let with_ctl_port = crate::ctl::client::remote_addr(given);
    let ctl_suffix = format!(":{}", crate::ctl::client::DEFAULT_PORT);
    let explicit = given.trim().ends_with(&ctl_suffix);
    match with_ctl_port.strip_suffix(&ctl_suffix) {
        Some(host) if !explicit => format!("{host}:{DEFAULT_KEYSERVER_PORT}"),
        _ => with_ctl_port,
    }
}

impl KeyserverTarget {
    fn client(&self) -> anyhow::Result<CtlClient> {
        let addr = keyserver_addr(&self.keyserver);
        let from_env = std::env::var(KEYSERVER_SECRET_ENV).ok().and_then(|v| CtlSecret::new(&v));
        let secret = match (from_env, &self.data_path) {
            (Some(s), _) => s,
            (None, Some(dir)) => {
                let path = dir.join(ADMIN_SECRET_FILE);
                crate::ctl::secret::read_file(&path)?
                    .with_context(|| format!("no admin secret: {} does not exist", path.display()))?
            }
            (None, None) => anyhow::bail!(
                "no admin secret for the keyserver {addr}: set {KEYSERVER_SECRET_ENV}, or pass --data-path \
                 with the keyserver's folder (it holds {ADMIN_SECRET_FILE})"
            ),
        };
        Ok(CtlClient::new(&addr, secret))
    }

    pub(super) fn call_for<M: proto::CtlMessage>(&self, req: &CtlRequest) -> anyhow::Result<M> {
        let client = self.client()?;
        // The client's error names the keyserver already.
        let reply = client.call(req, |_| {}).context("keyserver")?;
        reply.decode::<M>().with_context(|| format!("{} on keyserver {}", req.name(), client.remote()))
    }
}

/// `90s`, `30m`, `1h`, `1d` or bare seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration such as 90s, 30m or 1h"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too long"))
}

/// `v` joined by `sep`, or "none".
pub(super) fn list_or_none(v: &[String], sep: &str) -> String {
    if v.is_empty() { "none".to_string() } else { v.join(sep) }
}

pub(super) fn rfc3339(t: u64) -> String {
    i64::try_from(t)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

pub fn run(cmd: AdmitCommand) -> anyhow::Result<()> {
    let cmd = match cmd {
        AdmitCommand::Token(cmd) => cmd,
        AdmitCommand::Join { join, node, keyserver, cache, data_path } => {
            let text = super::join_source::read("admit join", join.as_deref())?.with_context(|| {
                format!(
                    "admit join: give a FILE holding the join string, `-` for stdin, or set {}",
                    super::join_source::JOIN_ENV
                )
            })?;
            return super::admit_join::join(text.trim(), &node, &keyserver, &cache.cache(), &data_path);
        }
        AdmitCommand::Renew { node } => {
            let a = super::admit_node::run_once(Op::Renew, &node.data_path, &node.cache.cache(), None)?;
            outln!("Renewed: CGC {}", a.renewed.as_deref().unwrap_or("?"))?;
            return Ok(());
        }
        AdmitCommand::Fetch { node, gossip } => {
            let a = super::admit_node::run_once(Op::Keys, &node.data_path, &node.cache.cache(), gossip)?;
            outln!(
                "Fetched: ring keys added {}, removed {}; {} service-group key files; ctl secret {}",
                list_or_none(&a.ring_added, ", "),
                list_or_none(&a.ring_removed, ", "),
                a.group_keys,
                if a.ctl_secret { "written" } else { "unchanged or not given" }
            )?;
            return Ok(());
        }
        AdmitCommand::Node(cmd) => return super::admit_admin::node(cmd),
        AdmitCommand::Ring(RingCommand::Rotate { keyserver }) => {
            let made: proto::AdmitKeyMade =
                keyserver.call_for(&CtlRequest::AdmitRingRotate(proto::AdmitRingRotate {}))?;
            outln!("Ring key {} installed; nodes switch to it at their next fetch", made.id)?;
            return Ok(());
        }
        AdmitCommand::Group(GroupCommand::KeyGen { keyserver, name }) => {
            let req = CtlRequest::AdmitGroupKeyGen(proto::AdmitGroupKeyGen { name: Some(name.clone()) });
            let made: proto::AdmitKeyMade = keyserver.call_for(&req)?;
            outln!("Service-group key {} made", made.id)?;
            return Ok(());
        }
    };
    match cmd {
        TokenCommand::Create { keyserver, node, groups, ttl, from } => {
            let req = CtlRequest::AdmitTokenCreate(proto::AdmitTokenCreate {
                node: Some(node.clone()),
                groups: groups.clone(),
                ttl_secs: ttl,
                from: from.clone(),
            });
            let created: proto::AdmitTokenCreated = keyserver.call_for(&req)?;
            let groups = list_or_none(&groups, ",");
            outln!(
                "Token {} for node {node} (groups: {groups}; from: {}), claimable until {}",
                created.id,
                from.as_deref().unwrap_or("anywhere"),
                rfc3339(created.expires_at)
            )?;
            outln!("{}", created.join)?;
        }
        TokenCommand::List { keyserver } => {
            let list: proto::AdmitTokens =
                keyserver.call_for(&CtlRequest::AdmitTokenList(proto::AdmitTokenList {}))?;
            outln!(
                "{:<8}  {:<20}  {:<8}  {:>8}  {:<20}  {:<18}  GROUPS",
                "ID",
                "NODE",
                "STATUS",
                "FAILURES",
                "EXPIRES",
                "FROM"
            )?;
            for t in list.tokens {
                outln!(
                    "{:<8}  {:<20}  {:<8}  {:>8}  {:<20}  {:<18}  {}",
                    t.id,
                    t.node,
                    t.status,
                    t.failures,
                    rfc3339(t.expires_at),
                    t.from.as_deref().unwrap_or("-"),
                    if t.groups.is_empty() { "-".to_string() } else { t.groups.join(",") }
                )?;
            }
        }
        TokenCommand::Revoke { keyserver, id } => {
            let req =
                CtlRequest::AdmitTokenRevoke(proto::AdmitTokenRevoke { id: Some(id.trim().to_string()) });
            let _: proto::NetOk = keyserver.call_for(&req)?;
            outln!("Token {} revoked", id.trim().to_uppercase())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_and_addresses() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("3600"), Ok(3600));
        assert!(parse_ttl("1w").is_err() && parse_ttl("h").is_err() && parse_ttl("").is_err());
        assert_eq!(keyserver_addr("10.0.0.1"), "10.0.0.1:9637");
        assert_eq!(keyserver_addr("10.0.0.1:1234"), "10.0.0.1:1234");
        assert_eq!(keyserver_addr("10.0.0.1:9632"), "10.0.0.1:9632");
        assert_eq!(keyserver_addr("::1"), "[::1]:9637");
    }
}
