//! Re-replication as soon as a failure is detected (`node/fence.rs`, `provisional_range`): a
//! key's owner crashes, then, before anyone has noticed, the last member of its set crashes
//! too. When the links to the owner time out, the middle member (the owner's successor) is
//! the last live copy and has no predecessor until the peer before the dead owner notifies it.
//! It copies the dead owner's range to its next successor at once; a moment later it crashes
//! as well. The acknowledged write must survive on that successor: once the fence of the
//! range whose whole set is gone expires, it reads back. `sim-churn --nodes 500 --rates 4
//! --seed 10` lost a write this way (its three holders crashed within 3.8 s, the simulator
//! detecting a dead link after 3 s).
#![cfg(feature = "sim")]

mod common;

use common::{
    assert_history_holds, assert_seed, converged_ring, pick, put_acked, seeds, wait_call,
};
use node_core::Id;
use node_core::sim::history::Ret;
use node_core::store::key_id;

const TEST: &str = "eager_repair";

#[test]
fn the_last_copy_is_copied_on_when_the_owner_is_found_dead() {
    for seed in seeds(19_000, 8) {
        let n = pick(seed, 1, 8, 12) as usize;
        let mut sim = converged_ring(seed, n, TEST);
        let key = format!("eager-{seed}");
        let mut ring = sim.truth();
        ring.sort();
        let owner = sim.true_owner(Id(key_id(&key))).expect("a ring");
        let at = ring.iter().position(|p| *p == owner).expect("in ring");
        let next = |i: usize| ring[(at + i) % ring.len()];
        let (middle, last, heir) = (next(1), next(2), next(3));
        let client = next(5);
        put_acked(&mut sim, client, &key, "kept", seed, TEST, "the put");
        // Let anti-entropy settle the set, then take it down one by one.
        sim.run_for(5_000);
        let detect = sim.config().link_detect_ms;
        sim.crash(owner);
        sim.run_for(detect - 200);
        sim.crash(last);
        sim.run_for(800);
        let copied = sim
            .node(heir)
            .is_some_and(|n| n.store().get(&key).is_some());
        sim.crash(middle);
        // The heir's growth fence holds the range until it expires (no member of its set
        // is left); then the heir serves it.
        sim.run_for(sim.config().node.fence_max_ms + 10_000);
        let get = sim.client_get(client, &key).expect("alive");
        let read = wait_call(&mut sim, get);
        assert_seed(
            matches!(&read, Ret::Found { value, .. } if value == "kept"),
            seed,
            TEST,
            format!(
                "after the owner and its set crashed: {read:?} (the heir had {} when the \
                 last holder crashed)",
                if copied { "a copy" } else { "no copy" }
            ),
        );
        assert_history_holds(&sim, seed, TEST, "the history");
    }
}
