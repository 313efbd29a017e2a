//! Merkle anti-entropy: equal replicas have equal roots; divergent replicas find exactly the
//! keys that differ, at a cost in hashes that grows with the differences, not with the keys;
//! the incrementally maintained tree always equals a rebuild; rounds run purely through
//! `open_round` + `handle` end by themselves with the range equal on both sides, in frames
//! under the size limit, and hostile messages are refused or dropped, never a panic.

use node_core::merkle::{
    self, Digest, MAX_SYNC_MESSAGE_BYTES, MerkleTree, NodeHash, NodeRef, NodeSummary, StepOptions,
    SummaryChunk, SummaryItem, SyncError, SyncHashes, SyncMsg, compare_summary, diff_step,
    entry_digest, handle, in_sync_round_bytes, open_round, summarize,
};
use node_core::store::{Entry, Limits, RingRange, Store, Version, key_id};
use proptest::collection::vec;
use proptest::prelude::*;
use serde::Serialize;
use std::collections::{BTreeSet, VecDeque};

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

// ---- the message-driven session: `open_round` + `handle` on both sides ----

/// The wire envelope the node wraps a sync message in: `{"v":1,"m":{"t":"sync","c":..}}`.
#[derive(Serialize)]
struct Frame<'a> {
    v: u8,
    m: Tagged<'a>,
}

#[derive(Serialize)]
#[serde(tag = "t", content = "c", rename_all = "snake_case")]
enum Tagged<'a> {
    Sync(&'a SyncMsg),
}

fn framed_len(message: &SyncMsg) -> usize {
    let frame = Frame {
        v: 1,
        m: Tagged::Sync(message),
    };
    serde_json::to_vec(&frame).unwrap().len()
}

#[derive(Debug, Default)]
struct Traffic {
    messages: usize,
    bytes: usize,
    largest: usize,
    /// Node hashes sent in `Hashes` messages.
    hashes: usize,
    /// Entries sent in `Entries` messages.
    entries: usize,
    applied: usize,
    in_sync: [bool; 2],
}

/// One round between `a` (initiator) and `b`, every message serialized, parsed back and handed
/// to `handle` of the other side, until nobody has anything to say. Panics past `bound`
/// messages: a round must end by itself.
fn session_round(
    a: &mut Store,
    b: &mut Store,
    range: RingRange,
    options: &StepOptions,
    bound: usize,
) -> Traffic {
    let mut traffic = Traffic::default();
    let mut in_flight = VecDeque::from([(1, open_round(a, range))]);
    while let Some((to, message)) = in_flight.pop_front() {
        traffic.messages += 1;
        assert!(traffic.messages <= bound, "round did not end: {traffic:?}");
        let len = framed_len(&message);
        assert!(
            len <= MAX_SYNC_MESSAGE_BYTES,
            "{} message of {len} bytes",
            message.kind()
        );
        traffic.bytes += len;
        traffic.largest = traffic.largest.max(len);
        match &message {
            SyncMsg::Hashes(hashes) => traffic.hashes += hashes.nodes.len(),
            SyncMsg::Entries { entries, .. } => traffic.entries += entries.len(),
            _ => {}
        }
        assert_eq!(message.range(), range);
        let wire = serde_json::to_vec(&message).unwrap();
        let message: SyncMsg = serde_json::from_slice(&wire).unwrap();
        let store = if to == 0 { &mut *a } else { &mut *b };
        let handled = handle(store, message, 5, options).unwrap();
        assert_eq!(handled.dropped, 0);
        assert!(!handled.truncated);
        assert_eq!(handled.stored.len(), handled.applied);
        for (key, entry) in &handled.stored {
            assert_eq!(store.get(key), Some(entry));
        }
        traffic.applied += handled.applied;
        traffic.in_sync[to] |= handled.in_sync;
        in_flight.extend(handled.replies.into_iter().map(|reply| (1 - to, reply)));
    }
    traffic
}

#[test]
fn in_sync_round_is_an_opening_and_an_equal_whatever_the_key_count() {
    for keys in [0, 1, 1_000, 20_000] {
        let mut a = store_with(merkle::DEFAULT_DEPTH, keys);
        let mut b = a.clone();
        for range in [
            RingRange::full(),
            RingRange::new(u32::MAX - 5, u32::MAX - 6),
            RingRange::new(0x9000_0000, 0x1000_0000),
        ] {
            let traffic = session_round(&mut a, &mut b, range, &StepOptions::default(), 2);
            assert_eq!(traffic.messages, 2);
            assert_eq!(traffic.in_sync, [true, true]);
            assert_eq!(
                traffic.bytes,
                in_sync_round_bytes(range, merkle::DEFAULT_DEPTH) + 2 * framed_len_overhead()
            );
            assert!(
                traffic.bytes < 300,
                "{} bytes per in-sync round with {keys} keys",
                traffic.bytes
            );
        }
    }
}

fn framed_len_overhead() -> usize {
    let message = SyncMsg::Equal {
        range: RingRange::full(),
        depth: 1,
    };
    framed_len(&message) - serde_json::to_vec(&message).unwrap().len()
}

/// Random keys with ~32-byte values, the same on both replicas.
fn random_store(depth: u8, keys: usize, rng: &mut Rng) -> Store {
    let mut store = Store::with_merkle_depth(Limits::default(), depth).unwrap();
    for _ in 0..keys {
        let key = format!("user:{:016x}", rng.next());
        let value = format!("{:016x}{:016x}", rng.next(), rng.next());
        store
            .apply(&key, Entry::live(value, 10, "leader"), 0)
            .unwrap();
    }
    store
}

#[test]
fn traffic_grows_with_the_differences_not_the_keys() {
    let depth = merkle::DEFAULT_DEPTH;
    let options = StepOptions::default();
    let steps = usize::from(depth).div_ceil(usize::from(options.expand_levels));
    for keys in [1_000, 20_000] {
        let mut rng = Rng(keys as u64);
        let base = random_store(depth, keys, &mut rng);
        let full_map =
            serde_json::to_vec(&base.iter().map(|r| (r.key, r.entry)).collect::<Vec<_>>())
                .unwrap()
                .len();
        for d in [1, 10, 100] {
            let mut a = base.clone();
            let mut b = base.clone();
            for _ in 0..d {
                diverge_random(
                    if rng.below(2) == 0 { &mut a } else { &mut b },
                    &base,
                    &mut rng,
                );
            }
            let range = RingRange::full();
            let differing = differing_keys(&a, &b, range).len();
            let traffic = session_round(&mut a, &mut b, range, &options, 10_000);
            assert!(differing_keys(&a, &b, range).is_empty());
            assert_eq!(a.merkle().root(), b.merkle().root());
            assert_eq!(traffic.in_sync, [false, false]);
            assert!(traffic.applied >= differing && traffic.entries <= 2 * differing);
            assert!(traffic.hashes <= 1 + differing * 4 * steps, "{traffic:?}");
            // O(depth) messages: per descent step one hashes message, one summary message and
            // the entry/want answers to it.
            assert!(traffic.messages <= 1 + 6 * (steps + 1), "{traffic:?}");
            // Hashes (~46 bytes) per difference and level, a leaf summary and the entries.
            let per_difference = 46 * 4 * steps + 2_000;
            assert!(
                traffic.bytes <= 1_000 + differing * per_difference,
                "{keys} keys, {differing} differing: {traffic:?}"
            );
            if d <= 10 {
                assert!(traffic.bytes * 5 < full_map, "{traffic:?} vs {full_map}");
            }
        }
    }
}

/// A write that makes `store` differ from `base` by one more key: a newer value, a delete or a
/// new key.
fn diverge_random(store: &mut Store, base: &Store, rng: &mut Rng) {
    let ts = 11 + rng.below(1_000);
    let existing = (!base.is_empty()).then(|| {
        let at = rng.below(base.len() as u64) as usize;
        base.iter().nth(at).unwrap().key.to_owned()
    });
    match (rng.below(3), existing) {
        (0, Some(key)) => {
            store
                .apply(&key, Entry::live("changed", ts, "w"), 0)
                .unwrap();
        }
        (1, Some(key)) => {
            store.apply(&key, Entry::tombstone(ts, "w"), 0).unwrap();
        }
        _ => {
            let key = format!("new-{}", rng.next());
            store.apply(&key, Entry::live("fresh", ts, "w"), 0).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever diverged on either side, in any range (wrap-around included), one round of
    /// `handle` leaves the range identical, touches nothing outside it, and costs O(depth)
    /// messages and O(d · depth) hashes.
    #[test]
    fn a_session_round_makes_the_range_equal(
        seed in any::<u64>(),
        keys in 0usize..600,
        divergences in 0usize..16,
        depth in 0u8..=10,
        expand_levels in 1u8..=4,
        max_reply_nodes in prop_oneof![Just(3usize), Just(merkle::MAX_NODES_PER_MESSAGE)],
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
        let differing = differing_keys(&a, &b, range).len();
        let outside = |store: &Store| -> Vec<(String, Entry)> {
            store.iter().filter(|r| !range.contains(r.id)).map(|r| (r.key.to_owned(), r.entry.clone())).collect()
        };
        let (outside_a, outside_b) = (outside(&a), outside(&b));
        let options = StepOptions { expand_levels, max_reply_nodes, ..StepOptions::default() };

        let traffic = session_round(&mut a, &mut b, range, &options, 100_000);

        prop_assert!(differing_keys(&a, &b, range).is_empty());
        prop_assert_eq!(a.range_tree(range).root(), b.range_tree(range).root());
        prop_assert_eq!(outside(&a), outside_a);
        prop_assert_eq!(outside(&b), outside_b);
        let e = usize::from(expand_levels);
        let steps = usize::from(depth).div_ceil(e);
        if differing == 0 {
            prop_assert_eq!(traffic.messages, 2);
            prop_assert_eq!(traffic.in_sync, [true, true]);
        } else {
            prop_assert!(traffic.hashes <= 1 + differing * (1 << e) * steps, "{:?}", traffic);
            prop_assert!(traffic.entries <= 2 * differing, "{:?}", traffic);
            prop_assert!(traffic.applied >= differing, "{:?}", traffic);
            if max_reply_nodes == merkle::MAX_NODES_PER_MESSAGE {
                prop_assert!(traffic.messages <= 1 + 6 * (steps + 1), "{:?}", traffic);
            }
        }
    }

    /// Any message a peer can put on the wire yields an answer or an error, never a panic.
    #[test]
    fn arbitrary_sync_messages_never_panic(message in sync_msg_strategy(), keys in 0usize..200) {
        let mut store = store_with(6, keys);
        let before = store.clone();
        let range = message.range();
        match handle(&mut store, message, 0, &StepOptions::default()) {
            Ok(handled) => {
                for reply in &handled.replies {
                    prop_assert!(framed_len(reply) <= MAX_SYNC_MESSAGE_BYTES);
                }
                // Only entries of the message's range can have changed.
                let outside = |s: &Store| s.iter().filter(|r| !range.contains(r.id)).map(|r| (r.key.to_owned(), r.entry.clone())).collect::<Vec<_>>();
                prop_assert_eq!(outside(&store), outside(&before));
            }
            Err(_) => prop_assert_eq!(&store, &before),
        }
    }
}

fn sync_msg_strategy() -> impl Strategy<Value = SyncMsg> {
    let range = range_strategy().boxed();
    let depth = prop_oneof![Just(6u8), 0u8..=20];
    let node = (0u8..=8, any::<u32>()).prop_map(|(level, index)| {
        // Mostly valid nodes of a depth-6 tree, sometimes not.
        let index = if index % 8 == 0 {
            index
        } else {
            index % (1 << level)
        };
        NodeRef::new(level, index)
    });
    let key = prop_oneof![(0u32..300).prop_map(|i| format!("key-{i}")), "\\PC{0,12}",];
    let digest = prop_oneof![
        Just(Digest::ZERO),
        any::<[u8; 16]>().prop_map(Digest::from_bytes)
    ];
    let entry = (proptest::option::of("\\PC{0,20}"), 0u64..40, "[a-z]{0,3}").prop_map(
        |(value, ts, writer)| Entry {
            value,
            version: Version::new(ts, writer),
        },
    );
    let item = (key.clone(), 0u64..40, "[a-z]{1,3}", digest.clone()).prop_map(
        |(key, ts, writer, digest)| SummaryItem {
            key,
            version: Version::new(ts, writer),
            digest,
        },
    );
    let chunk = (
        node.clone(),
        proptest::option::of(key.clone()),
        proptest::option::of(key.clone()),
        vec(item, 0..20),
    )
        .prop_map(|(node, after, through, items)| SummaryChunk {
            node,
            after,
            through,
            items,
        });
    prop_oneof![
        (
            range.clone(),
            depth.clone(),
            vec(
                (node, digest).prop_map(|(node, hash)| NodeHash { node, hash }),
                0..40
            )
        )
            .prop_map(|(range, depth, nodes)| SyncMsg::Hashes(SyncHashes {
                range,
                depth,
                nodes
            })),
        (range.clone(), depth.clone()).prop_map(|(range, depth)| SyncMsg::Equal { range, depth }),
        (range.clone(), depth.clone(), vec(chunk, 0..6)).prop_map(|(range, depth, chunks)| {
            SyncMsg::Summaries {
                range,
                depth,
                chunks,
            }
        }),
        (
            range.clone(),
            depth.clone(),
            vec((key.clone(), entry), 0..30)
        )
            .prop_map(|(range, depth, entries)| SyncMsg::Entries {
                range,
                depth,
                entries
            }),
        (range, depth, vec(key, 0..30)).prop_map(|(range, depth, keys)| SyncMsg::Want {
            range,
            depth,
            keys
        }),
    ]
}

#[test]
fn entries_near_the_size_limit_travel_one_per_message() {
    let limits = Limits::default();
    let mut a = Store::default();
    let mut b = Store::default();
    let mut rng = Rng(3);
    for i in 0..6 {
        // A maximal key, writer and value; some values made of characters JSON escapes 6x.
        let key = format!("{i}-{}", "k".repeat(limits.max_key_bytes - 4));
        let writer = "w".repeat(limits.max_writer_bytes);
        let value = if i % 2 == 0 {
            "v".repeat(limits.max_value_bytes)
        } else {
            "\u{1}".repeat(limits.max_value_bytes / 6)
        };
        let holder = if i < 4 { &mut a } else { &mut b };
        holder
            .apply(&key, Entry::live(value, 1, writer), 0)
            .unwrap();
    }
    // Small entries on both sides, some of them only on one.
    for i in 0..300 {
        let entry = Entry::live(format!("{:032x}", rng.next()), 1, "w");
        a.apply(&format!("small-{i}"), entry.clone(), 0).unwrap();
        if i % 7 != 0 {
            b.apply(&format!("small-{i}"), entry, 0).unwrap();
        }
    }
    for range in [RingRange::full(), RingRange::new(0xc000_0000, 0x4000_0000)] {
        let (mut a, mut b) = (a.clone(), b.clone());
        let traffic = session_round(&mut a, &mut b, range, &StepOptions::default(), 1_000);
        assert!(differing_keys(&a, &b, range).is_empty());
        assert!(traffic.largest > 48 * 1024, "{traffic:?}");
    }
}

#[test]
fn replicas_that_share_nothing_converge_in_bounded_messages() {
    // Everything differs: one side empty, then both sides holding different versions of the
    // same 5000 keys (summaries and wants far larger than one message).
    let keys = 5_000;
    let depth = 6;
    let newer = {
        let mut store = Store::with_merkle_depth(Limits::default(), depth).unwrap();
        for i in 0..keys {
            let entry = Entry::live(format!("newer-value-{i}"), 20, "leader");
            store.apply(&format!("key-{i}"), entry, 0).unwrap();
        }
        store
    };
    let older = store_with(depth, keys);
    let empty = Store::with_merkle_depth(Limits::default(), depth).unwrap();
    for (first, second) in [
        (empty.clone(), newer.clone()),
        (newer.clone(), empty),
        (older.clone(), newer.clone()),
        (newer, older),
    ] {
        let (mut a, mut b) = (first, second);
        let range = RingRange::new(key_id("key-17"), key_id("key-4"));
        let traffic = session_round(&mut a, &mut b, range, &StepOptions::default(), 1_000);
        assert!(differing_keys(&a, &b, range).is_empty());
        assert!(traffic.largest <= MAX_SYNC_MESSAGE_BYTES);
        assert!(traffic.messages < 200, "{traffic:?}");
    }
}

#[test]
fn hostile_session_messages_are_refused_or_dropped() {
    let mut store = store_with(4, 50);
    let before = store.clone();
    let range = RingRange::new(0x4000_0000, 0x8000_0000);
    let options = StepOptions::default();
    let mut apply = |message| handle(&mut store, message, 0, &options);

    assert_eq!(
        apply(SyncMsg::Equal { range, depth: 5 }),
        Err(SyncError::DepthMismatch { mine: 4, theirs: 5 })
    );
    let nodes = vec![
        NodeHash {
            node: NodeRef::new(1, 0),
            hash: Digest::from_bytes([7; 16]),
        };
        merkle::MAX_NODES_PER_MESSAGE + 1
    ];
    let hashes = SyncHashes {
        range,
        depth: 4,
        nodes,
    };
    assert!(matches!(
        apply(SyncMsg::Hashes(hashes)),
        Err(SyncError::TooManyItems { .. })
    ));
    let bad_node = SyncHashes {
        range,
        depth: 4,
        nodes: vec![NodeHash {
            node: NodeRef::new(5, 0),
            hash: Digest::ZERO,
        }],
    };
    assert!(matches!(
        apply(SyncMsg::Hashes(bad_node)),
        Err(SyncError::InvalidNode { .. })
    ));
    // A summary of a node the range does not reach: (0x4000_0000, 0x8000_0000] misses
    // [0, 0x3fff_ffff].
    let chunk = SummaryChunk {
        node: NodeRef::new(2, 0),
        after: None,
        through: None,
        items: Vec::new(),
    };
    assert_eq!(
        apply(SyncMsg::Summaries {
            range,
            depth: 4,
            chunks: vec![chunk],
        }),
        Err(SyncError::NodeOutsideRange { level: 2, index: 0 })
    );
    let entry = Entry::live("x", 99, "w");
    let too_many = vec![("key-1".to_owned(), entry.clone()); merkle::MAX_ENTRIES_PER_MESSAGE + 1];
    assert!(matches!(
        apply(SyncMsg::Entries {
            range,
            depth: 4,
            entries: too_many,
        }),
        Err(SyncError::TooManyItems { .. })
    ));
    assert!(matches!(
        apply(SyncMsg::Want {
            range,
            depth: 4,
            keys: vec![String::new(); merkle::MAX_WANT_KEYS + 1],
        }),
        Err(SyncError::TooManyItems { .. })
    ));

    // Items outside the range, or refused by the limits, are dropped and counted.
    let outside = (0..)
        .map(|i| format!("key-{i}"))
        .find(|key| !range.contains(key_id(key)))
        .unwrap();
    let inside = (0..)
        .map(|i| format!("key-{i}"))
        .find(|key| range.contains(key_id(key)))
        .unwrap();
    let handled = apply(SyncMsg::Entries {
        range,
        depth: 4,
        entries: vec![
            (outside.clone(), entry.clone()),
            (inside.clone(), Entry::live("x", 99, "")),
        ],
    })
    .unwrap();
    assert_eq!((handled.applied, handled.dropped), (0, 2));
    let handled = apply(SyncMsg::Want {
        range,
        depth: 4,
        keys: vec![outside, inside.clone(), inside],
    })
    .unwrap();
    assert_eq!(handled.dropped, 1);
    assert!(matches!(
        handled.replies.as_slice(),
        [SyncMsg::Entries { entries, .. }] if entries.len() == 1
    ));
    assert_eq!(store, before);

    // A digest that is not 32 hex digits never becomes a message.
    let json = r#"{"s":"hashes","c":{"range":{"from":1,"to":2},"depth":4,"nodes":[[0,0,"zz"]]}}"#;
    assert!(serde_json::from_str::<SyncMsg>(json).is_err());
}

#[test]
fn sync_msg_json_is_adjacently_tagged() {
    let message = SyncMsg::Equal {
        range: RingRange::new(1, 2),
        depth: 12,
    };
    assert_eq!(
        serde_json::to_string(&message).unwrap(),
        r#"{"s":"equal","c":{"range":{"from":1,"to":2},"depth":12}}"#
    );
    let opening = open_round(&store_with(12, 3), RingRange::new(1, 2));
    assert!(opening.is_opening());
    let json = serde_json::to_string(&opening).unwrap();
    assert!(
        json.starts_with(
            r#"{"s":"hashes","c":{"range":{"from":1,"to":2},"depth":12,"nodes":[[0,0,""#
        )
    );
}
