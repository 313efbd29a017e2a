//! Last-writer-wins: merge is a semilattice join, replicas converge whatever the arrival order,
//! tombstones are ordinary writes, limits are typed errors, ranges wrap around the ring.

use node_core::merkle::{MerkleTree, entry_digest};
use node_core::store::{
    ApplyOutcome, Entry, LimitError, Limits, RingRange, Store, Version, key_id, merge,
};
use proptest::collection::vec;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Entries from a tiny domain, so ties on `ts`, on `(ts, writer)` and on everything happen often.
fn entry() -> impl Strategy<Value = Entry> {
    (
        0u64..4,
        prop::sample::select(vec!["a", "b", "c"]),
        prop::option::of(prop::sample::select(vec!["", "x", "y"])),
    )
        .prop_map(|(ts, writer, value)| Entry {
            value: value.map(str::to_owned),
            version: Version::new(ts, writer),
        })
}

fn contents(store: &Store) -> Vec<(String, Entry)> {
    store
        .iter()
        .map(|record| (record.key.to_owned(), record.entry.clone()))
        .collect()
}

fn rebuilt(store: &Store) -> MerkleTree {
    MerkleTree::build(
        store.merkle().depth(),
        store
            .iter()
            .map(|record| (record.id, entry_digest(record.key, record.entry))),
    )
    .unwrap()
}

proptest! {
    #[test]
    fn merge_is_commutative(a in entry(), b in entry()) {
        prop_assert_eq!(merge(a.clone(), b.clone()), merge(b, a));
    }

    #[test]
    fn merge_is_associative(a in entry(), b in entry(), c in entry()) {
        prop_assert_eq!(
            merge(merge(a.clone(), b.clone()), c.clone()),
            merge(a, merge(b, c))
        );
    }

    #[test]
    fn merge_is_idempotent(a in entry()) {
        prop_assert_eq!(merge(a.clone(), a.clone()), a);
    }

    #[test]
    fn merge_picks_the_newer(a in entry(), b in entry()) {
        let winner = merge(a.clone(), b.clone());
        if a.newer_than(&b) {
            prop_assert_eq!(&winner, &a);
        } else if b.newer_than(&a) {
            prop_assert_eq!(&winner, &b);
        } else {
            prop_assert_eq!(&a, &b, "entries that neither beats must be identical");
        }
        prop_assert!(winner.version >= a.version && winner.version >= b.version);
    }

    /// Replicas that receive the same writes in any order end in the same state, and it is the
    /// per-key LWW maximum.
    #[test]
    fn any_arrival_order_converges(
        (writes, shuffled) in vec((prop::sample::select(vec!["k1", "k2", "k3", "k4"]), entry()), 0..24)
            .prop_flat_map(|writes| (Just(writes.clone()), Just(writes).prop_shuffle()))
    ) {
        let mut first = Store::default();
        let mut second = Store::default();
        for (key, entry) in &writes {
            first.apply(key, entry.clone(), 0).unwrap();
        }
        for (key, entry) in &shuffled {
            second.apply(key, entry.clone(), 0).unwrap();
        }
        prop_assert_eq!(contents(&first), contents(&second));
        prop_assert_eq!(first.merkle().root(), second.merkle().root());

        let mut expected: BTreeMap<&str, Entry> = BTreeMap::new();
        for (key, entry) in &writes {
            let slot = expected.entry(key).or_insert_with(|| entry.clone());
            *slot = merge(slot.clone(), entry.clone());
        }
        for (key, winner) in expected {
            prop_assert_eq!(first.get(key), Some(&winner));
        }
        prop_assert_eq!(first.merkle(), &rebuilt(&first));
    }

    #[test]
    fn apply_reports_what_it_did(old in entry(), new in entry()) {
        let mut store = Store::default();
        prop_assert_eq!(store.apply("k", old.clone(), 0).unwrap(), ApplyOutcome::Inserted);
        let outcome = store.apply("k", new.clone(), 0).unwrap();
        let expected = if new.newer_than(&old) {
            ApplyOutcome::Replaced
        } else if new == old {
            ApplyOutcome::Duplicate
        } else {
            ApplyOutcome::Stale
        };
        prop_assert_eq!(outcome, expected);
        prop_assert_eq!(store.get("k"), Some(&merge(old, new)));
    }

    /// `range` returns exactly the keys whose id is in `(from, to]`, clockwise from `from`.
    #[test]
    fn range_wraps_around(
        (from, to) in any::<u32>().prop_flat_map(|from| (Just(from), prop_oneof![Just(from), any::<u32>()])),
        keys in 0usize..200,
    ) {
        let mut store = Store::default();
        for i in 0..keys {
            store.apply(&format!("key-{i}"), Entry::live("v", 1, "w"), 0).unwrap();
        }
        let range = RingRange::new(from, to);
        let got: Vec<u32> = store.range(range).map(|record| record.id).collect();
        let mut expected: Vec<u32> = store.iter().map(|record| record.id).filter(|id| range.contains(*id)).collect();
        // Clockwise from `from`: by distance from `from`, with `from` itself last (whole ring).
        expected.sort_by_key(|id| id.wrapping_sub(from).wrapping_sub(1));
        if from == to {
            prop_assert_eq!(got.len(), keys);
        }
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn tombstone_beats_older_and_loses_to_newer() {
    let mut store = Store::default();
    store.apply("k", Entry::live("v1", 5, "w"), 0).unwrap();
    assert_eq!(
        store.apply("k", Entry::tombstone(6, "w"), 100).unwrap(),
        ApplyOutcome::Replaced
    );
    assert!(store.get("k").unwrap().is_tombstone());
    assert_eq!(store.get_record("k").unwrap().tombstone_since, Some(100));

    // A late-arriving older write does not resurrect the key.
    assert_eq!(
        store.apply("k", Entry::live("v0", 4, "z"), 0).unwrap(),
        ApplyOutcome::Stale
    );
    assert!(store.get("k").unwrap().is_tombstone());

    // A newer write does.
    assert_eq!(
        store.apply("k", Entry::live("v2", 7, "w"), 200).unwrap(),
        ApplyOutcome::Replaced
    );
    assert_eq!(store.get("k").unwrap().as_value(), Some("v2"));
    assert_eq!(store.get_record("k").unwrap().tombstone_since, None);
}

#[test]
fn a_delete_of_an_unknown_key_is_remembered() {
    let mut store = Store::default();
    assert_eq!(
        store.apply("ghost", Entry::tombstone(3, "w"), 0).unwrap(),
        ApplyOutcome::Inserted
    );
    assert_eq!(
        store
            .apply("ghost", Entry::live("late", 2, "w"), 0)
            .unwrap(),
        ApplyOutcome::Stale
    );
    assert_eq!(
        (store.len(), store.live_len(), store.tombstone_count()),
        (1, 0, 1)
    );
}

#[test]
fn exact_ties_are_deterministic() {
    let value = Entry::live("b", 3, "w");
    let smaller = Entry::live("a", 3, "w");
    let delete = Entry::tombstone(3, "w");
    assert!(value.newer_than(&smaller));
    assert!(
        delete.newer_than(&value),
        "delete wins an exact version tie"
    );
    // Writer ids break timestamp ties bytewise.
    assert!(Entry::live("x", 3, "b").newer_than(&Entry::live("y", 3, "a")));
    // The timestamp dominates.
    assert!(Entry::live("x", 4, "a").newer_than(&Entry::tombstone(3, "z")));
}

#[test]
fn limits_produce_typed_errors() {
    let mut store = Store::default();
    let limits = Limits::default();
    assert_eq!(limits.max_key_bytes, 1024);
    assert_eq!(limits.max_value_bytes, 48 * 1024);
    assert_eq!(limits.max_writer_bytes, 128);

    let long_key = "k".repeat(1025);
    assert_eq!(
        store.apply(&long_key, Entry::live("v", 1, "w"), 0),
        Err(LimitError::KeyTooLarge {
            len: 1025,
            max: 1024
        })
    );
    let big_value = "v".repeat(48 * 1024 + 1);
    assert_eq!(
        store.apply("k", Entry::live(big_value, 1, "w"), 0),
        Err(LimitError::ValueTooLarge {
            len: 48 * 1024 + 1,
            max: 48 * 1024
        })
    );
    assert_eq!(
        store.apply("k", Entry::live("v", 1, "w".repeat(129)), 0),
        Err(LimitError::WriterTooLarge { len: 129, max: 128 })
    );
    assert_eq!(
        store.apply("k", Entry::live("v", 1, ""), 0),
        Err(LimitError::EmptyWriter)
    );
    // Sizes are what the string costs in a JSON frame: a quote costs two bytes.
    let quotes = "\"".repeat(30 * 1024);
    assert_eq!(
        store.apply("k", Entry::live(quotes, 1, "w"), 0),
        Err(LimitError::ValueTooLarge {
            len: 60 * 1024,
            max: 48 * 1024
        })
    );
    // Tombstones carry no value and are always small enough.
    assert!(store.apply("k", Entry::tombstone(1, "w"), 0).is_ok());
    assert!(store.is_empty() || store.len() == 1);
    assert_eq!(
        LimitError::KeyTooLarge { len: 2, max: 1 }.to_string(),
        "key of 2 bytes exceeds the 1-byte limit"
    );
}

#[test]
fn a_maximal_entry_fits_one_frame() {
    let limits = Limits::default();
    let key = "\u{1}".repeat(limits.max_key_bytes / 6);
    let entry = Entry::live(
        "v".repeat(limits.max_value_bytes),
        u64::MAX,
        "w".repeat(limits.max_writer_bytes),
    );
    limits.check(&key, &entry).unwrap();
    let json = serde_json::to_vec(&(key_id(&key), &key, &entry)).unwrap();
    assert!(
        json.len() + 4 * 1024 < 64 * 1024,
        "{} bytes leave too little for the envelope",
        json.len()
    );
}

#[test]
fn entries_round_trip_through_json() {
    for entry in [
        Entry::live("héllo \"x\"", 7, "node-1"),
        Entry::tombstone(8, "node-2"),
    ] {
        let json = serde_json::to_string(&entry).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), entry);
    }
}

#[test]
fn drain_range_hands_off_exactly_the_range() {
    let mut store = Store::default();
    for i in 0..500 {
        store
            .apply(&format!("key-{i}"), Entry::live("v", 1, "w"), 0)
            .unwrap();
    }
    let range = RingRange::new(0xf000_0000, 0x1000_0000); // wraps past zero
    let expected: Vec<String> = store
        .range(range)
        .map(|record| record.key.to_owned())
        .collect();
    assert!(!expected.is_empty());
    let drained = store.drain_range(range);
    assert_eq!(
        drained
            .iter()
            .map(|(key, _)| key.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(store.len(), 500 - expected.len());
    assert_eq!(store.range(range).count(), 0);
    assert_eq!(store.merkle(), &rebuilt(&store));

    let everything = RingRange::new(42, 42);
    assert_eq!(store.remove_range(everything), 500 - expected.len());
    assert!(store.is_empty());
    assert!(store.merkle().root().is_zero());
}

#[test]
fn tombstones_are_collected_after_grace_and_acknowledgement() {
    let mut store = Store::default();
    store.apply("old", Entry::tombstone(1, "w"), 1_000).unwrap();
    store
        .apply("acked-late", Entry::tombstone(1, "w"), 1_000)
        .unwrap();
    store
        .apply("young", Entry::tombstone(1, "w"), 9_000)
        .unwrap();
    store.apply("alive", Entry::live("v", 1, "w"), 0).unwrap();

    // Only "old" is acknowledged by every replica so far.
    let dropped = store.collect_tombstones(10_000, 5_000, |record| {
        record.key == "old" || record.key == "young"
    });
    assert_eq!(dropped, vec![("old".to_owned(), Entry::tombstone(1, "w"))]);
    assert!(store.get("young").is_some(), "grace period not over");
    assert!(store.get("acked-late").is_some(), "not acknowledged yet");
    assert!(store.get("alive").is_some());

    let dropped = store.collect_tombstones(20_000, 5_000, |_| true);
    assert_eq!(dropped.len(), 2);
    assert_eq!((store.len(), store.tombstone_count()), (1, 0));
    assert_eq!(store.merkle(), &rebuilt(&store));
    assert_eq!(store.highest_ts(), 1);
}
