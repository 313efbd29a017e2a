//! Shared helpers for the simulator tests: seed selection and replay.
#![allow(dead_code, unreachable_pub)]

use node_core::Id;
use node_core::node::OpOutcome;
use node_core::rng::splitmix64;
use node_core::sim::history::Ret;
use node_core::sim::{JoinPattern, Sim, SimConfig};

/// The seeds a randomized test runs: `SIM_SEED=<n>` replays exactly one; otherwise
/// `SIM_SEEDS=<count>` (default `default_count`) seeds starting at `offset`.
pub fn seeds(offset: u64, default_count: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_count);
    (offset..offset + count).collect()
}

/// A deterministic number in `lo..=hi` derived from a seed (ring sizes, fractions).
pub fn pick(seed: u64, salt: u64, lo: u64, hi: u64) -> u64 {
    let mut s = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    lo + splitmix64(&mut s) % (hi - lo + 1)
}

/// Panics with the seed and the replay command when `ok` is false.
#[track_caller]
pub fn assert_seed(ok: bool, seed: u64, test: &str, what: impl std::fmt::Display) {
    assert!(
        ok,
        "{what}\n  seed {seed}: replay with `SIM_SEED={seed} cargo test -p node-core --all-features --test {test}`"
    );
}

/// Runs `count` lookups from random live nodes for random keys; returns (wrong owners, failed).
pub fn check_lookups(sim: &mut Sim, count: usize) -> (usize, usize) {
    let (wrong, failed, _) = lookup_hops(sim, count);
    (wrong, failed)
}

/// [`check_lookups`], also returning the mean hops of the lookups that answered.
pub fn lookup_hops(sim: &mut Sim, count: usize) -> (usize, usize, f64) {
    let ids = sim.truth();
    let mut pending = Vec::new();
    for _ in 0..count {
        let from = ids[sim.rng().below(ids.len() as u64) as usize];
        let key = Id(sim.rng().next_u32());
        if let Some(op) = sim.lookup(from, key) {
            pending.push((from, op, key));
        }
        sim.run_for(5);
    }
    sim.run_for(sim.config().node.op_timeout_ms + 1_000);
    let (mut wrong, mut failed, mut hops, mut answered) = (0, 0, 0u64, 0u64);
    for (from, op, key) in pending {
        match sim.take_result(from, op) {
            Some(Ok(OpOutcome::Lookup { owner, hops: h, .. })) => {
                hops += u64::from(h);
                answered += 1;
                if Some(owner) != sim.true_owner(key) {
                    wrong += 1;
                }
            }
            _ => failed += 1,
        }
    }
    (wrong, failed, hops as f64 / answered.max(1) as f64)
}

/// A ring of `n` peers joined at random times over `n * 100` ms, run until every pointer
/// matches the truth (asserted, with the seed in the message).
pub fn converged_ring(seed: u64, n: usize, test: &str) -> Sim {
    converged_ring_with(
        SimConfig::new(seed),
        n,
        JoinPattern::RandomTimes {
            window_ms: n as u64 * 100,
        },
        test,
    )
}

/// Like [`converged_ring`] with a given network model and join pattern.
pub fn converged_ring_with(config: SimConfig, n: usize, pattern: JoinPattern, test: &str) -> Sim {
    let seed = config.seed;
    let mut sim = Sim::new(config);
    sim.join_nodes(n, pattern);
    assert_seed(
        sim.run_until_converged(900_000),
        seed,
        test,
        format!("ring of {n} did not converge"),
    );
    sim
}

/// Checks the client history recorded so far against the promise (`sim::history::check`);
/// panics with the anomalies, the seed and the replay command when it does not hold.
#[track_caller]
pub fn assert_history_holds(sim: &Sim, seed: u64, test: &str, what: &str) {
    let report = node_core::sim::history::check(sim.history());
    let anomalies: Vec<String> = report.anomalies.iter().map(ToString::to_string).collect();
    assert_seed(report.holds(), seed, test, format!("{what}: {anomalies:?}"));
}

/// Runs the simulation until the client call recorded at `index` returns (or one operation
/// timeout and a second more have passed), and gives its outcome.
pub fn wait_call(sim: &mut Sim, index: usize) -> Ret {
    let deadline = sim.now() + sim.config().node.op_timeout_ms + 1_000;
    while !sim.history().is_complete(index) && sim.now() < deadline {
        sim.run_for(5);
    }
    sim.history()
        .get(index)
        .map_or(Ret::Unknown, |o| o.ret.clone())
}

/// A put of `value` to `key` through `at`, run until it returns; it must be acknowledged
/// (asserted with the seed, the message starting with `what`).
#[track_caller]
pub fn put_acked(sim: &mut Sim, at: Id, key: &str, value: &str, seed: u64, test: &str, what: &str) {
    let put = sim.client_put(at, key, value).expect("alive");
    let ret = wait_call(sim, put);
    assert_seed(
        matches!(ret, Ret::Stored { .. }),
        seed,
        test,
        format!("{what}: {ret:?}"),
    );
}

/// A random id strictly between ring members `from` and `to` (clockwise), from the sim's rng:
/// where a newcomer joins in front of `to`.
pub fn id_between(sim: &mut Sim, from: Id, to: Id) -> Id {
    let gap = from.distance_to(to);
    Id(from
        .0
        .wrapping_add(1 + sim.rng().below(u64::from(gap - 1)) as u32))
}
