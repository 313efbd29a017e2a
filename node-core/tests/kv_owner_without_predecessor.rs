//! A put for a key owned by a peer that has just joined, and whose predecessor already points
//! at it but has not notified it yet (so the owner has no predecessor), is stored on its first
//! attempt: the owner takes the request the resolver addressed to it instead of bouncing it
//! back toward the resolver until the hop limit drops it and the origin's retry recovers it.
//!
//! Live rings hit this window on every fresh ring: the harness starts its workload once each
//! successor pointer is right, before every predecessor is (the 2nd put of `--mode scale` waited
//! the 2 s retry).
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, converged_ring_with, seeds};
use node_core::Id;
use node_core::node::OpOutcome;
use node_core::sim::{JoinPattern, Sim, SimConfig};

const TEST: &str = "kv_owner_without_predecessor";

/// Steps the simulation 1 ms at a time until `newcomer` is joined without a predecessor while
/// its true predecessor already names it as successor; returns that predecessor.
fn window_without_predecessor(sim: &mut Sim, newcomer: Id) -> Option<Id> {
    for _ in 0..30_000 {
        sim.run_for(1);
        let node = sim.node(newcomer)?;
        if !node.is_joined() || node.ring().predecessor().is_some() {
            continue;
        }
        let ids = sim.truth();
        let at = ids.iter().position(|id| *id == newcomer).expect("alive");
        let predecessor = ids[(at + ids.len() - 1) % ids.len()];
        if sim
            .node(predecessor)
            .is_some_and(|p| p.ring().successor() == newcomer)
        {
            return Some(predecessor);
        }
    }
    None
}

/// A key whose id falls in `(from, to]`.
fn key_between(from: Id, to: Id) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|key| Id::of_key(key).in_half_open(from, to))
        .expect("some key hashes into any non-empty interval")
}

#[test]
fn put_to_an_owner_without_predecessor_needs_no_retry() {
    let mut windows = 0;
    for seed in seeds(7_300, 20) {
        let mut sim = converged_ring_with(SimConfig::new(seed), 4, JoinPattern::Sequential, TEST);
        let newcomer = sim.fresh_id();
        sim.add_node(newcomer);
        let Some(predecessor) = window_without_predecessor(&mut sim, newcomer) else {
            println!("seed {seed}: no window without a predecessor");
            continue;
        };
        windows += 1;
        let key = key_between(predecessor, newcomer);
        println!("seed {seed}: put {key} at {predecessor} for owner {newcomer}");
        let op = sim
            .with_node(predecessor, |n, now| n.put(&key, "v", "w", now))
            .expect("alive");
        // Within one attempt: a result before the origin's retry timer could fire.
        let attempt = sim.config().node.lookup_attempt_timeout_ms;
        sim.run_for(attempt - 1);
        let result = sim.take_result(predecessor, op);
        let hop_limit_drops: u64 = sim
            .truth()
            .iter()
            .filter_map(|id| sim.node(*id))
            .map(|n| n.metrics().chord.dropped_hop_limit)
            .sum();
        assert_seed(
            matches!(result, Some(Ok(OpOutcome::Stored { .. }))) && hop_limit_drops == 0,
            seed,
            TEST,
            format!(
                "put {key} to {newcomer} (no predecessor yet) from {predecessor}: {result:?} \
                 within one attempt, {hop_limit_drops} frames dropped at the hop limit"
            ),
        );
    }
    assert!(
        windows > 0,
        "no seed produced an owner without a predecessor: the test checks nothing"
    );
}
