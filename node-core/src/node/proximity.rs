//! Proximity neighbour selection as methods of [`Node`] (`Config::proximity_fingers`): round
//! trips from finger checks and pings, candidates from the checked finger's successor list,
//! trials, and the pick (the state and the rule are in `crate::proximity`).

use super::*;

impl Node {
    /// A finger check came back from `finger` (sent at `since`): its round trip, and the members
    /// of finger `i`'s interval that its successor list names become candidates.
    pub(super) fn proximity_on_check(&mut self, i: usize, finger: Id, since: Time, succs: &[Id]) {
        if !self.config.proximity_fingers {
            return;
        }
        let now = self.now;
        self.proximity
            .record(finger, now.saturating_sub(since), now);
        for s in succs.iter().take(self.config.successor_list_len) {
            if *s != self.id && self.ring.in_finger_interval(i, *s) && !self.failed_lately(*s) {
                self.proximity.offer(i, *s);
            }
        }
        self.choose_near(i);
    }

    /// Starts measuring the next candidates (each heartbeat): a ping over an open link, or a
    /// link first (its `PeerUp` sends the ping).
    pub(super) fn proximity_trials(&mut self) {
        if !self.config.proximity_fingers || !self.is_joined() {
            return;
        }
        let timeout = self.config.connect_timeout_ms + self.config.lookup_attempt_timeout_ms;
        for (_, peer) in self.proximity.next_trials(self.now, timeout) {
            if self.links.is_up(peer) {
                self.ping_for_rtt(peer);
            } else {
                self.ensure_link(peer, false);
            }
        }
    }

    /// Sends a ping whose pong measures the round trip to `peer`.
    pub(super) fn ping_for_rtt(&mut self, peer: PeerId) {
        let nonce = self.rng.next_u64() >> 11;
        self.proximity.ping_sent(nonce, peer, self.now);
        self.send(peer, &Message::Ping { nonce });
    }

    /// A link opened: a candidate being measured gets its ping.
    pub(super) fn proximity_on_up(&mut self, peer: PeerId) {
        if self.config.proximity_fingers && self.proximity.is_trial(peer) {
            self.ping_for_rtt(peer);
        }
    }

    pub(super) fn on_pong(&mut self, from: PeerId, nonce: u64) {
        if let Some(Some(i)) = self.proximity.pong(from, nonce, self.now) {
            self.choose_near(i);
        }
    }

    /// Finger `i`'s near finger: the measured member of its interval with the lowest round trip,
    /// if lower than the exact finger's ([`crate::proximity::pick_near`]).
    pub(super) fn choose_near(&mut self, i: usize) {
        let exact = self
            .ring
            .finger(i)
            .filter(|f| self.ring.in_finger_interval(i, *f))
            .and_then(|f| self.proximity.rtt(f).map(|rtt| (f, rtt)));
        let near = crate::proximity::pick_near(
            exact,
            self.proximity
                .measured()
                .filter(|(p, _)| self.ring.in_finger_interval(i, *p) && !self.failed_lately(*p)),
        );
        if self.ring.set_near(i, near)
            && let Some(near) = near
        {
            self.ensure_link(near, false);
        }
    }

    /// The near fingers in use, by finger index (for tests and tools).
    pub fn near_fingers(&self) -> Vec<(usize, Id)> {
        (0..self.ring.finger_count())
            .filter_map(|i| self.ring.near(i).map(|p| (i, p)))
            .collect()
    }

    /// The round trip this node measured to `peer`, if any (`Config::proximity_fingers`).
    pub fn measured_rtt(&self, peer: PeerId) -> Option<u64> {
        self.proximity.rtt(peer)
    }
}
