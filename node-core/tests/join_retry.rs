//! The join plan (`peer::join`) that both drivers follow, run by the simulator over many seeds:
//! a newcomer whose introducer names a peer that is gone tries the next one after the plan's
//! pause and joins; one whose introducer names only peers that are gone keeps trying, in turn,
//! for the plan's patience and no longer, then joins once one of them is back. Before the plan
//! the tab gave up after 3 attempts, the native peer never, and the simulator retried a random
//! member after 1 s: these tests fail against any of those.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, converged_ring, seeds};
use node_core::peer::join::{JOIN_PATIENCE_MS, JOIN_RETRY_MS};

/// The welcome names a crashed peer first: the first attempt fails, the next one goes through
/// the live member the welcome names second, and the newcomer ends in a converged ring. (A
/// join through the live member can fail too while the ring still routes to the crashed
/// peer; then the turn comes round again.)
#[test]
fn a_dead_first_candidate_costs_one_attempt() {
    for seed in seeds(15_000, 20) {
        let mut sim = converged_ring(seed, 6, "join_retry");
        let ids = sim.truth();
        let (dead, live) = (ids[1], ids[4]);
        sim.crash(dead);
        let newcomer = sim.fresh_id();
        let attempts = sim.stats.join_attempts;
        let failed = sim.stats.joins_failed;
        sim.add_node_via(newcomer, vec![dead, live]);
        assert_eq!(sim.bootstrap_of(newcomer), Some(dead), "the first in turn");
        let joined = sim.run_until_true(50, 120_000, |s| {
            s.node(newcomer).is_some_and(|n| n.is_joined())
        });
        assert_seed(joined, seed, "join_retry", "the newcomer joined");
        assert_seed(
            sim.bootstrap_of(newcomer) == Some(live),
            seed,
            "join_retry",
            "it joined through the second candidate",
        );
        assert_seed(
            sim.stats.joins_failed > failed
                && sim.stats.join_attempts == attempts + 1 + (sim.stats.joins_failed - failed),
            seed,
            "join_retry",
            format!(
                "failed attempts, each followed by one more, the last one worked (attempts {}, failed {})",
                sim.stats.join_attempts - attempts,
                sim.stats.joins_failed - failed
            ),
        );
        let converged = sim.run_until_converged(60_000);
        assert_seed(converged, seed, "join_retry", "the ring converged with it");
    }
}

/// Every peer the welcome names is gone: the newcomer tries them in turn, a pause of
/// `JOIN_RETRY_MS` after each failure, gives the round up after `JOIN_PATIENCE_MS` (not after a
/// count of attempts, and not never), and joins once one of them restarts.
#[test]
fn patience_bounds_a_round_then_a_returning_peer_is_joined() {
    for seed in seeds(16_000, 12) {
        let mut sim = converged_ring(seed, 5, "join_retry");
        let ids = sim.truth();
        let gone = vec![ids[0], ids[2]];
        for id in &gone {
            sim.crash(*id);
        }
        let newcomer = sim.fresh_id();
        let attempts = sim.stats.join_attempts;
        let start = sim.now();
        sim.add_node_via(newcomer, gone.clone());
        let mut seen = vec![sim.bootstrap_of(newcomer)];
        let gave_up = sim.run_until_true(10, JOIN_PATIENCE_MS + 40_000, |s| {
            s.stats.joins_given_up > 0
        });
        let given_up_at = sim.now();
        assert_seed(gave_up, seed, "join_retry", "the round was given up");
        let made = sim.stats.join_attempts - attempts;
        assert_seed(
            made > 3,
            seed,
            "join_retry",
            format!("it kept trying past 3 attempts ({made})"),
        );
        assert_seed(
            given_up_at >= start + JOIN_PATIENCE_MS - JOIN_RETRY_MS
                && !sim.node(newcomer).is_some_and(|n| n.is_joined()),
            seed,
            "join_retry",
            format!(
                "gave up after patience, not before ({} ms)",
                given_up_at - start
            ),
        );
        // Both candidates were tried (in turn, not the same one again and again).
        sim.run_for(JOIN_RETRY_MS + 1);
        seen.push(sim.bootstrap_of(newcomer));
        sim.run_for(30_000);
        seen.push(sim.bootstrap_of(newcomer));
        assert_seed(
            gone.iter().all(|g| seen.contains(&Some(*g))),
            seed,
            "join_retry",
            format!("both candidates tried: {seen:?}"),
        );
        // One candidate comes back (with its disk): the next round joins through it.
        sim.restart_with_disk(gone[0]);
        let joined = sim.run_until_true(50, 2 * JOIN_PATIENCE_MS, |s| {
            s.node(newcomer).is_some_and(|n| n.is_joined())
        });
        assert_seed(
            joined,
            seed,
            "join_retry",
            "joined once a candidate was back",
        );
    }
}

/// A newcomer of the plain scenarios (a fresh pick of a live member per attempt) never needs
/// a second round: the counters stay quiet on a ring that forms without faults.
#[test]
fn a_ring_forming_without_faults_gives_nothing_up() {
    for seed in seeds(17_000, 10) {
        let sim = converged_ring(seed, 12, "join_retry");
        assert_seed(
            sim.stats.joins_given_up == 0,
            seed,
            "join_retry",
            format!("rounds given up: {}", sim.stats.joins_given_up),
        );
    }
}

/// A candidate that is no ring member itself (joining too, or restarting: a whole ring
/// restarted at once joins through each other) says so at once (`OpError::BootstrapNotJoined`),
/// and the newcomer goes on to the next candidate after the plan's pause. Before, the
/// candidate dropped the join lookup in silence and the newcomer waited out the join timeout
/// (two op timeouts, 20 s) first.
#[test]
fn a_candidate_that_is_no_member_refuses_at_once() {
    for seed in seeds(18_000, 12) {
        let mut sim = converged_ring(seed, 5, "join_retry");
        let ids = sim.truth();
        let (dead, live) = (ids[1], ids[3]);
        sim.crash(dead);
        // Joining through a crashed peer: not a member for a while.
        let joining = sim.fresh_id();
        sim.add_node_via(joining, vec![dead]);
        let newcomer = sim.fresh_id();
        let refused = sim.stats.joins_refused_not_member;
        let start = sim.now();
        sim.add_node_via(newcomer, vec![joining, live]);
        assert_eq!(
            sim.bootstrap_of(newcomer),
            Some(joining),
            "the first in turn"
        );
        let joined = sim.run_until_true(10, 120_000, |s| {
            s.node(newcomer).is_some_and(|n| n.is_joined())
        });
        let took = sim.now() - start;
        assert_seed(joined, seed, "join_retry", "the newcomer joined");
        assert_seed(
            sim.stats.joins_refused_not_member > refused,
            seed,
            "join_retry",
            "the candidate that is no member refused the join",
        );
        let join_timeout = 2 * sim.node(newcomer).expect("newcomer").config().op_timeout_ms;
        assert_seed(
            took < join_timeout,
            seed,
            "join_retry",
            format!("joined {took} ms after it started: it waited out a join timeout"),
        );
        assert_seed(
            sim.bootstrap_of(newcomer) == Some(live),
            seed,
            "join_retry",
            "it joined through the live member",
        );
    }
}
