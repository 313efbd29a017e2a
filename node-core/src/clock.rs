//! Lamport logical clock: the timestamps that order writes for last-writer-wins.
//!
//! Protocol (L. Lamport, "Time, Clocks, and the Ordering of Events in a Distributed System",
//! CACM 1978, rules IR1/IR2): a process advances its counter before every local event
//! ([`LamportClock::tick`]) and, on receiving a message stamped `t`, sets its counter to
//! `max(local, t) + 1` ([`LamportClock::observe`]). A key's leader ticks once per write and
//! stamps the write with the result; together with the writer id this gives the total
//! `(lamport_ts, writer_id)` order used by [`crate::store`].
//!
//! Deviations and additions:
//! - Arithmetic saturates at `u64::MAX` instead of wrapping, so the clock never decreases. A
//!   saturated clock stops producing fresh timestamps; [`LamportClock::accepts`] lets the caller
//!   refuse remote timestamps absurdly far ahead, so one buggy or hostile peer cannot push the
//!   ring's clocks to the ceiling.
//! - [`LamportClock::restore_at_least`] exists for restarts: a peer that persisted data seeds its
//!   clock with the highest timestamp it has stored, so it never stamps two writes alike.
//!
//! The clock is plain data: no wall time, no I/O, deterministic.

use serde::{Deserialize, Serialize};

/// A Lamport clock. Starts at 0; the first [`tick`](Self::tick) returns 1.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LamportClock {
    now: u64,
}

impl LamportClock {
    /// A clock at 0.
    pub const fn new() -> Self {
        Self { now: 0 }
    }

    /// A clock whose next [`tick`](Self::tick) returns `at + 1` (saturating).
    pub const fn starting_at(at: u64) -> Self {
        Self { now: at }
    }

    /// The latest timestamp issued or observed. Does not advance the clock.
    pub const fn current(&self) -> u64 {
        self.now
    }

    /// Advances the clock for a local event (e.g. stamping a write) and returns the new time.
    pub fn tick(&mut self) -> u64 {
        self.now = self.now.saturating_add(1);
        self.now
    }

    /// Merges a timestamp received from a peer: the clock becomes `max(local, remote) + 1`
    /// (saturating), which is returned.
    pub fn observe(&mut self, remote: u64) -> u64 {
        self.now = self.now.max(remote).saturating_add(1);
        self.now
    }

    /// Raises the clock to at least `at` without counting an event; never lowers it. Use after a
    /// restart with the highest timestamp found in persisted data, so no timestamp is reused.
    pub fn restore_at_least(&mut self, at: u64) {
        self.now = self.now.max(at);
    }

    /// Whether a remote timestamp is within `max_ahead` of this clock. The caller SHOULD drop
    /// (and count) messages whose timestamp fails this check instead of observing them: a single
    /// timestamp near `u64::MAX` would otherwise saturate every clock it reaches.
    pub const fn accepts(&self, remote: u64, max_ahead: u64) -> bool {
        remote <= self.now.saturating_add(max_ahead)
    }

    /// True once the clock has reached `u64::MAX` and can no longer issue fresh timestamps.
    pub const fn is_saturated(&self) -> bool {
        self.now == u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_counts_local_events() {
        let mut clock = LamportClock::new();
        assert_eq!(clock.tick(), 1);
        assert_eq!(clock.tick(), 2);
        assert_eq!(clock.current(), 2);
    }

    #[test]
    fn observe_jumps_past_the_remote() {
        let mut clock = LamportClock::starting_at(5);
        assert_eq!(clock.observe(10), 11);
        assert_eq!(
            clock.observe(3),
            12,
            "an older remote still counts as an event"
        );
    }

    #[test]
    fn restore_never_lowers() {
        let mut clock = LamportClock::starting_at(7);
        clock.restore_at_least(3);
        assert_eq!(clock.current(), 7);
        clock.restore_at_least(40);
        assert_eq!(clock.tick(), 41);
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let mut clock = LamportClock::new();
        assert_eq!(clock.observe(u64::MAX), u64::MAX);
        assert!(clock.is_saturated());
        assert_eq!(clock.tick(), u64::MAX);
    }

    #[test]
    fn accepts_bounds_the_jump() {
        let clock = LamportClock::starting_at(100);
        assert!(clock.accepts(150, 50));
        assert!(!clock.accepts(151, 50));
        assert!(LamportClock::starting_at(u64::MAX - 1).accepts(u64::MAX, 10));
    }
}
