//! A browser tab may create only so many WebRTC peer connections in its lifetime: Chromium
//! refuses `new RTCPeerConnection` after 500 in one tab ([`TAB_CONNECTION_LIMIT`]), and a peer
//! that can no longer link fails silently. The budget turns that into two steps a tab can act
//! on: [`BudgetStep::Low`] at 80% of the limit (say so), [`BudgetStep::Exhausted`] shortly
//! before it (leave the ring gracefully while links still work, so the neighbours take over at
//! once instead of waiting for a failure detector).
//!
//! What keeps a tab far below the limit is its link policy (node-core/src/node/maintain.rs,
//! `wanted_links` and `probe_lost_peer`). A budgeted peer ([`budgeted_links`]) lets the gap
//! between its probes of lost peers grow while they find nobody (under churn those peers
//! crashed; each probe is a connection), links only the successors its replicas need and
//! reuses open links for its fingers. Natives keep probing every 5 s, which heals partitions
//! sooner.
//! `chord-experiment --mode sim-churn` reports connections per peer-hour, and per hour for the
//! peers that lived through the churn; node-core/tests/connection_budget.rs bounds the latter.

use crate::node::Config;

/// Chromium's per-tab lifetime cap on `RTCPeerConnection`s.
pub const TAB_CONNECTION_LIMIT: u64 = 500;

/// The link policy of a peer with a lifetime connection budget (a browser tab):
/// - it keeps links only to the successors its replica sets need plus one spare (the first
///   `replicas + 1`), not the whole successor list: when a replica successor fails, its
///   replacement is already linked. The rest of the list is still known (ownership answers
///   need no link) and is linked when it moves up. With only `replicas` linked, a 64-tab ring
///   replaced every 16 s lost 20% more acknowledged writes in `sim-churn` and its survivors
///   created more connections, not fewer (docs/design.md, "Links and the 500-connection
///   cap");
/// - the gap between its probes of lost peers grows to [`crate::node::MAX_PROBE_INTERVAL_MS`]
///   while they find nobody (`probe_interval_max_ms`);
/// - a finger's interval is served by any open link to a member in it (`reuse_finger_links`):
///   a newcomer that becomes a finger, or a finger that crashes, costs no new connection while
///   another linked member lies in the interval;
/// - no proximity neighbour selection (`proximity_fingers`): measuring a candidate that is not
///   linked costs a connection. A larger `finger_base` is allowed (it costs links, not
///   connections beyond the fingers themselves), within the same `max_links`.
///
/// Call after `replicas` is set.
pub fn budgeted_links(config: &mut Config) {
    config.linked_successors = config.replicas + 1;
    config.reuse_finger_links = true;
    config.proximity_fingers = false;
    config.probe_interval_max_ms = crate::node::MAX_PROBE_INTERVAL_MS;
}

/// A step of the budget, each reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetStep {
    /// 80% of the limit created.
    Low,
    /// Two per cent (at least one) from the limit: time to leave.
    Exhausted,
}

impl BudgetStep {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Exhausted => "exhausted",
        }
    }
}

/// Connections created against a lifetime limit.
#[derive(Debug, Clone)]
pub struct ConnectionBudget {
    limit: u64,
    warned: bool,
    exhausted: bool,
}

impl ConnectionBudget {
    /// A budget of `limit` connections (at least 1).
    pub fn new(limit: u64) -> Self {
        Self {
            limit: limit.max(1),
            warned: false,
            exhausted: false,
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Connections created at which [`BudgetStep::Low`] is reported.
    pub fn warn_at(&self) -> u64 {
        self.limit - self.limit / 5
    }

    /// Connections created at which [`BudgetStep::Exhausted`] is reported.
    pub fn leave_at(&self) -> u64 {
        self.limit - (self.limit / 50).max(1)
    }

    /// `created` connections so far: the steps newly crossed, in order (`Low` is reported
    /// before `Exhausted` even when one creation crosses both).
    pub fn created(&mut self, created: u64) -> Vec<BudgetStep> {
        let mut steps = Vec::new();
        let exhausted = created >= self.leave_at();
        if (created >= self.warn_at() || exhausted) && !self.warned {
            self.warned = true;
            steps.push(BudgetStep::Low);
        }
        if exhausted && !self.exhausted {
            self.exhausted = true;
            steps.push(BudgetStep::Exhausted);
        }
        steps
    }
}

impl Default for ConnectionBudget {
    fn default() -> Self {
        Self::new(TAB_CONNECTION_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chromiums_limit_warns_at_400_and_leaves_at_490() {
        let mut budget = ConnectionBudget::default();
        assert_eq!((budget.warn_at(), budget.leave_at()), (400, 490));
        assert!(budget.created(399).is_empty());
        assert_eq!(budget.created(400), vec![BudgetStep::Low]);
        assert!(budget.created(450).is_empty(), "once");
        assert_eq!(budget.created(490), vec![BudgetStep::Exhausted]);
        assert!(budget.created(499).is_empty(), "once");
    }

    #[test]
    fn a_small_limit_reports_both_steps_in_order() {
        let mut budget = ConnectionBudget::new(3);
        assert_eq!(budget.leave_at(), 2);
        assert!(budget.created(1).is_empty());
        assert_eq!(
            budget.created(2),
            vec![BudgetStep::Low, BudgetStep::Exhausted]
        );
    }
}
