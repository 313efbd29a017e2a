//! Per-replica-set Bully elections (Garcia-Molina, "Elections in a Distributed Computing
//! System", IEEE ToC 1982).
//!
//! A key's replica set is its owner plus the next k-1 successors; the member with the highest
//! id coordinates writes for every key of that set (it stamps the Lamport timestamps). Keys that
//! share a replica set share one election, so 100k keys cost as many elections as there are
//! distinct sets (about one per peer), and the result is cached per set (bounded).
//!
//! The algorithm, per set, at member `p`:
//! - **start**: if `p` has the highest id of the set, it is the leader: send `Coordinator` to
//!   every other member. Otherwise send `Election` to every higher member and wait
//!   `answer_timeout_ms`.
//! - **Election from a lower member**: answer `Answer`, and start an own election unless one is
//!   running.
//! - **Answer**: a higher member is alive and takes over: wait `coordinator_timeout_ms` for its
//!   `Coordinator`; if none comes, start again.
//! - **no Answer in time**: `p` is the highest live member: it becomes leader and sends
//!   `Coordinator` to all.
//! - **Coordinator**: record the leader for the set.
//!
//! Deviations: sets are named by their sorted member list (a membership change is a new set, so
//! a stale leader never survives a change of the set); the cache entry of a set is dropped when
//! its leader is reported failed ([`Elections::forget_peer`]).

use crate::Time;
use crate::id::Id;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Election messages between the members of one replica set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "e", content = "c", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ElectionMsg {
    Election { set: Vec<Id> },
    Answer { set: Vec<Id> },
    Coordinator { set: Vec<Id>, leader: Id },
}

/// Timeouts of the algorithm.
#[derive(Debug, Clone, Copy)]
pub struct ElectionConfig {
    pub answer_timeout_ms: u64,
    pub coordinator_timeout_ms: u64,
    /// Bound on cached leaders (sets).
    pub cache_capacity: usize,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        Self {
            answer_timeout_ms: 500,
            coordinator_timeout_ms: 1_500,
            cache_capacity: 1_024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for an `Answer` from a higher member.
    AwaitAnswer { deadline: Time },
    /// A higher member answered; waiting for its `Coordinator`.
    AwaitCoordinator { deadline: Time },
}

/// What an election step decided, for the node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ElectionOutcome {
    /// The set has a leader now (possibly this node).
    Elected { set: Vec<Id>, leader: Id },
}

/// Messages to send and, when decided, the outcome of one election step.
pub type ElectionStep = (Vec<(Id, ElectionMsg)>, Option<ElectionOutcome>);

/// All elections this node takes part in.
#[derive(Debug)]
pub struct Elections {
    me: Id,
    config: ElectionConfig,
    running: BTreeMap<Vec<Id>, Phase>,
    leaders: BTreeMap<Vec<Id>, Id>,
    /// Insertion order of `leaders`, for eviction.
    order: VecDeque<Vec<Id>>,
    /// Elections started (metrics).
    pub started: u64,
    /// Times this node became a leader (metrics).
    pub won: u64,
    /// Elections not started because [`MAX_RUNNING`] were running (metrics).
    pub refused_full: u64,
}

/// Most elections running at once. A peer takes part in about k sets (its own range's and
/// its k-1 predecessors'), a few more during churn; a hostile peer naming sets must not grow
/// the table without bound (issue 11; node/replicate.rs also refuses sets that are not plausible).
pub const MAX_RUNNING: usize = 64;

/// Normalizes a member list into a set name: sorted, deduplicated.
pub fn set_of(members: &[Id]) -> Vec<Id> {
    let mut set = members.to_vec();
    set.sort_unstable();
    set.dedup();
    set
}

impl Elections {
    pub fn new(me: Id, config: ElectionConfig) -> Self {
        Self {
            me,
            config,
            running: BTreeMap::new(),
            leaders: BTreeMap::new(),
            order: VecDeque::new(),
            started: 0,
            won: 0,
            refused_full: 0,
        }
    }

    /// The cached leader of a set.
    pub fn leader(&self, set: &[Id]) -> Option<Id> {
        self.leaders.get(set).copied()
    }

    pub fn is_running(&self, set: &[Id]) -> bool {
        self.running.contains_key(set)
    }

    /// Starts an election for `set` (which must contain this node). Returns messages to send.
    pub fn start(
        &mut self,
        set: &[Id],
        now: Time,
    ) -> (Vec<(Id, ElectionMsg)>, Option<ElectionOutcome>) {
        let set = set_of(set);
        if self.running.contains_key(&set) {
            return (Vec::new(), None);
        }
        if self.running.len() >= MAX_RUNNING {
            self.refused_full += 1;
            return (Vec::new(), None);
        }
        self.started += 1;
        let higher: Vec<Id> = set.iter().copied().filter(|m| *m > self.me).collect();
        if higher.is_empty() {
            return self.win(set);
        }
        self.running.insert(
            set.clone(),
            Phase::AwaitAnswer {
                deadline: now + self.config.answer_timeout_ms,
            },
        );
        let msgs = higher
            .into_iter()
            .map(|m| (m, ElectionMsg::Election { set: set.clone() }))
            .collect();
        (msgs, None)
    }

    fn win(&mut self, set: Vec<Id>) -> ElectionStep {
        self.won += 1;
        self.running.remove(&set);
        self.remember(set.clone(), self.me);
        let msgs = set
            .iter()
            .copied()
            .filter(|m| *m != self.me)
            .map(|m| {
                (
                    m,
                    ElectionMsg::Coordinator {
                        set: set.clone(),
                        leader: self.me,
                    },
                )
            })
            .collect();
        (
            msgs,
            Some(ElectionOutcome::Elected {
                set,
                leader: self.me,
            }),
        )
    }

    fn remember(&mut self, set: Vec<Id>, leader: Id) {
        if !self.leaders.contains_key(&set) {
            if self.leaders.len() >= self.config.cache_capacity
                && let Some(oldest) = self.order.pop_front()
            {
                self.leaders.remove(&oldest);
            }
            self.order.push_back(set.clone());
        }
        self.leaders.insert(set, leader);
    }

    /// An election message from `from`. Messages about sets this node is not in, or claims that
    /// contradict the algorithm (a leader lower than a member that is alive here: this node),
    /// are ignored and reported as `Err(())` for counting.
    #[allow(clippy::result_unit_err)]
    pub fn on_message(
        &mut self,
        from: Id,
        msg: ElectionMsg,
        now: Time,
    ) -> Result<ElectionStep, ()> {
        match msg {
            ElectionMsg::Election { set } => {
                let set = set_of(&set);
                if !set.contains(&self.me) || !set.contains(&from) || from >= self.me {
                    return Err(());
                }
                let mut msgs = vec![(from, ElectionMsg::Answer { set: set.clone() })];
                let (more, outcome) = self.start(&set, now);
                msgs.extend(more);
                Ok((msgs, outcome))
            }
            ElectionMsg::Answer { set } => {
                let set = set_of(&set);
                if from <= self.me || !set.contains(&from) {
                    return Err(());
                }
                if let Some(phase) = self.running.get_mut(&set) {
                    *phase = Phase::AwaitCoordinator {
                        deadline: now + self.config.coordinator_timeout_ms,
                    };
                }
                Ok((Vec::new(), None))
            }
            ElectionMsg::Coordinator { set, leader } => {
                let set = set_of(&set);
                if leader != from || !set.contains(&leader) || !set.contains(&self.me) {
                    return Err(());
                }
                if leader < self.me {
                    // We are alive and higher: Bully says we take over.
                    self.leaders.remove(&set);
                    return Ok(self.start(&set, now));
                }
                self.running.remove(&set);
                self.remember(set.clone(), leader);
                Ok((Vec::new(), Some(ElectionOutcome::Elected { set, leader })))
            }
        }
    }

    /// Advances timeouts: unanswered elections are won, missing coordinators restart.
    pub fn on_timeout(&mut self, now: Time) -> (Vec<(Id, ElectionMsg)>, Vec<ElectionOutcome>) {
        let due: Vec<(Vec<Id>, Phase)> = self
            .running
            .iter()
            .filter(|(_, p)| match p {
                Phase::AwaitAnswer { deadline } | Phase::AwaitCoordinator { deadline } => {
                    *deadline <= now
                }
            })
            .map(|(s, p)| (s.clone(), *p))
            .collect();
        let (mut msgs, mut outcomes) = (Vec::new(), Vec::new());
        for (set, phase) in due {
            self.running.remove(&set);
            let (m, o) = match phase {
                Phase::AwaitAnswer { .. } => self.win(set),
                Phase::AwaitCoordinator { .. } => self.start(&set, now),
            };
            msgs.extend(m);
            outcomes.extend(o);
        }
        (msgs, outcomes)
    }

    pub fn next_timeout(&self) -> Option<Time> {
        self.running
            .values()
            .map(|p| match p {
                Phase::AwaitAnswer { deadline } | Phase::AwaitCoordinator { deadline } => *deadline,
            })
            .min()
    }

    /// Drops every cached leadership of a failed peer.
    pub fn forget_peer(&mut self, peer: Id) {
        self.leaders.retain(|_, leader| *leader != peer);
        self.order.retain(|set| !set.contains(&peer));
    }

    pub fn cached_sets(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one set's election among live members to quiescence (messages delivered at once).
    fn elect(members: &[Id], live: &[Id], starter: Id) -> BTreeMap<Id, Option<Id>> {
        let mut nodes: BTreeMap<Id, Elections> = live
            .iter()
            .map(|m| (*m, Elections::new(*m, ElectionConfig::default())))
            .collect();
        let mut queue: VecDeque<(Id, Id, ElectionMsg)> = VecDeque::new();
        let (msgs, _) = nodes.get_mut(&starter).unwrap().start(members, 0);
        queue.extend(msgs.into_iter().map(|(to, m)| (starter, to, m)));
        let mut now = 0;
        for _ in 0..100 {
            while let Some((from, to, m)) = queue.pop_front() {
                if let Some(n) = nodes.get_mut(&to)
                    && let Ok((msgs, _)) = n.on_message(from, m, now)
                {
                    queue.extend(msgs.into_iter().map(|(t, m)| (to, t, m)));
                }
            }
            now += 100;
            for (id, n) in nodes.iter_mut() {
                let (msgs, _) = n.on_timeout(now);
                queue.extend(msgs.into_iter().map(|(t, m)| (*id, t, m)));
            }
        }
        nodes
            .iter()
            .map(|(id, n)| (*id, n.leader(members)))
            .collect()
    }

    #[test]
    fn highest_live_member_wins() {
        let set = set_of(&[Id(5), Id(9), Id(2)]);
        let leaders = elect(&set, &set, Id(2));
        assert!(leaders.values().all(|l| *l == Some(Id(9))), "{leaders:?}");
    }

    #[test]
    fn dead_highest_member_is_skipped() {
        let set = set_of(&[Id(5), Id(9), Id(2)]);
        let live = [Id(2), Id(5)];
        let leaders = elect(&set, &live, Id(2));
        assert!(leaders.values().all(|l| *l == Some(Id(5))), "{leaders:?}");
    }
}
