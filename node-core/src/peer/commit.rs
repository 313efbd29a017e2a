//! Group commit: the writes of one drain go to the driver's store in one transaction, and
//! nothing the core asked for after a write is carried out before that write is on disk.
//!
//! The core emits `Event::Stored` (and `Event::Collected`) before every output that depends on
//! the write: the `Replicate` frames of a leader, the `ReplicateAck` of a replica, the
//! `OpDone` of a ring of one (node-core/src/persist.rs). A driver therefore passes each output
//! of a drain through [`CommitGate::pass`] in order; the gate hands back what may be carried out
//! now and holds the rest. At the end of the drain [`CommitGate::take_batch`] gives the writes
//! to commit (the last event per key wins); once the store says the batch is committed (or
//! failed, see below) [`CommitGate::committed`] releases the outputs held for it, in order.
//!
//! - The native peer commits synchronously (redb, `fsync` in strict mode) and releases at once;
//!   a failed commit stops the peer before anything of that drain left.
//! - A tab's IndexedDB transaction completes later; outputs of later drains wait behind it too,
//!   so link order is kept and no frame overtakes a write it may depend on. A failed
//!   transaction is counted and its outputs leave all the same (the tab cannot stop being a
//!   peer; its store is then behind, as after a crash).
//!
//! Before this module the two drivers wrote this each on their own: the native peer held every
//! output of a drain with a write, the tab only frames, so a tab serving alone resolved a put
//! before IndexedDB had it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::store::Entry;

/// One transaction's writes: entries to store, keys to forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub id: u64,
    pub stored: Vec<(String, Entry)>,
    pub collected: Vec<String>,
}

impl Batch {
    /// Entries written and keys forgotten.
    pub fn len(&self) -> usize {
        self.stored.len() + self.collected.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
enum Slot<T> {
    Item(T),
    /// Everything after this waits for transaction `id`.
    Barrier(u64),
}

/// Outputs held back until the writes they may depend on are committed.
#[derive(Debug)]
pub struct CommitGate<T> {
    /// Writes of the current drain, last per key (`None`: collected).
    unwritten: BTreeMap<String, Option<Entry>>,
    held: VecDeque<Slot<T>>,
    next_id: u64,
    /// A barrier for `next_id` is queued already.
    barrier_queued: bool,
    /// Transactions handed out and not yet committed.
    in_flight: BTreeSet<u64>,
    /// Outputs that had to wait, ever.
    pub items_held: u64,
}

impl<T> Default for CommitGate<T> {
    fn default() -> Self {
        Self {
            unwritten: BTreeMap::new(),
            held: VecDeque::new(),
            next_id: 1,
            barrier_queued: false,
            in_flight: BTreeSet::new(),
            items_held: 0,
        }
    }
}

impl<T> CommitGate<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Event::Stored { key, entry }` of the current drain.
    pub fn stored(&mut self, key: String, entry: Entry) {
        self.unwritten.insert(key, Some(entry));
    }

    /// `Event::Collected { key }` of the current drain.
    pub fn collected(&mut self, key: String) {
        self.unwritten.insert(key, None);
    }

    /// Nothing is waiting: no write of this drain, no output held, no transaction open. Then
    /// [`Self::pass`] hands every output straight back.
    #[inline]
    pub fn is_open(&self) -> bool {
        self.unwritten.is_empty() && self.held.is_empty() && self.in_flight.is_empty()
    }

    /// An output of the drain, after the writes it may depend on: `Some` to carry out now,
    /// `None` when it waits (released later by [`Self::committed`]).
    pub fn pass(&mut self, item: T) -> Option<T> {
        if !self.unwritten.is_empty() && !self.barrier_queued {
            self.held.push_back(Slot::Barrier(self.next_id));
            self.barrier_queued = true;
        } else if self.held.is_empty() {
            match self.in_flight.last() {
                // A transaction of an earlier drain is still open: keep order behind it.
                Some(open) => self.held.push_back(Slot::Barrier(*open)),
                None => return Some(item),
            }
        }
        self.items_held += 1;
        self.held.push_back(Slot::Item(item));
        None
    }

    /// End of a drain: the writes to commit in one transaction (`None` when there are none).
    pub fn take_batch(&mut self) -> Option<Batch> {
        if self.unwritten.is_empty() {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.barrier_queued = false;
        self.in_flight.insert(id);
        let mut batch = Batch {
            id,
            stored: Vec::new(),
            collected: Vec::new(),
        };
        for (key, entry) in std::mem::take(&mut self.unwritten) {
            match entry {
                Some(entry) => batch.stored.push((key, entry)),
                None => batch.collected.push(key),
            }
        }
        Some(batch)
    }

    /// Transaction `id` ended (committed or failed; the driver decides what a failure means):
    /// the outputs no longer waiting for any open transaction, in order.
    pub fn committed(&mut self, id: u64) -> Vec<T> {
        self.in_flight.remove(&id);
        let mut out = Vec::new();
        loop {
            match self.held.front() {
                Some(Slot::Item(_)) => {
                    if let Some(Slot::Item(item)) = self.held.pop_front() {
                        out.push(item);
                    }
                }
                Some(Slot::Barrier(t)) if !self.in_flight.contains(t) && *t < self.next_id => {
                    self.held.pop_front();
                }
                _ => break,
            }
        }
        out
    }

    /// Outputs waiting now.
    pub fn waiting(&self) -> usize {
        self.held
            .iter()
            .filter(|s| matches!(s, Slot::Item(_)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Version;

    fn entry(ts: u64) -> Entry {
        Entry {
            value: Some("v".into()),
            version: Version {
                ts,
                writer: "w".into(),
            },
        }
    }

    #[test]
    fn without_writes_everything_passes() {
        let mut gate = CommitGate::new();
        assert_eq!(gate.pass(1), Some(1));
        assert_eq!(gate.take_batch(), None);
        assert_eq!(gate.pass(2), Some(2));
    }

    #[test]
    fn outputs_after_a_write_wait_for_its_commit_in_order() {
        let mut gate = CommitGate::new();
        assert_eq!(gate.pass("before"), Some("before"));
        gate.stored("k".into(), entry(1));
        assert_eq!(gate.pass("replicate"), None);
        gate.stored("k".into(), entry(2));
        gate.collected("gone".into());
        assert_eq!(gate.pass("ack"), None);
        let batch = gate.take_batch().expect("writes");
        assert_eq!(
            batch.stored,
            vec![("k".to_string(), entry(2))],
            "last per key"
        );
        assert_eq!(batch.collected, vec!["gone".to_string()]);
        // A later drain's output waits behind the open transaction.
        assert_eq!(gate.pass("later"), None);
        assert_eq!(gate.waiting(), 3);
        assert_eq!(gate.committed(batch.id), vec!["replicate", "ack", "later"]);
        assert_eq!(gate.pass("after"), Some("after"));
        assert_eq!(gate.items_held, 3);
    }

    #[test]
    fn a_second_transaction_does_not_release_the_first_ones_outputs() {
        let mut gate = CommitGate::new();
        gate.stored("a".into(), entry(1));
        assert_eq!(gate.pass(1), None);
        let first = gate.take_batch().unwrap();
        gate.stored("b".into(), entry(1));
        assert_eq!(gate.pass(2), None);
        let second = gate.take_batch().unwrap();
        assert_eq!(
            gate.committed(second.id),
            Vec::<i32>::new(),
            "1 still waits"
        );
        assert_eq!(gate.committed(first.id), vec![1, 2]);
    }

    #[test]
    fn a_write_without_outputs_still_makes_a_batch() {
        let mut gate: CommitGate<u8> = CommitGate::new();
        gate.stored("a".into(), entry(1));
        let batch = gate.take_batch().unwrap();
        assert_eq!(batch.len(), 1);
        assert!(gate.committed(batch.id).is_empty());
        assert_eq!(gate.pass(7), Some(7));
    }
}
