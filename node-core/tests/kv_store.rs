//! Replicated store in the simulator: writes are read back from any peer, deletes hide values,
//! concurrent writers agree on one winner, and the replicas of a set hold the winner.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, converged_ring, pick, seeds};
use node_core::node::{OpId, OpOutcome};
use node_core::sim::Sim;
use node_core::{Id, Node};

fn ring(seed: u64, n: usize) -> Sim {
    converged_ring(seed, n, "kv_store")
}

fn random_peer(sim: &mut Sim) -> Id {
    let ids = sim.truth();
    ids[sim.rng().below(ids.len() as u64) as usize]
}

fn put(sim: &mut Sim, at: Id, key: &str, value: &str, writer: &str) -> OpId {
    sim.with_node(at, |n, now| n.put(key, value, writer, now))
        .unwrap()
}

fn get(sim: &mut Sim, at: Id, key: &str) -> OpId {
    sim.with_node(at, |n, now| n.get(key, now)).unwrap()
}

#[test]
fn writes_are_read_back_from_any_peer() {
    for seed in seeds(5_000, 6) {
        let n = pick(seed, 6, 3, 60) as usize;
        println!("seed {seed}: {n} peers");
        let mut sim = ring(seed, n);
        let mut written = Vec::new();
        for i in 0..100 {
            let at = random_peer(&mut sim);
            let key = format!("key-{i}");
            let op = put(&mut sim, at, &key, &format!("value-{i}"), "w");
            written.push((at, op, key));
            sim.run_for(20);
        }
        sim.run_for(12_000);
        for (at, op, key) in &written {
            let ok = matches!(sim.result(*at, *op), Some(Ok(OpOutcome::Stored { .. })));
            assert_seed(
                ok,
                seed,
                "kv_store",
                format!("put {key} not acknowledged: {:?}", sim.result(*at, *op)),
            );
        }
        let mut reads = Vec::new();
        for (i, (_, _, key)) in written.iter().enumerate() {
            let at = random_peer(&mut sim);
            reads.push((at, get(&mut sim, at, key), i));
            sim.run_for(20);
        }
        sim.run_for(12_000);
        for (at, op, i) in reads {
            let expected = format!("value-{i}");
            let ok = matches!(sim.result(at, op), Some(Ok(OpOutcome::Found { value, .. })) if *value == expected);
            assert_seed(
                ok,
                seed,
                "kv_store",
                format!("get key-{i} at {at}: {:?}", sim.result(at, op)),
            );
        }
    }
}

#[test]
fn deletes_hide_values_and_later_writes_win() {
    let seed = seeds(5_100, 1)[0];
    let mut sim = ring(seed, 12);
    let a = random_peer(&mut sim);
    let b = random_peer(&mut sim);
    put(&mut sim, a, "k", "one", "a");
    sim.run_for(3_000);
    sim.with_node(b, |n, now| n.delete("k", "b", now));
    sim.run_for(3_000);
    let op = get(&mut sim, a, "k");
    sim.run_for(3_000);
    assert!(
        matches!(sim.result(a, op), Some(Ok(OpOutcome::NotFound { .. }))),
        "seed {seed}: {:?}",
        sim.result(a, op)
    );
    put(&mut sim, b, "k", "two", "b");
    sim.run_for(3_000);
    let op = get(&mut sim, a, "k");
    sim.run_for(3_000);
    assert!(
        matches!(sim.result(a, op), Some(Ok(OpOutcome::Found { value, .. })) if value == "two"),
        "seed {seed}"
    );
}

#[test]
fn concurrent_writers_agree_on_one_winner() {
    for seed in seeds(5_200, 200) {
        println!("seed {seed}");
        let mut sim = ring(seed, 24);
        // Ten peers write the same key at the same instant.
        let writers: Vec<Id> = (0..10).map(|_| random_peer(&mut sim)).collect();
        for (i, w) in writers.iter().enumerate() {
            put(
                &mut sim,
                *w,
                "contended",
                &format!("v{i}"),
                &format!("writer-{i}"),
            );
        }
        sim.run_for(15_000);
        let readers: Vec<Id> = sim.truth();
        let ops: Vec<(Id, OpId)> = readers
            .iter()
            .map(|r| (*r, get(&mut sim, *r, "contended")))
            .collect();
        sim.run_for(15_000);
        let answers: Vec<String> = ops
            .iter()
            .map(|(r, op)| match sim.result(*r, *op) {
                Some(Ok(OpOutcome::Found { value, .. })) => value.clone(),
                other => format!("{other:?}"),
            })
            .collect();
        let first = answers[0].clone();
        assert_seed(
            answers.iter().all(|a| *a == first) && first.starts_with('v'),
            seed,
            "kv_store",
            format!("readers disagree: {answers:?}"),
        );
    }
}

#[test]
fn one_leader_per_replica_set() {
    let seed = seeds(5_300, 1)[0];
    let mut sim = ring(seed, 16);
    for i in 0..60 {
        let at = random_peer(&mut sim);
        put(&mut sim, at, &format!("k{i}"), "v", "w");
    }
    sim.run_for(10_000);
    // Every member of a set that knows a leader names the same one: the highest member.
    for id in sim.truth() {
        let set = sim.node(id).unwrap().own_replica_set();
        let highest = *set.iter().max().unwrap();
        for member in &set {
            if let Some(leader) = sim.node(*member).and_then(|n: &Node| n.leader_of(&set)) {
                assert_eq!(leader, highest, "seed {seed}: set {set:?}");
            }
        }
    }
}
