//! A get's owner hands its own copy to the set's leader (`replication.rs`, "The owner's copy"):
//! the leader counts it as the owner's reply, so a get whose owner does not lead costs one
//! round trip less than a put, and still returns what was written.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, converged_ring, put_acked, seeds};
use node_core::node::OpOutcome;
use node_core::sim::Sim;
use node_core::{Id, Node};

fn copies(sim: &Sim) -> u64 {
    sim.truth()
        .iter()
        .filter_map(|id| sim.node(*id))
        .map(|n: &Node| n.metrics().kv.owner_copies)
        .sum()
}

fn mean_latency(sim: &Sim, get: bool) -> f64 {
    let (mut total, mut count) = (0.0, 0u64);
    for id in sim.truth() {
        let m = sim.node(id).expect("member").metrics().kv;
        let h = if get {
            &m.get_latency_ms
        } else {
            &m.put_latency_ms
        };
        total += h.mean() * h.total() as f64;
        count += h.total();
    }
    total / count.max(1) as f64
}

#[test]
fn gets_take_the_owners_copy_and_a_round_trip_less() {
    for seed in seeds(7_300, 4) {
        let test = "owner_copy";
        let mut sim = converged_ring(seed, 5, test);
        let ids: Vec<Id> = sim.truth();
        let keys = 60;
        for i in 0..keys {
            let at = ids[i % ids.len()];
            let key = format!("key-{i}");
            put_acked(&mut sim, at, &key, &format!("value-{i}"), seed, test, "put");
        }
        // Anti-entropy and elections settle; then one get of every key from every peer.
        sim.run_for(5_000);
        let before = copies(&sim);
        let mut gets = Vec::new();
        for i in 0..keys {
            for &at in &ids {
                let key = format!("key-{i}");
                let op = sim.with_node(at, |n, now| n.get(&key, now)).unwrap();
                gets.push((at, op, i));
            }
            sim.run_for(500);
        }
        sim.run_for(5_000);
        for (at, op, i) in &gets {
            let expected = format!("value-{i}");
            let ok = matches!(sim.result(*at, *op),
                Some(Ok(OpOutcome::Found { value, .. })) if *value == expected);
            assert_seed(
                ok,
                seed,
                test,
                format!("get key-{i} at {at}: {:?}", sim.result(*at, *op)),
            );
        }
        // On a ring of 5, the owner leads its set for 1 set in 5 (the one that wraps):
        // every other get is handed over with the owner's copy.
        let used = copies(&sim) - before;
        let total = gets.len() as u64;
        assert_seed(
            used >= total / 2 && used <= total,
            seed,
            test,
            format!("{used} of {total} gets used the owner's copy"),
        );
        // A put crosses origin -> owner -> leader -> member -> leader -> origin; a get with
        // the owner's copy origin -> owner -> leader -> origin. Without the copy the two
        // cost the same (same links, same simulated latencies).
        let (put, get) = (mean_latency(&sim, false), mean_latency(&sim, true));
        println!("seed {seed}: mean put {put:.1} ms, mean get {get:.1} ms, {used}/{total} copies");
        assert_seed(
            get < put * 0.85,
            seed,
            test,
            format!("mean get {get:.1} ms is not below mean put {put:.1} ms"),
        );
    }
}
