//! `signal` relaying between sessions, and its errors.
#![cfg(feature = "server")]

mod common;

use common::{Server, config};
use serde_json::json;

#[tokio::test]
async fn signals_are_relayed_both_ways() {
    let server = Server::start(config()).await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;
    let mut b = server.connect().await;
    b.hello("0000000b").await;

    let offer = r#"{"type":"offer","sdp":"v=0\r\n..."}"#;
    a.signal("0000000b", offer).await;
    assert_eq!(
        b.recv().await,
        json!({"type": "signal", "from": "0000000a", "payload": offer})
    );
    b.signal("0000000a", "answer").await;
    assert_eq!(
        a.recv().await,
        json!({"type": "signal", "from": "0000000b", "payload": "answer"})
    );
    assert_eq!(server.state.stats().relayed, 2);
}

#[tokio::test]
async fn signal_order_is_kept() {
    let server = Server::start(config()).await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;
    let mut b = server.connect().await;
    b.hello("0000000b").await;
    for i in 0..20 {
        a.signal("0000000b", &format!("candidate {i}")).await;
    }
    for i in 0..20 {
        assert_eq!(b.recv().await["payload"], format!("candidate {i}"));
    }
}

#[tokio::test]
async fn unknown_target_is_an_error() {
    let server = Server::start(config()).await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;
    a.signal("deadbeef", "offer").await;
    let error = a.expect_error("unknown_target").await;
    assert!(
        error["reason"].as_str().unwrap().contains("deadbeef"),
        "{error}"
    );
    // Still usable.
    let mut b = server.connect().await;
    b.hello("0000000b").await;
    a.signal("0000000b", "offer").await;
    assert_eq!(b.recv().await["from"], "0000000a");
}

#[tokio::test]
async fn signal_before_hello_is_an_error() {
    let server = Server::start(config()).await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;
    let mut b = server.connect().await;
    b.signal("0000000a", "offer").await;
    b.expect_error("not_hello").await;
    assert_eq!(b.hello("0000000b").await, ["0000000a"]);
    b.signal("0000000a", "offer").await;
    assert_eq!(a.recv().await["from"], "0000000b");
}

#[tokio::test]
async fn bad_target_id_is_an_error() {
    let server = Server::start(config()).await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;
    a.signal("0000000A", "offer").await;
    a.expect_error("bad_peer_id").await;
}
