//! The replicated store's request paths: put / get / delete with quorums, leader coordination,
//! Lamport stamping and read-repair.
//!
//! After Dynamo (DeCandia et al., SOSP 2007) with a per-set leader:
//! - a request is routed toward the key's id; the first peer that knows the owner forwards it to
//!   the owner; the owner computes the replica set (itself and its next k-1 successors) and hands
//!   the request to the set's leader (the Bully winner, [`crate::election`]), electing one first
//!   when none is known;
//! - the leader stamps writes with its Lamport clock (after observing the stored version, so a
//!   new write always wins over what the leader holds), stores locally, replicates to the other
//!   members and answers the origin after `write_quorum` members *applied* it (itself included);
//! - a get asks the other members and answers with the LWW winner once `read_quorum` versions
//!   are in (its own included), writing the winner back first when fewer than `write_quorum`
//!   members hold it; stale members that answered are repaired (read-repair);
//! - a delete is a put of a tombstone; tombstones answer "not found".
//!
//! # The promise, and what keeps it
//!
//! Once a put is acknowledged, every get that starts afterwards returns it or a write that was
//! not yet acknowledged when it started; a delete likewise; gets ordered in real time never go
//! backwards. `sim::history` checks this on client histories under every fault class,
//! partitions included (see README, "Consistency"). The mechanisms:
//!
//! - **A write that lost is not acknowledged.** A replica that already holds a newer version
//!   answers `ReplicateAck { newer: Some(ts) }`; the leader then observes `ts` and stamps the
//!   write again above it under a new request id (`MAX_RESTAMPS` times at most). So a leader
//!   with a low clock (a peer that just joined, a restarted one) cannot slip an old timestamp
//!   past replicas that hold a newer write.
//! - **Reads write back.** A read answers with version `v` only when `write_quorum` settled
//!   members hold `v` (ABD's second phase, Attiya-Bar-Noy-Dolev 1995), so a later read quorum
//!   meets `v`: reads never go backwards even while a write is in flight.
//! - **Requests are not applied twice.** A leader remembers the writes it coordinated by
//!   (origin, op) (`RecentRequests`) and answers a retry or duplicate with the first answer
//!   instead of stamping it again (which could land after a later write of another client).
//! - **Membership changes.** Quorums only intersect within one replica set; when the set
//!   changes (a join, a failure, a restart with an empty store), a member may lack writes that
//!   the old members acknowledged. Such members are *unsettled* and their answers do not count
//!   toward either quorum until an anti-entropy round shows they hold the range:
//!   - the owner keeps `settled_members`, the replica successors known to hold its range: those
//!     that were replicas of it already (the successors a peer joins in front of, those left
//!     after a single predecessor departed), or whose anti-entropy round with the owner ended
//!     equal since they became replicas (a new link, maybe a restarted incarnation, unsettles
//!     a member again). The owner's own store is unsettled from its start and whenever its
//!     range grows, until a round with every replica successor ended equal;
//!   - the owner passes the unsettled members with the request (`KvRequest::unsettled`), and a
//!     member whose own store is not settled (it started, joined or took over a range and has
//!     not synced since) marks its answers `fresh`; the leader asks fresh members again every
//!     250 ms until they count or the request's attempt times out;
//!   - a just-joined owner holds requests until its successor list arrives (its replica set is
//!     unknown until then);
//!   - rounds with unsettled members run every 250 ms instead of the backed-off pace.
//!
//!   The price is availability, not consistency: a key whose set has fewer than `write_quorum`
//!   settled members fails its requests (the origin retries) until the sync is done.
//! - **Partitions: the quorum fence** (`node/fence.rs`). Syncing new members with the owner
//!   is only sound while the owner's store is backed by a read quorum of the set that held the
//!   range before. A partition (or the crash of most of a set within one detection window)
//!   takes that away on one side: there, whole pieces of the ring seem to have failed, and
//!   their successors would take over ranges whose every copy is across the cut. So the owner
//!   fences (answers `Failed`, metric `kv.fenced_requests`) the pieces it took over from
//!   departed predecessors whose old set keeps fewer than `read_quorum` members on its side
//!   (it knows the peers before its predecessor: `GetPreds`), and its whole range when its own
//!   holders left the set so that fewer than `read_quorum` remain. With `2 * read_quorum >
//!   replicas`, a piece's old set has a quorum on at most one side, so only one side serves
//!   each key. The fence lifts when the fenced part leaves our range (the range shrinks back),
//!   when the lost holders are all replica successors again and rounds with them ended equal,
//!   or after `Config::fence_max_ms` (60 s), when the missing peers are taken for failed
//!   (`kv.fences_expired`). A newcomer that joins into a fenced part inherits the fence from
//!   its successor when `Config::inherit_fences` is on, and one that no predecessor notified
//!   fences everything (`node/fence.rs`).
//!   Restores (`KvAction::Restore`: a stray's or a hand-over's version
//!   written back as it is) pass the fence: they stamp nothing, and bring the fenced range
//!   exactly what it may lack.
//!
//! The origin retries a request that got no answer within `lookup_attempt_timeout_ms` and fails
//! it with a typed error at `op_timeout_ms`.
//!
//! # Merging a ring of one
//!
//! A peer that serves alone (it created a ring, or its driver let it serve after its ring was
//! unreachable for long enough) acknowledges writes with a quorum of one. When it later joins
//! a ring ([`Node::join`] on an alone or cut-off node), most of its keys belong to other
//! peers' ranges, and anti-entropy, which runs only within replica sets, would never move them.
//! So the join marks a hand-over (`HandOver`): once the node is joined and knows its successor
//! list, it writes every key it holds (tombstones included) into the ring as a
//! [`KvAction::Restore`], a request carrying the stored version unchanged. The key's leader
//! treats it as a replayed write: it observes the timestamp, stores the entry (LWW) and
//! spreads it, and a member that holds something newer counts as done. So the ring ends with
//! the newer of the two versions of every key, as anti-entropy between replicas would have
//! done. At most `MAX_HANDOVER_INFLIGHT` such requests run at once; one that fails is tried
//! again later, `MAX_HANDOVER_TRIES` times per key. The node keeps its own copies.
//!
//! A peer restarted with its disk does the same when it joins: while it was down, the rest of
//! its sets may have been replaced (their other members back empty), and then its restored
//! versions are the only copies. Until the hand-over has put a key in a write quorum, client
//! requests for that key that reach this node as its owner wait here (`HandOver::pending`,
//! that key first in the queue): the set's leader would otherwise answer a read from members
//! that never held the key, or stamp a write below the restored version, which the hand-over
//! would then overwrite.
//!
//! The same queue carries global maintenance: a joined peer writes back, every
//! `strays_interval_ms`, the keys it holds whose replica set cannot include it (`node/sync.rs`,
//! `strays_round`), once per version a write quorum confirmed.
//!
//! Last-writer-wins decides between the two sides by Lamport timestamp, not by real time, so
//! a key written on both sides while they were apart keeps the higher timestamp: serving alone
//! is available, not consistent (README, "Consistency").
//!
//! # Tombstone collection
//!
//! The rule of `store.rs` ("a tombstone MAY be dropped only once every replica of its key holds
//! it (or something newer) and a grace period has passed since this replica stored it") is
//! carried out by the *owner* of the key's primary range, at each of its anti-entropy rounds:
//!
//! - **Proof that a replica holds it.** For every replica successor `m` the owner keeps, over
//!   the current link, `(t, range)` of the latest round over its primary range that `m`
//!   answered `Equal` (`Node::equal_since`), `t` being when that round was *opened* (the
//!   opening carries the owner's root at `t`; with several rounds outstanding the oldest
//!   opening time is credited, which only weakens the proof). `Equal` means `m`'s store for
//!   `range` was identical to the owner's store at `t`. A link that goes down or comes up again
//!   (maybe a restarted incarnation) drops the proof.
//! - **The rule.** The owner drops a tombstone of its primary range `(predecessor, self]`
//!   stored at `since` (its `tombstone_since`) when `now >= since + tombstone_grace_ms` and every
//!   current replica successor has a proof with `t >= since` and a range containing the key.
//!   The owner also needs its whole replica set: its successor list came from its successor
//!   since it joined, and holds k-1 replica successors (a ring of fewer than k peers never
//!   collects). The owner has held exactly that tombstone since `since` (a newer entry would have reset
//!   `since`), so at `t` every replica held exactly it too. It emits `Event::Collected` and
//!   sends [`KvMsg::Collect`] `(key, version)` to those replicas, which drop the key only if they
//!   hold exactly that tombstone (`Store::forget_tombstone`): a newer write that raced the order
//!   survives, and the order is only honoured for keys lying behind its sender (`(self, from]`).
//! - **Why anti-entropy does not bring the value back.** After the proof, a replica can lose the
//!   tombstone only by being replaced by something newer (harmless) or by the collection itself.
//!   A replica that still holds it (its `Collect` was lost) gives it back to the owner at the
//!   next round: a tombstone comes back, never a value, and it is collected again one grace
//!   period later. A replica that held an *older live value* (it missed the delete) is caught
//!   by the rule: while it is a replica successor the owner waits for an `Equal` round with it,
//!   which it reaches only after it took the tombstone; a replica that restarts loses its proof
//!   with its link.
//! - **Caveat (as Cassandra's `gc_grace_seconds`).** A peer that is *out of* the key's replica
//!   set when the rule is checked is not asked: one that was down, or was displaced by a join
//!   and kept its old store, and comes back into the set holding an older value of a key whose
//!   tombstone was collected meanwhile, pushes that value back to the set (anti-entropy cannot
//!   tell "never had" from "collected"). The collection happens at least `tombstone_grace_ms`
//!   after the delete reached the owner, so this needs the peer to have been out of the set for
//!   longer than the grace period (plus the time the ring takes to take it back). The grace
//!   period (default 10 minutes) MUST therefore exceed the longest such absence after which a
//!   peer may come back with its old data; operators SHOULD wipe a peer's store (restart without
//!   its disk) after a longer outage. Ex-replicas also keep their copy of the tombstone (no
//!   `Collect` reaches them); it is harmless and goes when they become replicas again (the next
//!   owner collects it) or are wiped.
//!
//! # Shape
//!
//! Like [`crate::flood::Flooder`], the [`Replicator`] owns its state (requests pending at
//! their origin, coordinations, parked and waiting requests, the hand-over, recent requests,
//! frames awaiting a link) and names nothing above it. Each call takes a [`ReplCtx`]: what it
//! reads of the node (the ring, the links, `now`, whether the node is joined, fresh, knows its
//! successors) and what it writes besides its own state (the store, the clock, metrics,
//! elections, `settled_members`, the id stream). What the node must carry out it queues as
//! [`Effect`]s: frames, routed messages, links to open, outputs (`OpDone`, `LeaderElected`,
//! and `Stored` with its anti-entropy and watcher duties), op timers. `node/replicate.rs`
//! builds the context, calls, and carries the effects out in order. An answer to a request
//! this node originated is handled within the call (`send_kv_reply`), as `Node::route` would
//! deliver it here at once, so the effects never lead back into the replicator and running
//! them after the call does what running them in place did. The node keeps the client
//! commands' entry points, the authorization of replica messages (`node/authorize.rs`), live
//! updates and tombstone collection (`node/replicate.rs`).

use crate::Time;
use crate::api::{OpId, Output};
use crate::clock::LamportClock;
use crate::election::Elections;
use crate::id::{Id, PeerId};
use crate::links::Links;
use crate::metrics::Metrics;
use crate::ring::RingState;
use crate::rng::Rng;
use crate::store::{Entry, RingRange, Store, Version};
use crate::wire::kv::{KvAction, KvMsg, KvResult};
use crate::wire::{Body, Dest, Message, Routed};
use std::collections::{BTreeMap, BTreeSet};

mod coordinate;
mod origin;

/// Pace of anti-entropy rounds while a replica (or this node) is not yet settled, and of a
/// leader's re-asks of fresh members ("Membership changes" above).
pub(crate) const SETTLE_ROUND_MS: u64 = 250;

/// The replicated store's request state and protocol, shaped like [`crate::flood::Flooder`]:
/// it owns its state, takes the rest of the node it reads or writes through a [`ReplCtx`],
/// and queues what the node must carry out as [`Effect`]s (`node/replicate.rs` drains them
/// after every call, in order).
#[derive(Debug)]
pub(crate) struct Replicator {
    config: ReplConfig,
    /// Client requests pending at this node as their origin.
    kv_ops: BTreeMap<OpId, OriginOp>,
    /// Requests this node coordinates as a set's leader, by request id.
    coordinations: BTreeMap<u64, Coordination>,
    /// Requests waiting for an election or a link.
    parked: Vec<Parked>,
    /// Coordinations started (request ids themselves are random, see `new_req`).
    next_req: u64,
    /// Until our successor list came from the successor since we joined, our replica set is
    /// incomplete, and client requests for our range wait here (`ReplCtx::successors_known`).
    waiting_requests: Vec<(Routed, Time)>,
    /// Hand-over after a merge ("Merging a ring of one" above): set when a node joins with a
    /// non-empty store (it served alone, was cut off, or restarted with its disk); every key it
    /// holds is then written into the ring it joined, version unchanged.
    handover: HandOver,
    /// Client requests this node coordinated lately, by (origin, op): a duplicate or retry of
    /// a write that already took effect is answered again, never stamped a second time.
    recent_requests: RecentRequests,
    /// Replica messages (`Replicate`, `Read`, `Collect`) for members we hold no link to yet:
    /// they go only over a direct link (`guard.rs`), so they wait for it to open
    /// (`send_to_member`).
    awaiting_link: BTreeMap<PeerId, Vec<(Time, KvMsg)>>,
    /// What the node must carry out, in order (drained by `Replicator::take_effects`).
    effects: Vec<Effect>,
}

/// The node's tunables the replicator reads (from `node::Config`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplConfig {
    /// Replicas per key (`k`).
    pub(crate) replicas: usize,
    pub(crate) read_quorum: usize,
    pub(crate) write_quorum: usize,
    pub(crate) lookup_attempt_timeout_ms: u64,
    pub(crate) op_timeout_ms: u64,
    pub(crate) max_pending_ops: usize,
}

/// The rest of the node, as one call of the replicator sees it: the node's view of the ring
/// and its links (read only), the store, clock, metrics and elections it writes, and the
/// node's settlement state (`replication` module docs, "Membership changes"). Built by
/// `node/replicate.rs` for each call.
pub(crate) struct ReplCtx<'a> {
    pub(crate) id: Id,
    pub(crate) now: Time,
    /// `Node::is_joined`.
    pub(crate) joined: bool,
    /// `Node::successors_known`: our successor list came from the successor since we joined.
    pub(crate) successors_known: bool,
    /// `Node::is_fresh`: our own store may lack writes of the ranges we replicate.
    pub(crate) fresh: bool,
    /// `Node::adopting`: the replica successors we learn of count (`unsettled_members`).
    pub(crate) adopting: bool,
    /// `Node::peak_set`: quorums are never computed over fewer members.
    pub(crate) peak_set: usize,
    /// `Node::fenced_range`: the part of our primary range we may not serve now.
    pub(crate) fence: Option<RingRange>,
    /// `Node::origin_via`: the peer named in routed messages we originate.
    pub(crate) origin_via: Option<PeerId>,
    pub(crate) ring: &'a RingState,
    pub(crate) links: &'a Links,
    pub(crate) store: &'a mut Store,
    pub(crate) clock: &'a mut LamportClock,
    pub(crate) metrics: &'a mut Metrics,
    pub(crate) elections: &'a mut Elections,
    /// `Node::settled_members`, kept to the current replica successors here.
    pub(crate) settled_members: &'a mut BTreeSet<PeerId>,
    /// The node's stream of request and operation ids (`Node::id_rng`).
    pub(crate) id_rng: &'a mut Rng,
    /// Operations started (`Node::next_op`).
    pub(crate) next_op: &'a mut u64,
    /// Operation ids the node's other pending operations use (lookups, ring walks).
    pub(crate) ops_taken: [&'a dyn OpSet; 2],
}

/// What the node carries out for the replicator, in the order queued.
#[derive(Debug)]
pub(crate) enum Effect {
    /// A frame over the open link to a peer (`Node::send`).
    Send(PeerId, Message),
    /// A routed message from this node, never to itself (`Node::route`; a drop is counted in
    /// `dropped_no_route`).
    Route(Routed),
    /// A routed message one hop on (`Node::forward`).
    Forward(Routed),
    /// Link up to a member, not essential (`Node::ensure_link(peer, false)`).
    Connect(PeerId),
    /// An output as it is (`OpDone`, `LeaderElected`).
    Output(Output),
    /// The store took a new version: anti-entropy soon, the key's watchers when `notify`, and
    /// `Event::Stored` for the driver's storage.
    Stored {
        key: String,
        entry: Entry,
        notify: bool,
    },
    /// A write quorum holds this leader's stamp: the key's watchers hear of it.
    Notify { key: String, entry: Entry },
    /// Wake the node for the origin op at this time (`Node::op_timers`).
    OpTimer(Time, OpId),
    /// A hand-over wrote `key` at this version, which the store still holds
    /// (`Node::stray_pushed`).
    StrayPushed(String, Version),
    /// A routed `Body::Watch` reached its owner (`Node::watch_at_owner`).
    WatchAtOwner(Routed),
}

/// A set of pending operation ids, for drawing new ones (`draw_op`).
pub(crate) trait OpSet {
    fn holds(&self, op: OpId) -> bool;
}

impl<T> OpSet for BTreeMap<OpId, T> {
    fn holds(&self, op: OpId) -> bool {
        self.contains_key(&op)
    }
}

impl OpSet for Replicator {
    fn holds(&self, op: OpId) -> bool {
        self.kv_ops.contains_key(&op)
    }
}

/// A fresh operation id: random (53 bits, exact in JavaScript numbers), so a peer that relays
/// none of our requests cannot guess the id of an answer we wait for (a forged `KvReply` or
/// `FoundSuccessor`), and two incarnations of a peer never share one; none of `taken` holds it.
pub(crate) fn draw_op(rng: &mut Rng, next_op: &mut u64, taken: &[&dyn OpSet]) -> OpId {
    *next_op += 1; // operations started (the simulator's attacker guesses from it)
    loop {
        let op = OpId(rng.next_u64() >> 11);
        if op.0 != 0 && !taken.iter().any(|t| t.holds(op)) {
            return op;
        }
    }
}

/// This node and its next k-1 successors, as a set name (sorted).
pub(crate) fn replica_set(id: Id, successors: &[Id], replicas: usize) -> Vec<Id> {
    let k = replicas.max(1);
    let members: Vec<Id> = std::iter::once(id)
        .chain(successors.iter().copied())
        .take(k)
        .collect();
    crate::election::set_of(&members)
}

/// The first k-1 successors: the other members of our primary range's replica set.
pub(crate) fn replica_successors(successors: &[Id], replicas: usize) -> Vec<Id> {
    successors
        .iter()
        .copied()
        .take(replicas.saturating_sub(1))
        .collect()
}

impl ReplCtx<'_> {
    /// [`crate::guard::observe_remote`] on this node's clock.
    fn observe_remote(&mut self, ts: u64) -> bool {
        crate::guard::observe_remote(self.clock, &mut self.metrics.rejected, ts)
    }

    /// The replica successors whose answers do not count yet: those not known to hold our
    /// primary range.
    fn unsettled_members(&mut self, replicas: usize) -> Vec<Id> {
        let replicas = replica_successors(self.ring.successors(), replicas);
        if self.adopting {
            self.settled_members.extend(replicas.iter().copied());
        }
        self.settled_members.retain(|m| replicas.contains(m));
        let mut unsettled: Vec<Id> = replicas
            .into_iter()
            .filter(|m| !self.settled_members.contains(m))
            .collect();
        // Our own store, while unsettled, is covered by our `fresh` answers (`is_fresh`).
        unsettled.sort_unstable();
        unsettled
    }
}

impl Replicator {
    pub(crate) fn new(config: ReplConfig) -> Self {
        Self {
            config,
            kv_ops: BTreeMap::new(),
            coordinations: BTreeMap::new(),
            parked: Vec::new(),
            next_req: 0,
            waiting_requests: Vec::new(),
            handover: HandOver::default(),
            recent_requests: RecentRequests::default(),
            awaiting_link: BTreeMap::new(),
            effects: Vec::new(),
        }
    }

    /// What the node must carry out now, in order.
    pub(crate) fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Gives back the buffer `take_effects` returned, drained, to keep its capacity.
    pub(crate) fn recycle(&mut self, buffer: Vec<Effect>) {
        if self.effects.capacity() == 0 {
            self.effects = buffer;
        }
    }

    /// Coordinations started (the simulator's attacker, `sim/hostile.rs`).
    #[cfg(feature = "sim")]
    pub(crate) fn requests_issued(&self) -> u64 {
        self.next_req
    }

    /// A fresh, unguessable request id for a coordination (never 0, which means "no ack").
    fn new_req(&mut self, rng: &mut Rng) -> u64 {
        self.next_req += 1; // requests issued (metrics and the simulator's attacker)
        loop {
            let req = rng.next_u64();
            if req != 0 && !self.coordinations.contains_key(&req) {
                return req;
            }
        }
    }

    fn new_op(&self, ctx: &mut ReplCtx<'_>) -> OpId {
        let [a, b] = ctx.ops_taken;
        draw_op(ctx.id_rng, ctx.next_op, &[self, a, b])
    }

    /// Whether a request that arrived here at `since` and waited (for our successor list, an
    /// election) is an orphan: by now its origin has retried it (every
    /// `lookup_attempt_timeout_ms`) and may even have had the retry acknowledged. Stamping the
    /// orphan then could write its value again *after* a later write of another client, which
    /// reads would then miss (issue 10: a put that waited 3.8 s at a restarting owner was
    /// stamped again after an acknowledged delete of its key). So orphans are dropped.
    fn superseded(&self, now: Time, since: Time) -> bool {
        now >= since + self.config.lookup_attempt_timeout_ms / 2
    }

    /// The node joins with a non-empty store: hand it over once joined ("Merging a ring of
    /// one").
    pub(crate) fn handover_due(&mut self) {
        self.handover.due = true;
    }

    /// Whether a hand-over (of a join, or of strays) is under way.
    pub(crate) fn handover_busy(&self) -> bool {
        self.handover.due || !self.handover.queue.is_empty() || !self.handover.inflight.is_empty()
    }

    /// Queues strays for the write-back (`node/sync.rs`, `strays_round`); the caller then
    /// calls `continue_handover`.
    pub(crate) fn queue_strays(&mut self, strays: Vec<(String, u8)>) {
        self.handover.queue.extend(strays);
    }

    /// The link to `peer` went down: the replica messages that waited for it are dropped.
    pub(crate) fn link_down(&mut self, peer: PeerId) {
        self.awaiting_link.remove(&peer);
    }

    /// The node left or lost its ring: the ops pending here as their origin, which fail.
    pub(crate) fn take_origin_ops(&mut self) -> Vec<OpId> {
        std::mem::take(&mut self.kv_ops).into_keys().collect()
    }

    // ----- sending to members -------------------------------------------------------------

    /// Sends a replica message over the link, or routes it when there is none.
    pub(crate) fn send_kv(&mut self, ctx: &mut ReplCtx<'_>, to: PeerId, msg: KvMsg) {
        self.send_to_member(ctx, to, Message::Kv(msg.clone()), Body::KvDirect(msg));
    }

    /// Sends election messages to the other members of their set.
    pub(crate) fn send_election(
        &mut self,
        ctx: &mut ReplCtx<'_>,
        msgs: Vec<(Id, crate::election::ElectionMsg)>,
    ) {
        for (to, msg) in msgs {
            self.send_to_member(ctx, to, Message::Election(msg.clone()), Body::Election(msg));
        }
    }

    /// Sends to another member of a replica set: over the link when one is open, else routed
    /// through the ring (a member we hold no link to yet, right after a membership change).
    fn send_to_member(
        &mut self,
        ctx: &mut ReplCtx<'_>,
        to: PeerId,
        direct: Message,
        routed_body: Body,
    ) {
        if to == ctx.id {
            return;
        }
        if ctx.links.is_up(to) {
            self.effects.push(Effect::Send(to, direct));
            return;
        }
        if matches!(
            direct,
            Message::Kv(KvMsg::Replicate { .. } | KvMsg::Read { .. } | KvMsg::Collect { .. })
        ) {
            // Members take these only over a direct link (`node/mod.rs`, `deliver`; `guard.rs`):
            // link up now and send it when the link opens (`flush_awaiting_link`), unless it is
            // superseded by then; a retry, a re-ask or anti-entropy carries it otherwise.
            ctx.metrics.kv.requests_awaiting_link += 1;
            if let Message::Kv(msg) = direct {
                if self.awaiting_link.len() < MAX_AWAITING_PEERS
                    || self.awaiting_link.contains_key(&to)
                {
                    let queue = self.awaiting_link.entry(to).or_default();
                    if queue.len() < MAX_AWAITING_PER_PEER {
                        queue.push((ctx.now, msg));
                    }
                }
            }
            self.effects.push(Effect::Connect(to));
            return;
        }
        let routed = Routed {
            dest: Dest::Peer { id: to, via: None },
            origin: ctx.id,
            origin_via: ctx.origin_via,
            hops: 0,
            body: routed_body,
        };
        self.effects.push(Effect::Route(routed));
    }

    /// A link to `peer` opened: the replica messages that waited for it go out, those still
    /// within half an attempt (older ones were retried by then, see `superseded`).
    pub(crate) fn flush_awaiting_link(&mut self, now: Time, peer: PeerId) {
        for (since, msg) in self.awaiting_link.remove(&peer).unwrap_or_default() {
            if !self.superseded(now, since) {
                self.effects.push(Effect::Send(peer, Message::Kv(msg)));
            }
        }
    }

    /// Applies an entry to the local store (LWW); `notify`: tell the key's watchers now (a
    /// leader's own fresh stamp waits for its write quorum instead). The node then resets
    /// anti-entropy's pace and emits `Event::Stored` (`Effect::Stored`).
    fn store_entry(&mut self, ctx: &mut ReplCtx<'_>, key: &str, entry: Entry, notify: bool) {
        match ctx.store.apply(key, entry.clone(), ctx.now) {
            Ok(outcome) if outcome.changed() => {
                self.effects.push(Effect::Stored {
                    key: key.to_string(),
                    entry,
                    notify,
                });
            }
            Ok(_) => {}
            Err(_) => ctx.metrics.kv.rejected_entries += 1,
        }
    }
}

/// A request pending at its origin.
#[derive(Debug, Clone)]
struct OriginOp {
    key: String,
    action: KvAction,
    started: Time,
    attempts: u32,
    retry_at: Time,
    deadline: Time,
    /// The reason of the last `Failed` answer, for the timeout error.
    last_failure: Option<String>,
}

/// A request the leader coordinates.
#[derive(Debug, Clone)]
struct Coordination {
    origin: PeerId,
    origin_via: Option<PeerId>,
    op: u64,
    /// Hops of the request from its origin to this leader.
    hops: u8,
    key: String,
    set: Vec<Id>,
    /// Members the owner does not count (not yet synced with its range).
    unsettled: BTreeSet<Id>,
    /// Members (this leader included) whose last answer said they are fresh: not counted, and
    /// asked again every `SETTLE_ROUND_MS` until they are settled or the deadline passes.
    fresh: BTreeSet<Id>,
    reask_at: Option<Time>,
    /// When this leader took the request (restamps stop half an attempt later).
    started: Time,
    deadline: Time,
    answered: bool,
    kind: CoordKind,
}

#[derive(Debug, Clone)]
enum CoordKind {
    Write {
        entry: Entry,
        acked: BTreeSet<Id>,
        /// Times the leader stamped this write again after a replica held a newer version.
        restamps: u32,
        /// A retried request whose write a member already applied (stamped by an earlier
        /// leader): it is spread again as it is, and a member holding something newer counts as
        /// done (the write took effect before that newer one), never restamped.
        replay: bool,
    },
    Read {
        replies: BTreeMap<Id, Option<Entry>>,
        /// Settled members that acknowledged the write-back of the newest version.
        written_back: BTreeSet<Id>,
        /// The version being written back before the answer (see `check_quorum`).
        writing_back: Option<Entry>,
    },
}

impl Coordination {
    /// Who answered and who did not count, for the error a client sees when the quorum was
    /// not reached.
    fn quorum_state(&self) -> String {
        let answered: Vec<Id> = match &self.kind {
            CoordKind::Write { acked, .. } => acked.iter().copied().collect(),
            CoordKind::Read { replies, .. } => replies.keys().copied().collect(),
        };
        let fmt = |ids: &mut dyn Iterator<Item = &Id>| {
            ids.map(ToString::to_string).collect::<Vec<_>>().join(",")
        };
        format!(
            "set [{}], answered [{}], not yet synced [{}], fresh [{}]",
            fmt(&mut self.set.iter()),
            fmt(&mut answered.iter()),
            fmt(&mut self.unsettled.iter()),
            fmt(&mut self.fresh.iter())
        )
    }
}

/// A request waiting at the owner for its set's election.
#[derive(Debug, Clone)]
struct Parked {
    routed: Routed,
    set: Vec<Id>,
    since: Time,
}

/// Writes a leader coordinated lately, by (origin, origin's op id), with their answer once they
/// have one. A write request that comes again (a retry whose answer was lost, a duplicated
/// frame) must not take effect a second time with a newer timestamp: it could land after a
/// later write of another client and bring the older value back.
#[derive(Debug, Default)]
struct RecentRequests {
    by_op: BTreeMap<(PeerId, u64), (Time, Slot)>,
    order: std::collections::VecDeque<(Time, (PeerId, u64))>,
}

/// What a peer knows of one client write request.
#[derive(Debug, Clone)]
enum Slot {
    /// This peer coordinates it now.
    InProgress,
    /// This peer coordinated it and answered this.
    Done(KvResult),
    /// This peer stored it as a replica of another leader, with this stamp.
    Replicated(Entry),
}

const MAX_RECENT_REQUESTS: usize = 8_192;

impl RecentRequests {
    fn get(&self, origin: PeerId, op: u64) -> Option<&Slot> {
        self.by_op.get(&(origin, op)).map(|(_, slot)| slot)
    }

    fn set(&mut self, origin: PeerId, op: u64, now: Time, keep_ms: u64, slot: Slot) {
        while let Some(&(at, key)) = self.order.front() {
            if self.order.len() < MAX_RECENT_REQUESTS && at + keep_ms > now {
                break;
            }
            self.order.pop_front();
            if self.by_op.get(&key).is_some_and(|(t, _)| *t == at) {
                self.by_op.remove(&key);
            }
        }
        if let Some((_, existing)) = self.by_op.get_mut(&(origin, op)) {
            *existing = slot;
            return;
        }
        self.by_op.insert((origin, op), (now, slot));
        self.order.push_back((now, (origin, op)));
    }

    /// A replica stored the write of `(origin, op)`: remember its stamp unless this peer
    /// coordinates or coordinated that request itself.
    fn replicated(&mut self, origin: PeerId, op: u64, now: Time, keep_ms: u64, entry: Entry) {
        match self.get(origin, op) {
            Some(Slot::InProgress | Slot::Done(_)) => {}
            _ => self.set(origin, op, now, keep_ms, Slot::Replicated(entry)),
        }
    }

    fn finish(&mut self, origin: PeerId, op: u64, result: &KvResult) {
        if let Some((_, slot)) = self.by_op.get_mut(&(origin, op)) {
            match result {
                // Not applied at a quorum: a retry may try again.
                KvResult::Failed { .. } => {
                    self.by_op.remove(&(origin, op));
                }
                _ => *slot = Slot::Done(result.clone()),
            }
        }
    }
}

const MAX_PARKED: usize = 1_024;
/// Replica messages waiting for a link to open (`send_to_member`): peers, and frames per peer.
const MAX_AWAITING_PEERS: usize = 64;
const MAX_AWAITING_PER_PEER: usize = 256;
const MAX_COORDINATIONS: usize = 4_096;
/// How often a leader stamps one write again after replicas held newer versions.
const MAX_RESTAMPS: u32 = 4;
/// Hand-over requests running at once (see "Merging a ring of one").
const MAX_HANDOVER_INFLIGHT: usize = 8;
/// Failed hand-over requests of one key before it is given up (counted in
/// `KvMetrics::handover_failed`).
const MAX_HANDOVER_TRIES: u8 = 5;

/// The hand-over after a merge (see "Merging a ring of one").
#[derive(Debug, Default)]
struct HandOver {
    /// The node joined with a non-empty store (from alone, or restored from its disk): start
    /// once the successor list is known.
    due: bool,
    /// Keys still to write into the ring, with the failed tries so far.
    queue: std::collections::VecDeque<(String, u8)>,
    /// Hand-over requests running, by origin op: the key, its failed tries so far and the
    /// version written.
    inflight: BTreeMap<OpId, (String, u8, crate::store::Version)>,
    /// Keys of the join's hand-over (not the strays') not yet in a write quorum: the version
    /// this node brought may be the only copy (a restart with its disk after the rest of the
    /// set was replaced), so client requests for them wait at this owner until it is
    /// (`Replicator::kv_at_owner`).
    pending: std::collections::BTreeSet<String>,
    /// Client requests that reached this owner for a `pending` key, with when they came.
    waiting: Vec<(Routed, Time)>,
}
