//! One readable schedule per Habitat election bug: the schedule that hangs or splits Habitat
//! terminates here. No message loss, so each step reads as the story it tells.

use super::sim::{World, short};
use super::{DeadMemberRule, ElectionConfig, ElectionStatus, Reason};

/// Gossip rounds any election here must finish within once a majority is connected.
const BOUND: u64 = 60;

fn group(size: usize, cfg: ElectionConfig) -> World {
    World::new(7, cfg, size)
}

/// Runs until every live member shows the same live leader; panics with the views if not.
fn leader(w: &mut World) -> String {
    for _ in 0..BOUND {
        w.step();
        assert_eq!(w.error, None);
        if let Some(l) = w.agreed_leader() {
            return l;
        }
    }
    let views: Vec<String> = w
        .nodes
        .iter()
        .filter(|n| n.up)
        .map(|n| format!("{}: {:?} {}", short(&n.id), n.core.view().status, n.core.view().reason))
        .collect();
    panic!("no agreed leader within {BOUND} rounds: {views:#?}");
}

fn live(w: &World) -> Vec<String> {
    w.nodes.iter().filter(|n| n.up).map(|n| n.id.clone()).collect()
}

fn other_than(w: &World, id: &str) -> usize {
    w.nodes.iter().position(|n| n.up && n.id != id).expect("another live member")
}

#[test]
fn habitat_1994_joins_with_dead_members_elect_once_alive_are_a_majority() {
    let mut w = group(3, ElectionConfig::default());
    let l = leader(&mut w);
    // The leader and one more die: the survivor counts them and says so.
    w.kill(w.idx(&l));
    let second = other_than(&w, &l);
    w.kill(second);
    w.run(20);
    let survivor = live(&w)[0].clone();
    let v = w.view_of(&survivor).clone();
    assert_eq!(v.status, ElectionStatus::ElectionNoQuorum);
    let Reason::NoQuorum { alive: 1, population: 3, counted_dead } = &v.reason else {
        panic!("{:?}", v.reason)
    };
    assert_eq!(counted_dead.len(), 2);
    // The group grows by two new members: 3 alive of 5 is a majority, so it elects.
    w.replace(0);
    w.run(5);
    assert!(w.agreed_leader().is_none(), "2 of 4 alive is no majority");
    w.replace(0);
    let new = leader(&mut w);
    assert_ne!(new, l);
}

#[test]
fn habitat_5264_rolling_replacement_names_the_old_ids_and_elects_once_departed() {
    let mut w = group(3, ElectionConfig::default());
    leader(&mut w);
    let mut old: Vec<String> = w.ids();
    old.sort();
    for id in &old {
        w.kill(w.idx(id));
        w.replace(0);
        w.run(20);
    }
    // 3 alive of 6: no quorum, and every member names the three old ids as the reason.
    w.run(10);
    for n in w.nodes.iter().filter(|n| n.up) {
        let v = n.core.view();
        assert_eq!(v.status, ElectionStatus::ElectionNoQuorum, "{}", v.reason);
        let Reason::NoQuorum { counted_dead, .. } = &v.reason else { panic!("{:?}", v.reason) };
        assert_eq!(counted_dead, &old);
        assert!(v.reason.to_string().contains("still count until departed"));
    }
    // The operator departs them (`warren sup depart`): 3 of 3, elected.
    for id in &old {
        w.depart(id, 0);
    }
    let l = leader(&mut w);
    assert!(!old.contains(&l));
}

#[test]
fn habitat_5264_with_a_grace_rule_elects_without_an_operator() {
    let cfg =
        ElectionConfig { dead_rule: DeadMemberRule::ExcludeAfter { ticks: 30 }, ..ElectionConfig::default() };
    let mut w = group(3, cfg);
    leader(&mut w);
    let old = w.ids();
    for id in &old {
        w.kill(w.idx(id));
        w.replace(0);
        w.run(5);
    }
    // Detection (8 rounds) + grace (30) + an election.
    w.run(30);
    let l = leader(&mut w);
    assert!(!old.contains(&l));
}

#[test]
fn habitat_3246_departing_the_leader_of_three_starts_a_new_term() {
    let mut w = group(3, ElectionConfig::default());
    let l = leader(&mut w);
    let term = w.view_of(&l).term;
    w.kill(w.idx(&l));
    w.depart(&l, 0);
    let new = leader(&mut w);
    assert_ne!(new, l);
    assert!(w.view_of(&new).term > term);
}

#[test]
fn habitat_4759_stopping_the_leader_leaves_two_that_elect_and_it_rejoins_as_follower() {
    let mut w = group(3, ElectionConfig::default());
    let l = leader(&mut w);
    // A graceful stop: Left does not count, so 2 of 2 (Habitat: total < 3 meant no quorum).
    w.leave(w.idx(&l));
    let new = leader(&mut w);
    assert_ne!(new, l);
    let v = w.view_of(&new);
    assert_eq!(v.warning, Some(super::Warning::Small(2)));
    // It comes back (same id): it follows the new leader, nothing flips.
    w.left.remove(&l);
    let i = w.idx(&l);
    w.restart(i);
    for n in w.nodes.iter_mut() {
        n.tombs[i] = None;
    }
    assert_eq!(leader(&mut w), new);
    w.run(30);
    assert_eq!(w.agreed_leader(), Some(new));
}

#[test]
fn habitat_5188_restarting_supervisors_does_not_leave_the_election_stuck() {
    let mut w = group(3, ElectionConfig::default());
    let l = leader(&mut w);
    // Restart the leader and one follower at once (same ids, vote records from disk).
    let f = w.nodes[other_than(&w, &l)].id.clone();
    for id in [&l, &f] {
        w.kill(w.idx(id));
    }
    w.run(3);
    for id in [&l, &f] {
        let i = w.idx(id);
        w.restart(i);
    }
    leader(&mut w);
    // And once more, slowly enough for the ring to confirm them dead first.
    let l = w.agreed_leader().unwrap();
    let i = w.idx(&l);
    w.kill(i);
    w.run(12);
    w.restart(i);
    leader(&mut w);
}

#[test]
fn habitat_2315_after_the_leader_is_destroyed_survivors_agree_and_never_name_it() {
    let mut w = group(5, ElectionConfig::default());
    let l = leader(&mut w);
    w.kill(w.idx(&l));
    // Until detection the old leader may still be shown; once confirmed, never again.
    w.run(w.confirm_after + 1);
    let new = leader(&mut w);
    assert_ne!(new, l);
    for _ in 0..30 {
        w.step();
        for n in w.nodes.iter().filter(|n| n.up) {
            assert_ne!(n.core.view().leader_id.as_deref(), Some(l.as_str()));
            assert_eq!(n.core.view().leader_id.as_deref(), Some(new.as_str()));
        }
    }
}

#[test]
fn habitat_1742_every_view_is_either_a_named_leader_or_an_explicit_wait() {
    let mut w = group(5, ElectionConfig::default());
    let l = leader(&mut w);
    w.kill(w.idx(&l));
    // In the interim no member shows "finished" without a leader, or a leader without
    // "finished": hooks gated on the leader role see a consistent answer.
    for _ in 0..BOUND {
        w.step();
        for n in w.nodes.iter().filter(|n| n.up) {
            let v = n.core.view();
            assert_eq!(v.status == ElectionStatus::ElectionFinished, v.leader_id.is_some(), "{v:?}");
            assert_eq!(matches!(v.reason, Reason::Elected { .. }), v.leader_id.is_some(), "{v:?}");
        }
    }
    assert!(w.agreed_leader().is_some_and(|n| n != l));
}

#[test]
fn a_partitioned_minority_leader_steps_down_and_the_heal_keeps_the_majoritys_leader() {
    let mut w = group(5, ElectionConfig::default());
    let l = leader(&mut w);
    let li = w.idx(&l);
    // The leader and one follower on side 1, three on side 0.
    let f = other_than(&w, &l);
    let sides: Vec<u8> = (0..5).map(|i| u8::from(i == li || i == f)).collect();
    w.set_sides(&sides);
    w.run(w.confirm_after + 2);
    let v = w.view_of(&l);
    assert_eq!(v.status, ElectionStatus::ElectionNoQuorum);
    assert!(matches!(v.reason, Reason::LostQuorum { alive: 2, population: 5 }), "{:?}", v.reason);
    w.run(BOUND);
    let majority: Vec<&super::ElectionView> =
        w.nodes.iter().enumerate().filter(|(i, _)| sides[*i] == 0).map(|(_, n)| n.core.view()).collect();
    let new = majority[0].leader_id.clone().expect("the majority elected");
    assert!(majority.iter().all(|v| v.leader_id.as_ref() == Some(&new)));
    assert_ne!(new, l);
    w.heal();
    assert_eq!(leader(&mut w), new, "the heal keeps the majority's leader");
}
