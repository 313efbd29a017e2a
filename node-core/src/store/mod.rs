//! The local replica store: versioned entries with last-writer-wins, range scans over key ids,
//! handoff and tombstone collection.
//!
//! # Protocol
//!
//! Every stored value carries a [`Version`] `(lamport_ts, writer_id)`; replicas keep, per key, the
//! entry that is greatest in the LWW order and drop the other (Dynamo-style reconciliation,
//! DeCandia et al., SOSP 2007, section 4.4, with Lamport timestamps instead of vector clocks, so
//! concurrent writes resolve to one winner instead of siblings). A delete is a *tombstone*: an
//! entry without a value, ordered like any other write, so a delete beats older writes and loses
//! to newer ones. The order is total ([`Entry`]'s `Ord`), hence [`merge`] = `max` is commutative,
//! associative and idempotent and every replica that has seen the same set of entries holds the
//! same winner, whatever order they arrived in.
//!
//! # Deviations and decisions
//!
//! - **Exact ties.** Two entries with the same `(ts, writer)` but different contents only arise
//!   from a misbehaving writer (e.g. one that reused a timestamp after losing its clock). They
//!   are still ordered deterministically: a tombstone beats any value at the same version
//!   (delete wins, as in remove-wins sets), and between two values the bytewise greater string
//!   wins.
//! - **Values are UTF-8 strings.** The HTTP API (docs/design.md section 8) carries `value` in
//!   JSON (any JSON value, kept as a string by [`crate::value`]), and serde_json would encode a
//!   `Vec<u8>` as an array of numbers (up to 4 bytes of JSON per byte). Strings travel almost
//!   1:1 in JSON frames.
//! - **Sizes are measured as JSON.** [`Limits`] bound the *JSON-escaped* length of key, value and
//!   writer id (what they cost inside a frame): equal to the UTF-8 length for ordinary text, up
//!   to 6x for control characters. Defaults: key 1 KiB, value 48 KiB, writer id 128 bytes, so one
//!   entry of maximal size plus envelope fits one 64 KiB data-channel frame (the largest message
//!   every WebRTC stack we target delivers unfragmented) with about 15 KiB to spare. The limits
//!   are a ring-wide protocol constant: a peer with smaller limits would reject entries its
//!   neighbours keep, and anti-entropy would never converge.
//! - **Key ids.** Entries are kept in a `BTreeMap` keyed by `(key_id(key), key)`, where
//!   [`key_id`] is the ring id (the first four bytes of SHA-1, big-endian, as `Id::of_key`), so a
//!   ring range `(a, b]` is one or two contiguous scans.
//! - **Tombstone collection** is a primitive here ([`Store::collect_tombstones`] by age and a
//!   caller's predicate, [`Store::forget_tombstone`] for one exact version); the *rule* belongs
//!   to the replication layer (`replication.rs`, "Tombstone collection": the key's owner
//!   collects, after a round with every replica successor opened after it stored the
//!   tombstone ended equal, and orders its replicas to drop that exact version).
//!   A tombstone MAY be dropped only once every replica of its key holds it (or something newer)
//!   *and* a grace period has passed since this replica stored it; otherwise a replica that missed
//!   the delete would resurrect the value through read-repair or anti-entropy. A replica that is
//!   offline for longer than the grace period can still resurrect a collected key when it comes
//!   back (Cassandra's `gc_grace_seconds` caveat): the grace period must exceed the longest outage
//!   after which a peer is still allowed to rejoin with its old data.
//! - **Merkle index.** The store maintains the anti-entropy tree of [`crate::merkle`]
//!   incrementally (O(depth) per change), so it can never drift from the data it summarises.
//!   The tree is allocated on the first entry and released when the store becomes empty, so an
//!   idle store costs no tree memory.

pub mod tree;

use serde::{Deserialize, Serialize};
use sha1::{Digest as _, Sha1};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;
use tree::{Digest, MerkleError, MerkleTree, NodeRef, RangeTree};

/// The ring id of a key: SHA-1 of its UTF-8 bytes, first four bytes, big-endian
/// (the same value as `Id::of_key(key).0`).
pub fn key_id(key: &str) -> u32 {
    let digest = Sha1::digest(key.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// A clockwise range of ring ids `(from, to]`, as the Chord paper's intervals: `from` excluded,
/// `to` included, wrapping past `u32::MAX`. `from == to` is the whole ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RingRange {
    /// Excluded start (typically a predecessor's id).
    pub from: u32,
    /// Included end (typically the owner's id).
    pub to: u32,
}

impl RingRange {
    /// The range `(from, to]`.
    pub const fn new(from: u32, to: u32) -> Self {
        Self { from, to }
    }

    /// The whole ring, `(u32::MAX, u32::MAX]`, scanned from id 0.
    pub const fn full() -> Self {
        Self {
            from: u32::MAX,
            to: u32::MAX,
        }
    }

    /// Whether this is the whole ring.
    pub const fn is_full(&self) -> bool {
        self.from == self.to
    }

    /// Whether `id` lies in `(from, to]`.
    pub const fn contains(&self, id: u32) -> bool {
        if self.is_full() {
            return true;
        }
        let to_id = id.wrapping_sub(self.from);
        to_id != 0 && to_id <= self.to.wrapping_sub(self.from)
    }

    /// The range as at most two inclusive linear intervals `[lo, hi]`, in clockwise order from
    /// `from` (for the whole ring `(a, a]` too: `[a + 1, MAX]` then `[0, a]`).
    pub fn linear_pieces(&self) -> [Option<(u32, u32)>; 2] {
        let (from, to) = (self.from, self.to);
        if from < to {
            [Some((from + 1, to)), None]
        } else if from == u32::MAX {
            [Some((0, to)), None]
        } else {
            [Some((from + 1, u32::MAX)), Some((0, to))]
        }
    }
}

/// The LWW version of a write: ordered by Lamport timestamp, then writer id (bytewise).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Lamport timestamp stamped by the key's leader.
    pub ts: u64,
    /// Who stamped it; breaks timestamp ties.
    pub writer: String,
}

impl Version {
    /// A version `(ts, writer)`.
    pub fn new(ts: u64, writer: impl Into<String>) -> Self {
        Self {
            ts,
            writer: writer.into(),
        }
    }
}

/// One replicated write: a value or a tombstone (`value == None`), with its version.
///
/// `Ord` is the LWW order: by version, then (exact ties only) a tombstone above any value, then
/// values bytewise. `Eq` agrees with it: equal entries are identical.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// The value, or `None` for a delete.
    pub value: Option<String>,
    /// Who wrote it and when.
    pub version: Version,
}

impl Entry {
    /// A live value.
    pub fn live(value: impl Into<String>, ts: u64, writer: impl Into<String>) -> Self {
        Self {
            value: Some(value.into()),
            version: Version::new(ts, writer),
        }
    }

    /// A tombstone (delete).
    pub fn tombstone(ts: u64, writer: impl Into<String>) -> Self {
        Self {
            value: None,
            version: Version::new(ts, writer),
        }
    }

    /// Whether this entry is a delete.
    pub const fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The value, `None` for a tombstone.
    pub fn as_value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// Whether `self` wins over `other` in the LWW order.
    pub fn newer_than(&self, other: &Self) -> bool {
        self > other
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.version.cmp(&other.version).then_with(|| {
            match (&self.value, &other.value) {
                // Delete wins an exact version tie.
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
            }
        })
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The LWW winner of two entries for the same key. Commutative, associative and idempotent
/// (it is `max` under a total order).
pub fn merge(a: Entry, b: Entry) -> Entry {
    a.max(b)
}

/// Size bounds on what the store accepts, in JSON-escaped bytes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest key.
    pub max_key_bytes: usize,
    /// Longest value.
    pub max_value_bytes: usize,
    /// Longest writer id (writer ids must also be non-empty).
    pub max_writer_bytes: usize,
}

impl Limits {
    /// Default key bound: 1 KiB.
    pub const DEFAULT_MAX_KEY_BYTES: usize = 1024;
    /// Default value bound: 48 KiB, so a maximal entry fits one 64 KiB frame with its envelope.
    pub const DEFAULT_MAX_VALUE_BYTES: usize = 48 * 1024;
    /// Default writer id bound: 128 bytes.
    pub const DEFAULT_MAX_WRITER_BYTES: usize = 128;

    /// Checks a key and an entry against the limits.
    pub fn check(&self, key: &str, entry: &Entry) -> Result<(), LimitError> {
        let len = json_escaped_len(key);
        if len > self.max_key_bytes {
            return Err(LimitError::KeyTooLarge {
                len,
                max: self.max_key_bytes,
            });
        }
        let writer = &entry.version.writer;
        if writer.is_empty() {
            return Err(LimitError::EmptyWriter);
        }
        let len = json_escaped_len(writer);
        if len > self.max_writer_bytes {
            return Err(LimitError::WriterTooLarge {
                len,
                max: self.max_writer_bytes,
            });
        }
        if let Some(value) = &entry.value {
            let len = json_escaped_len(value);
            if len > self.max_value_bytes {
                return Err(LimitError::ValueTooLarge {
                    len,
                    max: self.max_value_bytes,
                });
            }
        }
        Ok(())
    }

    /// Upper bound on the JSON-escaped bytes of one entry's strings (key + value + writer id).
    pub const fn max_entry_bytes(&self) -> usize {
        self.max_key_bytes + self.max_value_bytes + self.max_writer_bytes
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: Self::DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: Self::DEFAULT_MAX_VALUE_BYTES,
            max_writer_bytes: Self::DEFAULT_MAX_WRITER_BYTES,
        }
    }
}

/// Why the store refused an entry. Lengths are JSON-escaped bytes, without the quotes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    #[error("key of {len} bytes exceeds the {max}-byte limit")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value of {len} bytes exceeds the {max}-byte limit")]
    ValueTooLarge { len: usize, max: usize },
    #[error("writer id of {len} bytes exceeds the {max}-byte limit")]
    WriterTooLarge { len: usize, max: usize },
    #[error("writer id is empty")]
    EmptyWriter,
}

/// Length of `s` once escaped as a JSON string by serde_json, without the surrounding quotes.
pub fn json_escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|byte| match byte {
            b'"' | b'\\' | 0x08 | 0x0C | b'\n' | b'\r' | b'\t' => 2,
            0x00..=0x1F => 6,
            _ => 1,
        })
        .sum()
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApplyOutcome {
    /// The key was absent; the entry is stored.
    Inserted,
    /// The entry was newer than the stored one and replaced it.
    Replaced,
    /// The identical entry was already stored.
    Duplicate,
    /// The stored entry is newer; the incoming one was dropped.
    Stale,
}

impl ApplyOutcome {
    /// Whether the store changed (worth persisting, and counting as a repair).
    pub const fn changed(self) -> bool {
        matches!(self, Self::Inserted | Self::Replaced)
    }
}

/// A view of one stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Ring id of the key.
    pub id: u32,
    pub key: &'a str,
    pub entry: &'a Entry,
    /// Local time (ms) at which this replica stored the tombstone it holds; `None` for values.
    pub tombstone_since: Option<u64>,
    /// The entry's anti-entropy digest ([`tree::entry_digest`]).
    pub digest: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    entry: Entry,
    tombstone_since: Option<u64>,
    digest: Digest,
}

type SlotKey = (u32, String);

/// In-memory replica store. Deterministic: iteration is in `(key id, key)` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    limits: Limits,
    entries: BTreeMap<SlotKey, Slot>,
    tombstones: usize,
    highest_ts: u64,
    merkle: MerkleTree,
}

impl Default for Store {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Store {
    /// An empty store with a Merkle index of [`tree::DEFAULT_DEPTH`]. The index allocates its
    /// memory (128 KiB at the default depth) when the first entry is applied, not here.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            entries: BTreeMap::new(),
            tombstones: 0,
            highest_ts: 0,
            merkle: MerkleTree::new(tree::DEFAULT_DEPTH).expect("default depth is valid"),
        }
    }

    /// An empty store whose Merkle index has `depth` levels below the root (all peers of a ring
    /// MUST use the same depth).
    pub fn with_merkle_depth(limits: Limits, depth: u8) -> Result<Self, MerkleError> {
        Ok(Self {
            merkle: MerkleTree::new(depth)?,
            ..Self::new(limits)
        })
    }

    // ---- getters ----

    /// The limits entries are checked against.
    pub const fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of keys stored, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored (not even tombstones).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of tombstones stored.
    pub const fn tombstone_count(&self) -> usize {
        self.tombstones
    }

    /// Number of live (non-deleted) keys.
    pub fn live_len(&self) -> usize {
        self.entries.len() - self.tombstones
    }

    /// The highest Lamport timestamp ever applied (not lowered by removals). Feed it to
    /// `LamportClock::restore_at_least` after reloading persisted entries.
    pub const fn highest_ts(&self) -> u64 {
        self.highest_ts
    }

    /// The stored entry of `key`, tombstones included.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.get_record(key).map(|record| record.entry)
    }

    /// The stored entry of `key` with its metadata.
    pub fn get_record(&self, key: &str) -> Option<Record<'_>> {
        let slot_key = (key_id(key), key.to_owned());
        self.entries
            .get_key_value(&slot_key)
            .map(|(slot_key, slot)| record(slot_key, slot))
    }

    /// All entries in `(key id, key)` order.
    pub fn iter(&self) -> impl Iterator<Item = Record<'_>> {
        self.entries
            .iter()
            .map(|(slot_key, slot)| record(slot_key, slot))
    }

    /// Entries whose key id lies in `range`, clockwise from `range.from`.
    pub fn range(&self, range: RingRange) -> impl Iterator<Item = Record<'_>> {
        range
            .linear_pieces()
            .into_iter()
            .flatten()
            .flat_map(move |(lo, hi)| self.ids_between(lo, hi))
    }

    /// Entries whose key id lies in both `range` and the id span of Merkle node `node` (the
    /// contents to exchange for a differing subtree).
    pub fn node_entries(
        &self,
        range: RingRange,
        node: NodeRef,
    ) -> impl Iterator<Item = Record<'_>> {
        let (lo, hi) = node.span();
        self.ids_between(lo, hi)
            .filter(move |record| range.contains(record.id))
    }

    /// Entries whose key id lies in `[lo, hi]` (linear, no wrap).
    pub fn ids_between(&self, lo: u32, hi: u32) -> impl Iterator<Item = Record<'_>> {
        let start = Bound::Included((lo, String::new()));
        let end = match hi.checked_add(1) {
            Some(next) => Bound::Excluded((next, String::new())),
            None => Bound::Unbounded,
        };
        let scan = (lo <= hi).then(|| self.entries.range((start, end)));
        scan.into_iter()
            .flatten()
            .map(|(slot_key, slot)| record(slot_key, slot))
    }

    /// The whole-ring Merkle index, maintained incrementally.
    pub const fn merkle(&self) -> &MerkleTree {
        &self.merkle
    }

    /// The Merkle tree of the entries in `range`, for anti-entropy with a neighbour that
    /// replicates the same range. Costs O(depth + entries in the two boundary leaves).
    pub fn range_tree(&self, range: RingRange) -> RangeTree<'_> {
        RangeTree::new(self, range)
    }

    // ---- mutators ----

    /// Merges `entry` for `key` under LWW. `now` (local ms) stamps a newly stored tombstone for
    /// [`collect_tombstones`](Self::collect_tombstones). Entries from remote peers go through the
    /// same checks: an `Err` means "drop and count".
    pub fn apply(&mut self, key: &str, entry: Entry, now: u64) -> Result<ApplyOutcome, LimitError> {
        self.limits.check(key, &entry)?;
        self.highest_ts = self.highest_ts.max(entry.version.ts);
        let id = key_id(key);
        let slot_key = (id, key.to_owned());
        let tombstone_since = entry.is_tombstone().then_some(now);
        match self.entries.get_mut(&slot_key) {
            None => {
                let digest = tree::entry_digest(key, &entry);
                self.merkle.insert(id, digest);
                self.tombstones += usize::from(entry.is_tombstone());
                self.entries.insert(
                    slot_key,
                    Slot {
                        entry,
                        tombstone_since,
                        digest,
                    },
                );
                Ok(ApplyOutcome::Inserted)
            }
            Some(slot) => match entry.cmp(&slot.entry) {
                Ordering::Less => Ok(ApplyOutcome::Stale),
                Ordering::Equal => Ok(ApplyOutcome::Duplicate),
                Ordering::Greater => {
                    let digest = tree::entry_digest(key, &entry);
                    self.merkle.update(id, Some(slot.digest), Some(digest));
                    self.tombstones -= usize::from(slot.entry.is_tombstone());
                    self.tombstones += usize::from(entry.is_tombstone());
                    *slot = Slot {
                        entry,
                        tombstone_since,
                        digest,
                    };
                    Ok(ApplyOutcome::Replaced)
                }
            },
        }
    }

    /// Forgets `key` entirely (no tombstone): for handoff of a key this peer no longer
    /// replicates. To *delete*, apply a tombstone instead.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        self.remove_slot(&(key_id(key), key.to_owned()))
    }

    /// Forgets every entry in `range`; returns how many.
    pub fn remove_range(&mut self, range: RingRange) -> usize {
        self.drain_range(range).len()
    }

    /// Removes and returns every entry in `range`, clockwise from `range.from` (handoff).
    pub fn drain_range(&mut self, range: RingRange) -> Vec<(String, Entry)> {
        let doomed: Vec<SlotKey> = self
            .range(range)
            .map(|record| (record.id, record.key.to_owned()))
            .collect();
        self.remove_all(doomed)
    }

    /// Drops every tombstone stored at least `grace_ms` ago (`tombstone_since + grace_ms <= now`)
    /// for which `may_drop` says yes, and returns them. The caller's predicate MUST only say yes
    /// once every replica of the key holds this tombstone or a newer entry (see the module docs).
    /// Scans all entries: O(n), meant for a periodic background job.
    pub fn collect_tombstones(
        &mut self,
        now: u64,
        grace_ms: u64,
        mut may_drop: impl FnMut(&Record<'_>) -> bool,
    ) -> Vec<(String, Entry)> {
        if self.tombstones == 0 {
            return Vec::new();
        }
        let doomed: Vec<SlotKey> = self
            .iter()
            .filter(|record| {
                record
                    .tombstone_since
                    .is_some_and(|since| since.saturating_add(grace_ms) <= now)
                    && may_drop(record)
            })
            .map(|record| (record.id, record.key.to_owned()))
            .collect();
        self.remove_all(doomed)
    }

    /// Drops `key` only if this store holds exactly the tombstone of `version` (a collection
    /// ordered by the key's owner, see [`crate::replication`], "Tombstone collection"). A value,
    /// a newer write or another tombstone is kept: the owner proved that *its* tombstone may go,
    /// nothing else. Returns whether the key was dropped.
    pub fn forget_tombstone(&mut self, key: &str, version: &Version) -> bool {
        let slot_key = (key_id(key), key.to_owned());
        let exact = self
            .entries
            .get(&slot_key)
            .is_some_and(|slot| slot.entry.is_tombstone() && slot.entry.version == *version);
        exact && self.remove_slot(&slot_key).is_some()
    }

    fn remove_all(&mut self, doomed: Vec<SlotKey>) -> Vec<(String, Entry)> {
        doomed
            .into_iter()
            .filter_map(|slot_key| {
                let entry = self.remove_slot(&slot_key)?;
                Some((slot_key.1, entry))
            })
            .collect()
    }

    fn remove_slot(&mut self, slot_key: &SlotKey) -> Option<Entry> {
        let slot = self.entries.remove(slot_key)?;
        if self.entries.is_empty() {
            // The tree of nothing is all zeros: give its memory back (handoff of a whole range).
            self.merkle.clear();
        } else {
            self.merkle.remove(slot_key.0, slot.digest);
        }
        self.tombstones -= usize::from(slot.entry.is_tombstone());
        Some(slot.entry)
    }
}

fn record<'a>((id, key): &'a SlotKey, slot: &'a Slot) -> Record<'a> {
    Record {
        id: *id,
        key,
        entry: &slot.entry,
        tombstone_since: slot.tombstone_since,
        digest: slot.digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_is_the_sha1_prefix() {
        // SHA-1("") = da39a3ee...
        assert_eq!(key_id(""), 0xda39_a3ee);
    }

    #[test]
    fn escaped_len_matches_serde_json() {
        for s in [
            "plain",
            "quote\"back\\slash",
            "tab\tnl\ncr\r\u{8}\u{c}",
            "\u{1}\u{1f}",
            "héllo ✓",
            "\u{7f}",
        ] {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json_escaped_len(s), json.len() - 2, "{s:?}");
        }
    }

    #[test]
    fn ring_range_pieces() {
        assert_eq!(
            RingRange::new(5, 5).linear_pieces(),
            [Some((6, u32::MAX)), Some((0, 5))]
        );
        assert_eq!(
            RingRange::full().linear_pieces(),
            [Some((0, u32::MAX)), None]
        );
        assert!(RingRange::new(5, 5).contains(5));
        assert_eq!(RingRange::new(5, 9).linear_pieces(), [Some((6, 9)), None]);
        assert_eq!(
            RingRange::new(u32::MAX, 3).linear_pieces(),
            [Some((0, 3)), None]
        );
        assert_eq!(
            RingRange::new(9, 5).linear_pieces(),
            [Some((10, u32::MAX)), Some((0, 5))]
        );
        assert!(RingRange::new(9, 5).contains(0));
        assert!(!RingRange::new(9, 5).contains(9));
        assert!(RingRange::new(9, 5).contains(5));
    }

    #[test]
    fn merkle_memory_is_lazy() {
        let mut store = Store::default();
        assert_eq!(store.merkle().allocated_bytes(), 0);
        assert!(store.range_tree(RingRange::new(3, 9)).root().is_zero());
        assert_eq!(store, Store::default());
        store.apply("a", Entry::live("1", 1, "w"), 0).unwrap();
        assert_eq!(store.merkle().allocated_bytes(), 16 * ((1 << 13) - 1));
        store.remove("a");
        assert_eq!(store.merkle().allocated_bytes(), 0);
        assert_eq!(store.merkle(), Store::default().merkle());
    }

    #[test]
    fn counters_follow_changes() {
        let mut store = Store::default();
        store.apply("a", Entry::live("1", 1, "w"), 0).unwrap();
        store.apply("b", Entry::tombstone(1, "w"), 0).unwrap();
        assert_eq!(
            (store.len(), store.tombstone_count(), store.live_len()),
            (2, 1, 1)
        );
        store.apply("a", Entry::tombstone(2, "w"), 0).unwrap();
        assert_eq!(store.tombstone_count(), 2);
        store.apply("b", Entry::live("2", 3, "w"), 0).unwrap();
        assert_eq!(store.tombstone_count(), 1);
        assert_eq!(store.highest_ts(), 3);
        store.remove("a");
        assert_eq!((store.len(), store.tombstone_count()), (1, 0));
        assert_eq!(store.highest_ts(), 3);
    }

    #[test]
    fn collection_waits_for_the_grace_period_and_the_predicate() {
        let mut store = Store::default();
        store.apply("live", Entry::live("1", 1, "w"), 0).unwrap();
        store.apply("old", Entry::tombstone(2, "w"), 100).unwrap();
        store.apply("new", Entry::tombstone(3, "w"), 500).unwrap();
        // Nothing is old enough yet.
        assert!(store.collect_tombstones(599, 500, |_| true).is_empty());
        // "old" is (100 + 500 <= 600), but the caller does not allow it yet.
        assert!(store.collect_tombstones(600, 500, |_| false).is_empty());
        let dropped = store.collect_tombstones(600, 500, |r| r.key != "new");
        assert_eq!(dropped, vec![("old".to_owned(), Entry::tombstone(2, "w"))]);
        assert_eq!((store.len(), store.tombstone_count()), (2, 1));
        // Values are never collected, whatever their age and the predicate.
        let dropped = store.collect_tombstones(u64::MAX, 0, |_| true);
        assert_eq!(dropped, vec![("new".to_owned(), Entry::tombstone(3, "w"))]);
        assert_eq!(store.get("live"), Some(&Entry::live("1", 1, "w")));
        assert_eq!((store.len(), store.tombstone_count()), (1, 0));
        // The Merkle index forgot the collected entries: it equals that of a fresh store
        // holding only the live key.
        let mut fresh = Store::default();
        fresh.apply("live", Entry::live("1", 1, "w"), 0).unwrap();
        assert_eq!(store.merkle(), fresh.merkle());
    }

    #[test]
    fn a_replaced_tombstone_restarts_its_grace_period() {
        let mut store = Store::default();
        store.apply("k", Entry::tombstone(1, "w"), 0).unwrap();
        store.apply("k", Entry::tombstone(2, "w"), 1_000).unwrap();
        assert_eq!(store.get_record("k").unwrap().tombstone_since, Some(1_000));
        assert!(store.collect_tombstones(1_400, 500, |_| true).is_empty());
        assert_eq!(store.collect_tombstones(1_500, 500, |_| true).len(), 1);
        // A live value replacing a tombstone is not a tombstone any more.
        store.apply("v", Entry::tombstone(1, "w"), 0).unwrap();
        store.apply("v", Entry::live("x", 2, "w"), 10).unwrap();
        assert_eq!(store.get_record("v").unwrap().tombstone_since, None);
        assert!(store.collect_tombstones(u64::MAX, 0, |_| true).is_empty());
    }

    #[test]
    fn forget_tombstone_drops_only_that_exact_tombstone() {
        let mut store = Store::default();
        store.apply("k", Entry::tombstone(5, "w"), 0).unwrap();
        store.apply("v", Entry::live("x", 5, "w"), 0).unwrap();
        // Another version (older, newer, other writer) is not the one the owner collected.
        assert!(!store.forget_tombstone("k", &Version::new(4, "w")));
        assert!(!store.forget_tombstone("k", &Version::new(6, "w")));
        assert!(!store.forget_tombstone("k", &Version::new(5, "x")));
        // A live value of that exact version (only a misbehaving writer makes one) is kept.
        assert!(!store.forget_tombstone("v", &Version::new(5, "w")));
        assert!(!store.forget_tombstone("absent", &Version::new(5, "w")));
        assert_eq!((store.len(), store.tombstone_count()), (2, 1));
        assert!(store.forget_tombstone("k", &Version::new(5, "w")));
        assert_eq!((store.len(), store.tombstone_count()), (1, 0));
        assert!(!store.forget_tombstone("k", &Version::new(5, "w")));
        // A newer write that arrived after the collection order was sent survives it.
        store.apply("k", Entry::live("again", 7, "w"), 0).unwrap();
        assert!(!store.forget_tombstone("k", &Version::new(5, "w")));
        assert_eq!(store.get("k"), Some(&Entry::live("again", 7, "w")));
    }
}
