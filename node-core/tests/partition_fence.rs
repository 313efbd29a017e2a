//! The quorum fence (`node/fence.rs`): a partition cuts off an arc of three peers that holds a
//! key's whole replica set. The minority side keeps serving the key (its set is whole there);
//! the majority side, whose successor of the arc would otherwise take the key over with none of
//! its writes, refuses it until the heal; after the heal the write acknowledged on the minority
//! side reads back everywhere, and the client history keeps the promise throughout.
#![cfg(feature = "sim")]

mod common;

use common::{assert_history_holds, assert_seed, converged_ring, pick, seeds, wait_call};
use node_core::Id;
use node_core::sim::history::Ret;
use node_core::store::key_id;

const TEST: &str = "partition_fence";

#[test]
fn only_the_side_holding_a_keys_set_serves_it() {
    for seed in seeds(13_000, 8) {
        let n = pick(seed, 1, 7, 12) as usize;
        let mut sim = converged_ring(seed, n, TEST);
        let key = format!("fenced-{seed}");
        let ring = sim.truth();
        let owner = sim.true_owner(Id(key_id(&key))).expect("a ring");
        let at = ring
            .iter()
            .position(|p| *p == owner)
            .expect("owner in ring");
        let minority: Vec<Id> = (0..3).map(|i| ring[(at + i) % ring.len()]).collect();
        let majority: Vec<Id> = ring
            .iter()
            .copied()
            .filter(|p| !minority.contains(p))
            .collect();
        let put = sim.client_put(majority[0], &key, "before").expect("alive");
        let before = wait_call(&mut sim, put);
        assert_seed(
            matches!(before, Ret::Stored { .. }),
            seed,
            TEST,
            format!("put before the partition: {before:?}"),
        );

        let cut = minority.clone();
        sim.partition(move |id| u8::from(cut.contains(&id)));
        sim.run_for(sim.config().node.heartbeat_timeout_ms * 3);
        let put = sim
            .client_put(minority[1], &key, "minority")
            .expect("alive");
        let on_minority = wait_call(&mut sim, put);
        let put = sim
            .client_put(majority[0], &key, "majority")
            .expect("alive");
        let on_majority = wait_call(&mut sim, put);
        let get = sim
            .client_get(majority[1 % majority.len()], &key)
            .expect("alive");
        let read_majority = wait_call(&mut sim, get);
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

        sim.heal();
        assert_seed(
            sim.run_until_converged(900_000),
            seed,
            TEST,
            "no convergence after the heal",
        );
        sim.run_for(10_000);
        for reader in [majority[0], minority[0]] {
            let get = sim.client_get(reader, &key).expect("alive");
            let after = wait_call(&mut sim, get);
            assert_seed(
                matches!(&after, Ret::Found { value, .. } if value == "minority"),
                seed,
                TEST,
                format!("after the heal, get at {reader}: {after:?}"),
            );
        }
        assert_history_holds(&sim, seed, TEST, "history");
    }
}
