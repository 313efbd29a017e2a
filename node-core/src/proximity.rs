//! Proximity neighbour selection: round trips this node measured itself, candidates for near
//! fingers, and the rule that picks one (`Config::proximity_fingers`).
//!
//! Chord lets finger `i` be any member of its interval `[start_i, start_{i+1})`: a hop through
//! any of them divides the remaining distance as well (Gummadi et al., "The impact of DHT
//! routing geometry on resilience and proximity", SIGCOMM 2003). Among the candidates the node
//! knows of, it routes through the one with the lowest round trip (DHash++, Dabek et al., NSDI
//! 2004, section 4.3, with the successors of the finger as candidates). Deviations:
//! - round trips come only from this node's own links: the finger check (`GetNeighbors` ->
//!   `Neighbors`, one per linked finger per sweep) and pings (heartbeats, and one ping over each
//!   candidate's link). A candidate not linked gets one link to be measured ("trial"); a trial
//!   link that is not picked is closed by the idle rule like any unused link. No coordinates
//!   and no third-party reports, so a peer cannot make itself look near;
//! - the candidates of finger `i` are the exact finger and the members of the interval that its
//!   successor list names (learned from the check's answer): up to `successor_list_len` + 1;
//! - a round trip is the smallest sample seen (queueing only adds), kept for at most
//!   [`MAX_RTTS`] peers;
//! - a browser tab keeps this off: each trial is a peer connection, and a tab may create only
//!   so many (`peer::budget`).
//!
//! The exact finger stays in the ring state for ownership answers (`RingState::known_owner`);
//! the pick lives beside it (`RingState::set_near`).

use crate::Time;
use crate::guard::evict_oldest_when_full;
use crate::id::Id;
use std::collections::{BTreeMap, VecDeque};

/// Peers whose round trip is remembered.
pub const MAX_RTTS: usize = 512;
/// Candidates waiting to be measured.
pub const MAX_QUEUED: usize = 256;
/// Candidates measured at once (each may be a new link).
pub const MAX_TRIALS: usize = 4;
/// Pings whose answer is awaited.
const MAX_PINGS: usize = 64;

/// The node's proximity state.
#[derive(Debug, Default, Clone)]
pub struct Proximity {
    /// Smallest round trip measured, and when it was last measured.
    rtts: BTreeMap<Id, (u64, Time)>,
    /// Pings sent: nonce -> (peer, when).
    pings: BTreeMap<u64, (Id, Time)>,
    /// Candidates not measured yet: (finger index, peer).
    queued: VecDeque<(usize, Id)>,
    /// Candidates being measured: peer -> (finger index, since).
    trials: BTreeMap<Id, (usize, Time)>,
}

impl Proximity {
    /// The round trip measured to `peer`, if any.
    pub fn rtt(&self, peer: Id) -> Option<u64> {
        self.rtts.get(&peer).map(|(rtt, _)| *rtt)
    }

    /// Records one round-trip sample.
    pub fn record(&mut self, peer: Id, rtt: u64, now: Time) {
        if !self.rtts.contains_key(&peer) {
            evict_oldest_when_full(&mut self.rtts, MAX_RTTS, |(_, at)| *at);
        }
        let entry = self.rtts.entry(peer).or_insert((rtt, now));
        *entry = (entry.0.min(rtt), now);
    }

    /// Remembers a ping sent to `peer` (bounded: the oldest is forgotten).
    pub fn ping_sent(&mut self, nonce: u64, peer: Id, now: Time) {
        evict_oldest_when_full(&mut self.pings, MAX_PINGS, |(_, at)| *at);
        self.pings.insert(nonce, (peer, now));
    }

    /// A pong from `from`: records its round trip when it answers our ping. Returns the finger
    /// index of the trial it completes, if any.
    pub fn pong(&mut self, from: Id, nonce: u64, now: Time) -> Option<Option<usize>> {
        let (peer, sent) = self.pings.get(&nonce).copied()?;
        if peer != from {
            return None;
        }
        self.pings.remove(&nonce);
        self.record(from, now.saturating_sub(sent), now);
        Some(self.trials.remove(&from).map(|(i, _)| i))
    }

    /// Queues `peer` as a candidate for finger `i`, unless it is measured, queued or being
    /// measured already.
    pub fn offer(&mut self, i: usize, peer: Id) {
        if self.rtts.contains_key(&peer)
            || self.trials.contains_key(&peer)
            || self.queued.len() >= MAX_QUEUED
            || self.queued.iter().any(|(_, p)| *p == peer)
        {
            return;
        }
        self.queued.push_back((i, peer));
    }

    /// Drops trials older than `timeout`, then takes queued candidates while fewer than
    /// [`MAX_TRIALS`] are being measured; returns the new trials.
    pub fn next_trials(&mut self, now: Time, timeout: u64) -> Vec<(usize, Id)> {
        self.trials.retain(|_, (_, since)| now < *since + timeout);
        let mut started = Vec::new();
        while self.trials.len() < MAX_TRIALS {
            let Some((i, peer)) = self.queued.pop_front() else {
                break;
            };
            if self.rtts.contains_key(&peer) {
                continue;
            }
            self.trials.insert(peer, (i, now));
            started.push((i, peer));
        }
        started
    }

    /// Whether `peer` is being measured.
    pub fn is_trial(&self, peer: Id) -> bool {
        self.trials.contains_key(&peer)
    }

    /// Forgets everything about `peer` but its round trip (a link that went down).
    pub fn link_down(&mut self, peer: Id) {
        self.trials.remove(&peer);
    }

    /// Every peer with a measured round trip, with it.
    pub fn measured(&self) -> impl Iterator<Item = (Id, u64)> + '_ {
        self.rtts.iter().map(|(p, (rtt, _))| (*p, *rtt))
    }
}

/// The near finger for an interval: the candidate with the lowest measured round trip, when
/// it is lower than the exact finger's (ties keep the exact finger, as does an exact finger
/// not measured yet). `None` means the exact finger serves.
pub fn pick_near(
    exact: Option<(Id, u64)>,
    candidates: impl IntoIterator<Item = (Id, u64)>,
) -> Option<Id> {
    let (exact, exact_rtt) = exact?;
    candidates
        .into_iter()
        .filter(|(p, rtt)| *p != exact && *rtt < exact_rtt)
        .min_by_key(|(p, rtt)| (*rtt, *p))
        .map(|(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_smallest_sample() {
        let mut p = Proximity::default();
        p.record(Id(1), 40, 0);
        p.record(Id(1), 25, 1);
        p.record(Id(1), 60, 2);
        assert_eq!(p.rtt(Id(1)), Some(25));
    }

    #[test]
    fn picks_the_nearest_only_when_nearer_than_the_exact_finger() {
        assert_eq!(
            pick_near(Some((Id(5), 30)), [(Id(6), 40), (Id(7), 20), (Id(8), 10)]),
            Some(Id(8))
        );
        assert_eq!(
            pick_near(Some((Id(5), 30)), [(Id(6), 40), (Id(7), 30)]),
            None
        );
        assert_eq!(pick_near(None, [(Id(6), 1)]), None);
    }

    #[test]
    fn trials_are_bounded_and_pongs_complete_them() {
        let mut p = Proximity::default();
        for k in 0..10 {
            p.offer(1, Id(100 + k));
        }
        let started = p.next_trials(0, 1_000);
        assert_eq!(started.len(), MAX_TRIALS);
        p.ping_sent(7, Id(100), 10);
        assert_eq!(
            p.pong(Id(101), 7, 30),
            None,
            "a pong from another peer is ignored"
        );
        assert_eq!(p.pong(Id(100), 7, 30), Some(Some(1)));
        assert_eq!(p.rtt(Id(100)), Some(20));
        assert_eq!(p.next_trials(40, 1_000).len(), 1);
        // Trials time out.
        assert_eq!(p.next_trials(2_000, 1_000).len(), MAX_TRIALS);
    }
}
