//! N peers join one after another or at random times; after quiescence every successor list,
//! predecessor and finger equals the globally computed truth.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, pick, seeds};
use node_core::sim::{JoinPattern, Sim, SimConfig};

/// Virtual time allowed for convergence after the last join.
const QUIESCENCE_MS: u64 = 900_000;

fn form_and_check(seed: u64) {
    // Small rings are where edge cases live (1, 2, 3 nodes); larger ones up to 512.
    let n = if seed % 4 == 0 {
        pick(seed, 1, 1, 8)
    } else {
        pick(seed, 2, 1, 512)
    } as usize;
    let pattern = if seed % 2 == 0 {
        JoinPattern::Sequential
    } else {
        JoinPattern::RandomTimes {
            window_ms: n as u64 * 100,
        }
    };
    println!("seed {seed}: {n} peers, {pattern:?}");
    let mut sim = Sim::new(SimConfig::new(seed));
    sim.join_nodes(n, pattern);
    let converged = sim.run_until_converged(QUIESCENCE_MS);
    assert_seed(
        converged,
        seed,
        "ring_formation",
        format!("ring of {n} did not converge: {:?}", sim.convergence()),
    );
    assert_eq!(sim.truth().len(), n);
}

// Four tests of 25 seeds each, so the test harness spreads them over the cores.
#[test]
fn ring_converges_seeds_0_to_24() {
    seeds(0, 25).into_iter().for_each(form_and_check);
}

#[test]
fn ring_converges_seeds_25_to_49() {
    seeds(25, 25).into_iter().for_each(form_and_check);
}

#[test]
fn ring_converges_seeds_50_to_74() {
    seeds(50, 25).into_iter().for_each(form_and_check);
}

#[test]
fn ring_converges_seeds_75_to_99() {
    seeds(75, 25).into_iter().for_each(form_and_check);
}

#[test]
fn same_seed_same_ring() {
    let run = |seed| {
        let mut sim = Sim::new(SimConfig::new(seed));
        sim.join_nodes(40, JoinPattern::RandomTimes { window_ms: 2_000 });
        sim.run_for(30_000);
        let views: Vec<_> = sim
            .truth()
            .iter()
            .map(|id| sim.node(*id).unwrap().ring_view())
            .collect();
        (views, sim.stats.frames_delivered)
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7).1, run(8).1);
}
