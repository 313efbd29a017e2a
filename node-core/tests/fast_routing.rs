//! Base-b fingers and proximity neighbour selection (`Config::finger_base`,
//! `Config::proximity_fingers`): lookups still end at the true owner, take fewer hops, and the
//! near fingers a peer picks from its own round trips are nearer than the exact ones under the
//! geometric latency model.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, check_lookups, converged_ring_with, lookup_hops, pick, seeds};
use node_core::sim::{Geometry, JoinPattern, Sim, SimConfig};

const TEST: &str = "fast_routing";

fn config(seed: u64, finger_base: u32, proximity: bool) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.geometry = Some(Geometry::wan());
    config.node.finger_base = finger_base;
    config.node.proximity_fingers = proximity;
    // Other peers' fingers are links too, and how many point at one peer varies with the gap
    // before it: base-b fingers need more than the default 64 (`Config::finger_base`).
    config.node.max_links = 128;
    config
}

fn ring(config: SimConfig, n: usize) -> Sim {
    let mut sim = converged_ring_with(
        config,
        n,
        JoinPattern::RandomTimes {
            window_ms: n as u64 * 100,
        },
        TEST,
    );
    // Near fingers come from the finger sweeps after the ring formed: a few at the slowest pace.
    if sim.config().node.proximity_fingers {
        sim.run_for(4 * sim.config().node.fix_fingers_max_interval_ms);
    }
    sim
}

#[test]
fn lookups_end_at_the_true_owner_with_base_b_and_near_fingers() {
    for seed in seeds(3_000, 6) {
        let n = pick(seed, 5, 2, 300) as usize;
        let base = [4, 8][(seed % 2) as usize];
        let proximity = seed % 3 != 0;
        println!("seed {seed}: {n} peers, finger base {base}, proximity {proximity}");
        let mut sim = ring(config(seed, base, proximity), n);
        let (wrong, failed) = check_lookups(&mut sim, 300);
        assert_seed(
            wrong == 0 && failed == 0,
            seed,
            TEST,
            format!("{wrong} wrong owners, {failed} failed lookups"),
        );
    }
}

#[test]
fn base_8_fingers_take_fewer_hops_than_chords() {
    let seed = seeds(4_000, 1)[0];
    let n = 1024;
    let mut hops = Vec::new();
    for base in [2, 8] {
        let mut config = config(seed, base, false);
        config.geometry = None;
        let mut sim = ring(config, n);
        let (wrong, failed, mean) = lookup_hops(&mut sim, 1_000);
        assert_seed(wrong == 0 && failed == 0, seed, TEST, "lookups failed");
        hops.push(mean);
    }
    println!(
        "seed {seed}: mean hops base 2 {:.2}, base 8 {:.2}",
        hops[0], hops[1]
    );
    // Both end with the successor list (the last ~log2 6 bits cost no hop); above that, base 8
    // resolves three bits per hop where Chord resolves one every other hop.
    assert_seed(
        hops[1] < 0.85 * hops[0],
        seed,
        TEST,
        format!("mean hops base 2 {:.2}, base 8 {:.2}", hops[0], hops[1]),
    );
}

/// `Config::finger_lists`: a lookup for a key just past one of a peer's fingers is answered
/// from the list that finger reported, a hop before the finger would have answered it. The
/// answers must still be the true owners, and the saving must show in the mean.
#[test]
fn finger_lists_end_lookups_a_hop_early() {
    let seed = seeds(6_000, 1)[0];
    let n = 512;
    let mut hops = Vec::new();
    for lists in [false, true] {
        let mut config = config(seed, 8, false);
        config.node.finger_lists = lists;
        let mut sim = ring(config, n);
        // Every finger checked at least once since the ring formed.
        sim.run_for(2 * sim.config().node.fix_fingers_max_interval_ms);
        let (wrong, failed, mean) = lookup_hops(&mut sim, 1_000);
        assert_seed(
            wrong == 0 && failed == 0,
            seed,
            TEST,
            format!("finger lists {lists}: {wrong} wrong owners, {failed} failed"),
        );
        hops.push(mean);
    }
    println!(
        "seed {seed}: mean hops without finger lists {:.2}, with {:.2}",
        hops[0], hops[1]
    );
    assert_seed(
        hops[1] < hops[0] - 0.3,
        seed,
        TEST,
        format!(
            "mean hops without lists {:.2}, with {:.2}",
            hops[0], hops[1]
        ),
    );
}

/// Base-8 fingers in the default 64 links: most peers sit at the bound, and the links other
/// peers need as successor links must survive it (`Node::maintain_links`), or the ring does
/// not converge and lookups name wrong owners.
#[test]
fn base_8_rings_converge_within_64_links() {
    for seed in seeds(7_000, 2) {
        let n = 600;
        let mut config = config(seed, 8, false);
        config.node.max_links = 64;
        println!("seed {seed}: {n} peers, finger base 8, 64 links");
        let mut sim = Sim::new(config);
        sim.join_nodes(
            n,
            JoinPattern::RandomTimes {
                window_ms: n as u64 * 100,
            },
        );
        // Not every exact finger: at the bound some are only reached by lookups, so the
        // strict check (`Sim::is_converged`) may never hold. Every successor list must.
        let formed = sim.run_until_true(1_000, 900_000, |s| {
            let c = s.convergence();
            c.ring_is_correct() && c.wrong_successor_list == 0
        });
        assert_seed(
            formed,
            seed,
            TEST,
            format!("successor lists never matched: {:?}", sim.convergence()),
        );
        let (wrong, failed) = check_lookups(&mut sim, 500);
        assert_seed(
            wrong == 0 && failed == 0,
            seed,
            TEST,
            format!("{wrong} wrong owners, {failed} failed lookups"),
        );
    }
}

#[test]
fn near_fingers_are_nearer_than_exact_ones() {
    for seed in seeds(5_000, 2) {
        let n = 256;
        let sim = ring(config(seed, 8, true), n);
        // Over every interval with a member: the one-way latency (the simulator's oracle, which
        // the peers never see) to the finger routing uses, against the exact finger, which is
        // where the id alone puts it (a random member as far as distance goes).
        let (mut routing_ms, mut exact_ms, mut intervals, mut picks) = (0u64, 0u64, 0u64, 0);
        for id in sim.truth() {
            let node = sim.node(id).expect("alive");
            let ring = node.ring();
            for i in 0..ring.finger_count() {
                let Some(exact) = ring.finger(i).filter(|f| ring.in_finger_interval(i, *f)) else {
                    continue;
                };
                let routing = ring.routing_finger(i).expect("exact finger present");
                if let Some(near) = ring.near(i) {
                    picks += 1;
                    assert_seed(
                        node.measured_rtt(near) < node.measured_rtt(exact),
                        seed,
                        TEST,
                        format!("{id:?} picked {near:?} for finger {i} over a nearer {exact:?}"),
                    );
                    assert_seed(
                        sim.latency(id, near) < sim.latency(id, exact),
                        seed,
                        TEST,
                        format!("{id:?}: near finger {near:?} is not nearer than {exact:?}"),
                    );
                }
                routing_ms += sim.latency(id, routing);
                exact_ms += sim.latency(id, exact);
                intervals += 1;
            }
        }
        let ratio = routing_ms as f64 / exact_ms.max(1) as f64;
        println!(
            "seed {seed}: {picks} near fingers over {intervals} intervals, latency to routing fingers / exact = {ratio:.2}"
        );
        assert_seed(picks > 0, seed, TEST, "no near finger was picked");
        assert_seed(
            ratio < 0.8,
            seed,
            TEST,
            format!("routing fingers are {ratio:.2} of the exact ones' latency"),
        );
    }
}

/// A node's measured round trip equals the simulator's: twice the one-way latency of the link
/// (the geometric model has no per-frame jitter), so picks are decided by real distance.
#[test]
fn measured_round_trips_are_the_links_own() {
    let seed = seeds(6_000, 1)[0];
    let sim = ring(config(seed, 4, true), 64);
    let mut measured = 0;
    for id in sim.truth() {
        let node = sim.node(id).expect("alive");
        for peer in sim.truth() {
            if let Some(rtt) = node.measured_rtt(peer) {
                measured += 1;
                assert_seed(
                    rtt == 2 * sim.latency(id, peer),
                    seed,
                    TEST,
                    format!("{id:?} -> {peer:?}: measured {rtt} ms"),
                );
            }
        }
    }
    assert_seed(measured > 0, seed, TEST, "nothing measured");
}
