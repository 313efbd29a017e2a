//! Property tests over every message kind of wire/mod.rs: random well-formed messages of every
//! kind (node_core::sim::hostile::random_message_of) round-trip through the codec, and a
//! joined node fed them from a linked peer never panics, keeps its clock below the ceiling
//! and still answers.

#![cfg(feature = "sim")]

use node_core::Id;
use node_core::node::{Config, Input, Node, Output};
use node_core::rng::Rng;
use node_core::sim::hostile::{MESSAGE_KINDS, random_message_of};
use node_core::wire;
use proptest::prelude::*;

fn drain(node: &mut Node) -> Vec<Output> {
    let mut out = Vec::new();
    loop {
        match node.poll_output() {
            Output::Timeout(_) => return out,
            o => out.push(o),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_kind_round_trips(seed in any::<u64>(), kind in 0..MESSAGE_KINDS) {
        let mut rng = Rng::new(seed);
        let m = random_message_of(kind, &mut rng, Id(1_000), Some(Id(500)), 42);
        if let Some(bytes) = wire::encode(&m) {
            let back = wire::decode(&bytes);
            // The decoder may refuse (lists over its limit); it never returns another message.
            if let Ok(back) = back {
                prop_assert_eq!(back, m);
            }
        }
    }

    #[test]
    fn every_kind_is_handled_without_panic(seed in any::<u64>(), kinds in proptest::collection::vec(0..MESSAGE_KINDS, 1..40)) {
        let me = Id(1_000);
        let peer = Id(500);
        let mut node = Node::new(Config::with_seed(seed), me, 0);
        node.create_ring(0);
        node.handle_input(1, Input::PeerUp { peer });
        drain(&mut node);
        let mut rng = Rng::new(seed);
        let mut now = 2;
        for kind in kinds {
            let m = random_message_of(kind, &mut rng, me, Some(peer), node.lamport());
            if let Some(bytes) = wire::encode(&m) {
                node.handle_input(now, Input::Receive { from: peer, bytes: &bytes });
                drain(&mut node);
            }
            now += 7;
            node.handle_input(now, Input::Timeout);
            drain(&mut node);
        }
        // Still serving: the clock is below the ceiling and a ping gets its pong.
        prop_assert!(node.lamport() < 1 << 63);
        let ping = wire::encode(&wire::Message::Ping { nonce: 77 }).unwrap();
        node.handle_input(now + 1, Input::Receive { from: peer, bytes: &ping });
        let pong = wire::encode(&wire::Message::Pong { nonce: 77 }).unwrap();
        let answered = drain(&mut node)
            .into_iter()
            .any(|o| o == Output::Send { to: peer, bytes: pong.clone() });
        prop_assert!(answered);
    }
}
