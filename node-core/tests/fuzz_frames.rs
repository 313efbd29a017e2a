//! Thousands of random, truncated, oversize and mutated frames from a peer: the node never
//! panics, the bad-frame counters rise, and the node keeps working afterwards.

use node_core::node::{Config, Input, Node, OpOutcome, Output};
use node_core::rng::Rng;
use node_core::store::{Entry, Version};
use node_core::wire::kv::KvMsg;
use node_core::wire::{self, Body, Dest, MAX_FRAME_BYTES, Message, Routed};
use node_core::{Event, Id};

fn drain(node: &mut Node) -> Vec<Output> {
    let mut out = Vec::new();
    loop {
        match node.poll_output() {
            Output::Timeout(_) => return out,
            o => out.push(o),
        }
    }
}

fn valid_frames() -> Vec<Vec<u8>> {
    let messages = [
        Message::Hello { joined: true },
        Message::Ping { nonce: 7 },
        Message::GetNeighbors { nonce: 3, clock: 9 },
        Message::Neighbors {
            nonce: 3,
            pred: Some(Id(5)),
            succs: vec![Id(9), Id(11)],
            preds: vec![],
            clock: 0,
            fence: None,
        },
        Message::Neighbors {
            nonce: 4,
            pred: None,
            succs: vec![Id(9)],
            preds: vec![Id(2)],
            clock: 12,
            fence: Some((Id(8), 1_000)),
        },
        Message::Notify,
        Message::GetPreds { nonce: 4 },
        Message::Preds {
            nonce: 4,
            preds: vec![Id(3), Id(2)],
        },
        Message::Route(Routed {
            dest: Dest::Owner { key: Id(1234) },
            origin: Id(99),
            origin_via: None,
            hops: 2,
            body: Body::FindSuccessor { op: 1 },
        }),
        Message::Route(Routed {
            dest: Dest::Peer {
                id: Id(1),
                via: Some(Id(2)),
            },
            origin: Id(3),
            origin_via: Some(Id(4)),
            hops: 250,
            body: Body::Signal {
                payload: "x".repeat(100),
            },
        }),
        Message::Route(Routed {
            dest: Dest::Owner { key: Id(77) },
            origin: Id(3),
            origin_via: None,
            hops: 1,
            body: Body::Watch {
                key: "k".into(),
                since: Some(Version::new(5, "w")),
                lease_ms: 20_000,
            },
        }),
        Message::Kv(KvMsg::Watch {
            key: "k".into(),
            subscriber: Id(3),
            since: None,
            lease_ms: 20_000,
        }),
        Message::Kv(KvMsg::Notify {
            key: "k".into(),
            entry: Entry::live("v", 9, "w"),
        }),
    ];
    messages.iter().map(|m| wire::encode(m).unwrap()).collect()
}

#[test]
fn garbage_frames_are_counted_never_fatal() {
    let seed = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42);
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let me = Id(1_000);
    let peer = Id(2_000);
    let mut node = Node::new(Config::with_seed(seed), me, 0);
    node.create_ring(0);
    node.handle_input(1, Input::PeerUp { peer });
    drain(&mut node);
    let valid = valid_frames();
    let mut now = 2;
    for round in 0..20_000u32 {
        let frame: Vec<u8> = match round % 5 {
            // pure noise
            0 => (0..rng.below(300)).map(|_| rng.next_u32() as u8).collect(),
            // truncated valid frame
            1 => {
                let f = &valid[rng.below(valid.len() as u64) as usize];
                f[..rng.below(f.len() as u64) as usize].to_vec()
            }
            // mutated valid frame
            2 => {
                let mut f = valid[rng.below(valid.len() as u64) as usize].clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(f.len() as u64) as usize;
                    f[i] = rng.next_u32() as u8;
                }
                f
            }
            // oversize
            3 => vec![b'{'; MAX_FRAME_BYTES + 1 + rng.below(1000) as usize],
            // valid frames (they must not break anything either)
            _ => valid[rng.below(valid.len() as u64) as usize].clone(),
        };
        node.handle_input(
            now,
            Input::Receive {
                from: peer,
                bytes: &frame,
            },
        );
        now += 1;
        if round % 100 == 0 {
            node.handle_input(now, Input::Timeout);
        }
        drain(&mut node);
    }
    let m = node.metrics().chord;
    println!("{m:?}");
    assert!(m.bad_frames > 3_000, "bad frames {}", m.bad_frames);
    assert!(m.oversize_frames >= 4_000, "oversize {}", m.oversize_frames);
    assert_eq!(m.frames_in, 20_000);

    // Still a working node: a lookup of a key it owns alone completes.
    let op = node.lookup(Id(5), now);
    let done = drain(&mut node).into_iter().any(|o| {
        matches!(o, Output::Event(e) if matches!(*e, Event::OpDone { op: done, result: Ok(OpOutcome::Lookup { .. }) } if done == op))
    });
    assert!(done, "node stopped answering after garbage");
}

#[test]
fn unknown_version_is_counted_separately() {
    let mut node = Node::new(Config::with_seed(1), Id(1), 0);
    node.create_ring(0);
    node.handle_input(
        1,
        Input::Receive {
            from: Id(2),
            bytes: br#"{"v":9,"m":{"t":"notify"}}"#,
        },
    );
    assert_eq!(node.metrics().chord.bad_version_frames, 1);
}
