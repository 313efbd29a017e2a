//! Who may send what: the checks that keep one hostile peer from corrupting, freezing or
//! overloading the others (issue 11; the threat model is docs/threat-model.md).
//!
//! Every check uses only the receiver's own view of the ring. Views differ during joins and
//! churn, so a check refuses only on *contrary evidence*: a frame is refused when the peers
//! this node knows to be in the ring prove that the sender (or this node) cannot be in the
//! replica set concerned, never because the sender is merely unknown. A refusal costs
//! availability at worst (an answer that does not count, a round that ends without syncing),
//! never a write: quorums only ever count *fewer* answers.
//!
//! - **Replica sets.** A key's set is the first k peers at or after its id, so peer `m` can be
//!   a member only if fewer than k known peers lie in `[key, m)` (`Node::may_be_member` (`node/authorize.rs`)).
//!   `Replicate`, `Read` and `Collect` need both the sender and this node to pass;
//!   `ReplicateAck` and `ReadReply` count only from members of the coordination's set (the
//!   peers the request went to), under a random 64-bit request id.
//! - **Routed replica traffic** (`KvDirect`, routed `Election`) carries a claimed origin. It is
//!   refused when we hold an open link to that origin (the origin would have used it), which
//!   stops forging the ids of the set members we are linked to; the rest waits for identities
//!   bound to links (docs/threat-model.md).
//! - **Anti-entropy** (`node/mod.rs`, `on_sync`): answers over our own range only from our replica
//!   successors; a peer's own range only when fewer than k-1 known peers separate it from us
//!   and the range reaches no known peer behind it; a hand-back only from our successor.
//! - **Timestamps.** A remote timestamp is stored only when it is below [`TS_CEILING`] and at
//!   most `MAX_CLOCK_JUMP` (2^40, `node/mod.rs`) above our clock as it was when the frame arrived
//!   (`Node::ts_bound`); entries above are dropped and counted, never stored, and the clock
//!   moves to the bound at most (`Node::observe_remote`). So one frame moves a clock by at
//!   most 2^40, only frames from entitled peers move it at all, and no clock passes the
//!   ceiling through observation. Honest clocks tick once per write; a hostile replica-set
//!   member pushing 2^40 per frame at the anti-entropy rate limit needs about 2^23 frames
//!   (days) to bring its neighbours' clocks to the ceiling (docs/threat-model.md).
//! - **Sets and tables.** Request and election sets hold at most k members that pass the
//!   membership check; the table of running elections is bounded (`election.rs`).
//! - **Rate limits** ([`RateLimits`]): anti-entropy openings, summaries and wants, flood queries
//!   and ring walks, per sending link, with time from the driver.
//!
//! Every refusal is counted in [`crate::metrics::Rejected`] by reason; nothing panics.

use crate::Time;
use crate::id::PeerId;
use std::collections::BTreeMap;

/// A remote timestamp further ahead of our clock than this is not observed (a hostile or broken
/// peer must not push every clock to the ceiling).
pub(crate) const MAX_CLOCK_JUMP: u64 = 1 << 40;

/// No remote timestamp at or above this is observed or stored (2^63; honest clocks tick once
/// per write and never come near it).
pub const TS_CEILING: u64 = 1 << 63;

/// The bound on remote timestamps for one frame, from our clock as the frame arrived
/// (`current`): accepted iff `ts <= bound`. Taken once per frame, so a frame of many entries
/// cannot walk the clock up 2^40 per entry.
pub(crate) fn ts_bound(current: u64) -> u64 {
    current.saturating_add(MAX_CLOCK_JUMP).min(TS_CEILING - 1)
}

/// Observes a timestamp an *entitled* peer sent (after the authorization checks): true
/// when it is within the bound (observed as it is); above the bound the clock moves to
/// the bound only, the refusal is counted, and false tells the caller to drop what carries
/// it. Moving to the bound matters: a hostile member of one set can push its fellow
/// members' clocks, which then stamp writes of *other* sets far above those sets' other
/// members; refusing without moving would freeze those sets for good, while this way a
/// lagging member catches up by 2^40 per refused frame and the next attempt passes.
pub(crate) fn observe_remote(
    clock: &mut crate::clock::LamportClock,
    rejected: &mut crate::metrics::Rejected,
    ts: u64,
) -> bool {
    let bound = ts_bound(clock.current());
    clock.observe(ts.min(bound));
    if ts > bound {
        rejected.ts_out_of_bounds += 1;
    }
    ts <= bound
}

/// What a per-link budget is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Costly {
    /// Anti-entropy messages that make the receiver scan its store (openings, summaries, wants).
    Sync,
    /// Gnutella flood queries (each one fans out to every link).
    Flood,
    /// Ring-walk view requests.
    Walk,
}

impl Costly {
    /// (burst, per second).
    const fn budget(self) -> (u64, u64) {
        match self {
            // An owner's settle rounds run every 250 ms and a descent takes a few steps; a
            // peer replicates for and with at most a handful of neighbours.
            Self::Sync => (64, 32),
            Self::Flood => (8, 2),
            Self::Walk => (16, 8),
        }
    }
}

/// Token buckets per (sending link, kind of work), refilled with the driver's time.
#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    /// (peer, kind) -> (tokens in thousandths, last refill).
    buckets: BTreeMap<(PeerId, Costly), (u64, Time)>,
}

/// Buckets kept at most (the link table is bounded by `max_links`; old peers go first).
const MAX_BUCKETS: usize = 1_024;

impl RateLimits {
    /// Takes one token of `kind` for `peer`; false when its budget is spent.
    pub(crate) fn allow(&mut self, peer: PeerId, kind: Costly, now: Time) -> bool {
        let (burst, per_sec) = kind.budget();
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(&(peer, kind)) {
            self.buckets.clear();
        }
        let (tokens, last) = self
            .buckets
            .entry((peer, kind))
            .or_insert((burst * 1_000, now));
        let refill = now.saturating_sub(*last).saturating_mul(per_sec);
        *tokens = (*tokens).saturating_add(refill).min(burst * 1_000);
        *last = now;
        if *tokens >= 1_000 {
            *tokens -= 1_000;
            true
        } else {
            false
        }
    }
}

/// Makes room for one more entry in a map bounded at `cap`: when it is full, the entry whose
/// `at` is oldest goes (O(n), only when full). The bounded memories of peers (failed, lost,
/// round trips, pings) share it.
pub(crate) fn evict_oldest_when_full<K: Copy + Ord, V>(
    map: &mut BTreeMap<K, V>,
    cap: usize,
    at: impl Fn(&V) -> Time,
) {
    if map.len() >= cap
        && let Some(oldest) = map.iter().min_by_key(|(_, v)| at(v)).map(|(k, _)| *k)
    {
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    #[test]
    fn buckets_refill_with_time() {
        let mut limits = RateLimits::default();
        let peer = Id(7);
        let (burst, per_sec) = Costly::Flood.budget();
        for _ in 0..burst {
            assert!(limits.allow(peer, Costly::Flood, 0));
        }
        assert!(!limits.allow(peer, Costly::Flood, 0));
        assert!(limits.allow(Id(8), Costly::Flood, 0), "per peer");
        let one = 1_000 / per_sec + 1;
        assert!(limits.allow(peer, Costly::Flood, one));
        assert!(!limits.allow(peer, Costly::Flood, one));
    }
}
