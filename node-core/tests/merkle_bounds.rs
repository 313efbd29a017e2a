//! The work and the replies one anti-entropy message can cause are bounded, whatever the
//! sender claims (issue 11): a Summaries message of 1024 chunks naming the root is refused, an
//! opening with a zero root and a want list are answered with at most `MAX_REPLY_BYTES`, and
//! the rest follows in later rounds until the stores are equal.

use node_core::merkle::{
    self, DEFAULT_DEPTH, Digest, MAX_REPLY_BYTES, NodeHash, NodeRef, StepOptions, SummaryChunk,
    SyncHashes, SyncMsg,
};
use node_core::store::{Entry, Limits, RingRange, Store};

fn big_store(keys: usize) -> Store {
    let mut store = Store::new(Limits::default());
    let value = "x".repeat(200);
    for i in 0..keys {
        store
            .apply(
                &format!("key-{i}"),
                Entry::live(value.as_str(), i as u64 + 1, "w"),
                0,
            )
            .expect("within limits");
    }
    store
}

fn reply_bytes(replies: &[SyncMsg]) -> usize {
    replies
        .iter()
        .map(|r| serde_json::to_vec(r).expect("serializes").len())
        .sum()
}

const WHOLE: RingRange = RingRange {
    from: 0,
    to: u32::MAX,
};

#[test]
fn overlapping_summary_chunks_are_refused() {
    let mut store = big_store(2_000);
    let chunks: Vec<SummaryChunk> = (0..1024)
        .map(|_| SummaryChunk {
            node: NodeRef::ROOT,
            after: None,
            through: None,
            items: Vec::new(),
        })
        .collect();
    let msg = SyncMsg::Summaries {
        range: WHOLE,
        depth: DEFAULT_DEPTH,
        chunks,
    };
    assert!(merkle::handle(&mut store, msg, 0, &StepOptions::default()).is_err());
}

#[test]
fn a_zero_root_opening_is_answered_in_bounded_pieces_until_equal() {
    let mut full = big_store(20_000);
    let mut empty = Store::new(Limits::default());
    let opening = SyncMsg::Hashes(SyncHashes {
        range: WHOLE,
        depth: DEFAULT_DEPTH,
        nodes: vec![NodeHash {
            node: NodeRef::ROOT,
            hash: Digest::ZERO,
        }],
    });
    let handled = merkle::handle(&mut full, opening, 0, &StepOptions::default()).unwrap();
    let bytes = reply_bytes(&handled.replies);
    assert!(
        handled.truncated,
        "20k entries of 200 bytes exceed one reply budget"
    );
    assert!(bytes <= MAX_REPLY_BYTES + 64 * 1024, "{bytes} bytes");

    // Honest rounds still converge: each round moves at most the budget.
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 200, "no convergence");
        let mut queue = vec![(true, merkle::open_round(&empty, WHOLE))];
        let mut equal = false;
        while let Some((to_full, msg)) = queue.pop() {
            let store = if to_full { &mut full } else { &mut empty };
            let handled = merkle::handle(store, msg, 0, &StepOptions::default()).unwrap();
            assert!(reply_bytes(&handled.replies) <= MAX_REPLY_BYTES + 64 * 1024);
            equal |= handled.in_sync;
            queue.extend(handled.replies.into_iter().map(|r| (!to_full, r)));
        }
        if equal {
            break;
        }
    }
    assert_eq!(empty.len(), full.len());
    println!("{rounds} rounds");
}

#[test]
fn a_want_list_is_answered_within_the_budget() {
    let mut store = big_store(8_000);
    let keys: Vec<String> = (0..4_000).map(|i| format!("key-{i}")).collect();
    let msg = SyncMsg::Want {
        range: WHOLE,
        depth: DEFAULT_DEPTH,
        keys,
    };
    let handled = merkle::handle(&mut store, msg, 0, &StepOptions::default()).unwrap();
    assert!(reply_bytes(&handled.replies) <= MAX_REPLY_BYTES + 64 * 1024);
}
