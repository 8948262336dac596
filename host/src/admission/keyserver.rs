//! The keyserver's admission state as a pure state machine: no I/O, no clock, no global RNG.
//! The shell passes the time (`now`, Unix seconds) into every call and an [`Rng`] at
//! construction, persists [`Keyserver::change`] whenever there is one (before it replies; then
//! [`Keyserver::settle`], or [`Keyserver::undo`] when the write failed), and appends
//! [`Keyserver::take_audit`] to the audit log.
//!
//! Rules (issue #13): only a BLAKE2b-256 hash of a token's secret is kept; TTL 1 h by default,
//! at most 24 h; a token is single use, but a retry with the same token and the same node keys
//! gets the same CGC back (a lost reply must not strand the node); a different key is refused and
//! reported as a suspected theft. Wrong secrets are counted per token and slow replies down
//! (the shell waits `retry_after` before answering), but never lock a token out: its id is
//! public, so a lockout would let anyone cancel any admission.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::cgc::Cgc;
use super::change::{Change, Touched};
use super::cidr::Cidr;
use super::join::{self, JoinString, Pin, TokenId};
use super::validate_plain_name;
use crate::crypto::keys::{BoxPublicKey, SigPublicKey, SigSecretKey};
use crate::crypto::sodium::{self, SIGNATURE_LEN};

pub const DEFAULT_TOKEN_TTL: u64 = 3600;
pub const MAX_TOKEN_TTL: u64 = 24 * 3600;
pub const DEFAULT_CGC_TTL: u64 = 30 * 24 * 3600;
/// Failures of one token before replies to it slow down and an alert is logged.
pub const SLOW_AFTER_FAILURES: u32 = 5;
pub const MAX_SLOW_DOWN: u64 = 60;
pub const STATE_VERSION: u32 = 1;
const POP_DOMAIN: &[u8] = b"warren-admit-v1/claim\0";

/// Randomness, injected so tests are deterministic.
pub trait Rng {
    fn fill(&mut self, buf: &mut [u8]);
}

/// libsodium's CSPRNG.
pub struct OsRng;

impl Rng for OsRng {
    fn fill(&mut self, buf: &mut [u8]) {
        sodium::random_bytes(buf)
    }
}

/// Everything the keyserver must remember across restarts (`state.json`). No secret in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    pub cluster: String,
    /// Bumped when a backup is restored (not yet: there is no restore command).
    pub epoch: u64,
    /// By token id (Crockford base32).
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Admitted nodes by name (from their first claim on).
    #[serde(default)]
    pub nodes: BTreeMap<String, nodes::NodeRecord>,
    /// Nonces of recent node requests (hex) and their request time: a replay inside the
    /// time window is refused, older ones are refused by the window itself.
    #[serde(default)]
    pub nonces: BTreeMap<String, u64>,
    /// Ring key revisions being retired after a revocation.
    #[serde(default)]
    pub retiring: Option<nodes::Retiring>,
}

impl State {
    pub fn new(cluster: &str) -> State {
        State {
            version: STATE_VERSION,
            cluster: cluster.to_string(),
            epoch: 1,
            tokens: BTreeMap::new(),
            nodes: BTreeMap::new(),
            nonces: BTreeMap::new(),
            retiring: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Hex BLAKE2b-256 of the 20 secret bytes.
    pub secret_hash: String,
    pub node: String,
    pub groups: Vec<String>,
    /// Allowed source range, if any.
    pub from: Option<String>,
    pub created: u64,
    pub expires_at: u64,
    pub status: TokenStatus,
    pub failures: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenStatus {
    Unused,
    /// Claimed by the node whose keys are in `cgc` (public data: a CGC holds no secret).
    Claimed {
        at: u64,
        serial: String,
        cgc: String,
    },
    Revoked {
        at: u64,
    },
}

impl TokenStatus {
    pub fn name(&self) -> &'static str {
        match self {
            TokenStatus::Unused => "unused",
            TokenStatus::Claimed { .. } => "claimed",
            TokenStatus::Revoked { .. } => "revoked",
        }
    }
}

/// One line of `audit.jsonl`. Token ids, node names, serials and addresses; never a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub time: u64,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub node: String,
    pub groups: Vec<String>,
    /// Seconds; `None` = [`DEFAULT_TOKEN_TTL`].
    pub ttl: Option<u64>,
    pub from: Option<Cidr>,
}

/// What `token list` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub node: String,
    pub groups: Vec<String>,
    pub from: Option<String>,
    pub expires_at: u64,
    pub status: &'static str,
    pub failures: u32,
}

/// A node's claim of a token, as the transport delivered it (already decrypted).
#[derive(Clone)]
pub struct Claim {
    pub token_id: TokenId,
    pub secret: Zeroizing<[u8; join::SECRET_LEN]>,
    pub node: String,
    pub node_sig: SigPublicKey,
    pub node_box: BoxPublicKey,
    /// Signature by the node's new SIG key over [`Claim::pop_digest`]: proof of possession.
    pub pop: [u8; SIGNATURE_LEN],
    pub peer: Option<IpAddr>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("token_id", &self.token_id)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Claim {
    /// What the proof of possession signs: the claim's public fields and the pin of the
    /// keyserver it is meant for, under a domain string.
    pub fn pop_digest(
        token_id: &TokenId,
        node: &str,
        node_sig: &SigPublicKey,
        node_box: &BoxPublicKey,
        pin: &Pin,
    ) -> [u8; 32] {
        let mut h = sodium::Blake2b256::new();
        h.update(POP_DOMAIN);
        h.update(&token_id.0);
        for part in [node.as_bytes(), node_sig.id.to_string().as_bytes(), &node_sig.key] {
            h.update(&(part.len() as u32).to_be_bytes());
            h.update(part);
        }
        for part in [node_box.id.to_string().as_bytes(), &node_box.key, &pin.0] {
            h.update(&(part.len() as u32).to_be_bytes());
            h.update(part);
        }
        h.finalize()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The signed CGC text.
    pub cgc: String,
    pub serial: String,
    pub groups: Vec<String>,
    /// True when this was a retry that got the first claim's CGC back.
    pub retry: bool,
}

/// Why a request was refused. The messages go to the requester: they name the token id (public)
/// but never a secret.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("no token {0} (unknown, purged after expiry, or made by another keyserver)")]
    UnknownToken(String),
    #[error("token {0} was revoked")]
    Revoked(String),
    #[error("token {0} has expired; ask for a new one")]
    Expired(String),
    #[error("wrong secret for token {id}")]
    WrongSecret {
        id: String,
        /// Seconds the shell waits before sending this reply (0 below the threshold).
        retry_after: u64,
    },
    #[error("token {id} is for node {expected:?}, not {got:?}")]
    WrongNode { id: String, expected: String, got: String },
    #[error("token {id} may not be claimed from {peer}")]
    WrongAddress { id: String, peer: String },
    #[error("the proof of possession of the node key does not verify")]
    BadProof,
    #[error("token {0} was already claimed with other node keys; refused and reported as a suspected theft")]
    SuspectedTheft(String),
    #[error("invalid {what} {value:?}: {why}")]
    BadName { what: &'static str, value: String, why: String },
    #[error("a token lives from 1 second to {max} seconds (24 h), not {got}", max = MAX_TOKEN_TTL)]
    BadTtl { got: u64 },
    #[error("the CGC is not valid: {0}")]
    BadCgc(String),
    #[error("the request is not signed by the key in its CGC")]
    BadRequestSignature,
    #[error("the request's time is {skew} s away from the keyserver's clock (at most {max} s)", max = nodes::CLOCK_WINDOW)]
    ClockSkew { skew: u64 },
    #[error("the request was already seen (replayed nonce)")]
    Replay,
    #[error("node {0} was revoked")]
    NodeRevoked(String),
    #[error("no admitted node {0}")]
    UnknownNode(String),
    #[error("the CGC of {0} was replaced by a newer one; use that")]
    StaleCgc(String),
}

pub struct Keyserver<R: Rng> {
    state: State,
    admission: SigSecretKey,
    rng: R,
    pub cgc_ttl: u64,
    audit: Vec<AuditEvent>,
    /// Entries changed since the last commit, with their old values.
    touched: Touched,
    /// When the nonce window was last pruned (at most once a second: it is a full scan).
    nonces_pruned: u64,
}

/// Reply delay for a token that has failed `failures` times: none below the threshold, then
/// doubling from 1 s up to [`MAX_SLOW_DOWN`].
pub fn slow_down(failures: u32) -> u64 {
    if failures < SLOW_AFTER_FAILURES {
        return 0;
    }
    let exp = (failures - SLOW_AFTER_FAILURES).min(6);
    (1u64 << exp).min(MAX_SLOW_DOWN)
}

impl<R: Rng> Keyserver<R> {
    pub fn new(state: State, admission: SigSecretKey, rng: R) -> Self {
        Keyserver {
            state,
            admission,
            rng,
            cgc_ttl: DEFAULT_CGC_TTL,
            audit: Vec::new(),
            touched: Touched::default(),
            nonces_pruned: 0,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// What changed since the last commit, if anything: the shell persists it before replying.
    pub fn change(&self) -> Option<Change> {
        Some(self.touched.change(&self.state)).filter(|c| !c.is_empty())
    }

    /// The change was persisted: forget its old values.
    pub fn settle(&mut self) {
        self.touched = Touched::default();
    }

    /// The change could not be persisted: what was not persisted did not happen.
    pub fn undo(&mut self) {
        std::mem::take(&mut self.touched).undo(&mut self.state);
        self.audit.clear();
    }

    pub fn admission_public(&self) -> SigPublicKey {
        self.admission.public()
    }

    pub fn pin(&self) -> Pin {
        Pin::of(&self.admission.public().key)
    }

    /// Whether the state changed since the last call, which settles it (for tests).
    pub fn take_changed(&mut self) -> bool {
        let changed = self.change().is_some();
        self.settle();
        changed
    }

    pub fn take_audit(&mut self) -> Vec<AuditEvent> {
        std::mem::take(&mut self.audit)
    }

    fn log(
        &mut self,
        now: u64,
        event: &str,
        token: Option<&str>,
        node: Option<&str>,
        peer: Option<IpAddr>,
        detail: Option<String>,
    ) {
        self.audit.push(AuditEvent {
            time: now,
            event: event.to_string(),
            token: token.map(str::to_string),
            node: node.map(str::to_string),
            peer: peer.map(|p| p.to_string()),
            detail,
        });
    }

    pub fn create_token(&mut self, now: u64, req: TokenRequest) -> Result<JoinString, AdmitError> {
        validate_plain_name("node name", &req.node)?;
        let mut groups = req.groups.clone();
        for g in &groups {
            validate_plain_name("group", g)?;
        }
        groups.sort();
        groups.dedup();
        let ttl = req.ttl.unwrap_or(DEFAULT_TOKEN_TTL);
        if ttl == 0 || ttl > MAX_TOKEN_TTL {
            return Err(AdmitError::BadTtl { got: ttl });
        }
        self.purge(now);
        let id = loop {
            let mut id = [0u8; join::ID_LEN];
            self.rng.fill(&mut id);
            let id = TokenId(id);
            if !self.state.tokens.contains_key(&id.to_string()) {
                break id;
            }
        };
        let mut secret = Zeroizing::new([0u8; join::SECRET_LEN]);
        self.rng.fill(&mut secret[..]);
        let record = TokenRecord {
            secret_hash: hex::encode(sodium::blake2b_256(&secret[..])),
            node: req.node.clone(),
            groups: groups.clone(),
            from: req.from.map(|c| c.to_string()),
            created: now,
            expires_at: now.saturating_add(ttl),
            status: TokenStatus::Unused,
            failures: 0,
        };
        let id_text = id.to_string();
        self.touched.token(&self.state, &id_text);
        self.state.tokens.insert(id_text.clone(), record);
        let detail = format!(
            "groups={} ttl={ttl}s from={}",
            groups.join(","),
            req.from.map(|c| c.to_string()).unwrap_or_else(|| "any".into())
        );
        self.log(now, "token_created", Some(&id_text), Some(&req.node), None, Some(detail));
        Ok(JoinString { id, secret, pin: self.pin() })
    }

    pub fn list(&self) -> Vec<TokenInfo> {
        self.state
            .tokens
            .iter()
            .map(|(id, t)| TokenInfo {
                id: id.clone(),
                node: t.node.clone(),
                groups: t.groups.clone(),
                from: t.from.clone(),
                expires_at: t.expires_at,
                status: t.status.name(),
                failures: t.failures,
            })
            .collect()
    }

    /// Revokes a token that is not yet claimed, or voids a claimed one so a retry gets nothing
    /// (the node it admitted keeps its CGC: revoking nodes is `admit node revoke`, not built yet).
    pub fn revoke(&mut self, now: u64, id: &TokenId) -> Result<(), AdmitError> {
        let key = id.to_string();
        self.touched.token(&self.state, &key);
        let t = self.state.tokens.get_mut(&key).ok_or_else(|| AdmitError::UnknownToken(key.clone()))?;
        if matches!(t.status, TokenStatus::Revoked { .. }) {
            return Ok(());
        }
        let was = t.status.name();
        t.status = TokenStatus::Revoked { at: now };
        let node = t.node.clone();
        self.log(now, "token_revoked", Some(&key), Some(&node), None, Some(format!("was {was}")));
        Ok(())
    }

    /// Removes tokens whose life is over, whatever their status, and nonces that left the
    /// window; returns how many tokens.
    pub fn purge(&mut self, now: u64) -> usize {
        self.expire_nonces(now);
        let expired: Vec<String> =
            self.state.tokens.iter().filter(|(_, t)| t.expires_at <= now).map(|(id, _)| id.clone()).collect();
        for id in &expired {
            self.touched.token(&self.state, id);
            self.state.tokens.remove(id);
        }
        let n = expired.len();
        if n > 0 {
            self.log(now, "tokens_purged", None, None, None, Some(format!("{n} expired")));
        }
        n
    }

    pub fn claim(&mut self, now: u64, c: &Claim) -> Result<Claimed, AdmitError> {
        let r = self.claim_inner(now, c);
        if let Err(e) = &r {
            let event =
                if matches!(e, AdmitError::SuspectedTheft(_)) { "suspected_theft" } else { "claim_refused" };
            self.log(now, event, Some(&c.token_id.to_string()), Some(&c.node), c.peer, Some(e.to_string()));
        }
        r
    }

    fn claim_inner(&mut self, now: u64, c: &Claim) -> Result<Claimed, AdmitError> {
        let id = c.token_id.to_string();
        let pin = self.pin();
        // Whether the admission this token made still stands (read before the token is borrowed).
        let standing = self.state.nodes.get(&c.node).map(|n| (n.revoked.is_some(), n.token == id));
        self.touched.token(&self.state, &id);
        let t = self.state.tokens.get_mut(&id).ok_or_else(|| AdmitError::UnknownToken(id.clone()))?;
        if matches!(t.status, TokenStatus::Revoked { .. }) {
            return Err(AdmitError::Revoked(id));
        }
        if now >= t.expires_at {
            return Err(AdmitError::Expired(id));
        }
        // Constant time over the hashes; every attempt is checked, even after many failures.
        let presented = sodium::blake2b_256(&c.secret[..]);
        let stored = hex::decode(&t.secret_hash).unwrap_or_default();
        if !sodium::ct_eq(&presented, &stored) {
            t.failures = t.failures.saturating_add(1);
            let failures = t.failures;
            let node = t.node.clone();
            if failures == SLOW_AFTER_FAILURES {
                self.log(
                    now,
                    "suspected_brute_force",
                    Some(&id),
                    Some(&node),
                    c.peer,
                    Some(format!("{failures} wrong secrets; replies slowed down")),
                );
            }
            return Err(AdmitError::WrongSecret { id, retry_after: slow_down(failures) });
        }
        if let (Some(from), Some(peer)) = (&t.from, c.peer) {
            let allowed = from.parse::<Cidr>().map(|r| r.contains(peer)).unwrap_or(false);
            if !allowed {
                return Err(AdmitError::WrongAddress { id, peer: peer.to_string() });
            }
        } else if t.from.is_some() {
            return Err(AdmitError::WrongAddress { id, peer: "an unknown address".into() });
        }
        if t.node != c.node {
            return Err(AdmitError::WrongNode { id, expected: t.node.clone(), got: c.node.clone() });
        }
        let digest = Claim::pop_digest(&c.token_id, &c.node, &c.node_sig, &c.node_box, &pin);
        if !sodium::verify_detached(&c.pop, &digest, &c.node_sig.key) {
            return Err(AdmitError::BadProof);
        }
        if let TokenStatus::Claimed { cgc, serial, .. } = &t.status {
            let first = Cgc::verify(cgc, &self.admission.public()).ok();
            let same = first.as_ref().is_some_and(|f| f.node_sig == c.node_sig && f.node_box == c.node_box);
            if !same {
                return Err(AdmitError::SuspectedTheft(id));
            }
            // A retry answers only while that admission stands: a revoked node (or one admitted
            // again since, with another token) would get the very keys that replaced its own.
            match standing {
                Some((false, true)) => {}
                Some((true, _)) => return Err(AdmitError::NodeRevoked(t.node.clone())),
                _ => return Err(AdmitError::StaleCgc(t.node.clone())),
            }
            let out =
                Claimed { cgc: cgc.clone(), serial: serial.clone(), groups: t.groups.clone(), retry: true };
            let node = t.node.clone();
            self.log(
                now,
                "claim_retried",
                Some(&id),
                Some(&node),
                c.peer,
                Some(format!("serial={}", out.serial)),
            );
            return Ok(out);
        }
        let mut serial = [0u8; 16];
        self.rng.fill(&mut serial);
        let cgc = Cgc {
            serial,
            cluster: self.state.cluster.clone(),
            node: t.node.clone(),
            node_sig: c.node_sig.clone(),
            node_box: c.node_box.clone(),
            groups: t.groups.clone(),
            issued: now,
            not_before: now,
            not_after: now.saturating_add(self.cgc_ttl),
            token_id: c.token_id,
            epoch: self.state.epoch,
        };
        let text = cgc.sign(&self.admission);
        let serial = cgc.serial_hex();
        t.status = TokenStatus::Claimed { at: now, serial: serial.clone(), cgc: text.clone() };
        let groups = t.groups.clone();
        let node = t.node.clone();
        self.touched.node(&self.state, &node);
        self.state.nodes.insert(node.clone(), nodes::NodeRecord::admitted(&cgc, id.clone()));
        self.log(now, "token_claimed", Some(&id), Some(&node), c.peer, Some(format!("serial={serial}")));
        Ok(Claimed { cgc: text, serial, groups, retry: false })
    }
}

#[path = "keyserver_nodes.rs"]
pub mod nodes;

#[cfg(test)]
#[path = "keyserver_tests.rs"]
mod tests;
