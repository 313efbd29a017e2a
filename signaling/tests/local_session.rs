//! The embedding process as a peer: `SignalingState::local_session`.
#![cfg(feature = "server")]

mod common;

use common::{Server, WAIT, config};
use serde_json::json;
use signaling::{PeerId, Signal, SignalingError};

#[tokio::test]
async fn a_local_peer_exchanges_signals_with_remote_peers() {
    let server = Server::start(config()).await;
    let local_id: PeerId = "00000100".parse().unwrap();
    let (sender, mut receiver) = server.state.local_session(local_id).unwrap();
    assert_eq!(sender.peer(), local_id);

    let mut a = server.connect().await;
    assert_eq!(
        a.hello("0000000a").await,
        ["00000100"],
        "the local peer is welcomed like any other"
    );

    a.signal("00000100", "offer").await;
    let signal = tokio::time::timeout(WAIT, receiver.recv())
        .await
        .expect("no signal in time");
    assert_eq!(
        signal,
        Some(Signal {
            from: PeerId::new(0xa),
            payload: "offer".into()
        })
    );

    sender.send(PeerId::new(0xa), "answer").unwrap();
    assert_eq!(
        a.recv().await,
        json!({"type": "signal", "from": "00000100", "payload": "answer"})
    );

    assert_eq!(
        sender.send(PeerId::new(0xdead), "x"),
        Err(SignalingError::UnknownTarget(PeerId::new(0xdead)))
    );
    assert_eq!(receiver.try_recv(), None);
}

#[tokio::test]
async fn a_local_peer_id_is_exclusive() {
    let server = Server::start(config()).await;
    let (_sender, receiver) = server.state.local_session(PeerId::new(0x100)).unwrap();

    let mut a = server.connect().await;
    a.send_json(json!({"type": "hello", "peer": "00000100"}))
        .await;
    a.expect_error("duplicate_peer").await;
    a.hello("0000000a").await;
    assert!(matches!(
        server.state.local_session(PeerId::new(0xa)),
        Err(SignalingError::DuplicatePeer(_))
    ));

    // Dropping the receiver unregisters the local peer.
    drop(receiver);
    assert_eq!(server.state.stats().peers_now, 1);
    a.signal("00000100", "offer").await;
    a.expect_error("unknown_target").await;
    let (_sender, _receiver) = server.state.local_session(PeerId::new(0x100)).unwrap();
}

#[tokio::test]
async fn shutdown_closes_sessions_and_ends_local_receivers() {
    let server = Server::start(config()).await;
    let (_sender, mut receiver) = server.state.local_session(PeerId::new(0x100)).unwrap();
    let mut a = server.connect().await;
    a.hello("0000000a").await;

    server.state.shutdown();
    assert_eq!(
        tokio::time::timeout(WAIT, receiver.recv()).await.unwrap(),
        None
    );
    match a.next_event().await {
        common::Event::Closed(code) => assert_eq!(code, Some(1001)),
        common::Event::Frame(frame) => panic!("expected a close, got {frame}"),
    }
    assert_eq!(
        server.state.local_session(PeerId::new(0x200)).err(),
        Some(SignalingError::ShutDown)
    );
    tokio::time::timeout(WAIT, server.state.sessions_closed())
        .await
        .expect("sessions did not close");
    let stats = server.state.stats();
    assert_eq!((stats.sessions_now, stats.peers_now), (0, 0));
}
