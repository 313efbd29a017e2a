//! Lookups and routing as methods of [`Node`]: lookup attempts and their timers, routed
//! messages hop by hop over open links (`crate::routing` picks the next hop), delivery at the
//! owner or the named peer, and the routing hints a newcomer's answers travel by.

use super::*;

impl Node {
    pub(super) fn start_lookup(&mut self, op: OpId, key: Id, purpose: Purpose) {
        self.metrics.chord.total_lookups += 1;
        let now = self.now;
        self.lookups.insert(
            op,
            LookupOp {
                key,
                purpose,
                attempts: 0,
                deadline: now + self.config.op_timeout_ms,
                retry_at: now,
            },
        );
        self.send_lookup_attempt(op);
    }

    pub(super) fn send_lookup_attempt(&mut self, op: OpId) {
        let Some(lookup) = self.lookups.get_mut(&op) else {
            return;
        };
        lookup.attempts += 1;
        if lookup.attempts > 1 {
            self.metrics.chord.lookup_retries += 1;
        }
        let (key, attempts, purpose) = (lookup.key, lookup.attempts, lookup.purpose);
        let retry_at = self.now + self.config.lookup_attempt_timeout_ms;
        lookup.retry_at = retry_at;
        let wake = retry_at.min(lookup.deadline);
        self.op_timers.insert((wake, op));

        // A finger refresh must not be answered by the finger it refreshes; a self-check must
        // not be answered by ourselves at all.
        let use_fingers = !matches!(purpose, Purpose::Finger(_));
        if self.is_joined()
            && purpose != Purpose::SelfCheck
            && let Some(owner) = self.lookup_owner(key, use_fingers)
        {
            self.complete_lookup(op, owner, 0);
            return;
        }
        let next = match self.phase {
            Phase::Joining { bootstrap, .. } => self.links.is_up(bootstrap).then_some(bootstrap),
            Phase::Joined => {
                // Later attempts try the next-best first hop, to get around a dead one.
                let candidates = routing::preceding_candidates(self.id, key, self.routing_peers());
                (!candidates.is_empty())
                    .then(|| candidates[(attempts as usize - 1) % candidates.len()])
            }
            _ => None,
        };
        let Some(next) = next else {
            self.metrics.chord.dropped_no_route += 1;
            return;
        };
        let routed = Routed {
            dest: Dest::Owner { key },
            origin: self.id,
            origin_via: self.origin_via(),
            hops: 1,
            body: Body::FindSuccessor { op: op.0 },
        };
        self.send(next, &Message::Route(routed));
    }

    /// The owner of a lookup's key as far as this node can answer it: its own pointers, and
    /// with `Config::finger_lists` its fingers' successor lists (`RingState::lookup_owner`).
    fn lookup_owner(&self, key: Id, use_fingers: bool) -> Option<Id> {
        if use_fingers && self.config.finger_lists {
            self.ring.lookup_owner(key)
        } else {
            self.ring.known_owner(key, use_fingers)
        }
    }

    pub(super) fn on_op_timer(&mut self, op: OpId, at: Time) {
        if self.on_kv_timer(op, at) || self.on_view_timer(op, at) {
            return;
        }
        let Some(lookup) = self.lookups.get(&op) else {
            return;
        };
        if at != lookup.retry_at.min(lookup.deadline) {
            return; // superseded by a later attempt
        }
        if self.now >= lookup.deadline {
            let lookup = self.lookups.remove(&op).expect("present");
            self.metrics.chord.lookups_failed += 1;
            self.lookup_failed(op, lookup);
        } else {
            self.send_lookup_attempt(op);
        }
    }

    pub(super) fn lookup_failed(&mut self, op: OpId, lookup: LookupOp) {
        match lookup.purpose {
            Purpose::User => self.done(
                op,
                Err(OpError::LookupTimeout {
                    key: lookup.key,
                    attempts: lookup.attempts,
                }),
            ),
            Purpose::Join | Purpose::SelfCheck => {} // the join's own deadline reports it
            Purpose::Finger(i) => {
                // Skip this finger for now; the next sweep tries again.
                if let Some(sweep) = &mut self.sweep {
                    sweep.next = i + 1;
                }
                self.continue_sweep();
            }
        }
    }

    pub(super) fn complete_lookup(&mut self, op: OpId, owner: Id, hops: u32) {
        let Some(lookup) = self.lookups.remove(&op) else {
            return; // a late answer to a finished lookup
        };
        self.metrics.chord.lookups_ok += 1;
        self.metrics.chord.hops.record(u64::from(hops));
        match lookup.purpose {
            Purpose::User => self.done(
                op,
                Ok(OpOutcome::Lookup {
                    key: lookup.key,
                    owner,
                    hops,
                }),
            ),
            Purpose::Join => self.join_found_successor(owner),
            Purpose::SelfCheck => {} // handled in `deliver`, which knows the resolver
            Purpose::Finger(i) => {
                if self.sweep.is_some_and(|s| s.next == i) {
                    self.apply_finger(i, owner);
                    self.continue_sweep();
                }
            }
        }
    }

    pub(super) fn join_found_successor(&mut self, owner: Id) {
        let Phase::Joining { op, .. } = self.phase else {
            return;
        };
        if owner == self.id {
            // The ring still lists a peer with our id: our previous incarnation (a restart
            // faster than failure detection). Join in front of the peer after it, which is
            // where that incarnation stood; our links replace its dead ones. Only when that
            // peer is ourselves too (the old incarnation was the whole ring) is the id taken.
            if let Phase::Joining { past_self, .. } = &mut self.phase
                && !*past_self
            {
                *past_self = true;
                let lookup = self.new_op();
                self.start_lookup(lookup, Id(self.id.0.wrapping_add(1)), Purpose::Join);
                return;
            }
            self.abort_join(op, OpError::IdInUse { id: self.id });
            return;
        }
        let now = self.now;
        if let Phase::Joining {
            successor,
            relookup_at,
            ..
        } = &mut self.phase
        {
            *successor = Some(owner);
            *relookup_at = now + super::JOIN_RELOOKUP_MS;
        }
        self.ring.set_successors(owner, &[]);
        if self.links.is_up(owner) {
            self.become_joined();
        } else {
            self.links.clear_backoff(owner);
            self.ensure_link(owner, true);
        }
    }

    /// The successor the join lookup found has not linked after [`super::JOIN_RELOOKUP_MS`]:
    /// look again through the bootstrap (the ring may have dropped a peer that had just died).
    /// A different answer replaces the successor; the same one keeps the link attempt going.
    pub(super) fn relookup_join(&mut self) {
        let Phase::Joining {
            bootstrap,
            successor,
            past_self,
            relookup_at,
            ..
        } = &mut self.phase
        else {
            return;
        };
        *relookup_at = Time::MAX;
        if successor.is_some_and(|s| self.links.is_up(s)) || !self.links.is_up(*bootstrap) {
            return;
        }
        let target = if *past_self {
            Id(self.id.0.wrapping_add(1))
        } else {
            self.id
        };
        let op = self.new_op();
        self.start_lookup(op, target, Purpose::Join);
    }

    /// Peers a message may be forwarded to: open links to ring members.
    pub(crate) fn routing_peers(&self) -> impl Iterator<Item = Id> + '_ {
        self.links.up_ring_members(|p| self.ring.is_pointed(p))
    }

    /// Evidence that `peer` is a live ring member (it resolved a lookup, or a resolver named it):
    /// when it sits between us and our successor, it is our true successor and two chains of
    /// the ring (left by concurrent joins, or a healed partition) get zipped here.
    pub(super) fn learn_of(&mut self, peer: PeerId, via: Option<PeerId>) {
        if !self.is_joined() || peer == self.id || !peer.in_open(self.id, self.ring.successor()) {
            return;
        }
        if let Some(via) = via.filter(|v| *v != self.id)
            && !self.links.is_up(peer)
        {
            self.remember_via(peer, via);
        }
        let changed = self.ring.offer_successor(peer);
        self.after_ring_change(changed);
    }

    /// Remembers that `via` holds a link to `peer` (bounded; oldest entries go first).
    pub(super) fn remember_via(&mut self, peer: PeerId, via: PeerId) {
        // Two generations: when the young map fills up it becomes the old one, so the oldest
        // hints go first at O(log n) per insert.
        if self.via_hints.len() >= MAX_VIA_HINTS / 2 && !self.via_hints.contains_key(&peer) {
            self.via_hints_old = std::mem::take(&mut self.via_hints);
        }
        self.via_hints.insert(peer, via);
    }

    pub(crate) fn via_hint(&self, peer: PeerId) -> Option<PeerId> {
        self.via_hints
            .get(&peer)
            .or_else(|| self.via_hints_old.get(&peer))
            .copied()
    }

    /// A peer linked to us, carried in routed messages so answers can reach us even before the
    /// ring routes to us: the bootstrap while joining, then the successor (it holds a link to
    /// us and sits next to us on the ring, so the detour costs at most one hop).
    ///
    /// A member whose successor link is not open yet (it just learned a closer successor, or
    /// it restarted and its ring neighbours have not adopted it) is reachable only through the
    /// peers it is linked to: greedy routing toward it ends at its ring predecessor, which may
    /// hold no link to it and drops the message. So then the predecessor, else the linked ring
    /// member closest after us, is named instead; without one, an answer to our link offer to
    /// the new successor is lost and the link waits for the connect timeout.
    pub(crate) fn origin_via(&self) -> Option<PeerId> {
        match self.phase {
            Phase::Joining { bootstrap, .. } => Some(bootstrap),
            Phase::Joined => {
                let me = self.id;
                let successor = self.ring.successor();
                if successor != me && self.links.is_up(successor) {
                    return Some(successor);
                }
                if let Some(p) = self.ring.predecessor()
                    && p != me
                    && self.links.is_up(p)
                {
                    return Some(p);
                }
                self.links
                    .ring_members()
                    .filter(|p| *p != me)
                    .min_by_key(|p| me.distance_to(*p))
            }
            _ => None,
        }
    }

    pub(super) fn on_routed(&mut self, from: PeerId, routed: Routed) {
        if let Some(via) = routed.origin_via
            && routed.origin != self.id
        {
            // Authorization (`guard.rs`): anyone can claim any origin and any `via`, and a hint
            // wins the next-hop choice toward that id. Hints are planted only for origins we
            // cannot reach otherwise (not linked, not a ring member we point at), and `signal`
            // ignores hints for members we point at: the ring routes to those.
            if !self.links.is_up(routed.origin) && !self.ring.is_pointed(routed.origin) {
                self.remember_via(routed.origin, via);
            }
        }
        if matches!(routed.dest, Dest::Peer { id, .. } if id == self.id)
            && matches!(routed.body, Body::GetView { .. })
            && !self.within_budget(from, crate::guard::Costly::Walk)
        {
            return;
        }

        match routed.dest {
            Dest::Owner { key } => {
                if !self.is_joined() {
                    self.metrics.chord.unexpected_messages += 1;
                    if matches!(routed.body, Body::FindSuccessor { .. }) {
                        // A peer joining through us (our greeting may have said we were a
                        // member before we left, or crossed its lookup): tell it we are not,
                        // so its join fails now instead of at its timeout (`on_hello`).
                        self.send(from, &Message::Hello { joined: false });
                    }
                    return;
                }
                if matches!(routed.body, Body::Kv(_) | Body::Watch { .. }) {
                    self.kv_route(routed);
                    return;
                }
                if let Some(owner) = self.lookup_owner(key, true) {
                    self.resolved(routed, owner);
                } else {
                    self.forward(routed);
                }
            }
            Dest::Peer { id, .. } if id == self.id => self.deliver(routed),
            Dest::Peer { id, via } => {
                if matches!(routed.body, Body::Signal { .. }) {
                    self.metrics.chord.signals_relayed += 1;
                }
                let mut routed = routed;
                if via == Some(self.id) {
                    // We were the relay but hold no link to the target: from here on plain
                    // greedy routing, never back toward us.
                    routed.dest = Dest::Peer { id, via: None };
                }
                self.forward(routed);
            }
        }
    }

    /// This node knows the owner of a routed request's key.
    pub(super) fn resolved(&mut self, routed: Routed, owner: Id) {
        match routed.body {
            Body::FindSuccessor { op, .. } => {
                let answer = Routed {
                    dest: Dest::Peer {
                        id: routed.origin,
                        via: routed.origin_via,
                    },
                    origin: self.id,
                    origin_via: None,
                    hops: 0,
                    body: Body::FoundSuccessor {
                        op,
                        owner,
                        hops: routed.hops,
                    },
                };
                if !self.route(answer) {
                    self.metrics.chord.dropped_no_route += 1;
                }
            }
            _ => self.metrics.chord.unexpected_messages += 1,
        }
    }

    pub(super) fn deliver(&mut self, routed: Routed) {
        match routed.body {
            // Authorization (`guard.rs`): an answer counts only for a lookup we have pending
            // (random op ids): a forged one would plant a fake successor through `learn_of`.
            Body::FoundSuccessor { op, .. } if !self.lookups.contains_key(&OpId(op)) => {
                self.metrics.rejected.answer_not_asked += 1;
            }
            Body::FoundSuccessor { op, owner, hops } => {
                // The resolver knew the owner from its own pointers, so it most likely holds a
                // link to it: the way to signal the owner if we need a link of our own.
                if owner != routed.origin && !self.links.is_up(owner) {
                    self.remember_via(owner, routed.origin);
                }
                self.learn_of(owner, Some(routed.origin));
                self.learn_of(routed.origin, None);
                let self_check = self
                    .lookups
                    .get(&OpId(op))
                    .is_some_and(|l| l.purpose == Purpose::SelfCheck);
                if self_check && owner != self.id {
                    self.on_self_check_mismatch(routed.origin, owner);
                }
                self.complete_lookup(OpId(op), owner, u32::from(hops));
            }
            Body::Signal { payload } => {
                self.metrics.chord.signals_delivered += 1;
                self.out.push_back(Output::event(Event::Signal {
                    from: routed.origin,
                    payload,
                }));
            }
            Body::Kv(_) => self.kv_at_owner(routed),
            Body::Watch { .. } => self.watch_at_owner(routed),
            Body::KvReply(reply) => self.on_kv_reply(reply),
            // Authorization (`guard.rs`): a routed replica message claims its origin; one that
            // claims a peer we are linked to is forged (that peer would use the link).
            Body::KvDirect(_) | Body::Election(_)
                if !self.routed_origin_plausible(routed.origin) =>
            {
                self.metrics.rejected.spoofed_origin += 1;
            }
            // Orders that change or reveal our store come only over a direct link from a
            // member (the claimed origin of a routed one is unproven); the sender links up
            // (`send_to_member`) and its next attempt or anti-entropy carries the data.
            // Answers may come routed: they count only under a random request id.
            Body::KvDirect(
                crate::wire::kv::KvMsg::Replicate { .. }
                | crate::wire::kv::KvMsg::Read { .. }
                | crate::wire::kv::KvMsg::Collect { .. },
            ) => {
                self.metrics.rejected.spoofed_origin += 1;
            }
            Body::KvDirect(msg) => self.on_kv_msg(routed.origin, msg),
            Body::Election(msg) => self.on_election_msg(routed.origin, msg),
            Body::GetView { op } => self.on_view_request(&routed, op),
            Body::View {
                op,
                predecessor,
                successors,
                hops,
                agent,
            } => self.on_view_reply(routed.origin, op, predecessor, successors, hops, &agent),
            _ => self.metrics.chord.unexpected_messages += 1,
        }
    }

    pub(crate) fn forward(&mut self, mut routed: Routed) {
        routed.hops = routed.hops.saturating_add(1);
        if routed.hops > self.config.max_hops {
            self.metrics.chord.dropped_hop_limit += 1;
            return;
        }
        self.metrics.chord.messages_forwarded += 1;
        if !self.route(routed) {
            self.metrics.chord.dropped_no_route += 1;
        }
    }

    /// Sends a routed message one hop on (or handles it here when it is for this node).
    /// Returns false when no open link leads on.
    pub(crate) fn route(&mut self, routed: Routed) -> bool {
        if matches!(routed.dest, Dest::Peer { id, .. } if id == self.id) {
            self.deliver(routed);
            return true;
        }
        let next = match routed.dest {
            // The first of `routing::preceding_candidates`, without collecting and sorting
            // them all (ids are distinct, so the closest one is unique).
            Dest::Owner { key } => crate::id::closest_preceding(self.id, key, self.routing_peers()),
            Dest::Peer { id, via } => routing::next_hop_to_peer(
                self.id,
                self.ring.predecessor(),
                id,
                via,
                self.ring.successors(),
                |p| self.links.is_up(p),
                self.routing_peers(),
            ),
        };
        // A joining node reaches the ring only through its bootstrap.
        let next = next.or_else(|| match self.phase {
            Phase::Joining { bootstrap, .. } => self.links.is_up(bootstrap).then_some(bootstrap),
            _ => None,
        });
        match next {
            Some(next) => {
                self.send(next, &Message::Route(routed));
                true
            }
            None => false,
        }
    }
}
