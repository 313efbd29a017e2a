//! Durable peers: what a driver persists and how a restarted node is restored from it.
//!
//! The core stays sans-IO: it never touches a disk. Every change to the local store comes out as
//! [`Event::Stored`](crate::node::Event::Stored) (`key`, the winning [`Entry`]); a driver that
//! keeps those (a database on disk, IndexedDB in a browser) can bring a restarted peer back with
//! [`Node::restore`] before it joins. Deletes are tombstones, and the store forgets a key only when
//! it collects the key's tombstone, which comes out as `Event::Collected` (`key`): a driver deletes
//! the key then, and the persisted `(key, entry)` pairs, last event per key, are the whole store.
//! Order matters within a drain: a `Stored` after a `Collected` of the same key is a newer write. A
//! deletion lost in a crash is harmless: the restarted peer holds the tombstone again (never a
//! value), and it is collected again. Keys handed off to another peer are not deleted (they stay on
//! disk, as in memory).
//!
//! # What a driver MUST do for durable acknowledgements
//! A node emits `Event::Stored` *before* any output that depends on the write: the leader's
//! `Replicate` frames and its answer to the origin, a replica's `ReplicateAck`. So a driver
//! that makes every `Stored` of a drain durable before it carries out the outputs that follow
//! (group commit: collect the drain, commit once, then send) acknowledges a put only after it is
//! durable on every acknowledging replica. A driver MAY instead persist asynchronously (faster;
//! a crash can then lose the last moments of writes on this replica, which the other replicas
//! and anti-entropy repair as long as fewer than k replicas of a set lose them).
//!
//! # Restart
//! [`Node::restore`] loads the entries and raises the Lamport clock above every timestamp they
//! carry (and above any clock value the driver saved), so a restarted leader never reuses a
//! timestamp: everything this node ever stamped was stored locally first, hence persisted.
//! The node then joins with its old id and ring position; anti-entropy (Merkle ranges) with its
//! neighbours then moves only the keys that differ, i.e. what it missed while it was down.

use crate::Time;
use crate::node::{Node, Phase};
use crate::store::Entry;

/// Why [`Node::restore`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    #[error("restore must come before the node joins or creates a ring")]
    AlreadyStarted,
}

/// What [`Node::restore`] loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    pub entries: usize,
    /// Entries refused by the store's limits (a database written with larger limits) or with
    /// a timestamp at or above `guard::TS_CEILING`.
    pub rejected: usize,
    /// The Lamport clock after the restore.
    pub lamport: u64,
}

impl Node {
    /// Loads persisted store entries (and the Lamport clock value the driver saved, 0 if none)
    /// into a node that has not joined yet. Emits no `Stored` events for them.
    pub fn restore(
        &mut self,
        entries: impl IntoIterator<Item = (String, Entry)>,
        lamport: u64,
        now: Time,
    ) -> Result<Restored, RestoreError> {
        if !matches!(self.phase, Phase::Idle) {
            return Err(RestoreError::AlreadyStarted);
        }
        self.advance(now);
        let mut restored = Restored::default();
        let mut highest = lamport.min(crate::guard::TS_CEILING - 1);
        for (key, entry) in entries {
            // Nothing at or above the ceiling is ever stored from a remote peer (`guard.rs`); an
            // entry there (written before the bound existed) would freeze the clock.
            if entry.version.ts >= crate::guard::TS_CEILING {
                restored.rejected += 1;
                self.metrics.rejected.ts_out_of_bounds += 1;
                continue;
            }
            highest = highest.max(entry.version.ts);
            match self.store.apply(&key, entry, self.now) {
                Ok(_) => restored.entries += 1,
                Err(_) => restored.rejected += 1,
            }
        }
        self.clock.restore_at_least(highest);
        self.metrics.kv.keys_stored = self.store.len();
        restored.lamport = self.clock.current();
        Ok(restored)
    }
}
