//! Live updates: a peer watches a key and hears every change of it made anywhere in the ring
//! (issue 14 item 5). The state lives here; the methods that send and receive the messages are
//! `impl Node` in `node/watch.rs`.
//!
//! # Protocol
//!
//! - **Subscribe.** [`crate::Node::watch`] records the key in the watcher's table ([`Watching`])
//!   and routes `Body::Watch { key, since, lease_ms }` toward the key's id (`Dest::Owner`), with
//!   the watcher as `origin`. The owner holds the subscription for `lease_ms` and hands it on to
//!   its replica successors as `KvMsg::Watch` (over the link, or routed like other replica
//!   traffic), so every member of the key's replica set holds it.
//! - **Notify.** Whenever a member's store takes a newer version of a watched key, whatever
//!   brought it (`Replicate`, read-repair, a write-back, an anti-entropy round: every path that
//!   emits `Event::Stored`), the member sends `KvMsg::Notify { key, entry }` to each
//!   subscriber. A leader announces its own fresh stamp only once a write quorum holds it:
//!   a version that only a leader held, which crashed before replicating it (and came back
//!   empty), would otherwise stand in a watcher's stream above the versions the ring kept. A member that takes a subscription and already holds a version
//!   newer than the watcher's `since` sends it at once: a subscription closes its own gap.
//! - **Renew.** The watcher sends its request again every [`WATCH_RENEW_MS`] (lease
//!   [`WATCH_LEASE_MS`]), routed afresh to whoever owns the key *now*, with `since` the newest
//!   version it emitted. That is how a subscription follows the replica set: after the leader
//!   or any member crashes, after a join moves the key to a newcomer, the next renewal reaches
//!   the new owner and set, and any member holding something newer than `since` sends it.
//!   A lease not renewed expires; `unwatch` sends `lease_ms: 0`, which the owner and its
//!   current replica successors take as a cancel at once (a peer that left the set since the
//!   last renewal lets its lease lapse; the watcher drops what it still sends).
//! - **Order and duplicates.** Up to k members notify each change, over different paths. The
//!   watcher emits `Event::Watch` only for a version strictly newer (in the store's LWW order:
//!   timestamp, then writer) than the newest it emitted for that key, so at-least-once
//!   delivery from several members becomes one stream in which versions only go up: a watcher
//!   never sees an older version after a newer one. Timestamps never go down along the
//!   stream; two versions with one timestamp (two leaders during a change of leader) come in
//!   writer order.
//!
//! # What is promised
//!
//! Every version that stays the key's newest for at least one renewal period
//! ([`WATCH_RENEW_MS`], 5 s) after it was acknowledged reaches every watcher at least once
//! (within that period plus the routing time), through leader crashes and joins into the set,
//! as long as one member that holds it is reachable. A version superseded sooner normally
//! arrives too (each member that applies it notifies at once); it can be skipped only when
//! every notification of it was lost (a hop on the way crashed) before a newer version came.
//! Notifications are not acknowledged: the renewal's `since` is the repair. The first event
//! after `watch` may be the key's current value (any member that holds a live version sends it).
//!
//! # Bounds (docs/conventions.md habit 4)
//!
//! A watcher watches at most [`MAX_WATCHES`] keys (`Node::watch` answers
//! `OpError::TooManyWatches` beyond that). A member holds at most [`MAX_WATCHES`]
//! subscriptions per subscriber and [`MAX_SUBSCRIPTIONS`] in all; beyond that it refuses and
//! counts `rejected.watch_full` (never evicting, so a flood of fake subscribers cannot push a
//! real one out before its lease ends). Leases are capped at [`MAX_LEASE_MS`].
//!
//! # Who may send what (`guard.rs`)
//!
//! `KvMsg::Watch` only from a peer that may be in the key's set, to a node that may be in it
//! (the `Replicate` check). `KvMsg::Notify` only for a key this node watches, from a peer that
//! may be in the key's set by this node's view, with a timestamp within `ts_bound`; the watcher
//! never observes a notified timestamp into its clock. A forged notification can at worst show
//! the forger's version to this watcher and hide older ones from it until its key is watched
//! again: nothing reaches the store or any other peer. Anyone may route a `Body::Watch` naming
//! any origin (routed origins are unproven), so a peer can subscribe another to at most
//! [`MAX_WATCHES`] keys per member: notifications of changes, no more.

use crate::Time;
use crate::id::PeerId;
use crate::store::Version;
use std::collections::BTreeMap;

/// How long a member holds a subscription without a renewal.
pub const WATCH_LEASE_MS: u64 = 20_000;
/// How often a watcher renews each subscription (a quarter of the lease: three renewals can
/// be lost before it lapses).
pub const WATCH_RENEW_MS: u64 = 5_000;
/// The longest lease a member grants, whatever the request asks.
pub const MAX_LEASE_MS: u64 = 60_000;
/// Keys one peer watches at most; subscriptions a member holds per subscriber at most.
pub const MAX_WATCHES: usize = 64;
/// Subscriptions a member holds in all.
pub const MAX_SUBSCRIPTIONS: usize = 4_096;
/// How often a member drops expired leases.
pub(crate) const SWEEP_MS: u64 = 1_000;

/// One key this node watches.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watching {
    /// The newest version emitted for the key (`None`: nothing yet).
    pub(crate) last: Option<Version>,
    /// When the subscription is sent again.
    pub(crate) renew_at: Time,
}

/// Why a member refused a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The subscriber already holds [`MAX_WATCHES`] subscriptions here.
    Subscriber,
    /// The table holds [`MAX_SUBSCRIPTIONS`].
    Table,
}

/// The watch state of one node: its own watches and the subscriptions it holds for others.
#[derive(Debug, Default)]
pub(crate) struct Watches {
    pub(crate) mine: BTreeMap<String, Watching>,
    /// key -> subscriber -> lease end.
    held: BTreeMap<String, BTreeMap<PeerId, Time>>,
    per_subscriber: BTreeMap<PeerId, usize>,
    held_count: usize,
}

impl Watches {
    /// Holds (or renews) `subscriber`'s subscription to `key` until `until`.
    pub(crate) fn hold(&mut self, key: &str, subscriber: PeerId, until: Time) -> Result<(), Full> {
        if let Some(lease) = self.held.get_mut(key).and_then(|s| s.get_mut(&subscriber)) {
            *lease = (*lease).max(until);
            return Ok(());
        }
        if self.per_subscriber.get(&subscriber).copied().unwrap_or(0) >= MAX_WATCHES {
            return Err(Full::Subscriber);
        }
        if self.held_count >= MAX_SUBSCRIPTIONS {
            return Err(Full::Table);
        }
        self.held
            .entry(key.to_string())
            .or_default()
            .insert(subscriber, until);
        *self.per_subscriber.entry(subscriber).or_default() += 1;
        self.held_count += 1;
        Ok(())
    }

    /// Drops `subscriber`'s subscription to `key`, if held.
    pub(crate) fn cancel(&mut self, key: &str, subscriber: PeerId) {
        let Some(subs) = self.held.get_mut(key) else {
            return;
        };
        let removed = subs.remove(&subscriber).is_some();
        if subs.is_empty() {
            self.held.remove(key);
        }
        if removed {
            self.forget_one(subscriber);
        }
    }

    fn forget_one(&mut self, subscriber: PeerId) {
        self.held_count -= 1;
        if let Some(n) = self.per_subscriber.get_mut(&subscriber) {
            *n -= 1;
            if *n == 0 {
                self.per_subscriber.remove(&subscriber);
            }
        }
    }

    /// The subscribers of `key` whose lease runs at `now`.
    pub(crate) fn subscribers(&self, key: &str, now: Time) -> Vec<PeerId> {
        self.held.get(key).map_or_else(Vec::new, |subs| {
            subs.iter()
                .filter(|(_, until)| **until > now)
                .map(|(p, _)| *p)
                .collect()
        })
    }

    /// Whether any subscription is held (a cheap test before every store change).
    pub(crate) fn holds_any(&self) -> bool {
        self.held_count > 0
    }

    /// Drops every lease that ended by `now`.
    pub(crate) fn expire(&mut self, now: Time) {
        let mut gone = Vec::new();
        self.held.retain(|_, subs| {
            subs.retain(|p, until| {
                let keep = *until > now;
                if !keep {
                    gone.push(*p);
                }
                keep
            });
            !subs.is_empty()
        });
        for p in gone {
            self.forget_one(p);
        }
    }

    /// Subscriptions held now (metrics).
    pub(crate) fn held_count(&self) -> usize {
        self.held_count
    }

    /// Whether the node has anything to renew or expire.
    pub(crate) fn is_idle(&self) -> bool {
        self.mine.is_empty() && self.held_count == 0
    }
}

/// One change of a watched key as both APIs deliver it (`GET /watch`'s `data:` lines, the
/// JS `peer.watch` callback): `{key, value, ts, writer_id, deleted}`, `value` the JSON value
/// that was put ([`crate::value`]) or `null` for a delete.
pub fn event_json(key: &str, value: Option<&str>, ts: u64, writer: &str) -> serde_json::Value {
    serde_json::json!({
        "key": key,
        "value": value.map_or(serde_json::Value::Null, crate::value::decode),
        "ts": ts,
        "writer_id": writer,
        "deleted": value.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    #[test]
    fn bounded_per_subscriber_and_expiring() {
        let mut w = Watches::default();
        for i in 0..MAX_WATCHES {
            assert_eq!(w.hold(&format!("k{i}"), Id(1), 100), Ok(()));
        }
        assert_eq!(w.hold("one-more", Id(1), 100), Err(Full::Subscriber));
        assert_eq!(
            w.hold("k0", Id(1), 200),
            Ok(()),
            "a renewal is no new entry"
        );
        assert_eq!(w.hold("one-more", Id(2), 50), Ok(()));
        assert_eq!(w.subscribers("k0", 150), vec![Id(1)]);
        assert_eq!(w.subscribers("k1", 150), Vec::<Id>::new(), "lease ended");
        w.expire(150);
        assert_eq!(w.held_count(), 1);
        assert_eq!(w.hold("one-more", Id(1), 300), Ok(()));
        w.cancel("k0", Id(1));
        w.cancel("one-more", Id(1));
        assert!(w.is_idle());
    }
}
