//! Global maintenance (`node/sync.rs`, "Strays"): a peer holding a key whose replica set cannot
//! include it writes the key back to the set. Anti-entropy runs only within replica sets, so
//! before this such a copy stayed where nobody asked for it: under churn, joins move holders
//! out of a set and the newcomers that replaced them crash before they synced
//! (`chord-experiment --mode sim-churn --nodes 64 --rates 2 --seed 5` lost 30 acknowledged
//! writes so, each with one live holder outside its set).
//!
//! The test models the end state directly: a peer at least k places after a key's owner comes
//! back from a crash with a copy of the key on its disk that its set does not hold. A get
//! must find it, the copy must be written back once (not at every round), and in a quiet ring
//! no member takes its own keys for strays.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, converged_ring, converged_ring_with, pick, seeds, wait_call};
use node_core::Id;
use node_core::sim::history::Ret;
use node_core::sim::{JoinPattern, Sim, SimConfig};
use node_core::store::{Entry, Version};

/// Simulated time: the restart and join, two rounds of `strays_interval_ms` (10 s) to learn
/// the peers before the predecessor, one to write the key back, with slack.
const FOUND_BOUND_MS: u64 = 45_000;

/// Crashes a peer k = 3 places after `key`'s owner or further (never in the key's set), puts
/// `value` at timestamp `ts` on its disk and restarts it: the only copy of the key, outside its
/// set. Returns the owner, the stray and a member to ask (the owner's successor).
fn plant_stray(sim: &mut Sim, seed: u64, key: &str, value: &str, ts: u64) -> (Id, Id, Id) {
    let truth = sim.truth();
    let n = truth.len();
    let owner = sim.true_owner(Id::of_key(key)).expect("a ring has owners");
    let i = truth
        .iter()
        .position(|p| *p == owner)
        .expect("owner is alive");
    let stray = truth[(i + pick(seed, 6, 3, n as u64 - 1) as usize) % n];
    sim.crash(stray);
    let entry = Entry {
        value: Some(value.into()),
        version: Version::new(ts, "client@elsewhere"),
    };
    assert!(sim.plant_on_disk(stray, key, entry));
    sim.restart_with_disk(stray);
    (owner, stray, truth[(i + 1) % n])
}

#[test]
fn a_copy_held_only_outside_its_set_is_written_back_once() {
    for seed in seeds(0, 10) {
        let n = pick(seed, 5, 6, 12) as usize;
        let mut sim = converged_ring(seed, n, "strays");
        let key = format!("stray-{seed}");
        let (owner, stray, asker) = plant_stray(&mut sim, seed, &key, "kept", 7);
        let started = sim.now();
        let mut found = false;
        while !found && sim.now() - started < FOUND_BOUND_MS {
            sim.run_for(2_000);
            let call = sim.client_get(asker, &key).expect("asker is alive");
            found = matches!(wait_call(&mut sim, call), Ret::Found { ref value, .. } if value == "kept");
        }
        let took = sim.now() - started;
        println!("seed {seed}: {n} peers, stray {stray} for owner {owner}: found after {took} ms");
        assert_seed(
            found,
            seed,
            "strays",
            format!(
                "{key} held only by {stray} (outside the set of owner {owner}): not found \
                 within {FOUND_BOUND_MS} ms"
            ),
        );
        // Written back once, not at every round.
        sim.run_for(60_000);
        let queued = sim.node(stray).map_or(0, |x| x.metrics().kv.handover_keys);
        assert_seed(
            queued == 1,
            seed,
            "strays",
            format!("the stray {stray} queued {queued} write-backs of one key in 60 s"),
        );
    }
}

/// The write-back keeps a stray's timestamp, which can be far above the clocks of a set that
/// lost the key (the stray's side of a partition wrote more). A put the set acknowledges
/// before the write-back must still win over the stray: neighbours gossip their clocks on
/// stabilize (`observe_neighbour_clock`), so the leader stamps above what the stray holds.
#[test]
fn a_put_acknowledged_before_a_write_back_wins_over_the_stray() {
    for seed in seeds(200, 10) {
        let n = pick(seed, 5, 6, 10) as usize;
        // Write-backs every 30 s: the put below comes before the first one.
        let mut config = SimConfig::new(seed);
        config.node.strays_interval_ms = 30_000;
        let pattern = JoinPattern::RandomTimes {
            window_ms: n as u64 * 100,
        };
        let mut sim = converged_ring_with(config, n, pattern, "strays");
        let key = format!("stray-{seed}");
        let (_, stray, asker) = plant_stray(&mut sim, seed, &key, "old", 1 << 20);
        // Before the stray's first write-back (30 s after it joined) the set takes a new
        // write; by then the stray's clock has travelled around the ring of at most 10 (a hop
        // per stabilize round, 2 s at the quiet pace, both ways).
        sim.run_for(15_000);
        let put = sim.client_put(asker, &key, "new").expect("asker is alive");
        let acked = matches!(wait_call(&mut sim, put), Ret::Stored { .. });
        sim.run_for(60_000);
        let get = sim.client_get(asker, &key).expect("asker is alive");
        let read = wait_call(&mut sim, get);
        println!("seed {seed}: {n} peers, stray {stray}: put acked {acked}, then read {read:?}");
        assert_seed(
            !acked || matches!(read, Ret::Found { ref value, .. } if value == "new"),
            seed,
            "strays",
            format!(
                "{key}: put \"new\" acknowledged, then the stray's older write came back: {read:?}"
            ),
        );
    }
}

#[test]
fn members_never_take_their_own_keys_for_strays() {
    for seed in seeds(100, 6) {
        let n = pick(seed, 5, 4, 12) as usize;
        let mut sim = converged_ring(seed, n, "strays");
        let truth = sim.truth();
        let mut calls = Vec::new();
        for k in 0..40 {
            let at = truth[k % n];
            calls.push(
                sim.client_put(at, &format!("member-{seed}-{k}"), "v")
                    .expect("alive"),
            );
        }
        for call in calls {
            wait_call(&mut sim, call);
        }
        sim.run_for(60_000);
        let queued: u64 = truth
            .iter()
            .filter_map(|p| sim.node(*p))
            .map(|x| x.metrics().kv.handover_keys)
            .sum();
        assert_seed(
            queued == 0,
            seed,
            "strays",
            format!("a quiet ring of {n} wrote {queued} of its own keys back as strays"),
        );
    }
}
