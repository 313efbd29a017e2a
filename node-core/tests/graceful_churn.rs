//! Graceful leaves are not failures. A ring of four (three long-lived peers and one more, the
//! tab of `tests/tests/tab_budget.rs`) takes writes; then newcomers join one after another in
//! front of the same long-lived peer, each leaving gracefully a second after the next one
//! joined (a few seconds apart); then the fourth peer leaves gracefully too. Every
//! acknowledged write must read back from the long-lived peer within 20 s of simulated time.
//!
//! A peer that left gracefully told only its neighbours; the long-lived peer further on saw
//! its link close and took it for a crash, so when its own predecessor (the next churned
//! peer) left 3.5 s later it counted two departures within one detection window and fenced
//! the range until the fence expired (`Config::fence_max_ms`, 60 s): every read of the range
//! failed meanwhile (`node/fence.rs`, "Growth"). Now `Node::leave` tells every linked peer.
#![cfg(feature = "sim")]

mod common;

use common::{assert_history_holds, assert_seed, put_acked, seeds, wait_call};
use node_core::Id;
use node_core::sim::history::Ret;
use node_core::sim::{Sim, SimConfig};

const TEST: &str = "graceful_churn";
/// How long after the last leave every write must read back (simulated time).
const READ_WITHIN_MS: u64 = 20_000;
const KEYS: usize = 30;

#[test]
fn writes_read_back_at_once_after_graceful_churn() {
    for seed in seeds(23_000, 12) {
        let mut sim = Sim::new(SimConfig::new(seed));
        let reader = Id(0x2000_0000);
        let fourth = Id(0x8000_0000);
        for id in [reader, Id(0x7000_0000), Id(0x9000_0000), fourth] {
            sim.add_node(id);
            sim.run_for(1_500);
        }
        sim.run_for(20_000);
        for k in 0..KEYS {
            let at = if k % 2 == 0 { fourth } else { reader };
            let (key, value) = (format!("churn-{k}"), format!("v{k}"));
            put_acked(&mut sim, at, &key, &value, seed, TEST, &format!("put {k}"));
        }
        // Newcomers in front of the reader, each leaving a second after the next one joined.
        let pace = 2_000 + seed % 4 * 500;
        let mut previous: Option<Id> = None;
        for step in 0..7 + (seed % 4) as u32 {
            let id = Id(0x0300_0000 + step * 0x0500_0000);
            sim.add_node(id);
            sim.run_for(1_000);
            if let Some(p) = previous.take() {
                sim.leave(p);
            }
            previous = Some(id);
            sim.run_for(pace);
        }
        sim.leave(fourth);
        let left_at = sim.now();
        for k in 0..KEYS {
            let (key, want) = (format!("churn-{k}"), format!("v{k}"));
            loop {
                let get = sim.client_get(reader, &key).expect("alive");
                let read = wait_call(&mut sim, get);
                if matches!(&read, Ret::Found { value, .. } if *value == want) {
                    break;
                }
                let fenced = sim
                    .node(reader)
                    .map_or(0, |n| n.metrics().kv.fenced_requests);
                assert_seed(
                    sim.now() < left_at + READ_WITHIN_MS,
                    seed,
                    TEST,
                    format!(
                        "{key}: {read:?} {} ms after the last leave ({fenced} requests fenced)",
                        sim.now() - left_at
                    ),
                );
                sim.run_for(500);
            }
        }
        assert_history_holds(&sim, seed, TEST, "the history");
    }
}
