//! Walking the ring with `peer_view` from any peer finds every peer, in ring order, with the
//! pointers the peers really hold and what each says it is (its agent); a peer that is gone
//! fails the request instead of hanging; a hostile answer's agent text is bounded.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, converged_ring, pick, seeds};
use node_core::Id;
use node_core::agent::MAX_AGENT_BYTES;
use node_core::node::{OpError, OpOutcome};
use node_core::wire::{self, Body, Dest, Message, Routed};

#[test]
fn a_walk_from_any_peer_finds_the_whole_ring_in_order() {
    for seed in seeds(7_000, 20) {
        let n = pick(seed, 5, 2, 120) as usize;
        let mut sim = converged_ring(seed, n, "ring_walk");
        let truth = sim.truth(); // sorted ids
        let start = truth[sim.rng().below(truth.len() as u64) as usize];
        let mut walked = vec![start];
        let mut at = start;
        for _ in 0..n {
            let op = sim
                .with_node(start, |node, now| node.peer_view(at, now))
                .unwrap();
            sim.run_for(2_500);
            let view = match sim.take_result(start, op) {
                Some(Ok(OpOutcome::View(view))) => view,
                other => panic!("seed {seed}: view of {at} -> {other:?}"),
            };
            assert_seed(
                view.id == at,
                seed,
                "ring_walk",
                "the answer names the asked peer",
            );
            // The simulator names every peer `sim <id>` (its `Config::agent`).
            assert_seed(
                view.agent == format!("sim {at}"),
                seed,
                "ring_walk",
                format!("the view of {at} reports agent {:?}", view.agent),
            );
            let Some(next) = view.successors.first().copied() else {
                break; // a ring of one
            };
            if next == start {
                break;
            }
            walked.push(next);
            at = next;
        }
        let mut expected: Vec<Id> = truth.iter().copied().filter(|p| *p >= start).collect();
        expected.extend(truth.iter().copied().filter(|p| *p < start));
        assert_seed(
            walked == expected,
            seed,
            "ring_walk",
            format!("walked {walked:?}\nexpected {expected:?}"),
        );
    }
}

#[test]
fn a_view_of_a_crashed_peer_fails() {
    let seed = seeds(7_500, 1)[0];
    let mut sim = converged_ring(seed, 16, "ring_walk");
    let ids = sim.truth();
    let (from, gone) = (ids[0], ids[8]);
    sim.crash(gone);
    let op = sim
        .with_node(from, |node, now| node.peer_view(gone, now))
        .unwrap();
    sim.run_for(5_000);
    let result = sim.take_result(from, op);
    assert_seed(
        matches!(
            result,
            Some(Err(OpError::LookupTimeout { .. } | OpError::NoRoute { .. }))
        ),
        seed,
        "ring_walk",
        format!("{result:?}"),
    );
}

/// A peer linked to the walker answers in the asked peer's name before the real answer comes,
/// with an agent far over the limit, full of control and bidi characters: the walker keeps a
/// bounded, printable agent, and the walk goes on.
#[test]
fn an_oversize_agent_in_a_view_is_bounded() {
    let seed = seeds(7_700, 1)[0];
    let mut sim = converged_ring(seed, 16, "ring_walk");
    let ids = sim.truth();
    let walker = ids[0];
    let asked = ids[8];
    let liar = sim.linked_peers(walker)[0];
    let op = sim
        .with_node(walker, |node, now| node.peer_view(asked, now))
        .unwrap();
    let agent = "\u{202E}firefox\n\u{1b}[2J".repeat(3_000);
    let forged = Message::Route(Routed {
        dest: Dest::Peer {
            id: walker,
            via: None,
        },
        origin: asked,
        origin_via: None,
        hops: 0,
        body: Body::View {
            op: op.0,
            predecessor: None,
            successors: vec![walker],
            hops: 1,
            agent: agent.clone(),
        },
    });
    let bytes = wire::encode(&forged).expect("the forged frame fits in a frame");
    assert!(
        wire::decode(&bytes).is_ok(),
        "an oversize agent does not make the frame undecodable"
    );
    assert!(sim.inject(liar, walker, bytes));
    sim.run_for(2_500);
    let view = match sim.take_result(walker, op) {
        Some(Ok(OpOutcome::View(view))) => view,
        other => panic!("seed {seed}: {other:?}"),
    };
    assert_seed(
        view.agent.len() <= MAX_AGENT_BYTES
            && view.agent.starts_with("firefox[2Jfirefox")
            && view
                .agent
                .chars()
                .all(|c| !c.is_control() && c != '\u{202E}'),
        seed,
        "ring_walk",
        format!("kept agent {:?}", view.agent),
    );
    // The walker goes on answering walks with its own agent.
    let op = sim
        .with_node(ids[1], |node, now| node.peer_view(walker, now))
        .unwrap();
    sim.run_for(2_500);
    let view = match sim.take_result(ids[1], op) {
        Some(Ok(OpOutcome::View(view))) => view,
        other => panic!("seed {seed}: {other:?}"),
    };
    assert_seed(
        view.agent == format!("sim {walker}"),
        seed,
        "ring_walk",
        format!("{view:?}"),
    );
}
