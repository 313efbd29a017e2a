//! Bully elections per replica set: one leader per set once stable (the highest live member),
//! and a new one after the leader crashes, within the election timeouts once the crash is seen.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, seeds};
use node_core::Id;
use node_core::node::OpOutcome;
use node_core::sim::{JoinPattern, Sim, SimConfig};

#[test]
fn leader_crash_elects_the_next_highest() {
    for seed in seeds(6_000, 200) {
        println!("seed {seed}");
        let mut sim = Sim::new(SimConfig::new(seed));
        sim.join_nodes(20, JoinPattern::Sequential);
        assert_seed(
            sim.run_until_converged(900_000),
            seed,
            "bully",
            "no convergence",
        );
        let ids = sim.truth();
        let owner = ids[sim.rng().below(ids.len() as u64) as usize];
        // A key this owner owns: its own id's name is not a key; search a key that hashes here.
        let key = (0..100_000)
            .map(|i| format!("k{i}"))
            .find(|k| sim.true_owner(Id::of_key(k)) == Some(owner))
            .expect("some key lands on every peer");
        let op = sim
            .with_node(owner, |n, now| n.put(&key, "before", "w", now))
            .unwrap();
        sim.run_for(3_000);
        assert!(
            matches!(sim.result(owner, op), Some(Ok(OpOutcome::Stored { .. }))),
            "seed {seed}"
        );
        let set = sim.node(owner).unwrap().own_replica_set();
        let leader = *set.iter().max().unwrap();
        assert_eq!(
            sim.node(owner).unwrap().leader_of(&set),
            Some(leader),
            "seed {seed}"
        );
        if leader == owner {
            continue; // crashing the owner changes who owns the key; covered by crash tests
        }
        sim.crash(leader);
        // Detection (link down) + election: the set changes at the owner and a new leader is
        // elected among the new members; a put through any peer succeeds again.
        let writer = ids.iter().copied().find(|p| *p != leader).unwrap();
        let op = sim
            .with_node(writer, |n, now| n.put(&key, "after", "w", now))
            .unwrap();
        sim.run_for(15_000);
        assert_seed(
            matches!(sim.result(writer, op), Some(Ok(OpOutcome::Stored { .. }))),
            seed,
            "bully",
            format!("put after leader crash: {:?}", sim.result(writer, op)),
        );
        let new_set = sim.node(owner).unwrap().own_replica_set();
        assert!(!new_set.contains(&leader));
        let new_leader = *new_set.iter().max().unwrap();
        for member in &new_set {
            if let Some(l) = sim.node(*member).unwrap().leader_of(&new_set) {
                assert_eq!(l, new_leader, "seed {seed}: member {member} names {l}");
            }
        }
        assert_eq!(
            sim.node(owner).unwrap().leader_of(&new_set),
            Some(new_leader),
            "seed {seed}"
        );
    }
}
