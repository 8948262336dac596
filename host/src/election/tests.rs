//! Unit tests of the state machine, driven by hand (no simulated network).

use super::*;
use crate::ring::Health;
use crate::ring::proto::{ElectionRumor, ElectionStatus as WireStatus};

const G: &str = "db.default";

fn rumor(cand: &str, term: u64, votes: &[&str], status: WireStatus) -> ElectionRumor {
    ElectionRumor {
        from_id: cand.into(),
        member_id: cand.into(),
        service_group: G.into(),
        term,
        suitability: 0,
        status: status as i32,
        votes: votes.iter().map(|v| v.to_string()).collect(),
    }
}

fn core(me: &str, others: &[&str]) -> GroupElection {
    let mut e = GroupElection::new(me, G, 0, ElectionConfig::default(), None);
    for o in others {
        e.member_health(o, Health::Alive);
    }
    e
}

fn ticks(e: &mut GroupElection, n: u64) -> Vec<ElectionRumor> {
    (0..n).flat_map(|_| e.tick().rumors).collect()
}

#[test]
fn best_ranked_member_starts_term_zero_after_settling_and_finishes_with_all_votes() {
    // "c" ranks first of a, b, c (same suitability, greatest id).
    let mut c = core("c", &["a", "b"]);
    assert!(ticks(&mut c, 2).is_empty(), "settling");
    assert_eq!(c.view().reason, Reason::Settling);
    let out = ticks(&mut c, 1);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].term, out[0].votes.clone()), (0, vec!["c".to_string()]));
    assert_eq!(c.view().status, ElectionStatus::ElectionInProgress);
    assert_eq!(c.view().reason, Reason::Started, "the transition says why");
    ticks(&mut c, 1);
    assert_eq!(c.view().reason, Reason::WaitingForVotes { missing: vec!["a".into(), "b".into()] });
    c.rumor_received(&rumor("c", 0, &["a", "c"], WireStatus::ElectionRunning)).unwrap();
    assert_eq!(c.view().status, ElectionStatus::ElectionInProgress);
    let out = c.rumor_received(&rumor("c", 0, &["b", "c"], WireStatus::ElectionRunning)).unwrap();
    assert_eq!(out.rumors[0].status, WireStatus::ElectionFinished as i32);
    assert_eq!(c.view().leader_id.as_deref(), Some("c"));
    assert_eq!(out.changed.unwrap().reason, Reason::Elected { leader: "c".into() });
}

#[test]
fn a_voter_votes_once_per_term() {
    let mut a = core("a", &["b", "c"]);
    ticks(&mut a, 3);
    let out = a.rumor_received(&rumor("b", 4, &["b"], WireStatus::ElectionRunning)).unwrap();
    assert_eq!(out.rumors[0].votes, vec!["a", "b"]);
    assert_eq!(a.vote(), Some(&Vote { term: 4, candidate: "b".into() }));
    // A better candidate in the same term replaces b, but a's vote is spent.
    let out = a.rumor_received(&rumor("c", 4, &["c"], WireStatus::ElectionRunning)).unwrap();
    assert!(out.rumors.is_empty());
    assert_eq!(a.view().reason, Reason::VotedOther { candidate: "c".into() });
    // In the next term a votes again.
    let out = a.rumor_received(&rumor("c", 5, &["c"], WireStatus::ElectionRunning)).unwrap();
    assert_eq!(out.rumors[0].votes, vec!["a", "c"]);
}

#[test]
fn a_restored_vote_is_never_cast_twice_and_a_fresh_member_skips_the_terms_it_saw() {
    let mut a = GroupElection::new(
        "a",
        G,
        0,
        ElectionConfig::default(),
        Some(Vote { term: 4, candidate: "b".into() }),
    );
    a.member_health("c", Health::Alive);
    let out = a.rumor_received(&rumor("c", 4, &["c"], WireStatus::ElectionRunning)).unwrap();
    assert!(out.rumors.is_empty(), "voted for b in term 4 before the restart");
    let mut fresh = core("a", &["c"]);
    fresh.rumor_received(&rumor("c", 4, &["c"], WireStatus::ElectionRunning)).unwrap();
    assert!(ticks(&mut fresh, 5).iter().all(|r| r.term != 4 || r.member_id == "a" && r.term > 4));
    assert!(fresh.rumor().unwrap().votes == vec!["c"], "no vote in a term seen while settling");
}

#[test]
fn leader_gone_starts_a_new_term_and_only_with_quorum() {
    let mut a = core("a", &["b", "c"]);
    ticks(&mut a, 3);
    a.rumor_received(&rumor("c", 2, &["a", "b", "c"], WireStatus::ElectionFinished)).unwrap();
    assert_eq!(a.view().leader_id.as_deref(), Some("c"));
    let out = a.member_health("c", Health::Confirmed);
    // a ranks 1 of {a, b}: defers one stagger (4 ticks) plus its jitter (< 4), then starts term 3.
    assert!(out.rumors.is_empty());
    let Reason::Deferring { rank: 1, ticks_left } = a.view().reason else { panic!("{:?}", a.view().reason) };
    assert!((4..8).contains(&ticks_left), "{ticks_left}");
    assert!(ticks(&mut a, ticks_left - 1).is_empty());
    let out = ticks(&mut a, 1);
    assert_eq!(out.last().map(|r| (r.term, r.member_id.as_str())), Some((3, "a")));
    assert_eq!(a.view().status, ElectionStatus::ElectionInProgress);
    // Without quorum nobody starts anything.
    let mut m = core("a", &["b", "c"]);
    ticks(&mut m, 3);
    m.rumor_received(&rumor("c", 2, &["a", "b", "c"], WireStatus::ElectionFinished)).unwrap();
    m.member_health("b", Health::Suspect);
    m.member_health("c", Health::Confirmed);
    assert!(ticks(&mut m, 50).is_empty());
    assert_eq!(m.view().status, ElectionStatus::ElectionNoQuorum);
    assert!(m.view().reason.to_string().contains("confirmed-dead members still count until departed: c"));
}

#[test]
fn a_leader_that_loses_quorum_steps_down_and_starts_a_new_term_when_it_is_back() {
    let mut c = core("c", &["a", "b"]);
    ticks(&mut c, 3);
    c.rumor_received(&rumor("c", 0, &["a", "b", "c"], WireStatus::ElectionRunning)).unwrap();
    assert_eq!(c.view().leader_id.as_deref(), Some("c"));
    c.member_health("a", Health::Suspect);
    c.member_health("b", Health::Suspect);
    assert_eq!(c.view().status, ElectionStatus::ElectionNoQuorum);
    assert!(matches!(c.view().reason, Reason::LostQuorum { alive: 1, population: 3 }));
    let out = c.member_health("a", Health::Alive);
    assert_eq!(out.rumors[0].term, 1);
    assert_eq!(c.view().reason, Reason::RegainedQuorum);
}

#[test]
fn bad_rumors_are_refused_and_counted() {
    let mut a = core("a", &["b"]);
    let mut r = rumor("b", 1, &["b"], WireStatus::ElectionRunning);
    r.service_group = "other.default".into();
    assert!(matches!(a.rumor_received(&r), Err(RumorRejected::OtherGroup(_))));
    let mut r = rumor("b", 1, &["b"], WireStatus::ElectionRunning);
    r.status = 99;
    assert_eq!(a.rumor_received(&r), Err(RumorRejected::BadStatus(99)));
    assert_eq!(
        a.rumor_received(&rumor("", 1, &[], WireStatus::ElectionRunning)),
        Err(RumorRejected::BadCandidate)
    );
    let mut r = rumor("b", 1, &[], WireStatus::ElectionRunning);
    r.votes = vec!["x".repeat(500)];
    assert_eq!(a.rumor_received(&r), Err(RumorRejected::BadVotes));
    let r = rumor("b", u64::MAX, &["b"], WireStatus::ElectionRunning);
    assert_eq!(a.rumor_received(&r), Err(RumorRejected::BadTerm(u64::MAX)));
    // The highest accepted term still leaves room for the next one.
    let mut top = core("a", &["b", "c"]);
    ticks(&mut top, 3);
    top.rumor_received(&rumor("c", MAX_TERM, &["a", "b", "c"], WireStatus::ElectionFinished)).unwrap();
    top.member_health("c", Health::Departed);
    let out = ticks(&mut top, 12);
    assert!(out.iter().any(|r| r.term == MAX_TERM + 1), "{out:?}");
    assert_eq!(a.rejected(), 5);
    assert!(a.rumor().is_none());
}

#[test]
fn small_and_even_groups_carry_a_warning() {
    let mut a = core("a", &["b"]);
    assert_eq!(a.tick().changed.map(|v| v.warning), None, "view unchanged by a tick while settling");
    assert_eq!(a.view().warning, Some(Warning::Small(2)));
    a.member_health("c", Health::Alive);
    a.member_health("d", Health::Alive);
    assert_eq!(a.view().warning, Some(Warning::Even(4)));
}

#[test]
fn a_joiner_that_hears_the_election_before_the_leader_does_not_start_a_term() {
    let mut j = core("a", &["b", "c"]);
    let out = j.rumor_received(&rumor("d", 7, &["b", "c", "d"], WireStatus::ElectionFinished)).unwrap();
    assert!(out.rumors.is_empty());
    assert!(ticks(&mut j, 2).is_empty(), "still settling: d may be a member the ring has not named yet");
    j.member_health("d", Health::Alive);
    assert_eq!(j.view().leader_id.as_deref(), Some("d"));
    assert!(ticks(&mut j, 20).is_empty());
}
