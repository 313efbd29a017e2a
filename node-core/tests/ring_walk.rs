//! Walking the ring with `peer_view` from any peer finds every peer, in ring order, with the
//! pointers the peers really hold; a peer that is gone fails the request instead of hanging.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, converged_ring, pick, seeds};
use node_core::Id;
use node_core::node::{OpError, OpOutcome};

#[test]
fn a_walk_from_any_peer_finds_the_whole_ring_in_order() {
    for seed in seeds(7_000, 20) {
        let n = pick(seed, 5, 2, 120) as usize;
        let mut sim = converged_ring(seed, n, "ring_walk");
        let truth = sim.truth(); // sorted ids
        let start = truth[sim.rng().below(truth.len() as u64) as usize];
        let mut walked = vec![start];
        let mut at = start;
        for _ in 0..n {
            let op = sim
                .with_node(start, |node, now| node.peer_view(at, now))
                .unwrap();
            sim.run_for(2_500);
            let view = match sim.take_result(start, op) {
                Some(Ok(OpOutcome::View(view))) => view,
                other => panic!("seed {seed}: view of {at} -> {other:?}"),
            };
            assert_seed(
                view.id == at,
                seed,
                "ring_walk",
                "the answer names the asked peer",
            );
            let Some(next) = view.successors.first().copied() else {
                break; // a ring of one
            };
            if next == start {
                break;
            }
            walked.push(next);
            at = next;
        }
        let mut expected: Vec<Id> = truth.iter().copied().filter(|p| *p >= start).collect();
        expected.extend(truth.iter().copied().filter(|p| *p < start));
        assert_seed(
            walked == expected,
            seed,
            "ring_walk",
            format!("walked {walked:?}\nexpected {expected:?}"),
        );
    }
}

#[test]
fn a_view_of_a_crashed_peer_fails() {
    let seed = seeds(7_500, 1)[0];
    let mut sim = converged_ring(seed, 16, "ring_walk");
    let ids = sim.truth();
    let (from, gone) = (ids[0], ids[8]);
    sim.crash(gone);
    let op = sim
        .with_node(from, |node, now| node.peer_view(gone, now))
        .unwrap();
    sim.run_for(5_000);
    let result = sim.take_result(from, op);
    assert_seed(
        matches!(
            result,
            Some(Err(OpError::LookupTimeout { .. } | OpError::NoRoute { .. }))
        ),
        seed,
        "ring_walk",
        format!("{result:?}"),
    );
}
