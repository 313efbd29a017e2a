//! A peer joins just before a slow peer (hundreds of ms more each way: a distant or throttled
//! peer), whose round trip is longer than the stabilize interval. The newcomer's stabilize
//! rounds must still complete and notify the slow peer, or the slow peer keeps its old
//! predecessor, takes itself for the owner of the newcomer's keys and serves them from a
//! replica set that never held them (issue 10, mixed seed 2880: a slow peer, two joins in
//! front of it, and a stale read 17 s later). Answers to the last few rounds count
//! (`Node::stabilize_nonces`, node/maintain.rs); when only the newest did, no round ever
//! completed.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, converged_ring, id_between, pick, seeds};

#[test]
fn a_slow_successor_learns_of_a_newcomer_before_it() {
    for seed in seeds(0, 12) {
        let n = pick(seed, 3, 5, 10) as usize;
        let mut sim = converged_ring(seed, n, "slow_successor");
        let truth = sim.truth();
        let i = sim.rng().below(n as u64) as usize;
        let slow = truth[i];
        let before = truth[(i + n - 1) % n];
        let extra = 250 + sim.rng().below(150);
        sim.set_slow(slow, extra);
        // A newcomer between the slow peer's predecessor and the slow peer.
        let newcomer = id_between(&mut sim, before, slow);
        sim.add_node(newcomer);
        let ok = sim.run_until_true(50, 20_000, |s| {
            s.node(slow)
                .is_some_and(|x| x.ring().predecessor() == Some(newcomer))
        });
        println!(
            "seed {seed}: {n} peers, {slow} slow by {extra} ms each way, newcomer {newcomer}: \
             adopted as its predecessor: {ok}"
        );
        assert_seed(
            ok,
            seed,
            "slow_successor",
            format!(
                "{slow} (slow by {extra} ms each way) still names {:?} as predecessor 20 s after \
                 {newcomer} joined before it",
                sim.node(slow).and_then(|x| x.ring().predecessor())
            ),
        );
    }
}
