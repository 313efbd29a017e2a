//! Link management: which data channels the node holds, wants, and gives up.
//!
//! A browser tab cannot hold hundreds of RTCPeerConnections, and a browser cannot reach an
//! arbitrary address, so the core decides which peers it needs links to (successors, predecessor,
//! fingers) and asks the driver to `Connect`/`Disconnect`. Links are bounded by `max_links`: when
//! over the bound, links the ring does not point at are closed, least recently used first.
//! A failed connect backs off exponentially per peer so an unreachable peer costs little.
//!
//! A link whose driver keeps refusing frames (`Input::SendFailed`: its send queue is full, or a
//! tab's `bufferedAmount` is above its mark) is unhealthy like a silent one: after
//! [`SEND_FAILURES_UNHEALTHY`] refusals, each within [`SEND_FAILURE_GAP_MS`] of the one before,
//! the node closes it as it closes a link whose peer stopped answering heartbeats.

use crate::Time;
use crate::id::Id;
use std::collections::BTreeMap;
use std::fmt;

/// This many refused sends in a row (see [`SEND_FAILURE_GAP_MS`]) make a link unhealthy: 64
/// frames lost in a row is more than any burst the node sends to one peer (an anti-entropy
/// reply is at most about 1 MiB, 16 frames of 64 KiB) on a link whose queue drains.
pub const SEND_FAILURES_UNHEALTHY: u32 = 64;

/// Refused sends further apart than this start a new streak: the queue drained in between.
pub const SEND_FAILURE_GAP_MS: u64 = 1_000;

/// State of one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// `Connect` was emitted; waiting for the driver's `PeerUp` or `PeerDown`.
    Connecting { since: Time },
    /// The data channel is open.
    Up {
        since: Time,
        /// The peer said it is a ring member (its `Hello` had `joined`); only members route.
        in_ring: bool,
        /// Last frame received from the peer.
        last_heard: Time,
        /// Last frame sent or received (for least-recently-used pruning).
        last_used: Time,
        /// The peer answered our `Bye` with `Keep`: it needs this link, do not offer to close it.
        peer_needs: bool,
        /// We sent `Bye` and wait for the answer.
        closing: bool,
        /// Sends the driver refused in the current streak, and when the last one was.
        send_failures: u32,
        last_send_failure: Time,
    },
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Time,
    delay: u64,
}

/// The node's links.
#[derive(Debug, Clone, Default)]
pub struct Links {
    links: IdMap<LinkState>,
    backoff: BTreeMap<Id, Backoff>,
}

/// A small map ordered by id, as two sorted vectors: ids apart from values, so a lookup's binary
/// search reads a few cache lines of ids, and a walk over the links (routing, every forwarded
/// message) reads two contiguous arrays instead of chasing B-tree nodes. A node holds at most
/// `max_links` (64) links. Iterates in id order, as the `BTreeMap` it replaces did.
#[derive(Clone)]
struct IdMap<V> {
    ids: Vec<Id>,
    vals: Vec<V>,
}

impl<V> IdMap<V> {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn get(&self, id: &Id) -> Option<&V> {
        self.ids.binary_search(id).ok().map(|i| &self.vals[i])
    }

    fn get_mut(&mut self, id: &Id) -> Option<&mut V> {
        self.ids.binary_search(id).ok().map(|i| &mut self.vals[i])
    }

    fn contains_key(&self, id: &Id) -> bool {
        self.ids.binary_search(id).is_ok()
    }

    fn insert(&mut self, id: Id, val: V) -> Option<V> {
        match self.ids.binary_search(&id) {
            Ok(i) => Some(std::mem::replace(&mut self.vals[i], val)),
            Err(i) => {
                self.ids.insert(i, id);
                self.vals.insert(i, val);
                None
            }
        }
    }

    fn remove(&mut self, id: &Id) -> Option<V> {
        let i = self.ids.binary_search(id).ok()?;
        self.ids.remove(i);
        Some(self.vals.remove(i))
    }

    fn iter(&self) -> impl Iterator<Item = (&Id, &V)> + '_ {
        self.ids.iter().zip(&self.vals)
    }

    fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.vals.iter()
    }
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        Self {
            ids: Vec::new(),
            vals: Vec::new(),
        }
    }
}

impl<V: fmt::Debug> fmt::Debug for IdMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Links {
    pub fn get(&self, peer: Id) -> Option<LinkState> {
        self.links.get(&peer).copied()
    }

    pub fn is_up(&self, peer: Id) -> bool {
        matches!(self.links.get(&peer), Some(LinkState::Up { .. }))
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub fn up_count(&self) -> usize {
        self.links
            .values()
            .filter(|l| matches!(l, LinkState::Up { .. }))
            .count()
    }

    /// Peers with an open link that are ring members: the candidates for routing.
    pub fn ring_members(&self) -> impl Iterator<Item = Id> + '_ {
        self.links.iter().filter_map(|(id, l)| match l {
            LinkState::Up { in_ring: true, .. } => Some(*id),
            _ => None,
        })
    }

    /// Peers with an open link that are ring members or that `pointed` vouches for (the ring
    /// points at them): the candidates for routing.
    pub fn up_ring_members<'a>(
        &'a self,
        pointed: impl Fn(Id) -> bool + 'a,
    ) -> impl Iterator<Item = Id> + 'a {
        self.links.iter().filter_map(move |(id, l)| match l {
            LinkState::Up { in_ring, .. } if *in_ring || pointed(*id) => Some(*id),
            _ => None,
        })
    }

    /// Every peer with an open link.
    pub fn up_peers(&self) -> impl Iterator<Item = Id> + '_ {
        self.links.iter().filter_map(|(id, l)| match l {
            LinkState::Up { .. } => Some(*id),
            _ => None,
        })
    }

    /// Whether a `Connect` may be emitted now for `peer` (not linked, not backing off).
    pub fn may_connect(&self, peer: Id, now: Time) -> bool {
        !self.links.contains_key(&peer) && self.backoff.get(&peer).is_none_or(|b| now >= b.until)
    }

    /// Until when connecting to `peer` is held back, if it is.
    pub fn backoff_until(&self, peer: Id) -> Option<Time> {
        self.backoff.get(&peer).map(|b| b.until)
    }

    pub fn start_connecting(&mut self, peer: Id, now: Time) {
        self.links
            .insert(peer, LinkState::Connecting { since: now });
    }

    /// Forgets a peer's backoff (it just proved reachable, or is worth a fresh probe).
    pub fn clear_backoff(&mut self, peer: Id) {
        self.backoff.remove(&peer);
    }

    pub fn up(&mut self, peer: Id, now: Time) {
        self.links.insert(
            peer,
            LinkState::Up {
                since: now,
                in_ring: false,
                last_heard: now,
                last_used: now,
                peer_needs: false,
                closing: false,
                send_failures: 0,
                last_send_failure: now,
            },
        );
        self.backoff.remove(&peer);
    }

    /// The driver could not queue a frame for `peer`: the length of the current streak of
    /// refusals (module docs), or `None` when no link to `peer` is up.
    pub fn send_failed(&mut self, peer: Id, now: Time) -> Option<u32> {
        let Some(LinkState::Up {
            send_failures,
            last_send_failure,
            ..
        }) = self.links.get_mut(&peer)
        else {
            return None;
        };
        if *send_failures > 0 && now.saturating_sub(*last_send_failure) > SEND_FAILURE_GAP_MS {
            *send_failures = 0;
        }
        *send_failures += 1;
        *last_send_failure = now;
        Some(*send_failures)
    }

    /// Removes a link; a link that never opened starts (or doubles) the peer's backoff.
    pub fn down(
        &mut self,
        peer: Id,
        now: Time,
        base_backoff: u64,
        max_backoff: u64,
    ) -> Option<LinkState> {
        let old = self.links.remove(&peer);
        if matches!(old, Some(LinkState::Connecting { .. }) | None) {
            let delay = self
                .backoff
                .get(&peer)
                .map_or(base_backoff, |b| (b.delay * 2).min(max_backoff));
            self.backoff.insert(
                peer,
                Backoff {
                    until: now + delay,
                    delay,
                },
            );
        }
        old
    }

    /// Removes a link without touching the peer's backoff.
    pub fn remove_keep_backoff(&mut self, peer: Id) {
        self.links.remove(&peer);
    }

    pub fn set_in_ring(&mut self, peer: Id, joined: bool) {
        if let Some(LinkState::Up { in_ring, .. }) = self.links.get_mut(&peer) {
            *in_ring = joined;
        }
    }

    pub fn heard(&mut self, peer: Id, now: Time) {
        if let Some(LinkState::Up {
            last_heard,
            last_used,
            ..
        }) = self.links.get_mut(&peer)
        {
            *last_heard = now;
            *last_used = now;
        }
    }

    /// We start watching `peer` (it became our successor or predecessor): its silence counts
    /// from now. Before, nothing needed to cross the link (an open link to a peer we did not
    /// watch may stay quiet for minutes), so its old `last_heard` says nothing about whether
    /// it is alive, and the next heartbeat would take it for failed at once.
    pub fn start_watching(&mut self, peer: Id, now: Time) {
        if let Some(LinkState::Up { last_heard, .. }) = self.links.get_mut(&peer) {
            *last_heard = (*last_heard).max(now);
        }
    }

    pub fn used(&mut self, peer: Id, now: Time) {
        if let Some(LinkState::Up { last_used, .. }) = self.links.get_mut(&peer) {
            *last_used = now;
        }
    }

    pub fn set_peer_needs(&mut self, peer: Id, needs: bool) {
        if let Some(LinkState::Up {
            peer_needs,
            closing,
            ..
        }) = self.links.get_mut(&peer)
        {
            *peer_needs = needs;
            *closing = false;
        }
    }

    pub fn set_closing(&mut self, peer: Id) {
        if let Some(LinkState::Up { closing, .. }) = self.links.get_mut(&peer) {
            *closing = true;
        }
    }

    /// Backs off connecting to `peer` for `delay` (it closed the link to stay within its budget).
    pub fn back_off(&mut self, peer: Id, now: Time, delay: u64) {
        self.backoff.insert(
            peer,
            Backoff {
                until: now + delay,
                delay,
            },
        );
    }

    /// Whether we offered to close this link (`Bye`): its closing is then agreed, not a failure.
    pub fn is_closing(&self, peer: Id) -> bool {
        matches!(
            self.links.get(&peer),
            Some(LinkState::Up { closing: true, .. })
        )
    }

    /// Open links that this node does not need (`wanted` is sorted), the peer did not ask to
    /// keep, and that were idle since `idle_before`: candidates for a `Bye`.
    pub fn unneeded(&self, wanted: &[Id], idle_before: Time) -> Vec<Id> {
        self.links
            .iter()
            .filter_map(|(id, l)| match l {
                LinkState::Up {
                    last_used,
                    peer_needs: false,
                    closing: false,
                    since,
                    ..
                } if *last_used < idle_before
                    && *since < idle_before
                    && wanted.binary_search(id).is_err() =>
                {
                    Some(*id)
                }
                _ => None,
            })
            .collect()
    }

    /// Links stuck in `Connecting` since before `deadline`.
    pub fn stale_connects(&self, deadline: Time) -> Vec<Id> {
        self.links
            .iter()
            .filter_map(|(id, l)| match l {
                LinkState::Connecting { since } if *since < deadline => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// Open links to close so at most `max` remain, never one in `keep` nor one `spare`
    /// rejects; least recently used first.
    pub fn excess(&self, max: usize, keep: &[Id], spare: impl Fn(Id) -> bool) -> Vec<Id> {
        if self.links.len() <= max {
            return Vec::new();
        }
        let mut idle: Vec<(Time, Id)> = self
            .links
            .iter()
            .filter_map(|(id, l)| match l {
                LinkState::Up { last_used, .. }
                    if keep.binary_search(id).is_err() && !spare(*id) =>
                {
                    Some((*last_used, *id))
                }
                _ => None,
            })
            .collect();
        idle.sort_unstable();
        idle.into_iter()
            .take(self.links.len() - max)
            .map(|(_, id)| id)
            .collect()
    }

    /// Drops expired backoff entries so the map stays bounded.
    pub fn expire_backoff(&mut self, now: Time, max_backoff: u64) {
        self.backoff.retain(|_, b| now < b.until + max_backoff);
    }
}
