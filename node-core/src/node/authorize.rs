//! The receiver-side checks of `guard.rs` as methods of the node: timestamp bounds, replica-set
//! membership as this node's view of the ring allows it, plausible request sets and routed
//! origins, per-link budgets and unguessable request ids. The rules and their reasons are in
//! `guard.rs` and docs/threat-model.md.

use super::{CATCH_UP_DELAY_MS, Node};
use crate::guard::Costly;
use crate::id::{Id, PeerId};

impl Node {
    /// The bound on remote timestamps for one frame: accepted iff `ts <= bound`. Taken once per
    /// frame, so a frame of many entries cannot walk the clock up 2^40 per entry.
    pub(crate) fn ts_bound(&self) -> u64 {
        crate::guard::ts_bound(self.clock.current())
    }

    /// Whether a remote timestamp may be observed and stored now.
    pub(crate) fn accepts_ts(&self, ts: u64) -> bool {
        ts <= self.ts_bound()
    }

    /// Observes a timestamp an *entitled* peer sent ([`crate::guard::observe_remote`]).
    pub(crate) fn observe_remote(&mut self, ts: u64) -> bool {
        crate::guard::observe_remote(&mut self.clock, &mut self.metrics.rejected, ts)
    }

    /// Ring members this node knows of: itself and every peer its ring pointers name.
    fn known_members(&self) -> impl Iterator<Item = Id> + '_ {
        std::iter::once(self.id).chain(self.ring.pointed_peers().iter().copied())
    }

    /// Known members in `[from, to)` clockwise (`from` itself counts when known), counting
    /// the peers of `extra` as known too.
    pub(super) fn known_in(&self, from: Id, to: Id, extra: &[Id]) -> usize {
        if from == to {
            return 0;
        }
        let mut inside: Vec<Id> = self
            .known_members()
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

    /// [`Self::may_be_member`] without the predecessor that joined in front of us in the last
    /// [`CATCH_UP_DELAY_MS`]: a leader whose view does not show that newcomer yet still names
    /// the old set, of which it was a member moments ago. Refusing its `Replicate` let a write
    /// be acknowledged by the old set's other members alone, and a second join moved them out
    /// (`sim-history --faults joins`, seed 997). Only our own predecessor is discounted, and
    /// only while it is new: a sender gains nothing it did not have before that join.
    ///
    /// Peers that joined in front of one of our replica successors are discounted the same way
    /// (`successor_newcomers`): the old set's leader, pushed out by that join, does not know
    /// them yet either. Refusing its `Replicate` let a write be acknowledged by two members the
    /// join had just moved out of the set, and the new set answered reads without it until our
    /// catch-up (`sim-history --faults mixed --seed 708`, two joins in one burst).
    pub(crate) fn may_have_been_member(&self, key: Id, m: PeerId) -> bool {
        let recent = |at: &super::Time| self.joined_recently(*at);
        let between = |p: Id| p != m && (p == key || p.in_open(key, m));
        let discount = self
            .newcomer
            .iter()
            .chain(self.successor_newcomers.iter())
            .filter(|(p, at)| recent(at) && between(*p))
            .map(|(p, _)| *p)
            .collect::<std::collections::BTreeSet<Id>>()
            .len();
        self.known_in(key, m, &[]).saturating_sub(discount) < self.config.replicas.max(1)
    }

    /// Whether a join noted at `at` is recent enough to discount ([`CATCH_UP_DELAY_MS`]).
    fn joined_recently(&self, at: super::Time) -> bool {
        self.now < at.saturating_add(CATCH_UP_DELAY_MS)
    }

    /// Notes the peers that appeared among our replica successors in front of one that was
    /// already there (a join; see [`Self::may_have_been_member`]), and keeps those of the last
    /// [`CATCH_UP_DELAY_MS`] that are still replica successors: at most k-1. `before`: the
    /// replica successors at the last look.
    pub(super) fn note_successor_newcomers(&mut self, before: &[PeerId], now_replicas: &[PeerId]) {
        let now = self.now;
        let kept: Vec<(PeerId, super::Time)> = std::mem::take(&mut self.successor_newcomers)
            .into_iter()
            .filter(|(p, at)| self.joined_recently(*at) && now_replicas.contains(p))
            .collect();
        self.successor_newcomers = kept;
        for m in now_replicas {
            let joined_in_front =
                !before.contains(m) && before.iter().any(|old| m.in_open(self.id, *old));
            if joined_in_front && !self.successor_newcomers.iter().any(|(p, _)| p == m) {
                self.successor_newcomers.push((*m, now));
            }
        }
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
}
