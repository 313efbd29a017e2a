//! The origin's side of the replicated store: client commands, their attempts, retries and
//! timeouts, the answers, and the hand-over of a merging ring of one (`replication` module
//! docs, "Merging a ring of one").

use super::{
    Effect, MAX_HANDOVER_INFLIGHT, MAX_HANDOVER_TRIES, MAX_PARKED, OriginOp, ReplCtx, Replicator,
};
use crate::Time;
use crate::api::{Event, OpError, OpId, OpOutcome, Output};
use crate::id::Id;
use crate::store::Entry;
use crate::wire::kv::{KvAction, KvReply, KvRequest, KvResult};
use crate::wire::{Body, Dest, Routed};

impl Replicator {
    fn done(&mut self, op: OpId, result: Result<OpOutcome, OpError>) {
        self.effects
            .push(Effect::Output(Output::event(Event::OpDone { op, result })));
    }

    /// A client's put, delete or get under the fresh `op` (`Node::put`, `delete`, `get`):
    /// `shape` is checked against the store's limits.
    pub(crate) fn command(
        &mut self,
        ctx: &mut ReplCtx<'_>,
        op: OpId,
        key: &str,
        shape: &Entry,
        action: KvAction,
    ) {
        if let Err(e) = ctx.store.limits().check(key, shape) {
            self.done(op, Err(OpError::Rejected(e)));
            return;
        }
        if !ctx.joined {
            self.done(op, Err(OpError::NotJoined));
            return;
        }
        if self.kv_ops.len() >= self.config.max_pending_ops {
            self.done(
                op,
                Err(OpError::TooManyPendingOps {
                    limit: self.config.max_pending_ops,
                }),
            );
            return;
        }
        match action {
            KvAction::Get => ctx.metrics.kv.total_gets += 1,
            _ => ctx.metrics.kv.total_puts += 1,
        }
        let now = ctx.now;
        self.kv_ops.insert(
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
        self.send_kv_attempt(ctx, op);
    }

    /// Starts the hand-over after a merge when it is due, and keeps `MAX_HANDOVER_INFLIGHT`
    /// of its requests running (see "Merging a ring of one").
    pub(crate) fn continue_handover(&mut self, ctx: &mut ReplCtx<'_>) {
        if !ctx.joined || ctx.ring.successors().is_empty() || !ctx.successors_known {
            return;
        }
        if std::mem::take(&mut self.handover.due) {
            self.handover.queue = ctx.store.iter().map(|r| (r.key.to_string(), 0)).collect();
            self.handover.pending = self.handover.queue.iter().map(|(k, _)| k.clone()).collect();
            ctx.metrics.kv.handover_keys += self.handover.queue.len() as u64;
        }
        while self.handover.inflight.len() < MAX_HANDOVER_INFLIGHT
            && self.kv_ops.len() < self.config.max_pending_ops
        {
            let Some((key, tries)) = self.handover.queue.pop_front() else {
                break;
            };
            let Some(entry) = ctx.store.get(&key).cloned() else {
                continue; // collected meanwhile
            };
            let op = self.new_op(ctx);
            let now = ctx.now;
            let version = entry.version.clone();
            self.kv_ops.insert(
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
            self.handover.inflight.insert(op, (key, tries, version));
            self.send_kv_attempt(ctx, op);
        }
    }

    /// A hand-over request ended (`ok`: a write quorum holds its version or a newer one). Not
    /// a client operation: nothing is reported to the driver.
    fn handover_done(&mut self, ctx: &mut ReplCtx<'_>, op: OpId, ok: bool) -> bool {
        let Some((key, tries, version)) = self.handover.inflight.remove(&op) else {
            return false;
        };
        let settled = if ok {
            ctx.metrics.kv.handed_over += 1;
            // A stray is not written back again while the store holds that version.
            if ctx.store.get(&key).is_some_and(|e| e.version == version) {
                self.effects
                    .push(Effect::StrayPushed(key.clone(), version.clone()));
            }
            true
        } else if tries + 1 < MAX_HANDOVER_TRIES {
            // A key a client waits for is tried again first.
            if self.handover.pending.contains(&key) {
                self.handover.queue.push_front((key.clone(), tries + 1));
            } else {
                self.handover.queue.push_back((key.clone(), tries + 1));
            }
            false
        } else {
            ctx.metrics.kv.handover_failed += 1;
            true
        };
        if settled && self.handover.pending.remove(&key) {
            self.release_handover_waiting(ctx, &key);
        }
        self.continue_handover(ctx);
        true
    }

    /// Whether a client request for `key` must wait at this owner: the key's version restored
    /// here is still being handed over (`HandOver::pending`). Until a write quorum holds it,
    /// the set's leader could answer a read without it, or stamp a write below it that the
    /// hand-over would then overwrite. The key moves to the front of the hand-over queue.
    pub(super) fn wait_for_handover(&mut self, ctx: &mut ReplCtx<'_>, routed: &Routed) -> bool {
        let Body::Kv(request) = &routed.body else {
            return false;
        };
        if matches!(request.action, KvAction::Restore { .. })
            || !self.handover.pending.contains(&request.key)
        {
            return false;
        }
        let queue = &mut self.handover.queue;
        if let Some(at) = queue.iter().position(|(k, _)| *k == request.key)
            && let Some(item) = queue.remove(at)
        {
            queue.push_front(item);
        }
        if self.handover.waiting.len() < MAX_PARKED {
            self.handover.waiting.push((routed.clone(), ctx.now));
        } else {
            ctx.metrics.kv.dropped_requests += 1;
        }
        self.continue_handover(ctx);
        true
    }

    /// The hand-over of `key` ended: the requests that waited for it go on, unless their
    /// origin has retried them meanwhile (`superseded`).
    fn release_handover_waiting(&mut self, ctx: &mut ReplCtx<'_>, key: &str) {
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.handover.waiting)
            .into_iter()
            .partition(|(r, _)| matches!(&r.body, Body::Kv(q) if q.key == key));
        self.handover.waiting = waiting;
        for (routed, since) in ready {
            if self.superseded(ctx.now, since) {
                ctx.metrics.kv.dropped_requests += 1;
                continue;
            }
            self.kv_at_owner(ctx, routed, false);
        }
    }

    fn send_kv_attempt(&mut self, ctx: &mut ReplCtx<'_>, op: OpId) {
        let Some(pending) = self.kv_ops.get_mut(&op) else {
            return;
        };
        pending.attempts += 1;
        pending.retry_at = ctx.now + self.config.lookup_attempt_timeout_ms;
        let wake = pending.retry_at.min(pending.deadline);
        let request = KvRequest {
            op: op.0,
            key: pending.key.clone(),
            action: pending.action.clone(),
            set: Vec::new(),
            unsettled: Vec::new(),
        };
        self.effects.push(Effect::OpTimer(wake, op));
        let routed = Routed {
            dest: Dest::Owner {
                key: Id::of_key(&request.key),
            },
            origin: ctx.id,
            origin_via: ctx.origin_via,
            hops: 0,
            body: Body::Kv(request),
        };
        self.kv_route(ctx, routed, false);
    }

    /// Handles a routed KV request here when this node knows the owner, else routes it on.
    /// `plausible`: the request names a set this node may lead (`Node::plausible_set`); a
    /// `Body::Watch` at its owner goes to the node (`Effect::WatchAtOwner`).
    pub(crate) fn kv_route(&mut self, ctx: &mut ReplCtx<'_>, routed: Routed, plausible: bool) {
        let Dest::Owner { key } = routed.dest else {
            return;
        };
        match ctx.ring.known_owner(key, true) {
            Some(owner) if owner == ctx.id => match routed.body {
                Body::Watch { .. } => self.effects.push(Effect::WatchAtOwner(routed)),
                _ => self.kv_at_owner(ctx, routed, plausible),
            },
            // Our pointers name an owner we hold no link to: they may be stale (a successor
            // list learned from a peer that had not yet noticed a death). Route toward the key
            // instead, so the hops closer to it resolve the owner with their own pointers.
            Some(owner)
                if !ctx.links.is_up(owner)
                    && !crate::routing::preceding_candidates(
                        ctx.id,
                        key,
                        ctx.links.up_ring_members(|p| ctx.ring.is_pointed(p)),
                    )
                    .is_empty() =>
            {
                self.effects.push(Effect::Forward(routed));
            }
            Some(owner) => {
                let mut routed = routed;
                routed.dest = Dest::Peer {
                    id: owner,
                    via: None,
                };
                self.effects.push(Effect::Forward(routed));
            }
            None => self.effects.push(Effect::Forward(routed)),
        }
    }

    /// Origin-side timer: retry or give up. False when `op` is not a request of this node.
    pub(crate) fn on_kv_timer(&mut self, ctx: &mut ReplCtx<'_>, op: OpId, at: Time) -> bool {
        let Some(pending) = self.kv_ops.get(&op) else {
            return false;
        };
        if at != pending.retry_at.min(pending.deadline) {
            return true;
        }
        if ctx.now >= pending.deadline {
            let pending = self.kv_ops.remove(&op).expect("present");
            if self.handover_done(ctx, op, false) {
                return true;
            }
            ctx.metrics.kv.failed += 1;
            self.done(
                op,
                Err(OpError::KvTimeout {
                    key: pending.key,
                    attempts: pending.attempts,
                    last_failure: pending.last_failure,
                }),
            );
        } else {
            ctx.metrics.kv.retries += 1;
            self.send_kv_attempt(ctx, op);
        }
        true
    }

    /// A leader's answer reached this node, the request's origin.
    pub(crate) fn on_kv_reply(&mut self, ctx: &mut ReplCtx<'_>, reply: KvReply) {
        let op = OpId(reply.op);
        let Some(pending) = self.kv_ops.get(&op) else {
            return; // late answer to a finished or retried op
        };
        let latency = ctx.now.saturating_sub(pending.started);
        let is_get = matches!(pending.action, KvAction::Get);
        let hops = u32::from(reply.hops);
        let outcome = match reply.result {
            KvResult::Failed { reason } => {
                // Let the retry timer try again; keep the reason for the timeout error.
                if let Some(pending) = self.kv_ops.get_mut(&op) {
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
        self.kv_ops.remove(&op);
        if self.handover_done(ctx, op, true) {
            return;
        }
        let kv = &mut ctx.metrics.kv;
        kv.hops.record(u64::from(hops));
        if is_get {
            kv.get_latency_ms.record(latency);
            match outcome {
                OpOutcome::Found { .. } => kv.total_get_hits += 1,
                _ => kv.total_get_misses += 1,
            }
        } else {
            kv.put_latency_ms.record(latency);
        }
        self.done(op, Ok(outcome));
    }
}
