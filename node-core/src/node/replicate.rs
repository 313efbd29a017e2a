//! The replicated store's glue in [`Node`]: the client commands (put / get / delete), and
//! the dispatch of replica traffic, timers and link events to the `Replicator`
//! (`replication.rs`, which owns the protocol and its state). Each call lends the
//! replicator a [`ReplCtx`] over the node's ring, links, store, clock, metrics, elections and
//! settlement state, then carries out the [`Effect`]s it queued, in order. The node keeps the
//! authorization of replica messages against its view (`node/authorize.rs`), live updates
//! (`node/watch.rs`) and tombstone collection, which anti-entropy's proofs drive.

use super::Node;
use crate::Time;
use crate::api::{Event, OpId, Output};
use crate::id::{Id, PeerId};
use crate::replication::{Effect, ReplConfig, ReplCtx};
use crate::store::{Entry, RingRange, Version, key_id};
use crate::wire::kv::{KvAction, KvMsg, KvReply, MAX_COLLECT_ENTRIES};
use crate::wire::{Body, Routed};

/// Runs `$body` with the replicator and a [`ReplCtx`] over the rest of `$node`, then carries
/// out the effects it queued.
macro_rules! with_repl {
    ($node:expr, |$repl:ident, $ctx:ident| $body:expr) => {{
        let node: &mut Node = $node;
        let fresh = node.is_fresh();
        let joined = node.is_joined();
        let origin_via = node.origin_via();
        let fence = node.fenced_range();
        let Node {
            repl: $repl,
            id,
            now,
            ring,
            links,
            store,
            clock,
            metrics,
            elections,
            settled_members,
            adopting,
            successors_known,
            peak_set,
            id_rng,
            next_op,
            lookups,
            views,
            ..
        } = node;
        let mut ctx = ReplCtx {
            id: *id,
            now: *now,
            joined,
            successors_known: *successors_known,
            fresh,
            adopting: *adopting,
            peak_set: *peak_set,
            fence,
            origin_via,
            ring,
            links,
            store,
            clock,
            metrics,
            elections,
            settled_members,
            id_rng,
            next_op,
            ops_taken: [&*lookups, &*views],
        };
        let $ctx = &mut ctx;
        let result = $body;
        node.run_repl_effects();
        result
    }};
}

/// The replicator's tunables, from the node's.
pub(super) fn repl_config(config: &super::Config) -> ReplConfig {
    ReplConfig {
        replicas: config.replicas,
        read_quorum: config.read_quorum,
        write_quorum: config.write_quorum,
        lookup_attempt_timeout_ms: config.lookup_attempt_timeout_ms,
        op_timeout_ms: config.op_timeout_ms,
        max_pending_ops: config.max_pending_ops,
    }
}

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
        with_repl!(self, |repl, ctx| repl.command(ctx, op, key, shape, action));
        op
    }

    // ----- carrying out the replicator's effects ------------------------------------------

    /// Carries out what the replicator queued, in order.
    fn run_repl_effects(&mut self) {
        let mut effects = self.repl.take_effects();
        for effect in effects.drain(..) {
            match effect {
                Effect::Send(to, message) => self.send(to, &message),
                Effect::Route(routed) => {
                    if !self.route(routed) {
                        self.metrics.chord.dropped_no_route += 1;
                    }
                }
                Effect::Forward(routed) => self.forward(routed),
                Effect::Connect(peer) => self.ensure_link(peer, false),
                Effect::Output(output) => self.out.push_back(output),
                Effect::Stored { key, entry, notify } => {
                    // New data: compare with the replicas soon rather than at a backed-off pace.
                    self.reset_anti_entropy();
                    if notify {
                        self.notify_watchers(&key, &entry);
                    }
                    self.out
                        .push_back(Output::event(Event::Stored { key, entry }));
                }
                Effect::Notify { key, entry } => self.notify_watchers(&key, &entry),
                Effect::OpTimer(at, op) => self.op_timers.insert((at, op)),
                Effect::StrayPushed(key, version) => self.stray_pushed(&key, &version),
                Effect::WatchAtOwner(routed) => self.watch_at_owner(routed),
            }
        }
        self.repl.recycle(effects);
    }

    // ----- dispatch -----------------------------------------------------------------------

    /// Starts the hand-over after a merge when it is due, and keeps its requests running
    /// (`replication.rs`, "Merging a ring of one").
    pub(crate) fn continue_handover(&mut self) {
        with_repl!(self, |repl, ctx| repl.continue_handover(ctx));
    }

    /// Whether a routed request names a set this node may lead (`guard.rs`): at most k
    /// members, us among them, each one able to be in the key's set by our own view; the
    /// unsettled members among them. Anything else would make us coordinate with (and count
    /// the answers of) whatever set the sender names.
    fn plausible_request(&self, routed: &Routed) -> bool {
        match &routed.body {
            Body::Kv(request) if !request.set.is_empty() => {
                let key = Id::of_key(&request.key);
                self.plausible_set(&request.set, Some(key))
                    && request.unsettled.iter().all(|m| request.set.contains(m))
            }
            _ => false,
        }
    }

    /// Handles a routed KV request (or watch) here when this node knows the owner, else
    /// routes it on.
    pub(crate) fn kv_route(&mut self, routed: Routed) {
        let plausible = self.plausible_request(&routed);
        with_repl!(self, |repl, ctx| repl.kv_route(ctx, routed, plausible));
    }

    /// A routed `Kv` body for this node as the key's owner or as the set's leader.
    pub(crate) fn kv_at_owner(&mut self, routed: Routed) {
        let plausible = self.plausible_request(&routed);
        with_repl!(self, |repl, ctx| repl.kv_at_owner(ctx, routed, plausible));
    }

    /// Origin-side timer: retry or give up. False when `op` is not a KV request.
    pub(crate) fn on_kv_timer(&mut self, op: OpId, at: Time) -> bool {
        with_repl!(self, |repl, ctx| repl.on_kv_timer(ctx, op, at))
    }

    pub(crate) fn on_kv_reply(&mut self, reply: KvReply) {
        with_repl!(self, |repl, ctx| repl.on_kv_reply(ctx, reply));
    }

    /// This node and its next k-1 successors, as a set name (sorted).
    pub(crate) fn replica_set(&self) -> Vec<Id> {
        crate::replication::replica_set(self.id, self.ring.successors(), self.config.replicas)
    }

    /// Requests that waited for our successor list go on (`Replicator::kv_at_owner`).
    pub(crate) fn release_waiting_requests(&mut self) {
        with_repl!(self, |repl, ctx| repl.release_waiting_requests(ctx));
    }

    /// Waiting and parked requests the origin has retried by now are dropped.
    pub(crate) fn expire_parked(&mut self) {
        self.metrics.kv.dropped_requests += self.repl.expire_parked(self.now);
    }

    pub(crate) fn next_coordination_deadline(&self) -> Option<Time> {
        self.repl.next_coordination_deadline()
    }

    /// Asks the fresh members of waiting coordinations again.
    pub(crate) fn reask_fresh(&mut self) {
        with_repl!(self, |repl, ctx| repl.reask_fresh(ctx));
    }

    /// Coordinations past their deadline: unanswered ones fail (quorum not reached).
    pub(crate) fn expire_coordinations(&mut self) {
        with_repl!(self, |repl, ctx| repl.expire_coordinations(ctx));
    }

    /// Sends a replica message over the link, or routes it when there is none.
    pub(crate) fn send_kv(&mut self, to: PeerId, msg: KvMsg) {
        with_repl!(self, |repl, ctx| repl.send_kv(ctx, to, msg));
    }

    /// A link to `peer` opened: the replica messages that waited for it go out.
    pub(crate) fn flush_awaiting_link(&mut self, peer: PeerId) {
        self.repl.flush_awaiting_link(self.now, peer);
        self.run_repl_effects();
    }

    // ----- tombstone collection -----------------------------------------------------------

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
                    .push_back(Output::event(Event::Collected { key: key.clone() }));
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

    // ----- replica messages and elections -------------------------------------------------

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
                        self.out.push_back(Output::event(Event::Collected { key }));
                    }
                }
                self.metrics.kv.keys_stored = self.store.len();
            }
            msg => with_repl!(self, |repl, ctx| repl.on_replica_msg(ctx, from, msg)),
        }
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
            Ok((msgs, outcome)) => with_repl!(self, |repl, ctx| {
                repl.send_election(ctx, msgs);
                if let Some(outcome) = outcome {
                    repl.on_election_outcome(ctx, outcome);
                }
            }),
            Err(()) => self.metrics.chord.unexpected_messages += 1,
        }
    }

    pub(crate) fn election_timeouts(&mut self) {
        let (msgs, outcomes) = self.elections.on_timeout(self.now);
        with_repl!(self, |repl, ctx| {
            repl.send_election(ctx, msgs);
            for outcome in outcomes {
                repl.on_election_outcome(ctx, outcome);
            }
        });
    }
}
