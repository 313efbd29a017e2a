//! The simulator runs node-core's WebRTC signalling rules (`peer::signal`), the ones both real
//! drivers apply: glare and re-offers after a restart resolve to one working link, over many
//! seeds. Each test can fail: without the rules' glare tie-break both sides would answer each
//! other and no offerer would ever accept an answer; without the re-offer rules a restarted
//! peer would never link again with a peer that still held its old link.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, converged_ring, seeds};

/// Two peers with no link start one to each other at the same instant: exactly one link opens,
/// the lower id's offer wins (its side ignores the other offer), and both sides hold it open.
#[test]
fn glare_resolves_to_one_link() {
    let mut glares = 0;
    for seed in seeds(14_000, 40) {
        let mut sim = converged_ring(seed, 16, "glare");
        let ids = sim.truth();
        let Some((a, b)) = ids
            .iter()
            .flat_map(|a| ids.iter().map(move |b| (*a, *b)))
            .find(|(a, b)| a < b && !sim.has_link(*a, *b))
        else {
            continue;
        };
        let ignored = sim.stats.signals_ignored;
        let replaced = sim.stats.links_replaced;
        sim.connect_both(a, b);
        let opened = sim.run_until_true(5, 5_000, |s| s.has_link(a, b));
        assert_seed(
            opened,
            seed,
            "glare",
            format!("no link {a} <-> {b} after glare"),
        );
        assert_seed(
            sim.sees_open(a, b) && sim.sees_open(b, a),
            seed,
            "glare",
            "both sides hold the link open",
        );
        // The lower id ignored the higher one's offer; the higher one dropped its own attempt.
        assert_seed(
            sim.stats.signals_ignored > ignored && sim.stats.links_replaced > replaced,
            seed,
            "glare",
            "the glare was decided by the rules",
        );
        glares += 1;
    }
    assert!(glares >= 30, "only {glares} seeds had an unlinked pair");
}

/// A peer restarts at once (same id, fresh state) while its neighbours still hold its old
/// links: whichever side offers, the rules replace the stale link (or, on the lower-id side
/// holding an open link it offered, wait for its failure), and the restarted peer ends linked
/// to its successor and predecessor in a converged ring.
#[test]
fn a_restarted_peer_links_again_with_peers_that_held_its_old_links() {
    let mut replaced_open = 0;
    let mut ignored_open = 0;
    for seed in seeds(15_000, 30) {
        let mut sim = converged_ring(seed, 12, "re-offer");
        let ids = sim.truth();
        let victim = ids[(seed as usize) % ids.len()];
        let before = (sim.stats.open_links_replaced, sim.stats.signals_ignored);
        sim.crash(victim);
        sim.run_for(50);
        sim.restart(victim);
        let back = sim.run_until_converged(120_000);
        assert_seed(
            back,
            seed,
            "re-offer",
            format!("ring did not converge after {victim} restarted"),
        );
        let truth = sim.truth();
        let at = truth.iter().position(|id| *id == victim).expect("alive");
        let succ = truth[(at + 1) % truth.len()];
        let pred = truth[(at + truth.len() - 1) % truth.len()];
        let ok = sim.run_until_true(10, 30_000, |s| {
            s.has_link(victim, succ) && s.has_link(victim, pred)
        });
        assert_seed(
            ok,
            seed,
            "re-offer",
            format!("{victim} not linked to {pred} and {succ}"),
        );
        replaced_open += sim.stats.open_links_replaced - before.0;
        ignored_open += (sim.stats.signals_ignored - before.1).min(1);
    }
    // Both sides of the rule happened across the seeds.
    assert!(replaced_open > 0, "no stale open link was ever replaced");
    assert!(
        ignored_open > 0,
        "no offer on an open link was ever ignored"
    );
}
