//! Outputs stay small: the node queues every frame as an `Output` and a driver moves each
//! `PeerOutput` it polls, so a large rare variant would make every frame pay for it (boxed
//! events in `api.rs`, boxed results in `peer/session.rs`).

use node_core::{Output, PeerOutput};

#[test]
fn outputs_are_at_most_a_frame_and_a_little() {
    assert!(
        std::mem::size_of::<Output>() <= 32,
        "Output is {} bytes",
        std::mem::size_of::<Output>()
    );
    assert!(
        std::mem::size_of::<PeerOutput>() <= 48,
        "PeerOutput is {} bytes",
        std::mem::size_of::<PeerOutput>()
    );
}
