//! The replicated store's request paths as methods of [`Node`]: put / get / delete, the
//! leader's coordination, replica handling, read-repair and the hand-over of a merging ring of
//! one. The protocol, and the state these methods keep, are described in
//! [`crate::replication`]; this file is a child of `node` because it reads and writes the
//! node's ring, links, store and clock.

use super::{Node, SETTLE_ROUND_MS};
use crate::Time;
use crate::api::{Event, OpError, OpId, OpOutcome, Output};
use crate::election::{ElectionOutcome, set_of};
use crate::id::{Id, PeerId};
use crate::replication::*;
use crate::store::{Entry, RingRange, Version, key_id};
use crate::wire::kv::{KvAction, KvMsg, KvReply, KvRequest, KvResult, MAX_COLLECT_ENTRIES};
use crate::wire::{Body, Dest, Message, Routed};
use std::collections::{BTreeMap, BTreeSet};

impl Node {
    // ----- commands -----------------------------------------------------------------------

    /// Stores `value` under `key`; `OpDone` carries the write's Lamport timestamp.
    pub fn put(&mut self, key: &str, value: &str, writer: &str, now: Time) -> OpId {
        let entry = Entry::live(value, 0, writer);
        self.kv_command(
            key,
            &entry,
            KvAction::Put {
                value: value.to_string(),
                writer: writer.to_string(),
            },
            now,
        )
    }

    /// Deletes `key` (a tombstone that wins over older writes).
    pub fn delete(&mut self, key: &str, writer: &str, now: Time) -> OpId {
        let entry = Entry::tombstone(0, writer);
        self.kv_command(
            key,
            &entry,
            KvAction::Delete {
                writer: writer.to_string(),
            },
            now,
        )
    }

    /// Reads `key` from a quorum of its replicas.
    pub fn get(&mut self, key: &str, now: Time) -> OpId {
        let entry = Entry::tombstone(0, "-");
        self.kv_command(key, &entry, KvAction::Get, now)
    }

    fn kv_command(&mut self, key: &str, shape: &Entry, action: KvAction, now: Time) -> OpId {
        self.advance(now);
        let op = self.new_op();
        if let Err(e) = self.store.limits().check(key, shape) {
            self.done(op, Err(OpError::Rejected(e)));
            return op;
        }
        if !self.is_joined() {
            self.done(op, Err(OpError::NotJoined));
            return op;
        }
        if self.repl.kv_ops.len() >= self.config.max_pending_ops {
            self.done(
                op,
                Err(OpError::TooManyPendingOps {
                    limit: self.config.max_pending_ops,
                }),
            );
            return op;
        }
        match action {
            KvAction::Get => self.metrics.kv.total_gets += 1,
            _ => self.metrics.kv.total_puts += 1,
        }
        self.repl.kv_ops.insert(
            op,
            OriginOp {
                key: key.to_string(),
                action,
                started: now,
                attempts: 0,
                retry_at: now,
                deadline: now + self.config.op_timeout_ms,
                last_failure: None,
            },
        );
        self.send_kv_attempt(op);
        op
    }

    /// Starts the hand-over after a merge when it is due, and keeps `MAX_HANDOVER_INFLIGHT`
    /// of its requests running (see "Merging a ring of one").
    pub(crate) fn continue_handover(&mut self) {
        if !self.is_joined() || self.ring.successors().is_empty() || !self.successors_known {
            return;
        }
        if std::mem::take(&mut self.repl.handover.due) {
            self.repl.handover.queue = self.store.iter().map(|r| (r.key.to_string(), 0)).collect();
            self.repl.handover.pending = self
                .repl
                .handover
                .queue
                .iter()
                .map(|(k, _)| k.clone())
                .collect();
            self.metrics.kv.handover_keys += self.repl.handover.queue.len() as u64;
        }
        while self.repl.handover.inflight.len() < MAX_HANDOVER_INFLIGHT
            && self.repl.kv_ops.len() < self.config.max_pending_ops
        {
            let Some((key, tries)) = self.repl.handover.queue.pop_front() else {
                break;
            };
            let Some(entry) = self.store.get(&key).cloned() else {
                continue; // collected meanwhile
            };
            let op = self.new_op();
            let now = self.now;
            let version = entry.version.clone();
            self.repl.kv_ops.insert(
                op,
                OriginOp {
                    key: key.clone(),
                    action: KvAction::Restore { entry },
                    started: now,
                    attempts: 0,
                    retry_at: now,
                    deadline: now + self.config.op_timeout_ms,
                    last_failure: None,
                },
            );
            self.repl
                .handover
                .inflight
                .insert(op, (key, tries, version));
            self.send_kv_attempt(op);
        }
    }

    /// A hand-over request ended (`ok`: a write quorum holds its version or a newer one). Not
    /// a client operation: nothing is reported to the driver.
    fn handover_done(&mut self, op: OpId, ok: bool) -> bool {
        let Some((key, tries, version)) = self.repl.handover.inflight.remove(&op) else {
            return false;
        };
        let settled = if ok {
            self.metrics.kv.handed_over += 1;
            self.stray_pushed(&key, &version);
            true
        } else if tries + 1 < MAX_HANDOVER_TRIES {
            // A key a client waits for is tried again first.
            if self.repl.handover.pending.contains(&key) {
                self.repl
                    .handover
                    .queue
                    .push_front((key.clone(), tries + 1));
            } else {
                self.repl.handover.queue.push_back((key.clone(), tries + 1));
            }
            false
        } else {
            self.metrics.kv.handover_failed += 1;
            true
        };
        if settled && self.repl.handover.pending.remove(&key) {
            self.release_handover_waiting(&key);
        }
        self.continue_handover();
        true
    }

    /// Whether a client request for `key` must wait at this owner: the key's version restored
    /// here is still being handed over (`HandOver::pending`). Until a write quorum holds it,
    /// the set's leader could answer a read without it, or stamp a write below it that the
    /// hand-over would then overwrite. The key moves to the front of the hand-over queue.
    fn wait_for_handover(&mut self, routed: &Routed) -> bool {
        let Body::Kv(request) = &routed.body else {
            return false;
        };
        if matches!(request.action, KvAction::Restore { .. })
            || !self.repl.handover.pending.contains(&request.key)
        {
            return false;
        }
        let queue = &mut self.repl.handover.queue;
        if let Some(at) = queue.iter().position(|(k, _)| *k == request.key)
            && let Some(item) = queue.remove(at)
        {
            queue.push_front(item);
        }
        if self.repl.handover.waiting.len() < MAX_PARKED {
            self.repl.handover.waiting.push((routed.clone(), self.now));
        } else {
            self.metrics.kv.dropped_requests += 1;
        }
        self.continue_handover();
        true
    }

    /// The hand-over of `key` ended: the requests that waited for it go on, unless their
    /// origin has retried them meanwhile (`superseded`).
    fn release_handover_waiting(&mut self, key: &str) {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.repl.handover.waiting)
            .into_iter()
            .partition(|(r, _)| matches!(&r.body, Body::Kv(q) if q.key == key));
        self.repl.handover.waiting = waiting;
        for (routed, since) in ready {
            if self.superseded(since) {
                self.metrics.kv.dropped_requests += 1;
                continue;
            }
            self.kv_at_owner(routed);
        }
    }

    fn send_kv_attempt(&mut self, op: OpId) {
        let Some(pending) = self.repl.kv_ops.get_mut(&op) else {
            return;
        };
        pending.attempts += 1;
        pending.retry_at = self.now + self.config.lookup_attempt_timeout_ms;
        let wake = pending.retry_at.min(pending.deadline);
        let request = KvRequest {
            op: op.0,
            key: pending.key.clone(),
            action: pending.action.clone(),
            set: Vec::new(),
            unsettled: Vec::new(),
        };
        self.op_timers.insert((wake, op));
        let routed = Routed {
            dest: Dest::Owner {
                key: Id::of_key(&request.key),
            },
            origin: self.id,
            origin_via: self.origin_via(),
            hops: 0,
            body: Body::Kv(request),
        };
        self.kv_route(routed);
    }

    /// Handles a routed KV request here when this node knows the owner, else routes it on.
    pub(crate) fn kv_route(&mut self, routed: Routed) {
        let Dest::Owner { key } = routed.dest else {
            return;
        };
        match self.ring.known_owner(key, true) {
            Some(owner) if owner == self.id => match routed.body {
                Body::Watch { .. } => self.watch_at_owner(routed),
                _ => self.kv_at_owner(routed),
            },
            // Our pointers name an owner we hold no link to: they may be stale (a successor
            // list learned from a peer that had not yet noticed a death). Route toward the key
            // instead, so the hops closer to it resolve the owner with their own pointers.
            Some(owner)
                if !self.links.is_up(owner)
                    && !crate::routing::preceding_candidates(
                        self.id,
                        key,
                        self.routing_peers(),
                    )
                    .is_empty() =>
            {
                self.forward(routed);
            }
            Some(owner) => {
                let mut routed = routed;
                routed.dest = Dest::Peer {
                    id: owner,
                    via: None,
                };
                self.forward(routed);
            }
            None => self.forward(routed),
        }
    }

    /// Origin-side timer: retry or give up.
    pub(crate) fn on_kv_timer(&mut self, op: OpId, at: Time) -> bool {
        let Some(pending) = self.repl.kv_ops.get(&op) else {
            return false;
        };
        if at != pending.retry_at.min(pending.deadline) {
            return true;
        }
        if self.now >= pending.deadline {
            let pending = self.repl.kv_ops.remove(&op).expect("present");
            if self.handover_done(op, false) {
                return true;
            }
            self.metrics.kv.failed += 1;
            self.done(
                op,
                Err(OpError::KvTimeout {
                    key: pending.key,
                    attempts: pending.attempts,
                    last_failure: pending.last_failure,
                }),
            );
        } else {
            self.metrics.kv.retries += 1;
            self.send_kv_attempt(op);
        }
        true
    }

    // ----- at the owner -------------------------------------------------------------------

    /// Called for a routed `Kv` body that reached a node which believes it owns the key, or a
    /// node named as leader (the request then carries the set).
    pub(crate) fn kv_at_owner(&mut self, routed: Routed) {
        let Body::Kv(request) = &routed.body else {
            return;
        };
        if !request.set.is_empty() {
            // Sent to us as the set's leader. Authorization (`guard.rs`): at most k members,
            // us among them, each one able to be in the key's set by our own view; the
            // unsettled members among them. Anything else would make us coordinate with (and
            // count the answers of) whatever set the sender names.
            let set = request.set.clone();
            let unsettled = request.unsettled.clone();
            let key = Id::of_key(&request.key);
            if self.plausible_set(&set, Some(key)) && unsettled.iter().all(|m| set.contains(m)) {
                self.coordinate(routed, set, unsettled);
            } else {
                self.metrics.rejected.bad_set += 1;
            }
            return;
        }
        let key = Id::of_key(&request.key);
        if !self.accepts_ownership(key) {
            // We were told we own it, but our pointers disagree (the ring moved): route again.
            let mut routed = routed;
            routed.dest = Dest::Owner { key };
            self.forward(routed);
            return;
        }
        if !self.successors_known {
            // Joined a moment ago: our successor list (so the replica set) is not known yet.
            // It comes with the successor's first answer; the request waits for it.
            if self.repl.waiting_requests.len() < MAX_PARKED {
                self.repl.waiting_requests.push((routed, self.now));
            } else {
                self.metrics.kv.dropped_requests += 1;
            }
            return;
        }
        if self.wait_for_handover(&routed) {
            return;
        }
        let set = self.replica_set();
        match self.elections.leader(&set) {
            Some(leader) if leader == self.id => {
                let unsettled = self.unsettled_members();
                self.coordinate(routed, set, unsettled);
            }
            Some(leader) => self.hand_to_leader(routed, set, leader),
            None => {
                if self.repl.parked.len() >= MAX_PARKED {
                    self.metrics.kv.dropped_requests += 1;
                    return;
                }
                self.repl.parked.push(Parked {
                    routed,
                    set: set.clone(),
                    since: self.now,
                });
                let (msgs, outcome) = self.elections.start(&set, self.now);
                self.send_election(msgs);
                if let Some(outcome) = outcome {
                    self.on_election_outcome(outcome);
                }
            }
        }
    }

    /// Whether this node takes a request addressed to it as the owner of `key`. The peer that
    /// resolved the owner did so from its successor pointer, so only contrary evidence here
    /// sends the request on: a predecessor after which the key does not fall, or a successor
    /// that owns it. Without a predecessor (joined, not yet notified by the peer that already
    /// points here) nothing contradicts the resolver; Chord's `notify` treats a nil
    /// predecessor the same way. Routing the request on instead would send it back to the
    /// resolver, which sends it here again, until the hop limit drops it and only the origin's
    /// retry recovers the operation.
    fn accepts_ownership(&self, key: Id) -> bool {
        match self.ring.known_owner(key, false) {
            Some(owner) => owner == self.id,
            None => self.ring.predecessor().is_none(),
        }
    }

    /// This node and its next k-1 successors, as a set name (sorted).
    pub(crate) fn replica_set(&self) -> Vec<Id> {
        let k = self.config.replicas.max(1);
        let members: Vec<Id> = std::iter::once(self.id)
            .chain(self.ring.successors().iter().copied())
            .take(k)
            .collect();
        set_of(&members)
    }

    /// The replica successors whose answers do not count yet: those not known to hold our
    /// primary range.
    pub(crate) fn unsettled_members(&mut self) -> Vec<Id> {
        let replicas = self.replica_successors();
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

    fn hand_to_leader(&mut self, routed: Routed, set: Vec<Id>, leader: Id) {
        let mut routed = routed;
        let unsettled = self.unsettled_members();
        if let Body::Kv(request) = &mut routed.body {
            request.set = set;
            request.unsettled = unsettled;
        }
        routed.dest = Dest::Peer {
            id: leader,
            via: None,
        };
        self.forward(routed);
    }

    pub(crate) fn on_election_outcome(&mut self, outcome: ElectionOutcome) {
        let ElectionOutcome::Elected { set, leader } = outcome;
        self.out.push_back(Output::Event(Event::LeaderElected {
            set: set.clone(),
            leader,
        }));
        let (ready, waiting): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.repl.parked)
            .into_iter()
            .partition(|p| p.set == set);
        self.repl.parked = waiting;
        for parked in ready {
            if self.superseded(parked.since) {
                self.metrics.kv.dropped_requests += 1;
                continue;
            }
            if leader == self.id {
                let unsettled = self.unsettled_members();
                self.coordinate(parked.routed, parked.set, unsettled);
            } else {
                self.hand_to_leader(parked.routed, parked.set, leader);
            }
        }
    }

    /// Requests that waited for our successor list (see `kv_at_owner`) go on, unless the
    /// origin has sent a newer attempt meanwhile (`superseded`).
    pub(crate) fn release_waiting_requests(&mut self) {
        for (routed, since) in std::mem::take(&mut self.repl.waiting_requests) {
            if self.superseded(since) {
                self.metrics.kv.dropped_requests += 1;
                continue;
            }
            self.kv_at_owner(routed);
        }
    }

    /// Whether a request that arrived here at `since` and waited (for our successor list, an
    /// election) is an orphan: by now its origin has retried it (every
    /// `lookup_attempt_timeout_ms`) and may even have had the retry acknowledged. Stamping the
    /// orphan then could write its value again *after* a later write of another client, which
    /// reads would then miss (issue 10: a put that waited 3.8 s at a restarting owner was
    /// stamped again after an acknowledged delete of its key). So orphans are dropped.
    fn superseded(&self, since: Time) -> bool {
        self.now >= since + self.config.lookup_attempt_timeout_ms / 2
    }

    /// Waiting and parked requests the origin has retried by now are dropped (`superseded`).
    pub(crate) fn expire_parked(&mut self) {
        let limit = self
            .now
            .saturating_sub(self.config.lookup_attempt_timeout_ms / 2);
        let waiting = self.repl.waiting_requests.len();
        self.repl
            .waiting_requests
            .retain(|(_, since)| *since >= limit);
        self.metrics.kv.dropped_requests += (waiting - self.repl.waiting_requests.len()) as u64;
        let before = self.repl.parked.len() + self.repl.handover.waiting.len();
        self.repl.parked.retain(|p| p.since >= limit);
        self.repl
            .handover
            .waiting
            .retain(|(_, since)| *since >= limit);
        let after = self.repl.parked.len() + self.repl.handover.waiting.len();
        self.metrics.kv.dropped_requests += (before - after) as u64;
    }

    // ----- at the leader ------------------------------------------------------------------

    fn coordinate(&mut self, routed: Routed, set: Vec<Id>, unsettled: Vec<Id>) {
        let Body::Kv(request) = routed.body else {
            return;
        };
        if self.repl.coordinations.len() >= MAX_COORDINATIONS {
            self.metrics.kv.dropped_requests += 1;
            return;
        }
        let is_write = !matches!(request.action, KvAction::Get);
        let wid = (routed.origin, request.op);
        let mut replayed = None;
        if is_write {
            match self.repl.recent_requests.get(routed.origin, request.op) {
                Some(Slot::Done(result)) => {
                    // Done before: the same answer again, nothing stamped.
                    let result = result.clone();
                    self.metrics.kv.duplicate_requests += 1;
                    self.send_kv_reply(
                        (routed.origin, routed.origin_via),
                        request.op,
                        routed.hops,
                        result,
                    );
                    return;
                }
                Some(Slot::InProgress) => {
                    // Still in progress: its answer is on the way.
                    self.metrics.kv.duplicate_requests += 1;
                    return;
                }
                Some(Slot::Replicated(entry)) => {
                    // An earlier leader stamped it and we stored it as a replica: spread that
                    // very entry instead of stamping the write again.
                    self.metrics.kv.duplicate_requests += 1;
                    replayed = Some(entry.clone());
                }
                None => {}
            }
            let keep = self.config.op_timeout_ms * 2;
            self.repl.recent_requests.set(
                routed.origin,
                request.op,
                self.now,
                keep,
                Slot::InProgress,
            );
        }
        let req = self.new_req();
        let others: Vec<Id> = set.iter().copied().filter(|m| *m != self.id).collect();
        let kind = match request.action {
            KvAction::Get => {
                for peer in &others {
                    self.send_kv(
                        *peer,
                        KvMsg::Read {
                            req,
                            key: request.key.clone(),
                        },
                    );
                }
                let mut replies = BTreeMap::new();
                replies.insert(self.id, self.store.get(&request.key).cloned());
                CoordKind::Read {
                    replies,
                    written_back: BTreeSet::new(),
                    writing_back: None,
                }
            }
            KvAction::Put { .. } | KvAction::Delete { .. } if replayed.is_some() => {
                let entry = replayed.take().expect("checked");
                self.replicate_write(&request.key, entry, req, &others, wid, true)
            }
            KvAction::Put { value, writer } => {
                self.stamp_and_store(&request.key, Some(value), writer, req, &others, wid)
            }
            KvAction::Delete { writer } => {
                self.stamp_and_store(&request.key, None, writer, req, &others, wid)
            }
            KvAction::Restore { entry } => {
                // Later writes of this leader must win over the restored version; a timestamp
                // beyond the bound is refused like any remote one (guard.rs).
                if !self.observe_remote(entry.version.ts) {
                    self.metrics.kv.rejected_entries += 1;
                    return;
                }
                self.replicate_write(&request.key, entry, req, &others, wid, true)
            }
        };
        self.repl.coordinations.insert(
            req,
            Coordination {
                origin: routed.origin,
                origin_via: routed.origin_via,
                op: request.op,
                hops: routed.hops,
                key: request.key,
                set,
                unsettled: unsettled.into_iter().collect(),
                fresh: self.is_fresh().then_some(self.id).into_iter().collect(),
                reask_at: None,
                started: self.now,
                deadline: self.now + self.config.lookup_attempt_timeout_ms,
                answered: false,
                kind,
            },
        );
        self.check_quorum(req);
    }

    fn stamp_and_store(
        &mut self,
        key: &str,
        value: Option<String>,
        writer: String,
        req: u64,
        others: &[Id],
        wid: (Id, u64),
    ) -> CoordKind {
        // A new write must beat whatever this leader holds: observe its version first. Every
        // path that stores a remote entry bounds its timestamp (`guard.rs`), so this never
        // jumps further; the check keeps a store restored from an older version honest too.
        if let Some(existing) = self.store.get(key) {
            let ts = existing.version.ts;
            self.observe_remote(ts);
        }
        let ts = self.clock.tick();
        let entry = Entry {
            value,
            version: crate::store::Version::new(ts, writer),
        };
        self.replicate_write(key, entry, req, others, wid, false)
    }

    /// Stores a stamped write here and sends it to the other members. `replay`: the entry was
    /// stamped before (by another leader, for the same request) and is only spread again.
    fn replicate_write(
        &mut self,
        key: &str,
        entry: Entry,
        req: u64,
        others: &[Id],
        wid: (Id, u64),
        replay: bool,
    ) -> CoordKind {
        // Watchers hear of it once a write quorum holds it (`check_quorum`), not now: a
        // version only this leader holds dies with it if it crashes before replicating.
        self.store_entry_as(key, entry.clone(), false);
        for peer in others {
            self.send_kv(
                *peer,
                KvMsg::Replicate {
                    req,
                    key: key.to_string(),
                    entry: entry.clone(),
                    wid: Some(wid),
                },
            );
        }
        CoordKind::Write {
            entry,
            acked: BTreeSet::from([self.id]),
            restamps: 0,
            replay,
        }
    }

    /// A replica refused a write because it holds a newer version (`newer`): the write lost,
    /// so it is not acknowledged as it is. The leader observes the newer timestamp and stamps
    /// the write again above it, under a new request id (acknowledgements of the old stamp no
    /// longer count), at most [`MAX_RESTAMPS`] times; then the write fails and the origin
    /// retries it.
    fn restamp(&mut self, req: u64, newer: u64) {
        let Some(mut c) = self.repl.coordinations.remove(&req) else {
            return;
        };
        let CoordKind::Write {
            entry, restamps, ..
        } = &c.kind
        else {
            self.repl.coordinations.insert(req, c);
            return;
        };
        if !self.observe_remote(newer) {
            // Too far ahead to stamp above now; the clock moved toward it, the retry passes.
            self.metrics.kv.rejected_entries += 1;
            self.repl.coordinations.insert(req, c);
            return;
        }
        self.metrics.kv.restamps += 1;
        // A new stamp late in the attempt could land after the origin's next attempt was
        // acknowledged and another client wrote the key again (see `superseded`): past half
        // the attempt the write is left to fail, and the origin's retry carries it.
        if *restamps >= MAX_RESTAMPS || self.superseded(c.started) {
            self.repl.coordinations.insert(req, c);
            return; // expires unanswered: the origin retries
        }
        let restamps = restamps + 1;
        let (value, writer) = (entry.value.clone(), entry.version.writer.clone());
        let new_req = self.new_req();
        let others: Vec<Id> = c.set.iter().copied().filter(|m| *m != self.id).collect();
        let wid = (c.origin, c.op);
        let mut kind = self.stamp_and_store(&c.key, value, writer, new_req, &others, wid);
        if let CoordKind::Write { restamps: r, .. } = &mut kind {
            *r = restamps;
        }
        c.kind = kind;
        self.repl.coordinations.insert(new_req, c);
        self.check_quorum(new_req);
    }

    /// Applies an entry to the local store (LWW) and tells the driver (persistence) and the
    /// key's watchers (`crate::watch`).
    pub(crate) fn store_entry(&mut self, key: &str, entry: Entry) -> bool {
        self.store_entry_as(key, entry, true)
    }

    /// [`Self::store_entry`]; `notify`: tell the key's watchers now (a leader's own fresh
    /// stamp waits for its write quorum instead).
    fn store_entry_as(&mut self, key: &str, entry: Entry, notify: bool) -> bool {
        match self.store.apply(key, entry.clone(), self.now) {
            Ok(outcome) if outcome.changed() => {
                // New data: compare with the replicas soon rather than at a backed-off pace.
                self.reset_anti_entropy();
                if notify {
                    self.notify_watchers(key, &entry);
                }
                self.out.push_back(Output::Event(Event::Stored {
                    key: key.to_string(),
                    entry,
                }));
                true
            }
            Ok(_) => false,
            Err(_) => {
                self.metrics.kv.rejected_entries += 1;
                false
            }
        }
    }

    /// Answers the origin once the quorum is in. Only settled members count (see "Membership
    /// changes"). A read answers with the newest version only once `write_quorum` settled
    /// members hold it, writing it back first when fewer do (ABD's second phase), so a later
    /// read cannot return anything older: reads never go backwards.
    fn check_quorum(&mut self, req: u64) {
        let Some(c) = self.repl.coordinations.get(&req) else {
            return;
        };
        if c.answered {
            return;
        }
        // A set that shrank through failures still needs the quorum of the largest set this
        // node was part of (`peak_set`): alone, a cut-off peer would acknowledge by itself.
        let n = c.set.len().max(self.peak_set);
        let w = self.config.write_quorum.min(n);
        let counts = |m: &Id| !c.unsettled.contains(m) && !c.fresh.contains(m);
        let mut write_back = None;
        let result = match &c.kind {
            CoordKind::Write { entry, acked, .. } => {
                (acked.iter().filter(|m| counts(m)).count() >= w).then_some(KvResult::Stored {
                    ts: entry.version.ts,
                })
            }
            CoordKind::Read {
                replies,
                written_back,
                writing_back,
            } => {
                let r = self.config.read_quorum.min(n);
                if replies.keys().filter(|m| counts(m)).count() < r {
                    None
                } else {
                    match replies.values().flatten().max() {
                        None => Some(KvResult::NotFound),
                        Some(newest) => {
                            let holders: BTreeSet<Id> = replies
                                .iter()
                                .filter(|(m, e)| counts(m) && e.as_ref() == Some(newest))
                                .map(|(m, _)| *m)
                                .chain(written_back.iter().copied())
                                .collect();
                            if holders.len() >= w {
                                Some(match newest {
                                    Entry {
                                        value: Some(value),
                                        version,
                                    } => KvResult::Found {
                                        value: value.clone(),
                                        ts: version.ts,
                                        writer: version.writer.clone(),
                                    },
                                    _ => KvResult::NotFound,
                                })
                            } else {
                                if writing_back.as_ref() != Some(newest) {
                                    let targets: Vec<Id> = c
                                        .set
                                        .iter()
                                        .copied()
                                        .filter(|m| counts(m) && !holders.contains(m))
                                        .collect();
                                    write_back = Some((newest.clone(), targets));
                                }
                                None
                            }
                        }
                    }
                }
            }
        };
        if let Some((entry, targets)) = write_back {
            self.start_write_back(req, entry, targets);
            return;
        }
        if result.is_none() {
            // Not enough settled answers yet: fresh members may settle within a few fast
            // anti-entropy rounds; ask them again then instead of failing at the deadline.
            let now = self.now;
            if let Some(c) = self.repl.coordinations.get_mut(&req)
                && !c.fresh.is_empty()
                && c.reask_at.is_none()
            {
                c.reask_at = Some(now + SETTLE_ROUND_MS);
            }
        }
        if let Some(result) = result {
            if let Some(c) = self.repl.coordinations.get_mut(&req) {
                c.answered = true;
                c.reask_at = None;
            }
            if let Some(Coordination {
                key,
                kind: CoordKind::Write { entry, .. },
                ..
            }) = self.repl.coordinations.get(&req)
                && self.store.get(key) == Some(entry)
            {
                // A write quorum holds this leader's stamp now: its watchers may hear of it.
                let (key, entry) = (key.clone(), entry.clone());
                self.notify_watchers(&key, &entry);
            }
            self.read_repair(req);
            self.reply_to_origin(req, result);
        }
    }

    /// A read saw a version that too few settled members hold: store it at those that answered
    /// older or not yet, and answer once enough acknowledge (`check_quorum`).
    fn start_write_back(&mut self, req: u64, entry: Entry, targets: Vec<Id>) {
        let Some(Coordination {
            key,
            kind:
                CoordKind::Read {
                    written_back,
                    writing_back,
                    ..
                },
            ..
        }) = self.repl.coordinations.get_mut(&req)
        else {
            return;
        };
        written_back.clear();
        *writing_back = Some(entry.clone());
        let key = key.clone();
        self.metrics.kv.read_write_backs += 1;
        for peer in targets {
            if peer == self.id {
                self.store_entry(&key, entry.clone());
                if self.store.get(&key) == Some(&entry)
                    && let Some(Coordination {
                        kind: CoordKind::Read { written_back, .. },
                        ..
                    }) = self.repl.coordinations.get_mut(&req)
                {
                    written_back.insert(peer);
                }
            } else {
                self.send_kv(
                    peer,
                    KvMsg::Replicate {
                        req,
                        key: key.clone(),
                        entry: entry.clone(),
                        wid: None,
                    },
                );
            }
        }
        self.check_quorum(req);
    }

    /// Writes the newest version seen by a read back to every member that answered older.
    fn read_repair(&mut self, req: u64) {
        let Some(Coordination {
            key,
            kind: CoordKind::Read { replies, .. },
            ..
        }) = self.repl.coordinations.get(&req)
        else {
            return;
        };
        let Some(newest) = replies.values().flatten().max().cloned() else {
            return;
        };
        let stale: Vec<Id> = replies
            .iter()
            .filter(|(_, e)| e.as_ref() != Some(&newest))
            .map(|(p, _)| *p)
            .collect();
        let key = key.clone();
        for peer in stale {
            self.metrics.kv.read_repairs += 1;
            if peer == self.id {
                self.store_entry(&key, newest.clone());
            } else {
                self.send_kv(
                    peer,
                    KvMsg::Replicate {
                        req: 0,
                        key: key.clone(),
                        entry: newest.clone(),
                        wid: None,
                    },
                );
            }
            if let Some(Coordination {
                kind: CoordKind::Read { replies, .. },
                ..
            }) = self.repl.coordinations.get_mut(&req)
            {
                replies.insert(peer, Some(newest.clone()));
            }
        }
    }

    fn reply_to_origin(&mut self, req: u64, result: KvResult) {
        let Some(c) = self.repl.coordinations.get(&req) else {
            return;
        };
        let (to, op, hops) = ((c.origin, c.origin_via), c.op, c.hops);
        if matches!(c.kind, CoordKind::Write { .. }) {
            self.repl.recent_requests.finish(to.0, op, &result);
        }
        self.send_kv_reply(to, op, hops, result);
    }

    /// Routes a leader's answer to the origin of request `op`.
    fn send_kv_reply(&mut self, to: (PeerId, Option<PeerId>), op: u64, hops: u8, result: KvResult) {
        let reply = Routed {
            dest: Dest::Peer {
                id: to.0,
                via: to.1,
            },
            origin: self.id,
            origin_via: None,
            hops: 0,
            body: Body::KvReply(KvReply { op, result, hops }),
        };
        if !self.route(reply) {
            self.metrics.chord.dropped_no_route += 1;
        }
    }

    /// Coordinations past their deadline: unanswered ones fail (quorum not reached).
    pub(crate) fn expire_coordinations(&mut self) {
        let now = self.now;
        let due: Vec<u64> = self
            .repl
            .coordinations
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(r, _)| *r)
            .collect();
        for req in due {
            // Members that never acknowledged a write get it once more (a lost frame, a slow
            // link): a write acknowledged by W replicas should reach all k soon, not only at
            // the next anti-entropy round.
            if let Some(Coordination {
                key,
                set,
                kind: CoordKind::Write { entry, acked, .. },
                ..
            }) = self.repl.coordinations.get(&req)
            {
                let missing: Vec<Id> = set.iter().copied().filter(|m| !acked.contains(m)).collect();
                let (key, entry) = (key.clone(), entry.clone());
                for peer in missing {
                    self.metrics.kv.replicate_retries += 1;
                    self.send_kv(
                        peer,
                        KvMsg::Replicate {
                            req: 0,
                            key: key.clone(),
                            entry: entry.clone(),
                            wid: None,
                        },
                    );
                }
            }
            let answered = self
                .repl
                .coordinations
                .get(&req)
                .is_some_and(|c| c.answered);
            if !answered {
                self.metrics.kv.quorum_failures += 1;
                let reason = self
                    .repl
                    .coordinations
                    .get(&req)
                    .map(Coordination::quorum_state)
                    .unwrap_or_default();
                self.reply_to_origin(
                    req,
                    KvResult::Failed {
                        reason: format!("quorum not reached at {}: {reason}", self.id),
                    },
                );
            }
            self.repl.coordinations.remove(&req);
        }
    }

    pub(crate) fn next_coordination_deadline(&self) -> Option<Time> {
        self.repl
            .coordinations
            .values()
            .map(|c| match c.reask_at {
                Some(at) if !c.answered => at.min(c.deadline),
                _ => c.deadline,
            })
            .min()
    }

    /// Asks the fresh members of waiting coordinations again (see `check_quorum`): their new
    /// answers carry their current state, and the leader's own freshness is looked at anew.
    pub(crate) fn reask_fresh(&mut self) {
        let now = self.now;
        let due: Vec<u64> = self
            .repl
            .coordinations
            .iter()
            .filter(|(_, c)| !c.answered && c.reask_at.is_some_and(|at| at <= now))
            .map(|(r, _)| *r)
            .collect();
        let me_fresh = self.is_fresh();
        for req in due {
            let Some(c) = self.repl.coordinations.get_mut(&req) else {
                continue;
            };
            c.reask_at = None;
            if !me_fresh {
                c.fresh.remove(&self.id);
            }
            let targets: Vec<Id> = c.fresh.iter().copied().filter(|m| *m != self.id).collect();
            let wid = (c.origin, c.op);
            let key = c.key.clone();
            let msg = |req| match &c.kind {
                CoordKind::Write { entry, .. } => KvMsg::Replicate {
                    req,
                    key: key.clone(),
                    entry: entry.clone(),
                    wid: Some(wid),
                },
                CoordKind::Read { .. } => KvMsg::Read {
                    req,
                    key: key.clone(),
                },
            };
            let msg = msg(req);
            for peer in targets {
                self.send_kv(peer, msg.clone());
            }
            self.check_quorum(req);
            // Still waiting on fresh members: ask again next round.
            if let Some(c) = self.repl.coordinations.get_mut(&req)
                && !c.answered
                && !c.fresh.is_empty()
                && c.reask_at.is_none()
            {
                c.reask_at = Some(now + SETTLE_ROUND_MS);
            }
        }
    }

    // ----- replica messages ---------------------------------------------------------------

    /// Tombstone collection by the owner of the primary range `(pred, self]`, whose replica
    /// successors are `replicas` (see "Tombstone collection" in the module docs).
    pub(crate) fn collect_tombstones(&mut self, pred: PeerId, replicas: &[Id]) {
        // A partial successor list (just joined or restarted, a ring smaller than k) could
        // leave out a replica that missed the delete: wait for the whole set.
        if self.store.tombstone_count() == 0
            || !self.successors_known
            || replicas.len() < self.config.replicas.saturating_sub(1).max(1)
        {
            return;
        }
        let range = RingRange::new(pred.0, self.id.0);
        let proofs: Vec<(Time, RingRange)> = replicas
            .iter()
            .filter_map(|m| self.equal_since.get(m).copied())
            .collect();
        if proofs.len() < replicas.len() {
            return; // some replica has not ended a round `Equal` over this link yet
        }
        let collected =
            self.store
                .collect_tombstones(self.now, self.config.tombstone_grace_ms, |record| {
                    let since = record.tombstone_since.unwrap_or(Time::MAX);
                    range.contains(record.id)
                        && proofs
                            .iter()
                            .all(|(opened, proved)| *opened >= since && proved.contains(record.id))
                });
        if collected.is_empty() {
            return;
        }
        self.metrics.kv.keys_stored = self.store.len();
        self.metrics.kv.tombstones_collected += collected.len() as u64;
        let entries: Vec<(String, Version)> = collected
            .into_iter()
            .map(|(key, entry)| {
                self.out
                    .push_back(Output::Event(Event::Collected { key: key.clone() }));
                (key, entry.version)
            })
            .collect();
        for chunk in entries.chunks(MAX_COLLECT_ENTRIES) {
            for member in replicas {
                self.send_kv(
                    *member,
                    KvMsg::Collect {
                        entries: chunk.to_vec(),
                    },
                );
            }
        }
    }

    pub(crate) fn on_kv_msg(&mut self, from: PeerId, msg: KvMsg) {
        // Authorization (`guard.rs`): orders about a key (store, read, collect) only from a
        // peer that can be in the key's replica set, for a key whose set can include us.
        let key = match &msg {
            KvMsg::Replicate { key, .. } | KvMsg::Read { key, .. } | KvMsg::Watch { key, .. } => {
                Some(key.as_str())
            }
            _ => None,
        };
        if let Some(key) = key {
            let key = Id::of_key(key);
            if !(self.may_have_been_member(key, from) && self.may_be_member(key, self.id)) {
                self.metrics.rejected.kv_not_member += 1;
                return;
            }
        }
        match msg {
            KvMsg::Watch {
                key,
                subscriber,
                since,
                lease_ms,
            } => self.hold_watch(&key, subscriber, since, lease_ms),
            KvMsg::Notify { key, entry } => self.on_watch_notify(from, key, entry),
            KvMsg::Collect { entries } => {
                if entries.len() > MAX_COLLECT_ENTRIES {
                    return;
                }
                for (key, version) in entries {
                    // Only the owner orders a collection, and it precedes us: the key must lie
                    // behind `from` (in `(self, from]`), never in a range we own ourselves, and
                    // we must be able to be in its set (`guard.rs`).
                    let id = Id(key_id(&key));
                    if !id.in_half_open(self.id, from)
                        || !self.may_be_member(id, self.id)
                        || !self.may_be_member(id, from)
                    {
                        self.metrics.rejected.kv_not_member += 1;
                        continue;
                    }
                    if self.store.forget_tombstone(&key, &version) {
                        self.metrics.kv.tombstones_collected += 1;
                        self.out.push_back(Output::Event(Event::Collected { key }));
                    }
                }
                self.metrics.kv.keys_stored = self.store.len();
            }
            KvMsg::Replicate {
                req,
                key,
                entry,
                wid,
            } => {
                if !self.observe_remote(entry.version.ts) {
                    self.metrics.kv.rejected_entries += 1;
                    return;
                }
                self.store_entry(&key, entry.clone());
                if req != 0 {
                    // Acknowledge only what this replica now holds: a write that lost to a
                    // newer version here is refused with that version's timestamp.
                    let newer = self
                        .store
                        .get(&key)
                        .filter(|held| **held > entry)
                        .map(|held| held.version.ts);
                    if let (None, Some((origin, op))) = (newer, wid) {
                        let keep = self.config.op_timeout_ms * 2;
                        self.repl
                            .recent_requests
                            .replicated(origin, op, self.now, keep, entry);
                    }
                    let fresh = self.is_fresh();
                    self.send_kv(from, KvMsg::ReplicateAck { req, newer, fresh });
                }
            }
            KvMsg::ReplicateAck { req, newer, fresh } => {
                // Counts only for a coordination we run, from a member we sent it to.
                let Some(c) = self
                    .repl
                    .coordinations
                    .get_mut(&req)
                    .filter(|c| c.set.contains(&from) && from != self.id)
                else {
                    self.metrics.rejected.answer_not_asked += 1;
                    return;
                };
                if fresh {
                    c.fresh.insert(from);
                } else {
                    c.fresh.remove(&from);
                }
                let answered = c.answered;
                match (&mut c.kind, newer) {
                    (CoordKind::Write { acked, .. }, None) => {
                        acked.insert(from);
                        self.check_quorum(req);
                    }
                    // Too late to matter: the write was acknowledged by a quorum before a
                    // concurrent newer one reached this replica.
                    (CoordKind::Write { .. }, Some(_)) if answered => {}
                    // A replayed write that a newer one superseded took effect before it.
                    (
                        CoordKind::Write {
                            acked,
                            replay: true,
                            ..
                        },
                        Some(_),
                    ) => {
                        acked.insert(from);
                        self.check_quorum(req);
                    }
                    (CoordKind::Write { .. }, Some(ts)) => self.restamp(req, ts),
                    (
                        CoordKind::Read {
                            written_back,
                            writing_back: Some(_),
                            ..
                        },
                        None,
                    ) => {
                        written_back.insert(from);
                        self.check_quorum(req);
                    }
                    // A newer write reached the replica meanwhile: the read's quorum will come
                    // from other answers, or the origin retries.
                    (CoordKind::Read { .. }, _) => {}
                }
            }
            KvMsg::Read { req, key } => {
                let entry = self.store.get(&key).cloned();
                let fresh = self.is_fresh();
                self.send_kv(from, KvMsg::ReadReply { req, entry, fresh });
            }
            KvMsg::ReadReply { req, entry, fresh } => {
                let asked = self.repl.coordinations.get(&req).is_some_and(|c| {
                    matches!(c.kind, CoordKind::Read { .. })
                        && c.set.contains(&from)
                        && from != self.id
                });
                if !asked {
                    self.metrics.rejected.answer_not_asked += 1;
                    return;
                }
                if let Some(entry) = &entry {
                    // A reply above the bound is no answer: it would be written back.
                    if !self.observe_remote(entry.version.ts) {
                        return;
                    }
                }
                let answered = match self.repl.coordinations.get_mut(&req) {
                    Some(Coordination {
                        kind: CoordKind::Read { replies, .. },
                        set,
                        fresh: fresh_members,
                        answered,
                        ..
                    }) if set.contains(&from) => {
                        if fresh {
                            fresh_members.insert(from);
                        } else {
                            fresh_members.remove(&from);
                        }
                        replies.insert(from, entry);
                        *answered
                    }
                    _ => return,
                };
                if answered {
                    // A late answer: still repair it if it was stale.
                    self.read_repair(req);
                } else {
                    self.check_quorum(req);
                }
            }
        }
    }

    /// Sends a replica message over the link, or routes it when there is none.
    pub(crate) fn send_kv(&mut self, to: PeerId, msg: KvMsg) {
        self.send_to_member(to, Message::Kv(msg.clone()), Body::KvDirect(msg));
    }

    /// Sends to another member of a replica set: over the link when one is open, else routed
    /// through the ring (a member we hold no link to yet, right after a membership change).
    fn send_to_member(&mut self, to: PeerId, direct: Message, routed_body: Body) {
        if to == self.id {
            return;
        }
        if self.links.is_up(to) {
            self.send(to, &direct);
            return;
        }
        if matches!(
            direct,
            Message::Kv(KvMsg::Replicate { .. } | KvMsg::Read { .. } | KvMsg::Collect { .. })
        ) {
            // Members take these only over a direct link (`node/mod.rs`, `deliver`; `guard.rs`):
            // link up now and send it when the link opens (`flush_awaiting_link`), unless it is
            // superseded by then; a retry, a re-ask or anti-entropy carries it otherwise.
            self.metrics.kv.requests_awaiting_link += 1;
            if let Message::Kv(msg) = direct {
                if self.repl.awaiting_link.len() < MAX_AWAITING_PEERS
                    || self.repl.awaiting_link.contains_key(&to)
                {
                    let queue = self.repl.awaiting_link.entry(to).or_default();
                    if queue.len() < MAX_AWAITING_PER_PEER {
                        queue.push((self.now, msg));
                    }
                }
            }
            self.ensure_link(to, false);
            return;
        }
        let routed = Routed {
            dest: Dest::Peer { id: to, via: None },
            origin: self.id,
            origin_via: self.origin_via(),
            hops: 0,
            body: routed_body,
        };
        if !self.route(routed) {
            self.metrics.chord.dropped_no_route += 1;
        }
    }

    /// A link to `peer` opened: the replica messages that waited for it go out, those still
    /// within half an attempt (older ones were retried by then, see `superseded`).
    pub(crate) fn flush_awaiting_link(&mut self, peer: PeerId) {
        for (since, msg) in self.repl.awaiting_link.remove(&peer).unwrap_or_default() {
            if !self.superseded(since) {
                self.send(peer, &Message::Kv(msg));
            }
        }
    }

    // ----- at the origin ------------------------------------------------------------------

    pub(crate) fn on_kv_reply(&mut self, reply: KvReply) {
        let op = OpId(reply.op);
        let Some(pending) = self.repl.kv_ops.get(&op) else {
            return; // late answer to a finished or retried op
        };
        let latency = self.now.saturating_sub(pending.started);
        let is_get = matches!(pending.action, KvAction::Get);
        let hops = u32::from(reply.hops);
        let outcome = match reply.result {
            KvResult::Failed { reason } => {
                // Let the retry timer try again; keep the reason for the timeout error.
                if let Some(pending) = self.repl.kv_ops.get_mut(&op) {
                    pending.last_failure = Some(reason);
                }
                return;
            }
            KvResult::Stored { ts } => OpOutcome::Stored { ts, hops },
            KvResult::Found { value, ts, writer } => OpOutcome::Found {
                value,
                ts,
                writer,
                hops,
            },
            KvResult::NotFound => OpOutcome::NotFound { hops },
        };
        self.repl.kv_ops.remove(&op);
        if self.handover_done(op, true) {
            return;
        }
        self.metrics.kv.hops.record(u64::from(hops));
        if is_get {
            self.metrics.kv.get_latency_ms.record(latency);
            match outcome {
                OpOutcome::Found { .. } => self.metrics.kv.total_get_hits += 1,
                _ => self.metrics.kv.total_get_misses += 1,
            }
        } else {
            self.metrics.kv.put_latency_ms.record(latency);
        }
        self.done(op, Ok(outcome));
    }

    pub(crate) fn on_election_msg(&mut self, from: PeerId, msg: crate::election::ElectionMsg) {
        // Authorization (`guard.rs`): a set of at most k members, us and the sender among
        // them, each one able to share a set with us. A larger set would have us message each
        // higher member; an implausible one would fill the leader cache.
        let set = match &msg {
            crate::election::ElectionMsg::Election { set }
            | crate::election::ElectionMsg::Answer { set }
            | crate::election::ElectionMsg::Coordinator { set, .. } => set,
        };
        if !self.plausible_set(set, None) || !set.contains(&from) {
            self.metrics.rejected.bad_set += 1;
            return;
        }
        match self.elections.on_message(from, msg, self.now) {
            Ok((msgs, outcome)) => {
                self.send_election(msgs);
                if let Some(outcome) = outcome {
                    self.on_election_outcome(outcome);
                }
            }
            Err(()) => self.metrics.chord.unexpected_messages += 1,
        }
    }

    pub(crate) fn send_election(&mut self, msgs: Vec<(Id, crate::election::ElectionMsg)>) {
        for (to, msg) in msgs {
            self.send_to_member(to, Message::Election(msg.clone()), Body::Election(msg));
        }
    }

    pub(crate) fn election_timeouts(&mut self) {
        let (msgs, outcomes) = self.elections.on_timeout(self.now);
        self.send_election(msgs);
        for outcome in outcomes {
            self.on_election_outcome(outcome);
        }
    }
}
