//! The owner's, the leader's and the replicas' sides of the replicated store: handing a
//! request to its set's leader (electing one first), the leader's stamping, quorum counting,
//! write-back and read-repair, and the members' answers (`replication` module docs).

use super::{
    CoordKind, Coordination, Effect, MAX_COORDINATIONS, MAX_PARKED, MAX_RESTAMPS, Parked, ReplCtx,
    Replicator, SETTLE_ROUND_MS, Slot, replica_set,
};
use crate::Time;
use crate::api::{Event, Output};
use crate::election::ElectionOutcome;
use crate::id::{Id, PeerId};
use crate::store::Entry;
use crate::wire::kv::{KvAction, KvMsg, KvReply, KvResult};
use crate::wire::{Body, Dest, Routed};
use std::collections::{BTreeMap, BTreeSet};

impl Replicator {
    // ----- at the owner -------------------------------------------------------------------

    /// Called for a routed `Kv` body that reached a node which believes it owns the key, or a
    /// node named as leader (the request then carries the set, and `plausible` says whether
    /// this node may lead it: `Node::plausible_set`, and its unsettled members among it).
    pub(crate) fn kv_at_owner(&mut self, ctx: &mut ReplCtx<'_>, routed: Routed, plausible: bool) {
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
            if plausible {
                self.coordinate(ctx, routed, set, unsettled);
            } else {
                ctx.metrics.rejected.bad_set += 1;
            }
            return;
        }
        let key = Id::of_key(&request.key);
        if !accepts_ownership(ctx, key) {
            // We were told we own it, but our pointers disagree (the ring moved): route again.
            let mut routed = routed;
            routed.dest = Dest::Owner { key };
            self.effects.push(Effect::Forward(routed));
            return;
        }
        if self.refuse_fenced(ctx, &routed) {
            return;
        }
        if !ctx.successors_known {
            // Joined a moment ago: our successor list (so the replica set) is not known yet.
            // It comes with the successor's first answer; the request waits for it.
            if self.waiting_requests.len() < MAX_PARKED {
                self.waiting_requests.push((routed, ctx.now));
            } else {
                ctx.metrics.kv.dropped_requests += 1;
            }
            return;
        }
        if self.wait_for_handover(ctx, &routed) {
            return;
        }
        let set = replica_set(ctx.id, ctx.ring.successors(), self.config.replicas);
        match ctx.elections.leader(&set) {
            Some(leader) if leader == ctx.id => {
                let unsettled = ctx.unsettled_members(self.config.replicas);
                self.coordinate(ctx, routed, set, unsettled);
            }
            Some(leader) => self.hand_to_leader(ctx, routed, set, leader),
            None => {
                if self.parked.len() >= MAX_PARKED {
                    ctx.metrics.kv.dropped_requests += 1;
                    return;
                }
                self.parked.push(Parked {
                    routed,
                    set: set.clone(),
                    since: ctx.now,
                });
                let (msgs, outcome) = ctx.elections.start(&set, ctx.now);
                self.send_election(ctx, msgs);
                if let Some(outcome) = outcome {
                    self.on_election_outcome(ctx, outcome);
                }
            }
        }
    }

    /// Answers `Failed` to a request whose key lies in the fenced part of our range (no read
    /// quorum of its previous set is on our side, `node/fence.rs`); whether it did. Restores
    /// pass.
    fn refuse_fenced(&mut self, ctx: &mut ReplCtx<'_>, routed: &Routed) -> bool {
        let Body::Kv(request) = &routed.body else {
            return false;
        };
        // A restore writes back a version some peer holds (a stray, a hand-over): exactly what
        // the fenced range may lack. It stamps nothing, so it passes (refusing it lost the last
        // copy of a write at 64 peers, `sim-churn --rates 4 --seed 10`).
        if matches!(request.action, KvAction::Restore { .. }) {
            return false;
        }
        if !ctx
            .fence
            .is_some_and(|r| r.contains(Id::of_key(&request.key).0))
        {
            return false;
        }
        ctx.metrics.kv.fenced_requests += 1;
        let reason = format!("key fenced at {}: its replica set lost its quorum", ctx.id);
        self.send_kv_reply(
            ctx,
            (routed.origin, routed.origin_via),
            request.op,
            routed.hops,
            KvResult::Failed { reason },
        );
        true
    }

    fn hand_to_leader(&mut self, ctx: &mut ReplCtx<'_>, routed: Routed, set: Vec<Id>, leader: Id) {
        let mut routed = routed;
        let unsettled = ctx.unsettled_members(self.config.replicas);
        if let Body::Kv(request) = &mut routed.body {
            request.set = set;
            request.unsettled = unsettled;
        }
        routed.dest = Dest::Peer {
            id: leader,
            via: None,
        };
        self.effects.push(Effect::Forward(routed));
    }

    /// A set has a leader: the requests parked for its election go on.
    pub(crate) fn on_election_outcome(&mut self, ctx: &mut ReplCtx<'_>, outcome: ElectionOutcome) {
        let ElectionOutcome::Elected { set, leader } = outcome;
        self.effects
            .push(Effect::Output(Output::event(Event::LeaderElected {
                set: set.clone(),
                leader,
            })));
        let (ready, waiting): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.set == set);
        self.parked = waiting;
        for parked in ready {
            if self.superseded(ctx.now, parked.since) {
                ctx.metrics.kv.dropped_requests += 1;
                continue;
            }
            // The fence may have risen while the election ran.
            if self.refuse_fenced(ctx, &parked.routed) {
                continue;
            }
            if leader == ctx.id {
                let unsettled = ctx.unsettled_members(self.config.replicas);
                self.coordinate(ctx, parked.routed, parked.set, unsettled);
            } else {
                self.hand_to_leader(ctx, parked.routed, parked.set, leader);
            }
        }
    }

    /// Requests that waited for our successor list (see `kv_at_owner`) go on, unless the
    /// origin has sent a newer attempt meanwhile (`superseded`).
    pub(crate) fn release_waiting_requests(&mut self, ctx: &mut ReplCtx<'_>) {
        for (routed, since) in std::mem::take(&mut self.waiting_requests) {
            if self.superseded(ctx.now, since) {
                ctx.metrics.kv.dropped_requests += 1;
                continue;
            }
            self.kv_at_owner(ctx, routed, false);
        }
    }

    /// Waiting and parked requests the origin has retried by now are dropped (`superseded`);
    /// returns how many.
    pub(crate) fn expire_parked(&mut self, now: Time) -> u64 {
        let limit = now.saturating_sub(self.config.lookup_attempt_timeout_ms / 2);
        let waiting = self.waiting_requests.len();
        self.waiting_requests.retain(|(_, since)| *since >= limit);
        let mut dropped = (waiting - self.waiting_requests.len()) as u64;
        let before = self.parked.len() + self.handover.waiting.len();
        self.parked.retain(|p| p.since >= limit);
        self.handover.waiting.retain(|(_, since)| *since >= limit);
        let after = self.parked.len() + self.handover.waiting.len();
        dropped += (before - after) as u64;
        dropped
    }

    // ----- at the leader ------------------------------------------------------------------

    fn coordinate(
        &mut self,
        ctx: &mut ReplCtx<'_>,
        routed: Routed,
        set: Vec<Id>,
        unsettled: Vec<Id>,
    ) {
        let Body::Kv(request) = routed.body else {
            return;
        };
        if self.coordinations.len() >= MAX_COORDINATIONS {
            ctx.metrics.kv.dropped_requests += 1;
            return;
        }
        let is_write = !matches!(request.action, KvAction::Get);
        let wid = (routed.origin, request.op);
        let mut replayed = None;
        if is_write {
            match self.recent_requests.get(routed.origin, request.op) {
                Some(Slot::Done(result)) => {
                    // Done before: the same answer again, nothing stamped.
                    let result = result.clone();
                    ctx.metrics.kv.duplicate_requests += 1;
                    self.send_kv_reply(
                        ctx,
                        (routed.origin, routed.origin_via),
                        request.op,
                        routed.hops,
                        result,
                    );
                    return;
                }
                Some(Slot::InProgress) => {
                    // Still in progress: its answer is on the way.
                    ctx.metrics.kv.duplicate_requests += 1;
                    return;
                }
                Some(Slot::Replicated(entry)) => {
                    // An earlier leader stamped it and we stored it as a replica: spread that
                    // very entry instead of stamping the write again.
                    ctx.metrics.kv.duplicate_requests += 1;
                    replayed = Some(entry.clone());
                }
                None => {}
            }
            let keep = self.config.op_timeout_ms * 2;
            self.recent_requests
                .set(routed.origin, request.op, ctx.now, keep, Slot::InProgress);
        }
        let req = self.new_req(ctx.id_rng);
        let others: Vec<Id> = set.iter().copied().filter(|m| *m != ctx.id).collect();
        let kind = match request.action {
            KvAction::Get => {
                for peer in &others {
                    self.send_kv(
                        ctx,
                        *peer,
                        KvMsg::Read {
                            req,
                            key: request.key.clone(),
                        },
                    );
                }
                let mut replies = BTreeMap::new();
                replies.insert(ctx.id, ctx.store.get(&request.key).cloned());
                CoordKind::Read {
                    replies,
                    written_back: BTreeSet::new(),
                    writing_back: None,
                }
            }
            KvAction::Put { .. } | KvAction::Delete { .. } if replayed.is_some() => {
                let entry = replayed.take().expect("checked");
                self.replicate_write(ctx, &request.key, entry, req, &others, wid, true)
            }
            KvAction::Put { value, writer } => {
                self.stamp_and_store(ctx, &request.key, Some(value), writer, req, &others, wid)
            }
            KvAction::Delete { writer } => {
                self.stamp_and_store(ctx, &request.key, None, writer, req, &others, wid)
            }
            KvAction::Restore { entry } => {
                // Later writes of this leader must win over the restored version; a timestamp
                // beyond the bound is refused like any remote one (guard.rs).
                if !ctx.observe_remote(entry.version.ts) {
                    ctx.metrics.kv.rejected_entries += 1;
                    return;
                }
                self.replicate_write(ctx, &request.key, entry, req, &others, wid, true)
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
                unsettled: unsettled.into_iter().collect(),
                fresh: ctx.fresh.then_some(ctx.id).into_iter().collect(),
                reask_at: None,
                started: ctx.now,
                deadline: ctx.now + self.config.lookup_attempt_timeout_ms,
                answered: false,
                kind,
            },
        );
        self.check_quorum(ctx, req);
    }

    #[allow(clippy::too_many_arguments)]
    fn stamp_and_store(
        &mut self,
        ctx: &mut ReplCtx<'_>,
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
        if let Some(existing) = ctx.store.get(key) {
            let ts = existing.version.ts;
            ctx.observe_remote(ts);
        }
        let ts = ctx.clock.tick();
        let entry = Entry {
            value,
            version: crate::store::Version::new(ts, writer),
        };
        self.replicate_write(ctx, key, entry, req, others, wid, false)
    }

    /// Stores a stamped write here and sends it to the other members. `replay`: the entry was
    /// stamped before (by another leader, for the same request) and is only spread again.
    #[allow(clippy::too_many_arguments)]
    fn replicate_write(
        &mut self,
        ctx: &mut ReplCtx<'_>,
        key: &str,
        entry: Entry,
        req: u64,
        others: &[Id],
        wid: (Id, u64),
        replay: bool,
    ) -> CoordKind {
        // Watchers hear of it once a write quorum holds it (`check_quorum`), not now: a
        // version only this leader holds dies with it if it crashes before replicating.
        self.store_entry(ctx, key, entry.clone(), false);
        for peer in others {
            self.send_kv(
                ctx,
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
            acked: BTreeSet::from([ctx.id]),
            restamps: 0,
            replay,
        }
    }

    /// A replica refused a write because it holds a newer version (`newer`): the write lost,
    /// so it is not acknowledged as it is. The leader observes the newer timestamp and stamps
    /// the write again above it, under a new request id (acknowledgements of the old stamp no
    /// longer count), at most [`MAX_RESTAMPS`] times; then the write fails and the origin
    /// retries it.
    fn restamp(&mut self, ctx: &mut ReplCtx<'_>, req: u64, newer: u64) {
        let Some(mut c) = self.coordinations.remove(&req) else {
            return;
        };
        let CoordKind::Write {
            entry, restamps, ..
        } = &c.kind
        else {
            self.coordinations.insert(req, c);
            return;
        };
        if !ctx.observe_remote(newer) {
            // Too far ahead to stamp above now; the clock moved toward it, the retry passes.
            ctx.metrics.kv.rejected_entries += 1;
            self.coordinations.insert(req, c);
            return;
        }
        ctx.metrics.kv.restamps += 1;
        // A new stamp late in the attempt could land after the origin's next attempt was
        // acknowledged and another client wrote the key again (see `superseded`): past half
        // the attempt the write is left to fail, and the origin's retry carries it.
        if *restamps >= MAX_RESTAMPS || self.superseded(ctx.now, c.started) {
            self.coordinations.insert(req, c);
            return; // expires unanswered: the origin retries
        }
        let restamps = restamps + 1;
        let (value, writer) = (entry.value.clone(), entry.version.writer.clone());
        let new_req = self.new_req(ctx.id_rng);
        let others: Vec<Id> = c.set.iter().copied().filter(|m| *m != ctx.id).collect();
        let wid = (c.origin, c.op);
        let mut kind = self.stamp_and_store(ctx, &c.key, value, writer, new_req, &others, wid);
        if let CoordKind::Write { restamps: r, .. } = &mut kind {
            *r = restamps;
        }
        c.kind = kind;
        self.coordinations.insert(new_req, c);
        self.check_quorum(ctx, new_req);
    }

    /// Answers the origin once the quorum is in. Only settled members count (see "Membership
    /// changes"). A read answers with the newest version only once `write_quorum` settled
    /// members hold it, writing it back first when fewer do (ABD's second phase), so a later
    /// read cannot return anything older: reads never go backwards.
    fn check_quorum(&mut self, ctx: &mut ReplCtx<'_>, req: u64) {
        let Some(c) = self.coordinations.get(&req) else {
            return;
        };
        if c.answered {
            return;
        }
        // A set that shrank through failures still needs the quorum of the largest set this
        // node was part of (`peak_set`): alone, a cut-off peer would acknowledge by itself.
        let n = c.set.len().max(ctx.peak_set);
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
            self.start_write_back(ctx, req, entry, targets);
            return;
        }
        if result.is_none() {
            // Not enough settled answers yet: fresh members may settle within a few fast
            // anti-entropy rounds; ask them again then instead of failing at the deadline.
            let now = ctx.now;
            if let Some(c) = self.coordinations.get_mut(&req)
                && !c.fresh.is_empty()
                && c.reask_at.is_none()
            {
                c.reask_at = Some(now + SETTLE_ROUND_MS);
            }
        }
        if let Some(result) = result {
            if let Some(c) = self.coordinations.get_mut(&req) {
                c.answered = true;
                c.reask_at = None;
            }
            if let Some(Coordination {
                key,
                kind: CoordKind::Write { entry, .. },
                ..
            }) = self.coordinations.get(&req)
                && ctx.store.get(key) == Some(entry)
            {
                // A write quorum holds this leader's stamp now: its watchers may hear of it.
                let (key, entry) = (key.clone(), entry.clone());
                self.effects.push(Effect::Notify { key, entry });
            }
            self.read_repair(ctx, req);
            self.reply_to_origin(ctx, req, result);
        }
    }

    /// A read saw a version that too few settled members hold: store it at those that answered
    /// older or not yet, and answer once enough acknowledge (`check_quorum`).
    fn start_write_back(
        &mut self,
        ctx: &mut ReplCtx<'_>,
        req: u64,
        entry: Entry,
        targets: Vec<Id>,
    ) {
        let Some(Coordination {
            key,
            kind:
                CoordKind::Read {
                    written_back,
                    writing_back,
                    ..
                },
            ..
        }) = self.coordinations.get_mut(&req)
        else {
            return;
        };
        written_back.clear();
        *writing_back = Some(entry.clone());
        let key = key.clone();
        ctx.metrics.kv.read_write_backs += 1;
        for peer in targets {
            if peer == ctx.id {
                self.store_entry(ctx, &key, entry.clone(), true);
                if ctx.store.get(&key) == Some(&entry)
                    && let Some(Coordination {
                        kind: CoordKind::Read { written_back, .. },
                        ..
                    }) = self.coordinations.get_mut(&req)
                {
                    written_back.insert(peer);
                }
            } else {
                self.send_kv(
                    ctx,
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
        self.check_quorum(ctx, req);
    }

    /// Writes the newest version seen by a read back to every member that answered older.
    fn read_repair(&mut self, ctx: &mut ReplCtx<'_>, req: u64) {
        let Some(Coordination {
            key,
            kind: CoordKind::Read { replies, .. },
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
            ctx.metrics.kv.read_repairs += 1;
            if peer == ctx.id {
                self.store_entry(ctx, &key, newest.clone(), true);
            } else {
                self.send_kv(
                    ctx,
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
            }) = self.coordinations.get_mut(&req)
            {
                replies.insert(peer, Some(newest.clone()));
            }
        }
    }

    fn reply_to_origin(&mut self, ctx: &mut ReplCtx<'_>, req: u64, result: KvResult) {
        let Some(c) = self.coordinations.get(&req) else {
            return;
        };
        let (to, op, hops) = ((c.origin, c.origin_via), c.op, c.hops);
        if matches!(c.kind, CoordKind::Write { .. }) {
            self.recent_requests.finish(to.0, op, &result);
        }
        self.send_kv_reply(ctx, to, op, hops, result);
    }

    /// Routes a leader's answer to the origin of request `op` (handled here at once when this
    /// node is the origin, as `Node::route` delivers to itself).
    fn send_kv_reply(
        &mut self,
        ctx: &mut ReplCtx<'_>,
        to: (PeerId, Option<PeerId>),
        op: u64,
        hops: u8,
        result: KvResult,
    ) {
        let reply = KvReply { op, result, hops };
        if to.0 == ctx.id {
            self.on_kv_reply(ctx, reply);
            return;
        }
        self.effects.push(Effect::Route(Routed {
            dest: Dest::Peer {
                id: to.0,
                via: to.1,
            },
            origin: ctx.id,
            origin_via: None,
            hops: 0,
            body: Body::KvReply(reply),
        }));
    }

    /// Coordinations past their deadline: unanswered ones fail (quorum not reached).
    pub(crate) fn expire_coordinations(&mut self, ctx: &mut ReplCtx<'_>) {
        let now = ctx.now;
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
                kind: CoordKind::Write { entry, acked, .. },
                ..
            }) = self.coordinations.get(&req)
            {
                let missing: Vec<Id> = set.iter().copied().filter(|m| !acked.contains(m)).collect();
                let (key, entry) = (key.clone(), entry.clone());
                for peer in missing {
                    ctx.metrics.kv.replicate_retries += 1;
                    self.send_kv(
                        ctx,
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
            let answered = self.coordinations.get(&req).is_some_and(|c| c.answered);
            if !answered {
                ctx.metrics.kv.quorum_failures += 1;
                let reason = self
                    .coordinations
                    .get(&req)
                    .map(Coordination::quorum_state)
                    .unwrap_or_default();
                self.reply_to_origin(
                    ctx,
                    req,
                    KvResult::Failed {
                        reason: format!("quorum not reached at {}: {reason}", ctx.id),
                    },
                );
            }
            self.coordinations.remove(&req);
        }
    }

    /// When the earliest coordination is due (its deadline, or a re-ask of fresh members).
    pub(crate) fn next_coordination_deadline(&self) -> Option<Time> {
        self.coordinations
            .values()
            .map(|c| match c.reask_at {
                Some(at) if !c.answered => at.min(c.deadline),
                _ => c.deadline,
            })
            .min()
    }

    /// Asks the fresh members of waiting coordinations again (see `check_quorum`): their new
    /// answers carry their current state, and the leader's own freshness is looked at anew.
    pub(crate) fn reask_fresh(&mut self, ctx: &mut ReplCtx<'_>) {
        let now = ctx.now;
        let due: Vec<u64> = self
            .coordinations
            .iter()
            .filter(|(_, c)| !c.answered && c.reask_at.is_some_and(|at| at <= now))
            .map(|(r, _)| *r)
            .collect();
        let me_fresh = ctx.fresh;
        for req in due {
            let Some(c) = self.coordinations.get_mut(&req) else {
                continue;
            };
            c.reask_at = None;
            if !me_fresh {
                c.fresh.remove(&ctx.id);
            }
            let targets: Vec<Id> = c.fresh.iter().copied().filter(|m| *m != ctx.id).collect();
            let wid = (c.origin, c.op);
            let key = c.key.clone();
            let msg = match &c.kind {
                CoordKind::Write { entry, .. } => KvMsg::Replicate {
                    req,
                    key,
                    entry: entry.clone(),
                    wid: Some(wid),
                },
                CoordKind::Read { .. } => KvMsg::Read { req, key },
            };
            for peer in targets {
                self.send_kv(ctx, peer, msg.clone());
            }
            self.check_quorum(ctx, req);
            // Still waiting on fresh members: ask again next round.
            if let Some(c) = self.coordinations.get_mut(&req)
                && !c.answered
                && !c.fresh.is_empty()
                && c.reask_at.is_none()
            {
                c.reask_at = Some(now + SETTLE_ROUND_MS);
            }
        }
    }

    // ----- replica messages ---------------------------------------------------------------

    /// A replica message (`Replicate`, `ReplicateAck`, `Read`, `ReadReply`) from `from`, whom
    /// the node authorized for the key (`Node::on_kv_msg`). Other kinds are not the
    /// replicator's and are ignored.
    pub(crate) fn on_replica_msg(&mut self, ctx: &mut ReplCtx<'_>, from: PeerId, msg: KvMsg) {
        let done_req = match &msg {
            KvMsg::ReplicateAck { req, .. } | KvMsg::ReadReply { req, .. } => Some(*req),
            _ => None,
        };
        match msg {
            KvMsg::Replicate {
                req,
                key,
                entry,
                wid,
            } => {
                if !ctx.observe_remote(entry.version.ts) {
                    ctx.metrics.kv.rejected_entries += 1;
                    return;
                }
                self.store_entry(ctx, &key, entry.clone(), true);
                if req != 0 {
                    // Acknowledge only what this replica now holds: a write that lost to a
                    // newer version here is refused with that version's timestamp.
                    let newer = ctx
                        .store
                        .get(&key)
                        .filter(|held| **held > entry)
                        .map(|held| held.version.ts);
                    if let (None, Some((origin, op))) = (newer, wid) {
                        let keep = self.config.op_timeout_ms * 2;
                        self.recent_requests
                            .replicated(origin, op, ctx.now, keep, entry);
                    }
                    let fresh = ctx.fresh;
                    self.send_kv(ctx, from, KvMsg::ReplicateAck { req, newer, fresh });
                }
            }
            KvMsg::ReplicateAck { req, newer, fresh } => {
                // Counts only for a coordination we run, from a member we sent it to.
                let Some(c) = self
                    .coordinations
                    .get_mut(&req)
                    .filter(|c| c.set.contains(&from) && from != ctx.id)
                else {
                    ctx.metrics.rejected.answer_not_asked += 1;
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
                        self.check_quorum(ctx, req);
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
                        self.check_quorum(ctx, req);
                    }
                    (CoordKind::Write { .. }, Some(ts)) => self.restamp(ctx, req, ts),
                    (
                        CoordKind::Read {
                            written_back,
                            writing_back: Some(_),
                            ..
                        },
                        None,
                    ) => {
                        written_back.insert(from);
                        self.check_quorum(ctx, req);
                    }
                    // A newer write reached the replica meanwhile: the read's quorum will come
                    // from other answers, or the origin retries.
                    (CoordKind::Read { .. }, _) => {}
                }
            }
            KvMsg::Read { req, key } => {
                let entry = ctx.store.get(&key).cloned();
                let fresh = ctx.fresh;
                self.send_kv(ctx, from, KvMsg::ReadReply { req, entry, fresh });
            }
            KvMsg::ReadReply { req, entry, fresh } => {
                let asked = self.coordinations.get(&req).is_some_and(|c| {
                    matches!(c.kind, CoordKind::Read { .. })
                        && c.set.contains(&from)
                        && from != ctx.id
                });
                if !asked {
                    ctx.metrics.rejected.answer_not_asked += 1;
                    return;
                }
                if let Some(entry) = &entry {
                    // A reply above the bound is no answer: it would be written back.
                    if !ctx.observe_remote(entry.version.ts) {
                        return;
                    }
                }
                let answered = match self.coordinations.get_mut(&req) {
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
                    self.read_repair(ctx, req);
                } else {
                    self.check_quorum(ctx, req);
                }
            }
            KvMsg::Watch { .. } | KvMsg::Notify { .. } | KvMsg::Collect { .. } => {}
        }
        if let Some(req) = done_req {
            self.retire_if_done(req);
        }
    }

    /// Drops a coordination that has nothing left to do: answered, and every member of its
    /// set heard from (a write acknowledged by all, a read answered by all with no write-back
    /// under way). Until its deadline it would only be looked at by every scan of the pending
    /// coordinations (`next_coordination_deadline`, `expire_coordinations`), which at a
    /// thousand operations a second kept thousands of finished ones around.
    fn retire_if_done(&mut self, req: u64) {
        let done = self.coordinations.get(&req).is_some_and(|c| {
            c.answered
                && match &c.kind {
                    CoordKind::Write { acked, .. } => c.set.iter().all(|m| acked.contains(m)),
                    CoordKind::Read {
                        replies,
                        writing_back,
                        ..
                    } => writing_back.is_none() && c.set.iter().all(|m| replies.contains_key(m)),
                }
        });
        if done {
            self.coordinations.remove(&req);
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
fn accepts_ownership(ctx: &ReplCtx<'_>, key: Id) -> bool {
    match ctx.ring.known_owner(key, false) {
        Some(owner) => owner == ctx.id,
        None => ctx.ring.predecessor().is_none(),
    }
}
