//! `Input::SendFailed`: the driver could not queue a frame. The node counts every one and closes
//! a link after a streak of them (`links::SEND_FAILURES_UNHEALTHY`, each within
//! `links::SEND_FAILURE_GAP_MS` of the last), as it closes a link whose peer went silent.

use node_core::links::{SEND_FAILURE_GAP_MS, SEND_FAILURES_UNHEALTHY};
use node_core::{Config, Id, Input, Node, Output};

const PEER: Id = Id(0x8000_0000);

/// A ring of one with an open link to `PEER`, its outputs drained.
fn linked() -> Node {
    let mut node = Node::new(Config::with_seed(3), Id(7), 0);
    node.create_ring(0);
    node.handle_input(0, Input::PeerUp { peer: PEER });
    drain(&mut node);
    node
}

/// Drains the outputs: whether a `Disconnect(PEER)` was among them.
fn drain(node: &mut Node) -> bool {
    let mut disconnected = false;
    loop {
        match node.poll_output() {
            Output::Timeout(_) => return disconnected,
            Output::Disconnect(peer) if peer == PEER => disconnected = true,
            _ => {}
        }
    }
}

#[test]
fn a_streak_of_refused_sends_closes_the_link() {
    let mut node = linked();
    for i in 0..SEND_FAILURES_UNHEALTHY - 1 {
        node.handle_input(10 + u64::from(i), Input::SendFailed { peer: PEER });
        assert!(!drain(&mut node), "closed after {} failures", i + 1);
    }
    let now = 10 + u64::from(SEND_FAILURES_UNHEALTHY);
    node.handle_input(now, Input::SendFailed { peer: PEER });
    assert!(drain(&mut node), "the streak closes the link");
    let m = node.metrics();
    assert_eq!(m.chord.send_failures, u64::from(SEND_FAILURES_UNHEALTHY));
    assert_eq!(m.chord.send_failure_closes, 1);
    assert_eq!(m.links_up, 0);
    // Once closed, further refusals are only counted.
    node.handle_input(now + 1, Input::SendFailed { peer: PEER });
    assert!(!drain(&mut node));
    assert_eq!(
        node.metrics().chord.send_failures,
        u64::from(SEND_FAILURES_UNHEALTHY) + 1
    );
}

#[test]
fn refusals_further_apart_than_the_gap_are_only_counted() {
    let mut node = linked();
    let mut now = 10;
    for _ in 0..3 * SEND_FAILURES_UNHEALTHY {
        now += SEND_FAILURE_GAP_MS + 1;
        node.handle_input(now, Input::SendFailed { peer: PEER });
        // The peer keeps answering heartbeats meanwhile.
        node.handle_input(
            now,
            Input::Receive {
                from: PEER,
                bytes: b"{}",
            },
        );
        assert!(!drain(&mut node), "a drained queue between refusals");
    }
    let m = node.metrics();
    assert_eq!(
        m.chord.send_failures,
        3 * u64::from(SEND_FAILURES_UNHEALTHY)
    );
    assert_eq!(m.chord.send_failure_closes, 0);
}

#[test]
fn a_refusal_for_a_peer_without_a_link_is_only_counted() {
    let mut node = Node::new(Config::with_seed(3), Id(7), 0);
    node.create_ring(0);
    for i in 0..2 * SEND_FAILURES_UNHEALTHY {
        node.handle_input(u64::from(i), Input::SendFailed { peer: PEER });
        assert!(!drain(&mut node));
    }
    assert_eq!(node.metrics().chord.send_failure_closes, 0);
}
