//! Lookups from random peers for random keys always end at the true owner.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, check_lookups, converged_ring, pick, seeds};
use node_core::metrics::Histogram;
use node_core::sim::{JoinPattern, Sim, SimConfig};

#[test]
fn lookups_end_at_the_true_owner() {
    for seed in seeds(1_000, 12) {
        let n = pick(seed, 3, 2, 400) as usize;
        println!("seed {seed}: {n} peers");
        let mut sim = converged_ring(seed, n, "lookups");
        let (wrong, failed) = check_lookups(&mut sim, 300);
        assert_seed(
            wrong == 0 && failed == 0,
            seed,
            "lookups",
            format!("{wrong} wrong owners, {failed} failed lookups"),
        );
    }
}

#[test]
fn hop_counts_stay_logarithmic() {
    let seed = common::seeds(2_000, 1)[0];
    let n = 1024;
    let mut sim = Sim::new(SimConfig::new(seed));
    sim.join_nodes(
        n,
        JoinPattern::RandomTimes {
            window_ms: n as u64 * 50,
        },
    );
    assert_seed(
        sim.run_until_converged(900_000),
        seed,
        "lookups",
        "ring did not converge",
    );
    let (wrong, failed) = check_lookups(&mut sim, 500);
    assert_eq!((wrong, failed), (0, 0));
    let mut hops = Histogram::default();
    for id in sim.truth() {
        hops.merge(&sim.node(id).unwrap().metrics().chord.hops);
    }
    // log2(1024) = 10: a lookup that needs more than that is not Chord routing any more.
    assert!(
        hops.percentile(0.99) <= 10,
        "p99 hops {}",
        hops.percentile(0.99)
    );
}
