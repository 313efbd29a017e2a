//! The quorum fence as methods of [`Node`]: the parts of our primary range we must not serve
//! because no read quorum of their previous replica set is left on our side of the network
//! (`replication.rs`, "Partitions").
//!
//! Two ways a range loses its quorum, both of which a partition causes on one side or the
//! other (a node cannot tell a partition from a crash of everyone across it):
//! - **Growth** (`fence_on_growth`): our predecessor departed and the new one lies further back; the
//!   range we take over is made of the departed peers' primary ranges ("pieces"). The piece of
//!   the i-th departed predecessor was replicated by it, the i-1 departed peers after it, us
//!   and our first k-1-i replica successors. The
//!   departed ones are the peers we know of between the new predecessor and the old: those the
//!   old one named (`GetPreds`), those we point at and those we saw fail within one detection
//!   window of it. If fewer than `read_quorum` of a piece's holders are left, a write
//!   acknowledged by the others may be missing from everything we can reach: that piece, and
//!   every piece further back (each has fewer survivors), is fenced until the fenced part
//!   leaves our range (peers that come back, or newcomers, take it) or the fence expires.
//!   While we have no predecessor at all, everything outside our old range is fenced (all of
//!   it when another fence holds too), and the failed predecessor's piece is copied to our
//!   replica successors at once (`provisional_range`): its other holders may be failing too.
//! - **Inherited** (`inherit_fence`, only with `Config::inherit_fences`, off by default: it
//!   costs a newcomer's range up to `fence_max_ms` of availability): a peer that joins (or
//!   restarts empty) into a fenced part
//!   takes it over with none of its writes, and so do the successors it would sync with; the
//!   fenced successor names its fence in its stabilize answers (`fence_notice`, also after
//!   the part left its range), and a peer that joined with an empty store and has not synced
//!   since fences the part that is now its own, for the time the fence has left (never less
//!   than a fence of its own).
//! - **Never notified** (`unnotified_grace`): a newcomer that no predecessor has notified
//!   within two stabilize periods does not know its range; only a stale pointer (a finger
//!   that skipped the real owner) still sends it requests as the owner, so it fences
//!   everything until a predecessor notifies it (`sim-history --faults mixed --seed 8541`: a
//!   peer restarted empty, left without a predecessor for 10 s because a link to it hung,
//!   served a key of another range from two members that had missed its newer writes).
//! - **Lost set** (`fence_check`): the replica successors that held our range departed (no
//!   longer replicas and no link open: pushed out by newcomers is no departure) so that fewer
//!   than `read_quorum` holders remain, counting ourselves. New members would otherwise settle
//!   by syncing with us alone. Departed holders are remembered until the set is whole again.
//!   The fence lifts once every lost holder is a replica successor again and a round with each
//!   ended equal (we then hold the union of what they held, and none of them still leads the
//!   range on a side whose ring has not merged with ours), or when it expires.
//!
//! Fenced requests are answered `Failed` (the origin retries until its deadline) and counted
//! (`KvMetrics::fenced_requests`). A fence older than `Config::fence_max_ms` lifts by itself
//! (`KvMetrics::fences_expired`): after that long the missing peers are taken for failed, and
//! a write only they held is lost (the counted whole-set failure of the churn experiments).
//! "Only one side serves a key" needs `2 * read_quorum > replicas` (the default 2 of 3).
//!
//! Not covered: a partition that is not an arc of the ring can leave a piece whose set lost
//! its quorum with a survivor count that is right for each side alone; a newcomer that
//! synced with its successors before their fence reached it (a lost stabilize answer) serves
//! unfenced.

use super::*;

/// The node's fence state (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Fence {
    /// Growth: keys in `(predecessor, end]` are fenced, since `Time`.
    grown: Option<(Id, Time)>,
    /// Lost set: the replica successors that held our range when its quorum was lost, and since
    /// when.
    lost: Option<(Vec<PeerId>, Time)>,
    /// Replica successors that held our range at the last check (settled members).
    backed: Vec<PeerId>,
    /// Our replica successors at the last check, closest first.
    last_replicas: Vec<PeerId>,
    /// While we have no predecessor: the one that departed, the peers it named before it, and
    /// since when.
    lost_pred: Option<(PeerId, Vec<Id>, Time)>,
    /// Joined in front of a successor and not notified by any predecessor yet, since when.
    unnotified: Option<Time>,
    /// A growth fence whose part a newcomer in front of us took over: its end and since when,
    /// passed on to our predecessor with our stabilize answers (`fence_notice`).
    passed: Option<(Id, Time)>,
    /// We joined with an empty store (a newcomer, a restart without disk): until our first
    /// sync we may inherit our successor's fence (`inherit_fence`).
    joined_empty: bool,
}

impl Node {
    /// Whether a fence set at `since` still holds (`Config::fence_max_ms`).
    fn fence_live(&self, since: Time) -> bool {
        self.now < since.saturating_add(self.config.fence_max_ms)
    }

    /// The part of our primary range we may not serve now, if any.
    pub(crate) fn fenced_range(&self) -> Option<RingRange> {
        let lost = self
            .fence
            .lost
            .as_ref()
            .is_some_and(|(_, s)| self.fence_live(*s));
        let grown = self.fence.grown.filter(|(_, s)| self.fence_live(*s));
        let Some(pred) = self.ring.predecessor() else {
            let unnotified = self
                .fence
                .unnotified
                .map(|since| since.saturating_add(self.unnotified_grace()))
                .is_some_and(|since| self.now >= since && self.fence_live(since));
            if unnotified && self.fence.lost_pred.is_none() {
                return Some(RingRange::full());
            }
            // Inherited from our successor before any predecessor notified us: everything up
            // to its end (`inherit_fence`).
            if let Some((end, _)) = grown.filter(|_| self.fence.lost_pred.is_none()) {
                return Some(if end == self.id {
                    RingRange::full()
                } else {
                    RingRange::new(self.id.0, end.0)
                });
            }
            // Our predecessor departed and no new one is known: everything beyond our old range
            // may be ours, and none of it is settled; with a fence on our own range too, all.
            return match &self.fence.lost_pred {
                Some(_) if lost || grown.is_some() => Some(RingRange::full()),
                Some((old, _, since)) if self.fence_live(*since) => {
                    Some(RingRange::new(self.id.0, old.0))
                }
                _ => None,
            };
        };
        if lost {
            return Some(RingRange::new(pred.0, self.id.0));
        }
        grown
            .filter(|(end, _)| end.in_half_open(pred, self.id))
            .map(|(end, _)| RingRange::new(pred.0, end.0))
    }

    /// What we tell a peer that stabilizes with us about our fence: the end of the fenced part
    /// behind us and how long it still holds. A newcomer that joined in front of us took that
    /// part over (or some of it), with none of its writes either (`inherit_fence`).
    pub(super) fn fence_notice(&self) -> Option<(Id, u64)> {
        let remaining = |since: Time| {
            since
                .saturating_add(self.config.fence_max_ms)
                .saturating_sub(self.now)
        };
        let lost = self.fence.lost.as_ref().map(|(_, s)| (self.id, *s));
        let notice = lost
            .or(self.fence.grown)
            .or(self.fence.passed)
            .filter(|(_, since)| self.fence_live(*since));
        notice.map(|(end, since)| (end, remaining(since)))
    }

    /// Our successor `from` answered a stabilize round with its fence: keys behind it up to
    /// `end` are fenced for `remaining` ms more. The part of that which is now ours is fenced
    /// here too, for as long: we joined into it and hold none of its writes, and our
    /// successors, the members we would sync with, lack them as well. Taken only from our
    /// successor, and for at most `Config::fence_max_ms`.
    pub(super) fn inherit_fence(&mut self, from: PeerId, end: Id, remaining: u64) {
        // Only a peer that joined with an empty store (a newcomer, a restart without disk) and
        // has not synced since inherits: a holder coming back with its store (a restart with
        // disk, the other side of a healed partition) keeps serving what it holds, and a peer
        // whose own range grew has its own growth fence.
        if !self.config.inherit_fences
            || !self.fence.joined_empty
            || self.own_settled
            || self.ring.successor() != from
            || from == self.id
        {
            return;
        }
        let remaining = remaining.min(self.config.fence_max_ms);
        let since = (self.now + remaining).saturating_sub(self.config.fence_max_ms);
        // Beyond us (between us and the successor): our whole range.
        let end = if end.in_open(self.id, from) || end == from {
            self.id
        } else {
            end
        };
        // The union of both fences, held until the later of the two expires: an inherited
        // notice never shortens a fence of our own.
        let merged = match (self.fence.grown, self.ring.predecessor()) {
            (Some((mine, mine_since)), Some(pred)) => {
                let end = if pred.distance_to(end) > pred.distance_to(mine) {
                    end
                } else {
                    mine
                };
                (end, since.max(mine_since))
            }
            (Some((mine, mine_since)), None) => (mine, since.max(mine_since)),
            (None, _) => {
                self.metrics.kv.fences += 1;
                (end, since)
            }
        };
        self.fence.grown = Some(merged);
    }

    /// How long a newcomer serves without a predecessor: the one in front of it adopts it at
    /// its next stabilize round and notifies it. Until then a request that reaches us as
    /// "the owner" is taken on trust (it comes from the peer that resolved us as the key's
    /// successor); later only a stale pointer, say a finger that skipped the real owner, sends
    /// one here, and we would serve, and stamp, keys of a range we never held.
    fn unnotified_grace(&self) -> u64 {
        self.config.stabilize_max_interval_ms.saturating_mul(2)
    }

    /// We joined: until a predecessor notifies us, we do not know our range
    /// (`Self::unnotified_grace`).
    pub(super) fn fence_on_join(&mut self) {
        let has_successor = !self.ring.successors().is_empty();
        self.fence.unnotified =
            (has_successor && self.ring.predecessor().is_none()).then_some(self.now);
        self.fence.joined_empty = self.store.is_empty();
    }

    /// A round with every replica successor ended equal: we hold our range now, and inherit no
    /// fence any more.
    pub(super) fn fence_on_settled(&mut self) {
        self.fence.joined_empty = false;
    }

    /// Our predecessor changed from `old` to `new` (either may be none).
    pub(super) fn fence_on_predecessor(&mut self, old: Option<PeerId>, new: Option<PeerId>) {
        if new.is_some() {
            self.fence.unnotified = None;
        }
        match (old, new) {
            (Some(old), None) => {
                let known = self.peers_behind(old);
                self.fence.lost_pred = Some((old, known, self.now));
            }
            (Some(old), Some(new)) => {
                self.fence.lost_pred = None;
                if old.in_open(new, self.id) {
                    let known = self.peers_behind(old);
                    self.fence_on_growth(old, new, known);
                }
            }
            (None, Some(new)) => {
                if let Some((old, mut known, _)) = self.fence.lost_pred.take()
                    && old.in_open(new, self.id)
                {
                    known.extend(self.peers_behind(old));
                    self.fence_on_growth(old, new, known);
                }
            }
            (None, None) => {}
        }
    }

    /// While we have no predecessor after ours failed: the range that is ours once the peer
    /// before it notifies us, `(q, self]`, `q` being the closest peer we know of behind the
    /// failed one that we did not see fail (with nothing known behind it, `q` may be one of
    /// our successors: a wider round, never a narrower one). The failed predecessor's piece
    /// has one copy fewer
    /// from the moment it failed, and its other holders may be failing too: anti-entropy
    /// copies it to our replica successors at once (`Node::anti_entropy_round`) instead of
    /// waiting one stabilize round for the notify.
    pub(super) fn provisional_range(&self) -> Option<RingRange> {
        if self.ring.predecessor().is_some() || !self.is_joined() {
            return None;
        }
        let (old, known, _) = self.fence.lost_pred.as_ref()?;
        let q = known
            .iter()
            .chain(self.ring.pointed_peers().iter())
            .copied()
            .filter(|p| *p != *old && *p != self.id && !self.failed_recently.contains_key(p))
            .min_by_key(|p| p.distance_to(*old))?;
        Some(RingRange::new(q.0, self.id.0))
    }

    /// Every peer we know of that lay behind `old`, our departed predecessor: those it named
    /// (`GetPreds`, refreshed every anti-entropy round but possibly older than the last join
    /// behind it), those we point at, and those whose link to us failed within one detection
    /// window of it (one that failed earlier had its range taken over by `old` then). A peer
    /// that leaves gracefully tells every linked peer (`Node::leave`), so it is no failure; one
    /// we only pointed at, a stale finger whose connect failed, may have left long before
    /// and is not counted either: a holder of a piece behind us was linked to us.
    fn peers_behind(&self, old: PeerId) -> Vec<Id> {
        let mut known: Vec<Id> = self.preds_named_by(old).to_vec();
        known.extend(self.ring.pointed_peers().iter().copied());
        let old_failed = self
            .failed_recently
            .get(&old)
            .map_or(self.now, |(at, _)| *at);
        let window = self.config.heartbeat_timeout_ms;
        known.extend(
            self.failed_recently
                .iter()
                .filter(|(_, (at, linked))| *linked && at.saturating_add(window) >= old_failed)
                .map(|(p, _)| *p),
        );
        known
    }

    /// Our predecessor moved from `old` back to `new`: we took over the departed peers' pieces.
    /// `known`: peers we know of, in any order; those between `new` and `old` departed.
    fn fence_on_growth(&mut self, old: PeerId, new: PeerId, mut known: Vec<Id>) {
        let k = self.config.replicas.max(1);
        let quorum = self.config.read_quorum.max(1);
        // The departed predecessors, closest first: `old`, then the known peers between `new`
        // and it. Unknown ones may lie anywhere behind `old`: an unknown peer makes us fence
        // less than we should, never more.
        known.retain(|p| p.in_open(new, old));
        known.sort_unstable_by_key(|p| p.distance_to(old));
        known.dedup();
        let mut departed = vec![old];
        departed.extend(known);
        // The replica successors that held the pieces with us (at the last check), those of
        // them that are still successors.
        let succs = self.ring.successors();
        let surviving_succs = |take: usize| {
            self.fence
                .last_replicas
                .iter()
                .take(take)
                .filter(|m| succs.contains(m))
                .count()
        };
        // Pieces are numbered from 1 (the old predecessor's); survivors only fall with i.
        let lacks = |i: usize| 1 + surviving_succs(k.saturating_sub(1 + i)) < quorum;
        let Some(first_lacking) = (1..=departed.len()).find(|i| lacks(*i)) else {
            return;
        };
        let end = departed[first_lacking - 1];
        self.metrics.kv.fences += 1;
        let end = match self.fence.grown {
            // The piece closest to us of both fences; the union is fenced from now on.
            Some((e, since))
                if (e == self.id || e.in_open(end, self.id)) && self.fence_live(since) =>
            {
                e
            }
            _ => end,
        };
        self.fence.grown = Some((end, self.now));
    }

    /// Sets or lifts the lost-set fence; called whenever the ring, a link or a round's result
    /// may have changed the answer.
    pub(super) fn fence_check(&mut self) {
        if !self.is_joined() {
            return;
        }
        let quorum = self.config.read_quorum.max(1);
        let replicas = self.replica_successors();
        // The growth fence lifts when it expires or the fenced part left our range (the
        // range shrank past it: the departed predecessors, or newcomers, took it back).
        if let Some((end, since)) = self.fence.grown {
            let live = self.fence_live(since);
            let ours = self
                .ring
                .predecessor()
                .is_none_or(|p| end.in_half_open(p, self.id));
            if !live || !ours {
                self.metrics.kv.fences_expired += u64::from(!live);
                self.fence.grown = None;
                if live {
                    // Peers in front of us took the fenced part: pass the fence on to them.
                    self.fence.passed = Some((end, since));
                }
            }
        }
        if self
            .fence
            .passed
            .is_some_and(|(_, since)| !self.fence_live(since))
        {
            self.fence.passed = None;
        }
        if let Some((_, _, since)) = self.fence.lost_pred
            && !self.fence_live(since)
        {
            self.metrics.kv.fences_expired += 1;
            self.fence.lost_pred = None;
        }
        if let Some((lost, since)) = &self.fence.lost {
            // Every lost holder back in the set and in sync: while one is missing, it may lead
            // the range elsewhere (its side's view of the ring has not merged with ours yet).
            let back = lost
                .iter()
                .all(|m| replicas.contains(m) && self.equal_with.contains(m));
            if back {
                self.fence.lost = None;
            } else if !self.fence_live(*since) {
                self.metrics.kv.fences_expired += 1;
                self.fence.lost = None;
            }
        } else {
            // A holder that newcomers pushed out of the set (still linked) is no loss.
            let present = self
                .fence
                .backed
                .iter()
                .filter(|m| !self.departed(**m, &replicas))
                .count();
            if present + 1 < quorum && self.fence.backed.len() + 1 >= quorum {
                let lost = std::mem::take(&mut self.fence.backed);
                for m in &lost {
                    self.equal_with.remove(m);
                }
                self.metrics.kv.fences += 1;
                self.fence.lost = Some((lost, self.now));
            }
        }
        if self.fence.lost.is_none() {
            // Holders: replica successors that were settled once and are still replicas (a
            // link that flapped unsettles a member, but it still holds what it held), and the
            // settled ones.
            let mut holders: Vec<PeerId> = replicas
                .iter()
                .copied()
                .filter(|m| self.settled_members.contains(m) || self.fence.backed.contains(m))
                .collect();
            // Holders that departed (pushed out by newcomers is no departure) are remembered
            // until the set is whole again: if the rest go too, each of them may be leading the
            // range on another side.
            let k1 = self.config.replicas.saturating_sub(1);
            if holders.len() < k1 {
                let departed = self
                    .fence
                    .backed
                    .iter()
                    .copied()
                    .filter(|m| self.departed(*m, &replicas));
                holders.extend(departed);
                // At most k-1: in a ring smaller than a set every former partner would stay.
                holders.truncate(k1);
            }
            self.fence.backed = holders;
        }
        let before = std::mem::take(&mut self.fence.last_replicas);
        self.note_successor_newcomers(&before, &replicas);
        self.fence.last_replicas = replicas;
    }

    /// Whether holder `m` departed: it is no replica successor and no link to it is open (it
    /// failed, or a partition cut it off).
    fn departed(&self, m: PeerId, replicas: &[PeerId]) -> bool {
        !replicas.contains(&m) && !self.links.is_up(m)
    }
}
