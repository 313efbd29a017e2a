//! Live updates as methods of [`Node`]: the watcher's commands and renewals, the owner and
//! members holding subscriptions, notifications on every store change, and the watcher's
//! in-order emission. The protocol, its promise and its bounds are in [`crate::watch`].

use super::Node;
use crate::Time;
use crate::api::{Event, OpError, Output};
use crate::id::{Id, PeerId};
use crate::store::{Entry, Version};
use crate::timers::Timer;
use crate::watch::{
    Full, MAX_LEASE_MS, MAX_WATCHES, SWEEP_MS, WATCH_LEASE_MS, WATCH_RENEW_MS, Watching,
};
use crate::wire::kv::KvMsg;
use crate::wire::{Body, Dest, Routed};

impl Node {
    // ----- the watcher ----------------------------------------------------------------------

    /// Watches `key`: from now on an [`Event::Watch`] reports each newer version of it that any
    /// member of its replica set takes, in version order (`crate::watch`). Idempotent. A node
    /// that is not (yet) a ring member records the watch and subscribes once it is one.
    ///
    /// Errors (caller misuse, nothing is sent): `Rejected` for a key over the limits,
    /// `TooManyWatches` beyond [`MAX_WATCHES`] keys.
    pub fn watch(&mut self, key: &str, now: Time) -> Result<(), OpError> {
        self.advance(now);
        self.store
            .limits()
            .check(key, &Entry::tombstone(0, "-"))
            .map_err(OpError::Rejected)?;
        if self.watches.mine.contains_key(key) {
            return Ok(());
        }
        if self.watches.mine.len() >= MAX_WATCHES {
            return Err(OpError::TooManyWatches { limit: MAX_WATCHES });
        }
        self.watches
            .mine
            .insert(key.to_string(), Watching::default());
        self.send_watch(key, None, WATCH_LEASE_MS);
        self.timers.set_earlier(Timer::Watch, now + SWEEP_MS);
        Ok(())
    }

    /// Stops watching `key` (no more events for it); the members drop the subscription.
    /// Returns whether it was watched.
    pub fn unwatch(&mut self, key: &str, now: Time) -> bool {
        self.advance(now);
        if self.watches.mine.remove(key).is_none() {
            return false;
        }
        self.send_watch(key, None, 0);
        true
    }

    /// The keys this node watches.
    pub fn watched(&self) -> impl Iterator<Item = &str> {
        self.watches.mine.keys().map(String::as_str)
    }

    /// Routes a (re)subscription for `key` to its owner, and schedules the next renewal.
    fn send_watch(&mut self, key: &str, since: Option<Version>, lease_ms: u64) {
        if let Some(w) = self.watches.mine.get_mut(key) {
            w.renew_at = self.now + WATCH_RENEW_MS;
        }
        if !self.is_joined() {
            if let Some(w) = self.watches.mine.get_mut(key) {
                w.renew_at = self.now; // at the first sweep after the join
            }
            return;
        }
        let routed = Routed {
            dest: Dest::Owner {
                key: Id::of_key(key),
            },
            origin: self.id,
            origin_via: self.origin_via(),
            hops: 0,
            body: Body::Watch {
                key: key.to_string(),
                since,
                lease_ms,
            },
        };
        self.metrics.kv.watch_requests_sent += 1;
        // Resolved like a KV request (`kv_route`): stale pointers route on toward the key.
        self.kv_route(routed);
    }

    /// The watch timer: renew due subscriptions, drop ended leases.
    pub(crate) fn watch_round(&mut self) {
        let now = self.now;
        let due: Vec<(String, Option<Version>)> = self
            .watches
            .mine
            .iter()
            .filter(|(_, w)| w.renew_at <= now)
            .map(|(k, w)| (k.clone(), w.last.clone()))
            .collect();
        for (key, since) in due {
            self.send_watch(&key, since, WATCH_LEASE_MS);
        }
        self.watches.expire(now);
        if self.watches.is_idle() {
            self.timers.stop(Timer::Watch);
        } else {
            self.timers.set(Timer::Watch, now + SWEEP_MS);
        }
    }

    /// A member's notification reached the watcher: emitted when strictly newer than what was
    /// emitted for the key (`crate::watch`, "Order and duplicates").
    pub(crate) fn on_watch_notify(&mut self, from: PeerId, key: String, entry: Entry) {
        if !self.watches.mine.contains_key(&key) {
            self.metrics.kv.watch_unsolicited += 1; // late after an unwatch, or forged
            return;
        }
        if from != self.id {
            // Authorization (`guard.rs`): from a peer that may hold the key, within the bound.
            if !self.may_be_member(Id::of_key(&key), from) {
                self.metrics.rejected.kv_not_member += 1;
                return;
            }
            if !self.accepts_ts(entry.version.ts) {
                self.metrics.rejected.ts_out_of_bounds += 1;
                return;
            }
            if self.store.limits().check(&key, &entry).is_err() {
                self.metrics.kv.rejected_entries += 1;
                return;
            }
        }
        let Some(w) = self.watches.mine.get_mut(&key) else {
            return;
        };
        if w.last.as_ref().is_some_and(|last| entry.version <= *last) {
            self.metrics.kv.watch_duplicates += 1;
            return;
        }
        w.last = Some(entry.version.clone());
        self.metrics.kv.watch_events += 1;
        self.out.push_back(Output::event(Event::Watch {
            key,
            value: entry.value,
            ts: entry.version.ts,
            writer: entry.version.writer,
        }));
    }

    // ----- the owner and the members -----------------------------------------------------------

    /// A routed `Body::Watch` reached the peer that should own its key.
    pub(crate) fn watch_at_owner(&mut self, routed: Routed) {
        let Body::Watch {
            key,
            since,
            lease_ms,
        } = routed.body
        else {
            return;
        };
        let id = Id::of_key(&key);
        if !self.is_joined()
            || self
                .ring
                .known_owner(id, false)
                .is_some_and(|o| o != self.id)
        {
            // Our pointers say another peer owns it (the ring moved): route it again.
            let routed = Routed {
                dest: Dest::Owner { key: id },
                body: Body::Watch {
                    key,
                    since,
                    lease_ms,
                },
                ..routed
            };
            if self.is_joined() {
                self.forward(routed);
            }
            return;
        }
        let subscriber = routed.origin;
        for member in self.replica_successors() {
            let msg = KvMsg::Watch {
                key: key.clone(),
                subscriber,
                since: since.clone(),
                lease_ms,
            };
            self.send_kv(member, msg);
        }
        self.hold_watch(&key, subscriber, since, lease_ms);
    }

    /// Holds (or cancels) a subscription here, and sends at once what we hold that is newer
    /// than the subscriber's `since`.
    pub(crate) fn hold_watch(
        &mut self,
        key: &str,
        subscriber: PeerId,
        since: Option<Version>,
        lease_ms: u64,
    ) {
        if lease_ms == 0 {
            self.watches.cancel(key, subscriber);
            return;
        }
        let until = self.now + lease_ms.min(MAX_LEASE_MS);
        match self.watches.hold(key, subscriber, until) {
            Ok(()) => {}
            Err(Full::Subscriber | Full::Table) => {
                self.metrics.rejected.watch_full += 1;
                return;
            }
        }
        self.timers.set_earlier(Timer::Watch, self.now + SWEEP_MS);
        let Some(held) = self.store.get(key).cloned() else {
            return;
        };
        let newer = match &since {
            Some(since) => held.version > *since,
            // A first subscription hears the current value, not an old delete.
            None => !held.is_tombstone(),
        };
        if newer {
            self.send_notify(subscriber, key, held);
        }
    }

    /// The local store took a newer version of `key`: tell its subscribers.
    pub(crate) fn notify_watchers(&mut self, key: &str, entry: &Entry) {
        if !self.watches.holds_any() {
            return;
        }
        for subscriber in self.watches.subscribers(key, self.now) {
            self.send_notify(subscriber, key, entry.clone());
        }
    }

    fn send_notify(&mut self, subscriber: PeerId, key: &str, entry: Entry) {
        self.metrics.kv.watch_notifies_sent += 1;
        if subscriber == self.id {
            self.on_watch_notify(self.id, key.to_string(), entry);
        } else {
            let key = key.to_string();
            self.send_kv(subscriber, KvMsg::Notify { key, entry });
        }
    }

    /// Subscriptions held for others (metrics).
    pub(crate) fn watch_subscriptions(&self) -> usize {
        self.watches.held_count()
    }
}
