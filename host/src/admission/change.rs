//! One request's change to the keyserver state, as the journal records it: the new value of
//! every entry the request modified (absolute values, so replaying a record twice, or over a
//! snapshot that already holds it, gives the same state). [`Touched`] remembers what those
//! entries held before, to compute the change and to undo it when its commit fails.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::keyserver::nodes::{NodeRecord, Retiring};
use super::keyserver::{State, TokenRecord};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// By token id; `None` = removed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<String, Option<TokenRecord>>,
    /// By node name; `None` = removed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, Option<NodeRecord>>,
    /// Nonces seen, with their request time. Their expiry is not recorded: it follows from
    /// the clock, and [`crate::admission::Keyserver::expire_nonces`] redoes it after a replay.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nonces: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retiring: Option<RetiringChange>,
}

/// The retirement plan's new value (a wrapper, so "set to none" differs from "unchanged").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiringChange {
    pub to: Option<Retiring>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.nodes.is_empty() && self.nonces.is_empty() && self.retiring.is_none()
    }

    pub fn apply(self, state: &mut State) {
        put_all(&mut state.tokens, self.tokens);
        put_all(&mut state.nodes, self.nodes);
        state.nonces.extend(self.nonces);
        if let Some(r) = self.retiring {
            state.retiring = r.to;
        }
    }
}

fn put_all<V>(map: &mut BTreeMap<String, V>, values: BTreeMap<String, Option<V>>) {
    for (k, v) in values {
        match v {
            Some(v) => map.insert(k, v),
            None => map.remove(&k),
        };
    }
}

/// What the entries touched since the last commit held before it. Touching an entry that then
/// stays the same is harmless: it is not part of the change.
#[derive(Debug, Default)]
pub struct Touched {
    tokens: BTreeMap<String, Option<TokenRecord>>,
    nodes: BTreeMap<String, Option<NodeRecord>>,
    /// A nonce is only ever added by a request (expiry is not a change).
    nonces: BTreeSet<String>,
    retiring: Option<Option<Retiring>>,
}

impl Touched {
    pub fn token(&mut self, state: &State, id: &str) {
        if !self.tokens.contains_key(id) {
            self.tokens.insert(id.to_string(), state.tokens.get(id).cloned());
        }
    }

    pub fn node(&mut self, state: &State, name: &str) {
        if !self.nodes.contains_key(name) {
            self.nodes.insert(name.to_string(), state.nodes.get(name).cloned());
        }
    }

    pub fn nonce(&mut self, nonce: &str) {
        self.nonces.insert(nonce.to_string());
    }

    pub fn retiring(&mut self, state: &State) {
        if self.retiring.is_none() {
            self.retiring = Some(state.retiring.clone());
        }
    }

    /// The change from the before-values to `state`.
    pub fn change(&self, state: &State) -> Change {
        let mut c = Change::default();
        diff(&self.tokens, &state.tokens, &mut c.tokens);
        diff(&self.nodes, &state.nodes, &mut c.nodes);
        for n in &self.nonces {
            if let Some(t) = state.nonces.get(n) {
                c.nonces.insert(n.clone(), *t);
            }
        }
        if let Some(before) = &self.retiring
            && *before != state.retiring
        {
            c.retiring = Some(RetiringChange { to: state.retiring.clone() });
        }
        c
    }

    /// Puts the before-values back into `state`.
    pub fn undo(self, state: &mut State) {
        put_all(&mut state.tokens, self.tokens);
        put_all(&mut state.nodes, self.nodes);
        for n in self.nonces {
            state.nonces.remove(&n);
        }
        if let Some(r) = self.retiring {
            state.retiring = r;
        }
    }
}

fn diff<V: Clone + PartialEq>(
    before: &BTreeMap<String, Option<V>>,
    now: &BTreeMap<String, V>,
    out: &mut BTreeMap<String, Option<V>>,
) {
    for (k, old) in before {
        let new = now.get(k);
        if old.as_ref() != new {
            out.insert(k.clone(), new.cloned());
        }
    }
}
