//! Ring maintenance as methods of [`Node`]: becoming a member, stabilize and notify,
//! heartbeats, the links the ring needs, finger sweeps, self-checks and probes of lost peers
//! (the protocols are in the module docs of `node`).

use super::*;
use crate::guard::evict_oldest_when_full;

/// How far one frame of clock gossip moves our Lamport clock at most (`observe_neighbour_clock`).
const MAX_GOSSIP_JUMP: u64 = 1 << 24;

impl Node {
    pub(super) fn become_joined(&mut self) {
        let op = match self.phase {
            Phase::Joining { op, successor, .. } => {
                // The successor the join found may have been dropped from the pointers while
                // its link was opening (an old link to it went down meanwhile). Its link is up
                // now: it is our successor. Without this the node would join as a ring of one.
                if let Some(successor) = successor
                    && self.ring.successors().is_empty()
                {
                    self.ring.set_successors(successor, &[]);
                }
                Some(op)
            }
            _ => None,
        };
        self.phase = Phase::Joined;
        self.fence_on_join();
        self.peak_set = self.replica_set().len();
        // The successors we join in front of were replicas of our range before we came: they
        // hold its writes. We ourselves hold nothing certain until we have synced with them.
        self.settled_members = self.replica_successors().into_iter().collect();
        self.own_settled = self.settled_members.is_empty();
        self.adopting = !self.own_settled || self.ring.successors().is_empty();
        self.pred_settled = false;
        self.successors_known = self.ring.successors().is_empty();
        let now = self.now;
        self.timers.set(Timer::Stabilize, now);
        self.timers.set(Timer::FixFingers, now);
        self.timers
            .set(Timer::Heartbeat, now + self.config.heartbeat_interval_ms);
        if !self.watches.is_idle() {
            // Watches made before the join (or kept through a leave and a new join, which
            // stopped every timer): subscribe now; held leases expire again (`crate::watch`).
            for w in self.watches.mine.values_mut() {
                w.renew_at = now;
            }
            self.timers.set(Timer::Watch, now);
        }
        let probe = if self.config.probe_interval_ms > 0 {
            now + self.config.probe_interval_ms
        } else {
            Time::MAX
        };
        self.timers.set(Timer::Probe, probe);
        if self.config.strays_interval_ms > 0 {
            self.timers
                .set(Timer::Strays, now + self.config.strays_interval_ms);
        }
        self.fix_interval = self.config.fix_fingers_min_interval_ms;
        self.reset_self_check();
        self.reset_anti_entropy();
        // Our store counts toward quorums only once rounds with our replicas ended equal.
        self.repair_soon();
        let peers: Vec<Id> = self.links.up_peers().collect();
        for peer in peers {
            self.send(peer, &Message::Hello { joined: true });
        }
        if let Some(op) = op {
            let successor = self.ring.successor();
            self.done(op, Ok(OpOutcome::Joined { successor }));
        }
    }

    pub(super) fn abort_join(&mut self, op: OpId, error: OpError) {
        let join_lookups: Vec<OpId> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.purpose == Purpose::Join)
            .map(|(id, _)| *id)
            .collect();
        for id in join_lookups {
            self.lookups.remove(&id);
        }
        self.ring.clear();
        self.phase = Phase::Idle;
        self.done(op, Err(error));
    }

    pub(super) fn start_join_lookup(&mut self) {
        if let Phase::Joining { lookup_started, .. } = &mut self.phase {
            *lookup_started = true;
        }
        let op = self.new_op();
        self.start_lookup(op, self.id, Purpose::Join);
    }

    pub(super) fn on_hello(&mut self, from: PeerId, joined: bool) {
        self.links.set_in_ring(from, joined);
        if let Phase::Joining {
            op,
            bootstrap,
            successor: None,
            ..
        } = self.phase
            && bootstrap == from
            && !joined
        {
            // Our bootstrap is no ring member (joining too, or restarting: a whole ring that
            // restarts at once tries to join through each other). Its silence would cost the
            // whole join timeout; fail now and let the join plan try the next candidate.
            self.abort_join(op, OpError::BootstrapNotJoined { bootstrap });
            return;
        }
        if joined && self.is_joined() {
            // A member we did not know of may sit between us and our successor (a reconnected
            // peer after a partition, a newcomer, or a node the ring skipped); stabilization
            // verifies it.
            let changed = self.ring.offer_successor(from);
            self.after_ring_change(changed);
        }
    }

    pub(super) fn stabilize(&mut self) {
        if !self.is_joined() {
            return;
        }
        self.metrics.chord.stabilize_rounds += 1;
        if self.ring.successors().is_empty() {
            // Alone: someone that notified us is our successor too (two-node ring).
            if let Some(p) = self.ring.predecessor()
                && self.links.is_up(p)
            {
                let changed = self.ring.set_successors(p, &[]);
                self.after_ring_change(changed);
            } else {
                return;
            }
        }
        let successor = self.ring.successor();
        if self.links.is_up(successor) {
            // Earlier rounds' answers still count (`stabilize_nonces`): without that, a
            // successor slower than the stabilize interval would never complete a round, never
            // be notified, keep a stale predecessor and answer for keys it does not own.
            let nonce = self.rng.next_u64() >> 11;
            if self.stabilize_nonces.len() >= super::STABILIZE_NONCES_KEPT {
                self.stabilize_nonces.pop_front();
            }
            self.stabilize_nonces.push_back((successor, nonce));
            let clock = self.clock.current();
            self.send(successor, &Message::GetNeighbors { nonce, clock });
        } else {
            self.ensure_link(successor, true);
        }
    }

    /// Lamport clock gossip between ring neighbours (`GetNeighbors` from our predecessor,
    /// `Neighbors` from our successor): a leader stamps above what it observed, and a version
    /// a neighbour holds outside the leader's set (a stray, `node/sync.rs`) is written back
    /// with its timestamp unchanged. Without gossip, a set that lost a key and took new writes
    /// stamped them below the stray's old version, which then won on its write-back
    /// (sim-history `--faults partition`). Bounded tighter than other remote timestamps:
    /// at most [`MAX_GOSSIP_JUMP`] per frame. Honest neighbours' clocks differ by far less
    /// (they count writes), and with the 2^40 bound a hostile neighbour pushed a leader's
    /// clock every round faster than its replicas caught up, so their bound refused its
    /// writes (sim-hostile `garbage`, seeds 12 and 17). Now it takes 2^16 rounds without a
    /// write to the set before one attempt is refused (docs/threat-model.md).
    pub(super) fn observe_neighbour_clock(&mut self, clock: u64) {
        let current = self.clock.current();
        if clock > current {
            self.observe_remote(clock.min(current.saturating_add(MAX_GOSSIP_JUMP)));
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_neighbors(
        &mut self,
        from: PeerId,
        nonce: u64,
        pred: Option<Id>,
        succs: &[Id],
        preds: &[Id],
        clock: u64,
    ) {
        if let Some(Sweep {
            checking: Some((i, expected, finger, since)),
            ..
        }) = self.sweep
            && expected == nonce
            && finger == from
        {
            self.proximity_on_check(i, finger, since, succs);
            self.on_finger_checked(i, finger, pred);
            if self.config.finger_lists {
                // After the check: a stale finger is replaced, and its list goes with it.
                self.ring.set_finger_succs(finger, succs);
            }
            return;
        }
        if let Some(at) = self.list_requests.iter().position(|r| *r == (from, nonce)) {
            self.list_requests.swap_remove(at);
            self.ring.set_finger_succs(from, succs);
            return;
        }
        if !self.is_joined()
            || from != self.ring.successor()
            || !self.stabilize_nonces.contains(&(from, nonce))
        {
            self.metrics.chord.unexpected_messages += 1;
            return;
        }
        self.observe_neighbour_clock(clock);
        // One answer completes the round; answers to the other rounds in flight are stale.
        self.stabilize_nonces.clear();
        // The successor keeps links to its own successors: signal them through it.
        for s in succs.iter().take(self.config.successor_list_len) {
            if *s != self.id && !self.links.is_up(*s) {
                self.remember_via(*s, from);
            }
        }
        let replicas_before = self.replica_successors();
        let believed: Vec<Id> = succs
            .iter()
            .copied()
            .filter(|s| !self.failed_lately(*s))
            .collect();
        let changed = self.ring.set_successors(from, &believed);
        self.after_ring_change(changed);
        if self.replica_successors() != replicas_before {
            self.repair_soon();
        }
        if !self.successors_known {
            self.successors_known = true;
            self.release_waiting_requests();
        }
        // Chord's rule (adopt the successor's predecessor when it lies between us), widened to
        // every peer the successor recently heard from: the closest one after us wins. It is
        // adopted at once (ownership answers are right without a link); the link follows.
        let me = self.id;
        let closer = pred
            .into_iter()
            .chain(preds.iter().copied())
            .filter(|x| x.in_open(me, from))
            .min_by_key(|x| me.distance_to(*x));
        match closer {
            Some(x) if self.failed_lately(x) => {
                // Its link to us failed lately: the successor may not have noticed a death yet
                // (it would put a dead peer back into our pointers), or it restarted. Adopt it
                // only once a new link to it opens (the `Hello` rules and the next round do).
                self.remember_via(x, from);
                self.links.clear_backoff(x);
                self.ensure_link(x, true);
                self.send(from, &Message::Notify);
            }
            Some(x) => {
                // `from` is linked to x (x notified it): signaling to x goes that way.
                if !self.links.is_up(x) {
                    self.remember_via(x, from);
                }
                let changed = self.ring.offer_successor(x);
                self.after_ring_change(changed);
                if self.links.is_up(x) {
                    self.send(x, &Message::Notify);
                }
            }
            None => self.send(from, &Message::Notify),
        }
        // Quiet rounds slow stabilization down; any change (see `after_ring_change`) resets it.
        if closer.is_none() && !changed.successor {
            self.stabilize_interval =
                (self.stabilize_interval * 2).min(self.config.stabilize_max_interval_ms);
        }
    }

    /// Linked peers that notified us lately, closest preceding first (bounded).
    pub(super) fn recent_notifiers(&self) -> Vec<Id> {
        let me = self.id;
        let mut list: Vec<Id> = self
            .notifiers
            .iter()
            .copied()
            .filter(|p| self.links.is_up(*p) && Some(*p) != self.ring.predecessor())
            .collect();
        list.sort_unstable_by_key(|p| p.distance_to(me));
        list.truncate(MAX_NOTIFIERS_SHARED);
        list
    }

    pub(super) fn on_notify(&mut self, from: PeerId) {
        if !self.is_joined() {
            self.metrics.chord.unexpected_messages += 1;
            return;
        }
        self.links.set_in_ring(from, true);
        if self.notifiers.len() >= MAX_NOTIFIERS && !self.notifiers.contains(&from) {
            // Keep the closest preceding ones: drop the farthest.
            let me = self.id;
            if let Some(far) = self
                .notifiers
                .iter()
                .copied()
                .max_by_key(|p| p.distance_to(me))
            {
                self.notifiers.remove(&far);
            }
        }
        self.notifiers.insert(from);
        let mut changed = self.ring.offer_predecessor(from);
        if self.ring.successors().is_empty() {
            let c = self.ring.set_successors(from, &[]);
            changed.successor |= c.successor;
        }
        self.after_ring_change(changed);
    }

    pub(super) fn on_leaving(&mut self, from: PeerId, pred: Option<Id>, succs: &[Id]) {
        let was_successor = self.ring.successor() == from;
        let was_replica = self.replica_successors().contains(&from);
        if was_replica {
            // It handed its data on before leaving: the set may shrink by one for good.
            self.peak_set = self.peak_set.saturating_sub(1).max(1);
        }
        let was_predecessor = self.ring.predecessor() == Some(from);
        // What a failed link clears (`on_peer_down`), without the failure: we close this link
        // ourselves, so no link-down report follows.
        self.forget_departed(from);
        self.repl.link_down(from);
        self.proximity.link_down(from);
        self.equal_since.remove(&from);
        self.rounds_opened.remove(&from);
        let mut changed = self.ring.remove_peer(from);
        if was_successor && let Some((first, rest)) = succs.split_first() {
            let c = self.ring.set_successors(*first, rest);
            changed.successor |= c.successor;
        }
        if was_predecessor {
            let c = self.ring.set_predecessor(pred);
            changed.predecessor |= c.predecessor;
        }
        self.after_ring_change(changed);
        self.links.down(from, self.now, 0, 0);
        self.out.push_back(Output::Disconnect(from));
    }

    pub(super) fn heartbeat(&mut self) {
        let now = self.now;
        // Connects that never completed count as failures of that peer.
        let stale = self
            .links
            .stale_connects(now.saturating_sub(self.config.connect_timeout_ms));
        for peer in stale {
            self.out.push_back(Output::Disconnect(peer));
            self.on_peer_down(peer);
        }
        if !self.is_joined() {
            return;
        }
        self.expire_parked();
        let mut watched: Vec<Id> = self.ring.predecessor().into_iter().collect();
        watched.push(self.ring.successor());
        for peer in watched {
            if peer == self.id {
                continue;
            }
            if let Some(LinkState::Up { last_heard, .. }) = self.links.get(peer) {
                let silent = now.saturating_sub(last_heard);
                if silent >= self.config.heartbeat_timeout_ms {
                    self.metrics.chord.heartbeat_timeouts += 1;
                    self.out.push_back(Output::Disconnect(peer));
                    self.links.down(peer, now, 0, 0);
                    self.forget_peer(peer, true);
                } else if silent >= self.config.heartbeat_interval_ms {
                    if self.config.proximity_fingers {
                        self.ping_for_rtt(peer);
                    } else {
                        let nonce = self.rng.next_u64() >> 11;
                        self.send(peer, &Message::Ping { nonce });
                    }
                }
            }
        }
        self.proximity_trials();
        self.maintain_links();
    }

    /// The peers this node keeps links to: its first `linked_successors` successors and its
    /// predecessor, every other successor while a link to it is open, and its fingers. With
    /// `reuse_finger_links`, a finger not linked is served instead by a linked ring member in
    /// its interval `[me + 2^i, me + 2^(i+1))` when there is one. Routing only needs some hop
    /// in each interval to halve the distance (Chord's O(log N) argument), so a newcomer that
    /// becomes a finger, or a finger that crashes next to a linked peer, costs no new
    /// connection (each one counts against a tab's lifetime budget, `peer::budget`). The price
    /// is fewer spare links: under extreme churn (a 64-peer ring replaced every 16 s) more
    /// lookups fail, so only budgeted peers reuse (docs/design.md, "Links and the
    /// 500-connection cap"). By default this is exactly the peers the ring points at.
    pub(super) fn wanted_links(&self) -> Vec<Id> {
        let linked = self.config.linked_successors.max(1);
        let mut wanted: Vec<Id> = self
            .ring
            .successors()
            .iter()
            .enumerate()
            .filter(|(i, s)| *i < linked || self.links.get(**s).is_some())
            .map(|(_, s)| *s)
            .chain(self.ring.predecessor())
            .collect();
        let me = self.id;
        for i in 0..self.ring.finger_count() {
            let Some(finger) = self.ring.routing_finger(i) else {
                continue;
            };
            if finger == me || wanted.contains(&finger) || self.ring.successors().contains(&finger)
            {
                continue;
            }
            if !self.config.reuse_finger_links || self.links.get(finger).is_some() {
                wanted.push(finger);
                continue;
            }
            let reuse = self
                .links
                .ring_members()
                .find(|p| self.ring.in_finger_interval(i, *p));
            wanted.push(reuse.unwrap_or(finger));
        }
        wanted.retain(|p| *p != me);
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// Opens the links [`Self::wanted_links`] names and closes the least used ones beyond
    /// the bound.
    pub(super) fn maintain_links(&mut self) {
        let wanted = self.wanted_links();
        let successors: Vec<Id> = self.ring.successors().to_vec();
        for peer in &wanted {
            let essential = successors.contains(peer) || self.ring.predecessor() == Some(*peer);
            self.ensure_link(*peer, essential);
        }
        // Links nobody needs are closed by agreement (Bye/Keep), so a link one side still
        // routes through is never cut under it.
        let idle_before = self.now.saturating_sub(self.config.link_idle_ms);
        for peer in self.links.unneeded(&wanted, idle_before) {
            self.links.set_closing(peer);
            self.send(peer, &Message::Bye);
        }
        // The hard bound wins over a peer's wish, except for the peers just before us: we are
        // in their successor lists (they link to us as successor or replica successor) and
        // cannot see it from here. Closing those links kept rings whose peers sit at the
        // bound (base-8 fingers in 64 links) from converging. "Just before" is our
        // predecessor's gap and then as many peers as our successor list holds, at its
        // density and half again (a peer after a wide gap is the finger of many, so it is at
        // the bound most often, and a span measured ahead alone missed the peers behind it).
        self.links
            .expire_backoff(self.now, self.config.connect_backoff_max_ms);
        if self.links.len() <= self.config.max_links {
            return;
        }
        let me = self.id;
        let span = self
            .ring
            .successors()
            .last()
            .map_or(0, |last| me.distance_to(*last));
        let gap = self.ring.predecessor().map_or(0, |p| p.distance_to(me));
        let reach = gap.saturating_add(span).saturating_add(span / 2);
        // At most twice a successor list's length of them, the closest, and only within the
        // bound: ids are cheap, and links from ids planted behind us must not lift it. (With
        // a bound our own wanted links fill, as a 10-link budget on a forming ring, sparing
        // them kept the links we asked for closed longer: `tests/budget_close.rs`.)
        let mut behind: Vec<(u32, Id)> = self
            .links
            .up_peers()
            .map(|p| (p.distance_to(me), p))
            .filter(|(d, _)| *d <= reach)
            .collect();
        behind.sort_unstable();
        behind.truncate(
            (2 * self.config.successor_list_len)
                .min(self.config.max_links.saturating_sub(wanted.len())),
        );
        let spared = |peer: Id| behind.iter().any(|(_, p)| *p == peer);
        for peer in self.links.excess(self.config.max_links, &wanted, spared) {
            self.send(peer, &Message::Close);
            self.close_link(peer);
        }
    }

    pub(super) fn close_link(&mut self, peer: PeerId) {
        self.links.down(peer, self.now, 0, 0);
        self.metrics.chord.links_pruned += 1;
        self.out.push_back(Output::Disconnect(peer));
    }

    pub(crate) fn ensure_link(&mut self, peer: PeerId, essential: bool) {
        if peer == self.id || !self.links.may_connect(peer, self.now) {
            return;
        }
        if !essential && self.links.len() >= self.config.max_links {
            return;
        }
        self.links.start_connecting(peer, self.now);
        self.metrics.chord.connects_requested += 1;
        self.out.push_back(Output::Connect(peer));
    }

    pub(super) fn after_ring_change(&mut self, changed: Changed) {
        if self.is_joined() {
            self.peak_set = self.peak_set.max(self.replica_set().len());
        }
        if changed.successor {
            self.metrics.chord.successor_changes += 1;
            if self.is_isolated() {
                self.metrics.chord.isolations += 1;
                self.out.push_back(Output::event(Event::Isolated));
            }
            let successor = self.ring.successor();
            self.links.start_watching(successor, self.now);
            self.ensure_link(successor, true);
            self.out
                .push_back(Output::event(Event::SuccessorChanged { successor }));
        }
        if changed.predecessor {
            self.metrics.chord.predecessor_changes += 1;
            let predecessor = self.ring.predecessor();
            if let Some(p) = predecessor {
                self.links.start_watching(p, self.now);
            }
            if let (Some(old), Some(new)) = (self.last_predecessor, predecessor)
                && self.is_joined()
                && new.in_open(old, self.id)
            {
                self.handback_from = self.handback_from.or(Some(old));
                let start = self.catch_up.map_or(old, |(start, _)| start);
                let due = self.now + CATCH_UP_DELAY_MS;
                self.catch_up = Some((start, due));
                self.newcomer = Some((new, self.now));
                self.timers.set_earlier(Timer::AntiEntropy, due);
            }
            let grew = match (self.last_predecessor, predecessor) {
                (Some(old), Some(new)) => old.in_open(new, self.id),
                (_, None) => false,
                (None, Some(_)) => false,
            };
            self.fence_on_predecessor(self.last_predecessor, predecessor);
            if grew || predecessor.is_none() {
                self.repair_soon();
                if predecessor.is_none() && self.is_joined() {
                    // The failed predecessor's piece lost a copy: copy it on now
                    // (`provisional_range`).
                    self.timers.set_earlier(Timer::AntiEntropy, self.now);
                }
                // Our range took over a departed predecessor's part. Its old replica set was
                // that predecessor, us and our first k-2 successors: only those still count
                // for the whole range, and we ourselves must sync first.
                self.own_settled = false;
                let keep: Vec<Id> = self
                    .ring
                    .successors()
                    .iter()
                    .copied()
                    .take(self.config.replicas.saturating_sub(2))
                    .collect();
                self.settled_members.retain(|m| keep.contains(m));
            } else if !self.own_settled {
                // A predecessor after none (it failed, the next one notified us): the range
                // it leaves us is known now; copy it to our replicas at once.
                self.repair_soon();
            }
            // Rounds over the old range prove nothing about the new one.
            self.equal_with.clear();
            self.last_predecessor = predecessor;
            if let Some(p) = predecessor {
                self.ensure_link(p, true);
                self.ask_preds(p);
            }
            self.out
                .push_back(Output::event(Event::PredecessorChanged { predecessor }));
        }
        self.fence_check();
        if (changed.successor || changed.predecessor) && self.is_joined() {
            // Our neighbourhood moved: stabilize and self-check at full pace again. Fingers
            // keep their own pace (a sweep that changes nothing slows down): a join next to us
            // rarely moves a finger, and refreshing them all on every local change is what
            // costs the most messages while a large ring forms.
            self.reset_self_check();
            self.reset_anti_entropy();
            self.stabilize_interval = self.config.stabilize_interval_ms;
            self.timers
                .set_earlier(Timer::Stabilize, self.now + self.stabilize_interval);
        }
    }

    pub(super) fn continue_sweep(&mut self) {
        while let Some(sweep) = self.sweep {
            if sweep.next >= self.ring.finger_count() {
                self.sweep = None;
                self.metrics.chord.finger_sweeps += 1;
                self.fix_interval = if sweep.changed {
                    self.config.fix_fingers_min_interval_ms
                } else {
                    (self.fix_interval * 2).min(self.config.fix_fingers_max_interval_ms)
                };
                self.timers
                    .set(Timer::FixFingers, self.now + self.fix_interval);
                for peer in self.wanted_links() {
                    self.ensure_link(peer, false);
                }
                self.ask_near_fingers_for_lists();
                return;
            }
            let i = sweep.next;
            let start = self.ring.finger_start(i);
            // Fingers below the successor need no message. A linked finger is verified with one
            // round trip (its predecessor must lie before the finger's start); only a finger
            // that is missing or proved stale costs a lookup (never answered from the finger
            // table itself, which is what is being refreshed).
            if let Some(owner) = self.ring.known_owner(start, false) {
                self.apply_finger(i, owner);
            } else if let Some(finger) = self.ring.finger(i).filter(|f| self.links.is_up(*f)) {
                let nonce = self.rng.next_u64() >> 11;
                if let Some(sweep) = &mut self.sweep {
                    sweep.checking = Some((i, nonce, finger, self.now));
                }
                self.send(finger, &Message::GetNeighbors { nonce, clock: 0 });
                return;
            } else {
                // Unchecked, its list would age without bound.
                if let Some(finger) = self.ring.finger(i) {
                    self.ring.forget_finger_succs(finger);
                }
                let op = self.new_op();
                self.start_lookup(op, start, Purpose::Finger(i));
                return;
            }
        }
    }

    /// With `Config::finger_lists`, each linked near finger is asked for its successor list
    /// once per sweep (exact fingers report theirs in their checks); one not linked loses the
    /// list it gave, which would otherwise age without bound.
    fn ask_near_fingers_for_lists(&mut self) {
        self.list_requests.clear();
        if !self.config.finger_lists {
            return;
        }
        let mut near: Vec<Id> = (0..self.ring.finger_count())
            .filter_map(|i| {
                self.ring
                    .near(i)
                    .filter(|p| self.ring.finger(i) != Some(*p))
            })
            .collect();
        near.sort_unstable();
        near.dedup();
        for peer in near {
            if self.links.is_up(peer) {
                let nonce = self.rng.next_u64() >> 11;
                self.list_requests.push((peer, nonce));
                self.send(peer, &Message::GetNeighbors { nonce, clock: 0 });
            } else {
                self.ring.forget_finger_succs(peer);
            }
        }
    }

    /// A finger answered with its predecessor: it is still the owner of the finger's start
    /// unless that predecessor lies in `[start, finger)`.
    pub(super) fn on_finger_checked(&mut self, i: usize, finger: Id, pred: Option<Id>) {
        if let Some(sweep) = &mut self.sweep {
            sweep.checking = None;
        }
        let start = self.ring.finger_start(i);
        let stale = pred.is_none_or(|p| p != finger && p.in_closed(start, finger));
        if stale {
            let op = self.new_op();
            self.start_lookup(op, start, Purpose::Finger(i));
        } else {
            self.apply_finger(i, finger);
            self.continue_sweep();
        }
    }

    /// A finger that does not answer its check within a lookup attempt is looked up instead.
    pub(super) fn check_stalled_finger(&mut self) {
        if let Some(Sweep {
            checking: Some((i, _, _, since)),
            ..
        }) = self.sweep
            && self.now >= since + self.config.lookup_attempt_timeout_ms
        {
            if let Some(sweep) = &mut self.sweep {
                sweep.checking = None;
            }
            let op = self.new_op();
            self.start_lookup(op, self.ring.finger_start(i), Purpose::Finger(i));
        }
    }

    pub(super) fn reset_self_check(&mut self) {
        self.self_check_interval = self.config.self_check_min_interval_ms;
        if self.config.self_check_min_interval_ms > 0 {
            self.timers
                .set_earlier(Timer::SelfCheck, self.now + self.self_check_interval);
        }
    }

    /// Our own id resolved to `owner` at `resolver`: the ring skips us there (an "appendage"
    /// left by concurrent joins, or the seam of two rings after a partition). Linking to both
    /// lets the `Hello` rules put us between them; stabilization does the rest.
    pub(super) fn on_self_check_mismatch(&mut self, resolver: PeerId, owner: PeerId) {
        self.metrics.chord.self_check_repairs += 1;
        self.reset_self_check();
        // The owner the resolver knows may be closer than our own successor (two chains that
        // interleave): take it, and let the resolver take us (its `Hello` rule). This zips the
        // chains together one pair per check.
        let changed = self.ring.offer_successor(owner);
        self.after_ring_change(changed);
        for peer in [resolver, owner] {
            if peer != self.id && !self.links.is_up(peer) {
                self.links.clear_backoff(peer);
                self.ensure_link(peer, true);
            } else if self.links.is_up(peer) {
                self.send(peer, &Message::Hello { joined: true });
            }
        }
    }

    pub(super) fn apply_finger(&mut self, i: usize, owner: Id) {
        let (next, changed) = self.ring.set_finger(i, owner);
        if let Some(sweep) = &mut self.sweep {
            sweep.next = next;
            sweep.changed |= changed;
        }
        if changed && self.config.proximity_fingers {
            // A new exact finger may be nearer than the pick (or farther than a candidate).
            for j in i..next {
                self.choose_near(j);
            }
        }
    }

    /// `peer`'s link failed within [`FAILED_MEMORY_MS`] and no new link to it has opened:
    /// another peer's word that it is alive (a successor list, a recently heard list) is
    /// stale.
    pub(super) fn failed_lately(&self, peer: PeerId) -> bool {
        !self.links.is_up(peer)
            && self
                .failed_recently
                .get(&peer)
                .is_some_and(|(at, _)| self.now < at + FAILED_MEMORY_MS)
    }

    /// `linked`: whether a link to `peer` was up when it failed (a peer we only pointed at,
    /// say a stale finger that never answered a connect, may have left gracefully long ago).
    pub(super) fn note_failed(&mut self, peer: PeerId, linked: bool) {
        let now = self.now;
        self.failed_recently
            .retain(|_, (at, _)| now < *at + FAILED_MEMORY_MS);
        evict_oldest_when_full(&mut self.failed_recently, MAX_FAILED_RECENTLY, |(at, _)| {
            *at
        });
        // A linked peer that crashed stays "linked" when a stale pointer to it fails again.
        let linked = linked || self.failed_recently.get(&peer).is_some_and(|(_, l)| *l);
        self.failed_recently.insert(peer, (now, linked));
    }

    pub(super) fn remember_lost(&mut self, peer: PeerId) {
        if self.config.probe_interval_ms == 0 {
            return;
        }
        evict_oldest_when_full(&mut self.lost, MAX_LOST, |(at, _)| *at);
        self.lost.insert(peer, (self.now, self.now));
    }

    /// Probes one lost peer (a connection attempt: if a partition hid it, the link reopens and
    /// the `Hello` rules merge the rings). Probes back off twice over: per peer (below), and as
    /// a whole while they find nobody, since then the lost peers crashed rather than hid, and
    /// under churn every probe is a peer connection a tab cannot get back (`peer::budget`).
    pub(super) fn probe_lost_peer(&mut self) {
        let now = self.now;
        let floor = self.config.probe_interval_ms;
        if let Some(last) = self.last_probed {
            match self.links.get(last) {
                // Still connecting: one probe at a time.
                Some(LinkState::Connecting { .. }) => {
                    self.timers.set(Timer::Probe, now + self.probe_gap);
                    return;
                }
                Some(LinkState::Up { .. }) => self.probe_gap = floor,
                None => {
                    self.probe_gap =
                        (self.probe_gap * 2).min(self.config.probe_interval_max_ms.max(floor))
                }
            }
            self.last_probed = None;
        }
        self.timers.set(Timer::Probe, now + self.probe_gap);
        let memory = self.config.probe_memory_ms;
        self.lost.retain(|_, (at, _)| now < *at + memory);
        let candidate = self
            .lost
            .iter()
            .filter(|(p, (_, due))| *due <= now && self.links.get(**p).is_none())
            .min_by_key(|(_, (_, due))| *due)
            .map(|(p, _)| *p);
        if let Some(peer) = candidate {
            if let Some(entry) = self.lost.get_mut(&peer) {
                // Back off: the longer a peer has been gone, the rarer its probes.
                let gap = now
                    .saturating_sub(entry.0)
                    .clamp(floor, MAX_PROBE_GAP_MS.max(floor));
                entry.1 = now + gap;
            }
            self.links.clear_backoff(peer);
            self.ensure_link(peer, false);
            self.last_probed = Some(peer);
        }
    }
}
