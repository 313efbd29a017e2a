//! One error code per failure, whichever driver reports it: the native HTTP API and the browser
//! peer both take theirs from `OpError::code` (status: `OpError::http_status`). Checked on the
//! failures the simulator's peers really produce, and on every variant.
#![cfg(feature = "sim")]

mod common;

use common::{assert_seed, converged_ring, seeds};
use node_core::flood::FloodError;
use node_core::node::{Config, Event, OpError, OpOutcome, Output};
use node_core::store::LimitError;
use node_core::{Id, Node, PeerId};

/// The status the HTTP API answers each code with (docs/design.md section 8).
fn documented_status(code: &str) -> u16 {
    match code {
        "bad_input" => 400,
        "too_large" => 413,
        "id_in_use" => 409,
        "not_joined" | "no_route" | "busy" => 503,
        "timeout" => 504,
        other => panic!("undocumented code {other}"),
    }
}

fn check(error: &OpError, code: &str) {
    assert_eq!(error.code(), code, "{error:?}");
    assert!(OpError::CODES.contains(&error.code()), "{error:?}");
    assert_eq!(error.http_status(), documented_status(code), "{error:?}");
}

#[test]
fn every_variant_has_its_documented_code_and_status() {
    let peer = PeerId::from(Id(7));
    let cases = [
        (OpError::Rejected(LimitError::EmptyWriter), "bad_input"),
        (
            OpError::Rejected(LimitError::ValueTooLarge { len: 2, max: 1 }),
            "too_large",
        ),
        (
            OpError::Rejected(LimitError::KeyTooLarge { len: 2, max: 1 }),
            "too_large",
        ),
        (
            OpError::Rejected(LimitError::WriterTooLarge { len: 2, max: 1 }),
            "too_large",
        ),
        (OpError::PayloadTooLarge { len: 1 << 20 }, "too_large"),
        (
            OpError::LookupTimeout {
                key: Id(1),
                attempts: 5,
            },
            "timeout",
        ),
        (OpError::JoinTimeout { bootstrap: peer }, "timeout"),
        (
            OpError::KvTimeout {
                key: "k".into(),
                attempts: 5,
                last_failure: None,
            },
            "timeout",
        ),
        (OpError::NotJoined, "not_joined"),
        (OpError::AlreadyJoined, "not_joined"),
        (
            OpError::BootstrapNotJoined { bootstrap: peer },
            "not_joined",
        ),
        (OpError::NoRoute { to: peer }, "no_route"),
        (OpError::BootstrapLost { bootstrap: peer }, "no_route"),
        (OpError::TooManyPendingOps { limit: 1 }, "busy"),
        (
            OpError::FloodRefused(FloodError::TooManyPending { limit: 1 }),
            "busy",
        ),
        (
            OpError::FloodRefused(FloodError::KeyTooLarge { len: 2, max: 1 }),
            "too_large",
        ),
        (OpError::IdInUse { id: Id(7) }, "id_in_use"),
        (OpError::TooManyWatches { limit: 64 }, "busy"),
    ];
    for (error, code) in &cases {
        check(error, code);
    }
    // Every documented code is reachable.
    for code in OpError::CODES {
        assert!(cases.iter().any(|(_, c)| *c == code), "{code} has no case");
    }
}

/// A put on a peer that never joined fails `not_joined` (503), before any message is sent.
#[test]
fn a_peer_outside_the_ring_answers_not_joined() {
    let mut node = Node::new(Config::with_seed(1), Id(1), 0);
    let op = node.put("k", "v", "w", 0);
    loop {
        match node.poll_output() {
            Output::Event(event) => {
                if let Event::OpDone {
                    op: done,
                    result: Err(e),
                } = *event
                    && done == op
                {
                    check(&e, "not_joined");
                    return;
                }
            }
            Output::Timeout(_) => panic!("no failure reported for a put outside the ring"),
            _ => {}
        }
    }
}

/// The failures a joined peer really produces: bad input, sizes, and a put whose whole replica
/// set crashed (no answer in time).
#[test]
fn the_failures_of_a_ring_carry_their_codes() {
    for seed in seeds(13_000, 4) {
        let mut sim = converged_ring(seed, 6, "error_codes");
        let at = sim.truth()[0];
        let mut expect = Vec::new();
        let op = sim
            .with_node(at, |n, now| n.put("k", "v", "", now))
            .unwrap();
        expect.push((op, "bad_input"));
        let big = "x".repeat(1 << 20);
        let op = sim
            .with_node(at, |n, now| n.put("k", &big, "w", now))
            .unwrap();
        expect.push((op, "too_large"));
        // Crash every peer but the entry, so the key's set cannot answer.
        for id in sim.truth() {
            if id != at {
                sim.crash(id);
            }
        }
        let op = sim
            .with_node(at, |n, now| n.put("far", "v", "w", now))
            .unwrap();
        expect.push((op, "timeout"));
        sim.run_for(60_000);
        for (op, code) in expect {
            let result = sim.result(at, op).cloned();
            let ok = match &result {
                Some(Err(e)) => e.code() == code && e.http_status() == documented_status(code),
                Some(Ok(OpOutcome::Stored { .. })) | Some(Ok(_)) | None => false,
            };
            assert_seed(
                ok,
                seed,
                "error_codes",
                format!("expected {code}, got {result:?}"),
            );
        }
    }
}
