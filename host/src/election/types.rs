//! What goes in and out of an election: config, vote record, the census view and its reasons.

use std::fmt;

use crate::ring::Health;

/// How a member the ring has confirmed dead counts in the population (quorum denominator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadMemberRule {
    /// A confirmed member counts until it is departed (`warren sup depart`). Safe under any
    /// partition: a side can never out-count members it only believes dead. A replaced member's
    /// old id blocks quorum until it is departed, and the view names it (no silent hang).
    CountUntilDeparted,
    /// A member confirmed for `ticks` ticks no longer counts. Nothing waits for an operator,
    /// but a partition longer than `ticks` lets its minority side elect a leader of its own
    /// (in a higher term; the heal resolves it).
    ExcludeAfter { ticks: u64 },
}

/// Per-group tuning; every duration is in ticks (the shell ticks once per gossip round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionConfig {
    pub dead_rule: DeadMemberRule,
    /// A fresh core listens this long before it starts an election of its own, so a joiner
    /// adopts the running term instead of contesting it.
    pub settle_ticks: u64,
    /// An election that makes no progress this long is abandoned for a new term.
    pub stuck_ticks: u64,
    /// Extra wait per rank (members ordered by suitability, then id) before starting a new
    /// term, so the best member usually starts it alone and no two terms duel.
    pub stagger_ticks: u64,
    /// The first election of a group waits for this many members (this one included), so the
    /// first supervisors of a group being brought up do not elect alone. Once a term finished,
    /// a smaller group goes on electing (Habitat #4759).
    pub min_members: usize,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            dead_rule: DeadMemberRule::CountUntilDeparted,
            settle_ticks: 3,
            stuck_ticks: 12,
            stagger_ticks: 4,
            min_members: 3,
        }
    }
}

/// This member's vote: at most one candidate per term. The shell persists it (with the ring's
/// rumors) and hands it back on restart, so a restarted member never votes twice in a term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    pub term: u64,
    pub candidate: String,
}

/// Habitat's census `election_status` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ElectionStatus {
    None,
    ElectionInProgress,
    ElectionNoQuorum,
    ElectionFinished,
}

/// Why the group is where it is: one log line ("why it waits") per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// This member knows of others but no peer's state has reached it since it started: what
    /// it restored from disk (its own old term included) may be long superseded.
    Rejoining,
    /// Listening for the group's election before starting one.
    Settling,
    /// No election yet, and too few members to start the first one.
    TooFew { members: usize, need: usize },
    /// No election known: this member started one.
    Started,
    /// The leader is confirmed dead, departed, left or unknown to the ring.
    LeaderGone { leader: String, health: Option<Health> },
    /// The candidate is confirmed dead, departed, left or unknown.
    CandidateGone { candidate: String },
    /// The election made no progress for `ticks` ticks (split votes, lost candidate).
    Stuck { ticks: u64 },
    /// This leader lost quorum, stepped down, and has quorum again.
    RegainedQuorum,
    /// Waiting, as a lower-ranked member, for a better one to start the new term.
    Deferring { rank: usize, ticks_left: u64 },
    /// This candidate waits for the votes of these alive members.
    WaitingForVotes { missing: Vec<String> },
    /// This member voted; the candidate has not finished yet.
    Voted { candidate: String },
    /// This member voted for someone else in this term and waits for a new term.
    VotedOther { candidate: String },
    /// Fewer than a majority of the population is alive in this member's view.
    NoQuorum { alive: usize, population: usize, counted_dead: Vec<String> },
    /// This member was the leader and lost quorum: it stepped down.
    LostQuorum { alive: usize, population: usize },
    /// The election finished.
    Elected { leader: String },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Rejoining => {
                write!(
                    f,
                    "waiting for a peer's state before electing (what this member restored may be out of date)"
                )
            }
            Reason::Settling => write!(f, "listening for the group's election before starting one"),
            Reason::TooFew { members, need } => {
                write!(f, "waiting for {need} members to start the first election; the group has {members}")
            }
            Reason::Started => write!(f, "no election known: started one"),
            Reason::LeaderGone { leader, health } => match health {
                Some(h) => write!(f, "leader {leader} is {}: new term", h.label()),
                None => write!(f, "leader {leader} is unknown to the ring: new term"),
            },
            Reason::CandidateGone { candidate } => {
                write!(f, "candidate {candidate} is gone: new term")
            }
            Reason::Stuck { ticks } => write!(f, "no progress for {ticks} ticks: new term"),
            Reason::RegainedQuorum => write!(f, "quorum is back after stepping down: new term"),
            Reason::Deferring { rank, ticks_left } => write!(
                f,
                "a new term is needed; {rank} better member(s) may start it, waiting {ticks_left} more tick(s)"
            ),
            Reason::WaitingForVotes { missing } => {
                write!(f, "waiting for the votes of {}", missing.join(", "))
            }
            Reason::Voted { candidate } => write!(f, "voted for {candidate}, waiting for it to finish"),
            Reason::VotedOther { candidate } => write!(
                f,
                "already voted in this term for another member than {candidate}: waiting for a new term"
            ),
            Reason::NoQuorum { alive, population, counted_dead } => {
                write!(f, "no quorum: {alive} of {population} alive, need more than {}", population / 2)?;
                if !counted_dead.is_empty() {
                    write!(
                        f,
                        "; confirmed-dead members still count until departed: {}",
                        counted_dead.join(", ")
                    )?;
                }
                Ok(())
            }
            Reason::LostQuorum { alive, population } => {
                write!(f, "leader lost quorum ({alive} of {population} alive): stepped down")
            }
            Reason::Elected { leader } => write!(f, "{leader} is the leader"),
        }
    }
}

/// A population that cannot survive a failure well: worth a warning, never an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warning {
    /// Fewer than 3 members: one failure loses quorum (2) or there is no redundancy (1).
    Small(usize),
    /// An even count tolerates no more failures than one member less would.
    Even(usize),
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::Small(n) => {
                write!(f, "group has {n} member(s): an election needs 3 to survive a failure")
            }
            Warning::Even(n) => {
                write!(f, "group has {n} members: an even count tolerates no more failures than {}", n - 1)
            }
        }
    }
}

/// What the census shows for the group on this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionView {
    pub status: ElectionStatus,
    pub term: u64,
    /// Set only when `status` is `ElectionFinished`.
    pub leader_id: Option<String>,
    pub reason: Reason,
    pub warning: Option<Warning>,
    /// Alive members and the population they are counted against (quorum: alive >
    /// population / 2), this member included.
    pub alive: usize,
    pub population: usize,
}

impl ElectionView {
    pub fn has_quorum(&self) -> bool {
        self.alive > self.population / 2
    }

    pub(crate) fn initial() -> Self {
        ElectionView {
            status: ElectionStatus::None,
            term: 0,
            leader_id: None,
            reason: Reason::Settling,
            warning: None,
            alive: 1,
            population: 1,
        }
    }

    /// A group wanted while this member waits for a peer's state: no status, no leader.
    pub(crate) fn rejoining() -> Self {
        ElectionView { reason: Reason::Rejoining, ..Self::initial() }
    }
}
