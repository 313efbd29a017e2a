//! Malformed frames get an `error` frame and leave the session usable.
#![cfg(feature = "server")]

mod common;

use common::{Event, Server, config};
use serde_json::json;
use signaling::SignalingConfig;

#[tokio::test]
async fn bad_json_is_an_error_and_the_session_goes_on() {
    let server = Server::start(config()).await;
    let mut a = server.connect().await;
    for garbage in [
        "{not json",
        "[]",
        r#"{"type":"dance"}"#,
        r#"{"type":"hello"}"#,
        r#"{"peer":"0000000a"}"#,
        r#"{"type":"signal","to":"0000000a","payload":{"sdp":"x"}}"#,
    ] {
        a.send_text(garbage).await;
        a.expect_error("bad_json").await;
    }
    assert_eq!(a.hello("0000000a").await, Vec::<String>::new());
    assert_eq!(
        server.state.stats().errors[&signaling::ErrorCode::BadJson],
        6
    );
}

#[tokio::test]
async fn binary_frames_are_bad_json() {
    use futures_util::SinkExt;
    let server = Server::start(config()).await;
    let url = format!("ws://{}/ws", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::binary(
        br#"{"type":"hello","peer":"0000000a"}"#.to_vec(),
    ))
    .await
    .unwrap();
    let mut client = common::Client::from(ws);
    client.expect_error("bad_json").await;
    assert_eq!(client.hello("0000000a").await, Vec::<String>::new());
}

#[tokio::test]
async fn malformed_peer_ids_are_errors() {
    let server = Server::start(config()).await;
    let mut a = server.connect().await;
    for bad in ["XYZ", "0000000A", "a", "0x00000a", "000000000a", ""] {
        a.send_json(json!({"type": "hello", "peer": bad})).await;
        a.expect_error("bad_peer_id").await;
    }
    a.send_json(json!({"type": "hello", "peer": 10})).await;
    a.expect_error("bad_json").await;
    assert_eq!(server.state.stats().peers_now, 0);
    a.hello("0000000a").await;
}

#[tokio::test]
async fn oversize_frames_are_errors_and_the_session_goes_on() {
    let server = Server::start(SignalingConfig {
        max_frame_bytes: 1024,
        ..config()
    })
    .await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;
    let mut b = server.connect().await;
    b.hello("0000000b").await;

    let big = "x".repeat(1100);
    a.signal("0000000b", &big).await;
    let error = a.expect_error("oversize").await;
    assert!(
        error["reason"].as_str().unwrap().contains("1024"),
        "{error}"
    );

    // A frame just under the limit is relayed.
    let fits = "y".repeat(1024 - 60);
    a.signal("0000000b", &fits).await;
    assert_eq!(b.recv().await["payload"], fits);
}

#[tokio::test]
async fn frames_far_over_the_limit_end_the_session() {
    let server = Server::start(SignalingConfig {
        max_frame_bytes: 1024,
        ..config()
    })
    .await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;
    a.send_text("z".repeat(64 * 1024)).await;
    a.expect_error("oversize").await;
    match a.next_event().await {
        // A close frame (1009) is sent, but the unread rest of the huge frame makes the server's
        // TCP stack reset the connection, which may reach the client first.
        Event::Closed(_) => {}
        Event::Frame(frame) => panic!("expected the connection to end, got {frame}"),
    }
    server
        .wait_for("the session to end", |s| {
            s.sessions_now == 0 && s.peers_now == 0
        })
        .await;
}

#[tokio::test]
async fn a_taken_peer_id_is_refused() {
    let server = Server::start(config()).await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;

    let mut imposter = server.connect().await;
    imposter
        .send_json(json!({"type": "hello", "peer": "0000000a"}))
        .await;
    imposter.expect_error("duplicate_peer").await;
    // The first owner keeps the id and still gets its signals.
    assert_eq!(imposter.hello("0000000b").await, ["0000000a"]);
    imposter.signal("0000000a", "hi").await;
    assert_eq!(a.recv().await["from"], "0000000b");
}

/// A verified hello shares a taken id: a squatter that took it first keeps nobody out, and
/// every session under the id gets the id's signals (only the true peer can answer them in a
/// way a verifying sender accepts; `protocol` module docs). An unverified hello stays refused.
#[tokio::test]
async fn a_verified_hello_shares_a_taken_id_and_every_holder_gets_its_signals() {
    // Only where the introducer serves a verifying ring: elsewhere the flag changes nothing.
    let plain = Server::start(config()).await;
    let mut first = plain.connect().await;
    first.hello("0000000a").await;
    let mut second = plain.connect().await;
    second
        .send_json(json!({"type": "hello", "peer": "0000000a", "verified": true}))
        .await;
    second.expect_error("duplicate_peer").await;

    let server = Server::start(SignalingConfig {
        share_verified_ids: true,
        ..config()
    })
    .await;
    let mut squatter = server.connect().await;
    squatter.hello("0000000a").await;
    let mut owner = server.connect().await;
    owner
        .send_json(json!({"type": "hello", "peer": "0000000a", "verified": true}))
        .await;
    assert_eq!(owner.recv().await["type"], "welcome");
    let mut late = server.connect().await;
    late.send_json(json!({"type": "hello", "peer": "0000000a"}))
        .await;
    late.expect_error("duplicate_peer").await;

    let mut b = server.connect().await;
    b.hello("0000000b").await;
    b.signal("0000000a", "offer").await;
    assert_eq!(owner.recv().await["payload"], "offer");
    assert_eq!(squatter.recv().await["payload"], "offer");
    assert_eq!(server.state.stats().peers_now, 2);
    // The squatter leaves; the owner keeps the id.
    squatter.close().await;
    server
        .wait_for("the squatter to go", |s| s.sessions_now == 3)
        .await;
    b.signal("0000000a", "again").await;
    assert_eq!(owner.recv().await["payload"], "again");
    owner.signal("0000000b", "answer").await;
    assert_eq!(b.recv().await["from"], "0000000a");
}

#[tokio::test]
async fn a_second_hello_in_one_session_is_refused() {
    let server = Server::start(config()).await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;
    a.send_json(json!({"type": "hello", "peer": "0000000c"}))
        .await;
    a.expect_error("duplicate_peer").await;
    assert_eq!(server.state.stats().peers_now, 1);
    let mut b = server.connect().await;
    assert_eq!(b.hello("0000000b").await, ["0000000a"]);
}
