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
//! backwards. `sim::history` checks this on client histories under every fault class but
//! partitions (see README, "Consistency"). The mechanisms:
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

use crate::Time;
use crate::api::OpId;
use crate::id::{Id, PeerId};
use crate::store::Entry;
use crate::wire::Routed;
use crate::wire::kv::{KvAction, KvMsg, KvResult};
use std::collections::{BTreeMap, BTreeSet};

/// The replicated store's request state, owned by the node (its protocol methods are in
/// `node/replicate.rs`: they read the ring, the links, the store and the clock besides).
#[derive(Debug, Default)]
pub(crate) struct Replicator {
    /// Client requests pending at this node as their origin.
    pub(crate) kv_ops: BTreeMap<OpId, OriginOp>,
    /// Requests this node coordinates as a set's leader, by request id.
    pub(crate) coordinations: BTreeMap<u64, Coordination>,
    /// Requests waiting for an election or a link.
    pub(crate) parked: Vec<Parked>,
    /// Coordinations started (request ids themselves are random, see `guard::new_req`).
    pub(crate) next_req: u64,
    /// Until our successor list came from the successor since we joined, our replica set is
    /// incomplete, and client requests for our range wait here (`Node::successors_known`).
    pub(crate) waiting_requests: Vec<(Routed, Time)>,
    /// Hand-over after a merge ("Merging a ring of one" above): set when a node joins with a
    /// non-empty store (it served alone, was cut off, or restarted with its disk); every key it
    /// holds is then written into the ring it joined, version unchanged.
    pub(crate) handover: HandOver,
    /// Client requests this node coordinated lately, by (origin, op): a duplicate or retry of
    /// a write that already took effect is answered again, never stamped a second time.
    pub(crate) recent_requests: RecentRequests,
    /// Replica messages (`Replicate`, `Read`, `Collect`) for members we hold no link to yet:
    /// they go only over a direct link (`guard.rs`), so they wait for it to open
    /// (`node/replicate.rs`, `send_to_member`).
    pub(crate) awaiting_link: BTreeMap<PeerId, Vec<(Time, KvMsg)>>,
}

/// A request pending at its origin.
#[derive(Debug, Clone)]
pub(crate) struct OriginOp {
    pub(crate) key: String,
    pub(crate) action: KvAction,
    pub(crate) started: Time,
    pub(crate) attempts: u32,
    pub(crate) retry_at: Time,
    pub(crate) deadline: Time,
    /// The reason of the last `Failed` answer, for the timeout error.
    pub(crate) last_failure: Option<String>,
}

/// A request the leader coordinates.
#[derive(Debug, Clone)]
pub(crate) struct Coordination {
    pub(crate) origin: PeerId,
    pub(crate) origin_via: Option<PeerId>,
    pub(crate) op: u64,
    /// Hops of the request from its origin to this leader.
    pub(crate) hops: u8,
    pub(crate) key: String,
    pub(crate) set: Vec<Id>,
    /// Members the owner does not count (not yet synced with its range).
    pub(crate) unsettled: BTreeSet<Id>,
    /// Members (this leader included) whose last answer said they are fresh: not counted, and
    /// asked again every `SETTLE_ROUND_MS` until they are settled or the deadline passes.
    pub(crate) fresh: BTreeSet<Id>,
    pub(crate) reask_at: Option<Time>,
    /// When this leader took the request (restamps stop half an attempt later).
    pub(crate) started: Time,
    pub(crate) deadline: Time,
    pub(crate) answered: bool,
    pub(crate) kind: CoordKind,
}

#[derive(Debug, Clone)]
pub(crate) enum CoordKind {
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
    pub(crate) fn quorum_state(&self) -> String {
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
pub(crate) struct Parked {
    pub(crate) routed: Routed,
    pub(crate) set: Vec<Id>,
    pub(crate) since: Time,
}

/// Writes a leader coordinated lately, by (origin, origin's op id), with their answer once they
/// have one. A write request that comes again (a retry whose answer was lost, a duplicated
/// frame) must not take effect a second time with a newer timestamp: it could land after a
/// later write of another client and bring the older value back.
#[derive(Debug, Default)]
pub(crate) struct RecentRequests {
    pub(crate) by_op: BTreeMap<(PeerId, u64), (Time, Slot)>,
    pub(crate) order: std::collections::VecDeque<(Time, (PeerId, u64))>,
}

/// What a peer knows of one client write request.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    /// This peer coordinates it now.
    InProgress,
    /// This peer coordinated it and answered this.
    Done(KvResult),
    /// This peer stored it as a replica of another leader, with this stamp.
    Replicated(Entry),
}

pub(crate) const MAX_RECENT_REQUESTS: usize = 8_192;

impl RecentRequests {
    pub(crate) fn get(&self, origin: PeerId, op: u64) -> Option<&Slot> {
        self.by_op.get(&(origin, op)).map(|(_, slot)| slot)
    }

    pub(crate) fn set(&mut self, origin: PeerId, op: u64, now: Time, keep_ms: u64, slot: Slot) {
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
    pub(crate) fn replicated(
        &mut self,
        origin: PeerId,
        op: u64,
        now: Time,
        keep_ms: u64,
        entry: Entry,
    ) {
        match self.get(origin, op) {
            Some(Slot::InProgress | Slot::Done(_)) => {}
            _ => self.set(origin, op, now, keep_ms, Slot::Replicated(entry)),
        }
    }

    pub(crate) fn finish(&mut self, origin: PeerId, op: u64, result: &KvResult) {
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

pub(crate) const MAX_PARKED: usize = 1_024;
/// Replica messages waiting for a link to open (`send_to_member`): peers, and frames per peer.
pub(crate) const MAX_AWAITING_PEERS: usize = 64;
pub(crate) const MAX_AWAITING_PER_PEER: usize = 256;
pub(crate) const MAX_COORDINATIONS: usize = 4_096;
/// How often a leader stamps one write again after replicas held newer versions.
pub(crate) const MAX_RESTAMPS: u32 = 4;
/// Hand-over requests running at once (see "Merging a ring of one").
pub(crate) const MAX_HANDOVER_INFLIGHT: usize = 8;
/// Failed hand-over requests of one key before it is given up (counted in
/// `KvMetrics::handover_failed`).
pub(crate) const MAX_HANDOVER_TRIES: u8 = 5;

/// The hand-over after a merge (see "Merging a ring of one").
#[derive(Debug, Default)]
pub(crate) struct HandOver {
    /// The node joined with a non-empty store (from alone, or restored from its disk): start
    /// once the successor list is known.
    pub(crate) due: bool,
    /// Keys still to write into the ring, with the failed tries so far.
    pub(crate) queue: std::collections::VecDeque<(String, u8)>,
    /// Hand-over requests running, by origin op: the key, its failed tries so far and the
    /// version written.
    pub(crate) inflight: BTreeMap<OpId, (String, u8, crate::store::Version)>,
    /// Keys of the join's hand-over (not the strays') not yet in a write quorum: the version
    /// this node brought may be the only copy (a restart with its disk after the rest of the
    /// set was replaced), so client requests for them wait at this owner until it is
    /// (`Node::kv_at_owner`).
    pub(crate) pending: std::collections::BTreeSet<String>,
    /// Client requests that reached this owner for a `pending` key, with when they came.
    pub(crate) waiting: Vec<(Routed, Time)>,
}
