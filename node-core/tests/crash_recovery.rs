//! A quarter of the peers crash at once: the ring re-converges over the survivors and lookups
//! end at the true owner again. Crashed peers that restart (empty) rejoin.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, check_lookups, converged_ring, pick, seeds};
use node_core::sim::{JoinPattern, Sim, SimConfig};

fn crash_quarter(seed: u64) {
    let n = pick(seed, 4, 40, 300) as usize;
    println!("seed {seed}: {n} peers, 25% crash");
    let mut sim = converged_ring(seed, n, "crash_recovery");
    let ids = sim.truth();

    let mut victims = ids.clone();
    // Fisher-Yates on the sim's own RNG keeps the choice replayable.
    for i in (1..victims.len()).rev() {
        let j = sim.rng().below(i as u64 + 1) as usize;
        victims.swap(i, j);
    }
    victims.truncate(n / 4);
    for id in &victims {
        sim.crash(*id);
    }
    let converged = sim.run_until_converged(900_000);
    assert_seed(
        converged,
        seed,
        "crash_recovery",
        format!("survivors did not converge: {:?}", sim.convergence()),
    );
    let (wrong, failed) = check_lookups(&mut sim, 200);
    assert_seed(
        wrong == 0 && failed == 0,
        seed,
        "crash_recovery",
        format!("after crashes: {wrong} wrong owners, {failed} failed lookups"),
    );

    // The crashed peers come back empty and rejoin.
    for id in &victims {
        sim.restart(*id);
        sim.run_for(50);
    }
    assert_seed(
        sim.run_until_converged(900_000),
        seed,
        "crash_recovery",
        "restarted peers did not rejoin",
    );
    assert_eq!(sim.truth().len(), n);
}

#[test]
fn ring_survives_a_quarter_crashing() {
    seeds(3_000, 10).into_iter().for_each(crash_quarter);
}

#[test]
fn graceful_leaves_hand_over() {
    for seed in seeds(3_500, 5) {
        println!("seed {seed}: 60 peers, 15 leave");
        let mut sim = Sim::new(SimConfig::new(seed));
        let ids = sim.join_nodes(60, JoinPattern::Sequential);
        assert_seed(
            sim.run_until_converged(900_000),
            seed,
            "crash_recovery",
            "no convergence",
        );
        for id in ids.iter().step_by(4) {
            sim.leave(*id);
            sim.run_for(200);
        }
        assert_seed(
            sim.run_until_converged(900_000),
            seed,
            "crash_recovery",
            "no convergence after leaves",
        );
        let (wrong, failed) = check_lookups(&mut sim, 100);
        assert_eq!((wrong, failed), (0, 0), "seed {seed}");
    }
}
