//! A partition splits the ring in two; each side keeps a working ring; after the partition heals
//! the two rings merge back into one that matches the truth.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, check_lookups, converged_ring, pick, seeds};
use node_core::Id;

#[test]
fn partition_heals_into_one_ring() {
    for seed in seeds(4_000, 8) {
        let n = pick(seed, 5, 20, 150) as usize;
        println!("seed {seed}: {n} peers, partition then heal");
        let mut sim = converged_ring(seed, n, "partition");

        // About a third of the ids (by hash, so both sides interleave around the ring).
        let side = |id: Id| u8::from(id.0.wrapping_mul(0x9E37_79B9) % 3 == 0);
        sim.partition(side);
        sim.run_for(60_000);
        // Each side repaired itself into its own ring: successors stay on the same side.
        let crossing = sim
            .truth()
            .into_iter()
            .filter(|id| side(sim.node(*id).unwrap().ring().successor()) != side(*id))
            .count();
        let sides = sim.truth().iter().filter(|id| side(**id) == 1).count();
        if sides >= 2 && n - sides >= 2 {
            assert_seed(
                crossing == 0,
                seed,
                "partition",
                format!("{crossing} successors across the cut"),
            );
        }
        sim.heal();
        let converged = sim.run_until_converged(900_000);
        assert_seed(
            converged,
            seed,
            "partition",
            format!("rings did not merge after heal: {:?}", sim.convergence()),
        );
        let (wrong, failed) = check_lookups(&mut sim, 200);
        assert_seed(
            wrong == 0 && failed == 0,
            seed,
            "partition",
            format!("after heal: {wrong} wrong owners, {failed} failed"),
        );
    }
}
