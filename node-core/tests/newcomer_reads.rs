//! A newcomer reads every key of a ring it joins after a member crashed (issue 12: "a native
//! peer joins a ring of tabs"): 3 fixed peers hold 60 keys written through a fourth; round
//! after round the fourth crashes, the ring converges without it, a new fourth peer (a new id)
//! joins, the ring converges again, and a get of every key through the newcomer must return the
//! value written. The end-to-end test `tests/tests/native_joins_tabs.rs` does the same with
//! Chromium tabs and a native peer over WebRTC.
#![cfg(feature = "sim")]

mod common;

use common::{assert_history_holds, assert_seed, seeds, wait_call};
use node_core::Id;
use node_core::sim::history::{Ret, check};
use node_core::sim::{Sim, SimConfig};

const TEST: &str = "newcomer_reads";
const KEYS: usize = 60;
const HOLDERS: [u32; 3] = [0x3000_0000, 0x8000_0000, 0xd000_0000];

fn newcomer(seed: u64, round: u64) -> Id {
    let mut s = seed.wrapping_mul(31).wrapping_add(round);
    Id(node_core::rng::splitmix64(&mut s) as u32 | 1)
}

#[test]
fn a_newcomer_reads_every_key_after_a_crash() {
    for seed in seeds(12_000, 20) {
        let mut sim = Sim::new(SimConfig::new(seed));
        for id in HOLDERS {
            sim.add_node(Id(id));
            sim.run_for(300);
        }
        let mut current = newcomer(seed, 0);
        sim.add_node(current);
        assert_seed(sim.run_until_converged(60_000), seed, TEST, "first ring");
        for k in 0..KEYS {
            let put = sim
                .client_put(current, &format!("k{k}"), &format!("v{k}"))
                .expect("alive");
            wait_call(&mut sim, put);
        }
        for round in 1..=5 {
            sim.crash(current);
            current = newcomer(seed, round);
            sim.add_node(current);
            let converged = sim.run_until_converged(60_000);
            assert_seed(
                converged,
                seed,
                TEST,
                format!("round {round}: no convergence"),
            );
            let mut failed = Vec::new();
            for k in 0..KEYS {
                let get = sim.client_get(current, &format!("k{k}")).expect("alive");
                let ret = wait_call(&mut sim, get);
                let want = format!("v{k}");
                if !matches!(&ret, Ret::Found { value, .. } if *value == want) {
                    failed.push(format!("k{k}: {ret:?}"));
                }
            }
            let report = check(sim.history());
            assert_seed(
                failed.is_empty() && report.holds(),
                seed,
                TEST,
                format!(
                    "round {round}: newcomer {current} read {} keys wrong: {failed:?}; anomalies {:?}",
                    failed.len(),
                    report
                        .anomalies
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                ),
            );
        }
    }
}

/// A peer whose successors all crash at once is cut off, not a ring of one: it does not
/// acknowledge a write alone (the write fails), reports the isolation, and joins again once a
/// member is back; every acknowledged write then reads back.
#[test]
fn a_cut_off_peer_does_not_acknowledge_alone() {
    for seed in seeds(12_500, 20) {
        let mut sim = Sim::new(SimConfig::new(seed));
        for id in HOLDERS {
            sim.add_node(Id(id));
            sim.run_for(300);
        }
        assert_seed(sim.run_until_converged(60_000), seed, TEST, "first ring");
        let [a, b, c] = HOLDERS.map(Id);
        let mut acked = Vec::new();
        for k in 0..10 {
            let put = sim
                .client_put(a, &format!("k{k}"), &format!("v{k}"))
                .expect("alive");
            wait_call(&mut sim, put);
            if matches!(
                sim.history().get(put).map(|o| &o.ret),
                Some(Ret::Stored { .. })
            ) {
                acked.push(k);
            }
        }
        sim.crash(b);
        sim.crash(c);
        sim.run_for(sim.config().node.heartbeat_timeout_ms * 3);
        let isolated = sim
            .node(a)
            .is_some_and(|n| n.metrics().chord.isolations > 0);
        let put = sim
            .client_put(a, "alone", "never acknowledged alone")
            .expect("alive");
        wait_call(&mut sim, put);
        let alone_ret = sim.history().get(put).map(|o| o.ret.clone());
        assert_seed(
            isolated && !matches!(alone_ret, Some(Ret::Stored { .. })),
            seed,
            TEST,
            format!(
                "cut off: isolations reported {isolated}, the put alone returned {alone_ret:?}"
            ),
        );
        sim.restart_with_disk(b);
        let converged = sim.run_until_converged(60_000);
        assert_seed(converged, seed, TEST, "the cut-off peer did not join again");
        for k in acked {
            let get = sim.client_get(b, &format!("k{k}")).expect("alive");
            wait_call(&mut sim, get);
        }
        assert_history_holds(&sim, seed, TEST, "after the rejoin");
    }
}
