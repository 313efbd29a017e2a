//! A browser tab may create only 500 peer connections in its lifetime (node-core's
//! `peer::budget`), so the link policy must keep a tab that lives through churn far below that
//! per hour. A ring of 64 budgeted peers (`peer::budget::budgeted_links`, what node-wasm's
//! driver sets) churns: peers join and crash at 0.1 events per second (half each, a crashed
//! peer never returns: a peer lives about 21 minutes on average) for an hour of simulated time
//! while lookups run. Eight peers live through it; the connections each one created (offers
//! made and offers answered, what a tab's driver counts) per hour must stay under
//! [`BOUND_PER_HOUR`] on average, and lookups must find the true owners after the churn.
//! Under the old policy (every successor linked, a new link for every new finger, a lost-peer
//! probe every 5 s) the same seeds create 430-695 connections per hour, so a tab reached the
//! cap within about an hour (docs/design.md, "Links and the 500-connection cap").
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, check_lookups, converged_ring_with, seeds};
use node_core::Id;
use node_core::peer::budget::budgeted_links;
use node_core::sim::{JoinPattern, Sim, SimConfig};

/// Joins plus crashes per ten seconds on a ring of 64.
const EVENTS_PER_10_S: u64 = 1;
const CHURN_MS: u64 = 60 * 60_000;
/// Connections per hour a surviving budgeted peer may create on average under this churn
/// (at this pace a tab reaches the budget's leave step, 490, after more than 3 hours).
const BOUND_PER_HOUR: f64 = 150.0;
const SURVIVORS: usize = 8;

fn churn(sim: &mut Sim, keep: &[Id]) {
    let mut debt = 0;
    for _ in 0..CHURN_MS / 1_000 {
        debt += EVENTS_PER_10_S;
        while debt >= 10 {
            debt -= 10;
            if sim.rng().chance(0.5) {
                let id = sim.fresh_id();
                sim.add_node(id);
            } else {
                let others: Vec<Id> = sim
                    .truth()
                    .into_iter()
                    .filter(|id| !keep.contains(id))
                    .collect();
                if others.len() > 8 {
                    let victim = others[sim.rng().below(others.len() as u64) as usize];
                    sim.crash(victim);
                }
            }
        }
        for _ in 0..5 {
            let ids = sim.truth();
            let at = ids[sim.rng().below(ids.len() as u64) as usize];
            let key = Id(sim.rng().next_u32());
            sim.lookup(at, key);
            sim.run_for(200);
        }
    }
}

#[test]
fn a_tab_living_through_churn_creates_few_connections_per_hour() {
    for seed in seeds(0, 4) {
        let mut config = SimConfig::new(seed);
        budgeted_links(&mut config.node);
        let mut sim = converged_ring_with(
            config,
            64,
            JoinPattern::RandomTimes { window_ms: 6_400 },
            "connection_budget",
        );
        sim.run_for(60_000);
        let survivors: Vec<Id> = sim.truth().into_iter().step_by(8).take(SURVIVORS).collect();
        let before: Vec<u64> = survivors
            .iter()
            .map(|id| sim.connections_created(*id))
            .collect();
        churn(&mut sim, &survivors);
        let per_hour: Vec<f64> = survivors
            .iter()
            .zip(&before)
            .map(|(id, b)| {
                (sim.connections_created(*id) - b) as f64 * 3_600_000.0 / CHURN_MS as f64
            })
            .collect();
        let mean = per_hour.iter().sum::<f64>() / per_hour.len() as f64;
        println!(
            "seed {seed}: ring of {} after churn; survivors' connections per hour {:?}, mean {mean:.0}",
            sim.alive_count(),
            per_hour
                .iter()
                .map(|x| x.round() as u64)
                .collect::<Vec<_>>()
        );
        assert_seed(
            mean <= BOUND_PER_HOUR,
            seed,
            "connection_budget",
            format!("{mean:.0} connections per survivor-hour, bound {BOUND_PER_HOUR}"),
        );
        // Fewer links must not cost correctness: after the churn the ring settles and routes.
        assert_seed(
            sim.run_until_converged(300_000),
            seed,
            "connection_budget",
            format!("no convergence after churn: {:?}", sim.convergence()),
        );
        let (wrong, failed) = check_lookups(&mut sim, 200);
        assert_seed(
            wrong == 0 && failed == 0,
            seed,
            "connection_budget",
            format!("{wrong} wrong owners, {failed} failed lookups"),
        );
    }
}
