//! Joining a ring: which member to join through, when to try again after a failed join, and
//! when to stop trying. Both drivers and the simulator follow this plan; they only arm the
//! timer it names and carry out the join it picks (`Node::join`).
//!
//! # The rules
//! - **Candidates** are the ring members an introducer named (its `welcome`, without this peer),
//!   tried in turn: attempt n goes through candidate `(offset + n) mod len`, so a candidate that
//!   is down or unreachable costs one attempt, not all of them. A driver that has no welcome but
//!   knows other peers (native: sessions on its own introducer) gives those, with an offset of
//!   its own so restarted peers do not all try the same one first.
//! - **Retry.** A failed join is tried again [`JOIN_RETRY_MS`] later, through the next
//!   candidate. Every error is retried, `IdInUse` too: a peer restarted with its id within a
//!   second finds its previous incarnation still in the ring until its neighbours notice the
//!   crash, which takes a few heartbeats; refusing at once would make a quick restart fatal.
//! - **Patience.** Trying stops [`JOIN_PATIENCE_MS`] after the first attempt of a round
//!   ([`Retry::GiveUp`]): the tab's `start` then fails with `join_timeout`; a native peer serves
//!   as a ring of one and merges when it finds the ring (node-native/src/driver.rs). A new
//!   welcome refreshes the candidates without restarting the clock.
//! - **Cut off.** A peer cut off after joining (`Event::Isolated`) starts a round without
//!   patience: it was a member, its data belongs to that ring, and it keeps trying to get back
//!   (the native driver does so as a ring of one that merges, see its docs).
//! - **Done.** A successful join ends the round.
//!
//! Before this plan the drivers drifted: the native peer retried every 2 s without end, the tab
//! gave up after 3 attempts (about 15-35 s, or at once on `IdInUse`), and the simulator retried
//! after 1 s.

use crate::{Id, Time};

/// Pause between a failed join and the next attempt.
pub const JOIN_RETRY_MS: Time = 2_000;
/// How long a round of attempts lasts before the peer gives up joining.
pub const JOIN_PATIENCE_MS: Time = 60_000;

/// At most this many peers are remembered as "said it is no ring member" (oldest forgotten).
const MAX_NOT_MEMBERS: usize = 64;

/// What to do after a failed join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again through `through` at `at` (arm a timer, then call [`JoinPlan::due`]).
    At { at: Time, through: Id },
    /// Patience ran out, or nobody is left to join through.
    GiveUp,
}

/// One peer's join attempts: candidates, turn, and the round's clock.
#[derive(Debug, Clone, Default)]
pub struct JoinPlan {
    candidates: Vec<Id>,
    offset: usize,
    attempts: usize,
    /// Start of the current round (its first attempt); `None` when no round runs.
    since: Option<Time>,
    /// A retry is armed for this time.
    retry_at: Option<Time>,
    /// This round rejoins after isolation: it does not give up.
    rejoin: bool,
    /// Candidates whose latest attempt failed because they said they are no ring member
    /// (`OpError::BootstrapNotJoined`): joining or restarting themselves.
    not_members: Vec<Id>,
}

impl JoinPlan {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the members to join through (an introducer's welcome), without `me`. `offset`
    /// shifts where the rotation starts. The round's clock and the turn keep running, so a
    /// fresh welcome with the same members goes on with the next one.
    pub fn set_candidates(&mut self, peers: impl IntoIterator<Item = Id>, me: Id, offset: usize) {
        self.candidates = peers.into_iter().filter(|p| *p != me).collect();
        self.offset = offset;
    }

    /// The attempt through `through` ended: it said it is no ring member (`not_member`), or
    /// it failed for another reason (or succeeded).
    pub fn answered(&mut self, through: Id, not_member: bool) {
        self.not_members.retain(|p| *p != through);
        if not_member {
            if self.not_members.len() >= MAX_NOT_MEMBERS {
                self.not_members.remove(0);
            }
            self.not_members.push(through);
        }
    }

    /// Every one of `peers` (none: false) said, at its latest attempt in this round, that it
    /// is no ring member: nobody this peer knows of is in a ring, all of them wait for one (a
    /// whole ring restarting at once). The ring's first peer then need not wait out its
    /// patience before serving alone (node-native/src/driver.rs).
    pub fn none_is_member(&self, peers: &[Id]) -> bool {
        !peers.is_empty() && peers.iter().all(|p| self.not_members.contains(p))
    }

    pub fn candidates(&self) -> &[Id] {
        &self.candidates
    }

    pub fn has_candidates(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// Attempts made in this round.
    pub fn attempts(&self) -> usize {
        self.attempts
    }

    /// Whether a round is under way (started and not yet joined or given up).
    pub fn in_round(&self) -> bool {
        self.since.is_some()
    }

    /// The time a retry is armed for, if any.
    pub fn retry_at(&self) -> Option<Time> {
        self.retry_at
    }

    /// The next attempt: the candidate whose turn it is. Starts the round's clock at the first
    /// attempt. `None` when there is nobody to join through.
    pub fn attempt(&mut self, now: Time) -> Option<Id> {
        if self.candidates.is_empty() {
            return None;
        }
        self.since.get_or_insert(now);
        self.retry_at = None;
        let through = self.candidates[(self.offset + self.attempts) % self.candidates.len()];
        self.attempts += 1;
        Some(through)
    }

    /// The join failed at `now`: when to try again, and through whom.
    pub fn failed(&mut self, now: Time) -> Retry {
        let since = *self.since.get_or_insert(now);
        let at = now + JOIN_RETRY_MS;
        if self.candidates.is_empty() || (!self.rejoin && at > since + JOIN_PATIENCE_MS) {
            self.give_up();
            return Retry::GiveUp;
        }
        self.retry_at = Some(at);
        let through = self.candidates[(self.offset + self.attempts) % self.candidates.len()];
        Retry::At { at, through }
    }

    /// The retry timer fired: the attempt to make now, if the retry is still wanted (a join
    /// that succeeded meanwhile, or a newer retry, cancels it).
    pub fn due(&mut self, now: Time) -> Option<Id> {
        match self.retry_at {
            Some(at) if at <= now => self.attempt(now),
            _ => None,
        }
    }

    /// The join succeeded: the round ends.
    pub fn joined(&mut self) {
        self.not_members.clear();
        self.since = None;
        self.retry_at = None;
        self.attempts = 0;
        self.rejoin = false;
    }

    /// Cut off from the ring after joining: a new round without patience starts at `now`; the
    /// first attempt is due [`JOIN_RETRY_MS`] later. Returns that time, or `None` without
    /// candidates.
    pub fn isolated(&mut self, now: Time) -> Option<Time> {
        self.since = Some(now);
        self.attempts = 0;
        self.rejoin = true;
        if self.candidates.is_empty() {
            return None;
        }
        let at = now + JOIN_RETRY_MS;
        self.retry_at = Some(at);
        Some(at)
    }

    /// Stops the round (patience ran out, or the driver serves alone).
    pub fn give_up(&mut self) {
        self.since = None;
        self.retry_at = None;
        self.rejoin = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> Vec<Id> {
        v.iter().map(|x| Id(*x)).collect()
    }

    #[test]
    fn candidates_are_tried_in_turn_without_self() {
        let mut plan = JoinPlan::new();
        plan.set_candidates(ids(&[1, 2, 7, 3]), Id(7), 0);
        assert_eq!(plan.candidates(), &ids(&[1, 2, 3])[..]);
        assert_eq!(plan.attempt(0), Some(Id(1)));
        assert_eq!(
            plan.failed(10),
            Retry::At {
                at: 10 + JOIN_RETRY_MS,
                through: Id(2)
            }
        );
        assert_eq!(
            plan.due(10 + JOIN_RETRY_MS - 1),
            None,
            "not before its time"
        );
        assert_eq!(plan.due(10 + JOIN_RETRY_MS), Some(Id(2)));
        assert_eq!(plan.due(10 + JOIN_RETRY_MS), None, "a timer fires once");
        plan.failed(3_000);
        assert_eq!(plan.due(5_000), Some(Id(3)));
        plan.failed(6_000);
        assert_eq!(plan.due(8_000), Some(Id(1)), "wraps around");
    }

    #[test]
    fn none_is_member_only_when_every_peer_said_so_at_its_latest_attempt() {
        let mut plan = JoinPlan::new();
        let peers = ids(&[1, 2]);
        assert!(
            !plan.none_is_member(&[]),
            "nobody known is not 'nobody there'"
        );
        plan.answered(Id(1), true);
        assert!(!plan.none_is_member(&peers), "2 was not asked");
        plan.answered(Id(2), true);
        assert!(plan.none_is_member(&peers));
        plan.answered(Id(1), false);
        assert!(
            !plan.none_is_member(&peers),
            "1's latest attempt failed otherwise"
        );
        plan.answered(Id(1), true);
        plan.give_up();
        assert!(
            plan.none_is_member(&peers),
            "a given-up round keeps what it heard"
        );
        plan.joined();
        assert!(!plan.none_is_member(&peers), "a join forgets it");
    }

    #[test]
    fn an_offset_shifts_the_first_candidate() {
        let mut plan = JoinPlan::new();
        plan.set_candidates(ids(&[1, 2, 3]), Id(9), 5);
        assert_eq!(plan.attempt(0), Some(Id(3)));
    }

    #[test]
    fn gives_up_after_patience_not_after_a_count() {
        let mut plan = JoinPlan::new();
        plan.set_candidates(ids(&[1]), Id(9), 0);
        let mut now = 1_000;
        plan.attempt(now);
        let mut attempts = 1;
        loop {
            // Each attempt fails after the core's join timeout (two op timeouts, 10 s) or at once.
            now += if attempts % 2 == 0 { 10_000 } else { 100 };
            match plan.failed(now) {
                Retry::At { at, .. } => {
                    assert!(at <= 1_000 + JOIN_PATIENCE_MS);
                    now = at;
                    assert!(plan.due(now).is_some());
                    attempts += 1;
                }
                Retry::GiveUp => break,
            }
        }
        assert!(now + JOIN_RETRY_MS > 1_000 + JOIN_PATIENCE_MS);
        assert!(
            attempts > 3,
            "a tab gave up after 3; the plan keeps trying: {attempts}"
        );
        assert!(!plan.in_round());
        // A new round (say a new welcome after the tab called start again) starts a new clock.
        assert_eq!(plan.attempt(now), Some(Id(1)));
        assert!(matches!(plan.failed(now + 1), Retry::At { .. }));
    }

    #[test]
    fn success_cancels_an_armed_retry() {
        let mut plan = JoinPlan::new();
        plan.set_candidates(ids(&[1, 2]), Id(9), 0);
        plan.attempt(0);
        plan.failed(1);
        plan.joined();
        assert_eq!(plan.due(1 + JOIN_RETRY_MS), None);
        assert!(!plan.in_round());
    }

    #[test]
    fn without_candidates_there_is_nothing_to_retry() {
        let mut plan = JoinPlan::new();
        assert_eq!(plan.attempt(0), None);
        assert_eq!(plan.failed(0), Retry::GiveUp);
        assert_eq!(plan.isolated(0), None);
    }

    #[test]
    fn isolation_starts_a_new_round_after_a_pause() {
        let mut plan = JoinPlan::new();
        plan.set_candidates(ids(&[4, 5]), Id(9), 0);
        plan.attempt(0);
        plan.joined();
        let at = plan.isolated(100_000).expect("candidates");
        assert_eq!(at, 100_000 + JOIN_RETRY_MS);
        assert_eq!(plan.due(at), Some(Id(4)));
        // A member cut off keeps trying to get back, past the newcomer's patience.
        let mut now = at;
        while now < at + 3 * JOIN_PATIENCE_MS {
            now += 5_000;
            assert!(matches!(plan.failed(now), Retry::At { .. }));
            assert!(plan.due(now + JOIN_RETRY_MS).is_some());
        }
        plan.joined();
        plan.attempt(now);
        assert_eq!(
            plan.failed(now + JOIN_PATIENCE_MS + 1),
            Retry::GiveUp,
            "a new round after joining has patience again"
        );
    }
}
