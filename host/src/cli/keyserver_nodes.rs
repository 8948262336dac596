//! The keyserver's side of node requests after admission (`renew`, `keys`) and the admin
//! commands about nodes and keys (`admit node list|revoke`, `admit ring rotate`, `admit group
//! key-gen`). Decisions are the state machine's ([`crate::admission::keyserver::nodes`]); this
//! file reads the key cache, commits the state before replying, and seals the answer.

use std::net::IpAddr;

use super::{CANNOT_WRITE, KeyserverCtl, admit_err, commit_durably, net_err, unix_now};
use crate::admission::keyserver::nodes::ADMIN_GROUP;
use crate::admission::keyserver::{Keyserver, OsRng};
use crate::admission::request::{Op, RequestBody, ResponseBody};
use crate::admission::wire;
use crate::crypto::keys::{BoxSecretKeyFile, KeyId, KeyKind, RingKey};
use crate::ctl::proto::{self, ErrCode, NetErr};

/// Where the cluster's ctl secret (given to `admin` nodes) lives in the keyserver's folder.
pub const CLUSTER_CTL_SECRET_FILE: &str = "CTL_SECRET";

/// Whether service-group key `name` (SERVICE.GROUP[@ORG]) goes to a node in `groups`.
pub fn group_key_allowed(name: &str, groups: &[String]) -> bool {
    let without_org = name.split('@').next().unwrap_or(name);
    let service = without_org.split('.').next().unwrap_or(without_org);
    name.contains('.') && groups.iter().any(|g| g == service || g == without_org)
}

impl KeyserverCtl {
    fn ring_ids(&self) -> Vec<KeyId> {
        self.keys.revisions(KeyKind::SymSecret, &self.ring).unwrap_or_default()
    }

    pub(super) fn ring_texts(&self) -> Vec<String> {
        self.ring_ids()
            .iter()
            .filter_map(|id| self.keys.get(KeyKind::SymSecret, id).ok())
            .map(|k| k.to_text().to_string())
            .collect()
    }

    /// The ring key revision to mark primary, as the state machine decides from what the
    /// nodes hold (call under the lock, before the commit: it may start a retirement's clock).
    pub(super) fn ring_primary(&self, ks: &mut Keyserver<OsRng>, now: u64) -> Option<String> {
        let ids: Vec<String> = self.ring_ids().iter().map(|i| i.to_string()).collect();
        ks.ring_primary(now, &ids)
    }

    /// A request from an admitted node: the reply frame.
    pub(super) fn request(&self, sealed: &[u8], peer: IpAddr) -> Vec<u8> {
        let error = |msg: String| wire::frame(wire::Kind::Error, msg.as_bytes());
        let tpub = self.transport.public().key;
        let (body, signed) = match RequestBody::open(sealed, &tpub, &self.transport.key) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "join port: undecodable request");
                return error(format!("refused: {e}"));
            }
        };
        let now = unix_now();
        let mut ks = self.ks.lock().unwrap_or_else(|p| p.into_inner());
        let result = ks.authorize(now, &body, &signed, Some(peer)).map(|a| {
            let cgc = (body.op == Op::Renew).then(|| ks.renew(now, &a));
            let (primary, retired) = if body.op == Op::Keys {
                (self.ring_primary(&mut ks, now), ks.take_retired(now))
            } else {
                (None, Vec::new())
            };
            let peers = ks.peers_of(&a.cgc.node);
            (a, cgc, primary, retired, peers)
        });
        // Old ring keys leave the keyserver's cache before the state says they are gone.
        if let Ok((_, _, _, retired, _)) = &result {
            for id in retired {
                let removed = id.parse::<KeyId>().and_then(|id| self.keys.remove(KeyKind::SymSecret, &id));
                if let Err(e) = removed {
                    tracing::warn!(key = %id, error = %e, "cannot remove a retired ring key");
                }
            }
        }
        // The reply's keys are read under the lock: a revocation landing during the fsync
        // below would otherwise hand the node it revokes the keys that replace its own.
        let reply = result.map(|(a, cgc, primary, _, peers)| {
            let mut resp = ResponseBody::default();
            resp.nonce = body.nonce.clone();
            resp.cgc = cgc;
            if body.op == Op::Keys {
                resp.ring_keys = self.ring_texts();
                resp.primary = primary;
                resp.group_keys = self.group_keys(&a.groups);
                if a.groups.iter().any(|g| g == ADMIN_GROUP) {
                    resp.ctl_secret = self.cluster_ctl_secret();
                }
                let mut list = peers.join("\n");
                if !list.is_empty() {
                    list.push('\n');
                }
                resp.files = super::files::policy_files(&self.data_path, &a.groups);
                resp.files.insert("peers".into(), list);
            }
            (a, resp)
        });
        if commit_durably(&self.store, ks).is_err() {
            return error(CANNOT_WRITE.into());
        }
        let (a, resp) = match reply {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%peer, "node request refused: {e}");
                return error(e.to_string());
            }
        };
        tracing::info!(node = %a.cgc.node, %peer, op = ?body.op, "node request served");
        wire::frame(wire::Kind::Response, &resp.seal(&self.admission, &a.cgc.node_box))
    }

    /// Secret and public texts of every service-group key the policy gives `groups`.
    fn group_keys(&self, groups: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for kind in [KeyKind::BoxSecret, KeyKind::BoxPublic] {
            for id in self.keys.list(kind).unwrap_or_default() {
                if group_key_allowed(&id.name, groups)
                    && let Ok(k) = self.keys.get(kind, &id)
                {
                    out.push(k.to_text().to_string());
                }
            }
        }
        out
    }

    fn cluster_ctl_secret(&self) -> Option<String> {
        let path = self.data_path.join(CLUSTER_CTL_SECRET_FILE);
        match crate::ctl::secret::read_or_create_file(&path) {
            Ok(s) => Some(s.expose().to_string()),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the cluster ctl secret");
                None
            }
        }
    }

    /// A new ring key revision in the keyserver's cache (the latest is the primary).
    fn new_ring_key(&self) -> Result<String, NetErr> {
        let key = fresh_revision(&self.ring_ids(), || {
            let k = RingKey::generate(&self.ring)?;
            Ok((k.id.clone(), k))
        })?;
        self.keys.write(&key.to_file()).map_err(|e| net_err(ErrCode::Io, e))?;
        Ok(key.id.to_string())
    }

    /// A new revision of service-group key `name` (SERVICE.GROUP[@ORG]); returns its id.
    fn new_group_key(&self, name: &str) -> Result<String, NetErr> {
        let existing = self.keys.revisions(KeyKind::BoxSecret, name).unwrap_or_default();
        let (p, s) = fresh_revision(&existing, || {
            let (p, s) = BoxSecretKeyFile::generate(name)?;
            Ok((s.id.clone(), (p, s)))
        })?;
        for f in [s.to_file(), p.to_file()] {
            self.keys.write(&f).map_err(|e| net_err(ErrCode::Io, e))?;
        }
        Ok(p.id.to_string())
    }

    /// After a revocation: new revisions of the service-group keys policy gave a node in
    /// `groups`, and a new cluster ctl secret if it was in the admin group. Returns what was
    /// replaced (key ids, "ctl secret").
    fn rotate_shared_keys(&self, groups: &[String]) -> Result<Vec<String>, NetErr> {
        let names: std::collections::BTreeSet<String> = self
            .keys
            .list(KeyKind::BoxSecret)
            .unwrap_or_default()
            .into_iter()
            .map(|id| id.name)
            .filter(|name| group_key_allowed(name, groups))
            .collect();
        let mut rotated = Vec::new();
        for name in names {
            rotated.push(self.new_group_key(&name)?);
        }
        if groups.iter().any(|g| g == ADMIN_GROUP) {
            let path = self.data_path.join(CLUSTER_CTL_SECRET_FILE);
            let secret = crate::ctl::secret::generate();
            crate::fsutil::write_atomic(&path, secret.as_bytes(), 0o600, crate::fsutil::Existing::Replace)
                .map_err(|e| net_err(ErrCode::Io, format!("{}: {e}", path.display())))?;
            rotated.push("ctl secret".to_string());
        }
        Ok(rotated)
    }

    pub(super) fn handle_nodes(
        &self,
        req: crate::ctl::CtlRequest,
        now: u64,
    ) -> Result<crate::ctl::Reply, NetErr> {
        use crate::ctl::{CtlRequest, Reply};
        let mut ks = self.ks.lock().unwrap_or_else(|p| p.into_inner());
        // A refusal half-way (a revoked node whose new ring key cannot be made) undoes it all.
        let result = (|| -> Result<Reply, NetErr> {
            Ok(match req {
                CtlRequest::AdmitNodeList(_) => {
                    let nodes = ks
                        .nodes()
                        .into_iter()
                        .map(|n| proto::AdmitNodeInfo {
                            node: n.node,
                            groups: n.groups,
                            serial: n.serial,
                            not_after: n.not_after,
                            revoked: n.revoked,
                            seen: n.seen,
                            gossip: n.gossip,
                        })
                        .collect();
                    return Ok(Reply::new(&proto::AdmitNodes { nodes }));
                }
                CtlRequest::AdmitNodeRevoke(r) => {
                    let node = r.node.unwrap_or_default();
                    let groups = ks.state().nodes.get(&node).map(|n| n.groups.clone()).unwrap_or_default();
                    let fresh = ks.revoke_node(now, &node).map_err(admit_err)?;
                    // The ring key is shared: the revoked node held it, so it is replaced, and the
                    // old revisions go once every remaining node has the new one. So are the
                    // other shared keys it held; their members get them at their next fetch.
                    let (id, rotated) = if fresh {
                        let old: Vec<String> = self.ring_ids().iter().map(|i| i.to_string()).collect();
                        let id = self.new_ring_key()?;
                        ks.start_retiring(now, old, id.clone());
                        let rotated = self.rotate_shared_keys(&groups)?;
                        ks.keys_rotated(now, &node, &rotated);
                        (id, rotated)
                    } else {
                        (self.ring_ids().last().map(|i| i.to_string()).unwrap_or_default(), Vec::new())
                    };
                    tracing::info!(%node, new_ring_key = %id, rotated = %rotated.join(","), "node revoked");
                    Reply::new(&proto::AdmitKeyMade { id, rotated })
                }
                CtlRequest::AdmitRingRotate(_) => {
                    let id = self.new_ring_key()?;
                    tracing::info!(key = %id, "ring key rotated");
                    Reply::new(&proto::AdmitKeyMade { id, rotated: Vec::new() })
                }
                CtlRequest::AdmitGroupKeyGen(r) => {
                    let name = r.name.unwrap_or_default();
                    crate::crypto::keys::validate_name(&name)
                        .map_err(|e| net_err(ErrCode::InvalidPayload, e))?;
                    if !name.contains('.') {
                        return Err(net_err(
                            ErrCode::InvalidPayload,
                            format!("{name:?} is not SERVICE.GROUP[@ORG]"),
                        ));
                    }
                    let id = self.new_group_key(&name)?;
                    tracing::info!(key = %id, "service-group key made");
                    Reply::new(&proto::AdmitKeyMade { id, rotated: Vec::new() })
                }
                other => {
                    return Err(net_err(
                        ErrCode::NotSupported,
                        format!("{} is not served here", other.name()),
                    ));
                }
            })
        })();
        let reply = match result {
            Ok(r) => r,
            Err(e) => {
                ks.undo();
                return Err(e);
            }
        };
        if commit_durably(&self.store, ks).is_err() {
            return Err(net_err(ErrCode::Io, CANNOT_WRITE));
        }
        Ok(reply)
    }
}

/// A key from `make` whose revision is not in `existing`. Revisions are per second: when one
/// was made this second already, the next second's is waited for (at most about a second).
fn fresh_revision<T>(
    existing: &[KeyId],
    make: impl Fn() -> Result<(KeyId, T), crate::crypto::CryptoError>,
) -> Result<T, NetErr> {
    loop {
        let (id, key) = make().map_err(|e| net_err(ErrCode::Io, e))?;
        if !existing.contains(&id) {
            return Ok(key);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn group_keys_follow_the_admission_groups() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(super::group_key_allowed("redis.default@acme", &g(&["redis"])));
        assert!(super::group_key_allowed("redis.default", &g(&["redis.default"])));
        assert!(!super::group_key_allowed("redis.default", &g(&["web", "admin"])));
        assert!(!super::group_key_allowed("redis", &g(&["redis"])), "not a service-group key");
    }
}
