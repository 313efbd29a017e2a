//! Experiments run on the simulator, shared by `chord-experiment` and the tests.

use super::{JoinPattern, Sim, SimConfig};
use crate::id::Id;
use crate::metrics::Histogram;
use crate::node::{OpId, OpOutcome};

/// Progress of a long experiment, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Phase name ("join", "converge", "lookups").
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
}

/// One row of `--mode sim-hops`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HopsRow {
    pub nodes: usize,
    pub lookups: usize,
    pub mean_hops: f64,
    pub p1_hops: u32,
    pub p99_hops: u32,
    pub max_hops: u32,
    /// ½·log2 N, the Chord paper's expected mean path length.
    pub half_log2_n: f64,
    pub wrong_owner: usize,
    pub failed: usize,
    /// Virtual milliseconds from the first join until the ring matched the global truth.
    pub formation_virtual_ms: u64,
    /// Messages delivered by the simulator during the whole run.
    pub messages: u64,
}

/// Forms a ring of `nodes` peers through the real join protocol ([`form_ring`]), waits until
/// every pointer matches the truth, then runs `lookups`
/// lookups from random peers for random keys and checks each owner against the truth.
pub fn sim_hops(
    nodes: usize,
    lookups: usize,
    seed: u64,
    progress: &mut dyn FnMut(Progress),
) -> HopsRow {
    let mut sim = Sim::new(SimConfig::new(seed));
    let formed = form_ring(&mut sim, nodes, progress);
    let formation_virtual_ms = sim.now();
    let _ = formed;

    let ids = sim.truth();
    let mut hops = Histogram::default();
    let (mut wrong_owner, mut failed) = (0, 0);
    let mut pending: Vec<(Id, OpId, Id)> = Vec::with_capacity(lookups);
    let batch = 100;
    let mut issued = 0;
    while issued < lookups {
        for _ in 0..batch.min(lookups - issued) {
            let from = ids[sim.rng().below(ids.len() as u64) as usize];
            let key = Id(sim.rng().next_u32());
            if let Some(op) = sim.lookup(from, key) {
                pending.push((from, op, key));
            }
            issued += 1;
        }
        sim.run_for(50);
        progress(Progress {
            phase: "lookups",
            done: issued as u64,
            total: lookups as u64,
        });
    }
    // Every lookup ends within its deadline; give it that long.
    sim.run_for(sim.config().node.op_timeout_ms + 1_000);
    for (from, op, key) in pending {
        match sim.take_result(from, op) {
            Some(Ok(OpOutcome::Lookup { owner, hops: h, .. })) => {
                hops.record(u64::from(h));
                if Some(owner) != sim.true_owner(key) {
                    wrong_owner += 1;
                }
            }
            _ => failed += 1,
        }
    }
    HopsRow {
        nodes,
        lookups,
        mean_hops: hops.mean(),
        p1_hops: hops.percentile(0.01) as u32,
        p99_hops: hops.percentile(0.99) as u32,
        max_hops: hops.percentile(1.0) as u32,
        half_log2_n: 0.5 * (nodes as f64).log2(),
        wrong_owner,
        failed,
        formation_virtual_ms,
        messages: sim.stats.frames_delivered,
    }
}

/// How fast the experiments grow their rings: each second, this share of the current ring joins
/// at random instants (a real network grows in proportion to its size; a flash crowd of
/// thousands joining a handful of peers at once is another experiment).
pub const GROWTH_PERCENT_PER_SEC: u32 = 5;

/// Joins `nodes` fresh peers (growth pattern, see [`GROWTH_PERCENT_PER_SEC`]), then runs until
/// every pointer matches the truth. Returns whether it converged within the bound.
pub fn form_ring(sim: &mut Sim, nodes: usize, progress: &mut dyn FnMut(Progress)) -> bool {
    progress(Progress {
        phase: "join",
        done: 0,
        total: nodes as u64,
    });
    sim.join_nodes(
        nodes,
        JoinPattern::Growth {
            percent_per_sec: GROWTH_PERCENT_PER_SEC,
        },
    );
    progress(Progress {
        phase: "join",
        done: nodes as u64,
        total: nodes as u64,
    });
    let bound = 600_000;
    let begin = sim.now();
    sim.run_until_true(1_000, bound, |s| {
        progress(Progress {
            phase: "converge",
            done: (s.now() - begin) / 1_000,
            total: bound / 1_000,
        });
        s.is_converged()
    })
}
