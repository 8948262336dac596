//! An admitted node's requests to its keyserver (`warren admit renew|fetch`, and the
//! supervisor's renew/fetch loop): renew the CGC, fetch every key and config file the policy
//! gives the node, and write them atomically where the supervisor reads them. Blocking; the
//! supervisor runs these on a blocking thread.

use crate::clock::unix_now;
use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::admit_join::{recv, send};
use crate::admission::policy_files::{RESERVED, valid_name};
use crate::admission::request::{Op, RequestBody, ResponseBody};
use crate::admission::wire::{Descriptor, Kind};
use crate::admission::{Cgc, Pin};
use crate::crypto::keys::{BoxSecretKeyFile, KeyFile, KeyId, KeyKind, SigPublicKey, SigSecretKey};
use crate::crypto::{KeyCache, sodium};
use crate::fsutil::{self, Existing};

const TIMEOUT: Duration = Duration::from_secs(15);
pub const ADMISSION_DIR: &str = "admission";
pub const KEYSERVER_FILE: &str = "keyserver.json";
pub const CGC_FILE: &str = "cgc";
pub const PEERS_FILE: &str = "peers";

/// Which keyserver admitted this node, stored at admission so that later requests (and a
/// restarted supervisor) need no flag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyserverInfo {
    /// Its join port, HOST:PORT.
    pub join: String,
    /// Its admission SIG key (NAME-REV); the public key is in the node's key cache.
    pub admission: String,
}

pub fn admission_dir(data_path: &Path) -> PathBuf {
    data_path.join(ADMISSION_DIR)
}

pub fn save_info(data_path: &Path, info: &KeyserverInfo) -> anyhow::Result<()> {
    let path = admission_dir(data_path).join(KEYSERVER_FILE);
    let text = serde_json::to_vec_pretty(info).expect("serialises");
    fsutil::write_atomic(&path, &text, 0o644, Existing::Replace).with_context(|| path.display().to_string())
}

/// The stored keyserver, `None` when this node was never admitted.
pub fn load_info(data_path: &Path) -> anyhow::Result<Option<KeyserverInfo>> {
    let path = admission_dir(data_path).join(KEYSERVER_FILE);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| path.display().to_string())?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

/// What an admitted node has on disk: its CGC and the keys to sign and open with.
pub struct NodeIdentity {
    pub info: KeyserverInfo,
    pub admission: SigPublicKey,
    pub cgc_text: String,
    pub cgc: Cgc,
    sig: SigSecretKey,
    boxk: BoxSecretKeyFile,
}

impl NodeIdentity {
    pub fn load(data_path: &Path, cache: &KeyCache) -> anyhow::Result<NodeIdentity> {
        let info =
            load_info(data_path)?.context("this node was not admitted (no admission/keyserver.json)")?;
        let aid: KeyId = info.admission.parse().context("admission key id")?;
        let admission = SigPublicKey::try_from(&cache.get(KeyKind::SigPublic, &aid)?)?;
        let path = admission_dir(data_path).join(CGC_FILE);
        let cgc_text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        let cgc = Cgc::verify(&cgc_text, &admission).with_context(|| path.display().to_string())?;
        let sig = SigSecretKey::try_from(&cache.get(KeyKind::SigSecret, &cgc.node_sig.id)?)?;
        let boxk = BoxSecretKeyFile::try_from(&cache.get(KeyKind::BoxSecret, &cgc.node_box.id)?)?;
        Ok(NodeIdentity { info, admission, cgc_text, cgc, sig, boxk })
    }

    /// One request: descriptor (checked against the admission key), sealed signed request,
    /// sealed signed response.
    pub fn request(&self, op: Op, gossip: Option<String>, have: Vec<String>) -> anyhow::Result<ResponseBody> {
        let addr = &self.info.join;
        let target = addr.to_socket_addrs().with_context(|| format!("keyserver {addr}"))?.next();
        let target = target.with_context(|| format!("keyserver {addr}: the name has no address"))?;
        let mut s =
            TcpStream::connect_timeout(&target, TIMEOUT).with_context(|| format!("keyserver {addr}"))?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        send(&mut s, Kind::DescriptorRequest, &[])?;
        let (kind, body) = recv(&mut s)?;
        if kind != Kind::Descriptor {
            bail!("keyserver {addr}: expected its descriptor, got {kind:?}");
        }
        let pin = Pin::of(&self.admission.key);
        let d = Descriptor::verify(&body, &pin, unix_now()).with_context(|| format!("keyserver {addr}"))?;
        let nonce = hex::encode(sodium::random_array::<24>());
        let req = RequestBody {
            op,
            cgc: self.cgc_text.clone(),
            time: unix_now(),
            nonce: nonce.clone(),
            gossip,
            have,
        };
        send(&mut s, Kind::Request, &req.seal(&self.sig, &d.transport))?;
        let (kind, body) = recv(&mut s)?;
        match kind {
            Kind::Response => {
                ResponseBody::open(&body, &self.boxk.public().key, &self.boxk.key, &self.admission, &nonce)
                    .with_context(|| format!("keyserver {addr}"))
            }
            Kind::Error => {
                let msg: String = String::from_utf8_lossy(&body).chars().take(500).collect();
                bail!("keyserver {addr} refused: {msg}")
            }
            other => bail!("keyserver {addr}: unexpected reply {other:?}"),
        }
    }
}

/// The ring key revisions of `ring` in the cache (the `have` list).
pub fn ring_have(cache: &KeyCache, ring: &str) -> Vec<String> {
    cache.revisions(KeyKind::SymSecret, ring).unwrap_or_default().iter().map(|i| i.to_string()).collect()
}

/// Marks the keyserver's primary ring key revision in the cache, so the supervisor seals with
/// it (and not merely with the newest it was sent) once installed. A primary that was not
/// delivered is ignored.
pub fn mark_primary(cache: &KeyCache, primary: Option<&str>, delivered: &[KeyId]) -> anyhow::Result<()> {
    let Some(id) = primary.and_then(|p| p.parse::<KeyId>().ok()).filter(|p| delivered.contains(p)) else {
        return Ok(());
    };
    crate::sup::keywatch::mark_primary(cache, &id)
        .with_context(|| format!("marking ring key {id} primary"))?;
    Ok(())
}

/// What [`apply`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub ring_added: Vec<String>,
    pub ring_removed: Vec<String>,
    pub group_keys: usize,
    pub ctl_secret: bool,
    pub renewed: Option<String>,
}

/// Writes a response: keys into the cache (0400, atomic; present ones are left alone), ring
/// revisions the keyserver no longer holds removed (so a rotation after a revocation
/// completes), the ctl secret, config files and a renewed CGC atomically.
pub fn apply(
    resp: &ResponseBody,
    data_path: &Path,
    cache: &KeyCache,
    id: &NodeIdentity,
) -> anyhow::Result<Applied> {
    let mut out = Applied::default();
    let mut delivered = Vec::new();
    let mut ring_name = None;
    for text in &resp.ring_keys {
        let key = KeyFile::parse(text.as_bytes()).context("a delivered ring key")?;
        if key.kind != KeyKind::SymSecret {
            bail!("the keyserver delivered a {} as a ring key", key.kind.describe());
        }
        let had = cache.get(KeyKind::SymSecret, &key.id).is_ok();
        cache.write(&key)?;
        if !had {
            out.ring_added.push(key.id.to_string());
        }
        ring_name = Some(key.id.name.clone());
        delivered.push(key.id.clone());
    }
    // Marked before old revisions go, so the watcher never falls back to a revision of its own.
    mark_primary(cache, resp.primary.as_deref(), &delivered)?;
    if let Some(ring) = ring_name {
        for id in cache.revisions(KeyKind::SymSecret, &ring).unwrap_or_default() {
            if !delivered.contains(&id) {
                cache.remove(KeyKind::SymSecret, &id)?;
                out.ring_removed.push(id.to_string());
            }
        }
    }
    for text in &resp.group_keys {
        let key = KeyFile::parse(text.as_bytes()).context("a delivered service-group key")?;
        if !matches!(key.kind, KeyKind::BoxSecret | KeyKind::BoxPublic) || !key.id.name.contains('.') {
            bail!("the keyserver delivered {} as a service-group key", key.id);
        }
        cache.write(&key)?;
        out.group_keys += 1;
    }
    if let Some(secret) = &resp.ctl_secret {
        let path = data_path.join(crate::ctl::secret::CTL_SECRET_FILE);
        let same = crate::ctl::secret::read_file(&path).ok().flatten().is_some_and(|s| s.matches(secret));
        if !same {
            fsutil::write_atomic(&path, secret.as_bytes(), 0o400, Existing::Replace)
                .with_context(|| path.display().to_string())?;
            out.ctl_secret = true;
        }
    }
    let dir = admission_dir(data_path);
    write_files(&dir, &resp.files)?;
    if let Some(text) = &resp.cgc {
        let cgc = Cgc::verify(text, &id.admission).context("the renewed CGC")?;
        if cgc.node_sig != id.cgc.node_sig || cgc.node_box != id.cgc.node_box || cgc.node != id.cgc.node {
            bail!("the renewed CGC is not for this node's keys");
        }
        let path = dir.join(CGC_FILE);
        fsutil::write_atomic(&path, text.as_bytes(), 0o644, Existing::Replace)
            .with_context(|| path.display().to_string())?;
        out.renewed = Some(cgc.serial_hex());
    }
    Ok(out)
}

/// Writes the config files a response carries (atomically, only when changed) and, for a key
/// fetch's answer (the only one with `peers`, which the keyserver always sends then), removes
/// the files it no longer sends. The node's own files ([`RESERVED`]) and anything with a name
/// the keyserver could not send (temporary files) are left alone.
fn write_files(dir: &Path, files: &BTreeMap<String, String>) -> anyhow::Result<()> {
    for (name, text) in files {
        if !valid_name(name) || (RESERVED.contains(&name.as_str()) && name != PEERS_FILE) {
            tracing::warn!(name = %name.escape_debug(), "ignoring a config file the keyserver sent: not a plain name");
            continue;
        }
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(text.as_bytes()) {
            fsutil::write_atomic(&path, text.as_bytes(), 0o644, Existing::Replace)
                .with_context(|| path.display().to_string())?;
        }
    }
    if !files.contains_key(PEERS_FILE) {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())?.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && valid_name(&name) && !RESERVED.contains(&name.as_str()) && !files.contains_key(&name) {
            std::fs::remove_file(entry.path()).with_context(|| entry.path().display().to_string())?;
        }
    }
    Ok(())
}

/// The peers the keyserver listed for this node (gossip addresses).
pub fn peers(data_path: &Path) -> Vec<String> {
    std::fs::read_to_string(admission_dir(data_path).join(PEERS_FILE))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `warren admit renew` / `admit fetch`: one request, applied.
pub fn run_once(
    op: Op,
    data_path: &Path,
    cache: &KeyCache,
    gossip: Option<String>,
) -> anyhow::Result<Applied> {
    let id = NodeIdentity::load(data_path, cache)?;
    // The keyserver's cluster is its ring's name.
    let have = ring_have(cache, &id.cgc.cluster);
    let resp = id.request(op, gossip, have)?;
    apply(&resp, data_path, cache, &id)
}
