//! Leader election per service group: a pure state machine over the ring's election rumors.
//!
//! One [`GroupElection`] per (member, service group, kind); the same machine serves
//! `Election` and `ElectionUpdate` rumors (the shell picks the [`crate::ring::Rumor`] variant).
//! No I/O and no clock: time is the number of [`GroupElection::tick`] calls (one per gossip
//! round in the shell).
//!
//! # The shell's side
//! In: [`GroupElection::members_changed`] (or one at a time [`GroupElection::member_health`],
//! [`GroupElection::member_removed`]) for every member that
//! has a service rumor in the group (the ring's `Alive`, `Suspect`, `Confirmed`, `Departed`,
//! `Left`); [`GroupElection::rumor_received`] for every election rumor of the group (the
//! machine merges it by the ring's own rules, [`crate::ring::Rumor::merge_into`], so its copy
//! matches the ring store; bad rumors are refused and counted, never a panic);
//! [`GroupElection::tick`]; [`GroupElection::set_suitability`] (the suitability hook).
//! Out: [`Outputs`]: `rumors` to publish into the ring, and `changed` with the new
//! [`ElectionView`] `{status, term, leader_id, reason, warning}` whenever it changed; log
//! `reason` (it says why the group waits) and `warning`. Persist [`GroupElection::vote`] before
//! the rumors leave, and pass it to [`GroupElection::new`] after a restart.
//!
//! # Rules
//! - **Order of rumors** (the ring's merge): higher term wins; in one term the higher
//!   suitability, then the greater member id; the same candidate's votes are unioned and its
//!   status only moves forward (Running, NoQuorum, Finished).
//! - **Population**: the group's members, this one included, that are not `Departed` or `Left`
//!   (a member that left said so itself). `Suspect` members count but do not vote. `Confirmed`
//!   members per [`DeadMemberRule`]: by default they count until departed, so no partition side
//!   can out-count members it merely believes dead; the view names them, so "depart these" is
//!   the visible fix of Habitat #1994 / #1711 / #5264 instead of a silent hang.
//!   [`DeadMemberRule::ExcludeAfter`] drops them after a grace time instead, at the price of a
//!   minority side electing its own leader in a partition longer than the grace.
//! - **Quorum**: alive > population / 2 (Habitat's formula, no minimum size: #4759). Groups
//!   below 3 or of even size carry a [`Warning`].
//! - **Known members only**: the population is the members whose service rumor reached this
//!   member. An election may finish before a late member's rumor spread; a leader cut off in
//!   that window with the members it knows keeps a quorum of *its* group (the other side,
//!   knowing all, elects too, in a later term that wins at the heal). `/metrics` shows each
//!   member's `warren_election_population`, so an operator can see that all know all.
//! - **Votes**: a member votes at most once per term (kept in [`Vote`]); its vote goes to the
//!   group's current candidate. Only the candidate finishes, when it has quorum and the votes
//!   of every alive member. Two candidates of one term would need disjoint majorities, so a term
//!   has at most one leader. Habitat instead moves votes to a better candidate of the same term,
//!   which can finish two leaders in one term (the simulation finds it when that is allowed). So
//!   suitability decides who *starts* a term (rank) and which of two simultaneous candidacies
//!   the ring keeps; a better member that arrives later does not contest a running term. A
//!   same-term rumor that replaces a finished one cannot finish, so it starts a new term.
//! - **New term** (term + 1, the starter is the candidate): when the leader or candidate is
//!   confirmed dead, departed, left, or unknown to the ring; when the election made no progress
//!   for `stuck_ticks`; when a leader that stepped down has quorum again. Only a member with
//!   quorum starts one, and members wait `rank * stagger_ticks` (rank 0 = best suitability, then
//!   id) so the best member usually starts it alone. A fresh member with no election known waits
//!   `settle_ticks` (plus its rank's stagger) before starting term 0.
//! - **Leader**: `leader_id` is set only when finished and this member has quorum; a leader that
//!   loses quorum steps down (`ElectionNoQuorum`, reason `LostQuorum`).
//! - **Restart without a vote record**: the member does not vote in any term it saw while
//!   settling (it may have voted in it before), which costs one extra term, never a second vote.
//!
//! # Known limit
//! Quorum is counted over the members the ring knows, and the ring has no agreement on who the
//! members are. A member that joins one side of a partition (or a member that restarts alone
//! with an old member list) is unknown to the other side, which can then hold a majority of a
//! shorter list and elect in the same term. The simulation therefore adds new ids only to a
//! whole ring and restarts members through a live seed; closing this needs membership changes
//! approved by a quorum (as Raft does), which the ring's rumors cannot express today.
mod core;
mod local;
pub mod metrics;
mod quorum;
pub mod shell;
mod types;

#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use self::core::{GroupElection, MAX_TERM, Outputs, RumorRejected};
pub use local::{LocalElections, Step};
pub use quorum::{MemberHealth, Quorum, count};
pub use shell::{Elections, ElectionsOptions, Views, status_label};
pub use types::{DeadMemberRule, ElectionConfig, ElectionStatus, ElectionView, Reason, Vote, Warning};
