//! The replicated store's request paths: put / get / delete with quorums, leader coordination,
//! Lamport stamping and read-repair.
//!
//! Follows DESIGN.md section 4b, after Dynamo (DeCandia et al., SOSP 2007) with a per-set leader:
//! - a request is routed toward the key's id; the first peer that knows the owner forwards it to
//!   the owner; the owner computes the replica set (itself and its next k-1 successors) and hands
//!   the request to the set's leader (the Bully winner, [`crate::election`]), electing one first
//!   when none is known;
//! - the leader stamps writes with its Lamport clock (after observing the stored version, so a
//!   new write always wins over what the leader holds), stores locally, replicates to the other
//!   members and answers the origin after `write_quorum` stores (itself included);
//! - a get asks the other members, answers with the LWW winner once `read_quorum` versions are
//!   in (its own included) and writes the winner back to every member that answered with an
//!   older version or nothing (read-repair, also for answers that arrive after the reply);
//! - a delete is a put of a tombstone; tombstones answer "not found".
//!
//! The origin retries a request that got no answer within `lookup_attempt_timeout_ms` and fails
//! it with a typed error at `op_timeout_ms`. A retried put may be applied twice (with two
//! timestamps); last-writer-wins makes that harmless.

use crate::Time;
use crate::election::{ElectionOutcome, set_of};
use crate::id::{Id, PeerId};
use crate::node::{Event, MAX_CLOCK_JUMP, Node, OpError, OpId, OpOutcome, Output};
use crate::store::Entry;
use crate::wire::{Body, Dest, Message, Routed};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A client request travelling from the origin to the key's leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRequest {
    /// The origin's operation id.
    pub op: u64,
    pub key: String,
    pub action: KvAction,
    /// The replica set, filled in by the owner when it hands the request to the set's leader.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<Id>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "a", content = "c", rename_all = "snake_case")]
#[non_exhaustive]
pub enum KvAction {
    Put { value: String, writer: String },
    Delete { writer: String },
    Get,
}

/// The leader's answer to the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvReply {
    pub op: u64,
    pub result: KvResult,
    /// Hops the request took from its origin to the leader (shown to users next to latency).
    #[serde(default)]
    pub hops: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", content = "c", rename_all = "snake_case")]
#[non_exhaustive]
pub enum KvResult {
    Stored {
        ts: u64,
    },
    Found {
        value: String,
        ts: u64,
        writer: String,
    },
    NotFound,
    Failed {
        reason: String,
    },
}

/// Messages between the members of a replica set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", content = "c", rename_all = "snake_case")]
#[non_exhaustive]
pub enum KvMsg {
    /// Store this version (LWW); `req` 0 means no acknowledgement is wanted (read-repair).
    Replicate {
        req: u64,
        key: String,
        entry: Entry,
    },
    ReplicateAck {
        req: u64,
    },
    Read {
        req: u64,
        key: String,
    },
    ReadReply {
        req: u64,
        entry: Option<Entry>,
    },
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
}

/// A request the leader coordinates.
#[derive(Debug, Clone)]
pub(crate) struct Coordination {
    origin: PeerId,
    origin_via: Option<PeerId>,
    op: u64,
    /// Hops of the request from its origin to this leader.
    hops: u8,
    key: String,
    set: Vec<Id>,
    deadline: Time,
    answered: bool,
    kind: CoordKind,
}

#[derive(Debug, Clone)]
enum CoordKind {
    Write {
        entry: Entry,
        acked: BTreeSet<Id>,
    },
    Read {
        replies: BTreeMap<Id, Option<Entry>>,
    },
}

/// A request waiting at the owner for its set's election.
#[derive(Debug, Clone)]
pub(crate) struct Parked {
    routed: Routed,
    set: Vec<Id>,
    since: Time,
}

const MAX_PARKED: usize = 1_024;
const MAX_COORDINATIONS: usize = 4_096;

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
        if self.kv_ops.len() >= self.config.max_pending_ops {
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
        self.kv_ops.insert(
            op,
            OriginOp {
                key: key.to_string(),
                action,
                started: now,
                attempts: 0,
                retry_at: now,
                deadline: now + self.config.op_timeout_ms,
            },
        );
        self.send_kv_attempt(op);
        op
    }

    fn send_kv_attempt(&mut self, op: OpId) {
        let Some(pending) = self.kv_ops.get_mut(&op) else {
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
            Some(owner) if owner == self.id => self.kv_at_owner(routed),
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
        let Some(pending) = self.kv_ops.get(&op) else {
            return false;
        };
        if at != pending.retry_at.min(pending.deadline) {
            return true;
        }
        if self.now >= pending.deadline {
            let pending = self.kv_ops.remove(&op).expect("present");
            self.metrics.kv.failed += 1;
            self.done(
                op,
                Err(OpError::KvTimeout {
                    key: pending.key,
                    attempts: pending.attempts,
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
            // Sent to us as the set's leader.
            let set = request.set.clone();
            if set.contains(&self.id) {
                self.coordinate(routed, set);
            } else {
                self.metrics.chord.unexpected_messages += 1;
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
        let set = self.replica_set();
        match self.elections.leader(&set) {
            Some(leader) if leader == self.id => self.coordinate(routed, set),
            Some(leader) => self.hand_to_leader(routed, set, leader),
            None => {
                if self.parked.len() >= MAX_PARKED {
                    self.metrics.kv.dropped_requests += 1;
                    return;
                }
                self.parked.push(Parked {
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

    fn hand_to_leader(&mut self, routed: Routed, set: Vec<Id>, leader: Id) {
        let mut routed = routed;
        if let Body::Kv(request) = &mut routed.body {
            request.set = set;
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
        let (ready, waiting): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.set == set);
        self.parked = waiting;
        for parked in ready {
            if leader == self.id {
                self.coordinate(parked.routed, parked.set);
            } else {
                self.hand_to_leader(parked.routed, parked.set, leader);
            }
        }
    }

    /// Parked requests whose election never finished are dropped (the origin retries).
    pub(crate) fn expire_parked(&mut self) {
        let limit = self.now.saturating_sub(self.config.op_timeout_ms);
        let before = self.parked.len();
        self.parked.retain(|p| p.since >= limit);
        self.metrics.kv.dropped_requests += (before - self.parked.len()) as u64;
    }

    // ----- at the leader ------------------------------------------------------------------

    fn coordinate(&mut self, routed: Routed, set: Vec<Id>) {
        let Body::Kv(request) = routed.body else {
            return;
        };
        if self.coordinations.len() >= MAX_COORDINATIONS {
            self.metrics.kv.dropped_requests += 1;
            return;
        }
        let req = self.next_req;
        self.next_req += 1;
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
                CoordKind::Read { replies }
            }
            KvAction::Put { value, writer } => {
                self.stamp_and_store(&request.key, Some(value), writer, req, &others)
            }
            KvAction::Delete { writer } => {
                self.stamp_and_store(&request.key, None, writer, req, &others)
            }
        };
        self.coordinations.insert(
            req,
            Coordination {
                origin: routed.origin,
                origin_via: routed.origin_via,
                op: request.op,
                hops: routed.hops,
                key: request.key,
                set,
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
    ) -> CoordKind {
        // A new write must beat whatever this leader holds: observe its version first.
        if let Some(existing) = self.store.get(key) {
            self.clock.observe(existing.version.ts);
        }
        let ts = self.clock.tick();
        let entry = Entry {
            value,
            version: crate::store::Version::new(ts, writer),
        };
        self.store_entry(key, entry.clone());
        for peer in others {
            self.send_kv(
                *peer,
                KvMsg::Replicate {
                    req,
                    key: key.to_string(),
                    entry: entry.clone(),
                },
            );
        }
        CoordKind::Write {
            entry,
            acked: BTreeSet::from([self.id]),
        }
    }

    /// Applies an entry to the local store (LWW) and tells the driver (persistence).
    pub(crate) fn store_entry(&mut self, key: &str, entry: Entry) -> bool {
        match self.store.apply(key, entry.clone(), self.now) {
            Ok(outcome) if outcome.changed() => {
                // New data: compare with the replicas soon rather than at a backed-off pace.
                self.reset_anti_entropy();
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

    fn check_quorum(&mut self, req: u64) {
        let Some(c) = self.coordinations.get(&req) else {
            return;
        };
        if c.answered {
            return;
        }
        let n = c.set.len();
        let result =
            match &c.kind {
                CoordKind::Write { entry, acked } => {
                    (acked.len() >= self.config.write_quorum.min(n)).then_some(KvResult::Stored {
                        ts: entry.version.ts,
                    })
                }
                CoordKind::Read { replies } => (replies.len() >= self.config.read_quorum.min(n))
                    .then(|| match replies.values().flatten().max() {
                        Some(Entry {
                            value: Some(value),
                            version,
                        }) => KvResult::Found {
                            value: value.clone(),
                            ts: version.ts,
                            writer: version.writer.clone(),
                        },
                        _ => KvResult::NotFound,
                    }),
            };
        if let Some(result) = result {
            if let Some(c) = self.coordinations.get_mut(&req) {
                c.answered = true;
            }
            self.read_repair(req);
            self.reply_to_origin(req, result);
        }
    }

    /// Writes the newest version seen by a read back to every member that answered older.
    fn read_repair(&mut self, req: u64) {
        let Some(Coordination {
            key,
            kind: CoordKind::Read { replies },
            ..
        }) = self.coordinations.get(&req)
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
                    },
                );
            }
            if let Some(Coordination {
                kind: CoordKind::Read { replies },
                ..
            }) = self.coordinations.get_mut(&req)
            {
                replies.insert(peer, Some(newest.clone()));
            }
        }
    }

    fn reply_to_origin(&mut self, req: u64, result: KvResult) {
        let Some(c) = self.coordinations.get(&req) else {
            return;
        };
        let reply = Routed {
            dest: Dest::Peer {
                id: c.origin,
                via: c.origin_via,
            },
            origin: self.id,
            origin_via: None,
            hops: 0,
            body: Body::KvReply(KvReply {
                op: c.op,
                result,
                hops: c.hops,
            }),
        };
        if !self.route(reply) {
            self.metrics.chord.dropped_no_route += 1;
        }
    }

    /// Coordinations past their deadline: unanswered ones fail (quorum not reached).
    pub(crate) fn expire_coordinations(&mut self) {
        let now = self.now;
        let due: Vec<u64> = self
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
                kind: CoordKind::Write { entry, acked },
                ..
            }) = self.coordinations.get(&req)
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
                        },
                    );
                }
            }
            let answered = self.coordinations.get(&req).is_some_and(|c| c.answered);
            if !answered {
                self.metrics.kv.quorum_failures += 1;
                self.reply_to_origin(
                    req,
                    KvResult::Failed {
                        reason: "quorum not reached".to_string(),
                    },
                );
            }
            self.coordinations.remove(&req);
        }
    }

    pub(crate) fn next_coordination_deadline(&self) -> Option<Time> {
        self.coordinations.values().map(|c| c.deadline).min()
    }

    // ----- replica messages ---------------------------------------------------------------

    pub(crate) fn on_kv_msg(&mut self, from: PeerId, msg: KvMsg) {
        match msg {
            KvMsg::Replicate { req, key, entry } => {
                if !self.clock.accepts(entry.version.ts, MAX_CLOCK_JUMP) {
                    self.metrics.kv.rejected_entries += 1;
                    return;
                }
                self.clock.observe(entry.version.ts);
                self.store_entry(&key, entry);
                if req != 0 {
                    self.send_kv(from, KvMsg::ReplicateAck { req });
                }
            }
            KvMsg::ReplicateAck { req } => {
                if let Some(Coordination {
                    kind: CoordKind::Write { acked, .. },
                    set,
                    ..
                }) = self.coordinations.get_mut(&req)
                    && set.contains(&from)
                {
                    acked.insert(from);
                    self.check_quorum(req);
                }
            }
            KvMsg::Read { req, key } => {
                let entry = self.store.get(&key).cloned();
                self.send_kv(from, KvMsg::ReadReply { req, entry });
            }
            KvMsg::ReadReply { req, entry } => {
                if let Some(entry) = &entry
                    && self.clock.accepts(entry.version.ts, MAX_CLOCK_JUMP)
                {
                    self.clock.observe(entry.version.ts);
                }
                let answered = match self.coordinations.get_mut(&req) {
                    Some(Coordination {
                        kind: CoordKind::Read { replies },
                        set,
                        answered,
                        ..
                    }) if set.contains(&from) => {
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
    fn send_kv(&mut self, to: PeerId, msg: KvMsg) {
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

    // ----- at the origin ------------------------------------------------------------------

    pub(crate) fn on_kv_reply(&mut self, reply: KvReply) {
        let op = OpId(reply.op);
        let Some(pending) = self.kv_ops.get(&op) else {
            return; // late answer to a finished or retried op
        };
        let latency = self.now.saturating_sub(pending.started);
        let is_get = matches!(pending.action, KvAction::Get);
        let hops = u32::from(reply.hops);
        let outcome = match reply.result {
            KvResult::Failed { .. } => return, // let the retry timer try again
            KvResult::Stored { ts } => OpOutcome::Stored { ts, hops },
            KvResult::Found { value, ts, writer } => OpOutcome::Found {
                value,
                ts,
                writer,
                hops,
            },
            KvResult::NotFound => OpOutcome::NotFound { hops },
        };
        self.metrics.kv.hops.record(u64::from(hops));
        self.kv_ops.remove(&op);
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
