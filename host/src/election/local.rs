//! Every election this member takes part in, fed from census snapshots: which members run each
//! group and how the ring sees them, and the group's election rumor as the ring store holds it.
//! Pure (no I/O, no clock): the shell feeds it, publishes the rumors it returns, persists the
//! votes before they leave and logs each view change with its reason.

use std::collections::BTreeMap;

use super::core::GroupElection;
use super::types::{ElectionConfig, ElectionView, Vote};
use crate::groups::census::Census;
use crate::ring::Health;
use crate::ring::proto::ElectionRumor;

/// What one call produced.
#[derive(Debug, Default)]
pub struct Step {
    /// Rumors to hand to the ring (`Rumor::Election`), after the votes are persisted.
    pub rumors: Vec<ElectionRumor>,
    /// Groups whose view changed (None: the group is no longer elected here).
    pub changed: Vec<(String, Option<ElectionView>)>,
    /// A vote was cast: persist [`LocalElections::votes`] before publishing `rumors`.
    pub votes_changed: bool,
    /// Received rumors refused (malformed or oversize), per group.
    pub rejected: Vec<(String, String)>,
}

impl Step {
    /// Adds `more`, which happened after `self`: a group's later view replaces its earlier one.
    pub fn merge(&mut self, more: Step) {
        self.rumors.extend(more.rumors);
        for (g, v) in more.changed {
            self.changed.retain(|(x, _)| *x != g);
            self.changed.push((g, v));
        }
        self.votes_changed |= more.votes_changed;
        self.rejected.extend(more.rejected);
    }
}

struct Group {
    election: GroupElection,
    /// The members last fed, this one excluded, with their health.
    members: BTreeMap<String, Health>,
    /// The store's rumor as last fed (so an unchanged one is not fed again).
    fed: Option<ElectionRumor>,
}

pub struct LocalElections {
    me: String,
    cfg: ElectionConfig,
    groups: BTreeMap<String, Group>,
    /// Votes restored at start, handed to a group's machine when it starts.
    restored: BTreeMap<String, Vote>,
    /// While held (see [`LocalElections::hold`]): the groups wanted meanwhile, by suitability.
    held: Option<BTreeMap<String, u64>>,
}

impl LocalElections {
    pub fn new(me: &str, cfg: ElectionConfig, restored: BTreeMap<String, Vote>) -> Self {
        LocalElections { me: me.to_string(), cfg, groups: BTreeMap::new(), restored, held: None }
    }

    /// Elects in no group until [`LocalElections::release`]: for a member that knows of others
    /// but has not heard the ring's state yet. Its restored store may still name it the leader
    /// of a term long superseded, with every member it remembers alive (Habitat #7636).
    pub fn hold(&mut self) {
        self.held.get_or_insert_default();
    }

    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// Starts the elections wanted while held, from what `census` knows now.
    pub fn release(&mut self, census: &Census) -> Step {
        let mut step = Step::default();
        for (group, suitability) in self.held.take().unwrap_or_default() {
            step.merge(self.want(&group, suitability, census));
        }
        step
    }

    /// Starts this member's election for `group` (or updates its suitability), then feeds it
    /// what the census knows.
    pub fn want(&mut self, group: &str, suitability: u64, census: &Census) -> Step {
        let mut step = Step::default();
        if let Some(held) = &mut self.held {
            if held.insert(group.to_string(), suitability).is_none() {
                step.changed.push((group.to_string(), Some(ElectionView::rejoining())));
            }
            return step;
        }
        match self.groups.get_mut(group) {
            Some(g) => {
                let before = g.election.vote().cloned();
                let out = g.election.set_suitability(suitability);
                step.votes_changed = g.election.vote() != before.as_ref();
                collect(group, out, &mut step);
            }
            None => {
                let vote = self.restored.remove(group);
                let election = GroupElection::new(&self.me, group, suitability, self.cfg, vote);
                self.groups
                    .insert(group.to_string(), Group { election, members: BTreeMap::new(), fed: None });
                self.feed(group, census, &mut step);
            }
        }
        step
    }

    /// This member no longer runs `group`: its machine goes (its vote record with it, as the
    /// ring forgets this member's service in the group).
    pub fn unwant(&mut self, group: &str) -> Step {
        let mut step = Step::default();
        if self.held.as_mut().is_some_and(|h| h.remove(group).is_some()) {
            step.changed.push((group.to_string(), None));
        }
        if self.groups.remove(group).is_some() {
            step.changed.push((group.to_string(), None));
            step.votes_changed = true;
        }
        step
    }

    pub fn is_wanted(&self, group: &str) -> bool {
        self.groups.contains_key(group) || self.held.as_ref().is_some_and(|h| h.contains_key(group))
    }

    /// A new census snapshot: membership, health and the store's rumor of every group here.
    pub fn census(&mut self, census: &Census) -> Step {
        let mut step = Step::default();
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for name in names {
            self.feed(&name, census, &mut step);
        }
        step
    }

    /// One gossip round went by.
    pub fn tick(&mut self) -> Step {
        let mut step = Step::default();
        for (name, g) in &mut self.groups {
            let before = g.election.vote().cloned();
            let out = g.election.tick();
            step.votes_changed |= g.election.vote() != before.as_ref();
            collect(name, out, &mut step);
        }
        step
    }

    pub fn views(&self) -> BTreeMap<String, ElectionView> {
        let held = self.held.iter().flatten().map(|(n, _)| (n.clone(), ElectionView::rejoining()));
        self.groups.iter().map(|(n, g)| (n.clone(), g.election.view().clone())).chain(held).collect()
    }

    /// The votes to persist: every running group's, and restored ones not yet used.
    pub fn votes(&self) -> BTreeMap<String, Vote> {
        let mut votes = self.restored.clone();
        for (n, g) in &self.groups {
            if let Some(v) = g.election.vote() {
                votes.insert(n.clone(), v.clone());
            }
        }
        votes
    }

    fn feed(&mut self, name: &str, census: &Census, step: &mut Step) {
        let Some(g) = self.groups.get_mut(name) else { return };
        let before = g.election.vote().cloned();
        // A member whose service rumor the store holds but whom the ring does not know (yet:
        // the store was restored from disk before the ring rejoined) counts as confirmed
        // dead: in the population, never a voter. So a restarted member that is alone with an
        // old member list has no quorum and cannot name itself leader (Habitat #7636).
        let now: BTreeMap<String, Health> = census
            .group(name)
            .map(|grp| {
                grp.members
                    .keys()
                    .filter(|id| **id != self.me)
                    .map(|id| (id.clone(), census.member(id).map_or(Health::Confirmed, |m| m.health)))
                    .collect()
            })
            .unwrap_or_default();
        let gone: Vec<String> = g.members.keys().filter(|id| !now.contains_key(*id)).cloned().collect();
        for id in gone {
            let out = g.election.member_removed(&id);
            collect(name, out, step);
        }
        let changes: Vec<(&str, Health)> = now
            .iter()
            .filter(|(id, h)| g.members.get(*id) != Some(h))
            .map(|(id, h)| (id.as_str(), *h))
            .collect();
        if !changes.is_empty() {
            let out = g.election.members_changed(changes);
            collect(name, out, step);
        }
        g.members = now;
        let rumor = census.group(name).and_then(|grp| grp.election.clone());
        if let Some(r) = rumor
            && g.fed.as_ref() != Some(&r)
        {
            match g.election.rumor_received(&r) {
                Ok(out) => collect(name, out, step),
                Err(e) => step.rejected.push((name.to_string(), e.to_string())),
            }
            g.fed = Some(r);
        }
        step.votes_changed |= g.election.vote() != before.as_ref();
    }
}

fn collect(group: &str, out: super::core::Outputs, step: &mut Step) {
    step.rumors.extend(out.rumors);
    if let Some(view) = out.changed {
        // Keep only the latest view of a group within one step.
        step.changed.retain(|(g, _)| g != group);
        step.changed.push((group.to_string(), Some(view)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::ElectionStatus;
    use crate::ring::core::Origin;
    use crate::ring::proto;
    use crate::ring::{Event, MemberId, Rumor};

    const GROUP: &str = "db.default";

    fn id(i: u8) -> String {
        MemberId([i; 16]).to_string()
    }

    /// Member `i` runs the group.
    fn service(i: u8) -> Event {
        Event::RumorChanged {
            rumor: Rumor::Service(proto::ServiceRumor {
                member_id: id(i),
                service_group: GROUP.into(),
                incarnation: 1,
                ..Default::default()
            }),
            origin: Origin::Gossip,
        }
    }

    /// A finished election of `term` won by member `leader` with the votes of `voters`.
    fn finished(leader: u8, term: u64, voters: &[u8]) -> Event {
        Event::RumorChanged {
            rumor: Rumor::Election(proto::ElectionRumor {
                member_id: id(leader),
                from_id: id(leader),
                service_group: GROUP.into(),
                term,
                status: proto::ElectionStatus::ElectionFinished as i32,
                votes: voters.iter().map(|v| id(*v)).collect(),
                ..Default::default()
            }),
            origin: Origin::Gossip,
        }
    }

    /// Three members, each with a census that hears every member and service rumor, and a
    /// ring store that merges election rumors the way the ring does.
    struct Cluster {
        census: Vec<Census>,
        elections: Vec<LocalElections>,
    }

    impl Cluster {
        fn new(n: u8) -> Cluster {
            let mut census: Vec<Census> = (1..=n).map(|i| Census::new(&id(i))).collect();
            for c in &mut census {
                for i in 1..=n {
                    c.apply(&Event::MemberUp(MemberId([i; 16])));
                    c.apply(&service(i));
                }
            }
            let elections = (1..=n)
                .map(|i| LocalElections::new(&id(i), ElectionConfig::default(), BTreeMap::new()))
                .collect();
            Cluster { census, elections }
        }

        /// Delivers rumors to every census (the ring's merge), then feeds every member.
        fn deliver(&mut self, rumors: Vec<ElectionRumor>) -> bool {
            let mut any = false;
            for r in rumors {
                for c in &mut self.census {
                    let held = c.group(GROUP).and_then(|g| g.election.clone());
                    let merged = match held {
                        None => Some(Rumor::Election(r.clone())),
                        Some(h) => Rumor::Election(r.clone()).merge_into(&Rumor::Election(h)),
                    };
                    if let Some(m) = merged {
                        c.apply(&Event::RumorChanged { rumor: m, origin: Origin::Gossip });
                        any = true;
                    }
                }
            }
            any
        }

        fn round(&mut self) {
            let mut out = Vec::new();
            for (e, c) in self.elections.iter_mut().zip(&self.census) {
                out.extend(e.tick().rumors);
                out.extend(e.census(c).rumors);
            }
            while self.deliver(std::mem::take(&mut out)) {
                for (e, c) in self.elections.iter_mut().zip(&self.census) {
                    out.extend(e.census(c).rumors);
                }
            }
        }
    }

    #[test]
    fn three_members_agree_on_one_leader_and_replace_a_dead_one() {
        let mut cl = Cluster::new(3);
        for (e, c) in cl.elections.iter_mut().zip(&cl.census) {
            assert!(e.want(GROUP, 0, c).rumors.is_empty(), "nobody starts while settling");
        }
        for _ in 0..40 {
            cl.round();
        }
        let leaders: Vec<Option<String>> =
            cl.elections.iter().map(|e| e.views()[GROUP].leader_id.clone()).collect();
        assert!(leaders[0].is_some(), "{leaders:?}");
        assert!(leaders.iter().all(|l| *l == leaders[0]), "all agree: {leaders:?}");
        assert!(cl.elections.iter().all(|e| e.views()[GROUP].status == ElectionStatus::ElectionFinished));
        assert!(!cl.elections[0].votes().is_empty(), "votes are there to persist");

        // The leader dies: the two others see it confirmed and elect one of themselves.
        let old = leaders[0].clone().unwrap();
        let dead = (1..=3u8).find(|i| id(*i) == old).unwrap();
        for (i, c) in cl.census.iter_mut().enumerate() {
            if i as u8 + 1 != dead {
                c.apply(&Event::MemberDown(MemberId([dead; 16])));
            }
        }
        let dead_idx = dead as usize - 1;
        cl.census.remove(dead_idx);
        cl.elections.remove(dead_idx);
        for _ in 0..60 {
            cl.round();
        }
        let now: Vec<Option<String>> =
            cl.elections.iter().map(|e| e.views()[GROUP].leader_id.clone()).collect();
        assert!(now[0].is_some() && now[0] != Some(old), "{now:?}");
        assert_eq!(now[0], now[1], "both survivors agree");
        assert!(cl.elections[0].views()[GROUP].term >= 1);
    }

    #[test]
    fn a_member_alone_with_a_restored_member_list_has_no_quorum() {
        // The store (restored from disk) names two other members the ring does not know yet,
        // and a finished election with this member as leader.
        let mut c = Census::new(&id(1));
        for i in 1..=3u8 {
            c.apply(&service(i));
        }
        c.apply(&finished(1, 4, &[1, 2, 3]));
        let mut e = LocalElections::new(&id(1), ElectionConfig::default(), BTreeMap::new());
        e.want(GROUP, 0, &c);
        for _ in 0..20 {
            e.tick();
            e.census(&c);
        }
        let v = &e.views()[GROUP];
        assert_eq!(v.leader_id, None, "never leader from a cached rumor alone: {v:?}");
        assert_eq!(v.status, ElectionStatus::ElectionNoQuorum);
        let step = e.unwant(GROUP);
        assert_eq!(step.changed, vec![(GROUP.to_string(), None)]);
    }

    #[test]
    fn a_restarted_leader_holds_until_the_rings_state_reaches_it() {
        // Restored from disk: this member led term 4, and the ring (also restored) shows the
        // two others alive. Meanwhile they elected member 2 in term 5.
        let mut c = Census::new(&id(1));
        for i in 1..=3u8 {
            c.apply(&Event::MemberUp(MemberId([i; 16])));
            c.apply(&service(i));
        }
        c.apply(&finished(1, 4, &[1, 2, 3]));
        let mut e = LocalElections::new(&id(1), ElectionConfig::default(), BTreeMap::new());
        e.hold();
        let step = e.want(GROUP, 0, &c);
        assert_eq!(step.changed, vec![(GROUP.to_string(), Some(ElectionView::rejoining()))]);
        for _ in 0..20 {
            assert!(e.tick().rumors.is_empty() && e.census(&c).rumors.is_empty(), "silent while held");
        }
        let v = &e.views()[GROUP];
        assert_eq!((v.status, v.leader_id.as_deref()), (ElectionStatus::None, None), "{v:?}");
        assert!(e.is_wanted(GROUP));

        // A peer's state arrives: the newer term, then the sync.
        c.apply(&finished(2, 5, &[1, 2, 3]));
        c.apply(&Event::Synced);
        assert!(c.synced());
        let step = e.release(&c);
        assert!(!e.is_held());
        let v = &e.views()[GROUP];
        assert_eq!(v.status, ElectionStatus::ElectionFinished, "{v:?}");
        assert_eq!(v.leader_id, Some(id(2)), "follows the newer term, never its own old one");
        assert_eq!(step.changed.len(), 1, "{:?}", step.changed);
    }

    #[test]
    fn a_group_unwanted_while_held_is_gone_after_the_release() {
        let c = Census::new(&id(1));
        let mut e = LocalElections::new(&id(1), ElectionConfig::default(), BTreeMap::new());
        e.hold();
        e.want(GROUP, 0, &c);
        assert_eq!(e.unwant(GROUP).changed, vec![(GROUP.to_string(), None)]);
        assert!(e.release(&c).changed.is_empty());
        assert!(e.views().is_empty());
    }
}
