//! The acknowledged-write case of a join (issue: "an acknowledged put can be read back as an
//! older value after an ordinary join"): 6 peers; 20 puts of one key; a new peer joins just
//! after the key's id, so it owns the key and is the highest id of its replica set (its Bully
//! leader, with a fresh Lamport clock); a put of "NEW" through another peer `delay` ms after
//! the join starts; a get 20 s after that put was acknowledged. Over 40 seeds x 5 delays, the
//! history must keep the promise and the get must return "NEW".
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, converged_ring, seeds};
use node_core::Id;
use node_core::sim::history::{Ret, check};
use node_core::store::key_id;

const TEST: &str = "history_join_leader";
const DELAYS_MS: [u64; 5] = [0, 50, 200, 1_000, 3_000];

/// A key whose id lies above every peer's id (so a peer just after it has successors that wrap
/// around to the lowest ids: it is the highest id of its set).
fn key_above(ids: &[Id]) -> String {
    let top = ids.iter().map(|id| id.0).max().unwrap_or(0);
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| key_id(k) > top && key_id(k) < u32::MAX - 1)
        .expect("some key hashes above the highest id")
}

fn wait(sim: &mut node_core::sim::Sim, index: usize) {
    let deadline = sim.now() + sim.config().node.op_timeout_ms + 1_000;
    while !sim.history().is_complete(index) && sim.now() < deadline {
        sim.run_for(5);
    }
}

#[test]
fn a_put_right_after_a_new_leader_joins_stays() {
    for seed in seeds(9_100, 40) {
        for delay in DELAYS_MS {
            let mut sim = converged_ring(seed, 6, TEST);
            let ids = sim.truth();
            let key = key_above(&ids);
            let writer = ids[0];
            for i in 0..20 {
                let index = sim
                    .client_put(writer, &key, &format!("old-{i}"))
                    .expect("alive");
                wait(&mut sim, index);
            }
            let newcomer = Id(key_id(&key) + 1);
            sim.add_node(newcomer);
            sim.run_for(delay);
            // Through a peer other than the newcomer and the earlier writer.
            let through = ids[1 + (seed as usize % (ids.len() - 1))];
            let put = sim.client_put(through, &key, "NEW").expect("alive");
            wait(&mut sim, put);
            sim.run_for(20_000);
            let get = sim.client_get(through, &key).expect("alive");
            wait(&mut sim, get);
            let history = sim.history();
            let report = check(history);
            let put_ok = matches!(history.get(put).map(|o| &o.ret), Some(Ret::Stored { .. }));
            let read = history.get(get).map(|o| o.ret.clone());
            let leader = sim
                .node(newcomer)
                .map(|n| n.own_replica_set().iter().max() == Some(&newcomer));
            let mut why = format!(
                "delay {delay} ms, newcomer {newcomer} highest of its set: {leader:?}; put NEW \
                 acknowledged: {put_ok}; get returned {read:?}\n"
            );
            for a in &report.anomalies {
                why.push_str(&a.to_string());
            }
            let read_new = matches!(&read, Some(Ret::Found { value, .. }) if value == "NEW");
            assert_seed(report.holds() && (!put_ok || read_new), seed, TEST, why);
            assert_seed(
                put_ok,
                seed,
                TEST,
                format!("delay {delay}: the put of NEW failed"),
            );
        }
    }
}
