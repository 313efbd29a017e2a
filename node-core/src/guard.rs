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
//!   a member only if fewer than k known peers lie in `[key, m)` ([`Node::may_be_member`]).
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
//!   ([`Node::ts_bound`]); entries above are dropped and counted, never stored, and the clock
//!   moves to the bound at most ([`Node::observe_remote`]). So one frame moves a clock by at
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
use crate::id::{Id, PeerId};
use crate::links::LinkState;
use crate::node::{MAX_CLOCK_JUMP, Node};
use std::collections::BTreeMap;

/// No remote timestamp at or above this is observed or stored (2^63; honest clocks tick once
/// per write and never come near it).
pub const TS_CEILING: u64 = 1 << 63;

/// How long a newly linked peer does not count as evidence against a sender's membership
/// ([`Node::may_have_been_member`]): a few stabilization rounds (500 ms each), time for the
/// ring around a join to learn of it.
pub const JOIN_GRACE_MS: u64 = 5_000;

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

impl Node {
    /// The bound on remote timestamps for one frame: accepted iff `ts <= bound`. Taken once per
    /// frame, so a frame of many entries cannot walk the clock up 2^40 per entry.
    pub(crate) fn ts_bound(&self) -> u64 {
        self.clock
            .current()
            .saturating_add(MAX_CLOCK_JUMP)
            .min(TS_CEILING - 1)
    }

    /// Whether a remote timestamp may be observed and stored now.
    pub(crate) fn accepts_ts(&self, ts: u64) -> bool {
        ts <= self.ts_bound()
    }

    /// Observes a timestamp an *entitled* peer sent (after the authorization checks): true
    /// when it is within the bound (observed as it is); above the bound the clock moves to
    /// the bound only, the refusal is counted, and false tells the caller to drop what carries
    /// it. Moving to the bound matters: a hostile member of one set can push its fellow
    /// members' clocks, which then stamp writes of *other* sets far above those sets' other
    /// members; refusing without moving would freeze those sets for good, while this way a
    /// lagging member catches up by 2^40 per refused frame and the next attempt passes.
    pub(crate) fn observe_remote(&mut self, ts: u64) -> bool {
        let bound = self.ts_bound();
        self.clock.observe(ts.min(bound));
        if ts > bound {
            self.metrics.rejected.ts_out_of_bounds += 1;
        }
        ts <= bound
    }

    /// Ring members this node knows of: itself and every peer its ring pointers name.
    fn known_members(&self) -> impl Iterator<Item = Id> + '_ {
        std::iter::once(self.id).chain(self.ring.pointed_peers().iter().copied())
    }

    /// Known members in `[from, to)` clockwise (`from` itself counts when known), counting
    /// the peers of `extra` as known too.
    fn known_in(&self, from: Id, to: Id, extra: &[Id]) -> usize {
        self.known_in_where(from, to, extra, |_| true)
    }

    /// [`Self::known_in`] over the known members `counts` keeps.
    fn known_in_where(&self, from: Id, to: Id, extra: &[Id], counts: impl Fn(Id) -> bool) -> usize {
        if from == to {
            return 0;
        }
        let mut inside: Vec<Id> = self
            .known_members()
            .filter(|p| counts(*p))
            .chain(extra.iter().copied())
            .filter(|p| *p != to && (*p == from || p.in_open(from, to)))
            .collect();
        inside.sort_unstable();
        inside.dedup();
        inside.len()
    }

    /// Whether `m` can be in the replica set of the key with id `key` as far as this node
    /// knows: fewer than k known members lie in `[key, m)`.
    pub(crate) fn may_be_member(&self, key: Id, m: PeerId) -> bool {
        self.known_in(key, m, &[]) < self.config.replicas.max(1)
    }

    /// [`Self::may_be_member`] as the set was before the joins of the last
    /// [`JOIN_GRACE_MS`]: peers whose link to us opened that recently are not counted. A
    /// replica takes `Replicate` and `Read` from a sender that passes this. A newcomer is known
    /// first to its neighbours (they link to it as it joins), while a leader a few positions
    /// away still names the set without it until stabilization tells it; a replica that knew
    /// the newcomer refused that leader's `Replicate`, the write was acknowledged by the other
    /// two members, and a second join that moved both out of the set left it on none of its
    /// members (`sim-history --faults joins`, seed 997). A hostile peer gains from the grace
    /// only what it had moments before: a sender that was a member before a join.
    pub(crate) fn may_have_been_member(&self, key: Id, m: PeerId) -> bool {
        let settled = |p: Id| match self.links.get(p) {
            Some(LinkState::Up { since, .. }) => since.saturating_add(JOIN_GRACE_MS) <= self.now,
            _ => true,
        };
        self.known_in_where(key, m, &[], settled) < self.config.replicas.max(1)
    }

    /// Whether `m` can share a replica set with this node: fewer than k-1 known members lie
    /// strictly between them, in one direction or the other.
    pub(crate) fn may_share_set(&self, m: PeerId) -> bool {
        if m == self.id {
            return true;
        }
        let k1 = self.config.replicas.saturating_sub(1).max(1);
        let between = |a: Id, b: Id| self.known_members().filter(|p| p.in_open(a, b)).count();
        between(m, self.id) < k1 || between(self.id, m) < k1
    }

    /// A request or election set: at most k distinct members, this node among them, each one
    /// able to share a set with us (and, for a key, to be in the key's set).
    ///
    /// For a key, the set's own members count as known peers beside our pointers. A leader
    /// named by an owner whose view lacks a peer we know (our predecessor rejoined, the owner
    /// still skips it) would otherwise coordinate a set that the peers knowing that peer do not
    /// take it for: their `may_be_member` refuses its `Replicate`, the quorum forms without
    /// them, and once the set settles without us the acknowledged write is on none of its
    /// members (`sim-history --faults restart-empty --seed 290`). Counting the named members
    /// too, we see that `key`'s set is full before us and refuse to lead it; the origin's
    /// retry reaches the right leader once the owner's view catches up.
    pub(crate) fn plausible_set(&self, set: &[Id], key: Option<Id>) -> bool {
        let k = self.config.replicas.max(1);
        let mut sorted = set.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.len() == set.len()
            && !set.is_empty()
            && set.len() <= k
            && set.contains(&self.id)
            && set.iter().all(|m| {
                self.may_share_set(*m) && key.is_none_or(|key| self.known_in(key, *m, set) < k)
            })
    }

    /// A routed replica or election message claiming `origin`: refused when we hold a link to
    /// that origin (it would have sent over the link), the one forgery we can see.
    pub(crate) fn routed_origin_plausible(&self, origin: PeerId) -> bool {
        origin != self.id && !self.links.is_up(origin)
    }

    /// Takes one unit of `kind` budget for the link to `peer`, counting a refusal.
    pub(crate) fn within_budget(&mut self, peer: PeerId, kind: Costly) -> bool {
        let now = self.now;
        let ok = self.rate_limits.allow(peer, kind, now);
        if !ok {
            self.metrics.rejected.rate_limited += 1;
        }
        ok
    }

    /// A fresh, unguessable request id for a coordination (never 0, which means "no ack").
    pub(crate) fn new_req(&mut self) -> u64 {
        self.repl.next_req += 1; // requests issued (metrics and the simulator's attacker)
        loop {
            let req = self.id_rng.next_u64();
            if req != 0 && !self.repl.coordinations.contains_key(&req) {
                return req;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
