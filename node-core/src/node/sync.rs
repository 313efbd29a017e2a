//! Anti-entropy scheduling as methods of [`Node`]: rounds over our range and our replica
//! successors' ranges, hand-back to a new predecessor, and the answers to Merkle sessions
//! (the sessions themselves are `crate::merkle`; the tree is `crate::store::tree`).

use super::*;

/// How long a `GetPreds` stays the one outstanding question before it is asked again.
const PREDS_ANSWER_MS: u64 = 2_000;

/// Stray keys queued for the write-back per round, at most (the rest wait for the next).
const MAX_STRAYS_PER_ROUND: usize = 1_024;

impl Node {
    pub(crate) fn reset_anti_entropy(&mut self) {
        self.anti_entropy_interval = self.config.anti_entropy_min_interval_ms;
        self.timers
            .set_earlier(Timer::AntiEntropy, self.now + self.anti_entropy_interval);
    }

    /// Opens one anti-entropy round over this node's primary range `(predecessor, self]` with
    /// the next of the successors that replicate it (round-robin).
    pub(super) fn anti_entropy_round(&mut self) {
        self.timers
            .set(Timer::AntiEntropy, self.now + self.anti_entropy_interval);
        // Rounds that find everything in sync slow the pace (see `on_sync`).
        self.anti_entropy_interval =
            (self.anti_entropy_interval * 2).min(self.config.anti_entropy_max_interval_ms);
        let replicas: Vec<Id> = self
            .ring
            .successors()
            .iter()
            .copied()
            .take(self.config.replicas.saturating_sub(1))
            .collect();
        let Some(pred) = self.ring.predecessor().filter(|_| self.is_joined()) else {
            if self.is_joined() && !self.own_settled {
                // The predecessor failed and its successor has not notified us yet: our range
                // is growing and its new replica must get it soon (its other copies may be
                // failing too), so keep the fast pace until a predecessor is known, and copy
                // what we can tell is ours already (`provisional_range`).
                self.anti_entropy_interval = self.config.anti_entropy_min_interval_ms;
                self.timers
                    .set(Timer::AntiEntropy, self.now + SETTLE_ROUND_MS);
                if let Some(range) = self.provisional_range() {
                    self.provisional_round(&replicas, range);
                }
            }
            return;
        };
        if replicas.is_empty() {
            return;
        }
        self.fence_check();
        self.ask_preds(pred);
        self.hand_back(pred);
        self.catch_up_round(&replicas);
        // Members that do not yet count toward quorums (and our own store, until it is
        // settled) go first, at a fast pace: until then the range's operations may fail.
        self.settled_members.retain(|m| replicas.contains(m));
        self.equal_with.retain(|m| replicas.contains(m));
        let unsettled = replicas.iter().copied().find(|m| {
            (!self.settled_members.contains(m) || !self.equal_with.contains(m))
                && self.links.is_up(*m)
        });
        let target = match unsettled {
            Some(m) => m,
            None if !self.own_settled => replicas
                .iter()
                .copied()
                .find(|m| self.links.is_up(*m))
                .unwrap_or(replicas[0]),
            None => replicas[self.anti_entropy_cursor % replicas.len()],
        };
        self.anti_entropy_cursor = self.anti_entropy_cursor.wrapping_add(1);
        if unsettled.is_some() || !self.own_settled {
            self.anti_entropy_interval = self.config.anti_entropy_min_interval_ms;
            self.timers
                .set(Timer::AntiEntropy, self.now + SETTLE_ROUND_MS);
        }
        if !self.links.is_up(target) {
            return;
        }
        self.collect_tombstones(pred, &replicas);
        self.metrics.kv.anti_entropy_rounds += 1;
        let range = RingRange::new(pred.0, self.id.0);
        self.rounds_opened.entry(target).or_insert(self.now);
        let opening = merkle::open_round(&self.store, range);
        self.send(target, &Message::Sync(opening));
    }

    /// One round over the range that becomes ours once our failed predecessor's predecessor
    /// notifies us (`provisional_range`), with each replica successor a link reaches. Equal
    /// rounds over it settle nobody: the range we finally own may be wider.
    fn provisional_round(&mut self, replicas: &[Id], range: RingRange) {
        for member in replicas {
            if self.links.is_up(*member) {
                self.metrics.kv.anti_entropy_rounds += 1;
                let opening = merkle::open_round(&self.store, range);
                self.send(*member, &Message::Sync(opening));
            }
        }
    }

    /// Hands the part of our old primary range that a new predecessor now owns, `(start, pred]`,
    /// back to it. Without this, writes a peer took while the range's replicas were all down
    /// would stay with it alone once they return (it is no longer in the range's replica set,
    /// and anti-entropy only runs within replica sets).
    pub(super) fn hand_back(&mut self, pred: PeerId) {
        let Some(start) = self.handback_from else {
            return;
        };
        if !pred.in_open(start, self.id) {
            self.handback_from = None; // our range grew back: nothing to hand
            return;
        }
        if !self.links.is_up(pred) {
            return; // next round
        }
        self.handback_from = None;
        self.metrics.kv.anti_entropy_rounds += 1;
        let opening = merkle::open_round(&self.store, RingRange::new(start.0, pred.0));
        self.send(pred, &Message::Sync(opening));
    }

    /// Pulls the range we owned before new predecessors joined, `(start, self]`, from each
    /// replica successor, [`CATCH_UP_DELAY_MS`] after the last of them arrived. A leader whose
    /// view still lacks a newcomer keeps writing to the old set; we refuse those writes once
    /// we count the newcomer (`guard.rs`, `may_be_member`), so the old set's other members may
    /// hold an acknowledged write we lack, and a second join can move them out of the set
    /// (`sim-history --faults joins`, seed 997). Their answers are taken for the keys whose set
    /// can include us (`on_sync`).
    fn catch_up_round(&mut self, replicas: &[Id]) {
        let Some((start, due)) = self.catch_up else {
            return;
        };
        if self.now < due {
            self.timers.set_earlier(Timer::AntiEntropy, due);
            return;
        }
        self.catch_up = None;
        self.catch_up_rounds.clear();
        let range = RingRange::new(start.0, self.id.0);
        for member in replicas {
            if self.links.is_up(*member) {
                self.metrics.kv.anti_entropy_rounds += 1;
                self.catch_up_rounds.insert(*member, range);
                let opening = merkle::open_round(&self.store, range);
                self.send(*member, &Message::Sync(opening));
            }
        }
    }

    pub(super) fn on_sync(&mut self, from: PeerId, msg: SyncMsg) {
        // `merkle::handle` merges whatever entries of the message's range it gets, so only three
        // ranges are accepted, each from the peers entitled to it by our own view (`guard.rs`):
        // - ours, `(predecessor, self]` (answers within a round we opened): only from our replica
        //   successors, the peers we open rounds with;
        // - the sender's own primary range, which must lie behind us and not span our
        //   predecessor unless the sender is our predecessor (we replicate it), with fewer than
        //   k-1 known ring members between the sender and us (else we are not among its
        //   replicas) and no known member inside the range (else it is not the sender's own);
        // - a hand-back from our successor (see `hand_back`);
        // - answers within a catch-up round we opened with a replica successor
        //   (`catch_up_round`), over that round's range.
        let range = msg.range();
        let pred = self.ring.predecessor();
        let settles = range.to == self.id.0 && pred.map(|p| p.0) == Some(range.from);
        let ours = settles || self.provisional_range() == Some(range);
        let theirs = range.to == from.0
            && !range.contains(self.id.0)
            && pred.is_none_or(|p| p == from || !range.contains(p.0));
        let handed_back = range.to == self.id.0
            && (self.ring.successor() == from
                || (self.catch_up_rounds.get(&from) == Some(&range)
                    && self.replica_successors().contains(&from)));
        if !(ours || theirs || handed_back) {
            self.metrics.kv.anti_entropy_refused += 1;
            self.metrics.rejected.sync_bad_range += 1;
            return;
        }
        let entitled = if ours {
            self.replica_successors().contains(&from)
        } else if theirs {
            self.sync_sender_replicated_here(from)
        } else {
            // A hand-back comes from our successor, a member of our set; its entries are
            // stored for our own primary range only (below). Answers to our catch-up rounds
            // come from the replica successors we opened them with.
            true
        };
        if !entitled {
            self.metrics.kv.anti_entropy_refused += 1;
            if ours {
                self.metrics.rejected.sync_not_replica += 1;
            } else {
                self.metrics.rejected.sync_bad_range += 1;
            }
            return;
        }
        // Bounds (`guard.rs`): the messages that make us scan the store (an opening, summaries,
        // wants) are budgeted per link; entries are stored only with timestamps within the
        // bound taken when the frame arrived.
        let scans =
            matches!(msg, SyncMsg::Summaries { .. } | SyncMsg::Want { .. }) || msg.is_opening();
        if scans && !self.within_budget(from, crate::guard::Costly::Sync) {
            return;
        }
        let msg = match msg {
            SyncMsg::Entries {
                range,
                depth,
                entries,
            } => {
                // Entries outside the range are dropped by `merkle::handle`; only those inside
                // count, and one bound for the whole frame (`guard.rs`, `observe_remote`). A
                // peer's claim of its own range stores only what no known member contradicts.
                let bound = self.ts_bound();
                let catching_up = self.catch_up_rounds.get(&from) == Some(&range);
                let allowed = if ours {
                    range
                } else if !theirs && catching_up {
                    // Answers within our catch-up round reach behind our predecessor: its keys
                    // are stored when we can be in their set, filtered below.
                    range
                } else if !theirs {
                    // A hand-back from our successor: only our own primary range, whose set
                    // the successor is a member of. Keys behind our predecessor that a stand-in
                    // took while their whole set was down go back through their leader, as the
                    // stand-in's strays (`strays_round`; `tests/durable_restart.rs`): a
                    // successor outside their set cannot write into it.
                    match pred {
                        Some(p) if range.contains(p.0) => RingRange::new(p.0, self.id.0),
                        _ => range,
                    }
                } else {
                    self.uncontradicted(from, range)
                };
                let before_clip = entries.len();
                let entries: Vec<(String, crate::store::Entry)> = entries
                    .into_iter()
                    .filter(|(key, _)| {
                        let id = crate::store::key_id(key);
                        allowed.contains(id)
                            && (ours || theirs || self.may_be_member(Id(id), self.id))
                    })
                    .collect();
                self.metrics.rejected.sync_bad_range += u64::from(entries.len() < before_clip);
                let before = entries.len();
                let highest = entries.iter().map(|(_, e)| e.version.ts).max();
                let entries: Vec<(String, crate::store::Entry)> = entries
                    .into_iter()
                    .filter(|(_, entry)| entry.version.ts <= bound)
                    .collect();
                self.metrics.rejected.ts_out_of_bounds += (before - entries.len()) as u64;
                if let Some(highest) = highest {
                    self.clock.observe(highest.min(bound));
                }
                SyncMsg::Entries {
                    range,
                    depth,
                    entries,
                }
            }
            other => other,
        };
        match merkle::handle(&mut self.store, msg, self.now, &StepOptions::default()) {
            Ok(handled) => {
                if handled.in_sync {
                    self.on_range_equal(from, range, settles);
                }
                self.metrics.kv.anti_entropy_applied += handled.applied as u64;
                if handled.applied > 0 {
                    self.reset_anti_entropy();
                }
                for (key, entry) in handled.stored {
                    self.notify_watchers(&key, &entry);
                    self.out
                        .push_back(Output::event(Event::Stored { key, entry }));
                }
                for reply in handled.replies {
                    self.send(from, &Message::Sync(reply));
                }
            }
            Err(_) => self.metrics.kv.anti_entropy_refused += 1,
        }
    }

    /// Global maintenance (DHash's name for it: Dabek et al., NSDI 2004): every
    /// `strays_interval_ms`, the keys this node holds but whose replica set cannot include it
    /// as its view of the ring stands ("strays") are written back into the ring as
    /// [`KvAction::Restore`]s, through the hand-over queue (`replication.rs`, "Merging a ring
    /// of one"). Once a write quorum of the key's set holds that version or a newer one, the
    /// stray is not written again while it keeps that version (`strays_pushed`).
    ///
    /// Anti-entropy runs only within replica sets, so without this a copy left outside its set
    /// stays there unseen: joins move old holders out of a set, and when the members that
    /// took their place crash before they synced, the only live copy of an acknowledged write
    /// sits with a peer that nobody asks (`chord-experiment --mode sim-churn --nodes 64
    /// --rates 2 --seed 5` lost 30 writes so, each with one live holder outside the set).
    ///
    /// The copy is kept: a stray whose set later shrinks back to include it (the newcomers
    /// that displaced it crash) serves again at once, and over 11 churn seeds dropping copies
    /// after the write-back lost more writes than keeping them (docs/design.md, "Strays").
    /// Keeping them also keeps the caveat of "Tombstone collection" in `replication.rs`: a
    /// stray that re-enters a set after the grace period can bring back a collected delete.
    ///
    /// Which keys are strays: those in `(self, q]`, `q` being the k-th known member before us
    /// (`is_stray`). Our pointers name our predecessor but not the peers before it, so each
    /// round also asks the predecessor for them ([`Message::GetPreds`]; two rounds to learn
    /// k = 3). A view that lacks members only makes the range smaller (we push less), and one
    /// that still names a dead member makes us push a key we replicate, which costs one
    /// request.
    pub(super) fn strays_round(&mut self) {
        let interval = self.config.strays_interval_ms;
        if interval == 0 {
            self.timers.stop(Timer::Strays);
            return;
        }
        self.timers.set(Timer::Strays, self.now + interval);
        if self.repl.handover_busy() || !self.is_joined() || !self.successors_known {
            return;
        }
        // Our pointers name the predecessor but none of the peers before it: ask it for them,
        // for this round's successor.
        if let Some(pred) = self.ring.predecessor() {
            self.ask_preds(pred);
        }
        let Some(range) = self.stray_range() else {
            return;
        };
        // Forget the write-backs of keys that changed or came back into one of our sets.
        let pushed = std::mem::take(&mut self.strays_pushed);
        self.strays_pushed = pushed
            .into_iter()
            .filter(|(key, version)| {
                self.store.get(key).is_some_and(|e| &e.version == version)
                    && (self.known_preds().is_empty() || self.is_stray(Id::of_key(key)))
            })
            .collect();
        let strays: Vec<(String, u8)> = self
            .store
            .range(range)
            .filter(|r| {
                self.is_stray(Id(r.id)) && self.strays_pushed.get(r.key) != Some(&r.entry.version)
            })
            .take(MAX_STRAYS_PER_ROUND)
            .map(|r| (r.key.to_string(), 0))
            .collect();
        if strays.is_empty() {
            return;
        }
        self.metrics.kv.handover_keys += strays.len() as u64;
        self.repl.queue_strays(strays);
        self.continue_handover();
    }

    /// The keys whose replica set cannot include us, `(self, q]` (see [`Self::strays_round`]),
    /// or `None` while we know fewer than k other members.
    fn stray_range(&self) -> Option<RingRange> {
        let k = self.config.replicas.max(1);
        let mut behind: Vec<Id> = self
            .ring
            .pointed_peers()
            .iter()
            .chain(self.known_preds())
            .copied()
            .filter(|p| *p != self.id)
            .collect();
        behind.sort_unstable_by_key(|p| p.distance_to(self.id));
        behind.dedup();
        let q = behind.get(k - 1)?;
        Some(RingRange::new(self.id.0, q.0))
    }

    /// A hand-over write of `key` at `version` was acknowledged: a write quorum of its set
    /// holds it or something newer. If it is a stray, it is not written back again while it
    /// stays one at that version (see [`Self::strays_round`]). Right after a join (whose
    /// hand-over writes back every key) the peers before our predecessor are not known yet,
    /// so the write-back is remembered until a round can tell. The caller checked that the
    /// store still holds `version` (`Replicator::handover_done`, `Effect::StrayPushed`).
    pub(crate) fn stray_pushed(&mut self, key: &str, version: &crate::store::Version) {
        if self.known_preds().is_empty() || self.is_stray(Id::of_key(key)) {
            self.strays_pushed.insert(key.to_string(), version.clone());
        }
    }

    /// Whether the replica set of the key with id `key` cannot include us: k known members,
    /// the peers before our predecessor included, lie in `[key, self)` (compare
    /// `may_be_member`, which counts our pointers only).
    pub(crate) fn is_stray(&self, key: Id) -> bool {
        let preds = self.known_preds().to_vec();
        self.known_in(key, self.id, &preds) >= self.config.replicas.max(1)
    }

    /// The peers before our predecessor, as our current predecessor named them.
    fn known_preds(&self) -> &[Id] {
        match self.ring.predecessor() {
            Some(pred) => self.preds_named_by(pred),
            None => &[],
        }
    }

    /// The peers before `p` as `p` named them, if our last `Preds` answer came from `p`.
    pub(super) fn preds_named_by(&self, p: PeerId) -> &[Id] {
        match &self.pred_list {
            (Some(from), list) if *from == p => list,
            _ => &[],
        }
    }

    /// Asks our predecessor for the peers before it (`on_preds`), if a link to it is open.
    /// One question at a time: an answer to an older nonce would count as unexpected.
    pub(super) fn ask_preds(&mut self, pred: PeerId) {
        let outstanding = self.pred_list_nonce.is_some_and(|(p, _)| p == pred)
            && self.now < self.pred_list_asked.saturating_add(PREDS_ANSWER_MS);
        if self.links.is_up(pred) && !outstanding {
            let nonce = self.rng.next_u64() >> 11;
            self.pred_list_nonce = Some((pred, nonce));
            self.pred_list_asked = self.now;
            self.send(pred, &Message::GetPreds { nonce });
        }
    }

    /// A peer asks for our predecessors (it is, or thinks it is, our successor).
    pub(super) fn on_get_preds(&mut self, from: PeerId, nonce: u64) {
        let Some(pred) = self.ring.predecessor().filter(|_| self.is_joined()) else {
            self.metrics.chord.unexpected_messages += 1;
            return;
        };
        let k = self.config.replicas.max(1);
        let preds: Vec<Id> = std::iter::once(pred)
            .chain(self.known_preds().iter().copied())
            .filter(|p| *p != from)
            .take(k)
            .collect();
        self.send(from, &Message::Preds { nonce, preds });
    }

    /// Our predecessor's answer to [`Message::GetPreds`]. A predecessor that lies can make us
    /// take keys of our sets for strays: each is written back to its set and our copy dropped
    /// only once a write quorum holds it, and anti-entropy brings it back (docs/threat-model.md).
    pub(super) fn on_preds(&mut self, from: PeerId, nonce: u64, preds: &[Id]) {
        if self.pred_list_nonce != Some((from, nonce)) || self.ring.predecessor() != Some(from) {
            self.metrics.chord.unexpected_messages += 1;
            return;
        }
        self.pred_list_nonce = None;
        let k = self.config.replicas.max(1);
        let mut list: Vec<Id> = Vec::new();
        // Closest first, each further back than the one before; anything else is dropped.
        let mut last = from;
        for p in preds {
            if list.len() + 1 >= k || *p == self.id || !p.in_open(self.id, last) {
                break;
            }
            list.push(*p);
            last = *p;
        }
        self.pred_list = (Some(from), list);
    }

    /// Whether `from`, sending its own primary range, can have us among its replica
    /// successors: fewer than k-1 known ring members lie between it and us.
    fn sync_sender_replicated_here(&self, from: PeerId) -> bool {
        let k1 = self.config.replicas.saturating_sub(1).max(1);
        let known = || std::iter::once(self.id).chain(self.ring.pointed_peers().iter().copied());
        known().filter(|p| p.in_open(from, self.id)).count() < k1
    }

    /// The part of `range` (a peer's claim of its own primary range) that no known ring member
    /// contradicts: `(q, range.to]` for the known member `q` inside the range closest before
    /// its end. A sender whose view lags (it restarted, a peer joined behind it) claims too
    /// wide a range; only the entries we may be entitled to are stored, the rest of the round
    /// (which only makes us send) goes on (`on_sync`).
    fn uncontradicted(&self, from: PeerId, range: RingRange) -> RingRange {
        let closest = std::iter::once(self.id)
            .chain(self.ring.pointed_peers().iter().copied())
            .filter(|p| *p != from && range.contains(p.0))
            .min_by_key(|p| p.distance_to(from));
        match closest {
            Some(q) => RingRange::new(q.0, range.to),
            None => range,
        }
    }

    /// Runs an anti-entropy round within [`SETTLE_ROUND_MS`]: the replica set of our range
    /// changed, and a new member holds none of it yet.
    pub(super) fn repair_soon(&mut self) {
        if self.is_joined() {
            self.anti_entropy_interval = self.config.anti_entropy_min_interval_ms;
            self.timers
                .set_earlier(Timer::AntiEntropy, self.now + SETTLE_ROUND_MS);
        }
    }

    /// A round over `range` with `from` found both stores equal.
    pub(super) fn on_range_equal(&mut self, from: PeerId, range: RingRange, ours: bool) {
        if ours {
            if let Some(opened) = self.rounds_opened.remove(&from) {
                self.equal_since.insert(from, (opened, range));
            }
            if self.replica_successors().contains(&from) {
                self.settled_members.insert(from);
                self.equal_with.insert(from);
            }
            // Our own store: a round with every replica successor ended equal since our
            // range last changed (`equal_with` is cleared then), not merely every member
            // settled: a member kept as settled after our predecessor left still holds writes
            // of the range we took over that we may lack (`sim-history --faults mixed --seed
            // 2457` with gets answered from the owner's copy: a delete acknowledged by the
            // leaver and that member was missing from us and from the new member synced from
            // us, and the two answered a get).
            let replicas = self.replica_successors();
            if replicas.iter().all(|m| self.equal_with.contains(m)) {
                self.own_settled = true;
                self.fence_on_settled();
                self.adopting = false;
            }
        } else if self.ring.predecessor() == Some(from) && range.to == from.0 {
            self.pred_settled = true;
        }
        self.fence_check();
    }

    /// The first k-1 successors: the other members of our primary range's replica set.
    pub(crate) fn replica_successors(&self) -> Vec<Id> {
        crate::replication::replica_successors(self.ring.successors(), self.config.replicas)
    }

    /// Whether this node may still lack writes of ranges it replicates (it started, joined or
    /// took over a range and has not synced since): its replica answers then do not count.
    pub(crate) fn is_fresh(&self) -> bool {
        !(self.own_settled && (self.pred_settled || self.ring.predecessor().is_none()))
    }
}
