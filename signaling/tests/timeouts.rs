//! Sessions end on time: no `hello` within `hello_timeout`, or nothing heard (not even a pong
//! to the server's pings) for `idle_timeout`. Intervals are shortened through the config.
#![cfg(feature = "server")]

mod common;

use std::time::Duration;

use common::{Event, Server, config};
use signaling::{ErrorCode, SignalingConfig};

#[tokio::test]
async fn a_session_without_hello_is_closed_after_the_hello_timeout() {
    let server = Server::start(SignalingConfig {
        hello_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let mut silent = server.connect().await;
    // Frames other than hello do not count as one.
    silent.send_text("{").await;
    silent.expect_error("bad_json").await;
    silent.expect_error("hello_timeout").await;
    assert!(
        matches!(silent.next_event().await, Event::Closed(Some(1008))),
        "expected a policy-violation close after hello_timeout"
    );
    server
        .wait_for("the silent session to end", |s| s.sessions_now == 0)
        .await;
    assert_eq!(server.state.stats().errors[&ErrorCode::HelloTimeout], 1);
}

#[tokio::test]
async fn a_session_that_said_hello_outlives_the_hello_timeout() {
    let server = Server::start(SignalingConfig {
        hello_timeout: Duration::from_millis(200),
        ..config()
    })
    .await;
    let mut a = server.connect().await;
    a.hello("0000000a").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Still served: a signal to nobody gets its usual answer, not a close.
    a.signal("0000000b", "x").await;
    a.expect_error("unknown_target").await;
    assert_eq!(server.state.stats().errors[&ErrorCode::HelloTimeout], 0);
    assert_eq!(server.state.stats().peers_now, 1);
}

#[tokio::test]
async fn a_silent_session_is_closed_after_the_idle_timeout() {
    let server = Server::start(SignalingConfig {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(500),
        ..config()
    })
    .await;
    let mut dead = server.connect().await;
    dead.hello("0000000d").await;
    // Not polling the socket: its pings go unanswered, as from a vanished client.
    server
        .wait_for("the idle session to end", |s| {
            s.sessions_now == 0 && s.peers_now == 0
        })
        .await;
    assert_eq!(server.state.stats().errors[&ErrorCode::IdleTimeout], 1);
    // The client finds its session closed (whether the `idle_timeout` frame before the close
    // is still readable depends on the TCP teardown: reading answers the pings, too late).
    assert!(
        dead.closed_within(Duration::from_secs(5)).await.is_some(),
        "the idle session is still open on the client's side"
    );
}

#[tokio::test]
async fn a_client_that_answers_pings_stays() {
    let server = Server::start(SignalingConfig {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(400),
        ..config()
    })
    .await;
    let mut live = server.connect().await;
    live.hello("0000000e").await;
    // Reading answers the pings (tungstenite pongs by itself); 1.5 s is several idle timeouts.
    assert!(
        live.closed_within(Duration::from_millis(1500))
            .await
            .is_none(),
        "a session that answers pings was closed"
    );
    assert_eq!(server.state.stats().errors[&ErrorCode::IdleTimeout], 0);
    assert_eq!(server.state.stats().peers_now, 1);
}
