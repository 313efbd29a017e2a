//! The node's periodic timers as one table indexed by an enum (the shape of quinn-proto's
//! `TimerTable`): each timer is a deadline or `Time::MAX` (stopped), and the earliest of them is
//! part of [`crate::Node::next_timeout`]. Per-operation deadlines and the sub-machines' own
//! timers (elections, floods, coordinations) stay with their owners.

use crate::Time;

/// A periodic duty of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Ping the successors and predecessor (failure detection).
    Heartbeat,
    /// Ask the successor for its neighbours; notify it.
    Stabilize,
    /// Start a sweep over the finger table.
    FixFingers,
    /// Look our own id up, to find a ring that skips us.
    SelfCheck,
    /// Open an anti-entropy round with a replica.
    AntiEntropy,
    /// Probe a peer we lost, to heal splits.
    Probe,
    /// Renew our watches, drop ended subscriptions (`crate::watch`).
    Watch,
    /// Write the keys we hold outside their replica set back to it (global maintenance,
    /// `node/sync.rs`).
    Strays,
}

const COUNT: usize = 8;

impl Timer {
    fn index(self) -> usize {
        match self {
            Self::Heartbeat => 0,
            Self::Stabilize => 1,
            Self::FixFingers => 2,
            Self::SelfCheck => 3,
            Self::AntiEntropy => 4,
            Self::Probe => 5,
            Self::Watch => 6,
            Self::Strays => 7,
        }
    }
}

/// Deadlines of every [`Timer`]; all stopped at first.
#[derive(Debug, Clone)]
pub(crate) struct TimerTable {
    at: [Time; COUNT],
}

impl Default for TimerTable {
    fn default() -> Self {
        Self {
            at: [Time::MAX; COUNT],
        }
    }
}

impl TimerTable {
    pub(crate) fn get(&self, timer: Timer) -> Time {
        self.at[timer.index()]
    }

    pub(crate) fn set(&mut self, timer: Timer, at: Time) {
        self.at[timer.index()] = at;
    }

    /// Brings `timer` forward to `at` if it is due later.
    pub(crate) fn set_earlier(&mut self, timer: Timer, at: Time) {
        let slot = &mut self.at[timer.index()];
        *slot = (*slot).min(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.set(timer, Time::MAX);
    }

    pub(crate) fn stop_all(&mut self) {
        self.at = [Time::MAX; COUNT];
    }

    pub(crate) fn is_due(&self, timer: Timer, now: Time) -> bool {
        now >= self.get(timer)
    }

    /// The earliest deadline (`Time::MAX` when all are stopped).
    pub(crate) fn next(&self) -> Time {
        self.at.iter().copied().min().unwrap_or(Time::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_running_timer_is_next() {
        let mut t = TimerTable::default();
        assert_eq!(t.next(), Time::MAX);
        t.set(Timer::Probe, 50);
        t.set(Timer::Heartbeat, 20);
        t.set_earlier(Timer::Heartbeat, 30);
        assert_eq!((t.get(Timer::Heartbeat), t.next()), (20, 20));
        assert!(t.is_due(Timer::Heartbeat, 20) && !t.is_due(Timer::Probe, 49));
        t.stop(Timer::Heartbeat);
        assert_eq!(t.next(), 50);
        t.stop_all();
        assert_eq!(t.next(), Time::MAX);
    }
}
