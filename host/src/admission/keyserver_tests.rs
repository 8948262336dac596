use super::*;
use crate::crypto::keys::{BoxSecretKeyFile, SigSecretKey};

/// Deterministic randomness: a counter-seeded BLAKE2b stream.
struct TestRng(u64);

impl Rng for TestRng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(32) {
            self.0 += 1;
            let d = sodium::blake2b_256(&self.0.to_be_bytes());
            chunk.copy_from_slice(&d[..chunk.len()]);
        }
    }
}

const T0: u64 = 1_700_000_000;

fn keyserver() -> Keyserver<TestRng> {
    let (_, admission) = SigSecretKey::generate("acme-admission").unwrap();
    Keyserver::new(State::new("acme"), admission, TestRng(0))
}

fn request(node: &str) -> TokenRequest {
    TokenRequest { node: node.into(), groups: vec!["web".into()], ttl: None, from: None }
}

struct Node {
    sig: SigSecretKey,
    boxk: BoxPublicKey,
}

fn node(name: &str) -> Node {
    let (_, sig) = SigSecretKey::generate(name).unwrap();
    let (boxk, _) = BoxSecretKeyFile::generate(name).unwrap();
    Node { sig, boxk }
}

fn claim_for(j: &JoinString, name: &str, n: &Node, pin: &Pin) -> Claim {
    let digest = Claim::pop_digest(&j.id, name, &n.sig.public(), &n.boxk, pin);
    Claim {
        token_id: j.id,
        secret: j.secret.clone(),
        node: name.into(),
        node_sig: n.sig.public(),
        node_box: n.boxk.clone(),
        pop: sodium::sign_detached(&digest, &n.sig.key),
        peer: Some("10.0.0.5".parse().unwrap()),
    }
}

#[test]
fn a_token_claims_once_and_yields_a_verifiable_cgc() {
    let mut ks = keyserver();
    let j = ks.create_token(T0, request("node1")).unwrap();
    assert!(ks.take_changed());
    assert_eq!(j.pin, ks.pin());
    let n = node("node1");
    let got = ks.claim(T0 + 10, &claim_for(&j, "node1", &n, &ks.pin())).unwrap();
    assert!(ks.take_changed(), "a claim is committed before the reply");
    assert!(!got.retry);
    let cgc = Cgc::verify(&got.cgc, &ks.admission_public()).unwrap();
    assert_eq!(cgc.node, "node1");
    assert_eq!(cgc.groups, vec!["web".to_string()]);
    assert_eq!(cgc.node_sig, n.sig.public());
    assert_eq!(cgc.token_id, j.id);
    assert_eq!(cgc.not_after, T0 + 10 + DEFAULT_CGC_TTL);
    cgc.check_time(T0 + 11).unwrap();
    assert_eq!(ks.list()[0].status, "claimed");
}

#[test]
fn only_a_hash_of_the_secret_is_kept() {
    let mut ks = keyserver();
    let j = ks.create_token(T0, request("node1")).unwrap();
    let state = serde_json::to_string(ks.state()).unwrap();
    let text = j.encode();
    let secret_b32 = text.split('-').nth(2).unwrap();
    assert!(!state.contains(secret_b32));
    assert!(!state.contains(&hex::encode(&j.secret[..])));
    assert!(state.contains(&hex::encode(sodium::blake2b_256(&j.secret[..]))));
    let audit = serde_json::to_string(&ks.take_audit()).unwrap();
    assert!(!audit.contains(secret_b32) && !audit.contains(&hex::encode(&j.secret[..])));
}

#[test]
fn ttl_defaults_to_an_hour_and_is_capped_at_a_day() {
    let mut ks = keyserver();
    ks.create_token(T0, request("a")).unwrap();
    assert_eq!(ks.list()[0].expires_at, T0 + 3600);
    let day = TokenRequest { ttl: Some(MAX_TOKEN_TTL), ..request("b") };
    ks.create_token(T0, day).unwrap();
    for bad in [0, MAX_TOKEN_TTL + 1, u64::MAX] {
        let r = ks.create_token(T0, TokenRequest { ttl: Some(bad), ..request("c") });
        assert_eq!(r.unwrap_err(), AdmitError::BadTtl { got: bad });
    }
}

#[test]
fn names_and_groups_are_validated() {
    let mut ks = keyserver();
    for bad in ["", "a b", "../x", "-x", "n\n", &"x".repeat(65)] {
        assert!(matches!(ks.create_token(T0, request(bad)), Err(AdmitError::BadName { .. })), "{bad:?}");
    }
    let bad_group = TokenRequest { groups: vec!["ok".into(), "no,comma".into()], ..request("n") };
    assert!(matches!(ks.create_token(T0, bad_group), Err(AdmitError::BadName { what: "group", .. })));
    let dup = TokenRequest { groups: vec!["b".into(), "a".into(), "b".into()], ..request("n") };
    ks.create_token(T0, dup).unwrap();
    assert_eq!(ks.list()[0].groups, vec!["a".to_string(), "b".to_string()]);
}

#[test]
fn a_lost_reply_is_safe_the_same_keys_get_the_same_cgc() {
    let mut ks = keyserver();
    let j = ks.create_token(T0, request("node1")).unwrap();
    let n = node("node1");
    let c = claim_for(&j, "node1", &n, &ks.pin());
    let first = ks.claim(T0 + 1, &c).unwrap();
    let again = ks.claim(T0 + 2, &c).unwrap();
    assert!(again.retry);
    assert_eq!(again.cgc, first.cgc);
    assert_eq!(again.serial, first.serial);
}

/// A retry only answers while the admission stands: revoked, or admitted again with another
/// token since, the node gets nothing (a reply carries every ring key, the new ones too).
#[test]
fn a_retried_claim_is_refused_once_the_node_was_revoked_or_readmitted() {
    let mut ks = keyserver();
    let j = ks.create_token(T0, request("node1")).unwrap();
    let n = node("node1");
    let c = claim_for(&j, "node1", &n, &ks.pin());
    ks.claim(T0 + 1, &c).unwrap();
    assert!(ks.revoke_node(T0 + 2, "node1").unwrap());
    let err = ks.claim(T0 + 3, &c).unwrap_err();
    assert!(matches!(err, AdmitError::NodeRevoked(ref node) if node == "node1"), "{err}");

    let mut ks = keyserver();
    let old = ks.create_token(T0, request("node2")).unwrap();
    let n = node("node2");
    let c_old = claim_for(&old, "node2", &n, &ks.pin());
    ks.claim(T0 + 1, &c_old).unwrap();
    let new = ks.create_token(T0 + 2, request("node2")).unwrap();
    ks.claim(T0 + 3, &claim_for(&new, "node2", &n, &ks.pin())).unwrap();
    let err = ks.claim(T0 + 4, &c_old).unwrap_err();
    assert!(matches!(err, AdmitError::StaleCgc(_)), "{err}");
}

#[test]
fn a_replayed_token_with_other_keys_is_refused_as_theft() {
    let mut ks = keyserver();
    let j = ks.create_token(T0, request("node1")).unwrap();
    let pin = ks.pin();
    ks.claim(T0 + 1, &claim_for(&j, "node1", &node("node1"), &pin)).unwrap();
    ks.take_audit();
    let thief = node("node1");
    let r = ks.claim(T0 + 2, &claim_for(&j, "node1", &thief, &pin));
    assert_eq!(r.unwrap_err(), AdmitError::SuspectedTheft(j.id.to_string()));
    let audit = ks.take_audit();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].event, "suspected_theft");
    assert_eq!(audit[0].token.as_deref(), Some(&*j.id.to_string()));
    assert_eq!(audit[0].peer.as_deref(), Some("10.0.0.5"));
    // Same SIG key but another BOX key: not the first claimant's keys either.
    let mut half = claim_for(&j, "node1", &thief, &pin);
    half.node_box = node("x").boxk;
    half.pop = sodium::sign_detached(
        &Claim::pop_digest(&j.id, "node1", &thief.sig.public(), &half.node_box, &pin),
        &thief.sig.key,
    );
    assert!(matches!(ks.claim(T0 + 3, &half), Err(AdmitError::SuspectedTheft(_))));
}

#[test]
fn expired_revoked_and_unknown_tokens_are_refused() {
    let mut ks = keyserver();
    let pin = ks.pin();
    let j = ks.create_token(T0, request("node1")).unwrap();
    let c = claim_for(&j, "node1", &node("node1"), &pin);
    assert_eq!(ks.claim(T0 + 3600, &c).unwrap_err(), AdmitError::Expired(j.id.to_string()));
    ks.claim(T0 + 3599, &c).unwrap();
    // A retry after expiry gets nothing.
    assert!(matches!(ks.claim(T0 + 3600, &c), Err(AdmitError::Expired(_))));

    let j2 = ks.create_token(T0, request("node2")).unwrap();
    ks.revoke(T0 + 1, &j2.id).unwrap();
    let c2 = claim_for(&j2, "node2", &node("node2"), &pin);
    assert_eq!(ks.claim(T0 + 2, &c2).unwrap_err(), AdmitError::Revoked(j2.id.to_string()));
    ks.revoke(T0 + 3, &j2.id).unwrap();

    let ghost = JoinString { id: TokenId([9; 5]), ..j2.clone() };
    let c3 = claim_for(&ghost, "node2", &node("node2"), &pin);
    assert!(matches!(ks.claim(T0 + 2, &c3), Err(AdmitError::UnknownToken(_))));
    assert!(matches!(ks.revoke(T0, &ghost.id), Err(AdmitError::UnknownToken(_))));
}

#[test]
fn wrong_secrets_slow_down_but_never_lock_out() {
    let mut ks = keyserver();
    let pin = ks.pin();
    let j = ks.create_token(T0, request("node1")).unwrap();
    let n = node("node1");
    let mut wrong = claim_for(&j, "node1", &n, &pin);
    wrong.secret[0] ^= 1;
    let mut delays = Vec::new();
    for i in 0..20 {
        match ks.claim(T0 + i, &wrong) {
            Err(AdmitError::WrongSecret { retry_after, .. }) => delays.push(retry_after),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(&delays[..5], &[0, 0, 0, 0, 1]);
    assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
    assert_eq!(*delays.last().unwrap(), MAX_SLOW_DOWN);
    assert_eq!(ks.list()[0].failures, 20);
    let audit = ks.take_audit();
    assert_eq!(audit.iter().filter(|e| e.event == "suspected_brute_force").count(), 1);
    assert_eq!(audit.iter().filter(|e| e.event == "claim_refused").count(), 20);
    // The right secret still works at once.
    ks.claim(T0 + 21, &claim_for(&j, "node1", &n, &pin)).unwrap();
}

#[test]
fn binding_to_node_name_and_address() {
    let mut ks = keyserver();
    let pin = ks.pin();
    let j = ks.create_token(T0, request("node1")).unwrap();
    let r = ks.claim(T0, &claim_for(&j, "node2", &node("node2"), &pin));
    assert!(matches!(r, Err(AdmitError::WrongNode { .. })));

    let from = TokenRequest { from: Some("192.168.1.0/24".parse().unwrap()), ..request("node3") };
    let j3 = ks.create_token(T0, from).unwrap();
    let n3 = node("node3");
    let mut c = claim_for(&j3, "node3", &n3, &pin);
    assert!(matches!(ks.claim(T0, &c), Err(AdmitError::WrongAddress { .. })));
    c.peer = None;
    assert!(matches!(ks.claim(T0, &c), Err(AdmitError::WrongAddress { .. })));
    c.peer = Some("192.168.1.77".parse().unwrap());
    ks.claim(T0, &c).unwrap();
}

#[test]
fn the_proof_of_possession_is_checked_and_bound_to_the_keyserver() {
    let mut ks = keyserver();
    let pin = ks.pin();
    let j = ks.create_token(T0, request("node1")).unwrap();
    let n = node("node1");
    // Signed by another key than the one presented.
    let mut c = claim_for(&j, "node1", &n, &pin);
    let other = node("other");
    c.pop = sodium::sign_detached(
        &Claim::pop_digest(&j.id, "node1", &n.sig.public(), &n.boxk, &pin),
        &other.sig.key,
    );
    assert_eq!(ks.claim(T0, &c).unwrap_err(), AdmitError::BadProof);
    // Made for another keyserver (a fake one relaying to us): the pin in the proof differs.
    let fake_pin = Pin::of(&[1u8; 32]);
    assert_eq!(ks.claim(T0, &claim_for(&j, "node1", &n, &fake_pin)).unwrap_err(), AdmitError::BadProof);
    // Garbage signature bytes.
    c.pop = [0xff; 64];
    assert_eq!(ks.claim(T0, &c).unwrap_err(), AdmitError::BadProof);
    ks.claim(T0, &claim_for(&j, "node1", &n, &pin)).unwrap();
}

#[test]
fn purge_removes_expired_tokens_only() {
    let mut ks = keyserver();
    ks.create_token(T0, request("a")).unwrap();
    ks.create_token(T0, TokenRequest { ttl: Some(7200), ..request("b") }).unwrap();
    ks.take_changed();
    assert_eq!(ks.purge(T0 + 3599), 0);
    assert!(!ks.take_changed());
    assert_eq!(ks.purge(T0 + 3600), 1);
    assert!(ks.take_changed());
    assert_eq!(ks.list().len(), 1);
    assert_eq!(ks.list()[0].node, "b");
    // Minting purges too.
    ks.create_token(T0 + 7200, request("c")).unwrap();
    assert_eq!(ks.list().iter().map(|t| t.node.as_str()).collect::<Vec<_>>(), vec!["c"]);
}

#[test]
fn refusals_change_state_only_when_they_must() {
    let mut ks = keyserver();
    let pin = ks.pin();
    let j = ks.create_token(T0, request("node1")).unwrap();
    ks.take_changed();
    let c = claim_for(&j, "node2", &node("node2"), &pin);
    assert!(ks.claim(T0, &c).is_err());
    assert!(!ks.take_changed(), "a wrong node name is not a failure count");
    let mut wrong = claim_for(&j, "node1", &node("node1"), &pin);
    wrong.secret[5] ^= 0x80;
    assert!(ks.claim(T0, &wrong).is_err());
    assert!(ks.take_changed(), "the failure count is persisted");
}

#[test]
fn state_round_trips_through_json() {
    let mut ks = keyserver();
    let pin = ks.pin();
    let j = ks
        .create_token(T0, TokenRequest { from: Some("10.0.0.0/8".parse().unwrap()), ..request("n") })
        .unwrap();
    ks.claim(T0, &claim_for(&j, "n", &node("n"), &pin)).unwrap();
    ks.create_token(T0, request("m")).unwrap();
    let text = serde_json::to_string_pretty(ks.state()).unwrap();
    let back: State = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, ks.state());
    assert!(serde_json::from_str::<State>(&text.replace("\"epoch\"", "\"bogus\"")).is_err());
}

mod node_requests {
    use super::*;
    use crate::admission::request::{Op, RequestBody};
    use crate::crypto::keys::BoxSecretKeyFile;

    /// An admitted node: its keys and CGC, plus the keyserver's transport key.
    fn admitted(ks: &mut Keyserver<TestRng>, name: &str) -> (Node, String) {
        let j = ks.create_token(T0, request(name)).unwrap();
        let n = node(name);
        let c = ks.claim(T0 + 1, &claim_for(&j, name, &n, &ks.pin())).unwrap();
        (n, c.cgc)
    }

    fn send(
        ks: &mut Keyserver<TestRng>,
        now: u64,
        signer: &SigSecretKey,
        cgc: &str,
        time: u64,
        nonce: &str,
    ) -> Result<nodes::Authorized, AdmitError> {
        let (tp, t) = BoxSecretKeyFile::generate("acme-keyserver").unwrap();
        let body = RequestBody {
            op: Op::Keys,
            cgc: cgc.into(),
            time,
            nonce: nonce.into(),
            gossip: None,
            have: vec![],
        };
        let (body, signed) = RequestBody::open(&body.seal(signer, &tp), &tp.key, &t.key).unwrap();
        ks.authorize(now, &body, &signed, None)
    }

    fn nonce(i: u8) -> String {
        hex::encode([i; 24])
    }

    #[test]
    fn a_signed_fresh_request_passes_and_a_replay_does_not() {
        let mut ks = keyserver();
        let (n, cgc) = admitted(&mut ks, "n1");
        let a = send(&mut ks, T0 + 10, &n.sig, &cgc, T0 + 10, &nonce(1)).unwrap();
        assert_eq!((a.cgc.node.as_str(), a.groups.clone()), ("n1", vec!["web".to_string()]));
        assert!(ks.take_changed(), "the nonce is committed");
        assert_eq!(send(&mut ks, T0 + 11, &n.sig, &cgc, T0 + 10, &nonce(1)).unwrap_err(), AdmitError::Replay);
        // The window survives a restart (it is in the state).
        let mut again = Keyserver::new(ks.state().clone(), ks.admission.clone(), TestRng(9));
        assert_eq!(
            send(&mut again, T0 + 12, &n.sig, &cgc, T0 + 10, &nonce(1)).unwrap_err(),
            AdmitError::Replay
        );
        // Old nonces leave the window; their requests are then refused by the clock check.
        assert!(matches!(
            send(&mut ks, T0 + 10 + CLOCK + 1, &n.sig, &cgc, T0 + 10, &nonce(1)),
            Err(AdmitError::ClockSkew { .. })
        ));
        send(&mut ks, T0 + 10 + CLOCK + 1, &n.sig, &cgc, T0 + 10 + CLOCK, &nonce(2)).unwrap();
        assert!(!ks.state().nonces.contains_key(&nonce(1)), "the window is pruned");
    }

    const CLOCK: u64 = nodes::CLOCK_WINDOW;

    #[test]
    fn stolen_cgcs_skewed_clocks_and_revoked_nodes_are_refused() {
        let mut ks = keyserver();
        let (n, cgc) = admitted(&mut ks, "n1");
        let thief = node("n1");
        assert_eq!(
            send(&mut ks, T0 + 10, &thief.sig, &cgc, T0 + 10, &nonce(1)).unwrap_err(),
            AdmitError::BadRequestSignature
        );
        for t in [T0 + 10 - CLOCK - 1, T0 + 10 + CLOCK + 1] {
            assert!(matches!(
                send(&mut ks, T0 + 10, &n.sig, &cgc, t, &nonce(2)),
                Err(AdmitError::ClockSkew { .. })
            ));
        }
        // Another keyserver's CGC, or garbage.
        let mut other = keyserver();
        let (on, ocgc) = admitted(&mut other, "n1");
        assert!(matches!(
            send(&mut ks, T0 + 10, &on.sig, &ocgc, T0 + 10, &nonce(3)),
            Err(AdmitError::BadCgc(_))
        ));
        assert!(matches!(
            send(&mut ks, T0 + 10, &n.sig, "junk", T0 + 10, &nonce(4)),
            Err(AdmitError::BadCgc(_))
        ));
        assert!(ks.revoke_node(T0 + 20, "n1").unwrap());
        assert!(!ks.revoke_node(T0 + 21, "n1").unwrap());
        assert_eq!(
            send(&mut ks, T0 + 30, &n.sig, &cgc, T0 + 30, &nonce(5)).unwrap_err(),
            AdmitError::NodeRevoked("n1".into())
        );
        assert_eq!(ks.revoke_node(T0, "nobody").unwrap_err(), AdmitError::UnknownNode("nobody".into()));
        let audit = ks.take_audit();
        assert!(audit.iter().filter(|e| e.event == "request_refused").count() >= 5, "{audit:?}");
        assert!(audit.iter().any(|e| e.event == "node_revoked"));
    }

    #[test]
    fn a_renewed_cgc_is_pending_until_used_so_a_lost_reply_strands_nobody() {
        let mut ks = keyserver();
        let (n, old) = admitted(&mut ks, "n1");
        let a = send(&mut ks, T0 + 10, &n.sig, &old, T0 + 10, &nonce(1)).unwrap();
        let lost = ks.renew(T0 + 10, &a);
        // The reply was lost: the old CGC still works and renews again.
        let a = send(&mut ks, T0 + 20, &n.sig, &old, T0 + 20, &nonce(2)).unwrap();
        let new = ks.renew(T0 + 20, &a);
        assert_ne!(lost, new);
        let c = Cgc::verify(&new, &ks.admission_public()).unwrap();
        assert_eq!((c.node.as_str(), c.not_after), ("n1", T0 + 20 + DEFAULT_CGC_TTL));
        assert_eq!(
            send(&mut ks, T0 + 30, &n.sig, &lost, T0 + 30, &nonce(3)).unwrap_err(),
            AdmitError::StaleCgc("n1".into())
        );
        // Using the new one retires the old one.
        send(&mut ks, T0 + 30, &n.sig, &new, T0 + 30, &nonce(4)).unwrap();
        assert_eq!(
            send(&mut ks, T0 + 31, &n.sig, &old, T0 + 31, &nonce(5)).unwrap_err(),
            AdmitError::StaleCgc("n1".into())
        );
        assert_eq!(ks.nodes()[0].serial, c.serial_hex());
    }

    #[test]
    fn peers_are_the_other_live_nodes() {
        let mut ks = keyserver();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let (n, cgc) = admitted(&mut ks, name);
            let (tp, t) = BoxSecretKeyFile::generate("acme-keyserver").unwrap();
            let body = RequestBody {
                op: Op::Keys,
                cgc,
                time: T0 + 5,
                nonce: nonce(i as u8),
                gossip: Some(format!("10.0.0.{i}:9638")),
                have: vec![],
            };
            let (body, signed) = RequestBody::open(&body.seal(&n.sig, &tp), &tp.key, &t.key).unwrap();
            ks.authorize(T0 + 5, &body, &signed, None).unwrap();
        }
        assert_eq!(ks.peers_of("a"), ["10.0.0.1:9638", "10.0.0.2:9638"]);
        ks.revoke_node(T0, "b").unwrap();
        assert_eq!(ks.peers_of("a"), ["10.0.0.2:9638"]);
    }
}

mod retiring {
    use super::*;
    use crate::admission::request::{Op, RequestBody};
    use crate::crypto::keys::BoxSecretKeyFile;

    #[test]
    fn old_ring_keys_go_only_after_every_live_node_holds_and_uses_the_new_one() {
        let mut ks = keyserver();
        let mut nodes = Vec::new();
        for name in ["a", "b", "c"] {
            let j = ks.create_token(T0, request(name)).unwrap();
            let n = node(name);
            let cgc = ks.claim(T0, &claim_for(&j, name, &n, &ks.pin())).unwrap().cgc;
            nodes.push((n, cgc));
        }
        let mut i = 0u8;
        let mut report = |ks: &mut Keyserver<TestRng>, who: usize, at: u64, have: &[&str]| {
            i += 1;
            let (tp, t) = BoxSecretKeyFile::generate("acme-keyserver").unwrap();
            let body = RequestBody {
                op: Op::Keys,
                cgc: nodes[who].1.clone(),
                time: at,
                nonce: hex::encode([i; 24]),
                gossip: None,
                have: have.iter().map(|s| s.to_string()).collect(),
            };
            let (body, signed) =
                RequestBody::open(&body.seal(&nodes[who].0.sig, &tp), &tp.key, &t.key).unwrap();
            ks.authorize(at, &body, &signed, None).unwrap();
        };
        let revisions = ["acme-1".to_string(), "acme-2".to_string()];
        assert_eq!(ks.ring_primary(T0, &revisions).as_deref(), Some("acme-2"), "nobody reported: the newest");
        report(&mut ks, 0, T0, &["acme-1"]);
        report(&mut ks, 1, T0, &["acme-1"]);
        report(&mut ks, 2, T0, &["acme-1"]);
        assert_eq!(ks.ring_primary(T0, &revisions).as_deref(), Some("acme-1"), "installed nowhere yet");

        ks.revoke_node(T0 + 1, "c").unwrap();
        ks.start_retiring(T0 + 1, vec!["acme-1".into()], "acme-2".into());
        assert!(ks.take_retired(T0 + 2).is_empty(), "nobody acknowledged yet");
        report(&mut ks, 0, T0 + 5, &["acme-1", "acme-2"]);
        assert_eq!(ks.ring_primary(T0 + 5, &revisions).as_deref(), Some("acme-1"), "b has not got it yet");
        assert!(ks.take_retired(T0 + 5).is_empty(), "b has not got it yet");
        report(&mut ks, 1, T0 + 5, &["acme-1", "acme-2"]);
        // c is revoked: it never gets the new key and is not waited for.
        assert_eq!(ks.ring_primary(T0 + 5, &revisions).as_deref(), Some("acme-2"), "installed by all: used");
        assert!(ks.take_retired(T0 + 5).is_empty(), "not yet fetched by all since it became the primary");
        report(&mut ks, 0, T0 + 6, &["acme-1", "acme-2"]);
        assert!(ks.take_retired(T0 + 6).is_empty(), "b still may seal with the old one");
        report(&mut ks, 1, T0 + 7, &["acme-1", "acme-2"]);
        assert_eq!(ks.take_retired(T0 + 7), ["acme-1"]);
        assert!(ks.retiring().is_none());
        assert!(ks.take_retired(T0 + 8).is_empty());
    }

    /// A node that stopped fetching holds a rotation back for `WAIT_FOR_SILENT` at most:
    /// after that the old key (which the revoked node has too) goes all the same.
    #[test]
    fn a_silent_node_holds_a_rotation_back_for_an_hour_at_most() {
        let mut ks = keyserver();
        let mut nodes = Vec::new();
        for name in ["a", "b", "c"] {
            let j = ks.create_token(T0, request(name)).unwrap();
            let n = node(name);
            let cgc = ks.claim(T0, &claim_for(&j, name, &n, &ks.pin())).unwrap().cgc;
            nodes.push((n, cgc));
        }
        let mut i = 0u8;
        let mut report = |ks: &mut Keyserver<TestRng>, who: usize, at: u64, have: &[&str]| {
            i += 1;
            let (tp, t) = BoxSecretKeyFile::generate("acme-keyserver").unwrap();
            let body = RequestBody {
                op: Op::Keys,
                cgc: nodes[who].1.clone(),
                time: at,
                nonce: hex::encode([i; 24]),
                gossip: None,
                have: have.iter().map(|s| s.to_string()).collect(),
            };
            let (body, signed) =
                RequestBody::open(&body.seal(&nodes[who].0.sig, &tp), &tp.key, &t.key).unwrap();
            ks.authorize(at, &body, &signed, None).unwrap();
        };
        let revisions = ["acme-1".to_string(), "acme-2".to_string()];
        for who in 0..3 {
            report(&mut ks, who, T0, &["acme-1"]);
        }
        ks.revoke_node(T0 + 1, "c").unwrap();
        ks.start_retiring(T0 + 1, vec!["acme-1".into()], "acme-2".into());
        // b goes quiet for good; a keeps fetching.
        report(&mut ks, 0, T0 + 10, &["acme-1", "acme-2"]);
        assert_eq!(ks.ring_primary(T0 + 10, &revisions).as_deref(), Some("acme-1"), "b was heard lately");
        let late = T0 + nodes::WAIT_FOR_SILENT + 1;
        assert_eq!(ks.ring_primary(late, &revisions).as_deref(), Some("acme-2"), "b is not waited for");
        assert!(ks.take_retired(late).is_empty(), "a has not fetched since the switch");
        report(&mut ks, 0, late + 1, &["acme-1", "acme-2"]);
        assert_eq!(ks.take_retired(late + 1), ["acme-1"]);
    }
}

#[test]
fn an_undone_request_leaves_the_state_as_it_was() {
    let mut ks = keyserver();
    let j = ks.create_token(T0, request("node1")).unwrap();
    ks.settle();
    let before = ks.state().clone();
    let n = node("node1");
    ks.claim(T0 + 1, &claim_for(&j, "node1", &n, &ks.pin())).unwrap();
    ks.create_token(T0 + 1, request("node2")).unwrap();
    let change = ks.change().unwrap();
    assert_eq!((change.tokens.len(), change.nodes.len()), (2, 1));
    ks.undo();
    assert_eq!(ks.state(), &before);
    assert!(ks.change().is_none() && ks.take_audit().is_empty());
    // Applied to the old state, a change gives the new one (what a journal replay does).
    ks.claim(T0 + 1, &claim_for(&j, "node1", &n, &ks.pin())).unwrap();
    let mut replayed = before.clone();
    ks.change().unwrap().apply(&mut replayed);
    assert_eq!(&replayed, ks.state());
}
