//! Merkle anti-entropy: equal replicas have equal roots; divergent replicas find exactly the
//! keys that differ, at a cost in hashes that grows with the differences, not with the keys;
//! the incrementally maintained tree always equals a rebuild.

use node_core::merkle::{
    self, Digest, MerkleTree, NodeHash, NodeRef, NodeSummary, StepOptions, SummaryItem, SyncError,
    SyncHashes, compare_summary, diff_step, entry_digest, in_sync_round_bytes, summarize,
};
use node_core::store::{Entry, Limits, RingRange, Store, Version, key_id};
use proptest::collection::vec;
use proptest::prelude::*;
use std::collections::BTreeSet;

/// SplitMix64: test-local randomness, seeded by proptest.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn store_with(depth: u8, keys: usize) -> Store {
    let mut store = Store::with_merkle_depth(Limits::default(), depth).unwrap();
    for i in 0..keys {
        store
            .apply(
                &format!("key-{i}"),
                Entry::live(format!("v{i}"), 10, "leader"),
                0,
            )
            .unwrap();
    }
    store
}

/// Makes one replica diverge: a newer write, a delete, or a brand-new key.
fn diverge(store: &mut Store, rng: &mut Rng, keys: usize) {
    let ts = 11 + rng.below(1_000);
    match rng.below(3) {
        0 => {
            let key = format!("key-{}", rng.below(keys.max(1) as u64));
            store
                .apply(&key, Entry::live("changed", ts, "w"), 0)
                .unwrap();
        }
        1 => {
            let key = format!("key-{}", rng.below(keys.max(1) as u64));
            store.apply(&key, Entry::tombstone(ts, "w"), 0).unwrap();
        }
        _ => {
            let key = format!("new-{}", rng.next());
            store.apply(&key, Entry::live("fresh", ts, "w"), 0).unwrap();
        }
    }
}

/// Keys in `range` whose entries differ between the two replicas.
fn differing_keys(a: &Store, b: &Store, range: RingRange) -> BTreeSet<String> {
    let keys: BTreeSet<&str> = a
        .range(range)
        .chain(b.range(range))
        .map(|record| record.key)
        .collect();
    keys.into_iter()
        .filter(|key| a.get(key) != b.get(key))
        .map(str::to_owned)
        .collect()
}

#[derive(Debug, Default)]
struct Round {
    hashes_sent: usize,
    messages: usize,
    /// Keys named in `send` or `want` lists: what the exchange decided to move.
    exchanged: BTreeSet<String>,
}

/// One anti-entropy round between `a` (initiator) and `b`, run to completion in-process.
fn anti_entropy(
    a: &mut Store,
    b: &mut Store,
    range: RingRange,
    options: &StepOptions,
    budget: usize,
) -> Round {
    let mut round = Round::default();
    let mut message = SyncHashes::opening(&a.range_tree(range));
    round.hashes_sent += message.nodes.len();
    round.messages += 1;
    let mut found_by_a = Vec::new();
    let mut found_by_b = Vec::new();
    let mut b_turn = true;
    for _ in 0..=2 * usize::from(merkle::MAX_DEPTH) + 2 {
        let (me, found) = if b_turn {
            (&*b, &mut found_by_b)
        } else {
            (&*a, &mut found_by_a)
        };
        let step = diff_step(&me.range_tree(range), &message, options).unwrap();
        assert!(!step.truncated);
        found.extend(step.exchange);
        if step.reply.is_empty() {
            break;
        }
        round.hashes_sent += step.reply.nodes.len();
        round.messages += 1;
        message = step.reply;
        b_turn = !b_turn;
    }
    for node in found_by_a {
        exchange_node(a, b, range, node, budget, &mut round);
    }
    for node in found_by_b {
        exchange_node(b, a, range, node, budget, &mut round);
    }
    round
}

/// `finder` summarises the node; `peer` compares and sends what `finder` lacks, and answers
/// nothing but its wants, which `finder` fulfils.
fn exchange_node(
    finder: &mut Store,
    peer: &mut Store,
    range: RingRange,
    node: NodeRef,
    budget: usize,
    round: &mut Round,
) {
    for chunk in summarize(finder, range, node, budget) {
        let chunk: NodeSummary =
            serde_json::from_slice(&serde_json::to_vec(&chunk).unwrap()).unwrap();
        let comparison = compare_summary(peer, &chunk).unwrap();
        assert_eq!(comparison.misplaced, 0);
        round.messages += 2;
        for (key, entry) in comparison.send {
            assert!(finder.apply(&key, entry, 0).unwrap().changed());
            round.exchanged.insert(key);
        }
        for key in comparison.want {
            let entry = finder
                .get(&key)
                .expect("wanted keys exist at the summariser")
                .clone();
            assert!(peer.apply(&key, entry, 0).unwrap().changed());
            round.exchanged.insert(key);
        }
    }
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

fn every_node(depth: u8) -> impl Iterator<Item = NodeRef> {
    (0..=depth).flat_map(|level| (0..1u32 << level).map(move |index| NodeRef::new(level, index)))
}

fn range_strategy() -> impl Strategy<Value = RingRange> {
    prop_oneof![
        Just(RingRange::full()),
        any::<u32>().prop_map(|at| RingRange::new(at, at)),
        (any::<u32>(), any::<u32>()).prop_map(|(from, to)| RingRange::new(from, to)),
        // Boundaries on key ids, to hit the (from, to] edges exactly.
        (0u32..40, 0u32..40).prop_map(|(from, to)| RingRange::new(
            key_id(&format!("key-{from}")),
            key_id(&format!("key-{to}"))
        )),
    ]
}

#[test]
fn equal_replicas_have_equal_roots() {
    let mut forwards = Store::default();
    let mut backwards = Store::default();
    let writes: Vec<(String, Entry)> = (0..300)
        .map(|i| {
            (
                format!("key-{}", i % 120),
                Entry::live(format!("v{i}"), i, "w"),
            )
        })
        .collect();
    for (key, entry) in &writes {
        forwards.apply(key, entry.clone(), 0).unwrap();
    }
    for (key, entry) in writes.iter().rev() {
        backwards.apply(key, entry.clone(), 0).unwrap();
    }
    assert_eq!(forwards.merkle().root(), backwards.merkle().root());
    for range in [
        RingRange::full(),
        RingRange::new(7, 3),
        RingRange::new(0x1000_0000, 0x9000_0000),
    ] {
        assert_eq!(
            forwards.range_tree(range).root(),
            backwards.range_tree(range).root()
        );
    }
    assert!(!forwards.merkle().root().is_zero());
    assert!(Store::default().merkle().root().is_zero());
}

#[test]
fn in_sync_neighbours_exchange_one_root_whatever_the_key_count() {
    for keys in [0, 1, 1_000, 20_000] {
        let a = store_with(merkle::DEFAULT_DEPTH, keys);
        let b = a.clone();
        for range in [
            RingRange::full(),
            RingRange::new(u32::MAX - 5, u32::MAX - 6),
        ] {
            let opening = SyncHashes::opening(&a.range_tree(range));
            let step = diff_step(&b.range_tree(range), &opening, &StepOptions::default()).unwrap();
            assert!(step.reply.is_empty() && step.exchange.is_empty());
            let bytes = serde_json::to_vec(&opening).unwrap().len()
                + serde_json::to_vec(&step.reply).unwrap().len();
            assert_eq!(bytes, in_sync_round_bytes(range, merkle::DEFAULT_DEPTH));
            assert!(
                bytes < 256,
                "{bytes} bytes per in-sync round with {keys} keys"
            );
        }
    }
}

#[test]
fn few_differences_among_many_keys_cost_hashes_per_difference_not_per_key() {
    let keys = 20_000;
    let depth = merkle::DEFAULT_DEPTH;
    let mut rng = Rng(7);
    let mut a = store_with(depth, keys);
    let mut b = a.clone();
    for _ in 0..5 {
        diverge(&mut a, &mut rng, keys);
        diverge(&mut b, &mut rng, keys);
    }
    let range = RingRange::full();
    let differing = differing_keys(&a, &b, range);
    let options = StepOptions {
        expand_levels: 1,
        ..StepOptions::default()
    };
    let round = anti_entropy(
        &mut a,
        &mut b,
        range,
        &options,
        merkle::SUMMARY_BUDGET_BYTES,
    );
    assert_eq!(round.exchanged, differing);
    assert!(
        round.hashes_sent <= 1 + 2 * differing.len() * usize::from(depth),
        "{round:?}"
    );
    assert!(round.hashes_sent < keys / 50);
    assert_eq!(a.merkle().root(), b.merkle().root());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// After `d` random divergences on either side, one round finds exactly the differing keys
    /// in the range, sends O(d · depth) hashes, and leaves the range identical on both sides.
    #[test]
    fn a_round_repairs_exactly_the_differences(
        seed in any::<u64>(),
        keys in 0usize..600,
        divergences in 0usize..12,
        depth in 0u8..=10,
        expand_levels in 1u8..=4,
        budget in prop_oneof![Just(300usize), Just(merkle::SUMMARY_BUDGET_BYTES)],
        range in range_strategy(),
    ) {
        let mut rng = Rng(seed);
        let mut a = store_with(depth, keys);
        let mut b = a.clone();
        for _ in 0..divergences {
            if rng.below(2) == 0 {
                diverge(&mut a, &mut rng, keys);
            } else {
                diverge(&mut b, &mut rng, keys);
            }
        }
        let differing = differing_keys(&a, &b, range);
        let outside_before: Vec<_> = b.iter().filter(|r| !range.contains(r.id)).map(|r| (r.key.to_owned(), r.entry.clone())).collect();
        let options = StepOptions { expand_levels, ..StepOptions::default() };

        let round = anti_entropy(&mut a, &mut b, range, &options, budget);

        prop_assert_eq!(&round.exchanged, &differing);
        let d = differing.len();
        let e = usize::from(expand_levels);
        let steps = usize::from(depth).div_ceil(e);
        prop_assert!(round.hashes_sent <= 1 + d * (1 << e) * steps, "{:?} for {} differences", round, d);
        if d == 0 {
            prop_assert_eq!(round.hashes_sent, 1);
            prop_assert_eq!(round.messages, 1);
        }
        prop_assert!(differing_keys(&a, &b, range).is_empty());
        prop_assert_eq!(a.range_tree(range).root(), b.range_tree(range).root());
        // Nothing outside the range moved.
        let outside_after: Vec<_> = b.iter().filter(|r| !range.contains(r.id)).map(|r| (r.key.to_owned(), r.entry.clone())).collect();
        prop_assert_eq!(outside_before, outside_after);
    }

    /// The incrementally maintained tree equals a rebuild after any sequence of changes, and
    /// a range tree equals the tree of just the entries in the range, node for node.
    #[test]
    fn incremental_tree_equals_rebuild(
        ops in vec((0u8..6, 0u32..40, 0u64..8, any::<u32>()), 0..80),
        depth in 0u8..=6,
        range in range_strategy(),
    ) {
        let mut store = Store::with_merkle_depth(Limits::default(), depth).unwrap();
        for (kind, key, ts, extra) in ops {
            let key = format!("key-{key}");
            match kind {
                0 | 1 => { store.apply(&key, Entry::live(format!("v{extra}"), ts, "w"), 0).unwrap(); }
                2 => { store.apply(&key, Entry::tombstone(ts, "w"), u64::from(extra)).unwrap(); }
                3 => { store.remove(&key); }
                4 => { store.drain_range(RingRange::new(extra, extra.wrapping_add(1 << 28))); }
                _ => { store.collect_tombstones(u64::from(extra), 1_000, |record| record.id % 2 == 0); }
            }
            prop_assert_eq!(store.merkle(), &rebuilt(&store));
        }
        let in_range = MerkleTree::build(
            depth,
            store.range(range).map(|record| (record.id, record.digest)),
        ).unwrap();
        let view = store.range_tree(range);
        prop_assert_eq!(view.root(), in_range.root());
        for node in every_node(depth) {
            prop_assert_eq!(view.node_hash(node), in_range.node_hash(node), "node {:?}", node);
        }
        prop_assert_eq!(view.node_hash(NodeRef::new(depth + 1, 0)), None);
    }
}

#[test]
fn hostile_sync_messages_are_refused() {
    let store = store_with(4, 50);
    let tree = store.range_tree(RingRange::full());
    let options = StepOptions::default();
    let mut message = SyncHashes::opening(&tree);

    message.depth = 5;
    assert_eq!(
        diff_step(&tree, &message, &options),
        Err(SyncError::DepthMismatch { mine: 4, theirs: 5 })
    );
    message.depth = 4;

    message.nodes = vec![NodeHash {
        node: NodeRef::new(3, 8),
        hash: Digest::ZERO,
    }];
    assert_eq!(
        diff_step(&tree, &message, &options),
        Err(SyncError::InvalidNode {
            level: 3,
            index: 8,
            depth: 4
        })
    );
    message.nodes = vec![
        NodeHash {
            node: NodeRef::ROOT,
            hash: Digest::ZERO
        };
        merkle::MAX_NODES_PER_MESSAGE + 1
    ];
    assert!(matches!(
        diff_step(&tree, &message, &options),
        Err(SyncError::TooManyItems { .. })
    ));

    let other_range = RingRange::new(1, 2);
    message.nodes.clear();
    message.range = other_range;
    assert!(matches!(
        diff_step(&tree, &message, &options),
        Err(SyncError::RangeMismatch { .. })
    ));

    // Summary items that do not belong to the node, range or interval are counted, not used.
    let node = NodeRef::containing(key_id("key-1"), 4);
    let stranger = (0..)
        .map(|i| format!("stranger-{i}"))
        .find(|key| NodeRef::containing(key_id(key), 4) != node)
        .unwrap();
    let summary = NodeSummary {
        range: RingRange::full(),
        node,
        after: None,
        through: None,
        items: vec![SummaryItem {
            key: stranger,
            version: Version::new(1, "w"),
            digest: Digest::ZERO,
        }],
    };
    let comparison = compare_summary(&store, &summary).unwrap();
    assert_eq!(comparison.misplaced, 1);
    assert!(comparison.want.is_empty());

    let bad = NodeSummary {
        node: NodeRef::new(9, 0),
        ..summary
    };
    assert!(matches!(
        compare_summary(&store, &bad),
        Err(SyncError::InvalidNode { .. })
    ));
}

#[test]
fn sync_messages_are_compact_json() {
    let hash = NodeHash {
        node: NodeRef::new(12, 4095),
        hash: Digest::from_bytes([0xab; 16]),
    };
    let json = serde_json::to_string(&hash).unwrap();
    assert_eq!(json, format!("[12,4095,\"{}\"]", "ab".repeat(16)));
    assert_eq!(serde_json::from_str::<NodeHash>(&json).unwrap(), hash);
    let full = SyncHashes {
        range: RingRange::full(),
        depth: 16,
        nodes: vec![hash; merkle::MAX_NODES_PER_MESSAGE],
    };
    assert!(serde_json::to_vec(&full).unwrap().len() < 60 * 1024);
}
