//! Ring state: predecessor, successor list and finger table, with the pure rules that update them.
//!
//! Follows the Chord paper (Stoica et al., SIGCOMM 2001, Fig. 6-7; ToN 2003 section IV-E for the
//! successor list): `successor_list[0]` is the successor, `fingers[i]` is the successor of
//! `id + 2^i`. Deviations, all in the direction of fewer messages:
//! - one finger lookup also fills every later finger whose start falls before the answer (the
//!   paper's own join optimisation, applied on every refresh);
//! - when every successor has failed the node falls back to the closest known peer after it
//!   (a finger) instead of giving up, and stabilization walks back to the true successor.
//!
//! Fingers may be in a base `b` above 2 (`Config::finger_base`; [`crate::id::finger_offsets`]):
//! finger `i` is then the successor of `id + j·b^level`, so one hop divides the distance by `b`
//! instead of 2 (ToN 2003, section V-F). Beside each exact finger the state may hold a *near*
//! finger ([`RingState::set_near`]): another member of the same interval
//! `[start_i, start_{i+1})` that the node measured closer in round-trip time (proximity
//! neighbour selection, Gummadi et al., SIGCOMM 2003; Dabek et al., NSDI 2004). Routing may
//! use either (any member of the interval divides the distance as well); only the exact
//! finger answers "who owns this key" (`known_owner`), since only it is the successor of its
//! start.
//!
//! Each linked finger (exact, or near when it is asked at the end of a sweep) also reports
//! its successor list (the `Neighbors` answer of the finger check).
//! [`RingState::lookup_owner`] uses those lists to end a lookup one hop early: a key just
//! after a finger is owned by one of that finger's successors
//! (successor lists of fingers, as DHash++'s lookups end at the key's predecessor's list;
//! docs/design.md section 4). These lists are hearsay and only ever name a lookup's answer;
//! no link, pointer or store decision uses them.

use crate::id::{Id, finger_offsets};

/// Pointers of one node.
#[derive(Debug, Clone)]
pub struct RingState {
    me: Id,
    max_successors: usize,
    predecessor: Option<Id>,
    successors: Vec<Id>,
    /// Distance from `me` to each finger's start, ascending ([`finger_offsets`]).
    offsets: Vec<u32>,
    fingers: Vec<Option<Id>>,
    /// Near fingers (proximity picks), by finger index; `None` where the exact one serves.
    near: Vec<Option<Id>>,
    /// Sorted, deduplicated union of the pointers (rebuilt on every change; read per message).
    pointed: Vec<Id>,
    /// The successor list each finger (exact or near) reported at its last check, by finger
    /// peer (at most one entry per distinct finger; dropped when the peer stops being one).
    finger_succs: Vec<(Id, Vec<Id>)>,
}

/// What changed after an update, so the node can emit events and refresh links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changed {
    pub successor: bool,
    pub predecessor: bool,
}

impl RingState {
    /// Chord's fingers (base 2).
    pub fn new(me: Id, max_successors: usize) -> Self {
        Self::with_finger_base(me, max_successors, 2)
    }

    /// Fingers in base `finger_base` ([`finger_offsets`]).
    pub fn with_finger_base(me: Id, max_successors: usize, finger_base: u32) -> Self {
        let offsets = finger_offsets(finger_base);
        Self {
            me,
            max_successors: max_successors.max(1),
            predecessor: None,
            successors: Vec::new(),
            fingers: vec![None; offsets.len()],
            near: vec![None; offsets.len()],
            offsets,
            pointed: Vec::new(),
            finger_succs: Vec::new(),
        }
    }

    /// Number of finger entries (32 in base 2; entries may share a peer).
    pub fn finger_count(&self) -> usize {
        self.offsets.len()
    }

    /// Where finger `i`'s interval starts: `me + offset_i`.
    pub fn finger_start(&self, i: usize) -> Id {
        self.me.plus(self.offsets[i])
    }

    /// Whether `peer` lies in finger `i`'s interval `[start_i, start_{i+1})` (the last one
    /// ends at the node itself).
    pub fn in_finger_interval(&self, i: usize, peer: Id) -> bool {
        let d = self.me.distance_to(peer);
        d >= self.offsets[i] && self.offsets.get(i + 1).is_none_or(|next| d < *next) && d != 0
    }

    /// The near finger picked for interval `i`, if any.
    pub fn near(&self, i: usize) -> Option<Id> {
        self.near[i]
    }

    /// The peer routing and links use for finger `i`: the near one when picked, else the
    /// exact one.
    pub fn routing_finger(&self, i: usize) -> Option<Id> {
        self.near[i].or(self.fingers[i])
    }

    /// Picks `peer` (a member of interval `i`, measured closer than the exact finger) as
    /// finger `i`'s near finger, or drops the pick (`None`). Returns whether it changed.
    pub fn set_near(&mut self, i: usize, peer: Option<Id>) -> bool {
        let peer = peer.filter(|p| *p != self.me && self.in_finger_interval(i, *p));
        if self.near[i] == peer {
            return false;
        }
        self.near[i] = peer;
        self.refresh();
        true
    }

    pub fn me(&self) -> Id {
        self.me
    }

    /// The successor; the node itself when it is alone.
    pub fn successor(&self) -> Id {
        self.successors.first().copied().unwrap_or(self.me)
    }

    pub fn successors(&self) -> &[Id] {
        &self.successors
    }

    pub fn predecessor(&self) -> Option<Id> {
        self.predecessor
    }

    pub fn finger(&self, i: usize) -> Option<Id> {
        self.fingers[i]
    }

    pub fn fingers(&self) -> &[Option<Id>] {
        &self.fingers
    }

    /// Forgets everything (a node that leaves, or restarts its join).
    pub fn clear(&mut self) {
        self.predecessor = None;
        self.successors.clear();
        self.fingers.fill(None);
        self.near.fill(None);
        self.pointed.clear();
        self.finger_succs.clear();
    }

    /// Every peer the node points at (successors, predecessor, fingers): sorted, deduplicated.
    pub fn pointed_peers(&self) -> &[Id] {
        &self.pointed
    }

    pub fn is_pointed(&self, peer: Id) -> bool {
        self.pointed.binary_search(&peer).is_ok()
    }

    fn refresh(&mut self) {
        self.pointed.clear();
        self.pointed.extend(
            self.successors
                .iter()
                .copied()
                .chain(self.predecessor)
                .chain(self.fingers.iter().flatten().copied())
                .chain(self.near.iter().flatten().copied())
                .filter(|p| *p != self.me),
        );
        self.pointed.sort_unstable();
        self.pointed.dedup();
        let mut lists = std::mem::take(&mut self.finger_succs);
        lists.retain(|(f, _)| self.is_finger(*f));
        self.finger_succs = lists;
    }

    /// Whether `peer` is an exact or a near finger.
    fn is_finger(&self, peer: Id) -> bool {
        self.fingers.contains(&Some(peer)) || self.near.contains(&Some(peer))
    }

    /// Drops what `finger` reported (it is no longer checked over a link).
    pub fn forget_finger_succs(&mut self, finger: Id) {
        self.finger_succs.retain(|(f, _)| *f != finger);
    }

    /// Records the successor list `finger` (an exact or a near finger) reported. Kept: the
    /// prefix that runs on around the ring from the finger without passing this node, at most
    /// `max_successors` long.
    pub fn set_finger_succs(&mut self, finger: Id, succs: &[Id]) {
        if !self.is_finger(finger) {
            return;
        }
        let mut list = Vec::with_capacity(self.max_successors);
        let mut last = 0u32;
        let limit = finger.distance_to(self.me);
        for s in succs.iter().take(self.max_successors) {
            let d = finger.distance_to(*s);
            if d <= last || d >= limit {
                break;
            }
            list.push(*s);
            last = d;
        }
        match self.finger_succs.iter_mut().find(|(f, _)| *f == finger) {
            Some((_, old)) => *old = list,
            None => self.finger_succs.push((finger, list)),
        }
    }

    /// Replaces the successor list with `first` followed by `rest` (the successor's own list),
    /// dropping the node itself and duplicates, bounded to `max_successors`.
    pub fn set_successors(&mut self, first: Id, rest: &[Id]) -> Changed {
        let old = self.successor();
        let mut list = Vec::with_capacity(self.max_successors);
        for id in std::iter::once(first).chain(rest.iter().copied()) {
            if id != self.me && !list.contains(&id) {
                list.push(id);
                if list.len() == self.max_successors {
                    break;
                }
            }
        }
        self.successors = list;
        self.refresh();
        Changed {
            successor: self.successor() != old,
            predecessor: false,
        }
    }

    /// Puts `peer` first when it lies between the node and its current successor.
    pub fn offer_successor(&mut self, peer: Id) -> Changed {
        if peer == self.me || !peer.in_open(self.me, self.successor()) {
            return Changed::default();
        }
        let rest = self.successors.clone();
        self.set_successors(peer, &rest)
    }

    /// Chord's `notify`: accepts `peer` as predecessor when it is closer than the current one.
    pub fn offer_predecessor(&mut self, peer: Id) -> Changed {
        if peer == self.me {
            return Changed::default();
        }
        let closer = match self.predecessor {
            None => true,
            Some(p) => peer.in_open(p, self.me),
        };
        if closer {
            self.predecessor = Some(peer);
            self.refresh();
        }
        Changed {
            successor: false,
            predecessor: closer,
        }
    }

    pub fn clear_predecessor(&mut self) -> Changed {
        let had = self.predecessor.take().is_some();
        self.refresh();
        Changed {
            successor: false,
            predecessor: had,
        }
    }

    pub fn set_predecessor(&mut self, peer: Option<Id>) -> Changed {
        let peer = peer.filter(|p| *p != self.me);
        let changed = self.predecessor != peer;
        self.predecessor = peer;
        self.refresh();
        Changed {
            successor: false,
            predecessor: changed,
        }
    }

    /// Removes a failed or departed peer from every pointer. When the successor list empties, the
    /// closest remaining finger after the node stands in (stabilization walks back from there).
    pub fn remove_peer(&mut self, peer: Id) -> Changed {
        let old_successor = self.successor();
        self.successors.retain(|p| *p != peer);
        let mut changed = Changed::default();
        if self.predecessor == Some(peer) {
            self.predecessor = None;
            changed.predecessor = true;
        }
        for f in self.fingers.iter_mut().chain(self.near.iter_mut()) {
            if *f == Some(peer) {
                *f = None;
            }
        }
        if self.successors.is_empty() {
            let me = self.me;
            let fallback = self
                .fingers
                .iter()
                .flatten()
                .copied()
                .chain(self.predecessor)
                .filter(|p| *p != me)
                .min_by_key(|p| me.distance_to(*p));
            if let Some(f) = fallback {
                self.successors.push(f);
            }
        }
        changed.successor = self.successor() != old_successor;
        self.refresh();
        changed
    }

    /// Records that the owner of finger `i`'s start is `owner`, and fills every following finger
    /// whose start also falls in `[start_i, owner]` (they share the answer). Returns the next
    /// finger index still to look up (`finger_count()` when the sweep is complete) and whether any
    /// finger changed.
    pub fn set_finger(&mut self, i: usize, owner: Id) -> (usize, bool) {
        let start_i = self.finger_start(i);
        let mut changed = false;
        let mut j = i;
        while j < self.finger_count() {
            let start_j = self.finger_start(j);
            if j != i && !start_j.in_closed(start_i, owner) {
                break;
            }
            // A finger equal to the node itself carries no information (lone node).
            let value = (owner != self.me).then_some(owner);
            if self.fingers[j] != value {
                self.fingers[j] = value;
                changed = true;
            }
            j += 1;
        }
        if changed {
            self.refresh();
        }
        (j, changed)
    }

    /// The owner of `key` when this node can tell it from its own pointers, without asking:
    /// the node itself (key in `(predecessor, me]`), the successor (key in `(me, successor]`),
    /// a later successor, or (with `use_fingers`) a finger whose start precedes the key with
    /// nobody in between. Finger refresh passes `false` so a stale finger cannot confirm itself.
    pub fn known_owner(&self, key: Id, use_fingers: bool) -> Option<Id> {
        let me = self.me;
        if self.successors.is_empty() {
            // Alone (or not yet joined): owner of everything only when truly alone.
            return self.predecessor.is_none().then_some(me);
        }
        if let Some(p) = self.predecessor
            && key.in_half_open(p, me)
        {
            return Some(me);
        }
        let mut prev = me;
        for s in &self.successors {
            if key.in_half_open(prev, *s) {
                return Some(*s);
            }
            prev = *s;
        }
        if !use_fingers {
            return None;
        }
        for (i, finger) in self.fingers.iter().enumerate() {
            if let Some(f) = *finger
                && key.in_closed(self.finger_start(i), f)
            {
                return Some(f);
            }
        }
        None
    }

    /// The owner of `key` for a lookup's answer: [`Self::known_owner`] with fingers, else a
    /// member of a finger's reported successor list (`key` in `(finger, s_1]`, `(s_1, s_2]`,
    /// ...). Only lookups use this: it saves the hop to the finger, whose own successor list
    /// answers the same way. A list is as fresh as the finger's last check, so in a churning
    /// ring it may name a peer that left or miss one that joined, as a finger may.
    pub fn lookup_owner(&self, key: Id) -> Option<Id> {
        if let Some(owner) = self.known_owner(key, true) {
            return Some(owner);
        }
        for (finger, succs) in &self.finger_succs {
            let mut prev = *finger;
            for s in succs {
                if key.in_half_open(prev, *s) {
                    // A peer this node points at inside `(prev, s)` would own the key or sit
                    // before it: the list is older than our own pointers.
                    if !self.pointed.iter().any(|p| p.in_open(prev, *s)) {
                        return Some(*s);
                    }
                    break;
                }
                prev = *s;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_list_is_bounded_and_skips_self() {
        let mut r = RingState::new(Id(10), 3);
        r.set_successors(Id(20), &[Id(30), Id(10), Id(30), Id(40), Id(50)]);
        assert_eq!(r.successors(), &[Id(20), Id(30), Id(40)]);
    }

    #[test]
    fn finger_fill_shares_answers() {
        let mut r = RingState::new(Id(0), 3);
        // owner of 1 is 100: fingers 0..=6 (starts 1,2,4,...,64) all map to 100.
        let (next, changed) = r.set_finger(0, Id(100));
        assert!(changed);
        assert_eq!(next, 7);
        assert_eq!(r.finger(6), Some(Id(100)));
        assert_eq!(r.finger(7), None);
    }

    #[test]
    fn fallback_successor_after_total_loss() {
        let mut r = RingState::new(Id(0), 2);
        r.set_successors(Id(10), &[Id(20)]);
        r.set_finger(10, Id(5000));
        r.remove_peer(Id(10));
        r.remove_peer(Id(20));
        assert_eq!(r.successor(), Id(5000));
    }

    #[test]
    fn finger_lists_answer_lookups_past_the_finger() {
        let mut r = RingState::new(Id(0), 2);
        r.set_successors(Id(10), &[Id(20)]);
        // Peer 1000 is fingers 5..=9 (starts 32..=512); its own list follows it.
        r.set_finger(5, Id(1_000));
        assert_eq!(r.lookup_owner(Id(1_500)), None);
        // Out of order and passing us are cut off; only the first `max_successors` count.
        r.set_finger_succs(Id(1_000), &[Id(2_000), Id(3_000), Id(4_000)]);
        assert_eq!(r.lookup_owner(Id(1_500)), Some(Id(2_000)));
        assert_eq!(r.lookup_owner(Id(3_000)), Some(Id(3_000)));
        assert_eq!(r.lookup_owner(Id(3_500)), None);
        // `known_owner` (stores, replication) never uses them.
        assert_eq!(r.known_owner(Id(1_500), true), None);
        r.set_finger_succs(Id(1_000), &[Id(2_000), Id(1_500)]);
        assert_eq!(r.lookup_owner(Id(2_500)), None);
        // A finger of our own inside a listed gap means the list is stale there.
        r.set_finger_succs(Id(1_000), &[Id(4_000)]);
        r.set_finger(11, Id(2_100));
        assert_eq!(r.lookup_owner(Id(3_000)), None);
        // A peer that is no finger any more takes its list with it.
        r.remove_peer(Id(1_000));
        r.remove_peer(Id(2_100));
        assert_eq!(r.lookup_owner(Id(1_500)), None);
        // Only fingers report lists, near ones too.
        r.set_finger_succs(Id(5_000), &[Id(6_000)]);
        assert_eq!(r.lookup_owner(Id(5_500)), None);
        r.set_finger(12, Id(4_500));
        assert!(r.set_near(12, Some(Id(5_000))));
        r.set_finger_succs(Id(5_000), &[Id(6_000)]);
        assert_eq!(r.lookup_owner(Id(5_500)), Some(Id(6_000)));
        assert!(r.set_near(12, None));
        assert_eq!(r.lookup_owner(Id(5_500)), None);
    }
}
