//! `warren admit join`: the node's side of the join protocol (`crate::admission::wire`).

use crate::clock::unix_now;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::admit::list_or_none;
use super::keyserver::DEFAULT_JOIN_PORT;
use crate::admission::keyserver::Claim;
use crate::admission::wire::{self, ClaimBody, ClaimedBody, Descriptor, Kind};
use crate::admission::{Cgc, JoinString, base32, validate_plain_name};
use crate::crypto::keys::{BoxSecretKeyFile, KeyFile, KeyKind, SigSecretKey};
use crate::crypto::{CryptoError, KeyCache, sodium};
use crate::fsutil::{self, Existing};

const TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn join_addr(given: &str) -> String {
    let with_ctl = crate::ctl::client::remote_addr(given);
    let suffix = format!(":{}", crate::ctl::client::DEFAULT_PORT);
    match with_ctl.strip_suffix(&suffix) {
        Some(host) if !given.trim().ends_with(&suffix) => format!("{host}:{DEFAULT_JOIN_PORT}"),
        _ => with_ctl,
    }
}

pub(super) fn send(s: &mut TcpStream, kind: Kind, body: &[u8]) -> anyhow::Result<()> {
    s.write_all(&wire::frame(kind, body)).context("sending to the keyserver")
}

pub(super) fn recv(s: &mut TcpStream) -> anyhow::Result<(Kind, Vec<u8>)> {
    let mut header = [0u8; wire::HEADER_LEN];
    s.read_exact(&mut header).context("reading the keyserver's reply")?;
    let (kind, len) = wire::parse_header(&header)?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).context("reading the keyserver's reply")?;
    Ok((kind, body))
}

/// The node's latest key pair of `kind` named `node`, made and stored first when it has none:
/// kept before the claim, so a retry after a lost reply presents the same keys.
fn node_key(cache: &KeyCache, kind: KeyKind, node: &str) -> anyhow::Result<KeyFile> {
    match cache.latest(kind, node) {
        Ok(k) => return Ok(k),
        Err(CryptoError::KeyNotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let files = match kind {
        KeyKind::SigSecret => {
            let (p, s) = SigSecretKey::generate(node)?;
            [s.to_file(), p.to_file()]
        }
        _ => {
            let (p, s) = BoxSecretKeyFile::generate(node)?;
            [s.to_file(), p.to_file()]
        }
    };
    for f in &files {
        cache.write(f)?;
    }
    Ok(cache.latest(kind, node)?)
}

/// `warren admit join`: admits, then says how to start the supervisor.
pub fn join(
    text: &str,
    node: &str,
    keyserver: &str,
    cache: &KeyCache,
    data_path: &Path,
) -> anyhow::Result<()> {
    let a = admit(text, node, keyserver, cache, data_path)?;
    outln!("{}", a.summary)?;
    if let Some(ring) = a.ring {
        outln!("Start the supervisor with: warren sup run --ring {ring}")?;
    }
    Ok(())
}

pub struct Admitted {
    pub summary: String,
    /// The ring the delivered keys are for.
    pub ring: Option<String>,
}

/// The join protocol, shared by `admit join` and `sup run --join`.
pub fn admit(
    text: &str,
    node: &str,
    keyserver: &str,
    cache: &KeyCache,
    data_path: &Path,
) -> anyhow::Result<Admitted> {
    let j = JoinString::parse(text).context("the join string")?;
    validate_plain_name("node name", node)?;
    let sig = SigSecretKey::try_from(&node_key(cache, KeyKind::SigSecret, node)?)?;
    // Its own name: a SIG and a BOX public key of one name and second would both be NAME-REV.pub.
    let boxk = BoxSecretKeyFile::try_from(&node_key(cache, KeyKind::BoxSecret, &format!("{node}-box"))?)?;

    let addr = join_addr(keyserver);
    let target = addr.to_socket_addrs().with_context(|| format!("keyserver {addr}"))?.next();
    let target = target.with_context(|| format!("keyserver {addr}: the name has no address"))?;
    let mut s = TcpStream::connect_timeout(&target, TIMEOUT).with_context(|| format!("keyserver {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;

    send(&mut s, Kind::DescriptorRequest, &[])?;
    let (kind, body) = recv(&mut s)?;
    if kind != Kind::Descriptor {
        bail!("keyserver {addr}: expected its descriptor, got {kind:?}");
    }
    let d = Descriptor::verify(&body, &j.pin, unix_now()).with_context(|| format!("keyserver {addr}"))?;

    let nonce = hex::encode(sodium::random_array::<24>());
    let digest = Claim::pop_digest(&j.id, node, &sig.public(), &boxk.public(), &j.pin);
    let claim = ClaimBody {
        token: j.id.to_string(),
        secret: base32::encode(&j.secret[..]),
        node: node.to_string(),
        node_sig: wire::key_text(&sig.id, &sig.public().key),
        node_box: wire::key_text(&boxk.id, &boxk.public().key),
        pop: B64.encode(sodium::sign_detached(&digest, &sig.key)),
        nonce: nonce.clone(),
    };
    send(&mut s, Kind::Claim, &claim.seal(&d.transport))?;
    drop(claim);
    let (kind, body) = recv(&mut s)?;
    let reply = match kind {
        Kind::Claimed => ClaimedBody::open(&body, &boxk.public().key, &boxk.key, &d.admission, &nonce)
            .with_context(|| format!("keyserver {addr}"))?,
        Kind::Error => {
            let msg: String = String::from_utf8_lossy(&body).chars().take(500).collect();
            bail!("keyserver {addr} refused the claim: {msg}");
        }
        other => bail!("keyserver {addr}: unexpected reply {other:?}"),
    };
    let cgc = Cgc::verify(&reply.cgc, &d.admission).context("the delivered CGC")?;
    if cgc.node_sig != sig.public() || cgc.node_box != boxk.public() || cgc.node != node {
        bail!("keyserver {addr}: the CGC is not for this node's keys");
    }

    // Keys first (each file atomic; the cache never overwrites a key), then the CGC, whose
    // presence says the admission is complete.
    cache.write(&d.admission.to_file())?;
    let mut rings = Vec::new();
    for text in &reply.ring_keys {
        let key = KeyFile::parse(text.as_bytes()).context("a delivered ring key")?;
        if key.kind != KeyKind::SymSecret {
            bail!("keyserver {addr} delivered a {} as a ring key", key.kind.describe());
        }
        cache.write(&key)?;
        rings.push(key.id.to_string());
    }
    let delivered: Vec<_> = rings.iter().filter_map(|r| r.parse().ok()).collect();
    super::admit_node::mark_primary(cache, reply.primary.as_deref(), &delivered)?;
    let dir = data_path.join("admission");
    fsutil::create_private_dir(&dir).with_context(|| dir.display().to_string())?;
    let info = super::admit_node::KeyserverInfo { join: addr.clone(), admission: d.admission.id.to_string() };
    super::admit_node::save_info(data_path, &info)?;
    let path = dir.join(super::admit_node::CGC_FILE);
    fsutil::write_atomic(&path, reply.cgc.as_bytes(), 0o644, Existing::Replace)
        .with_context(|| path.display().to_string())?;
    let ring = rings.first().and_then(|r| r.rsplit_once('-')).map(|(n, _)| n.to_string());
    let summary = format!(
        "Admitted {node} to {} (CGC {}, groups: {}, valid until {}); ring keys: {}",
        cgc.cluster,
        cgc.serial_hex(),
        list_or_none(&cgc.groups, ","),
        cgc.not_after,
        list_or_none(&rings, ", ")
    );
    Ok(Admitted { summary, ring })
}

#[cfg(test)]
mod tests {
    #[test]
    fn join_port_by_default() {
        assert_eq!(super::join_addr("10.0.0.1"), "10.0.0.1:9636");
        assert_eq!(super::join_addr("10.0.0.1:77"), "10.0.0.1:77");
    }
}
