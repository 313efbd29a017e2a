//! The quorum fence (`node/fence.rs`): a partition cuts off an arc of three peers that holds a
//! key's whole replica set. The minority side keeps serving the key (its set is whole there);
//! the majority side, whose successor of the arc would otherwise take the key over with none of
//! its writes, refuses it until the heal; after the heal the write acknowledged on the minority
//! side reads back everywhere, and the client history keeps the promise throughout.
#![cfg(feature = "sim")]

mod common;

use common::{
    assert_history_holds, assert_seed, converged_ring, converged_ring_with, pick, put_acked, seeds,
    wait_call,
};
use node_core::Id;
use node_core::sim::history::Ret;
use node_core::sim::{JoinPattern, Sim, SimConfig};
use node_core::store::key_id;

const TEST: &str = "partition_fence";

#[test]
fn only_the_side_holding_a_keys_set_serves_it() {
    for seed in seeds(13_000, 8) {
        let n = pick(seed, 1, 7, 12) as usize;
        let mut sim = converged_ring(seed, n, TEST);
        let key = format!("fenced-{seed}");
        let (minority, majority) = split_at_key(&sim, &key);
        put_acked(
            &mut sim,
            majority[0],
            &key,
            "before",
            seed,
            TEST,
            "put before the partition",
        );

        let cut = minority.clone();
        sim.partition(move |id| u8::from(cut.contains(&id)));
        sim.run_for(sim.config().node.heartbeat_timeout_ms * 3);
        let put = sim
            .client_put(minority[1], &key, "minority")
            .expect("alive");
        let on_minority = wait_call(&mut sim, put);
        let (on_majority, read_majority) = put_then_get(&mut sim, &majority, &key);
        let fenced: u64 = majority
            .iter()
            .filter_map(|p| sim.node(*p))
            .map(|n| n.metrics().kv.fenced_requests)
            .sum();
        assert_seed(
            matches!(on_minority, Ret::Stored { .. })
                && matches!(on_majority, Ret::Failed { .. })
                && matches!(read_majority, Ret::Failed { .. })
                && fenced > 0,
            seed,
            TEST,
            format!(
                "during the partition: minority put {on_minority:?}, majority put \
                 {on_majority:?}, majority get {read_majority:?}, {fenced} fenced requests"
            ),
        );

        heal_and_read_back(&mut sim, seed, &key, [majority[0], minority[0]], 10_000);
    }
}

/// With `Config::inherit_fences` on: a peer that joins the majority side during the
/// partition, into the arc whose keys the majority fences, takes the key over from the fenced successor, and the fence with it
/// (`node/fence.rs`, `inherit_fence`): it holds none of the arc's writes, and neither do the
/// majority-side successors it would sync with. Without that, the majority side served the key
/// again through the newcomer.
#[test]
fn a_peer_joining_into_the_fenced_part_takes_the_fence_over() {
    for seed in seeds(14_000, 6) {
        let n = pick(seed, 1, 7, 12) as usize;
        let mut config = SimConfig::new(seed);
        config.node.inherit_fences = true;
        let pattern = JoinPattern::RandomTimes {
            window_ms: n as u64 * 100,
        };
        let mut sim = converged_ring_with(config, n, pattern, TEST);
        let key = format!("fenced-join-{seed}");
        let key_at = Id(key_id(&key));
        let (minority, majority) = split_at_key(&sim, &key);
        let owner = minority[0];
        if key_at.distance_to(owner) < 2 {
            continue; // no room for a newcomer that owns the key
        }
        let put = sim.client_put(majority[0], &key, "before").expect("alive");
        wait_call(&mut sim, put);
        let cut = minority.clone();
        sim.partition(move |id| u8::from(cut.contains(&id)));
        sim.run_for(sim.config().node.heartbeat_timeout_ms * 3);
        let put = sim
            .client_put(minority[1], &key, "minority")
            .expect("alive");
        let on_minority = wait_call(&mut sim, put);
        // The newcomer owns the key on the majority side: it lies in [key, owner).
        let newcomer = common::id_between(&mut sim, Id(key_at.0.wrapping_sub(1)), owner);
        sim.add_node_via(newcomer, majority.clone());
        sim.run_for(10_000);
        let (on_majority, read_majority) = put_then_get(&mut sim, &majority, &key);
        // Notified by its predecessor, so not fenced as a newcomer without one.
        let fenced_at_newcomer = sim
            .node(newcomer)
            .filter(|n| n.ring().predecessor().is_some())
            .map_or(0, |n| n.metrics().kv.fenced_requests);
        assert_seed(
            matches!(on_minority, Ret::Stored { .. })
                && matches!(on_majority, Ret::Failed { .. })
                && matches!(read_majority, Ret::Failed { .. })
                && fenced_at_newcomer > 0,
            seed,
            TEST,
            format!(
                "after {newcomer} joined the majority side: minority put {on_minority:?}, \
                 majority put {on_majority:?}, majority get {read_majority:?}, \
                 {fenced_at_newcomer} requests fenced at the newcomer"
            ),
        );

        // The newcomer's inherited fence holds its range until it expires.
        let wait = sim.config().node.fence_max_ms + 10_000;
        heal_and_read_back(&mut sim, seed, &key, [majority[0], minority[0]], wait);
    }
}

/// A put of "majority" through the majority side's first peer, then a get through its second:
/// both outcomes.
fn put_then_get(sim: &mut Sim, majority: &[Id], key: &str) -> (Ret, Ret) {
    let put = sim.client_put(majority[0], key, "majority").expect("alive");
    let on_majority = wait_call(sim, put);
    let get = sim
        .client_get(majority[1 % majority.len()], key)
        .expect("alive");
    (on_majority, wait_call(sim, get))
}

/// The three peers that hold `key` (its owner first), and the rest of the ring.
fn split_at_key(sim: &Sim, key: &str) -> (Vec<Id>, Vec<Id>) {
    let ring = sim.truth();
    let owner = sim.true_owner(Id(key_id(key))).expect("a ring");
    let at = ring
        .iter()
        .position(|p| *p == owner)
        .expect("owner in ring");
    let minority: Vec<Id> = (0..3).map(|i| ring[(at + i) % ring.len()]).collect();
    let majority = ring
        .iter()
        .copied()
        .filter(|p| !minority.contains(p))
        .collect();
    (minority, majority)
}

/// Heals the partition and, `wait_ms` after the ring converged, reads the minority side's
/// write back at each reader; the whole history must keep the promise.
fn heal_and_read_back(sim: &mut Sim, seed: u64, key: &str, readers: [Id; 2], wait_ms: u64) {
    sim.heal();
    assert_seed(
        sim.run_until_converged(900_000),
        seed,
        TEST,
        "no convergence after the heal",
    );
    sim.run_for(wait_ms);
    for reader in readers {
        let get = sim.client_get(reader, key).expect("alive");
        let after = wait_call(sim, get);
        assert_seed(
            matches!(&after, Ret::Found { value, .. } if value == "minority"),
            seed,
            TEST,
            format!("after the heal, get at {reader}: {after:?}"),
        );
    }
    assert_history_holds(sim, seed, TEST, "history");
}
