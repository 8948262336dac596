//! Admitted nodes in the keyserver's state machine: their records, and the checks every
//! request after admission passes (`renew`, `keys`): a CGC this keyserver signed, a request
//! signed by the node key it names, a time within [`CLOCK_WINDOW`], a nonce not seen in that
//! window, a node not revoked and a CGC serial that is still current. Policy is decided here at
//! each request; the CGC grants nothing by itself.

use serde::{Deserialize, Serialize};

use super::{AdmitError, Keyserver, Rng};
use crate::admission::cgc::Cgc;
use crate::admission::request::RequestBody;
use crate::crypto::keys::SigPublicKey;

/// How far a request's time may be from the keyserver's clock, either way (seconds).
pub const CLOCK_WINDOW: u64 = 300;
/// The group whose nodes get the cluster's ctl secret.
pub const ADMIN_GROUP: &str = "admin";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// The serial in use (hex).
    pub serial: String,
    /// A renewed serial not yet used: the old one stays valid until the node presents it, so
    /// a lost renew reply never strands a node (SPIRE's two-serial activation).
    #[serde(default)]
    pub pending: Option<String>,
    pub groups: Vec<String>,
    /// The node's SIG key (`NAME-REV base64`).
    pub node_sig: String,
    pub not_after: u64,
    pub token: String,
    #[serde(default)]
    pub revoked: Option<u64>,
    /// Its gossip address as it last reported it.
    #[serde(default)]
    pub gossip: Option<String>,
    /// Unix seconds of its last accepted request.
    #[serde(default)]
    pub seen: Option<u64>,
    /// The ring key revisions it last reported holding.
    #[serde(default)]
    pub have: Vec<String>,
    /// Unix seconds of its last key fetch (whose reply marked the primary).
    #[serde(default)]
    pub fetched: Option<u64>,
}

/// Old ring key revisions (`ids`) that go away once every node that is not revoked reports
/// holding `until`: install, use, then remove, so no live node is cut off on the way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retiring {
    pub ids: Vec<String>,
    pub until: String,
    /// When `until` (or a newer revision) became the primary: the old revisions go once every
    /// live node fetched after that, i.e. uses the new one.
    #[serde(default)]
    pub used: Option<u64>,
}

impl NodeRecord {
    pub fn admitted(cgc: &Cgc, token: String) -> NodeRecord {
        NodeRecord {
            serial: cgc.serial_hex(),
            pending: None,
            groups: cgc.groups.clone(),
            node_sig: crate::admission::wire::key_text(&cgc.node_sig.id, &cgc.node_sig.key),
            not_after: cgc.not_after,
            token,
            revoked: None,
            gossip: None,
            seen: None,
            have: Vec::new(),
            fetched: None,
        }
    }
}

/// A request that passed every check.
#[derive(Clone, Debug)]
pub struct Authorized {
    pub cgc: Cgc,
    pub groups: Vec<String>,
}

/// What `node list` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub node: String,
    pub groups: Vec<String>,
    pub serial: String,
    pub not_after: u64,
    pub revoked: bool,
    pub seen: Option<u64>,
    pub gossip: Option<String>,
}

impl<R: Rng> Keyserver<R> {
    /// Checks a request opened by the transport (`signed` is its signed form) and records its
    /// nonce. Refusals are audited.
    pub fn authorize(
        &mut self,
        now: u64,
        req: &RequestBody,
        signed: &[u8],
        peer: Option<std::net::IpAddr>,
    ) -> Result<Authorized, AdmitError> {
        let r = self.authorize_inner(now, req, signed);
        if let Err(e) = &r {
            let node = Cgc::verify(&req.cgc, &self.admission.public()).ok().map(|c| c.node);
            self.log(now, "request_refused", None, node.as_deref(), peer, Some(e.to_string()));
        }
        r
    }

    fn authorize_inner(
        &mut self,
        now: u64,
        req: &RequestBody,
        signed: &[u8],
    ) -> Result<Authorized, AdmitError> {
        let cgc =
            Cgc::verify(&req.cgc, &self.admission.public()).map_err(|e| AdmitError::BadCgc(e.to_string()))?;
        cgc.check_time(now).map_err(|e| AdmitError::BadCgc(e.to_string()))?;
        // A CGC anyone may have copied: only the node key it names can sign for it.
        if !RequestBody::verify_signature(signed, &cgc.node_sig) {
            return Err(AdmitError::BadRequestSignature);
        }
        let skew = now.abs_diff(req.time);
        if skew > CLOCK_WINDOW {
            return Err(AdmitError::ClockSkew { skew });
        }
        let rec = self.state.nodes.get(&cgc.node).ok_or_else(|| AdmitError::UnknownNode(cgc.node.clone()))?;
        if rec.revoked.is_some() {
            return Err(AdmitError::NodeRevoked(cgc.node.clone()));
        }
        let serial = cgc.serial_hex();
        let current = rec.serial == serial;
        let pending = rec.pending.as_deref() == Some(serial.as_str());
        if !current && !pending {
            return Err(AdmitError::StaleCgc(cgc.node.clone()));
        }
        if !same_key(&rec.node_sig, &cgc.node_sig) {
            return Err(AdmitError::StaleCgc(cgc.node.clone()));
        }
        self.expire_nonces(now);
        // A nonce still here may be older than the window (pruning runs once a second); its
        // request was refused by the clock check above already.
        if self.state.nonces.contains_key(&req.nonce) {
            return Err(AdmitError::Replay);
        }
        self.touched.nonce(&req.nonce);
        self.state.nonces.insert(req.nonce.clone(), req.time);
        self.touched.node(&self.state, &cgc.node);
        let rec = self.state.nodes.get_mut(&cgc.node).expect("checked above");
        if pending {
            rec.serial = serial;
            rec.pending = None;
        }
        rec.seen = Some(now);
        if let Some(g) = &req.gossip {
            rec.gossip = Some(g.clone());
        }
        if req.op == crate::admission::request::Op::Keys {
            rec.have = req.have.clone();
            rec.fetched = Some(now);
        }
        let groups = rec.groups.clone();
        Ok(Authorized { cgc, groups })
    }

    /// Forgets nonces outside the clock window: their requests fail the clock check anyway,
    /// so the window bounds the map. Not a change worth persisting: a restart redoes it.
    pub fn expire_nonces(&mut self, now: u64) {
        if self.nonces_pruned == now {
            return;
        }
        self.nonces_pruned = now;
        self.state.nonces.retain(|_, t| now.abs_diff(*t) <= CLOCK_WINDOW);
    }

    /// A fresh CGC for an authorized node: same keys and groups, new serial and life. It is
    /// pending until the node uses it.
    pub fn renew(&mut self, now: u64, a: &Authorized) -> String {
        let mut serial = [0u8; 16];
        self.rng.fill(&mut serial);
        let cgc = Cgc {
            serial,
            issued: now,
            not_before: now,
            not_after: now.saturating_add(self.cgc_ttl),
            groups: a.groups.clone(),
            epoch: self.state.epoch,
            ..a.cgc.clone()
        };
        let text = cgc.sign(&self.admission);
        self.touched.node(&self.state, &cgc.node);
        if let Some(rec) = self.state.nodes.get_mut(&cgc.node) {
            rec.pending = Some(cgc.serial_hex());
            rec.not_after = cgc.not_after;
        }
        self.log(
            now,
            "cgc_renewed",
            None,
            Some(&cgc.node),
            None,
            Some(format!("serial={}", cgc.serial_hex())),
        );
        text
    }

    /// Gossip addresses of the other nodes that are not revoked (the `peers` config file).
    pub fn peers_of(&self, node: &str) -> Vec<String> {
        self.state
            .nodes
            .iter()
            .filter(|(n, r)| n.as_str() != node && r.revoked.is_none())
            .filter_map(|(_, r)| r.gossip.clone())
            .collect()
    }

    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.state
            .nodes
            .iter()
            .map(|(n, r)| NodeInfo {
                node: n.clone(),
                groups: r.groups.clone(),
                serial: r.serial.clone(),
                not_after: r.not_after,
                revoked: r.revoked.is_some(),
                seen: r.seen,
                gossip: r.gossip.clone(),
            })
            .collect()
    }

    /// Refuses every later request of `node`. Returns false when it was already revoked.
    pub fn revoke_node(&mut self, now: u64, node: &str) -> Result<bool, AdmitError> {
        self.touched.node(&self.state, node);
        let rec = self.state.nodes.get_mut(node).ok_or_else(|| AdmitError::UnknownNode(node.to_string()))?;
        if rec.revoked.is_some() {
            return Ok(false);
        }
        rec.revoked = Some(now);
        self.log(now, "node_revoked", None, Some(node), None, None);
        Ok(true)
    }
}

impl<R: Rng> Keyserver<R> {
    /// Audits the shared keys replaced because `node` was revoked (the shell makes them).
    pub fn keys_rotated(&mut self, now: u64, node: &str, keys: &[String]) {
        if !keys.is_empty() {
            self.log(now, "keys_rotated", None, Some(node), None, Some(keys.join(",")));
        }
    }

    /// After a revocation: `old` revisions leave once every live node holds `new`.
    pub fn start_retiring(&mut self, now: u64, old: Vec<String>, new: String) {
        let detail = format!("retire {} once every node has {new}", old.join(","));
        self.touched.retiring(&self.state);
        self.state.retiring = Some(Retiring { ids: old, until: new, used: None });
        self.log(now, "ring_key_retiring", None, None, None, Some(detail));
    }

    /// The ring key revision nodes should seal with, among `revisions` (oldest first): the
    /// newest one every live node that reported its keys holds, so a new revision is installed
    /// everywhere before anyone uses it (install, then use); the newest when none qualifies.
    /// When it reaches the revision a retirement waits for, that retirement's clock starts.
    pub fn ring_primary(&mut self, now: u64, revisions: &[String]) -> Option<String> {
        let reporting: Vec<&NodeRecord> =
            self.state.nodes.values().filter(|n| waited_for(n, now) && !n.have.is_empty()).collect();
        let held = revisions.iter().rev().find(|r| reporting.iter().all(|n| n.have.contains(r)));
        let primary = held.or(revisions.last()).cloned()?;
        // Revisions of one name sort by their timestamp.
        if self.state.retiring.as_ref().is_some_and(|r| r.used.is_none() && primary >= r.until) {
            self.touched.retiring(&self.state);
            if let Some(r) = self.state.retiring.as_mut() {
                r.used = Some(now);
            }
        }
        Some(primary)
    }

    /// The revisions to delete now, if every live node holds the new one and fetched since it
    /// became the primary (the shell deletes them and the state forgets the plan): install,
    /// use, then remove, so no live node is cut off on the way.
    pub fn take_retired(&mut self, now: u64) -> Vec<String> {
        let Some(r) = &self.state.retiring else { return Vec::new() };
        let Some(used) = r.used else { return Vec::new() };
        let all = self
            .state
            .nodes
            .values()
            .filter(|n| waited_for(n, now))
            .all(|n| n.have.contains(&r.until) && n.fetched.is_some_and(|f| f > used));
        if !all {
            return Vec::new();
        }
        let ids = r.ids.clone();
        self.touched.retiring(&self.state);
        self.state.retiring = None;
        self.log(now, "ring_key_retired", None, None, None, Some(ids.join(",")));
        ids
    }

    pub fn retiring(&self) -> Option<&Retiring> {
        self.state.retiring.as_ref()
    }
}

/// How long a key rotation waits for a node that stopped fetching. One that comes back later
/// is not cut off: its next fetch (which needs no ring key) brings the new revision. Without
/// a bound, one node offline for good held the old key, which the revoked node has too, in
/// use for ever.
pub const WAIT_FOR_SILENT: u64 = 3600;

/// Whether a key rotation waits for `n`: not revoked, its CGC still valid, heard from lately.
fn waited_for(n: &NodeRecord, now: u64) -> bool {
    n.revoked.is_none()
        && n.not_after > now
        && n.fetched.is_some_and(|f| now.saturating_sub(f) < WAIT_FOR_SILENT)
}

fn same_key(text: &str, key: &SigPublicKey) -> bool {
    crate::admission::wire::parse_key(text, "node key").is_ok_and(|(id, k)| id == key.id && k == key.key)
}
